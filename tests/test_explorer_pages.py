"""The Explore and Review pages and their data (explorer/views.py) on a store of real LFW photos and shared
GIFs (test_recognition_loop.build_loop_store: confirmed classes from GIPHY's training layout, unlabeled
photos, strangers and GIFs with faces), with predictions from the real centroid classifier.

Views are checked against the store; the projection is fitted once, then served from the cache, then
extended with `transform` when faces are added, without moving the faces already placed; the pages are
driven headless with AppTest (select a face by id, relabel it, read it back with its audit event)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from explorer.projection_jobs import wait_for_projections
from explorer.views import (POINT_COLUMNS, VIEWS, centroid_points, face_points, filter_points, nameable_faces, nearest,
                            projection_for, unnameable_help, view_points)
from labeling.face_labels import Prediction, approve_faces, mark_unknown, record_predictions, reject_faces, relabel_faces
from labeling.queries import classes_frame, faces_frame, tracks_frame
from labeling.recognition import refresh_predictions
from labeling.schema import AuditEvent, FaceLabel
from conftest import open_app, session_dir
from test_recognition_loop import LoopStore, build_loop_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def explored(tmp_path_factory) -> LoopStore:
    db = tmp_path_factory.mktemp("explorer") / "explorer.db"
    loop = build_loop_store(session_dir(tmp_path_factory, "giflens-recognition-data"), f"sqlite:///{db}")
    refresh_predictions(loop.store)
    return loop


def test_every_view_has_the_same_columns_and_one_row_per_vector(explored):
    for view in VIEWS:
        points, vectors = view_points(explored.store, view)
        assert list(points.columns) == POINT_COLUMNS, view
        assert len(points) == len(vectors) > 0, view
        assert points["id"].is_unique, view
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4), view
    faces = faces_frame(explored.store)
    points, _ = face_points(explored.store)
    assert len(points) == len(faces) and set(points["id"]) == set(faces["face_id"])
    tracks, _ = view_points(explored.store, "Face tracks")
    assert set(tracks["id"]) == set(tracks_frame(explored.store)["track_id"])
    gifs, _ = view_points(explored.store, "GIFs")
    assert {explored.media[g] for g in ("jlaw-nods.gif", "waiting.gif")} <= set(gifs["id"])


def test_face_points_show_the_decision_first_then_the_prediction(explored):
    points, _ = face_points(explored.store)
    by_id = points.set_index("id")
    ariel = explored.face("Ariel_Sharon_0001.jpg")
    assert by_id.loc[ariel, "class"] == "Ariel Sharon" and by_id.loc[ariel, "status"] == "approved"
    extra = explored.face("Serena_Williams_0007.jpg")  # unlabeled photo of a known person: predicted
    assert by_id.loc[extra, "status"] == "predicted" and by_id.loc[extra, "class"] == "Serena Williams"
    assert 0.0 <= by_id.loc[extra, "confidence"] <= 1.0


def test_centroids_are_the_mean_of_confirmed_faces(explored):
    points, vectors = face_points(explored.store)
    catalog = classes_frame(explored.store)
    class_ids = dict(zip(catalog["name"], catalog["class_id"]))
    centres, cvec = centroid_points(points, vectors, class_ids)
    assert dict(zip(centres["class"], centres["id"])) == {c: class_ids[c] for c in centres["class"]}  # ids are classes'
    row = centres.index[centres["class"] == "Hugo Chavez"][0]
    members = points.index[(points["class"] == "Hugo Chavez") & points["status"].isin(["approved", "relabeled"])]
    expected = vectors[members].mean(axis=0)
    assert np.allclose(cvec[row], expected / np.linalg.norm(expected), atol=1e-5)
    assert centres.loc[row, "n"] == len(members) == 6


def test_one_rule_says_which_faces_have_nothing_to_approve():
    faces = pd.DataFrame({"class_id": [1.0, None, None, None], "predicted_class_id": [None, 2.0, None, None]})
    assert nameable_faces(faces).tolist() == [True, True, False, False]
    assert unnameable_help([], "untick them") is None
    assert unnameable_help([3, 4], "untick them") == ("2 of the faces have neither a class nor a prediction to "
                                                      "approve (faces 3, 4): untick them")
    assert unnameable_help(list(range(12)), "x").endswith("(faces 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 ...): x")


def test_filters_and_nearest_neighbours(explored):
    points, vectors = face_points(explored.store)
    assert filter_points(points).all()
    only = filter_points(points, classes=["Ariel Sharon"], statuses=["approved"])
    assert set(points.loc[only, "class"]) == {"Ariel Sharon"} and only.sum() == 6
    assert filter_points(points, search="serena").sum() == (points["class"] == "Serena Williams").sum()
    confident = filter_points(points, confidence=(0.5, 1.0))
    assert (points.loc[confident, "confidence"] >= 0.5).all()
    gif = explored.media["jlaw-nods.gif"]
    assert set(points.loc[filter_points(points, media_id=gif), "media_id"]) == {gif}
    row = int(points.index[points["id"] == explored.face("Ariel_Sharon_0001.jpg")][0])
    rows, dist = nearest(vectors, row, k=5)
    assert row not in rows and len(rows) == 5 and np.all(np.diff(dist) >= 0)
    assert points.loc[rows[0], "class"] == "Ariel Sharon"  # a real photo's nearest face is the same person


def test_projection_is_cached_then_extended_without_moving_known_points(explored, tmp_path):
    points, vectors = face_points(explored.store)
    ids = points["id"].to_numpy()
    first, how = projection_for(vectors[:-3], ids[:-3], tmp_path, "faces-test")
    assert how == "fitted" and len(first) == len(ids) - 3
    again, how = projection_for(vectors[:-3], ids[:-3], tmp_path, "faces-test")
    assert how == "cache" and np.array_equal(again.coords, first.coords)
    grown, how = projection_for(vectors, ids, tmp_path, "faces-test")
    assert how == "extended" and list(grown.ids) == list(ids)
    assert np.allclose(grown.coords[:-3], first.coords)
    assert np.isfinite(grown.coords).all()
    _, how = projection_for(vectors, ids, tmp_path, "faces-test")
    assert how == "cache"


@pytest.fixture
def app(explored, monkeypatch):
    return open_app(monkeypatch, explored.data_dir, explored.url)


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _sign_in(at: AppTest, name: str) -> None:
    at.sidebar.text_input(key="sign_in_name").input(name)
    next(b for b in at.button if b.label == "Sign in").click().run()
    _ok(at)


def test_explore_every_view_and_relabel_a_face_by_id(app, explored):
    app.switch_page("explorer/pages/explore.py").run()
    _ok(app)
    # the PCA preview at once (or UMAP from the cache), then UMAP once the background job is done
    assert any("PCA preview while UMAP computes" in c.value or "UMAP (" in c.value for c in app.caption)
    assert wait_for_projections(timeout=600)
    app.run()
    assert any("UMAP (" in c.value for c in app.caption), [c.value for c in app.caption]
    for view in VIEWS:
        app.selectbox(key="explore_view").set_value(view).run()
        _ok(app)
    app.selectbox(key="explore_view").set_value("Faces").run()
    face = explored.face("Ariel_Sharon_0007.jpg")
    app.number_input(key="explore_point_id").set_value(face).run()
    _ok(app)
    assert any("status" in m.value for m in app.markdown)
    app.button(key="explore_relabel").click().run()  # no editor: refused, nothing written
    assert any("editor name is required" in e.value for e in app.error)
    _sign_in(app, "explorer-editor")
    target = explored.classes["Hugo Chavez"]
    app.selectbox(key=f"explore_relabel_class_{face}").set_value(target).run()
    app.button(key="explore_relabel").click().run()
    _ok(app)
    with explored.store() as s:
        label = s.scalar(select(FaceLabel).where(FaceLabel.face_id == face))
        event = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert label.class_id == target and label.status == "relabeled" and label.editor == "explorer-editor"
    assert event.editor == "explorer-editor" and f"face:{face}" in event.after


def test_review_tabs_render_with_the_store_queues(app, explored):
    app.switch_page("explorer/pages/review.py").run()
    _ok(app)
    captions = " ".join(c.value for c in app.caption)
    assert "farthest from the centroid first" in captions
    assert "suspect faces" in captions and "tracks have no decision" in captions
    queues = [d.value for d in app.dataframe if {"pick", "predicted"} <= set(d.value.columns)]
    assert len(queues) == 2  # suspect faces, tracks without a decision
    for queue in queues:  # every row says what the model named, or why it named no one
        assert queue["predicted"].notna().all() and len(queue), queue
    app.selectbox(key="review_class").set_value("Serena Williams").run()
    _ok(app)
    _sign_in(app, "reviewer")
    app.button(key="review_undo").click().run()  # nothing of theirs to undo: a clear refusal
    _ok(app)
    assert app.error and "undo" in app.error[0].value.lower()



def _history_operations(at: AppTest) -> list[str]:
    """The operations listed by the point's history table (the sidebar's recent events have no before / after)."""
    tables = [d.value for d in at.dataframe if {"operation", "before", "after"} <= set(d.value.columns)]
    assert len(tables) == 1, [list(d.value.columns) for d in at.dataframe]
    return tables[0]["operation"].tolist()


def test_explore_shows_the_history_of_a_track_and_of_a_gif(app, explored):
    """A track has no audit key of its own: its details list its faces' events, so a decision taken on
    the track from this page shows there at once; its GIF's details list the tag import and that decision
    (operations on a face concern its media)."""
    gif = explored.media["jlaw-nods.gif"]
    tracks = tracks_frame(explored.store)
    track = int(tracks.loc[~tracks["has_decision"] & (tracks["media_id"] == gif), "track_id"].iloc[0])
    members = {f"face:{f}" for f in faces_frame(explored.store).query("track_id == @track")["face_id"].astype(int)}
    app.switch_page("explorer/pages/explore.py").run()
    _sign_in(app, "track-editor")
    app.selectbox(key="explore_view").set_value("Face tracks").run()
    app.number_input(key="explore_point_id").set_value(track).run()
    _ok(app)
    assert any("History of the track's faces" in c.value for c in app.caption)
    assert "relabel_track" not in _history_operations(app)
    app.selectbox(key=f"explore_relabel_class_{track}").set_value(explored.classes["Hugo Chavez"]).run()
    app.button(key="explore_relabel").click().run()
    _ok(app)
    assert not app.error, [e.value for e in app.error]
    operations = _history_operations(app)
    assert operations[0] == "relabel_track", operations
    history = next(d.value for d in app.dataframe if {"operation", "before", "after"} <= set(d.value.columns))
    assert history["editor"].iloc[0] == "track-editor" and set(history["after"].iloc[0]) == members

    app.selectbox(key="explore_view").set_value("GIFs").run()
    app.number_input(key="explore_point_id").set_value(gif).run()
    _ok(app)
    assert any("History of the GIF" in c.value for c in app.caption)
    assert _history_operations(app) == ["relabel_track", "predict_faces", "import_tags"]  # the model's run too

def _shown_count(at: AppTest) -> tuple[int, int]:
    """(points drawn, points in the view) from the caption under the 3D chart."""
    caption = next(c.value for c in at.caption if " of " in c.value and "click a point" in c.value)
    shown, total = caption.split(" · ")[0].split(" ")[0:3:2]
    return int(shown.replace(",", "")), int(total.replace(",", ""))


def test_explore_filters_colour_and_isolate_narrow_the_points(app, explored):
    """The controls act on what is drawn: a class filter keeps that class's faces, a colour choice
    re-colours without dropping points, isolation keeps the 2D selection, and isolated face ids do not
    leak into another view (face 12 and GIF 12 are different points)."""
    faces = faces_frame(explored.store)
    app.switch_page("explorer/pages/explore.py").run()
    _ok(app)
    shown, total = _shown_count(app)
    assert shown == total == len(faces)
    for colour in app.selectbox(key="explore_colour").options:
        app.selectbox(key="explore_colour").set_value(colour).run()
        _ok(app)
        assert _shown_count(app) == (total, total)
    app.selectbox(key="explore_colour").set_value("class").run()

    def plane_xs() -> list[float]:  # the 2D figure's x values, every trace (plotly.js's typed arrays decoded)
        import base64
        import json
        specs = [json.loads(c.proto.spec) for c in app.get("plotly_chart")]
        xs = [t["x"] for spec in specs for t in spec["data"] if t.get("type") == "scattergl" and "x" in t]
        return sorted(v for x in xs for v in (np.frombuffer(base64.b64decode(x["bdata"]), x["dtype"]).tolist()
                                              if isinstance(x, dict) else x))

    front = plane_xs()
    app.radio(key="explore_plane").set_value("y-z").run()
    _ok(app)
    side = plane_xs()
    assert len(side) == len(front) == total and side != front  # the same points, seen along another axis

    app.multiselect(key="explore_classes").set_value(["Hugo Chavez"]).run()
    _ok(app)
    hugo, _ = _shown_count(app)
    assert 0 < hugo < total
    app.multiselect(key="explore_classes").set_value([]).run()
    app.slider(key="explore_confidence").set_value((0.95, 1.0)).run()
    confident, _ = _shown_count(app)
    assert confident < total
    app.slider(key="explore_confidence").set_value((0.0, 1.0)).run()

    chosen = faces["face_id"].astype(int).head(5).tolist()
    app.session_state["explore_isolated"] = chosen  # what a lasso in the 2D view stores
    app.toggle(key="explore_isolate").set_value(True).run()
    _ok(app)
    assert _shown_count(app) == (len(chosen), total)
    app.selectbox(key="explore_view").set_value("GIFs").run()
    _ok(app)
    gifs_shown, gifs_total = _shown_count(app)
    assert gifs_shown == gifs_total and not app.toggle(key="explore_isolate").value
    assert "explore_isolated" not in app.session_state

    app.selectbox(key="explore_view").set_value("Class centroids").run()
    # a class's centroid (numbered by its class id): its history, no face actions
    app.number_input(key="explore_point_id").set_value(explored.classes["Hugo Chavez"]).run()
    _ok(app)
    assert any("make this centroid" in c.value for c in app.caption), [c.value for c in app.caption]
    history = next(d.value for d in app.dataframe if {"operation", "before", "after"} <= set(d.value.columns))
    assert len(history) and not any(b.key == "explore_relabel" for b in app.button)


# -- Review: bulk decisions from the tables, one audit event each, undone in one press ----------------
@pytest.fixture
def reviewed(tmp_path_factory, tmp_path) -> LoopStore:
    """A store of its own (the module's `explored` store stays untouched by these writes)."""
    loop = build_loop_store(session_dir(tmp_path_factory, "giflens-recognition-data"), f"sqlite:///{tmp_path / 'review.db'}")
    refresh_predictions(loop.store)
    return loop


def test_a_turned_down_prediction_is_not_drawn_in_the_predicted_class(reviewed):
    points, _ = face_points(reviewed.store)
    predicted = points[points["status"] == "predicted"]
    rejected, unknown = (int(i) for i in predicted["id"].head(2))
    reject_faces(reviewed.store, [rejected], "reviewer")
    mark_unknown(reviewed.store, [unknown], "reviewer")
    after = face_points(reviewed.store)[0].set_index("id")
    assert after.loc[rejected, ["class", "status"]].tolist() == ["rejected", "rejected"]
    assert after.loc[unknown, ["class", "status"]].tolist() == ["marked unknown", "unknown"]
    kept = predicted["id"].iloc[2:]  # everyone else keeps the class they showed
    assert after.loc[kept, "class"].tolist() == predicted["class"].iloc[2:].tolist()


def _labels(loop: LoopStore, face_ids: list[int]) -> dict[int, tuple]:
    with loop.store() as s:
        rows = s.scalars(select(FaceLabel).where(FaceLabel.face_id.in_(face_ids))).all()
    return {r.face_id: (r.status, r.class_id, r.source, r.editor) for r in rows}


def _events(loop: LoopStore) -> list[AuditEvent]:
    with loop.store() as s:
        return list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def _tick(at: AppTest, key: str, ids: list[int]) -> None:
    """Tick the rows of these ids in a pick table, as an editor clicking the checkboxes does (the
    table's widget key gets a generation suffix once its rows change: see review.pick_table)."""
    widget = next(e for e in at.data_editor if e.key == key or str(e.key).startswith(f"{key}__"))
    table = widget.value
    rows = [i for i, row_id in enumerate(table["id"].tolist()) if int(row_id) in ids]
    assert len(rows) == len(ids), (ids, table["id"].tolist())
    at.session_state[widget.key] = {"edited_rows": {r: {"pick": True} for r in rows}, "added_rows": [], "deleted_rows": []}
    at.run()
    _ok(at)


def _ticked(at: AppTest, key: str) -> list[int]:
    """Face (or track) ids ticked in a pick table now."""
    return sorted(at.session_state[f"{key}__picked"]) if f"{key}__picked" in at.session_state else []


def _explore_face_as_ann(reviewed: LoopStore, monkeypatch, photo: str) -> tuple[AppTest, int]:
    """Explore, signed in as ann, with the face of this photo picked."""
    app = open_app(monkeypatch, reviewed.data_dir, reviewed.url)
    app.switch_page("explorer/pages/explore.py").run()
    _sign_in(app, "ann")
    face = reviewed.face(photo)
    app.number_input(key="explore_point_id").set_value(face).run()
    _ok(app)
    return app, face


def test_approve_is_offered_only_for_a_face_with_a_class(reviewed, monkeypatch):
    """Approve confirms the face's class, or for a face turned down the model's prediction (the model
    was right after all); a face with neither has nothing to approve: relabel instead."""
    app, face = _explore_face_as_ann(reviewed, monkeypatch, "Serena_Williams_0007.jpg")
    assert not app.button(key="explore_approve").disabled
    reject_faces(reviewed.store, [face], "bob")
    app.number_input(key="explore_point_id").set_value(face).run()
    approve = app.button(key="explore_approve")
    assert not approve.disabled and "Serena Williams" in approve.help
    # the model now finds no known person in it (open set): nothing left to approve
    record_predictions(reviewed.store, [Prediction(face, None, 0.4, [])], "open-set-run")
    app.number_input(key="explore_point_id").set_value(None).run()
    app.number_input(key="explore_point_id").set_value(face).run()
    assert app.button(key="explore_approve").disabled
    assert not app.button(key="explore_relabel").disabled


def test_a_decision_on_a_face_changed_meanwhile_is_refused(reviewed, monkeypatch):
    """Explore's buttons and Review's bulk actions act on the label versions the editor was shown: a
    click reruns the page, which reads the store again, but a face another editor decided since is
    refused with a message naming them, not silently overwritten."""
    app, face = _explore_face_as_ann(reviewed, monkeypatch, "Serena_Williams_0007.jpg")
    relabel_faces(reviewed.store, [face], reviewed.classes["Hugo Chavez"], "bob")  # meanwhile
    app.button(key="explore_approve").click().run()
    _ok(app)
    assert any("changed by bob" in e.value for e in app.error), [e.value for e in app.error]
    assert _labels(reviewed, [face])[face][3] == "bob"
    app.button(key="explore_approve").click().run()  # now based on what the page shows: bob's label
    assert not app.error and _labels(reviewed, [face])[face][:2] == ("approved", reviewed.classes["Hugo Chavez"])

    app.switch_page("explorer/pages/review.py").run()
    app.selectbox(key="review_class").set_value("Ariel Sharon").run()
    chosen = [reviewed.face("Ariel_Sharon_0007.jpg"), reviewed.face("Ariel_Sharon_0002.jpg")]
    _tick(app, "review_members", chosen)
    approve_faces(reviewed.store, chosen[:1], "bob")  # meanwhile: the face stays in the list, its label moved on
    app.button(key="review_members_bulk_approve").click().run()
    _ok(app)
    # bob's decision waits for a tick of its own: nothing written, the page names it
    assert any("another editor's decision" in w.value and "bob" in w.value for w in app.warning), \
        [w.value for w in app.warning]
    assert _labels(reviewed, chosen)[chosen[0]][3] == "bob" and _labels(reviewed, chosen)[chosen[1]][3] != "ann"
    # a ticked face that leaves the list meanwhile takes its tick with it, and the page says so
    reject_faces(reviewed.store, chosen[1:], "bob")
    app.selectbox(key="review_class").set_value("Ariel Sharon").run()
    _ok(app)
    assert any(str(chosen[1]) in w.value and "left this list" in w.value for w in app.warning), [w.value for w in app.warning]
    assert app.button(key="review_members_bulk_approve").label == "Approve 1"  # only the face still listed


def test_track_points_carry_their_predicted_persons_attributes(reviewed):
    from explorer.views import track_points
    from labeling.classes import set_class_attributes

    serena = reviewed.classes["Serena Williams"]
    set_class_attributes(reviewed.store, serena, "ann", gender="female", birth_year=1981, country="United States")
    points, _ = track_points(reviewed.store)
    tracks = tracks_frame(reviewed.store).set_index("track_id")
    hers = points[points["id"].map(tracks["predicted_class_id"]) == serena]
    others = points[points["id"].map(tracks["predicted_class_id"]).isna()]
    assert len(hers) and set(zip(hers["gender"], hers["decade"], hers["country"])) == {("female", "1980s", "united states")}  # the Bias audit's group
    assert set(others["gender"]) <= {"unknown"}


def test_the_tracks_queue_names_the_person_that_approving_the_track_approves(reviewed):
    """The queue shows each track's own prediction (its mean embedding), which is what `label_tracks`
    approves, not the majority of its faces' predictions, which can name someone else."""
    from sqlalchemy import update

    from labeling.face_labels import label_tracks
    from labeling.recognition import track_predictions_frame
    from labeling.schema import Track

    own = track_predictions_frame(reviewed.store).set_index("track_id")
    tracks = tracks_frame(reviewed.store).set_index("track_id")
    assert own["predicted_at"].notna().all() and len(tracks) == len(own)
    assert tracks["predicted_class_id"].equals(own.loc[tracks.index, "predicted_class_id"])
    assert np.allclose(tracks["predicted_confidence"], own.loc[tracks.index, "predicted_confidence"])
    named = tracks[tracks["predicted_class_id"].notna() & ~tracks["has_decision"]]
    track = int(named.index[0])
    other = next(c for c in reviewed.classes.values() if c != named.loc[track, "predicted_class_id"])
    with reviewed.store.begin() as s:  # the whole track names another person than its faces do
        s.execute(update(Track).where(Track.id == track).values(predicted_class_id=other))
    assert tracks_frame(reviewed.store).set_index("track_id").loc[track, "predicted_class_id"] == other
    label_tracks(reviewed.store, [track], "approve", "ann")
    faces = faces_frame(reviewed.store)
    assert set(faces.loc[faces["track_id"] == track, "class_id"]) == {other}


def test_a_lookalike_pair_merges_from_the_review_page(reviewed, monkeypatch):
    from labeling.schema import CelebrityClass

    app = open_app(monkeypatch, reviewed.data_dir, reviewed.url)
    app.switch_page("explorer/pages/review.py").run()
    _sign_in(app, "merger")
    pair = app.selectbox(key="review_lookalike_pair").value
    source, target = reviewed.classes[pair[0]], reviewed.classes[pair[1]]
    merge = app.button(key=f"review_merge_{pair[0]}_{pair[1]}")
    assert merge.disabled  # two look-alikes are not one person until the editor says so
    app.checkbox(key=f"review_merge_same_{pair[0]}_{pair[1]}").check().run()
    app.button(key=f"review_merge_{pair[0]}_{pair[1]}").click().run()
    _ok(app)
    assert not app.error, [e.value for e in app.error]
    with reviewed.store() as s:
        merged = s.get(CelebrityClass, source)
        assert (merged.status, merged.merged_into_id) == ("retired", target)
        assert not s.scalars(select(FaceLabel).where(FaceLabel.class_id == source)).all()
    assert _events(reviewed)[-1].operation == "merge_classes" and _events(reviewed)[-1].editor == "merger"


def test_review_bulk_approve_is_one_event_and_one_undo(reviewed, monkeypatch):
    app = open_app(monkeypatch, reviewed.data_dir, reviewed.url)
    app.switch_page("explorer/pages/review.py").run()
    _ok(app)
    _sign_in(app, "reviewer")

    # a class table: the unlabeled photo the model named Ariel Sharon, and an imported photo of his
    app.selectbox(key="review_class").set_value("Ariel Sharon").run()
    _ok(app)
    chosen = [reviewed.face("Ariel_Sharon_0007.jpg"), reviewed.face("Ariel_Sharon_0001.jpg")]
    before, events = _labels(reviewed, chosen), _events(reviewed)
    assert before[chosen[0]][0] == "predicted" and before[chosen[1]][2:] == ("import", "importer")
    _tick(app, "review_members", chosen)
    approve = app.button(key="review_members_bulk_approve")
    assert approve.label == "Approve 2"
    approve.click().run()
    _ok(app)
    assert not app.error, [e.value for e in app.error]
    ariel = reviewed.classes["Ariel Sharon"]
    assert _labels(reviewed, chosen) == {f: ("approved", ariel, "editor", "reviewer") for f in chosen}
    new = _events(reviewed)[len(events):]
    assert [(e.operation, e.editor) for e in new] == [("approve_faces", "reviewer")]
    assert set(new[0].after) == {f"face:{f}" for f in chosen}
    assert _ticked(app, "review_members") == []  # ticks cleared: the recomputed rows are not what was chosen

    app.button(key="review_undo").click().run()
    _ok(app)
    assert any(m.value.startswith("Undone: undo of operation") for m in app.success), [m.value for m in app.success]
    assert _labels(reviewed, chosen) == before
    assert [e.operation for e in _events(reviewed)[len(events):]] == ["approve_faces", "undo"]

    # the tracks queue lists the people of GIFs; photos (one face, one track) join on request
    kinds = tracks_frame(reviewed.store).set_index("track_id")["media_kind"]
    listed = lambda: set(kinds.loc[next(e for e in app.data_editor if str(e.key).startswith("review_tracks")).value["id"]])
    assert listed() == {"gif"}
    app.toggle(key="review_tracks_photos").set_value(True).run()
    assert listed() == {"gif", "image"}

    # two tracks ticked and approved are one operation, undone by one press
    tracks = tracks_frame(reviewed.store)
    named = tracks[tracks["predicted_class_id"].notna() & ~tracks["has_decision"]]
    picked = named["track_id"].astype(int).tolist()
    members = faces_frame(reviewed.store)
    faces = members.loc[members["track_id"].isin(picked), "face_id"].astype(int).tolist()
    assert len(picked) >= 2 and len(faces) >= len(picked)
    before, events = _labels(reviewed, faces), _events(reviewed)
    _tick(app, "review_tracks", picked)
    app.button(key="review_tracks_approve").click().run()
    _ok(app)
    assert not app.error, [e.value for e in app.error]
    assert _ticked(app, "review_tracks") == []
    assert {f: v[0] for f, v in _labels(reviewed, faces).items()} == {f: "approved" for f in faces}
    new = _events(reviewed)[len(events):]
    assert [(e.operation, e.editor) for e in new] == [("approve_tracks", "reviewer")]
    assert set(new[0].after) == {f"face:{f}" for f in faces}
    app.button(key="review_undo").click().run()
    _ok(app)
    assert _labels(reviewed, faces) == before
    # a track the model could not name has nothing to approve: the button says so instead of failing
    tracks = tracks_frame(reviewed.store)
    unnamed = tracks.loc[tracks["predicted_class_id"].isna() & ~tracks["has_decision"], "track_id"].astype(int).tolist()
    assert unnamed, "the fixture's GIFs hold tracks of people outside the class list"
    _tick(app, "review_tracks", [unnamed[0], picked[0]])
    assert app.button(key="review_tracks_approve").disabled
    assert not app.button(key="review_tracks_relabel").disabled
