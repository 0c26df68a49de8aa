"""Export curated labels in the layout the retraining job reads (GIPHY's celebrity detector),
plus the tag dataset, Embedding Projector files and a manifest.

The export is built in a temporary folder beside OUT_DIR and renamed at the end, so an
interrupted export leaves nothing half-written. Train / validation groups are connected
components of media that share bytes or near-duplicate frames: a GIF and its re-encode never
end up on both sides.
"""
from __future__ import annotations

import csv
import hashlib
import json
import random
import shutil
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from labeling.db import current_revision
from labeling.errors import ValidationError
from labeling.schema import (CONFIRMED_STATUSES, CelebrityClass, Export, Face, FaceEmbedding, FaceLabel, Media,
                             MediaTag, Tag, bytes_to_vector, utcnow)
from labeling.validation import check_editor

RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
ILLEGAL = set('<>:"/\\|?*')
NEAR_DUPLICATE_RADIUS = 6  # bits of 64: re-encodes and resizes of one clip stay within this


def safe_folder_name(name: str, external_id: str | None = None) -> str:
    """A folder name that is the same, valid and harmless on Linux, macOS and Windows."""
    text = unicodedata.normalize("NFC", name)
    text = "".join("_" if (c in ILLEGAL or unicodedata.category(c)[0] == "C" or c.isspace()) else c for c in text)
    text = text.strip(" ._") or "class"
    if external_id:
        text = f"{text}_[{external_id.replace('/', '_')}]"
    if text.split(".")[0].upper() in RESERVED:
        text = f"_{text}"
    return text[:120]


def unique_folder_names(classes: list[tuple[int, str, str | None]]) -> dict[int, str]:
    """class id -> folder; names that collide after case-folding get the class id appended."""
    out, seen = {}, set()
    for class_id, name, external in sorted(classes):
        folder = safe_folder_name(name, external)
        if folder.casefold() in seen:
            folder = f"{folder}_{class_id}"
        seen.add(folder.casefold())
        out[class_id] = folder
    return out


def near_duplicate_groups(media_hashes: dict[int, list[str]], radius: int = NEAR_DUPLICATE_RADIUS) -> dict[int, int]:
    """media id -> group id (smallest member), joining media with any frame pair within radius."""
    ids = sorted(media_hashes)
    parent = {m: m for m in ids}

    def find(m: int) -> int:
        while parent[m] != m:
            parent[m] = parent[parent[m]]
            m = parent[m]
        return m

    owners, values = [], []
    for m in ids:
        for h in media_hashes[m] or []:
            owners.append(m)
            values.append(int(h, 16))
    if values:
        owners_arr = np.array(owners)
        hashes = np.array(values, dtype=np.uint64)
        for i in range(len(hashes)):
            x = np.bitwise_xor(hashes[i + 1 :], hashes[i])
            bits = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
            for j in np.nonzero(bits <= radius)[0]:
                a, b = find(int(owners_arr[i])), find(int(owners_arr[i + 1 + j]))
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return {m: find(m) for m in ids}


def assign_sides(group_sizes: dict[int, int], val_share: float, seed: int) -> dict[int, str]:
    """Whole groups go to train or val; val takes groups in a seeded order until it holds val_share of the faces."""
    groups = sorted(group_sizes)
    random.Random(seed).shuffle(groups)
    total, val = sum(group_sizes.values()), 0
    sides = {}
    for g in groups:
        if val + group_sizes[g] <= val_share * total + 1e-9 and val_share > 0:
            sides[g], val = "val", val + group_sizes[g]
        else:
            sides[g] = "train"
    return sides


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ExportSummary:
    out_dir: Path
    classes: int
    faces: int
    train: int
    val: int
    media_with_tags: int
    manifest: dict

    def line(self) -> str:
        return (f"exported {self.classes} classes, {self.faces} faces (train {self.train}, val {self.val}), "
                f"{self.media_with_tags} tagged media to {self.out_dir}")


def export_dataset(store: sessionmaker[Session], data_dir: Path, out_dir: Path, editor: str, face_model: str = "dlib-resnet-v1",
                   val_share: float = 0.2, seed: int = 0, overwrite: bool = False,
                   on_progress: Callable[[int, int], None] | None = None) -> ExportSummary:
    editor = check_editor(editor)
    if not 0 <= val_share < 1:
        raise ValidationError(f"validation share must be in [0, 1), got {val_share}")
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ValidationError(f"{out_dir} exists and is not empty; choose another folder or overwrite")
    with store() as session:
        rows = session.execute(
            select(FaceLabel.face_id, FaceLabel.class_id, FaceLabel.status, FaceLabel.source, Face.media_id,
                   FaceEmbedding.crop_path, FaceEmbedding.vector, Media.sha256, Media.path)
            .join(Face, Face.id == FaceLabel.face_id).join(Media, Media.id == Face.media_id)
            .join(CelebrityClass, CelebrityClass.id == FaceLabel.class_id)
            .outerjoin(FaceEmbedding, (FaceEmbedding.face_id == Face.id) & (FaceEmbedding.model_id == face_model))
            .where(FaceLabel.status.in_(CONFIRMED_STATUSES), CelebrityClass.status != "retired")
            .order_by(FaceLabel.face_id)).all()
        classes = {c.id: c for c in session.scalars(select(CelebrityClass).where(
            CelebrityClass.id.in_({r.class_id for r in rows})))}
        provenance = Counter(f"{src}/{st}" for src, st in session.execute(select(FaceLabel.source, FaceLabel.status)))
        hashes = dict(session.execute(select(Media.id, Media.frame_hashes).where(Media.id.in_({r.media_id for r in rows}))).all())
        tag_rows = session.execute(select(Media.id, Media.path, Media.sha256, Tag.name, MediaTag.confidence)
                                   .join(MediaTag, MediaTag.media_id == Media.id).join(Tag, Tag.id == MediaTag.tag_id)
                                   .where(MediaTag.status == "active").order_by(Media.id, MediaTag.confidence.desc(), Tag.name)).all()
        revision = current_revision(session.get_bind())
    folders = unique_folder_names([(c.id, c.name, c.external_id) for c in classes.values()])
    index = {class_id: i for i, class_id in enumerate(sorted(folders))}  # dense, stable: by class id
    groups = near_duplicate_groups({m: hashes.get(m) or [] for m in {r.media_id for r in rows}})
    sides = assign_sides(Counter(groups[r.media_id] for r in rows), val_share, seed)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{utcnow():%Y%m%d%H%M%S%f}"
    tmp.mkdir()
    try:
        with (tmp / "labels.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["Label", "Index"])
            w.writerows([folders[c], index[c]] for c in sorted(folders))
        with (tmp / "classes.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["folder", "index", "class_id", "name", "external_id"])
            w.writerows([folders[c], index[c], c, classes[c].name, classes[c].external_id or ""] for c in sorted(folders))
        missing_crops = 0
        split_rows, vectors, meta = [], [], []
        for n, r in enumerate(rows):
            folder = tmp / "raw_dataset" / folders[r.class_id]
            folder.mkdir(parents=True, exist_ok=True)
            crop = data_dir / r.crop_path if r.crop_path else None
            if crop is None or not crop.is_file():
                missing_crops += 1
            else:
                shutil.copyfile(crop, folder / f"{r.face_id}.jpg")
                side = sides[groups[r.media_id]]
                split_rows.append([r.face_id, folders[r.class_id], r.media_id, groups[r.media_id], side])
                if r.vector is not None:
                    vectors.append(bytes_to_vector(r.vector))
                    meta.append([r.face_id, classes[r.class_id].name, r.status, r.source, side])
            if on_progress is not None:
                on_progress(n + 1, len(rows))
        with (tmp / "split.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["face_id", "label", "media_id", "group", "side"])
            w.writerows(split_rows)
        with (tmp / "tags.jsonl").open("w", encoding="utf-8") as f:
            current, tags = None, []
            for media_id, path, sha, tag, conf in [*tag_rows, (None, None, None, None, None)]:
                if media_id != (current[0] if current else None):
                    if current:
                        f.write(json.dumps({"media_id": current[0], "path": current[1], "sha256": current[2],
                                            "tags": tags}, ensure_ascii=False) + "\n")
                    current, tags = (media_id, path, sha), []
                if tag is not None:
                    tags.append([tag, round(float(conf), 4)])
        projector = tmp / "projector"
        projector.mkdir()
        with (projector / "vectors.tsv").open("w", encoding="utf-8") as f:
            for v in vectors:
                f.write("\t".join(f"{x:.6f}" for x in v) + "\n")
        with (projector / "metadata.tsv").open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(["face_id", "class", "status", "source", "side"])
            w.writerows([[c.replace("\t", " ") if isinstance(c, str) else c for c in m] for m in meta])
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        side_counts = Counter(r[4] for r in split_rows)
        manifest = {
            "created_at": utcnow().isoformat(), "editor": editor, "schema_version": revision, "face_model": face_model,
            "counts": {"classes": len(folders), "faces": len(split_rows), "faces_missing_crop": missing_crops,
                       "train": side_counts.get("train", 0), "val": side_counts.get("val", 0),
                       "media_with_tags": len({t[0] for t in tag_rows}), "projector_vectors": len(vectors)},
            "label_provenance": dict(sorted(provenance.items())),
            "split": {"val_share": val_share, "seed": seed, "near_duplicate_radius": NEAR_DUPLICATE_RADIUS,
                      "groups": len(set(groups.values()))},
            "files": {str(p.relative_to(tmp)): _sha256(p) for p in files},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with store() as session, session.begin():
        session.add(Export(at=datetime.fromisoformat(manifest["created_at"]), editor=editor, out_dir=str(out_dir.resolve()),
                           manifest={k: v for k, v in manifest.items() if k != "files"}))
    return ExportSummary(out_dir, len(folders), len(split_rows), side_counts.get("train", 0), side_counts.get("val", 0),
                         manifest["counts"]["media_with_tags"], manifest)
