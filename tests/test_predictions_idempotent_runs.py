"""Fixes of prediction runs and track decisions: a re-run that predicts what the store holds writes
nothing; one `predict` run is one audit event that one undo takes back whole; contradictory duplicate
predictions are refused; approving tracks that share faces checks the editor's versions once and counts each
face once; decision summaries read as what happened ("approved", "marked ... unknown")."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import make_faces, session_dir
from sqlalchemy import func, select, update

from labeling.audit import undo_event
from labeling.classes import add_class
from labeling.db import open_store, session_scope
from labeling.errors import ValidationError
from labeling.face_labels import (Prediction, approve_faces, label_track, label_tracks, mark_unknown,
                                  record_predictions, reject_faces, relabel_faces)
from labeling.recognition import refresh_predictions
from labeling.schema import AuditEvent, Face, FaceEmbedding, FaceLabel, Track, utcnow
from test_recognition_loop import FACE_MODEL, build_loop_store, labels


@pytest.fixture
def store(store_url):
    return open_store(store_url)


def versions(store) -> dict[int, int]:
    with store() as s:
        return dict(s.execute(select(FaceLabel.face_id, FaceLabel.version)).all())


def events(store) -> int:
    with store() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent))


def track_over(store, face_ids: list[int], model_id: str) -> int:
    """A face track of one face model over faces of one media item (as ingest groups them; no real vectors)."""
    with session_scope(store) as s:
        media_id = s.get(Face, face_ids[0]).media_id
        track = Track(media_id=media_id, model_id=model_id, track_index=0, n_faces=len(face_ids), vector=b"\0" * 8)
        s.add(track)
        s.flush()
        for f in face_ids:
            s.add(FaceEmbedding(face_id=f, model_id=model_id, dim=2, vector=b"\0" * 8, track_id=track.id))
        return track.id


def predict_track_as(store, track_id: int, class_id: int, model_version: str) -> None:
    """The track prediction a refresh writes beside its faces' (derived data, no audit event)."""
    with session_scope(store) as s:
        s.execute(update(Track).where(Track.id == track_id).values(
            predicted_class_id=class_id, predicted_confidence=0.9, predicted_top=[[class_id, 0.9]],
            model_version=model_version, predicted_at=utcnow()))


# -- a re-run that predicts the same writes nothing --------------------------------------------------------
def test_the_same_predictions_again_write_nothing_and_leave_editors_versions_alone(store):
    faces = make_faces(store, 1, 4)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    first = [Prediction(f, a, 0.1 + 0.2, [(a, 0.1 + 0.2), (b, 0.1234567)]) for f in faces]
    record_predictions(store, first, "centroid-v1", editor="nightly")
    approve_faces(store, faces[:1], "ann")
    seen, n_events = versions(store), events(store)

    # the same run again (the same figures, give or take the float noise a store hands back)
    again = [Prediction(f, a, 0.3, [(a, 0.3), (b, 0.1234567 + 1e-12)]) for f in faces]
    result = record_predictions(store, again, "centroid-v1", editor="nightly")
    assert (result.event_id, result.changed) == (None, 0) and result.summary.endswith("(nothing changed)")
    assert versions(store) == seen and events(store) == n_events
    # an editor working from the versions they loaded before the run is not asked to reload
    relabel_faces(store, faces[1:3], b, "bob", expected_versions={f: seen[f] for f in faces[1:3]})

    # a run that changes one face writes that face only, in one event that says so
    moved = [Prediction(f, a, 0.3 if f != faces[3] else 0.6, [(a, 0.3 if f != faces[3] else 0.6), (b, 0.1234567)])
             for f in faces]
    before = versions(store)
    result = record_predictions(store, moved, "centroid-v1", editor="nightly")
    assert result.changed == 1 and "for 1 face(s)" in result.summary and "3 face(s) unchanged" in result.summary
    assert {f: v - before[f] for f, v in versions(store).items()} == {f: int(f == faces[3]) for f in faces}
    # a new model version is a new prediction even where the figures agree
    result = record_predictions(store, moved, "centroid-v2", editor="nightly")
    assert result.changed == len(faces)


def test_contradictory_duplicate_predictions_are_refused_and_nothing_is_written(store):
    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    n_events = events(store)
    with pytest.raises(ValidationError, match=rf"face {faces[0]} is given two different predictions"):
        record_predictions(store, [Prediction(faces[0], a, 0.9, [(a, 0.9)]), Prediction(faces[1], a, 0.9, [(a, 0.9)]),
                                   Prediction(faces[0], b, 0.8, [(b, 0.8)])], "centroid-v1")
    assert versions(store) == {} and events(store) == n_events
    # the same prediction twice is no contradiction
    result = record_predictions(store, [Prediction(faces[0], a, 0.9, [(a, 0.9)])] * 2, "centroid-v1")
    assert result.changed == 1


# -- one run, one operation, one undo ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def loop_data_dir(tmp_path_factory) -> Path:
    """The embedding cache test_recognition_loop.py fills (same folder: each file is inferred once per session)."""
    return session_dir(tmp_path_factory, "giflens-recognition-data")


@pytest.mark.slow
def test_a_refresh_in_many_chunks_is_one_operation_that_one_undo_takes_back(loop_data_dir, tmp_path):
    loop = build_loop_store(loop_data_dir, f"sqlite:///{tmp_path / 'loop.db'}")
    first = refresh_predictions(loop.store, FACE_MODEL, data_dir=loop.data_dir, editor="bob", batch_size=7)
    n_faces = len(labels(loop.store))
    assert first.faces == n_faces > 3 * 7 and len(first.event_ids) == 1 and first.changed == n_faces
    assert f" event={first.event_id} " in first.line()

    # nothing changed since: no event, no new version
    seen = versions(loop.store)
    again = refresh_predictions(loop.store, FACE_MODEL, data_dir=loop.data_dir, editor="nightly", batch_size=7)
    assert again.model_version == first.model_version and again.event_ids == [] and again.changed == 0
    assert versions(loop.store) == seen and " event=none " in again.line()

    # new training data, a new model: its run, written in chunks of 7, is undone whole
    relabel_faces(loop.store, [loop.face("Ariel_Sharon_0007.jpg")], loop.classes["Ariel Sharon"], "ann")
    second = refresh_predictions(loop.store, FACE_MODEL, data_dir=loop.data_dir, editor="bob", batch_size=7)
    assert second.model_version != first.model_version and len(second.event_ids) == 1
    assert Counter(r.model_version for r in labels(loop.store).values()) == {second.model_version: n_faces}
    undone = undo_event(loop.store, second.event_id, "ann")
    assert undone.changed == second.changed
    assert Counter(r.model_version for r in labels(loop.store).values()) == {first.model_version: n_faces}


# -- tracks sharing faces ---------------------------------------------------------------------------------------
def test_approving_tracks_that_share_faces_checks_the_seen_versions_once(store):
    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    record_predictions(store, [Prediction(f, a, 0.9, [(a, 0.9)]) for f in faces], "v1")
    one, two = track_over(store, faces, "model-one"), track_over(store, faces, "model-two")  # one GIF, two models
    predict_track_as(store, one, a, "v1")
    predict_track_as(store, two, a, "v1")
    seen = versions(store)

    result = label_tracks(store, [one, two], "approve", "bob", expected_versions=seen)
    assert result.summary == f"approved 2 tracks (2 faces) as 'A' (class {a})" and result.changed == 2
    assert {f: v - seen[f] for f, v in versions(store).items()} == {f: 1 for f in faces}  # written once each
    with store() as s:
        assert set(s.execute(select(FaceLabel.status, FaceLabel.class_id))) == {("approved", a)}

    result = label_tracks(store, [one, two], "relabel", "bob", class_id=b, expected_versions=versions(store))
    assert result.summary == f"relabeled 2 tracks (2 faces) to 'B' (class {b})"

    # two tracks naming different people for one face: which one is meant is not guessed
    predict_track_as(store, two, b, "v1")
    with pytest.raises(ValidationError, match=rf"face {faces[0]} is in tracks {one}, {two}"):
        label_tracks(store, [one, two], "approve", "bob")


# -- summaries -------------------------------------------------------------------------------------------------
def test_decision_summaries_say_what_was_done(store):
    faces = make_faces(store, 1, 4)
    a, _ = add_class(store, "A", "ann")
    record_predictions(store, [Prediction(f, a, 0.9, [(a, 0.9)]) for f in faces], "v1")
    assert approve_faces(store, faces[:2], "bob").summary == f"approved 2 face(s) as 'A' (class {a})"
    assert reject_faces(store, faces[2:3], "bob").summary == "rejected 1 face(s)"
    assert mark_unknown(store, faces[3:], "bob").summary == "marked 1 face(s) unknown"
    assert relabel_faces(store, faces[:1], a, "bob").summary == f"relabeled 1 face(s) to 'A' (class {a})"
    track = track_over(store, faces[:2], "model-one")
    assert label_track(store, track, "unknown", "bob").summary == f"marked track {track} (2 faces) unknown"
