"""Undo and history, on SQLite and PostgreSQL.

1. Undoing "make class active" (after a merge, or after a retirement) is refused while a later operation
   still in force confirmed faces as that class: re-retired, the class would drop them from the export.
2. Ids beyond the id columns (2**40) are "not found", worded as any unknown id, on both stores.
3. `giflens history face:ID` / `media:ID` say what each operation did to that face or GIF, and the tag
   and approval summaries name the tags, the confidence set and the class taken.
"""
from __future__ import annotations

import pytest
from conftest import make_faces
from test_store_track_counts_and_history import predicted_track
from sqlalchemy import select
from typer.testing import CliRunner

from labeling.audit import undo_event
from labeling.classes import add_class, merge_classes, retire_class, set_class_status
from labeling.cli import app
from labeling.db import open_store
from labeling.errors import NotFoundError, UndoError
from labeling.face_labels import (Prediction, approve_faces, label_track, record_predictions, reject_faces,
                                  relabel_faces)
from labeling.schema import CelebrityClass, Face, FaceLabel
from labeling.tags import add_tags, set_tag_confidences, set_tag_status
from labeling.validation import check_id

runner = CliRunner()
BIG = 2**40


@pytest.fixture
def store(store_url):
    return open_store(store_url)


def label(store, face_id: int) -> tuple:
    with store() as s:
        row = s.scalar(select(FaceLabel).where(FaceLabel.face_id == face_id))
        return (row.status, row.class_id, row.editor) if row else None


def cls(store, class_id: int) -> tuple:
    with store() as s:
        row = s.get(CelebrityClass, class_id)
        return row.status, row.merged_into_id


# -- 1. undoing a re-activation under later decisions ---------------------------------------------------------
def test_undo_of_a_reactivation_after_a_merge_is_refused_while_later_decisions_use_the_class(store):
    faces = make_faces(store, 1, 3)
    four, _ = add_class(store, "Four", "A")
    five, _ = add_class(store, "Five", "A")
    relabel_faces(store, faces[:1], five, "A")
    merge_classes(store, five, four, "A")
    active = set_class_status(store, five, "active", "A")
    by_b = relabel_faces(store, [faces[1]], five, "B")
    with pytest.raises(UndoError) as refused:
        undo_event(store, active.event_id, "A")
    message = str(refused.value)
    assert message.startswith(f"operation {active.event_id} (set_class_status) cannot be undone: it would retire "
                              f"class 'Five' (id {five}) again, merged into 'Four', but 1 later operation(s) confirmed "
                              f"1 face(s) as it since, first {by_b.event_id} (relabel_faces) by B at "), message
    assert f"UTC (face {faces[1]}); a face confirmed as a retired class drops out of the export" in message
    assert cls(store, five) == ("active", None) and label(store, faces[1]) == ("relabeled", five, "B")
    # B's decision taken back: nothing depends on the re-activation any more, and the undo goes through
    undo_event(store, by_b.event_id, "B")
    undo_event(store, active.event_id, "A")
    assert cls(store, five) == ("retired", four)


def test_undo_of_a_reactivation_after_a_retirement_is_refused_but_older_decisions_and_predictions_do_not_pin_it(store):
    faces = make_faces(store, 1, 4)
    five, _ = add_class(store, "Five", "A")
    other, _ = add_class(store, "Other", "A")
    approve_faces(store, faces[:1], "A", five)  # decided before the retirement: it stays on the class
    retire_class(store, five, "A")
    active = set_class_status(store, five, "active", "A")
    record_predictions(store, [Prediction(faces[3], five, 0.9, [(five, 0.9)])], "v1")  # a guess, not a decision
    approved = approve_faces(store, [faces[2]], "B", five)
    with pytest.raises(UndoError, match=rf"first {approved.event_id} \(approve_faces\) by B at .* \(face {faces[2]}\)"):
        undo_event(store, active.event_id, "A")
    relabel_faces(store, [faces[2]], other, "B")  # moved off the class: no longer a decision on it
    undo_event(store, active.event_id, "A")
    assert cls(store, five) == ("retired", None)
    assert label(store, faces[0]) == ("approved", five, "A")


def test_a_decision_put_back_by_undoing_a_later_edit_pins_the_reactivation(store):
    faces = make_faces(store, 1, 1)
    four, _ = add_class(store, "Four", "A")
    five, _ = add_class(store, "Five", "A")
    merge_classes(store, five, four, "A")
    active = set_class_status(store, five, "active", "A")
    to_five = relabel_faces(store, faces, five, "B")
    to_four = relabel_faces(store, faces, four, "C")
    undo_event(store, to_four.event_id, "C")  # back on five: B's decision is the one in force
    with pytest.raises(UndoError, match=rf"first {to_five.event_id} \(relabel_faces\) by B"):
        undo_event(store, active.event_id, "A")


def test_when_an_undo_put_the_decision_back_the_refusal_does_not_ask_to_undo_it(store):
    """An undo cannot be undone: the advice is to relabel, as `_blocking_error` says for undos."""
    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "x")
    relabel_faces(store, faces, a, "x")
    rejected = reject_faces(store, faces, "x")
    retire_class(store, a, "x")
    active = set_class_status(store, a, "active", "x")
    put_back = undo_event(store, rejected.event_id, "x")
    with pytest.raises(UndoError) as refused:
        undo_event(store, active.event_id, "x")
    message = str(refused.value)
    assert f"first {put_back.event_id} (undo of operation {rejected.event_id})" in message, message
    assert message.endswith("drops out of the export: relabel the faces (an undo cannot be undone)"), message


# -- 2. ids beyond the id columns ---------------------------------------------------------------------------------
def test_ids_beyond_the_id_columns_are_not_found_on_every_store(store):
    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    cases = [(lambda: undo_event(store, BIG, "x"), f"no audit event {BIG}"),
             (lambda: relabel_faces(store, [BIG], a, "x"), f"no face with id {BIG}"),
             (lambda: relabel_faces(store, faces, BIG, "x"), f"no celebrity class with id {BIG}"),
             (lambda: merge_classes(store, BIG, a, "x"), f"no celebrity class with id {BIG}"),
             (lambda: add_tags(store, [BIG], ["smile"], "x"), f"no media with id {BIG}"),
             (lambda: label_track(store, -BIG, "approve", "x"), f"no face track with id {-BIG}"),
             (lambda: undo_event(store, 2**63, "x"), f"no audit event {2**63}")]
    for call, message in cases:
        with pytest.raises(NotFoundError) as refused:
            call()
        assert str(refused.value) == message
    # the same words as an unknown id inside the range
    with pytest.raises(NotFoundError, match="^no face with id 99999$"):
        relabel_faces(store, [99999], a, "x")
    with pytest.raises(NotFoundError, match="^no celebrity class with id 99999$"):
        merge_classes(store, 99999, a, "x")
    # an editor's expected version of a face no column can name is no error: it matches no row
    assert approve_faces(store, faces, "ann", a, expected_versions={faces[0]: 0, BIG: 3}).changed == 1
    assert check_id(2**31 - 1, "face") == 2**31 - 1


def test_undo_of_a_huge_id_is_one_line_from_the_cli(store, store_url, tmp_path):
    make_faces(store, 1, 1)
    result = runner.invoke(app, ["undo", "99999999999", "--data-dir", str(tmp_path / "data"),
                                 "--database-url", store_url, "--editor", "ann"])
    assert result.exit_code == 1 and result.stderr.splitlines() == ["error: no audit event 99999999999"], result.output


# -- 3. history and summaries say what changed ----------------------------------------------------------------------
def history(store_url: str, tmp_path, entity: str) -> list[str]:
    result = runner.invoke(app, ["history", entity, "--data-dir", str(tmp_path / "data"), "--database-url", store_url])
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_history_of_a_face_and_a_gif_shows_what_each_operation_changed(store, store_url, tmp_path):
    faces = make_faces(store, 1, 3)
    with store() as s:
        media = s.scalar(select(Face.media_id).where(Face.id == faces[0]))
    a, _ = add_class(store, "Alan", "ann")
    b, _ = add_class(store, "Bea", "ann")
    record_predictions(store, [Prediction(faces[0], a, 0.9, [(a, 0.9)]), Prediction(faces[1], a, 0.8, [(a, 0.8)]),
                               Prediction(faces[2], b, 0.7, [(b, 0.7)])], "v1")
    reject_faces(store, faces[:2], "B")
    both = approve_faces(store, faces[:2], "A")  # the model's class, the same for both: named
    assert both.summary == f"approved 2 face(s) as 'Alan' (class {a})"
    mixed = approve_faces(store, [faces[2]], "A", a)
    assert mixed.summary == f"approved 1 face(s) as 'Alan' (class {a})"
    lines = history(store_url, tmp_path, f"face:{faces[0]}")
    assert lines[1] == f"        face {faces[0]}: rejected -> approved 'Alan' (class {a})", lines
    assert lines[3] == f"        face {faces[0]}: predicted 'Alan' (class {a}) -> rejected", lines
    assert lines[5] == f"        face {faces[0]}: no label -> predicted 'Alan' (class {a})", lines
    assert lines[-1] == f"3 operation(s) of face:{faces[0]} shown, newest first"

    added = add_tags(store, [media], ["lol", "wow"], "A", confidence=0.5)
    assert added.summary == "add tag(s) 'lol', 'wow' to 1 media (2 changed)"
    confidence = set_tag_confidences(store, [(media, "wow", 0.1)], "B")
    assert confidence.summary == "set confidence of 1 tag(s) to 0.1: 'wow'"
    rejected = set_tag_status(store, [(media, "lol")], "rejected", "B")
    assert rejected.summary == "rejected 1 tag(s): 'lol'"  # an active tag, not a suggestion
    lines = history(store_url, tmp_path, f"media:{media}")
    assert lines[:5] == [lines[0], "        tag 'lol': active -> rejected", lines[2],
                         "        tag 'wow': active 0.5 -> active 0.1", lines[4]], lines
    assert lines[5:7] == ["        tag 'lol' added: active 0.5", "        tag 'wow' added: active 0.5"], lines
    assert "rejected 1 tag(s): 'lol'" in lines[0] and "set confidence of 1 tag(s) to 0.1: 'wow'" in lines[2]


def test_tag_summaries_name_the_tags_and_the_kind_of_rejection(store):
    faces = make_faces(store, 2, 1)
    with store() as s:
        media = sorted(s.scalars(select(Face.media_id).where(Face.id.in_(faces))))
    names = [f"t{i}" for i in range(7)]
    add_tags(store, media, names, "ann", status="suggested")
    many = set_tag_status(store, [(m, t) for m in media for t in names], "active", "bob")
    assert many.summary == "accepted 14 tag suggestion(s): 't0', 't1', 't2', 't3', 't4' and 2 more"
    add_tags(store, media[:1], ["x"], "ann", status="suggested")
    both = set_tag_status(store, [(media[0], "t0"), (media[0], "x")], "rejected", "bob")
    assert both.summary == "rejected 2 tag(s) (1 of them suggestions): 't0', 'x'"
    spread = set_tag_confidences(store, [(media[1], "t1", 0.2), (media[1], "t2", 0.9)], "bob")
    assert spread.summary == "set confidence of 2 tag(s) to 0.2..0.9: 't1', 't2'"


def test_a_track_approval_names_the_class_it_confirms(store):
    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "Alice", "ann")
    track_id = predicted_track(store, faces, a)
    assert label_track(store, track_id, "approve", "ann").summary == \
        f"approved track {track_id} (2 faces) as 'Alice' (class {a})"
