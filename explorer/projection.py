"""Projections of embeddings to 2D/3D for the explorer: UMAP (cached, extendable) and a PCA preview.

Why it is shaped like this:
- UMAP on tens of thousands of faces takes minutes, so `project` returns a `Projection`
  result object (like FiftyOne brain results) that is saved under a cache key made of the
  embedding-set fingerprint (ids + vector bytes + model id) and the parameters. The same
  faces with the same parameters are never projected twice, and a changed model or a
  changed face set can never be served stale coordinates.
- New faces arrive all the time. Refitting would move every point the editors have learnt
  to navigate; `Projection.extend` keeps the fitted reducer and places new points with
  `transform` instead.
- While UMAP runs the page needs something to show: `pca_preview` is one SVD, well under a
  second for 50,000 faces.

    proj = project(vectors, ids, cache_dir=Path("giflens-data/projections"), model_id="dlib-resnet-v1")
    proj = proj.extend(new_vectors, new_ids)
    df = proj.to_frame()          # id, x, y, z, placed -> explorer.figures.scatter_3d(df, ...)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "METHODS",
    "UMAP_EXACT_BELOW",
    "Projection",
    "ProjectionError",
    "ProjectionParams",
    "cache_entry",
    "compile_kernels",
    "fingerprint",
    "load_cached",
    "pca_preview",
    "project",
]

METHODS = ("umap", "pca")
METRICS = ("cosine", "euclidean")
FORMAT_VERSION = 1
COORD_NAMES = ("x", "y", "z")

# on_progress(stage, fraction): stage is one of "cache", "fit", "layout", "save", "done";
# fraction is the share of the whole job done so far, 0..1.
ProgressCallback = Callable[[str, float], None]


class ProjectionError(ValueError):
    """A projection cannot be computed from these inputs; the message says why and what to do."""


@dataclass(frozen=True)
class ProjectionParams:
    """Everything that changes the coordinates, and nothing else (the cache key is made of it)."""

    method: str = "umap"
    n_components: int = 3
    metric: str = "cosine"
    n_neighbors: int = 15
    min_dist: float = 0.1
    seed: int = 42

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ProjectionError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.metric not in METRICS:
            raise ProjectionError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if not isinstance(self.n_components, (int, np.integer)) or not 1 <= self.n_components <= 3:
            raise ProjectionError(f"n_components must be 1, 2 or 3, got {self.n_components!r}")
        if not isinstance(self.n_neighbors, (int, np.integer)) or self.n_neighbors < 2:
            raise ProjectionError(f"n_neighbors must be an integer >= 2, got {self.n_neighbors!r}")
        if not 0.0 <= float(self.min_dist) <= 1.0:
            raise ProjectionError(f"min_dist must be within 0..1, got {self.min_dist!r}")

    def key(self) -> str:
        """Short stable hash. PCA ignores the UMAP knobs, so they do not split its cache."""
        d = asdict(self)
        d["min_dist"] = round(float(d["min_dist"]), 6)
        if self.method == "pca":
            for knob in ("n_neighbors", "min_dist", "seed"):
                d.pop(knob)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def min_points(self) -> int:
        """Fewest points this method can place: UMAP needs a neighbourhood of n_neighbors
        other points plus room for its spectral initialisation; PCA needs n_components + 1."""
        if self.method == "umap":
            return max(self.n_neighbors + 1, self.n_components + 2)
        return self.n_components + 1


# -- input checks --------------------------------------------------------------------------
def _as_matrix(vectors: Any, what: str = "vectors") -> np.ndarray:
    """A C-contiguous float32 (n, d) matrix, or a ProjectionError naming the bad row."""
    if isinstance(vectors, np.ndarray):
        x = vectors
    else:
        rows = list(vectors)
        if not rows:
            raise ProjectionError(f"no {what} given")
        dims = {np.asarray(r).shape for r in rows}
        if len(dims) > 1:
            first = np.asarray(rows[0]).shape
            bad = next(i for i, r in enumerate(rows) if np.asarray(r).shape != first)
            raise ProjectionError(f"{what} have mixed dimensions: row 0 has shape {first}, row {bad} has shape "
                                  f"{np.asarray(rows[bad]).shape} (embeddings of different models cannot share a projection)")
        x = np.stack([np.asarray(r) for r in rows])
    if x.dtype == object:
        raise ProjectionError(f"{what} must be numeric; got an object array (mixed dimensions?)")
    if x.ndim != 2:
        raise ProjectionError(f"{what} must be a 2-D array (n, d), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ProjectionError(f"{what} are empty: shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ProjectionError(f"{what} hold NaN or infinite values in {len(bad)} row(s), first rows {bad[:5].tolist()}: "
                              "re-embed those faces or drop them before projecting")
    return x


def _as_ids(ids: Sequence[Any], n: int) -> np.ndarray:
    """ids as an int64 or unicode array (both survive npz without pickle), unique, one per row."""
    arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    if arr.ndim != 1:
        raise ProjectionError(f"ids must be one-dimensional, got shape {arr.shape}")
    if len(arr) != n:
        raise ProjectionError(f"{len(arr)} ids for {n} vectors: give exactly one id per vector")
    if arr.dtype.kind in "iub":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind != "U":
        arr = arr.astype(str)
    uniq, counts = np.unique(arr, return_counts=True)
    if len(uniq) != len(arr):
        raise ProjectionError(f"ids must be unique; repeated: {uniq[counts > 1][:5].tolist()}")
    return arr


def fingerprint(vectors: Any, ids: Sequence[Any], model_id: str = "") -> str:
    """Identity of an embedding set: sha256 of the model id, the ids (in order) and the float32
    vector bytes. Any added, removed, reordered or re-embedded face changes it."""
    x = _as_matrix(vectors)
    arr = _as_ids(ids, len(x))
    return _fingerprint(x, arr, model_id)


def _fingerprint(x: np.ndarray, ids: np.ndarray, model_id: str) -> str:
    h = hashlib.sha256()
    h.update(f"giflens-projection-v{FORMAT_VERSION}\0{model_id}\0{ids.dtype.kind}\0{x.shape}\0".encode())
    h.update("\x1f".join(map(str, ids.tolist())).encode())
    h.update(b"\0")
    h.update(x.tobytes())
    return h.hexdigest()


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    """Cosine geometry is the geometry of unit vectors: PCA sees them normalised."""
    if metric != "cosine":
        return x
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ProjectionError(f"{int(np.sum(norms == 0))} zero vector(s) have no direction for the cosine metric")
    return (x / norms).astype(np.float32)


# -- the result object ---------------------------------------------------------------------
@dataclass(eq=False)
class Projection:
    """Coordinates of an embedding set plus everything needed to re-plot, reuse or extend them.

    The first `n_fit` rows were fitted; any later rows were placed by `extend` with the fitted
    reducer's `transform` (the `placed` column of `to_frame` tells them apart).
    """

    ids: np.ndarray
    coords: np.ndarray
    params: ProjectionParams
    fingerprint: str
    model_id: str = ""
    reducer: Any = None
    n_fit: int = -1
    fit_seconds: float = 0.0
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    from_cache: bool = False

    def __post_init__(self) -> None:
        self.coords = np.ascontiguousarray(self.coords, dtype=np.float32)
        if self.n_fit < 0:
            self.n_fit = len(self.ids)
        if len(self.ids) != len(self.coords):
            raise ProjectionError(f"{len(self.ids)} ids for {len(self.coords)} coordinate rows")

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (f"Projection({self.params.method}, {len(self)} points ({self.n_fit} fitted), "
                f"{self.params.n_components}D, fingerprint={self.fingerprint[:12]}, model={self.model_id!r})")

    @property
    def can_extend(self) -> bool:
        return self.reducer is not None

    def extend(self, new_vectors: Any, new_ids: Sequence[Any]) -> "Projection":
        """Place new points in the existing layout without refitting (a new Projection is returned).

        Refitting would move every point; `transform` keeps the map the editors know stable.
        """
        if self.reducer is None:
            raise ProjectionError("this projection has no fitted reducer (it was loaded without one): "
                                  "project again, or load it with its reducer, to place new points")
        x = _as_matrix(new_vectors, "new vectors")
        dim = getattr(self.reducer, "n_features_in_", None) or getattr(self.reducer, "_raw_data", np.empty((0, 0))).shape[1]
        if dim and x.shape[1] != dim:
            raise ProjectionError(f"new vectors have {x.shape[1]} dimensions, the projection was fitted on {dim}")
        new = _as_ids(new_ids, len(x))
        if new.dtype.kind != self.ids.dtype.kind:
            raise ProjectionError(f"new ids are {new.dtype.kind!r} but the projection's ids are {self.ids.dtype.kind!r}")
        clash = np.intersect1d(new, self.ids)
        if len(clash):
            raise ProjectionError(f"ids already in the projection: {clash[:5].tolist()}")
        placed = _transform(self.reducer, _prepare(x, self.params.metric) if self.params.method == "pca" else x)
        return replace(self, ids=np.concatenate([self.ids, new]), coords=np.concatenate([self.coords, placed]),
                       from_cache=False)

    def to_frame(self) -> pd.DataFrame:
        """One row per point: id, x, y[, z], placed ("fit" | "transform"): what the figure builders take."""
        df = pd.DataFrame({"id": self.ids})
        for i in range(self.coords.shape[1]):
            df[COORD_NAMES[i]] = self.coords[:, i]
        df["placed"] = np.where(np.arange(len(self)) < self.n_fit, "fit", "transform")
        return df

    # -- persistence ------------------------------------------------------------------------
    def save(self, folder: Path | str, with_reducer: bool = True) -> Path:
        """Write coords.npz, meta.json and reducer.joblib into folder, atomically: the folder
        appears complete or not at all (a half-written cache entry is never read).

        Pickling a UMAP reducer fitted on more than 4,096 points builds its nearest-neighbour
        search index first (pynndescent does it in __getstate__): the same work the first
        `extend` would do, paid once here so that loaded reducers transform at once."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        try:
            np.savez(tmp / "coords.npz", ids=self.ids, coords=self.coords)
            has_reducer = with_reducer and self.reducer is not None
            if has_reducer:
                import joblib

                joblib.dump(self.reducer, tmp / "reducer.joblib")
            meta = {"format": FORMAT_VERSION, "params": asdict(self.params), "fingerprint": self.fingerprint,
                    "model_id": self.model_id, "n_fit": self.n_fit, "fit_seconds": self.fit_seconds,
                    "created_at": self.created_at, "n_points": len(self), "has_reducer": has_reducer}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            if folder.exists():
                # Replace an older entry: move it aside first so the swap leaves no gap with a
                # half folder (rename of a non-empty directory over another fails on POSIX).
                old = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.old")
                try:
                    os.replace(folder, old)
                except FileNotFoundError:
                    old = None
                os.replace(tmp, folder)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            else:
                try:
                    os.replace(tmp, folder)
                except OSError:
                    # Another process wrote the same entry meanwhile: same key, same content; keep theirs.
                    shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: Path | str, with_reducer: bool = True) -> "Projection":
        """Read a saved projection; with_reducer=False skips the (large) reducer when only plotting."""
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no saved projection in {folder} (meta.json missing)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ProjectionError(f"{folder} holds projection format {meta.get('format')}, this code reads {FORMAT_VERSION}")
        with np.load(folder / "coords.npz", allow_pickle=False) as data:
            ids, coords = data["ids"], data["coords"]
        reducer = None
        if with_reducer and meta.get("has_reducer"):
            import joblib

            reducer = joblib.load(folder / "reducer.joblib")
        return cls(ids=ids, coords=coords, params=ProjectionParams(**meta["params"]), fingerprint=meta["fingerprint"],
                   model_id=meta.get("model_id", ""), reducer=reducer, n_fit=int(meta["n_fit"]),
                   fit_seconds=float(meta.get("fit_seconds", 0.0)), created_at=meta.get("created_at", ""), from_cache=True)


# -- computing ---------------------------------------------------------------------------
def cache_entry(cache_dir: Path | str, fp: str, params: ProjectionParams) -> Path:
    """Folder of the cache entry for this embedding set and these parameters."""
    return Path(cache_dir) / f"{params.method}-{fp[:20]}-{params.key()}"


def load_cached(vectors: Any, ids: Sequence[Any], cache_dir: Path | str, *, model_id: str = "",
                n_components: int = 3, method: str = "umap", metric: str = "cosine", n_neighbors: int = 15,
                min_dist: float = 0.1, seed: int = 42, with_reducer: bool = True,
                signature: str | None = None) -> Projection | None:
    """The cached projection of exactly these vectors/ids/model with these parameters, or None.

    signature: `fingerprint(vectors, ids, model_id)` when the caller has it already; it hashes
    every vector (tens of ms at 50,000 faces), and a page that reruns on every click needs it once."""
    params = ProjectionParams(method, n_components, metric, n_neighbors, min_dist, seed)
    if signature is None:
        x = _as_matrix(vectors)
        signature = _fingerprint(x, _as_ids(ids, len(x)), model_id)
    return _load_entry(cache_entry(cache_dir, signature, params), signature, params, with_reducer)


def _load_entry(folder: Path, fp: str, params: ProjectionParams, with_reducer: bool) -> Projection | None:
    if not (folder / "meta.json").exists():
        return None
    try:
        proj = Projection.load(folder, with_reducer=with_reducer)
    except (OSError, ValueError, KeyError, EOFError):
        return None  # unreadable entry: treat as a miss, it will be rewritten
    if proj.fingerprint != fp or proj.params.key() != params.key():
        return None  # short-hash collision in the folder name: never serve someone else's coords
    return proj


def pca_preview(vectors: Any, n_components: int = 3, metric: str = "cosine") -> np.ndarray:
    """Instantly usable coordinates (float32, (n, n_components)) to show while UMAP computes.

    One thin SVD of the centred (unit, for cosine) vectors: ~0.1 s for 50,000 x 128. The axes
    are the directions of largest variance, so big clusters are visible, fine ones are not.
    """
    x = _prepare(_as_matrix(vectors), metric)
    if len(x) < 2:
        raise ProjectionError(f"PCA needs at least 2 points, got {len(x)}")
    k = min(n_components, x.shape[1])
    centred = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
    # Covariance eigenvectors (d x d) instead of an (n x d) SVD: far cheaper for n >> d.
    cov = centred.T.astype(np.float64) @ centred.astype(np.float64)
    vals, vecs = np.linalg.eigh(cov)
    axes = vecs[:, ::-1][:, :k]
    # Fix each axis' sign (largest |loading| positive) so the preview does not flip between runs.
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(k)])
    axes = axes * np.where(signs == 0, 1, signs)
    out = (centred @ axes.astype(np.float32)).astype(np.float32)
    if k < n_components:
        out = np.hstack([out, np.zeros((len(out), n_components - k), np.float32)])
    return out


class _ProgressFile:
    """A file-like sink for UMAP's tqdm bar that turns "n/total" lines into on_progress calls.

    tqdm writes while holding its process-wide lock and does not release it if `write` raises, so
    an exception from the callback (Streamlit raises StopException/RerunException from
    `bar.progress` when the editor touches a widget or leaves the page) would leave every later
    tqdm bar, i.e. every later UMAP fit in the server, blocked forever. The first exception is
    therefore kept in `error` (any BaseException: Streamlit's are not Exceptions), the callback
    is not called again, and the caller re-raises it once the fit is over. Writes from other
    threads (tqdm's monitor thread) are ignored: the callback belongs to the caller's thread."""

    _pattern = re.compile(r"(\d+)/(\d+)")

    def __init__(self, callback: ProgressCallback, start: float, end: float) -> None:
        self.callback, self.start, self.end = callback, start, end
        self.error: BaseException | None = None
        self._thread = threading.get_ident()

    def write(self, text: str) -> int:
        if self.error is not None or threading.get_ident() != self._thread:
            return len(text)
        for n, total in self._pattern.findall(text):
            if int(total) > 0:
                try:
                    self.callback("layout", self.start + (self.end - self.start) * min(int(n) / int(total), 1.0))
                except BaseException as exc:  # never through tqdm: see the class docstring
                    self.error = exc
                    break
        return len(text)

    def flush(self) -> None:
        pass


def _transform(reducer: Any, x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return np.asarray(reducer.transform(x), dtype=np.float32)


def _use_numba_cache() -> None:
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "giflens-numba-cache"))


def _umap(params: ProjectionParams, **options: Any) -> Any:
    """umap.UMAP for these parameters: the fit and the kernel warm-up build it in one place, so the
    warm-up compiles the kernels the fit will use."""
    _use_numba_cache()
    import umap

    return umap.UMAP(n_components=params.n_components, metric=params.metric, n_neighbors=params.n_neighbors,
                     min_dist=params.min_dist, random_state=params.seed, **options)


# UMAP finds neighbours exactly below this many points and with NNDescent from it on
# (`umap.UMAP.fit`); the two paths compile different kernels.
UMAP_EXACT_BELOW = 4096


def compile_kernels(n_points: int = UMAP_EXACT_BELOW, params: ProjectionParams | None = None, seed: int = 0) -> float:
    """Fit a throwaway 300-point set the way a set of n_points would be fitted, so numba compiles
    the kernels that fit needs; seconds taken.

    Why: a process's first UMAP fit spends most of its time compiling (5,885 faces: 43 s in a
    fresh process, 7 s after this, which takes 28 s). The app runs this in its worker as it
    starts, so the first map of Explore pays for little more than the fit. Only the path
    n_points will take is compiled: NNDescent costs a small store's first map more than it
    saves. `transform` (new faces placed on a map) is left to compile when first used: it is not
    on the first map's path."""
    params = params or ProjectionParams()
    _use_numba_cache()
    import umap  # noqa: F401  (imported before the clock starts: the figure is compiling, not importing)

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 128)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    reducer = _umap(params, n_epochs=20, force_approximation_algorithm=n_points >= UMAP_EXACT_BELOW)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reducer.fit(x)
    return time.perf_counter() - started


def _fit(x: np.ndarray, params: ProjectionParams,
         on_progress: ProgressCallback | None) -> tuple[np.ndarray, Any, BaseException | None]:
    """coords, fitted reducer, and the exception on_progress raised during UMAP's layout (or None).

    That exception is returned, not raised, so the caller can save the finished fit first; if the
    fit itself fails, it is raised here (with the fit's error as its context)."""
    if params.method == "pca":
        from sklearn.decomposition import PCA

        # Exact solver: no randomness, so the seed (like the UMAP knobs) does not matter.
        reducer = PCA(n_components=params.n_components, svd_solver="full")
        coords = reducer.fit_transform(_prepare(x, params.metric))
        return np.asarray(coords, np.float32), reducer, None

    tqdm_kwds: dict[str, Any] = {"disable": True}
    sink = None
    if on_progress is not None:
        sink = _ProgressFile(on_progress, 0.3, 0.95)
        tqdm_kwds = {"disable": False, "file": sink, "bar_format": "{n}/{total}\n", "mininterval": 0.5}
    reducer = _umap(params, tqdm_kwds=tqdm_kwds)
    try:
        with warnings.catch_warnings():
            # "n_jobs overridden to 1 by setting random_state": reproducible layouts are the point.
            warnings.simplefilter("ignore", UserWarning)
            coords = reducer.fit_transform(x)
    except BaseException:
        if sink is not None and sink.error is not None:
            raise sink.error  # the caller's stop wins; the fit's error is its __context__
        raise
    finally:
        # The progress sink holds the caller's callback: not something to pickle or keep alive
        # (and a later `transform` must never call it).
        reducer.tqdm_kwds = {"disable": True}
    return np.asarray(coords, np.float32), reducer, None if sink is None else sink.error


def project(vectors: Any, ids: Sequence[Any], n_components: int = 3, method: str = "umap", metric: str = "cosine",
            n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 42, cache_dir: Path | str | None = None,
            on_progress: ProgressCallback | None = None, *, model_id: str = "", save_reducer: bool = True) -> Projection:
    """Project an embedding set to n_components dimensions, reusing the cache when it can.

    vectors: (n, d) embeddings, one per id; ids: unique face/GIF ids (ints or strings);
    model_id: the embedding model, part of the fingerprint so different models never share a
    cache entry. A cache hit returns the stored coordinates (and reducer) without fitting.
    on_progress(stage, fraction) is called with stages "cache", "fit", "layout", "save", "done".
    If it raises during the UMAP fit (Streamlit's stop/rerun), the fit still runs to the end and
    is saved to the cache, then that exception is raised (see `_ProgressFile`).
    """
    params = ProjectionParams(method, int(n_components), metric, int(n_neighbors), float(min_dist), int(seed))
    report = on_progress or (lambda stage, fraction: None)
    x = _as_matrix(vectors)
    arr = _as_ids(ids, len(x))
    if x.shape[0] < params.min_points():
        hint = " (lower n_neighbors or use method='pca')" if method == "umap" else ""
        raise ProjectionError(f"{method.upper()} with these parameters needs at least {params.min_points()} points, "
                              f"got {x.shape[0]}{hint}")
    if method == "pca" and x.shape[1] < n_components:
        raise ProjectionError(f"PCA to {n_components} components needs vectors of at least {n_components} dimensions, "
                              f"got {x.shape[1]}")
    fp = _fingerprint(x, arr, model_id)
    report("cache", 0.0)
    if cache_dir is not None:
        hit = _load_entry(cache_entry(cache_dir, fp, params), fp, params, with_reducer=True)
        if hit is not None:
            report("done", 1.0)
            return hit
    report("fit", 0.05)
    started = time.perf_counter()
    coords, reducer, stopped = _fit(x, params, on_progress)
    proj = Projection(ids=arr, coords=coords, params=params, fingerprint=fp, model_id=model_id, reducer=reducer,
                      fit_seconds=time.perf_counter() - started)
    # A callback that raised during the fit (a Streamlit stop/rerun) is not called again, but the
    # finished fit is saved before its exception goes on: the next run gets a cache hit, not a refit.
    if cache_dir is not None and stopped is None:
        try:
            report("save", 0.97)
        except BaseException as exc:
            stopped = exc
    try:
        if cache_dir is not None:
            proj.save(cache_entry(cache_dir, fp, params), with_reducer=save_reducer)
    finally:
        if stopped is not None:
            raise stopped
    report("done", 1.0)
    return proj
