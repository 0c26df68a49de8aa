"""The Classes page and class operations:

- the Classes page's Rename, Attributes and Status forms check a press against the version their boxes were
  filled from: a press on stale boxes (after a refusal, which moved the page on to the version read
  meanwhile) is refused as a conflict naming who changed the class and the boxes are refilled, instead of
  writing the stale boxes over another editor's change; `set_class_attributes` checks the version before
  the values, so a typo does not hide the conflict;
- a merge or a split names the editor on the decided labels it moves only: a face only predicted keeps
  the model's word ("predicted as 'B'", not "predicted as 'B' by bob").
"""
from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from conftest import make_faces, open_app
from labeling.audit import undo_event
from labeling.classes import add_class, merge_classes, rename_class, set_class_attributes, split_class
from labeling.db import open_store
from labeling.errors import ConflictError
from labeling.face_labels import Prediction, approve_faces, record_predictions
from labeling.queries import classes_frame
from labeling.schema import FaceLabel
from test_app_pages import button, errors, go, messages, no_exception, sign_in

REFILLED = "Nothing was saved: the boxes were refilled with the class as it is now; check and press again."


# -- 1. the class forms write only what the editor was shown -------------------------------------------------
@pytest.fixture
def alpha(tmp_path, monkeypatch) -> tuple[AppTest, object, int]:
    """Ann's Classes page on a store with one class, Alpha (female, display name 'Alpha A.')."""
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'giflens.db'}"
    store = open_store(url)
    class_id, _ = add_class(store, "Alpha", "ed", display_name="Alpha A.", attributes={"gender": "female"})
    at = open_app(monkeypatch, data, url)
    sign_in(at, "ann")
    go(at, "classes")
    return at, store, class_id


def _row(store, class_id: int) -> dict:
    row = classes_frame(store).set_index("class_id").loc[class_id]
    return {c: None if pd.isna(row[c]) else row[c] for c in ("name", "display_name", "ethnicity", "birth_year",
                                                              "country", "updated_by")}


def _bob_changes(store, class_id: int) -> None:
    """Another editor (another browser, the CLI) sets the country and the display name meanwhile."""
    set_class_attributes(store, class_id, "bob", country="Chile")
    rename_class(store, class_id, "Alpha", "bob", display_name="Alpha (singer)")


def _refused_and_refilled(at: AppTest, class_id: int) -> None:
    no_exception(at)
    assert len(errors(at)) == 1 and errors(at)[0].startswith("Conflict: class") and "by bob" in errors(at)[0], errors(at)
    assert REFILLED in messages(at), messages(at)
    assert at.text_input(key=f"attr_country_{class_id}").value == "Chile"
    assert at.text_input(key=f"rename_display_{class_id}").value == "Alpha (singer)"


def test_a_second_save_of_attributes_after_a_conflict_keeps_the_other_editors_change(alpha):
    at, store, a = alpha
    _bob_changes(store, a)
    at.text_input(key=f"attr_ethnicity_{a}").input("Hispanic")
    button(at, "Save attributes").click().run()
    _refused_and_refilled(at, a)
    assert _row(store, a)["ethnicity"] is None
    button(at, "Save attributes").click().run()  # pressed again as told, on the refilled boxes
    no_exception(at)
    assert not errors(at), errors(at)
    assert _row(store, a)["country"] == "Chile"  # not wiped by the stale box
    at.text_input(key=f"attr_ethnicity_{a}").input("Hispanic")
    button(at, "Save attributes").click().run()
    assert not errors(at), errors(at)
    assert _row(store, a) == {"name": "Alpha", "display_name": "Alpha (singer)", "ethnicity": "hispanic",
                              "birth_year": None, "country": "Chile", "updated_by": "ann"}


def test_a_typo_does_not_hide_another_editors_change(alpha):
    at, store, a = alpha
    _bob_changes(store, a)
    at.text_input(key=f"attr_birth_year_{a}").input("19x0")
    button(at, "Save attributes").click().run()
    _refused_and_refilled(at, a)  # the conflict, not the typo
    at.text_input(key=f"attr_birth_year_{a}").input("1980")
    button(at, "Save attributes").click().run()
    assert not errors(at), errors(at)
    assert _row(store, a) == {"name": "Alpha", "display_name": "Alpha (singer)", "ethnicity": None,
                              "birth_year": 1980, "country": "Chile", "updated_by": "ann"}


def test_a_typo_refused_then_another_editors_change_is_refused_not_overwritten(alpha):
    at, store, a = alpha
    at.text_input(key=f"attr_birth_year_{a}").input("19x0")
    button(at, "Save attributes").click().run()
    assert errors(at) and errors(at)[0].startswith("Refused: birth_year"), errors(at)
    assert at.text_input(key=f"attr_birth_year_{a}").value == "19x0"  # kept to correct: the class did not change
    _bob_changes(store, a)  # while the editor corrects the typo
    at.text_input(key=f"attr_birth_year_{a}").input("1980")
    button(at, "Save attributes").click().run()
    _refused_and_refilled(at, a)
    assert _row(store, a)["birth_year"] is None and _row(store, a)["country"] == "Chile"


def test_a_second_rename_after_a_conflict_keeps_the_other_editors_display_name(alpha):
    at, store, a = alpha
    rename_class(store, a, "Alpha", "bob", display_name="Alpha (singer)")
    at.text_input(key=f"rename_name_{a}").input("Alpha Smith")
    button(at, "Rename").click().run()
    no_exception(at)
    assert errors(at) and errors(at)[0].startswith("Conflict: class") and "by bob" in errors(at)[0], errors(at)
    assert REFILLED in messages(at), messages(at)
    assert at.text_input(key=f"rename_name_{a}").value == "Alpha"
    assert at.text_input(key=f"rename_display_{a}").value == "Alpha (singer)"
    button(at, "Rename").click().run()
    assert _row(store, a)["display_name"] == "Alpha (singer)"
    at.text_input(key=f"rename_name_{a}").input("Alpha Smith")
    button(at, "Rename").click().run()
    assert not errors(at), errors(at)
    assert _row(store, a)["name"] == "Alpha Smith" and _row(store, a)["display_name"] == "Alpha (singer)"


def test_a_second_status_press_after_a_conflict_is_refused_too(alpha):
    at, store, a = alpha
    _bob_changes(store, a)
    at.selectbox(key=f"status_{a}").set_value("proposed")
    button(at, "Set status").click().run()
    no_exception(at)
    assert errors(at) and errors(at)[0].startswith("Conflict: class"), errors(at)
    assert REFILLED in messages(at), messages(at)
    assert at.selectbox(key=f"status_{a}").value == "active"


def test_set_class_attributes_checks_the_version_before_the_values(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    a, _ = add_class(store, "Alpha", "ann")
    set_class_attributes(store, a, "bob", country="Chile")
    with pytest.raises(ConflictError, match="by bob"):
        set_class_attributes(store, a, "ann", expected_version=1, birth_year="19x0")


# -- 2. a merge or a split names no editor on a face only predicted ---------------------------------------------
def _labels(store) -> dict[int, tuple]:
    with store() as s:
        return {l.face_id: (l.status, l.class_id, l.source, l.editor) for l in s.scalars(select(FaceLabel))}


@pytest.mark.parametrize("how", ["merge", "split"])
def test_moving_labels_names_the_editor_on_decided_labels_only(tmp_path, how):
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    faces = make_faces(store, 1, 3)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    record_predictions(store, [Prediction(f, a, 0.7, [(a, 0.7), (b, 0.2)]) for f in faces], "m1")
    approve_faces(store, faces[:1], "cat")
    before = _labels(store)
    if how == "merge":
        result = merge_classes(store, a, b, "bob")
    else:
        result = split_class(store, a, faces, "bob", target_id=b)[1]
    after = _labels(store)
    assert after[faces[0]] == ("approved", b, "editor", "bob")  # a decision moved: now bob's
    for f in faces[1:]:
        assert after[f] == ("predicted", b, "model", before[f][3])  # the model's guess, no editor's word
        assert after[f][3] != "bob"
    undo_event(store, result.event_id, "bob")
    assert _labels(store) == before
