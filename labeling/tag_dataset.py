"""The tag dataset an export writes (`tags.jsonl`), imported back: `giflens import tags FILE.jsonl`.

One JSON object a line, as `labeling.export` writes it: {"media": path, "sha256": ..., "media_id": ...,
"tags": [[tag, confidence], ...], "sources": {tag: source}}. `sources` (absent from older exports) is not
kept: an imported tag's source is `import`, since the store's editor-decision rules (`_decided_by_editor`)
must not take another store's "editor" for a decision made here. Why an import of its own beside the uploader CSV (`import_tags`):
the CSV carries names only (confidence 1.0), the dataset carries each tag's confidence, and an export
taken from one store must fill another store that ingested the same GIFs, where only the content
(sha256) is sure to be the same, not the path nor the media id.

Parsing is pure (`read_tag_dataset`: a file in, rows out; any problem a `ValidationError` naming the
file and line, raised before anything is written). Writing follows `import_tags` rule for rule: one
operation and audit event (undoable), editors' decisions kept, re-importing changes nothing.

A store's own export must import back: a tag stored before a naming rule existed (an invisible character,
"nod" + U+2800) is read as any tag is looked up (`clean_tag_name` without new=True), and only a tag the
import would have to create is held to the rule for new names, that tag alone left out and listed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from labeling.audit import run_operation
from labeling.errors import ValidationError
from labeling.importers import (IMPORTED_TAG_SOURCES, TAG_WRITE_STEPS, ImportSummary, StoredMedia, _decided_by_editor,
                                _editor, _media_matching, _no_progress, _not_ingested, _several_matches_note, _where,
                                stored_media, tag_rows_now)
from labeling.tags import _find_tags, apply_tags
from labeling.validation import check_confidence, clean_tag_name, quoted, refuse_invisible_characters

SUFFIX = ".jsonl"  # how `giflens import tags` tells a tag dataset from the uploader CSV
SOURCE = "import"  # the tag source its rows get (the CSV's are "uploader")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class TagDatasetRow(NamedTuple):
    line: int
    media: str | None  # the path in the store that exported it; matched as a tags CSV's `file` is
    sha256: str | None  # lower-case hex; matched first
    tags: list[tuple[str, float]]  # (tag as stored, confidence), each tag once


def is_tag_dataset(path: Path) -> bool:
    """Whether `giflens import tags` reads `path` as a tag dataset: by its suffix, `.jsonl` in any case.
    Why the suffix and not the content: a CSV whose first cell happens to start with "{" must not be
    read as JSON, and an error then speaks of the format the file's name announces."""
    return Path(path).suffix.lower() == SUFFIX


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _optional_text(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValidationError(f'"{key}" must be text, got {json.dumps(value)}')
    return value.strip()


def _tags(value: Any) -> list[tuple[str, float]]:
    """[[tag, confidence], ...] as (stored name, confidence), each tag once: the same tag twice with one
    confidence is one tag; with two it is contradictory and refused (no silent last-one-wins). Names are
    checked as a lookup checks them, not as a new tag (`_new_name_problem`, once the store is known)."""
    if not isinstance(value, list):
        raise ValidationError(f'"tags" must be a list of [tag, confidence] pairs, got {json.dumps(value)}')
    out: dict[str, float] = {}
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ValidationError(f"each tag must be a [tag, confidence] pair, got {json.dumps(pair)}")
        try:
            tag, conf = clean_tag_name(pair[0]), check_confidence(pair[1])
        except ValidationError as exc:
            raise ValidationError(f"tag {json.dumps(pair[0], ensure_ascii=False)}: {exc}") from None
        if out.setdefault(tag, conf) != conf:
            raise ValidationError(f"tag {quoted(tag)} is given two confidences, {out[tag]:g} and {conf:g}")
    return list(out.items())


def _row(line: int, text: str) -> TagDatasetRow:
    try:
        item = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (an uploader tags CSV, file,uploader_tags, must not be named .jsonl)" if line == 1 and "," in text \
            and not text.lstrip().startswith("{") else ""
        raise ValidationError(f"not valid JSON ({exc.msg} at column {exc.colno}){hint}") from None
    if not isinstance(item, dict):
        raise ValidationError(f"expected a JSON object {{\"media\": ..., \"sha256\": ..., \"tags\": [...]}}, "
                              f"got {type(item).__name__}")
    media, sha = _optional_text(item, "media"), _optional_text(item, "sha256")
    if sha is not None:
        sha = sha.lower()
        if not SHA256.match(sha):
            raise ValidationError(f'"sha256" must be 64 hexadecimal digits, got {sha!r}')
    if media is None and sha is None:
        raise ValidationError('neither "media" nor "sha256" is given: nothing names the media item')
    if "tags" not in item:
        raise ValidationError('no "tags" ([[tag, confidence], ...])')
    return TagDatasetRow(line, media, sha, _tags(item["tags"]))


def read_tag_dataset(path: Path) -> list[TagDatasetRow]:
    """The rows of a tag dataset (blank lines skipped; an empty file is an export with no tags). A media
    item named twice (same `sha256`, or same `media`) is refused, as the CSV refuses a file twice: two
    lines would be two opinions on one item's tags."""
    path = Path(path)
    out: list[TagDatasetRow] = []
    seen: dict[str, int] = {}
    for line, text in enumerate(_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = _row(line, text)
        except ValidationError as exc:
            raise ValidationError(f"{_where(path, line)}: {exc}") from None
        for key in (f"sha256 {row.sha256}" if row.sha256 else None, f"media {row.media}" if row.media else None):
            if key is not None and seen.setdefault(key, line) != line:
                raise ValidationError(f"{_where(path, line)}: {key} repeats line {seen[key]}")
        out.append(row)
    return out


# -- writing ------------------------------------------------------------------------------
def _new_name_problem(tag: str) -> str | None:
    """Why `tag` could not be created as a new tag (`refuse_invisible_characters`), None when it could."""
    try:
        refuse_invisible_characters(tag, "tag")
    except ValidationError as exc:
        return str(exc)
    return None


def _uncreatable(session: Session, rows: list[TagDatasetRow]) -> dict[str, str]:
    """tag -> why, for the file's tags this store lacks and could not create. Why not refuse the file: an
    export holds the tags its store had, some stored before the rule for new names; those this store
    has too import, and only the others are left out. Only names breaking the rule are looked up."""
    problems = {t: why for t in dict.fromkeys(t for row in rows for t, _ in row.tags)
                if (why := _new_name_problem(t)) is not None}
    if not problems:
        return {}
    known = _find_tags(session, list(problems))
    return {t: why for t, why in problems.items() if t not in known}


def _uncreatable_note(path: Path, tag: str, why: str, lines: list[int]) -> str:
    """The skip of a tag left out, said once for every line giving it; the name `quoted`, as every other message
    shows a tag (repr escaped the zero-width joiners they keep as typed)."""
    also = ""
    if len(lines) > 1:
        shown = ", ".join(map(str, lines[1:4])) + (", ..." if len(lines) > 4 else "")
        also = f" (also on line{'s' if len(lines) > 2 else ''} {shown})"
    return (f"{_where(path, lines[0])}: tag {quoted(tag)} left out{also}: this store has no such tag, and it cannot "
            f"be created: {why}; the " + ("lines'" if also else "line's") + " other tags are imported")


def _other_content(row: TagDatasetRow, held: list[tuple[int, str, str]]) -> str:
    shown = "; ".join(f"media {m} ({p}) has sha256 {sha}" for m, p, sha in held[:3]) + ("; ..." if len(held) > 3 else "")
    return (f"{row.media} holds other content here: {shown}, not the line's {row.sha256} "
            "(the file was replaced, or the path names another file on this machine); not tagged")


def _matching(media: StoredMedia, path: Path, row: TagDatasetRow,
              sha_of: dict[int, str]) -> tuple[list[tuple[int, str]], str | None]:
    """(media ids and paths the row names, why some or all named by its path are not: a skip to list).
    By content first: the same GIF ingested in another store has another path and id but the same
    sha256. Else by its path, as a tags CSV's `file` (`_media_matching`), but when the line gives a
    sha256, never media whose known sha256 (`sha_of`: media id -> its sha256) differs: a path names
    whatever file is there now, and tagging it would put the tags on other content."""
    if row.sha256 is not None and (hit := media.by_sha256.get(row.sha256)) is not None:
        return [hit], None
    if row.media is None:
        return [], f"no ingested media has sha256 {row.sha256}"
    if row.sha256 is None:
        matches, same = _media_matching(media, path, row.media)
        return matches, None if matches else _not_ingested(row.media, same, media)
    # the file a path names on this disk is not the content the line names: no "ingested under another name"
    matches, _ = _media_matching(media, path, row.media)
    if not matches:
        hint = _not_ingested(row.media, None, media).removeprefix(f"{row.media} is not ingested")
        return [], f"no ingested media has sha256 {row.sha256}, nor path {row.media}{hint}"
    held = [(m, p, sha_of[m]) for m, p in matches if m in sha_of]
    return [(m, p) for m, p in matches if m not in sha_of], _other_content(row, held) if held else None


def _other_confidence_note(path: Path, count: int) -> str:
    """Why re-importing leaves an imported tag at another confidence than the file's, said once: the store's
    value stands (idempotence: experts voting rewrites an imported tag's confidence, `ORIGINAL_SOURCES` in
    `labeling.auto_tagging`), yet "unchanged" would hide that the two differ."""
    return (f"{path}: {count} tag(s) already imported keep the store's confidence, not the file's (experts voting "
            "or an earlier import set them): set them on the Tags page to change them")


def import_tag_dataset(store: sessionmaker[Session], path: Path, editor: str | None = None,
                       on_progress: Callable[[int, int], None] | None = None) -> ImportSummary:
    """An export's `tags.jsonl` onto this store's ingested media, each tag with its confidence and source
    "import", in one operation (one audit event, undone by `giflens undo`).

    A line names its media by sha256 first, else by path as `import_tags` matches a `file` (not media of
    another known sha256, `_matching`); a line naming none is skipped and listed, and so is a tag this
    store lacks and could not create (`_uncreatable`). As in `import_tags`: a (media, tag) an editor set,
    accepted, rejected or removed is left alone (`_decided_by_editor`, `removed_by_editors`), and so is one
    already imported, at whatever confidence (experts voting may have moved it since: re-importing the
    same file changes nothing), those at another confidence than the file's counted in a note, not as
    unchanged; a pending suggestion is taken over. Lines that give one (media, tag) two confidences (two
    names of one item) are refused, nothing written."""
    path = Path(path)
    who = _editor(editor, path)
    summary = ImportSummary("tags", path.name)
    rows = read_tag_dataset(path)
    with store() as session:
        media = stored_media(session)
        # tags are never deleted: one found here is still there when the operation writes
        uncreatable = _uncreatable(session, rows)
    sha_of = {m: sha for sha, (m, _) in media.by_sha256.items()}
    left_out: dict[str, list[int]] = {}  # uncreatable tag -> the lines giving it
    wanted: dict[tuple[int, str], tuple[float, int]] = {}  # (media, tag) -> (confidence, line)
    steps = len(rows) + TAG_WRITE_STEPS  # on_progress: the lines matched to media, then the write's steps
    report = on_progress or _no_progress
    for done, row in enumerate(rows):
        report(done, steps)
        where = _where(path, row.line)
        matches, why = _matching(media, path, row, sha_of)
        if why is not None:
            summary.skipped.append(f"{where}: {why}")
        if not matches:
            continue
        if not row.tags:
            summary.skipped.append(f"{where}: {row.media or row.sha256} has no tags")
            continue
        if len(matches) > 1:
            summary.notes.append(_several_matches_note(where, str(row.media), matches))
        for tag, _ in row.tags:
            if tag in uncreatable:
                left_out.setdefault(tag, []).append(row.line)
        for m, stored in matches:
            for tag, conf in row.tags:
                if tag in uncreatable:
                    continue
                first = wanted.setdefault((m, tag), (conf, row.line))
                if first[0] != conf:
                    raise ValidationError(f"{where}: tag {quoted(tag)} of media {m} ({stored}) is given confidence "
                                          f"{conf:g} here and {first[0]:g} on line {first[1]}; nothing was imported")
    summary.skipped += [_uncreatable_note(path, t, uncreatable[t], lines) for t, lines in left_out.items()]
    report(len(rows), steps)
    if not wanted:
        report(steps, steps)
        return summary
    with run_operation(store, who, "import_tags") as op:
        ids, current, removed = tag_rows_now(op, wanted)
        report(len(rows) + 1, steps)
        items, imported, other_confidence = [], 0, 0
        for (m, t), (conf, _) in wanted.items():
            existing = current[(m, ids[t])]
            if (existing is not None and _decided_by_editor(existing)) or (m, ids[t]) in removed:
                summary.kept += 1
            elif existing is not None and existing["source"] in IMPORTED_TAG_SOURCES:
                if existing["confidence"] == conf:
                    imported += 1
                else:
                    other_confidence += 1
            else:
                items.append((m, t, conf))
        summary.tags = apply_tags(op, items, SOURCE) if items else 0
        summary.unchanged = imported + len(items) - summary.tags
        if other_confidence:
            summary.notes.append(_other_confidence_note(path, other_confidence))
        op.summary = f"import tags with confidences from {path.name}: {summary.tags} written"
    summary.event_id = op.result.event_id
    report(steps, steps)  # committed
    return summary
