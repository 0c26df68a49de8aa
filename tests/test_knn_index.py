"""KnnIndex on real dlib face embeddings of LFW (bench/lfw_faces.py): HNSW against exact
search, extending, saving and loading, and every misuse."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.lfw_faces import load_lfw_faces
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
