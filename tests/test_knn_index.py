"""KnnIndex on real dlib face embeddings of LFW (bench/lfw_faces.py): HNSW against exact
search, extending, saving and loading, and every misuse."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.lfw_faces import load_lfw_faces
from models.index_store import forget, index_folder, stored_index
from models.knn_index import KnnIndex, KnnIndexError

MODEL = "dlib-resnet-v1"


@pytest.fixture(scope="module")
def faces(lfw_dir: Path):
    """Every photo of the first 20 LFW people (259 photos), from the shared embedding cache."""
    return load_lfw_faces(lfw_dir, max_people=20)


def brute_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference written independently of the index: full sort of 1 - cosine."""
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    d = 1.0 - q.astype(np.float64) @ v.T.astype(np.float64)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


def test_exact_matches_a_full_sort(faces):
    ids = [f"{p}" for p in faces.paths]
    index = KnnIndex(MODEL, method="exact").fit(faces.vectors, ids)
    found_ids, found_d = index.query(faces.vectors[:30], 10)
    ref_rows, ref_d = brute_neighbours(faces.vectors, faces.vectors[:30], 10)
    assert found_ids.shape == (30, 10) and found_d.dtype == np.float32
    np.testing.assert_allclose(found_d, ref_d, atol=1e-5)
    assert np.all(np.diff(found_d, axis=1) >= 0)
    # Same neighbour sets wherever the distances are not tied.
    for row_ids, ref in zip(found_ids, ref_rows):
        assert len(set(row_ids.tolist()) ^ {ids[i] for i in ref}) <= 2
    assert found_ids[0, 0] == ids[0] and found_d[0, 0] == pytest.approx(0, abs=1e-5)


def test_hnsw_agrees_with_exact_on_real_faces(faces):
    ids = np.arange(len(faces.vectors)) * 7 + 3
    exact = KnnIndex(MODEL, method="exact").fit(faces.vectors, ids)
    hnsw = KnnIndex(MODEL, method="hnsw").fit(faces.vectors, ids)
    assert hnsw.uses_hnsw and not exact.uses_hnsw
    e_ids, e_d = exact.query(faces.vectors, 10)
    h_ids, h_d = hnsw.query(faces.vectors, 10)
    assert h_ids.dtype == np.int64 and h_d.dtype == np.float32
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(h_ids.tolist(), e_ids.tolist())])
    assert recall >= 0.98
    assert np.all(np.diff(h_d, axis=1) >= 0)
    # Whatever HNSW returns, its distances are the true cosine distances of those items.
    position = {v: i for i, v in enumerate(ids.tolist())}
    true_d = 1 - np.einsum("md,mkd->mk", faces.vectors, faces.vectors[np.vectorize(position.get)(h_ids)])
    np.testing.assert_allclose(h_d, true_d, atol=1e-4)


def test_auto_switches_at_exact_below(faces):
    small = KnnIndex(MODEL, exact_below=len(faces.vectors) + 1).fit(faces.vectors, range(len(faces.vectors)))
    large = KnnIndex(MODEL, exact_below=len(faces.vectors)).fit(faces.vectors, range(len(faces.vectors)))
    assert not small.uses_hnsw and large.uses_hnsw
    assert KnnIndex(MODEL).exact_below == 2000


def test_neighbours_are_mostly_the_same_person(faces):
    """The point of the index: a face's nearest neighbours are photos of the same person."""
    index = KnnIndex(MODEL, method="hnsw").fit(faces.vectors, faces.paths.tolist())
    counts = {n: (faces.names == n).sum() for n in set(faces.names)}
    multi = [p for p, n in zip(faces.paths, faces.names) if counts[n] >= 2]
    found, _ = index.query_ids(multi, 1)
    same = np.mean([f.split("/")[0] == p.split("/")[0] for f, p in zip(found[:, 0], multi)])
    assert same >= 0.9


def test_k_larger_than_n_returns_n(faces):
    for method in ("exact", "hnsw"):
        index = KnnIndex(MODEL, method=method).fit(faces.vectors[:5], ["a", "b", "c", "d", "e"])
        found, d = index.query(faces.vectors[:2], 50)
        assert found.shape == d.shape == (2, 5)
        assert sorted(found[0].tolist()) == ["a", "b", "c", "d", "e"]


def test_query_ids_excludes_self(faces):
    ids = list(range(100, 100 + 40))
    for method in ("exact", "hnsw"):
        index = KnnIndex(MODEL, method=method).fit(faces.vectors[:40], ids)
        found, d = index.query_ids([100, 120], 5)
        assert found.shape == (2, 5)
        assert 100 not in found[0] and 120 not in found[1]
        expected_ids, expected_d = index.query(faces.vectors[[0, 20]], 6)
        np.testing.assert_allclose(d, expected_d[:, 1:], atol=1e-5)
        with_self, d_self = index.query_ids([100], 3, exclude_self=False)
        assert with_self[0, 0] == 100 and d_self[0, 0] == pytest.approx(0, abs=1e-5)
        everyone, _ = index.query_ids([100], 1000)
        assert everyone.shape == (1, 39) and 100 not in everyone[0]
    with pytest.raises(KnnIndexError, match="not in the index"):
        index.query_ids([5], 3)


def test_query_ids_keeps_identical_vectors_of_other_items(faces):
    """A re-upload has the same embedding as the original: it is a neighbour, not 'self'."""
    x = np.concatenate([faces.vectors[:10], faces.vectors[:1]])
    index = KnnIndex(MODEL, method="exact").fit(x, list(range(11)))
    found, d = index.query_ids([0], 2)
    assert found[0, 0] == 10 and d[0, 0] == pytest.approx(0, abs=1e-5)


def test_add_extends_and_rebuilds_the_graph(faces):
    n = len(faces.vectors)
    half = n // 2
    grown = KnnIndex(MODEL, method="hnsw").fit(faces.vectors[:half], range(half))
    grown.add(faces.vectors[half:], range(half, n), model_id=MODEL)
    whole = KnnIndex(MODEL, method="exact").fit(faces.vectors, range(n))
    assert len(grown) == n and grown.uses_hnsw
    g_ids, _ = grown.query(faces.vectors[half:], 5)
    w_ids, _ = whole.query(faces.vectors[half:], 5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(g_ids.tolist(), w_ids.tolist())])
    assert recall >= 0.98
    # The added items are found: each is its own nearest neighbour.
    assert np.mean(g_ids[:, 0] == np.arange(half, n)) >= 0.98


def test_add_crosses_exact_below_into_hnsw(faces):
    index = KnnIndex(MODEL, exact_below=100).fit(faces.vectors[:60], range(60))
    assert not index.uses_hnsw
    index.add(faces.vectors[60:150], range(60, 150))
    assert index.uses_hnsw and len(index) == 150


def test_add_mixed_id_types_and_add_before_fit(faces):
    index = KnnIndex(MODEL, method="exact").add(faces.vectors[:3], [1, 2, 3])
    index.add(faces.vectors[3:5], ["x", "y"])
    found, _ = index.query(faces.vectors[3], 1)
    assert found.dtype == object and found[0, 0] == "x"


@pytest.mark.parametrize("method", ["exact", "hnsw"])
def test_save_load_round_trip(faces, tmp_path, method):
    index = KnnIndex(MODEL, method=method, M=8, ef_search=64).fit(faces.vectors, faces.paths.tolist())
    folder = index.save(tmp_path / "idx")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    loaded = KnnIndex.load(folder)
    assert loaded.get_params() == index.get_params()
    assert len(loaded) == len(index) and loaded.dim == 128 and loaded.model_id == MODEL
    assert loaded.uses_hnsw == (method == "hnsw")
    a_ids, a_d = index.query(faces.vectors[:25], 7)
    b_ids, b_d = loaded.query(faces.vectors[:25], 7)
    assert (a_ids == b_ids).all()
    np.testing.assert_allclose(a_d, b_d, atol=1e-6)
    if method == "hnsw":
        assert (folder / "hnsw.bin").is_file() and (folder / "hnsw.bin.dat").is_file()


def test_save_replaces_an_existing_index(faces, tmp_path):
    KnnIndex(MODEL, method="exact").fit(faces.vectors[:10], range(10)).save(tmp_path / "idx")
    KnnIndex(MODEL, method="hnsw").fit(faces.vectors[:20], range(20)).save(tmp_path / "idx")
    loaded = KnnIndex.load(tmp_path / "idx")
    assert len(loaded) == 20 and loaded.uses_hnsw
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_load_refuses_a_folder_without_an_index(tmp_path):
    with pytest.raises(KnnIndexError, match="no saved index"):
        KnnIndex.load(tmp_path)


def test_errors(faces):
    x = faces.vectors[:10]
    with pytest.raises(KnnIndexError, match="non-empty"):
        KnnIndex(MODEL).fit(np.empty((0, 128), np.float32), [])
    with pytest.raises(KnnIndexError, match="not fitted"):
        KnnIndex(MODEL).query(x, 3)
    with pytest.raises(KnnIndexError, match="not fitted"):
        KnnIndex(MODEL).query_ids([1], 3)
    with pytest.raises(KnnIndexError, match="not fitted"):
        KnnIndex(MODEL).save(Path("/nonexistent/never-written"))
    index = KnnIndex(MODEL, method="hnsw").fit(x, range(10))
    with pytest.raises(KnnIndexError, match="dimensions"):
        index.query(np.ones((2, 64), np.float32), 3)
    with pytest.raises(KnnIndexError, match="dimensions"):
        index.add(np.ones((2, 64), np.float32), [20, 21])
    bad = x[:2].copy()
    bad[1, 5] = np.nan
    with pytest.raises(KnnIndexError, match="NaN"):
        index.query(bad, 3)
    bad[1, 5] = np.inf
    with pytest.raises(KnnIndexError, match="NaN or infinity"):
        KnnIndex(MODEL).fit(bad, [1, 2])
    with pytest.raises(KnnIndexError, match="zero vector"):
        KnnIndex(MODEL).fit(np.zeros((2, 128)), [1, 2])
    with pytest.raises(KnnIndexError, match="facenet-vggface2"):
        index.query(x, 3, model_id="facenet-vggface2")
    with pytest.raises(KnnIndexError, match="facenet-vggface2"):
        index.add(x, range(10, 20), model_id="facenet-vggface2")
    with pytest.raises(KnnIndexError, match="facenet-vggface2"):
        KnnIndex(MODEL).fit(x, range(10), model_id="facenet-vggface2")
    assert index.query(x, 3, model_id=MODEL)[0].shape == (10, 3)
    with pytest.raises(KnnIndexError, match="already in the index"):
        index.add(x[:2], [3, 30])
    with pytest.raises(KnnIndexError, match="duplicate"):
        index.add(x[:2], [40, 40])
    with pytest.raises(KnnIndexError, match="duplicate"):
        KnnIndex(MODEL).fit(x[:2], ["a", "a"])
    with pytest.raises(KnnIndexError, match="2 vectors but 3 ids"):
        KnnIndex(MODEL).fit(x[:2], [1, 2, 3])
    with pytest.raises(KnnIndexError, match="integers or strings"):
        KnnIndex(MODEL).fit(x[:2], [1.5, 2.5])
    with pytest.raises(KnnIndexError, match="k must be"):
        index.query(x, 0)
    with pytest.raises(KnnIndexError, match="method"):
        KnnIndex(MODEL, method="annoy")
    with pytest.raises(KnnIndexError, match="model_id"):
        KnnIndex("")
    assert len(index) == 10  # failed calls left the index as it was
    assert issubclass(KnnIndexError, ValueError)


# -- the graph's exact-searched tail -------------------------------------------------------------
def test_small_add_joins_the_tail_without_rebuilding_the_graph(faces, tmp_path):
    n = len(faces.vectors)
    base = n - 20
    index = KnnIndex(MODEL, method="hnsw").fit(faces.vectors[:base], range(base))
    graph = index._graph
    index.add(faces.vectors[base:], range(base, n))
    assert index._graph is graph and index.graph_items == base and len(index) == n  # 20 <= base // 10
    exact = KnnIndex(MODEL, method="exact").fit(faces.vectors, range(n))
    found, d = index.query(faces.vectors, 10)
    ref, ref_d = exact.query(faces.vectors, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), ref.tolist())])
    assert recall >= 0.98 and np.all(np.diff(d, axis=1) >= 0)
    assert (found[base:, 0] == np.arange(base, n)).all()  # tail items are found, exactly
    near, _ = index.query_ids([n - 1], 3)
    assert n - 1 not in near[0]
    loaded = KnnIndex.load(index.save(tmp_path / "idx"))
    assert loaded.graph_items == base and len(loaded) == n
    assert (loaded.query(faces.vectors, 10)[0] == found).all()
    # Past a tenth of the graph, add rebuilds it over everything.
    loaded.add(np.roll(faces.vectors[:40], 1, axis=1), range(n, n + 40))
    assert loaded.graph_items == n + 40 and loaded._graph is not None


# -- indexes saved in the data folder (models/index_store.py) ----------------------------------
def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_stored_index_is_saved_then_loaded_with_the_same_neighbours(faces, tmp_path):
    folder = index_folder(tmp_path, f"faces-{MODEL}")
    assert folder == tmp_path / "indexes" / f"faces-{MODEL}"
    ids = faces.paths.tolist()
    built, how = stored_index(folder, faces.vectors, ids, MODEL, exact_below=50)
    assert how == "built" and built.uses_hnsw and (folder / "hnsw.bin").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
    before = _files(folder)
    again, how = stored_index(folder, faces.vectors, ids, MODEL, exact_below=50)
    assert how == "loaded" and _files(folder) == before  # nothing rewritten
    forget(folder)  # as a new process would: from disk
    shuffled = np.random.default_rng(0).permutation(len(ids))  # another caller's row order
    from_disk, how = stored_index(folder, faces.vectors[shuffled], [ids[i] for i in shuffled], MODEL, exact_below=50)
    assert how == "loaded" and from_disk.uses_hnsw and len(from_disk) == len(ids)
    for index in (again, from_disk, KnnIndex.load(folder)):
        a_ids, a_d = built.query(faces.vectors[:40], 8)
        b_ids, b_d = index.query(faces.vectors[:40], 8)
        assert (a_ids == b_ids).all()
        np.testing.assert_allclose(a_d, b_d, atol=1e-6)


def test_stored_index_extends_with_new_items_without_rebuilding_the_graph(faces, tmp_path):
    folder = tmp_path / "idx"
    n = len(faces.vectors)
    base = n - 20
    ids = list(range(1000, 1000 + n))
    stored_index(folder, faces.vectors[:base], ids[:base], MODEL, exact_below=50)
    graph_file = (folder / "hnsw.bin").read_bytes()
    old_ids = (folder / "ids.json").stat().st_ino
    grown, how = stored_index(folder, faces.vectors, ids, MODEL, exact_below=50)
    assert how == "extended" and len(grown) == n and grown.graph_items == base
    assert (folder / "ids.json").stat().st_ino != old_ids  # the index was rewritten ...
    assert (folder / "hnsw.bin").read_bytes() == graph_file  # ... around the same graph
    forget(folder)
    loaded = KnnIndex.load(folder)
    assert len(loaded) == n and loaded.graph_items == base and loaded.ids_.tolist() == ids
    assert stored_index(folder, faces.vectors, ids, MODEL, exact_below=50)[1] == "loaded"
    found, _ = loaded.query_ids(ids[base:], 1, exclude_self=False)
    assert found[:, 0].tolist() == ids[base:]
    exact = KnnIndex(MODEL, method="exact").fit(faces.vectors, ids)
    g_ids, _ = loaded.query(faces.vectors, 10)
    e_ids, _ = exact.query(faces.vectors, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(g_ids.tolist(), e_ids.tolist())]) >= 0.98


def test_a_graph_loaded_from_disk_extends_and_saves_intact(faces, tmp_path):
    """nmslib writes a 68-byte stub when it saves a graph it loaded; the next process to read that
    crashes. An index loaded from disk (an app restart), extended and saved must stay readable."""
    import subprocess
    import sys

    folder = tmp_path / "idx"
    n = len(faces.vectors)
    ids = list(range(1000, 1000 + n))
    stored_index(folder, faces.vectors[: n - 20], ids[: n - 20], MODEL, exact_below=50)
    graph = {f.name: f.read_bytes() for f in folder.glob("hnsw.bin*")}
    forget(folder)  # as after a restart: the next call reads the folder
    grown, how = stored_index(folder, faces.vectors, ids, MODEL, exact_below=50)
    assert how == "extended" and {f.name: f.read_bytes() for f in folder.glob("hnsw.bin*")} == graph
    np.save(tmp_path / "queries.npy", faces.vectors[:5])
    script = (f"import sys, numpy as np; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
              "from models.knn_index import KnnIndex; "
              f"i = KnnIndex.load({str(folder)!r}); "
              f"print(i.query(np.load({str(tmp_path / 'queries.npy')!r}), 3)[0].tolist())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert eval(done.stdout) == grown.query(faces.vectors[:5], 3)[0].tolist()


def test_stored_index_rebuilds_when_an_item_is_removed_or_changed(faces, tmp_path):
    folder = tmp_path / "idx"
    ids = list(range(len(faces.vectors)))
    stored_index(folder, faces.vectors, ids, MODEL, exact_below=50)
    fewer, how = stored_index(folder, faces.vectors[1:], ids[1:], MODEL, exact_below=50)
    assert how == "rebuilt" and len(fewer) == len(ids) - 1 and 0 not in fewer.ids_.tolist()
    forget(folder)
    assert len(KnnIndex.load(folder)) == len(ids) - 1
    # Re-embedded (here: another person's vector under the same id): rebuilt, never served stale.
    changed = faces.vectors[1:].copy()
    changed[0] = faces.vectors[-1]
    index, how = stored_index(folder, changed, ids[1:], MODEL, exact_below=50)
    assert how == "rebuilt"
    assert set(index.query(faces.vectors[-1], 2)[0][0].tolist()) == {1, ids[-1]}
    assert stored_index(folder, changed, ids[1:], MODEL, exact_below=50, M=8)[1] == "rebuilt"  # other graph


def test_stored_index_refuses_another_models_folder(faces, tmp_path):
    folder = tmp_path / "idx"
    stored_index(folder, faces.vectors, range(len(faces.vectors)), MODEL, exact_below=50)
    before = _files(folder)
    for fresh in (False, True):
        if fresh:
            forget(folder)
        with pytest.raises(KnnIndexError, match="refusing to mix 'facenet-vggface2'"):
            stored_index(folder, faces.vectors, range(len(faces.vectors)), "facenet-vggface2", exact_below=50)
    assert _files(folder) == before  # nothing written
    index, _ = stored_index(folder, faces.vectors, range(len(faces.vectors)), MODEL, exact_below=50)
    with pytest.raises(KnnIndexError, match="facenet-vggface2"):
        index.add(faces.vectors[:2], [-1, -2], model_id="facenet-vggface2")
    with pytest.raises(KnnIndexError, match="model_id"):
        stored_index(folder, faces.vectors, range(len(faces.vectors)), "")
    with pytest.raises(KnnIndexError, match="non-empty"):
        stored_index(folder, np.empty((0, 128), np.float32), [], MODEL)


def test_stored_index_of_a_small_set_is_exact_and_not_saved(faces, tmp_path):
    folder = tmp_path / "idx"
    index, how = stored_index(folder, faces.vectors[:200], range(200), MODEL)  # default threshold: 2000
    assert how == "exact" and not index.uses_hnsw and not folder.exists()
    found, d = index.query(faces.vectors[:200], 10)
    ref_rows, ref_d = brute_neighbours(faces.vectors[:200], faces.vectors[:200], 10)
    np.testing.assert_allclose(d, ref_d, atol=1e-5)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), ref_rows.tolist())]) >= 0.99


def test_the_returned_index_is_the_callers(faces, tmp_path):
    """Adding to a returned index changes neither the saved nor the remembered copy."""
    folder = tmp_path / "idx"
    ids = list(range(len(faces.vectors)))
    mine, _ = stored_index(folder, faces.vectors, ids, MODEL, exact_below=50)
    mine.add(faces.vectors[:3] * -1, [-1, -2, -3])
    again, how = stored_index(folder, faces.vectors, ids, MODEL, exact_below=50)
    assert how == "loaded" and len(again) == len(ids) == len(KnnIndex.load(folder))


@pytest.mark.parametrize("exact_below", [2000, 100], ids=["exact", "saved-hnsw"])
def test_a_views_saved_index_finds_the_exact_neighbours(faces, tmp_path, monkeypatch, exact_below):
    """The faces' saved index (where Review's suspect queue keeps it): the same neighbours as
    Explore's direct scan, exact or HNSW (100 puts these 259 faces above the threshold)."""
    from explorer.views import index_dir_for, nearest
    from models import index_store

    monkeypatch.setattr(index_store, "EXACT_BELOW", exact_below)
    folder = index_dir_for(tmp_path, "Faces", MODEL)
    assert folder == index_folder(tmp_path, f"faces-{MODEL}")
    assert index_dir_for(tmp_path, "Class centroids", MODEL) is None and index_dir_for(tmp_path, "GIFs", None) is None
    ids = (np.arange(len(faces.vectors)) * 3 + 11).tolist()
    index, _ = stored_index(folder, faces.vectors, ids, MODEL)
    for row in (0, 57, len(ids) - 1):
        direct_rows, direct_d = nearest(faces.vectors, row, k=8)
        found, d = index.query_ids([ids[row]], 8)
        rows = np.array([ids.index(v) for v in found[0].tolist()])
        assert row not in rows and rows.tolist() == direct_rows.tolist()
        np.testing.assert_allclose(d[0], direct_d, atol=1e-5)
    assert (folder / "index.json").is_file() == (exact_below == 100)
