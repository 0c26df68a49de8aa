"""Import reference data: GIPHY's training layout and class list, class attributes, uploader tags.

Parsing is pure (rows in, records out, errors naming file and line); writing goes through
the curation operations, so an import is audited like an editor's change (editor
"import:<file>" unless given). Every import is idempotent: what already matches is skipped,
and an import that changes nothing writes no audit event.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from embeddings.cache import sha256_file
from labeling.audit import run_operation
from labeling.classes import create_class
from labeling.errors import ValidationError
from labeling.face_labels import apply_decision
from labeling.schema import CelebrityClass, Face, FaceLabel, Media
from labeling.tags import apply_tags
from labeling.validation import class_name_key, clean_attributes, clean_class_name

GIPHY_LABEL = re.compile(r"^(?P<name>.+?)_\[(?P<id>m\.[^\]]+)\]$")
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png"}


@dataclass
class ImportSummary:
    what: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    labels: int = 0  # face labels approved (raw dataset)
    skipped: list[str] = field(default_factory=list)  # rows or files not imported, with why
    event_id: int | None = None

    def line(self) -> str:
        extra = f", skipped {len(self.skipped)}" if self.skipped else ""
        labels = f", labels approved {self.labels}" if self.what == "raw dataset" else ""
        return f"{self.what}: created {self.created}, updated {self.updated}{labels}, unchanged {self.unchanged}{extra}"


# -- parsing (pure) ----------------------------------------------------------------------
def parse_giphy_label(label: str) -> tuple[str, str | None]:
    """`Brad_Pitt_[m.0c6qh]` -> ("Brad Pitt", "m.0c6qh"); plain labels keep no id."""
    match = GIPHY_LABEL.match(label.strip())
    name, external = (match["name"], match["id"]) if match else (label.strip(), None)
    return name.replace("_", " ").strip(), external


def read_csv(path: Path, required: Iterable[str], aliases: dict[str, str] | None = None) -> list[tuple[int, dict[str, str]]]:
    """Rows with their line numbers; the header must hold the required columns (aliases allowed)."""
    aliases = aliases or {}
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read ({exc.strerror})") from None
    reader = csv.DictReader(text.splitlines())
    header = [aliases.get(h.strip(), h.strip()) for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise ValidationError(f"{path}: line 1: header {reader.fieldnames} lacks column(s) {', '.join(missing)}")
    reader.fieldnames = header
    return [(i, {k: (v or "").strip() for k, v in row.items() if k is not None}) for i, row in enumerate(reader, start=2)]


def read_labels_csv(path: Path) -> list[tuple[str, int]]:
    """GIPHY's `Label,Index` / `Labels,Index`: unique labels, unique integer indices."""
    rows = read_csv(path, ["Label", "Index"], aliases={"Labels": "Label"})
    out, labels, indices = [], {}, {}
    for line, row in rows:
        label, index = row["Label"], row["Index"]
        if not label:
            raise ValidationError(f"{path}: line {line}: empty label")
        try:
            idx = int(index)
        except ValueError:
            raise ValidationError(f"{path}: line {line}: index {index!r} is not an integer") from None
        if label in labels:
            raise ValidationError(f"{path}: line {line}: label {label!r} repeats line {labels[label]}")
        if idx in indices:
            raise ValidationError(f"{path}: line {line}: index {idx} repeats line {indices[idx]}")
        try:
            clean_class_name(parse_giphy_label(label)[0])
        except ValidationError as exc:
            raise ValidationError(f"{path}: line {line}: {exc}") from None
        labels[label], indices[idx] = line, line
        out.append((label, idx))
    return out


def read_class_map(path: Path) -> dict[str, tuple[str, str | None]]:
    """An export's `classes.csv` (folder -> exact name and external id), preferred over parsing labels."""
    return {row["folder"]: (row["name"], row.get("external_id") or None)
            for _, row in read_csv(path, ["folder", "name"])}


# -- writing ------------------------------------------------------------------------------
def _classes_by_key(session: Session) -> dict[str, CelebrityClass]:
    return {c.name_key: c for c in session.scalars(select(CelebrityClass))}


def _ensure_classes(op, specs: list[tuple[str, str | None]], summary: ImportSummary) -> dict[str, int]:
    """name -> class id, creating the missing ones inside the open operation."""
    existing = _classes_by_key(op.session)
    ids: dict[str, int] = {}
    for name, external in specs:
        name = clean_class_name(name)
        found = existing.get(class_name_key(name))
        if found is not None:
            ids[name] = found.id
            summary.unchanged += 1
            continue
        ids[name] = create_class(op, name, external_id=external)
        existing[class_name_key(name)] = op.session.get(CelebrityClass, ids[name])
        summary.created += 1
    return ids


def import_classes(store: sessionmaker[Session], csv_path: Path, editor: str | None = None) -> ImportSummary:
    """GIPHY's class list (`Labels,Index`, names like `Brad_Pitt_[m.0c6qh]`) -> active classes."""
    labels = read_labels_csv(csv_path)
    summary = ImportSummary("classes")
    with run_operation(store, editor or f"import:{Path(csv_path).name}", "import_classes") as op:
        _ensure_classes(op, [parse_giphy_label(label) for label, _ in labels], summary)
        op.summary = f"import {summary.created} classes from {Path(csv_path).name}"
    summary.event_id = op.result.event_id
    return summary


def import_attributes(store: sessionmaker[Session], csv_path: Path, editor: str | None = None) -> ImportSummary:
    """`name,...,gender,ethnicity[,birth_year,country]`: empty cells mean unknown and leave the
    attribute as it is. People without a class get one (status active): an attributes file
    is a roster of people the catalog should know."""
    rows = read_csv(csv_path, ["name"])
    parsed = []
    for line, row in rows:
        try:
            name, external = parse_giphy_label(row["name"])
            values = clean_attributes({k: row[k] for k in ("gender", "ethnicity", "birth_year", "country") if row.get(k)})
        except ValidationError as exc:
            raise ValidationError(f"{csv_path}: line {line}: {exc}") from None
        parsed.append((name, external, values))
    summary = ImportSummary("attributes")
    with run_operation(store, editor or f"import:{Path(csv_path).name}", "import_attributes") as op:
        ids = _ensure_classes(op, [(n, e) for n, e, _ in parsed], summary)
        summary.unchanged = 0
        rows_now = op.load("class", [(ids[clean_class_name(n)],) for n, _, _ in parsed])
        changes = {}
        for name, _, values in parsed:
            key = (ids[clean_class_name(name)],)
            diff = {k: v for k, v in values.items() if rows_now[key][k] != v}
            if diff:
                changes[key] = diff
            else:
                summary.unchanged += 1
        if changes:
            op.update("class", changes, rows_now)
        summary.updated = len(changes)
        op.summary = f"import attributes of {len(changes)} classes from {Path(csv_path).name}"
    summary.event_id = op.result.event_id
    return summary


def _media_by_name(session: Session) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for media_id, path in session.execute(select(Media.id, Media.path).where(Media.status == "ok")):
        out.setdefault(Path(path).name, []).append(media_id)
    return out


def import_tags(store: sessionmaker[Session], csv_path: Path, editor: str | None = None) -> ImportSummary:
    """Uploader tags (`file,uploader_tags`, `;`-separated) onto ingested media matched by file name;
    confidence 1.0, source "uploader". An editor's own tag on the same media is left alone."""
    rows = read_csv(csv_path, ["file", "uploader_tags"])
    summary = ImportSummary("tags")
    with store() as session:
        media = _media_by_name(session)
    items = []
    for line, row in rows:
        tags = [t for t in row["uploader_tags"].split(";") if t.strip()]
        if row["file"] not in media:
            summary.skipped.append(f"line {line}: {row['file']} is not ingested")
            continue
        items += [(m, t, 1.0) for m in media[row["file"]] for t in tags]
    if not items:
        return summary
    with run_operation(store, editor or f"import:{Path(csv_path).name}", "import_tags") as op:
        summary.created = apply_tags(op, items, "uploader", keep_editor_tags=True)
        summary.unchanged = len(items) - summary.created
        op.summary = f"import {summary.created} uploader tags from {Path(csv_path).name}"
    summary.event_id = op.result.event_id
    return summary


def _largest_face(session: Session, media_id: int) -> int | None:
    faces = session.execute(select(Face.id, Face.x1, Face.y1, Face.x2, Face.y2).where(Face.media_id == media_id)).all()
    if not faces:
        return None
    return max(faces, key=lambda f: (f.x2 - f.x1) * (f.y2 - f.y1)).id


def import_raw_dataset(store: sessionmaker[Session], folder: Path, settings, editor: str | None = None,
                       on_start: Callable[[int], None] | None = None, on_result: Callable[[Any], None] | None = None) -> ImportSummary:
    """GIPHY's training layout: `labels.csv` + `raw_dataset/<Label>/*.jpg`. Images are ingested with
    the real pipeline; each image's largest face gets an approved label (source "import")."""
    from labeling.ingest import ingest

    folder = Path(folder)
    labels_csv, raw = folder / "labels.csv", folder / "raw_dataset"
    if not labels_csv.is_file() or not raw.is_dir():
        raise ValidationError(f"{folder} must hold labels.csv and raw_dataset/ (GIPHY's training layout)")
    labels = read_labels_csv(labels_csv)
    class_map = read_class_map(folder / "classes.csv") if (folder / "classes.csv").is_file() else {}
    specs = {label: class_map.get(label) or parse_giphy_label(label) for label, _ in labels}
    images = {label: sorted(p for p in (raw / label).glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
              for label in specs if (raw / label).is_dir()}
    summary = ImportSummary("raw dataset")
    summary.skipped += [f"{label}: no raw_dataset/{label}/ folder" for label in specs if label not in images]
    files = [p for paths in images.values() for p in paths]
    ingested = ingest(files, settings, on_start=on_start, on_result=on_result, store=store)
    summary.skipped += [f"{p}: {why}" for p, why in ingested.failures]
    with run_operation(store, editor or f"import:{folder.name}", "import_raw_dataset") as op:
        class_summary = ImportSummary("classes")
        ids = _ensure_classes(op, list(specs.values()), class_summary)
        wanted: dict[int, list[int]] = {}
        for label, paths in images.items():
            class_id = ids[clean_class_name(specs[label][0])]
            for path in paths:
                media_id = op.session.scalar(select(Media.id).where(Media.sha256 == sha256_file(path), Media.status == "ok"))
                face_id = _largest_face(op.session, media_id) if media_id else None
                if face_id is None:
                    if media_id:
                        summary.skipped.append(f"{path}: no face found")
                    continue
                wanted.setdefault(class_id, []).append(face_id)
        current = {row.face_id: row for row in op.session.scalars(
            select(FaceLabel).where(FaceLabel.face_id.in_([f for fs in wanted.values() for f in fs])))}
        for class_id, faces in wanted.items():
            todo = [f for f in faces if not (f in current and current[f].class_id == class_id
                                             and current[f].status in ("approved", "relabeled"))]
            summary.unchanged += len(faces) - len(todo)
            if todo:
                apply_decision(op, todo, "approve", class_id, source="import")
                summary.labels += len(todo)
        summary.created = class_summary.created
        op.summary = (f"import {folder.name}: {class_summary.created} new classes, {summary.labels} approved labels")
    summary.event_id = op.result.event_id
    return summary
