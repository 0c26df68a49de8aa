"""Export curated labels for retraining, in the layout of GIPHY's celebrity detector, plus the
tag dataset, Embedding Projector files and a manifest.

    OUT_DIR/
      labels.csv              Label,Index: one row per exported class, indices 0..n-1 (see below)
      classes.csv             folder,index,class_id,name,external_id,display_name,status,gender,ethnicity,
                              birth_year,country: the exact names behind the folders and what an import
                              needs to rebuild each class it creates (an empty cell: unknown; see
                              `class_row`); readers of the older five columns keep working
      raw_dataset/<Label>/<face id>.jpg   aligned face crops of confirmed labels
      split.csv               face_id,class_id,label,media_id,group,side (train / val),sha256 (of the media),
                              crop_sha256 (of the face crop exported: an import of the export ingests it as a
                              media item of those bytes, so a later export of that store finds its side)
      tags.jsonl              {"media": path, "sha256": ..., "media_id": ..., "tags": [[tag, confidence], ...],
                              "sources": {tag: source}}: the source tells a retraining job which tags an
                              editor set or confirmed (editor), which the uploader gave (uploader), which a
                              model suggested and were accepted (experts_voting, model) or came in (import)
      projector/vectors.tsv   face embeddings, one row per labeled face (TensorFlow Embedding Projector)
      projector/metadata.tsv  face_id, class, status, source, side (header row first)
      projector/gif_vectors.tsv    GIF embeddings (one pooled vector per animated media item, e.g.
                                   EfficientNet-Lite0's 1280 values), one row per media item
      projector/gif_metadata.tsv   media_id, file, kind, tags (header row first; tags are the item's
                                   active tags, most confident first, as "tag (0.93); tag (0.50)")
      manifest.json           counts, label and tag provenance, split, schema version, sha256 of every other file

Only confirmed labels (`CONFIRMED_STATUSES`) of classes that are not retired are exported; a note names
the retired classes left out that hold confirmed faces (`retired_classes_note`).
Folder names are safe on Linux, macOS and Windows (`safe_folder_name`). Train and validation
never share a source media item or its near-duplicates: media are joined (union-find) when any of
their frame pHashes lie within a small Hamming radius, or when they hold faces (of any classes)
whose embeddings are nearly identical (`same_photo_pairs`: mirrored and cropped copies of one
photo, which move the pHash too far, also one filed under a second class), and whole groups go to
one side (`copy_groups`: retrain's holdout groups media the same way). Media that one group of an
imported export held (its crops of one clip, recorded by `giflens import raw-dataset`,
`labeling.import_groups`) are joined too, whether or not an earlier export is followed. Crops an imported
export put in different groups (recorded at import, in every later export, followed or not; and crops of a
followed export, by its split.csv) are not joined by their frame hashes alone, nor through a media item
whose hashes lie near both (`labels_kept_apart`, `apart_labels`): an aligned face crop's hash is not its
frame's, and crops of one person's different photos can lie close. Only groups of one export say so: crops
of two exports (one photo can reach a store through both) still join by their hashes. Retrain's holdout
joins and keeps apart the imported groups the same way; a followed export's only the export sees.

Sides are stable too. Given `previous` (an earlier export), every media item of its split.csv
(matched by sha256; or by the sha256 of a face crop it exported, which is how a store that imported
that export holds it; else, when its class ids are this store's, by media id) stays on its earlier
side, media one earlier group held stay one group here (`earlier_group_pairs`), and only groups new
to this export are split, by the share and stratified by class as always. A group that now unites
media of both earlier sides trains, so no face a model fine-tuned on the earlier export trained on
ever becomes a validation face; the manifest counts the faces that kept their side and the ones
moved, a note says how many validation faces moved to train and why (`moved_to_train_note`), and one
says when an earlier export with sides keeps none (`no_face_kept`). A share of 0
asks for no validation set at all: earlier validation media then train. An earlier export without
validation faces (written with a share of 0, or with classes too small to give any) gives its label
indices but not its sides: kept, they would keep every earlier face in training for good, and
validation would only ever get new media; the split is drawn anew and `notes` say so. When validation holds less than half
the share asked for (kept sides, or groups of copies larger than small classes' validation targets),
`notes` say that too, naming the classes without a validation face. The notes are in the manifest and the
summary. `giflens export` passes the newest recorded export whose folder still holds it
unchanged (`newest_export`, `earlier_exports`) unless told not to.

Label indices are dense (0..n-1) and stable across exports (`class_indices`). Classes are
numbered in class-id order, i.e. creation order, never by name: a new class (even "Aaron")
takes the next index and every other class keeps its own, as long as no class drops out
(retired, merged away, or left without confirmed faces); when one does, the classes after it
move down one. Given `previous` (an earlier export), every surviving class keeps its earlier
index instead; the holes dropped classes leave are filled first by survivors whose index is no
longer below n, then by new classes, so only as many classes move as density requires. Its class
ids are trusted only when it is an intact export this store recorded; otherwise each row is checked
by name (`match_earlier_classes`): another store's ids name other classes, so its classes are found
here by name, a note says so, and an export with no class in common is refused.

The export is built in a hidden temporary folder beside OUT_DIR (so its parent must be writable,
`unwritable_parent`) and renamed into place at the end, so an interrupted export leaves no
half-written OUT_DIR; one a killed export left behind, and an earlier export replaced but not yet
deleted when interrupted, are removed by the next export into OUT_DIR (`remove_stale_temporaries`).
OUT_DIR is replaced only when it holds an earlier export and nothing else but the files an OS writes
into any folder (`not_replaceable`), checked when the export starts and again, under a lock on OUT_DIR's
parent, when it moves into place (`_place`): what was saved into OUT_DIR meanwhile, or another export
finished into it, is never replaced unasked.
An OUT_DIR that is a symbolic link is the folder it names (`resolve_out_dir`): the link stays, the folder
is replaced.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import math
import os
import re
import secrets
import threading
import time
import shutil
import unicodedata
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator, NamedTuple

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from embeddings.cache import sha256_file
from embeddings.near_duplicates import near_duplicate_media
from labeling.db import current_revision
from labeling.errors import ValidationError
from labeling.import_groups import export_of, group_key_pairs, recorded_groups
from labeling.importers import read_csv, renames
from labeling.schema import (CONFIRMED_STATUSES, CelebrityClass, Export, Face, FaceEmbedding, FaceLabel, Media,
                             MediaEmbedding, MediaTag, Tag, bytes_to_vector, utcnow)
from labeling.validation import check_editor, class_name_key

FORMAT = "giflens-export/1"
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"}
RESERVED_NAMES = frozenset(_WINDOWS_DEVICES | {f"{p}{d}" for p in ("COM", "LPT") for d in "0123456789\u00b9\u00b2\u00b3"})
ILLEGAL_CHARS = frozenset('<>:"/\\|?*')
FOLDER_MAX_BYTES = 120  # of the name before the external id; ext4 and NTFS allow 255
NEAR_DUPLICATE_RADIUS = 6  # bits of 64: resizes and re-encodes of a clip stay within this
MIN_HASH_BITS = 16  # a natural frame's median-threshold pHash sets 32 bits; flat frames (black, one colour) set ~1
NAMES_SHOWN = 10  # names a note lists before "and N more" (`listed_names`)
GIF_TOP_TAGS = 5  # tags per media item in gif_metadata.tsv: enough to read a cluster, short enough for a tooltip
# Face embeddings closer than this (Euclidean) are one photo (`same_photo_pairs`). Measured
# with dlib on LFW: mirrored copies of 60 photos lay at most 0.117 from the original, copies cropped by
# 6-15 px at most 0.109, re-encoded at 200 px at most 0.099; of 198,479 pairs of different photos of one
# person (8 people, 1,348 photos) the median lay at 0.295, 0.1% below 0.165, and only 16 below 0.12, all
# LFW's own duplicates or shots a moment apart. Chaining stays short there (largest group: 2 photos; at
# 0.15 already 7). Per face model: another model's distances mean something else, so a model not
# listed here adds no pairs (the pHash signal still applies).
SAME_PHOTO_DISTANCE = {"dlib-resnet-v1": 0.12}
MIN_VECTOR_NORM = 1e-6  # a zero vector is no embedding (a placeholder): it would be "near" every other one
# A temporary folder beside OUT_DIR no export holds (`_lock_folder`) is a killed export's leftover once it is
# this old; the age only covers the instant between creating a folder and locking it.
STALE_TMP_SECONDS = 300
# A running export touches its temporary folder every this many crops copied: its age stays a sign of life
# where locks do not reach another host (NFS with local locks, CIFS nobrl), not only its lock.
TMP_TOUCH_EVERY = 200
FACE_CHUNK = 1024  # rows and columns of a distance tile computed at a time (1024 x 1024 floats: 8 MB)
CLASS_COLUMNS = ["folder", "index", "class_id", "name", "external_id",
                 "display_name", "status", "gender", "ethnicity", "birth_year", "country"]
SPLIT_COLUMNS = ["face_id", "class_id", "label", "media_id", "group", "side", "sha256", "crop_sha256"]


# -- folder names (pure) ----------------------------------------------------------------------
def _clean_component(text: str, strip: str = " ._") -> str:
    text = unicodedata.normalize("NFC", text)
    text = "".join("_" if (c in ILLEGAL_CHARS or c.isspace() or unicodedata.category(c)[0] == "C") else c for c in text)
    return text.strip(strip)


def _truncate_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore").rstrip(" ._")


def safe_folder_name(name: str, external_id: str | None = None, max_bytes: int = FOLDER_MAX_BYTES) -> str:
    """A folder name that is valid and means the same thing on Linux, macOS and Windows:
    no path separators or `..` (nothing can escape raw_dataset/), no characters Windows
    forbids (`<>:"/\\|?*`, control characters), whitespace as `_` (GIPHY's style), no leading
    or trailing dots, spaces or underscores, no reserved device names (CON, NUL, COM1, ...,
    also with an extension), at most `max_bytes` of UTF-8 before the `_[external id]` suffix.
    Uniqueness across classes is `unique_folder_names`' job."""
    text = _truncate_utf8(_clean_component(name), max_bytes) or "class"
    if external_id:
        ext = _truncate_utf8(_clean_component(external_id, strip=""), 64)  # inside brackets: m.01vvyc_ keeps its _
        if ext:
            text = f"{text}_[{ext}]"
    stem = unicodedata.normalize("NFKC", text.split(".")[0]).rstrip(" ").upper()
    if stem in RESERVED_NAMES:
        text = f"_{text}"
    return text


def folder_key(folder: str) -> str:
    """What makes two folder names the same on a case-insensitive, normalising file system."""
    return unicodedata.normalize("NFKC", folder).casefold()


def unique_folder_names(classes: Iterable[tuple[int, str, str | None]],
                        earlier: dict[int, str] | None = None) -> dict[int, str]:
    """class id -> folder, in class-id order; a folder that collides with an earlier one after
    case-folding gets `_<class id>` appended (and a counter, in the unlikely case that collides too).
    `earlier` (class id -> its folder in a followed export, `earlier_folders`) is reserved for its class
    first. Why: the suffix goes by class-id order among the classes exported this time, so a class coming
    back (re-activated, given crops again) would otherwise take the plain name from the class that held it,
    and that class's folder would change between two exports a retraining job reads as one series."""
    out: dict[int, str] = {}
    seen: set[str] = set()
    rows = sorted(classes)
    for class_id, _, _ in rows:  # reserved first, each once (a hand-edited map may repeat one)
        folder = (earlier or {}).get(class_id)
        if folder is not None and folder_key(folder) not in seen:
            out[class_id] = folder
            seen.add(folder_key(folder))
    for class_id, name, external in rows:
        if class_id in out:
            continue
        base = safe_folder_name(name, external)
        folder, n = base, 1
        while folder_key(folder) in seen:
            folder = f"{base}_{class_id}" if n == 1 else f"{base}_{class_id}_{n}"
            n += 1
        seen.add(folder_key(folder))
        out[class_id] = folder
    return out


def earlier_folders(earlier: "EarlierClasses", indices: dict[int, int], classes: dict[int, Any]) -> dict[int, str]:
    """class id here -> the folder a followed export gave it, for `unique_folder_names` to keep. `indices` (class
    id here -> its earlier index, `match_earlier_classes`) finds its row. Kept only while it is still a folder the
    class's name gives (its `safe_folder_name`, or that with the collision suffix of the row's class id): a class
    renamed since gets the folder of its new name."""
    by_index = {r.index: r for r in earlier.rows if r.folder}
    out: dict[int, str] = {}
    for class_id, index in indices.items():
        row, cls = by_index.get(index), classes.get(class_id)
        if row is None or cls is None:
            continue
        base = safe_folder_name(cls.name, cls.external_id)
        if row.folder == base or re.fullmatch(rf"{re.escape(base)}_{row.class_id}(_\d+)?", row.folder):
            out[class_id] = row.folder
    return out


# -- near-duplicate groups and the split (pure) -------------------------------------------------
def join_groups(members: Iterable[Hashable], pairs: Iterable[tuple[Hashable, Hashable]],
                guarded: Iterable[tuple[Hashable, Hashable]] = (),
                apart: dict[Hashable, Hashable] | None = None) -> dict[Hashable, Hashable]:
    """member -> group (its smallest member): union-find over `pairs` (both ends must be members), then over
    `guarded` pairs, in their order, each joining only when its two groups do not carry different `apart`
    labels (member -> label, all of one export; or a frozenset of (export, label) pairs, `apart_labels`; a
    group carries its members' labels, `labels_kept_apart`). Why per group, not per pair: a member without a
    label near two labelled members of different labels would otherwise bridge them, one pair at a time. The
    root is the smallest member, so a group's name does not depend on the order pairs come in (which groups
    `guarded` pairs join may: give them closest first)."""
    parent: dict[Hashable, Hashable] = {m: m for m in members}
    labels: dict[Hashable, frozenset] = {  # a bare label: one export's (None), as a followed export's are
        m: label if isinstance(label, frozenset) else frozenset([(None, label)])
        for m, label in (apart or {}).items() if m in parent}

    def find(m: Hashable) -> Hashable:
        root = m
        while parent[root] != root:
            root = parent[root]
        while parent[m] != root:
            parent[m], m = root, parent[m]
        return root

    def union(a: Hashable, b: Hashable, guard: bool) -> None:
        ra, rb = find(a), find(b)
        if ra == rb or (guard and labels_kept_apart(labels.get(ra), labels.get(rb))):
            return
        lo, hi = sorted((ra, rb), key=lambda x: (str(type(x)), x))
        parent[hi] = lo
        if hi in labels:
            labels[lo] = labels.get(lo, frozenset()) | labels.pop(hi)

    for a, b in pairs:
        union(a, b, False)
    for a, b in guarded:
        union(a, b, True)
    return {m: find(m) for m in parent}


def labels_kept_apart(a: frozenset | None, b: frozenset | None) -> bool:
    """Whether two groups carrying `apart` labels ((export, group) pairs; None: none) stay apart: when they
    share no label but carry groups of one export. Why: the labels are groups an earlier export gave crops of
    its own (recorded when they were imported, `labeling.import_groups.recorded_groups`, or read from a
    followed export, `earlier_crop_groups`); the hash of an aligned face crop is not the hash of the frame it
    came from, aligned crops of one person look alike (two LFW photos of George Lopez, cropped, lay 4 bits
    apart), and the export that wrote them had the frames themselves and kept them apart. Joined here, a
    validation face would move to train on a round trip through another store, unasked. Groups sharing a
    label were one group there: nothing to keep apart. Why one export: two exports number their groups apart,
    and one photo can reach a store through both (two copies, a crop in each export): that they sit in
    "different" groups there says nothing."""
    if not a or not b or a & b:
        return False
    return not {export for export, _ in a}.isdisjoint(export for export, _ in b)


def near_duplicate_groups(media_hashes: dict[Hashable, Iterable[str] | None],
                          radius: int = NEAR_DUPLICATE_RADIUS,
                          extra_pairs: Iterable[tuple[Hashable, Hashable]] = (),
                          apart: dict[Hashable, Hashable] | None = None) -> dict[Hashable, Hashable]:
    """media -> group (its smallest member): union-find over media that share any pair of frame
    pHashes (16 hex digits) within `radius` bits, found exactly by multi-index hashing
    (`embeddings.near_duplicates`), and over `extra_pairs` (media joined by another signal, e.g.
    `same_photo_pairs`). Flat frames (fewer than MIN_HASH_BITS bits set) are ignored: a black
    frame would otherwise join every clip that fades to black. Groups holding media `apart` names (media ->
    the group or groups an earlier export gave it, `apart_labels`) of different groups are not joined by hashes
    (`labels_kept_apart`), not even through a third media item near both; `extra_pairs` join them still,
    and are joined first. Hash pairs join closest first, so a re-upload of one crop joins that crop's
    group and not the other's."""
    informative = {m: [h for h in hashes or [] if int(h, 16).bit_count() >= MIN_HASH_BITS]
                   for m, hashes in media_hashes.items()}
    pairs = [(a, b) for a, b, _, _ in near_duplicate_media(informative, radius=radius)]  # closest first
    return join_groups(media_hashes, extra_pairs, pairs, apart)


def same_photo_pairs(faces: Iterable[tuple[Hashable, Hashable, np.ndarray]], threshold: float,
                     chunk: int = FACE_CHUNK, across_classes: bool = False) -> set[tuple[Hashable, Hashable]]:
    """(media, media) pairs, smaller first, of distinct media holding faces whose embeddings lie
    within `threshold` (Euclidean): faces of one class, or of any classes with `across_classes`
    (what `copy_groups` asks). faces: (class, media, vector). A mirrored or lightly cropped copy of
    a photo moves its frame pHash by 4-30 bits, more than a Hamming radius can allow without joining
    unrelated clips, but barely moves its face embedding (dlib's averages the face and its mirror),
    so this catches the copies the hashes miss. A copy may be filed under another class (a duplicate
    catalog entry such as "Al Gore" / "Albert Gore" before an editor merges them), and different
    people lie farther apart than different photos of one person, so a split compares across classes.
    Computed in `chunk` x `chunk` tiles (each pair once), so tens of thousands of faces need 8 MB of
    distances at a time, not n x n; and faces are sorted along their principal axis, where two faces
    within `threshold` lie within `threshold` of each other too, so a tile of rows is compared only with
    the faces in that window (exact, and a fraction of all pairs: `_axis_order`). Vectors of (near) zero
    length carry no identity and are skipped."""
    by_class: dict[Hashable, tuple[list[Hashable], list[np.ndarray]]] = {}
    for cls, media, vector in faces:
        vector = np.asarray(vector, dtype=np.float64)
        if float(vector @ vector) > MIN_VECTOR_NORM ** 2:
            media_list, vectors = by_class.setdefault(None if across_classes else cls, ([], []))
            media_list.append(media)
            vectors.append(vector)
    pairs: set[tuple[Hashable, Hashable]] = set()
    limit = float(threshold) ** 2
    for media_list, vectors in by_class.values():
        if len(vectors) < 2:
            continue
        x = np.vstack(vectors)
        order, position = _axis_order(x)
        x = x[order]
        norms = np.einsum("ij,ij->i", x, x)
        for start in range(0, len(x), chunk):
            block = x[start : start + chunk]
            # against itself and every later face of the window: each pair once
            end = int(np.searchsorted(position, position[min(start + chunk, len(x)) - 1] + threshold, "right"))
            for col in range(start, end, chunk):
                d2 = (norms[start : start + chunk, None] + norms[None, col : min(col + chunk, end)]
                      - 2.0 * (block @ x[col : min(col + chunk, end)].T))
                for i, j in zip(*np.nonzero(d2 <= limit)):
                    a, b = media_list[order[start + i]], media_list[order[col + j]]
                    if col + j > start + i and a != b:
                        pairs.add(tuple(sorted((a, b), key=lambda m: (str(type(m)), m))))  # type: ignore[arg-type]
    return pairs


def _axis_order(x: np.ndarray, sample: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(order, sorted positions) of rows along their principal axis (a unit vector, so positions differ by
    at most the rows' distance). The axis of greatest spread makes the window of a tile narrowest; fitted
    on a fixed sample of rows, as the exact axis matters only for speed, never for which pairs are found."""
    rows = x[np.linspace(0, len(x) - 1, min(sample, len(x))).astype(int)]
    _, _, vt = np.linalg.svd(rows - rows.mean(axis=0), full_matrices=False)
    position = x @ vt[0]
    order = np.argsort(position, kind="stable")
    return order, position[order]


def same_photo_threshold(face_model: str, given: float | None = None) -> float | None:
    """The distance under which two faces are one photo: `given`, else the one measured
    for `face_model` (SAME_PHOTO_DISTANCE); None for a model nobody measured, whose distances mean
    something else (only the pHash signal joins media then)."""
    return given if given is not None else SAME_PHOTO_DISTANCE.get(face_model)


def copy_groups(media_hashes: dict[Hashable, Iterable[str] | None],
                faces: Iterable[tuple[Hashable, Hashable, np.ndarray]], same_photo_distance: float | None,
                radius: int = NEAR_DUPLICATE_RADIUS, joined: Iterable[tuple[Hashable, Hashable]] = (),
                apart: dict[Hashable, Hashable] | None = None,
                ) -> tuple[dict[Hashable, Hashable], set[tuple[Hashable, Hashable]]]:
    """(media -> group, the same-photo pairs found): the one grouping of every split that must keep
    copies of a picture on one side, the export's train / validation split and retrain's holdout.
    Media join when their frame pHashes lie within `radius` (`near_duplicate_groups`) or when they
    hold faces (class, media, vector) within `same_photo_distance`, whatever their classes
    (`same_photo_pairs`: mirrored and cropped copies the hashes miss, also one filed under a second
    class; None: no such joins), or when they are `joined` (media one group of an earlier export held,
    `earlier_group_pairs`, or one group of an imported export). Crops of an earlier export in groups it kept
    apart (`apart`, `apart_labels`) are not joined by their hashes alone (`labels_kept_apart`). One definition,
    so a copy the export keeps on one side can never straddle retrain's holdout, or the other way round:
    retrain (`labeling.recognition.media_groups`) passes the imported groups' joins and apart labels as the
    export does; only a followed export's (`--previous`) are the export's alone, as retrain follows none."""
    pairs = (same_photo_pairs(faces, same_photo_distance, across_classes=True) if same_photo_distance is not None
             else set())
    return near_duplicate_groups(media_hashes, radius, [*pairs, *joined], apart), pairs


def validation_target(faces: int, split: float) -> int:
    """The validation faces a class of `faces` aims at (`assign_sides`): round(split x faces), halves up."""
    return math.floor(split * faces + 0.5)


def assign_sides(group_classes: dict[Hashable, Counter], split: float, seed: int,
                 group_keys: dict[Hashable, str] | None = None) -> dict[Hashable, str]:
    """group -> "train" or "val", whole groups only, stratified by class: each class aims at
    round(split x its faces) validation faces. Groups are visited in an order seeded by `seed`
    and the group's key (content hashes by default, so the order does not depend on database
    ids) and go to val while every class in them still fits under its target."""
    if not 0.0 <= split < 1.0:
        raise ValidationError(f"the validation split must be in [0, 1), got {split}")
    totals: Counter = Counter()
    for counts in group_classes.values():
        totals.update(counts)
    target = {c: validation_target(n, split) for c, n in totals.items()}
    keys = group_keys or {g: str(g) for g in group_classes}
    order = sorted(group_classes, key=lambda g: (hashlib.sha256(f"{seed}:{keys[g]}".encode()).hexdigest(), str(g)))
    val: Counter = Counter()
    sides: dict[Hashable, str] = {}
    for g in order:
        counts = group_classes[g]
        if split > 0 and all(val[c] + n <= target[c] for c, n in counts.items()):
            sides[g] = "val"
            val.update(counts)
        else:
            sides[g] = "train"
    return sides


@dataclass(frozen=True)
class EarlierSides:
    """The side (train / val) of every media item of an earlier export's split.csv. Media are
    matched by content (sha256) where the file names it, so a media item re-ingested since (a new
    id, the same bytes) keeps its side; then by the content of a face crop it exported (`by_crop_sha256`:
    that export imported into a store, its crops are media items of their own, each holding the bytes
    of one crop); rows without a sha256 (exports written before the column existed) are matched by media
    id, which only this store's own exports may use (`export_dataset` drops them for an export whose
    classes had to be found by name: another store's). `groups` gives the earlier group (`copy_groups`)
    of each matched row, by the key `key_of` returns: media it held together stay together."""
    path: Path
    by_sha256: dict[str, str]
    by_media_id: dict[int, str]
    share: float | None = None  # the validation share it was written with (its manifest's); None: unknown
    by_crop_sha256: dict[str, str] = field(default_factory=dict)  # sha256 of an exported crop -> its side
    groups: dict[tuple[str, Hashable], str] = field(default_factory=dict)  # `key_of` -> earlier group

    def key_of(self, media_id: int, sha256: str | None) -> tuple[str, Hashable] | None:
        """Which earlier row a media item is: ("media", its sha256), ("crop", its sha256: it is an
        exported crop, imported), ("id", its media id), or None (new to this export)."""
        if sha256 and sha256 in self.by_sha256:
            return "media", sha256
        if sha256 and sha256 in self.by_crop_sha256:
            return "crop", sha256
        return ("id", media_id) if media_id in self.by_media_id else None

    def side_of(self, media_id: int, sha256: str | None) -> str | None:
        key = self.key_of(media_id, sha256)
        if key is None:
            return None
        sides = {"media": self.by_sha256, "crop": self.by_crop_sha256, "id": self.by_media_id}[key[0]]
        return sides[key[1]]  # type: ignore[index]

    @property
    def has_validation(self) -> bool:
        """Whether any earlier media item was a validation one. An export written with a share of 0
        has none, and its sides are no basis: kept, they would train every earlier face for good."""
        return any("val" in sides.values() for sides in (self.by_sha256, self.by_media_id, self.by_crop_sha256))

    @property
    def lists_nothing(self) -> bool:
        """Whether its split.csv lists no media item at all (an export of no face). Why: such an export
        drew no side, so it has none to keep and none to be missing; a note that it lacks validation
        faces, or that a model trained on it knows some faces, would be false."""
        return not (self.by_sha256 or self.by_media_id or self.by_crop_sha256)


def _train_wins(sides: dict[Hashable, str], key: Hashable, side: str) -> None:
    """Record `side` for `key`; a key listed on both sides counts as train (see `read_earlier_sides`)."""
    sides[key] = "train" if "train" in (side, sides.get(key)) else "val"


def read_earlier_sides(previous: Path) -> EarlierSides | None:
    """The sides of an earlier export (its folder, or its classes.csv: split.csv lies beside it), or
    None when it has no split.csv (a bare class map keeps indices only). A media item (or crop) listed on
    both sides (a hand-edited file, or two faces whose crops are byte for byte alike) counts as train: the
    safe side, since no face a model trained on may become a validation face. The crop_sha256 and group
    columns are optional: exports written before them are read as they were."""
    previous = Path(previous)
    path = (previous if previous.is_dir() else previous.parent) / "split.csv"
    if not path.is_file():
        return None
    _, rows = read_csv(path, ["media_id", "side"], known=["sha256", "crop_sha256", "group"])
    by_sha256: dict[str, str] = {}
    by_media_id: dict[int, str] = {}
    by_crop: dict[str, str] = {}
    groups: dict[tuple[str, Hashable], str] = {}
    for line, row in rows:
        side = row["side"].strip()
        if side not in ("train", "val"):
            raise ValidationError(f"{path}: line {line}: side must be train or val, got {side!r}")
        try:
            media_id = int(row["media_id"])
        except ValueError:
            raise ValidationError(f"{path}: line {line}: media_id must be a whole number") from None
        sha, crop, group = ((row.get(c) or "").strip() for c in ("sha256", "crop_sha256", "group"))
        key: tuple[str, Hashable] = ("media", sha) if sha else ("id", media_id)
        _train_wins(by_sha256 if sha else by_media_id, key[1], side)  # type: ignore[arg-type]
        if crop:
            _train_wins(by_crop, crop, side)  # type: ignore[arg-type]
        if group:
            for k in (key, ("crop", crop)) if crop else (key,):
                groups.setdefault(k, group)
    return EarlierSides(path, by_sha256, by_media_id, _manifest_share(path.parent / "manifest.json"), by_crop, groups)


def earlier_group_pairs(earlier: EarlierSides,
                        media_sha256: dict[Hashable, str | None]) -> list[tuple[Hashable, Hashable]]:
    """(media, media) pairs of this export's media (id -> sha256) that one group of the earlier export
    held, for `copy_groups` to join. Why: an export imported into another store turns each face crop into
    a media item of its own, so the crops of one clip are no longer near-duplicates by any signal here
    (their frame hashes differ, and so do their faces' embeddings, frame by frame); the earlier export's
    group column still says they were one clip, and one clip's faces must share a side."""
    return group_pairs((media_id, earlier.groups.get(key) if key is not None else None)
                       for media_id, sha in media_sha256.items()
                       for key in [earlier.key_of(media_id, sha)])  # type: ignore[arg-type]


def earlier_crop_groups(earlier: EarlierSides, media_sha256: dict[Hashable, str | None]) -> dict[Hashable, str]:
    """media id -> earlier group of this export's media (id -> sha256) that are face crops the earlier export
    wrote (imported into this store: matched by the crop's bytes) and that its split.csv gives a group, for
    `copy_groups` to keep apart when only their hashes are near (`apart_labels`, `labels_kept_apart`). Media
    matched as media (not crops) carry their own frames' hashes, which the earlier export compared too: the
    radius asked for now applies to them."""
    return {media_id: earlier.groups[key] for media_id, sha in media_sha256.items()
            if (key := earlier.key_of(media_id, sha)) is not None and key[0] == "crop" and key in earlier.groups}


def apart_labels(imported: dict[Hashable, frozenset[str]],
                 followed: dict[Hashable, str] | None = None) -> dict[Hashable, frozenset]:
    """media -> its `apart` labels for `copy_groups`, (export, group) pairs: the groups recorded when it was
    imported from an export (`labeling.import_groups.recorded_groups`, each under the export it came from,
    `export_of`), and the group of a followed export that wrote it as a crop (`earlier_crop_groups`, all of
    one export). Why both: the groups recorded at import keep different clips' crops apart in every later
    export, followed or not, and the followed export's still does in a store that imported it before groups
    of one row were recorded. Why the export: only groups of one export are different clips
    (`labels_kept_apart`); the followed export's are tagged apart, so a group number never meets a key."""
    labels: dict[Hashable, frozenset] = {m: frozenset((export_of(k), k) for k in keys) for m, keys in imported.items()}
    for m, group in (followed or {}).items():
        labels[m] = labels.get(m, frozenset()) | {("followed", group)}
    return labels


def group_pairs(members: Iterable[tuple[Hashable, Hashable | None]]) -> list[tuple[Hashable, Hashable]]:
    """(member, member) pairs joining the members (member, group; None: no group) of each group: each paired
    with its group's first member seen, a chain, which is all `copy_groups`' union-find needs."""
    first: dict[Hashable, Hashable] = {}
    pairs: list[tuple[Hashable, Hashable]] = []
    for member, group in members:
        if group is not None and (head := first.setdefault(group, member)) != member:
            pairs.append((head, member))
    return pairs


def no_face_kept(earlier: EarlierSides) -> str:
    """What to say when an earlier export with sides keeps none of this export's faces on one. Why: a store
    that imported that export holds its crops as media of their own, matched only by their bytes; when
    nothing matches, the editor must hear that the split was drawn anew, or a model trained on it is
    validated on faces it saw unsaid."""
    old = ("; its split.csv records no sha256 of its face crops (written before it did), so crops of it imported "
           "into a store are not found: export again in the store that wrote it, following it, and give that "
           "export instead" if not earlier.by_crop_sha256 else "")
    return ("none of this export's faces is of a media item its split.csv lists (by the media's sha256, or that "
            f"of a face crop it exported), so no face keeps an earlier side and the split is drawn anew{old}")


def _manifest_share(manifest: Path) -> float | None:
    """The validation share an export's manifest records, None when it cannot say (no manifest, another
    format): a note about that export must not guess it."""
    try:
        share = json.loads(manifest.read_text(encoding="utf-8"))["split"]["share"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(share) if isinstance(share, (int, float)) and not isinstance(share, bool) else None


def earlier_group_sides(group_media: dict[Hashable, Iterable[Hashable]], earlier: dict[Hashable, str],
                        no_validation: bool = False) -> tuple[dict[Hashable, str], set[Hashable]]:
    """(group -> side for every group holding a media item of the earlier export, the groups that
    unite media of both earlier sides). A group keeps its media's earlier side; one uniting both
    sides (a near-duplicate found only now) goes to train, so no face an earlier model trained on
    becomes a validation face (a validation face that now trains does no such harm). With
    `no_validation` (a share of 0: the editor asked for no validation set) every kept group trains."""
    kept: dict[Hashable, str] = {}
    both: set[Hashable] = set()
    for group, media in group_media.items():
        seen = {earlier[m] for m in media if m in earlier}
        if not seen:
            continue
        if len(seen) > 1:
            both.add(group)
        kept[group] = "val" if seen == {"val"} and not no_validation else "train"
    return kept, both


def sides_to_keep(earlier: EarlierSides | None, split: float) -> tuple[EarlierSides | None, list[str]]:
    """(the earlier sides this export keeps, notes). An earlier export without validation faces
    (written with a share of 0) gives none when this one asks for validation: kept, its sides would
    train every earlier face for good, export after export, and validation would only ever get new
    media. Its label indices are still kept; the note says the split is drawn anew. An earlier export
    that lists no face (`lists_nothing`) gives no sides either, and no note: no face of it is known to
    a model, and none of this export's faces could match it (a note that none does would be noise)."""
    if earlier is not None and earlier.lists_nothing:
        return None, []
    if earlier is None or split == 0 or earlier.has_validation:
        return earlier, []
    why = ("" if earlier.share is None else " (written with a validation share of 0)" if earlier.share == 0 else
           f" (written with a validation share of {earlier.share:g}, yet none of its faces was drawn for validation)")
    return None, [f"{earlier.path.parent} has no validation faces{why}: its label indices are "
                  "kept, its train / validation sides are not, and the split is drawn anew (a model trained on that "
                  "export has seen every earlier face, so some validation faces are known to it)"]


def validation_shortfall(val_faces: int, faces: int, split: float, kept_train: int) -> str | None:
    """A note when validation holds less than half the share asked for and faces that kept their
    earlier train side are why (`kept_train` of them), else None. Kept sides are right (a model
    trained on them must not be validated on them), but they can leave a validation set too small to
    measure anything, and the editor should hear it rather than find it in the counts."""
    if not (faces and split > 0 and kept_train and val_faces / faces < split / 2):
        return None
    return (f"validation holds {val_faces} of {faces} faces ({val_faces / faces:.0%}), under half the {split:.0%} "
            f"asked for: {kept_train} face(s) kept their train side from the earlier export, and only media new "
            "to it can be drawn for validation; without the earlier export (--no-previous) the split is drawn "
            "anew, but a model trained on it would then be validated on faces it trained on")


def small_validation(val_faces: int, faces: int, split: float, kept_train: int, target: int,
                     without_validation: list[str]) -> list[str]:
    """The notes on a validation set holding less than half the share asked for: because faces kept
    their earlier train side (`validation_shortfall`), or because groups of copies (one clip's faces, a
    photo and its copies) larger than a class's validation target stay in train whole, leaving it under
    the `target` the classes aimed at (sum of `validation_target`); and the classes whose target asked for
    a validation face that got none (`without_validation`, by name; the first ten). Not when rounding
    alone is why (classes of one or two faces aim at none at a share of 0.2: the documented rule).
    Why: an export whose validation set measures nothing must say so, not leave it to the counts."""
    if not (faces and split > 0 and val_faces / faces < split / 2) or not (kept_train or val_faces < target):
        return []
    notes = [validation_shortfall(val_faces, faces, split, kept_train)] if kept_train else [
        f"validation holds {val_faces} of {faces} faces ({val_faces / faces:.0%}), under half the {split:.0%} "
        "asked for: a group (the faces of one media item with its near-duplicates and copies) goes to one side "
        "whole, and to validation only while each of its classes stays within round(share x its faces), so "
        "groups larger than a class's validation target stay in train (more faces per class, or a larger share, "
        "give validation room)"]
    if without_validation:
        notes.append(f"{len(without_validation)} class(es) have no validation face, though their share asks for "
                     f"one or more: {listed_names(without_validation)}")
    return [n for n in notes if n is not None]


def listed_names(names: Iterable[str], limit: int = NAMES_SHOWN) -> str:
    """Names quoted, the first `limit` of them, then "and N more": a note stays one readable line."""
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def moved_to_train_note(earlier: Path, moved_classes: list[str], uniting: int, no_validation: bool,
                        radius: int = NEAR_DUPLICATE_RADIUS) -> str:
    """What to say when faces that were validation faces in the followed export (`earlier`) now train, one
    class name per face moved (`moved_classes`), and why: a share of 0 (`no_validation`: no validation set
    asked for), else `uniting` groups of copies that unite media of both its sides (`earlier_group_sides`:
    such a group trains). Why a note: a validation face that trains leaves that export's and this one's
    validation sets different, which a comparison of models validated on each must hear, not find in the
    manifest's counts."""
    counts = Counter(moved_classes)
    which = listed_names(sorted(counts, key=lambda c: (-counts[c], c)))
    head = f"{len(moved_classes)} face(s) that were validation faces in {earlier} now train (of {which})"
    if no_validation:
        return f"{head}: a validation share of 0 asks for no validation set"
    return (f"{head}: {uniting} group(s) of copies here unite media of its train and validation sides (frame hashes "
            f"within {radius} bits, nearly identical faces, or one clip's media), and a group goes to one side "
            "whole: train, so that no face a model trained on that export becomes a validation face")


def retired_classes_note(retired: list[tuple[str, int]]) -> str:
    """What to say when retired classes (name, confirmed faces) hold confirmed faces: the export leaves them
    out, which is the rule, but silently their faces would seem lost (and a model trained on the export no
    longer knows those people)."""
    faces = sum(n for _, n in retired)
    return (f"{len(retired)} retired class(es) ({faces} confirmed face(s)) left out: "
            f"{listed_names(name for name, _ in retired)}; set a class active again on the Classes page to export it")


# -- label indices (pure) ------------------------------------------------------------------------
def class_indices(class_ids: Iterable[int], previous: dict[int, int] | None = None) -> dict[int, int]:
    """class id -> label index, dense (0..n-1). Without `previous`, in class-id order: ids grow
    with creation, so a new class appends. With `previous` (class id -> index of an earlier
    export), a surviving class keeps its index while it is below n; the free indices go, in
    order, to the survivors that must move (by earlier index), then to new classes (by id)."""
    ids = sorted(set(class_ids))
    prev = previous or {}
    out = {c: prev[c] for c in ids if c in prev and prev[c] < len(ids)}
    free = sorted(set(range(len(ids))) - set(out.values()))
    rest = sorted((c for c in ids if c not in out), key=lambda c: (c not in prev, prev.get(c, 0), c))
    out.update(zip(rest, free))
    return out


@dataclass(frozen=True)
class EarlierClass:
    """A row of an earlier export's classes.csv: what a later export needs to find the class again."""

    line: int
    class_id: int
    index: int
    name: str | None  # None: a class map without names (written by hand): its ids are all it has
    external_id: str | None
    folder: str | None = None  # its raw_dataset/ folder (None: a class map without the column)


@dataclass(frozen=True)
class EarlierClasses:
    """An earlier export's class map, and whether this store may trust its class ids (see
    `match_earlier_classes`): `manifest_sha256` is that of its manifest.json when the manifest still
    vouches for its classes.csv (`followable_export`), None otherwise."""

    path: Path  # the classes.csv
    rows: list[EarlierClass]
    manifest_sha256: str | None = None

    def indices(self) -> dict[int, int]:
        """class id (of the store that wrote it) -> index."""
        return {r.class_id: r.index for r in self.rows}


def read_earlier_classes(path: Path) -> EarlierClasses:
    """An earlier export's class map (its folder or its classes.csv): class id and index of each row,
    and its name and external id where the file has them."""
    path = Path(path)
    if path.is_dir():
        path = path / "classes.csv"
    header, rows = read_csv(path, ["class_id", "index"], known=["name", "external_id", "folder"])
    out: list[EarlierClass] = []
    class_line: dict[int, int] = {}
    index_line: dict[int, int] = {}
    for line, row in rows:
        try:
            class_id, index = int(row["class_id"]), int(row["index"])
        except ValueError:
            raise ValidationError(f"{path}: line {line}: class_id and index must be whole numbers") from None
        if index < 0:
            raise ValidationError(f"{path}: line {line}: index {index} is negative")
        for what, value, seen in (("class", class_id, class_line), ("index", index, index_line)):
            if value in seen:
                raise ValidationError(f"{path}: line {line}: {what} {value} repeats line {seen[value]}")
        class_line[class_id], index_line[index] = line, line
        out.append(EarlierClass(line, class_id, index, row["name"] if "name" in header else None,
                                row.get("external_id") or None, row.get("folder") or None))
    manifest = path.parent / "manifest.json"
    digest = sha256_file(manifest) if manifest.is_file() else None
    trusted = (digest if digest is not None and followable_export(path.parent, digest) and path.name == "classes.csv"
               else None)
    return EarlierClasses(path, out, trusted)


def read_class_indices(path: Path) -> dict[int, int]:
    """class id -> index from an earlier export (its folder or its classes.csv), as that export's
    store numbered its classes (`match_earlier_classes` finds them in this store)."""
    return read_earlier_classes(path).indices()


class ClassMatch(NamedTuple):
    """How an earlier export's classes were found in this store (`match_earlier_classes`)."""

    indices: dict[int, int]  # class id here -> its earlier index, for `class_indices`
    notes: list[str]
    ids_are_ours: bool  # its ids name this store's classes (none had to be found by name): its media ids may too


def match_earlier_classes(earlier: EarlierClasses, classes: dict[int, Any], trusted: bool = False,
                          renamed: Iterable[tuple[str, int]] = ()) -> ClassMatch:
    """Each class of an earlier export, found in this store: its index, notes, whether ids were enough.

    Class ids only mean the same class in the store that wrote the export: another store's export (or
    a copy of one) numbers other classes with them, and following its ids would silently renumber
    every class. So ids are taken as they are only when `trusted` (the export is one this store
    recorded, still intact) or when the file has no names to check them by. Otherwise a row keeps its
    class id when this store's class of that id has its name (`class_name_key`: any case, spacing),
    had it before a rename (`renamed`: (name key, class id)), or has its external id; failing that,
    the class of its name (else of its external id) takes its index, and a note says how many were
    matched so. A row whose class
    is in neither way here is a class this store does not have (dropped, like a retired one). If no row
    matches, the export is another store's with nothing in common: a PreviousExportError says so."""
    if trusted or not earlier.rows or any(r.name is None for r in earlier.rows):
        return ClassMatch(earlier.indices(), [], True)
    former = set(renamed)
    by_key = {class_name_key(c.name): c for c in classes.values()}
    out: dict[int, int] = {}
    pending: list[EarlierClass] = []
    for r in earlier.rows:
        here, key = classes.get(r.class_id), class_name_key(r.name or "")
        if here is not None and (class_name_key(here.name) == key or (key, here.id) in former
                                 or (r.external_id and here.external_id == r.external_id)):
            out[here.id] = r.index
        else:
            pending.append(r)
    by_name: list[tuple[EarlierClass, int]] = []
    by_external = {c.external_id: c for c in classes.values() if c.external_id}
    for r in pending:
        here = by_key.get(class_name_key(r.name or "")) or (by_external.get(r.external_id) if r.external_id else None)
        if here is not None and here.id not in out:
            out[here.id] = r.index
            by_name.append((r, here.id))
    if not out:
        raise PreviousExportError(f"{earlier.path}: none of its {len(earlier.rows)} classes is a class of this store "
                                  "(by class id and name): it is another store's export; give one of this store's")
    notes = []
    if by_name:
        r, here_id = by_name[0]
        notes.append(f"{earlier.path}: {len(by_name)} of its {len(earlier.rows)} classes were found by name, their "
                     f"class ids there naming other classes here (e.g. {r.name!r}: class {r.class_id} there, "
                     f"{here_id} here): another store's export; their earlier indices are kept")
    return ClassMatch(out, notes, not by_name)


class PreviousExportError(ValidationError):
    """The earlier export given as `previous` cannot be read. A class of its own, so a caller that
    chose the export without being told to (the CLI's default) can say so in the message."""


def read_previous(previous: Path) -> tuple[EarlierClasses, EarlierSides | None]:
    """(its class map, its sides) of an earlier export (its folder or classes.csv); any problem
    is a PreviousExportError naming the file and line."""
    try:
        return read_earlier_classes(previous), read_earlier_sides(previous)
    except ValidationError as exc:
        raise PreviousExportError(str(exc)) from exc


# -- earlier exports of the store ------------------------------------------------------------------
FOLLOWED_FILES = ("classes.csv", "split.csv")  # what a later export reads of an earlier one


# Stat-keyed caches of what the Export page reads of every past export on each rerun (`_stat_key`): hashes of
# manifest.json, classes.csv and split.csv, a manifest's few facts, and `export_damage`'s answer. Why: 5 exports
# of 50k crops each took 20 s per page draw read afresh; a key is one stat per file and per folder of the export.
_HASHES: OrderedDict[str, tuple[tuple[int, ...], str]] = OrderedDict()
_FACTS: OrderedDict[str, tuple[tuple[int, ...], "_ManifestFacts"]] = OrderedDict()
_DAMAGE: OrderedDict[str, tuple[tuple[Any, ...], tuple[str | None, float]]] = OrderedDict()
# Paths each cache keeps at least, the least recently used dropped past that (`_remember`); more while the store
# records more exports (`_make_room`): a page draw reads every past export in turn, so a cache smaller than that
# cycle would drop each entry just before it is asked for again, and every draw hash every file anew.
_CACHE_LIMIT = 512
_PATHS_PER_EXPORT = 4  # its manifest.json, classes.csv and split.csv hashed (`_HASHES`), one spare
_cache_room = _CACHE_LIMIT
_CACHE_LOCK = threading.Lock()  # Streamlit draws each session's page in a thread of its own: one reorders at a time
# Seconds `export_damage`'s answer is kept while its keys stand still: a crop overwritten or cut short in place
# changes no folder, so the answer is found again (one os.stat per file) at most once this often per export.
DAMAGE_RECHECK_SECONDS = 60.0
_clock = time.monotonic  # the clock `_DAMAGE` answers are aged by


def _stat_key(path: Path | str) -> tuple[int, ...]:
    """What changes when a file or folder is written, replaced or has an entry added or removed (inode, size,
    mtime and ctime in ns: ctime cannot be set back by hand). Raises FileNotFoundError for one gone."""
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _stat_or_none(path: str) -> tuple[int, ...] | None:
    """`_stat_key`, None for a path gone (a class folder deleted: a damage to find, not an error)."""
    try:
        return _stat_key(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _remember(cache: OrderedDict[str, Any], path: str, key: Any, value: Any) -> None:
    """Keep (key, value) for `path` as the most recently used entry, the least recently used ones dropped past
    `_cache_room` (not all at once: the entries of exports still drawn stay)."""
    with _CACHE_LOCK:
        cache[path] = (key, value)
        cache.move_to_end(path)
        while len(cache) > _cache_room:
            cache.popitem(last=False)


def _recall(cache: OrderedDict[str, Any], path: str) -> Any:
    """The (key, value) kept for `path` (None: none), marked as just used."""
    with _CACHE_LOCK:
        hit = cache.get(path)
        if hit is not None:
            cache.move_to_end(path)
        return hit


def _make_room(exports: int) -> None:
    """Let each cache keep the paths of `exports` past exports (`_PATHS_PER_EXPORT` each), at least
    `_CACHE_LIMIT`: what one page draw reads, so that the next draw finds it all."""
    global _cache_room
    _cache_room = max(_cache_room, _CACHE_LIMIT, _PATHS_PER_EXPORT * exports)


def _cached_sha256(path: Path) -> str:
    """sha256_file of `path`, hashed again only when its `_stat_key` changed."""
    key = _stat_key(path)
    hit = _recall(_HASHES, str(path))
    if hit is not None and hit[0] == key:
        return hit[1]
    digest = sha256_file(path)
    _remember(_HASHES, str(path), key, digest)
    return digest


@dataclass(frozen=True)
class _ManifestFacts:
    """What is read of an export's manifest.json on every page draw: its sha256, the sha256 it lists for each
    FOLLOWED_FILES, and the folders holding its listed files (their stats key `export_damage`'s cache)."""

    sha256: str
    followed: dict[str, str]
    folders: tuple[str, ...]


@dataclass(frozen=True)
class _ParsedManifest:
    """A manifest.json as parsed, with the `_stat_key` it had when read: handed from `_read_manifest_facts`
    to `_files_damage` by `export_damage` so that a 50k-file manifest is not parsed twice (0.2 s each), and
    used only while the file still has that key."""

    key: tuple[int, ...]
    data: dict[str, Any]


def _manifest_facts(out_dir: Path) -> _ManifestFacts:
    """The `_ManifestFacts` of out_dir's manifest.json, parsed again only when the file changed. Raises
    OSError (FileNotFoundError: none), ValueError, KeyError, TypeError or AttributeError for one that is no
    export manifest."""
    return _read_manifest_facts(out_dir)[0]


def _read_manifest_facts(out_dir: Path) -> tuple[_ManifestFacts, _ParsedManifest | None]:
    """`_manifest_facts`, and the manifest when it was parsed for them now (None: the facts were kept). Why
    returned, not kept aside: the caller that reads the whole manifest next (`export_damage`) gets it without
    a module-wide slot that pages drawn at once in Streamlit's threads would overwrite for one another."""
    path = out_dir / "manifest.json"
    key = _stat_key(path)
    hit = _recall(_FACTS, str(path))
    if hit is not None and hit[0] == key:
        return hit[1], None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    files = manifest["files"]
    facts = _ManifestFacts(_cached_sha256(path), {n: files[n] for n in FOLLOWED_FILES if n in files},
                           tuple(sorted({rel.rpartition("/")[0] for rel in files})))
    _remember(_FACTS, str(path), key, facts)
    return facts, _ParsedManifest(key, manifest)


def followable_export(out_dir: Path, manifest_sha256: str | None) -> bool:
    """Whether a later export may follow out_dir as the export the store recorded: its manifest.json is the
    recorded one (sha256), lists classes.csv, and the files a later export reads (FOLLOWED_FILES) match it.
    A folder another store's export replaced, or whose class map was edited by hand, is not that export any
    more: its indices would name other classes, its sides other faces. A crop deleted or damaged since does
    not change what is followed (`export_damage` says it): passed over, an older export was followed and
    faces the newer one trained on were drawn again, into validation too."""
    out_dir = Path(out_dir)
    try:
        facts = _manifest_facts(out_dir)
        return (bool(manifest_sha256) and facts.sha256 == manifest_sha256 and "classes.csv" in facts.followed
                and all(_cached_sha256(out_dir / n) == d for n, d in facts.followed.items()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def export_damage(out_dir: Path, manifest_sha256: str | None) -> str | None:
    """Why out_dir no longer holds, whole, the export the store recorded (None: it does): not followable
    (`followable_export`), or files its manifest lists are missing or not of their recorded size (`sizes`,
    written since sizes were). One os.stat per file, no hashing (`verify_export` hashes them all), and the
    answer kept until manifest.json, a followed file or a folder of the export changes (`_DAMAGE`: a file
    deleted or added changes its folder), and for DAMAGE_RECHECK_SECONDS at most: a crop overwritten or cut
    short in place changes no folder, and is found by the next look after that (Verify finds it at once)."""
    out_dir = Path(out_dir)
    if not manifest_sha256:
        return "the store recorded no manifest of it"
    try:
        facts, parsed = _read_manifest_facts(out_dir)
        if facts.sha256 != manifest_sha256:
            return "its manifest.json is not the one this export wrote (replaced or edited)"
        if "classes.csv" not in facts.followed:
            return "its manifest lists no classes.csv"
        key = (manifest_sha256, _stat_key(out_dir / "manifest.json"),
               tuple(_stat_key(out_dir / n) for n in facts.followed),
               tuple(_stat_or_none(os.path.join(out_dir, d)) for d in facts.folders))
    except FileNotFoundError as exc:
        return f"its {Path(exc.filename or 'manifest.json').name} is missing"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # unreadable, not JSON, not a manifest
        return f"it cannot be read as an export ({exc})"
    hit, now = _recall(_DAMAGE, str(out_dir)), _clock()
    if hit is not None and hit[0] == key and 0 <= now - hit[1][1] < DAMAGE_RECHECK_SECONDS:
        return hit[1][0]
    why = _files_damage(out_dir, facts, parsed)
    _remember(_DAMAGE, str(out_dir), key, (why, now))
    return why


def _files_damage(out_dir: Path, facts: _ManifestFacts, parsed: _ParsedManifest | None) -> str | None:
    """`export_damage` read afresh: the followed files hashed, every listed file stat'ed once (os.stat on the
    joined text path: Path objects and an is_file() before each stat made it 15 times slower). `parsed`: the
    manifest as `_read_manifest_facts` just parsed it, read again when None or the file changed since."""
    try:
        for name, digest in facts.followed.items():
            if sha256_file(out_dir / name) != digest:
                return f"{name} differs from its manifest"
        path = out_dir / "manifest.json"
        manifest = (parsed.data if parsed is not None and parsed.key == _stat_key(path)
                    else json.loads(path.read_text(encoding="utf-8")))
        sizes, root = manifest.get("sizes") or {}, os.fspath(out_dir)
    except FileNotFoundError as exc:
        return f"its {Path(exc.filename or 'manifest.json').name} is missing"
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        return f"it cannot be read as an export ({exc})"
    missing, short = [], []
    for rel in manifest["files"]:
        try:
            size = os.stat(os.path.join(root, rel)).st_size
        except (FileNotFoundError, NotADirectoryError):
            missing.append(rel)
            continue
        except OSError as exc:
            return f"{rel} cannot be read ({exc.strerror or exc})"
        if rel in sizes and size != sizes[rel]:
            short.append(f"{rel} ({size} bytes, its manifest {sizes[rel]})")
    if not missing and not short:
        return None
    shown = [f"{rel} (missing)" for rel in missing[:3]] + short[:max(0, 3 - len(missing))]
    more = len(missing) + len(short) - len(shown)
    return (f"{len(missing)} file(s) missing and {len(short)} of another size than written: {', '.join(shown)}"
            f"{f' and {more} more' if more else ''}")


def intact_export(out_dir: Path, manifest_sha256: str | None) -> bool:
    """Whether out_dir still holds the export the store recorded, whole (`export_damage`): the Export page's
    "on disk". Which export is followed is `followable_export`'s."""
    return export_damage(out_dir, manifest_sha256) is None


def _recorded_exports(store: sessionmaker[Session]) -> list[tuple[Path, str | None]]:
    """(folder, manifest sha256) of the store's recorded exports, newest first."""
    with store() as session:
        rows = session.execute(select(Export.out_dir, Export.manifest).order_by(Export.id.desc())).all()
    _make_room(len(rows))
    return [(Path(out_dir), (record or {}).get("manifest_sha256")) for out_dir, record in rows]


def _followable_exports(store: sessionmaker[Session]) -> Iterator[Path]:
    """The folders of the store's recorded exports a new one may follow (`followable_export`), newest first
    (a folder exported into twice may come twice: only the newest row can match it, but order is kept)."""
    for out_dir, digest in _recorded_exports(store):
        if followable_export(out_dir, digest):
            yield out_dir


def earlier_exports(store: sessionmaker[Session]) -> list[Path]:
    """Earlier exports of the store a new one may follow, newest first, each folder once: recorded here,
    their manifest and class map and split as written (`followable_export`), a damaged crop or not (said:
    `damaged_export_note`). What the Export page offers."""
    return list(dict.fromkeys(_followable_exports(store)))


def newest_export(store: sessionmaker[Session]) -> Path | None:
    """The first of `earlier_exports` (None: none), checking no more folders than it must: what
    the CLI keeps label indices and sides of by default, as the Export page proposes, so a
    retraining job fine-tuning its last model finds every class at its output index and is never
    validated on faces it trained on."""
    return next(_followable_exports(store), None)


def damaged_export_note(folder: Path, why: str, followed: bool = True) -> str:
    """The note for an earlier export that is not whole since written: one followed (an export's note, the one
    the Export page has selected to follow) or, `followed` False, one only offered to follow (the page's other
    choices: said "followed", the editor took the selected one for another)."""
    then = ("its label indices and train / validation sides are followed from its classes.csv and split.csv as "
            "they are" if followed else "if followed, its label indices and train / validation sides are taken "
            "from its classes.csv and split.csv as they are")
    return (f"{folder}: {'followed' if followed else 'offered'}, but not whole since it was written: {why}; {then} "
            "(`giflens export --verify FOLDER`, or the Export page's Verify, lists every difference)")


def offered_damage(folder: Path) -> str | None:
    """`export_damage` of an export `earlier_exports` offers (its manifest.json is the recorded one, so its
    own sha256 names it), None when whole or not an export."""
    try:
        digest = _cached_sha256(Path(folder) / "manifest.json")
    except OSError:
        return None
    return export_damage(Path(folder), digest)


def damaged_previous_note(folder: Path, recorded: Iterable[str]) -> list[str]:
    """A note when the earlier export followed is one this store recorded (its manifest.json is) but its
    folder no longer holds all of it (`export_damage`): its indices and sides are followed all the same,
    from its classes.csv and split.csv, but the editor should hear it is not whole. Nothing for another
    store's export, whose manifest this store never recorded."""
    try:
        digest = _cached_sha256(Path(folder) / "manifest.json")
    except OSError:
        return []
    if digest not in set(recorded) or (why := export_damage(Path(folder), digest)) is None:
        return []
    return [damaged_export_note(Path(folder), why)]


def class_row(folder: str, index: int, cls: Any) -> list[Any]:
    """A row of classes.csv (CLASS_COLUMNS), an empty cell for an unknown value: everything an
    import of the raw dataset needs to create the class as it is here (name, external id, display
    name, status, attributes). A class the store already has keeps its status and gets only its
    empty fields filled (`labeling.importers`)."""
    return [folder, index, cls.id, cls.name, *["" if v is None else v for v in (
        cls.external_id, cls.display_name, cls.status, cls.gender, cls.ethnicity, cls.birth_year, cls.country)]]


def verify_export(out_dir: Path, on_progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Files whose sha256 differs from the manifest, or that are missing or unlisted (empty: intact). Files
    the OS writes into any folder it shows (`OS_METADATA_FILES`) are no difference: an export looked at in
    Finder or Explorer is still whole. A manifest.json that is missing or unreadable is the one problem.
    on_progress(done, total) counts the files hashed (seconds at 50k crops), from (0, total) on."""
    out_dir = Path(out_dir)
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
        listed = manifest["files"]
        if not isinstance(listed, dict):
            raise TypeError("its files are not a mapping")
    except FileNotFoundError:
        return ["manifest.json: missing (not an export, or not a whole one)"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"manifest.json: cannot be read as an export's ({exc})"]
    present = {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*")
               if p.is_file() and not OS_METADATA_FILES.fullmatch(p.name)} - {"manifest.json"}
    problems = [f"{rel}: missing" for rel in sorted(set(listed) - present)]
    problems += [f"{rel}: not in the manifest" for rel in sorted(present - set(listed))]
    both = sorted(set(listed) & present)
    for done, rel in enumerate(both):
        if on_progress is not None:
            on_progress(done, len(both))
        if sha256_file(out_dir / rel) != listed[rel]:
            problems.append(f"{rel}: sha256 differs")
    if on_progress is not None:
        on_progress(len(both), len(both))
    return problems


@dataclass
class ExportSummary:
    out_dir: Path
    export_id: int
    classes: int
    faces: int
    train: int
    val: int
    missing_crops: int
    media_with_tags: int
    projector_vectors: int
    gif_vectors: int
    seconds: float
    manifest: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what the editor should hear about the split (manifest too)
    # of missing_crops: those with a crop path the data folder below has no file for (the rest have no crop
    # of the face model at all); a crop path is relative to the data folder of whoever ingested the face
    crops_not_found: int = 0
    data_dir: Path | None = None  # where the crops were looked for

    def line(self) -> str:
        missing = f", {self.missing_crops} without a crop skipped" if self.missing_crops else ""
        return (f"exported {self.classes} classes, {self.faces} faces (train {self.train}, val {self.val}){missing}, "
                f"{self.media_with_tags} tagged media, {self.projector_vectors} face projector vectors to {self.out_dir} "
                f"in {self.seconds:.1f} s ({self.gif_vectors} GIF vectors in projector/gif_vectors.tsv)")


NO_CONFIRMED_LABELS = ("no confirmed labels (approved or relabeled faces of a class that is not retired): the export "
                       "holds no class and no face; approve faces in the app, or run `giflens import raw-dataset`")


def no_faces_exported(summary: "ExportSummary", how_to_choose: str) -> str | None:
    """What to say when confirmed labels were skipped for want of a face crop (an export that lacks
    them is otherwise easy to take for a complete one, and a later export follows it); `how_to_choose`
    says how this front end names another face model. None when nothing was missing. Crops that are
    recorded but not in this data folder are named apart (`crops_not_found_note`): a crop path is
    relative to the data folder of whoever ingested or imported the face, so a teammate's data folder
    on a shared store misses them all, while another model is not the cause."""
    if not summary.missing_crops:
        return None
    no_crop = summary.missing_crops - summary.crops_not_found
    model = summary.manifest.get("face_model", "the chosen model")
    if not summary.faces and not summary.crops_not_found:
        return (f"no face exported: none of the {no_crop} confirmed label(s) has a face crop of {model} "
                f"(faces ingested with another model? {how_to_choose}; crops deleted? ingest again)")
    notes = [crops_not_found_note(summary.crops_not_found, summary.data_dir)] if summary.crops_not_found else []
    if no_crop:
        notes.append(f"{no_crop} confirmed label(s) skipped: no face crop of {model} "
                     f"(faces ingested with another model? {how_to_choose})")
    return ("no face exported: " if not summary.faces else "") + "; ".join(notes)


def crops_not_found_note(count: int, data_dir: Path | None) -> str:
    """Confirmed labels skipped because their recorded crop is not a file under `data_dir`: why and
    what to do (share the data folder, or ingest the media again with this one)."""
    where = "this data folder" if data_dir is None else f"the data folder {data_dir}"
    return (f"{count} confirmed label(s) skipped: their face crops are not in {where} (faces ingested or "
            f"imported with another --data-dir? editors sharing one database should share one data folder, "
            f"or ingest the media with this one; crops deleted? ingest again)")


def check_out_dir(out_dir: Path, overwrite: bool, data_dir: Path | None = None) -> None:
    """Refuse an OUT_DIR the export may not write (a file, a folder that is not an earlier export,
    `not_replaceable`, a folder giflens keeps its own data in when `data_dir` is given,
    `refuse_data_folder`), as `export_dataset` checks it: a symbolic link by the folder it names
    (`resolve_out_dir`)."""
    out_dir = resolve_out_dir(out_dir)
    if data_dir is not None:
        refuse_data_folder(out_dir, data_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValidationError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise ValidationError(f"{out_dir} exists and is not empty; choose another folder or replace it (--overwrite; on the Export page, \"Replace the folder if it exists\")")
        why = not_replaceable(out_dir)
        if why is not None:
            raise ValidationError(f"{out_dir} is not empty and {why}; refusing to overwrite it")


# Files an operating system's file browser writes into any folder it shows (Finder, and over SMB its
# AppleDouble `._*` files; Explorer): not an editor's, and they go with the folder they describe.
OS_METADATA_FILES = re.compile(r"\.DS_Store|\._.*|Thumbs\.db|desktop\.ini", re.IGNORECASE)


def is_export_manifest(data: Any) -> bool:
    """Whether a parsed manifest.json is a giflens export's: `format` FORMAT and a `files` mapping; or,
    written before `format` existed (the first giflens version), no `format` and a `files` mapping that
    lists labels.csv and classes.csv. Why: an export that old is still one an editor may replace."""
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return False
    if "format" not in data:
        return {"labels.csv", "classes.csv"} <= data["files"].keys()
    return data["format"] == FORMAT


def not_replaceable(out_dir: Path) -> str | None:
    """What the folder is, said as why replacing it could delete something that is not an export's ("is
    not a giflens export (...)", "holds an earlier export plus ..."), None when it holds an export only:
    its manifest.json is a giflens export's (`is_export_manifest`) and lists every other file in it but
    those the OS writes into any folder (`OS_METADATA_FILES`). Why not a manifest.json alone: web
    extensions, PWAs and many projects keep one at their root; and a file someone put into an export
    (notes, a trained model) would go with it unsaid."""
    manifest = out_dir / "manifest.json"
    if not manifest.is_file():
        return "is not a giflens export (no manifest.json)"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"is not a giflens export (its manifest.json cannot be read as JSON ({exc}))"
    if not is_export_manifest(data):
        return f"is not a giflens export (its manifest.json is not a {FORMAT} manifest)"
    extra = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*")
                   if not p.is_dir() and p != manifest and not OS_METADATA_FILES.fullmatch(p.name)
                   and p.relative_to(out_dir).as_posix() not in data["files"])
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        return (f"holds an earlier export plus {len(extra)} file(s) its manifest does not list: {shown}; "
                "move them out first")
    return None


def _export_gif_model(session: Session, gif_model: str | None) -> str | None:
    """The GIF embedding model to export: the one asked for, else the one most media items were
    embedded with (ties: the first by name), as the Explore page's GIFs view shows. Unlike tagging,
    a store with several GIF models does not refuse the export: the label export must not depend
    on it, and the chosen model is recorded in the manifest."""
    if gif_model is not None:
        return gif_model
    return session.scalars(select(MediaEmbedding.model_id).group_by(MediaEmbedding.model_id)
                           .order_by(func.count().desc(), MediaEmbedding.model_id).limit(1)).first()


def _read_snapshot(session: Session, face_model: str, gif_model: str | None = None) -> dict[str, Any]:
    """Everything the export needs, read in one transaction (a consistent snapshot)."""
    labels = session.execute(
        select(FaceLabel.face_id, FaceLabel.class_id, FaceLabel.status, FaceLabel.source, Face.media_id,
               FaceEmbedding.crop_path, FaceEmbedding.vector)
        .join(Face, Face.id == FaceLabel.face_id)
        .join(CelebrityClass, CelebrityClass.id == FaceLabel.class_id)
        .outerjoin(FaceEmbedding, (FaceEmbedding.face_id == Face.id) & (FaceEmbedding.model_id == face_model))
        .where(FaceLabel.status.in_(CONFIRMED_STATUSES), CelebrityClass.status != "retired")
        .order_by(FaceLabel.face_id)).all()
    projector = session.execute(
        select(FaceLabel.face_id, FaceLabel.class_id, FaceLabel.status, FaceLabel.source, FaceEmbedding.vector)
        .join(FaceEmbedding, (FaceEmbedding.face_id == FaceLabel.face_id) & (FaceEmbedding.model_id == face_model))
        .order_by(FaceLabel.face_id)).all()
    classes = {c.id: c for c in session.scalars(select(CelebrityClass))}
    retired = session.execute(  # what the export leaves out unasked: `retired_classes_note`
        select(CelebrityClass.name, func.count(FaceLabel.face_id))
        .join(FaceLabel, FaceLabel.class_id == CelebrityClass.id)
        .where(FaceLabel.status.in_(CONFIRMED_STATUSES), CelebrityClass.status == "retired")
        .group_by(CelebrityClass.id, CelebrityClass.name).order_by(CelebrityClass.id)).all()
    media_ids = sorted({r.media_id for r in labels})
    media: dict[int, Any] = {}
    for start in range(0, len(media_ids), 5000):
        media.update({m.id: m for m in session.execute(
            select(Media.id, Media.sha256, Media.frame_hashes).where(Media.id.in_(media_ids[start : start + 5000])))})
    tags = session.execute(
        select(Media.id, Media.path, Media.sha256, Tag.name, MediaTag.confidence, MediaTag.source)
        .join(MediaTag, MediaTag.media_id == Media.id).join(Tag, Tag.id == MediaTag.tag_id)
        .where(MediaTag.status == "active").order_by(Media.id, MediaTag.confidence.desc(), Tag.name)).all()
    gif_model = _export_gif_model(session, gif_model)
    gifs = session.execute(
        select(MediaEmbedding.media_id, Media.path, Media.kind, MediaEmbedding.dim, MediaEmbedding.vector)
        .join(Media, Media.id == MediaEmbedding.media_id)
        .where(MediaEmbedding.model_id == gif_model).order_by(MediaEmbedding.media_id)).all()
    # what tells whether an earlier export's class ids are this store's (`match_earlier_classes`)
    recorded = {r.get("manifest_sha256") for r in session.scalars(select(Export.manifest)) if isinstance(r, dict)}
    return {"labels": labels, "projector": projector, "classes": classes, "media": media, "tags": tags,
            "retired": [(name, int(n)) for name, n in retired],
            "gif_model": gif_model, "gifs": gifs, "revision": current_revision(session.get_bind()),
            "recorded_manifests": recorded - {None}, "renames": renames(session),
            "imported_groups": recorded_groups(session, media_ids),
            "holds_media": bool(labels) or session.scalar(select(Media.id).where(Media.status == "ok")
                                                          .limit(1)) is not None}


def _write_csv(path: Path, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _tsv_cell(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _write_vectors(path: Path, vectors: list[np.ndarray]) -> None:
    """The Projector's vectors file: tab-separated floats, no header, row i = metadata row i."""
    with path.open("w", encoding="utf-8", newline="\n") as f:
        if vectors:
            np.savetxt(f, np.vstack(vectors), fmt="%.6f", delimiter="\t")


def top_tags_text(tags: Iterable[tuple[str, float]], limit: int = GIF_TOP_TAGS) -> str:
    """A media item's tags as one metadata cell, "cop (1.00); are (0.90)", in the order given
    (most confident first); at most `limit`, so the Projector's tooltip stays readable."""
    return "; ".join(f"{tag} ({float(confidence):.2f})" for tag, confidence in list(tags)[:limit])


def _hidden_stem(out_dir: Path) -> str:
    """OUT_DIR's name as the hidden folders beside it start (`_beside`): cut so the whole fits 255 bytes."""
    return out_dir.name.encode("utf-8")[:200].decode("utf-8", errors="ignore")


def _beside(out_dir: Path, what: str, nbytes: int) -> Path:
    """A hidden name beside OUT_DIR (`.<name>.<what>-<random hex>`), on its file system so renames stay
    atomic, the name cut so the whole fits the 255 bytes a file name may have."""
    return out_dir.parent / f".{_hidden_stem(out_dir)}.{what}-{secrets.token_hex(nbytes)}"


def _lock_folder(folder: Path, wait: bool = False) -> int | None:
    """An open descriptor of `folder` holding an exclusive lock on it (flock), None when another process
    holds one (with `wait`, until it lets go), or locks cannot be taken here (no fcntl, a file system
    refusing them). The kernel drops the
    lock when its process ends however it ends (SIGKILL, OOM), which is what tells a running export's
    temporary folder from a killed one's; a process id would be reused, or name another container's.
    OUT_DIR's parent is locked so while an export moves into place (`_place`)."""
    try:
        import fcntl
    except ImportError:  # Windows: no way to tell, so nothing is ever taken for stale
        return None
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


# What an export writes (`export_dataset`): the files at the top of its folder, raw_dataset/<folder>/<face id>.jpg
# and these in projector/. A hidden folder of another export's name is taken for a leftover only when its whole
# tree is that (`_export_shaped`).
EXPORT_FILES = frozenset({"labels.csv", "classes.csv", "split.csv", "tags.jsonl", "manifest.json"})
PROJECTOR_FILES = frozenset({"vectors.tsv", "metadata.tsv", "gif_vectors.tsv", "gif_metadata.tsv"})


def _export_entry(parts: tuple[str, ...]) -> bool:
    """Whether a file at `parts` (its path in the folder) is one an export writes (`EXPORT_FILES`)."""
    if len(parts) == 1:
        return parts[0] in EXPORT_FILES
    if parts[0] == "projector":
        return len(parts) == 2 and parts[1] in PROJECTOR_FILES
    return parts[0] == "raw_dataset" and len(parts) == 3 and re.fullmatch(r"\d+\.jpg", parts[2]) is not None


def _export_shaped(folder: Path, replaced: bool) -> bool:
    """Whether a hidden folder of another export's name holds what an export writes and nothing else: at least
    one file, every file one an export writes (`_export_entry`; folders only raw_dataset/, its class folders
    and projector/), nothing linked; a replaced export's (`replaced`) also its giflens manifest.json listing
    every file (`not_replaceable`). Why: beside OUT_DIR may be another program's `.sync.tmp-<hex>`, a user's
    `.photos.tmp-<date>` or a backup; only one that cannot be anything but an export's is removed unasked."""
    root, files = os.fspath(folder), 0
    try:
        for here, dirs, names in os.walk(root, onerror=_raise):
            rel = os.path.relpath(here, root)
            depth = () if rel == "." else tuple(rel.split(os.sep))
            if depth not in ((), ("raw_dataset",), ("projector",)) and not (len(depth) == 2 and depth[0] == "raw_dataset"):
                return False
            for name in dirs + names:
                if os.path.islink(os.path.join(here, name)):
                    return False
            if depth == () and not set(dirs) <= {"raw_dataset", "projector"}:
                return False
            if depth not in ((), ("raw_dataset",)) and dirs:  # projector/ and class folders hold files only
                return False
            if not all(_export_entry((*depth, n)) for n in names):
                return False
            files += len(names)
    except OSError:
        return False
    return files > 0 and (not replaced or not_replaceable(folder) is None)


def _raise(error: OSError) -> None:
    raise error


def _replacing_export_beside(folder: Path, stem: str) -> bool:
    """Whether the export that replaced `folder` (`.<stem>.old-<hex>`, renamed aside by `_place`) is beside it:
    a folder whose hidden stem is `stem` holding a giflens manifest.json other than `folder`'s. Why: an
    `.old-` folder of another name is only left by an export into that name, which is then there; a user's
    `mv v1 .v1.old-20261207` backup has no `v1` beside it, and an export killed between its two renames left
    the only copy of the earlier export, which must stay."""
    try:
        own = sha256_file(folder / "manifest.json")
        for sibling in folder.parent.iterdir():
            if (not sibling.name.startswith(".") and _hidden_stem(sibling) == stem and sibling.is_dir()
                    and not sibling.is_symlink() and not_replaceable(sibling) is None
                    and sha256_file(sibling / "manifest.json") != own):
                return True
    except OSError:
        return False
    return False


def remove_stale_temporaries(out_dir: Path, min_age: float = STALE_TMP_SECONDS) -> list[Path]:
    """Remove the hidden folders earlier exports left beside OUT_DIR, and return them: temporary folders
    of exports killed (SIGKILL, OOM, power loss: no handler ran), and earlier exports replaced but not
    deleted (an export interrupted while it deleted the one it replaced). Only folders named as
    `export_dataset` names them (`.<name>.tmp-<12 hex digits>`, `.<name>.old-<8 hex digits>`, not links) are
    taken: a temporary one older than `min_age` seconds and locked by no process (`_lock_folder`: a running
    export holds its own), a replaced one when it holds what a replaced export leaves (`_leftover_export`) and
    no export is moving into place beside it (the lock on OUT_DIR's parent, `_place`: only then may one be
    put back); anything else is left alone. Those of any export name, not OUT_DIR's only: the Export page
    proposes a new folder each time, so a killed export's folder name never comes again; one of another name
    must also hold nothing but what an export writes, and a replaced one sit beside the export that replaced it
    (`_others_leftover`).
    Why: each is a hidden, full copy of the crops, invisible in a listing, kept forever otherwise."""
    stem = re.escape(_hidden_stem(out_dir))
    temporary, replaced = re.compile(r"\..+\.tmp-[0-9a-f]{12}", re.S), re.compile(r"\..+\.old-[0-9a-f]{8}", re.S)
    own = re.compile(rf"\.{stem}\.(tmp-[0-9a-f]{{12}}|old-[0-9a-f]{{8}})")
    try:
        candidates = [p for p in out_dir.parent.iterdir() if temporary.fullmatch(p.name) or replaced.fullmatch(p.name)]
    except OSError:
        return []
    removed = []
    for path in sorted(candidates):
        is_temporary = temporary.fullmatch(path.name) is not None
        try:
            if (path.is_symlink() or not path.is_dir()
                    or (is_temporary and time.time() - path.stat().st_mtime < min_age)):
                continue
        except OSError:
            continue
        fd = _lock_folder(path if is_temporary else out_dir.parent)
        if fd is None:  # in use, or no lock to tell
            continue
        try:
            if own.fullmatch(path.name) is None and not _others_leftover(path, is_temporary):
                continue
            if is_temporary:
                shutil.rmtree(path, ignore_errors=True)
            elif _leftover_export(path):
                _delete_export(path)
        finally:
            os.close(fd)
        if not path.exists():
            removed.append(path)
    return removed


def _others_leftover(path: Path, is_temporary: bool) -> bool:
    """Whether a hidden folder of another export's name is that export's leftover (`_export_shaped`; a
    replaced one's also beside the export that replaced it, `_replacing_export_beside`). A replaced one's
    `not_replaceable` is asked here and again by `_leftover_export` before the delete, on purpose: here it keeps
    `_replacing_export_beside` from hashing a manifest.json that is no regular file (a FIFO would block), and
    there it is asked once more just before the folder goes, after the siblings were read."""
    if not _export_shaped(path, replaced=not is_temporary):
        return False
    return is_temporary or _replacing_export_beside(path, path.name[1:].rpartition(".old-")[0])


def removed_note(removed: list[Path]) -> str:
    """What `remove_stale_temporaries` removed, for the summary's notes: hidden folders vanish unseen else."""
    return (f"removed {len(removed)} hidden folder(s) interrupted exports left in {removed[0].parent} (a killed "
            f"export's temporary copy, or an earlier export replaced but not yet deleted): "
            f"{listed_names(p.name for p in removed)}")


def refuse_data_folder(out_dir: Path, data_dir: Path) -> None:
    """Refuse an OUT_DIR in one of the data folder's folders giflens writes its own data in: its uploads
    (an ingest of the data folder walks them, so the export's crops would come back as new media, every
    face a duplicate nobody labels) and its outputs but exports/ (the cache, projections, models, indexes,
    reports: files giflens rewrites or deletes as its own). exports/ is where exports belong. By the
    folder's real place, links followed (`data_folder_part`)."""
    from embeddings.pipeline import DATA_OUTPUTS, DATA_UPLOADS, data_folder_part

    part = data_folder_part(out_dir, data_dir, (DATA_UPLOADS, *(n for n in DATA_OUTPUTS if n != "exports")))
    if part is None:
        return
    why = ("an ingest of the data folder reads everything in it, so the export's crops would come back as new, "
           "unlabeled faces") if part == DATA_UPLOADS else "giflens keeps its own files there"
    raise ValidationError(f"{out_dir} is inside the data folder's {part}/ folder: {why}; export to another "
                          f"folder, e.g. under {Path(data_dir) / 'exports'}")


def resolve_out_dir(out_dir: Path) -> Path:
    """OUT_DIR made absolute with its ".." applied as the system applies them (`_anchored`), and when it
    is a symbolic link, the folder the link names. Why "..": "typo/.." is the folder it is in, not a new
    one; kept as typed, "typo/.." did not exist when checked, the export created "typo" and wrote
    everything, then found the folder not empty. Why the link: the export replaces OUT_DIR by renaming
    folders, and a rename moves the link itself: the old export would stay where the link points and the
    link would become a folder. A link that loops is refused."""
    from labeling.ingest import _anchored  # one rule for ".." in a typed path, as ingest follows it

    out_dir = _anchored(out_dir)
    if not out_dir.is_symlink():
        return out_dir
    try:
        return out_dir.resolve()
    except (OSError, RuntimeError) as exc:
        raise ValidationError(f"{out_dir} is a symbolic link that cannot be followed ({exc})") from None


def _place(tmp: Path, out_dir: Path, overwrite: bool) -> Callable[[], None]:
    """Move the finished export into place; returns a function that puts things back. OUT_DIR is checked
    again here, as `check_out_dir` checked it when the export started: a file saved into it, or an export
    another editor finished into it, while this one ran is not replaced unasked (`_changed`). An empty
    OUT_DIR goes by rmdir and the export is renamed onto its name, both of which fail rather than delete
    what appears in between; a replaced one is checked once more when renamed aside, out of reach of
    anyone saving into it by name, and put back when it holds more than an export. The caller holds the
    lock on OUT_DIR's parent (`_lock_folder`), so two exports into one OUT_DIR place one after the other."""
    old = None
    try:
        if out_dir.is_dir() and any(out_dir.iterdir()):
            why = (f"it {w}" if (w := not_replaceable(out_dir)) else None) if overwrite else "it is not empty any more"
            if why is not None:
                raise _changed(out_dir, why)
            old = _beside(out_dir, "old", 4)
            out_dir.rename(old)
            if (w := not_replaceable(old)) is not None:
                old.rename(out_dir)
                raise _changed(out_dir, f"it {w}")
        elif out_dir.is_dir():
            out_dir.rmdir()
    except OSError as exc:  # the earlier export stays as it was: nothing has moved
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise _changed(out_dir, "something was saved into it") from exc
        raise ValidationError(f"cannot replace {out_dir}: {exc.strerror or exc}") from exc
    try:
        os.rename(tmp, out_dir)
    except OSError as exc:
        if old is not None:
            old.rename(out_dir)
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise _changed(out_dir, "it was created and filled") from exc
        raise ValidationError(f"cannot move the export into {out_dir}: {exc.strerror or exc}") from exc

    def restore() -> None:
        shutil.rmtree(out_dir, ignore_errors=True)
        if old is not None:
            old.rename(out_dir)

    restore.old = old  # type: ignore[attr-defined]
    return restore


def _changed(out_dir: Path, what: str) -> ValidationError:
    """The refusal of an OUT_DIR that changed while the export ran (`_place`): it is left alone."""
    return ValidationError(f"{out_dir} changed while the export ran ({what}); it is left as it is and this export "
                           "was not kept: export again, into another folder, or with overwrite if it holds an "
                           "earlier export only")


def _remove_replaced(old: Path | None) -> None:
    """Delete the earlier export OUT_DIR held, renamed aside by `_place` (`_delete_export`). An interrupt
    (Ctrl-C) while it goes finishes the delete before it is passed on: the new export is in place and
    recorded, and the hidden full copy would stay otherwise (one left all the same, by a second interrupt
    or a kill, is removed by the next export into OUT_DIR, `remove_stale_temporaries`)."""
    if old is None:
        return
    try:
        _delete_export(old)
    except BaseException:
        _delete_export(old)
        raise


def _delete_export(folder: Path) -> None:
    """Delete an export's folder, its manifest.json last: a delete cut short leaves a folder its manifest
    still vouches for, or only empty folders, which `_leftover_export` tells from anyone else's."""
    manifest = folder / "manifest.json"
    with contextlib.suppress(OSError):
        for entry in list(folder.iterdir()):
            if entry == manifest:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def _leftover_export(folder: Path) -> bool:
    """Whether a folder named as `_place` names a replaced export holds only what one leaves: an export
    (its manifest lists every file but the OS's, `not_replaceable`; files already deleted are no matter)
    or nothing but empty folders (`_delete_export` takes the manifest last). Why: a folder of that name
    holding anything else is not known to be ours, and is left alone."""
    try:
        return not_replaceable(folder) is None or not any(p.is_file() or p.is_symlink() for p in folder.rglob("*"))
    except OSError:
        return False


def unwritable_parent(out_dir: Path, folder: Path, why: str) -> str:
    """The refusal of an OUT_DIR whose parent (or nearest existing ancestor, `folder`) cannot be written.
    Why it says more for an OUT_DIR that exists: the editor made it empty and writable, as the help asks,
    and "cannot create" it would puzzle them; the export is built in a hidden folder beside OUT_DIR and
    renamed onto it at the end (an interrupted export never leaves half an OUT_DIR), which writes in its
    parent."""
    if out_dir.is_dir():
        return (f"cannot export into {out_dir}: an export is built in a hidden folder beside it and renamed into "
                f"place at the end, and {folder} cannot be written ({why}); choose an OUT_DIR in a folder you can "
                "write, or make that folder writable")
    return f"cannot create {out_dir}: cannot write in {folder} ({why})"


def export_dataset(store: sessionmaker[Session], data_dir: Path, out_dir: Path, editor: str, split: float = 0.2,
                   seed: int = 0, on_progress: Callable[[int, int], None] | None = None, *,
                   face_model: str = "dlib-resnet-v1", overwrite: bool = False,
                   near_duplicate_radius: int = NEAR_DUPLICATE_RADIUS, gif_model: str | None = None,
                   previous: Path | None = None, same_photo_distance: float | None = None) -> ExportSummary:
    """Write the retraining export of the store to out_dir (see the module docstring) and record
    it in the `export` table. `split` is the share of each class's faces aimed at validation;
    `on_progress(done, total)` is called as face crops are copied. A non-empty out_dir is
    refused unless `overwrite` (and then only when it holds an earlier export), when the export starts
    and again when it moves into place (`_place`). `gif_model`
    chooses the GIF embeddings of the projector's GIF files (None: the store's most used);
    `previous` (an earlier export, its folder or classes.csv; another store's is matched by class
    name) keeps each surviving class at its earlier label index and each earlier media item on its
    earlier side (see the
    module docstring; the summary's and manifest's `notes` say when it gives no sides, or when its
    sides leave validation short). `same_photo_distance` joins media with faces this
    close (None: `SAME_PHOTO_DISTANCE` of the face model, no such joins for a model not listed there)."""
    started = utcnow()
    editor = check_editor(editor)
    if not 0.0 <= split < 1.0:
        raise ValidationError(f"the validation split must be in [0, 1), got {split}")
    out_dir, data_dir = resolve_out_dir(out_dir), Path(data_dir)
    check_out_dir(out_dir, overwrite, data_dir)
    # read before OUT_DIR may be replaced: an export over itself follows itself
    earlier_classes, earlier = read_previous(previous) if previous is not None else (None, None)
    same_photo_distance = same_photo_threshold(face_model, same_photo_distance)

    with store() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        snap = _read_snapshot(session, face_model, gif_model)
    classes = snap["classes"]
    previous_indices, notes = None, []
    if earlier_classes is not None:
        trusted = earlier_classes.manifest_sha256 in snap["recorded_manifests"]
        match = match_earlier_classes(earlier_classes, classes, trusted, snap["renames"])
        previous_indices, notes = match.indices, list(match.notes)
        notes += damaged_previous_note(earlier_classes.path.parent, snap["recorded_manifests"])
        if earlier is not None and not match.ids_are_ours:  # another store's media ids name other media
            earlier = replace(earlier, by_media_id={})
    followed = earlier  # its groups hold even when its sides give no basis (`sides_to_keep`)
    earlier, side_notes = sides_to_keep(earlier, split)
    notes += side_notes

    # media ingested, none confirmed: an export of 0 faces would read as a finished one (and later exports
    # follow it); a store that holds nothing yet (a quick start) has nothing to explain
    if not snap["labels"] and snap["holds_media"]:
        notes.append(NO_CONFIRMED_LABELS)
    if snap["retired"]:
        notes.append(retired_classes_note(snap["retired"]))
    rows, missing, not_found = [], 0, 0
    for r in snap["labels"]:
        crop = data_dir / r.crop_path if r.crop_path else None
        if crop is not None and crop.is_file():
            rows.append((r, crop))
        else:
            missing += 1
            not_found += crop is not None  # recorded, but not in this data folder: `no_faces_exported`
    folders = unique_folder_names([(c, classes[c].name, classes[c].external_id) for c in {r.class_id for r, _ in rows}],
                                  None if earlier_classes is None else
                                  earlier_folders(earlier_classes, previous_indices or {}, classes))
    index = class_indices(folders, previous_indices)
    ordered = sorted(folders, key=index.__getitem__)  # rows of labels.csv and classes.csv by index
    media = snap["media"]
    media_ids = sorted({r.media_id for r, _ in rows})  # sorted: pairs at one distance join in one order everywhere
    # media one group of an imported export held (its crops of one clip, `labeling.import_groups`) stay one
    # group whether or not an earlier export is followed, and crops of its different groups stay apart; those of
    # the one followed, too. Paired among the exported media only: a chain through one left out would break.
    exported = set(media_ids)
    imported = {m: keys for m, keys in snap["imported_groups"].items() if m in exported}
    joined: list[tuple[Hashable, Hashable]] = list(group_key_pairs(imported))
    followed_crops: dict[Hashable, str] = {}
    if followed is not None:
        media_sha256 = {m: media[m].sha256 for m in media_ids}
        joined += earlier_group_pairs(followed, media_sha256)
        followed_crops = earlier_crop_groups(followed, media_sha256)  # its crops' hashes do not undo its groups
    apart = apart_labels(imported, followed_crops)
    groups, photo_pairs = copy_groups(
        {m: media[m].frame_hashes for m in media_ids},  # (in id order: see media_ids)
        ((r.class_id, r.media_id, bytes_to_vector(r.vector)) for r, _ in rows if r.vector is not None),
        same_photo_distance, near_duplicate_radius, joined, apart)
    group_classes: dict[int, Counter] = {}
    group_key: dict[int, list[str]] = {}
    group_media: dict[int, set[int]] = {}
    for r, _ in rows:
        g = groups[r.media_id]
        group_classes.setdefault(g, Counter())[r.class_id] += 1
        group_key.setdefault(g, []).append(media[r.media_id].sha256 or f"media-{r.media_id}")
        group_media.setdefault(g, set()).add(r.media_id)
    earlier_side = {} if earlier is None else {
        m: side for m in groups if (side := earlier.side_of(m, media[m].sha256)) is not None}
    kept, both_sides = earlier_group_sides(group_media, earlier_side, no_validation=split == 0)
    sides = {**assign_sides({g: c for g, c in group_classes.items() if g not in kept}, split, seed,
                            {g: min(keys) for g, keys in group_key.items()}), **kept}
    side_of_face = {r.face_id: sides[groups[r.media_id]] for r, _ in rows}
    # per face, by its media's earlier side: kept, moved (val -> train only), or new to this export
    continuity = Counter("new" if r.media_id not in earlier_side else
                         "kept" if earlier_side[r.media_id] == side_of_face[r.face_id] else "moved" for r, _ in rows)
    kept_train = sum(kept.get(groups[r.media_id]) == "train" for r, _ in rows)
    if earlier is not None and continuity["moved"]:
        notes.append(moved_to_train_note(earlier.path.parent, [
            classes[r.class_id].name for r, _ in rows
            if earlier_side.get(r.media_id) == "val" and side_of_face[r.face_id] == "train"],
            len(both_sides), split == 0, near_duplicate_radius))
    if earlier is not None and rows and continuity["new"] == len(rows):
        # one note per earlier export: with the one saying it is another store's, when there is one
        if earlier_classes is not None and not match.ids_are_ours:
            notes[0] = f"{notes[0]}; {no_face_kept(earlier)}"
        else:
            notes.append(f"{earlier.path.parent}: {no_face_kept(earlier)}")
    side_counts = Counter(side_of_face.values())
    with_validation = {r.class_id for r, _ in rows if side_of_face[r.face_id] == "val"}
    class_faces = Counter(r.class_id for r, _ in rows)
    target = {c: validation_target(n, split) for c, n in class_faces.items()}
    notes += small_validation(side_counts["val"], len(rows), split, kept_train, sum(target.values()),
                              [classes[c].name for c in ordered if target[c] and c not in with_validation])

    tmp = _beside(out_dir, "tmp", 6)
    # An OUT_DIR under a file, or where nothing may be written, is bad input: a one-line refusal, not a traceback.
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValidationError(f"cannot create {out_dir}: {exc.filename or out_dir.parent}: "
                              f"{exc.strerror or exc}") from exc
    if removed := remove_stale_temporaries(out_dir):
        notes.append(removed_note(removed))
    try:
        tmp.mkdir()
    except OSError as exc:  # the temporary folder's name would only confuse: name the folder it goes in
        raise ValidationError(unwritable_parent(out_dir, out_dir.parent, str(exc.strerror or exc))) from exc
    lock = _lock_folder(tmp)  # held until the end: a later export never takes this folder for a killed one's
    try:
        _write_csv(tmp / "labels.csv", ["Label", "Index"], ([folders[c], index[c]] for c in ordered))
        _write_csv(tmp / "classes.csv", CLASS_COLUMNS, (class_row(folders[c], index[c], classes[c]) for c in ordered))
        raw = tmp / "raw_dataset"
        raw.mkdir()
        for c in folders.values():
            (raw / c).mkdir()
        hashed: dict[str, str] = {}  # path in the export -> sha256: read once, for split.csv and the manifest
        crop_sha: dict[int, str] = {}  # face id -> its crop's sha256, for split.csv
        for n, (r, crop) in enumerate(rows, start=1):
            target = raw / folders[r.class_id] / f"{r.face_id}.jpg"
            shutil.copyfile(crop, target)
            crop_sha[r.face_id] = hashed[target.relative_to(tmp).as_posix()] = sha256_file(target)
            if n % TMP_TOUCH_EVERY == 0:  # the crops go into sub-folders: tmp's own mtime would stop here
                os.utime(tmp)
            if on_progress is not None:
                on_progress(n, len(rows))
        _write_csv(tmp / "split.csv", SPLIT_COLUMNS,
                   ([r.face_id, r.class_id, folders[r.class_id], r.media_id, groups[r.media_id], side_of_face[r.face_id],
                     media[r.media_id].sha256 or "", crop_sha[r.face_id]]
                    for r, _ in rows))

        tagged: dict[int, dict[str, Any]] = {}
        for media_id, path, sha, tag, confidence, source in snap["tags"]:
            item = tagged.setdefault(media_id, {"media": path, "sha256": sha, "media_id": media_id, "tags": [],
                                                "sources": {}})
            item["tags"].append([tag, round(float(confidence), 6)])
            item["sources"][tag] = source
        with (tmp / "tags.jsonl").open("w", encoding="utf-8", newline="\n") as f:
            for item in tagged.values():
                f.write(json.dumps(item, ensure_ascii=False) + "\n")

        projector = tmp / "projector"
        projector.mkdir()
        vectors = [bytes_to_vector(p.vector) for p in snap["projector"]]
        _write_vectors(projector / "vectors.tsv", vectors)
        with (projector / "metadata.tsv").open("w", encoding="utf-8", newline="\n") as f:
            f.write("face_id\tclass\tstatus\tsource\tside\n")
            for p in snap["projector"]:
                name = classes[p.class_id].name if p.class_id is not None else ""
                f.write("\t".join(_tsv_cell(v) for v in (p.face_id, name, p.status, p.source,
                                                           side_of_face.get(p.face_id, ""))) + "\n")
        # GIF embeddings in files of their own: the Projector loads one vector space per file pair,
        # and face (128-d) and GIF (1280-d) vectors cannot share one.
        gif_vectors = [bytes_to_vector(g.vector, g.dim) for g in snap["gifs"]]
        _write_vectors(projector / "gif_vectors.tsv", gif_vectors)
        with (projector / "gif_metadata.tsv").open("w", encoding="utf-8", newline="\n") as f:
            f.write("media_id\tfile\tkind\ttags\n")
            for g in snap["gifs"]:  # tags most confident first (the snapshot's order), as in tags.jsonl
                tags = tagged[g.media_id]["tags"] if g.media_id in tagged else []
                cells = (g.media_id, Path(g.path).name, g.kind, top_tags_text(tags))
                f.write("\t".join(_tsv_cell(v) for v in cells) + "\n")

        provenance: dict[str, dict[str, int]] = {}
        for (source, status), n in sorted(Counter((r.source, r.status) for r, _ in rows).items()):
            provenance.setdefault(source, {})[status] = n
        side_media = Counter(sides[groups[m]] for m in {r.media_id for r, _ in rows})
        finished = utcnow()
        manifest = {
            "format": FORMAT,
            "created_at": finished.isoformat(),
            "editor": editor,
            "schema_version": snap["revision"],
            "face_model": face_model,
            "gif_model": snap["gif_model"],
            "class_index_order": "class_id" if previous is None else "previous export",
            **({"previous_export": str(Path(previous).absolute())} if previous is not None else {}),
            "notes": notes,
            "statuses": list(CONFIRMED_STATUSES),
            "counts": {"classes": len(folders), "faces": len(rows), "faces_without_crop": missing,
                       "train": side_counts.get("train", 0), "val": side_counts.get("val", 0),
                       "media": sum(side_media.values()), "media_with_tags": len(tagged),
                       "media_tags": len(snap["tags"]), "projector_vectors": len(vectors),
                       "gif_projector_vectors": len(gif_vectors)},
            "label_provenance": provenance,
            "tag_provenance": dict(sorted(Counter(t.source for t in snap["tags"]).items())),
            "split": {"share": split, "seed": seed, "stratified_by": "class", "near_duplicate_radius": near_duplicate_radius,
                      "same_photo_distance": same_photo_distance, "same_photo_media_pairs": len(photo_pairs),
                      "groups": len(set(groups[r.media_id] for r, _ in rows)),
                      "train_media": side_media.get("train", 0), "val_media": side_media.get("val", 0),
                      "earlier_sides": None if earlier is None else {
                          "split_csv": str(earlier.path.absolute()), "faces_kept_side": continuity["kept"],
                          "faces_moved_to_train": continuity["moved"], "faces_new": continuity["new"],
                          "groups_uniting_both_sides": len(both_sides)}},
            "files": {(rel := p.relative_to(tmp).as_posix()): hashed.get(rel) or sha256_file(p)
                      for p in sorted(tmp.rglob("*")) if p.is_file()},
            # bytes of each file: a cheap check that a crop is whole (`export_damage`), no hashing
            "sizes": {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()},
        }
        text = json.dumps(manifest, indent=2, ensure_ascii=False)
        (tmp / "manifest.json").write_text(text + "\n", encoding="utf-8", newline="\n")  # as hashed below
        record = {k: v for k, v in manifest.items() if k not in ("files", "sizes")}
        record["manifest_sha256"] = hashlib.sha256((text + "\n").encode("utf-8")).hexdigest()
        record["files"] = len(manifest["files"])

        # another export into OUT_DIR places before or after this one; the folder lock is taken before the
        # row is written, so waiting for it never holds the store's write lock (SQLite: one writer at a time)
        placing = _lock_folder(out_dir.parent, wait=True)
        try:
            with store() as session:
                row = Export(at=finished, editor=editor, out_dir=str(out_dir), manifest=record)
                session.add(row)
                session.flush()
                export_id = row.id
                restore = _place(tmp, out_dir, overwrite)  # the row commits only if the folder is in place
                try:
                    session.commit()
                except BaseException:
                    restore()
                    raise
        finally:
            if placing is not None:
                os.close(placing)
        _remove_replaced(getattr(restore, "old", None))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            os.close(lock)
    return ExportSummary(out_dir, export_id, len(folders), len(rows), side_counts.get("train", 0),
                         side_counts.get("val", 0), missing, len(tagged), len(vectors), len(gif_vectors),
                         (utcnow() - started).total_seconds(), manifest, notes, not_found, data_dir.absolute())
