"""explorer.projection on real dlib face embeddings of LFW (bench/lfw_faces.py): UMAP keeps
people apart in 3D, transform places new photos next to their person, the cache returns
the stored coordinates without refitting, and every bad input fails with a clear message.

UMAP tests are marked slow: numba compiles UMAP's kernels once per process (~20 s even with
NUMBA_CACHE_DIR); the fits themselves take about a second on these few hundred photos."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench.lfw_faces import load_lfw_faces
from explorer.projection import (Projection, ProjectionError, ProjectionParams, cache_entry, fingerprint,
                                 load_cached, pca_preview, project)

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba-cache"))
MODEL = "dlib-resnet-v1"


@pytest.fixture(scope="module")
def faces(lfw_dir: Path):
    """Photos of the first 30 LFW people with at least 8 photos each (17 people, 398 photos)."""
    f = load_lfw_faces(lfw_dir, max_people=30)
    names, counts = np.unique(f.names, return_counts=True)
    keep = np.isin(f.names, names[counts >= 8])
    return f.names[keep], f.paths[keep], f.vectors[keep]


@pytest.fixture(scope="module")
def split(faces):
    """Fit set and held-out set: the last 2 photos of every person are held out."""
    names, paths, vectors = faces
    held = np.zeros(len(names), bool)
    for person in np.unique(names):
        held[np.flatnonzero(names == person)[-2:]] = True
    return (names[~held], paths[~held], vectors[~held]), (names[held], paths[held], vectors[held])


def knn_purity(coords: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Share of each point's k nearest neighbours (in the projection) that carry its label."""
    d = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    return float((labels[nn] == labels[:, None]).mean())


@pytest.fixture(scope="module")
def umap_fit(split, tmp_path_factory):
    (names, paths, vectors), _ = split
    cache = tmp_path_factory.mktemp("projections")
    events: list[tuple[str, float]] = []
    proj = project(vectors, paths, cache_dir=cache, model_id=MODEL, on_progress=lambda s, f: events.append((s, f)))
    return proj, cache, events


# -- UMAP ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_umap_separates_people_in_3d(umap_fit, split):
    proj, _, events = umap_fit
    (names, paths, _), _ = split
    assert proj.coords.shape == (len(names), 3) and proj.coords.dtype == np.float32
    assert np.array_equal(proj.ids, paths) and proj.n_fit == len(names)
    purity = knn_purity(proj.coords, names)
    chance = knn_purity(proj.coords, np.random.default_rng(0).permutation(names))
    assert purity >= 0.9, purity
    assert chance < 0.3
    stages = [s for s, _ in events]
    assert stages[0] == "cache" and "fit" in stages and stages[-1] == "done"
    assert "layout" in stages  # per-epoch progress from UMAP's optimiser
    fractions = [f for _, f in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


@pytest.mark.slow
def test_transform_places_new_photos_next_to_their_person(umap_fit, split):
    proj, _, _ = umap_fit
    (names, _, _), (new_names, new_paths, new_vectors) = split
    extended = proj.extend(new_vectors, new_paths)
    assert len(extended) == len(proj) + len(new_paths) and extended.n_fit == proj.n_fit
    assert np.array_equal(extended.coords[: len(proj)], proj.coords)  # fitted points do not move
    placed = extended.coords[len(proj):]
    people = np.unique(names)
    centroids = np.stack([proj.coords[names == p].mean(axis=0) for p in people])
    nearest = people[np.argmin(((placed[:, None] - centroids[None]) ** 2).sum(-1), axis=1)]
    assert (nearest == new_names).mean() >= 0.85, (nearest == new_names).mean()
    frame = extended.to_frame()
    assert list(frame.columns) == ["id", "x", "y", "z", "placed"]
    assert (frame["placed"] == "transform").sum() == len(new_paths)
    assert list(frame["id"].iloc[-len(new_paths):]) == list(new_paths)
    with pytest.raises(ProjectionError, match="already in the projection"):
        extended.extend(new_vectors[:1], new_paths[:1])
    with pytest.raises(ProjectionError, match="dimensions"):
        proj.extend(np.ones((2, 64), np.float32), ["a", "b"])


@pytest.mark.slow
def test_cache_hit_returns_identical_coords_without_refitting(umap_fit, split):
    proj, cache, _ = umap_fit
    (_, paths, vectors), _ = split
    entry = cache_entry(cache, proj.fingerprint, proj.params)
    assert (entry / "coords.npz").exists() and (entry / "reducer.joblib").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    mtime = (entry / "coords.npz").stat().st_mtime_ns
    events: list[str] = []
    again = project(vectors, paths, cache_dir=cache, model_id=MODEL, on_progress=lambda s, f: events.append(s))
    assert events == ["cache", "done"]  # no "fit" stage: nothing was recomputed
    assert again.from_cache and again.fit_seconds == pytest.approx(proj.fit_seconds)
    assert np.array_equal(again.coords, proj.coords) and np.array_equal(again.ids, proj.ids)
    assert (entry / "coords.npz").stat().st_mtime_ns == mtime
    # The cached reducer still places new points exactly as the original does.
    _, (_, new_paths, new_vectors) = split
    np.testing.assert_allclose(again.extend(new_vectors[:6], new_paths[:6]).coords[-6:],
                               proj.extend(new_vectors[:6], new_paths[:6]).coords[-6:], atol=1e-5)
    hit = load_cached(vectors, paths, cache, model_id=MODEL)
    assert hit is not None and np.array_equal(hit.coords, proj.coords)
    # Another model id, another seed, or one changed photo are all misses.
    assert load_cached(vectors, paths, cache, model_id="facenet-vggface2") is None
    assert load_cached(vectors, paths, cache, model_id=MODEL, seed=7) is None
    changed = vectors.copy()
    changed[0] = changed[1]
    assert load_cached(changed, paths, cache, model_id=MODEL) is None


@pytest.mark.slow
def test_umap_is_reproducible_for_a_seed(split):
    (_, paths, vectors), _ = split
    a = project(vectors[:120], paths[:120], n_components=2, n_neighbors=10)
    b = project(vectors[:120], paths[:120], n_components=2, n_neighbors=10)
    assert a.coords.shape == (120, 2)
    np.testing.assert_array_equal(a.coords, b.coords)


# A stop raised by the progress callback mid-fit (Streamlit's StopException/RerunException when an
# editor touches a widget or leaves the page) must not leave tqdm's global lock held: every later
# UMAP fit in the server process would block forever. Run in a subprocess: without the fix the lock
# is held by a finished call and would hang the rest of this test session too.
STOP_MID_FIT = textwrap.dedent("""
    import json, sys, threading
    from pathlib import Path
    import numpy as np
    from explorer.projection import cache_entry, load_cached, project

    class Stop(BaseException):  # like Streamlit's StopException: not an Exception
        pass

    cache = Path(sys.argv[1])
    x = np.random.default_rng(0).normal(size=(60, 16)).astype(np.float32)
    ids = np.arange(60)
    calls = []

    def stop_at_layout(stage, fraction):
        calls.append(stage)
        if stage == "layout":  # first call from inside UMAP's tqdm bar
            raise Stop()

    out = {}
    try:
        project(x, ids, n_components=2, cache_dir=cache, on_progress=stop_at_layout)
        out["first"] = "returned"
    except Stop:
        out["first"] = "stopped"
    out["calls_after_stop"] = calls[calls.index("layout") + 1:] if "layout" in calls else None
    cached = load_cached(x, ids, cache, n_components=2)
    out["fit_cached"] = cached is not None and cached.coords.shape == (60, 2)

    events = []
    def second():
        proj = project(x[::-1].copy(), ids[::-1].copy(), n_components=2,
                       on_progress=lambda stage, fraction: events.append(stage))
        out["second_shape"] = list(proj.coords.shape)
    worker = threading.Thread(target=second, daemon=True)  # another thread, like the next Streamlit run
    worker.start()
    worker.join(120)  # hang guard, far above the ~1 s this fit takes
    out["second_deadlocked"] = worker.is_alive()
    out["second_stages"] = sorted(set(events))
    print(json.dumps(out), flush=True)
""")


@pytest.mark.slow
def test_a_stop_raised_by_the_progress_callback_does_not_deadlock_later_fits(tmp_path):
    run = subprocess.run([sys.executable, "-c", STOP_MID_FIT, str(tmp_path / "projections")],
                         capture_output=True, text=True, timeout=900, cwd=Path(__file__).resolve().parents[1],
                         env={**os.environ, "NUMBA_CACHE_DIR": os.environ["NUMBA_CACHE_DIR"]})
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert not out["second_deadlocked"], f"a later UMAP fit blocked on tqdm's lock: {out}"
    assert out["second_shape"] == [60, 2] and "layout" in out["second_stages"], out
    assert out["first"] == "stopped", out  # the stop still reaches the caller (the script stops/reruns) ...
    assert out["calls_after_stop"] == [], out  # ... the stopped callback is not called again ...
    assert out["fit_cached"], out  # ... and the fit it waited for is in the cache for the next run


# -- PCA, persistence, fingerprints (fast) ------------------------------------------------
def test_pca_preview_is_the_leading_principal_axes(faces):
    names, _, vectors = faces
    coords = pca_preview(vectors)
    assert coords.shape == (len(vectors), 3) and coords.dtype == np.float32
    # Same subspace as scikit-learn's PCA of the (unit) vectors, up to the sign of each axis.
    from sklearn.decomposition import PCA

    ref = PCA(3).fit_transform(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    for i in range(3):
        assert abs(np.corrcoef(coords[:, i], ref[:, i])[0, 1]) > 0.999
    assert np.var(coords[:, 0]) >= np.var(coords[:, 1]) >= np.var(coords[:, 2])
    np.testing.assert_array_equal(coords, pca_preview(vectors))  # no sign flips between calls
    # Even a 3-axis linear view groups photos of one person better than chance.
    assert knn_purity(coords, names) > 3 * knn_purity(coords, np.random.default_rng(0).permutation(names))


def test_pca_projection_saves_loads_and_extends(faces, tmp_path):
    names, paths, vectors = faces
    proj = project(vectors[:300], paths[:300], method="pca", cache_dir=tmp_path, model_id=MODEL)
    assert proj.params.method == "pca" and not proj.from_cache
    extended = proj.extend(vectors[300:], paths[300:])
    extended.save(tmp_path / "saved")
    loaded = Projection.load(tmp_path / "saved")
    assert np.array_equal(loaded.coords, extended.coords) and np.array_equal(loaded.ids, extended.ids)
    assert loaded.n_fit == 300 and loaded.fingerprint == proj.fingerprint and loaded.model_id == MODEL
    # A loaded projection keeps extending; without its reducer it says so.
    with pytest.raises(ProjectionError, match="no fitted reducer"):
        Projection.load(tmp_path / "saved", with_reducer=False).extend(vectors[:1], ["new"])
    # PCA ignores the UMAP knobs: changing them is still a cache hit.
    again = project(vectors[:300], paths[:300], method="pca", cache_dir=tmp_path, model_id=MODEL, n_neighbors=5)
    assert again.from_cache and np.array_equal(again.coords, proj.coords)
    # Integer ids survive the round trip as integers.
    ints = project(vectors[:50], np.arange(50) * 3, method="pca")
    ints.save(tmp_path / "ints")
    assert Projection.load(tmp_path / "ints").ids.dtype == np.int64


def test_fingerprint_covers_ids_vectors_order_and_model(faces):
    _, paths, vectors = faces
    base = fingerprint(vectors, paths, MODEL)
    assert fingerprint(vectors.copy(), list(paths), MODEL) == base
    assert fingerprint(vectors, paths, "facenet-vggface2") != base
    assert fingerprint(vectors[::-1], paths[::-1], MODEL) != base
    renamed = paths.copy()
    renamed[0] = "someone/else.jpg"
    assert fingerprint(vectors, renamed, MODEL) != base
    nudged = vectors.copy()
    nudged[5, 0] += 1e-6
    assert fingerprint(nudged, paths, MODEL) != base
    assert ProjectionParams(seed=1).key() != ProjectionParams(seed=2).key()


def test_clear_errors_for_bad_inputs(faces):
    _, paths, vectors = faces
    with pytest.raises(ProjectionError, match="at least 16 points"):
        project(vectors[:10], paths[:10])
    with pytest.raises(ProjectionError, match="NaN or infinite.*first rows \\[3\\]"):
        bad = vectors[:40].copy()
        bad[3, 7] = np.nan
        project(bad, paths[:40], method="pca")
    with pytest.raises(ProjectionError, match="mixed dimensions.*row 2"):
        project([vectors[0], vectors[1], vectors[2][:64]] + list(vectors[3:40]), paths[:40], method="pca")
    with pytest.raises(ProjectionError, match="one id per vector"):
        project(vectors[:40], paths[:39], method="pca")
    with pytest.raises(ProjectionError, match="unique"):
        project(vectors[:40], [paths[0]] * 40, method="pca")
    with pytest.raises(ProjectionError, match="method must be one of"):
        project(vectors[:40], paths[:40], method="tsne")
    with pytest.raises(ProjectionError, match="zero vector"):
        pca_preview(np.zeros((5, 8), np.float32))
