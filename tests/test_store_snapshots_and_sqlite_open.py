"""Store defects, each failing without its fix: undo decoding a later bulk event's
whole snapshot once per shared entity (square of its size); two processes opening a new SQLite store
at once (the second failed at once); a split "moving" faces only predicted as the class and a merge
signing another editor's decisions; track predictions read as stored after a merge; summaries
counting what was asked instead of what changed."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_faces
from sqlalchemy import event, select

from labeling.audit import undo_event
from labeling.classes import add_class, merge_classes, set_class_attributes, split_class
from labeling.db import session_scope
from labeling.errors import ValidationError
from labeling.face_labels import Prediction, label_track, record_predictions, reject_faces, relabel_faces
from labeling.queries import tracks_frame
from labeling.schema import FaceEmbedding, FaceLabel, Track, utcnow
from labeling.tags import add_tags, set_tag_status

import test_store_versions_and_undo_refusals

store = test_store_versions_and_undo_refusals.store  # the fixture: a store on each of SQLite and PostgreSQL
ROOT = Path(__file__).resolve().parents[1]


def label(store, face_id: int) -> FaceLabel:
    with store() as s:
        return s.scalar(select(FaceLabel).where(FaceLabel.face_id == face_id))


# -- 1. undo reads each later event once --------------------------------------------------------------
def test_undo_reads_a_later_bulk_events_snapshot_once_not_per_shared_face(store):
    """The query that found later writers selected the whole event with each shared key: a bulk event's
    before/after JSON came back (and was decoded) once per face, 58 s and 2.4 GB for 1,000 faces."""
    faces = make_faces(store, 4, 10)
    a, _ = add_class(store, "Alice", "ed")
    b, _ = add_class(store, "Bob", "ed")
    record_predictions(store, [Prediction(f, a, 0.9, [(a, 0.9), (b, 0.1)]) for f in faces], "m1", "model")
    relabeled = relabel_faces(store, faces, b, "ed")
    record_predictions(store, [Prediction(f, b, 0.8, [(b, 0.8), (a, 0.2)]) for f in faces], "m2", "model")
    statements: list[str] = []
    engine = store.kw["bind"]
    listener = lambda *args: statements.append(args[2].lower())  # noqa: E731 (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        undone = undo_event(store, relabeled.event_id, "ed")
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert undone.changed == len(faces) and label(store, faces[0]).status == "predicted"
    per_key = [s for s in statements if re.search(r'audit_event\."?before', s) and "audit_entity" in s]
    assert per_key == []


# -- 5. two processes opening one new SQLite store ---------------------------------------------------
def test_two_processes_opening_a_new_sqlite_store_both_get_it(tmp_path):
    """The migration ran in a deferred transaction: the second process read the version table, then
    failed at once (SQLITE_BUSY, no busy wait) upgrading to a writer behind the first."""
    code = ("import sys; sys.path.insert(0, sys.argv[2]); from labeling.db import open_store, current_revision; "
            "store = open_store(sys.argv[1]); print(current_revision(store.kw['bind']))")
    for trial in range(6):
        url = f"sqlite:///{tmp_path / f'new{trial}.db'}"
        procs = [subprocess.Popen([sys.executable, "-c", code, url, str(ROOT)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate() for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [err[-500:] for _, err in outs]
        assert len({out.strip() for out, _ in outs}) == 1


# -- 3. split moves decisions; merge signs only what it decided ----------------------------------------
def test_split_refuses_faces_only_predicted_as_the_class_and_merge_keeps_their_editor(store):
    """A face Ann relabeled to Carol and one she rejected were listed under Alice (their prediction) and
    "split" into Alice B: neither moved, both labels then said editor bob."""
    faces = make_faces(store, 1, 3)
    a, _ = add_class(store, "Alice", "ann")
    c, _ = add_class(store, "Carol", "ann")
    b, _ = add_class(store, "Bob", "ann")
    record_predictions(store, [Prediction(f, a, 0.9, [(a, 0.9)]) for f in faces], "m1")
    relabel_faces(store, [faces[0]], c, "ann")
    reject_faces(store, [faces[1]], "ann")
    with pytest.raises(ValidationError, match=rf"face\(s\) \[{faces[0]}, {faces[1]}\] are only predicted as 'Alice'"):
        split_class(store, a, faces[:2], "bob", new_name="Alice B")
    _, split = split_class(store, a, faces[2:], "bob", new_name="Alice C")
    assert split.summary.startswith("split 1 face(s) from 'Alice'")
    assert (label(store, faces[0]).class_id, label(store, faces[0]).editor) == (c, "ann")
    merged = merge_classes(store, a, b, "bob")
    assert merged.changed >= 1
    rejected = label(store, faces[1])
    assert (rejected.status, rejected.predicted_class_id, rejected.editor) == ("rejected", b, "ann")


# -- 2. track predictions after a merge ---------------------------------------------------------------
def test_a_track_predicted_as_a_class_merged_away_reads_and_approves_as_its_target(store):
    faces = make_faces(store, 1, 3)
    a, _ = add_class(store, "Alice", "ann")
    b, _ = add_class(store, "Bob", "ann")
    record_predictions(store, [Prediction(f, a, 0.9, [(a, 0.9), (b, 0.1)]) for f in faces], "m1")
    with session_scope(store) as s:
        track = Track(media_id=1, model_id="dlib-resnet-v1", track_index=0, n_faces=3, vector=b"\0" * 8,
                      predicted_class_id=a, predicted_confidence=0.9, predicted_top=[[a, 0.9], [b, 0.1]],
                      prediction_method="mean", model_version="m1", predicted_at=utcnow())
        s.add(track)
        s.flush()
        s.add_all(FaceEmbedding(face_id=f, model_id="dlib-resnet-v1", dim=2, vector=b"\0" * 8, track_id=track.id)
                  for f in faces)
        track_id = track.id
    merge_classes(store, a, b, "bob")
    row = tracks_frame(store).iloc[0]
    assert (row.predicted_class_id, row.predicted_class_name) == (b, "Bob")
    label_track(store, track_id, "approve", "ann")
    assert {(label(store, f).status, label(store, f).class_id) for f in faces} == {("approved", b)}


# -- 6. summaries name what changed ------------------------------------------------------------------
def test_summaries_count_what_was_written(store):
    faces = make_faces(store, 2, 5)
    a, _ = add_class(store, "Alice", "ann")
    relabel_faces(store, faces[:9], a, "ann")
    again = relabel_faces(store, faces, a, "ann")
    assert again.summary == f"relabeled 1 face(s) to 'Alice' (class {a}); 9 unchanged"
    set_class_attributes(store, a, "ann", gender="female", country="France")
    country = set_class_attributes(store, a, "ann", gender="female", country="Spain")
    assert country.summary == "class 'Alice': country='Spain'"
    add_tags(store, [1, 2], ["dance"], "ann")
    set_tag_status(store, [(1, "dance")], "suggested", "ann")
    set_tag_status(store, [(2, "dance")], "suggested", "ann")
    set_tag_status(store, [(1, "dance")], "active", "ann")
    accepted = set_tag_status(store, [(1, "dance"), (2, "dance")], "active", "ann")
    assert accepted.summary == "accepted 1 tag suggestion(s): 'dance'; 1 unchanged"
    nothing = set_tag_status(store, [(1, "dance"), (2, "dance")], "active", "ann")
    assert nothing.summary == "accepted 2 tag suggestion(s): 'dance' (nothing changed)" and nothing.event_id is None
