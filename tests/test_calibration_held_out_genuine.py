"""Recalibrating the open-set threshold on faces editors marked unknown (`calibrate(..., training=True)`, as
`giflens predict` and `giflens retrain` do) kept the genuine side of a set that holds the training faces: each
face measured against a centroid fitted on it, GIF frames beside their own track. The genuine-accept rate the
deployed model reports then read 0.94 where the held-out rate was 0.75. The fit's held-out genuine distances
now stand; impostors, and so the threshold, still come from the set."""
from __future__ import annotations

import numpy as np
import pytest

from labeling.recognition import NO_CLASS
from models.celebrity_classifier import CentroidKnnClassifier
from models.retrain_head import train_head

MODEL = "synthetic-16"


def clips(seed: int = 0) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """Twelve people, two clips each of four near-identical frames; the two clips of a person sit apart (another
    day, another light), so a frame lies near a centroid holding its own clip and farther from the other clip."""
    rng = np.random.default_rng(seed)
    rows, labels, media = [], [], []
    for p in range(12):
        person = rng.normal(size=16)
        for c in range(2):
            clip = person / np.linalg.norm(person) + 0.8 * rng.normal(size=16) / 4
            for _ in range(4):
                rows.append(clip + 0.002 * rng.normal(size=16))
                labels.append(f"person{p}")
                media.append(f"p{p}-clip{c}")
    x = np.asarray(rows)
    unknown = rng.normal(size=(150, 16))  # enough impostors to measure a false-accept rate of 0.01
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels, media, unknown / np.linalg.norm(unknown, axis=1,
                                                                                                  keepdims=True)


def rate(distances: np.ndarray, threshold: float) -> float:
    return float(np.mean(distances <= threshold))


@pytest.mark.filterwarnings("ignore::models.celebrity_classifier.CalibrationWarning")  # the fits before calibrate
def test_recalibration_on_the_training_faces_keeps_the_held_out_genuine_rate():
    x, y, media, unknown = clips()
    fitted = CentroidKnnClassifier(min_faces_per_class=2).fit(x, y, MODEL, groups=media)
    held_out = fitted.held_out_genuine_.copy()
    calibration = (np.vstack([x, unknown]), y + [NO_CLASS] * len(unknown))
    honest = CentroidKnnClassifier(min_faces_per_class=2).fit(x, y, MODEL, groups=media)
    honest.calibrate(*calibration, MODEL, training=True)
    flattered = CentroidKnnClassifier(min_faces_per_class=2).fit(x, y, MODEL, groups=media)
    flattered.calibrate(*calibration, MODEL)  # a separate set: its own genuine distances, as before
    assert honest.threshold_ == flattered.threshold_  # impostors alone set it
    in_sample = 1 - np.einsum("ij,ij->i", x, fitted.centroids_[np.unique(y, return_inverse=True)[1]])
    assert (held_out > in_sample).all()  # the other clip only vs a centroid holding the frame's own clip
    assert rate(held_out, honest.threshold_) < rate(in_sample, honest.threshold_)  # a rate the old code flattered
    assert honest.genuine_accept_rate_ == rate(held_out, honest.threshold_)
    assert flattered.genuine_accept_rate_ == rate(in_sample, flattered.threshold_)
    assert honest.calibration_sizes_["genuine"] == len(held_out)
    assert honest.false_accept_rate_ == flattered.false_accept_rate_


@pytest.mark.filterwarnings("ignore::models.celebrity_classifier.CalibrationWarning")  # the fits before calibrate
def test_the_head_recalibrated_on_its_training_faces_keeps_its_held_out_genuine_rate():
    x, y, _, unknown = clips(1)
    calibration = (np.vstack([x, unknown]), y + [NO_CLASS] * len(unknown))
    head = train_head(x, y, model_id=MODEL, epochs=3, seed=0, min_faces_per_class=2)
    held_out = head.held_out_genuine_.copy()
    plain = train_head(x, y, model_id=MODEL, epochs=3, seed=0, min_faces_per_class=2)
    head.calibrate(*calibration, MODEL, training=True)
    plain.calibrate(*calibration, MODEL)
    assert head.threshold_ == plain.threshold_
    assert head.genuine_accept_rate_ == rate(held_out, head.threshold_)
    assert head.calibration_["genuine"] == len(held_out) == len(x)


@pytest.mark.filterwarnings("ignore::models.celebrity_classifier.CalibrationWarning")
def test_the_head_holds_out_a_whole_clip_as_the_classifier_does():
    """train_head(groups=...) measures each frame against its class without its own clip, as
    CentroidKnnClassifier.fit(groups=...) does: the head and the classifier report one genuine-accept rule."""
    x, y, media, unknown = clips(2)
    head = train_head(x, y, model_id=MODEL, epochs=3, seed=0, min_faces_per_class=2, groups=media)
    classifier = CentroidKnnClassifier(min_faces_per_class=2).fit(x, y, MODEL, groups=media)
    np.testing.assert_allclose(np.sort(head.held_out_genuine_), np.sort(classifier.held_out_genuine_), atol=1e-6)
    per_face = train_head(x, y, model_id=MODEL, epochs=3, seed=0, min_faces_per_class=2)
    assert (np.sort(per_face.held_out_genuine_) < np.sort(head.held_out_genuine_)).all()


@pytest.mark.filterwarnings("ignore::models.celebrity_classifier.CalibrationWarning")
def test_a_loaded_model_refuses_training_calibration_rather_than_flatter_the_rate(tmp_path):
    """The held-out distances are not saved: a loaded classifier asked to keep them refuses, by name."""
    x, y, media, unknown = clips(3)
    fitted = CentroidKnnClassifier(min_faces_per_class=2).fit(x, y, MODEL, groups=media)
    loaded = CentroidKnnClassifier.load(fitted.save(tmp_path / "clf"))
    calibration = (np.vstack([x, unknown]), y + [NO_CLASS] * len(unknown))
    with pytest.raises(ValueError, match="a loaded model has none"):
        loaded.calibrate(*calibration, MODEL, training=True)
    loaded.calibrate(*calibration, MODEL)  # a separate set still calibrates
