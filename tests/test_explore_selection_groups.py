"""Round 17, Explore: the 2D selection, class names equal to group names, the GIF filter, the empty centroids
message and the size of the figures.

- Streamlit names the 2D chart by its whole figure, so a redrawn figure (Isolate narrowed to the last lasso, a
  plane switched) came back with no selection and a bulk press in that run was dropped unseen: the last lasso
  is kept (and can be cleared), and a press that meets no selection (the Add class and Tag forms included)
  says so; only Explore's own controls keep it: a change of the data, a visit to another page or a filter
  hiding all of it ends it;
- a class named like one of Explore's groups ("rejected", "other", "unlabeled", ...) is neither merged with
  that group, greyed, folded into "other", nor dropped from the class centroids, and the class search
  matches its stored name, not the " (class)" suffix;
- a GIF chosen in the GIF filter stays chosen across views, named when no point of the view is of it;
- class centroids over faces all turned down say so, not "no class has faces yet";
- the figures do not repeat per point the class their trace is named by.

Real SQLite stores written through the store's own functions (8-dimensional face vectors, no model), the page's
own widgets (AppTest). The 2D chart's selection is given back as Streamlit gives it: only while the figure
is the one the lasso was drawn on."""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from conftest import open_app
from explorer.figures import FIXED_COLORS, OTHER, scatter_2d, scatter_3d
from explorer.views import (GROUP_NAMES, HOVER, empty_view_message, filter_points, filter_summary, group_safe,
                            searched_classes, view_points)
from labeling.classes import add_class
from labeling.db import open_store, session_scope
from labeling.face_labels import Prediction, approve_faces, record_predictions, reject_faces
from labeling.queries import classes_frame, faces_frame, media_tags_frame
from labeling.schema import MediaEmbedding, vector_to_bytes
from test_app_decision_ticks_and_filters import EXPLORE, _explore
from test_app_pages import no_exception, sign_in
from test_review_own_changes_and_filters import _add_faces

PEOPLE = ("A", "B", "C")  # 4 faces each: 12 points, under UMAP's 16, so the map is PCA and drawn at once


class Fx(NamedTuple):
    data_dir: Path
    url: str
    store: object
    faces: list[int]
    classes: list[int]


def _store(tmp_path: Path, names: tuple[str, ...] = tuple(f"Person {p}" for p in PEOPLE), per_class: int = 4) -> Fx:
    """Faces in well separated clusters, one class per cluster, predicted (no editor decided any)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(names), 8)) * 3
    vectors = [centres[k] + rng.normal(size=8) * 0.5 for k in range(len(names)) for _ in range(per_class)]
    url = f"sqlite:///{tmp_path}/store.db"
    store = open_store(url)
    faces = _add_faces(store, vectors, 0)
    classes = [add_class(store, name, "setup")[0] for name in names]
    record_predictions(store, [Prediction(f, classes[i // per_class], 0.8, [(classes[i // per_class], 0.8)])
                               for i, f in enumerate(faces)], "m-v1")
    return Fx(tmp_path, url, store, faces, classes)


@pytest.fixture
def live_lasso(monkeypatch) -> dict:
    """What Streamlit gives back for Explore's 2D chart: the points of the last lasso, only while the figure
    drawn is the one it was drawn on (the chart's element id comes from its figure); `lasso(at, ids)` draws one,
    `state["ids"] = []` deselects it on the chart."""
    state: dict = {"ids": [], "spec": None, "arm": False}
    original = st.plotly_chart

    def chart(figure, *args, key=None, **kwargs):
        drawn = original(figure, *args, key=key, **kwargs)
        if key == "explore_2d" and state["ids"]:
            spec = figure.to_json()
            if state["arm"]:
                state["spec"], state["arm"] = spec, False
            if spec == state["spec"]:
                return {"selection": {"points": [{"customdata": [i]} for i in state["ids"]], "box": [], "lasso": [],
                                      "point_indices": []}}
            state["ids"] = []  # a chart not drawn in a run is gone, its selection with it
        return drawn

    monkeypatch.setattr(st, "plotly_chart", chart)
    return state


def lasso(at: AppTest, state: dict, ids: list[int]) -> None:
    state.update(ids=list(ids), arm=True)
    at.run()
    no_exception(at)


def _selected(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "selected" in m.value)


def _page(fx: Fx, monkeypatch, view: str = "Faces") -> AppTest:
    return _explore(sign_in(open_app(monkeypatch, fx.data_dir, fx.url), "ann"), view)


def _status(fx: Fx, faces: list[int]) -> list[str]:
    return faces_frame(fx.store).set_index("face_id").loc[faces, "label_status"].tolist()


# -- 1. the 2D selection outlives a redrawn figure ------------------------------------------------------------
def test_a_bulk_press_after_isolate_narrowed_to_the_lasso_is_not_lost(tmp_path, monkeypatch, live_lasso):
    fx = _store(tmp_path)
    page = _page(fx, monkeypatch)
    lasso(page, live_lasso, fx.faces[:8])
    page.toggle(key="explore_isolate").set_value(True).run()
    assert _selected(page).startswith("8 face(s) selected")  # the figure changed (isolated): the lasso is kept
    lasso(page, live_lasso, fx.faces[:3])  # a lasso inside the isolated points
    assert _selected(page).startswith("3 face(s) selected")
    page.button(key="explore_bulk_reject").click().run()  # this run shows only the 3: a new figure, no selection
    no_exception(page)
    assert _status(fx, fx.faces[:3]) == ["rejected"] * 3
    assert any("rejected 3 face(s)" in s.value for s in page.success), [s.value for s in page.success]
    assert _status(fx, fx.faces[3:8]) == ["predicted"] * 5
    assert _selected(page).startswith("0 face(s) selected")  # a successful write ends the kept selection


def test_a_write_elsewhere_leaves_a_kept_selection_standing(tmp_path, monkeypatch, live_lasso):
    """Another editor's decision on a face off the map (or any ingest batch) changes the store, not the
    selection's points: the press after Isolate still acts (a store-wide stamp dropped it, "no longer shown")."""
    fx = _store(tmp_path)
    page = _page(fx, monkeypatch)
    lasso(page, live_lasso, fx.faces[:4])
    page.toggle(key="explore_isolate").set_value(True).run()
    reject_faces(fx.store, [fx.faces[-1]], "bob")  # not on the isolated map
    page.button(key="explore_bulk_reject").click().run()
    no_exception(page)
    assert _status(fx, fx.faces[:4]) == ["rejected"] * 4


def test_filter_summary_matches_a_class_chosen_in_another_view_by_its_name():
    """`found` holds this view's classes only: a class chosen in another view that the search does find is
    "(none in this view)", not "(outside the search)"."""
    assert filter_summary(["Al Gore"], search="gore", present={"Bob"}, found=[]).endswith("Al Gore (none in this view)")
    assert filter_summary(["Al Gore"], search="bob", present={"Bob"}, found=["Bob"]).endswith(
        "Al Gore (outside the search)")


def test_a_lasso_survives_a_point_opened_and_a_plane_switched_until_cleared(tmp_path, monkeypatch, live_lasso):
    fx = _store(tmp_path)
    page = _page(fx, monkeypatch)
    lasso(page, live_lasso, fx.faces[:5])
    page.number_input(key="explore_point_id").set_value(fx.faces[10]).run()  # details of a point outside it
    assert _selected(page).startswith("5 face(s) selected")
    assert not [b for b in page.button if b.key == "explore_clear_lasso"]  # the chart still shows this one
    page.radio(key="explore_plane").set_value("x-z").run()
    no_exception(page)
    assert _selected(page).startswith("5 face(s) selected")
    assert any("no longer shows them" in c.value for c in page.caption), [c.value for c in page.caption]
    page.button(key="explore_clear_lasso").click().run()
    no_exception(page)
    assert _selected(page).startswith("0 face(s) selected")
    page.radio(key="explore_plane").set_value("x-y").run()  # back on the figure it was drawn on: not revived
    assert _selected(page).startswith("0 face(s) selected")


def test_a_selection_cleared_on_the_chart_stays_cleared(tmp_path, monkeypatch, live_lasso):
    fx = _store(tmp_path)
    page = _page(fx, monkeypatch)
    lasso(page, live_lasso, fx.faces[:5])
    live_lasso["ids"] = []  # the editor double-clicks the chart: it comes back without a selection
    page.run()
    assert _selected(page).startswith("0 face(s) selected")
    page.radio(key="explore_plane").set_value("y-z").run()
    assert _selected(page).startswith("0 face(s) selected")


def test_a_bulk_press_that_meets_no_selection_says_so(tmp_path, monkeypatch, live_lasso):
    fx = _store(tmp_path)
    page = _page(fx, monkeypatch)
    lasso(page, live_lasso, fx.faces[:3])
    assert _selected(page).startswith("3 face(s) selected")
    # in the same run the press arrives, the selected points leave the map (a filter)
    page.multiselect(key="explore_classes").set_value(["Person C"])
    page.button(key="explore_bulk_reject").click().run()
    no_exception(page)
    assert _status(fx, fx.faces[:3]) == ["predicted"] * 3
    assert any(w.value.startswith("Nothing was written: the 2D selection was cleared") for w in page.warning), \
        [w.value for w in page.warning]


def test_a_selection_deselected_on_the_chart_stays_cleared_when_the_data_changed_meanwhile(tmp_path, monkeypatch,
                                                                                           live_lasso):
    """Only Explore's own controls keep a lasso over a redraw: another editor's decision (a point outside the
    lasso) redraws the figure too, and an empty selection then is the editor's, not a lost one."""
    fx = _store(tmp_path)
    page = _page(fx, monkeypatch)
    lasso(page, live_lasso, fx.faces[:5])
    assert _selected(page).startswith("5 face(s) selected")
    reject_faces(fx.store, [fx.faces[11]], "bob")
    live_lasso["ids"] = []  # deselected on the chart
    page.run()
    no_exception(page)
    assert _selected(page).startswith("0 face(s) selected")
    assert not any("Kept from your last lasso" in c.value for c in page.caption)
    page.radio(key="explore_plane").set_value("y-z").run()  # not revived by a later redraw either
    assert _selected(page).startswith("0 face(s) selected")


def test_a_kept_selection_ends_when_the_editor_leaves_explore(tmp_path, monkeypatch, live_lasso):
    fx = _store(tmp_path)
    page = _page(fx, monkeypatch)
    lasso(page, live_lasso, fx.faces[:5])
    page.radio(key="explore_plane").set_value("x-z").run()  # kept: the chart no longer shows it
    assert _selected(page).startswith("5 face(s) selected")
    page.switch_page("labeling/pages/home.py").run()
    no_exception(page)
    page.switch_page(EXPLORE).run()
    no_exception(page)
    assert _selected(page).startswith("0 face(s) selected")
    assert not [b for b in page.button if b.key == "explore_bulk_reject"]


def test_a_kept_selection_all_hidden_by_a_filter_is_dropped(tmp_path, monkeypatch, live_lasso):
    fx = _store(tmp_path)
    page = _page(fx, monkeypatch)
    lasso(page, live_lasso, fx.faces[:6])  # Person A's 4 and 2 of Person B's
    page.multiselect(key="explore_classes").set_value(["Person C"]).run()
    no_exception(page)
    assert _selected(page).startswith("0 face(s) selected")
    assert not any("Kept from your last lasso" in c.value for c in page.caption), [c.value for c in page.caption]
    assert not [b for b in page.button if b.key == "explore_clear_lasso"]
    page.multiselect(key="explore_classes").set_value(["Person A", "Person B"]).run()  # widened: not revived
    assert _selected(page).startswith("0 face(s) selected")


def test_the_add_class_and_tag_forms_pressed_without_a_selection_say_so(tmp_path, monkeypatch, live_lasso):
    fx = _store(tmp_path)
    page = _page(fx, monkeypatch)
    lasso(page, live_lasso, fx.faces[:3])
    page.text_input(key="explore_new_class_name").set_value("Zed")
    page.multiselect(key="explore_classes").set_value(["Person C"])  # the selection leaves the map in that run
    page.button(key="explore_new_class_add").click().run()
    no_exception(page)
    assert "Zed" not in classes_frame(fx.store)["name"].tolist()
    assert any(w.value.startswith("Nothing was written: the 2D selection was cleared") for w in page.warning), \
        [w.value for w in page.warning]

    _gif_embeddings(fx)
    page.multiselect(key="explore_classes").set_value([]).run()
    page.selectbox(key="explore_view").set_value("GIFs").run()
    lasso(page, live_lasso, [1, 2])
    assert _selected(page).startswith("2 GIF(s) selected")
    page.text_input(key="explore_bulk_tag_name").set_value("cats")
    page.selectbox(key="explore_media").set_value(3)  # only GIF 3 shown in the run the press arrives
    page.button(key="explore_bulk_tag_add").click().run()
    no_exception(page)
    assert media_tags_frame(fx.store, tag="cats").empty
    assert any(w.value.startswith("Nothing was written: the 2D selection was cleared") for w in page.warning), \
        [w.value for w in page.warning]


# -- 2. class names equal to group names ------------------------------------------------------------------------
COLLIDING = ("rejected", "marked unknown", "unlabeled", "other", "unknown", "untagged")


def test_classes_named_like_groups_keep_their_own_traces_colours_and_centroids(tmp_path):
    fx = _store(tmp_path, (*COLLIDING, "rejected (class)", "Real Person"), per_class=3)
    approve_faces(fx.store, fx.faces, "ann")
    reject_faces(fx.store, fx.faces[-1:], "ann")  # one face of "Real Person" rejected by an editor
    points, vectors = view_points(fx.store, "Faces")
    by_id = points.set_index("id")["class"]
    assert by_id[fx.faces[0]] == "rejected (class)" and by_id[fx.faces[-1]] == "rejected"
    assert by_id[fx.faces[3 * 6]] == "rejected (class) (class)"  # the class named so stays apart too
    assert points.groupby("class").size().to_dict() == {
        **{f"{name} (class)": 3 for name in COLLIDING}, "rejected (class) (class)": 3, "Real Person": 2, "rejected": 1}
    fig = scatter_3d(points.assign(x=0.0, y=0.0, z=0.0), "class")
    traces = {t.name: (t.marker.color, len(t.x)) for t in fig.data}
    assert OTHER not in traces and traces["rejected"] == (FIXED_COLORS["rejected"], 1)
    for name in COLLIDING:  # a class of its own: a palette colour, its 3 faces, nothing merged
        assert traces[f"{name} (class)"][1] == 3 and traces[f"{name} (class)"][0] not in FIXED_COLORS.values(), name
    centroids, _ = view_points(fx.store, "Class centroids")
    assert sorted(centroids["id"]) == sorted(fx.classes)  # no class dropped
    assert centroids.set_index("id").loc[fx.classes[-1], "n"] == 2  # the rejected face is not averaged in
    tracks, _ = view_points(fx.store, "Face tracks")
    assert set(tracks["class"]) == set(points["class"])


def test_the_class_search_matches_stored_names_not_the_group_suffix(tmp_path, monkeypatch):
    """"class" finds no class here: " (class)" is Explore's suffix for the class named "rejected", not its
    name; the class is still found by its name, and chosen in the Classes filter."""
    fx = _store(tmp_path, ("rejected", "Real Person"), per_class=3)
    approve_faces(fx.store, fx.faces, "ann")
    reject_faces(fx.store, fx.faces[-1:], "ann")
    points, _ = view_points(fx.store, "Faces")
    assert not filter_points(points, search="class").any()
    assert searched_classes(points, "class") == []
    assert sorted(searched_classes(points, "REJECTED")) == ["rejected", "rejected (class)"]
    found = filter_points(points, classes=["rejected (class)"], search="rejected")
    assert sorted(points.loc[found, "id"]) == fx.faces[:3]
    assert filter_summary(["rejected (class)"], search="class", found=searched_classes(points, "class")) == \
        "search 'class' · classes rejected (class) (outside the search)"
    page = _page(fx, monkeypatch)
    page.text_input(key="explore_search").set_value("class").run()
    no_exception(page)
    assert page.multiselect(key="explore_classes").options == []
    page.text_input(key="explore_search").set_value("rej").run()
    assert sorted(page.multiselect(key="explore_classes").options) == ["rejected", "rejected (class)"]
    page.multiselect(key="explore_classes").set_value(["rejected (class)"]).run()
    no_exception(page)
    assert any(c.value.startswith("Filtered: search 'rej' · classes rejected (class) — 3 of 6 shown")
               for c in page.caption), [c.value for c in page.caption]


def test_group_safe_names_never_meet():
    names = pd.Series([*GROUP_NAMES, "rejected (class)", "rejected (class) (class)", "Person (class)", "Ann", None])
    shown = group_safe(names)
    assert shown.dropna().is_unique and not set(shown.dropna()) & GROUP_NAMES
    assert shown.iloc[-3:-1].tolist() == ["Person (class)", "Ann"] and pd.isna(shown.iloc[-1])
    assert group_safe(pd.Series(["untagged"]), "tag").tolist() == ["untagged (tag)"]


# -- 3. the GIF filter stays chosen across views ----------------------------------------------------------------
def _gif_embeddings(fx: Fx) -> None:
    """The first 6 media get a GIF embedding, as GIFs do: the GIFs view's points."""
    rng = np.random.default_rng(1)
    with session_scope(fx.store) as s:
        for media in range(1, 7):
            v = rng.normal(size=16).astype(np.float32)
            s.add(MediaEmbedding(media_id=media, model_id="g", dim=16, vector=vector_to_bytes(v / np.linalg.norm(v))))


def test_the_gif_filter_stays_chosen_across_views_and_is_named_where_it_hides_all(tmp_path, monkeypatch):
    fx = _store(tmp_path)
    _gif_embeddings(fx)
    page = _page(fx, monkeypatch)
    page.selectbox(key="explore_media").set_value(10).run()  # a photo: no point of the GIFs view
    page.selectbox(key="explore_view").set_value("GIFs").run()
    no_exception(page)
    assert page.selectbox(key="explore_media").value == 10
    assert any(c.value.startswith("Filtered: GIF p9.jpg (none in this view) — 0 of 6 shown") for c in page.caption), \
        [c.value for c in page.caption]
    page.selectbox(key="explore_view").set_value("Faces").run()
    no_exception(page)
    assert page.selectbox(key="explore_media").value == 10
    assert any(c.value.startswith("Filtered: GIF p9.jpg — 1 of 12 shown") for c in page.caption)
    assert filter_summary(media_name="a.gif", media_present=False) == "GIF a.gif (none in this view)"


# -- 4. empty centroids over faces all turned down ---------------------------------------------------------------
def test_centroids_of_faces_all_turned_down_say_so(tmp_path, monkeypatch):
    fx = _store(tmp_path)
    reject_faces(fx.store, fx.faces, "bob")
    page = _page(fx, monkeypatch, "Class centroids")
    no_exception(page)
    infos = [i.value for i in page.info]
    assert any(i.startswith("All 12 face(s) are rejected or marked unknown, so no class has a face to average")
               for i in infos), infos
    assert "Classes page" in empty_view_message("Class centroids", has_media=True, has_faces=True,
                                                face_statuses=["rejected", "predicted"])


# -- 5. the figures do not repeat the class per point -----------------------------------------------------------
def test_hover_data_leaves_out_the_trace_name_and_sends_short_floats():
    rng = np.random.default_rng(2)
    n = 400
    frame = pd.DataFrame({"id": np.arange(1, n + 1), "class": [f"Célébrité {i % 25} 😀" for i in range(n)],
                          "status": "predicted", "confidence": rng.uniform(size=n), "media_name": "p.jpg",
                          "x": rng.normal(size=n), "y": rng.normal(size=n), "z": rng.normal(size=n)})
    for fig in (scatter_3d(frame, "class", hover_cols=HOVER), scatter_2d(frame, "class", hover_cols=HOVER)):
        sent = json.loads(fig.to_json())["data"]
        named = [t for t in sent if t["name"] != OTHER]
        for t in named:  # the class is the trace's name: per point id, status, confidence, GIF only
            assert all(len(row) == 4 and not str(row[1]).startswith("Célébrité") for row in t["customdata"])
            assert "class:" not in t["hovertemplate"] and "confidence: %{customdata[2]:.3f}" in t["hovertemplate"]
            assert all(round(row[2], 3) == row[2] for row in t["customdata"])
        other = next(t for t in sent if t["name"] == OTHER)  # folded classes keep their own name per point
        assert "class: %{customdata[1]}" in other["hovertemplate"]
        assert {row[1] for row in other["customdata"]} <= set(frame["class"])
    bare = len(scatter_3d(frame, "class").to_json())
    full = len(scatter_3d(frame, "class", hover_cols=HOVER, max_classes=25).to_json())
    assert full - bare < 40 * n  # at most ~40 characters a point for the hover (the class costs ~45 alone)
