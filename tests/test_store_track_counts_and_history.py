"""Store defects, each reproduced on SQLite and PostgreSQL (and failing without its fix):
track decisions summarised as every face of the tracks when some were already so decided, seed and face
counts taken from the ids as given rather than the faces written, and the history of one entity decoding
every bulk event's whole before/after snapshot to pick that entity out."""
from __future__ import annotations

import re

from conftest import make_faces
from sqlalchemy import event, func, select

from labeling.audit import history
from labeling.classes import add_class
from labeling.db import session_scope
from labeling.face_labels import Prediction, approve_faces, label_track, label_tracks, record_predictions, relabel_faces
from labeling.schema import AuditEvent, FaceEmbedding, Track, utcnow
from labeling.tags import add_tags

import test_store_versions_and_undo_refusals

store = test_store_versions_and_undo_refusals.store  # the fixture: a store on each of SQLite and PostgreSQL


def n_events(store) -> int:
    with store() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent))


def predicted_track(store, faces: list[int], class_id: int) -> int:
    """A GIF person track over `faces`, which the model names `class_id` (each face predicted so too)."""
    record_predictions(store, [Prediction(f, class_id, 0.9, [(class_id, 0.9)]) for f in faces], "m1")
    with session_scope(store) as s:
        track = Track(media_id=1, model_id="dlib-resnet-v1", track_index=0, n_faces=len(faces), vector=b"\0" * 8,
                      predicted_class_id=class_id, predicted_confidence=0.9, predicted_top=[[class_id, 0.9]],
                      prediction_method="mean", model_version="m1", predicted_at=utcnow())
        s.add(track)
        s.flush()
        s.add_all(FaceEmbedding(face_id=f, model_id="dlib-resnet-v1", dim=2, vector=b"\0" * 8, track_id=track.id)
                  for f in faces)
        return track.id


# -- 1. track summaries name what was written ---------------------------------------------------------
def test_a_track_approved_twice_writes_nothing_the_second_time(store):
    faces = make_faces(store, 1, 3)
    a, _ = add_class(store, "Alice", "ann")
    track = predicted_track(store, faces, a)
    first = label_track(store, track, "approve", "ann")
    assert first.summary == f"approved track {track} (3 faces) as 'Alice' (class {a})" and first.changed == 3
    events = n_events(store)
    again = label_track(store, track, "approve", "ann")
    assert (again.event_id, again.changed) == (None, 0)
    assert again.summary == f"approved track {track} (3 faces) (nothing changed)"
    assert n_events(store) == events


def test_a_partly_approved_track_names_the_faces_written_and_those_unchanged(store):
    faces = make_faces(store, 1, 6)
    a, b = add_class(store, "Alice", "ann")[0], add_class(store, "Bob", "ann")[0]
    track = predicted_track(store, faces, a)
    approve_faces(store, faces[:4], "ann", a)
    approved = label_track(store, track, "approve", "ann")
    assert approved.summary == f"approved track {track} (2 faces; 4 unchanged) as 'Alice' (class {a})" and approved.changed == 2
    with store() as s:
        assert s.get(AuditEvent, approved.event_id).summary == approved.summary
    relabel_faces(store, faces[:2], b, "ann")
    relabeled = label_tracks(store, [track], "relabel", "ann", b)  # the branch with a class given
    assert relabeled.summary == f"relabeled track {track} (4 faces; 2 unchanged) to 'Bob' (class {b})"


def test_counts_are_of_faces_not_of_the_ids_as_given(store):
    """The same face given as 3 and "3" (a dataframe and a form) is one face, written once."""
    faces = make_faces(store, 1, 2)
    _, added = add_class(store, "Alice", "ann", seed_face_ids=[faces[0], str(faces[0]), faces[1]])
    assert added.summary == "add class 'Alice' seeded with 2 face(s)"
    b, _ = add_class(store, "Bob", "ann")
    moved = relabel_faces(store, [faces[0], str(faces[0])], b, "ann")
    assert moved.summary == f"relabeled 1 face(s) to 'Bob' (class {b})"


# -- 2. history reads only the entity's own snapshots -------------------------------------------------
def test_history_after_bulk_operations_gives_each_events_snapshot_of_the_face(store):
    faces = make_faces(store, 2, 5)
    a, b = add_class(store, "Alice", "ann")[0], add_class(store, "Bob", "ann")[0]
    odd = 0.1 + 0.2  # 0.30000000000000004: the snapshot's float must come back exactly
    first = record_predictions(store, [Prediction(f, a, odd, [(a, odd), (b, 0.5)]) for f in faces], "m1", "model")
    relabeled = relabel_faces(store, faces, b, "ed")
    second = record_predictions(store, [Prediction(f, b, 0.8, [(b, 0.8), (a, 0.2)]) for f in faces], "m2", "model")
    add_tags(store, [1], ["dance"], "ann")
    face = faces[7]
    key = f"face:{face}"
    entries = history(store, key)
    assert [h.event_id for h in entries] == [second.event_id, relabeled.event_id, first.event_id]
    with store() as s:
        for h in entries:
            e = s.get(AuditEvent, h.event_id)
            assert (h.before, h.after) == (e.before.get(key), e.after.get(key))
            assert (h.at, h.editor, h.operation, h.summary, h.undone_by) == (e.at, e.editor, e.operation, e.summary,
                                                                             e.undone_by_id)
    created = entries[-1]
    assert created.before is None  # the prediction run created the label: null in the event's before
    assert created.after["predicted_confidence"] == odd
    assert created.after["predicted_top"] == [[a, 0.3], [b, 0.5]]  # the top is kept to 6 decimals
    assert (entries[1].before["class_id"], entries[1].after["class_id"]) == (a, b)
    tag = history(store, "media_tag:1:1")
    assert len(tag) == 1 and tag[0].before is None and tag[0].after["status"] is not None
    media = history(store, "media:1")  # only concerned: its key is in no snapshot at all
    assert media and all(h.before is None and h.after is None for h in media)
    assert history(store, 'face:"1') == []


def test_history_does_not_read_whole_snapshots(store):
    """Selecting the events decoded every bulk event's before/after JSON in full to pick out one key."""
    faces = make_faces(store, 1, 4)
    a, _ = add_class(store, "Alice", "ann")
    record_predictions(store, [Prediction(f, a, 0.9, [(a, 0.9)]) for f in faces], "m1", "model")
    statements: list[str] = []
    engine = store.kw["bind"]
    listener = lambda *args: statements.append(args[2].lower())  # noqa: E731 (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        entries = history(store, f"face:{faces[0]}")
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(entries) == 1 and entries[0].after["predicted_class_id"] == a
    whole = [s for s in statements if re.search(r'(?<![(])audit_event\.("?)(before|after)\1(?!\s*->)', s)]
    assert statements and whole == []
