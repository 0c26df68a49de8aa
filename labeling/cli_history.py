"""`giflens history` and `giflens undo`: the audit log read back, and operations reversed."""
from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from labeling.cli import DatabaseUrl, DataDir, Editor, _editor, _run, _store_for, app, make_settings, one_line, refuse

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


def _entity_key(store: sessionmaker[Session], entity: str) -> str:
    """`face:12`, `media:7`, `class:3` or `class:Brad Pitt` (a class by name, any case; also as GIPHY
    writes it, `Brad_Pitt_[m.0c6qh]` or `Adrien_Brody`) -> the audit key. Bad input: one line, exit 1."""
    from labeling.classes import find_class
    from labeling.errors import StoreError
    from labeling.importers import parse_giphy_label

    kind, sep, value = entity.partition(":")
    kind, value = kind.strip().casefold(), value.strip()
    if not sep or kind not in {"face", "media", "class"} or not value:
        refuse(f"{entity!r}: expected face:ID, media:ID, class:ID or class:NAME")
    if value.isdecimal() and _entity_known(store, kind, int(value)):
        return f"{kind}:{int(value)}"
    if value.isdecimal() and kind != "class":
        refuse(f"no {kind} {int(value)} in the store (nor in its audit log)")
    if kind != "class":
        refuse(f"{entity!r}: a {kind} is named by its id")
    giphy_name = parse_giphy_label(value)[0]
    with store() as session:
        problem = f"no class has id {int(value)} or is called {value!r}" if value.isdecimal() else None
        for name in dict.fromkeys([value, giphy_name]):  # the name as given, then as the importers read it
            if not name:
                continue
            try:
                found = find_class(session, name)
            except StoreError as exc:  # a name no class can have (too long, a path)
                problem = problem or f"{entity!r}: {exc}"
                continue
            if found is not None:
                _note_former_holders(session, name, found.id)
                return f"class:{found.id}"
        return _former_class_key(session, value, [giphy_name], problem)


def _note_former_holders(session: Session, name: str, holder: int) -> None:
    """A note (stderr) naming the other classes that once carried `name`: the history shown is the class
    called so now, and an editor who remembers the name may be after the class renamed away from it."""
    from labeling.audit import classes_once_named
    from labeling.schema import CelebrityClass

    others = [c for c in classes_once_named(session, name) if c != holder]
    if not others:
        return
    now = {c: session.get(CelebrityClass, c) for c in others}
    named = ", ".join(f"class {c}" + (f" (now {now[c].name!r})" if now[c] is not None else " (removed)")
                      for c in others)
    typer.echo(f"note: {name!r} was also the name of {named}; give class:ID for its history", err=True)


def _former_class_key(session: Session, value: str, also: list[str], problem: str | None) -> str:
    """A class by a name it no longer has (renamed since, or removed by an undo): the audit log knows which
    class carried it; several classes that carried it are listed for the editor to pick by id."""
    from labeling.audit import classes_once_named

    for name in dict.fromkeys([value, *also]):
        found = classes_once_named(session, name) if name else []
        if len(found) == 1:
            return f"class:{found[0]}"
        if found:
            refuse(f"{value!r} was the name of classes {', '.join(map(str, found))}: give class:ID")
    refuse(problem or f"no class is called {value!r}")


def _entity_known(store: sessionmaker[Session], kind: str, entity_id: int) -> bool:
    """Whether `kind:id` names something: a row of the store, or one the audit log remembers (a face an
    ingest replaced, a class an undo removed still has its history). Why: an id that names nothing
    would list "0 operation(s)" as if it were a real entity without history, and `class:2001` could
    never reach a class called "2001"."""
    from sqlalchemy import select

    from labeling.schema import AuditEntity, CelebrityClass, Face, Media

    if entity_id > 2**31 - 1:  # beyond an id column: PostgreSQL would refuse the query
        return False
    table = {"face": Face, "media": Media, "class": CelebrityClass}[kind]
    with store() as session:
        return (session.get(table, entity_id) is not None or session.scalar(
            select(AuditEntity.id).where(AuditEntity.key == f"{kind}:{entity_id}").limit(1)) is not None)


HISTORY_LIMIT_MAX = 2**31 - 1  # more than any store holds; a LIMIT past int64 crashed SQLite and PostgreSQL
HISTORY_CHANGES_SHOWN = 5  # lines of what one operation changed of a GIF, under its summary (`--changes`)


def _changes_shown(text: str) -> int | None:
    """`--changes`: how many change lines an operation shows, None for all. Bad input: one line, exit 1."""
    value = text.strip().casefold()
    if value == "all":
        return None
    if not value.isdecimal():
        refuse(f"--changes must be a number of lines (0 or more) or all, got {text!r}")
    return int(value)


def _history_changes(store: sessionmaker[Session], key: str, events) -> dict[int, list[str]]:
    """event id -> what it changed of the entity, from the audit log's own before/after snapshots: for
    `face:ID` its label ("face 2: rejected -> approved 'Al Gore' (class 1)"), for `media:ID` its tags
    ("tag 'wow': active 0.5 -> active 0.1"); nothing for a class (its summary says it).

    Why: a summary speaks of the whole operation ("approved 2 face(s)", "set confidence of 3 tag(s)"); the
    history of one face or GIF must say what happened to that one. An event that only concerned the entity
    (a decision on another face of the GIF) wrote no snapshot of it and gets no line."""
    from sqlalchemy import select

    from labeling.audit import _chunks, snapshots_of
    from labeling.schema import AuditEntity, CelebrityClass, Tag

    kind, _, ident = key.partition(":")
    ids = [int(e) for e in events["event_id"]] if len(events) else []
    if kind not in ("face", "media") or not ids:
        return {}
    with store() as session:
        if kind == "face":
            keys = [key]
        else:
            found: set[str] = set()
            for chunk in _chunks(ids):
                found.update(session.scalars(select(AuditEntity.key).where(
                    AuditEntity.event_id.in_(chunk), AuditEntity.written.is_(True),
                    AuditEntity.key.like(f"media_tag:{ident}:%"))))
            keys = sorted(found, key=lambda text: int(text.rsplit(":", 1)[1]))
        before, after = snapshots_of(session, ids, keys) if keys else ({}, {})
        named = {c for side in (before, after) for snapshots in side.values() for snap in snapshots.values() if snap
                 for c in (snap.get("class_id"), snap.get("predicted_class_id")) if isinstance(c, int)}
        now = dict(session.execute(select(CelebrityClass.id, CelebrityClass.name)
                                   .where(CelebrityClass.id.in_(sorted(named)))).all()) if named else {}
        names = _ClassNames(session, named, now)
        tag_ids = [int(text.rsplit(":", 1)[1]) for text in keys] if kind == "media" else []
        tags = dict(session.execute(select(Tag.id, Tag.name).where(Tag.id.in_(tag_ids))).all()) if tag_ids else {}
    out: dict[int, list[str]] = {}
    for event_id, written in after.items():
        for text, now in written.items():
            then = before.get(event_id, {}).get(text)
            if kind == "face":
                line = _face_change(text, then, now, names.at(event_id))
            else:
                tag_id = int(text.rsplit(":", 1)[1])
                line = _tag_change(tags.get(tag_id, f"tag {tag_id}"), then, now)
            if line:
                out.setdefault(event_id, []).append(line)
    return out


class _ClassNames:
    """The names classes had at each operation of a history, from the audit log's class snapshots, beside
    their names now: "'Carol' (class 3, now 'Caroline')".

    Why: a face relabeled to 'Carol' before the class was renamed 'Caroline' was relabeled to 'Carol': the
    operation's summary says so, and its line must not contradict it. A class an undo removed since (an
    undone import took its classes) has no name now: it is named as the log knew it then."""

    def __init__(self, session: Session, class_ids: set[int], now: dict[int, str]) -> None:
        from labeling.audit import _class_names_in_log

        self.now = now
        self.log: dict[int, list[tuple[tuple[int, int], str]]] = {}
        for event_id, side, class_id, name in _class_names_in_log(session, sorted(class_ids)) if class_ids else ():
            self.log.setdefault(class_id, []).append(((event_id, side), name))
        for entries in self.log.values():
            entries.sort()

    def then(self, class_id: int, event_id: int) -> str | None:
        """The class's name just after `event_id`: the newest name logged up to it, else the name the
        first later snapshot had (unchanged since before), else its name now."""
        entries = self.log.get(class_id, [])
        i = bisect.bisect_right(entries, (event_id, 1), key=lambda entry: entry[0])
        return entries[i - 1][1] if i else entries[0][1] if entries else self.now.get(class_id)

    def at(self, event_id: int) -> dict[int, str]:
        """class id -> how an operation's line names it: "'Carol' (class 3)" or "'Carol' (class 3, now 'Caroline')"."""
        from labeling.validation import quoted

        out: dict[int, str] = {}
        for class_id in set(self.log) | set(self.now):
            then, now = self.then(class_id, event_id), self.now.get(class_id)
            renamed = f", now {quoted(now)}" if now is not None and now != then else ""
            out[class_id] = f"{quoted(then)} (class {class_id}{renamed})" if then is not None else f"class {class_id}"
        return out


def _class_text(class_id: int | None, classes: dict[int, str]) -> str:
    """How a face's line names a class: as `_ClassNames.at` gave it for that operation, else by its id."""
    if class_id is None:
        return "no class"
    return classes.get(class_id, f"class {class_id}")


def _face_change(key: str, then: dict | None, now: dict | None, classes: dict[int, str]) -> str:
    """"face 2: rejected -> approved 'Al Gore' (class 1)": the status and class an operation changed; the
    model's guess when only that changed beside a decision ("face 2: guess 'A' (class 1) -> 'B' (class 2)")."""
    face = key.replace(":", " ", 1)

    def label(snap: dict | None) -> str:
        if snap is None:
            return "no label"
        parts = [snap["status"]] if "status" in snap else []
        if "class_id" in snap and (snap["class_id"] is not None or not parts):
            parts.append(_class_text(snap["class_id"], classes))
        return " ".join(parts)

    if then is None or now is None or "status" in now or "class_id" in now:
        return f"{face}: {label(then)} -> {label(now)}"
    if "predicted_class_id" in now:
        return (f"{face}: guess {_class_text(then.get('predicted_class_id'), classes)} -> "
                f"{_class_text(now['predicted_class_id'], classes)}")
    return ""


def _tag_change(name: str, then: dict | None, now: dict | None) -> str:
    """"tag 'wow': active 0.5 -> active 0.1", "tag 'lol' added: active 0.5", "tag 'lol' removed (was
    rejected 0.5)": the status and confidence an operation changed of a GIF's tag."""
    from labeling.validation import quoted

    def state(snap: dict) -> str:
        parts = [snap["status"]] if "status" in snap else []
        if snap.get("confidence") is not None:
            parts.append(f"{snap['confidence']:g}")
        return " ".join(parts) or "?"

    if then is None:
        return f"tag {quoted(name)} added: {state(now)}" if now is not None else ""
    if now is None:
        return f"tag {quoted(name)} removed (was {state(then)})"
    return f"tag {quoted(name)}: {state(then)} -> {state(now)}"


@app.command("history")
def history_command(
    entity: Annotated[Optional[str], typer.Argument(
        help="face:ID, media:ID, class:ID or class:NAME; without it, the latest operations.")] = None,
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
    editor: Annotated[Optional[str], typer.Option("--editor", help="Only this editor's operations.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many operations, newest first.")] = 20,
    changes: Annotated[str, typer.Option("--changes", help=(
        "Of one face or GIF: how many of the faces or tags an operation changed to list under it, "
        "or all."))] = str(HISTORY_CHANGES_SHOWN),
) -> None:
    """The audit log, newest first: of one face, GIF or class, or the latest operations (of one editor).

    The event ids are what `giflens undo` takes; times are in UTC."""
    from labeling.errors import utc_text
    from labeling.queries import events_frame, history_frame
    from labeling.tags import requoted

    shown = _changes_shown(changes)
    settings = make_settings(data_dir=data_dir, database_url=database_url)
    store = _store_for(settings, create=False)
    key = _entity_key(store, entity) if entity else None
    limit = min(limit, HISTORY_LIMIT_MAX)  # a larger one asks for everything all the same
    # One more than shown: whether older operations were left out, said rather than cut silently.
    if key:
        events = history_frame(store, key, limit=limit + 1, editor=editor)
    else:
        events = events_frame(store, editor, limit=limit + 1)
    more, events = len(events) > limit, events.iloc[:limit]
    import pandas as pd

    found = _history_changes(store, key, events) if key else {}
    for row in events.itertuples():
        undone = f"  [undone by {int(row.undone_by)}]" if pd.notna(row.undone_by) else ""
        # requoted: a summary logged before names were quoted as typed shows them so too
        typer.echo(one_line(f"{row.event_id:>6}  {utc_text(row.at)}  {row.editor}  {requoted(row.summary)}{undone}"))
        lines = found.get(row.event_id, [])
        for line in lines[:shown]:
            typer.echo(one_line(f"{'':>8}{line}"))
        if shown is not None and len(lines) > shown:
            typer.echo(f"{'':>8}... and {len(lines) - shown} more (--changes all lists them)")
    if more:  # on stderr: the listing and its summary line, last, stay what scripts read
        typer.echo(f"... older operations not shown (raise --limit above {limit})", err=True)
    what = f"of {entity}" if entity else "in the store"
    typer.echo(f"{len(events)} operation(s) {what}" + (f" by {editor}" if editor else "") + " shown, newest first")


@app.command("undo")
def undo_command(
    event_id: Annotated[Optional[int], typer.Argument(
        min=1, help="The operation to undo (see `giflens history`); without it, your last operation.")] = None,
    data_dir: DataDir = None, database_url: DatabaseUrl = None, editor: Editor = None,
) -> None:
    """Undo one operation (audited as an undo); refused, with what depends on it, when a later operation
    changed the same faces, classes or tags."""
    from labeling.audit import undo_event, undo_last

    settings = make_settings(data_dir=data_dir, database_url=database_url)
    store = _store_for(settings, create=False)
    who = _editor(editor)
    _run(lambda: _UndoSummary(undo_last(store, who) if event_id is None else undo_event(store, event_id, who)))


class _UndoSummary:
    """An undo's one-line summary, as `_run` prints it."""

    def __init__(self, result) -> None:
        self.result = result

    def line(self) -> str:
        return f"{self.result.summary} (audit event {self.result.event_id}, {self.result.changed} row(s) restored)"
