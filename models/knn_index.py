"""Nearest neighbours over L2-normalised embeddings, by cosine distance (1 - cos).

Why two engines: an editor asks "which faces look like this one?" over a few hundred to
tens of thousands of embeddings. Below `exact_below` items one matrix product is exact and
as fast as the graph, so approximation would only cost recall. Above it, nmslib's HNSW
graph answers in far less than the linear scan. bench/knn.py (2 shared cores, dlib 128-d,
one query at a time): HNSW 1.2x exact at 2,000 items, 1.7x at 5,500 real LFW faces
(recall@10 1.0), 10x at 50,000; a batch of queries is one matrix product and exact keeps
up with HNSW to about 6,000 items. nmslib cannot insert into a built graph, so the index keeps its
vectors (they also serve exact queries and `query_ids`) and `add` appends new items to an exact-searched
tail beside the graph: a query merges the graph's answer with an exact scan of the tail. Rebuilding the
graph costs seconds to minutes (17-40 s for 20,000 random 128-d vectors on one shared core), while a tail of up to
`exact_below` items, and at most a tenth of the graph, adds no more than one small exact scan per query;
past that, `add` rebuilds the graph over everything.

The index remembers the embedding model its vectors came from (`model_id`): a distance
between a dlib face and a FaceNet face is meaningless, so mixing models is an error rather
than a silently wrong neighbour list.

A saved index records the size and CRC-32 of each of its files, and `load` checks them before
reading: a damaged vectors.npy of the right shape (rows shuffled) would otherwise answer with wrong
neighbours, and a damaged graph file could crash nmslib's reader. Damage is a KnnIndexError naming
the file, so a caller (models/index_store.py) rebuilds. CRC-32 because it detects corruption, not
tampering, and runs at about 3 GB/s (SHA-1: 1 GB/s): checking the 85 MB of a 50,000 x 128 index adds
about 20 ms to its load (25-30 ms unchecked, warm disk cache), against a 70 s rebuild.
"""
from __future__ import annotations

import json
import shutil
import zlib
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.atomic_folder import atomic_folder

FORMAT_VERSION = 1
METHODS = ("auto", "hnsw", "exact")
_GRAPH_FILE = "hnsw.bin"  # nmslib also writes hnsw.bin.dat (the data) beside it
_EXACT_BLOCK = 1024  # query rows per matrix product: bounds memory at 1024 x n floats
_CHUNK = 1 << 22  # bytes per read when checksumming a file


def _checksum(path: Path) -> list[int | str]:
    """[size, CRC-32 as 8 hex digits] of a file, read in chunks (a graph file can be 100 MB)."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
    return [size, f"{crc:08x}"]


def _checksums(folder: Path) -> dict[str, list[int | str]]:
    """Checksums of every file of a saved index except index.json, which holds them."""
    return {f.name: _checksum(f) for f in sorted(folder.iterdir()) if f.is_file() and f.name != "index.json"}


def _verify(folder: Path, expected: dict[str, Any]) -> None:
    """Raise KnnIndexError naming the first file missing, resized or changed since it was saved;
    sizes first (one stat each), so a truncated or missing file costs no read."""
    for name, (size, _) in expected.items():
        try:
            found = (folder / name).stat().st_size
        except OSError as exc:
            raise KnnIndexError(f"{folder / name}: unreadable ({exc})") from exc
        if found != size:
            raise KnnIndexError(f"{folder / name}: {found} bytes, {size} when saved")
    for name, (_, crc) in expected.items():
        try:
            found_crc = _checksum(folder / name)[1]
        except OSError as exc:
            raise KnnIndexError(f"{folder / name}: unreadable ({exc})") from exc
        if found_crc != crc:
            raise KnnIndexError(f"{folder / name}: damaged (CRC-32 {found_crc}, {crc} when saved)")


@lru_cache(maxsize=1)
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # scikit-learn's dependency; without it BLAS keeps its own thread count
        return None
    return ThreadpoolController()


def _blas_threads(n: int) -> AbstractContextManager:
    """Cap BLAS threads for one search. Why: on a shared 2-core machine a multi-threaded
    OpenBLAS matrix-vector product for one query took 10-16 ms against 0.05 ms on one
    thread (threads spinning for cores other jobs hold); the cap costs ~8 us."""
    controller = _blas_controller()
    return nullcontext() if controller is None else controller.limit(limits=n, user_api="blas")


class KnnIndexError(ValueError):
    """Bad use of an index: empty, not fitted, wrong dimension or model, non-finite vectors, bad ids."""


def _as_unit_matrix(vectors: Any, dim: int | None = None) -> np.ndarray:
    """(n, d) float32 rows of unit length; cosine distance ignores length, so rescaling loses nothing."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise KnnIndexError(f"expected a non-empty (n, d) matrix of vectors, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise KnnIndexError(f"vectors have {x.shape[1]} dimensions, the index holds {dim}-dimensional vectors")
    if not np.isfinite(x).all():
        raise KnnIndexError("vectors contain NaN or infinity")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise KnnIndexError("a zero vector has no direction: cosine distance is undefined")
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def _as_ids(ids: Sequence[int | str], n: int) -> np.ndarray:
    """int64 array when every id is an integer (the store's primary keys), else an object array."""
    values = [i.item() if isinstance(i, np.generic) else i for i in ids]
    if len(values) != n:
        raise KnnIndexError(f"{n} vectors but {len(values)} ids")
    if any(isinstance(v, bool) or not isinstance(v, (int, str)) for v in values):
        raise KnnIndexError("ids must be integers or strings")
    if len(set(values)) != len(values):
        raise KnnIndexError("duplicate ids")
    if all(isinstance(v, int) for v in values):
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError as exc:
            raise KnnIndexError(f"integer ids must fit in 64 bits: {exc}") from exc
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _concat_ids(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype == b.dtype == np.int64:
        return np.concatenate([a, b])
    out = np.empty(len(a) + len(b), dtype=object)
    out[: len(a)], out[len(a):] = a.tolist(), b.tolist()
    return out


class KnnIndex:
    """k nearest neighbours by cosine distance; `fit` then `query`, like a scikit-learn estimator.

    method: "exact" (numpy), "hnsw" (nmslib) or "auto" (HNSW once the index holds at least
    `exact_below` items). M, ef_construction and ef_search are nmslib's HNSW parameters:
    graph degree, build-time and query-time beam widths (larger: better recall, slower).
    n_jobs: threads a search or build may use, nmslib's and BLAS's (1 by default: the
    machines are shared, and oversubscribed BLAS threads made single queries 100x slower).
    """

    # Searches (`query`, `query_ids`) run by every index of this process: a caller that keeps neighbours
    # between runs (explorer/pages/review.py) can show, and its tests check, that a run searched nothing.
    searches: int = 0

    def __init__(self, model_id: str, method: str = "auto", exact_below: int = 2000, M: int = 16,
                 ef_construction: int = 200, ef_search: int = 100, n_jobs: int = 1) -> None:
        if not isinstance(model_id, str) or not model_id:
            raise KnnIndexError("model_id must be a non-empty string (the embedding model's registry name)")
        if method not in METHODS:
            raise KnnIndexError(f"method must be one of {METHODS}, got {method!r}")
        for name, value in (("exact_below", exact_below), ("M", M), ("ef_construction", ef_construction),
                            ("ef_search", ef_search), ("n_jobs", n_jobs)):
            if not isinstance(value, (int, np.integer)) or value < (0 if name == "exact_below" else 1):
                raise KnnIndexError(f"{name} must be a positive integer, got {value!r}")
        self.model_id = model_id
        self.method = method
        self.exact_below = int(exact_below)
        self.M = int(M)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self.n_jobs = int(n_jobs)
        # Fitted state (scikit-learn's trailing underscore): unit vectors, their ids, the graph.
        self.vectors_: np.ndarray | None = None
        self.ids_: np.ndarray | None = None
        self._graph: Any = None
        self._graph_n = 0  # the graph holds rows [0, _graph_n); later rows are the exact-searched tail
        self._graph_files: list[Path] = []  # the files a loaded graph came from (see save)
        self._graph_sums: dict[str, Any] = {}  # their checksums when loaded, if the save recorded them

    def get_params(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "method": self.method, "exact_below": self.exact_below, "M": self.M,
                "ef_construction": self.ef_construction, "ef_search": self.ef_search, "n_jobs": self.n_jobs}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"KnnIndex({params}) with {len(self)} items, {'hnsw' if self.uses_hnsw else 'exact'}"

    def __len__(self) -> int:
        return 0 if self.ids_ is None else len(self.ids_)

    @property
    def dim(self) -> int | None:
        """Embedding dimension, None before fit."""
        return None if self.vectors_ is None else int(self.vectors_.shape[1])

    @property
    def uses_hnsw(self) -> bool:
        """Whether queries go to the HNSW graph (else exact search)."""
        return self._graph is not None

    @property
    def graph_items(self) -> int:
        """Items inside the HNSW graph (0 for exact search); the rest, added since, are searched exactly."""
        return self._graph_n if self._graph is not None else 0

    def _tail_limit(self) -> int:
        """Most items `add` keeps beside the graph before rebuilding it: an exact scan of that many
        costs about one graph query (bench/knn.py puts exact and HNSW level near `exact_below`)."""
        return max(1, min(self.exact_below, self._graph_n // 10))

    def _wants_hnsw(self, n: int) -> bool:
        return self.method == "hnsw" or (self.method == "auto" and n >= self.exact_below)

    def _check_model(self, model_id: str | None) -> None:
        if model_id is not None and model_id != self.model_id:
            raise KnnIndexError(f"this index holds {self.model_id!r} embeddings, got {model_id!r} vectors")

    def _check_fitted(self) -> None:
        if self.vectors_ is None:
            raise KnnIndexError("the index is not fitted: call fit(vectors, ids) first")

    # -- building ----------------------------------------------------------------------
    def fit(self, vectors: np.ndarray, ids: Sequence[int | str], model_id: str | None = None) -> "KnnIndex":
        """Index these vectors (replacing anything indexed before)."""
        self._check_model(model_id)
        x = _as_unit_matrix(vectors)
        self._set(x, _as_ids(ids, len(x)))
        return self

    def add(self, vectors: np.ndarray, ids: Sequence[int | str], model_id: str | None = None) -> "KnnIndex":
        """Extend the index. With a graph, new items join the exact-searched tail while it stays small
        (see `graph_items`); past that the graph is rebuilt over all items, so add in batches."""
        self._check_model(model_id)
        if self.vectors_ is None:
            return self.fit(vectors, ids)
        x = _as_unit_matrix(vectors, self.dim)
        new_ids = _as_ids(ids, len(x))
        clash = set(new_ids.tolist()) & set(self.ids_.tolist())
        if clash:
            raise KnnIndexError(f"ids already in the index: {sorted(map(str, clash))[:5]}")
        all_x, all_ids = np.concatenate([self.vectors_, x]), _concat_ids(self.ids_, new_ids)
        if self._graph is not None and len(all_x) - self._graph_n <= self._tail_limit():
            self.vectors_, self.ids_ = all_x, all_ids  # the graph stays; the new rows are searched exactly
        else:
            self._set(all_x, all_ids)
        return self

    def _set(self, x: np.ndarray, ids: np.ndarray) -> None:
        graph = self._build_graph(x) if self._wants_hnsw(len(x)) else None
        self.vectors_, self.ids_, self._graph = x, ids, graph
        self._graph_n = len(x) if graph is not None else 0
        self._graph_files, self._graph_sums = [], {}

    def _build_graph(self, x: np.ndarray) -> Any:
        import nmslib

        graph = nmslib.init(method="hnsw", space="cosinesimil")
        graph.addDataPointBatch(x)
        graph.createIndex({"M": self.M, "efConstruction": self.ef_construction, "post": 0,
                           "indexThreadQty": self.n_jobs}, print_progress=False)
        return graph

    # -- searching ---------------------------------------------------------------------
    def query(self, vectors: np.ndarray, k: int, model_id: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids (m, k), cosine distances (m, k) float32), nearest first; k is capped at the index size."""
        self._check_model(model_id)
        self._check_fitted()
        q = _as_unit_matrix(vectors, self.dim)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise KnnIndexError(f"k must be a positive integer, got {k!r}")
        k = min(int(k), len(self))
        KnnIndex.searches += 1
        rows, dists = self._hnsw(q, k) if self._graph is not None else self._exact(q, k)
        return self.ids_[rows], dists

    def _exact(self, q: np.ndarray, k: int, lo: int = 0, hi: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Positions and distances of the k nearest among rows [lo, hi), by one matrix product per
        block of queries; k must not exceed the rows searched."""
        rows_out, dists_out = [], []
        base = self.vectors_[lo:hi]
        for start in range(0, len(q), _EXACT_BLOCK):
            with _blas_threads(self.n_jobs):
                sims = q[start : start + _EXACT_BLOCK] @ base.T
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            top_sims = np.take_along_axis(sims, top, axis=1)
            order = np.argsort(-top_sims, axis=1, kind="stable")
            rows_out.append(np.take_along_axis(top, order, axis=1) + lo)
            dists_out.append(np.clip(1.0 - np.take_along_axis(top_sims, order, axis=1), 0.0, 2.0))
        return np.concatenate(rows_out), np.concatenate(dists_out).astype(np.float32)

    def _hnsw(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Graph search merged with an exact scan of the tail added since the graph was built; a row
        the graph answers with fewer than the items asked is answered exactly instead."""
        g = self._graph_n
        kg = min(k, g)
        self._graph.setQueryTimeParams({"efSearch": max(self.ef_search, kg)})
        results = self._graph.knnQueryBatch(q, k=kg, num_threads=self.n_jobs)
        rows = np.zeros((len(q), kg), dtype=np.int64)
        dists = np.zeros((len(q), kg), dtype=np.float32)
        short = []
        for i, (idx, dist) in enumerate(results):
            if len(idx) < kg:
                short.append(i)
                continue
            order = np.argsort(dist, kind="stable")
            rows[i], dists[i] = idx[order], np.clip(dist[order], 0.0, 2.0)
        if short:
            rows[short], dists[short] = self._exact(q[short], kg, 0, g)
        if len(self) > g:
            tail_rows, tail_dists = self._exact(q, min(k, len(self) - g), g)
            rows, dists = np.concatenate([rows, tail_rows], axis=1), np.concatenate([dists, tail_dists], axis=1)
            order = np.argsort(dists, axis=1, kind="stable")[:, :k]
            rows, dists = np.take_along_axis(rows, order, axis=1), np.take_along_axis(dists, order, axis=1)
        return rows, dists

    def query_ids(self, ids: Sequence[int | str], k: int, exclude_self: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Neighbours of items already indexed, by id; with exclude_self an item is not its own neighbour."""
        self._check_fitted()
        position = {v: i for i, v in enumerate(self.ids_.tolist())}
        wanted = [i.item() if isinstance(i, np.generic) else i for i in ids]
        missing = [i for i in wanted if i not in position]
        if missing:
            raise KnnIndexError(f"ids not in the index: {missing[:5]}")
        if not wanted:
            raise KnnIndexError("no ids to query")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise KnnIndexError(f"k must be a positive integer, got {k!r}")
        rows = [position[i] for i in wanted]
        if not exclude_self:
            return self.query(self.vectors_[rows], k)
        k = min(int(k), len(self) - 1)
        if k == 0:
            return np.empty((len(rows), 0), dtype=self.ids_.dtype), np.empty((len(rows), 0), dtype=np.float32)
        KnnIndex.searches += 1
        found_rows, found_d = (self._hnsw if self._graph is not None else self._exact)(self.vectors_[rows], k + 1)
        out_rows = np.empty((len(rows), k), dtype=np.int64)
        out_d = np.empty((len(rows), k), dtype=np.float32)
        for n, own in enumerate(rows):
            # Drop the item itself; if the (approximate) graph did not return it, drop the farthest.
            keep = np.flatnonzero(found_rows[n] != own)[:k]
            out_rows[n], out_d[n] = found_rows[n][keep], found_d[n][keep]
        return self.ids_[out_rows], out_d

    # -- persistence -------------------------------------------------------------------
    def save(self, folder: Path | str, extra: dict[str, Any] | None = None) -> Path:
        """Write vectors, ids, parameters and the HNSW graph (with its data, so load does not rebuild).

        Atomic: everything goes to a temporary folder beside the target, which is then renamed
        into place, so a reader never sees half an index. `extra` (JSON) is kept in index.json for
        the caller, e.g. a fingerprint of the embeddings indexed (models/index_store.py). index.json
        also holds each file's size and CRC-32, checked by `load`.
        """
        self._check_fitted()
        folder = Path(folder)
        with atomic_folder(folder) as tmp:
            np.save(tmp / "vectors.npy", self.vectors_, allow_pickle=False)
            (tmp / "ids.json").write_text(json.dumps(self.ids_.tolist()))
            if self._graph is not None:
                self._write_graph(tmp)
            meta = {"format": FORMAT_VERSION, "params": self.get_params(), "n": len(self), "dim": self.dim,
                    "ids_dtype": "int64" if self.ids_.dtype == np.int64 else "object",
                    "graph": self._graph is not None, "graph_items": self.graph_items, "extra": extra or {},
                    "checksums": _checksums(tmp)}
            (tmp / "index.json").write_text(json.dumps(meta, indent=1))
        return folder

    def _write_graph(self, folder: Path) -> None:
        """nmslib cannot save a graph it loaded (nmslib issue #346: it writes a 68-byte stub that
        crashes the next reader), so a loaded graph, which `add` never changes, is saved by copying
        the files it came from; if those are gone or changed since loading, it is rebuilt from its rows
        (copying a damaged file would give it fresh checksums)."""
        if self._graph_files and all(f.is_file() for f in self._graph_files):
            for f in self._graph_files:
                shutil.copyfile(f, folder / f.name)
            try:
                _verify(folder, self._graph_sums)
                return
            except KnnIndexError:
                for f in self._graph_files:
                    (folder / f.name).unlink(missing_ok=True)
        if self._graph_files:
            self._graph, self._graph_files = self._build_graph(self.vectors_[: self._graph_n]), []
        self._graph.saveIndex(str(folder / _GRAPH_FILE), save_data=True)

    @classmethod
    def load(cls, folder: Path | str) -> "KnnIndex":
        """Read an index written by save; the HNSW graph is loaded, not rebuilt. A file missing or
        damaged since the save is a KnnIndexError naming it (indexes saved before checksums were
        recorded are read unchecked; nmslib's own read errors still become KnnIndexError)."""
        folder = Path(folder)
        meta = saved_meta(folder)
        sums = meta.get("checksums") or {}
        if not isinstance(sums, dict) or not all(isinstance(v, list) and len(v) == 2 for v in sums.values()):
            raise KnnIndexError(f"{folder / 'index.json'}: malformed checksums")
        _verify(folder, sums)
        index = cls(**meta["params"])
        vectors = np.load(folder / "vectors.npy", allow_pickle=False)
        ids = json.loads((folder / "ids.json").read_text())
        index.vectors_ = vectors
        index.ids_ = np.array(ids, dtype=np.int64) if meta["ids_dtype"] == "int64" else _as_ids(ids, len(ids))
        if vectors.shape != (meta["n"], meta["dim"]) or len(index.ids_) != meta["n"]:
            raise KnnIndexError(f"{folder}: vectors {vectors.shape} and {len(ids)} ids do not match index.json")
        if meta["graph"]:
            import nmslib

            graph = nmslib.init(method="hnsw", space="cosinesimil")
            try:
                graph.loadIndex(str(folder / _GRAPH_FILE), load_data=True)
            except Exception as exc:  # nmslib reports a missing or garbled file as RuntimeError (or MemoryError)
                raise KnnIndexError(f"{folder / _GRAPH_FILE}: nmslib could not read the HNSW graph "
                                    f"({type(exc).__name__}: {exc})") from exc
            graph_n = int(meta.get("graph_items", meta["n"]))  # indexes saved before the tail existed: all in the graph
            if len(graph) != graph_n or graph_n > meta["n"]:
                raise KnnIndexError(f"{folder}: the HNSW graph holds {len(graph)} items, index.json says {graph_n}")
            index._graph, index._graph_n = graph, graph_n
            index._graph_files = sorted(folder.glob(f"{_GRAPH_FILE}*"))
            index._graph_sums = {f.name: sums[f.name] for f in index._graph_files if f.name in sums}
        return index


def saved_meta(folder: Path | str) -> dict[str, Any]:
    """index.json of a saved index (parameters, size, `extra`), without reading vectors or graph:
    enough to decide whether the index still fits the embeddings at hand."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "index.json").read_text())
    except (OSError, ValueError) as exc:
        raise KnnIndexError(f"no saved index in {folder}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise KnnIndexError(f"{folder}: index format {found!r}, this code reads {FORMAT_VERSION}")
    return meta
