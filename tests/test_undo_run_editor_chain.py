"""After every undo, a label left undecided names the editor of the prediction run whose guess it shows, on SQLite
and PostgreSQL, with runs under different editors (tests that run every prediction as "model" cannot tell them apart).

Run R1 guesses, an editor decides the face, run R2 refreshes only the prediction beside the decision. Undoing the
decision leaves R2's guess under R2's editor (labeling/audit.py `Superseded`); undoing R2 then gives R1's prediction
back, and with it R1's editor (`_restored_run_editors`): it kept R2's, crediting run2-bot with v1's guess. The same
holds for a seed that had a label before its class-add. A run undone before R2 is no part of what R2 replaced. The
refusal of a class-add pinned by a decision on a seed says only what its undo would do there (delete the label, or
keep a later run's guess in it)."""
from __future__ import annotations

import pytest
from conftest import make_faces

from labeling.audit import undo_event
from labeling.classes import add_class
from labeling.errors import UndoError
from labeling.face_labels import (Prediction, approve_faces, mark_unknown, record_predictions, reject_faces,
                                  relabel_faces)
from labeling.db import open_store
from test_undo_unlabeled_seeds import labels  # every decision and prediction column of every label


@pytest.fixture
def store(store_url):
    return open_store(store_url)
DECISIONS = {
    "approve": lambda store, face, other: approve_faces(store, [face], "bob"),
    "relabel": lambda store, face, other: relabel_faces(store, [face], other, "bob"),
    "reject": lambda store, face, other: reject_faces(store, [face], "bob"),
    "unknown": lambda store, face, other: mark_unknown(store, [face], "bob"),
}


def predictions(faces, class_id: int, confidence: float) -> list[Prediction]:
    return [Prediction(f, class_id, confidence, [(class_id, confidence)]) for f in faces]


def as_guess(row: dict, editor: str) -> dict:
    """A label as a prediction run leaves a face without a decision: its prediction, its class as the guess."""
    return {**row, "status": "predicted", "class_id": row["predicted_class_id"], "source": "model", "editor": editor}


@pytest.mark.parametrize("decide", list(DECISIONS))
def test_undoing_the_decision_then_the_later_run_gives_the_earlier_runs_guess_back_under_its_editor(store, decide):
    faces = make_faces(store, 1, 2)  # faces[0] decided between the runs, faces[1] never
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    record_predictions(store, predictions(faces, a, 0.6), "v1", editor="run1-bot")
    first = labels(store)
    decision = DECISIONS[decide](store, faces[0], b).event_id
    run2 = record_predictions(store, predictions(faces, b, 0.9), "v2", editor="run2-bot").event_id
    refreshed = labels(store)
    assert refreshed[faces[0]]["editor"] == "bob" and refreshed[faces[1]]["editor"] == "run2-bot"

    undo_event(store, decision, "bob")
    assert labels(store) == {faces[0]: as_guess(refreshed[faces[0]], "run2-bot"), faces[1]: refreshed[faces[1]]}

    undo_event(store, run2, "bob")  # kept run2-bot over v1's guess before
    assert labels(store) == first
    assert first[faces[0]]["editor"] == "run1-bot" and first[faces[0]]["model_version"] == "v1"


def test_each_undone_run_gives_back_the_guess_and_editor_of_the_run_before_it(store):
    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    c, _ = add_class(store, "C", "ann")
    record_predictions(store, predictions(faces, a, 0.5), "v1", editor="bot1")
    first = labels(store)
    approved = approve_faces(store, faces, "bob").event_id
    run2 = record_predictions(store, predictions(faces, b, 0.6), "v2", editor="bot2").event_id
    second = labels(store)
    run3 = record_predictions(store, predictions(faces, c, 0.7), "v3", editor="bot3").event_id
    third = labels(store)

    undo_event(store, approved, "bob")
    assert labels(store) == {faces[0]: as_guess(third[faces[0]], "bot3")}
    undo_event(store, run3, "bob")
    assert labels(store) == {faces[0]: as_guess(second[faces[0]], "bot2")}
    undo_event(store, run2, "bob")
    assert labels(store) == first


def test_a_run_undone_before_the_later_run_is_not_the_one_whose_guess_comes_back(store):
    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    c, _ = add_class(store, "C", "ann")
    record_predictions(store, predictions(faces, a, 0.5), "v0", editor="bot0")
    first = labels(store)
    run1 = record_predictions(store, predictions(faces, b, 0.6), "v1", editor="bot1").event_id
    undo_event(store, run1, "ann")  # the label is bot0's guess again
    assert labels(store) == first
    approved = approve_faces(store, faces, "bob").event_id
    run2 = record_predictions(store, predictions(faces, c, 0.7), "v2", editor="bot2").event_id
    refreshed = labels(store)

    undo_event(store, approved, "bob")
    assert labels(store) == {faces[0]: as_guess(refreshed[faces[0]], "bot2")}
    undo_event(store, run2, "bob")
    assert labels(store) == first


def test_a_seed_with_a_label_before_gets_the_earlier_runs_guess_back_under_its_editor(store):
    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    record_predictions(store, predictions(faces, a, 0.6), "v1", editor="run1-bot")
    first = labels(store)
    _, added = add_class(store, "Seeded", "alice", seed_face_ids=faces)
    run2 = record_predictions(store, predictions(faces, b, 0.9), "v2", editor="run2-bot").event_id
    refreshed = labels(store)

    undo_event(store, added.event_id, "alice")
    assert labels(store) == {faces[0]: as_guess(refreshed[faces[0]], "run2-bot")}
    undo_event(store, run2, "alice")
    assert labels(store) == first


def test_a_seed_no_run_predicted_is_said_to_be_deleted_only(store):
    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    _, added = add_class(store, "Seeded", "alice", seed_face_ids=faces)
    relabeled = relabel_faces(store, faces, a, "bob").event_id
    kept = labels(store)
    with pytest.raises(UndoError) as refused:
        undo_event(store, added.event_id, "alice")
    message = str(refused.value)
    assert (f"first {relabeled} (relabel_faces) by bob" in message
            and f"it wrote into face {faces[0]}'s label, which operation {added.event_id} created, and undoing "
                f"{added.event_id} would delete that label with what was written into it; undo those first" in message)
    assert "prediction run" not in message and labels(store) == kept


def test_a_runs_refusal_over_seeds_an_earlier_run_predicted_says_it_would_put_that_prediction_back(store):
    faces = make_faces(store, 1, 2)  # both seeds unlabeled before the class-add; run1 predicts faces[0] only
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    _, added = add_class(store, "Seeded", "alice", seed_face_ids=faces)
    record_predictions(store, predictions(faces[:1], a, 0.5), "v1", editor="run1-bot")
    run2 = record_predictions(store, predictions(faces, b, 0.9), "v2", editor="run2-bot").event_id
    undo_event(store, added.event_id, "alice")
    kept = labels(store)
    with pytest.raises(UndoError) as refused:
        undo_event(store, run2, "alice")
    # it said "leave those labels undecided with no prediction", though faces[0]'s would get run1's back
    assert (f"undoing operation {run2} would leave 1 of those labels undecided with no prediction and put back "
            f"the earlier run's prediction in 1 of those labels, which the undone operation {added.event_id} left "
            "to this run, and an undo cannot be undone" in str(refused.value))
    assert labels(store) == kept


def test_a_runs_refusal_over_seeds_only_an_earlier_run_predicted_does_not_say_no_prediction(store):
    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    _, added = add_class(store, "Seeded", "alice", seed_face_ids=faces)
    record_predictions(store, predictions(faces, a, 0.5), "v1", editor="run1-bot")
    run2 = record_predictions(store, predictions(faces, b, 0.9), "v2", editor="run2-bot").event_id
    undo_event(store, added.event_id, "alice")
    kept = labels(store)
    with pytest.raises(UndoError) as refused:
        undo_event(store, run2, "alice")
    message = str(refused.value)
    assert "no prediction" not in message
    assert (f"would put back the earlier run's prediction in those labels, which the undone operation "
            f"{added.event_id} left to this run" in message and labels(store) == kept)
