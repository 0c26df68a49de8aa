"""The ingest pipeline: files in, cached face and GIF embeddings out (no UI, no DB).

Work is done in small chunks of media so the networks see batches (all sampled
frames of a chunk go through MTCNN together, all aligned crops through the face
embedder together, all frames through EfficientNet together). Every stage's result
is cached per file hash and namespace; a warm run decodes and infers nothing.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from embeddings.cache import CACHE_MARKER, NAMESPACE_NOTE, CacheEntry, EmbeddingCache, EntryShape, namespace_for
from embeddings.media import (MEDIA_EXTENSIONS, STILL, MediaError, MediaLimits, SampledMedia, has_media_extension,
                              sample_media, sampling_key)
from embeddings.tracks import group_tracks
from models.registry import create_model, model_params
from models.settings import Settings

log = logging.getLogger(__name__)

ANIMATED_KINDS = frozenset({"gif", "webp", "apng", "video"})
TOP_LABELS = 5
# Cosine distance between track means below which two face clusters are one person.
# dlib: on LFW, same-person pairs sit below 0.062 (90th pct) and different people above
# 0.086 (1st pct); within one clip the same face is far closer still. Per embedder.
TRACK_MAX_DISTANCE = {"dlib-resnet-v1": 0.075, "facenet-vggface2": 0.5}
PHASH_VERSION = "dct64-v1+decode-v2+still-shot-quarters"  # bump when decoding changes what frames look like
# Animated PNGs only (`is_apng`): their frames are composited by FFmpeg since this version. Earlier runs
# cached them as one still (before animated PNG was read) or as Pillow composited them (wrongly), and
# those entries are keyed by the same bytes: a key of their own makes them misses, computed again,
# while every other file keeps its cache.
APNG_DECODER = "ffmpeg-composite-v1"
# Videos only (`is_video`), for the same reason: since this version their frames are shown at their
# display aspect (non-square pixels) and a VP8/VP9 WebM's transparency is composited onto white.
VIDEO_DECODER = "display-aspect+vpx-alpha-v1"
# The files whose frames cache key names their decoder (`sampling_key`): kind -> decoder version.
DECODERS = {"apng": APNG_DECODER, "video": VIDEO_DECODER}
# A still photo (`sampling_key` STILL) is one frame whatever --frames says, so its entries are keyed at the
# default sampling, whatever the setting: one set serves every --frames (no photo detected and embedded
# again, nor its stored rows rewritten, when clips are sampled otherwise), and it is the key default runs
# always gave photos, so their cached entries stay valid.
STILL_FRAMES = Settings.model_fields["frames"].default
# Sampled frames a chunk may hold, all files together, before they go through the networks: a chunk
# runs inference as soon as its pending frames reach this many pixels (about 190 MB of RGB), not only
# after its last file. Why: a file's frames can be large (a small GIF on a 6000x6000 canvas, 1080p
# video), and a chunk of such files held to the end asked for many gigabytes. A chunk of typical
# GIFs (8 x 16 frames x 0.13 Mpx) stays one batch.
MAX_PENDING_PIXELS = 64_000_000


def crop_name(face_index: int) -> str:
    """The file of a face entry holding its face's aligned crop."""
    return f"face_{face_index:03d}.jpg"


def _crop_names(meta: dict[str, Any]) -> list[str]:
    return [crop_name(i) for i in range(int(meta["faces"]))]


# What each stage's entry must hold for its reader (`_apply_media_meta`, `_apply_faces`, `_apply_gif`): an
# entry missing any of it (a file deleted inside) is a miss, dropped and computed again (`EntryShape`).
# Face entries of early versions hold no track arrays: those are read only when present.
FRAMES_SHAPE = EntryShape(meta_keys=("kind", "width", "height", "total_frames", "sampled_frames", "frame_hashes"))
FACES_SHAPE = EntryShape(("model_id", "faces"),
                         ("frame_index", "box", "probability", "landmarks", "embedding", "track"), _crop_names)
GIF_SHAPE = EntryShape(("model_id", "top_labels"), ("embedding",))


@dataclass
class FaceRecord:
    face_index: int
    frame_index: int
    box: list[float]
    probability: float
    landmarks: list[list[float]]
    embedding: np.ndarray
    crop_path: str  # relative to the data folder
    track_index: int


@dataclass
class TrackRecord:
    track_index: int
    face_indices: list[int]
    representative_face_index: int
    vector: np.ndarray


@dataclass
class MediaResult:
    """Everything ingest learned about one file; `status` is "ok" or "failed"."""

    path: Path
    status: str = "ok"
    error: str | None = None
    reason: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    kind: str = "unknown"
    width: int | None = None
    height: int | None = None
    total_frames: int | None = None
    sampled_frames: list[int] = field(default_factory=list)
    frame_hashes: list[str] = field(default_factory=list)
    duration_s: float | None = None
    face_model: str | None = None
    faces: list[FaceRecord] = field(default_factory=list)
    tracks: list[TrackRecord] = field(default_factory=list)
    gif_model: str | None = None
    gif_embedding: np.ndarray | None = None
    top_labels: list[tuple[str, float]] = field(default_factory=list)
    from_cache: bool = False
    # The face and GIF cache namespaces behind an ok result: the store keeps it to recognise a
    # re-ingest that has nothing new to write (see labeling/ingest.py).
    source_key: str | None = None
    # Set when the store already holds exactly this result (see `run`'s is_stored): its faces and
    # tracks were not loaded, this is how many faces the current settings detect in it (its cache
    # entry's count, as a computed result counts them: not the decided faces an earlier run kept).
    stored_faces: int | None = None

    @property
    def face_count(self) -> int:
        return self.stored_faces if self.stored_faces is not None else len(self.faces)

    def fail(self, reason: str, message: str) -> "MediaResult":
        self.status, self.reason, self.error = "failed", reason, message
        return self


# The store's answer for one file (sha256, source_key, path): the stored item's kind when the store holds
# exactly this result, else None (see `IngestPipeline.run`).
IsStored = Callable[[str, str, Path], str | None]

# Told of each file once, as soon as it has been read: decoded and sampled, answered from the cache or the
# store, or failed (`run`'s on_read(path, batch)). `batch` is how many files' frames now go through the
# networks together (the models loaded first when this is their first use), 0 when the next file is read.
# Why: results come out per chunk, after its batched inference (`on_result`), so a caller counting
# results alone shows nothing for the whole first chunk (decoding, loading models, inference) and then a
# burst; this says what is going on meanwhile, without counting as a file done.
OnRead = Callable[[Path, int], None]


def _not_a_file(path: Path, mode: int) -> str:
    """Why a path that exists is not media: a folder that cannot be read, or no regular file."""
    if S_ISDIR(mode):
        try:
            os.scandir(path).close()
        except OSError as exc:
            return f"a folder that cannot be read ({exc.strerror or exc}): its media were not looked at"
        return "a folder, not a file"
    return "not a regular file (a pipe, device or socket)"


def _dir_key(path: Path | str) -> tuple[int, int] | None:
    """A folder's identity (device, inode) through any links; None when it cannot be looked at."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if S_ISDIR(info.st_mode) else None


# The one folder of the data folder that holds media: the Ingest page saves uploads there
# (labeling/pages/common.py, UPLOADS). Everything else in it is giflens's own output: the cache's face
# crops, exports' crops, model artifacts, reports.
DATA_UPLOADS = "uploads"

Key = tuple[int, int]


# The folders giflens writes into the data folder (besides the SQLite file): the embedding cache with its face
# crops, exports (the Export page's default place), UMAP projections, fitted models, kNN indexes (models/
# index_store.INDEXES) and bias-audit reports (explorer/pages/bias.REPORTS).
DATA_OUTPUTS = ("cache", "exports", "projections", "models", "indexes", "reports")


def _inside(path: Path | str, data_dir: Path | str) -> str | None:
    """The first component of the path's real place (links followed) inside the data folder; None outside."""
    first = os.path.relpath(os.path.realpath(path), os.path.realpath(data_dir)).split(os.sep)[0]
    return None if first == os.pardir else first


def is_data_output(path: Path | str, data_dir: Path | str) -> bool:
    """Whether a folder a walk reaches (through a link) is inside the data folder but not in its uploads: the
    walk of the data folder gives its uploads only, whatever else an editor keeps there. The data folder
    itself is not (walked, it gives its uploads, `_FolderWalk.walk`)."""
    return _inside(path, data_dir) not in (None, os.curdir, DATA_UPLOADS)


def data_folder_part(path: Path | str, data_dir: Path | str, names: Sequence[str]) -> str | None:
    """Which of the data folder's folders `names` the path lies in (or is), by its real place (links
    followed); a folder of them that is a link (the cache moved to another disk) counts by its target too.
    None when it lies in none of them."""
    if (first := _inside(path, data_dir)) in names:
        return first
    real = os.path.realpath(path)
    for name in names:
        if os.path.islink(Path(data_dir) / name):
            target = os.path.realpath(Path(data_dir) / name)
            if os.path.commonpath([real, target]) == target:
                return name
    return None


def is_own_output(path: Path | str, data_dir: Path | str) -> bool:
    """Whether a path named on purpose lies in one of the folders giflens itself writes in the data folder
    (DATA_OUTPUTS): a cache crop typed, an export folder picked in the Ingest page's browser. Such a path
    would come back as media (duplicate faces nobody labels, or an item's path moved onto its own crop).
    A folder of the editor's own kept in the data folder (a raw dataset beside the store) is ingested as
    named. An output folder that is a link (the cache moved to another disk) counts by its target too."""
    return data_folder_part(path, data_dir, DATA_OUTPUTS) is not None


# What makes a folder a giflens export (labeling/export.py writes all three): its crops are faces of some
# store already, and its labels.csv says whose.
EXPORT_MARKERS = ("manifest.json", "labels.csv", "raw_dataset")


def is_export_folder(path: Path | str) -> bool:
    """Whether a folder holds a giflens export: manifest.json and labels.csv files and a raw_dataset folder.

    Why the walk leaves one out wherever it lies (an export written into the uploads, kept in a photo
    folder): its crops would come back as new media, each face a duplicate nobody labels, while its
    labels.csv already says who each one is; `giflens import raw-dataset` reads both."""
    folder = Path(path)
    try:
        if not ((folder / "manifest.json").is_file() and (folder / "labels.csv").is_file()
                and (folder / "raw_dataset").is_dir()):
            return False
    except OSError:  # a folder that cannot be read is no export: the walk records it as failed, as before
        return False
    return _export_manifest(folder / "manifest.json")


def _export_manifest(path: Path) -> bool:
    """Whether manifest.json is a giflens export's (a `files` mapping listing labels.csv, and `format`
    "giflens-export/..." when it has one; labeling.export.is_export_manifest is the full rule). Why read it:
    a folder of someone's own media may carry a manifest.json (web apps, datasets) beside a labels.csv,
    and taking it for an export left every file in it out of the ingest."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict) or "labels.csv" not in data["files"]:
        return False
    return "format" not in data or str(data["format"]).startswith("giflens-export/")


def export_folder_note(path: Path | str) -> str:
    """What an editor is told of an export folder a walk leaves out, or one named (`is_export_folder`)."""
    return (f"{path_text(path)} is a giflens export (manifest.json, labels.csv, raw_dataset/); not ingested: its "
            "crops would come back as new, unlabeled faces. Import it with its labels: giflens import raw-dataset "
            f"{path_text(path)}")


def is_cache_folder(path: Path | str) -> bool:
    """Whether a folder is a giflens embedding cache's root: it holds CACHE_MARKER (every cache writes it,
    `EmbeddingCache`), or, for a cache made before the marker, it is named "cache" and one of its folders
    holds a namespace.json (`EmbeddingCache.describe_namespace`).

    Why the walk leaves one out wherever it lies (another data folder met under a parent folder being
    ingested, a team's shared data folders side by side): its face crops would come back as new media, each
    face a duplicate nobody labels. Only the cache: another data folder's uploads are media like any."""
    folder = Path(path)
    try:
        if (folder / CACHE_MARKER).is_file():
            return True
        if folder.name != "cache":
            return False
        with os.scandir(folder) as entries:
            return any(entry.is_dir(follow_symlinks=False) and os.path.isfile(os.path.join(entry.path, NAMESPACE_NOTE))
                       for entry in entries)
    except OSError:  # a folder that cannot be read is no cache: the walk records it as failed, as before
        return False


def in_cache_folder(path: Path | str, known: dict[Path, Path | None] | None = None) -> Path | None:
    """The cache root (`is_cache_folder`) a named path lies in, or is; None when none. Why its parents too: a
    namespace folder or a face crop of another data folder's cache, named or picked, is that cache's output.
    known: folders already looked at (a batch of many named files in a few folders looks at each once)."""
    known = {} if known is None else known
    start = Path(os.path.abspath(path))
    for folder in (start, *start.parents):
        if folder not in known:
            known[folder] = folder if is_cache_folder(folder) else None
        if known[folder] is not None:
            return known[folder]
    return None


def cache_folder_note(path: Path | str, cache: Path | str | None = None) -> str:
    """What an editor is told of a cache folder a walk leaves out, or of a path named in one (`cache`, the
    cache's root, when it is not that root itself: `is_cache_folder`)."""
    what = ("a giflens embedding cache" if cache is None or Path(cache) == Path(os.path.abspath(path))
            else f"in a giflens embedding cache ({path_text(cache)})")
    return (f"{path_text(path)} is {what}: face crops and embeddings giflens computed for some data folder; "
            "skipped, not ingested: its crops would come back as new, unlabeled faces")


def data_output_note(path: Path | str) -> str:
    """What an editor is told of a named path `is_own_output` leaves out (`Discovery.notes`, the Ingest page)."""
    return (f"{path_text(path)} is giflens's own output in the data folder ({', '.join(DATA_OUTPUTS)} hold "
            "what giflens writes); not ingested")


@dataclass
class _FolderWalk:
    """One discovery's walk over its folders (`_walk_folders`): each folder entered once."""

    skip: frozenset[Key]
    data_dir: str | None  # the data folder's real path
    found: list[list[Path]]  # per root
    seen: set[Key] = field(default_factory=set)
    links: list[tuple[int, str]] = field(default_factory=list)  # (root, linked folder) met, walked later
    data_paths: set[str] = field(default_factory=set)  # names under which the data folder was entered
    read: list[Path] = field(default_factory=list)  # the folders listed (`Discovery.folders`)
    notes: list[str] = field(default_factory=list)  # folders left out on the way, each with why (`Discovery.notes`)
    others: list[int] = field(default_factory=list)  # per root: files passed over (hidden, or not named like media)
    hidden: list[int] = field(default_factory=list)  # per root: hidden folders not entered (`no_media_note` says so)
    entered: set[int] = field(default_factory=set)  # the roots walked (a root already walked from another is not)

    def __post_init__(self) -> None:
        self.data_key = _dir_key(self.data_dir) if self.data_dir is not None else None
        self.others = [0] * len(self.found)
        self.hidden = [0] * len(self.found)

    def enter(self, path: str, root: bool = False, link: bool = False) -> bool:
        """Whether to walk a folder: not seen yet, and not skipped (a root always is, named on purpose). A
        giflens export or embedding cache met on the way (`is_export_folder`, `is_cache_folder`: another data
        folder's) is left out with a note: a root that is one never gets here (`_named_media`)."""
        key = _dir_key(path)
        if key is None:  # vanished meanwhile, or unreadable: os.walk reports it when it tries
            return True
        if key in self.seen or (key in self.skip and not root) or (link and self._data_output(path)):
            return False
        self.seen.add(key)
        if not root and is_export_folder(path):
            self.notes.append(export_folder_note(path))
            return False
        if not root and is_cache_folder(path):
            self.notes.append(cache_folder_note(path))
            return False
        if key == self.data_key:
            self.data_paths.add(path)
        return True

    def _data_output(self, path: str) -> bool:
        """Whether a linked folder is inside the data folder but not in its uploads (giflens's output)."""
        return self.data_dir is not None and is_data_output(path, self.data_dir)

    def walk(self, root: int, start: str) -> None:
        """Media files under start without following links; linked folders are kept for later."""
        found = self.found[root]

        def unreadable(error: OSError) -> None:
            found.append(Path(error.filename))

        for folder, subfolders, names in os.walk(start, onerror=unreadable):
            self.read.append(Path(folder))
            keep = []
            in_data = folder in self.data_paths  # the data folder: its uploads only, no file of its own
            for name in sorted(subfolders):
                path = os.path.join(folder, name)
                if name.startswith("."):
                    self.hidden[root] += 1
                    continue
                if in_data and name != DATA_UPLOADS:
                    continue
                if os.path.islink(path):
                    self.links.append((root, path))
                elif self.enter(path):
                    keep.append(name)
            subfolders[:] = keep
            if not in_data:
                media = [Path(folder) / n for n in names if not n.startswith(".") and has_media_extension(Path(n))]
                found += media
                self.others[root] += len(names) - len(media)


def _walk_folders(roots: Sequence[Path], skip: frozenset[Key], data_dir: Path | str | None = None) -> _FolderWalk:
    """Media files under each root (by extension; hidden entries left out), plus what could not be looked
    into: a subfolder that cannot be read, and a media name that is no file (a broken link,
    a link loop, a pipe). Those are returned too, so the batch records each as failed with its reason
    instead of missing them without a word.

    Symlinked folders are followed, as the Ingest page's folder browser lists them, and each folder is
    walked once (by device and inode), so a link back up the tree is no endless loop. Real folders come
    first: every root's tree is walked without following links, then the linked folders met, then the
    links met in those. Why: a link to a folder that is also there under its real name (tree/a/x ->
    ../b/real) would otherwise win when its name sorts first, and a re-run would rename the stored files.

    Folders in `skip` are never entered from a parent; a root always is, since it was named on purpose.
    In the data folder (`data_dir`), root or reached (through a link too), only its uploads are walked.
    Returns the walk: what it found per root (`found`, not sorted yet) and the folders it listed (`read`)."""
    walk = _FolderWalk(skip, os.path.realpath(data_dir) if data_dir is not None else None, [[] for _ in roots])
    for i, root in enumerate(roots):
        if walk.enter(str(root), root=True):
            walk.entered.add(i)
            walk.walk(i, str(root))
    while walk.links:
        links, walk.links = walk.links, []
        for i, path in links:
            if walk.enter(path, link=True):
                walk.walk(i, path)
    return walk


@dataclass
class Discovery:
    """What `discover` found: the files to ingest, and the folders it read, each listed whole."""

    files: list[Path]
    # A failure recorded earlier at one of these paths (a folder that could not be read) is stale: its
    # media were looked at this time (see labeling/ingest.py, `_drop_folder_failures`).
    folders: list[Path]
    # Named paths left out, each with why (`data_output_note`): no failure, nothing was stored for them.
    notes: list[str] = field(default_factory=list)
    # Named folders walked in which no file is named like media, each with what was looked for (`no_media_note`).
    empty: list[str] = field(default_factory=list)


def discover_media(paths: Iterable[Path | str], skip: Iterable[Path | str] = (),
                   data_dir: Path | str | None = None) -> list[Path]:
    """The files of `discover`."""
    return discover(paths, skip, data_dir).files


def discover(paths: Iterable[Path | str], skip: Iterable[Path | str] = (),
             data_dir: Path | str | None = None, keep_outputs: bool = False) -> Discovery:
    """Files named explicitly are kept whatever their extension (so a bad one is reported);
    folders are walked recursively for media extensions (`_walk_folders`), never entering a folder of
    `skip` from a parent (pass the cache folder). In `data_dir` (the data folder), root or reached,
    only its uploads folder is walked: the rest (the cache's and exports' face crops, model artifacts)
    is giflens's own output, which would come back as media, more of it every run. A path named in one
    of the folders giflens writes there (`is_own_output`: a cache crop, an export's folder) is that output
    too: left out, with a note (`Discovery.notes`), whether folder or file; a folder of the editor's own
    kept in the data folder is ingested as named. keep_outputs: the caller chose those files itself (an
    import of an export kept in the data folder's exports, whose crops are the media to label).

    One file met under several names (a symbolic link to it beside it) is kept under each (`_names_of_files`):
    a tags import or `giflens dupes` may name any of them. A named folder that gives no file at all gets
    a note (`Discovery.empty`), so a wrong folder is not reported as a batch that went fine."""
    skipped = frozenset(key for folder in skip if (key := _dir_key(folder)) is not None)
    paths, notes = _named_media(paths, data_dir, keep_outputs)
    folders = list(dict.fromkeys(path for path in paths if path.is_dir()))
    walk = _walk_folders(folders, skipped, data_dir)
    notes = list(dict.fromkeys(notes + walk.notes))
    walked = dict(zip(folders, map(sorted, walk.found)))
    found = _names_of_files(candidate for path in paths for candidate in walked.get(path, [path]))
    holding = _folders_holding(found)
    empty = [no_media_note(folder, walk.others[i], walk.hidden[i]) for i, folder in enumerate(folders)
             if i in walk.entered and folder not in holding]
    return Discovery(found, walk.read, notes, empty)


def _folders_holding(files: Iterable[Path]) -> set[Path]:
    """Every path a file is under, the files themselves included: a named folder is in it exactly when some
    file `is_relative_to` it (the same comparison of names). Why a set: asking each named folder of every
    file took minutes for a few thousand named folders (the Ingest page's browser picks many); here each
    distinct parent folder's ancestors are added once."""
    named = set(files)
    holding: set[Path] = set()
    for parent in {file.parent for file in named}:
        for folder in (parent, *parent.parents):
            if folder in holding:
                break  # added with its ancestors already
            holding.add(folder)
    return holding | named


def _names_of_files(candidates: Iterable[Path]) -> list[Path]:
    """Every name met (each text once), a file's names together where its first name was met, its real
    name first (`_real_first`).

    Why every name and not one per file: a symbolic link to a file is a name of its own; stored under
    one only (whichever sorted first), a tags file naming the other was told the file was not ingested.
    The later names are the same bytes met again: stored as the item's other names (`MediaPath`), as a
    byte copy's are. Why the real name first: the item keeps the first name it is stored from, which should
    not go when a link is removed. A missing file, a broken link or a link loop is its own file: it fails
    when read, with its reason."""
    groups: dict[Path, dict[Path, None]] = {}
    for candidate in candidates:
        try:
            key = candidate.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, a broken link or a link loop: reported when read
            key = candidate
        groups.setdefault(key, {})[candidate] = None
    return [name for key, names in groups.items() for name in _real_first(key, list(names))]


def _real_first(real: Path, names: list[Path]) -> list[Path]:
    """The names of one file (`real` its resolved path), the one reaching it through no link first, else one
    that is no link itself (a file in a linked folder), else as met."""
    def through_links(name: Path) -> tuple[bool, bool]:
        return Path(os.path.abspath(name)) != real, name.is_symlink()

    return sorted(names, key=through_links)


def no_media_note(folder: Path | str, others: int, hidden: int = 0) -> str:
    """What an editor is told of a named folder that gave no file to ingest (`Discovery.empty`). The hidden
    folders not searched are named when there are any: media in one (a .thumbnails, a .git) are not looked at,
    and "0 other files skipped" alone read as if the folder held nothing at all."""
    first = (".gif", ".webp", ".mp4")  # the kinds giflens is for, then the rest by name
    looked = ", ".join(sorted(MEDIA_EXTENSIONS, key=lambda ext: (first.index(ext) if ext in first else 3, ext)))
    folders = f", {hidden} hidden folder{'' if hidden == 1 else 's'} not searched" if hidden else ""
    return (f"no media files found in {path_text(folder)} (looked for {looked} recursively; "
            f"{others} other file{'' if others == 1 else 's'} skipped{folders})")


def _named_media(paths: Iterable[Path | str], data_dir: Path | str | None,
                 keep_outputs: bool = False) -> tuple[list[Path], list[str]]:
    """The named paths to look at, and a note for each left out as giflens's own output (`is_own_output`)
    or as a giflens export or embedding cache wherever it lies (`is_export_folder`, `in_cache_folder`), unless
    `keep_outputs` (`discover`).
    Why here and not only in the walk: a root is always entered and a named file always kept, so a cache
    crop typed, or an export folder picked in the Ingest page's browser, would become media (duplicate
    faces nobody labels, or an item's path moved onto its own crop)."""
    kept: list[Path] = []
    notes: list[str] = []
    known: dict[Path, Path | None] = {}  # folders looked at for a cache marker (`in_cache_folder`)
    for path in map(Path, paths):
        if not keep_outputs and data_dir is not None and is_own_output(path, data_dir):
            notes.append(data_output_note(path))
        elif not keep_outputs and path.is_dir() and is_export_folder(path):
            notes.append(export_folder_note(path))
        elif not keep_outputs and (cache := in_cache_folder(path, known)) is not None:
            notes.append(cache_folder_note(path, cache))
        else:
            kept.append(path)
    return kept, list(dict.fromkeys(notes))


def name_is_utf8(path: Path | str) -> bool:
    """Whether a path's text can be stored: on Linux a name is bytes, and one that is not UTF-8 (an old
    Latin-1 archive) comes back from the file system with lone surrogates no database accepts."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def path_text(path: Path | str) -> str:
    """A path as storable, printable text: itself, or with its non-UTF-8 bytes escaped (caf\\xe9.jpg).

    The escaped text is not unique: a file literally named caf\\xe9.jpg (a valid name) has the same
    text as a Latin-1 café.jpg beside it. `may_be_escaped` tells the texts for which that can be."""
    text = str(path)
    return text if name_is_utf8(text) else os.fsencode(text).decode("utf-8", "backslashreplace")


_ESCAPED_BYTE = re.compile(r"\\x[89a-f][0-9a-f]")  # how path_text writes a byte that is not UTF-8


def may_be_escaped(text: str) -> bool:
    """Whether `path_text` may have made this text from another path than the one it reads as:
    it holds what an escaped byte looks like (\\x80 to \\xff)."""
    return _ESCAPED_BYTE.search(text) is not None


def non_utf8_name(path: Path | str) -> str | None:
    """Why a path's name cannot be stored, naming the part to rename; None when every part is UTF-8.

    The first part that is not UTF-8 is named, escaped, and called the folder or the file: a UTF-8
    file in a Latin-1 folder is renamed in vain if the message says "the file name"."""
    parts = Path(path).parts
    bad = [i for i, part in enumerate(parts) if not name_is_utf8(part)]
    if not bad:
        return None
    first, last = bad[0], len(parts) - 1
    name = path_text(parts[first])
    if first == last:
        return f'the file name "{name}" is not valid UTF-8: rename it'
    if last in bad:
        return f'the folder name "{name}" is not valid UTF-8, nor is the file name "{path_text(parts[last])}": rename both'
    return f'the folder name "{name}" is not valid UTF-8 (the file name is fine): rename that folder'


def _hex(h: int) -> str:
    return f"{h:016x}"


def _to_media_size(media: SampledMedia) -> np.ndarray:
    """(sx, sy) from a kept frame's pixels to the media's own: boxes and landmarks are stored in the
    media's coordinates even when its kept frames were shrunk to the retained-pixel budget (a huge
    canvas); 1 for every ordinary file."""
    if not media.frames:
        return np.ones(2, np.float32)
    height, width = media.frames[0].shape[:2]
    return np.array([media.width / width, media.height / height], np.float32)


def _jpeg(crop: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


@dataclass(eq=False)
class _Namespaces:
    """The cache namespaces of one file's stages, with their models and declared parameters."""

    frames: str
    faces: str
    face_model: str
    face_params: dict[str, Any]
    gif: str
    gif_model: str
    gif_params: dict[str, Any]

    @property
    def source_key(self) -> str:
        return f"{self.faces}+{self.gif}"


@dataclass
class _Pending:
    result: MediaResult
    ns: _Namespaces
    media: SampledMedia | None = None
    need_faces: bool = False
    need_gif: bool = False


class ModelUnavailableError(RuntimeError):
    """A model could not be loaded: fatal for the whole run, not one file's failure."""


class CacheUnavailableError(OSError):
    """The embedding cache folder cannot be read or written (a full disk, no permission, a read-only
    mount): fatal for the whole run, like a model that cannot be loaded. Every further file would
    fail the same way, so the batch stops (audited for what it stored) instead of recording each
    file as failed, which would also mark media stored ok earlier as failed."""


# Errors that stop the run wherever they happen: no file is to blame.
FATAL_ERRORS = (ModelUnavailableError, CacheUnavailableError)


def cache_unavailable(root: Path, exc: OSError, consequence: str = "") -> CacheUnavailableError:
    """The error an OSError of the cache folder becomes: one line naming the folder and the reason
    (a file in the way of a folder said so, "File exists" alone does not explain it)."""
    why = exc.strerror or str(exc)
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        why += ": a file is where a folder is needed"
    error = CacheUnavailableError(f"the embedding cache at {root} cannot be used ({why}){consequence}")
    error.errno = exc.errno
    return error


def _open_cache(root: Path) -> EmbeddingCache:
    """The cache folder, created if need be. A data folder that cannot be created (no permission, a
    read-only mount) or a plain file named like the cache is `CacheUnavailableError`, as any later
    cache error is, not a raw OSError: nothing checks the data folder before this with a PostgreSQL
    store, and the CLI reports this error in one line."""
    try:
        return EmbeddingCache(root)
    except OSError as exc:
        raise cache_unavailable(root, exc) from exc


def _pixels(media: SampledMedia | None) -> int:
    """The pixels of a file's kept frames (what it holds in memory until inference)."""
    return sum(frame.shape[0] * frame.shape[1] for frame in media.frames) if media is not None else 0


# A file whose content or inode changed this recently (ns) may change again within its timestamps' tick
# unseen (coarse file system clocks): its hash is not reused (`_Hashes`).
SETTLED_NS = 2_000_000_000


class _Hashes:
    """The sha256 of the files one batch read, by the file itself: a file met again under another name (a
    symbolic link beside it, a hard link), which `discover` keeps under every name, is not read and hashed
    a second time (20,000 links to 20,000 files read 40,000 files).

    Why it is safe: a hash is reused only for the same device and inode with the same size, modification and
    change times, taken from the open file before and after it was read (a file replaced or written while
    being hashed is not remembered), and only when those times are older than `SETTLED_NS`, so a write
    within the file system's timestamp tick cannot go unseen. Anything else is read again."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, ...], str] = {}

    def sha256(self, path: Path, stat: os.stat_result) -> str:
        """The file's sha256; `stat` is the path's (followed through links) as the caller just took it."""
        known = self._known.get(_identity(stat))
        if known is not None:
            return known
        started = time.time_ns()
        with open(path, "rb") as fh:
            before = os.fstat(fh.fileno())
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
            after = os.fstat(fh.fileno())
        key = _identity(before)
        if key == _identity(after) and max(before.st_mtime_ns, before.st_ctime_ns) < started - SETTLED_NS:
            self._known[key] = digest
        return digest


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    """A file and its state as far as its stat tells: the same tuple twice is the same bytes, barring a
    write within one timestamp tick (`_Hashes` keeps to settled files)."""
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


class IngestPipeline:
    """Decode, sample, detect, align, embed and cache; yields one MediaResult per file."""

    def __init__(self, settings: Settings, chunk_size: int = 8, max_pending_pixels: int = MAX_PENDING_PIXELS,
                 **model_overrides: Any) -> None:
        self.settings = settings
        self.chunk_size = chunk_size
        self.max_pending_pixels = max_pending_pixels
        self.data_dir = Path(settings.data_dir)
        self.cache = _open_cache(Path(settings.cache_dir))
        self.limits = MediaLimits.from_settings(settings)
        self._models: dict[str, Any] = dict(model_overrides)

    # -- models, created on first need so a warm run never loads them ---------------
    def _model(self, role: str) -> Any:
        if role not in self._models:
            try:
                self._models[role] = self._create(role)
            except Exception as exc:
                raise ModelUnavailableError(str(exc)) from exc
        return self._models[role]

    def _create(self, role: str) -> Any:
        if role == "detector":
            return create_model("mtcnn", **self._detector_kwargs())
        if role == "face":
            return create_model(self.settings.face_model, **self._face_kwargs())
        return create_model(self.settings.gif_model)

    def _detector_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {"min_face_size": s.min_face_size, "thresholds": tuple(s.detect_thresholds),
                "min_probability": s.min_face_probability}

    def _face_kwargs(self) -> dict[str, Any]:
        s = self.settings
        if s.face_model == "facenet-vggface2" and s.facenet_weights is not None:
            return {"weights_path": s.facenet_weights}
        return {}

    # -- the cache, its I/O errors fatal (`CacheUnavailableError`) -------------------------
    def _cache_io(self, action: Callable[..., Any], *args: Any) -> Any:
        try:
            return action(*args)
        except OSError as exc:
            raise cache_unavailable(self.cache.root, exc, "; the batch stopped, files stored so far are kept") from exc

    def _cache_get(self, namespace: str, sha256: str, shape: EntryShape) -> CacheEntry | None:
        """The entry when it holds all of `shape`; one damaged inside (a file gone) is dropped: a miss."""
        entry = self._cache_io(self.cache.get, namespace, sha256)
        if entry is not None and not shape.complete(entry.path, entry.meta, entry.arrays):
            self._cache_io(self.cache.drop, namespace, sha256)
            return None
        return entry

    def _cache_put(self, namespace: str, sha256: str, *args: Any) -> CacheEntry:
        return self._cache_io(self.cache.put, namespace, sha256, *args)

    def _describe_namespace(self, namespace: str, model_id: str, params: dict[str, Any]) -> None:
        self._cache_io(self.cache.describe_namespace, namespace, model_id, params)

    # -- namespaces -------------------------------------------------------------------
    @property
    def sampling_params(self) -> dict[str, Any]:
        return self._sampling_params()

    def _sampling_params(self, key: str | None = None) -> dict[str, Any]:
        """What shapes the sampled frames (`key` is a file's `sampling_key`); an animated PNG's or a
        video's also name its decoder (`DECODERS`); a still's are those of the default sampling (`STILL_FRAMES`)."""
        frames = STILL_FRAMES if key == STILL else self.settings.frames
        params = {"frames": frames, "dedupe_distance": self.settings.dedupe_distance, "phash": PHASH_VERSION}
        return {**params, key: DECODERS[key]} if key in DECODERS else params

    @property
    def frames_namespace(self) -> str:
        return namespace_for("frames", self.sampling_params)

    def _sampling_key(self, path: Path) -> str | None:
        """The file's `sampling_key`, which picks its namespaces; a subclass may read more of the file (the
        raw-dataset import takes a one-frame GIF or WebP for a still, `labeling.importers.import_pipeline`)."""
        return sampling_key(path)

    def _faces_namespace(self, key: str | None = None) -> tuple[str, str, dict[str, Any]]:
        """Declared parameters only (no model loaded), so cold and warm runs agree."""
        s = self.settings
        detector = {"model_id": "mtcnn", **model_params("mtcnn", **self._detector_kwargs())}
        params = {"sampling": self._sampling_params(key), "detector": detector,
                  "embedder": model_params(s.face_model, **self._face_kwargs())}
        return namespace_for(s.face_model, params), s.face_model, params

    def _gif_namespace(self, key: str | None = None) -> tuple[str, str, dict[str, Any]]:
        model_id = self.settings.gif_model
        params = {"sampling": self._sampling_params(key), "embedder": model_params(model_id), "pooling": "mean-l2"}
        return namespace_for(model_id, params), model_id, params

    def _namespaces(self, key: str | None = None) -> _Namespaces:
        return _Namespaces(namespace_for("frames", self._sampling_params(key)), *self._faces_namespace(key),
                           *self._gif_namespace(key))

    # -- public -----------------------------------------------------------------------
    def run(self, paths: Sequence[Path], on_result: Callable[[MediaResult], None] | None = None,
            is_stored: IsStored | None = None, on_read: OnRead | None = None) -> Iterator[MediaResult]:
        """Results in order. `is_stored(sha256, source_key, path)` (the store's answer) gives the
        stored kind of an item stored from exactly these cache entries, None otherwise: such an item
        is yielded with `stored_faces` set, its face entry's meta read and its other entries only
        looked for, a warm re-run's shortcut. An entry gone from disk (a cleared cache) makes it a
        miss, computed and stored again, so its crops are back (`_stored_face_count`).
        `on_read(path, batch)` is told of each file as soon as it is read, before its chunk's
        inference and so before its result (`OnRead`); `on_result` of each result, once per file."""
        hashes = _Hashes()  # this batch's only: a later run reads every file again
        for start in range(0, len(paths), self.chunk_size):
            for result in self._run_chunk(paths[start : start + self.chunk_size], is_stored, on_read, hashes):
                if on_result is not None:
                    on_result(result)
                yield result

    # -- stages -----------------------------------------------------------------------
    def _run_chunk(self, paths: Sequence[Path], is_stored: IsStored | None = None,
                   on_read: OnRead | None = None, hashes: _Hashes | None = None) -> list[MediaResult]:
        """The chunk's results, its files' frames going through the networks together: after the last
        file, or as soon as the frames held reach `max_pending_pixels` (`MAX_PENDING_PIXELS`).
        `on_read` is told of each file once it is read, with how many files go through the networks next."""
        spaces = {key: self._namespaces(key) for key in (None, STILL, *DECODERS)}
        work: list[_Pending] = []
        pending_pixels = 0
        results: list[MediaResult] = []
        first_of: dict[str, MediaResult] = {}
        copies: list[tuple[MediaResult, MediaResult]] = []
        hashes = hashes if hashes is not None else _Hashes()
        for n, path in enumerate(paths, 1):
            result = MediaResult(path=Path(path))
            results.append(result)
            item = self._from_cache(result, spaces, first_of, is_stored, hashes)
            if item is not None:
                if item.need_faces or item.need_gif:
                    work.append(item)
                    pending_pixels += _pixels(item.media)
            elif result.sha256 in first_of and first_of[result.sha256] is not result:
                copies.append((result, first_of[result.sha256]))
            # inference after the chunk's last file, or sooner: frames held no longer than needed
            infer = bool(work) and (n == len(paths) or pending_pixels >= self.max_pending_pixels)
            if on_read is not None:
                on_read(result.path, len(work) if infer else 0)
            if infer:
                self._infer_isolated(work)
                work, pending_pixels = [], 0
        for copy, original in copies:  # same bytes twice in one chunk: computed once
            path = copy.path
            copy.__dict__.update({**original.__dict__, "path": path, "from_cache": original.status == "ok"})
            if copy.error:  # the copy's failure names the copy, not the file it shares its bytes with
                copy.error = copy.error.replace(str(original.path), str(path))
        for result in results:  # the key `_from_cache` chose stays with what was stored ok only
            if result.status != "ok":
                result.source_key = None
        return results

    def _infer_isolated(self, work: list[_Pending]) -> None:
        """`_infer` over the items together; when that fails, file by file, so only the file that broke
        the batch fails. Their frames are let go afterwards: a chunk holds no file's frames past its
        inference."""
        try:
            self._infer(work)
        except FATAL_ERRORS:
            raise
        except Exception:  # isolate the file that broke the batch; the others go on
            log.exception("batched inference failed; retrying file by file")
            for item in work:
                try:
                    self._infer([item])
                except FATAL_ERRORS:
                    raise
                except Exception as exc:  # noqa: BLE001 - recorded as the file's failure
                    item.result.fail("inference", f"{item.result.path}: inference failed: {exc}")
        for item in work:
            item.media = None

    def _from_cache(self, result: MediaResult, spaces: dict[str | None, _Namespaces], first_of: dict[str, MediaResult],
                    is_stored: IsStored | None, hashes: _Hashes) -> _Pending | None:
        """Fill what the cache knows; decode only when some stage is missing.

        Returns None for a failure, for a repeat of bytes already seen in this chunk, and for an
        item the store already holds (`is_stored`). Only what concerns this one file is its failure:
        its name, reading and decoding it (`_sample`). Errors of the environment propagate and stop
        the batch: the cache folder (`CacheUnavailableError`) and the store (`is_stored`'s read).
        """
        path = result.path
        if (why := non_utf8_name(path)) is not None:  # the store keeps paths as text: cannot be stored or shown
            result.fail("unsupported", f"{path_text(path)}: {why}")
            return None
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            result.fail("unreadable", f"{path}: no such file")
            return None
        except OSError as exc:
            result.fail("unreadable", f"{path}: cannot read: {exc.strerror or exc}")
            return None
        if not S_ISREG(stat.st_mode):  # hashing a pipe or a device would wait for it forever
            result.fail("unreadable", f"{path}: {_not_a_file(path, stat.st_mode)}")
            return None
        result.size_bytes = stat.st_size
        if stat.st_size > self.limits.max_file_bytes:
            result.fail("too_large", f"{path}: {stat.st_size:,} bytes is over the {self.limits.max_file_bytes:,}-byte limit")
            return None
        try:
            result.sha256 = hashes.sha256(path, stat)
            ns = spaces[self._sampling_key(path)]  # a still, or which DECODERS entry keys its frames, if any
        except OSError as exc:
            result.fail("unreadable", f"{path}: cannot read: {exc.strerror or exc}")
            return None
        if result.sha256 in first_of:
            return None
        first_of[result.sha256] = result
        result.source_key = ns.source_key
        if is_stored is not None and (kind := is_stored(result.sha256, ns.source_key, path)) is not None:
            faces = self._stored_face_count(result.sha256, ns, kind)
            if faces is not None:
                result.stored_faces, result.from_cache = faces, True
                return None

        frames_entry = self._cache_get(ns.frames, result.sha256, FRAMES_SHAPE)
        if frames_entry is not None:
            _apply_media_meta(result, frames_entry.meta)
        face_entry = self._cache_get(ns.faces, result.sha256, FACES_SHAPE) if frames_entry else None
        animated = frames_entry is not None and result.kind in ANIMATED_KINDS
        gif_entry = self._cache_get(ns.gif, result.sha256, GIF_SHAPE) if animated else None
        item = _Pending(result, ns, need_faces=face_entry is None,
                        need_gif=frames_entry is None or (animated and gif_entry is None))
        if face_entry is not None:
            self._apply_faces(result, face_entry)
        if gif_entry is not None:
            _apply_gif(result, gif_entry)
        if not item.need_faces and not item.need_gif:
            result.from_cache = True
            return item
        item.media = self._sample(result)
        if item.media is None:
            return None
        meta = _media_meta(item.media)
        self._cache_put(ns.frames, result.sha256, meta)
        _apply_media_meta(result, meta)
        item.need_gif = result.kind in ANIMATED_KINDS and gif_entry is None
        return item

    def _stored_face_count(self, sha256: str, ns: _Namespaces, kind: str) -> int | None:
        """The face count of a stored item's face entry (its meta file, no arrays), or None when one of
        its entries is gone (or the face entry's meta damaged, or a crop of it gone): the store's rows
        point at crops in the face entry, so a lost entry or crop must be computed again, never skipped
        because the row is there.

        Only the face entry's meta is read (for the count), its arrays file and crops looked for; the
        frames entry, and an animation's GIF entry (`kind`, as stored), are only looked for
        (`EmbeddingCache.has`): a warm re-run does this for every file, and the store holds what they
        gave."""
        if not self._cache_io(self.cache.has, ns.frames, sha256):
            return None
        if kind in ANIMATED_KINDS and not self._cache_io(self.cache.has, ns.gif, sha256):
            return None
        faces = self._cache_io(self.cache.meta, ns.faces, sha256)
        if faces is None or not FACES_SHAPE.complete(self.cache.entry_dir(ns.faces, sha256), faces):
            return None
        return int(faces["faces"])

    def _sample(self, result: MediaResult) -> SampledMedia | None:
        """Decode and sample one file; None when it fails, recorded as its failure. Besides the media
        errors the decoder reports, any unexpected error (a decoder bug, a library raising what it
        does not document) is this file's failure, with its type and message: one file never stops
        the batch. Only this step is guarded so broadly: it touches nothing but this file."""
        try:
            return sample_media(result.path, self.settings.frames, self.limits, self.settings.dedupe_distance)
        except MediaError as exc:
            result.fail(exc.reason, str(exc))
        except Exception as exc:  # noqa: BLE001 - recorded as the file's failure
            log.exception("%s: unexpected error while reading the file", path_text(result.path))
            result.fail("error", f"{path_text(result.path)}: unexpected error while reading the file: "
                                 f"{type(exc).__name__}: {exc}")
        return None

    def _infer(self, work: list[_Pending]) -> None:
        """Faces and GIF embeddings of the items missing them, in batches across the items (whose
        namespaces may differ: an animated PNG's and a video's, `DECODERS`, and the others')."""
        face_items = [w for w in work if w.need_faces]
        if face_items:
            self._infer_faces(face_items)
        gif_items = [w for w in work if w.need_gif]
        if gif_items:
            self._infer_gif(gif_items)

    def _infer_faces(self, items: list[_Pending]) -> None:
        detector, embedder = self._model("detector"), self._model("face")
        for ns in {id(w.ns): w.ns for w in items}.values():
            self._describe_namespace(ns.faces, ns.face_model, ns.face_params)
        frames = [f for w in items for f in w.media.frames]
        detections = detector.detect(frames)
        per_item: list[list[tuple[int, Any, np.ndarray]]] = []
        cursor = 0
        for w in items:
            found = []
            for frame, frame_index, dets in zip(w.media.frames, w.media.frame_indices, detections[cursor : cursor + len(w.media.frames)]):
                for det in dets:
                    found.append((frame_index, det, embedder.align(frame, det)))
            cursor += len(w.media.frames)
            per_item.append(found)
        crops = [crop for found in per_item for (_, _, crop) in found]
        vectors = embedder.embed(crops) if crops else np.zeros((0, embedder.dim), np.float32)
        cursor = 0
        for w, found in zip(items, per_item):
            model_id = w.ns.face_model
            max_distance = TRACK_MAX_DISTANCE.get(model_id, 0.3)
            emb = vectors[cursor : cursor + len(found)]
            cursor += len(found)
            frame_of_face = [fi for (fi, _, _) in found]
            tracks = group_tracks(frame_of_face, emb, max_distance)
            track_of = np.full(len(found), -1, dtype=np.int32)
            for t in tracks:
                track_of[list(t.members)] = t.index
            scale = _to_media_size(w.media)
            arrays = {
                "frame_index": np.asarray(frame_of_face, dtype=np.int32),
                "box": np.asarray([d.box for (_, d, _) in found], dtype=np.float32).reshape(-1, 4) * np.tile(scale, 2),
                "probability": np.asarray([d.probability for (_, d, _) in found], dtype=np.float32),
                "landmarks": np.asarray([d.landmarks for (_, d, _) in found], dtype=np.float32).reshape(-1, 5, 2) * scale,
                "embedding": np.asarray(emb, dtype=np.float32).reshape(-1, embedder.dim),
                "track": track_of,
                "track_vector": np.asarray([t.vector for t in tracks], dtype=np.float32).reshape(-1, embedder.dim),
                "track_representative": np.asarray([t.representative for t in tracks], dtype=np.int32),
            }
            files = {crop_name(i): _jpeg(crop) for i, (_, _, crop) in enumerate(found)}
            entry = self._cache_put(w.ns.faces, w.result.sha256, {"model_id": model_id, "faces": len(found)}, arrays, files)
            self._apply_faces(w.result, entry)

    def _infer_gif(self, items: list[_Pending]) -> None:
        gif = self._model("gif")
        for ns in {id(w.ns): w.ns for w in items}.values():
            self._describe_namespace(ns.gif, ns.gif_model, ns.gif_params)
        scenes = [[w.media.frames[i] for i in w.media.scene_positions] for w in items]
        features, probs = gif.features_and_probs([f for frames in scenes for f in frames])
        cursor = 0
        for w, frames in zip(items, scenes):
            n = len(frames)
            pooled = features[cursor : cursor + n].mean(axis=0)
            pooled = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
            mean_probs = probs[cursor : cursor + n].mean(axis=0)
            cursor += n
            top = np.argsort(-mean_probs)[:TOP_LABELS]
            labels = [[gif.imagenet_labels[int(i)], round(float(mean_probs[i]), 6)] for i in top]
            entry = self._cache_put(w.ns.gif, w.result.sha256, {"model_id": w.ns.gif_model, "top_labels": labels},
                                   {"embedding": pooled.astype(np.float32)})
            _apply_gif(w.result, entry)

    def _apply_faces(self, result: MediaResult, entry: CacheEntry) -> None:
        a = entry.arrays
        result.face_model = entry.meta["model_id"]
        n = int(entry.meta["faces"])
        rel = entry.path.relative_to(self.data_dir) if entry.path.is_relative_to(self.data_dir) else entry.path
        result.faces = [
            FaceRecord(
                face_index=i,
                frame_index=int(a["frame_index"][i]),
                box=[float(x) for x in a["box"][i]],
                probability=float(a["probability"][i]),
                landmarks=a["landmarks"][i].astype(float).tolist(),
                embedding=a["embedding"][i],
                crop_path=str(rel / crop_name(i)),
                track_index=int(a["track"][i]),
            )
            for i in range(n)
        ]
        result.tracks = [
            TrackRecord(
                track_index=t,
                face_indices=[i for i in range(n) if int(a["track"][i]) == t],
                representative_face_index=int(a["track_representative"][t]),
                vector=a["track_vector"][t],
            )
            for t in range(len(a.get("track_representative", [])))
        ]


def _media_meta(media: SampledMedia) -> dict[str, Any]:
    return {
        "kind": media.kind,
        "width": media.width,
        "height": media.height,
        "total_frames": media.total_frames,
        "sampled_frames": list(map(int, media.frame_indices)),
        "frame_hashes": [_hex(h) for h in media.frame_hashes],
        "duration_s": media.duration_s,
    }


def _apply_media_meta(result: MediaResult, meta: dict[str, Any]) -> None:
    result.kind = meta["kind"]
    result.width, result.height = meta["width"], meta["height"]
    result.total_frames = meta["total_frames"]
    result.sampled_frames = list(meta["sampled_frames"])
    result.frame_hashes = list(meta["frame_hashes"])
    result.duration_s = meta.get("duration_s")


def _apply_gif(result: MediaResult, entry: CacheEntry) -> None:
    result.gif_model = entry.meta["model_id"]
    result.gif_embedding = entry.arrays["embedding"]
    result.top_labels = [(str(label), float(p)) for label, p in entry.meta["top_labels"]]
