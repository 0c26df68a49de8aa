"""App pages: changes between a table's drawing and the tick, and export paths, driven headless with streamlit.testing.v1.AppTest on the
fixture store (real photos and a real GIF, see test_queries.build_fixture_store); the second editor ("bob")
works through the labeling operations the pages call:

- Review's bulk actions refuse a face another editor decided between the table's drawing and the tick;
- Classes -> Add class names the seed faces editors decided and changes them only after a tick;
- Export with a relative data folder writes where it proposes, and the next export goes to a new folder;
- the face tracks view shows the editors' decisions, not only the model's prediction;
- Classes -> Split refuses, naming them, picked faces that left the class meanwhile;
- a refused retrain is not shown above the previous run's success;
- a `~user` path the server cannot expand is refused, not a traceback;
- retrain notes and export warnings show class names as typed, never as markdown.
"""
from __future__ import annotations

import re

import pwd
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import open_app, session_dir
from explorer.views import track_points
from labeling.classes import add_class, set_class_status
from labeling.face_labels import (Prediction, approve_faces, label_track, mark_unknown, record_predictions,
                                  reject_faces, relabel_faces)
from labeling.pages.common import plain
from labeling.queries import classes_frame, faces_frame, tracks_frame
import test_app_decision_ticks_and_filters
from test_app_decision_ticks_and_filters import _explore, _tick
from test_app_pages import button, errors, messages, no_exception, sign_in

fixture_store = test_app_decision_ticks_and_filters.fixture_store  # a store of its own per test (they write) ...
app = test_app_decision_ticks_and_filters.app  # ... and a fresh app session (no editor) on it
REVIEW, CLASSES, EXPORT, INGEST = ("explorer/pages/review.py", "labeling/pages/classes.py",
                                   "labeling/pages/export.py", "labeling/pages/ingest.py")
EVIL = "**Evil** [click me](mailto:x@example.com)"  # a class name that markdown would make bold and a link


def _label(fx, face: int) -> tuple[str, str | None, str | None]:
    row = faces_frame(fx.store).set_index("face_id").loc[face]
    return row["label_status"], row["class_name"] if isinstance(row["class_name"], str) else None, row["editor"]


def _table(at: AppTest, key: str):
    return next(e for e in at.data_editor if e.key == key or str(e.key).startswith(f"{key}__")).value


# -- 1. Review: a decision made before the tick is refused, not overwritten ---------------------------------
def test_review_bulk_action_refuses_a_face_decided_between_the_drawing_and_the_tick(app, fixture_store):
    sign_in(app, "ann")
    app.switch_page(REVIEW).run()
    face = int(_table(app, "review_members")["id"].iloc[0])
    approve_faces(fixture_store.store, [face], "bob")  # meanwhile: the row looks the same
    _tick(app, "review_members", [face])
    no_exception(app)
    # bob's decision waits for a tick of its own: the buttons wait, and the page names it
    assert any("another editor's decision" in w.value for w in app.warning), [w.value for w in app.warning]
    assert app.button(key="review_members_bulk_unknown").disabled
    app.checkbox(key="review_members_bulk_override").check().run()
    app.button(key="review_members_bulk_unknown").click().run()
    no_exception(app)
    # ticked for bob's decision, the press still acts on the version the face was drawn at: refused, naming bob
    assert any(e.startswith("Conflict:") and "bob" in e for e in errors(app)), errors(app)
    assert _label(fixture_store, face)[0::2] == ("approved", "bob")
    # the refusal showed the table as it is now: the next press acts on that
    app.button(key="review_members_bulk_unknown").click().run()
    assert not errors(app), errors(app)
    assert _label(fixture_store, face)[0::2] == ("unknown", "ann")


def test_review_tracks_refuse_a_track_changed_between_the_drawing_and_the_tick(app, fixture_store):
    tracks = tracks_frame(fixture_store.store)
    track = int(tracks.loc[(tracks["media_kind"] == "gif") & ~tracks["has_decision"], "track_id"].iloc[0])
    face = int(faces_frame(fixture_store.store, track_ids=[track])["face_id"].iloc[0])
    sign_in(app, "ann")
    app.switch_page(REVIEW).run()
    ariel = fixture_store.classes["Ariel Sharon"]  # meanwhile a prediction run names someone else for one face
    record_predictions(fixture_store.store, [Prediction(face, ariel, 0.9, [(ariel, 0.9)])], "another-run")
    _tick(app, "review_tracks", [track])
    app.button(key="review_tracks_unknown").click().run()
    no_exception(app)
    assert any(e.startswith("Conflict:") for e in errors(app)), errors(app)
    assert _label(fixture_store, face)[0] == "predicted"  # the model's word still, nobody's decision


# -- 2. Classes -> Add class: seed faces editors decided ----------------------------------------------------
def test_seed_faces_editors_decided_are_named_and_change_only_after_a_tick(app, fixture_store):
    approved, rejected = fixture_store.gif_faces[:2]
    approve_faces(fixture_store.store, [approved], "bob")
    reject_faces(fixture_store.store, [rejected], "bob")
    sign_in(app, "ann")
    app.switch_page(CLASSES).run()
    app.text_input(key="add_class_name").input("New Person")
    app.text_input(key="add_class_seeds").input(f"{approved}, {rejected}")
    button(app, "Add class").click().run()
    no_exception(app)
    warned = [w.value for w in app.warning if "seed faces carry an editor's decision" in w.value]
    assert warned and f"face {approved} approved as 'Serena Williams' by bob" in warned[0], warned
    assert f"face {rejected} rejected by bob" in warned[0]
    assert "New Person" not in set(classes_frame(fixture_store.store)["name"])

    # ticked, but bob decided again since the warning: named again, nothing written
    app.checkbox(key="add_class_override").check()
    mark_unknown(fixture_store.store, [approved], "bob")
    button(app, "Add class").click().run()
    warned = [w.value for w in app.warning if "seed faces carry an editor's decision" in w.value]
    assert warned and f"face {approved} marked unknown by bob" in warned[0], warned
    assert "New Person" not in set(classes_frame(fixture_store.store)["name"])

    button(app, "Add class").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    assert {_label(fixture_store, f) for f in (approved, rejected)} == {("relabeled", "New Person", "ann")}


# -- 3. Export with a relative data folder -------------------------------------------------------------------
def test_export_with_a_relative_data_folder_writes_where_it_proposes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reldata").mkdir()
    at = open_app(monkeypatch, Path("reldata"), "sqlite:///reldata/giflens.db")
    sign_in(at, "ann")
    at.switch_page(EXPORT).run()
    exports = (tmp_path / "reldata" / "exports").resolve()
    for run in (1, 2):
        proposed = Path(at.text_input(key="export_out_dir").value)
        assert proposed.parent == exports, proposed
        button(at, "Run export").click().run()
        no_exception(at)
        assert not errors(at), errors(at)
        assert (proposed / "manifest.json").is_file()
        assert len(list(exports.iterdir())) == run
    assert not (tmp_path / "reldata" / "reldata").exists()


# -- 4. the face tracks view shows the editors' decisions ----------------------------------------------------
def test_track_points_show_the_editors_decision(app, fixture_store):
    tracks = tracks_frame(fixture_store.store)
    gif_track = int(tracks.loc[tracks["media_kind"] == "gif", "track_id"].iloc[0])
    label_track(fixture_store.store, gif_track, "relabel", "ann", class_id=fixture_store.classes["Ariel Sharon"])
    points = track_points(fixture_store.store)[0].set_index("id")
    assert tuple(points.loc[gif_track, ["class", "status", "source", "gender", "country"]]) == (
        "Ariel Sharon", "relabeled", "editor", "male", "israel")  # the Bias audit's group
    # a photo's track shows its face's confirmed class, not "unlabeled"
    faces = faces_frame(fixture_store.store).set_index("track_id")
    for track in tracks.loc[tracks["media_kind"] == "image", "track_id"].astype(int):
        face = faces.loc[track]
        if face["label_status"] == "relabeled":
            assert tuple(points.loc[track, ["class", "status"]]) == (face["class_name"], "relabeled")

    _explore(app, "Face tracks")
    app.number_input(key="explore_point_id").set_value(gif_track).run()
    no_exception(app)
    assert any(m.value.startswith("**Ariel Sharon** · status **relabeled**") for m in app.markdown), \
        [m.value for m in app.markdown if "status" in m.value]

    label_track(fixture_store.store, gif_track, "reject", "bob")
    assert tuple(track_points(fixture_store.store)[0].set_index("id").loc[gif_track, ["class", "status"]]) == (
        "rejected", "rejected")


# -- 5. Classes -> Split: picked faces that left the class --------------------------------------------------
def test_split_refuses_picked_faces_that_left_the_class(app, fixture_store):
    serena, ariel = fixture_store.classes["Serena Williams"], fixture_store.classes["Ariel Sharon"]
    sign_in(app, "ann")
    app.switch_page(CLASSES).run()
    app.selectbox(key="class_selected").set_value(serena).run()
    picked = faces_frame(fixture_store.store, class_id=serena)["face_id"].astype(int).tolist()[:3]
    app.multiselect(key=f"split_faces_{serena}").set_value(picked)
    app.text_input(key=f"split_name_{serena}").input("Serena Williams (young)")
    reject_faces(fixture_store.store, picked[:1], "bob")
    relabel_faces(fixture_store.store, picked[1:2], ariel, "bob")
    button(app, "Split").click().run()
    no_exception(app)
    refused = [e for e in errors(app) if e.startswith("Nothing was split")]
    assert refused and f"face {picked[0]} rejected by bob" in refused[0], errors(app)
    assert f"face {picked[1]} relabeled as 'Ariel Sharon' by bob" in refused[0]
    assert "Serena Williams (young)" not in set(classes_frame(fixture_store.store)["name"])
    assert app.multiselect(key=f"split_faces_{serena}").value == picked[2:]  # what is left of the choice

    button(app, "Split").click().run()
    assert not errors(app), errors(app)
    assert _label(fixture_store, picked[2])[1] == "Serena Williams (young)"
    assert _label(fixture_store, picked[0])[0::2] == ("rejected", "bob")
    assert _label(fixture_store, picked[1])[1:] == ("Ariel Sharon", "bob")


# -- 6 and 8. Retrain: a refusal after a success; notes with class names ----------------------------------
@pytest.mark.slow
def test_retrain_notes_are_plain_and_a_refusal_hides_the_previous_success(tmp_path_factory, tmp_path, monkeypatch):
    from test_recognition_loop import build_loop_store

    loop = build_loop_store(session_dir(tmp_path_factory, "giflens-recognition-data"), f"sqlite:///{tmp_path / 'rt.db'}",
                            people={"Ariel_Sharon": 4, "Serena_Williams": 4, "Colin_Powell": 4},
                            extra=["Ariel_Sharon/Ariel_Sharon_0007.jpg"], strangers=[], gifs=[])
    add_class(loop.store, EVIL, "bob", seed_face_ids=[loop.face("Ariel_Sharon_0007.jpg")])  # one face: skipped
    at = open_app(monkeypatch, loop.data_dir, loop.url)
    sign_in(at, "ann")
    at.switch_page(EXPORT).run()
    button(at, "Retrain").click().run()
    no_exception(at)
    assert any(s.value.startswith("Retrained:") for s in at.success), errors(at)
    # faces looked at and faces changed, as `giflens retrain` says them (faces= changed=)
    assert any(re.search(r"\d+ undecided faces predicted \(\d+ changed\)\.$", s.value) for s in at.success), at.success
    notes = [i.value for i in at.info if "skipped" in i.value]

    for name in ("Serena Williams", "Colin Powell"):
        set_class_status(loop.store, loop.classes[name], "retired", "bob")
    button(at, "Retrain").click().run()
    no_exception(at)
    assert any(e.startswith("Refused:") for e in errors(at)), errors(at)
    assert not [s.value for s in at.success if s.value.startswith("Retrained:")] and not at.metric
    assert notes and plain(repr(EVIL)) in notes[0] and repr(EVIL) not in notes[0], notes  # the first run's


def test_export_warnings_show_class_names_as_typed(app, fixture_store):
    # the GIF's faces are one group that goes to one side whole: the class gets no validation face, and is named
    add_class(fixture_store.store, EVIL, "bob", seed_face_ids=fixture_store.gif_faces)
    sign_in(app, "ann")
    app.switch_page(EXPORT).run()
    button(app, "Run export").click().run()
    no_exception(app)
    named = [w.value for w in app.warning if "no validation face" in w.value]
    assert named and plain(repr(EVIL)) in named[0] and repr(EVIL) not in named[0], messages(app)


# -- 7. a ~user path the server cannot expand ---------------------------------------------------------------
def test_a_path_of_an_unknown_users_home_is_refused_not_a_traceback(app):
    user = "giflens-no-such-user"
    with pytest.raises(KeyError):
        pwd.getpwnam(user)
    sign_in(app, "ann")
    for page, box, label in ((INGEST, "ingest_folder", "Ingest folder"), (EXPORT, "export_out_dir", "Run export")):
        app.switch_page(page).run()
        app.text_input(key=box).input(f"~{user}/media")
        button(app, label).click().run()
        no_exception(app)
        assert any("cannot expand" in e and user in e for e in errors(app)), (page, errors(app))
