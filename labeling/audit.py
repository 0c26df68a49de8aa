"""Every editor change goes through an `Operation`: one transaction, one audit event.

An operation loads the rows it will change (locking them), writes new versions in bulk,
and records the before and after state of every entity it wrote. That snapshot is what
makes history readable and undo generic: undoing restores the before state of the columns it
changed, provided no later operation still in force changed the same columns of the same rows
and the rows still hold what the operation wrote.

A row the operation created (or removed) is all of its columns: undoing would delete (or bring back)
the whole row, with whatever later operations wrote into its other columns, so any later write of
that row pins the operation (an import's labels, then a model's predictions written into them: undo
the predictions first). A later undo of an earlier operation that changed the same columns, or
removed the row, pins it too: it is a later change like any other, and an undo cannot be undone.

A model's prediction run is the one later writer that never pins an editor's operation through the model's
own columns (`_model_columns`): a merge moves the predictions of the merged class with its labels, and
the next `giflens predict` rewrites them. Undoing the merge then restores what the editor decided and
leaves the newer predictions as the run wrote them (`_superseded_columns`). That run can no longer be undone
(`_check_run_kept_by_undo`): what it would restore is what the undone merge wrote; a new run refreshes instead.
The seeds of a new class (`SEEDING_OPERATIONS`) are held as labels that existed before even where adding the class
created them (any other row an operation created is pinned by every later write): the class-add counts as writing
only their decision columns (`_written_columns`), so a later run's prediction, or a merge moving it, pins nothing,
and the undo leaves each such label as the undecided guess of the run whose prediction it holds (`_kept_guesses`)
instead of deleting it with the prediction; a later decision on it still pins.
"""
from __future__ import annotations

import sqlite3
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from datetime import datetime
from pathlib import PurePath
from typing import Any, Iterable, Iterator, Sequence

from sqlalchemy import JSON, DateTime, String, and_, bindparam, column, delete, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from labeling.db import write_scope
from labeling.errors import (ConcurrentWriteError, ConflictError, NotFoundError, UndoError, ValidationError, as_utc,
                             utc_text)
from labeling.schema import (CONFIRMED_STATUSES, TRACK_PREDICTION_FIELDS, UNDECIDED_STATUSES, AuditEntity, AuditEvent,
                             CelebrityClass, Face, FaceLabel, Media, MediaTag, Tag, Track, utcnow)
from labeling.validation import check_editor, check_id, class_name_key, whole_number

# entity kind -> (model, key columns); the key string is "<kind>:<v1>[:<v2>]"
KINDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "class": (CelebrityClass, ("id",)),
    "face": (FaceLabel, ("face_id",)),
    "media_tag": (MediaTag, ("media_id", "tag_id")),
}
INSERT_ORDER = ("class", "face", "media_tag")  # parents first; deletes run in reverse
CHUNK = 5000  # bound parameters per IN (...) list, well under SQLite's and PostgreSQL's limits
# Composite keys are matched as (a = ? AND b = ?) OR ...: SQLite nests each OR one level deeper and refuses
# expression trees deeper than 1000 ("Expression tree is too large"), so those go in smaller chunks.
COMPOSITE_CHUNK = 500

Key = tuple[Any, ...]


def entity_key(kind: str, key: Key) -> str:
    return f"{kind}:{key[0]}" if len(key) == 1 else ":".join([kind, *map(str, key)])


def parse_key(text: str) -> tuple[str, Key]:
    kind, *parts = text.split(":")
    return kind, tuple(int(p) for p in parts)


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _to_json(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for k, v in row.items():
        if type(v) is datetime:
            out[k] = v.isoformat()
    return out


def _from_json(model: type, row: dict[str, Any]) -> dict[str, Any]:
    table = model.__table__
    out = {}
    for k, v in row.items():
        if v is not None and isinstance(table.c[k].type, DateTime):
            v = datetime.fromisoformat(v)
        out[k] = v
    return out


@dataclass
class OperationResult:
    event_id: int | None
    operation: str
    summary: str
    changed: int


class Operation:
    """One editor operation inside one write transaction (see `run_operation`)."""

    def __init__(self, session: Session, editor: str, name: str) -> None:
        self.session, self.editor, self.name = session, check_editor(editor), name
        self.now = utcnow()
        # Snapshots hold the columns an operation changed (plus version): enough to show and to undo.
        self.loaded: dict[str, dict[str, Any] | None] = {}
        self.before: dict[str, dict[str, Any] | None] = {}
        self.after: dict[str, dict[str, Any] | None] = {}
        self.written: dict[str, set[Key]] = {}
        self.context: set[str] = set()
        self.summary = name

    # -- reading -------------------------------------------------------------------
    def load(self, kind: str, keys: Iterable[Key]) -> dict[Key, dict[str, Any] | None]:
        """Current rows (locked on PostgreSQL), and the before-snapshot of the first load; the result
        keeps the caller's order.

        Rows are locked in key order, chunk after chunk and row after row, whatever order the caller
        gave: two editors locking overlapping rows in different orders (a selection and the same one
        reversed) would each hold rows the other waits for, a deadlock. In one order the second waits."""
        keys = list(dict.fromkeys(tuple(k) for k in keys))
        found = select_rows(self.session, kind, keys, lock=True)
        out = {k: found.get(k) for k in keys}
        for k, row in out.items():
            self.loaded.setdefault(entity_key(kind, k), dict(row) if row else None)
        return out

    def check_versions(self, kind: str, rows: dict[Key, dict[str, Any] | None], expected: dict[Any, int] | None,
                       editor_col: str = "editor") -> None:
        """Refuse the whole operation when any entity moved past the version the editor saw; the
        ConflictError names who moved it on (see `stale_version_error`)."""
        if not expected:
            return
        expected = expected_by_key(kind, expected)
        for key, row in rows.items():
            want = expected.get(key)
            if want is None:
                continue
            actual = row["version"] if row else 0
            if actual != want:
                raise stale_version_error(self.session, kind, key, row, want, editor_col)

    # -- writing -------------------------------------------------------------------
    def update(self, kind: str, changes: dict[Key, dict[str, Any]], current: dict[Key, dict[str, Any] | None]) -> None:
        """Bulk update existing rows (by primary key) and insert missing ones, bumping versions; a row
        inserted where one was before continues its versions (`recorded_versions`)."""
        model, cols = KINDS[kind]
        updates, inserts = [], []
        recorded = recorded_versions(self.session, kind, [k for k in changes if current.get(k) is None])
        for key, values in changes.items():
            row = current.get(key)
            stamp = {"updated_at": self.now, **({"updated_by": self.editor} if kind == "class" else {})}
            ek = entity_key(kind, key)
            if row is None:
                inserts.append({**dict(zip(cols, key)), **values, **stamp, "version": recorded.get(key, 0) + 1})
                self.before.setdefault(ek, None)
                self.after[ek] = inserts[-1]
            else:
                updates.append({"_id": row["id"], **values, **stamp, "version": row["version"] + 1})
                original = self.loaded.get(ek) or row
                before = self.before.setdefault(ek, {})
                if before is not None:
                    for c in values:
                        before.setdefault(c, original[c])
                    before.setdefault("version", original["version"])
                after = dict(values, version=row["version"] + 1, updated_at=self.now)
                self.after[ek] = after if self.after.get(ek) is None else {**self.after[ek], **after}
                current[key] = {**row, **after}  # a second update in the same operation builds on this
            self.written.setdefault(kind, set()).add(key)
        table = model.__table__
        # Inserts in key order too: two operations inserting the first labels of the same faces in
        # different orders would each wait on a unique key the other holds.
        inserts.sort(key=lambda row: tuple(row[c] for c in cols))
        for batch in _group_by_columns(updates):
            names = [c for c in batch[0] if c != "_id"]
            stmt = update(table).where(table.c.id == bindparam("_id")).values({c: bindparam(c) for c in names})
            self.session.execute(stmt, batch)
        for batch in _group_by_columns(inserts):
            self.session.execute(insert(table), batch)

    def insert_one(self, kind: str, values: dict[str, Any]) -> int:
        model, cols = KINDS[kind]
        row = self.session.execute(insert(model).values(**values, version=1, updated_at=self.now).returning(model.id)).one()
        key = (row.id,) if cols == ("id",) else tuple(values[c] for c in cols)
        self.before.setdefault(entity_key(kind, key), None)
        self.after[entity_key(kind, key)] = {"id": row.id, **values, "version": 1, "updated_at": self.now}
        self.written.setdefault(kind, set()).add(key)
        return row.id

    def delete(self, kind: str, rows: dict[Key, dict[str, Any] | None]) -> None:
        model, _ = KINDS[kind]
        ids = [row["id"] for row in rows.values() if row]
        for chunk in _chunks(ids):
            self.session.execute(delete(model).where(model.id.in_(chunk)))
        for key, row in rows.items():
            if row:
                ek = entity_key(kind, key)
                self.before.setdefault(ek, self.loaded.get(ek) or row)
                self.after[ek] = None
                self.written.setdefault(kind, set()).add(key)

    def concern(self, *keys: str) -> None:
        """Entities this operation is about without writing them (for history)."""
        self.context.update(keys)

    def concern_media_of(self, face_ids: Iterable[int]) -> None:
        """The GIFs of these faces: a GIF's history ("media:7") lists every operation on its faces' labels."""
        self.concern(*(f"media:{m}" for m in media_of_faces(self.session, face_ids).values()))

    # -- the audit row ---------------------------------------------------------------
    def finish(self, undo_of: AuditEvent | None = None) -> OperationResult:
        if not self.written:
            return OperationResult(None, self.name, self.summary + " (nothing changed)", 0)
        after = {k: (_to_json(v) if v else None) for k, v in self.after.items()}
        before = {k: (_to_json(v) if (v := self.before.get(k)) else None) for k in after}
        event = AuditEvent(at=self.now, editor=self.editor, operation=self.name, summary=self.summary,
                           n_entities=len(after), before=before, after=after,
                           undo_of_id=undo_of.id if undo_of else None)
        self.session.add(event)
        self.session.flush()
        rows = [{"event_id": event.id, "key": k, "written": True} for k in after]
        rows += [{"event_id": event.id, "key": k, "written": False} for k in sorted(self.context - set(after))]
        for chunk in _chunks(rows):
            self.session.execute(insert(AuditEntity.__table__), list(chunk))
        return OperationResult(event.id, self.name, self.summary, len(after))


def select_rows(session: Session, kind: str, keys: Iterable[Key], lock: bool = False) -> dict[Key, dict[str, Any]]:
    """The rows of these entities that exist, by key, read in key order chunk by chunk (FOR UPDATE
    when `lock`: see `Operation.load` for why the order matters)."""
    model, cols = KINDS[kind]
    table = model.__table__
    order = [table.c[c] for c in cols]
    found: dict[Key, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(keys)), CHUNK if len(cols) == 1 else COMPOSITE_CHUNK):
        if len(cols) == 1:
            cond = table.c[cols[0]].in_([k[0] for k in chunk])
        else:
            cond = or_(*[and_(*[table.c[c] == v for c, v in zip(cols, k)]) for k in chunk])
        stmt = select(table).where(cond).order_by(*order)
        for row in session.execute(stmt.with_for_update() if lock else stmt).mappings():
            found[tuple(row[c] for c in cols)] = dict(row)
    return found


def written_count(written: int, asked: int) -> tuple[int, str]:
    """(the count a summary names, a note for the rest): the rows an operation wrote, with
    "; 9 unchanged" for those already as asked, so the history reads what changed; all that were
    asked when none was written (`Operation.finish` then adds "(nothing changed)")."""
    return (written, f"; {asked - written} unchanged") if 0 < written < asked else (written or asked, "")


def _group_by_columns(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """executemany needs the same keys in every row."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    for group in groups.values():
        yield from (list(c) for c in _chunks(group))


def media_of_faces(session: Session, face_ids: Iterable[int]) -> dict[int, int]:
    """face id -> media id for the faces that exist."""
    ids = sorted(set(face_ids))
    found: dict[int, int] = {}
    for chunk in _chunks(ids):
        found.update(session.execute(select(Face.id, Face.media_id).where(Face.id.in_(chunk))).all())
    return found


def expected_by_key(kind: str, expected: dict[Any, Any]) -> dict[Key, int | None]:
    """An editor's expected versions keyed as `Operation.load` keys rows: (12,) or (media, tag).

    Why: ids that went through JSON or a form arrive as text ("12") or numpy integers; looked up as
    given they would match no row and the version check would silently pass. An id beyond the id columns
    (`check_id`) is kept: it matches no row, as any unknown id, and is never bound in a query from here."""
    out: dict[Key, int | None] = {}
    for raw, version in expected.items():
        parts = tuple(raw) if isinstance(raw, (tuple, list)) else (raw,)
        key = tuple(whole_number(p, kind) for p in parts)
        if version is not None:
            try:
                version = whole_number(version, kind)
            except ValidationError:
                raise ValidationError(f"expected version of {kind} {':'.join(map(str, key))} must be a whole "
                                      f"number, got {version!r}") from None
        out[key] = version
    return out


def recorded_versions(session: Session, kind: str, keys: Sequence[Key]) -> dict[Key, int]:
    """The highest version the audit log ever recorded for each key (before or after any operation).

    Why: a row deleted and created again (a label an undo removed, then a new decision; a tag removed,
    then the removal undone) must not start again at version 1, or an editor still looking at the old
    version 1 would overwrite the new row without a conflict. Keys never written are left out.

    Versions only rise, so the latest event that wrote a key holds its highest version (after it, or
    before it when it removed the row): only those events are read. Reading every event that ever
    wrote the keys made each prediction run over labels an undo removed slower than the last (the
    whole snapshot of every earlier run and undo, again and again)."""
    texts = {entity_key(kind, k): k for k in keys}
    keys_of: dict[int, list[str]] = {}
    for chunk in _chunks(list(texts)):
        stmt = (select(AuditEntity.key, func.max(AuditEntity.event_id))
                .where(AuditEntity.key.in_(chunk), AuditEntity.written.is_(True)).group_by(AuditEntity.key))
        for key, event_id in session.execute(stmt):
            keys_of.setdefault(event_id, []).append(key)
    out: dict[Key, int] = {}
    for chunk in _chunks(sorted(keys_of), 100):  # events can be large: a bulk operation's whole snapshot
        stmt = select(AuditEvent.id, AuditEvent.before, AuditEvent.after).where(AuditEvent.id.in_(chunk))
        for event_id, before, after in session.execute(stmt):
            for text in keys_of[event_id]:
                for snapshot in ((before or {}).get(text), (after or {}).get(text)):
                    if snapshot and isinstance(snapshot.get("version"), int):
                        key = texts[text]
                        out[key] = max(out.get(key, 0), snapshot["version"])
    return out


def lock_classes(session: Session, class_ids: Iterable[int | None]) -> dict[int, Any]:
    """Classes faces are about to be labeled as (or put back on), read FOR SHARE on PostgreSQL, in id
    order: id -> row (id, name, status, merged_into_id); ids of no class are left out.

    Why the lock: a merge retires its source class while this operation checks that class is active; an
    unlocked read would see it active until the merge commits, and the labels would land on a retired
    class after the merge moved the others away. FOR SHARE makes the labeling wait for a merge (which
    locks both classes FOR UPDATE) and then see the class retired, while two labelings of one class do
    not wait for each other. Take it before locking the faces, in id order, as merges lock classes and
    then faces, so that the two cannot deadlock. SQLite needs none of it: a write transaction holds the
    whole database (BEGIN IMMEDIATE)."""
    ids = sorted({c for c in class_ids if c is not None})
    found: dict[int, Any] = {}
    for chunk in _chunks(ids):
        stmt = (select(CelebrityClass.id, CelebrityClass.name, CelebrityClass.status, CelebrityClass.merged_into_id)
                .where(CelebrityClass.id.in_(chunk)).order_by(CelebrityClass.id).with_for_update(read=True))
        found.update((row.id, row) for row in session.execute(stmt))
    return found


# -- who moved an entity on: the audit log, not the row ------------------------------------
@dataclass(frozen=True)
class LastWrite:
    """The latest audited operation that wrote an entity."""

    event_id: int
    editor: str
    at: datetime
    operation: str
    undo_of_id: int | None

    def phrase(self) -> str:
        """"by bob at 2026-12-06 10:00:00 UTC in operation 12 (approve_faces)"."""
        what = f"undo of operation {self.undo_of_id}" if self.undo_of_id else self.operation
        return f"by {self.editor} at {utc_text(self.at)} in operation {self.event_id} ({what})"


def last_write(session: Session, key: str) -> LastWrite | None:
    """The latest audit event that wrote `key` ("face:12"), if any."""
    stmt = (select(AuditEvent.id, AuditEvent.editor, AuditEvent.at, AuditEvent.operation, AuditEvent.undo_of_id)
            .join(AuditEntity, AuditEntity.event_id == AuditEvent.id)
            .where(AuditEntity.key == key, AuditEntity.written.is_(True))
            .order_by(AuditEvent.id.desc()).limit(1))
    row = session.execute(stmt).first()
    return LastWrite(*row) if row else None


def describe_entity(session: Session, kind: str, key: Key) -> str:
    """"face 12", "class 3 ('Al Gore')", "tag 'smile' on nod.gif (media 7)": what an editor knows it by."""
    if kind == "class":
        name = session.scalar(select(CelebrityClass.name).where(CelebrityClass.id == key[0]))
        return f"class {key[0]}" + (f" ({name!r})" if name else "")
    if kind == "media_tag":
        media_id, tag_id = key
        tag = session.scalar(select(Tag.name).where(Tag.id == tag_id))
        path = session.scalar(select(Media.path).where(Media.id == media_id))
        file = PurePath(path).name if path else "?"
        return f"tag {tag!r} on {file} (media {media_id})" if tag else f"tag {tag_id} on {file} (media {media_id})"
    return entity_key(kind, key).replace(":", " ", 1)


def stale_version_error(session: Session, kind: str, key: Key, row: dict[str, Any] | None, expected: int,
                        editor_col: str = "editor") -> ConflictError:
    """The refusal of an edit based on version `expected` of an entity that has moved on.

    Who and when come from the audit log, not from the row: a model's prediction bumps a decided
    face's version but keeps the `editor` who decided it, so the row would blame that editor at the
    model's time; and a row removed since (a tag removed, a label undone) has nobody left to name.
    The row speaks only when no audited operation wrote it last (a write outside the operations)."""
    entity = describe_entity(session, kind, key)
    writer = last_write(session, entity_key(kind, key))
    if row is not None and writer is not None and row.get("updated_at") and as_utc(row["updated_at"]) > as_utc(writer.at):
        writer = None  # written since outside the audited operations: the row knows better
    if row is None:
        what = f"the label of {entity}" if kind == "face" else entity  # the face is there, its label is gone
        by = writer.phrase() if writer else "outside the audited operations"
        return ConflictError(entity, expected, 0, writer.editor if writer else None, writer.at if writer else None,
                             f"{what} was removed {by}; your edit was based on version {expected} of it: "
                             "reload and try again")
    if writer is None:
        return ConflictError(entity, expected, row["version"], row.get(editor_col), row.get("updated_at"))
    # version 0 is no version an editor saw: they saw no such row (a tag or label added since)
    based = (f"you saw no such {_ROW_NOUNS.get(kind, 'row')} (version 0)" if expected == 0
             else f"your edit was based on version {expected}")
    return ConflictError(entity, expected, row["version"], writer.editor, writer.at,
                         f"{entity} was changed {writer.phrase()}: it is at version {row['version']}, {based}; "
                         "reload it and try again")


_ROW_NOUNS = {"face": "label", "media_tag": "tag", "class": "class"}


_UNIQUE_ROWS = {"name_key": "a class of the same name", "face_label": "a label of the same face",
                "media_tag": "the same tag on the same media item", "tag": "the same new tag"}


def concurrent_write_error(exc: IntegrityError, factory: sessionmaker[Session] | None = None,
                           op: Operation | None = None) -> ConcurrentWriteError:
    """Name what two simultaneous operations both created: who created it first, when and in which
    operation (`first_creator`), else what it was, from the constraint the database cites."""
    try:
        named = first_creator(factory, op) if factory is not None and op is not None else None
    except Exception:  # noqa: BLE001 - naming the winner is a courtesy: the conflict is reported whatever it met
        named = None
    if named is not None:
        return named
    message = str(exc.orig)
    what = next((v for k, v in _UNIQUE_ROWS.items() if k in message), "the same row")
    return ConcurrentWriteError(what)


def first_creator(factory: sessionmaker[Session], op: Operation) -> ConcurrentWriteError | None:
    """After `op` was rolled back on a unique key: the first entity it was creating that exists now, refused
    as a stale edit of it (`stale_version_error`: by whom, when, in which operation), or None.

    Why: two editors saving the first label of the same face both saw no row, version 0; the one who
    committed first wins and the other meets the unique key. That editor's edit was based on a version
    that has moved on, and must read who moved it as any stale edit does, not only "someone, at the same
    moment". Read after the rollback, in a new transaction: the winner has committed (the insert waited
    for it), so its row and audit event are there. Still a ConcurrentWriteError, as callers expect."""
    created = sorted(parse_key(text) for text, after in op.after.items()
                     if after is not None and text in op.before and op.before[text] is None)
    with factory() as session:
        for kind, group in groupby(created, key=lambda item: item[0]):
            wanted = [key for _, key in group]
            rows = select_rows(session, kind, wanted)
            key = next((k for k in wanted if k in rows), None)
            if key is not None:
                # `op` was creating the row: its editor saw none, version 0, whatever versions an earlier
                # row of that key had (an insert continues them: `recorded_versions`)
                return ConcurrentWriteError.naming(stale_version_error(session, kind, key, rows[key], 0))
    return None


# PostgreSQL gives up on one of two transactions waiting on each other (deadlock_detected) or that
# cannot both be serialised (serialization_failure); running the loser again succeeds.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def is_write_collision(exc: DBAPIError) -> bool:
    """Whether the database refused a write only because another transaction was writing the same
    rows at the same time: a deadlock or serialization failure on PostgreSQL, a write lock held past
    the busy timeout on SQLite. Nothing was saved, and the same edit would go through on a retry."""
    if getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES:
        return True
    return isinstance(exc.orig, sqlite3.OperationalError) and "database is locked" in str(exc.orig)


@contextmanager
def collisions_as_conflicts() -> Iterator[None]:
    """Turn a write collision (`is_write_collision`) into a ConcurrentWriteError, what an editor reads
    instead of "deadlock detected": someone else was saving, try again. Other errors pass."""
    try:
        yield
    except DBAPIError as exc:
        if not is_write_collision(exc):
            raise
        raise ConcurrentWriteError("changes to some of the same faces, classes or tags") from exc


@contextmanager
def run_operation(factory: sessionmaker[Session], editor: str, name: str) -> Iterator[Operation]:
    """`with run_operation(store, editor, "approve") as op: ...` then `op.result`.

    Two editors writing the same rows at once never see a raw database error: a unique key both
    created, or a deadlock or lock timeout between them, is a ConcurrentWriteError (nothing saved)."""
    op: Operation | None = None
    try:
        with collisions_as_conflicts(), write_scope(factory) as session:
            op = Operation(session, editor, name)
            yield op
            op.result = op.finish()
    except IntegrityError as exc:
        raise concurrent_write_error(exc, factory, op) from exc


# -- undo --------------------------------------------------------------------------------
STAMP_COLUMNS = frozenset({"version", "updated_at", "updated_by"})


def _changed_columns(snapshot: dict[str, Any] | None) -> frozenset[str] | None:
    """The columns an operation changed in one row (its snapshot minus the bookkeeping); None when the
    row was created or deleted, which touches every column."""
    return None if snapshot is None else frozenset(snapshot) - STAMP_COLUMNS


# The operation every model refresh writes its face predictions in (`record_predictions`: `giflens predict`,
# the app's refresh, and the undecided faces `giflens retrain` predicts with the model it deployed).
PREDICTION_RUN = "predict_faces"
# A face label's prediction: what a prediction run writes beside any decision.
PREDICTION_COLUMNS = frozenset({"predicted_class_id", "predicted_confidence", "predicted_top", "model_version",
                                "predicted_at"})
# What a prediction run also writes into a label it leaves undecided: the label shows the model's guess.
GUESS_COLUMNS = frozenset({"status", "class_id", "source", "editor"})


# Operations whose face labels created for faces without one are not pinned by a later prediction run: adding a
# class seeded with faces. Why only these: the README promises a seeded class stays undoable after `giflens predict`,
# and whether a seed face had a label before is nothing the editor sees; a label created by an import or by a
# single decision stays pinned by any later write (the README: undo the predictions first).
SEEDING_OPERATIONS = frozenset({"add_class"})


def _written_columns(event: AuditEvent, key: str, snapshot: dict[str, Any] | None) -> frozenset[str] | None:
    """The columns `event` wrote in one row, for `_depends_on`: None (every column, pinned by any later write)
    for a row it created or deleted, but the columns it set (its decision) for a face label a seeding operation
    created.

    Why only those there: a seed's label is held as one that existed before is, pinned by a later write of its
    decision (a decision, a merge moving its class, a deletion) but not by a later run's prediction or a merge
    moving that prediction; the undo then keeps the label as the run's guess (`_kept_guesses`)."""
    if event.before.get(key) is not None:
        return _changed_columns(snapshot)
    if snapshot is not None and key.startswith("face:") and event.operation in SEEDING_OPERATIONS:
        return _changed_columns(snapshot) - frozenset(KINDS["face"][1])  # its key columns name the row
    return None


def _model_columns(snapshot: dict[str, Any] | None) -> frozenset[str]:
    """The columns of a prediction run's snapshot of a face label that are the model's own: its prediction,
    and for a label it left undecided its class, status, source and editor too (the guess it shows)."""
    if not snapshot:
        return frozenset()
    owned = PREDICTION_COLUMNS | (GUESS_COLUMNS if snapshot.get("status") in UNDECIDED_STATUSES else frozenset())
    return owned & frozenset(snapshot)


def _is_model_refresh(operation: str, later_operation: str, later_undo_of: int | None) -> bool:
    """Whether a later event is a prediction run writing over what an operation that is not one wrote.

    Why prediction runs apart: a merge or split moves the predictions of the class with its labels, and the
    next run rewrites them; counted as a later change of the same columns, every `giflens predict` pinned the
    editor's merge for good, though it only refreshed the model's guess. An earlier prediction run stays
    pinned by a later one: undoing it under the newer run would leave two models' predictions in the store."""
    return later_operation == PREDICTION_RUN and later_undo_of is None and operation != PREDICTION_RUN


def _depends_on(mine: frozenset[str] | None, later_before: dict[str, Any] | None,
                later_after: dict[str, Any] | None, model_refresh: bool = False) -> bool:
    """Whether a later write of the same row builds on what this operation wrote: it does when either
    created or deleted the row (`mine` None; a seed's label a class-add created counts as the decision columns it
    set, `_written_columns`), or when both changed a column in common. A model's refreshed
    prediction of a face the editor approved changes other columns, so the approval stays undoable;
    a later prediction run (`model_refresh`, `_is_model_refresh`) builds on nothing through the model's
    own columns (`_model_columns`), which the undo leaves as the run wrote them."""
    theirs = _changed_columns(later_after) if later_before is not None else None
    if theirs is not None and model_refresh:
        theirs = theirs - _model_columns(later_after)
    return mine is None or theirs is None or bool(mine & theirs)


@dataclass
class Blockers:
    """What pins an event (`_blocking_events`): how many later operations and how many later undos of
    earlier operations, and the first of each with the first entity key it shares. Only the first ones are
    kept: the refusal names them and counts the rest, and a log with 20,000 later edits of the same faces
    must not hold 20,000 events in memory to say so. False when nothing pins the event."""
    ops: int = 0
    undos: int = 0
    first_op: tuple[AuditEvent, str] | None = None
    first_undo: tuple[AuditEvent, str] | None = None

    def __bool__(self) -> bool:
        return bool(self.ops or self.undos)


def _blocking_events(session: Session, event: AuditEvent) -> Blockers:
    """Later operations, still in force, that wrote a column this one wrote in the same row: counted,
    the first operation and the first undo loaded with the first such entity key.

    A row this operation created or removed counts as every column (undoing it deletes or re-creates
    the whole row), so a model refresh of the prediction columns of a label an import created pins the
    import, while a refresh beside a decision on an existing label does not (see `_depends_on`), nor beside
    the decision a class-add wrote into a seed's label it created (`_written_columns`).

    An undone operation and the undo that reversed it cancel out: neither blocks. That holds only for
    undos of operations later than this one; an undo of an EARLIER operation is a later change in its
    own right (undoing an import deletes the labels a later prediction wrote into), and it blocks when
    it changed a column this operation wrote or removed the row.

    Why in chunks: loading each later event by itself (one query each) took 12-16 s to refuse the undo
    of a prediction run that 20,000 later edits overlapped, with SQLite's write lock held throughout. The
    snapshots of later events are read CHUNK events per query, streamed, and only for events whose
    blocking depends on the columns they wrote: a later write of a row this operation created or removed
    (but a seed's label, `_written_columns`) blocks whatever it wrote, so it is counted from its keys alone."""
    mine = {key: _written_columns(event, key, snapshot) for key, snapshot in event.after.items()}
    later = _later_writes(session, event, list(mine))
    found = Blockers()
    for chunk in _chunks(list(later)):
        to_read = [i for i in chunk if all(mine[k] is not None for k in later[i][1])]
        snapshots: dict[int, tuple[dict[str, Any], dict[str, Any], bool]] = {}
        for sub in _chunks(to_read):
            stmt = (select(AuditEvent.id, AuditEvent.operation, AuditEvent.before, AuditEvent.after)
                    .where(AuditEvent.id.in_(sub)).order_by(AuditEvent.id).execution_options(yield_per=100))
            for later_id, operation, before, after in session.execute(stmt):  # only the shared keys are kept
                undo_of, keys = later[later_id]
                snapshots[later_id] = ({k: before.get(k) for k in keys}, {k: after.get(k) for k in keys},
                                       _is_model_refresh(event.operation, operation, undo_of))
        for later_id in chunk:
            undo_of, keys = later[later_id]
            if later_id in snapshots:
                before, after, refresh = snapshots[later_id]
                if not any(_depends_on(mine[k], before.get(k), after.get(k), refresh) for k in keys):
                    continue
            if undo_of is None:
                found.ops += 1
                if found.first_op is None:
                    found.first_op = _first_blocker(session, event, later_id, keys, mine)
            else:
                found.undos += 1
                if found.first_undo is None:
                    found.first_undo = _first_blocker(session, event, later_id, keys, mine)
    return found


def _first_blocker(session: Session, event: AuditEvent, later_id: int, keys: list[str],
                   mine: dict[str, frozenset[str] | None]) -> tuple[AuditEvent, str]:
    """A blocking later event, loaded, with the first of `keys` (sorted) through which it blocks `event`."""
    later = session.get(AuditEvent, later_id)
    refresh = _is_model_refresh(event.operation, later.operation, later.undo_of_id)
    key = next(k for k in keys if _depends_on(mine[k], later.before.get(k), later.after.get(k), refresh))
    return later, key


@dataclass
class Superseded:
    """What later prediction runs still in force wrote over an operation's face labels (`_superseded_columns`):
    per face key, the model's columns they wrote (`columns`), and the editor of the newest of those runs
    (`run_editor`), the run whose prediction the label holds.

    Why the editor too: a label the undo leaves undecided shows that run's guess, and a guess is credited to
    the run that made it, as the run itself credits one (`_show_model_guess`, `_kept_guesses`)."""
    columns: dict[str, frozenset[str]]
    run_editor: dict[str, str]


def _superseded_columns(session: Session, event: AuditEvent) -> Superseded:
    """The columns of `event`'s face labels that later prediction runs still in force wrote as the model's
    (`_model_columns`) over what `event` wrote there: an undo of `event` neither compares nor restores them.

    Why: they hold the model's newer guess (`_is_model_refresh`), which is no change of the editor's; an
    undo restoring the guess `event` replaced would put a stale prediction over the newer one, and comparing
    them would refuse the undo as "changed since". A label a seeding operation created counts too (`_kept_guesses`)."""
    none = Superseded({}, {})
    keys = [text for text, before in (event.before or {}).items()
            if text.startswith("face:") and event.after.get(text) is not None
            and (before is not None or event.operation in SEEDING_OPERATIONS)]
    if not keys or event.operation == PREDICTION_RUN:
        return none
    later = _later_writes(session, event, keys)
    candidates = [i for i, (undo_of, _) in later.items() if undo_of is None]
    runs: dict[int, str] = {}
    for chunk in _chunks(candidates):
        runs.update(session.execute(select(AuditEvent.id, AuditEvent.editor)
                                    .where(AuditEvent.id.in_(chunk), AuditEvent.operation == PREDICTION_RUN)).all())
    if not runs:
        return none
    written = sorted({k for i in runs for k in later[i][1]})
    _, after = snapshots_of(session, list(runs), written, sides=("after",))
    out = Superseded({}, {key: runs[i] for i in sorted(runs) for key in later[i][1]})  # the newest run's editor wins
    for snapshots in after.values():
        for key, snapshot in snapshots.items():
            out.columns[key] = out.columns.get(key, frozenset()) | _model_columns(snapshot)
    return out


def _kept_guesses(event: AuditEvent, superseded: Superseded,
                  current: dict[Key, dict[str, Any] | None]) -> dict[Key, dict[str, Any]]:
    """Face key -> the undecided guess an undo of `event` leaves in a label `event` created (a seed of a new
    class, `SEEDING_OPERATIONS`) where a later prediction run wrote its prediction since (`superseded`): the
    status, class, source and editor that run writes into a label without a decision.

    Why not delete it as the rest of what `event` created: the label holds the newer run's prediction, which
    is no part of the editor's operation; deleted, the face would lose it until the next run, and keeping the
    run from pinning the undo (`_written_columns`) would have cost the prediction."""
    out: dict[Key, dict[str, Any]] = {}
    for text, columns in superseded.columns.items():
        key = parse_key(text)[1]
        row = current.get(key)
        if columns and event.before.get(text) is None and row is not None:
            out[key] = {"status": "predicted", "class_id": row["predicted_class_id"], "source": "model",
                        "editor": superseded.run_editor[text]}
    return out


def _restored_run_editors(session: Session, run: AuditEvent,
                          current: dict[Key, dict[str, Any] | None]) -> dict[str, str]:
    """Face key -> the editor of the prediction run whose prediction an undo of prediction run `run` brings
    back into a label that is undecided now but was decided when `run` wrote it (so `run` wrote only its
    prediction there, and its before snapshot holds no editor): the newest earlier run in force then that
    wrote the label.

    Why: an undone decision leaves the label as the guess of the run whose prediction it holds
    (`_show_model_guess`, `Superseded`), `run`'s own editor; undoing `run` then restores the earlier
    prediction, which must name its own run's editor, as `record_predictions` writes it, not `run`'s. Only
    prediction runs write a face's prediction (a merge moves it within a run's guess), so that run is the
    newest earlier one that wrote the label and was not undone before `run`. Only labels undecided now and
    decided then are looked up, those whose decision was undone since (all of a bulk decision's faces once it
    is undone: in chunks), one row per label."""
    if run.operation != PREDICTION_RUN:
        return {}
    keys = [text for text, before in (run.before or {}).items()
            if text.startswith("face:") and before is not None and "editor" not in before
            and "predicted_class_id" in before
            and (row := current.get(parse_key(text)[1])) is not None and row["status"] in UNDECIDED_STATUSES]
    if not keys:
        return {}
    newest: dict[str, int] = {}
    for chunk in _chunks(keys):
        stmt = (select(AuditEntity.key, func.max(AuditEvent.id))
                .join(AuditEvent, AuditEntity.event_id == AuditEvent.id)
                .where(AuditEntity.key.in_(chunk), AuditEntity.written.is_(True), AuditEvent.id < run.id,
                       AuditEvent.operation == PREDICTION_RUN, AuditEvent.undo_of_id.is_(None),
                       or_(AuditEvent.undone_by_id.is_(None), AuditEvent.undone_by_id > run.id))
                .group_by(AuditEntity.key))
        newest.update(session.execute(stmt).all())
    editors: dict[int, str] = {}
    for chunk in _chunks(sorted(set(newest.values()))):
        editors.update(session.execute(select(AuditEvent.id, AuditEvent.editor).where(AuditEvent.id.in_(chunk))).all())
    return {text: editors[event_id] for text, event_id in newest.items()}


def _undone_under_run(session: Session, run: AuditEvent) -> dict[int, list[str]]:
    """Earlier operations whose undo came after prediction run `run` and kept the run's columns over theirs
    (`_superseded_columns`): operation id -> the face keys (sorted) whose prediction or guess it wrote there.

    Why: `run`'s before snapshot holds what such an operation wrote (a merge's moved predictions); undoing
    the run would restore it, though the operation is undone, leaving a face whose prediction names another
    class than its top guess and another model, or a guess that never existed. A seed's label the operation
    created and its undo kept as the run's guess (`_kept_guesses`) counts too: the run's undo would leave it
    undecided with no prediction at all (or with the prediction of the run before, where the run's before
    snapshot holds one). Only the face keys of the run are read, for the events undone after it (few,
    `_operations_undone_after`), so a run over 20,000 faces is checked in a few queries."""
    keys = [k for k, after in (run.after or {}).items() if k.startswith("face:") and after is not None]
    if run.operation != PREDICTION_RUN or not keys:
        return {}
    operations = _operations_undone_after(session, run)
    if not operations:
        return {}
    seeding = {event_id for event_id, operation in operations.items() if operation in SEEDING_OPERATIONS}
    earlier: dict[int, list[str]] = {}
    for ids in _chunks(sorted(operations)):
        for chunk in _chunks(keys):
            stmt = (select(AuditEntity.event_id, AuditEntity.key)
                    .where(AuditEntity.event_id.in_(ids), AuditEntity.key.in_(chunk), AuditEntity.written.is_(True)))
            for event_id, key in session.execute(stmt):
                earlier.setdefault(event_id, []).append(key)
    if not earlier:
        return {}
    _, after = snapshots_of(session, list(earlier), sorted({k for ks in earlier.values() for k in ks}), sides=("after",))
    # the before side only where the after side may keep a key: a decision the run wrote only its prediction
    # beside (an approval of 20,000 faces) is settled by its after snapshot alone, and not read twice over
    maybe = {event_id: [k for k in sorted(ks) if (mine := after.get(event_id, {}).get(k)) is not None
                        and _model_columns(run.after[k]) and (event_id in seeding or _changed_columns(mine)
                                                              & _model_columns(run.after[k]))]
             for event_id, ks in earlier.items()}
    maybe = {event_id: ks for event_id, ks in maybe.items() if ks}
    if not maybe:
        return {}
    before, _ = snapshots_of(session, list(maybe), sorted({k for ks in maybe.values() for k in ks}), sides=("before",))
    out: dict[int, list[str]] = {}
    for event_id in sorted(maybe):
        then = before.get(event_id, {})
        kept = [k for k in maybe[event_id]
                if (mine := after[event_id][k]) is not None and (
                    (then.get(k) is not None and _changed_columns(mine) & _model_columns(run.after[k]))
                    or (k in then and then[k] is None and event_id in seeding and _model_columns(run.after[k])))]
        if kept:
            out[event_id] = kept
    return out


def _operations_undone_after(session: Session, run: AuditEvent) -> dict[int, str]:
    """Operations before prediction run `run` (no run, no undo) undone after it: id -> operation.

    Why found through their undos, the events after `run`, and not by joining each of the run's face
    keys to its events: SQLite stores a row's columns in order, and the undo columns come after the
    before/after snapshots, so each joined row walked its event's whole snapshot (megabytes for a bulk
    operation) to read them, once per face key: 40 s of the undo of a run over 20,000 faces."""
    undone = sorted(set(session.scalars(select(AuditEvent.undo_of_id)
                                        .where(AuditEvent.id > run.id, AuditEvent.undo_of_id < run.id))))
    out: dict[int, str] = {}
    for chunk in _chunks(undone):
        out.update(session.execute(select(AuditEvent.id, AuditEvent.operation)
                                   .where(AuditEvent.id.in_(chunk), AuditEvent.undone_by_id > run.id,
                                          AuditEvent.undo_of_id.is_(None), AuditEvent.operation != PREDICTION_RUN)).all())
    return out


def _check_run_kept_by_undo(session: Session, event: AuditEvent) -> None:
    """Refuse undoing a prediction run whose predictions an undo of an earlier operation kept over that
    operation's own (`_undone_under_run`): the refusal names the operation, its undo and the faces, and
    says what to do instead (a new run). An undo cannot be undone, so the refusal is final."""
    undone = _undone_under_run(session, event)
    if not undone:
        return
    first_id = next(iter(undone))
    first = session.get(AuditEvent, first_id)
    undo = session.get(AuditEvent, first.undone_by_id)
    faces = sorted({k for ks in undone.values() for k in ks}, key=lambda k: parse_key(k)[1])
    wrote = LastWrite(first.id, first.editor, first.at, first.operation, None).phrase()
    undid = LastWrite(undo.id, undo.editor, undo.at, undo.operation, undo.undo_of_id).phrase()
    others = f" (and {len(undone) - 1} other operation(s) undone the same way)" if len(undone) > 1 else ""
    if all(first.before.get(k) is None for k in undone[first_id]):  # seeds' labels it created (`_kept_guesses`)
        held, kept, back = (f"held labels created {wrote}{others}", "keeping them as this run's undecided guesses",
                            _seed_labels_outcome(event, first.id, undone[first_id]))
    else:
        held, kept, back = (f"held the predictions written {wrote}{others}", "keeping this run's newer predictions",
                            f"bring back the predictions of the undone operation {first.id}")
    raise UndoError(
        f"operation {event.id} ({event.operation}) cannot be undone: {len(faces)} face(s) it predicted, first "
        f"{describe_entity(session, *parse_key(faces[0]))}, {held}, which was undone since {undid} {kept}; "
        f"undoing operation {event.id} would {back}, and an undo cannot be undone; run "
        "`giflens predict` again to refresh the predictions instead")


def _seed_labels_outcome(run: AuditEvent, created_by: int, keys: list[str]) -> str:
    """What undoing prediction run `run` would do to the seeds' labels of `keys`, which operation
    `created_by` created and its undo left to `run` as its guesses: the phrase after "would" in the refusal.

    Why two outcomes: the undo restores `run`'s before snapshot, which holds no prediction where no run
    predicted the face before `run`, else the earlier run's; saying "no prediction" for both told the
    editor of a loss that would not happen."""
    earlier = sum(1 for k in keys if (run.before.get(k) or {}).get("predicted_class_id") is not None)

    def those(n: int) -> str:
        return "those labels" if n == len(keys) else f"{n} of those labels"

    outcomes = []
    if earlier < len(keys):
        outcomes.append(f"leave {those(len(keys) - earlier)} undecided with no prediction")
    if earlier:
        outcomes.append(f"put back the earlier run's prediction in {those(earlier)}, which the undone "
                        f"operation {created_by} left to this run")
    return " and ".join(outcomes)


def _later_writes(session: Session, event: AuditEvent, keys: list[str]) -> dict[int, tuple[int | None, list[str]]]:
    """Later events still in force that wrote any of `keys`, by id in order, each with the event it undoes
    (None for an operation) and the keys (sorted).

    Only (event id, key) pairs are read here: selecting the event with every shared key fetched and
    decoded a bulk event's whole before/after snapshot once per key, so undoing a bulk edit that a later
    bulk edit overlapped took the square of its size in time and memory. The caller reads each later
    event's snapshot once, and only when it needs it."""
    out: dict[int, tuple[int | None, list[str]]] = {}
    for chunk in _chunks(keys):
        stmt = (select(AuditEntity.event_id, AuditEvent.undo_of_id, AuditEntity.key)
                .join(AuditEvent, AuditEntity.event_id == AuditEvent.id)
                .where(AuditEntity.key.in_(chunk), AuditEntity.written.is_(True), AuditEvent.id > event.id,
                       AuditEvent.undone_by_id.is_(None),
                       or_(AuditEvent.undo_of_id.is_(None), AuditEvent.undo_of_id < event.id)))
        for later_id, undo_of, key in session.execute(stmt):
            out.setdefault(later_id, (undo_of, []))[1].append(key)
    return {later_id: (out[later_id][0], sorted(out[later_id][1])) for later_id in sorted(out)}


def _blocking_error(session: Session, event: AuditEvent, blocking: Blockers) -> UndoError:
    """The refusal naming what pins `event`: the first later operation still in force (undo it first),
    else the first undo of an earlier operation (which cannot be undone: the refusal is final). Times in
    UTC, labelled, as ConflictError gives them (`LastWrite.phrase`): PostgreSQL hands them back in the
    session's time zone, SQLite in UTC, and the same operation must read the same time everywhere."""

    def where(key: str) -> str:
        kind, parts = parse_key(key)
        return describe_entity(session, kind, parts)

    head = f"operation {event.id} ({event.operation}) cannot be undone: "
    if blocking.first_op is not None:
        first, key = blocking.first_op
        created = event.before.get(key) is None and event.after.get(key) is not None
        kept = created and _keeps_seed_guess(session, event, key)
        why = _created_row_pinned(event.id, key, where(key), kept) if created else f" ({where(key)})"
        undo = blocking.first_undo[0] if blocking.first_undo is not None else None
        also = (f"; {blocking.undos} later undo(s) of earlier operations changed them too, first {undo.id} "
                f"(undo of operation {undo.undo_of_id})" if undo is not None else "")
        return UndoError(
            head + f"{blocking.ops} later operation(s) changed or used the same entities, first {first.id} "
            f"({first.operation}) by {first.editor} at {utc_text(first.at)}{why}{also}; undo those first")
    assert blocking.first_undo is not None
    first, key = blocking.first_undo
    removed = first.after.get(key) is None
    return UndoError(
        head + f"{where(key)} was {'removed' if removed else 'changed'} since by operation {first.id} (undo of the "
        f"earlier operation {first.undo_of_id}) by {first.editor} at {utc_text(first.at)}, over what "
        f"operation {event.id} wrote there; an undo cannot be undone, so operation {event.id} can no longer be "
        "restored (redo what you want changed as a new operation)")


def _keeps_seed_guess(session: Session, event: AuditEvent, key: str) -> bool:
    """Whether an undo of seeding operation `event` would keep the face label `key` it created as a later
    prediction run's guess (`_kept_guesses`) rather than delete it: a run still in force wrote its prediction
    there. Read only for a refusal's wording (`_created_row_pinned`), which says the one outcome that applies."""
    if not key.startswith("face:") or event.operation not in SEEDING_OPERATIONS:
        return False
    return bool(_superseded_columns(session, event).columns.get(key))


def _created_row_pinned(event_id: int, key: str, entity: str, kept_guess: bool = False) -> str:
    """Why a later write pins a row `event_id` created: "; it wrote into face 1's label, which operation 4
    created, and undoing 4 would delete that label with what was written into it".

    Why the face's label: a face's audit key is its label's row, not the face (an ingest made the face, an
    import or a decision its label); saying operation 4 created "face 1" sent the editor looking for the
    wrong thing, as if the undo would delete the face. Why `kept_guess` apart: the undo of a class-add keeps a
    seed's label it created as a later prediction run's guess (`_kept_guesses`, `_keeps_seed_guess`), so
    "delete" would be untrue there; where no run predicted the seed, it is deleted, and only that is said."""
    row, that = (f"{entity}'s label", "that label") if key.startswith("face:") else (entity, "that row")
    if kept_guess:
        return (f"; it wrote into {row}, which operation {event_id} created, and undoing {event_id} would keep "
                f"only a later prediction run's guess in {that}, dropping what was written into it")
    return (f"; it wrote into {row}, which operation {event_id} created, and undoing {event_id} would delete "
            f"{that} with what was written into it")


def _differs(model: type, now: dict[str, Any] | None, then: dict[str, Any] | None,
             skip: frozenset[str] = frozenset()) -> bool:
    """Whether a row no longer holds what an operation wrote into it (the columns it wrote only, but
    `skip`: those later prediction runs rewrote, `_superseded_columns`).

    Versions are not compared: undoing a later operation restores content under a new version."""
    if (now is None) != (then is None):
        return True
    if now is None:
        return False
    table = model.__table__
    return any(now.get(c) != v for c, v in _from_json(model, then).items()
               if c not in STAMP_COLUMNS and c not in skip and c in table.c
               and not isinstance(table.c[c].type, DateTime))


def _foreign_keys(after: dict[str, Any] | None) -> list[str]:
    """Keys of an event's `after` that are not entities an undo can restore (KINDS).

    Why: some audited records are not `Operation`s; an ingest batch stores counts and media there
    (labeling/ingest.py). Undo must refuse those by name, not fail looking them up as entity kinds."""
    return [k for k in (after or {}) if k.split(":", 1)[0] not in KINDS]


def _class_dependents(session: Session, class_ids: Sequence[int], since: datetime
                      ) -> tuple[dict[int, list[str]], dict[int, set[int]]]:
    """What still names classes an undo is about to delete, per class: a list of readable reasons; and the
    faces whose labels name each class (for `_label_writers_by_faces`, read once here).

    Why this is needed beside `_blocking_events`: not every reference is an audited write of the
    class. Model predictions name a class in a face label's prediction columns and top list, and
    track predictions are derived data written without an audit event at all (labeling/recognition.py);
    deleting the class under them would break a foreign key or leave ids that a later class could
    reuse. Only rows written since the class was created (`since`) can name it in a top list.
    A track prediction an undone refresh left behind is not read anywhere (`current_track_prediction`),
    so it does not count: `_clear_stale_track_predictions` clears it with the class. Classes merged into
    it are `_classes_merged_into`.
    """
    ids = set(class_ids)
    if not ids:
        return {}, {}
    out: dict[int, list[str]] = {}
    id_list = sorted(ids)
    faces: dict[int, set[int]] = {}
    decided: dict[int, int] = {}
    models: dict[int, set[str | None]] = {}
    for face_id, named, _, model, by_decision in _labels_naming(session, ids, since):
        for c in named:
            faces.setdefault(c, set()).add(face_id)
            if c in by_decision:
                decided[c] = decided.get(c, 0) + 1
            else:
                models.setdefault(c, set()).add(model)
    for c, named_by in faces.items():
        out.setdefault(c, []).append(_labels_phrase(len(named_by), decided.get(c, 0), models.get(c, set())))
    tracks: dict[int, int] = {}
    stmt = select(Track.predicted_class_id, Track.predicted_top).where(
        or_(Track.predicted_class_id.in_(id_list), Track.predicted_at >= since), _current_track_prediction())
    for predicted, top in session.execute(stmt):
        for c in ({predicted} | {int(c) for c, _ in (top or [])}) & ids:
            tracks[c] = tracks.get(c, 0) + 1
    for c, n in tracks.items():
        out.setdefault(c, []).append(f"the predictions of {n} face track(s)")
    return out, faces


def _labels_phrase(n: int, decided: int, models: set[str | None]) -> str:
    """"2 face label(s) (predictions of m1)", or, when some are decisions, "2 face label(s) (1 editor label(s),
    1 prediction(s) of m0)".

    Why split: a label an editor (or an import) decided names the class as a decision, not as a model's
    guess; counting it among "predictions of m0" sent the editor looking for a model run to undo."""
    versions = ", ".join(sorted(m for m in models if m))
    predicted = n - decided
    if not decided:
        return f"{n} face label(s)" + (f" (predictions of {versions})" if versions else "")
    if not predicted:
        return f"{n} face label(s) ({decided} editor label(s))"
    return (f"{n} face label(s) ({decided} editor label(s), {predicted} prediction(s)"
            + (f" of {versions})" if versions else ")"))


def _labels_naming(session: Session, ids: set[int], since: datetime
                   ) -> Iterator[tuple[int, set[int], set[int], str | None, set[int]]]:
    """(face id, the classes of `ids` its label names, those of them its prediction names, its model version,
    the one its decision names: its class when an editor or an import decided it, not the model) for each
    face label that names any of `ids`: as its class, its predicted class or in its top list. Only labels
    predicted since the classes were created (`since`) can name them in a top list alone."""
    id_list = sorted(ids)
    stmt = select(FaceLabel.face_id, FaceLabel.class_id, FaceLabel.predicted_class_id, FaceLabel.predicted_top,
                  FaceLabel.model_version, FaceLabel.status).where(
        or_(FaceLabel.class_id.in_(id_list), FaceLabel.predicted_class_id.in_(id_list), FaceLabel.predicted_at >= since))
    for face_id, class_id, predicted, top, model, status in session.execute(stmt):
        by_model = ({predicted} | {int(c) for c, _ in (top or [])}) & ids
        if by_model or class_id in ids:
            decided = {class_id} & ids if status not in UNDECIDED_STATUSES else set()
            yield face_id, by_model | ({class_id} & ids), by_model, model, decided


def _classes_merged_into(session: Session, class_ids: Sequence[int]) -> dict[int, list[str]]:
    """Classes (not themselves being deleted) merged into classes an undo is about to delete, per class:
    "class 'Bob', merged into it". Kept apart from `_class_dependents`: undoing the operations that wrote
    face labels does not clear these, so the refusal cannot say that undoing those is enough."""
    out: dict[int, list[str]] = {}
    id_list = sorted(set(class_ids))
    stmt = select(CelebrityClass.merged_into_id, CelebrityClass.name).where(
        CelebrityClass.merged_into_id.in_(id_list), CelebrityClass.id.not_in(id_list))
    for target, name in session.execute(stmt):
        out.setdefault(target, []).append(f"class {name!r}, merged into it")
    return out


def _current_track_prediction():
    """labeling.queries.current_track_prediction, imported when called: labeling.queries imports this module."""
    from labeling.queries import current_track_prediction

    return current_track_prediction()


def _clear_stale_track_predictions(session: Session, class_ids: Sequence[int], since: datetime) -> int:
    """Clear the track predictions an undone refresh left behind (`current_track_prediction` false)
    that name classes an undo is deleting; how many.

    Why: they are read nowhere, so they do not stop the class's deletion (`_class_dependents`), but
    the class id they hold has no foreign key and SQLite may hand it to the next class created: a later
    refresh with the same model version would make the old prediction current again, naming that other
    class. Cleared, the track reads as never predicted, as it does already."""
    ids = set(class_ids)
    stmt = select(Track.id, Track.predicted_class_id, Track.predicted_top).where(
        or_(Track.predicted_class_id.in_(sorted(ids)), Track.predicted_at >= since), ~_current_track_prediction())
    stale = [track_id for track_id, predicted, top in session.execute(stmt)
             if ({predicted} | {int(c) for c, _ in (top or [])}) & ids]
    for chunk in _chunks(stale):
        session.execute(update(Track).where(Track.id.in_(chunk)).values({f: None for f in TRACK_PREDICTION_FIELDS}))
    return len(stale)


LABEL_WRITERS_SHOWN = 5  # operations a refused class deletion names per class, newest first; the rest counted


def _classes_in_label(snapshot: dict[str, Any] | None) -> set[Any]:
    """The classes a face label snapshot names: its class, its predicted class, its prediction's top list."""
    if not snapshot:
        return set()
    return ({snapshot.get("class_id"), snapshot.get("predicted_class_id")}
            | {int(c) for c, _ in snapshot.get("predicted_top") or []})


def _label_events_naming(session: Session, event: AuditEvent, class_ids: Sequence[int]
                         ) -> tuple[dict[int, list[Any]], dict[int, set[int]]]:
    """Later operations, still undoable, whose face label snapshots name classes an undo is about to
    delete, per class, newest first (the order to undo them in); and per class the faces they left naming it
    (their `after`), which the refusal may say they account for.

    Why: such an operation may have moved its faces off the class since (the labels no longer name it,
    so `_class_dependents` finds nothing), yet undoing it would put them back on a class that is gone.
    Operations that label faces concern the classes they name ("class:<id>"; a prediction run every
    class of its top lists), which finds them."""
    ids = set(class_ids)
    naming: dict[int, list[Any]] = {}
    left: dict[int, set[int]] = {}
    stmt = (select(AuditEvent).join(AuditEntity, AuditEntity.event_id == AuditEvent.id)
            .where(AuditEntity.key.in_([f"class:{c}" for c in sorted(ids)]), AuditEvent.id > event.id,
                   AuditEvent.undone_by_id.is_(None), AuditEvent.undo_of_id.is_(None))
            .order_by(AuditEvent.id.desc()))
    for later in session.scalars(stmt).unique():
        named: set[Any] = set()
        for side, snapshots in (("before", later.before or {}), ("after", later.after or {})):
            for key, snapshot in snapshots.items():
                if key.startswith("face:"):
                    classes = _classes_in_label(snapshot)
                    named |= classes
                    for c in classes & ids if side == "after" else ():
                        left.setdefault(c, set()).add(int(key.split(":", 1)[1]))
        for c in named & ids:
            naming.setdefault(c, []).append(later)
    return naming, left


@dataclass
class LabelWriters:
    """What `_label_writers_by_faces` found for one class: the operations (newest first) and whether they
    are all of them (`complete`): else the refusal says "and possibly more" and names no list to undo."""

    events: list[Any]
    complete: bool


LABEL_WRITER_SAMPLE = 20  # face snapshots read per later operation and class to tell whether it names the class


def _later_label_writers(session: Session, event: AuditEvent, keys: list[str], skip: set[int]
                         ) -> dict[int, tuple[int, list[str]]]:
    """Later operations still in force, not in `skip`, that wrote any of `keys`: id -> (how many of them,
    a few of them to read: the first each wrote in every chunk, and all of the first LABEL_WRITER_SAMPLE keys).

    Why counted in the database: `_later_writes` hands back every (operation, key) pair, 150,000 rows for
    three prediction runs over 50,000 faces, when the refusal needs a count and a few keys to read."""
    in_force = (AuditEntity.written.is_(True), AuditEvent.id > event.id, AuditEvent.undone_by_id.is_(None),
                AuditEvent.undo_of_id.is_(None), AuditEvent.id.not_in(sorted(skip)))
    counts: dict[int, int] = {}
    samples: dict[int, list[str]] = {}
    for chunk in _chunks(keys):
        stmt = (select(AuditEntity.event_id, func.count(), func.min(AuditEntity.key))
                .join(AuditEvent, AuditEntity.event_id == AuditEvent.id)
                .where(AuditEntity.key.in_(chunk), *in_force).group_by(AuditEntity.event_id))
        for later_id, n, first in session.execute(stmt):
            counts[later_id] = counts.get(later_id, 0) + n
            samples.setdefault(later_id, []).append(first)
    stmt = (select(AuditEntity.event_id, AuditEntity.key).join(AuditEvent, AuditEntity.event_id == AuditEvent.id)
            .where(AuditEntity.key.in_(keys[:LABEL_WRITER_SAMPLE]), *in_force))
    for later_id, key in session.execute(stmt):
        samples[later_id].append(key)
    return {i: (counts[i], sorted(set(samples[i]))[:LABEL_WRITER_SAMPLE]) for i in counts}


def _keys_written_by(session: Session, event_ids: list[int], keys: list[str]) -> int:
    """How many of `keys` one of `event_ids` wrote."""
    written = 0
    for chunk in _chunks(keys):
        written += session.scalar(select(func.count(func.distinct(AuditEntity.key))).where(
            AuditEntity.key.in_(chunk), AuditEntity.event_id.in_(event_ids), AuditEntity.written.is_(True))) or 0
    return written


def _names_class(session: Session, samples: dict[tuple[int, int], list[str]]) -> set[tuple[int, int]]:
    """The (operation, class) pairs of `samples` whose snapshots of the sampled keys name the class: the
    sides they left first (`after`), the ones they replaced only for the rest (an operation that took a
    face off the class names it too: undoing it puts the face back)."""
    named: set[tuple[int, int]] = set()
    for side in ("after", "before"):
        todo = {pair: sample for pair, sample in samples.items() if pair not in named}
        if not todo:
            break
        snapshots = snapshots_of(session, sorted({i for i, _ in todo}), sorted({k for v in todo.values() for k in v}),
                                 sides=(side,))[0 if side == "before" else 1]
        named |= {(i, c) for (i, c), sample in todo.items()
                  if any(c in _classes_in_label(snapshots.get(i, {}).get(k)) for k in sample)}
    return named


def _label_writers_by_faces(session: Session, event: AuditEvent, faces: dict[int, set[int]],
                            known: dict[int, list[Any]], accounted: dict[int, set[int]]) -> dict[int, LabelWriters]:
    """Later operations still in force, not among `known` (found through the classes they concern), that
    wrote the labels of `faces` (the faces whose labels now name each class) naming the class there, per
    class; complete when every face the known ones do not account for (`accounted`) is written by one of
    them and every operation was read in full.

    Why: a prediction run logged before runs concerned every class of their top lists concerns only its
    best guesses, so a class named second best there is not found through the class
    (`_label_events_naming`). Such a run beside an editor's relabel that is found left the refusal naming
    the relabel alone, as if undoing it were enough. Why sampled: reading the snapshots of every face a
    bulk run wrote (`snapshots_of` over 50,000 keys per later run) made the refusal 40x slower; per class,
    the operations are counted in the database (`_later_label_writers`) and LABEL_WRITER_SAMPLE of their
    snapshots read: one naming the class proves the operation must be undone, none among a sample of
    fewer than it wrote leaves the list open."""
    skip = {e.id for events in known.values() for e in events}
    found: dict[int, list[int]] = {}
    complete: dict[int, bool] = {}
    for c, named in sorted(faces.items()):
        keys = sorted(f"face:{f}" for f in named)
        writers = _later_label_writers(session, event, keys, skip)
        proved = _names_class(session, {(i, c): sample for i, (_, sample) in writers.items()})
        found[c] = sorted((i for i, _ in proved), reverse=True)
        unread = any(writers[i][0] > len(writers[i][1]) for i in writers if (i, c) not in proved)
        rest = sorted(f"face:{f}" for f in named - accounted.get(c, set()))
        covered = (not rest or (len(rest) == len(keys) and any(writers[i][0] == len(keys) for i in found[c]))
                   or (bool(found[c]) and _keys_written_by(session, found[c], rest) == len(rest)))
        complete[c] = not unread and covered
    wanted = sorted({i for ids in found.values() for i in ids})
    rows = {row.id: row for row in session.execute(select(AuditEvent.id, AuditEvent.operation, AuditEvent.editor,
                                                          AuditEvent.at).where(AuditEvent.id.in_(wanted)))}
    return {c: LabelWriters(sorted([*known.get(c, []), *(rows[i] for i in found[c])], key=lambda e: -e.id),
                            complete[c]) for c in faces}


def _writers_phrase(writers: LabelWriters) -> str:
    """"the face labels of operation(s) 4 (relabel_faces) by bob at ... UTC, 3 (...) by ann at ... UTC", newest
    first, with editor and time as `_blocking_error` names a later operation; "and possibly more" when the
    log could not tell them all (`LabelWriters.complete`)."""
    events = writers.events
    shown = ", ".join(f"{e.id} ({e.operation}) by {e.editor} at {utc_text(e.at)}" for e in events[:LABEL_WRITERS_SHOWN])
    more = f" and {len(events) - LABEL_WRITERS_SHOWN} more" if len(events) > LABEL_WRITERS_SHOWN else ""
    return f"the face labels of operation(s) {shown}{more}{'' if writers.complete else ' and possibly more'}"


def _undo_first(writers: dict[int, LabelWriters], unexplained: bool) -> str:
    """What the refusal of a class deletion tells the editor to do: undo the named operations, the newest
    first, when they are all that names the classes (labels and the track predictions derived from them);
    else (a class merged into it, labels whose writers the log cannot tell, or not all of them) the
    operations that wrote those."""
    ops = sorted({e.id for found in writers.values() for e in found.events}, reverse=True)
    if not ops or unexplained or not all(found.complete for found in writers.values()):
        return "undo the operations that wrote those first, or retire the class instead"
    if len(ops) == 1:
        return f"undo operation {ops[0]} first, or retire the class instead"
    which = ", ".join(map(str, ops[:LABEL_WRITERS_SHOWN])) + (" and the rest" if len(ops) > LABEL_WRITERS_SHOWN else "")
    return f"undo operations {which} first (the newest first), or retire the class instead"


def _check_deletable_classes(session: Session, event: AuditEvent, class_ids: Sequence[int]) -> None:
    """Refuse to delete a class (undo of its creation) while anything still names it, naming the later
    operations whose face labels name it (newest first, editor and time): what to undo first.

    The operations are found through the classes they concern, and through the faces whose labels name the
    class for those (a prediction run logged before runs concerned the classes of their top lists): the
    refusal says undoing them is enough only when they account for every such label."""
    dependents, faces = _class_dependents(session, class_ids, event.at)
    known, accounted = _label_events_naming(session, event, class_ids)
    writers = {c: LabelWriters(events, True) for c, events in known.items()}
    if faces:
        writers.update(_label_writers_by_faces(session, event, faces, known, accounted))
    writers = {c: found for c, found in writers.items() if found.events}
    merged = _classes_merged_into(session, class_ids)
    reasons = {c: [*dependents.get(c, []), *([_writers_phrase(writers[c])] if c in writers else []), *merged.get(c, [])]
               for c in set(dependents) | set(writers) | set(merged)}
    if not reasons:
        return
    names = dict(session.execute(select(CelebrityClass.id, CelebrityClass.name)
                                 .where(CelebrityClass.id.in_(sorted(reasons)))).all())
    what = "; ".join(f"class {names.get(c, '?')!r} (id {c}) is named by {', '.join(why)}"
                     for c, why in sorted(reasons.items()))
    unexplained = bool(merged) or not set(dependents) <= set(writers)
    raise UndoError(f"operation {event.id} ({event.operation}) cannot be undone: {what}; "
                    f"{_undo_first(writers, unexplained)}")


def merge_chain(session: Session, class_id: int, pending: dict[int, int | None] | None = None) -> list[int]:
    """class_id, the class it was merged into, the class that one was merged into, ... (`pending`:
    merged_into_id values about to be written). Stops before repeating a class, so a cycle left by an
    older version of giflens ends the walk instead of looping."""
    pending = pending or {}
    chain: list[int] = []
    current: int | None = class_id
    while current is not None and current not in chain:
        chain.append(current)
        current = pending[current] if current in pending else session.scalar(
            select(CelebrityClass.merged_into_id).where(CelebrityClass.id == current))
    return chain


def _check_merge_cycles(session: Session, event: AuditEvent, changes: dict[Key, dict[str, Any]]) -> None:
    """Refuse to point a class back at the class it was merged into when that class has been merged
    into it since (undoing "make B active" after "merge C into B"): each would name the other."""
    pending = {class_id: values["merged_into_id"] for (class_id,), values in changes.items() if "merged_into_id" in values}
    for class_id, target in pending.items():
        if target is not None and class_id in merge_chain(session, target, pending):
            names = dict(session.execute(select(CelebrityClass.id, CelebrityClass.name)
                                         .where(CelebrityClass.id.in_([class_id, target]))).all())
            raise UndoError(f"operation {event.id} ({event.operation}) cannot be undone: it would merge class "
                            f"{names.get(class_id)!r} into {names.get(target)!r} again, but {names.get(target)!r} has "
                            f"been merged into {names.get(class_id)!r} since; undo that merge first")


def _without_derived_key(kind: str, snapshot: dict[str, Any] | None) -> dict[str, Any] | None:
    """What an operation wrote into a row, as `_differs` compares it: a class's name but not its key.

    Why: the key is derived from the name; one a migration recomputed since (0010) is no change of the
    class, and comparing it would refuse every undo of a rename made before as "changed outside"."""
    if kind != "class" or not snapshot or "name" not in snapshot:
        return snapshot
    return {c: v for c, v in snapshot.items() if c != "name_key"}


def _rekey_name(session: Session, class_id: int, values: dict[str, Any]) -> None:
    """A restored class name gets its key as `class_name_key` computes it now, not the snapshot's, unless
    another class holds that key: then the snapshot's older key stays, as migration 0010 kept it.

    Why: the audit log is never rewritten, so a rename made before a change of the key (migration 0010)
    holds the older key; restored as it was, the class could not be found by its name, and a second
    class of that name could be added beside it. But a class 0010 left with its older key (its current
    one held by a class whose name folds alike) must get that name back after a rename, as the migration
    let it keep it; `_check_free_names` still refuses a key or an exact name another class holds."""
    key = class_name_key(values["name"])
    taken = session.execute(select(CelebrityClass.id).where(
        CelebrityClass.name_key == key, CelebrityClass.id != class_id)).first()
    if taken is None or not values.get("name_key"):
        values["name_key"] = key


def _check_free_names(session: Session, event: AuditEvent, changes: dict[Key, dict[str, Any]]) -> None:
    """Refuse to restore a class name another class has taken since (the name is unique): one holding its
    key, or its exact name (a class a migration left with an older key, see `labeling.classes.find_class`)."""
    for (class_id,), values in changes.items():
        key = values.get("name_key")
        if key is None:
            continue
        holder = session.execute(select(CelebrityClass.id, CelebrityClass.name).where(
            or_(CelebrityClass.name_key == key, CelebrityClass.name == values.get("name")),
            CelebrityClass.id != class_id).order_by(CelebrityClass.id)).first()
        if holder is not None:
            raise UndoError(f"operation {event.id} ({event.operation}) cannot be undone: it would give class "
                            f"{class_id} the name {values.get('name')!r} back, but class {holder.id} ({holder.name!r}) "
                            "is called that now; rename one of them first")


def _show_model_guess(values: dict[str, Any], row: dict[str, Any], run_editor: str | None = None) -> None:
    """A label an undo leaves undecided shows the model's guess as its class, which may have been
    refreshed since; when this undo restores the guess too (a prediction run undone), the restored one.
    `run_editor` is the editor of the run whose guess the label shows then: a later run's the undo keeps
    (`Superseded`), or the earlier run's whose prediction an undone run gives back (`_restored_run_editors`).

    Why also when only the guess is restored: a prediction run over a decided label writes the
    prediction columns alone; once that decision is undone the label is undecided, and undoing the run
    must move its class back with its guess, or the label would show one class and predict another.
    Why the later run's editor: the label then shows that run's guess, and restoring the editor of the
    earlier guess credited it to a run that never made it (a seed without a label before, `_kept_guesses`,
    names the later run, so two seeds the same run predicted differed). Why the earlier run's editor when a run
    is undone: the label shows that run's guess again, and keeping the undone run's editor credited it with a
    guess it never made."""
    status = values.get("status", row["status"])
    if status in UNDECIDED_STATUSES and ("class_id" in values or "predicted_class_id" in values):
        values["class_id"] = values.get("predicted_class_id", row["predicted_class_id"])
        if run_editor is not None:
            values["editor"] = run_editor


def _concern_as(op: Operation, event: AuditEvent) -> None:
    """An undo concerns what the operation it reverses concerned (its classes, its GIFs), and the GIFs
    of the faces it writes: the history of a class or a GIF shows the undo beside the operation."""
    op.concern(*op.session.scalars(select(AuditEntity.key).where(AuditEntity.event_id == event.id,
                                                                 AuditEntity.written.is_(False))))
    op.concern_media_of(key[0] for kind, key in map(parse_key, event.after) if kind == "face")


def retiring_event(session: Session, class_id: int) -> AuditEvent | None:
    """The latest operation still in force that left the class retired (a merge, a retirement, an undo
    of making it active), or None when no audited operation did."""
    key = f"class:{class_id}"
    stmt = (select(AuditEvent).join(AuditEntity, AuditEntity.event_id == AuditEvent.id)
            .where(AuditEntity.key == key, AuditEntity.written.is_(True), AuditEvent.undone_by_id.is_(None))
            .order_by(AuditEvent.id.desc()))
    for event in session.scalars(stmt):
        snapshot = (event.after or {}).get(key) or {}
        if snapshot.get("status") == "retired":
            return event
    return None


def retired_phrase(session: Session, class_id: int) -> str:
    """"merged into 'Bob' by ann at ... in operation 6 (merge_classes)" or "retired by ...": why a class
    takes no labels, in the words of the operation that did it."""
    name, merged_into = session.execute(select(CelebrityClass.name, CelebrityClass.merged_into_id)
                                        .where(CelebrityClass.id == class_id)).one()
    target = session.scalar(select(CelebrityClass.name).where(CelebrityClass.id == merged_into)) if merged_into else None
    what = f"merged into {target!r}" if merged_into else "retired"
    by = retiring_event(session, class_id)
    return what + (" " + LastWrite(by.id, by.editor, by.at, by.operation, by.undo_of_id).phrase() if by else "")


def _check_live_classes(session: Session, event: AuditEvent, changes: dict[Key, dict[str, Any]],
                        current: dict[Key, dict[str, Any] | None]) -> None:
    """Refuse to put a decision back on a class that is retired now (merged away, or retired).

    Why: a retired class takes no labels and is not exported; a label restored onto it would be a
    confirmed face that silently vanishes from the training set. The editor undoes the merge (or makes
    the class active) first, or decides the face anew."""
    wanted: dict[int, int] = {}  # class id -> first face an undo would decide as it
    for key, values in changes.items():
        row = current.get(key) or {}
        status, class_id = values.get("status", row.get("status")), values.get("class_id", row.get("class_id"))
        if ("status" in values or "class_id" in values) and status not in UNDECIDED_STATUSES and class_id is not None:
            wanted.setdefault(class_id, key[0])
    if not wanted:
        return
    # locked before the faces already (`_lock_undo_classes`); a class the faces' rows named only once they
    # were locked is locked here, late (rare: a later write that does not block the undo changed it)
    locked = lock_classes(session, wanted)
    retired = next((c for c in sorted(wanted) if c in locked and locked[c].status == "retired"), None)
    if retired is None:
        return
    name = locked[retired].name
    raise UndoError(f"operation {event.id} ({event.operation}) cannot be undone: it would put face {wanted[retired]} "
                    f"back on class {name!r}, which was {retired_phrase(session, retired)}; undo that first, or "
                    "decide the face anew")


def _lock_undo_classes(op: Operation, event: AuditEvent) -> None:
    """Before an undo reads anything else: lock the classes it writes (FOR UPDATE) and the classes its
    face snapshots put labels back on (FOR SHARE), together in id order.

    Why: an undo putting a decision back on a class must see a merge of that class that is committing
    right now, or the label lands on a class retired a moment later (`lock_classes`); and it locks
    classes before faces, in id order, as merges do, so that the two wait instead of deadlocking. Taken
    before the later operations are looked up, so an operation that committed meanwhile is seen too."""
    written = {key[0] for kind, key in map(parse_key, event.after) if kind == "class"}
    named = {snapshot.get("class_id") for text, snapshot in (event.before or {}).items()
             if snapshot and text.startswith("face:")}
    ids = sorted(written | {c for c in named if isinstance(c, int)})
    for for_update, run in groupby(ids, key=written.__contains__):
        if for_update:
            op.load("class", [(c,) for c in run])
        else:
            lock_classes(op.session, run)


def _lock_catalog_for_names(session: Session, event: AuditEvent) -> None:
    """Take the class catalog lock (`lock_class_catalog`) before the classes when the undo puts a class name
    back: an editor adding or renaming a class to that name at the same moment then waits, or is waited
    for, and one of the two is refused naming the class (`_check_free_names`, `_check_free`), instead of
    the loser meeting the unique key."""
    if any(text.startswith("class:") and snapshot and "name" in snapshot for text, snapshot in (event.before or {}).items()):
        from labeling.classes import lock_class_catalog  # classes imports this module

        lock_class_catalog(session)


def undo_event(factory: sessionmaker[Session], event_id: int, editor: str) -> OperationResult:
    """Restore what an operation changed; refused when a later operation depends on it.

    Every refusal is an UndoError that says what depends on the operation. A constraint the
    checks above did not foresee still ends as an UndoError (the transaction rolled back), never
    as a raw database error: an editor pressing Undo must get a reason, not a stack trace.
    """
    event_id = check_id(event_id, "audit event")
    try:
        with collisions_as_conflicts():
            return _undo_event(factory, event_id, editor)
    except IntegrityError as exc:
        _refuse_undo_after_collision(factory, event_id, exc)
        reason = (str(exc.orig).strip().splitlines() or ["constraint violated"])[0]
        raise UndoError(f"operation {event_id} cannot be undone: restoring it would break a database constraint "
                        f"({reason}); something written since depends on it") from exc


def _refuse_undo_after_collision(factory: sessionmaker[Session], event_id: int, exc: IntegrityError) -> None:
    """After an undo met a unique key (another editor added the same tag or label while it ran): the usual
    refusal (`_refuse_undo`), which names the later operation, its editor and when, read in a new
    transaction where that operation has committed (the insert waited for it). Returns when nothing is
    found to name (or the lookup fails), for the caller's general refusal."""
    try:
        with factory() as session:
            _refuse_undo(session, event_id, session.get(AuditEvent, event_id))
    except UndoError as refusal:
        raise refusal from exc
    except Exception:  # noqa: BLE001 - naming the later operation is a courtesy: the undo is refused whatever
        return


def _refuse_undo(session: Session, event_id: int, event: AuditEvent | None) -> AuditEvent:
    """`event` when it is an operation that may be undone as things stand (nothing later pins it), else
    the refusal: missing, undone already, an undo itself, a record that is not a change, or pinned."""
    if event is None:
        raise NotFoundError(f"no audit event {event_id}")
    if event.undone_by_id is not None:
        raise UndoError(f"operation {event_id} ({event.operation}) was already undone by operation {event.undone_by_id}")
    if event.undo_of_id is not None:
        raise UndoError(f"operation {event_id} is itself an undo (of operation {event.undo_of_id}); "
                        "redo the original change instead")
    if foreign := _foreign_keys(event.after):
        raise UndoError(f"operation {event_id} ({event.operation}) cannot be undone: it is a record of "
                        f"{event.operation} ({', '.join(foreign[:5])}), not a change of labels, classes or tags")
    blocking = _blocking_events(session, event)
    if blocking:
        raise _blocking_error(session, event, blocking)
    _check_run_kept_by_undo(session, event)
    _check_merged_tags(session, event)
    _check_decisions_on_retiring(session, event)
    return event


def _merged_away_tags(session: Session, event: AuditEvent) -> list[Key]:
    """The (media id, tag id) rows `event` wrote whose tag is gone, in key order. Tags are never deleted
    but by migrations 0011 and 0014, which merged tags whose names now fold alike into one and deleted the
    others; the audit log, append-only, still names the merged-away ids."""
    keys = sorted(key for kind, key in map(parse_key, event.after) if kind == "media_tag")
    present: set[int] = set()
    for chunk in _chunks(sorted({tag_id for _, tag_id in keys})):
        present.update(session.scalars(select(Tag.id).where(Tag.id.in_(chunk))))
    return [key for key in keys if key[1] not in present]


def _merge_survivors(session: Session, event: AuditEvent, tag_id: int, merged: Sequence[Key]) -> dict[int, str]:
    """The tags (id -> name) the merged-away `tag_id` may have become: those the tag names quoted in the
    summaries of `event` and of the other operations that wrote its rows fold to now, narrowed to the ones
    every such summary names (a removal of 'funny' and 'cute' whose row an add of 'funny' made is 'funny').
    Empty when no summary names a tag there is now (an import's, or one `_listed` cut short)."""
    from labeling.tags import tags_now_named  # labeling.tags imports this module

    keys = [entity_key("media_tag", key) for key in merged if key[1] == tag_id]
    stmt = (select(AuditEvent.id, AuditEvent.summary).join(AuditEntity, AuditEntity.event_id == AuditEvent.id)
            .where(AuditEntity.key.in_(keys), AuditEntity.written.is_(True), AuditEvent.id != event.id)
            .distinct().order_by(AuditEvent.id))
    candidates: dict[int, str] = {}
    for summary in [event.summary, *(text for _, text in session.execute(stmt))]:
        named = tags_now_named(session, [summary])
        narrowed = {t: name for t, name in named.items() if not candidates or t in candidates}
        candidates = narrowed or candidates
    return candidates


def _merged_tag_advice(session: Session, event: AuditEvent, key: Key, survivor: tuple[int, str] | None,
                       file: str) -> str:
    """What an editor does instead of the refused undo of a row whose tag was merged away: a new, audited
    operation on the surviving tag, worded by what `event` did to the row and what the survivor's row on
    that media holds now."""
    if survivor is None:
        return f"redo what you want on {file} as a new operation, under the tag's name as it is stored now"
    tag_id, name = survivor
    removed = event.after.get(entity_key("media_tag", key)) is None
    if not removed:
        return f"edit or remove tag {name!r} on {file} as a new operation instead"
    row = session.execute(select(MediaTag.status, MediaTag.confidence, MediaTag.editor).where(
        MediaTag.media_id == key[0], MediaTag.tag_id == tag_id)).first()
    if row is None:
        return f"to put it back, add tag {name!r} to {file} again"
    if row.status == "rejected":
        return f"to put it back, add tag {name!r} to {file} again (it is rejected there now, by {row.editor or '?'})"
    return (f"{file} carries tag {name!r} now ({row.status}, confidence {row.confidence:g}): edit that tag if it "
            "should differ")


def _check_merged_tags(session: Session, event: AuditEvent) -> None:
    """Refuse, by name, an undo of tag rows whose tag a migration merged into another (0011, 0014).

    Why refused, not applied to the surviving tag: the store no longer records which tag a merged-away id
    became (the tag row is deleted; only a summary's text still quotes its old name, read back as a hint for
    this message, not as a key to write by), and the undo would write a row the undone operation never
    wrote: the later operations on the survivor's row, which may hold a newer decision (an editor's, or the
    rejection 0011 kept for experts voting), are not among those that pin it by key. The migrations say so
    too: such an event is "never applied to another tag's row". Without this check the re-created row broke
    the foreign key and the editor read a raw constraint message; now the refusal names the tag it became
    and the one audited edit that does what the undo meant (`_merged_tag_advice`)."""
    merged = _merged_away_tags(session, event)
    if not merged:
        return
    media_id, tag_id = merged[0]
    survivors = _merge_survivors(session, event, tag_id, merged)
    path = session.scalar(select(Media.path).where(Media.id == media_id))
    file = f"{PurePath(path).name if path else '?'} (media {media_id})"
    survivor = next(iter(survivors.items())) if len(survivors) == 1 else None
    if survivor is not None:
        into = f"tag {survivor[1]!r} (id {survivor[0]})"
    elif survivors:
        into = "one of the tags " + ", ".join(repr(name) for _, name in sorted(survivors.items()))
    else:
        into = "another tag whose name folds alike (its old name is not in the audit log)"
    removed = event.after.get(entity_key("media_tag", merged[0])) is None
    more = f" ({len(merged) - 1} more of its tag rows are merged away too)" if len(merged) > 1 else ""
    advice = _merged_tag_advice(session, event, merged[0], survivor, file)
    raise UndoError(
        f"operation {event.id} ({event.operation}) cannot be undone: tag {tag_id}, which it "
        f"{'removed from' if removed else 'wrote on'} {file}, no longer exists: migration 0011 or 0014 merged it "
        f"into {into}, as tag names that fold alike (a Turkic i, a final sigma, an emoji presentation selector) "
        f"are one tag now{more}; an undo is not moved onto another tag's row, where it could overwrite a newer "
        f"decision: {advice}")


def _retiring_classes(session: Session, event: AuditEvent) -> dict[int, str]:
    """Classes an undo of `event` would retire again (their restored state is retired, and they are not now):
    class id -> "retire class 'A' (id 5) again, merged into 'B'".

    A class the undo would remove (`event` created it) is not here: `_check_deletable_classes` refuses that
    while any label, decided or predicted, names it, and names the operations that labeled with it."""
    restored = {key[0]: event.before.get(text) for text in event.after
                for kind, key in [parse_key(text)] if kind == "class"}
    wanted = [c for c, before in restored.items() if before is not None and before.get("status") == "retired"]
    if not wanted:
        return {}
    rows = session.execute(select(CelebrityClass.id, CelebrityClass.name, CelebrityClass.status)
                           .where(CelebrityClass.id.in_(wanted), CelebrityClass.status != "retired")).all()
    out: dict[int, str] = {}
    for class_id, name, _ in sorted(rows):
        target = restored[class_id].get("merged_into_id")
        into = session.scalar(select(CelebrityClass.name).where(CelebrityClass.id == target)) if target else None
        out[class_id] = f"retire class {name!r} (id {class_id}) again" + (f", merged into {into!r}" if into else "")
    return out


def _later_decisions(session: Session, event: AuditEvent, class_ids: Sequence[int]) -> list[tuple[int, int, int]]:
    """Confirmed face decisions on these classes that operations later than `event`, still in force, made:
    (event id, face id, class id), by event then face.

    A face's decision is the latest write of its status or class: the labels confirmed on a class now are
    read from the store, then the later events that wrote them (`_later_writes`: an undone operation and
    its undo cancel out) from the log, only their snapshots of those faces (`snapshots_of`). A later write
    of only the prediction columns beside a decision made before `event` (a model refresh) is not one."""
    labels: dict[str, int] = {}
    for chunk in _chunks(list(class_ids)):
        stmt = select(FaceLabel.face_id, FaceLabel.class_id).where(FaceLabel.class_id.in_(chunk),
                                                                   FaceLabel.status.in_(CONFIRMED_STATUSES))
        labels.update((f"face:{face_id}", class_id) for face_id, class_id in session.execute(stmt))
    if not labels:
        return []
    later = _later_writes(session, event, sorted(labels))
    # key -> the later events that wrote it, newest first: looked up per face, not by scanning every later
    # event for every face (that took the product of the two, 12 s for 20,000 one-face approvals)
    writers: dict[str, list[int]] = {}
    for later_id in sorted(later, reverse=True):
        for key in later[later_id][1]:
            writers.setdefault(key, []).append(later_id)
    if not writers:
        return []
    _, after = snapshots_of(session, list(later), sorted(writers), sides=("after",))
    found: list[tuple[int, int, int]] = []
    for key, ids in writers.items():
        class_id = labels[key]
        for later_id in ids:
            snapshot = after.get(later_id, {}).get(key)
            if snapshot is not None and ("status" in snapshot or "class_id" in snapshot):
                if snapshot.get("class_id", class_id) == class_id:
                    found.append((later_id, parse_key(key)[1][0], class_id))
                break
    return sorted(found)


def _check_decisions_on_retiring(session: Session, event: AuditEvent) -> None:
    """Refuse an undo that would retire a class again (undoing "make it active", after a merge or a
    retirement) while faces confirmed as it since are still so decided, naming the first operation that
    decided them, by whom and when, as a blocking operation is named (`_blocking_error`).

    Why beside `_blocking_events`: those decisions wrote face labels, not the class row, so nothing pins
    the undo by its rows; yet a confirmed face on a retired class is left out of the export and takes no
    further decision, a decision silently lost. The model's predictions do not count: they are guesses,
    not exported, and the next prediction run maps a retired class to where it went (`prediction_targets`).
    Decisions on the class made before `event` stay: retiring it again restores what was, as a retirement
    leaves its labels."""
    retiring = _retiring_classes(session, event)
    if not retiring:
        return
    decided = _later_decisions(session, event, sorted(retiring))
    if not decided:
        return
    first_id, face_id, class_id = decided[0]
    first = session.get(AuditEvent, first_id)
    what = f"undo of operation {first.undo_of_id}" if first.undo_of_id else first.operation
    n_ops, n_faces = len({e for e, _, _ in decided}), len({f for _, f, _ in decided})
    raise UndoError(
        f"operation {event.id} ({event.operation}) cannot be undone: it would {retiring[class_id]}, but {n_ops} later "
        f"operation(s) confirmed {n_faces} face(s) as it since, first {first.id} ({what}) by {first.editor} at "
        f"{utc_text(first.at)} (face {face_id}); a face confirmed as a retired class drops out "
        "of the export: " + ("relabel the faces (an undo cannot be undone)" if first.undo_of_id
                             else "undo those first, or relabel the faces"))


def _undo_event(factory: sessionmaker[Session], event_id: int, editor: str) -> OperationResult:
    # Checked first in a plain read transaction: a refusal (the common answer for an old operation that
    # later edits pin) then never takes SQLite's write lock, which held every other writer back for as long
    # as the check ran, and on PostgreSQL it is refused before any row of a large event is locked. Checked
    # again below once the rows are locked, for an operation committed in between.
    with factory() as session:
        _refuse_undo(session, event_id, session.get(AuditEvent, event_id))
    with write_scope(factory) as session:
        event = session.get(AuditEvent, event_id, with_for_update=True)
        if event is None or event.undone_by_id is not None:  # undone (or gone) since the check above
            _refuse_undo(session, event_id, event)
        op = Operation(session, editor, "undo")
        _lock_catalog_for_names(session, event)
        _lock_undo_classes(op, event)
        op.summary = f"undo of operation {event.id}: {event.summary}"
        _concern_as(op, event)
        by_kind: dict[str, list[tuple[Key, str]]] = {}
        for text in event.after:
            kind, key = parse_key(text)
            by_kind.setdefault(kind, []).append((key, text))
        current = {kind: op.load(kind, [k for k, _ in items]) for kind, items in by_kind.items()}
        # Looked up again once the rows are locked: an operation on them that was committing while this
        # undo waited for their locks is in the log now, and blocks like any other, by name (looked up
        # only before, it was seen only as rows that differ, "changed outside the audited operations").
        _refuse_undo(session, event_id, event)
        superseded = _superseded_columns(session, event)
        for kind, items in by_kind.items():
            for key, text in items:
                if _differs(KINDS[kind][0], current[kind][key], _without_derived_key(kind, event.after[text]),
                            superseded.columns.get(text, frozenset())):
                    # every audited change since that matters blocked above: this one was made outside them
                    raise UndoError(f"operation {event_id} cannot be undone: {describe_entity(session, kind, key)} "
                                    "changed since (outside the audited operations)")
        guesses = _kept_guesses(event, superseded, current.get("face", {}))  # seeds' labels a run predicted
        restored_by = _restored_run_editors(session, event, current.get("face", {}))  # a run undone: earlier guesses
        for kind in INSERT_ORDER:  # restore existing / re-create deleted, parents first
            items = by_kind.get(kind, [])
            changes = {}
            for key, text in items:
                before = event.before.get(text)
                if before is not None:
                    model, cols = KINDS[kind]
                    values = _from_json(model, before)
                    values.pop("version", None), values.pop("updated_at", None), values.pop("updated_by", None)
                    if current[kind][key] is None:
                        values.pop("id", None)
                        values = {c: v for c, v in values.items() if c not in cols}
                    else:
                        values.pop("id", None)
                        if kind == "face":
                            # a later prediction run's guess stays: the undo restores the editor's columns
                            values = {c: v for c, v in values.items() if c not in superseded.columns.get(text, ())}
                            if not values:
                                continue
                            guess_by = (restored_by.get(text) if "predicted_class_id" in values
                                        else superseded.run_editor.get(text))
                            _show_model_guess(values, current[kind][key], guess_by)
                    if kind == "class" and values.get("name") is not None:
                        _rekey_name(session, key[0], values)
                    changes[key] = values
            if kind == "face":
                changes.update(guesses)
            if changes:
                if kind == "class":
                    _check_free_names(session, event, changes)
                    _check_merge_cycles(session, event, changes)
                if kind == "face":  # the classes are restored already (parents first)
                    _check_live_classes(session, event, changes, current[kind])
                op.update(kind, changes, current[kind])
        for kind in reversed(INSERT_ORDER):  # remove what the operation created, children first
            created = {key: current[kind][key] for key, text in by_kind.get(kind, [])
                       if event.before.get(text) is None and not (kind == "face" and key in guesses)}
            if created and kind == "class":  # the undo's own face changes are already written: only others count
                _check_deletable_classes(session, event, [key[0] for key in created])
                _clear_stale_track_predictions(session, [key[0] for key in created], event.at)
            if created:
                op.delete(kind, created)
        result = op.finish(undo_of=event)
        event.undone_by_id = result.event_id
        return result


def undoable_events(factory: sessionmaker[Session], limit: int = 30) -> list[AuditEvent]:
    """The latest operations an Undo button may offer, newest first: not undone yet, not an undo
    themselves, not a record such as an ingest batch. (A later operation may still pin one: undo_event
    says which when asked.)"""
    with factory() as session:
        stmt = (select(AuditEvent).where(AuditEvent.undone_by_id.is_(None), AuditEvent.undo_of_id.is_(None))
                .order_by(AuditEvent.id.desc()).execution_options(yield_per=50))
        out: list[AuditEvent] = []
        for event in session.scalars(stmt):
            if not _foreign_keys(event.after):
                out.append(event)
                if len(out) == limit:
                    break
        return out


def editor_forms(editor: str) -> list[str]:
    """The spellings one editor's name may be stored under: NFC, as `check_editor` stores it since names
    were normalised, and NFD, as a Mac typed it before (its events stay as written: the log is append-only).
    Why: "José" typed either way is one editor, whose Undo last, recent operations and history find both."""
    name = editor.strip()
    return sorted({unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name)})


def last_undoable(session: Session, editor: str) -> int | None:
    """The id of the editor's newest operation `undo_last` would take back (not undone, not an undo itself,
    a change rather than a record such as an ingest batch, `_foreign_keys`), None when none is left. One
    query for Undo last and for the sidebar, which greys the button out when there is none."""
    candidates = session.execute(
        select(AuditEvent.id, AuditEvent.after).where(AuditEvent.editor.in_(editor_forms(editor)),
                                                      AuditEvent.undone_by_id.is_(None), AuditEvent.undo_of_id.is_(None))
        .order_by(AuditEvent.id.desc()).execution_options(yield_per=20))
    return next((event_id for event_id, after in candidates if not _foreign_keys(after)), None)


def undo_last(factory: sessionmaker[Session], editor: str, expected: int | None = None) -> OperationResult:
    """Undo this editor's most recent operation that is not undone yet (call again for the one before).

    Records that are not curation changes (an ingest batch) are passed over: they can never be
    undone, and stopping at one would leave the editor no way back to the decision before it.
    expected: the operation the editor was shown as their last (a page's button). When it is no longer
    their last undoable one (a colleague undid it meanwhile, or they did something newer elsewhere) the
    press is refused (UndoError naming what happened) instead of undoing an older operation they never saw."""
    editor = check_editor(editor)
    with collisions_as_conflicts(), write_scope(factory) as session:
        last = last_undoable(session, editor)
        if expected is not None and last != expected:
            raise UndoError(_not_last_anymore(session, int(expected), last))
        taken = _undone_by_another(session, editor, last) if expected is None else None
    if taken is not None:
        raise UndoError(taken)
    if last is None:
        raise UndoError(f"{editor} has no operation left to undo")
    return undo_event(factory, last, editor)


def _undone_by_another(session: Session, editor: str, last: int | None) -> str | None:
    """Why an undo with no operation named (`giflens undo`) must not go on to `last`: an operation of this
    editor newer than it was undone by another editor, None when every newer one they undid themselves.

    Why: the editor means the last thing they did. When a colleague undid it, "undo my last" took back an
    older operation they never meant (a whole class with its seed faces, an import), and an undo cannot
    be undone. The app's Undo last buttons name the operation they show and refuse the same way."""
    newer = session.execute(
        select(AuditEvent.id, AuditEvent.undone_by_id, AuditEvent.after)
        .where(AuditEvent.editor.in_(editor_forms(editor)), AuditEvent.undo_of_id.is_(None),
               AuditEvent.undone_by_id.is_not(None), AuditEvent.id > (last or 0))
        .order_by(AuditEvent.id.desc()))
    forms = set(editor_forms(editor))
    for event_id, undone_by, after in newer:
        undo = session.get(AuditEvent, undone_by)
        if _foreign_keys(after) or undo is None or undo.editor in forms:
            continue
        then = (f"give its number to undo an older one (`giflens undo {last}` is the next of yours)" if last is not None
                else "you have no operation left to undo")
        return (f"your last operation #{event_id} was already undone by {undo.editor} in operation {undo.id} at "
                f"{utc_text(undo.at)}; nothing was undone; {then}")
    return None


def _not_last_anymore(session: Session, expected: int, last: int | None) -> str:
    """Why operation `expected`, shown as the editor's last, is not what Undo last would take back now:
    who undid it, in which operation and when, or that a newer one came; and what a new press would undo."""
    event = session.get(AuditEvent, expected)
    undo = session.get(AuditEvent, event.undone_by_id) if event is not None and event.undone_by_id else None
    if undo is not None:
        what = (f"#{expected} was already undone by {undo.editor} in operation {undo.id} "
                f"at {utc_text(undo.at)}")
    elif event is None:
        what = f"#{expected} no longer exists"
    else:
        what = f"#{expected} is no longer your last operation left to undo"
    then = f"press again to undo #{last}" if last is not None else "you have no operation left to undo"
    return f"{what}; nothing was undone; {then}"


# -- history -----------------------------------------------------------------------------
@dataclass
class HistoryEntry:
    event_id: int
    at: datetime
    editor: str
    operation: str
    summary: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    undone_by: int | None


def history(factory: sessionmaker[Session], key: str, limit: int = 200, editor: str | None = None) -> list[HistoryEntry]:
    """Newest first: every operation that wrote or concerned the entity, e.g. "face:12",
    "class:3", "media:7" (a GIF: its faces' labels and its tags); only `editor`'s when given,
    filtered before the limit. A key missing from a snapshot comes back as None: the entity did not exist."""
    with factory() as session:
        heads = entity_events(session, [key], limit, editor)
        before, after = snapshots_of(session, [h[0] for h in heads], [key])
        return [HistoryEntry(*head[:5], before.get(head[0], {}).get(key), after.get(head[0], {}).get(key), head[5])
                for head in heads]


def entity_events(session: Session, keys: Sequence[str], limit: int = 200,
                  editor: str | None = None) -> list[tuple[int, datetime, str, str, str, int | None]]:
    """The newest `limit` events that wrote or concerned any of `keys` (only `editor`'s when given), newest
    first, each once: (id, at, editor, operation, summary, undone_by); no snapshot (`snapshots_of`)."""
    ids: set[int] = set()
    for chunk in _chunks(list(keys)):
        stmt = (select(AuditEntity.event_id).join(AuditEvent, AuditEntity.event_id == AuditEvent.id)
                .where(AuditEntity.key.in_(chunk)).distinct().order_by(AuditEntity.event_id.desc()).limit(limit))
        ids.update(session.scalars(stmt.where(AuditEvent.editor.in_(editor_forms(editor))) if editor else stmt))
    newest = sorted(ids, reverse=True)[:limit]
    stmt = (select(AuditEvent.id, AuditEvent.at, AuditEvent.editor, AuditEvent.operation, AuditEvent.summary,
                   AuditEvent.undone_by_id).where(AuditEvent.id.in_(newest)).order_by(AuditEvent.id.desc()))
    return [tuple(row) for row in session.execute(stmt)]


def snapshots_of(session: Session, event_ids: Sequence[int], keys: Sequence[str],
                 sides: Sequence[str] = ("before", "after"),
                 ) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """(before, after): event id -> {key: snapshot} for those of `keys` each event's snapshots hold (None
    where the entity did not exist), in the order of `keys`; a side not in `sides` is not read (left empty).

    Only these keys are read, picked out by the database (json_each, on SQLite and PostgreSQL alike):
    loading whole events decoded every bulk event's before and after in full (a prediction run over 20,000
    faces) to pick a few entities out, seconds and hundreds of MB for one face's or one track's history.
    json_each goes through a snapshot once whatever the number of keys (PostgreSQL parses a json value
    again for every `->`), and tells a key that is absent from one that holds null."""
    order = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    found: dict[str, dict[int, dict[str, Any]]] = {"before": {}, "after": {}}
    for side, out in found.items():
        if side not in sides:
            continue
        each = func.json_each(getattr(AuditEvent, side)).table_valued(column("key", String), column("value", JSON))
        for ids in _chunks(list(event_ids)):
            for chunk in _chunks(list(order)):
                stmt = (select(AuditEvent.id, each.c.key, each.c.value).select_from(AuditEvent)
                        .join(each, each.c.key.in_(chunk)).where(AuditEvent.id.in_(ids)))
                for event_id, key, value in session.execute(stmt):
                    out.setdefault(event_id, {})[key] = value
        for event_id, snapshots in out.items():
            out[event_id] = dict(sorted(snapshots.items(), key=lambda item: order[item[0]]))
    return found["before"], found["after"]


def classes_once_named(session: Session, name: str) -> list[int]:
    """Ids of the classes whose audited state (before or after any operation) carried `name`, compared
    as class names compare, the most recently so named first.

    Why: an editor asks for the history of a class by the name they remember, which a rename since, or
    an undo that removed the class, has taken off the catalog; the audit log still knows it."""
    wanted = class_name_key(name)
    latest: dict[int, int] = {}
    for event_id, _, class_id, named in _class_names_in_log(session):
        if class_name_key(named) == wanted:
            latest[class_id] = max(latest.get(class_id, 0), event_id)
    return sorted(latest, key=lambda class_id: -latest[class_id])


def former_class_names(session: Session, class_ids: Iterable[int]) -> dict[int, str]:
    """class id -> the last name the audit log recorded for it (after the newest operation that wrote its
    name; before it, when that operation removed the class).

    Why: a class an undo removed (undoing the import that created it) is gone from the catalog, yet the
    history of a face decided as it must still say who that was ("'Al Gore' (class 5)"), not a bare id."""
    last: dict[int, tuple[int, int, str]] = {}
    for event_id, side, class_id, named in _class_names_in_log(session, sorted(set(class_ids))):
        if (event_id, side) > last.get(class_id, (0, -1, ""))[:2]:
            last[class_id] = (event_id, side, named)
    return {class_id: named for class_id, (_, _, named) in last.items()}


def _class_names_in_log(session: Session, class_ids: Sequence[int] | None = None) -> Iterator[tuple[int, int, int, str]]:
    """(event id, side: 0 before / 1 after, class id, name) for every class snapshot that holds a name, of
    these classes only when given. Only events that wrote a class are read, and only their class snapshots
    (json_each, as `snapshots_of`): loading whole events would decode every bulk event in full."""
    groups = [None] if class_ids is None else [[f"class:{c}" for c in chunk] for chunk in _chunks(class_ids)]
    for keys in groups:
        mine = AuditEntity.key.like("class:%") if keys is None else AuditEntity.key.in_(keys)
        class_events = select(AuditEntity.event_id).where(mine, AuditEntity.written)
        for rank, side in enumerate(("before", "after")):
            each = func.json_each(getattr(AuditEvent, side)).table_valued(column("key", String), column("value", JSON))
            wanted = each.c.key.like("class:%") if keys is None else each.c.key.in_(keys)
            stmt = (select(AuditEvent.id, each.c.key, each.c.value).select_from(AuditEvent)
                    .join(each, wanted).where(AuditEvent.id.in_(class_events)))
            for event_id, key, snapshot in session.execute(stmt):
                named = snapshot.get("name") if isinstance(snapshot, dict) else None
                if isinstance(named, str):
                    yield int(event_id), rank, int(key.partition(":")[2]), named


def recent_events(factory: sessionmaker[Session], editor: str | None = None, limit: int = 50) -> list[AuditEvent]:
    with factory() as session:
        stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if editor:
            stmt = stmt.where(AuditEvent.editor.in_(editor_forms(editor)))
        return list(session.scalars(stmt))
