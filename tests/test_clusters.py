"""explorer.clusters on real dlib face embeddings of LFW: correct labels give pure classes, a
deliberately mislabelled class loses purity and its intruders come up first, suspects carry
the right reasons, and look-alike pairs are the closest centroids."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.lfw_faces import load_lfw_faces
from explorer.clusters import (ClusterError, class_stats, face_distances, lookalike_pairs, members_by_distance,
                               suspect_faces)
from models.knn_index import KnnIndex


@pytest.fixture(scope="module")
def faces(lfw_dir: Path):
    """Every photo of the first 30 LFW people (458 photos, 5 to 77 per person)."""
    f = load_lfw_faces(lfw_dir, max_people=30)
    return f.names.astype(object), f.paths, f.vectors


def mislabel(names: np.ndarray, source: str, target: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Relabel the first `count` photos of source as target; returns labels and the moved rows."""
    labels = names.copy()
    rows = np.flatnonzero(names == source)[:count]
    labels[rows] = target
    return labels, rows


def test_true_labels_give_pure_classes(faces):
    names, _, vectors = faces
    stats = class_stats(vectors, names)
    assert list(stats.columns) == ["class", "size", "purity", "spread", "outliers", "confused_with"]
    assert len(stats) == 30 and stats["size"].sum() == len(names)
    assert stats.set_index("class").loc["Ariel_Sharon", "size"] == 77
    assert stats["purity"].median() == 1.0 and stats["purity"].min() >= 0.7
    # Worst first.
    assert stats["purity"].is_monotonic_increasing
    # Spread is the mean cosine distance to the centroid, recomputed independently here.
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    m = v[names == "Andre_Agassi"].mean(axis=0)
    expected = np.mean(1 - v[names == "Andre_Agassi"] @ (m / np.linalg.norm(m)))
    assert stats.set_index("class").loc["Andre_Agassi", "spread"] == pytest.approx(expected, rel=1e-4)


def test_purity_of_a_mislabelled_class_drops(faces):
    names, _, vectors = faces
    before = class_stats(vectors, names).set_index("class")
    labels, moved = mislabel(names, "Ariel_Sharon", "Angelina_Jolie", 10)  # 20 true + 10 intruders
    after = class_stats(vectors, labels).set_index("class")
    assert after.loc["Angelina_Jolie", "size"] == 30
    assert before.loc["Angelina_Jolie", "purity"] == 1.0
    assert after.loc["Angelina_Jolie", "purity"] <= 0.75  # the intruders are nearest to Sharon's centroid
    assert after.loc["Angelina_Jolie", "confused_with"] == "Ariel_Sharon"
    assert after.loc["Angelina_Jolie", "spread"] > 1.5 * before.loc["Angelina_Jolie", "spread"]
    assert after.index[0] == "Angelina_Jolie"  # now the worst class
    # Review order: the intruders are the farthest members of the class.
    members = members_by_distance(vectors, labels, "Angelina_Jolie", ids=np.arange(len(labels)))
    assert len(members) == 30 and members["distance"].is_monotonic_decreasing
    assert set(members["id"].head(10)) == set(moved)
    assert members_by_distance(vectors, labels, "Angelina_Jolie", farthest_first=False)["distance"].is_monotonic_increasing


def test_a_single_wrong_photo_is_a_robust_outlier(faces):
    names, paths, vectors = faces
    labels, moved = mislabel(names, "Andre_Agassi", "Ariel_Sharon", 1)
    per_face = face_distances(vectors, labels, ids=paths)
    row = per_face.iloc[moved[0]]
    assert row["label"] == "Ariel_Sharon" and row["is_outlier"] and row["robust_z"] > 3.5
    assert row["nearest_class"] == "Andre_Agassi"
    assert class_stats(vectors, labels).set_index("class").loc["Ariel_Sharon", "outliers"] >= 1


def test_suspect_faces_give_their_reasons(faces):
    names, paths, vectors = faces
    labels, moved = mislabel(names, "Andre_Agassi", "Ariel_Sharon", 3)
    predicted = names.copy()  # a model that recognises the true person
    confidences = np.full(len(names), 0.9)
    low = np.flatnonzero(names == "Al_Gore")[0]
    confidences[low] = 0.2
    out = suspect_faces(vectors, labels, predicted, confidences, ids=paths)
    assert {"id", "label", "predicted", "confidence", "neighbour_label", "reasons"} <= set(out.columns)
    by_id = out.set_index("id")
    for r in moved:
        reasons = by_id.loc[paths[r], "reasons"]
        assert "model disagrees" in reasons and "neighbours disagree" in reasons
        assert by_id.loc[paths[r], "neighbour_label"] == "Andre_Agassi"
    assert set(paths[moved]) <= set(out["id"].head(len(moved) * 3))  # they rank near the top
    assert "low confidence" in by_id.loc[paths[low], "reasons"]
    # Most photos are not suspect at all.
    assert len(out) < 0.25 * len(names)
    assert (out["n_reasons"] >= 1).all() and out["n_reasons"].is_monotonic_decreasing


def test_unlabelled_faces_are_only_suspect_for_low_confidence(faces):
    names, _, vectors = faces
    labels = names.copy()
    labels[:5] = None
    predicted = np.array(["Someone_Else"] * len(names), dtype=object)
    confidences = np.ones(len(names))
    confidences[1] = 0.1
    out = suspect_faces(vectors, labels, predicted, confidences)
    unlabelled = out[out["id"] < 5]
    assert list(unlabelled["id"]) == [1] and unlabelled["reasons"].iloc[0] == "low confidence"
    assert class_stats(vectors, labels)["size"].sum() == len(names) - 5


def test_faces_never_predicted_are_not_suspect_for_the_model(faces):
    """Before any `giflens predict`, confidences are NaN and predictions None: a confirmed face is
    not "low confidence" nor disagreed with by a model that never saw it; an open-set refusal
    (None with a confidence) still disagrees with the editor's label."""
    names, _, vectors = faces
    labels = names.copy()
    labels[0] = None
    predicted = names.astype(object).copy()
    predicted[:3] = None
    confidences = np.ones(len(names))
    confidences[:2] = np.nan  # faces 0 and 1 never predicted, face 2 refused by the open-set threshold
    out = suspect_faces(vectors, labels, predicted, confidences).set_index("id")
    assert 0 not in out.index
    for reason in ("model disagrees", "low confidence"):
        assert 1 not in out.index or reason not in out.loc[1, "reasons"]
    assert "model disagrees" in out.loc[2, "reasons"]


def test_lookalike_pairs_are_the_closest_centroids(faces):
    names, _, vectors = faces
    pairs = lookalike_pairs(vectors, names, top=5)
    assert list(pairs.columns) == ["class_a", "class_b", "distance", "size_a", "size_b"]
    assert len(pairs) == 5 and pairs["distance"].is_monotonic_increasing
    assert (pairs["class_a"] != pairs["class_b"]).all()
    # Reference: every pair of centroids, computed directly.
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    people = np.unique(names.astype(str))
    c = np.stack([v[names == p].mean(axis=0) for p in people])
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    d = 1 - c @ c.T
    iu = np.triu_indices(len(people), 1)
    ref = np.sort(d[iu])[:5]
    np.testing.assert_allclose(pairs["distance"], ref, rtol=1e-4)
    # Two labels for one person (a duplicate class) are the closest pair of all.
    dup, _ = mislabel(names, "Alvaro_Uribe", "Alvaro_Uribe_[dup]", 17)
    first = lookalike_pairs(vectors, dup, top=1).iloc[0]
    assert {first["class_a"], first["class_b"]} == {"Alvaro_Uribe", "Alvaro_Uribe_[dup]"}
    assert len(lookalike_pairs(vectors, names, top=5, min_size=40)) == 1  # only Sharon and Schwarzenegger


def test_bad_inputs(faces):
    names, _, vectors = faces
    with pytest.raises(ClusterError, match="one per vector"):
        class_stats(vectors, names[:-1])
    with pytest.raises(ClusterError, match="NaN"):
        class_stats(np.full((3, 4), np.nan), ["a", "b", "c"])
    with pytest.raises(ClusterError, match="no class 'Nobody'"):
        members_by_distance(vectors, names, "Nobody")
    with pytest.raises(ClusterError, match="every label is missing"):
        class_stats(vectors[:4], [None, "", np.nan, None])
    assert isinstance(class_stats(vectors[:3], ["a", "a", "b"]), pd.DataFrame)


@pytest.mark.parametrize("exact_below", [2000, 100], ids=["exact", "saved-hnsw"])
def test_suspects_from_a_saved_index_are_the_same(faces, tmp_path, monkeypatch, exact_below):
    """With index_dir the neighbours come from the saved index of every face (labelled or not),
    reused across runs; the queue is the one the per-call index gives. 100 puts the 458 faces
    above the exact threshold, so the saved HNSW path runs on real embeddings."""
    from models import index_store

    monkeypatch.setattr(index_store, "EXACT_BELOW", exact_below)
    names, paths, vectors = faces
    labels, _ = mislabel(names, "Andre_Agassi", "Ariel_Sharon", 3)
    labels[::3] = None  # a third unlabelled: neighbours are read until k labelled ones are found
    predicted = names.copy()
    confidences = np.linspace(0.3, 1.0, len(names))
    ids = [f"face-{p}" for p in paths]
    folder = index_store.index_folder(tmp_path, "faces-dlib-resnet-v1")
    expected = suspect_faces(vectors, labels, predicted, confidences, ids=ids)
    for run in ("first", "again"):
        out = suspect_faces(vectors, labels, predicted, confidences, ids=ids, index_dir=folder,
                            model_id="dlib-resnet-v1")
        pd.testing.assert_frame_equal(out, expected)
    assert (folder / "index.json").is_file() == (exact_below == 100)
    if exact_below == 100:
        saved = KnnIndex.load(folder)
        assert len(saved) == len(names) and saved.uses_hnsw  # every face, labelled or not
    with pytest.raises(ClusterError, match="ids"):
        suspect_faces(vectors, labels, predicted, confidences, index_dir=folder, model_id="dlib-resnet-v1")
