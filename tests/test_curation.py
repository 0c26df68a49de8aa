"""Curation operations on SQLite and PostgreSQL: every change audited, reversible, conflict-safe."""
from __future__ import annotations


import pytest
from conftest import make_faces
from sqlalchemy import delete, func, select, update

from labeling.audit import history, recent_events, undo_event, undo_last
from labeling.classes import (add_class, clear_class_attributes, merge_classes, rename_class, retire_class,
                              set_class_attributes, set_class_status, split_class)
from labeling.db import open_store, session_scope
from labeling.errors import ConflictError, NotFoundError, UndoError, ValidationError
from labeling.face_labels import (Prediction, approve_faces, label_track, label_tracks, mark_unknown,
                                  record_predictions, reject_faces, relabel_faces)
from labeling.schema import (AuditEvent, CelebrityClass, Face, FaceEmbedding, FaceLabel, Media, MediaTag, Tag,
                             Track, utcnow)
from labeling.tags import TagExistsError, add_tags, remove_tags, set_tag_confidences, set_tag_status


@pytest.fixture
def store(store_url):
    return open_store(store_url)


def label_of(store, face_id):
    with store() as s:
        return s.scalars(select(FaceLabel).where(FaceLabel.face_id == face_id)).first()


def test_decisions_are_audited_and_undone_one_by_one(store):
    faces = make_faces(store)
    brad, _ = add_class(store, "Brad Pitt", "ann", external_id="m.0c6qh")
    angie, _ = add_class(store, "Angelina Jolie", "ann")
    record_predictions(store, [Prediction(f, brad, 0.9, [(brad, 0.9), (angie, 0.1)]) for f in faces], "centroid-v1")
    approve_faces(store, faces[:2], "bob")
    relabel_faces(store, [faces[2]], angie, "bob")
    reject_faces(store, [faces[3]], "bob")
    mark_unknown(store, [faces[4]], "bob")
    assert [label_of(store, f).status for f in faces] == ["approved", "approved", "relabeled", "rejected", "unknown", "predicted"]
    assert label_of(store, faces[2]).class_id == angie and label_of(store, faces[3]).class_id is None
    events = recent_events(store, editor="bob")
    assert [e.operation for e in events] == ["unknown_faces", "reject_faces", "relabel_faces", "approve_faces"]
    # bob undoes his last two operations one by one; ann's work is untouched
    undo_last(store, "bob")
    undo_last(store, "bob")
    assert label_of(store, faces[3]).status == "predicted" and label_of(store, faces[4]).status == "predicted"
    assert label_of(store, faces[2]).status == "relabeled"
    hist = history(store, f"face:{faces[3]}")
    assert [h.operation for h in hist] == ["undo", "reject_faces", "predict_faces"]
    assert hist[1].undone_by == hist[0].event_id and hist[1].after["status"] == "rejected"
    assert {h.operation for h in history(store, f"class:{angie}")} >= {"add_class", "relabel_faces"}


def test_successive_changes_of_one_face_are_undone_one_by_one(store):
    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    relabel_faces(store, faces, a, "bob")
    relabel_faces(store, faces, b, "bob")
    approve_faces(store, faces, "bob")
    for expected in [("relabeled", b), ("relabeled", a)]:
        undo_last(store, "bob")
        label = label_of(store, faces[0])
        assert (label.status, label.class_id) == expected
    undo_last(store, "bob")
    assert label_of(store, faces[0]) is None  # bob's first relabel created the label: undoing it removes it
    with pytest.raises(UndoError, match="bob has no operation left to undo"):
        undo_last(store, "bob")


def test_the_same_decision_twice_changes_nothing_the_second_time(store):
    """A second click on Approve (or a bulk approve over faces already approved) is no new version and
    no audit event: otherwise history fills with non-changes and "Undo last" undoes one of them."""
    faces = make_faces(store, 1, 3)
    a, _ = add_class(store, "A", "ann")
    relabel_faces(store, faces[:2], a, "bob")
    version = label_of(store, faces[0]).version
    again = relabel_faces(store, faces[:2], a, "bob")
    assert again.event_id is None and again.summary.endswith("(nothing changed)")
    assert label_of(store, faces[0]).version == version
    partly = relabel_faces(store, faces, a, "bob")  # only the third face changes
    assert partly.event_id is not None and set(event_after(store, partly.event_id)) == {f"face:{faces[2]}"}
    assert relabel_faces(store, faces[:1], a, "cid").event_id is not None  # another editor's confirmation counts
    undo_last(store, "bob")
    assert label_of(store, faces[2]) is None and label_of(store, faces[1]).class_id == a


def event_after(store, event_id: int) -> dict:
    with store() as s:
        return s.get(AuditEvent, event_id).after


def test_a_model_refresh_does_not_pin_an_editor_decision(store):
    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    record_predictions(store, [Prediction(f, a, 0.6, [(a, 0.6)]) for f in faces], "v1")
    relabel_faces(store, faces[:1], b, "bob")
    record_predictions(store, [Prediction(f, b, 0.8, [(b, 0.8)]) for f in faces], "v2")  # other columns only
    undo_last(store, "bob")
    label = label_of(store, faces[0])
    assert (label.status, label.class_id, label.model_version, label.predicted_class_id) == ("predicted", b, "v2", b)
    # a later write of the same columns still blocks, and says by whom
    relabel_faces(store, faces[1:], b, "bob")
    approve_faces(store, faces[1:], "ann")
    with pytest.raises(UndoError, match=r"first \d+ \(approve_faces\) by ann"):
        undo_last(store, "bob")


def test_model_rerun_never_overwrites_a_decision(store):
    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    record_predictions(store, [Prediction(f, a, 0.6, [(a, 0.6)]) for f in faces], "v1")
    relabel_faces(store, [faces[0]], b, "ann")
    record_predictions(store, [Prediction(f, a, 0.8, [(a, 0.8)]) for f in faces], "v2")
    first, second = label_of(store, faces[0]), label_of(store, faces[1])
    assert (first.status, first.class_id, first.model_version, first.predicted_confidence) == ("relabeled", b, "v2", 0.8)
    assert (second.status, second.class_id, second.source) == ("predicted", a, "model")


def test_stale_edit_is_refused_with_who_and_when(store):
    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    record_predictions(store, [Prediction(faces[0], a, 0.7, [(a, 0.7)])], "v1")
    seen = label_of(store, faces[0]).version
    approve_faces(store, faces, "bob", expected_versions={faces[0]: seen})
    with pytest.raises(ConflictError, match=r"face \d+ was changed by bob at .* version"):
        relabel_faces(store, faces, b, "carol", expected_versions={faces[0]: seen})
    assert label_of(store, faces[0]).class_id == a
    cls_version = 1
    rename_class(store, a, "A prime", "bob", expected_version=cls_version)
    with pytest.raises(ConflictError, match="changed by bob"):
        set_class_attributes(store, a, "carol", expected_version=cls_version, gender="female")


def test_bulk_relabel_of_thousands_is_one_event(store):
    faces = make_faces(store, 10, 500)
    target, _ = add_class(store, "Crowd", "ann")
    result = relabel_faces(store, faces, target, "ann")
    assert result.changed == 5000
    with store() as s:
        assert s.scalar(select(func.count()).select_from(FaceLabel).where(FaceLabel.class_id == target)) == 5000
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == 2
    undo_event(store, result.event_id, "ann")
    with store() as s:
        assert s.scalar(select(func.count()).select_from(FaceLabel)) == 0


def test_class_lifecycle_merge_split_retire(store):
    faces = make_faces(store, 2, 3)
    a, _ = add_class(store, "Beyoncé", "ann", seed_face_ids=faces[:3])
    b, _ = add_class(store, "Beyonce Knowles", "ann", seed_face_ids=faces[3:])
    merge = merge_classes(store, b, a, "ann")
    with store() as s:
        assert s.get(CelebrityClass, b).status == "retired" and s.get(CelebrityClass, b).merged_into_id == a
        assert s.scalar(select(func.count()).select_from(FaceLabel).where(FaceLabel.class_id == a)) == 6
    with pytest.raises(ValidationError, match="retired"):
        relabel_faces(store, faces[:1], b, "ann")
    new_id, _ = split_class(store, a, faces[4:], "ann", new_name="Solange")
    assert {label_of(store, f).class_id for f in faces[4:]} == {new_id}
    with pytest.raises(UndoError, match="later operation"):
        undo_event(store, merge.event_id, "ann")
    set_class_attributes(store, new_id, "ann", gender="Female", birth_year=1986, country="United States")
    for bad_year in (1970.7, "19x", True, 1700):
        with pytest.raises(ValidationError, match="birth_year"):
            set_class_attributes(store, new_id, "ann", birth_year=bad_year)
    clear_class_attributes(store, new_id, "ann", ["country"])
    with store() as s:
        row = s.get(CelebrityClass, new_id)
        assert (row.gender, row.birth_year, row.country) == ("female", 1986, None)
    retire_class(store, new_id, "ann")
    undo_last(store, "ann")
    with store() as s:
        assert s.get(CelebrityClass, new_id).status == "active"


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "../etc", "a/b", "back\\slash", "evil\u202etxt", "tab\there",
                                  "\u2800", "\u3164", "\u200d", "\ufe0f \u2800", "\u3000"])
def test_bad_class_names_are_refused_and_change_nothing(store, name):
    with pytest.raises(ValidationError):
        add_class(store, name, "ann")
    with store() as s:
        assert s.scalar(select(func.count()).select_from(CelebrityClass)) == 0
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == 0


def test_names_that_read_the_same_are_one_class(store):
    class_id, _ = add_class(store, "  Brad   Pitt ", "ann")
    with store() as s:
        assert s.get(CelebrityClass, class_id).name == "Brad Pitt"
    for twin in ("brad pitt", "Brad\u3000Pitt", "ＢＲＡＤ ＰＩＴＴ"):
        with pytest.raises(ValidationError, match="already exists"):
            add_class(store, twin, "bob")
    with pytest.raises(ValidationError, match="invisible characters"):  # emoji glue after a letter glues nothing
        add_class(store, "Brad Pitt\ufe0f", "bob")
    family, _ = add_class(store, "The 👨\u200d👩\u200d👧 Family", "ann")  # emoji glue inside an emoji sequence is kept
    with store() as s:
        assert s.get(CelebrityClass, family).name == "The 👨\u200d👩\u200d👧 Family"


@pytest.mark.parametrize("name", ["O'Brien \"Bob\"", "Robert'); DROP TABLE face_label;--", "Zoë 🎬", "محمد صلاح", "李小龙"])
def test_tricky_but_valid_names_round_trip_exactly(store, name):
    class_id, _ = add_class(store, name, "ann")
    with store() as s:
        assert s.get(CelebrityClass, class_id).name == name
    with pytest.raises(ValidationError, match="already exists"):
        add_class(store, name.upper() if name.isascii() else name, "bob")


def test_tags_confidences_and_bad_values(store):
    make_faces(store, 2, 0)
    with store() as s:
        media = list(s.scalars(select(Media.id)))
    added = add_tags(store, media, ["  Happy ", "dance"], "ann", confidence=0.8)
    assert added.summary.startswith("add tag(s) 'happy', 'dance' to 2 media")  # as stored, not as typed
    set_tag_confidences(store, [(media[0], "happy", 0.3)], "ann")
    add_tags(store, [media[1]], ["party"], "model-run", confidence=0.4, source="experts_voting", status="suggested")
    set_tag_status(store, [(media[1], "party")], "active", "ann")
    for bad in (1.5, -0.1, float("nan"), "high", True):
        with pytest.raises(ValidationError, match="confidence"):
            set_tag_confidences(store, [(media[0], "happy", bad)], "ann")
    with pytest.raises(NotFoundError):
        add_tags(store, [999999], ["x"], "ann")
    for bad_id in ("x", 1.5, True, None):
        with pytest.raises(ValidationError, match="media id must be a whole number"):
            add_tags(store, [bad_id], ["x"], "ann")
        with pytest.raises(ValidationError, match="face id must be a whole number"):
            approve_faces(store, [bad_id], "ann")
    with pytest.raises(NotFoundError, match=f"media {media[0]} has no tag 'party'"):  # named, not by its row id
        set_tag_status(store, [(media[0], "party")], "rejected", "ann")
    remove_tags(store, [media[0]], ["dance"], "ann")
    with store() as s:
        rows = sorted((r.media_id, r.tag_id, r.confidence, r.status) for r in s.scalars(select(MediaTag)))
    assert [(m, c, st) for m, _, c, st in rows] == [(media[0], 0.3, "active"), (media[1], 0.8, "active"),
                                                     (media[1], 0.8, "active"), (media[1], 0.4, "active")]
    assert [h.operation for h in history(store, f"media:{media[0]}")][:2] == ["remove_tags", "set_tag_confidence"]
    undo_last(store, "ann")  # the removal
    with store() as s:
        assert s.scalar(select(func.count()).select_from(MediaTag)) == 5


def make_track(store, face_ids: list[int], track_index: int = 0) -> int:
    """A face track over faces of one media item, as ingest groups them (vectors are not what is tested)."""
    with session_scope(store) as s:
        media_id = s.get(Face, face_ids[0]).media_id
        track = Track(media_id=media_id, model_id="dlib-resnet-v1", track_index=track_index, n_faces=len(face_ids),
                      vector=b"\0" * 8)
        s.add(track)
        s.flush()
        for f in face_ids:
            s.add(FaceEmbedding(face_id=f, model_id="dlib-resnet-v1", dim=2, vector=b"\0" * 8, track_id=track.id))
        return track.id


def test_label_a_whole_track(store):
    faces = make_faces(store, 1, 4)
    track_id = make_track(store, faces[:2])
    with store() as s:
        media_id = s.get(Face, faces[0]).media_id
    a, _ = add_class(store, "A", "ann")
    label_track(store, track_id, "relabel", "ann", class_id=a)
    assert [label_of(store, f) is not None and label_of(store, f).class_id == a for f in faces] == [True, True, False, False]
    assert history(store, f"media:{media_id}")[0].operation == "relabel_track"


def test_unknown_ids_and_missing_editor(store):
    faces = make_faces(store, 1, 1)
    with pytest.raises(NotFoundError):
        approve_faces(store, [faces[0] + 1000], "ann")
    with pytest.raises(NotFoundError):
        relabel_faces(store, faces, 424242, "ann")
    with pytest.raises(ValidationError, match="editor"):
        approve_faces(store, faces, "  ")
    with pytest.raises(ValidationError, match="no predicted class"):
        approve_faces(store, faces, "ann")
    with pytest.raises(UndoError):
        undo_last(store, "ann")


def test_two_connections_racing_never_lose_an_edit(store):
    """Connection A holds an operation open after reading; B's edit, based on the same version,
    waits for A (row lock on PostgreSQL, write lock on SQLite) and is then refused."""
    import threading

    from labeling.audit import run_operation
    from labeling.face_labels import apply_decision

    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    record_predictions(store, [Prediction(faces[0], a, 0.7, [(a, 0.7)])], "v1")
    seen = label_of(store, faces[0]).version
    a_has_read, outcome = threading.Event(), {}

    def editor_b() -> None:
        a_has_read.wait()
        try:
            relabel_faces(store, faces, b, "bob", expected_versions={faces[0]: seen})
            outcome["b"] = "written"
        except ConflictError as exc:
            outcome["b"] = str(exc)

    thread = threading.Thread(target=editor_b)
    thread.start()
    with run_operation(store, "ann", "approve_faces") as op:
        apply_decision(op, faces, "approve", expected_versions={faces[0]: seen})
        a_has_read.set()
        thread.join(timeout=1.0)
        assert thread.is_alive(), "B must wait for A's transaction"
    thread.join()
    assert "changed by ann" in outcome["b"]
    final = label_of(store, faces[0])
    assert (final.status, final.class_id, final.editor) == ("approved", a, "ann")


def race(store, first, second) -> str:
    """Run `first(op)` in an open operation of ann's; `second()` starts in another connection once
    ann has written, and its outcome (or the StoreError it met) is returned after ann commits."""
    import threading

    from labeling.audit import run_operation
    from labeling.errors import StoreError

    ann_wrote, outcome = threading.Event(), {}

    def bob() -> None:
        ann_wrote.wait()
        try:
            second()
            outcome["bob"] = "written"
        except StoreError as exc:
            outcome["bob"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=bob)
    thread.start()
    with run_operation(store, "ann", "race") as op:
        first(op)
        ann_wrote.set()
        thread.join(timeout=0.5)
    thread.join()
    return outcome["bob"]


def test_simultaneous_first_labels_and_class_names_are_conflicts_not_database_errors(store):
    """Nothing to lock yet: on PostgreSQL the second insert meets the unique constraint, on SQLite
    the second writer waits and then sees the first one's row. Either way the editor reads a refusal."""
    from labeling.classes import create_class
    from labeling.face_labels import apply_decision

    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    outcome = race(store, lambda op: apply_decision(op, faces, "relabel", a, expected_versions={faces[0]: 0}),
                   lambda: relabel_faces(store, faces, b, "bob", expected_versions={faces[0]: 0}))
    assert outcome.startswith(("ConflictError", "ConcurrentWriteError")) and "reload" in outcome, outcome
    assert (label_of(store, faces[0]).class_id, label_of(store, faces[0]).editor) == (a, "ann")
    outcome = race(store, lambda op: create_class(op, "Brad Pitt"), lambda: add_class(store, "brad pitt", "bob"))
    assert outcome.startswith(("ValidationError", "ConcurrentWriteError")) and "name" in outcome, outcome
    with store() as s:
        assert s.scalar(select(func.count()).select_from(CelebrityClass).where(CelebrityClass.name_key == "brad pitt")) == 1


def count_events(store) -> int:
    with store() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent))


def test_bulk_track_decision_is_one_operation_and_one_undo(store):
    faces = make_faces(store, 2, 3)
    tracks = [make_track(store, faces[:2]), make_track(store, faces[3:6])]
    lone = faces[2]  # in no track: untouched
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    record_predictions(store, [Prediction(f, a, 0.8, [(a, 0.8), (b, 0.2)]) for f in faces], "v1")
    before = {f: (label_of(store, f).status, label_of(store, f).class_id, label_of(store, f).version) for f in faces}
    events = count_events(store)
    result = label_tracks(store, tracks + [tracks[0]], "relabel", "bob", class_id=b)  # a repeated id counts once
    assert count_events(store) == events + 1 and result.changed == 5
    assert result.operation == "relabel_tracks" and "2 tracks (5 faces)" in result.summary
    assert [(label_of(store, f).status, label_of(store, f).class_id) for f in faces] == (
        [("relabeled", b)] * 2 + [("predicted", a)] + [("relabeled", b)] * 3)
    with store() as s:
        for t in tracks:
            media_id = s.get(Track, t).media_id
            assert history(store, f"media:{media_id}")[0].event_id == result.event_id
    undo_last(store, "bob")  # one press takes the whole selection back
    assert {f: (label_of(store, f).status, label_of(store, f).class_id) for f in faces} == {
        f: v[:2] for f, v in before.items()}
    assert label_of(store, lone).status == "predicted"
    with pytest.raises(UndoError, match="no operation left"):
        undo_last(store, "bob")


def test_bulk_track_decision_on_a_stale_version_changes_nothing(store):
    faces = make_faces(store, 2, 2)
    tracks = [make_track(store, faces[:2]), make_track(store, faces[2:])]
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    record_predictions(store, [Prediction(f, a, 0.8, [(a, 0.8)]) for f in faces], "v1")
    seen = {f: label_of(store, f).version for f in faces}
    relabel_faces(store, [faces[3]], b, "carol")  # carol edits one face of the second track meanwhile
    events = count_events(store)
    with pytest.raises(ConflictError, match=rf"face {faces[3]} was changed by carol"):
        label_tracks(store, tracks, "approve", "bob", expected_versions=seen)
    assert count_events(store) == events
    assert [label_of(store, f).status for f in faces] == ["predicted", "predicted", "predicted", "relabeled"]
    label_tracks(store, tracks[:1], "approve", "bob", expected_versions=seen)  # the untouched track goes through
    assert [label_of(store, f).status for f in faces[:2]] == ["approved", "approved"]


def test_approving_tracks_approves_each_tracks_predicted_person(store):
    faces = make_faces(store, 2, 2)
    named, unknown = make_track(store, faces[:2]), make_track(store, faces[2:])
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    record_predictions(store, [Prediction(f, b, 0.5, [(b, 0.5)]) for f in faces], "v1")  # faces alone say B
    with session_scope(store) as s:  # the track's aggregate (same run "v1") says A for one track, unknown for the other
        s.execute(update(Track).where(Track.id == named).values(predicted_class_id=a, predicted_at=utcnow(),
                                                                 model_version="v1"))
        s.execute(update(Track).where(Track.id == unknown).values(predicted_class_id=None, predicted_at=utcnow(),
                                                                   model_version="v1"))
    events = count_events(store)
    with pytest.raises(ValidationError, match=rf"track {unknown} has no predicted class to approve \(the model says unknown\)"):
        label_tracks(store, [named, unknown], "approve", "bob")
    assert count_events(store) == events
    label_tracks(store, [named], "approve", "bob")
    assert [(label_of(store, f).status, label_of(store, f).class_id) for f in faces[:2]] == [("approved", a)] * 2
    label_tracks(store, [unknown], "unknown", "bob")
    assert [label_of(store, f).status for f in faces[2:]] == ["unknown", "unknown"]


def test_bulk_track_decision_refuses_unknown_and_empty_tracks(store):
    faces = make_faces(store, 1, 2)
    track = make_track(store, faces)
    with session_scope(store) as s:
        empty = Track(media_id=s.get(Face, faces[0]).media_id, model_id="dlib-resnet-v1", track_index=1, n_faces=0,
                      vector=b"\0" * 8)
        s.add(empty)
        s.flush()
        empty_id = empty.id
    a, _ = add_class(store, "A", "ann")
    events = count_events(store)
    with pytest.raises(NotFoundError, match="no face track with id 424242"):
        label_tracks(store, [track, 424242], "relabel", "bob", class_id=a)
    with pytest.raises(ValidationError, match=f"track {empty_id} has no faces"):
        label_tracks(store, [track, empty_id], "relabel", "bob", class_id=a)
    with pytest.raises(ValidationError, match="no tracks given"):
        label_tracks(store, [], "relabel", "bob", class_id=a)
    assert count_events(store) == events and label_of(store, faces[0]) is None


def test_undo_of_a_class_the_model_predicts_is_refused_by_name(store):
    """Predictions name the class (label, prediction or top list): deleting it would break them."""
    faces = make_faces(store, 1, 3)
    keep, _ = add_class(store, "Keep", "ann")
    brad, added = add_class(store, "Brad Pitt", "ann")
    predicted = record_predictions(store, [Prediction(faces[0], brad, 0.9, [(brad, 0.9)]),
                                           Prediction(faces[1], None, 0.3, [(keep, 0.3), (brad, 0.2)])], "centroid-v1")
    events = count_events(store)
    with pytest.raises(UndoError, match=r"class 'Brad Pitt' \(id \d+\) is named by 2 face label\(s\) "
                                        r"\(predictions of centroid-v1\).*retire the class instead"):
        undo_event(store, added.event_id, "ann")
    with store() as s:
        assert s.get(CelebrityClass, brad) is not None and s.get(AuditEvent, added.event_id).undone_by_id is None
    assert count_events(store) == events
    # once the predictions are undone nothing names the class, and its creation can be undone
    undo_event(store, predicted.event_id, "ann")
    undo_event(store, added.event_id, "ann")
    with store() as s:
        assert s.get(CelebrityClass, brad) is None and s.get(CelebrityClass, keep) is not None


def test_undo_of_a_class_a_track_prediction_names_is_refused(store):
    """Track predictions are derived data without an audit event: the undo still sees them (while they
    stand: the faces carry the refresh's model version, `current_track_prediction`)."""
    faces = make_faces(store, 1, 2)
    track = make_track(store, faces)
    a, added = add_class(store, "A", "ann")
    record_predictions(store, [Prediction(f, None, 0.4, []) for f in faces], "v1")  # the faces: unknown
    with session_scope(store) as s:  # what refresh_predictions writes for a track
        s.execute(update(Track).where(Track.id == track).values(
            predicted_class_id=a, predicted_confidence=0.7, predicted_top=[[a, 0.7]], model_version="v1",
            predicted_at=utcnow()))
    with pytest.raises(UndoError, match=r"class 'A' \(id \d+\) is named by the predictions of 1 face track\(s\)"):
        undo_event(store, added.event_id, "ann")
    with store() as s:
        assert s.get(CelebrityClass, a) is not None


def test_undo_of_a_class_merged_into_it_or_decided_on_is_refused(store):
    faces = make_faces(store, 1, 2)
    a, added_a = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    relabel_faces(store, faces[:1], a, "bob")
    with pytest.raises(UndoError, match=r"class 'A' \(id \d+\) is named by 1 face label\(s\)"):
        undo_event(store, added_a.event_id, "ann")
    merge_classes(store, b, a, "ann")
    with pytest.raises(UndoError, match="merged into it"):
        undo_event(store, added_a.event_id, "ann")


def test_undo_of_a_rename_whose_old_name_was_taken_is_refused(store):
    a, _ = add_class(store, "Beyonce", "ann")
    renamed = rename_class(store, a, "Beyoncé Knowles", "ann")
    add_class(store, "beyonce", "bob")  # the old name, free again, taken by another class
    with pytest.raises(UndoError, match=r"give class \d+ the name 'Beyonce' back, but class \d+ \('beyonce'\)"):
        undo_event(store, renamed.event_id, "ann")
    with store() as s:
        assert s.get(CelebrityClass, a).name == "Beyoncé Knowles"


def tag_rows(store) -> dict[tuple[int, str], tuple]:
    """(media id, tag) -> (confidence, source, status, editor, version): what a refused operation must leave."""
    with store() as s:
        rows = s.execute(select(MediaTag.media_id, Tag.name, MediaTag.confidence, MediaTag.source, MediaTag.status,
                                MediaTag.editor, MediaTag.version).join(Tag, Tag.id == MediaTag.tag_id)).all()
    return {(m, t): tuple(rest) for m, t, *rest in rows}


def test_adding_a_tag_already_there_is_refused_not_overwritten(store):
    """An editor adding a tag another editor already set (perhaps with a considered confidence) gets a
    conflict naming it, and nothing of the bulk add is written; a stale view of the row is refused too."""
    make_faces(store, 2, 0)
    with store() as s:
        media = sorted(s.scalars(select(Media.id)))
    add_tags(store, [media[0]], ["Nod"], "ann", confidence=0.8)
    before, events = tag_rows(store), count_events(store)
    with pytest.raises(TagExistsError, match=rf"0\.gif \(media {media[0]}\) is already tagged 'nod' with confidence "
                                             r"0\.80 by ann at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; "
                                             r"edit its confidence instead") as refused:
        add_tags(store, media, ["nod"], "bob", confidence=0.2)  # bulk: media[1] has no "nod" yet
    assert isinstance(refused.value, ConflictError) and (refused.value.expected, refused.value.editor) == (0, "ann")
    assert tag_rows(store) == before and count_events(store) == events  # not even media[1] got it
    with pytest.raises(TagExistsError):  # as a suggestion neither: that would demote ann's tag
        add_tags(store, [media[0]], ["nod"], "model-run", confidence=0.3, source="experts_voting", status="suggested")
    assert tag_rows(store) == before

    # bob saw media[1] without "party" (version 0); a suggestion arrived meanwhile: his add is refused
    add_tags(store, [media[1]], ["party"], "model-run", confidence=0.4, source="experts_voting", status="suggested")
    with store() as s:
        party = s.scalars(select(MediaTag).where(MediaTag.media_id == media[1])).one()
        key = (party.media_id, party.tag_id)
    with pytest.raises(ConflictError, match="changed by model-run"):
        add_tags(store, [media[1]], ["party"], "bob", expected_versions={key: 0})
    assert tag_rows(store)[(media[1], "party")] == (0.4, "experts_voting", "suggested", "model-run", 1)
    # with the version he saw, adding the suggested tag accepts it with his confidence
    add_tags(store, [media[1]], ["party"], "bob", confidence=0.9, expected_versions={key: 1})
    assert tag_rows(store)[(media[1], "party")] == (0.9, "editor", "active", "bob", 2)


def test_a_rejection_is_undone_only_by_adding_the_tag_again_audited(store):
    """set_tag_confidences refuses a rejected row (a bulk edit must not revive what an editor rejected);
    adding the tag again is the explicit way back: allowed, audited with the rejection as its before
    state, and undoable to the rejection."""
    make_faces(store, 2, 0)
    with store() as s:
        media = sorted(s.scalars(select(Media.id)))
    add_tags(store, [media[0]], ["dance"], "ann", confidence=0.8)
    add_tags(store, [media[1]], ["party"], "model-run", confidence=0.4, source="experts_voting", status="suggested")
    set_tag_status(store, [(media[1], "party")], "rejected", "ann")
    before, events = tag_rows(store), count_events(store)
    with pytest.raises(ValidationError, match=rf"1 of these tags were rejected \(by ann\): 1\.gif \(media {media[1]}\) "
                                              r"'party'; setting a confidence does not undo a rejection"):
        set_tag_confidences(store, [(media[0], "dance", 0.5), (media[1], "party", 0.9)], "bob")
    assert tag_rows(store) == before and count_events(store) == events  # not even the active "dance" changed
    assert before[(media[1], "party")] == (0.4, "experts_voting", "rejected", "ann", 2)

    with store() as s:
        tag_id = s.scalar(select(Tag.id).where(Tag.name == "party"))
    with pytest.raises(ConflictError, match="changed by ann"):  # bob still saw the suggestion (version 1)
        add_tags(store, [media[1]], ["party"], "bob", expected_versions={(media[1], tag_id): 1})
    assert tag_rows(store) == before
    readded = add_tags(store, [media[1]], ["party"], "bob", confidence=0.7, expected_versions={(media[1], tag_id): 2})
    assert "1 of them rejected before" in readded.summary and readded.event_id is not None
    assert tag_rows(store)[(media[1], "party")] == (0.7, "editor", "active", "bob", 3)
    entry = history(store, f"media_tag:{media[1]}:{tag_id}")[0]
    assert (entry.event_id, entry.operation, entry.editor) == (readded.event_id, "add_tags", "bob")
    assert (entry.before["status"], entry.after["status"]) == ("rejected", "active")
    assert (entry.before["source"], entry.before["confidence"]) == ("experts_voting", 0.4)
    assert history(store, f"media:{media[1]}")[0].event_id == readded.event_id
    undo_event(store, readded.event_id, "bob")
    assert tag_rows(store)[(media[1], "party")][:4] == (0.4, "experts_voting", "rejected", "ann")


def test_a_database_constraint_during_undo_is_an_undo_error(store):
    """Last line of defence: a dependency no check foresaw (here a media row deleted outside the
    audited operations, under a tag removal) ends as UndoError with nothing written, not a raw
    IntegrityError."""
    make_faces(store, 1, 0)
    with store() as s:
        media_id = s.scalar(select(Media.id))
    add_tags(store, [media_id], ["happy"], "ann")
    removed = remove_tags(store, [media_id], ["happy"], "ann")
    with session_scope(store) as s:
        s.execute(delete(Media).where(Media.id == media_id))
    events = count_events(store)
    with pytest.raises(UndoError, match=rf"operation {removed.event_id} cannot be undone: restoring it would break a "
                                        "database constraint"):
        undo_event(store, removed.event_id, "ann")
    assert count_events(store) == events
    with store() as s:
        assert s.get(AuditEvent, removed.event_id).undone_by_id is None


def test_an_ingest_record_is_refused_by_undo_and_passed_over_by_undo_last(store):
    """An ingest batch's audit event records files stored, not a curation change: undo refuses it by
    name, and "undo my last operation" goes past it to the editor's last decision."""
    from labeling.ingest import IngestSummary, record_ingest_event

    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "A", "ann")
    relabel_faces(store, faces, a, "ann")
    with store() as s:
        media_id = s.get(Face, faces[0]).media_id
    with session_scope(store) as s:
        ingest_event = record_ingest_event(s, "ann", IngestSummary(cached=1, faces=2,
                                                                   media=[{"id": media_id, "status": "ok"}]), [media_id])
    with pytest.raises(UndoError, match=rf"operation {ingest_event} \(ingest\) cannot be undone: it is a record of ingest"):
        undo_event(store, ingest_event, "ann")
    undone = undo_last(store, "ann")
    assert "relabeled 2 face(s)" in undone.summary and label_of(store, faces[0]) is None
    with store() as s:
        assert s.get(AuditEvent, ingest_event).undone_by_id is None


def test_merge_split_and_tag_decisions_on_a_stale_view_change_nothing(store):
    """Two editors look at the same classes and tags; the second to act on what has since changed is refused."""
    faces = make_faces(store, 1, 3)
    a, _ = add_class(store, "Stale A", "ann")
    b, _ = add_class(store, "Stale B", "ann")
    relabel_faces(store, faces, a, "ann")
    with store() as s:
        seen = {c.id: c.version for c in s.scalars(select(CelebrityClass).where(CelebrityClass.id.in_([a, b])))}
        media = s.scalar(select(Media.id))
    rename_class(store, a, "Stale A renamed", "bob")  # bob changes class a after ann looked
    events_before = len(recent_events(store))
    with pytest.raises(ConflictError, match="changed by bob"):
        merge_classes(store, a, b, "ann", expected_versions=seen)
    with pytest.raises(ConflictError, match="changed by bob"):
        split_class(store, a, faces[:1], "ann", new_name="Stale C", expected_version=seen[a])
    assert {label_of(store, f).class_id for f in faces} == {a} and len(recent_events(store)) == events_before

    add_tags(store, [media], ["party"], "model-run", confidence=0.4, source="experts_voting", status="suggested")
    with store() as s:
        tag = s.scalars(select(MediaTag).where(MediaTag.media_id == media)).one()
        key, version = (tag.media_id, tag.tag_id), tag.version
    set_tag_confidences(store, [(media, "party", 0.9)], "bob")  # bob accepts it with a confidence meanwhile
    with pytest.raises(ConflictError, match="changed by bob"):
        set_tag_status(store, [(media, "party")], "rejected", "ann", expected_versions={key: version})
    with pytest.raises(ConflictError, match="changed by bob"):
        remove_tags(store, [media], ["party"], "ann", expected_versions={key: version})
    with store() as s:
        tag = s.scalars(select(MediaTag).where(MediaTag.media_id == media)).one()
    assert (tag.status, tag.confidence) == ("active", 0.9)
    # with the current versions the same decisions go through
    merge_classes(store, a, b, "ann", expected_versions={a: seen[a] + 1, b: seen[b]})
    assert {label_of(store, f).class_id for f in faces} == {b}


def store_state(store) -> tuple:
    """Every class, face label and audit event as plain tuples: 'changed nothing' compares two of these."""
    with store() as s:
        classes = s.execute(select(CelebrityClass.id, CelebrityClass.name, CelebrityClass.name_key,
                                   CelebrityClass.status, CelebrityClass.merged_into_id, CelebrityClass.gender,
                                   CelebrityClass.version)
                            .order_by(CelebrityClass.id)).all()
        labels = s.execute(select(FaceLabel.face_id, FaceLabel.class_id, FaceLabel.status, FaceLabel.version)
                           .order_by(FaceLabel.face_id)).all()
        events = list(s.scalars(select(AuditEvent.id).order_by(AuditEvent.id)))
    return classes, labels, events


def test_a_class_seeded_from_a_stale_selection_is_refused_and_not_created(store):
    """The explorer seeds a new class with a selection that may hold confirmed faces; when one of them
    changed since the editor looked, the whole add is refused: no class, no relabel, no event."""
    faces = make_faces(store, 1, 3)
    a, _ = add_class(store, "A", "ann")
    approve_faces(store, faces[:2], "ann", class_id=a)
    seen = {f: (label_of(store, f).version if label_of(store, f) else 0) for f in faces}  # faces[2]: no label, 0
    reject_faces(store, faces[1:2], "carol")  # carol changes an approved face of the selection meanwhile
    for changed in (faces[1], faces[2]):
        before = store_state(store)
        with pytest.raises(ConflictError, match=rf"face {changed} was changed by carol"):
            add_class(store, "Seeded", "bob", seed_face_ids=faces, expected_versions=seen)
        assert store_state(store) == before
        seen[faces[1]] = label_of(store, faces[1]).version  # bob reloads the rejected face only
        relabel_faces(store, faces[2:], a, "carol")  # and carol labels the unlabeled face
    with store() as s:
        assert s.scalar(select(func.count()).select_from(CelebrityClass).where(CelebrityClass.name == "Seeded")) == 0
    # with the versions the editor sees now the same seed goes through, in one event
    now = {f: label_of(store, f).version for f in faces}
    decided = [(label_of(store, f).status, label_of(store, f).class_id) for f in faces]
    seeded, result = add_class(store, "Seeded", "bob", seed_face_ids=faces, expected_versions=now)
    assert result.operation == "add_class" and "seeded with 3 face(s)" in result.summary
    assert [(label_of(store, f).status, label_of(store, f).class_id) for f in faces] == [("relabeled", seeded)] * 3
    undo_last(store, "bob")  # one undo takes back both the relabel and the class
    with store() as s:
        assert s.get(CelebrityClass, seeded) is None
    assert [(label_of(store, f).status, label_of(store, f).class_id) for f in faces] == decided


BAD_NEW_NAMES = ["", "   ", "x" * 201, "../etc", "a/b", "..", "\u202eevil"]


@pytest.mark.parametrize("name", BAD_NEW_NAMES + ["taken", "TAKEN", "ＴＡＫＥＮ", "  Taken  "])
def test_bad_or_taken_names_in_rename_and_split_are_refused_and_change_nothing(store, name):
    faces = make_faces(store, 1, 2)
    source, _ = add_class(store, "Source", "ann", seed_face_ids=faces)
    add_class(store, "Taken", "ann")
    before = store_state(store)
    taken = name.strip().casefold() in ("taken", "ｔａｋｅｎ")
    with pytest.raises(ValidationError, match="already exists" if taken else "class name"):
        rename_class(store, source, name, "bob")
    with pytest.raises(ValidationError, match="already exists" if taken else "class name"):
        split_class(store, source, faces[:1], "bob", new_name=name)
    assert store_state(store) == before
    # renaming a class to its own name in another case is no clash with itself
    rename_class(store, source, "SOURCE", "bob")
    with store() as s:
        assert s.get(CelebrityClass, source).name == "SOURCE"


UNKNOWN = 424242


@pytest.mark.parametrize("operation", [
    lambda store, known, faces: rename_class(store, UNKNOWN, "New name", "bob"),
    lambda store, known, faces: merge_classes(store, UNKNOWN, known, "bob"),
    lambda store, known, faces: merge_classes(store, known, UNKNOWN, "bob"),
    lambda store, known, faces: split_class(store, UNKNOWN, faces[:1], "bob", new_name="New name"),
    lambda store, known, faces: split_class(store, known, faces[:1], "bob", target_id=UNKNOWN),
    lambda store, known, faces: retire_class(store, UNKNOWN, "bob"),
    lambda store, known, faces: set_class_status(store, UNKNOWN, "proposed", "bob"),
    lambda store, known, faces: set_class_attributes(store, UNKNOWN, "bob", gender="female"),
    lambda store, known, faces: clear_class_attributes(store, UNKNOWN, "bob", ["gender"]),
], ids=["rename", "merge-source", "merge-target", "split-source", "split-target", "retire", "status", "attributes",
        "clear-attributes"])
def test_class_operations_on_an_unknown_class_are_not_found_and_change_nothing(store, operation):
    faces = make_faces(store, 1, 2)
    known, _ = add_class(store, "Known", "ann", seed_face_ids=faces)
    before = store_state(store)
    with pytest.raises(NotFoundError, match=f"no celebrity class with id {UNKNOWN}"):
        operation(store, known, faces)
    assert store_state(store) == before


def test_a_class_added_after_an_undone_one_gets_a_new_id_and_a_clean_history(store):
    """Undoing "add class" deletes the row; the next class must not inherit its id, or the new
    class's history would show the undone one's events and an earlier export's index."""
    add_class(store, "Alpha", "ann")
    beta, _ = add_class(store, "Beta", "ann")
    undo_last(store, "ann")
    gamma, _ = add_class(store, "Gamma", "ann")
    assert gamma > beta
    assert [h.operation for h in history(store, f"class:{gamma}")] == ["add_class"]


def test_approving_a_face_turned_down_takes_the_prediction_and_never_a_retired_class(store):
    """Approve without a class confirms the face's class; a face rejected (or marked unknown) has none
    left, so approving it confirms the model's prediction. A retired class takes no new labels, also
    when approve only implies it: refused, naming the face, nothing written."""
    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "Approve Person", "ann")
    record_predictions(store, [Prediction(f, a, 0.7, [(a, 0.7)]) for f in faces], "v1")
    reject_faces(store, [faces[0]], "ann")
    mark_unknown(store, [faces[1]], "ann")
    approve_faces(store, faces, "bob")
    assert [(label_of(store, f).status, label_of(store, f).class_id) for f in faces] == [("approved", a)] * 2
    reject_faces(store, faces, "bob")
    retire_class(store, a, "ann")
    events = len(recent_events(store))
    with pytest.raises(ValidationError, match=f"face {faces[0]}: class 'Approve Person' is retired.*relabel it"):
        approve_faces(store, faces, "bob")
    assert [label_of(store, f).status for f in faces] == ["rejected"] * 2 and len(recent_events(store)) == events


@pytest.mark.parametrize("name", ["ß" * 110, "ﬀ" * 120, "ﷺ" * 12])
def test_a_name_that_grows_when_folded_is_refused_clearly(store, name):
    """Names are compared case- and compatibility-folded ("ß" is "ss"): a name within the limit whose
    folded form is not is refused by the check, not by the database (PostgreSQL's varchar(200))."""
    with pytest.raises(ValidationError, match="once case and compatibility forms are folded"):
        add_class(store, name, "ann")
    for attribute, value in (("gender", "İ" * 64), ("ethnicity", "İ" * 200)):
        c, _ = add_class(store, f"Attr {attribute}", "ann")
        with pytest.raises(ValidationError, match=f"{attribute} is longer than"):
            set_class_attributes(store, c, "ann", **{attribute: value})


def test_a_person_an_editor_turned_down_on_a_track_is_no_identity_tag(store):
    """Experts voting's identity expert names the people in a GIF: a track's prediction counts while no
    editor decided its faces; once one is rejected (or relabelled), the faces speak for themselves."""
    from labeling.auto_tagging import read_inputs

    faces = make_faces(store, 1, 2)
    track = make_track(store, faces)
    agassi, _ = add_class(store, "Andre Agassi", "ann")
    graf, _ = add_class(store, "Steffi Graf", "ann")
    record_predictions(store, [Prediction(f, agassi, 0.9, [(agassi, 0.9)]) for f in faces], "v1")
    with session_scope(store) as s:  # the track's own prediction, as a refresh writes it beside its faces'
        s.get(Track, track).predicted_class_id, s.get(Track, track).model_version = agassi, "v1"
        media = s.get(Track, track).media_id
    assert read_inputs(store).identity[media] == ["andre agassi"]
    reject_faces(store, faces, "ann")
    assert read_inputs(store).identity[media] == []
    relabel_faces(store, faces[:1], graf, "ann")
    assert read_inputs(store).identity[media] == ["steffi graf"]
