"""Regression tests of audited bugs in recognition, tagging and the kNN bench.

1. Undoing a `predict` left the undone model's track predictions in force: approving the track, or the
   identity tag expert, took the undone model's word for who the track shows.
2. With a short class list the open-set threshold landed just under the closest of a handful of
   impostors (2 LFW classes: 0.156, most strangers named) while predict printed far=0.0000.
3. bench/knn.py printed recall_at_5 with 2 decimals (4 only for keys ending in "10").
4. The text expert over tags was weighed on a query text holding the answer (the media's own tags).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import session_dir
from sqlalchemy import func, select

from bench.knn import summary_line
from labeling.audit import undo_event
from labeling.classes import merge_classes
from labeling.auto_tagging import TEXT, autotag, held_out_tag_queries, read_inputs, text_weight_without_own_tags
from labeling.face_labels import label_track, relabel_faces
from labeling.queries import current_track_predictions, tracks_frame
from labeling.recognition import RefreshResult, fit_classifier, refresh_predictions, track_predictions_frame
from labeling.schema import FaceEmbedding, FaceLabel, Track
from models.celebrity_classifier import PRIOR_THRESHOLD, UNKNOWN, CalibrationWarning, CentroidKnnClassifier
from models.tagger import ExpertsVotingTagger
from test_recognition_loop import build_loop_store

DLIB = "dlib-resnet-v1"


@pytest.fixture(scope="session")
def loop_data_dir(tmp_path_factory) -> Path:
    """The embedding cache test_recognition_loop.py fills (same folder: each file is inferred once per session)."""
    return session_dir(tmp_path_factory, "giflens-recognition-data")


# -- 1. an undone refresh leaves no track prediction behind ------------------------------------------
def _track_of(store, face_id: int) -> int:
    with store() as s:
        return s.scalar(select(FaceEmbedding.track_id).where(FaceEmbedding.face_id == face_id,
                                                             FaceEmbedding.model_id == DLIB))


@pytest.mark.slow
def test_an_undone_refresh_no_longer_names_its_tracks(store_url, loop_data_dir):
    """Model A names the unlabelled Ariel Sharon photo Ariel; editors swap the Ariel and Colin Powell labels,
    so model B names it Colin; undoing B's predictions restores A's on the face, and the track's prediction
    as every reader sees it no longer says Colin (the row still holds it: derived data, not audited)."""
    loop = build_loop_store(loop_data_dir, store_url)
    ariel, colin = loop.classes["Ariel Sharon"], loop.classes["Colin Powell"]
    photo = loop.face("Ariel_Sharon_0007.jpg")
    track = _track_of(loop.store, photo)
    a = refresh_predictions(loop.store, DLIB, data_dir=loop.data_dir, editor="bob")
    with loop.store() as s:
        assert current_track_predictions(s, [track])[track][0] == ariel

    relabel_faces(loop.store, [loop.face(f"Ariel_Sharon_{i:04d}.jpg") for i in range(1, 7)], colin, "ann")
    relabel_faces(loop.store, [loop.face(f"Colin_Powell_{i:04d}.jpg") for i in range(1, 7)], ariel, "ann")
    b = refresh_predictions(loop.store, DLIB, data_dir=loop.data_dir, editor="bob")
    assert b.model_version != a.model_version and len(b.event_ids) == 1
    row = track_predictions_frame(loop.store, media_id=loop.media["Ariel_Sharon_0007.jpg"]).set_index("track_id").loc[track]
    assert row["predicted_class_id"] == colin and not row["stale"] and row["model_version"] == b.model_version
    assert "colin powell" in read_inputs(loop.store).identity[loop.media["Ariel_Sharon_0007.jpg"]]

    undo_event(loop.store, b.event_id, "bob")
    with loop.store() as s:
        face = s.get(FaceLabel, s.scalar(select(FaceLabel.id).where(FaceLabel.face_id == photo)))
        assert (face.predicted_class_id, face.model_version) == (ariel, a.model_version)
        stored = s.get(Track, track)
        assert (stored.predicted_class_id, stored.model_version) == (colin, b.model_version)  # left behind ...
        assert current_track_predictions(s, [track])[track] == (None, None)  # ... and not read
    row = track_predictions_frame(loop.store, media_id=loop.media["Ariel_Sharon_0007.jpg"]).set_index("track_id").loc[track]
    assert row["stale"] and row[["predicted_class_id", "predicted_class_name", "model_version"]].isna().all()
    assert read_inputs(loop.store).identity[loop.media["Ariel_Sharon_0007.jpg"]] == ["ariel sharon"]
    frame = track_predictions_frame(loop.store)
    assert frame["stale"].any() and (frame.loc[frame["stale"], "predicted_class_id"].isna()).all()
    # the review queue shows, and approving the track approves, the face's own (restored) guess
    assert tracks_frame(loop.store, DLIB).set_index("track_id").loc[track, "predicted_class_id"] == ariel
    approved = label_track(loop.store, track, "approve", "ann")
    with loop.store() as s:
        assert s.scalar(select(FaceLabel.class_id).where(FaceLabel.face_id == photo)) == ariel
    undo_event(loop.store, approved.event_id, "ann")  # undecided again for the refresh below

    # a refresh of the undecided faces rewrites the tracks holding one, and the others stay as they were
    undecided = refresh_predictions(loop.store, DLIB, data_dir=loop.data_dir, faces="undecided", track_method="product")
    after = track_predictions_frame(loop.store).set_index("track_id")
    with loop.store() as s:
        open_tracks = set(s.scalars(select(FaceEmbedding.track_id).join(FaceLabel, FaceLabel.face_id == FaceEmbedding.face_id)
                                    .where(FaceLabel.status == "predicted", FaceEmbedding.track_id.is_not(None))))
    assert undecided.tracks == len(open_tracks) < len(after)
    assert set(after.loc[sorted(open_tracks), "prediction_method"]) == {"product"}
    assert not after.loc[sorted(open_tracks), "stale"].any() and after.loc[track, "predicted_class_id"] == colin


@pytest.mark.slow
def test_tracks_predicted_by_a_model_fitted_before_a_merge_name_the_class_merged_into(store_url, loop_data_dir):
    """A classifier fitted while Ariel Sharon was a class of her own writes after she was merged into
    Colin Powell: her photos' faces and tracks are predicted as Colin (as the merge moved her labels),
    never as the retired class, which no approval could take."""
    loop = build_loop_store(loop_data_dir, store_url)
    ariel, colin = loop.classes["Ariel Sharon"], loop.classes["Colin Powell"]
    fitted = fit_classifier(loop.store, DLIB)
    merge_classes(loop.store, ariel, colin, "ann")
    refresh_predictions(loop.store, DLIB, predictor=fitted.classifier, editor="bob")
    track = _track_of(loop.store, loop.face("Ariel_Sharon_0007.jpg"))
    with loop.store() as s:
        assert s.scalar(select(func.count()).select_from(Track).where(Track.predicted_class_id == ariel)) == 0
        assert s.get(Track, track).predicted_class_id == colin
        assert all(c != ariel for c, _ in s.get(Track, track).predicted_top)
    assert tracks_frame(loop.store, DLIB).set_index("track_id").loc[track, "predicted_class_id"] == colin


# -- 2. a short class list: the threshold is capped, the rate not pretended ----------------------------
def _lfw_people(lfw_dir: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from bench.lfw_faces import load_lfw_faces

    faces = load_lfw_faces(lfw_dir, min_photos=10, max_people=8)
    return faces.vectors, faces.names.astype(str), sorted(set(faces.names.tolist()))


def test_two_classes_cap_the_threshold_and_report_no_rate(lfw_dir):
    """The auditor's store: 2 classes of 8 photos (16 impostor distances) and 20 photos of 4 other people."""
    x, names, people = _lfw_people(lfw_dir)
    rows = np.concatenate([np.flatnonzero(names == p)[:8] for p in people[:2]])
    held = np.concatenate([np.flatnonzero(names == p)[8:] for p in people[:2]])
    strangers = np.concatenate([np.flatnonzero(names == p)[:5] for p in people[2:6]])
    with pytest.warns(CalibrationWarning, match=r"only 16 impostor distances.*far=nan.*capped at 0\.0430"):
        clf = CentroidKnnClassifier().fit(x[rows], names[rows].tolist(), DLIB)
    assert clf.threshold_ == PRIOR_THRESHOLD[DLIB] and math.isnan(clf.false_accept_rate_)
    named = clf.predict(x[strangers], DLIB)[0] != UNKNOWN
    assert named.sum() <= 1, f"{named.sum()} of 20 strangers named"
    assert np.mean(clf.predict(x[held], DLIB)[0] == names[held]) >= 0.5  # the two people are still named
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        other = CentroidKnnClassifier().fit(x[rows], names[rows].tolist(), "another-model")
    assert other.threshold_ > 0.1 and math.isnan(other.false_accept_rate_)  # no prior measured: no cap


def test_enough_impostors_keep_the_calibrated_threshold_and_its_rate():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 128))
    x = np.concatenate([c + 0.3 * rng.normal(size=(6, 128)) for c in centres]).astype(np.float32)
    y = [str(i) for i in range(20) for _ in range(6)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        clf = CentroidKnnClassifier().fit(x, y, DLIB)  # 120 impostors at 1%: no warning, no cap
    assert clf.false_accept_rate_ <= 0.01 and not math.isnan(clf.false_accept_rate_)
    fixed = CentroidKnnClassifier(unknown_threshold=1.5).fit(x[:12], y[:12], DLIB)  # a fixed threshold stays
    assert fixed.threshold_ == 1.5 and fixed.false_accept_rate_ == 1.0


def test_refresh_line_says_nan_when_the_rate_is_not_measured():
    result = RefreshResult(DLIB, "centroid-knn-x", threshold=0.043, far=float("nan"))
    assert result.line().endswith(" threshold=0.0430 far=nan")
    assert "false-accept rate not measured" in result.summary
    assert RefreshResult(DLIB, "v", threshold=0.05, far=0.0047).line().endswith(" far=0.0047")


# -- 3. bench/knn.py prints every recall with 4 decimals ----------------------------------------------
def test_knn_summary_prints_recalls_with_four_decimals_whatever_k():
    line = summary_line({"recall_at_5": 0.996, "speedup": 12.345, "n": 100, "large_recall_at_5": 0.99999,
                         "hnsw_faster_from_n": "none"})
    assert line == "recall_at_5=0.9960 speedup=12.35 n=100 large_recall_at_5=1.0000 hnsw_faster_from_n=none"


# -- 4. the text expert over tags is weighed without the answer in the question --------------------------
def test_held_out_tag_queries_leave_one_tag_out():
    queries = held_out_tag_queries({1: ["a", "b"], 2: ["a", "b"], 3: ["solo"], 4: ["x", "y", "z"]})
    assert queries == {1: ("b", ["a"]), 2: ("a", ["b"]), 4: ("y", ["x", "z"])}  # one tag: nothing left to ask with


@pytest.mark.slow
def test_text_weight_over_tags_is_measured_without_the_media_own_tags():
    from models.registry import create_model

    minilm = create_model("minilm-l6-v2")
    words = {1: ["tennis", "serena williams"], 2: ["tennis", "venus williams"], 3: ["golf", "tiger woods"],
             4: ["golf", "phil mickelson"]}
    ids = sorted(words)
    vectors = np.asarray(minilm.embed([", ".join(words[m]) for m in ids]), dtype=np.float32)
    tagger = ExpertsVotingTagger(k=1, min_frequency=1.0).fit({TEXT: ([str(m) for m in ids], vectors)},
                                                            {str(m): words[m] for m in ids})
    assert tagger.weights_[TEXT] == 1.0  # asked with its own tags, every media finds one of them
    weight, measured, hits = text_weight_without_own_tags(tagger, words, minilm)
    # a person's name is never another media's tag: held out, nobody proposes it; the sport travels with it
    assert (measured, hits) == (4, 2) and weight == 0.5


@pytest.mark.slow
def test_autotag_reports_the_leave_one_tag_out_text_weight(loop_data_dir, tmp_path):
    loop = build_loop_store(loop_data_dir, f"sqlite:///{tmp_path / 'text.db'}")
    inputs = read_inputs(loop.store)
    several = sum(1 for tags in inputs.tags.values() if len(tags) >= 2)
    result = autotag(loop.store, "bob", text="tags")
    assert result.coverage[TEXT] == several < sum(1 for tags in inputs.tags.values() if tags)
    assert 0.0 <= result.weights[TEXT] < 1.0 and result.hits[TEXT] == round(result.weights[TEXT] * several)
