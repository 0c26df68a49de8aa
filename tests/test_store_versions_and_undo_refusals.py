"""Store defects, each reproduced on SQLite and PostgreSQL (and failing without its fix):
rows re-created at version 1, undos that put labels on retired classes or leave a label's class and guess
apart, GIF and class histories missing operations, a relabel racing a merge (PostgreSQL), names that hide
invisible characters, no-op renames, double merges, undo of a class that later operations labeled with,
and expected versions keyed as text."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest
from conftest import make_faces, n_events
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from labeling.audit import history, undo_event, undo_last
from labeling.classes import add_class, merge_classes, rename_class, retire_class, split_class
from labeling.db import make_engine, normalise_url, open_store
from labeling.errors import ConflictError, UndoError, ValidationError
from labeling.face_labels import (Prediction, approve_faces, record_predictions, reject_faces, relabel_faces)
from labeling.schema import AuditEvent, CelebrityClass, Face, FaceLabel, MediaTag, Tag
from labeling.tags import add_tags, remove_tags, set_tag_confidences, set_tag_status


@pytest.fixture
def store(store_url):
    return open_store(store_url)


def label(store, face_id: int) -> tuple | None:
    """(status, class id, predicted class id, version) of a face's label, None without one."""
    with store() as s:
        row = s.scalars(select(FaceLabel).where(FaceLabel.face_id == face_id)).first()
        return None if row is None else (row.status, row.class_id, row.predicted_class_id, row.version)


def media_of(store, face_id: int) -> int:
    with store() as s:
        return s.scalar(select(Face.media_id).where(Face.id == face_id))


def class_row(store, class_id: int) -> CelebrityClass | None:
    with store() as s:
        return s.get(CelebrityClass, class_id)


def tag_row(store, media_id: int, tag: str) -> MediaTag | None:
    with store() as s:
        return s.scalars(select(MediaTag).join(Tag, Tag.id == MediaTag.tag_id)
                         .where(MediaTag.media_id == media_id, Tag.name == tag)).first()


def operations_in(entries) -> list[str]:
    return [e.operation for e in entries]


# -- 1. a row deleted and created again continues its versions -------------------------------------
def test_a_label_created_again_after_an_undo_does_not_start_again_at_version_1(store):
    """xavier saw ann's label at version 1; ann undid it, bob decided the face anew: xavier's stale edit
    must be a conflict, not a silent overwrite of bob's decision."""
    face = make_faces(store, 1, 1)[0]
    alice, _ = add_class(store, "Alice", "ed")
    bob_class, _ = add_class(store, "Bob", "ed")
    carol, _ = add_class(store, "Carol", "ed")
    approve_faces(store, [face], "ann", class_id=alice)
    seen = label(store, face)[3]
    undo_last(store, "ann")
    assert label(store, face) is None
    relabel_faces(store, [face], bob_class, "bob")
    assert label(store, face)[3] > seen
    with pytest.raises(ConflictError, match=rf"face {face} was changed by bob .*based on version {seen}"):
        relabel_faces(store, [face], carol, "xavier", expected_versions={face: seen})
    assert label(store, face)[:2] == ("relabeled", bob_class)


def test_a_tag_brought_back_by_an_undo_does_not_start_again_at_version_1(store):
    media = media_of(store, make_faces(store, 1, 1)[0])
    add_tags(store, [media], ["smile"], "ann", confidence=0.5)
    seen = tag_row(store, media, "smile").version
    set_tag_confidences(store, [(media, "smile", 0.9)], "bob")
    removed = remove_tags(store, [media], ["smile"], "bob")
    undo_event(store, removed.event_id, "bob")
    back = tag_row(store, media, "smile")
    assert (back.confidence, back.version) == (0.9, 3)  # above version 2, the last one recorded
    with pytest.raises(ConflictError, match=rf"tag 'smile' .* based on version {seen}"):
        set_tag_confidences(store, [(media, "smile", 0.2)], "xavier", expected_versions={(media, back.tag_id): seen})
    assert tag_row(store, media, "smile").confidence == 0.9


# -- 2. undo never puts a decision back on a retired class -----------------------------------------
def test_undo_refuses_to_put_a_label_back_on_a_class_merged_away_since(store):
    faces = make_faces(store, 1, 2)
    brad, _ = add_class(store, "Brad Pitt", "ed")
    angelina, _ = add_class(store, "Angelina", "ed")
    dup, _ = add_class(store, "Brad_Pitt dup", "ed")
    approve_faces(store, faces, "ann", class_id=brad)
    moved = relabel_faces(store, [faces[0]], angelina, "ann")
    merged = merge_classes(store, brad, dup, "bob")
    events = n_events(store)
    with pytest.raises(UndoError, match=rf"operation {moved.event_id} \(relabel_faces\) cannot be undone: it would put "
                                        rf"face {faces[0]} back on class 'Brad Pitt', which was merged into "
                                        rf"'Brad_Pitt dup' by bob .* in operation {merged.event_id} \(merge_classes\)"):
        undo_event(store, moved.event_id, "ann")
    assert label(store, faces[0])[:2] == ("relabeled", angelina) and n_events(store) == events
    undo_event(store, merged.event_id, "bob")  # the merge undone, the relabel can be
    undo_event(store, moved.event_id, "ann")
    assert label(store, faces[0])[:2] == ("approved", brad)


def test_undo_refuses_to_put_a_label_back_on_a_retired_class(store):
    face = make_faces(store, 1, 1)[0]
    old, _ = add_class(store, "Old", "ed")
    new, _ = add_class(store, "New", "ed")
    approve_faces(store, [face], "ann", class_id=old)
    moved = relabel_faces(store, [face], new, "ann")
    retired = retire_class(store, old, "bob")
    with pytest.raises(UndoError, match=rf"back on class 'Old', which was retired by bob .* in operation "
                                        rf"{retired.event_id} \(set_class_status\)"):
        undo_event(store, moved.event_id, "ann")
    assert label(store, face)[:2] == ("relabeled", new)


# -- 3. a GIF's and a class's history list every operation on them -------------------------------
def test_a_gifs_history_lists_merges_splits_predictions_and_undos(store):
    faces = make_faces(store, 1, 2)
    media = media_of(store, faces[0])
    alice, _ = add_class(store, "Alice", "ed")
    bob, _ = add_class(store, "Bob", "ed")
    approve_faces(store, [faces[0]], "ann", class_id=alice)
    record_predictions(store, [Prediction(faces[1], alice, 0.9, [(alice, 0.9)])], "m1")
    merge_classes(store, alice, bob, "ed")
    _, split = split_class(store, bob, [faces[0]], "ed", new_name="Dana")
    undone = undo_event(store, split.event_id, "ed")
    assert operations_in(history(store, f"media:{media}")) == [
        "undo", "split_class", "merge_classes", "predict_faces", "approve_faces"]
    assert operations_in(history(store, f"class:{bob}"))[:3] == ["undo", "split_class", "merge_classes"]
    assert history(store, f"class:{bob}")[0].event_id == undone.event_id
    assert "predict_faces" in operations_in(history(store, f"class:{alice}"))


# -- 4. PostgreSQL: a relabel racing a merge waits for it ---------------------------------------
def _lock_waiters(monitor) -> int:
    with monitor.connect() as conn:
        return conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND wait_event_type = 'Lock'"))


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the point is which kind came out
        return exc


def race(url: str, paused: Callable[[sessionmaker[Session]], Any], other: Callable[[], Any]) -> tuple[Any, Any]:
    """(outcome of paused, outcome of other). `paused` runs on its own engine and stops right after its
    first SELECT ... FOR UPDATE of face labels until `other` waits for a lock or finishes; `other` starts
    only once `paused` stopped there. So the interleaving never depends on timing: without a fix, a
    deadlock (or a stale read) is certain, and with it the waits resolve."""
    engine, monitor = make_engine(url), create_engine(normalise_url(url))
    stopped, other_done = threading.Event(), threading.Event()

    def pause(conn, cursor, statement, parameters, context, executemany) -> None:
        if not stopped.is_set() and "FOR UPDATE" in statement and "FROM face_label" in statement:
            stopped.set()
            while not (other_done.is_set() or _lock_waiters(monitor)):
                time.sleep(0.005)

    event.listen(engine, "after_cursor_execute", pause)
    outcomes: dict[str, Any] = {}

    def run_paused() -> None:
        try:
            outcomes["paused"] = _outcome(lambda: paused(sessionmaker(engine, expire_on_commit=False)))
        finally:
            stopped.set()

    def run_other() -> None:
        try:
            outcomes["other"] = _outcome(other)
        finally:
            other_done.set()

    try:
        first = threading.Thread(target=run_paused)
        first.start()
        stopped.wait()
        second = threading.Thread(target=run_other)
        second.start()
        second.join()
        first.join()
    finally:
        engine.dispose()
        monitor.dispose()
    return outcomes["paused"], outcomes["other"]



@pytest.mark.postgres
def test_a_relabel_racing_a_merge_onto_its_source_class_is_refused(pg_url):
    """The merge has locked both classes and moved the source's labels; before it commits, ann relabels
    another face to the source class. Without a lock on the class she would read it active and her label
    would land on a class retired a moment later. The merge pauses right after locking its labels until
    ann either finishes or waits for a lock, so the outcome never depends on timing."""
    store = open_store(pg_url)
    faces = make_faces(store, 2, 1)
    alice, _ = add_class(store, "Alice", "ed")
    bob, _ = add_class(store, "Bob", "ed")
    carl, _ = add_class(store, "Carl", "ed")
    approve_faces(store, [faces[0]], "ed", class_id=alice)
    approve_faces(store, [faces[1]], "ed", class_id=carl)
    merged, relabeled = race(pg_url, lambda factory: merge_classes(factory, alice, bob, "bob"),
                             lambda: relabel_faces(store, [faces[1]], alice, "ann"))
    outcomes = {"merge": merged, "ann": relabeled}
    assert not isinstance(outcomes["merge"], Exception), outcomes["merge"]
    assert isinstance(outcomes["ann"], ValidationError) and "is retired" in str(outcomes["ann"]), outcomes["ann"]
    assert label(store, faces[1])[:2] == ("approved", carl)
    assert label(store, faces[0])[:2] == ("approved", bob)


# -- 5. an undecided label's class follows its restored guess --------------------------------------
def test_undoing_a_prediction_run_moves_an_undecided_labels_class_back_with_its_guess(store):
    face = make_faces(store, 1, 1)[0]
    alice, _ = add_class(store, "Alice", "ed")
    carol, _ = add_class(store, "Carol", "ed")
    record_predictions(store, [Prediction(face, alice, 0.9, [(alice, 0.9)])], "m1")
    approved = approve_faces(store, [face], "ann")
    second = record_predictions(store, [Prediction(face, carol, 0.8, [(carol, 0.8)])], "m2")
    undo_event(store, approved.event_id, "ann")
    assert label(store, face)[:3] == ("predicted", carol, carol)
    undo_event(store, second.event_id, "ann")
    assert label(store, face)[:3] == ("predicted", alice, alice)


# -- 6. names that hide invisible characters -------------------------------------------------------
@pytest.mark.parametrize("twin", ["Alice\u2800", "Alice\u3164", "Ali\u034fce", "Alice\ufe00", "Alice\ufe0e",
                                  "Alice\U000E0100", "Alice\u115f", "Alice\ufe0f", "Alice\u200d", "Ali\u200dce"])
def test_a_class_name_hiding_an_invisible_character_is_refused(store, twin):
    add_class(store, "Alice", "ann")
    events = n_events(store)
    with pytest.raises(ValidationError, match=r"^class name .* contains invisible characters"):
        add_class(store, twin, "bob")
    assert n_events(store) == events


@pytest.mark.parametrize("name", ["❤️ Fan Club", "Pride 🏳️\u200d🌈", "The 👨\u200d👩\u200d👧 Family", "Keycap 1️⃣",
                                  "👩🏽\u200d💻 Coder", "ශ්\u200dරී Lanka"])
def test_emoji_sequences_and_joined_scripts_are_still_names(store, name):
    class_id, _ = add_class(store, name, "ann")
    assert class_row(store, class_id).name == name


@pytest.mark.parametrize("twin", ["smile\u200d", "smile\ufe0f", "smile\u2800", "smi\u034fle"])
def test_a_tag_hiding_an_invisible_character_is_refused(store, twin):
    faces = make_faces(store, 1, 1)
    media = media_of(store, faces[0])
    add_tags(store, [media], ["smile"], "ann")
    events = n_events(store)
    with pytest.raises(ValidationError, match=r"^tag .* contains invisible characters"):
        add_tags(store, [media], [twin], "bob")
    assert n_events(store) == events


# -- 7. a rename that changes nothing writes nothing ---------------------------------------------
def test_renaming_a_class_to_its_own_name_writes_nothing(store):
    alice, _ = add_class(store, "Alice", "ed", display_name="Ali")
    events, version = n_events(store), class_row(store, alice).version
    for same in ("Alice", "  Alice "):
        result = rename_class(store, alice, same, "bob")
        assert (result.event_id, result.changed) == (None, 0) and "nothing changed" in result.summary
        result = rename_class(store, alice, same, "bob", display_name="Ali")
        assert result.event_id is None
    assert (n_events(store), class_row(store, alice).version) == (events, version)
    # only what changes is written (and so undone): the display name alone here
    shown = rename_class(store, alice, "Alice", "bob", display_name="Al")
    with store() as s:
        after = s.get(AuditEvent, shown.event_id).after[f"class:{alice}"]
    assert set(after) - {"version", "updated_at"} == {"display_name"}
    assert class_row(store, alice).version == version + 1


# -- 8. a class merged away cannot be merged again --------------------------------------------------
def test_a_class_already_merged_cannot_be_merged_elsewhere(store):
    alice, _ = add_class(store, "Alice", "ed")
    bob, _ = add_class(store, "Bob", "ed")
    carl, _ = add_class(store, "Carl", "ed")
    merged = merge_classes(store, alice, bob, "ed")
    events = n_events(store)
    with pytest.raises(ValidationError, match=rf"class 'Alice' is already merged into 'Bob' by ed .* in operation "
                                              rf"{merged.event_id} \(merge_classes\)"):
        merge_classes(store, alice, carl, "ann")
    row = class_row(store, alice)
    assert (row.status, row.merged_into_id, n_events(store)) == ("retired", bob, events)


# -- 9. undo of a class's creation while later operations labeled faces with it -------------------------
def test_undo_of_a_class_later_operations_labeled_with_is_refused_naming_them(store):
    face = make_faces(store, 1, 1)[0]
    yann, _ = add_class(store, "Yann", "ed")
    xena, created = add_class(store, "Xena", "ann")
    to_xena = relabel_faces(store, [face], xena, "ann")
    to_yann = relabel_faces(store, [face], yann, "bob")
    with pytest.raises(UndoError, match=rf"class 'Xena' \(id {xena}\) is named by the face labels of operation\(s\) "
                                        rf"{to_yann.event_id} \(relabel_faces\) by bob at .+ UTC, {to_xena.event_id} "
                                        r"\(relabel_faces\) by ann at .+ UTC"):
        undo_event(store, created.event_id, "ann")
    assert class_row(store, xena) is not None
    undo_event(store, to_yann.event_id, "bob")  # what the refusal named, newest first
    assert label(store, face)[:2] == ("relabeled", xena)
    undo_event(store, to_xena.event_id, "ann")
    undo_event(store, created.event_id, "ann")
    assert class_row(store, xena) is None and label(store, face) is None


# -- low: expected versions keyed as text; accepting a rejected tag --------------------------------------
def test_expected_versions_keyed_as_text_are_checked(store):
    face = make_faces(store, 1, 1)[0]
    alice, _ = add_class(store, "Alice", "ed")
    approve_faces(store, [face], "bob", class_id=alice)
    with pytest.raises(ConflictError, match=rf"face {face} was changed by bob"):
        reject_faces(store, [face], "carl", expected_versions={str(face): 0})
    with pytest.raises(ValidationError, match="face id must be a whole number"):
        reject_faces(store, [face], "carl", expected_versions={"twelve": 0})
    assert label(store, face)[:2] == ("approved", alice)


def test_accepting_a_rejected_tag_is_refused_like_setting_its_confidence(store):
    faces = make_faces(store, 1, 1)
    media = media_of(store, faces[0])
    add_tags(store, [media], ["nod"], "model-run", confidence=0.5, source="experts_voting", status="suggested")
    set_tag_status(store, [(media, "nod")], "rejected", "ann")
    events = n_events(store)
    for status in ("active", "suggested"):
        with pytest.raises(ValidationError, match=r"rejected \(by ann\).*does not undo a rejection"):
            set_tag_status(store, [(media, "nod")], status, "bob")
    assert (tag_row(store, media, "nod").status, n_events(store)) == ("rejected", events)
    add_tags(store, [media], ["nod"], "bob")  # the explicit way back
    assert tag_row(store, media, "nod").status == "active"
