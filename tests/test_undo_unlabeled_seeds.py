"""A class seeded with faces that had no label yet stays undoable after a prediction run, on SQLite and PostgreSQL.

Adding the class creates those faces' labels; the next `giflens predict` writes its predictions into them. That
run pinned the class-add ("it wrote into face 1's label, which operation 2 created"), though it pins a seed whose
label existed before, and the README promises a seeded class stays undoable after predict. The undo now goes
through: the editor's decision is taken back and each such label stays as the run's undecided guess (what the run
writes into a face without a decision), every prediction column as the run wrote it. A run naming the new class
still refuses the undo, naming the run; a later decision on a seed still pins; the run itself can no longer be
undone once the class-add was undone over it (its labels would be left with no prediction). A label created by a
single decision or an import stays pinned by a later run (tests/test_undo_blocking.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_faces, session_dir
from sqlalchemy import func, select

from labeling.audit import undo_event
from labeling.classes import add_class, merge_classes
from labeling.db import open_store
from labeling.errors import UndoError
from labeling.face_labels import Prediction, record_predictions, relabel_faces
from labeling.recognition import refresh_predictions
from labeling.schema import AuditEvent, CelebrityClass, FaceLabel
from test_recognition_loop import FACE_MODEL, build_loop_store

PREDICTION = ("predicted_class_id", "predicted_confidence", "predicted_top", "model_version", "predicted_at")
DECISION = ("status", "class_id", "source", "editor")


@pytest.fixture
def store(store_url):
    return open_store(store_url)


def labels(store) -> dict[int, dict]:
    with store() as s:
        return {r.face_id: {c: getattr(r, c) for c in (*DECISION, *PREDICTION)} for r in s.scalars(select(FaceLabel))}


def part(rows: dict[int, dict], columns: tuple[str, ...]) -> dict[int, tuple]:
    return {f: tuple(r[c] for c in columns) for f, r in rows.items()}


def class_ids(store) -> set[int]:
    with store() as s:
        return set(s.scalars(select(CelebrityClass.id)))


def n_events(store) -> int:
    with store() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent))


def predictions(faces, class_id: int, confidence: float = 0.8) -> list[Prediction]:
    return [Prediction(f, class_id, confidence, [(class_id, confidence)]) for f in faces]


def as_guess(row: dict, editor: str) -> dict:
    """A label as a prediction run leaves a face without a decision: the prediction, and its class as the guess."""
    return {**row, "status": "predicted", "class_id": row["predicted_class_id"], "source": "model", "editor": editor}


def test_undoing_a_class_seeded_with_unlabeled_faces_keeps_the_runs_predictions(store):
    faces = make_faces(store, 2, 3)
    a, _ = add_class(store, "A", "ann")
    record_predictions(store, predictions(faces[:2], a, 0.6), "v1", editor="model")  # faces[0] had a label, [2:4] none
    before = labels(store)
    seeded, added = add_class(store, "Seeded", "alice", seed_face_ids=[faces[0], faces[2], faces[3]])
    run = record_predictions(store, predictions(faces, a), "v2", editor="predictor").event_id
    refreshed = labels(store)
    assert part(refreshed, DECISION)[faces[2]] == ("relabeled", seeded, "editor", "alice")

    undo_event(store, added.event_id, "alice")  # refused before: "it wrote into face ...'s label, which ... created"
    after = labels(store)
    # the seeds without a label before are the run's undecided guesses, every prediction column the run's
    assert after[faces[2]] == as_guess(refreshed[faces[2]], "predictor")
    assert after[faces[3]] == as_guess(refreshed[faces[3]], "predictor")
    # ... as the run wrote a face it found without any label, field for field
    assert part(after, (*DECISION, *PREDICTION))[faces[2]] == part(refreshed, (*DECISION, *PREDICTION))[faces[4]]
    # the seed with a label before: undecided again, the newer prediction kept, and its guess the newer run's, editor
    # and all (it was the older run's guess; restored as it was, two seeds the same run predicted named different runs)
    assert before[faces[0]]["editor"] == "model" and before[faces[0]]["status"] == "predicted"
    assert after[faces[0]] == as_guess(refreshed[faces[0]], "predictor")
    # the faces the class-add did not touch: as the run left them; the class is gone
    assert {f: after[f] for f in faces if f not in (faces[0], faces[2], faces[3])} == \
        {f: refreshed[f] for f in faces if f not in (faces[0], faces[2], faces[3])}
    assert set(after) == set(faces) and seeded not in class_ids(store)

    # the run's undo would leave the two seeds' labels undecided with no prediction at all (the seed labeled before
    # would get its earlier prediction back, as after a merge's undo): refused, nothing changed
    events = n_events(store)
    with pytest.raises(UndoError, match=rf"operation {run} \(predict_faces\) cannot be undone: 2 face\(s\) it "
                                        rf"predicted, first face {faces[2]}, held labels created by alice at .* UTC "
                                        rf"in operation {added.event_id} \(add_class\), which was undone since by "
                                        rf"alice at .* UTC in operation \d+ \(undo of operation {added.event_id}\) "
                                        r"keeping them as this run's undecided guesses; .*no prediction, and an undo "
                                        r"cannot be undone; run `giflens predict` again"):
        undo_event(store, run, "alice")
    assert labels(store) == after and n_events(store) == events


def test_a_seed_the_run_did_not_predict_is_removed_with_the_class(store):
    faces = make_faces(store, 1, 3)
    a, _ = add_class(store, "A", "ann")
    seeded, added = add_class(store, "Seeded", "alice", seed_face_ids=faces[:2])
    record_predictions(store, predictions(faces[1:], a), "v1")  # faces[0]'s label holds no prediction
    refreshed = labels(store)
    undo_event(store, added.event_id, "alice")
    after = labels(store)
    assert set(after) == {faces[1], faces[2]} and seeded not in class_ids(store)
    assert after[faces[1]] == as_guess(refreshed[faces[1]], "model") and after[faces[2]] == refreshed[faces[2]]


def test_a_run_naming_the_new_class_still_refuses_the_undo_and_both_undone_restore_everything(store):
    faces = make_faces(store, 1, 3)
    a, _ = add_class(store, "A", "ann")
    before = labels(store)
    seeded, added = add_class(store, "Seeded", "alice", seed_face_ids=faces[:2])
    run = record_predictions(store, predictions(faces, seeded), "v1").event_id
    refreshed, events = labels(store), n_events(store)
    with pytest.raises(UndoError, match=rf"'Seeded' \(id {seeded}\) is named by .*undo operation {run} first"):
        undo_event(store, added.event_id, "alice")
    assert labels(store) == refreshed and n_events(store) == events and seeded in class_ids(store)
    undo_event(store, run, "alice")
    undo_event(store, added.event_id, "alice")
    assert labels(store) == before == {} and class_ids(store) == {a}


def test_a_later_decision_on_an_unlabeled_seed_still_pins_the_class_add(store):
    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "A", "ann")
    _, added = add_class(store, "Seeded", "alice", seed_face_ids=faces)
    record_predictions(store, predictions(faces, a), "v1")
    relabeled = relabel_faces(store, faces[:1], a, "bob").event_id
    kept = labels(store)
    with pytest.raises(UndoError, match=rf"first {relabeled} \(relabel_faces\) by bob .*face {faces[0]}'s label, "
                                        rf"which operation {added.event_id} created, and undoing {added.event_id} "
                                        r"would keep only a later prediction run's guess in that label, dropping "
                                        r"what was written into it; undo those first"):
        undo_event(store, added.event_id, "alice")
    assert labels(store) == kept


def test_each_seed_is_left_as_the_guess_of_the_newest_run_that_predicted_it(store):
    faces = make_faces(store, 1, 4)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    record_predictions(store, predictions(faces[:1], a, 0.5), "v0", editor="bot0")  # faces[0]: a guess before
    seeded, added = add_class(store, "Seeded", "alice", seed_face_ids=faces[:3])  # faces[1], faces[2]: no label
    record_predictions(store, predictions(faces, a, 0.6), "v1", editor="bot1")
    record_predictions(store, predictions([faces[0], faces[2]], b, 0.7), "v2", editor="bot2")
    refreshed = labels(store)
    assert part(refreshed, ("model_version",)) == {faces[0]: ("v2",), faces[1]: ("v1",), faces[2]: ("v2",),
                                                  faces[3]: ("v1",)}

    undo_event(store, added.event_id, "alice")
    after = labels(store)
    # each seed: the prediction it holds, and the guess and editor of the run that wrote it, whether it had a label
    assert part(after, (*DECISION, "predicted_class_id", "model_version")) == {
        faces[0]: ("predicted", b, "model", "bot2", b, "v2"),
        faces[1]: ("predicted", a, "model", "bot1", a, "v1"),
        faces[2]: ("predicted", b, "model", "bot2", b, "v2"),
        faces[3]: ("predicted", a, "model", "bot1", a, "v1")}
    assert {f: part(after, PREDICTION)[f] for f in faces} == {f: part(refreshed, PREDICTION)[f] for f in faces}
    assert seeded not in class_ids(store)


def test_a_merge_moving_a_seeds_prediction_after_the_run_does_not_pin_the_class_add(store):
    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    seeded, added = add_class(store, "Seeded", "alice", seed_face_ids=faces[:1])  # faces[0]: no label before
    record_predictions(store, predictions(faces, a, 0.6), "v1", editor="bot1")
    merge_classes(store, a, b, "ann")  # moves the seed's prediction only: its decision stays the class-add's
    merged = labels(store)
    assert part(merged, ("status", "class_id", "predicted_class_id"))[faces[0]] == ("relabeled", seeded, b)

    undo_event(store, added.event_id, "alice")  # refused before: "... would delete that label ..."
    after = labels(store)
    assert after[faces[0]] == as_guess(merged[faces[0]], "bot1") and after[faces[0]]["class_id"] == b
    assert after[faces[1]] == merged[faces[1]] and seeded not in class_ids(store)


@pytest.fixture(scope="session")
def loop_data_dir(tmp_path_factory) -> Path:
    """The embedding cache test_recognition_loop.py fills (same folder: each photo is inferred once per session)."""
    return session_dir(tmp_path_factory, "giflens-recognition-data")


@pytest.mark.slow
def test_a_class_seeded_with_an_unlabeled_photo_after_a_real_prediction_run(loop_data_dir, tmp_path):
    """`giflens predict` as it runs (a fitted classifier, `refresh_predictions`): the photo never predicted
    before is seeded into a class of its own, the run predicts it, and the class-add is undone."""
    loop = build_loop_store(loop_data_dir, f"sqlite:///{tmp_path / 'seeds.db'}", strangers=[], gifs=[])
    seed, other = loop.face("Ariel_Sharon_0007.jpg"), loop.face("Serena_Williams_0007.jpg")
    before = labels(loop.store)
    assert seed not in before and other not in before
    seeded, added = add_class(loop.store, "Sharon Double", "alice", seed_face_ids=[seed])
    refresh_predictions(loop.store, FACE_MODEL, data_dir=loop.data_dir, editor="model")
    refreshed = labels(loop.store)
    assert refreshed[seed]["model_version"] is not None and refreshed[seed]["predicted_class_id"] != seeded

    undo_event(loop.store, added.event_id, "alice")
    after = labels(loop.store)
    assert after[seed] == as_guess(refreshed[seed], "model")
    assert {f: r for f, r in after.items() if f != seed} == {f: r for f, r in refreshed.items() if f != seed}
    assert seeded not in class_ids(loop.store)

