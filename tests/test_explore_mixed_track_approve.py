"""Explore: Approve is not offered on a track whose faces come out as different classes with no
standing track prediction (it would give each face its own class under a point showing one); a bulk Approve
disabled by faces of a retired class says so rather than "neither a class nor a prediction"; a bulk tag's
notice quotes the tag as stored.

Real stores (test_recognition_loop.build_loop_store, the fixture store), real predictions, the pages' own
buttons (AppTest)."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import open_app
from explorer.views import (MIXED, RETIRED, UNCLASSED, face_points, track_faces, track_predictions, track_refusals,
                            unnameable_help, unnameable_tracks_help, view_points)
from labeling.classes import retire_class
from labeling.face_labels import Prediction, record_predictions
from labeling.queries import faces_frame, media_tags_frame, tracks_frame
from test_app_decision_ticks_and_filters import _explore, app, fixture_store, lasso  # noqa: F401  (fixtures the tests use)
from test_app_pages import button, no_exception, sign_in
from test_recognition_loop import LoopStore
from test_views_track_approve import _build
from test_views_track_approve_decided import _open_track, _points


@pytest.fixture
def split(tmp_path_factory) -> tuple[LoopStore, int, int, int, int]:
    """A store before any track prediction: GIF track `mixed` has its first face predicted X and the others Y,
    track `whole` every face predicted X. Returns (loop, mixed, whole, x, y)."""
    loop = _build(tmp_path_factory, "round12-explore")
    tracks = tracks_frame(loop.store).query("media_kind == 'gif' and n_faces > 1")
    mixed, whole = (int(t) for t in tracks["track_id"].iloc[:2])
    x, y = list(loop.classes.values())[:2]
    faces = faces_frame(loop.store, track_ids=[mixed, whole])
    first, *rest = faces.loc[faces["track_id"] == mixed, "face_id"].astype(int).tolist()
    every = faces.loc[faces["track_id"] == whole, "face_id"].astype(int).tolist()
    record_predictions(loop.store, [Prediction(f, c, 0.9, [(c, 0.9)])
                                    for f, c in [(first, x), *((f, y) for f in rest), *((f, x) for f in every)]], "v12")
    return loop, mixed, whole, x, y


def test_a_track_whose_faces_differ_is_not_nameable(split):
    """No standing track prediction, faces X and Y: approving would give each face its own class, not the one
    the point shows, so the track is not nameable and the reason is MIXED; a track of X faces stays nameable."""
    loop, mixed, whole, _, _ = split
    points = _points(loop)
    assert not bool(points.loc[mixed, "nameable"]) and pd.isna(points.loc[mixed, "approves"])
    assert bool(points.loc[whole, "nameable"])
    tracks = tracks_frame(loop.store).set_index("track_id").loc[[mixed, whole]].reset_index()
    faces = track_faces(loop.store, tracks)
    assert track_refusals(tracks, faces, None, track_predictions(loop.store, tracks), set()) == [MIXED, None]


def test_point_details_refuse_approving_a_mixed_track(split, monkeypatch):
    loop, mixed, _, _, _ = split
    page = _open_track(loop, monkeypatch, mixed)
    approve = page.button(key="explore_approve")
    assert approve.disabled and "predicted as different classes" in approve.help, approve.help


def test_bulk_approve_refuses_a_mixed_track_naming_the_cause(split, monkeypatch, lasso):  # noqa: F811
    loop, mixed, whole, _, _ = split
    page = open_app(monkeypatch, loop.data_dir, loop.url)
    sign_in(_explore(page, "Face tracks"), "bob")
    lasso[:] = [whole]
    page.run()
    no_exception(page)
    assert not page.button(key="explore_bulk_tracks_approve").disabled
    lasso[:] = [mixed, whole]
    page.run()
    no_exception(page)
    approve = page.button(key="explore_bulk_tracks_approve")
    assert approve.disabled, approve.help
    assert f"the faces of track(s) {mixed} are predicted as different classes" in approve.help, approve.help
    assert "neither a class nor a prediction" not in approve.help and "retired" not in approve.help, approve.help


def test_bulk_approve_of_faces_of_a_retired_class_says_so(split, monkeypatch, lasso):  # noqa: F811
    """Faces predicted Y, Y retired: they have a prediction, so the help says their class is retired (naming
    it), not that they have neither a class nor a prediction."""
    loop, mixed, _, _, y = split
    retire_class(loop.store, y, "ann")
    faces = faces_frame(loop.store, track_ids=[mixed])
    gone = sorted(faces.loc[faces["predicted_class_id"] == y, "face_id"].astype(int))
    name = next(n for n, c in loop.classes.items() if c == y)
    assert not face_points(loop.store)[0].set_index("id").loc[gone, "nameable"].any()
    page = open_app(monkeypatch, loop.data_dir, loop.url)
    sign_in(_explore(page), "bob")
    lasso[:] = gone
    page.run()
    no_exception(page)
    approve = page.button(key="explore_bulk_approve")
    assert approve.disabled
    assert approve.help.startswith(f"{len(gone)} of the faces are of retired class {name!r} (faces "), approve.help
    assert "neither a class nor a prediction" not in approve.help, approve.help


def test_unnameable_help_words_each_cause_on_its_own():
    assert unnameable_help([3, 5, 8], "untick them", ["'Bob'"], retired_faces=[5, 8]) == (
        "1 of the faces have neither a class nor a prediction to approve (faces 3); "
        "2 of the faces are of retired class 'Bob' (faces 5, 8): untick them")
    assert unnameable_help([5], "x", ["'A'", "'B'"], retired_faces=[5]) == "1 of the faces are of retired classes 'A', 'B' (faces 5): x"
    assert unnameable_help([3, 4], "x", retired_faces=[]) == unnameable_help([3, 4], "x")  # as before
    said = unnameable_tracks_help([1, 2, 4], "x", ["'Bob'"], {1: UNCLASSED, 2: MIXED, 4: RETIRED})
    assert said == ("Nothing to approve for 3 track(s): some faces of track(s) 1 have neither a class nor a "
                    "prediction; the faces of track(s) 2 are predicted as different classes (relabel the track "
                    "instead); the class track(s) 4 would get is retired (retired: 'Bob'); x"), said


def test_bulk_tag_notice_quotes_the_tag_as_stored(app, fixture_store, lasso):  # noqa: F811
    """Typed "  NOD " on GIFs already carrying "nod": the notice names 'nod', the tag left alone."""
    sign_in(app, "ann")
    _explore(app, "GIFs")
    points, _ = view_points(fixture_store.store, "GIFs")
    carrying = set(media_tags_frame(fixture_store.store, tag="nod")["media_id"].astype(int))
    lasso.extend(sorted(carrying & set(points["id"].astype(int))))
    assert lasso
    app.run()
    app.text_input(key="explore_bulk_tag_name").input("  NOD ")
    button(app, f"Tag {len(lasso)} GIF(s)").click().run()
    no_exception(app)
    notices = [i.value for i in app.info]
    assert any("'nod' is not added there" in n for n in notices), notices
