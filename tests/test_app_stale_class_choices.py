"""App pages refuse class choices gone stale, driven headless with streamlit.testing.v1.AppTest on the
fixture store (real photos and a real GIF, see test_queries.build_fixture_store); the second editor
("bob") works through the same labeling operations the pages call:

- a relabel whose chosen class was retired or merged meanwhile is refused with what happened (Explore's
  point details and 2D bulk, Review's bulk and tracks), instead of going to the class Streamlit falls
  back to; a class renamed meanwhile stays chosen;
- the Classes page says so when another editor's operation moves the class being edited out of the
  list (the form pressed for it is not drawn, so its click is lost), and Merge with no other class
  is an info, not a KeyError;
- Tags' "Save confidences" says the table changed under the edits, instead of "No confidence was changed.";
- Explore's point details keep Approve, Reject and Mark unknown when no class is active;
- the Overview's undo names who already undid the operation picked.
"""
from __future__ import annotations

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from conftest import open_app
from labeling.audit import undo_event
from labeling.classes import add_class, merge_classes, rename_class, set_class_status
from labeling.db import open_store
from labeling.errors import utc_text
from labeling.queries import media_tags_frame, tracks_frame
from labeling.schema import AuditEvent, CelebrityClass, FaceLabel
from labeling.tags import add_tags, set_tag_confidences
import test_app_decision_ticks_and_filters
from test_app_decision_ticks_and_filters import _explore, _tick, lasso  # noqa: F401 (lasso: the fixture)
from test_app_pages import button, errors, go, no_exception, sign_in
from test_queries import GIF, FixtureStore

fixture_store = test_app_decision_ticks_and_filters.fixture_store  # the fixtures: a store of its own per test (they write) ...
app = test_app_decision_ticks_and_filters.app  # ... and a fresh app session (no editor) on it


def _label(fx: FixtureStore, face_id: int) -> tuple[str, int | None, str]:
    with fx.store() as s:
        row = s.scalars(select(FaceLabel).where(FaceLabel.face_id == face_id)).one()
        return row.status, row.class_id, row.editor


def _warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning]


def _gone(name: str, how: str) -> str:
    return f"'{name}' is no longer active ({how}); nothing was written: choose the class again"


# -- 1. a relabel goes to the class chosen, or nowhere ---------------------------------------------------
def test_explore_point_relabel_refuses_a_class_retired_after_it_was_chosen(app, fixture_store):
    face = fixture_store.gif_faces[0]
    delta, _ = add_class(fixture_store.store, "Delta Four", "bob")
    before = _label(fixture_store, face)
    sign_in(app, "ann")
    _explore(app)
    app.number_input(key="explore_point_id").set_value(face).run()
    box = f"explore_relabel_class_{face}"
    app.selectbox(key=box).set_value(delta).run()
    retired = set_class_status(fixture_store.store, delta, "retired", "bob")  # meanwhile
    app.button(key="explore_relabel").click().run()
    no_exception(app)
    assert errors(app) == [_gone("Delta Four", f"retired by bob in operation {retired.event_id}")]
    assert _label(fixture_store, face) == before
    # the box now shows the class Streamlit fell back to: a press relabels to that one, as shown
    shown = app.selectbox(key=box).value
    assert shown != delta
    app.button(key="explore_relabel").click().run()
    assert not errors(app), errors(app)
    assert _label(fixture_store, face) == ("relabeled", shown, "ann")


def test_explore_point_relabel_keeps_a_class_renamed_after_it_was_chosen(app, fixture_store):
    face = fixture_store.gif_faces[0]
    delta, _ = add_class(fixture_store.store, "Delta Four", "bob")
    sign_in(app, "ann")
    _explore(app)
    app.number_input(key="explore_point_id").set_value(face).run()
    app.selectbox(key=f"explore_relabel_class_{face}").set_value(delta).run()
    rename_class(fixture_store.store, delta, "Delta 4", "bob")  # meanwhile: its label in the box changes
    app.button(key="explore_relabel").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    assert _label(fixture_store, face) == ("relabeled", delta, "ann")


def test_explore_bulk_relabel_refuses_a_class_merged_after_it_was_chosen(app, fixture_store, lasso):  # noqa: F811
    faces = fixture_store.gif_faces[:2]
    delta, _ = add_class(fixture_store.store, "Delta Four", "bob")
    before = {f: _label(fixture_store, f) for f in faces}
    sign_in(app, "ann")
    _explore(app)
    lasso.extend(faces)
    app.run()
    app.selectbox(key="explore_bulk_class").set_value(delta).run()
    merged = merge_classes(fixture_store.store, delta, fixture_store.classes["Ariel Sharon"], "bob")
    button(app, f"Relabel {len(faces)}").click().run()
    no_exception(app)
    assert errors(app) == [_gone("Delta Four", f"merged into 'Ariel Sharon' by bob in operation {merged.event_id}")]
    assert {f: _label(fixture_store, f) for f in faces} == before


def test_review_relabels_refuse_a_class_retired_after_it_was_chosen(app, fixture_store):
    face = fixture_store.gif_faces[0]
    delta, _ = add_class(fixture_store.store, "Delta Four", "bob")
    echo, _ = add_class(fixture_store.store, "Echo Five", "bob")
    before = _label(fixture_store, face)
    sign_in(app, "ann")
    app.switch_page("explorer/pages/review.py").run()
    app.slider(key="review_min_conf").set_value(0.6).run()  # the GIF's faces (0.55) join the suspects
    _tick(app, "review_suspects", [face])
    app.selectbox(key="review_suspects_bulk_class").set_value(delta).run()
    tracks = tracks_frame(fixture_store.store)
    track = int(tracks.loc[tracks["media_kind"] == "gif", "track_id"].iloc[0])
    _tick(app, "review_tracks", [track])
    app.selectbox(key="review_tracks_class").set_value(echo).run()
    retired = set_class_status(fixture_store.store, delta, "retired", "bob")  # meanwhile
    app.button(key="review_suspects_bulk_relabel").click().run()
    no_exception(app)
    assert errors(app) == [_gone("Delta Four", f"retired by bob in operation {retired.event_id}")]
    assert app.selectbox(key="review_tracks_class").value == echo  # still offered: still chosen
    retired = set_class_status(fixture_store.store, echo, "retired", "bob")  # meanwhile
    app.button(key="review_tracks_relabel").click().run()
    no_exception(app)
    assert errors(app) == [_gone("Echo Five", f"retired by bob in operation {retired.event_id}")]
    assert _label(fixture_store, face) == before
    with fixture_store.store() as s:
        assert s.scalar(select(func.count()).select_from(FaceLabel)
                        .where(FaceLabel.class_id.in_([delta, echo]))) == 0


# -- 2. Classes: the class being edited moved out by another editor ---------------------------------------
def test_classes_page_says_when_another_editor_moves_the_edited_class_out(app, fixture_store):
    alpha, _ = add_class(fixture_store.store, "Alpha One", "ann")
    sign_in(app, "ann")
    go(app, "classes")
    app.selectbox(key="class_selected").set_value(alpha).run()
    merged = merge_classes(fixture_store.store, alpha, fixture_store.classes["Serena Williams"], "bob")
    app.text_input(key=f"attr_country_{alpha}").input("France")
    button(app, "Save attributes").click().run()
    no_exception(app)
    assert app.selectbox(key="class_selected").value is None  # no other class taken up unasked
    with fixture_store.store() as s:
        assert s.get(CelebrityClass, alpha).country is None  # nothing saved: the click was for a form not drawn
    assert _warnings(app) == [
        f"'Alpha One' left the classes shown: merged into 'Serena Williams' by bob in operation {merged.event_id} "
        f"(the status filter hides it). Nothing was saved for it; choose the class to edit above."]
    app.run()
    assert not _warnings(app)  # said once
    # the editor's own search leaving the class out is no news
    app.selectbox(key="class_selected").set_value(fixture_store.classes["Ariel Sharon"]).run()
    app.text_input(key="class_search").input("serena").run()
    no_exception(app)
    assert not _warnings(app) and app.selectbox(key="class_selected").value == fixture_store.classes["Serena Williams"]


def test_merge_with_no_other_class_is_an_info_not_an_error(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'solo.db'}"
    store = open_store(url)
    solo, _ = add_class(store, "Solo Person", "ann")
    gone, _ = add_class(store, "Gone Person", "ann")
    set_class_status(store, gone, "retired", "ann")  # a retired class takes no labels: no target either
    app = open_app(monkeypatch, tmp_path / "data", url)
    go(app, "classes")
    assert app.selectbox(key="class_selected").value == solo
    assert any("no other class to merge into" in i.value for i in app.info), [i.value for i in app.info]
    assert "Merge" not in [b.label for b in app.button]
    sign_in(app, "ann")
    go(app, "classes")
    no_exception(app)
    assert "Merge" not in [b.label for b in app.button]


# -- 3. Tags: the table changed between the edit and the press --------------------------------------------
@pytest.mark.parametrize("meanwhile", ["tag added", "confidence changed"])
def test_save_confidences_says_the_table_changed_under_the_edits(app, fixture_store, meanwhile):
    gif = fixture_store.media[GIF]
    sign_in(app, "ann")
    go(app, "tags")
    app.selectbox(key="tags_media").set_value(gif).run()
    table = app.data_editor(key=f"tag_editor_{gif}").value
    row = list(table["tag"]).index("nod")
    app.session_state[f"tag_editor_{gif}"] = {"edited_rows": {row: {"confidence": 0.42}}, "added_rows": [],
                                              "deleted_rows": []}
    if meanwhile == "tag added":
        bob = add_tags(fixture_store.store, [gif], ["alpha"], "bob", confidence=1.0)
    else:  # the other tag moves above or below "nod": an edit kept by row position would land on it
        other = next(t for t in table["tag"] if t != "nod")
        bob = set_tag_confidences(fixture_store.store, [(gif, other, 0.1)], "bob")
    before = media_tags_frame(fixture_store.store, media_id=gif).set_index("tag")[["confidence", "version"]]
    button(app, "Save confidences").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    with fixture_store.store() as s:
        at = utc_text(s.get(AuditEvent, bob.event_id).at)
    assert _warnings(app) == [f"The tag table changed since you edited it (operation {bob.event_id} by bob at {at}); "
                              "your edits were not saved — edit again."]
    after = media_tags_frame(fixture_store.store, media_id=gif).set_index("tag")[["confidence", "version"]]
    assert after.equals(before)
    # edited again on the table as it is now, the edit is saved
    table = app.data_editor(key=f"tag_editor_{gif}").value
    row = list(table["tag"]).index("nod")
    app.session_state[f"tag_editor_{gif}"] = {"edited_rows": {row: {"confidence": 0.42}}, "added_rows": [],
                                              "deleted_rows": []}
    button(app, "Save confidences").click().run()
    assert not errors(app), errors(app)
    now = media_tags_frame(fixture_store.store, media_id=gif).set_index("tag")
    assert now.loc["nod", "confidence"] == pytest.approx(0.42) and now.loc["nod", "editor"] == "ann"


# -- 4. Explore: no active class, still three decisions ----------------------------------------------------
def test_point_details_offer_decisions_without_an_active_class(app, fixture_store):
    for class_id in fixture_store.classes.values():
        set_class_status(fixture_store.store, class_id, "proposed", "bob")
    face = fixture_store.gif_faces[0]
    sign_in(app, "ann")
    _explore(app)
    app.number_input(key="explore_point_id").set_value(face).run()
    no_exception(app)
    keys = {b.key for b in app.button}
    assert {"explore_approve", "explore_reject", "explore_unknown"} <= keys and "explore_relabel" not in keys
    assert any(c.value.startswith("No active class to relabel to") for c in app.caption)
    app.button(key="explore_unknown").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    assert _label(fixture_store, face)[::2] == ("unknown", "ann")


# -- 5. Overview: the operation picked was undone by someone else meanwhile -----------------------------
@pytest.mark.parametrize("rerun_first", [False, True], ids=["press", "rerun-then-press"])
def test_overview_undo_names_who_already_undid_the_operation(app, fixture_store, rerun_first):
    _, added = add_class(fixture_store.store, "Undo Me", "bob")
    sign_in(app, "ann")
    go(app, "home")
    app.selectbox(key="overview_undo_event").set_value(added.event_id).run()
    undone = undo_event(fixture_store.store, added.event_id, "bob")  # meanwhile
    if rerun_first:  # any rerun before the press: the choice is still remembered
        app.run()
        assert not app.button(key="overview_undo").disabled
    button(app, "Undo this operation").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    assert f"operation #{added.event_id} was already undone by bob (#{undone.event_id})" in _warnings(app)
    with fixture_store.store() as s:
        assert s.scalar(select(func.max(AuditEvent.id))) == undone.event_id  # nothing written
    app.run()  # the warning read, nothing is chosen any more
    assert app.selectbox(key="overview_undo_event").value is None and app.button(key="overview_undo").disabled
