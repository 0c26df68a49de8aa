"""App pages: tick-gated decisions, undo, names as typed and filters, driven headless with streamlit.testing.v1.AppTest on the fixture
store (real photos and a real GIF, see test_queries.build_fixture_store):

- Explore's 2D bulk Approve and a single track's decisions change editors' decisions (approved,
  relabelled, rejected, marked unknown) only after a tick, and a track changed meanwhile is refused;
- the Overview's undo picks nothing after an undo, instead of the next operation;
- names (editors, classes) are shown as typed, never as markdown;
- the notice of what a bulk tag left alone survives the write's rerun;
- a class centroid is numbered by its class id, so the remembered one stays the same class;
- the Ingest page says nothing about server paths before sign-in;
- Review's bulk Approve is disabled for faces with nothing to approve, as Explore's is;
- Explore names the filters that hide points, and keeps a chosen class a search leaves out.
"""
from __future__ import annotations

import pytest
import streamlit as st
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from conftest import open_app
from explorer.views import filter_summary, view_points
from labeling.classes import add_class
from labeling.face_labels import Prediction, mark_unknown, record_predictions, reject_faces
from labeling.ingest import ingest
from labeling.pages.common import escape_markdown, plain
from labeling.queries import faces_frame, media_tags_frame, tracks_frame
from labeling.schema import AuditEvent, FaceLabel
from models.settings import Settings
from test_app_pages import button, errors, messages, no_exception, sign_in
from test_queries import SHARED, FixtureStore, new_fixture_store

EXPLORE = "explorer/pages/explore.py"


@pytest.fixture
def fixture_store(tmp_path_factory) -> FixtureStore:
    """A fixture store of its own for each test (they write), filled from the session's embedding cache."""
    return new_fixture_store(tmp_path_factory, "fixes-store")


@pytest.fixture
def app(fixture_store, monkeypatch) -> AppTest:
    """A fresh app session (no editor) on the requesting module's `fixture_store` (test_app_bias_counts_and_export_runs imports it)."""
    return open_app(monkeypatch, fixture_store.data_dir, fixture_store.url)


@pytest.fixture
def lasso(monkeypatch) -> list[int]:
    """Point ids the next runs report as lassoed in Explore's 2D view (what plotly.js sends on a selection)."""
    chosen: list[int] = []
    original = st.plotly_chart

    def chart(figure, *args, key=None, **kwargs):
        drawn = original(figure, *args, key=key, **kwargs)
        if key == "explore_2d" and chosen:
            return {"selection": {"points": [{"customdata": [i]} for i in chosen], "box": [], "lasso": [],
                                  "point_indices": []}}
        return drawn

    monkeypatch.setattr(st, "plotly_chart", chart)
    return chosen


def _labels(fx: FixtureStore, face_ids: list[int]) -> dict[int, tuple[str, str]]:
    with fx.store() as s:
        return {r.face_id: (r.status, r.editor) for r in s.scalars(select(FaceLabel).where(FaceLabel.face_id.in_(face_ids)))}


def _explore(at: AppTest, view: str = "Faces") -> AppTest:
    at.switch_page(EXPLORE).run()
    no_exception(at)
    if view != "Faces":
        at.selectbox(key="explore_view").set_value(view).run()
        no_exception(at)
    return at


# -- 1. Explore Faces 2D: approve is gated like every other action --------------------------------------
def test_bulk_approve_of_faces_other_editors_turned_down_needs_the_tick(app, fixture_store, lasso):
    """Approving gives a face rejected or marked unknown by another editor a class: a decision changed like
    any other, so it waits for the same tick (an approved photo face counts as well)."""
    rejected, unknown, pending = fixture_store.gif_faces[:3]
    approved = fixture_store.largest_face[sorted(fixture_store.largest_face)[0]]
    reject_faces(fixture_store.store, [rejected], "bob")
    mark_unknown(fixture_store.store, [unknown], "bob")
    turned_down = [rejected, unknown, approved]
    sign_in(app, "ann")
    _explore(app)
    lasso.extend([*turned_down, pending])
    app.run()
    no_exception(app)
    approve = button(app, "Approve 4")
    assert approve.disabled and "Change the 3 decided face(s) too" in approve.help
    assert any(w.value.startswith("3 of the selected faces are confirmed, rejected or marked unknown")
               for w in app.warning), [w.value for w in app.warning]
    next(c for c in app.checkbox if c.label == "Change the 3 decided face(s) too").check().run()
    button(app, "Approve 4").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    assert set(_labels(fixture_store, [*turned_down, pending]).values()) == {("approved", "ann")}


# -- 2. a single track's decision: the same guard, and a change meanwhile is refused ---------------------
def test_a_single_tracks_decision_needs_the_tick_and_is_refused_after_a_change(app, fixture_store):
    tracks = tracks_frame(fixture_store.store)
    track = tracks[(tracks["media_kind"] == "gif") & (tracks["n_faces"] >= 2)].iloc[0]
    members = faces_frame(fixture_store.store, track_ids=[int(track["track_id"])])["face_id"].astype(int).tolist()
    reject_faces(fixture_store.store, members[:1], "bob")
    sign_in(app, "ann")
    _explore(app, "Face tracks")
    app.number_input(key="explore_point_id").set_value(int(track["track_id"])).run()
    no_exception(app)
    assert any("1 of the track's" in w.value for w in app.warning), [w.value for w in app.warning]
    for key in ("explore_approve", "explore_reject", "explore_relabel", "explore_unknown"):
        assert app.button(key=key).disabled, key
    app.checkbox(key=f"explore_point_override_{int(track['track_id'])}").check().run()
    assert not app.button(key="explore_unknown").disabled
    mark_unknown(fixture_store.store, members[1:2], "bob")  # meanwhile, after the page was drawn
    app.button(key="explore_unknown").click().run()
    no_exception(app)
    # the tick was for one decided face: bob's new decision unticks it, and the press waits for a new tick
    assert any("decided faces changed since the box was ticked" in i.value for i in app.info), [i.value for i in app.info]
    assert app.button(key="explore_unknown").disabled
    labels = _labels(fixture_store, members)
    assert (labels[members[0]], labels[members[1]]) == (("rejected", "bob"), ("unknown", "bob"))
    app.checkbox(key=f"explore_point_override_{int(track['track_id'])}").check().run()
    app.button(key="explore_unknown").click().run()  # now based on what the page shows
    assert not errors(app), errors(app)
    assert set(_labels(fixture_store, members).values()) == {("unknown", "ann")}


# -- 3. Overview: after an undo, nothing is chosen ---------------------------------------------------------
def test_overview_undo_does_not_move_on_to_the_next_operation(app, fixture_store):
    add_class(fixture_store.store, "Undo One", "bob")
    add_class(fixture_store.store, "Undo Two", "bob")
    sign_in(app, "ann")
    app.switch_page("labeling/pages/home.py").run()
    offered = app.selectbox(key="overview_undo_event")
    assert offered.value is None and app.button(key="overview_undo").disabled  # nothing picked to start with
    latest = offered.options[0]
    assert "Undo Two" in latest
    with fixture_store.store() as s:
        newest = s.scalar(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1))
    offered.set_value(newest).run()
    button(app, "Undo this operation").click().run()
    no_exception(app)
    assert any(m.startswith(f"Undone: undo of operation {newest}") for m in messages(app)), messages(app)
    assert app.selectbox(key="overview_undo_event").value is None  # not "Undo One", a second press away
    assert app.button(key="overview_undo").disabled


# -- 4. names as typed -----------------------------------------------------------------------------------
def test_editor_and_class_names_are_not_markdown(app, fixture_store):
    editor, name = "[me](http://evil.example)", "*NSYNC* [Brad](mailto:x@y) ~~gone~~"
    sign_in(app, editor)
    assert [m.value for m in app.sidebar.markdown if m.value.startswith("Editor:")] == \
        [f"Editor: **{plain(editor)}**"]
    assert plain(editor) == "[me\\](http://evil.example)"  # "](" escaped: no link
    class_id, _ = add_class(fixture_store.store, name, "bob", seed_face_ids=fixture_store.gif_faces[:1])
    app.switch_page("labeling/pages/classes.py").run()
    app.selectbox(key="class_selected").set_value(class_id).run()
    no_exception(app)
    shown = [m.value for m in app.markdown if "NSYNC" in m.value]
    assert f"Rename **{escape_markdown(name)}**" in shown, shown
    assert not any("[Brad](" in m or "~~gone" in m for m in shown), shown
    _explore(app)
    app.number_input(key="explore_point_id").set_value(fixture_store.gif_faces[0]).run()
    no_exception(app)
    details = [m.value for m in app.markdown if "NSYNC" in m.value]
    assert details and details[0].startswith(f"**{plain(name)}**"), details


# -- 5. a bulk tag's notice survives the rerun -------------------------------------------------------------
def test_bulk_tag_says_which_gifs_it_left_alone_after_the_write(app, fixture_store, lasso):
    # a second GIF, without the fixture GIF's "nod": one GIF is tagged, the other left alone
    ingest([SHARED / "gifs" / "calvin-hobbes-dont-knock-smock-2.gif"],
           Settings(data_dir=fixture_store.data_dir, database_url=fixture_store.url))
    sign_in(app, "ann")
    _explore(app, "GIFs")
    points, _ = view_points(fixture_store.store, "GIFs")
    carrying = set(media_tags_frame(fixture_store.store, tag="nod")["media_id"].astype(int))
    lasso.extend(points["id"].astype(int).tolist())
    assert carrying & set(lasso) and set(lasso) - carrying, "some GIFs carry 'nod', some do not"
    app.run()
    app.text_input(key="explore_bulk_tag_name").input("nod")
    button(app, f"Tag {len(lasso)} GIF(s)").click().run()
    no_exception(app)
    assert any(m.startswith("Done: ") for m in messages(app)), messages(app)
    assert any(f"{len(carrying & set(lasso))} of the selected GIFs already carry it" in i.value for i in app.info), \
        [i.value for i in app.info]
    assert set(media_tags_frame(fixture_store.store, tag="nod")["media_id"].astype(int)) >= set(lasso)


# -- 6. centroids by class id ------------------------------------------------------------------------------
def test_a_remembered_centroid_stays_its_class_when_the_catalog_changes(app, fixture_store):
    points, _ = view_points(fixture_store.store, "Class centroids")
    assert set(points["id"]) <= set(fixture_store.classes.values())
    assert dict(zip(points["class"], points["id"])) == {n: fixture_store.classes[n] for n in points["class"]}
    serena = fixture_store.classes["Serena Williams"]
    _explore(app, "Class centroids")
    app.number_input(key="explore_point_id").set_value(serena).run()
    assert any(m.value.startswith("**Serena Williams**") for m in app.markdown)
    # a class that sorts first takes position 0 of the centroids, while the editor is on another page
    add_class(fixture_store.store, "Aaa First", "bob", seed_face_ids=fixture_store.gif_faces[:1])
    app.switch_page("labeling/pages/home.py").run()
    app.switch_page(EXPLORE).run()
    no_exception(app)
    assert app.selectbox(key="explore_view").value == "Class centroids"
    assert app.number_input(key="explore_point_id").value == serena  # the box shows the remembered point
    assert any(m.value.startswith("**Serena Williams**") for m in app.markdown), [m.value for m in app.markdown]


# -- 7. Ingest: no answer about server paths before sign-in ------------------------------------------------
def test_ingest_checks_the_editor_before_the_path(app, tmp_path):
    app.switch_page("labeling/pages/ingest.py").run()
    missing = tmp_path / "no-such-folder"
    for path in (str(tmp_path), str(missing)):
        app.text_input(key="ingest_folder").input(path)
        button(app, "Ingest folder").click().run()
        no_exception(app)
        assert errors(app) and all("editor name is required" in e for e in errors(app)), errors(app)
    sign_in(app, "ann")
    app.switch_page("labeling/pages/ingest.py").run()
    app.text_input(key="ingest_folder").input(str(missing))
    button(app, "Ingest folder").click().run()
    assert any("does not exist on the server" in e for e in errors(app)), errors(app)


# -- 8. Review: nothing to approve, Approve disabled -------------------------------------------------------
def _tick(at: AppTest, key: str, ids: list[int]) -> None:
    """Tick these ids in a Review pick table, as clicking the rows' checkboxes does."""
    widget = next(e for e in at.data_editor if e.key == key or str(e.key).startswith(f"{key}__"))
    rows = [i for i, row_id in enumerate(widget.value["id"].tolist()) if int(row_id) in ids]
    assert len(rows) == len(ids), (ids, widget.value["id"].tolist())
    at.session_state[widget.key] = {"edited_rows": {r: {"pick": True} for r in rows}, "added_rows": [], "deleted_rows": []}
    at.run()
    no_exception(at)


def test_review_bulk_approve_is_disabled_for_faces_with_nothing_to_approve(app, fixture_store):
    face = fixture_store.gif_faces[0]
    record_predictions(fixture_store.store, [Prediction(face, None, 0.3, [])], "open-set-run")  # the model: unknown
    app.switch_page("explorer/pages/review.py").run()
    no_exception(app)
    _tick(app, "review_suspects", [face])
    approve = app.button(key="review_suspects_bulk_approve")
    assert approve.disabled and str(face) in approve.help and "relabel" in approve.help
    assert not app.button(key="review_suspects_bulk_relabel").disabled


# -- 9. Explore: the filters that hide points are named ----------------------------------------------------
def test_filter_summary_names_what_hides_points():
    assert filter_summary() == ""
    assert filter_summary(search=" serena ") == "search 'serena'"
    assert filter_summary(classes=["Al Gore"], search="serena", present={"Al Gore"}) == \
        "search 'serena' · classes Al Gore (outside the search)"
    assert filter_summary(classes=["Al Gore"], present={"nod"}) == "classes Al Gore (none in this view)"
    assert filter_summary(statuses=["approved"], confidence=(0.5, 1.0), media_name="x.gif", isolated=3) == \
        "status approved · confidence 0.50-1.00 · GIF x.gif · isolated 2D selection of 3"


def test_explore_names_active_filters_and_keeps_a_class_a_search_hides(app, fixture_store):
    _explore(app)
    assert not [c.value for c in app.caption if c.value.startswith("Filtered:")]
    app.multiselect(key="explore_classes").set_value(["Ariel Sharon"]).run()
    app.text_input(key="explore_search").input("serena").run()
    no_exception(app)
    assert app.multiselect(key="explore_classes").value == ["Ariel Sharon"]  # kept, not silently dropped
    note = [c.value for c in app.caption if c.value.startswith("Filtered:")]
    assert len(note) == 1 and "search 'serena'" in note[0] and "Ariel Sharon (outside the search)" in note[0], note
    assert note[0].endswith(f"— 0 of {len(faces_frame(fixture_store.store))} shown")
    app.multiselect(key="explore_classes").set_value([]).run()
    app.selectbox(key="explore_view").set_value("GIFs").run()  # the search still applies, the expander closed
    no_exception(app)
    note = [c.value for c in app.caption if c.value.startswith("Filtered:")]
    assert len(note) == 1 and note[0].startswith("Filtered: search 'serena' — "), note
