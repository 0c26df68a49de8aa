"""Tags on media with confidences: add, remove, set confidence, accept or reject suggestions."""
from __future__ import annotations

import ast
import re
from pathlib import PurePath
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from labeling.audit import Key, Operation, OperationResult, _chunks, run_operation, written_count
from labeling.db import advisory_xact_lock
from labeling.errors import NotFoundError, TagExistsError, ValidationError
from labeling.schema import TAG_SOURCES, TAG_STATUSES, Media, Tag, utcnow
from labeling.validation import (check_confidence, check_id, clean_tag_name, fold_tag_name, quoted,
                                 refuse_invisible_characters)


SHOWN = 5  # rows an error names before "and N more"; tags a summary names
# What `set_tag_status` did, for its summary: "accepted 2 tag suggestion(s)", not "active 2 ...". Rejecting
# reads by what was rejected: suggestions, tags an editor or import had made active, or both.
STATUS_SUMMARIES = {"active": "accepted {n} tag suggestion(s)", "rejected": "rejected {n} tag suggestion(s)",
                    "suggested": "marked {n} tag(s) as suggestions"}
REJECTED_SUMMARIES = {frozenset({"active"}): "rejected {n} tag(s)",
                      frozenset({"active", "suggested"}): "rejected {n} tag(s) ({s} of them suggestions)"}


def _media_names(session: Session, media_ids: Iterable[int]) -> dict[int, str]:
    """File names for error messages: an editor knows a GIF by its name, not its id."""
    ids = list(dict.fromkeys(media_ids))
    rows = session.execute(select(Media.id, Media.path).where(Media.id.in_(ids))).all() if ids else []
    return {m: PurePath(p).name for m, p in rows}


def _describe(session: Session, keys: Sequence[Key], what: Callable[[Key], str]) -> str:
    """'jlaw-nods.gif (media 3) <what(key)>, ... and 2 more' for an error message."""
    names = _media_names(session, [m for m, _ in keys[:SHOWN]])
    text = ", ".join(f"{names.get(m, '?')} (media {m}) {what((m, t))}" for m, t in keys[:SHOWN])
    return text + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


# One PostgreSQL advisory lock for creating tags: "giflens" + "T" (classes.py's external-id lock is "X").
TAG_VOCABULARY_LOCK = 0x6769666C656E7354


def lock_tag_vocabulary(session: Session) -> None:
    """Hold the tag vocabulary until this transaction ends (PostgreSQL; SQLite's write transaction,
    BEGIN IMMEDIATE, already excludes every other writer).

    Why: two transactions creating the same new tag both find it missing and the second fails on the
    unique name (reported as "another editor saved the same new tag"); under the lock the second waits
    for the first to commit, and a statement after the wait sees the first's tags (READ COMMITTED)."""
    advisory_xact_lock(session, TAG_VOCABULARY_LOCK)


def _find_tags(session: Session, names: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in _chunks(list(names)):
        found.update(session.execute(select(Tag.name, Tag.id).where(Tag.name.in_(chunk))).all())
    return found


def tag_ids(session: Session, names: Iterable[str], create: bool = True) -> dict[str, int]:
    """Tag vocabulary rows (never deleted, so they are not part of undo). Missing ones are created under
    `lock_tag_vocabulary`, looked up again once it is held: a tag another transaction created meanwhile
    is found, not created twice.

    Only a tag created here is checked for invisible characters (`refuse_invisible_characters`): a
    tag stored before that rule is still found, so it can be removed, rejected or added elsewhere."""
    names = list(dict.fromkeys(clean_tag_name(n) for n in names))
    found = _find_tags(session, names)
    missing = [n for n in names if n not in found]
    if missing and not create:
        raise NotFoundError(f"no tag named {', '.join(map(repr, missing[:10]))}")
    if missing:
        lock_tag_vocabulary(session)
        found.update(_find_tags(session, missing))
        missing = [n for n in names if n not in found]
    if missing:
        for name in missing:
            refuse_invisible_characters(name, "tag")
        session.execute(insert(Tag), [{"name": n, "created_at": utcnow()} for n in missing])
        for chunk in _chunks(missing):
            found.update(session.execute(select(Tag.name, Tag.id).where(Tag.name.in_(chunk))).all())
    return found


def _check_media(session: Session, media_ids: Iterable[int]) -> None:
    ids = list(dict.fromkeys(check_id(m, "media") for m in media_ids))
    found: set[int] = set()
    for chunk in _chunks(ids):
        found.update(session.scalars(select(Media.id).where(Media.id.in_(chunk))))
    missing = [m for m in ids if m not in found]
    if missing:
        raise NotFoundError(f"no media with id {', '.join(map(str, missing[:10]))}")


def apply_tags(op: Operation, items: Sequence[tuple[int, str, float]], source: str, status: str = "active",
               expected_versions: dict[tuple[int, int], int] | None = None, keep_editor_tags: bool = False,
               refuse_active: bool = False, refuse_rejected: bool = False) -> int:
    """Upsert (media, tag, confidence) rows inside an open operation; returns rows changed.

    refuse_active: an existing active row is a TagExistsError, not overwritten (an editor adding a
    tag). refuse_rejected: a rejected row is a ValidationError (setting a confidence must not undo a
    rejection unseen). Importers and experts voting keep the upsert, which is what they mean."""
    if source not in TAG_SOURCES:
        raise ValidationError(f"tag source must be one of {', '.join(TAG_SOURCES)}, got {source!r}")
    if status not in TAG_STATUSES:
        raise ValidationError(f"tag status must be one of {', '.join(TAG_STATUSES)}, got {status!r}")
    cleaned = [(check_id(m, "media"), clean_tag_name(t), check_confidence(c)) for m, t, c in items]
    if not cleaned:
        raise ValidationError("no tags given")
    _check_media(op.session, [m for m, _, _ in cleaned])
    ids = tag_ids(op.session, [t for _, t, _ in cleaned])
    wanted = _one_confidence_each(op.session, [((m, ids[t]), t, c) for m, t, c in cleaned])
    rows = op.load("media_tag", list(wanted))
    op.check_versions("media_tag", rows, expected_versions)
    names = {i: t for t, i in ids.items()}
    if refuse_active:
        _refuse_active(op.session, rows, names)
    if refuse_rejected:
        _refuse_rejected(op.session, rows, names, "setting a confidence")
    changes: dict[Key, dict[str, Any]] = {}
    for key, conf in wanted.items():
        row = rows[key]
        if keep_editor_tags and row is not None and row["source"] == "editor":
            continue  # a model re-run never overrides an editor's tag
        values = {"confidence": conf, "source": source, "status": status, "editor": op.editor}
        if row is not None and all(row[k] == v for k, v in values.items() if k != "editor"):
            continue
        changes[key] = values
        op.concern(f"media:{key[0]}")
    if changes:
        op.update("media_tag", changes, rows)
    return len(changes)


def _one_confidence_each(session: Session, items: Sequence[tuple[Key, str, float]]) -> dict[Key, float]:
    """(media id, tag id) -> confidence. The same pair twice ("x" and "X" are one tag) with two different
    confidences is contradictory input: a ValidationError naming the pair, instead of the last one
    silently winning. The same pair with the same confidence twice is one edit, accepted."""
    wanted: dict[Key, float] = {}
    for key, tag, conf in items:
        if wanted.setdefault(key, conf) != conf:
            raise ValidationError(f"{_describe(session, [key], lambda k: f'tag {quoted(tag)}')} is given two confidences, "
                                  f"{wanted[key]:g} and {conf:g}, in one edit; give one (nothing was written)")
    return wanted


def _refuse_rejected(session: Session, rows: dict[Key, dict[str, Any] | None], tag_names: dict[int, str],
                     doing: str) -> None:
    """ValidationError naming the rejected tags among rows (and who rejected them), if any: `doing`
    ("setting a confidence", "accepting") must not undo an editor's rejection unseen."""
    rejected = [k for k, r in rows.items() if r is not None and r["status"] == "rejected"]
    if not rejected:
        return
    who = sorted({rows[k]["editor"] or "?" for k in rejected})
    raise ValidationError(
        f"{len(rejected)} of these tags were rejected (by {', '.join(who)}): "
        f"{_describe(session, rejected, lambda k: quoted(tag_names[k[1]]))}; {doing} does not undo a rejection: "
        "add the tag again to restore it")


def _refuse_active(session: Session, rows: dict[Key, dict[str, Any] | None], tag_names: dict[int, str]) -> None:
    """TagExistsError naming the active tags among rows (with their confidence, editor and when they set it,
    in UTC as every conflict says it), if any."""
    from labeling.errors import utc_text  # the one way a conflict prints a time

    active = [k for k, r in rows.items() if r is not None and r["status"] == "active"]
    if not active:
        return

    def when(row: dict[str, Any]) -> str:
        return f" at {utc_text(row['updated_at'])}" if row.get("updated_at") else ""

    shown = _describe(session, active, lambda k: f"is already tagged {quoted(tag_names[k[1]])} with confidence "
                      f"{rows[k]['confidence']:.2f} by {rows[k]['editor'] or rows[k]['source']}{when(rows[k])}")
    (m, t), first = active[0], rows[active[0]]
    raise TagExistsError(f"{shown}; edit its confidence instead (nothing was added)", f"media_tag {m}:{t}",
                         first["version"], first["editor"], first["updated_at"])


def _listed(names: Iterable[str]) -> str:
    """"'a', 'b', 'c', 'd', 'e' and 3 more": the first SHOWN names (`quoted`), each once, for a summary kept short."""
    names = list(dict.fromkeys(names))
    text = ", ".join(quoted(t) for t in names[:SHOWN])
    return text + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _names(tags: Sequence[str]) -> str:
    """The tags as stored (trimmed, lower case), for summaries: the audit log names what was written."""
    return _listed(clean_tag_name(t) for t in tags)


def _written_tags(op: Operation, asked: Iterable[str]) -> str:
    """The tags of the rows `op` wrote, by name (`_listed`); those asked when it wrote none ("nothing
    changed" follows). Why: "set confidence of 1 tag(s)" did not say which tag, in the history of a GIF."""
    tag_ids = {key[1] for key in op.written.get("media_tag", ())}
    if not tag_ids:
        return _names(list(asked))
    names = dict(op.session.execute(select(Tag.id, Tag.name).where(Tag.id.in_(sorted(tag_ids)))).all())
    return _listed(names[t] for _, t in sorted(op.written["media_tag"]) if t in names)


# A name as `_listed` writes it into a summary: Python's repr, in single quotes, or double ones when it holds one
_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")


def names_in_summary(summary: str) -> list[str]:
    """The tag names an operation's summary quotes ("remove tag(s) 'funny', 'cute' from 2 media"), in order,
    each once; those `_listed` left out ("and 3 more") are not there.

    Why read back from the summary: a tag that migration 0011 or 0014 merged away is deleted, and its name is
    recorded nowhere else (the vocabulary is not audited); the summary is the only place that still says
    which word an old operation's tag id was, so an undo refused over it can name the tag it became."""
    names: list[str] = []
    for literal in _QUOTED.findall(summary or ""):
        try:
            name = ast.literal_eval(literal)
        except (ValueError, SyntaxError):
            continue
        if isinstance(name, str) and name not in names:
            names.append(name)
    return names


def requoted(summary: str) -> str:
    """A stored summary with each name it quotes written as `quoted` writes it now: one logged before
    showed 'mi\\u200ckhaham' where the name has a zero-width non-joiner; the history shows the name as typed.
    A quoted stretch that is no string literal stays as it was; one that is reads back to the same name."""

    def again(match: re.Match[str]) -> str:
        try:
            name = ast.literal_eval(match.group())
        except (ValueError, SyntaxError):
            return match.group()
        return quoted(name) if isinstance(name, str) else match.group()

    return _QUOTED.sub(again, summary or "")


def tags_now_named(session: Session, summaries: Iterable[str]) -> dict[int, str]:
    """The tags (id -> name) the names quoted in these summaries fold to now (`fold_tag_name`, as 0011 and
    0014 recomputed stored names): where a tag an old operation wrote went once it was merged away."""
    folded = list(dict.fromkeys(fold_tag_name(n) for text in summaries for n in names_in_summary(text)))
    found: dict[int, str] = {}
    for chunk in _chunks(folded):
        found.update(session.execute(select(Tag.id, Tag.name).where(Tag.name.in_(chunk))).all())
    return found


def _confidences(values: Iterable[float]) -> str:
    """"0.1", or "0.1..0.9" for several: what a confidence edit set, short."""
    values = sorted(set(values))
    return f"{values[0]:g}" if len(values) == 1 else f"{values[0]:g}..{values[-1]:g}"


def add_tags(factory: sessionmaker[Session], media_ids: Sequence[int], tags: Sequence[str], editor: str,
             confidence: float = 1.0, source: str = "editor", status: str = "active",
             expected_versions: dict[tuple[int, int], int] | None = None) -> OperationResult:
    """Every tag on every media item (bulk when many), with one confidence.

    A tag a media item already carries (active) is refused with TagExistsError, nothing written:
    adding never overwrites someone's confidence; set_tag_confidences edits it. A suggested or
    rejected row is taken over (the editor adding it now decides), audited with its old state so
    undo restores it. expected_versions ((media id, tag id) -> version seen, 0 for none) refuses an
    add over a row that changed since the editor looked."""
    items = [(m, t, confidence) for m in media_ids for t in tags]
    with run_operation(factory, editor, "add_tags") as op:
        n = apply_tags(op, items, source, status, expected_versions, refuse_active=True)
        revived = sum(1 for k, before in op.before.items() if before and before.get("status") == "rejected")
        again = f", {revived} of them rejected before" if revived else ""
        op.summary = (f"add tag(s) {_names(tags)} to {len(set(media_ids))} media "
                      f"({n} changed{again})")
    return op.result


def set_tag_confidences(factory: sessionmaker[Session], items: Sequence[tuple[int, str, float]], editor: str,
                        expected_versions: dict[tuple[int, int], int] | None = None,
                        source: str = "editor") -> OperationResult:
    """(media id, tag, confidence) triples, single or bulk; confidences must lie in [0, 1].

    A suggestion given a confidence is accepted with it (status active). A rejected row is refused
    with a ValidationError naming it, nothing written: a bulk edit must not undo editors' rejections;
    adding the tag again (add_tags) is the explicit way back."""
    with run_operation(factory, editor, "set_tag_confidence") as op:
        n = apply_tags(op, items, source, "active", expected_versions, refuse_rejected=True)
        written = [after["confidence"] for text, after in op.after.items() if text.startswith("media_tag:") and after]
        confidence = _confidences(written or [check_confidence(c) for _, _, c in items])  # items: not empty
        op.summary = f"set confidence of {n} tag(s) to {confidence}: {_written_tags(op, [t for _, t, _ in items])}"
    return op.result


def set_tag_status(factory: sessionmaker[Session], items: Sequence[tuple[int, str]], status: str, editor: str,
                   expected_versions: dict[tuple[int, int], int] | None = None) -> OperationResult:
    """Accept ("active") or reject ("rejected") suggestions, e.g. from experts voting; expected_versions
    ((media id, tag id) -> version seen) refuses a decision on a suggestion that changed meanwhile.

    A rejected tag is refused (ValidationError naming it) unless the status asked is "rejected", as in
    `set_tag_confidences`: accepting a selection must not undo an editor's rejection unseen; adding the
    tag again (add_tags) is the explicit way back."""
    if status not in TAG_STATUSES:
        raise ValidationError(f"tag status must be one of {', '.join(TAG_STATUSES)}, got {status!r}")
    with run_operation(factory, editor, "set_tag_status") as op:
        ids = tag_ids(op.session, [t for _, t in items], create=False)
        keys = [(check_id(m, "media"), ids[clean_tag_name(t)]) for m, t in items]
        rows = op.load("media_tag", keys)
        # versions first: a suggestion another editor removed since the page showed it is refused naming
        # who removed it and when (as `set_tag_confidences` does), not as a tag the media never had
        op.check_versions("media_tag", rows, expected_versions)
        missing = [k for k, r in rows.items() if r is None]
        if missing:
            name = {tag_id: tag for tag, tag_id in ids.items()}[missing[0][1]]
            raise NotFoundError(f"media {missing[0][0]} has no tag {quoted(name)}")
        if status != "rejected":
            _refuse_rejected(op.session, rows, {tag_id: tag for tag, tag_id in ids.items()},
                             "accepting" if status == "active" else f"marking {status}")
        changes = {k: {"status": status, "editor": op.editor} for k, r in rows.items() if r["status"] != status}
        was = [rows[k]["status"] for k in changes]  # before the update, which moves `rows` on
        op.update("media_tag", changes, rows)
        for m, _ in keys:
            op.concern(f"media:{m}")
        n, unchanged = written_count(len(changes), len(rows))
        wording = REJECTED_SUMMARIES.get(frozenset(was), STATUS_SUMMARIES[status]) if status == "rejected" else \
            STATUS_SUMMARIES[status]
        op.summary = (wording.format(n=n, s=was.count("suggested")) + f": {_written_tags(op, [t for _, t in items])}"
                      + unchanged)
    return op.result


def remove_tags(factory: sessionmaker[Session], media_ids: Sequence[int], tags: Sequence[str], editor: str,
                expected_versions: dict[tuple[int, int], int] | None = None) -> OperationResult:
    """expected_versions ((media id, tag id) -> version seen) refuses removing a tag someone changed meanwhile."""
    with run_operation(factory, editor, "remove_tags") as op:
        ids = tag_ids(op.session, tags, create=False)
        _check_media(op.session, media_ids)
        rows = op.load("media_tag", [(check_id(m, "media"), ids[clean_tag_name(t)]) for m in media_ids for t in tags])
        op.check_versions("media_tag", rows, expected_versions)
        present = {k: r for k, r in rows.items() if r is not None}
        op.delete("media_tag", present)
        for m, _ in present:
            op.concern(f"media:{m}")
        op.summary = f"remove tag(s) {_names(tags)} from {len(set(media_ids))} media ({len(present)} removed)"
    return op.result
