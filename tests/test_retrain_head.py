"""Retraining head (softmax + center loss) on real dlib embeddings of LFW photos."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.lfw_faces import load_lfw_faces
from models.celebrity_classifier import (UNKNOWN, ClassifierError, InvalidVectorsError, ModelMismatchError,
                                         TooFewFacesError)
from models.retrain_head import HeadModel, compare_on_holdout, train_head

MODEL = "dlib-resnet-v1"
KNOWN_PEOPLE, UNSEEN_PEOPLE, REFERENCES = 20, 4, 5

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lfw(lfw_dir: Path) -> dict:
    """First 20 people (by name) with 10+ photos: 5 training photos each, the rest held out; 4 people unseen."""
    faces = load_lfw_faces(lfw_dir, min_photos=10, max_people=KNOWN_PEOPLE + UNSEEN_PEOPLE)
    people = sorted(set(faces.names.tolist()))
    rng = np.random.default_rng(0)
    train, held = [], []
    for person in people[:KNOWN_PEOPLE]:
        idx = rng.permutation(np.flatnonzero(faces.names == person))
        train += idx[:REFERENCES].tolist()
        held += idx[REFERENCES:].tolist()
    return {"x": faces.vectors, "y": faces.names.astype(str), "train": np.array(train), "held": np.array(held),
            "unseen": np.flatnonzero(np.isin(faces.names, people[KNOWN_PEOPLE:]))}


def _train_set(lfw) -> tuple[np.ndarray, list[str]]:
    return lfw["x"][lfw["train"]], lfw["y"][lfw["train"]].tolist()


@pytest.fixture(scope="module")
def head(lfw) -> HeadModel:
    x, y = _train_set(lfw)
    return train_head(x, y, model_id=MODEL, holdout=(lfw["x"][lfw["held"]], lfw["y"][lfw["held"]].tolist()))


def test_head_recognises_held_out_photos_and_refuses_strangers(head, lfw):
    held_x, held_y = lfw["x"][lfw["held"]], lfw["y"][lfw["held"]]
    top = head.predict_top(held_x, MODEL, top=3)
    assert np.mean([row[0][0] == truth for row, truth in zip(top, held_y)]) >= 0.95
    assert all([p for _, p in row] == sorted((p for _, p in row), reverse=True) for row in top)
    labels, confidences = head.predict(held_x, MODEL)
    assert np.mean(labels == held_y) >= 0.9
    assert ((confidences > 0) & (confidences <= 1)).all()
    strangers, _ = head.predict(lfw["x"][lfw["unseen"]], MODEL)
    assert np.mean(strangers == UNKNOWN) >= 0.9
    assert head.metrics["holdout"]["faces"] == len(lfw["held"])
    assert head.metrics["holdout"]["accuracy"] == pytest.approx(np.mean([r[0][0] == t for r, t in zip(top, held_y)]))


def _feature_spread(model: HeadModel, x: np.ndarray, y: list[str]) -> tuple[float, float, float]:
    """(mean within-class spread, mean distance between class means, mean center-to-class-mean gap) in features."""
    with torch.no_grad():
        features = model.net(torch.from_numpy(x))[0].numpy()
    index = np.searchsorted(model.classes_, y)
    means = np.stack([features[index == c].mean(axis=0) for c in range(len(model.classes_))])
    within = np.mean([np.linalg.norm(features[index == c] - means[c], axis=1).mean() for c in range(len(means))])
    between = np.linalg.norm(means[:, None] - means[None], axis=2)[np.triu_indices(len(means), 1)].mean()
    return float(within), float(between), float(np.linalg.norm(model.centers_ - means, axis=1).mean())


def test_center_loss_pulls_each_class_together_around_its_center(lfw):
    x, y = _train_set(lfw)
    plain = train_head(x, y, center_loss_lambda=0.0, model_id=MODEL)
    centered = train_head(x, y, center_loss_lambda=0.1, model_id=MODEL)
    within_0, between_0, _ = _feature_spread(plain, x, y)
    within_c, between_c, gap = _feature_spread(centered, x, y)
    assert within_c / between_c < 0.75 * within_0 / between_0
    assert gap < within_c  # the centers followed their classes' features (Wen et al. update)
    assert centered.metrics["train"]["center"] < plain.metrics["train"]["center"]


def test_mlp_head_trains_too(lfw):
    x, y = _train_set(lfw)
    mlp = train_head(x, y, hidden=64, model_id=MODEL)
    assert mlp.centers_.shape == (KNOWN_PEOPLE, 64)
    labels = mlp.predict_top(lfw["x"][lfw["held"]], MODEL, top=1)
    assert np.mean([r[0][0] == t for r, t in zip(labels, lfw["y"][lfw["held"]])]) >= 0.95


def test_training_is_repeatable_and_leaves_global_rng_alone(lfw):
    x, y = _train_set(lfw)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = train_head(x, y, epochs=5, model_id=MODEL)
    assert torch.equal(torch.rand(1), expected_next)
    order = np.random.default_rng(3).permutation(len(x))
    again = train_head(x[order], [y[i] for i in order], epochs=5, model_id=MODEL)
    other_seed = train_head(x, y, epochs=5, seed=1, model_id=MODEL)
    q = lfw["x"][lfw["held"]]
    assert again.version == first.version
    np.testing.assert_array_equal(again.predict_proba(q, MODEL), first.predict_proba(q, MODEL))
    assert other_seed.version != first.version
    assert not np.array_equal(other_seed.predict_proba(q, MODEL), first.predict_proba(q, MODEL))


def test_version_changes_with_data_and_params(lfw):
    x, y = _train_set(lfw)
    base = train_head(x, y, epochs=2, model_id=MODEL).version
    assert base.startswith("head-") and len(base) == len("head-") + 12
    nudged = x.copy()
    nudged[0, 0] += 1e-3
    assert train_head(nudged, y, epochs=2, model_id=MODEL).version != base
    assert train_head(x, y[::-1], epochs=2, model_id=MODEL).version != base
    assert train_head(x, y, epochs=3, model_id=MODEL).version != base
    assert train_head(x, y, epochs=2, center_loss_lambda=0.05, model_id=MODEL).version != base


def test_save_writes_a_versioned_folder_and_load_predicts_identically(head, lfw, tmp_path):
    folder = head.save(tmp_path / "heads")
    assert folder == tmp_path / "heads" / head.version
    assert sorted(p.name for p in folder.iterdir()) == ["head.pt", "meta.json"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["classes"] == head.classes_.tolist() and meta["params"]["center_loss_lambda"] == 0.01
    assert set(meta["metrics"]) == {"train", "holdout"} and meta["created_at"].endswith("+00:00")
    loaded = HeadModel.load(folder)
    q = lfw["x"][np.concatenate([lfw["held"], lfw["unseen"]])]
    assert loaded.version == head.version and loaded.threshold_ == head.threshold_
    np.testing.assert_array_equal(loaded.predict_proba(q, MODEL), head.predict_proba(q, MODEL))
    assert loaded.predict(q, MODEL)[0].tolist() == head.predict(q, MODEL)[0].tolist()


def test_load_refuses_damaged_or_missing_artifacts(head, tmp_path):
    folder = head.save(tmp_path / "heads")
    raw = bytearray((folder / "head.pt").read_bytes())
    raw[-100] ^= 0xFF
    (folder / "head.pt").write_bytes(bytes(raw))
    with pytest.raises(ClassifierError, match="damaged"):
        HeadModel.load(folder)
    with pytest.raises(ClassifierError, match="no saved head"):
        HeadModel.load(tmp_path / "heads" / "head-000000000000")


def test_compare_on_holdout_scores_both_models_on_the_same_faces(lfw):
    holdout = np.concatenate([lfw["held"], lfw["unseen"]])
    result = compare_on_holdout(_train_set(lfw), (lfw["x"][holdout], lfw["y"][holdout].tolist()), model_id=MODEL)
    assert result["holdout_faces"] == len(holdout) and result["holdout_known_faces"] == len(lfw["held"])
    assert result["classes"] == KNOWN_PEOPLE
    assert result["centroid_accuracy"] >= 0.95 and result["head_accuracy"] >= 0.95
    assert result["centroid_open_set_accuracy"] >= 0.9 and result["head_open_set_accuracy"] >= 0.9
    assert result["head_version"].startswith("head-") and result["centroid_version"].startswith("centroid-knn-")


def test_bad_input_is_refused(lfw, head):
    x, y = _train_set(lfw)
    with pytest.raises(TooFewFacesError, match="Solo_Person"):
        train_head(x, y[:-1] + ["Solo_Person"], model_id=MODEL)
    with pytest.raises(InvalidVectorsError, match="non-empty"):
        train_head(np.zeros((0, 128)), [], model_id=MODEL)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidVectorsError, match="NaN"):
        train_head(bad, y, model_id=MODEL)
    with pytest.raises(InvalidVectorsError, match="mixed dimensions"):
        train_head([*x[:-1], x[-1][:10]], y, model_id=MODEL)
    for params in ({"hidden": 0}, {"center_loss_lambda": -1.0}, {"center_loss_lambda": float("nan")},
                   {"learning_rate": float("nan")}, {"weight_decay": float("inf")}, {"epochs": 0}, {"center_alpha": 0.0}):
        with pytest.raises(ClassifierError):
            train_head(x, y, model_id=MODEL, **params)
    with pytest.raises(ClassifierError, match="model_id"):
        train_head(x, y, model_id="")
    with pytest.raises(ModelMismatchError):
        head.predict(x, "facenet-vggface2")
    with pytest.raises(InvalidVectorsError, match="512"):
        head.predict_top(np.ones((1, 512)), MODEL)
