"""Nearest-neighbour indexes kept in the data folder: one per embedding namespace, reused across runs.

Why: an HNSW graph over tens of thousands of faces takes tens of seconds to build (17-40 s for
20,000 random 128-d vectors on one shared core), yet the set it covers rarely changes between two
Review runs or two clicks in Explore. The saved index is checked and loaded in 60-70 ms and extended
by 200 items in 0.1 s. `stored_index` brings it up to date with the embeddings at hand and says how:

- "loaded":   the saved index covers exactly these ids with these vectors;
- "extended": new ids were added (`KnnIndex.add`: they join the exact-searched tail, so the graph
              is not rebuilt until the tail grows large);
- "rebuilt":  ids were removed, a vector changed (re-embedded) or the build parameters differ:
              nmslib cannot delete from a graph, and a stale vector would give wrong neighbours;
              also when a saved file is missing or damaged (`KnnIndex.load` checks each file's size
              and CRC-32 recorded at save time), and once for an index saved before those were recorded;
- "built":    nothing usable was saved;
- "exact":    fewer than `exact_below` items: one matrix product is exact and as fast as the
              graph, building it costs no more than normalising the vectors, so nothing is saved.

Staleness is detected by a fingerprint kept in index.json: a SHA-1 of the model id, the ids in the
index's order and the caller's float32 vector bytes for those ids. Checking it costs one hash of
the vectors (about 20 ms for 50,000 x 128) instead of a graph build. The fingerprint vouches for the
caller's vectors only; that the saved files still hold what was saved is the checksums' job.

Vectors of different embedding models never share an index: a folder holding another model's
index is refused with KnnIndexError, nothing written. Name folders with `index_folder(data_dir,
namespace)`, one namespace per view and model ("faces-dlib-resnet-v1").

Within one process the last index of each folder stays in memory (validated against index.json's
file identity, so another process's save is noticed): a Streamlit rerun then costs the fingerprint,
not a disk load. Saving is atomic (`KnnIndex.save`: temporary folder, then rename); a save that
fails (read-only data folder, a concurrent writer) is logged and the index is still returned.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from models.knn_index import KnnIndex, KnnIndexError, _as_ids, saved_meta

__all__ = ["EXACT_BELOW", "INDEXES", "forget", "index_fingerprint", "index_folder", "stored_index"]

log = logging.getLogger(__name__)

INDEXES = "indexes"  # under the data folder
EXACT_BELOW = 2000   # KnnIndex's default: below it exact search is as fast as HNSW (bench/knn.py)
_BUILD_PARAMS = ("M", "ef_construction")  # a saved graph built with others is rebuilt

_GUARD = threading.Lock()
_LOCKS: dict[Path, threading.Lock] = {}
# folder -> (identity of its index.json, the index, its fingerprint)
_MEMORY: dict[Path, tuple[tuple[int, int, int], KnnIndex, str]] = {}


def index_folder(data_dir: Path | str, namespace: str) -> Path:
    """`<data_dir>/indexes/<namespace>`, the namespace made safe as a folder name."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", namespace).strip("._")
    if not name:
        raise KnnIndexError(f"namespace {namespace!r} has no usable characters for a folder name")
    return Path(data_dir) / INDEXES / name


def index_fingerprint(model_id: str, ids: Sequence[int | str], vectors: np.ndarray) -> str:
    """SHA-1 of the model id, the ids in order and the float32 vector bytes: any removed,
    reordered or re-embedded item changes it (not a security hash: a change detector)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    plain = [i.item() if isinstance(i, np.generic) else i for i in ids]
    h = hashlib.sha1()
    h.update(json.dumps([model_id, plain, list(x.shape)]).encode())
    h.update(b"\0")
    h.update(memoryview(x).cast("B"))
    return h.hexdigest()


def forget(folder: Path | str | None = None) -> None:
    """Drop the in-memory copy of one folder's index (or of all): the next call reads the disk."""
    with _GUARD:
        if folder is None:
            _MEMORY.clear()
        else:
            _MEMORY.pop(_key(folder), None)


def _key(folder: Path | str) -> Path:
    return Path(folder).resolve()


def _lock(folder: Path) -> threading.Lock:
    with _GUARD:
        return _LOCKS.setdefault(folder, threading.Lock())


def _identity(folder: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(folder / "index.json")
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def stored_index(folder: Path | str, vectors: np.ndarray, ids: Sequence[int | str], model_id: str, *,
                 exact_below: int | None = None, M: int = 16, ef_construction: int = 200, ef_search: int = 100,
                 n_jobs: int = 1) -> tuple[KnnIndex, str]:
    """The index of these vectors (all from `model_id`), from `folder` when it holds one that still
    fits, and how it was obtained: "exact", "loaded", "extended", "rebuilt" or "built" (see the
    module docstring). exact_below None means EXACT_BELOW. The returned index is the caller's:
    adding to it changes neither the saved nor the in-memory copy.
    """
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise KnnIndexError(f"expected a non-empty (n, d) matrix of vectors, got shape {x.shape}")
    id_arr = _as_ids(ids, len(x))
    threshold = EXACT_BELOW if exact_below is None else exact_below
    wanted = KnnIndex(model_id, exact_below=threshold, M=M, ef_construction=ef_construction,
                      ef_search=ef_search, n_jobs=n_jobs)  # validates every parameter
    if len(x) < threshold:
        exact = KnnIndex(model_id, method="exact", exact_below=threshold, n_jobs=n_jobs)
        return exact.fit(x, id_arr), "exact"
    key = _key(folder)
    with _lock(key):
        index, how = _reconcile(key, x, id_arr, wanted)
    return copy.copy(index), how


def _reconcile(folder: Path, x: np.ndarray, ids: np.ndarray, wanted: KnnIndex) -> tuple[KnnIndex, str]:
    model_id = wanted.model_id
    ident = _identity(folder)
    with _GUARD:
        remembered = _MEMORY.get(folder)
    index: KnnIndex | None = None
    unchecked = False
    if remembered is not None and ident is not None and remembered[0] == ident:
        index, fp = remembered[1], remembered[2]
        saved_model, saved_params, saved_ids = index.model_id, index.get_params(), index.ids_.tolist()
    else:
        try:
            meta = saved_meta(folder)
            saved_model, saved_params = meta["params"]["model_id"], meta["params"]
            fp = meta.get("extra", {}).get("fingerprint")
            unchecked = not meta.get("checksums")  # saved before checksums: damage would go unnoticed
            saved_ids = json.loads((folder / "ids.json").read_text()) if saved_model == model_id else []
        except (KnnIndexError, OSError, ValueError, KeyError, TypeError) as exc:
            if ident is not None:
                log.warning("rebuilding the unreadable index in %s: %s", folder, exc)
            return _build(folder, x, ids, wanted, "built" if ident is None else "rebuilt")
    if saved_model != model_id:
        raise KnnIndexError(f"{folder} holds an index of {saved_model!r} embeddings, refusing to mix {model_id!r} "
                            "vectors into it: use one folder per embedding model (index_folder(data_dir, namespace))")
    if unchecked:
        log.info("rebuilding the index in %s: saved without checksums", folder)
        return _build(folder, x, ids, wanted, "rebuilt")
    position = {v: i for i, v in enumerate(ids.tolist())}
    rows = [position.get(i) for i in saved_ids]
    if any(r is None for r in rows):
        return _build(folder, x, ids, wanted, "rebuilt")  # an item was removed: nmslib cannot delete
    rows_arr = np.asarray(rows, dtype=np.int64)
    if fp is None or index_fingerprint(model_id, saved_ids, x[rows_arr]) != fp:
        return _build(folder, x, ids, wanted, "rebuilt")  # a vector changed
    if any(saved_params.get(p) != getattr(wanted, p) for p in _BUILD_PARAMS):
        return _build(folder, x, ids, wanted, "rebuilt")
    if index is None:
        try:
            index = KnnIndex.load(folder)
        except (KnnIndexError, OSError, ValueError, KeyError, TypeError, EOFError) as exc:
            log.warning("rebuilding the unreadable index in %s: %s", folder, exc)
            return _build(folder, x, ids, wanted, "rebuilt")
    index = copy.copy(index)  # the remembered copy is shared with other callers: never mutate it
    index.exact_below, index.ef_search, index.n_jobs = wanted.exact_below, wanted.ef_search, wanted.n_jobs
    new_mask = np.ones(len(ids), dtype=bool)
    new_mask[rows_arr] = False
    if not new_mask.any():
        _remember(folder, index, fp)
        return index, "loaded"
    index.add(x[new_mask], ids[new_mask], model_id=model_id)
    all_rows = np.concatenate([rows_arr, np.flatnonzero(new_mask)])
    _save(folder, index, index_fingerprint(model_id, index.ids_.tolist(), x[all_rows]))
    return index, "extended"


def _build(folder: Path, x: np.ndarray, ids: np.ndarray, wanted: KnnIndex, how: str) -> tuple[KnnIndex, str]:
    index = KnnIndex(**wanted.get_params()).fit(x, ids)
    _save(folder, index, index_fingerprint(wanted.model_id, ids.tolist(), x))
    return index, how


def _save(folder: Path, index: KnnIndex, fp: str) -> None:
    try:
        index.save(folder, extra={"fingerprint": fp})
    except OSError as exc:  # the index still answers; the next run tries again
        log.warning("could not save the nearest-neighbour index to %s: %s", folder, exc)
        forget(folder)
        return
    _remember(folder, index, fp)


def _remember(folder: Path, index: KnnIndex, fp: str) -> None:
    ident = _identity(folder)
    with _GUARD:
        if ident is None:
            _MEMORY.pop(folder, None)
        else:
            _MEMORY[folder] = (ident, index, fp)
