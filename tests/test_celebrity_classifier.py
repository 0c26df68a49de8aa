"""CentroidKnnClassifier on real dlib embeddings of LFW photos (cached by bench/lfw_faces.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.lfw_faces import load_lfw_faces
from models.celebrity_classifier import (UNKNOWN, CalibrationWarning, CentroidKnnClassifier, ClassifierError, InvalidLabelsError,
                                         InvalidVectorsError, ModelMismatchError, NotFittedError, TooFewFacesError,
                                         compare_track_methods, held_out_centroid_predictions, leave_one_out_distances,
                                         threshold_for_far, PRIOR_THRESHOLD)

MODEL = "dlib-resnet-v1"
KNOWN_PEOPLE = 20  # the first people (by name) with 10+ photos get classes; the next 4 stay unseen
UNSEEN_PEOPLE = 4
REFERENCES = 5  # 20 classes x 5 faces = 100 impostor distances: enough for the default 1% target


@pytest.fixture(scope="module")
def lfw(lfw_dir: Path) -> dict:
    """Known people split into 5 reference photos and held-out photos; four people with no class."""
    faces = load_lfw_faces(lfw_dir, min_photos=10, max_people=KNOWN_PEOPLE + UNSEEN_PEOPLE)
    people = sorted(set(faces.names.tolist()))
    known, unseen = people[:KNOWN_PEOPLE], people[KNOWN_PEOPLE:]
    rng = np.random.default_rng(0)
    train, held = [], []
    for person in known:
        idx = rng.permutation(np.flatnonzero(faces.names == person))
        train += idx[:REFERENCES].tolist()
        held += idx[REFERENCES:].tolist()
    unseen_idx = np.flatnonzero(np.isin(faces.names, unseen))
    return {"x": faces.vectors, "y": faces.names.astype(str), "train": np.array(train), "held": np.array(held),
            "unseen": unseen_idx, "known": known, "unseen_people": unseen, "people": people}


@pytest.fixture(scope="module")
def fitted(lfw) -> CentroidKnnClassifier:
    return CentroidKnnClassifier().fit(lfw["x"][lfw["train"]], lfw["y"][lfw["train"]].tolist(), MODEL)


# -- recognition ----------------------------------------------------------------------------

def test_held_out_photos_get_their_person(fitted, lfw):
    x, y = lfw["x"][lfw["held"]], lfw["y"][lfw["held"]]
    top = fitted.predict_top(x, MODEL, top=1)
    top1 = np.mean([row[0][0] == truth for row, truth in zip(top, y)])
    assert top1 >= 0.97, top1
    labels, confidences = fitted.predict(x, MODEL)
    assert np.mean(labels == y) >= 0.9  # the open-set rule may refuse a few hard photos, never name someone else
    assert np.mean((labels != y) & (labels != UNKNOWN)) <= 0.02
    assert ((confidences > 0) & (confidences <= 1)).all()


def test_unseen_people_come_out_unknown(fitted, lfw):
    labels, _ = fitted.predict(lfw["x"][lfw["unseen"]], MODEL)
    assert np.mean(labels == UNKNOWN) >= 0.9, dict(zip(*np.unique(labels, return_counts=True)))


def test_predict_top_is_a_ranked_distribution(fitted, lfw):
    rows = fitted.predict_top(lfw["x"][lfw["held"][:20]], MODEL, top=3)
    assert len(rows) == 20
    for row in rows:
        assert len(row) == 3
        probs = [p for _, p in row]
        assert probs == sorted(probs, reverse=True)
        assert {c for c, _ in row} <= set(lfw["known"])
        assert sum(probs) <= 1 + 1e-9
    proba = fitted.predict_proba(lfw["x"][lfw["held"][:20]], MODEL)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
    assert len(fitted.predict_top(lfw["x"][lfw["held"][:2]], MODEL, top=50)[0]) == KNOWN_PEOPLE


def test_centroid_and_knn_both_recognise_and_mixing_stays_a_distribution(lfw):
    x, y = lfw["x"][lfw["train"]], lfw["y"][lfw["train"]].tolist()
    held_x, held_y = lfw["x"][lfw["held"]], lfw["y"][lfw["held"]]
    for weight in (0.0, 1.0):
        clf = CentroidKnnClassifier(centroid_weight=weight).fit(x, y, MODEL)
        proba = clf.predict_proba(held_x, MODEL)
        assert np.mean(clf.classes_[proba.argmax(axis=1)] == held_y) >= 0.97
    both = CentroidKnnClassifier(centroid_weight=0.5).fit(x, y, MODEL).predict_proba(held_x, MODEL)
    knn = CentroidKnnClassifier(centroid_weight=0.0).fit(x, y, MODEL).predict_proba(held_x, MODEL)
    cen = CentroidKnnClassifier(centroid_weight=1.0).fit(x, y, MODEL).predict_proba(held_x, MODEL)
    np.testing.assert_allclose(both, 0.5 * knn + 0.5 * cen, atol=1e-12)


# -- open-set calibration -------------------------------------------------------------------

def test_calibrated_threshold_meets_target_far_on_training_impostors(lfw):
    x, y = lfw["x"][lfw["train"]], lfw["y"][lfw["train"]]
    clf = CentroidKnnClassifier(target_far=0.1).fit(x, y.tolist(), MODEL)
    _, index = np.unique(y, return_inverse=True)
    genuine, impostor = leave_one_out_distances(x, index, KNOWN_PEOPLE)
    assert clf.false_accept_rate_ == np.mean(impostor <= clf.threshold_) <= 0.1
    assert clf.genuine_accept_rate_ == np.mean(genuine <= clf.threshold_)
    assert clf.genuine_accept_rate_ > 0.9
    stricter = CentroidKnnClassifier(target_far=0.01).fit(x, y.tolist(), MODEL)
    assert stricter.threshold_ < clf.threshold_
    fixed = CentroidKnnClassifier(unknown_threshold=0.2).fit(x, y.tolist(), MODEL)
    assert fixed.threshold_ == 0.2 and fixed.false_accept_rate_ == 1.0
    labels, _ = fixed.predict(lfw["x"][lfw["unseen"]], MODEL)
    assert UNKNOWN not in set(labels)  # a threshold this loose accepts everybody: the rule is really applied


def test_short_class_list_warns_and_background_faces_fix_the_threshold(lfw):
    """6 classes give 30 impostors: too few for 1%, so the threshold is capped at the model's prior (left
    to the 30, it let a lookalike be named) and the rate is not measured; background faces recalibrate it."""
    few = lfw["people"][:6]
    train = lfw["train"][np.isin(lfw["y"][lfw["train"]], few)]
    held = lfw["held"][np.isin(lfw["y"][lfw["held"]], few)]
    with pytest.warns(CalibrationWarning, match="only 30 impostor distances.*capped"):
        clf = CentroidKnnClassifier().fit(lfw["x"][train], lfw["y"][train].tolist(), MODEL)
    assert clf.threshold_ == PRIOR_THRESHOLD[MODEL] and np.isnan(clf.false_accept_rate_)
    outsider = lfw["people"][6]  # known to the main fixture, not to this class list
    outsider_x = lfw["x"][lfw["y"] == outsider]
    assert np.mean(clf.predict(outsider_x, MODEL)[0] == UNKNOWN) >= 0.9
    background = np.isin(lfw["y"], lfw["people"][8:KNOWN_PEOPLE])
    clf.calibrate(lfw["x"][background], None, MODEL)
    assert clf.calibration_sizes_ == {"genuine": 0, "impostor": int(background.sum())}
    assert np.isnan(clf.false_accept_rate_) == (background.sum() < 100)
    after = np.mean(clf.predict(outsider_x, MODEL)[0] == UNKNOWN)
    assert after >= 0.9
    assert np.mean(clf.predict(lfw["x"][held], MODEL)[0] == lfw["y"][held]) >= 0.95


def test_held_out_grades_catch_a_mislabelled_face(lfw):
    """A photo filed under the wrong person is graded wrong (never "right" by its own vote), and
    photos filed correctly are graded right, each with itself held out."""
    known = [i for i in np.flatnonzero(np.isin(lfw["y"], lfw["known"]))]
    x, y = lfw["x"][known], lfw["y"][known].copy()
    wrong = int(np.flatnonzero(y == lfw["known"][0])[0])
    y[wrong] = lfw["known"][1]
    named, measured = held_out_centroid_predictions(x, y.tolist(), np.arange(len(x)))
    assert measured.all()
    assert named[wrong] in (lfw["known"][0], UNKNOWN)  # who it shows, or nobody
    right = np.delete(np.arange(len(x)), wrong)
    assert np.mean(named[right] == y[right]) >= 0.95  # photos of known people, each held out
    assert np.mean((named[right] != y[right]) & (named[right] != UNKNOWN)) <= 0.02


def test_held_out_grades_hold_out_the_whole_group(lfw):
    """Rows of one group (frames of one GIF) leave their class together; a class whose faces all
    share one group has nothing left to be graded against."""
    idx = np.flatnonzero(np.isin(lfw["y"], lfw["known"][:3]))
    x, y = lfw["x"][idx], lfw["y"][idx]
    groups = np.where(y == lfw["known"][0], "one-gif", np.arange(len(y)).astype(str))
    named, measured = held_out_centroid_predictions(x, y.tolist(), groups)
    assert not measured[y == lfw["known"][0]].any() and measured[y != lfw["known"][0]].all()
    assert (named[~measured] == UNKNOWN).all()
    # a face's own group held out: with two rows per group, the centroid never contains the row's twin
    pairs = (np.arange(len(y)) // 2).astype(str)
    twin = held_out_centroid_predictions(np.repeat(x, 2, axis=0), np.repeat(y, 2).tolist(), np.repeat(pairs, 2))
    alone = held_out_centroid_predictions(x, y.tolist(), pairs)
    assert (twin[0][::2] == alone[0]).all() and (twin[1][::2] == alone[1]).all()
    one_class = held_out_centroid_predictions(x[y == lfw["known"][1]], [lfw["known"][1]] * int((y == lfw["known"][1]).sum()),
                                              np.arange(int((y == lfw["known"][1]).sum())))
    assert not one_class[1].any()  # one class: nothing to tell apart, nothing graded


def test_threshold_for_far_accepts_exactly_the_allowed_share():
    impostor = np.linspace(0.1, 1.0, 100)
    t = threshold_for_far(impostor, 0.05)
    assert np.sum(impostor <= t) == 5
    assert np.sum(impostor <= threshold_for_far(impostor, 0.001)) == 0


def test_calibrate_on_separate_set_moves_threshold_and_version(lfw):
    x, y = lfw["x"][lfw["train"]], lfw["y"][lfw["train"]].tolist()
    clf = CentroidKnnClassifier(target_far=0.05).fit(x, y, MODEL)
    before = (clf.threshold_, clf.version)
    calib = np.concatenate([lfw["held"], lfw["unseen"]])
    clf.calibrate(lfw["x"][calib], lfw["y"][calib].tolist(), MODEL)
    assert clf.threshold_ != before[0] and clf.version != before[1]
    assert clf.calibration_sizes_ == {"genuine": len(lfw["held"]), "impostor": len(calib)}
    assert clf.false_accept_rate_ <= 0.05


# -- tracks --------------------------------------------------------------------------------

def test_tracks_of_one_person_are_named_and_unseen_tracks_are_unknown(fitted, lfw):
    held = lfw["held"]
    person = lfw["y"][held[0]]
    track = lfw["x"][held[lfw["y"][held] == person][:4]]
    stranger = lfw["x"][lfw["unseen"][:4]]
    for method in ("product", "mean"):
        named = fitted.predict_track(track, MODEL, method=method)
        assert named.label == person and named.top[0][0] == person and named.distance <= fitted.threshold_
        assert fitted.predict_track(stranger, MODEL, method=method).label == UNKNOWN


def test_product_is_the_renormalised_product_of_face_probabilities(fitted, lfw):
    faces = lfw["x"][lfw["held"][:3]]
    proba = fitted.predict_proba(faces, MODEL)
    expected = proba.prod(axis=0) / proba.prod(axis=0).sum()
    track = fitted.predict_track(faces, MODEL, method="product", top=KNOWN_PEOPLE)
    got = dict(track.top)
    # LOG_FLOOR (1e-12) lifts vanishing per-face probabilities, so compare above ~1e-30 only
    np.testing.assert_allclose([got[c] for c in fitted.classes_], expected, rtol=1e-6, atol=1e-30)
    mean = faces.mean(axis=0)
    mean_track = fitted.predict_track(faces, MODEL, method="mean", top=1)
    (label, confidence), = fitted.predict_top(mean / np.linalg.norm(mean), MODEL, top=1)[0]
    assert mean_track.top[0][0] == label and mean_track.confidence == pytest.approx(confidence, abs=1e-6)


def test_compare_track_methods_counts_known_and_unknown_tracks(fitted, lfw):
    tracks, labels = [], []
    for person in lfw["known"]:
        idx = lfw["held"][lfw["y"][lfw["held"]] == person]
        tracks.append(lfw["x"][idx[:3]])
        labels.append(person)
    for person in lfw["unseen_people"]:
        tracks.append(lfw["x"][lfw["unseen"][lfw["y"][lfw["unseen"]] == person][:3]])
        labels.append(person)
    result = compare_track_methods(fitted, tracks, labels, MODEL)
    for method in ("product", "mean"):
        assert result[method]["known_tracks"] == KNOWN_PEOPLE and result[method]["unknown_tracks"] == UNSEEN_PEOPLE
        assert result[method]["accuracy"] == 1.0
        assert result[method]["open_set_accuracy"] >= 0.75
    with pytest.raises(ClassifierError):
        compare_track_methods(fitted, tracks, labels[:-1], MODEL)


# -- persistence and versions --------------------------------------------------------------

def test_save_load_round_trip_gives_identical_predictions(fitted, lfw, tmp_path):
    folder = fitted.save(tmp_path / "clf")
    assert sorted(p.name for p in folder.iterdir()) == ["classifier.json", "classifier.npz"]
    loaded = CentroidKnnClassifier.load(folder)
    queries = lfw["x"][np.concatenate([lfw["held"], lfw["unseen"]])]
    assert loaded.version == fitted.version
    assert loaded.threshold_ == fitted.threshold_
    np.testing.assert_array_equal(loaded.predict_proba(queries, MODEL), fitted.predict_proba(queries, MODEL))
    assert loaded.predict(queries, MODEL)[0].tolist() == fitted.predict(queries, MODEL)[0].tolist()
    with np.load(folder / "classifier.npz", allow_pickle=False) as data:  # no pickled objects inside
        assert data["labels"].dtype.kind == "U"


def test_load_refuses_damaged_or_missing_files(fitted, tmp_path):
    folder = fitted.save(tmp_path / "clf")
    meta = json.loads((folder / "classifier.json").read_text())
    meta["threshold"] += 0.01
    (folder / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(ClassifierError, match="damaged"):
        CentroidKnnClassifier.load(folder)
    with pytest.raises(ClassifierError, match="no saved classifier"):
        CentroidKnnClassifier.load(tmp_path / "nothing")


def test_version_follows_data_and_params_not_row_order(lfw):
    x, y = lfw["x"][lfw["train"]], lfw["y"][lfw["train"]]
    base = CentroidKnnClassifier().fit(x, y.tolist(), MODEL).version
    assert base.startswith("centroid-knn-") and len(base) == len("centroid-knn-") + 12
    order = np.random.default_rng(1).permutation(len(x))
    assert CentroidKnnClassifier().fit(x[order], y[order].tolist(), MODEL).version == base
    one_more = lfw["held"][0]
    assert CentroidKnnClassifier().fit(np.vstack([x, lfw["x"][one_more]]), y.tolist() + [lfw["y"][one_more]],
                                       MODEL).version != base
    nudged = x.copy()
    nudged[0, 0] += 1e-3
    assert CentroidKnnClassifier().fit(nudged, y.tolist(), MODEL).version != base
    relabelled = y.copy()
    relabelled[0], relabelled[-1] = relabelled[-1], relabelled[0]
    assert CentroidKnnClassifier().fit(x, relabelled.tolist(), MODEL).version != base
    assert CentroidKnnClassifier(k=3).fit(x, y.tolist(), MODEL).version != base
    assert CentroidKnnClassifier().fit(x, y.tolist(), "facenet-vggface2").version != base


# -- refusals ------------------------------------------------------------------------------

def test_bad_training_input_is_refused_with_clear_errors(lfw):
    x, y = lfw["x"][lfw["train"]], lfw["y"][lfw["train"]].tolist()
    clf = CentroidKnnClassifier()
    with pytest.raises(InvalidVectorsError, match="non-empty"):
        clf.fit(np.zeros((0, 128)), [], MODEL)
    bad = x.copy()
    bad[3, 7] = np.nan
    with pytest.raises(InvalidVectorsError, match="NaN"):
        clf.fit(bad, y, MODEL)
    bad[3, 7] = np.inf
    with pytest.raises(InvalidVectorsError, match="NaN or infinity"):
        clf.fit(bad, y, MODEL)
    ragged = [v for v in x[:-1]] + [x[-1][:64]]
    with pytest.raises(InvalidVectorsError, match="mixed dimensions"):
        clf.fit(ragged, y, MODEL)
    zero = x.copy()
    zero[0] = 0
    with pytest.raises(InvalidVectorsError, match="all zeros"):
        clf.fit(zero, y, MODEL)
    with pytest.raises(InvalidLabelsError, match="labels"):
        clf.fit(x, y[:-1], MODEL)
    with pytest.raises(InvalidLabelsError, match="reserved"):
        clf.fit(x, [UNKNOWN] * 2 + y[2:], MODEL)
    with pytest.raises(InvalidLabelsError, match="str"):
        clf.fit(x, list(range(len(y))), MODEL)
    with pytest.raises(InvalidLabelsError, match="at least 2 classes"):
        clf.fit(x[:5], [y[0]] * 5, MODEL)
    with pytest.raises(ClassifierError, match="model_id"):
        clf.fit(x, y, "")


def test_classes_with_one_face_are_listed_in_the_refusal(lfw):
    x, y = lfw["x"][lfw["train"]], lfw["y"][lfw["train"]].tolist()
    y = y[:-1] + ["Lonely_Person"]
    y[0] = "Another_Single"
    with pytest.raises(TooFewFacesError) as err:
        CentroidKnnClassifier().fit(x, y, MODEL)
    assert err.value.classes == {"Another_Single": 1, "Lonely_Person": 1}
    assert "Another_Single (1)" in str(err.value) and "Lonely_Person (1)" in str(err.value)
    assert CentroidKnnClassifier(min_faces_per_class=1).fit(x, y, MODEL).classes_.size == KNOWN_PEOPLE + 2


@pytest.mark.parametrize("params", [{"k": 0}, {"centroid_weight": 1.5}, {"target_far": 0.0}, {"target_far": 1.0},
                                    {"unknown_threshold": -0.1}, {"temperature": 0.0}, {"min_faces_per_class": 0}])
def test_bad_parameters_are_refused_at_fit(lfw, params):
    with pytest.raises(ClassifierError):
        CentroidKnnClassifier(**params).fit(lfw["x"][lfw["train"]], lfw["y"][lfw["train"]].tolist(), MODEL)


def test_prediction_refusals(fitted, lfw, tmp_path):
    q = lfw["x"][lfw["held"][:3]]
    fresh = CentroidKnnClassifier()
    for call in (lambda: fresh.predict(q, MODEL), lambda: fresh.predict_top(q, MODEL),
                 lambda: fresh.predict_track(q, MODEL), lambda: fresh.save(tmp_path / "x"), lambda: fresh.version):
        with pytest.raises(NotFittedError, match="not fitted|unfitted"):
            call()
    with pytest.raises(ModelMismatchError, match="facenet-vggface2"):
        fitted.predict(q, "facenet-vggface2")
    with pytest.raises(ModelMismatchError):
        fitted.predict_track(q, "facenet-vggface2")
    with pytest.raises(InvalidVectorsError, match="512 dimensions"):
        fitted.predict(np.ones((2, 512)), MODEL)
    with pytest.raises(InvalidVectorsError):
        fitted.predict(np.full((1, 128), np.nan), MODEL)
    with pytest.raises(ClassifierError, match="method"):
        fitted.predict_track(q, MODEL, method="median")
    with pytest.raises(ClassifierError, match="top"):
        fitted.predict_top(q, MODEL, top=0)
    with pytest.raises(InvalidVectorsError, match="cancel out"):
        fitted.predict_track(np.stack([q[0], -q[0]]), MODEL, method="mean")
