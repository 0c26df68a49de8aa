"""App pages: the suspect queue, class boxes after an undo and empty views, driven headless with streamlit.testing.v1.AppTest on the
fixture store (real photos and a real GIF, see test_queries.build_fixture_store) and on a store right after
a first ingest of two photos; the second editor ("bob") works through the labeling operations the pages call:

- Review's suspect faces on a store with faces but no label say there is nothing to review, no traceback;
- an empty Review queue is an empty table (its tick column bool), not a StreamlitAPIException;
- the Classes page's rename and attribute boxes show what the store holds after an undo or another
  editor's change, so a save changes only what the editor typed;
- the suspect faces queue leaves out the faces an editor decided since the model's last prediction (a
  toggle brings them back) and shows each face's label status;
- Explore says why the GIFs view or the class centroids are empty, instead of "ingest GIFs or photos".
"""
from __future__ import annotations

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import open_app
from explorer.views import NOTHING_YET, decided_since_prediction, empty_view_message
from labeling.classes import merge_classes, rename_class, set_class_attributes
from labeling.face_labels import Prediction, mark_unknown, record_predictions, reject_faces, relabel_faces
from labeling.ingest import ingest
from labeling.queries import classes_frame, faces_frame
from models.settings import Settings
import test_app_decision_ticks_and_filters
from test_app_decision_ticks_and_filters import _explore, _tick
from test_app_pages import button, go, messages, no_exception, sign_in
from test_app_stale_class_choices import _label
from test_queries import FixtureStore, fixture_paths

fixture_store = test_app_decision_ticks_and_filters.fixture_store  # the fixtures: a store of its own per test (they write) ...
app = test_app_decision_ticks_and_filters.app  # ... and a fresh app session (no editor) on it
REVIEW = "explorer/pages/review.py"


@pytest.fixture
def photos_app(fixture_store, tmp_path, monkeypatch) -> AppTest:
    """The app on what an editor has after a first ingest: two photos, their faces, no class, no label,
    no GIF (the photos are the fixture store's, so the session's embedding cache serves them)."""
    url = f"sqlite:///{tmp_path / 'photos.db'}"
    photos = [p for p in fixture_paths(tmp_path / "scratch") if p.suffix == ".jpg"][::2]
    summary = ingest(photos, Settings(data_dir=fixture_store.data_dir, database_url=url), editor="ann")
    assert summary.faces >= 2
    return open_app(monkeypatch, fixture_store.data_dir, url)


def _info(at: AppTest) -> list[str]:
    return [m.value for m in at.info]


def _suspects(at: AppTest):
    """The suspect faces table as drawn (its key gets a generation suffix once its rows change)."""
    return next(e for e in at.data_editor if str(e.key).startswith("review_suspects")).value


# -- 1. suspect faces with no label at all --------------------------------------------------------------
def test_review_suspects_on_a_just_ingested_store_says_there_is_nothing_to_review(photos_app):
    photos_app.switch_page(REVIEW).run()
    no_exception(photos_app)
    assert any("Nothing to review yet" in m for m in _info(photos_app)), _info(photos_app)


def test_review_suspects_when_every_label_is_turned_down(app, fixture_store):
    faces = faces_frame(fixture_store.store)["face_id"].astype(int).tolist()
    reject_faces(fixture_store.store, faces[::2], "bob")
    mark_unknown(fixture_store.store, faces[1::2], "bob")
    app.switch_page(REVIEW).run()
    no_exception(app)
    assert any("Nothing to review yet" in m for m in _info(app)), _info(app)


# -- 2. an empty queue ---------------------------------------------------------------------------------------
def test_an_empty_suspects_queue_is_an_empty_table(app, fixture_store):
    classes = fixture_store.classes
    merge_classes(fixture_store.store, classes["Ariel Sharon"], classes["Serena Williams"], "bob")  # one class left
    app.switch_page(REVIEW).run()
    no_exception(app)
    assert _suspects(app).empty
    assert any(c.value.startswith("0 suspect faces") for c in app.caption)


def test_merging_look_alikes_on_review_leaves_no_exception(app, fixture_store):
    sign_in(app, "ann")
    app.switch_page(REVIEW).run()
    app.checkbox(key="review_merge_same_Ariel Sharon_Serena Williams").check().run()
    button(app, "Merge Ariel Sharon into Serena Williams").click().run()
    no_exception(app)
    assert any(m.startswith("Done: merge class 'Ariel Sharon'") for m in messages(app)), messages(app)
    assert _suspects(app).empty


# -- 3. the Classes forms after an undo or another editor's change ----------------------------------------------
ATTRS = ("gender", "ethnicity", "birth_year", "country")


def _attr_boxes(at: AppTest, class_id: int) -> dict[str, str]:
    return {a: at.text_input(key=f"attr_{a}_{class_id}").value for a in ATTRS}


def _catalog(fx: FixtureStore, class_id: int) -> dict:
    row = classes_frame(fx.store).set_index("class_id").loc[class_id]
    return {"name": row["name"], "birth_year": None if pd.isna(row["birth_year"]) else int(row["birth_year"]),
            "country": row["country"]}


def _classes_page(at: AppTest, class_id: int) -> AppTest:
    sign_in(at, "ann")
    go(at, "classes")
    at.selectbox(key="class_selected").set_value(class_id).run()
    return at


def test_attribute_boxes_show_the_store_after_an_undo(app, fixture_store):
    ariel = fixture_store.classes["Ariel Sharon"]
    _classes_page(app, ariel)
    app.text_input(key=f"attr_birth_year_{ariel}").input("1928")
    button(app, "Save attributes").click().run()
    button(app, "Undo last").click().run()
    no_exception(app)
    assert _catalog(fixture_store, ariel)["birth_year"] is None
    assert _attr_boxes(app, ariel) == {"gender": "male", "ethnicity": "", "birth_year": "", "country": "Israel"}
    # the editor changes the country only: the undone birth year is not written back
    app.text_input(key=f"attr_country_{ariel}").input("Israel (State)")
    button(app, "Save attributes").click().run()
    no_exception(app)
    assert _catalog(fixture_store, ariel) == {"name": "Ariel Sharon", "birth_year": None, "country": "Israel (State)"}


def test_rename_box_shows_the_name_after_an_undo(app, fixture_store):
    ariel = fixture_store.classes["Ariel Sharon"]
    _classes_page(app, ariel)
    app.text_input(key=f"rename_name_{ariel}").input("Ariel Sharon (PM)")
    button(app, "Rename").click().run()
    button(app, "Undo last").click().run()
    no_exception(app)
    assert _catalog(fixture_store, ariel)["name"] == "Ariel Sharon"
    assert app.text_input(key=f"rename_name_{ariel}").value == "Ariel Sharon"


def test_boxes_show_another_editors_change_after_a_rerun(app, fixture_store):
    serena = fixture_store.classes["Serena Williams"]
    _classes_page(app, serena)
    set_class_attributes(fixture_store.store, serena, "bob", gender="female", birth_year=1981, country="USA")
    rename_class(fixture_store.store, serena, "Serena J. Williams", "bob", display_name="Serena")
    app.run()  # any rerun (a click elsewhere): the page reads bob's version
    assert _attr_boxes(app, serena) == {"gender": "female", "ethnicity": "", "birth_year": "1981", "country": "USA"}
    assert app.text_input(key=f"rename_name_{serena}").value == "Serena J. Williams"
    assert app.text_input(key=f"rename_display_{serena}").value == "Serena"
    app.text_input(key=f"attr_ethnicity_{serena}").input("African American")
    button(app, "Save attributes").click().run()
    no_exception(app)
    assert _catalog(fixture_store, serena) == {"name": "Serena J. Williams", "birth_year": 1981, "country": "USA"}


# -- 4. the suspect faces queue shrinks as editors decide --------------------------------------------------------
def test_decided_faces_leave_the_suspects_queue_until_a_new_prediction(app, fixture_store):
    face = fixture_store.gif_faces[0]  # predicted Serena Williams (0.55)
    sign_in(app, "ann")
    app.switch_page(REVIEW).run()
    app.slider(key="review_min_conf").set_value(0.6).run()  # the GIF's faces (0.55) are suspects
    queue = _suspects(app)
    assert face in queue["id"].tolist()
    assert queue.set_index("id").loc[face, "status"] == "predicted"
    _tick(app, "review_suspects", [face])
    app.button(key="review_suspects_bulk_approve").click().run()
    no_exception(app)
    assert _label(fixture_store, face)[0] == "approved"
    assert face not in _suspects(app)["id"].tolist()  # done: it left the queue
    assert any("decided face(s) left out" in c.value for c in app.caption)
    app.toggle(key="review_suspects_decided").set_value(True).run()  # on request, with its status
    queue = _suspects(app)
    assert queue.set_index("id").loc[face, "status"] == "approved"
    app.toggle(key="review_suspects_decided").set_value(False).run()
    # a prediction after the decision: the new model's word on it is worth a look again
    record_predictions(fixture_store.store, [Prediction(face, fixture_store.classes["Ariel Sharon"], 0.4, [])], "v2")
    app.run()
    assert _suspects(app).set_index("id").loc[face, "status"] == "approved"


def test_a_face_another_editor_relabelled_is_not_suspect_by_default(app, fixture_store):
    face = fixture_store.gif_faces[0]
    relabel_faces(fixture_store.store, [face], fixture_store.classes["Ariel Sharon"], "bob")
    assert face in decided_since_prediction(fixture_store.store)
    app.switch_page(REVIEW).run()
    no_exception(app)
    assert face not in _suspects(app)["id"].tolist()
    app.toggle(key="review_suspects_decided").set_value(True).run()
    row = _suspects(app).set_index("id").loc[face]
    assert row["status"] == "relabeled" and "model disagrees" in row["reasons"]


# -- 5. Explore: why a view is empty -------------------------------------------------------------------------------
def test_empty_view_messages_name_what_is_missing():
    assert empty_view_message("Faces", has_media=False, has_faces=False) == NOTHING_YET
    assert empty_view_message("GIFs", has_media=False, has_faces=False) == NOTHING_YET
    assert empty_view_message("Class centroids", has_media=False, has_faces=False) == NOTHING_YET
    assert "Faces view" in empty_view_message("GIFs", has_media=True, has_faces=True)
    assert "Classes page" in empty_view_message("Class centroids", has_media=True, has_faces=True)


def test_explore_says_why_gifs_and_centroids_are_empty_on_a_photos_store(photos_app):
    _explore(photos_app, "GIFs")
    assert _info(photos_app) == [empty_view_message("GIFs", has_media=True, has_faces=True)]
    photos_app.selectbox(key="explore_view").set_value("Class centroids").run()
    no_exception(photos_app)
    assert _info(photos_app) == [empty_view_message("Class centroids", has_media=True, has_faces=True)]


def test_an_undecided_suspects_caption_says_the_models_guess_as_the_table_does(app, fixture_store):
    """The open-set refusal read "27 · unlabeled" under the crop and "unknown (open set)" in the table."""
    face = fixture_store.gif_faces[0]
    record_predictions(fixture_store.store, [Prediction(face, None, 0.5, [])], "v2")  # turned down: no class
    app.switch_page(REVIEW).run()
    app.slider(key="review_min_conf").set_value(0.6).run()
    no_exception(app)
    assert _suspects(app).set_index("id").loc[face, "predicted"] == "unknown (open set)"
    captions = [c.value for c in app.caption]
    assert f"{face} · guess: unknown (open set)" in captions, captions
    assert f"{face} · unlabeled" not in captions
