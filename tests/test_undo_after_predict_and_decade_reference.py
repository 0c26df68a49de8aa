"""An editor's merge, split or seeded class stays undoable after `giflens predict`: a prediction run rewrites only
the model's columns (the prediction, and an undecided label's guess), which pin nothing the editor decided; the
undo restores the decisions and leaves the newer predictions as the run wrote them. A later editor decision still
pins. That run can then no longer be undone (it would bring back the predictions the undone merge wrote); undone
first, the run and then the merge restore every prediction and decision as before the merge. Also: a birth-decade reference reads 1940, 1940s and 1940's as the audit's group "1940s" and refuses other
shapes; a merge into a class merged away meanwhile names who merged it, when and in which operation.

Real LFW photos, imported as GIPHY's training layout, and a real fitted classifier (`build_loop_store`, whose
embedding cache the session shares with test_recognition_loop.py)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import session_dir
from sqlalchemy import select

from explorer.bias_audit import audit_report, parse_reference
from labeling.audit import undo_event, undo_last
from labeling.classes import add_class, merge_classes, split_class
from labeling.db import open_store
from labeling.errors import UndoError, ValidationError
from labeling.face_labels import relabel_faces
from labeling.recognition import refresh_predictions
from labeling.schema import FaceLabel
from test_recognition_loop import FACE_MODEL, LoopStore, build_loop_store

PREDICTION = ("predicted_class_id", "predicted_confidence", "predicted_top", "model_version")
DECISION = ("status", "class_id", "source", "editor")


@pytest.fixture(scope="session")
def loop_data_dir(tmp_path_factory) -> Path:
    """The embedding cache test_recognition_loop.py fills (same folder: each photo is inferred once per session)."""
    return session_dir(tmp_path_factory, "giflens-recognition-data")


def predicted_loop(data_dir: Path, url: str) -> LoopStore:
    """Four people of six confirmed photos, two unlabeled photos of known people, predicted once."""
    loop = build_loop_store(data_dir, url, strangers=[], gifs=[])
    predict(loop)
    return loop


def predict(loop: LoopStore) -> int:
    return refresh_predictions(loop.store, FACE_MODEL, data_dir=loop.data_dir, editor="model").event_id


def labels(loop: LoopStore) -> dict[int, dict]:
    with loop.store() as s:
        return {r.face_id: {c: getattr(r, c) for c in (*DECISION, *PREDICTION)} for r in s.scalars(select(FaceLabel))}


def part(rows: dict[int, dict], columns: tuple[str, ...]) -> dict[int, tuple]:
    return {f: tuple(r[c] for c in columns) for f, r in rows.items()}


def decisions_back(before: dict[int, dict], refreshed: dict[int, dict]) -> dict[int, tuple]:
    """What an undo of an editor's operation leaves after a prediction run: the decisions as before the
    operation, and on undecided faces the guess the run wrote (the model's, not the editor's)."""
    return {f: part({f: (refreshed if before[f]["status"] == "predicted" else before)[f]}, DECISION)[f] for f in before}


@pytest.mark.slow
def test_a_merge_is_undone_after_a_prediction_run_which_keeps_its_newer_predictions(loop_data_dir, store_url):
    loop = predicted_loop(loop_data_dir, store_url)
    sharon, chavez, powell = (loop.classes[n] for n in ("Ariel Sharon", "Hugo Chavez", "Colin Powell"))
    unlabeled = loop.face("Ariel_Sharon_0007.jpg")
    before = labels(loop)
    assert before[unlabeled]["status"] == "predicted" and before[unlabeled]["class_id"] == sharon

    # the run undone first, then the merge: every prediction and decision exactly as before the merge
    merged = merge_classes(loop.store, sharon, chavez, "alice")
    run = predict(loop)
    assert run is not None
    undo_event(loop.store, run, "alice")
    undo_event(loop.store, merged.event_id, "alice")
    assert part(labels(loop), (*PREDICTION, *DECISION)) == part(before, (*PREDICTION, *DECISION))

    merged = merge_classes(loop.store, sharon, chavez, "alice")
    run = predict(loop)
    assert run is not None
    refreshed = labels(loop)

    undo_event(loop.store, merged.event_id, "alice")  # refused before: "1 later operation(s) ... (predict_faces)"
    after = labels(loop)
    # the decisions are back as they were before the merge: class, source, editor
    assert part(after, DECISION) == decisions_back(before, refreshed)
    # the predictions are the later run's, never the stale ones the merge replaced
    assert part(after, PREDICTION) == part(refreshed, PREDICTION)
    # the undecided face shows the newer guess (the target class: harmless, the next run may say otherwise)
    assert after[unlabeled]["class_id"] == after[unlabeled]["predicted_class_id"] == chavez

    # the run's undo would bring back the predictions the merge moved (a prediction naming Chavez beside
    # a top guess of Sharon, an undecided face guessed as Chavez by the old model): refused, nothing changed
    with pytest.raises(UndoError, match=rf"operation {run} \(predict_faces\) cannot be undone: \d+ face\(s\) it "
                                        rf"predicted, first face \d+, held the predictions written by alice at .* UTC "
                                        rf"in operation {merged.event_id} \(merge_classes\), which was undone since by "
                                        rf"alice at .* UTC in operation \d+ \(undo of operation {merged.event_id}\)"
                                        r".*run `giflens predict` again to refresh the predictions instead"):
        undo_event(loop.store, run, "alice")
    with pytest.raises(UndoError, match=rf"operation {run} \(predict_faces\) cannot be undone: .*predict` again"):
        undo_last(loop.store, "model")  # `giflens undo` by the run's editor, no number given
    assert labels(loop) == after

    # a later editor decision on a merged face still pins the merge
    again = merge_classes(loop.store, sharon, chavez, "alice")
    predict(loop)
    face = next(f for f, r in before.items() if r["class_id"] == sharon and r["status"] == "approved")
    relabeled = relabel_faces(loop.store, [face], powell, "bob")
    with pytest.raises(UndoError, match=rf"first {relabeled.event_id} \(relabel_faces\) by bob .*\(face {face}\)"):
        undo_event(loop.store, again.event_id, "alice")


@pytest.mark.slow
def test_a_split_and_a_seeded_class_after_a_prediction_run(loop_data_dir, tmp_path):
    loop = predicted_loop(loop_data_dir, f"sqlite:///{tmp_path / 'split.db'}")
    sharon, chavez = loop.classes["Ariel Sharon"], loop.classes["Hugo Chavez"]
    before = labels(loop)
    moved = sorted(f for f, r in before.items() if r["class_id"] == sharon and r["status"] == "approved")[:3]
    _, split = split_class(loop.store, sharon, moved, "alice", target_id=chavez)
    predict(loop)
    refreshed = labels(loop)
    undo_event(loop.store, split.event_id, "alice")
    after = labels(loop)
    assert part(after, DECISION) == decisions_back(before, refreshed)
    assert part(after, PREDICTION) == part(refreshed, PREDICTION)

    # a class the undo would delete while the newer predictions name it: refused, naming the run to undo first
    new_id, added = add_class(loop.store, "Sharon Look-alike", "alice", seed_face_ids=moved)
    run = predict(loop)
    with pytest.raises(UndoError, match=rf"'Sharon Look-alike' \(id {new_id}\) is named by .*undo operation {run} first"):
        undo_event(loop.store, added.event_id, "alice")
    undo_event(loop.store, run, "alice")
    undo_event(loop.store, added.event_id, "alice")
    assert part(labels(loop), DECISION) == part(after, DECISION)


def test_a_merge_into_a_class_merged_away_names_who_merged_it(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'classes.db'}")
    a, _ = add_class(store, "Al", "ann")
    b, _ = add_class(store, "Bo", "ann")
    c, _ = add_class(store, "Cy", "ann")
    first = merge_classes(store, b, c, "ann")
    with pytest.raises(ValidationError, match=rf"class 'Bo' is merged into 'Cy' by ann at .* UTC in operation "
                                              rf"{first.event_id} \(merge_classes\): merge into an active class"):
        merge_classes(store, a, b, "bob")


def test_a_decade_reference_reads_the_ways_a_decade_is_written():
    typed = {"1940": 1, "1950s": 1, "1960's": 1, "1970S": 1, "1980\u2019s": 1}
    assert parse_reference(typed, attribute="decade") == {f"{d}s": 0.2 for d in range(1940, 1990, 10)}


@pytest.mark.parametrize("typed, hint", [("1945", r" \(1945 falls in the 1940s\)"), ("forties", ""), ("40s", "")])
def test_a_decade_reference_of_another_shape_is_refused_with_the_shape_to_use(typed, hint):
    with pytest.raises(ValueError, match=rf"'{typed}' is not a birth decade{hint}: write a decade as 1940s"):
        parse_reference({typed: 1}, attribute="decade")


def test_a_reference_of_1940_is_the_1940s_group_not_one_absent_from_the_data():
    faces = pd.DataFrame({"face_id": [1, 2], "class": ["Al", "Bo"], "status": ["approved"] * 2,
                          "predicted": ["Al", "Bo"]})
    classes = pd.DataFrame({"class": ["Al", "Bo"], "birth_year": [1944, 1951]})
    reference = {"decade": parse_reference({"1940": 1, "1950": 1}, attribute="decade")}
    table = audit_report(faces, classes, reference=reference, attributes=["decade"]).table
    rows = table.set_index("group")
    assert rows.loc["1940s", "reference_share"] == rows.loc["1950s", "reference_share"] == 0.5
    assert "1940" not in rows.index and not table["flags"].str.contains("representation").any()
