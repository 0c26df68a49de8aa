"""The groups an imported export's split.csv gave its crops, kept so every later export honours them.

An export writes one face crop per confirmed face; `giflens import raw-dataset` of that export ingests
each crop as a media item of its own. The crops of one multi-frame GIF then share no frame hash and no
near-identical embedding, so nothing in the importing store says they were one clip, and its export split
them across train and validation. split.csv's `group` column does say it: the import records, for each
media item it ingested from the export, the group its row had (`labeling.schema.ImportedGroup`), and the
export joins media sharing a recorded group (`recorded_groups`, paired by `group_key_pairs`), with or without
`--previous`.

The reverse holds too: crops of different groups were different clips, though aligned face crops of one person
can hash close. Every later export keeps them apart unless another signal joins them (`recorded_groups` gives
the `apart` labels of `labeling.export.copy_groups`), so a group of one row is recorded as well: it joins
nothing, but it names a clip of its own. Only within one export: two exports number their groups apart, and
one photo can reach a store through both, so each key keeps the export it came from (`group_key`, `export_of`).

Parsing and pairing are pure (`read_export_groups`, `group_key_pairs`); the store functions only read or add rows.
"""
from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Hashable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from embeddings.cache import sha256_file
from labeling.errors import ValidationError
from labeling.schema import ImportedGroup


def group_key(namespace: str, group: str) -> str:
    """The stored key of one group of one export, "<export>:<group>" in the column's 64 characters: 32 hex
    digits of sha256 of the export's split.csv digest (`export_of`), then 31 of sha256 of it and the group.
    Why namespaced: groups are numbered by the exporting store's media ids, so group "7" of two exports
    names two unrelated clips; why the digest of split.csv: an export imported twice (or a copy of it)
    gives the same keys, so a re-import records nothing new; why the export's own part: only different
    groups of one export are known to be different clips (`labeling.export.apart_labels`)."""
    export = hashlib.sha256(namespace.encode("utf-8")).hexdigest()[:32]
    within = hashlib.sha256(f"{namespace}\0{group}".encode("utf-8")).hexdigest()[:31]
    return f"{export}:{within}"


def export_of(key: str) -> str:
    """The export a recorded group key came from (`group_key`'s part before ":"). A key recorded before keys
    carried it (64 hex digits, no ":") is taken as an export of its own: which export it came from is lost,
    so it keeps no crop apart (two exports' groups never say two crops are different clips), and it still
    joins its group's crops. Importing that export again records its keys anew."""
    return key.split(":", 1)[0] if ":" in key else key


def _file_key(label: str, name: str) -> str:
    """"<class folder>/<file>" in NFC: an archiver may have written the folder's name decomposed."""
    return unicodedata.normalize("NFC", f"{label}/{name}")


@dataclass(frozen=True)
class ExportGroups:
    """Group keys of an export's crops, by crop file ("<folder>/<face id>.jpg") and by the crop's sha256.
    Groups of one row are kept too: such a group joins nothing, but its crop is a clip of its own, which a
    later export must not join to another group's crop by their hashes alone."""

    by_file: dict[str, str] = field(default_factory=dict)
    by_crop_sha256: dict[str, str] = field(default_factory=dict)

    def key_of(self, image: Path, sha256: str | None) -> str | None:
        """The group key of an image of the export's raw_dataset/ (by its folder and name, else by its
        bytes), None when split.csv gives it none."""
        return self.by_file.get(_file_key(image.parent.name, image.name)) or (
            self.by_crop_sha256.get(sha256) if sha256 else None)

    def __bool__(self) -> bool:
        return bool(self.by_file or self.by_crop_sha256)


def read_export_groups(folder: Path) -> tuple[ExportGroups, str | None]:
    """(the groups of `folder`'s split.csv, a note when it cannot be read). No split.csv (GIPHY's own
    layout) gives no groups and no note; one without a group column, too (nothing to keep)."""
    from labeling.importers import read_csv  # labeling.importers imports this module

    path = Path(folder) / "split.csv"
    if not path.is_file():
        return ExportGroups(), None
    try:
        header, rows = read_csv(path, [], known=["face_id", "label", "group", "crop_sha256"])
        namespace = sha256_file(path)
    except (ValidationError, OSError) as exc:
        return ExportGroups(), (f"{path}: its groups are not read ({exc}); crops of one clip may land on both "
                                "train and validation in an export of this store")
    if "group" not in header:
        return ExportGroups(), None
    cells = [{c: (row.get(c) or "").strip() for c in ("face_id", "label", "group", "crop_sha256")} for _, row in rows]
    by_file: dict[str, str] = {}
    by_crop: dict[str, str] = {}
    for c in cells:
        if not c["group"]:
            continue
        key = group_key(namespace, c["group"])
        if c["label"] and c["face_id"]:
            by_file.setdefault(_file_key(c["label"], f"{c['face_id']}.jpg"), key)
        if c["crop_sha256"]:
            by_crop.setdefault(c["crop_sha256"], key)
    return ExportGroups(by_file, by_crop), None


def record_groups(session: Session, media_keys: dict[int, set[str]]) -> int:
    """Add the (media, group key) rows not stored yet; how many were added (0 on a re-import)."""
    from labeling.audit import _chunks

    have: set[tuple[int, str]] = set()
    for chunk in _chunks(list(media_keys)):
        have.update((m, k) for m, k in session.execute(select(ImportedGroup.media_id, ImportedGroup.group_key)
                                                       .where(ImportedGroup.media_id.in_(chunk))))
    new = sorted({(m, k) for m, keys in media_keys.items() for k in keys} - have)
    session.add_all(ImportedGroup(media_id=m, group_key=k) for m, k in new)
    session.flush()
    return len(new)


def recorded_groups(session: Session, media_ids: Iterable[Hashable]) -> dict[int, frozenset[str]]:
    """media id -> the group keys recorded for it, for those of `media_ids` an imported export gave a group:
    the `apart` labels of `labeling.export.copy_groups` (crops of different groups, different clips, are not
    joined by their hashes alone) and, through `recorded_group_pairs`, what joins one group's crops."""
    from labeling.audit import _chunks

    keys: dict[int, set[str]] = {}
    for chunk in _chunks(sorted(set(media_ids))):  # type: ignore[type-var]
        for media_id, key in session.execute(select(ImportedGroup.media_id, ImportedGroup.group_key)
                                             .where(ImportedGroup.media_id.in_(chunk))):
            keys.setdefault(media_id, set()).add(key)
    return {m: frozenset(k) for m, k in keys.items()}


def group_key_pairs(groups: dict[int, frozenset[str]]) -> list[tuple[int, int]]:
    """(media, media) pairs that one recorded group holds (media -> its keys, `recorded_groups`): each member
    paired with the group's first member in id order (a chain is enough for union-find). A group of one gives
    no pair."""
    from labeling.export import group_pairs

    return group_pairs((m, key) for m in sorted(groups) for key in sorted(groups[m]))  # type: ignore[return-value]


def recorded_group_pairs(session: Session, media_ids: Iterable[Hashable]) -> list[tuple[int, int]]:
    """(media, media) pairs of `media_ids` that one recorded group holds, for `copy_groups` to join: each
    member paired with the group's first member seen (a chain is enough for union-find)."""
    return group_key_pairs(recorded_groups(session, media_ids))
