"""Round 10: the face tracks view of Explore (explorer/views.py `track_points`) offers Approve exactly
where approving the track succeeds, and names a track nobody decided in the faces view's words.

Real stores (test_recognition_loop.build_loop_store: confirmed photos, strangers and GIFs with faces),
real predictions (the centroid classifier of `refresh_predictions`), real writes (`label_track`, what
Explore's Approve button calls, with no class)."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import open_app, session_dir
from explorer.views import face_points, track_points
from labeling.errors import ValidationError
from labeling.face_labels import label_track
from labeling.queries import UNLABELED, faces_frame, tracks_frame
from labeling.recognition import refresh_predictions
from test_app_decision_ticks_and_filters import _explore
from test_app_pages import no_exception, sign_in
from test_recognition_loop import LoopStore, build_loop_store


def _build(tmp_path_factory, name: str) -> LoopStore:
    folder = tmp_path_factory.mktemp(name)
    return build_loop_store(session_dir(tmp_path_factory, "giflens-recognition-data"), f"sqlite:///{folder / 'store.db'}")


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> LoopStore:
    """A store the model predicted (faces and tracks); tests here only decide tracks nobody decided yet."""
    loop = _build(tmp_path_factory, "round10-predicted")
    refresh_predictions(loop.store)
    return loop


@pytest.fixture
def fresh(tmp_path_factory) -> LoopStore:
    """A store of its own, before any prediction (the test approves every track of it)."""
    return _build(tmp_path_factory, "round10-fresh")


def _points(loop: LoopStore) -> pd.DataFrame:
    return track_points(loop.store)[0].set_index("id")


def _undecided(loop: LoopStore, named: bool) -> list[int]:
    """Tracks nobody decided whose prediction names a person (named) or says unknown."""
    tracks = tracks_frame(loop.store)
    keep = (~tracks["has_decision"] & tracks["predicted_confidence"].notna()
            & (tracks["predicted_class_id"].notna() == named))
    return tracks.loc[keep, "track_id"].astype(int).tolist()


def _approves(loop: LoopStore, track: int, approve_class: object) -> bool:
    """Whether approving the track as Explore does (the point's approve_class: the class editors decided, or
    none for the model's person) succeeds; a refusal writes nothing."""
    try:
        label_track(loop.store, track, "approve", "ann", class_id=None if pd.isna(approve_class) else int(approve_class))
    except ValidationError:
        return False
    return True


def _assert_approve_offered_exactly_where_it_succeeds(loop: LoopStore) -> None:
    """Every track, one by one: the view's nameable, read before, is what approving it does. The tracks
    are of one face model, so approving one changes no other track's faces."""
    points = _points(loop)
    nameable = points["nameable"]
    assert nameable.any() and not nameable.all(), nameable.value_counts()  # both kinds are checked
    outcome = {int(t): _approves(loop, int(t), points.loc[t, "approve_class"]) for t in nameable.index}
    wrong = {t: (bool(nameable[t]), done) for t, done in outcome.items() if bool(nameable[t]) != done}
    assert not wrong, wrong  # track -> (Approve offered, approving succeeded)


def test_undecided_tracks_speak_the_faces_views_words(predicted):
    named, unknown = _undecided(predicted, True), _undecided(predicted, False)
    assert named and unknown
    points = _points(predicted)
    assert points.loc[named, "nameable"].all() and not points.loc[unknown, "nameable"].any()
    assert set(points.loc[named + unknown, "status"]) == {"predicted"}
    # every undecided track shows the status its faces show in the faces view: one legend, one filter
    faces = face_points(predicted.store)[0].set_index("id")
    members = faces_frame(predicted.store).set_index("face_id")["track_id"]
    undecided = tracks_frame(predicted.store).query("not has_decision")["track_id"].astype(int)
    for track in undecided:
        assert {points.loc[track, "status"]} == set(faces.loc[members.index[members == track], "status"]), track
    assert set(points.loc[undecided, "status"]) <= set(faces["status"]) <= {"predicted", UNLABELED, "approved",
                                                                            "relabeled", "rejected", "unknown"}
    assert "undecided" not in set(points["status"])


def test_before_any_prediction_approve_follows_each_faces_label(fresh):
    """No track prediction stands: approving gives each face its own class, else its prediction, so an
    editor's relabelled track can be approved and a track of faces nobody named cannot."""
    gif_tracks = tracks_frame(fresh.store).query("media_kind == 'gif'")["track_id"].astype(int).tolist()
    relabeled, untouched = gif_tracks[:2]
    before = _points(fresh)
    assert tuple(before.loc[untouched, ["status", "nameable"]]) == (UNLABELED, False)
    assert before.loc[before["status"] == "approved", "nameable"].all()  # the confirmed photos
    label_track(fresh.store, relabeled, "relabel", "ann", class_id=fresh.classes["Serena Williams"])
    assert tuple(_points(fresh).loc[relabeled, ["class", "status", "nameable"]]) == ("Serena Williams", "relabeled", True)
    _assert_approve_offered_exactly_where_it_succeeds(fresh)
    assert set(faces_frame(fresh.store, track_ids=[relabeled])["class_name"]) == {"Serena Williams"}


def test_with_predictions_approve_confirms_what_the_point_shows(fresh):
    """Approving an undecided predicted track gives its faces the person the model names for the whole track
    (one the model calls unknown has nothing to approve); a track an editor relabelled is approved as the
    class its point shows, the editors', even when the model calls it unknown."""
    refresh_predictions(fresh.store)
    track = _undecided(fresh, named=False)[0]
    label_track(fresh.store, track, "relabel", "ann", class_id=fresh.classes["Serena Williams"])
    assert tuple(_points(fresh).loc[track, ["class", "status", "nameable"]]) == ("Serena Williams", "relabeled", True)
    _assert_approve_offered_exactly_where_it_succeeds(fresh)
    faces = faces_frame(fresh.store, track_ids=[track])
    assert set(faces["label_status"]) == {"approved"} and set(faces["class_name"]) == {"Serena Williams"}


def test_explore_disables_approve_of_an_undecided_track_the_model_calls_unknown(predicted, monkeypatch):
    track = _undecided(predicted, named=False)[-1]
    named = _undecided(predicted, named=True)[0]
    app = open_app(monkeypatch, predicted.data_dir, predicted.url)
    sign_in(_explore(app, "Face tracks"), "bob")
    app.number_input(key="explore_point_id").set_value(track).run()
    no_exception(app)
    approve = app.button(key="explore_approve")
    assert approve.disabled and "the model names no one for this track" in approve.help, approve.help
    app.number_input(key="explore_point_id").set_value(named).run()
    no_exception(app)
    assert not app.button(key="explore_approve").disabled
