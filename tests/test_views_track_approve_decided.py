"""Round 10b: Approve on a face track an editor decided confirms what the track's point shows (the editor's
class), not the model's prediction for the track, as a face's Approve confirms its current label.

Real stores (test_recognition_loop.build_loop_store), real predictions (`refresh_predictions`), real writes
through Explore's own buttons (AppTest), checked in the store afterwards."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import open_app
from explorer.views import face_points, track_points
from labeling.face_labels import label_track
from labeling.queries import faces_frame, tracks_frame
from labeling.recognition import refresh_predictions
from test_app_decision_ticks_and_filters import _explore, lasso  # noqa: F401  (lasso: a fixture the bulk test uses)
from test_app_pages import no_exception, sign_in
from test_recognition_loop import LoopStore
from test_views_track_approve import _build, _undecided


@pytest.fixture
def predicted(tmp_path_factory) -> LoopStore:
    """A store of its own the model predicted (faces and tracks): each test decides tracks of it."""
    loop = _build(tmp_path_factory, "round10b-predicted")
    refresh_predictions(loop.store)
    return loop


def _points(loop: LoopStore) -> pd.DataFrame:
    return track_points(loop.store)[0].set_index("id")


def _predicted_class(loop: LoopStore, track: int) -> int | None:
    value = tracks_frame(loop.store).set_index("track_id").loc[track, "predicted_class_id"]
    return None if pd.isna(value) else int(value)


def _other_class(loop: LoopStore, *not_these: int | None) -> tuple[str, int]:
    """A class (name, id) of the store that is none of `not_these`."""
    return next((name, c) for name, c in sorted(loop.classes.items()) if c not in not_these)


def _labels(loop: LoopStore, track: int) -> set[tuple[str, str]]:
    faces = faces_frame(loop.store, track_ids=[track])
    return set(zip(faces["class_name"], faces["label_status"]))


def _open_track(loop: LoopStore, monkeypatch, track: int):
    app = open_app(monkeypatch, loop.data_dir, loop.url)
    sign_in(_explore(app, "Face tracks"), "bob")
    app.number_input(key="explore_point_id").set_value(track).run()
    no_exception(app)
    return app


def test_approving_a_relabeled_track_keeps_the_editors_class(predicted, monkeypatch):
    """The model names Y for the track, an editor relabelled it to X: the point shows X, Approve is offered
    and, pressed, confirms X on every face (approved), never Y."""
    track = _undecided(predicted, named=True)[0]
    model_says = _predicted_class(predicted, track)
    name, chosen = _other_class(predicted, model_says)
    label_track(predicted.store, track, "relabel", "ann", class_id=chosen)
    point = _points(predicted).loc[track]
    assert (point["class"], point["status"], bool(point["nameable"]), point["approve_class"]) == \
        (name, "relabeled", True, chosen)
    app = _open_track(predicted, monkeypatch, track)
    app.checkbox(key=f"explore_point_override_{track}").check().run()  # the track's faces carry ann's decision
    approve = app.button(key="explore_approve")
    assert not approve.disabled and name in approve.help, approve.help
    approve.click().run()
    no_exception(app)
    assert _labels(predicted, track) == {(name, "approved")}
    assert _points(predicted).loc[track, "class"] == name


def test_a_relabeled_track_the_model_calls_unknown_can_be_approved(predicted, monkeypatch):
    """Whatever the model says, a track decided with a class has that class to confirm."""
    track = _undecided(predicted, named=False)[0]
    name, chosen = _other_class(predicted)
    label_track(predicted.store, track, "relabel", "ann", class_id=chosen)
    assert tuple(_points(predicted).loc[track, ["class", "nameable"]]) == (name, True)
    app = _open_track(predicted, monkeypatch, track)
    app.checkbox(key=f"explore_point_override_{track}").check().run()
    app.button(key="explore_approve").click().run()
    no_exception(app)
    assert _labels(predicted, track) == {(name, "approved")}


def test_undecided_and_model_agreeing_tracks_send_no_class(predicted):
    """Approving an undecided track still approves the model's person (no class sent), and so does a
    decided track the model names the same person for: that approval already confirms what it shows."""
    named = _undecided(predicted, named=True)
    agreed = named[1]
    label_track(predicted.store, agreed, "approve", "ann")  # the model's person, confirmed
    points = _points(predicted)
    assert points.loc[named, "approve_class"].isna().all()
    assert points.loc[agreed, "status"] == "approved" and bool(points.loc[agreed, "nameable"])
    # faces, GIFs and centroids carry the column too, empty: a face's Approve confirms its own label
    assert face_points(predicted.store)[0]["approve_class"].isna().all()


def test_bulk_approve_sends_the_one_decided_class_and_refuses_a_mix(predicted, monkeypatch, lasso):  # noqa: F811
    """Two tracks relabelled to X approve together as X; with a third relabelled to another class (or an
    undecided one) the selection needs two classes, and one Approve is refused with a help saying why."""
    undecided, *named = _undecided(predicted, named=True)
    first, second, third = (named + _undecided(predicted, named=False))[:3]
    # X is none of the model's classes for these tracks, the undecided one's included: that mix needs two classes
    models = {_predicted_class(predicted, t) for t in (first, second, third, undecided)}
    name, chosen = _other_class(predicted, *models)
    other, other_id = _other_class(predicted, *models, chosen)
    for track in (first, second):
        label_track(predicted.store, track, "relabel", "ann", class_id=chosen)
    label_track(predicted.store, third, "relabel", "ann", class_id=other_id)
    app = open_app(monkeypatch, predicted.data_dir, predicted.url)
    sign_in(_explore(app, "Face tracks"), "bob")
    for mix in ([first, third], [first, undecided]):
        lasso[:] = mix
        app.run()
        no_exception(app)
        approve = app.button(key="explore_bulk_tracks_approve")
        assert approve.disabled and "One Approve confirms one class" in approve.help, approve.help
    lasso[:] = [first, second]
    app.run()
    app.checkbox(key=f"explore_bulk_tracks_override_{hash((first, second))}").check().run()
    approve = app.button(key="explore_bulk_tracks_approve")
    assert not approve.disabled and name in approve.help, approve.help
    approve.click().run()
    no_exception(app)
    assert _labels(predicted, first) | _labels(predicted, second) == {(name, "approved")}
    assert _labels(predicted, third) == {(other, "relabeled")}
