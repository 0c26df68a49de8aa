"""Import reference data: GIPHY's training layout and class list, class attributes, uploader tags.

Parsing is pure (a file in, records out; any problem is a `ValidationError` naming the file
and line, raised before anything is written). Writing goes through the curation operations,
so each import is one transaction with one audit event, like an editor's change (editor
"import:<file name>" unless one is given; labels get source "import", tags source "uploader").

Every import is idempotent: what already matches is left alone, and an import that changes
nothing writes no audit event. Imports never override an editor: a face an editor decided
keeps its decision, a tag an editor set or rejected keeps its state, and a class attribute or
display name an editor set or cleared since it was imported keeps it (`editor_held_columns`).
Headers are matched in any case (`column_key`); columns without a header cell are ignored (a
spreadsheet's empty trailing ones, the row index pandas writes), with a note when they hold values.
"""
from __future__ import annotations

import csv
import io
import os
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Container, Iterable, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from embeddings.cache import sha256_file
from labeling.audit import Operation, _chunks, entity_key, run_operation
from labeling.classes import _exact_name_holder, create_class, lock_class_catalog
from labeling.errors import ValidationError
from labeling.face_labels import apply_decision, lock_classes_before_faces
from labeling.schema import (CONFIRMED_STATUSES, UNDECIDED_STATUSES, AuditEntity, AuditEvent,
                             CelebrityClass, Export, Face, FaceEmbedding, FaceLabel, Media)
from labeling.tags import apply_tags, lock_tag_vocabulary, tag_ids
from labeling.validation import (ATTRIBUTES, birth_year_number, check_class_status, check_editor, class_name_key,
                                 clean_attributes, clean_class_name, clean_display_name, clean_external_id,
                                 clean_tag_name)

if TYPE_CHECKING:
    from embeddings.pipeline import OnRead

# GIPHY labels end in a Freebase id (m.0c6qh) or a Knowledge Graph id (g.11cs12bg7b) in brackets.
GIPHY_LABEL = re.compile(r"^(?P<name>.+?)_\[(?P<id>[^\[\]]+)\]$")
TAG_SEPARATOR = ";"
# the columns of an export's classes.csv an import reads beyond folder and name (see labeling.export.CLASS_COLUMNS)
CLASS_MAP_COLUMNS = ("index", "class_id", "external_id", "display_name", "status", *ATTRIBUTES)
IMPORT_PREFIX = "import_"  # operations named so are imports (import_classes, ...); every other one is an editor's


@dataclass
class ImportSummary:
    """What one import did; `line()` is the one-line report the CLI prints."""

    what: str  # "classes", "attributes", "tags", "raw dataset"
    source: str  # the file or folder imported
    created: int = 0  # classes created
    updated: int = 0  # classes (external id, attributes) or tags changed
    labels: int = 0  # face labels written (raw dataset)
    tags: int = 0  # media tags written
    unchanged: int = 0  # records that already matched
    kept: int = 0  # records left alone, wholly or in part, because an editor decided them (a class may be updated too)
    images: int = 0  # images found (raw dataset)
    skipped: list[str] = field(default_factory=list)  # rows, files or images not imported, each with why
    # said about the file, not a row left out (a column ignored, a value an editor keeps): not counted as skipped
    notes: list[str] = field(default_factory=list)
    event_id: int | None = None  # the audit event, None when nothing changed

    @property
    def changed(self) -> int:
        return self.created + self.updated + self.labels + self.tags

    def line(self) -> str:
        parts = []
        if self.what == "raw dataset":
            parts.append(f"{self.images} images")
        if self.what in ("classes", "attributes", "raw dataset"):
            parts.append(f"{self.created} classes created")
        if self.what == "raw dataset" and self.updated:
            parts.append(f"{self.updated} classes updated")
        if self.what in ("classes", "attributes"):
            parts.append(f"{self.updated} updated")
        if self.what == "raw dataset":
            parts.append(f"{self.labels} labels approved")
        if self.what == "tags":
            parts.append(f"{self.tags} tags written")
        parts.append(f"{self.unchanged} unchanged")
        if self.kept:
            parts.append(f"{self.kept} kept (editor's decision)")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        event = f" (audit event {self.event_id})" if self.event_id is not None else " (nothing changed)"
        return f"import {self.what} from {self.source}: " + ", ".join(parts) + event


# -- parsing (pure) ----------------------------------------------------------------------
class LabelRow(NamedTuple):
    line: int
    label: str  # as written, e.g. Brad_Pitt_[m.0c6qh]; a folder name in the raw dataset
    index: int
    name: str  # Brad Pitt
    external_id: str | None  # m.0c6qh


class AttributeRow(NamedTuple):
    line: int
    name: str
    external_id: str | None
    values: dict[str, Any]  # only the attributes the row knows; empty cells are unknown and absent
    written: str | None = None  # the name with its underscores, where they were read as spaces ("Laura_Bush")


class MappedClass(NamedTuple):
    """A row of an export's classes.csv: the class behind a folder."""

    line: int
    name: str  # exact, where the folder name cannot tell "Brad_Pitt" from "Brad Pitt"
    external_id: str | None
    display_name: str | None  # None: empty cell, or a classes.csv written before the column existed
    attributes: dict[str, Any]  # only the attributes the row knows; empty cells are unknown and absent
    status: str | None = None  # active / proposed / retired; None: empty cell, or an older classes.csv


class TagRow(NamedTuple):
    line: int
    file: str
    tags: list[str]


def parse_giphy_label(label: str) -> tuple[str, str | None]:
    """`Brad_Pitt_[m.0c6qh]` -> ("Brad Pitt", "m.0c6qh"); underscores become spaces; plain labels keep no id."""
    label = label.strip()
    match = GIPHY_LABEL.match(label)
    name, external = (match["name"], match["id"].strip()) if match else (label, None)
    return " ".join(name.replace("_", " ").split()), external or None


def _as_written(label: str) -> str | None:
    """The name part of a label as written, underscores kept ("Laura_Bush" of "Laura_Bush_[m.0x]"), when
    `parse_giphy_label` reads it otherwise and it is a valid class name; else None."""
    label = label.strip()
    match = GIPHY_LABEL.match(label)
    written = " ".join((match["name"] if match else label).split())
    try:
        written = clean_class_name(written)
    except ValidationError:
        return None
    return written if written != parse_giphy_label(label)[0] else None


def _where(path: Path, line: int) -> str:
    return f"{path}: line {line}"


def _expected(required: list[str], aliases: dict[str, str]) -> str:
    """The header a reader should write, with the other spellings accepted (GIPHY's own files say
    `Labels`, the README says `Label`): an error that names only one sends people the wrong way."""
    others = [[next((a for a, c in aliases.items() if c == r), r) for r in required]]
    variants = [",".join(required), *(",".join(v) for v in others if v != required)]
    return " or ".join(variants)


def column_key(text: str) -> str:
    """How a header cell is matched to a known column: case, surrounding whitespace, and spaces or
    underscores inside are ignored ("Gender", " Birth Year " are gender, birth_year). Why: spreadsheets
    capitalise headers, and a column missed for its spelling is data silently not imported."""
    return "_".join(part for part in re.split(r"[\s_]+", text.casefold()) if part)


def _separator_hint(raw_header: list[str]) -> str:
    """" (the file seems to use ';' as separator ...)" when the header reads as one cell holding a ';' or
    a tab: a spreadsheet saved with another separator, which no missing-header hint explains."""
    text = ",".join(raw_header)
    sep = "';'" if ";" in text else "a tab" if "\t" in text else None
    return f" (the file seems to use {sep} as separator; save it as comma-separated CSV)" if sep else ""


def read_csv(path: Path, required: Iterable[str], aliases: dict[str, str] | None = None, known: Iterable[str] = (),
             notes: list[str] | None = None) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(header, rows with the line each starts on); the header must hold the required columns
    (aliases map other spellings onto them). Header cells naming a required, alias or `known` column
    are matched by `column_key` (any case, spaces or underscores) and come back spelled as known;
    other cells come back stripped. Columns without a header cell are dropped: a spreadsheet's trailing
    `,,`, or the row index pandas writes first (`df.to_csv()`: an empty header cell over 0, 1, 2 ...);
    one holding values gets a note in `notes` (when given), since nothing can tell which column they
    were meant for. Blank rows are skipped; a row with more fields than the header is an error."""
    path, aliases, required = Path(path), aliases or {}, list(required)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not text.strip():
        raise ValidationError(f"{path}: line 1: the file is empty; expected a header {_expected(required, aliases)}")
    spelled = {column_key(c): c for c in [*required, *known]}
    spelled.update({column_key(a): c for a, c in aliases.items()})
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, dict[str, str]]] = []
    ignored: dict[int, tuple[int, str]] = {}  # unnamed column -> (line, value) of its first value
    try:
        raw_header = next(reader)
        header = [spelled.get(column_key(h), h.strip()) for h in raw_header]
        unnamed = [i for i, h in enumerate(header) if not h]
        repeated = sorted({h for h in header if h and header.count(h) > 1})
        if repeated:
            raise ValidationError(f"{_where(path, 1)}: column(s) {', '.join(repeated)} appear more than once in the header")
        missing = [c for c in required if c not in header]
        if missing:
            hint = _separator_hint(raw_header) or (" (is the header missing?)" if not set(header) & set(required) else "")
            raise ValidationError(f"{_where(path, 1)}: the header {','.join(raw_header)!r} lacks column(s) "
                                  f"{', '.join(missing)}; expected {_expected(required, aliases)}{hint}")
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                raise ValidationError(f"{_where(path, line)}: {len(row)} fields, but the header has {len(header)} "
                                      "(a comma in a value needs quotes)")
            for i in unnamed:
                if i < len(row) and row[i].strip() and i not in ignored:
                    ignored[i] = (line, row[i].strip())
            rows.append((line, {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header) if h}))
    except csv.Error as exc:
        raise ValidationError(f"{_where(path, reader.line_num)}: not valid CSV ({exc})") from None
    if notes is not None:
        notes += [_unnamed_note(path, i, *first) for i, first in sorted(ignored.items())]
    return [h for h in header if h], rows


def _unnamed_note(path: Path, column: int, line: int, value: str) -> str:
    """The note on a column without a header cell that holds values: they are ignored, said once per column."""
    return (f"{_where(path, 1)}: column {column + 1} has no name in the header; its values (e.g. {value!r} on line "
            f"{line}) are ignored")


def _check_name(path: Path, line: int, name: str, external_id: str | None) -> str:
    try:
        name = clean_class_name(name)
        clean_external_id(external_id)
    except ValidationError as exc:
        raise ValidationError(f"{_where(path, line)}: {exc}") from None
    return name


def _check_one_name_per_id(path: Path, line: int, what: str, external: str | None, key: str,
                           seen: dict[str, tuple[int, str, str]]) -> None:
    """Refuse a row whose external id an earlier row of the file (in `seen`: id -> (line, name key, what
    it says)) gave to another name; record this row's otherwise. Why: an import finds a class by its
    external id first (`_ensure_classes`), so the second name's photos would be approved as the first
    person, or its attributes written onto them, without a word; a file naming two people with one id
    is bad input, and nothing of it may be written."""
    if not external:
        return
    if external in seen and seen[external][1] != key:
        first_line, _, first = seen[external]
        raise ValidationError(f"{_where(path, line)}: {what} has the external id {external} of line {first_line} "
                              f"({first}): one external id names one person; fix the id (or merge the two)")
    seen.setdefault(external, (line, key, what))


def read_labels_csv(path: Path, class_map: dict[str, MappedClass] | None = None,
                    notes: list[str] | None = None, one_name_per_id: bool = True) -> list[LabelRow]:
    """GIPHY's `Label,Index` (or `Labels,Index`): labels unique (also once parsed into class
    names, ignoring case; the exact names `class_map` gives only exactly: an export of an upgraded store
    may hold two classes whose names fold alike, which migration 0010 kept apart), indices unique
    non-negative integers, names valid class names, and no
    external id given to two names (`_check_one_name_per_id`) unless `one_name_per_id` is False (a
    class list, where a second spelling labels nothing: `_ensure_classes` notes where it went).
    `class_map` (an export's classes.csv) gives the exact name of a label, where parsing the
    folder name could not tell "Brad_Pitt" from "Brad Pitt". Notes on the file go to `notes` (`read_csv`)."""
    path = Path(path)
    _, rows = read_csv(path, ["Label", "Index"], aliases={"Labels": "Label"}, notes=notes)
    out: list[LabelRow] = []
    labels: dict[str, int] = {}
    keys: dict[str, int] = {}
    indices: dict[int, int] = {}
    ids: dict[str, tuple[int, str, str]] = {}
    for line, row in rows:
        label, index = row["Label"], row["Index"]
        if not label:
            raise ValidationError(f"{_where(path, line)}: empty label")
        try:
            idx = int(index)
        except ValueError:
            raise ValidationError(f"{_where(path, line)}: index {index!r} is not an integer") from None
        if idx < 0:
            raise ValidationError(f"{_where(path, line)}: index {idx} is negative")
        if label in labels:
            raise ValidationError(f"{_where(path, line)}: label {label!r} repeats line {labels[label]}")
        if idx in indices:
            raise ValidationError(f"{_where(path, line)}: index {idx} repeats line {indices[idx]}")
        if class_map and label in class_map:
            name, external = class_map[label].name, class_map[label].external_id
            key = name
        else:
            name, external = parse_giphy_label(label)
            name = _check_name(path, line, name, external)
            key = class_name_key(name)
        if key in keys:
            raise ValidationError(f"{_where(path, line)}: label {label!r} names the same class ({name!r}) as line {keys[key]}")
        if one_name_per_id:
            _check_one_name_per_id(path, line, f"label {label!r}", external, class_name_key(name), ids)
        labels[label], keys[key], indices[idx] = line, line, line
        out.append(LabelRow(line, label, idx, name, external))
    return out


def read_class_map(path: Path, notes: list[str] | None = None) -> dict[str, MappedClass]:
    """An export's `classes.csv`: folder -> its class (exact name, external id, and the display name,
    status and attributes when the file has those columns; older exports do not, and empty cells are
    unknown). It is preferred over parsing folder names, which cannot tell a space from an underscore.
    Notes on the file go to `notes` (`read_csv`)."""
    path = Path(path)
    header, rows = read_csv(path, ["folder", "name"], known=CLASS_MAP_COLUMNS, notes=notes)
    columns = [c for c in ATTRIBUTES if c in header]
    out: dict[str, MappedClass] = {}
    ids: dict[str, tuple[int, str, str]] = {}
    for line, row in rows:
        if row["folder"] in out:
            raise ValidationError(f"{_where(path, line)}: folder {row['folder']!r} appears twice")
        external = row.get("external_id") or None
        name = _check_name(path, line, row["name"], external)
        _check_one_name_per_id(path, line, f"class {name!r}", external, class_name_key(name), ids)
        if (year := _future_year(row.get("birth_year"))) is not None:
            row = {**row, "birth_year": ""}
            if notes is not None:
                notes.append(f"{_where(path, line)}: birth_year {year} is after this year; read as unknown "
                             "(a birth year cannot be in the future)")
        try:
            display = clean_display_name(row["display_name"]) if row.get("display_name") else None
            values = clean_attributes({c: row[c] for c in columns if row[c]})
            status = _class_status(row.get("status"))
        except ValidationError as exc:
            raise ValidationError(f"{_where(path, line)}: {exc}") from None
        out[row["folder"]] = MappedClass(line, name, external, display, values, status)
    return out


def _future_year(cell: str | None) -> int | None:
    """The year a birth_year cell holds when it is after this one, else None (empty, a past year, or not
    a year at all: `clean_attributes` judges those).

    Why not refuse it, as `clean_attributes` does: a store could hold such a year before that rule
    (up to 2100 was accepted), and its export writes it to classes.csv; refusing the cell refused the
    whole file, so an export could not be imported back. Unknown is what the bias audit makes of it."""
    number = birth_year_number(cell) if cell else None  # as clean_attributes reads it: "3e3" is no year
    if number is None or number <= date.today().year:
        return None
    return number


def _class_status(cell: str | None) -> str | None:
    """A status cell of classes.csv: one of CLASS_STATUSES (any case), None when empty or absent."""
    if not cell:
        return None
    return check_class_status(cell.strip().lower(), as_typed=cell)


def read_attributes_csv(path: Path) -> list[AttributeRow]:
    """`name,...` plus any of gender, ethnicity, birth_year, country, in any case (`Gender`, `Birth Year`;
    other columns, such as lfw-people.csv's `photos`, are ignored: `_read_attributes_csv` notes them).
    Names may use underscores for spaces and may carry a GIPHY id (`import_attributes` takes the name as
    written first, `written`). Empty cells mean unknown: the attribute is not set."""
    return _read_attributes_csv(path)[0]


def _read_attributes_csv(path: Path) -> tuple[list[AttributeRow], list[str]]:
    """`read_attributes_csv`, and a note for each header column that is neither name nor an attribute:
    a misspelt attribute ("gendre") would otherwise import nothing and say nothing."""
    path = Path(path)
    notes: list[str] = []
    header, rows = read_csv(path, ["name"], known=ATTRIBUTES, notes=notes)
    columns = [c for c in ATTRIBUTES if c in header]
    if not columns:
        raise ValidationError(f"{_where(path, 1)}: the header has no attribute column; expected name and any of "
                              f"{', '.join(ATTRIBUTES)}")
    notes[:0] = [f"{_where(path, 1)}: column {c!r} is neither name nor an attribute ({', '.join(ATTRIBUTES)}); "
                 "ignored" for c in header if c != "name" and c not in ATTRIBUTES]
    out: list[AttributeRow] = []
    seen: dict[str, int] = {}
    ids: dict[str, tuple[int, str, str]] = {}
    for line, row in rows:
        name, external = parse_giphy_label(row["name"])
        name = _check_name(path, line, name, external)
        key = class_name_key(name)
        if key in seen:
            raise ValidationError(f"{_where(path, line)}: {name!r} repeats line {seen[key]}")
        _check_one_name_per_id(path, line, repr(row["name"]), external, key, ids)
        seen[key] = line
        try:
            values = clean_attributes({c: row[c] for c in columns if row[c]})
        except ValidationError as exc:
            raise ValidationError(f"{_where(path, line)}: {exc}") from None
        out.append(AttributeRow(line, name, external, values, _as_written(row["name"])))
    return out, notes


def read_tags_csv(path: Path, notes: list[str] | None = None) -> list[TagRow]:
    """`file,uploader_tags` with tags separated by `;` (a row may have none). Notes on the file go to
    `notes` (`read_csv`)."""
    path = Path(path)
    _, rows = read_csv(path, ["file", "uploader_tags"], notes=notes)
    out: list[TagRow] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        name = row["file"]
        if not name:
            raise ValidationError(f"{_where(path, line)}: empty file name")
        if name in seen:
            raise ValidationError(f"{_where(path, line)}: file {name!r} repeats line {seen[name]}")
        seen[name] = line
        try:
            # checked as new tags here (invisible characters too), so a refusal names its file and line
            tags = list(dict.fromkeys(clean_tag_name(t, new=True) for t in row["uploader_tags"].split(TAG_SEPARATOR)
                                      if t.strip()))
        except ValidationError as exc:
            raise ValidationError(f"{_where(path, line)}: {exc}") from None
        out.append(TagRow(line, name, tags))
    return out


# -- writing ------------------------------------------------------------------------------
class ClassSpec(NamedTuple):
    name: str
    external_id: str | None
    where: str  # "file: line n", for notes


def renames(session: Session) -> list[tuple[str, int]]:
    """(name key a class was renamed from, that class), oldest rename first, of renames in force.

    Why: a file written before a rename (an import's source, an earlier export's classes.csv) names
    the class by its old name; this tells that name still means that class. The key is computed from
    the snapshot's name as `class_name_key` computes it now: the audit log is never rewritten, so a
    rename made before a change of the key (migration 0010) holds the older key, which callers looking
    names up by the current one would miss. The stored key serves only a snapshot without a name."""
    out: list[tuple[str, int]] = []
    stmt = select(AuditEvent.before).where(AuditEvent.operation == "rename_class", AuditEvent.undone_by_id.is_(None))
    for before in session.scalars(stmt.order_by(AuditEvent.id)):
        for key, snapshot in (before or {}).items():
            if not key.startswith("class:") or not snapshot:
                continue
            name_key = class_name_key(snapshot["name"]) if snapshot.get("name") else snapshot.get("name_key")
            if name_key:
                out.append((name_key, int(key.split(":", 1)[1])))
    return out


def former_names(session: Session) -> dict[str, int]:
    """Name key a class was renamed from -> that class (the latest rename from it wins); callers keep
    only the names no class holds now.

    Why: an import names classes as the source file does; after an editor renamed one, a re-import
    of the same file must find the renamed class, not create the old name again beside it."""
    return dict(renames(session))


def _ensure_classes(op: Operation, specs: Iterable[ClassSpec], summary: ImportSummary,
                    attributes: dict[str, dict[str, Any]] | None = None,
                    create: bool = True,
                    display_names: dict[str, str | None] | None = None,
                    statuses: dict[str, str | None] | None = None,
                    exact: bool = False,
                    on_progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, int], set[int]]:
    """(name key -> class id, ids created), creating missing classes inside the open operation. With
    `exact` the specs' names are exact (an export's classes.csv) and the ids, attributes, display names and
    statuses are keyed by exact name: two names that fold alike (classes migration 0010 kept apart) each
    find the class of exactly their name, and where this store holds one class for both, the second goes
    to it, noted (`_look_alike_note`).

    A spec finds its class by external id first (GIPHY's Freebase id survives renames), then by
    name ignoring case (the class of exactly that name first, `_exact_first`), then by a name the
    class had before an editor renamed it; only then is a
    class created, with its status from `statuses` (default active). An existing class without an
    external id gets the imported one; a different one is kept and noted. An existing class's
    status is never changed: activating, proposing or retiring a class is an editor's decision.
    on_progress(done, total): the specs gone through, each line of the file one (creating a class is the
    slow part: a 2,306-line class list takes seconds)."""
    specs = list(specs)
    rows = op.session.execute(select(CelebrityClass.id, CelebrityClass.name, CelebrityClass.name_key,
                                     CelebrityClass.external_id).order_by(CelebrityClass.id)).all()
    existing = {row.name_key: row for row in rows}
    by_external: dict[str, list[Any]] = {}  # one class per external id, unless a store holds older duplicates
    for row in rows:
        if row.external_id:
            by_external.setdefault(row.external_id, []).append(row)
    by_id = {row.id: row for row in rows}
    former = former_names(op.session)
    renamed = {k: by_id[c] for k, c in former.items() if k not in existing and c in by_id}
    ids: dict[str, int] = {}
    created: set[int] = set()
    fill: dict[int, str] = {}
    went: dict[int, ClassSpec] = {}  # class id -> the first spec that went to it
    for done, spec in enumerate(specs):
        if on_progress is not None:
            on_progress(done, len(specs))
        key = class_name_key(spec.name)
        k = spec.name if exact else key
        if k in ids:
            continue
        holders = by_external.get(spec.external_id, []) if spec.external_id else []
        row = next((h for h in holders if h.name == spec.name), None) or next(
            (h for h in holders if h.name_key == key), holders[0] if holders else None)
        named = _exact_first(op.session, spec.name, existing.get(key), by_id)
        if len(holders) > 1:
            summary.skipped.append(f"{spec.where}: classes {', '.join(repr(h.name) for h in holders)} share external id "
                                   f"{spec.external_id}; {spec.name!r} went to {row.name!r}: merge them or fix the id")
        elif row is not None and named is not None and named.id != row.id:
            summary.skipped.append(f"{spec.where}: {spec.name!r} went to {row.name!r}, which holds external id "
                                   f"{spec.external_id}, not to the class named {named.name!r}: merge them if they are "
                                   "one person")
        elif row is not None and named is None and row.name_key != key and former.get(key) != row.id:
            # found by its id alone, under another name no rename links to it: say so, or one person's
            # line silently becomes another's (a typo'd id, a second spelling in a class list)
            summary.skipped.append(f"{spec.where}: {spec.name!r} went to {row.name!r}, which holds its external id "
                                   f"{spec.external_id}; no class {spec.name!r} is created: if they are two people, "
                                   "fix the id")
        row = row or named or renamed.get(key)
        if row is None:
            if not create:
                summary.skipped.append(f"{spec.where}: no class named {spec.name!r}")
                continue
            ids[k] = create_class(op, spec.name, (display_names or {}).get(k),
                                  (statuses or {}).get(k) or "active", external_id=spec.external_id,
                                  attributes=(attributes or {}).get(k))
            created.add(ids[k])
            went[ids[k]] = spec
            summary.created += 1
            ref = ClassRef(ids[k], spec.name, key, spec.external_id)
            existing.setdefault(key, ref)  # a later exact name folding alike finds it: no second class of one key
            if spec.external_id:  # a later line with the same id (another spelling) finds this class
                by_external[spec.external_id] = [ref]
            continue
        if (first := went.setdefault(row.id, spec)).name != spec.name and class_name_key(first.name) == key:
            summary.notes.append(_look_alike_note(spec, first, row.name))  # its labels are imported: not skipped
        ids[k] = row.id
        if spec.external_id and row.external_id is None:
            fill[row.id] = spec.external_id
            by_external[spec.external_id] = [row]  # a later line with the same id finds this class
        elif spec.external_id and row.external_id != spec.external_id:
            summary.skipped.append(f"{spec.where}: class {spec.name!r} keeps its external id {row.external_id} "
                                   f"(the file says {spec.external_id})")
    if fill:
        rows = op.load("class", [(c,) for c in fill])
        op.update("class", {(c,): {"external_id": e} for c, e in fill.items()}, rows)
        summary.updated += len(fill)
    if on_progress is not None:
        on_progress(len(specs), len(specs))
    return ids, created


def _look_alike_note(spec: ClassSpec, first: ClassSpec, class_name: str) -> str:
    """Where a file's exact name went when an earlier line's name folds alike and this store holds one class
    for both (`_ensure_classes` with `exact`). Why: the file's store kept two classes (migration 0010 left
    them apart until an editor merges them); here they are one, and the editor should hear it."""
    return (f"{spec.where}: {spec.name!r} went to class {class_name!r}, as {first.name!r} did: the two names read "
            "the same (case, spacing), and this store holds one class for both")


def _exact_first(session: Session, name: str, by_key: Any | None, by_id: dict[int, Any]) -> Any | None:
    """The class named exactly `name` where a migration left it under an older key, its row in `by_id`;
    else `by_key` (the class holding the name's key). `find_class`'s rule, over rows already read.
    Why: where two classes' names fold alike only since migration 0010, the key finds the other one, and
    a file naming a class exactly must reach that class, not put its values or labels on its look-alike."""
    if by_key is not None and by_key.name == name:
        return by_key
    holder = _exact_name_holder(session, name)
    return by_id.get(holder.id, by_key) if holder is not None else by_key


class ClassRef(NamedTuple):
    """A class as _ensure_classes matches lines to it (the columns it reads of celebrity_class)."""

    id: int
    name: str
    name_key: str
    external_id: str | None


def _editor(editor: str | None, source: Path) -> str:
    """The editor given (a blank one refused, before anything is read or ingested), else the file.

    A file name may hold what an editor name may not (a newline, a tab): those become "?", and a
    long name is cut, so an odd file name never stops an import at its audit event."""
    if editor is not None:
        return check_editor(editor)
    name = "".join(c if c.isprintable() else "?" for c in Path(source).name)
    return check_editor(f"import:{name}"[:200])


def import_classes(store: sessionmaker[Session], csv_path: Path, editor: str | None = None,
                   on_progress: Callable[[int, int], None] | None = None) -> ImportSummary:
    """GIPHY's class list (`Labels,Index`, names like `Brad_Pitt_[m.0c6qh]`) -> active classes,
    all in one operation. Classes that exist (same name, ignoring case) are left as they are,
    except that a missing external id is filled in. A line whose external id belongs to another
    line's or class's name goes to that class, with a note (`_ensure_classes`)."""
    csv_path = Path(csv_path)
    summary = ImportSummary("classes", csv_path.name)
    # a second spelling of one id labels nothing here: it goes to the first one's class, with a note
    rows = read_labels_csv(csv_path, notes=summary.notes, one_name_per_id=False)
    with run_operation(store, _editor(editor, csv_path), "import_classes") as op:
        lock_class_catalog(op.session)
        ids, _ = _ensure_classes(op, [ClassSpec(r.name, r.external_id, _where(csv_path, r.line)) for r in rows],
                                 summary, on_progress=on_progress)
        if (note := _index_note(op.session, csv_path, rows, ids)) is not None:
            summary.notes.append(note)
        # each row is created, updated, skipped (`_ensure_classes` reports a row at most once) or unchanged:
        # the four add up to the file's rows, so a skipped row is never counted as unchanged too
        summary.unchanged = max(0, len(rows) - summary.created - summary.updated - len(summary.skipped))
        op.summary = f"import classes from {csv_path.name}: {summary.created} created, {summary.updated} updated"
    summary.event_id = op.result.event_id
    return summary


def import_attributes(store: sessionmaker[Session], csv_path: Path, editor: str | None = None,
                      create_missing: bool = True, on_progress: Callable[[int, int], None] | None = None) -> ImportSummary:
    """Demographic attributes of classes for the bias audit. Empty cells are unknown and leave
    the attribute as it is (never cleared). An attribute an editor set or cleared since it was
    last imported (`editor_held_columns`) is left alone too: its class counts as kept (and as updated
    too when other attributes of it changed), with a note naming what it keeps. People without a class
    get one (an attributes file is a roster of people the catalog should know); with
    `create_missing=False` they are reported instead. Notes on the file's columns are notes, not
    skipped rows."""
    csv_path = Path(csv_path)
    rows, notes = _read_attributes_csv(csv_path)
    summary = ImportSummary("attributes", csv_path.name)
    summary.notes += notes
    with run_operation(store, _editor(editor, csv_path), "import_attributes") as op:
        lock_class_catalog(op.session)
        rows = _written_names_first(op.session, rows)
        values_of = {class_name_key(r.name): r.values for r in rows}
        ids, created = _ensure_classes(op, [ClassSpec(r.name, r.external_id, _where(csv_path, r.line)) for r in rows],
                                       summary, attributes=values_of, create=create_missing, on_progress=on_progress)
        targets = {key: class_id for key, class_id in ids.items() if class_id not in created}
        current = op.load("class", [(c,) for c in targets.values()])
        held = editor_held_columns(op.session, targets.values(), ATTRIBUTES)
        changes: dict[tuple[int], dict[str, Any]] = {}
        kept: set[int] = set()
        line_of = {class_name_key(r.name): r.line for r in rows}
        for key, class_id in targets.items():
            diff = {k: v for k, v in values_of[key].items() if current[(class_id,)][k] != v}
            if mine := {k: v for k, v in diff.items() if k in held.get(class_id, {})}:
                kept.add(class_id)
                summary.notes.append(_kept_note(_where(csv_path, line_of[key]), current[(class_id,)], mine))
            diff = {k: v for k, v in diff.items() if k not in held.get(class_id, {})}
            if diff:
                changes[(class_id,)] = diff
        if changes:
            op.update("class", changes, current)
        updated = {key[0] for key in op.written.get("class", set())} - created
        summary.updated, summary.kept = len(updated), len(kept)  # a class may be both: some values in, some kept
        summary.unchanged = len(targets) - len(updated | kept)
        op.summary = (f"import attributes from {csv_path.name}: {summary.created} classes created, "
                      f"{summary.updated} updated")
    summary.event_id = op.result.event_id
    return summary


def _written_names_first(session: Session, rows: list[AttributeRow]) -> list[AttributeRow]:
    """The rows, each naming its class as written ("Laura_Bush") where this store holds a class of that
    name (any case, or exactly, as a class migration 0010 left with an older key), else with underscores
    read as spaces (GIPHY's style, "Laura Bush"). Why: a class may hold an underscore in its name (an
    editor named it so, or an export's exact names were imported), and reading the file's name otherwise
    created a second class beside it. The classes are read once: a roster has thousands of rows."""
    if not any(r.written for r in rows):
        return rows
    held = session.execute(select(CelebrityClass.name, CelebrityClass.name_key)).all()
    names, keys = {name for name, _ in held}, {key for _, key in held}
    return [r._replace(name=r.written) if r.written and (r.written in names or class_name_key(r.written) in keys)
            else r for r in rows]


def _kept_note(where: str, row: dict[str, Any], wanted: dict[str, Any]) -> str:
    """The note on the attributes an editor holds that a file would change: what the class keeps, and what
    the file says. Why: "1 kept" alone does not tell which value of which class the file did not bring in."""
    def shown(value: Any) -> str:
        return "empty" if value is None else repr(value)

    keeps = ", ".join(f"{c.replace('_', ' ')} {shown(row[c])}" for c in wanted)
    says = ", ".join(shown(v) for v in wanted.values())
    return f"{where}: class {row['name']!r} keeps its {keeps}, as an editor left it (the file says {says})"


def _fill_class_details(op: Operation, targets: dict[str, int], details: dict[str, MappedClass],
                        summary: ImportSummary, source: Path) -> None:
    """Display name and attributes an export's classes.csv gives, onto classes that exist already
    (name key -> class id in `targets`): only empty ones are filled, as `import attributes` leaves
    what a file does not know. A value the class holds is never overwritten (an editor set it, or
    it is newer than the export) and a different one in the file is noted; an empty one an editor
    cleared (`editor_held_columns`) stays empty, its class counted as kept. Re-importing the same
    export fills nothing the second time."""
    rows = op.load("class", [(c,) for c in dict.fromkeys(targets.values())])
    held = editor_held_columns(op.session, dict.fromkeys(targets.values()), ("display_name", *ATTRIBUTES))
    changes: dict[tuple[int], dict[str, Any]] = {}
    kept: set[int] = set()
    for key, class_id in targets.items():
        mapped = details[key]
        row = {**rows[(class_id,)], **changes.get((class_id,), {})}
        for column, value in {"display_name": mapped.display_name, **mapped.attributes}.items():
            if value is None or row[column] == value:
                continue
            if row[column] is None and column in held.get(class_id, {}):
                kept.add(class_id)
            elif row[column] is None:
                changes.setdefault((class_id,), {})[column] = value
            else:
                summary.skipped.append(f"{_where(source, mapped.line)}: class {row['name']!r} keeps its "
                                       f"{column.replace('_', ' ')} {row[column]!r} (the file says {value!r})")
    if changes:
        op.update("class", changes, rows)
    summary.kept += len(kept)  # a class may be both filled and kept, as in `import_attributes`


class StoredMedia(NamedTuple):
    """The ingested media a tags import matches rows against, read once (`stored_media`)."""

    by_name: dict[str, list[tuple[int, str]]]  # file name (NFC) -> (media id, stored path), every one of that name
    by_sha256: dict[str, tuple[int, str]]  # content -> (media id, stored path)
    sizes: set[int | None]  # their sizes in bytes (None: a media item stored without one)
    by_folded: dict[str, list[str]] = {}  # file name casefolded (NFC) -> the stored names (NFC) that fold so


def _nfc(text: str) -> str:
    """A file name as tags rows and stored paths are compared: composed (NFC). Why: macOS and some archivers
    write names decomposed (NFD), a spreadsheet holds them composed; byte for byte, "Beyoncé.jpg" typed in
    a tags file would never match the ingested "Beyoncé.jpg" of a folder copied from a Mac."""
    return unicodedata.normalize("NFC", text)


def stored_media(session: Session) -> StoredMedia:
    """Every ingested (ok) media item by file name and by content, in one query. Why once: a tags file
    covers a whole media folder of which only part may be ingested, and a query (or a file read) per
    row left unmatched made an import of thousands of rows read every other file of the folder."""
    by_name: dict[str, list[tuple[int, str]]] = {}
    by_sha256: dict[str, tuple[int, str]] = {}
    sizes: set[int | None] = set()
    shas: dict[int, str | None] = {}
    for media_id, path, sha, size in session.execute(select(Media.id, Media.path, Media.sha256, Media.size_bytes)
                                                     .where(Media.status == "ok").order_by(Media.id)):
        by_name.setdefault(_nfc(Path(path).name), []).append((media_id, path))
        if sha:
            by_sha256[sha] = (media_id, path)
        sizes.add(size)
        shas[media_id] = sha
    _add_other_names(session, by_name, shas)
    by_folded: dict[str, list[str]] = {}
    for name in by_name:
        by_folded.setdefault(name.casefold(), []).append(name)
    return StoredMedia(by_name, by_sha256, sizes, by_folded)


def _add_other_names(session: Session, by_name: dict[str, list[tuple[int, str]]],
                     shas: dict[int, str | None]) -> None:
    """Add the other paths ok media were ingested from (identical copies, `MediaPath`) to `by_name`, but
    not a name another ok item now has as its own path (`recorded_name_stands`).

    Why: a media item is one row per content and keeps its first path; a byte-identical re-upload under
    another name is recorded beside it, and a tags row naming either file names that item."""
    from labeling.schema import MediaPath

    have = {entry for entries in by_name.values() for entry in entries}
    own = {path for _, path in have}
    for media_id, path in session.execute(select(MediaPath.media_id, MediaPath.path).join(Media, Media.id == MediaPath.media_id)
                                          .where(Media.status == "ok").order_by(MediaPath.media_id, MediaPath.id)):
        if (media_id, path) not in have and recorded_name_stands(path, shas.get(media_id), own):
            have.add((media_id, path))
            by_name.setdefault(_nfc(Path(path).name), []).append((media_id, path))


def recorded_name_stands(path: str, sha256: str | None, own_paths: Container[str]) -> bool:
    """Whether a name recorded for a media item (`MediaPath`, not its own path) still names it: not when it is
    another ok item's own path (`own_paths`), unless the file there, on this machine, holds this item's bytes
    (then that other item is the stale one: its file was overwritten with these bytes).

    Why: an ingest takes a name from the items that had it recorded when other bytes are stored there
    (`labeling.ingest._claim_path`), but a store written before that kept them: the renamed item's old name
    then tagged it too when a new clip took that name, and `giflens dupes` listed the clip as its copy.
    Only such a name is hashed; shared with `giflens dupes` (`other_names`)."""
    if path not in own_paths:
        return True
    try:
        return sha256 is not None and os.path.isfile(path) and sha256_file(Path(path)) == sha256
    except OSError:
        return False


def _one_per_media(found: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The first (media id, path) of each media item: two names of one item (a copy in another folder) that a
    tags row matches are one media item to tag, not two."""
    first: dict[int, tuple[int, str]] = {}
    for media_id, path in found:
        first.setdefault(media_id, (media_id, path))
    return list(first.values())


def path_ends_with(stored: str, wanted: str | tuple[str, ...]) -> bool:
    """Whether the stored path ends with `wanted`'s components (`clips_a/x.jpg` matches /m/clips_a/x.jpg, not
    /m/clips_b/x.jpg; an absolute one only itself). Why: a tags file naming a folder means that file, and
    matching by base name alone would put its tags on every file of that name."""
    want = Path(wanted).parts if isinstance(wanted, str) else wanted
    return len(want) > 0 and tuple(map(_nfc, Path(stored).parts[-len(want):])) == tuple(map(_nfc, want))


def tags_file_parts(wanted: str) -> tuple[str, ...]:
    """A tags row's `file` as path components: Windows separators (`clips\\x.gif`) read as folders, `.`
    dropped, `..` kept (an absolute path starts with "/")."""
    return PurePosixPath(wanted.replace("\\", "/")).parts


def _file_named(csv_path: Path, parts: tuple[str, ...]) -> Path | None:
    """The existing file a tags row names (absolute, or relative to the tags file's folder), links
    followed; None when there is none."""
    path = Path(*parts) if parts[0] == "/" else csv_path.parent.joinpath(*parts)
    try:
        return Path(os.path.realpath(path)) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _same_content(media: StoredMedia, path: Path) -> tuple[int, str] | None:
    """(media id, stored path) of ingested media with the content of `path`, else None. Only a file of a
    size some media item has is read: most files of a folder are not ingested, and hashing each is
    reading the whole folder."""
    try:
        if path.stat().st_size not in media.sizes and None not in media.sizes:
            return None
        digest = sha256_file(path)
    except OSError:
        return None
    return media.by_sha256.get(digest)


def _media_matching(media: StoredMedia, csv_path: Path, wanted: str) -> tuple[list[tuple[int, str]], tuple[int, str] | None]:
    """(the media a tags row's `file` names, the media holding its content under another name when it
    names none). A name alone: every media item of that name; with folders: those whose path ends so;
    an absolute path: that path. Else the file it names on disk (relative to the tags file's folder,
    `../media/x.gif`, or absolute through a linked folder), resolved: a media item stored as that very
    file (links followed), or holding its content and resolving to it, is the one; failing that, a path
    with `..` matches by the components after the last `..`. Why resolve: a path out of the tags file's
    folder or through a link is never a suffix of the stored path, yet names a stored file."""
    parts = tags_file_parts(wanted)
    if not parts or parts[-1] in ("/", ".."):
        return [], None
    plain = ".." not in parts
    if plain:
        named = media.by_name.get(_nfc(parts[-1]), [])
        found = named if len(parts) == 1 else [m for m in named if path_ends_with(m[1], parts)]
        if found:
            return _one_per_media(found), None
    file = _file_named(csv_path, parts)
    if file is not None:
        candidates = dict.fromkeys(media.by_name.get(_nfc(file.name), []) + media.by_name.get(_nfc(parts[-1]), []))
        found = [m for m in candidates if _resolved(Path(m[1])) == file]
        if found:
            return _one_per_media(found), None
    if not plain:
        tail = parts[len(parts) - parts[::-1].index(".."):]
        found = [m for m in media.by_name.get(_nfc(parts[-1]), []) if path_ends_with(m[1], tail)]
        if found:
            return _one_per_media(found), None
    same = _same_content(media, file) if file is not None else None
    if same is not None and _resolved(Path(same[1])) == file:
        return [same], None
    return [], same


def removed_by_editors(session: Session, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """(media id, tag id) -> who removed it, for tags whose latest write still in force is an editor
    removing them.

    Why: a removed tag leaves no row behind, so without the audit log a re-import of the uploader
    file would put back what an editor took off. Only operations in force count: an undone one and
    the undo that reversed it cancel out. So an undo that deleted the row (of the import itself,
    say) is not a removal: importing again after undoing an import imports again; and an editor who
    removed a tag, added it back and undid that add has still removed it."""
    by_key = {entity_key("media_tag", k): k for k in keys}
    last: dict[str, tuple[str, str]] = {}  # key -> (operation, editor) of its last write; never the JSON snapshots
    for chunk in _chunks(list(by_key)):
        stmt = (select(AuditEntity.key, AuditEvent.operation, AuditEvent.editor)
                .join(AuditEvent, AuditEvent.id == AuditEntity.event_id)
                .where(AuditEntity.key.in_(chunk), AuditEntity.written.is_(True),
                       AuditEvent.undone_by_id.is_(None), AuditEvent.undo_of_id.is_(None))
                .order_by(AuditEvent.id))
        for key, operation, editor in session.execute(stmt):
            last[key] = (operation, editor)
    # remove_tags only ever deletes the rows it writes: its last write of a key is that key's removal
    return {by_key[key]: editor for key, (operation, editor) in last.items() if operation == "remove_tags"}


def editor_held_columns(session: Session, class_ids: Iterable[int], columns: Iterable[str]) -> dict[int, dict[str, str]]:
    """class id -> {column: editor} for those of `columns` whose latest write still in force is an
    editor's operation (any but an import's, `IMPORT_PREFIX`), setting or clearing it.

    Why: an import must not undo an editor. A cleared attribute looks like one nobody knew, so only
    the audit log tells "unknown" from "an editor removed it"; and a value an editor set since the
    last import is theirs even where the file says otherwise. Like `removed_by_editors`, an undone
    operation and the undo that reversed it cancel out. A class an editor created counts only the
    values given (a create writes every column; an empty one there is unknown, not a decision)."""
    wanted = set(columns)
    by_key = {entity_key("class", (c,)): c for c in class_ids}
    writes: dict[str, list[tuple[int, str, str]]] = {}  # key -> (event, operation, editor), oldest first
    for chunk in _chunks(list(by_key)):
        stmt = (select(AuditEntity.key, AuditEvent.id, AuditEvent.operation, AuditEvent.editor)
                .join(AuditEvent, AuditEvent.id == AuditEntity.event_id)
                .where(AuditEntity.key.in_(chunk), AuditEntity.written.is_(True),
                       AuditEvent.undone_by_id.is_(None), AuditEvent.undo_of_id.is_(None))
                .order_by(AuditEvent.id))
        for key, event_id, operation, editor in session.execute(stmt):
            writes.setdefault(key, []).append((event_id, operation, editor))
    # only classes an editor wrote can hold anything: the snapshots (JSON) of their events alone are read
    writes = {k: w for k, w in writes.items() if any(not op.startswith(IMPORT_PREFIX) for _, op, _ in w)}
    events = sorted({e for w in writes.values() for e, _, _ in w})
    snapshots: dict[int, tuple[dict, dict]] = {}
    for chunk in _chunks(events):
        for event_id, before, after in session.execute(
                select(AuditEvent.id, AuditEvent.before, AuditEvent.after).where(AuditEvent.id.in_(chunk))):
            snapshots[event_id] = (before or {}, after or {})
    out: dict[int, dict[str, str]] = {}
    for key, history in writes.items():
        held: dict[str, str] = {}
        for event_id, operation, editor in history:
            before, after = snapshots[event_id]
            written = after.get(key) or {}
            created = before.get(key) is None
            for column in wanted & set(written):
                if created and written[column] is None:
                    continue
                if operation.startswith(IMPORT_PREFIX):
                    held.pop(column, None)
                else:
                    held[column] = editor
        if held:
            out[by_key[key]] = held
    return out


# The steps a tags import counts after its lines (`import_tags`, `import_tag_dataset`): the store's rows of the wanted
# tags read (`tag_rows_now`), then the tags written and committed. Why: the write takes most of the time (3 of 3.5 s
# for 5,000 lines), and a count of the lines alone said the step was done while it ran.
TAG_WRITE_STEPS = 2
IMPORTED_TAG_SOURCES = ("uploader", "import")  # the tags a media item came with: a tags import's own rows


def _decided_by_editor(row: dict[str, Any]) -> bool:
    """Whether an existing media tag holds an editor's decision a tags import must leave alone: a tag an
    editor set (source "editor"), rejected, accepted (a model or experts-voting row made active), or an
    imported one marked pending again.

    Why the row's source and status, not its `editor` column: every write fills that column, an import's
    and experts voting's too. Experts voting only ever writes suggestions (`_store_suggestions`), so one
    of theirs that is active was accepted by an editor (`set_tag_status`); taking it over as an uploader
    tag put the import's name on the editor's decision, and their undo of the accept was refused."""
    if row["source"] == "editor" or row["status"] == "rejected":
        return True
    if row["source"] in IMPORTED_TAG_SOURCES:
        return row["status"] != "active"
    return row["status"] == "active"


def tag_rows_now(op: Operation, wanted: Iterable[tuple[int, str]]) -> tuple[dict[str, int], dict[tuple[int, int], Any],
                                                                          dict[tuple[int, int], str]]:
    """(tag ids, current media_tag rows, the missing ones an editor removed) of the (media, tag) pairs a tags
    import wants, read under the tag-vocabulary lock taken first: a second import of the file waits, then
    finds the rows the first wrote (`lock_tag_vocabulary`). Shared by the CSV and the JSONL import."""
    lock_tag_vocabulary(op.session)
    wanted = list(wanted)
    ids = tag_ids(op.session, [t for _, t in wanted])
    current = op.load("media_tag", [(m, ids[t]) for m, t in wanted])
    removed = removed_by_editors(op.session, [k for k, row in current.items() if row is None])
    return ids, current, removed


def import_tags(store: sessionmaker[Session], csv_path: Path, editor: str | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> ImportSummary:
    """Uploader tags (`file,uploader_tags`, `;`-separated) onto ingested media matched by file
    name (every ingested media item of that name, or with a copy of that name ingested, `MediaPath`,
    with a note when there are several; a `file` with
    folders, `clips/x.gif` or `clips\\x.gif`, only media whose path ends so; one out of the tags file's
    folder, `../media/x.gif`, or absolute through a link, the media stored as the file it names:
    `_media_matching`), with confidence 1.0 and source "uploader". Stored media are read once, and a
    file is read only to tell a copy stored under another name (`_same_content`).
    A (media, tag) an editor set, accepted, rejected or removed is left alone (`_decided_by_editor`), and so is
    one already imported: experts voting may have lowered its confidence since, and re-importing the same file
    changes nothing. A pending suggestion is taken over: the uploader says the media has that tag."""
    csv_path = Path(csv_path)
    who = _editor(editor, csv_path)
    summary = ImportSummary("tags", csv_path.name)
    rows = read_tags_csv(csv_path, notes=summary.notes)
    wanted: list[tuple[int, str]] = []
    with store() as session:
        media = stored_media(session)
    steps = len(rows) + TAG_WRITE_STEPS  # on_progress: the lines matched to media, then the write's steps
    report = on_progress or _no_progress
    for done, row in enumerate(rows):
        report(done, steps)
        where, (matches, same) = _where(csv_path, row.line), _media_matching(media, csv_path, row.file)
        if not matches:
            summary.skipped.append(f"{where}: {_not_ingested(row.file, same, media)}")
        elif not row.tags:
            summary.skipped.append(f"{where}: {row.file} has no tags")
        else:
            if len(matches) > 1:
                summary.notes.append(_several_matches_note(where, row.file, matches))
            wanted += [(m, t) for m, _ in matches for t in row.tags]
    report(len(rows), steps)
    if not wanted:
        report(steps, steps)
        return summary
    with run_operation(store, who, "import_tags") as op:
        ids, current, removed = tag_rows_now(op, wanted)
        report(len(rows) + 1, steps)
        items, imported = [], 0
        for m, t in wanted:
            row = current[(m, ids[t])]
            if (row is not None and _decided_by_editor(row)) or (m, ids[t]) in removed:
                summary.kept += 1
            elif row is not None and row["source"] in IMPORTED_TAG_SOURCES:
                imported += 1
            else:
                items.append((m, t, 1.0))
        summary.tags = apply_tags(op, items, "uploader") if items else 0
        summary.unchanged = imported + len(items) - summary.tags
        op.summary = f"import uploader tags from {csv_path.name}: {summary.tags} written"
    summary.event_id = op.result.event_id
    report(steps, steps)  # committed
    return summary


def _no_progress(done: int, total: int) -> None:
    """on_progress when none is given."""


def _several_matches_note(where: str, wanted: str, matches: list[tuple[int, str]]) -> str:
    """The note for a tags row whose file (`wanted`) names several ingested media, all of which it tags. Why
    one for both imports: the tags CSV's `file` and a tag dataset's `media` match alike (`_media_matching`),
    and the way to tag one only, a folder in the name, is the same for both."""
    shown = ", ".join(p for _, p in matches[:3]) + (", ..." if len(matches) > 3 else "")
    return (f"{where}: {wanted} matches {len(matches)} ingested media ({shown}); tagged all of them (give the "
            f"file's folder too, e.g. {Path(*Path(matches[0][1]).parts[-2:]).as_posix()}, to tag one)")


def _not_ingested(wanted: str, same: tuple[int, str] | None, media: StoredMedia) -> str:
    """Why a tags row matched no media: not ingested, only under other folders, or ingested under another
    name (`same`, the media holding the content of the file it names, a copy never ingested itself: ingest
    stores one media item per content, so "not ingested" would send the editor to ingest it again), or
    under a name that differs only in case (named: "al_gore_0002.jpg" typed for the ingested "Al_Gore_0002.jpg"
    is a typo to fix, not a file to ingest again)."""
    if same is not None:
        return (f"{wanted} is ingested under another name: media {same[0]}, {same[1]}, has the same content "
                "(a media item is stored once per content, and this file itself was never ingested); not tagged")
    name = _nfc((tags_file_parts(wanted) or (wanted,))[-1])
    others = media.by_name.get(name, [])
    if others:
        shown = ", ".join(p for _, p in others[:3]) + (", ..." if len(others) > 3 else "")
        return f"{wanted} is not ingested; no media in that folder, but {len(others)} of that name elsewhere ({shown})"
    alike = sorted(media.by_folded.get(name.casefold(), []))
    if alike:
        shown = " or ".join(alike[:3]) + (" or ..." if len(alike) > 3 else "")
        return f"{wanted} is not ingested; did you mean {shown}? (file names are matched in their exact case)"
    return f"{wanted} is not ingested"


def _largest_faces(session: Session, media_ids: list[int]) -> dict[int, int]:
    """media id -> its largest face (by box area), for media that have faces."""
    best: dict[int, tuple[float, int]] = {}
    for chunk in _chunks(media_ids):
        for face_id, media_id, x1, y1, x2, y2 in session.execute(
                select(Face.id, Face.media_id, Face.x1, Face.y1, Face.x2, Face.y2).where(Face.media_id.in_(chunk))):
            area = (x2 - x1) * (y2 - y1)
            if media_id not in best or area > best[media_id][0]:
                best[media_id] = (area, face_id)
    return {m: f for m, (_, f) in best.items()}


def is_still(kind: str, total_frames: int | None) -> bool:
    """Whether a stored media item is one picture: an image, or a GIF, WebP or video of a single frame. Why the
    frame count too: a one-frame GIF is stored with kind "gif" (a one-frame WebP as "image"), and the same
    photo saved as GIF had its two faces read as two people of a clip, left unlabeled, where the JPEG or
    WebP gave the class to its largest face."""
    return kind == "image" or total_frames == 1


class FacesToLabel(NamedTuple):
    """What a raw-dataset import labels of its media (`faces_to_label`)."""

    faces: dict[int, list[int]]  # media id -> the faces it labels
    people: dict[int, int]  # media id -> its face tracks, of media left unlabeled for having several


def faces_to_label(session: Session, media_ids: list[int], face_model: str) -> FacesToLabel:
    """The faces a raw-dataset import labels with the class a file is filed under. A still: its largest
    face (`_largest_faces`; a photo of a person may show others beside them, smaller). An animation or
    video: every face of its one face track of `face_model` (one person throughout: the clip is theirs,
    frame by frame); with several tracks none, for the folder does not say which person it means, and
    the largest box of one frame says nothing about it (a face without a track counts as one of its own).
    Why not one face per clip: the others of the same person stayed undecided, and a two-person GIF
    gave the class to whoever had the biggest box, unsaid. A still is any media item of one frame
    (`is_still`), a GIF of one frame too."""
    still: dict[int, bool] = {}  # media id -> whether it is a still; media not in the store are left out
    for chunk in _chunks(media_ids):
        for media_id, kind, total_frames in session.execute(
                select(Media.id, Media.kind, Media.total_frames).where(Media.id.in_(chunk))):
            still[media_id] = is_still(kind, total_frames)
    faces = {m: [f] for m, f in _largest_faces(session, [m for m in media_ids if still.get(m)]).items()}
    tracks: dict[int, dict[Any, list[int]]] = {}  # clip -> track -> faces (a still's faces are read once, above)
    for chunk in _chunks([m for m in media_ids if still.get(m) is False]):
        for face_id, media_id, track_id in session.execute(
                select(Face.id, Face.media_id, FaceEmbedding.track_id)
                .outerjoin(FaceEmbedding, (FaceEmbedding.face_id == Face.id) & (FaceEmbedding.model_id == face_model))
                .where(Face.media_id.in_(chunk)).order_by(Face.id)):
            tracks.setdefault(media_id, {}).setdefault(("face", face_id) if track_id is None else track_id,
                                                       []).append(face_id)
    people: dict[int, int] = {}
    for media_id, groups in tracks.items():
        if len(groups) == 1:
            faces[media_id] = next(iter(groups.values()))
        else:
            people[media_id] = len(groups)
    return FacesToLabel(faces, people)


def _active_target(classes: dict[int, Any], class_id: int) -> int | None:
    """Follow merges from a retired class to the active one it went into (None: retired for good)."""
    seen = set()
    while class_id is not None and classes[class_id].status == "retired" and class_id not in seen:
        seen.add(class_id)
        class_id = classes[class_id].merged_into_id
    return class_id if class_id is not None and classes[class_id].status != "retired" else None


def scan_raw_dataset(folder: Path) -> tuple[list[LabelRow], dict[str, tuple[str, str | None]], dict[str, list[Path]], list[str]]:
    """(labels, label -> (class name, external id), label -> image files, notes) of a GIPHY
    training folder; raises ValidationError when the layout or labels.csv is wrong."""
    return _scan_raw_dataset(folder)[:4]


def _scan_raw_dataset(folder: Path, file_notes: list[str] | None = None) -> tuple[
        list[LabelRow], dict[str, tuple[str, str | None]], dict[str, list[Path]], list[str], dict[str, MappedClass]]:
    """`scan_raw_dataset`, and the export's classes.csv (folder -> class; empty without the file); notes on
    the CSV files themselves (a column ignored) go to `file_notes`."""
    folder = Path(folder)
    labels_csv, raw = folder / "labels.csv", folder / "raw_dataset"
    if not labels_csv.is_file() or not raw.is_dir():
        raise ValidationError(f"{folder}: expected labels.csv and a raw_dataset/ folder (GIPHY's training layout)")
    class_map = read_class_map(folder / "classes.csv", file_notes) if (folder / "classes.csv").is_file() else {}
    labels = read_labels_csv(labels_csv, class_map, file_notes)
    names = {r.label: (r.name, r.external_id) for r in labels}
    notes: list[str] = []
    images: dict[str, list[Path]] = {}
    root = Path(os.path.normpath(raw))
    folders = [p for p in sorted(raw.iterdir()) if p.is_dir()]
    # NFC name -> folder: macOS and some archivers write names decomposed (NFD), labels.csv holds them composed
    by_form: dict[str, Path] = {}
    for p in folders:
        by_form.setdefault(unicodedata.normalize("NFC", p.name), p)
    used: set[str] = set()
    for r in labels:
        sub = raw / r.label
        # labels are validated names, but never leave raw_dataset/. Lexically, not resolved: a class
        # folder the editor symlinked in (photos kept elsewhere) is theirs to give.
        if Path(os.path.normpath(sub)).parent != root:
            raise ValidationError(f"{_where(labels_csv, r.line)}: label {r.label!r} is not a folder inside raw_dataset/")
        if not sub.is_dir():  # the exact name first; else the folder of that name in another Unicode form
            sub = by_form.get(unicodedata.normalize("NFC", r.label), sub)
        if not sub.is_dir():
            # the class is still created: labels.csv is the class list (GIPHY's lists classes with no photos yet)
            notes.append(f"{_where(labels_csv, r.line)}: no folder raw_dataset/{r.label}/ (class kept, no images)")
            continue
        used.add(sub.name)
        images[r.label], left_out = _class_folder_files(sub)
        notes += [f"raw_dataset/{sub.name}/{why}" for why in left_out]
        if not images[r.label]:
            notes.append(f"raw_dataset/{sub.name}/: no images (class kept)")
    forms = {unicodedata.normalize("NFC", r.label) for r in labels}
    twin = "a label's name in another Unicode form, beside the folder of that label; not imported"
    notes += [f"raw_dataset/{p.name}/: {twin if unicodedata.normalize('NFC', p.name) in forms else 'not in labels.csv'}"
              for p in folders if p.name not in used]
    return labels, names, images, notes, class_map


def _class_folder_files(folder: Path) -> tuple[list[Path], list[str]]:
    """(the files of a class folder an import ingests, what it leaves out with why, relative to the folder).
    Files of every type ingest reads (`embeddings.media.MEDIA_EXTENSIONS`: stills, GIF, WebP, video; the
    content is checked when read) directly in the folder are taken; anything else that is not hidden, and
    any sub-folder, is named: an image left out without a word is a label silently lost."""
    from embeddings.media import MEDIA_EXTENSIONS

    taken: list[Path] = []
    left_out: list[str] = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            left_out.append(f"{p.name}/: a folder inside a class folder; its files are not imported (only files "
                            "directly in the class folder are)")
        elif p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS:
            taken.append(p)
        elif not p.exists():
            left_out.append(f"{p.name}: a link to nothing; not imported")
        else:
            left_out.append(f"{p.name}: not a file type ingest reads ({', '.join(sorted(MEDIA_EXTENSIONS))}); "
                            "not imported")
    return taken, left_out


def _resolved(path: Path) -> Path:
    """The file a path names, links followed (itself when it cannot be resolved: a loop, gone)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


def _index_note(session: Session, path: Path, rows: list[LabelRow], ids: dict[str, int],
                exact: bool = False) -> str | None:
    """A note when the file's label indices are not those an export would give its classes, None when they are.
    Why: indices are checked, then dropped: an export that follows no earlier one numbers the classes it holds
    0..n-1 in the order they were created (`labeling.export.class_indices`), so classes of this store that
    hold confirmed labels already come first, whatever the file's rows say; a retraining job reusing a model
    trained on the file's numbering must hear that an export will not follow it. A row of a retired class
    counts as the class it was merged into (where its labels go); one retired for good is never exported.
    `ids` is keyed as `_ensure_classes` keyed it (`exact`: by exact name)."""
    expected = _fresh_export_indices(session, ids.values())
    moved = [(r, index) for r in rows
             if (index := expected.get(ids.get(r.name if exact else class_name_key(r.name), -1))) is not None
             and index != r.index]
    if not moved:
        return None
    first, index = moved[0]
    return (f"{_where(path, first.line)}: label indices are not kept: an export numbers the classes it holds 0..n-1 "
            f"in the order they were created (this store's labeled classes first) unless it follows an earlier "
            f"export, and a fresh one would give {len(moved)} of the {len(rows)} here another index than the file "
            f"(e.g. {first.label!r}: {first.index} in the file, {index} in an export)")


def _fresh_export_indices(session: Session, class_ids: Iterable[int]) -> dict[int, int]:
    """class id (of `class_ids`, retired ones followed to the class they were merged into) -> the label
    index an export following no earlier one would give it once each of them holds confirmed faces:
    `class_indices` over those classes and every active or proposed class holding confirmed labels now.
    Keyed by the given id, so a caller looks up the id it has."""
    from labeling.export import class_indices  # labeling.export imports this module

    classes = {row.id: row for row in session.execute(select(CelebrityClass.id, CelebrityClass.status,
                                                             CelebrityClass.merged_into_id))}
    labeled = set(session.scalars(select(FaceLabel.class_id).distinct().where(FaceLabel.status.in_(CONFIRMED_STATUSES),
                                                                              FaceLabel.class_id.is_not(None))))
    targets = {c: _active_target(classes, c) for c in set(class_ids) if c in classes}
    held = {c for c in labeled if c in classes and classes[c].status != "retired"} | {t for t in targets.values() if t}
    index = class_indices(held)
    return {c: index[t] for c, t in targets.items() if t is not None}


def own_export(session: Session, folder: Path) -> str | None:
    """Why `folder` is an export of this store, None when it is not: its manifest.json is one this store
    recorded (`Export.manifest`'s manifest_sha256), or, the manifest changed, its faces are confirmed
    here already (`_confirmed_here`).

    Why: an export's face crops are new images to an ingest; imported back into their own store they
    would label every exported face a second time, and the next export would train on each twice."""
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            digest = sha256_file(manifest)
        except OSError:
            digest = None
        for export_id, out_dir, record in session.execute(select(Export.id, Export.out_dir, Export.manifest)
                                                          .order_by(Export.id)):
            if digest is not None and isinstance(record, dict) and record.get("manifest_sha256") == digest:
                return f"export {export_id}, written to {out_dir}"
    return _confirmed_here(session, folder)


def _confirmed_here(session: Session, folder: Path) -> str | None:
    """Why importing `folder` would only label faces twice, None when it would not: every row of its
    split.csv is of media this store holds (by sha256) with a face confirmed here in the class its
    classes.csv names (by name, or a name the class had before a rename; merges followed).

    Why not class ids and media alone: every store seeded from the same files (`make run`) holds
    those too, and may import another store's export; only labels already here make it a duplicate.
    The file's class ids only tie split.csv to classes.csv: they never reach the database, whatever
    their size."""
    try:
        _, class_rows = read_csv(folder / "classes.csv", ["class_id", "name"])
        _, split_rows = read_csv(folder / "split.csv", ["class_id", "sha256"])
    except ValidationError:  # no such files, or not an export's: not this store's export
        return None
    name_of = {row["class_id"]: row["name"] for _, row in class_rows}
    wanted = {(row["sha256"], name_of.get(row["class_id"])) for _, row in split_rows}
    if not wanted or any(not sha or name is None for sha, name in wanted):
        return None
    classes = {row.id: row for row in session.execute(select(CelebrityClass.id, CelebrityClass.name,
                                                             CelebrityClass.name_key, CelebrityClass.status,
                                                             CelebrityClass.merged_into_id))}
    by_key = {row.name_key: row for row in classes.values()}
    former = former_names(session)

    def class_of(name: str) -> int | None:  # as `_ensure_classes` finds it: exact name first, then a former one
        key = class_name_key(name)
        row = _exact_first(session, name, by_key.get(key), classes)
        return row.id if row is not None else former.get(key)

    target = {name: _active_target(classes, c) for name in {n for _, n in wanted}
              if (c := class_of(name)) is not None and c in classes}
    if any(target.get(name) is None for _, name in wanted):
        return None
    confirmed: set[tuple[str, int]] = set()
    for chunk in _chunks(list({sha for sha, _ in wanted})):
        confirmed.update((sha, class_id) for sha, class_id in session.execute(
            select(Media.sha256, FaceLabel.class_id).join(Face, Face.media_id == Media.id)
            .join(FaceLabel, FaceLabel.face_id == Face.id)
            .where(Media.sha256.in_(chunk), FaceLabel.status.in_(CONFIRMED_STATUSES))))
    if any((sha, target[name]) not in confirmed for sha, name in wanted):
        return None
    return "every face in its split.csv is of media here, confirmed here already in the class its classes.csv names"


def own_crops(session: Session, files: Iterable[Path], data_dir: Path) -> dict[Path, int]:
    """file -> face id, for the files that are byte for byte the face crop (under `data_dir`) of a face
    confirmed here: what an export of this store copied into its raw_dataset/.

    Why: `own_export` knows an export by its manifest.json or split.csv; one copied without them (labels.csv
    and raw_dataset/ alone, GIPHY's own layout) is still this store's faces, and imported back each would
    be a new image labeled a second time. Only sizes are compared first: a crop is read only when a file
    of its size is imported, and a file only when a crop of its size exists."""
    sizes: dict[Path, int] = {}
    for path in files:
        try:
            sizes[path] = path.stat().st_size
        except OSError:
            continue
    if not sizes:
        return {}
    wanted = set(sizes.values())
    crop_sha: dict[str, int] = {}
    crop_sizes: set[int] = set()
    for face_id, crop_path in session.execute(
            select(FaceLabel.face_id, FaceEmbedding.crop_path)
            .join(FaceEmbedding, FaceEmbedding.face_id == FaceLabel.face_id)
            .where(FaceLabel.status.in_(CONFIRMED_STATUSES), FaceEmbedding.crop_path.is_not(None))
            .order_by(FaceLabel.face_id)):
        crop = Path(data_dir) / crop_path
        try:
            size = crop.stat().st_size
            if size in wanted:
                crop_sha.setdefault(sha256_file(crop), face_id)
                crop_sizes.add(size)
        except OSError:
            continue
    if not crop_sha:
        return {}
    found: dict[Path, int] = {}
    for path, size in sizes.items():
        if size not in crop_sizes:
            continue
        try:
            face_id = crop_sha.get(sha256_file(path))
        except OSError:
            continue
        if face_id is not None:
            found[path] = face_id
    return found


# Pixels of black border a frame gets when MTCNN finds no face in it, for one more try (`BorderRetryDetector`).
# Why: an export's crops are tight aligned face chips (150 px, the face filling it) and MTCNN misses some (LFW's
# Tony_Blair_0004 exported and imported again); with a border it finds them, as
# tests/test_alignment_and_detection.py re-detects every aligned crop (REDETECT_BORDER there).
REDETECT_BORDER = 40
RETRY_PARAM = "retry_border"  # the import's faces namespace of stills: the usual parameters plus this (`import_pipeline`)


class BorderRetryDetector:
    """A face detector (MTCNN) that looks once more, on the frame padded by `border` black pixels, at each
    frame it found no face in, and gives the faces found so in the frame's own coordinates (box and
    landmarks moved back by the border; the face model aligns on the unpadded frame, out-of-frame pixels
    black as in the padded one). Used by `import_raw_dataset` only, on stills (`import_pipeline`: a photo, or a
    GIF or WebP of one frame): what it reads are stills of one face each, so a still without one is mostly a
    tight crop, and a second look costs little."""

    def __init__(self, inner: Any, border: int = REDETECT_BORDER) -> None:
        self.inner, self.border = inner, int(border)

    def __getattr__(self, name: str) -> Any:  # model_id, params ... as the detector it wraps
        return getattr(self.inner, name)

    def detect(self, frames: list[Any]) -> list[list[Any]]:
        import numpy as np

        from models.face_detector import Detection, as_rgb

        found = self.inner.detect(frames)
        empty = [i for i, dets in enumerate(found) if not dets]
        if not empty:
            return found
        b = self.border
        padded = [np.pad(as_rgb(frames[i]), ((b, b), (b, b), (0, 0))) for i in empty]
        for i, dets in zip(empty, self.inner.detect(padded)):
            found[i] = [Detection(np.asarray(d.box, np.float32) - b, d.probability,
                                  np.asarray(d.landmarks, np.float32) - b) for d in dets]
        return found


def import_pipeline(settings: Any, **models: Any) -> Any:
    """The ingest pipeline of `import_raw_dataset`: the usual one, but a still image's faces are detected by a
    `BorderRetryDetector` and cached in a namespace of their own: the faces namespace's parameters plus
    `retry_border` (`ImportPipeline._faces_namespace`), which only an import reads or writes. A GIF or WebP of
    a single frame is a still too (`is_one_frame`, its frame count read from its blocks before the cache is
    asked: a user's raw_dataset may hold photos saved so). Animated GIFs and videos are detected and cached
    as any ingest does them (their faceless frames are mostly scenes without a person, not tight crops: a
    second MTCNN pass there only doubled the cost).
    Why a namespace of its own: cache entries are written once and never change, which ingest's warm shortcut
    (`is_stored`: the store row's source_key names the entries it came from) relies on. Replacing an ordinary
    still's faceless entry in place with the retry's face left a store that missed the write (an import killed
    between a chunk's cache put and its store, or another store on the same data folder) holding no face for
    good while the cache said one. An ordinary ingest keeps its own entries and results.
    `models`: networks already loaded, by role (`IngestPipeline`'s overrides; a test's)."""
    from embeddings.cache import namespace_for
    from embeddings.media import STILL, is_one_frame
    from embeddings.pipeline import IngestPipeline

    class ImportPipeline(IngestPipeline):
        retrying = False  # set while the faces of stills are detected (`_infer_faces`)

        def _sampling_key(self, path: Path) -> str | None:
            key = super()._sampling_key(path)  # None: a GIF or WebP, of one frame or more
            return STILL if key is None and is_one_frame(path, self.limits) else key

        def _faces_namespace(self, key: str | None = None) -> tuple[str, str, dict[str, Any]]:
            namespace, model_id, params = super()._faces_namespace(key)
            if key != STILL:
                return namespace, model_id, params
            params = {**params, RETRY_PARAM: REDETECT_BORDER}
            return namespace_for(model_id, params), model_id, params

        def _model(self, role: str) -> Any:
            model = super()._model(role)
            return BorderRetryDetector(model) if role == "detector" and self.retrying else model

        def _infer_faces(self, items: list[Any]) -> None:
            stills = [w for w in items if RETRY_PARAM in w.ns.face_params]
            others = [w for w in items if RETRY_PARAM not in w.ns.face_params]
            if others:
                super()._infer_faces(others)
            if stills:
                self.retrying = True
                try:
                    super()._infer_faces(stills)
                finally:
                    self.retrying = False

    return ImportPipeline(settings, **models)


def import_raw_dataset(store: sessionmaker[Session], folder: Path, settings, editor: str | None = None,
                       on_start: Callable[[int], None] | None = None,
                       on_result: Callable[[Any], None] | None = None,
                       on_read: OnRead | None = None) -> ImportSummary:
    """GIPHY's training layout: `labels.csv` + `raw_dataset/<Label>/*.jpg` (any file type ingest reads,
    directly in the class folder; other files and sub-folders are noted, `_class_folder_files`; an export's
    `classes.csv`, when present, gives the exact class names, and the display names, statuses
    and attributes of the classes it creates; existing classes keep their status and only get
    empty fields filled, see `_fill_class_details`; a class created retired, from an edited
    classes.csv since exports leave retired classes out, gets no labels, like any retired class).
    Images are ingested with the real pipeline; each still's largest face, and every face of a GIF or
    video showing one person (one face track; one showing several is noted and left unlabeled,
    `faces_to_label`), gets an approved label (source "import") in one operation with the classes. Images without a face are reported, not
    fatal; an image filed under two labels is reported and left unlabeled; a face an editor decided
    (or moved to another class by a merge or split) keeps its decision; labels of a class that was
    merged away go to the class it was merged into. Images are matched to their ingest results by
    the file they name, so an image or class folder linked in (a symlink) is labeled like any other,
    and one filed under two labels that way is reported too; every image left unlabeled is noted
    with why. A folder that is an export of this store (`own_export`, or one whose every image is the crop
    of a face confirmed here, `own_crops`) is refused before anything is ingested; images that are such
    crops beside others are skipped with one note. labels.csv indices an export would not keep are noted
    (`_index_note`). The groups of an export's split.csv (one clip's crops) are recorded for the media
    ingested from them (`labeling.import_groups`), so every later export keeps each clip on one side."""
    from labeling.import_groups import read_export_groups, record_groups
    from labeling.ingest import ingest

    folder = Path(os.path.abspath(folder))  # ingest stores absolute paths; the images are matched by them below
    who = _editor(editor, folder)
    file_notes: list[str] = []
    labels, names, images, notes, class_map = _scan_raw_dataset(folder, file_notes)
    all_files = [p for paths in images.values() for p in paths]
    with store() as session:  # before anything is ingested
        own = own_export(session, folder)
        # only for the bare GIPHY layout: with a manifest or split.csv, `own_export` decided, and a store seeded
        # from the same files writes the same crops, byte for byte, yet its export is another store's
        bare = not (folder / "manifest.json").exists() and not (folder / "split.csv").exists()
        mine = own_crops(session, all_files, Path(settings.data_dir)) if own is None and bare else {}
    if own is None and mine and len(mine) == len(all_files):
        own = (f"each of its {len(mine)} image(s) is, byte for byte, the face crop of a face confirmed here, "
               "though it holds no manifest.json or split.csv")
    if own is not None:
        raise ValidationError(f"{folder} is an export of this store ({own}): importing it would add each of its "
                              "faces again, as a new image, doubling them in the next export; import it into another "
                              "store")
    groups, groups_note = read_export_groups(folder)  # an export's clips: their crops stay one group here
    # by exact name (`_ensure_classes` with exact): labels.csv's names are unique so, folded or not (`read_labels_csv`)
    details = {names[r.label][0]: class_map[r.label] for r in labels if r.label in class_map}
    summary = ImportSummary("raw dataset", folder.name, notes=file_notes)
    summary.skipped += notes
    if groups_note is not None:
        summary.notes.append(groups_note)
    summary.images = len(all_files)
    if mine:  # some of its images are this store's exported crops (all of them: refused above)
        first = min(mine)
        summary.skipped.append(f"{len(mine)} image(s) are, byte for byte, face crops of faces confirmed here (e.g. "
                               f"{first}, the crop of face {mine[first]}: an export of this store); not imported: "
                               "each would label its face a second time, as a new image")
        images = {label: [p for p in paths if p not in mine] for label, paths in images.items()}
    files = [p for paths in images.values() for p in paths]
    # by resolved path: ingest takes a file linked in twice (a symlink beside its target, a class folder
    # linked to another) once, so the link's path has no result of its own, only its target's
    sha_of: dict[Path, str] = {}
    failed: set[Path] = set()

    def collect(result) -> None:
        if result.status == "ok" and result.sha256:
            sha_of[_resolved(Path(result.path))] = result.sha256
        else:
            failed.add(_resolved(Path(result.path)))
        if on_result is not None:
            on_result(result)

    # the images are media the import adds: audited as one "ingest" event by the same editor
    # keep_outputs: an export kept in the data folder's exports is imported from its crops, the media to label
    # a still without a face gets a second look with a border (`BorderRetryDetector`): an export's tight crops
    ingested = ingest(files, settings, on_start=on_start, on_result=collect, on_read=on_read, store=store,
                      editor=who, keep_outputs=True, pipeline=import_pipeline(settings))
    summary.skipped += [reason if str(path) in reason else f"{path}: {reason}" for path, reason in ingested.failures]
    labels_csv = folder / "labels.csv"
    line_of = {r.label: r.line for r in labels}
    with run_operation(store, who, "import_raw_dataset") as op:
        lock_class_catalog(op.session)
        specs = [ClassSpec(*names[r.label], _where(labels_csv, r.line)) for r in labels]
        ids, created = _ensure_classes(op, specs, summary, attributes={k: d.attributes for k, d in details.items()},
                                       display_names={k: d.display_name for k, d in details.items()},
                                       statuses={k: d.status for k, d in details.items()}, exact=True)
        _fill_class_details(op, {k: ids[k] for k in details if k in ids and ids[k] not in created}, details,
                            summary, folder / "classes.csv")
        summary.updated = len({key[0] for key in op.written.get("class", set())} - created)
        if (note := _index_note(op.session, labels_csv, labels, ids, exact=True)) is not None:
            summary.notes.append(note)
        classes = {c.id: c for c in op.session.scalars(select(CelebrityClass))}
        shas = list(set(sha_of.values()))
        media_ids: dict[str, int] = {}
        for start in range(0, len(shas), 5000):
            media_ids.update(op.session.execute(select(Media.sha256, Media.id).where(
                Media.sha256.in_(shas[start : start + 5000]), Media.status == "ok")).all())
        if groups:
            grouped: dict[int, set[str]] = {}
            for path in files:
                sha = sha_of.get(_resolved(path))
                if (key := groups.key_of(path, sha)) is not None and (media_id := media_ids.get(sha or "")) is not None:
                    grouped.setdefault(media_id, set()).add(key)
            record_groups(op.session, grouped)
        to_label = faces_to_label(op.session, list(media_ids.values()), settings.face_model)
        wanted: dict[int, tuple[int, str, Path]] = {}  # face -> (class, label, the file that asked for it)
        conflicts: set[int] = set()
        for label, paths in images.items():
            class_id = _active_target(classes, ids[names[label][0]])
            if class_id is None:
                summary.skipped.append(f"{_where(labels_csv, line_of[label])}: class {names[label][0]!r} is retired; "
                                       f"its {len(paths)} image(s) are not labeled")
                continue
            for path in paths:
                media_id = media_ids.get(sha_of.get(_resolved(path), ""))
                if media_id is None:
                    if _resolved(path) not in failed:  # a failure is reported above; nothing may go unsaid
                        summary.skipped.append(f"{path}: no media of it is in the store after ingest; not labeled")
                    continue
                faces = to_label.faces.get(media_id)
                if faces is None and media_id in to_label.people:
                    summary.skipped.append(f"{path}: {to_label.people[media_id]} people (face tracks) in it; not "
                                           "labeled: file one person per clip, or label it in Review")
                    continue
                if faces is None:
                    summary.skipped.append(f"{path}: no face found")
                    continue
                other = next((wanted[f] for f in faces if f in wanted and wanted[f][0] != class_id), None)
                if other is not None:
                    conflicts.update(faces)
                    summary.skipped.append(f"{path}: the same image is also under {other[1]}/; not labeled, and "
                                           f"neither is {other[2]}: neither copy is labeled (file it under one label)")
                for face_id in faces:
                    wanted.setdefault(face_id, (class_id, label, path))
        for face_id in conflicts:
            del wanted[face_id]
        # classes before faces, as a merge locks them: apply_decision below, once per class, finds them held
        lock_classes_before_faces(op.session, list(wanted), {c for c, _, _ in wanted.values()})
        current = op.load("face", [(f,) for f in wanted])
        todo: dict[int, list[int]] = {}
        for face_id, (class_id, _, _) in wanted.items():
            row = current[(face_id,)]
            if row is not None and row["source"] == "editor" and row["status"] not in UNDECIDED_STATUSES:
                if row["status"] in CONFIRMED_STATUSES and row["class_id"] == class_id:
                    summary.unchanged += 1
                else:
                    summary.kept += 1
            elif row is not None and row["status"] in CONFIRMED_STATUSES and row["class_id"] == class_id:
                summary.unchanged += 1
            else:
                todo.setdefault(class_id, []).append(face_id)
        for class_id, faces in todo.items():
            apply_decision(op, faces, "approve", class_id, source="import")
            summary.labels += len(faces)
        updated = f"{summary.updated} classes updated, " if summary.updated else ""
        op.summary = (f"import raw dataset {folder.name}: {summary.created} classes created, {updated}"
                      f"{summary.labels} labels approved")
    summary.event_id = op.result.event_id
    return summary
