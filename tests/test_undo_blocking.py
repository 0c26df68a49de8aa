"""Undo of an operation whose rows a later operation wrote into, on SQLite and PostgreSQL.

The sequence an editor met: `giflens import raw-dataset` (creates approved labels), `giflens predict`
(writes the model's prediction columns into those same label rows), `predict --undecided-only`,
`retrain`, then `undo <import>`. Undoing the import deletes the label rows it created, and with them
what the prediction wrote: so the prediction pins the import (undo it first), and an undo of an
earlier operation that did remove rows a later one wrote is named as such, never as a change made
"outside the audited operations"."""
from __future__ import annotations

import pytest
from conftest import make_faces
from sqlalchemy import func, select

from labeling import audit
from labeling.audit import run_operation, undo_event
from labeling.classes import add_class
from labeling.db import open_store
from labeling.errors import UndoError
from labeling.face_labels import Prediction, apply_decision, approve_faces, record_predictions, relabel_faces
from labeling.importers import ClassSpec, ImportSummary, _ensure_classes
from labeling.schema import AuditEvent, CelebrityClass, FaceLabel


@pytest.fixture
def store(store_url):
    return open_store(store_url)


def labels(store) -> dict[int, tuple]:
    with store() as s:
        return {r.face_id: (r.status, r.class_id, r.source, r.predicted_class_id, r.model_version)
                for r in s.scalars(select(FaceLabel))}


def n_events(store) -> int:
    with store() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent))


def undone_by(store, event_id: int) -> int | None:
    with store() as s:
        return s.get(AuditEvent, event_id).undone_by_id


def import_labels(store, faces_by_class: dict[str, list[int]], create_classes: bool) -> tuple[int, dict[str, int]]:
    """What `giflens import raw-dataset` writes, in one operation: the classes of labels.csv (created
    when `create_classes`, else found) and an approved label (source "import") per largest face."""
    summary = ImportSummary("raw dataset", "raw")
    with run_operation(store, "ann", "import_raw_dataset") as op:
        specs = [ClassSpec(name, None, f"labels.csv: line {i + 2}") for i, name in enumerate(faces_by_class)]
        ids, _ = _ensure_classes(op, specs, summary, create=create_classes)
        by_name = {name: ids[name.lower()] for name in faces_by_class}
        for name, faces in faces_by_class.items():
            apply_decision(op, faces, "approve", by_name[name], source="import")
    return op.result.event_id, by_name


def predictions(faces, class_id, confidence=0.8):
    return [Prediction(f, class_id, confidence, [(class_id, confidence)]) for f in faces]


def the_sequence(store, create_classes: bool):
    """Events: import (labels of faces[:4]), predict (all 8 faces), predict undecided, retrain's predict."""
    faces = make_faces(store, 2, 4)
    if not create_classes:
        add_class(store, "A", "ann")
        add_class(store, "B", "ann")
    imported, cls = import_labels(store, {"A": faces[:2], "B": faces[2:4]}, create_classes)
    predicted = record_predictions(store, predictions(faces, cls["A"]), "centroid-v1").event_id
    undecided = record_predictions(store, predictions(faces[4:], cls["B"], 0.6), "centroid-v2").event_id
    retrained = record_predictions(store, predictions(faces[4:], cls["A"], 0.7), "head-v3").event_id
    return faces, cls, (imported, predicted, undecided, retrained)


def test_undoing_an_import_is_refused_while_predictions_written_into_its_labels_stand(store):
    faces, cls, (imported, predicted, undecided, retrained) = the_sequence(store, create_classes=True)
    before, events = labels(store), n_events(store)
    assert before[faces[0]] == ("approved", cls["A"], "import", cls["A"], "centroid-v1")  # decision kept, prediction beside it
    with pytest.raises(UndoError) as refused:
        undo_event(store, imported, "ann")
    message = str(refused.value)
    assert message.startswith(f"operation {imported} (import_raw_dataset) cannot be undone: 1 later operation(s)")
    assert f"first {predicted} (predict_faces) by model" in message
    assert f"it wrote into face {faces[0]}'s label, which operation {imported} created" in message
    assert message.endswith("undo those first")
    assert labels(store) == before and n_events(store) == events and undone_by(store, imported) is None

    # newest first, every undo goes through and the store is back to where it was before the import
    undo_event(store, retrained, "ann")
    # an undecided face shows the guess the undo restored, not the one it took back (else undoing the
    # prediction before it found the face "changed since")
    assert {labels(store)[f] for f in faces[4:]} == {("predicted", cls["B"], "model", cls["B"], "centroid-v2")}
    for event_id in (undecided, predicted):
        undo_event(store, event_id, "ann")
    assert labels(store) == {f: ("approved", cls["A" if f in faces[:2] else "B"], "import", None, None) for f in faces[:4]}
    undo_event(store, imported, "ann")
    assert labels(store) == {}
    with store() as s:
        assert s.scalar(select(func.count()).select_from(CelebrityClass)) == 0
    assert all(undone_by(store, e) is not None for e in (imported, predicted, undecided, retrained))


def test_an_import_undone_under_a_prediction_is_named_when_undoing_the_prediction(store, monkeypatch):
    """A store where the import was undone while the prediction stood (what giflens allowed before):
    the prediction can no longer be restored, and the refusal names the undo that removed its rows."""
    faces, _, (imported, predicted, undecided, retrained) = the_sequence(store, create_classes=False)
    with monkeypatch.context() as patched:
        patched.setattr(audit, "_blocking_events", lambda session, event: [])  # the old check saw nothing
        undone = undo_event(store, imported, "ann").event_id
    assert set(labels(store)) == set(faces[4:])
    undo_event(store, retrained, "ann")  # they wrote other rows only
    undo_event(store, undecided, "ann")
    before, events = labels(store), n_events(store)
    with pytest.raises(UndoError) as refused:
        undo_event(store, predicted, "ann")
    message = str(refused.value)
    assert message.startswith(f"operation {predicted} (predict_faces) cannot be undone: face {faces[0]} was removed "
                              f"since by operation {undone} (undo of the earlier operation {imported}) by ann")
    assert "an undo cannot be undone" in message and "outside the audited operations" not in message
    assert labels(store) == before and n_events(store) == events and undone_by(store, predicted) is None


def test_a_refresh_beside_a_decision_on_an_existing_label_pins_nothing_either_way(store):
    """The documented rule still holds: a model refresh of another column of a label that existed
    before the decision does not pin the decision, in either order of undo."""
    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    record_predictions(store, predictions(faces, a, 0.6), "v1")
    for undo_decision_first in (True, False):
        decided = relabel_faces(store, faces[:1], b, "bob").event_id
        refreshed = record_predictions(store, predictions(faces, b), "v2").event_id
        order = (decided, refreshed) if undo_decision_first else (refreshed, decided)
        for event_id in order:
            undo_event(store, event_id, "bob")
        status, class_id, source, predicted_class, model = labels(store)[faces[0]]
        assert (status, source, predicted_class, model) == ("predicted", "model", a, "v1")


def test_a_decision_that_created_the_label_is_pinned_by_a_later_refresh(store):
    """A face approved before any prediction: its label is the decision's row, so undoing the decision
    would delete the prediction written into it since; undoing the prediction first frees it."""
    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    decided = relabel_faces(store, faces, a, "bob").event_id
    refreshed = record_predictions(store, predictions(faces, a), "v1").event_id
    with pytest.raises(UndoError, match=rf"first {refreshed} \(predict_faces\) by model .* it wrote into face "
                                        rf"{faces[0]}'s label, which operation {decided} created"):
        undo_event(store, decided, "bob")
    assert labels(store)[faces[0]] == ("relabeled", a, "editor", a, "v1")
    undo_event(store, refreshed, "bob")
    undo_event(store, decided, "bob")
    assert labels(store) == {}


def test_later_writes_of_the_same_columns_still_block_with_the_entity_named(store):
    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    record_predictions(store, predictions(faces, a), "v1")
    relabeled = relabel_faces(store, faces, a, "bob").event_id
    approved = approve_faces(store, faces, "ann", class_id=a).event_id
    with pytest.raises(UndoError, match=rf"first {approved} \(approve_faces\) by ann at .* \(face {faces[0]}\); "
                                        "undo those first"):
        undo_event(store, relabeled, "bob")
