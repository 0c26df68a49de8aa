"""A class named only further down a prediction's top list, and class names in a face's history, on SQLite
and PostgreSQL.

1. Undoing the creation of a class that a prediction run names second best is refused naming that run
   (id, operation, editor, UTC time: "undo operation 3 first"), and the class's history lists the run,
   also a run that took the class out of the labels' top lists (it names it in its old ones).
2. Several runs naming the class: the refusal names them newest first, the order to undo them in.
3. A run logged before runs concerned the classes of their top lists is still named: found through the
   faces whose labels name the class.
4. `giflens history face:N` names a class as it was called at each operation, and its name now beside it
   when it was renamed since: "'Carol' (class 3, now 'Caroline')".
"""
from __future__ import annotations

import re

import pytest
from conftest import make_faces
from typer.testing import CliRunner

from labeling import audit
from labeling.audit import run_operation, undo_event
from labeling.classes import add_class, rename_class
from labeling.cli import app
from labeling.db import open_store
from labeling.errors import UndoError
from labeling.face_labels import Prediction, approve_faces, record_predictions, relabel_faces

runner = CliRunner()
AT = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


@pytest.fixture
def store(store_url):
    return open_store(store_url)


def cli(store_url: str, tmp_path, *args: str):
    return runner.invoke(app, [*args, "--data-dir", str(tmp_path / "data"), "--database-url", store_url])


def history_ids(store_url: str, tmp_path, entity: str) -> list[int]:
    """The operation ids `giflens history ENTITY` lists, newest first."""
    result = cli(store_url, tmp_path, "history", entity)
    assert result.exit_code == 0, result.output
    return [int(m) for m in re.findall(r"^\s*(\d+)\s+\d{4}-", result.output, re.M)]


def test_undo_of_a_class_named_second_best_names_the_run_and_its_history_shows_it(store, store_url, tmp_path):
    faces = make_faces(store, 1, 2)
    alice, _ = add_class(store, "Alice", "ed")
    bob, added = add_class(store, "Bob", "ed")
    run = record_predictions(store, [Prediction(f, alice, 0.9, [(alice, 0.9), (bob, 0.1)]) for f in faces], "m1")
    result = cli(store_url, tmp_path, "undo", "--editor", "ed")
    assert result.exit_code == 1
    assert re.search(rf"operation {added.event_id} \(add_class\) cannot be undone: class 'Bob' \(id {bob}\) is named "
                     rf"by 2 face label\(s\) \(predictions of m1\), the face labels of operation\(s\) {run.event_id} "
                     rf"\(predict_faces\) by model at {AT}; undo operation {run.event_id} first, or retire the class "
                     "instead", " ".join(result.output.split())), result.output
    assert history_ids(store_url, tmp_path, "class:Bob") == [run.event_id, added.event_id]
    # a later run whose top lists no longer name Bob took him out of the labels: Bob's history shows it too
    rerun = record_predictions(store, [Prediction(f, alice, 0.8, [(alice, 0.8)]) for f in faces], "m2")
    assert history_ids(store_url, tmp_path, "class:Bob") == [rerun.event_id, run.event_id, added.event_id]
    with pytest.raises(UndoError, match=rf"operation\(s\) {rerun.event_id} \(predict_faces\) by model at {AT}, "
                                        rf"{run.event_id} \(predict_faces\) by model at {AT}; undo operations "
                                        rf"{rerun.event_id}, {run.event_id} first \(the newest first\)"):
        undo_event(store, added.event_id, "ed")
    for event in (rerun, run, added):  # what the refusal named, in its order, then the class itself
        undo_event(store, event.event_id, "ed")


def test_runs_naming_the_class_are_named_newest_first(store):
    faces = make_faces(store, 1, 3)
    alice, _ = add_class(store, "Alice", "ed")
    bob, added = add_class(store, "Bob", "ed")
    first = record_predictions(store, [Prediction(faces[0], alice, 0.9, [(alice, 0.9), (bob, 0.1)])], "m1")
    decided = relabel_faces(store, faces[1:2], bob, "ann")
    second = record_predictions(store, [Prediction(faces[2], alice, 0.7, [(alice, 0.7), (bob, 0.3)])], "m2")
    with pytest.raises(UndoError) as refused:
        undo_event(store, added.event_id, "ed")
    assert re.search(rf"the face labels of operation\(s\) {second.event_id} \(predict_faces\) by model at {AT}, "
                     rf"{decided.event_id} \(relabel_faces\) by ann at {AT}, {first.event_id} \(predict_faces\) by "
                     rf"model at {AT}; undo operations {second.event_id}, {decided.event_id}, {first.event_id} "
                     r"first \(the newest first\)", str(refused.value)), str(refused.value)


def predict_as_logged_before(store, predictions: list[Prediction], model_version: str) -> int:
    """A prediction run audited as giflens did before runs concerned every class of their top lists: the
    labels written, their GIFs and the best guesses concerned, no other class. Its event id."""
    with run_operation(store, "model", "predict_faces") as op:
        rows = op.load("face", [(p.face_id,) for p in predictions])
        op.update("face", {(p.face_id,): {
            "status": "predicted", "class_id": p.class_id, "source": "model", "editor": "model",
            "predicted_class_id": p.class_id, "predicted_confidence": p.confidence,
            "predicted_top": [[c, s] for c, s in p.top], "model_version": model_version, "predicted_at": op.now,
        } for p in predictions}, rows)
        op.concern_media_of([p.face_id for p in predictions])
        op.concern(*(f"class:{p.class_id}" for p in predictions))
        op.summary = f"predictions of {model_version}"
    return op.result.event_id


def test_a_run_logged_before_top_lists_were_concerned_is_still_named(store):
    faces = make_faces(store, 1, 2)
    alice, _ = add_class(store, "Alice", "ed")
    bob, added = add_class(store, "Bob", "ed")
    old_run = predict_as_logged_before(store, [Prediction(f, alice, 0.9, [(alice, 0.9), (bob, 0.1)])
                                               for f in faces], "m0")
    approve_faces(store, faces[:1], "ann")  # a later decision on one face: it did not write the prediction
    with pytest.raises(UndoError, match=rf"class 'Bob' \(id {bob}\) is named by 2 face label\(s\) \(predictions of "
                                        rf"m0\), the face labels of operation\(s\) {old_run} \(predict_faces\) by "
                                        rf"model at {AT}; undo operation {old_run} first"):
        undo_event(store, added.event_id, "ed")


def test_face_history_names_a_class_as_it_was_called_then(store, store_url, tmp_path):
    face = make_faces(store, 1, 1)[0]
    alice, _ = add_class(store, "Alice", "ed")
    carol, _ = add_class(store, "Carol", "ed")
    to_carol = relabel_faces(store, [face], carol, "ed")
    rename_class(store, carol, "Caroline", "ed")
    to_alice = relabel_faces(store, [face], alice, "ed")
    result = cli(store_url, tmp_path, "history", f"face:{face}")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[lines.index(next(x for x in lines if x.lstrip().startswith(f"{to_alice.event_id} "))) + 1].strip() == (
        f"face {face}: relabeled 'Caroline' (class {carol}) -> relabeled 'Alice' (class {alice})")  # renamed by then
    assert f"face {face}: no label -> relabeled 'Carol' (class {carol}, now 'Caroline')" in result.output
    assert to_carol.event_id < to_alice.event_id


def test_an_old_run_beside_a_found_relabel_is_named_too_and_editor_labels_are_counted_apart(store):
    """The relabel is found through the class it concerns, the older-style run only through the faces:
    naming the relabel alone ("undo operation 4 first") was a list claimed complete that was not."""
    faces = make_faces(store, 1, 2)
    alice, _ = add_class(store, "Alice", "ed")
    bob, added = add_class(store, "Bob", "ed")
    old_run = predict_as_logged_before(store, [Prediction(faces[0], alice, 0.9, [(alice, 0.9), (bob, 0.1)])], "m0")
    relabeled = relabel_faces(store, faces[1:], bob, "ann")
    with pytest.raises(UndoError) as refused:
        undo_event(store, added.event_id, "ed")
    assert re.search(rf"class 'Bob' \(id {bob}\) is named by 2 face label\(s\) \(1 editor label\(s\), 1 prediction\(s\) "
                     rf"of m0\), the face labels of operation\(s\) {relabeled.event_id} \(relabel_faces\) by ann at "
                     rf"{AT}, {old_run} \(predict_faces\) by model at {AT}; undo operations {relabeled.event_id}, "
                     rf"{old_run} first \(the newest first\), or retire the class instead$", str(refused.value)), \
        str(refused.value)
    for event_id in (relabeled.event_id, old_run, added.event_id):  # as told, then the class itself
        undo_event(store, event_id, "ed")


def test_a_writer_not_read_in_full_leaves_the_list_open(store, monkeypatch):
    """An older-style run that wrote more of the class's faces than were read (LABEL_WRITER_SAMPLE, 1 here)
    without naming the class in what was read may name it in the rest: the refusal says "and possibly more"
    and names no list to undo. Read in full (the default sample), it is known not to name the class."""
    faces = make_faces(store, 1, 3)
    alice, _ = add_class(store, "Alice", "ed")
    bob, added = add_class(store, "Bob", "ed")
    predict_as_logged_before(store, [Prediction(f, alice, 0.9, [(alice, 0.9)]) for f in faces[:2]], "m0")
    naming = predict_as_logged_before(store, [Prediction(faces[2], alice, 0.9, [(alice, 0.9), (bob, 0.1)])], "m0")
    relabeled = relabel_faces(store, faces[:2], bob, "ann")
    told = rf"undo operations {relabeled.event_id}, {naming} first \(the newest first\), or retire the class instead$"
    with pytest.raises(UndoError, match=told):
        undo_event(store, added.event_id, "ed")
    monkeypatch.setattr(audit, "LABEL_WRITER_SAMPLE", 1)
    with pytest.raises(UndoError, match=rf"operation\(s\) {relabeled.event_id} \(relabel_faces\) by ann at {AT}, "
                                        rf"{naming} \(predict_faces\) by model at {AT} and possibly more; undo the "
                                        "operations that wrote those first, or retire the class instead$"):
        undo_event(store, added.event_id, "ed")
