"""Round 10c: a lasso of face tracks that all come out as one class approves as that class (whether an editor's
relabel or the model's name makes it so); Approve is not offered where the class it would give is retired;
the per-track computation is grouped, not one Python call per track; Review's track queue offers Approve
exactly where Explore does.

Real stores (test_recognition_loop.build_loop_store), real predictions, real writes through the pages' own
buttons (AppTest), checked in the store afterwards."""
from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import func, select

from conftest import open_app
from explorer.views import face_points, track_approve_classes, track_decisions, track_faces, track_predictions
from labeling.classes import add_class, retire_class
from labeling.errors import ValidationError
from labeling.face_labels import Prediction, approve_faces, decide_faces, label_track, record_predictions
from labeling.queries import faces_frame, tracks_frame
from labeling.recognition import refresh_predictions
from labeling.schema import CONFIRMED_STATUSES, AuditEvent
from test_app_decision_ticks_and_filters import _explore, _tick, lasso  # noqa: F401  (lasso: a fixture the bulk tests use)
from test_app_pages import no_exception, sign_in
from test_queries import new_fixture_store
from test_recognition_loop import LoopStore
from test_views_track_approve import _approves, _build, _undecided
from test_views_track_approve_decided import _open_track, _other_class, _points, _predicted_class


@pytest.fixture
def predicted(tmp_path_factory) -> LoopStore:
    """A store of its own the model predicted (faces and tracks): each test decides tracks of it."""
    loop = _build(tmp_path_factory, "round10c-predicted")
    refresh_predictions(loop.store)
    return loop


def _events(loop: LoopStore) -> int:
    with loop.store() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEvent)))


def _faces(loop: LoopStore, tracks: list[int]) -> pd.DataFrame:
    return faces_frame(loop.store, track_ids=tracks).set_index("face_id")


def _bulk_approve(loop: LoopStore, monkeypatch, lasso: list[int], chosen: list[int]):  # noqa: F811
    app = open_app(monkeypatch, loop.data_dir, loop.url)
    sign_in(_explore(app, "Face tracks"), "bob")
    lasso[:] = chosen
    app.run()
    no_exception(app)
    return app


def test_tracks_coming_out_as_one_class_approve_together(predicted, monkeypatch, lasso):  # noqa: F811
    """Track A undecided, the model names X; track B the model names W, an editor relabelled it to X. Both
    points show X: one Approve gives every face X (approved where X is the face's label or prediction,
    relabelled elsewhere, as apply_decision decides), one audit event."""
    undecided = _undecided(predicted, named=True)
    a = undecided[0]
    x = _predicted_class(predicted, a)
    b = next(t for t in undecided[1:] if _predicted_class(predicted, t) != x)
    label_track(predicted.store, b, "relabel", "ann", class_id=x)
    points = _points(predicted)
    assert points.loc[a, "class"] == points.loc[b, "class"]
    assert pd.isna(points.loc[a, "approve_class"]) and points.loc[b, "approve_class"] == x
    before = _faces(predicted, [a, b])
    expected = {f: "approved" if x in (row["predicted_class_id"], row["class_id"]) else "relabeled"
                for f, row in before.iterrows()}
    app = _bulk_approve(predicted, monkeypatch, lasso, [a, b])
    app.checkbox(key=f"explore_bulk_tracks_override_{hash((a, b))}").check().run()  # B carries ann's decision
    approve = app.button(key="explore_bulk_tracks_approve")
    assert not approve.disabled, approve.help
    events = _events(predicted)
    approve.click().run()
    no_exception(app)
    assert not app.error, [e.value for e in app.error]
    after = _faces(predicted, [a, b])
    assert set(after["class_id"].astype(int)) == {x}
    assert after["label_status"].to_dict() == expected
    assert _events(predicted) == events + 1


def test_tracks_coming_out_as_two_classes_are_refused_naming_them(predicted, monkeypatch, lasso):  # noqa: F811
    """A track relabelled to X with an undecided one the model names Y (not X): refused, the help naming each
    track and the class it would get."""
    undecided = _undecided(predicted, named=True)
    a = undecided[0]
    y = _predicted_class(predicted, a)
    b = undecided[1]
    name, x = _other_class(predicted, y, _predicted_class(predicted, b))
    label_track(predicted.store, b, "relabel", "ann", class_id=x)
    y_name = next(n for n, c in predicted.classes.items() if c == y)
    app = _bulk_approve(predicted, monkeypatch, lasso, [a, b])
    approve = app.button(key="explore_bulk_tracks_approve")
    assert approve.disabled and "One Approve confirms one class" in approve.help, approve.help
    assert f"{a} ({y_name})" in approve.help and f"{b} ({name})" in approve.help, approve.help


def test_a_retired_decided_class_is_not_offered(predicted, monkeypatch):
    """An editor relabelled a track to Y, Y was retired since: the store refuses approving it as Y, so the
    point is not nameable and Approve's help names Y; a face of it the same in the faces view."""
    track = _undecided(predicted, named=True)[0]
    name, y = _other_class(predicted, _predicted_class(predicted, track))
    label_track(predicted.store, track, "relabel", "ann", class_id=y)
    retire_class(predicted.store, y, "ann")
    point = _points(predicted).loc[track]
    assert not bool(point["nameable"]) and point["approve_class"] == y
    assert not _approves(predicted, track, point["approve_class"])  # what the store says
    app = _open_track(predicted, monkeypatch, track)
    approve = app.button(key="explore_approve")
    assert approve.disabled and f"Class {name} is retired" in approve.help, approve.help
    face = int(faces_frame(predicted.store, track_ids=[track])["face_id"].iloc[0])
    assert not bool(face_points(predicted.store)[0].set_index("id").loc[face, "nameable"])
    with pytest.raises(ValidationError, match="retired"):
        decide_faces(predicted.store, [face], "approve", "ann")


def test_without_a_prediction_a_retired_own_class_is_not_offered(tmp_path_factory):
    """Before any prediction, a track relabelled to Y (approving sends no class: each face keeps its own)
    and Y retired: approving is refused by the store, and the point says so."""
    loop = _build(tmp_path_factory, "round10c-fresh")
    track = int(tracks_frame(loop.store)["track_id"].iloc[0])
    name, y = _other_class(loop)
    label_track(loop.store, track, "relabel", "ann", class_id=y)
    retire_class(loop.store, y, "ann")
    point = _points(loop).loc[track]
    assert pd.isna(point["approve_class"]) and point["approves"] == y and not bool(point["nameable"])
    assert not _approves(loop, track, point["approve_class"])


def _per_track_reference(standing, tracks: pd.DataFrame, decision: pd.DataFrame, faces: pd.DataFrame) -> list:
    """track_approve_classes' rule spelled out one track at a time."""
    out = []
    for i, track in enumerate(tracks["track_id"]):
        status, chosen = decision["label_status"].iloc[i], decision["class_id"].iloc[i]
        if status not in CONFIRMED_STATUSES or pd.isna(chosen):
            out.append(None)
            continue
        named, at = standing.get(int(track), (None, None))
        mine = faces[faces["track_id"] == track]
        own = [c if not pd.isna(c) else p for c, p in zip(mine["class_id"], mine["predicted_class_id"])]
        given = named if at is not None else (
            int(own[0]) if own and not any(pd.isna(c) for c in own) and len(set(map(int, own))) == 1 else None)
        out.append(None if given == int(chosen) else int(chosen))
    return out


def test_grouped_approve_classes_match_the_per_track_rule(predicted):
    """Relabelled (to the model's class and to another), approved then one face relabelled on its own,
    rejected and undecided tracks: the grouped computation gives what the per-track rule does."""
    named = _undecided(predicted, named=True)
    unnamed = _undecided(predicted, named=False)
    assert len(named) >= 2 and len(unnamed) >= 2
    _, other = _other_class(predicted, _predicted_class(predicted, named[0]), _predicted_class(predicted, named[1]))
    label_track(predicted.store, named[0], "relabel", "ann", class_id=_predicted_class(predicted, named[0]))
    label_track(predicted.store, named[1], "approve", "ann")
    face = int(faces_frame(predicted.store, track_ids=[named[1]])["face_id"].iloc[0])
    decide_faces(predicted.store, [face], "relabel", "ann", class_id=other)
    label_track(predicted.store, unnamed[0], "relabel", "ann", class_id=other)
    label_track(predicted.store, unnamed[1], "reject", "ann")
    tracks = tracks_frame(predicted.store)
    faces = track_faces(predicted.store, tracks)
    decision = track_decisions(predicted.store, tracks, faces).reindex(tracks["track_id"]).reset_index(drop=True)
    standing = track_predictions(predicted.store, tracks)
    grouped = track_approve_classes(standing, tracks, decision, faces)
    assert grouped == _per_track_reference(standing, tracks, decision, faces)
    assert any(c is not None for c in grouped) and any(c is None for c in grouped)


def test_review_track_queue_offers_approve_where_explore_does(tmp_path_factory, monkeypatch):
    """No track prediction; one face of a GIF track predicted X, the others nothing: approving is refused by
    the store and Explore disables it; Review's queue, listing X as the track's prediction, does too,
    while a track every face of which is predicted stays approvable in both."""
    loop = _build(tmp_path_factory, "round10c-review")
    tracks = tracks_frame(loop.store).query("media_kind == 'gif' and n_faces > 1")
    track, whole = (int(t) for t in tracks["track_id"].iloc[:2])
    x = next(iter(loop.classes.values()))
    faces = faces_frame(loop.store, track_ids=[track, whole])
    one = int(faces.loc[faces["track_id"] == track, "face_id"].iloc[0])
    every = faces.loc[faces["track_id"] == whole, "face_id"].astype(int).tolist()
    record_predictions(loop.store, [Prediction(f, x, 0.9, [(x, 0.9)]) for f in [one, *every]], "vtest")
    points = _points(loop)
    assert not bool(points.loc[track, "nameable"]) and bool(points.loc[whole, "nameable"])
    app = open_app(monkeypatch, loop.data_dir, loop.url)
    sign_in(app, "bob")
    app.switch_page("explorer/pages/review.py").run()
    no_exception(app)
    _tick(app, "review_tracks", [whole])
    assert not app.button(key="review_tracks_approve").disabled
    _tick(app, "review_tracks", [track, whole])
    approve = app.button(key="review_tracks_approve")
    assert approve.disabled and f"track(s) {track} have neither a class nor a prediction" in approve.help, approve.help
    assert not _approves(loop, track, None)


def test_review_does_not_offer_approving_faces_into_a_retired_class(tmp_path_factory, monkeypatch):
    """As Explore: a face whose class (here its prediction) was retired has nothing Approve could give it
    (the store refuses a retired class), so Review's bulk Approve is disabled and its help names the class."""
    fixture_store = new_fixture_store(tmp_path_factory, "round10c-retired")
    app = open_app(monkeypatch, fixture_store.data_dir, fixture_store.url)
    face = fixture_store.gif_faces[0]
    soon, _ = add_class(fixture_store.store, "Soon Retired", "ann")
    record_predictions(fixture_store.store, [Prediction(face, soon, 0.3, [(soon, 0.3)])], "retire-run")
    retire_class(fixture_store.store, soon, "ann")
    with pytest.raises(ValidationError, match="retired"):
        approve_faces(fixture_store.store, [face], "ann")
    app.switch_page("explorer/pages/review.py").run()
    no_exception(app)
    _tick(app, "review_suspects", [face])
    approve = app.button(key="review_suspects_bulk_approve")
    assert approve.disabled and str(face) in approve.help and "'Soon Retired'" in approve.help, approve.help
