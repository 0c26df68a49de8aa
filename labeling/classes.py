"""Celebrity classes: add (optionally seeded with faces), rename, merge, split, retire, attributes."""
from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from labeling.audit import (CHUNK, Operation, OperationResult, _chunks, expected_by_key, last_write, merge_chain,
                            retired_phrase, run_operation)
from labeling.db import advisory_xact_lock
from labeling.errors import NotFoundError, ValidationError
from labeling.face_labels import apply_decision, class_writer_phrase, gone_class_phrase, optional_class_id
from labeling.schema import UNDECIDED_STATUSES, AuditEvent, CelebrityClass, FaceLabel
from labeling.validation import (check_class_status, check_id, clean_attributes, clean_class_name, clean_display_name,
                                 clean_external_id, class_name_key, refuse_invisible_characters)


def find_class(session: Session, name: str) -> CelebrityClass | None:
    """The class of that name (compared as `class_name_key` compares), or None. A lookup: a name stored
    before the check of invisible characters existed is still found (`clean_class_name(new=False)`).

    The class of exactly that name comes first: where two classes' names fold alike only since
    migration 0010, it left the later with its older key (the two stay distinct until an editor merges
    them), and that class's own name must find it, not the other one."""
    name = clean_class_name(name, new=False)
    by_key = session.scalars(select(CelebrityClass).where(CelebrityClass.name_key == class_name_key(name))).first()
    if by_key is not None and by_key.name == name:
        return by_key
    return _exact_name_holder(session, name) or by_key


def _exact_name_holder(session: Session, name: str, but: int | None = None) -> CelebrityClass | None:
    """The class (other than `but`) named exactly `name` among those whose key is not their name's
    (`_stale_keys`): the one lookup that finds a class a migration left with an older key."""
    for class_id in _stale_keys(session).get(name, ()):
        if class_id != but:
            found = session.scalars(select(CelebrityClass).where(CelebrityClass.id == class_id,
                                                                 CelebrityClass.name == name)).first()
            if found is not None:
                return found
    return None


def _stale_keys(session: Session) -> dict[str, list[int]]:
    """Name -> ids of the classes whose stored key is not `class_name_key` of their name: those a
    migration changing the key left with their older one, because another class held the new key
    already (0005, 0010: the two stay distinct until an editor merges them).

    Found by one pass over the classes, once per session: only a migration (or a direct SQL write)
    makes such a row, so none appears while a session is open, and an import creating thousands of
    classes must not scan them all again for each (the name has no index)."""
    stale = session.info.get("giflens_stale_class_keys")
    if stale is None:
        stale = session.info["giflens_stale_class_keys"] = {}
        for class_id, name, key in session.execute(select(CelebrityClass.id, CelebrityClass.name,
                                                          CelebrityClass.name_key).order_by(CelebrityClass.id)):
            if key != class_name_key(name):
                stale.setdefault(name, []).append(class_id)
    return stale


def _check_free(session: Session, name: str, but: int | None = None) -> None:
    """Refuse a name another class holds: its key, or exactly that name (a class migration 0010 left with
    an older key, which the key alone would miss: a byte-identical second class could be added)."""
    existing = session.scalars(select(CelebrityClass).where(CelebrityClass.name_key == class_name_key(name))).first()
    if existing is None or existing.id == but:
        existing = _exact_name_holder(session, name, but)
    if existing is not None:
        raise ValidationError(f"a class named {existing.name!r} already exists (id {existing.id}, {existing.status})")


# One PostgreSQL advisory lock for handing out external ids: "giflens" + "X".
_EXTERNAL_ID_LOCK = 0x6769666C656E7358


def lock_class_catalog(session: Session) -> None:
    """Hold the class catalog until this transaction ends (`advisory_xact_lock`), before classes are
    read to hand out an external id or, in an import, to match its lines against.

    Why: two imports of one file at once both read the classes before either committed, so the second
    created the first's classes again and failed, blaming the file ("external id ... already belongs
    to class ...") or the other editor ("saved a class of the same name at the same moment"), where
    run again alone it changes nothing. Under the lock the second waits for the first to commit and
    then reads its classes, so it reports them unchanged; an editor adding a class with an id waits
    for the import too, and the import for them."""
    advisory_xact_lock(session, _EXTERNAL_ID_LOCK)


def _check_external_id_free(session: Session, external_id: str) -> None:
    """Refuse an external id (a Freebase id such as m.0d05fv names one person) another class holds.

    Why the lock on PostgreSQL: no unique constraint guards the column, and two editors adding a
    class with the same id at once would both find it free; the lock makes the second one wait for
    the first to commit and then see its class. SQLite's write lock (BEGIN IMMEDIATE) already does."""
    lock_class_catalog(session)
    holder = session.execute(select(CelebrityClass.id, CelebrityClass.name, CelebrityClass.status)
                             .where(CelebrityClass.external_id == external_id).order_by(CelebrityClass.id)).first()
    if holder is not None:
        raise ValidationError(f"external id {external_id!r} already belongs to class {holder.name!r} (id {holder.id}, "
                              f"{holder.status}): one person has one class; use that class, or give this one another id")


def _load_classes(op: Operation, class_ids: Sequence[int],
                  expected_versions: dict[int, int | None] | None = None) -> dict[int, dict[str, Any]]:
    """Lock several classes at once, in id order (`Operation.load`), so that merging C into D while
    someone merges D into C makes one of them wait instead of deadlocking; then check versions.
    The ids are checked ones (`check_id`, at each public function's entry: a numpy integer from a
    dataframe is bound as bytes by SQLite, and cannot be written into the audit log's JSON on PostgreSQL)."""
    rows = op.load("class", [(c,) for c in class_ids])
    missing = [c for (c,), row in rows.items() if row is None]
    if missing:
        raise NotFoundError(f"no celebrity class with id {missing[0]}" + gone_class_phrase(op.session, missing[0]))
    expected = {c: v for c, v in (expected_versions or {}).items() if v}
    op.check_versions("class", rows, expected or None, editor_col="updated_by")
    op.concern(*(f"class:{c}" for (c,) in rows))
    return {c: row for (c,), row in rows.items()}


def _load_class(op: Operation, class_id: int, expected_version: int | None = None) -> dict[str, Any]:
    """One class, as `_load_classes` (the id already checked)."""
    return _load_classes(op, [class_id], {class_id: expected_version})[class_id]


def create_class(op: Operation, name: str, display_name: str | None = None, status: str = "active",
                 external_id: str | None = None, attributes: dict[str, Any] | None = None) -> int:
    name = clean_class_name(name)
    check_class_status(status)
    lock_class_catalog(op.session)  # before the name is checked: see `rename_class`
    _check_free(op.session, name)
    display = clean_display_name(display_name) if display_name else None
    external_id = clean_external_id(external_id)
    if external_id:
        _check_external_id_free(op.session, external_id)
    values = {"name": name, "name_key": class_name_key(name), "display_name": display, "status": status,
              "external_id": external_id, "created_at": op.now, "updated_by": op.editor,
              **clean_attributes(attributes or {})}
    class_id = op.insert_one("class", values)
    op.concern(f"class:{class_id}")
    return class_id


def add_class(factory: sessionmaker[Session], name: str, editor: str, display_name: str | None = None,
              status: str = "active", external_id: str | None = None, attributes: dict[str, Any] | None = None,
              seed_face_ids: Sequence[int] = (),
              expected_versions: dict[int, int] | None = None) -> tuple[int, OperationResult]:
    """A new celebrity; seed faces (e.g. a selection in the explorer) are relabeled to it.
    expected_versions (face id -> face label version the editor saw, 0 for a face without a
    label, as in `decide_faces`) refuses the whole operation, class included, with a
    ConflictError when a seed face changed since: the selection may hold confirmed faces."""
    with run_operation(factory, editor, "add_class") as op:
        class_id = create_class(op, name, display_name, status, external_id, attributes)
        # the seeds written, not the ids given: "3" and 3 (from a form and a dataframe) are one face
        seeded = apply_decision(op, seed_face_ids, "relabel", class_id, expected_versions) if seed_face_ids else 0
        op.summary = f"add class {clean_class_name(name)!r}" + (f" seeded with {seeded} face(s)" if seed_face_ids else "")
    return class_id, op.result


def rename_class(factory, class_id: int, new_name: str, editor: str, expected_version: int | None = None,
                 display_name: str | None = None) -> OperationResult:
    """New name (and display name, when given; blank clears it). Only what changes is written: renaming
    a class to the name it has writes nothing, as `set_class_attributes` does (the result says
    "nothing changed" and has no event), so no version moves and there is nothing to undo."""
    class_id = check_id(class_id, "class")
    with run_operation(factory, editor, "rename_class") as op:
        # Why the catalog lock, before the class (as an import takes them): two editors giving two classes one
        # name at once both found it free, and the second met the unique key ("another editor saved a class of
        # the same name at the same moment"), naming nobody. Now the second waits, then finds the first's class
        # and is refused by `_check_free`, which names it.
        lock_class_catalog(op.session)
        row = _load_class(op, class_id, expected_version)
        name = clean_class_name(new_name, new=False)
        values: dict[str, Any] = {}
        if name != row["name"]:  # a class saved under its own name keeps its key, even one 0010 left older
            _check_free(op.session, name, but=class_id)
            values.update(name=name, name_key=class_name_key(name))
        if display_name is not None:
            values["display_name"] = clean_display_name(display_name, new=False) if display_name.strip() else None
        changed = {c: v for c, v in values.items() if row[c] != v}
        for column, what in (("name", "class name"), ("display_name", "display name")):
            if changed.get(column) is not None:  # only a name given anew: a stored one stays as it was accepted
                refuse_invisible_characters(changed[column], what)
        if changed:
            op.update("class", {(class_id,): changed}, {(class_id,): row})
        op.summary = (f"rename class {row['name']!r} to {name!r}" if row["name"] != name else f"class {name!r}") + (
            f", display name {row['display_name']!r} -> {changed['display_name']!r}" if "display_name" in changed else "")
    return op.result


def _labels_of(session: Session, class_id: int, face_ids: Sequence[int] | None = None,
               chunk_size: int = CHUNK, predicted: bool = True) -> list[int]:
    """Faces labeled as the class, or also only predicted as it (`predicted`), of `face_ids` only when
    given, in id order.

    The face ids go in chunks: one IN list of them all would bind a parameter per face, and a split
    of more than 65,535 faces is refused by PostgreSQL ("number of parameters must be between 0 and 65535")."""
    labeled = FaceLabel.class_id == class_id
    stmt = select(FaceLabel.face_id).where(labeled | (FaceLabel.predicted_class_id == class_id) if predicted else labeled)
    if face_ids is None:
        return list(session.scalars(stmt.order_by(FaceLabel.face_id)))
    found: list[int] = []
    for chunk in _chunks(sorted(set(face_ids)), chunk_size):
        found.extend(session.scalars(stmt.where(FaceLabel.face_id.in_(chunk))))
    return sorted(found)


def _move_labels(op: Operation, face_ids: list[int], source_id: int, target_id: int,
                 rows: dict[tuple[int], dict[str, Any] | None] | None = None) -> int:
    """Point both decisions and predictions of source at target, keeping each label's status.

    A decided label the editor moves becomes the editor's decision (source "editor"): its class is
    now theirs, not the import's, so re-importing the same raw dataset keeps it where the merge or
    split put it instead of moving it back. An undecided label stays the model's. Only a moved decided
    label (class_id) names the editor: a face another editor relabeled or rejected keeps their name when
    only its prediction follows the merge, and a face only predicted keeps no editor's name, or it would
    read "predicted as 'B' by bob" as though bob had decided it."""
    wanted = [(f,) for f in face_ids]
    if rows is None:
        rows = op.load("face", wanted)
    rows = {k: rows[k] for k in wanted if rows.get(k) is not None}  # `rows` given: the caller locked them
    changes: dict[tuple[int], dict[str, Any]] = {}
    for key, row in rows.items():
        values: dict[str, Any] = {}
        if row["class_id"] == source_id:
            values["class_id"] = target_id
            if row["status"] not in UNDECIDED_STATUSES and row["source"] != "editor":
                values["source"] = "editor"
        if row["predicted_class_id"] == source_id:
            values["predicted_class_id"] = target_id
        if "class_id" in values and row["status"] not in UNDECIDED_STATUSES:
            values["editor"] = op.editor  # a decision moved is the editor's; a prediction stays the model's
        if values:
            changes[key] = values
    if changes:
        op.update("face", changes, rows)
        op.concern_media_of(face_id for (face_id,) in changes)
    return len(changes)


def merge_classes(factory, source_id: int, target_id: int, editor: str,
                  expected_versions: dict[int, int] | None = None) -> OperationResult:
    """Every label of source moves to target; source is retired and remembers where it went.
    expected_versions (class id -> version the editor saw) refuses a merge based on a stale view."""
    source_id, target_id = check_id(source_id, "class"), check_id(target_id, "class")
    if source_id == target_id:
        raise ValidationError("cannot merge a class into itself")
    seen = {key[0]: v for key, v in expected_by_key("class", expected_versions or {}).items()}
    with run_operation(factory, editor, "merge_classes") as op:
        rows = _load_classes(op, [source_id, target_id], {c: seen.get(c) for c in (source_id, target_id)})
        source, target = rows[source_id], rows[target_id]
        if source["merged_into_id"] is not None:
            raise ValidationError(f"class {source['name']!r} is already {retired_phrase(op.session, source_id)}: "
                                  "its labels went there; make it active again first to merge it elsewhere")
        if target["status"] == "retired":  # named as the source is: who merged or retired it, when, in which operation
            raise ValidationError(f"class {target['name']!r} is {retired_phrase(op.session, target_id)}: "
                                  "merge into an active class")
        _check_no_merge_cycle(op.session, source, target)
        moved = _move_labels(op, _labels_of(op.session, source_id), source_id, target_id)
        op.update("class", {(source_id,): {"status": "retired", "merged_into_id": target_id}}, {(source_id,): source})
        op.summary = f"merge class {source['name']!r} into {target['name']!r} ({moved} label(s) moved)"
    return op.result


def _check_no_merge_cycle(session: Session, source: dict[str, Any], target: dict[str, Any]) -> None:
    """Refuse to merge a class into one that is (perhaps through others) merged into it: each would
    name the other as where its faces went. A class made active again is no longer merged into
    anything (`set_class_status`), but stores written before that rule may still hold such a link."""
    chain = merge_chain(session, target["id"])
    if source["id"] in chain:
        raise ValidationError(f"class {target['name']!r} is recorded as merged into {source['name']!r} "
                              f"(classes {' -> '.join(map(str, chain))}): merging {source['name']!r} into it would "
                              "make a cycle; retire one of them instead")


def split_class(factory, class_id: int, face_ids: Sequence[int], editor: str, new_name: str | None = None,
                target_id: int | None = None, expected_version: int | None = None) -> tuple[int, OperationResult]:
    """Move a subset of a class's faces to a new class (new_name) or an existing one (target_id);
    expected_version (of the split class) refuses a split based on a stale view."""
    if (new_name is None) == (target_id is None):
        raise ValidationError("split needs exactly one of a new class name or an existing target class")
    if not face_ids:
        raise ValidationError("split needs the faces to move")
    class_id = check_id(class_id, "class")
    target_id = optional_class_id(target_id)
    face_ids = list(dict.fromkeys(check_id(f, "face") for f in face_ids))
    with run_operation(factory, editor, "split_class") as op:
        if target_id is None:
            lock_class_catalog(op.session)  # the new class's name, first as `create_class` and imports take it
        locked = _load_classes(op, [class_id] if target_id is None else [class_id, target_id],
                               {class_id: expected_version})
        source = locked[class_id]
        # The picked faces locked before they are judged (classes, then faces, as a merge locks them): read
        # unlocked, a face another editor was relabeling out of the class counted as a member, and the move,
        # which locks them, then skipped it: the split "succeeded" with some of the faces.
        rows = op.load("face", [(f,) for f in face_ids])
        members = {f for (f,), row in rows.items() if row is not None and row["class_id"] == class_id}
        _refuse_outside(op.session, source, face_ids, members, rows)
        if target_id is None:
            target_id = create_class(op, new_name)
            target_name = clean_class_name(new_name)
        else:
            if target_id == class_id:
                raise ValidationError("split target is the class itself")
            if locked[target_id]["status"] == "retired":
                raise ValidationError(f"split target class is retired: {locked[target_id]['name']!r} (class {target_id}) "
                                      f"was retired{class_writer_phrase(op.session, target_id)}; split into an active class")
            target_name = locked[target_id]["name"]
        moved = _move_labels(op, sorted(members), class_id, target_id, rows)
        # both by name, as editors know them (the summary is the history and undo list's line); the id tells
        # a class created here from one that had a similar name
        op.summary = f"split {moved} face(s) from {source['name']!r} into {target_name!r} (class {target_id})"
    return target_id, op.result


def _refuse_outside(session: Session, source: dict[str, Any], face_ids: Sequence[int], members: set[int],
                    rows: dict[tuple[int], dict[str, Any] | None]) -> None:
    """Refuse a split of faces not labeled as the source, naming them. A face only predicted as it
    (relabeled to another class, or rejected) is named apart: a split moves labels, and moving only
    its prediction would report it split while its decision stayed where the editor put it.
    `rows` are the faces' labels, locked: who changed a face last is named too, as a stale edit names
    who moved it on, since another editor may have relabeled it while this editor looked at the class."""
    outside = [f for f in face_ids if f not in members]
    if not outside:
        return
    only_predicted = [f for f in outside if (row := rows.get((f,))) is not None
                      and row["predicted_class_id"] == source["id"]]
    only = set(only_predicted)
    unlabeled = [f for f in outside if f not in only]
    parts = ([f"face(s) {unlabeled[:10]} are not labeled {source['name']!r}"] if unlabeled else []) + (
        [f"face(s) {only_predicted[:10]} are only predicted as {source['name']!r} (an editor decided them "
         "otherwise): relabel those instead"] if only_predicted else [])
    raise ValidationError("; ".join(parts) + _moved_out_by(session, [f for f in unlabeled if rows.get((f,))],
                                                           source["id"]))


def _moved_out_by(session: Session, face_ids: Sequence[int], class_id: int) -> str:
    """"; face 7 was moved out of it by ann at ... in operation 12 (relabel_faces): reload ...": the first of
    these faces whose last audited write took it out of class `class_id`, or nothing.

    Only such a write: a face picked by mistake, or last written by a prediction run, was not moved out by
    anyone, and "reload and try again" would not help."""
    for face_id in face_ids[:10]:
        key = f"face:{face_id}"
        writer = last_write(session, key)
        if writer is None:
            continue
        before = (session.get(AuditEvent, writer.event_id).before or {}).get(key) or {}
        if before.get("class_id") == class_id:
            return f"; face {face_id} was moved out of it {writer.phrase()}: reload the class and try again"
    return ""


def retire_class(factory, class_id: int, editor: str, expected_version: int | None = None) -> OperationResult:
    """Retired classes keep their labels (history) but take no new ones and are not exported."""
    return set_class_status(factory, class_id, "retired", editor, expected_version)


def set_class_status(factory, class_id: int, status: str, editor: str, expected_version: int | None = None) -> OperationResult:
    check_class_status(status)
    class_id = check_id(class_id, "class")
    with run_operation(factory, editor, "set_class_status") as op:
        row = _load_class(op, class_id, expected_version)
        values: dict[str, Any] = {"status": status} if row["status"] != status else {}
        unmerged = status != "retired" and row["merged_into_id"] is not None
        if unmerged:  # back in use: no longer merged into anything, or a later merge back would make a cycle
            values["merged_into_id"] = None
        if values:
            op.update("class", {(class_id,): values}, {(class_id,): row})
        op.summary = f"class {row['name']!r}: {row['status']} -> {status}" + (
            f" (no longer merged into class {row['merged_into_id']})" if unmerged else "")
    return op.result


def set_class_attributes(factory, class_id: int, editor: str, expected_version: int | None = None,
                         **attributes: Any) -> OperationResult:
    """Set demographic attributes (gender, ethnicity, birth_year, country); None clears one.

    The version is checked before the values: a value refused (a birth year typed '19x0') must not hide
    that the class changed since the editor saw it, or the corrected press would be their first word of
    it, and a page that moved on to the version read meanwhile would write stale boxes over the change."""
    if not attributes:
        raise ValidationError("no attributes given")
    class_id = check_id(class_id, "class")
    with run_operation(factory, editor, "set_class_attributes") as op:
        row = _load_class(op, class_id, expected_version)
        values = clean_attributes(attributes)
        changed = {k: v for k, v in values.items() if row[k] != v}
        if changed:
            op.update("class", {(class_id,): changed}, {(class_id,): row})
        # what changed, as the history lists it; all given when nothing did ("(nothing changed)" follows)
        op.summary = f"class {row['name']!r}: " + ", ".join(f"{k}={v!r}" for k, v in (changed or values).items())
    return op.result


def clear_class_attributes(factory, class_id: int, editor: str, names: Sequence[str], expected_version: int | None = None) -> OperationResult:
    return set_class_attributes(factory, class_id, editor, expected_version, **{n: None for n in names})


def class_counts(session: Session) -> dict[int, dict[str, int]]:
    """class id -> {status: number of faces} for the catalog."""
    out: dict[int, dict[str, int]] = {}
    rows = session.execute(select(FaceLabel.class_id, FaceLabel.status, func.count()).where(FaceLabel.class_id.is_not(None))
                           .group_by(FaceLabel.class_id, FaceLabel.status))
    for class_id, status, n in rows:
        out.setdefault(class_id, {})[status] = n
    return out
