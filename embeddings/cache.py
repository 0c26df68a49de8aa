"""Content-addressed cache of per-media inference results.

Key = sha256 of the file bytes + a namespace that encodes the model id and every
preprocessing parameter, so changing either starts a new namespace instead of
silently mixing results. An entry is a folder written under a temporary name and
renamed into place: a run killed half-way leaves either a complete entry or none.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

_ARRAYS = "arrays.npz"
_META = "meta.json"
_TMP = ".tmp"
# A file in every cache root (`EmbeddingCache`): a walk of folders leaves a folder holding it out wherever it
# lies (embeddings.pipeline.is_cache_folder), as it does an export. Why: another data folder's cache met under a
# parent folder being ingested holds face crops (face_000.jpg ...) that would come back as new media. Hidden,
# so it is no media file itself.
CACHE_MARKER = ".giflens-cache"
_MARKER_TEXT = "giflens embedding cache: face crops and embeddings giflens computed; ingest leaves this folder out.\n"
# What each namespace folder of a cache holds (`describe_namespace`): how a cache made before the marker is known.
NAMESPACE_NOTE = "namespace.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def namespace_for(model_id: str, params: dict[str, Any]) -> str:
    """A stable folder name: readable model id plus a hash of the canonical params."""
    canonical = json.dumps({"model_id": model_id, "params": params}, sort_keys=True, default=str)
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)
    return f"{safe_id}-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"


@dataclass
class CacheEntry:
    """What one media item produced in one namespace."""

    path: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def file(self, name: str) -> Path:
        return self.path / name


def _no_files(meta: dict[str, Any]) -> list[str]:
    return []


@dataclass(frozen=True)
class EntryShape:
    """What a complete entry of one kind holds besides its meta.json: the meta keys and arrays its
    reader indexes, and the files it names (`files(meta)`: a face entry's crops, one per face).

    Why: an entry renamed into place is complete, but a cache copied in part or cleaned by hand can
    lose a file inside one. Such an entry must be a miss, dropped and recomputed (its reader checks
    `complete` and calls `EmbeddingCache.drop`; `put` replaces it), never a reader's KeyError that
    stops the batch, nor a store row pointing at a crop that is gone (an export skips that label)."""

    meta_keys: tuple[str, ...] = ()
    arrays: tuple[str, ...] = ()
    files: Callable[[dict[str, Any]], Iterable[str]] = _no_files

    def complete(self, folder: Path, meta: Any, arrays: Iterable[str] | None = None) -> bool:
        """Whether an entry holds all of it; `arrays` are the keys read from its arrays.npz, None when
        that file was not read (then only its presence is looked for)."""
        if not isinstance(meta, dict) or any(key not in meta for key in self.meta_keys):
            return False
        if self.arrays:
            if arrays is None and not (folder / _ARRAYS).is_file():
                return False
            if arrays is not None and not set(self.arrays) <= set(arrays):
                return False
        try:
            names = list(self.files(meta))
        except (KeyError, TypeError, ValueError):  # a meta value that names no files (hand-edited)
            return False
        return all((folder / name).is_file() for name in names)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddingCache:
    """Folders `root/<namespace>/<sha[:2]>/<sha>/` holding `arrays.npz`, `meta.json` and extra files."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._mark()
        self._sweep_abandoned_tmp()

    def _mark(self) -> None:
        """Leave CACHE_MARKER in the root (a cache made before it had none gets one when next opened). A cache
        that cannot take it (read-only) is still read: a walk knows one by its namespaces too."""
        marker = self.root / CACHE_MARKER
        if marker.exists():
            return
        try:
            marker.write_text(_MARKER_TEXT)
        except OSError:
            pass

    def entry_dir(self, namespace: str, sha256: str) -> Path:
        return self.root / namespace / sha256[:2] / sha256

    def describe_namespace(self, namespace: str, model_id: str, params: dict[str, Any]) -> None:
        """Leave a human-readable note of what made a namespace (written once, atomically)."""
        target = self.root / namespace / NAMESPACE_NOTE
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"model_id": model_id, "params": params}, indent=2, sort_keys=True, default=str))
        os.replace(tmp, target)

    def meta(self, namespace: str, sha256: str) -> dict[str, Any] | None:
        """An entry's meta.json alone (no arrays), or None when the entry is missing or its meta
        unreadable: a cheap check that an entry is still on disk. A damaged entry is left for `get`
        to drop when the item is recomputed."""
        try:
            meta = json.loads((self.entry_dir(namespace, sha256) / _META).read_text())
        except (OSError, ValueError):  # missing, unreadable or cut short: a miss, as in `get`
            return None
        return meta if isinstance(meta, dict) else None

    def has(self, namespace: str, sha256: str) -> bool:
        """Whether an entry is on disk: its meta.json is a file and not empty (one stat, nothing read).
        Cheaper than `meta` for a check run on every file of a warm re-run; an entry damaged inside is
        found, and dropped, when it is next read (`get`)."""
        try:
            info = os.stat(self.entry_dir(namespace, sha256) / _META)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return stat.S_ISREG(info.st_mode) and info.st_size > 0

    def get(self, namespace: str, sha256: str) -> CacheEntry | None:
        """The entry, or None; an unreadable entry is dropped so it gets recomputed. Whether it holds all
        its reader needs is the reader's check (`EntryShape.complete`, then `drop`)."""
        folder = self.entry_dir(namespace, sha256)
        meta_path = folder / _META
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            arrays: dict[str, np.ndarray] = {}
            if (folder / _ARRAYS).is_file():
                with np.load(folder / _ARRAYS, allow_pickle=False) as npz:
                    arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # JSONDecodeError is a ValueError
            # a disk error or a hand-damaged file (cut short, emptied): a cache miss, never a failed batch
            self.drop(namespace, sha256)
            return None
        return CacheEntry(folder, meta, arrays)

    def drop(self, namespace: str, sha256: str) -> None:
        """Remove an entry (one damaged inside, `EntryShape`), so it is a miss and gets recomputed."""
        shutil.rmtree(self.entry_dir(namespace, sha256), ignore_errors=True)

    def put(
        self,
        namespace: str,
        sha256: str,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray] | None = None,
        files: dict[str, bytes] | None = None,
    ) -> CacheEntry:
        """Write the entry under a temporary name, fsync, then rename it into place. An entry already
        there is kept when it holds everything this one would (another process wrote it meanwhile),
        else replaced: one damaged inside is never handed back for what was just computed."""
        final = self.entry_dir(namespace, sha256)
        if (final / _META).is_file():
            names = tuple(files or {})
            shape = EntryShape(tuple(meta), tuple(arrays or {}), lambda _: names)
            existing = self.get(namespace, sha256)
            if existing is not None and shape.complete(final, existing.meta, existing.arrays):
                return existing
        tmp_root = self.root / _TMP
        tmp_root.mkdir(parents=True, exist_ok=True)
        tmp = tmp_root / f"{os.getpid()}-{namespace}-{sha256}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, data in (files or {}).items():
            _write_synced(tmp / name, data)
        if arrays:
            with open(tmp / _ARRAYS, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
        _write_synced(tmp / _META, json.dumps(meta, sort_keys=True, default=str).encode())
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover without meta.json
        try:
            os.rename(tmp, final)
        except OSError:  # another process won the race with an identical entry
            shutil.rmtree(tmp, ignore_errors=True)
        return CacheEntry(final, meta, dict(arrays or {}))

    def _sweep_abandoned_tmp(self) -> None:
        """Remove temporary entries of processes that died mid-write."""
        tmp_root = self.root / _TMP
        if not tmp_root.is_dir():
            return
        for child in tmp_root.iterdir():
            pid_text = child.name.split("-", 1)[0]
            if pid_text.isdigit() and not _pid_alive(int(pid_text)):
                shutil.rmtree(child, ignore_errors=True)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
