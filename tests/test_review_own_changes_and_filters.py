"""The Review page: own changes to ticked faces, the Reasons filter and queue length, driven headless with streamlit.testing.v1.AppTest on a
small synthetic store (8-dimensional face vectors, no model; five classes, one with two faces far from it):

- the editor's own change to a face still ticked (an undo on the page or in the sidebar, an action in another
  table the face is also ticked in) is not refused as a "Conflict" naming that same editor; another editor's
  change between the tick and the press still is;
- a chosen Reasons filter stays chosen, and is named, when its reason leaves the suspect queue;
- a suspect queue longer than the table says that only the first 200 are listed.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from conftest import open_app
from labeling.classes import add_class
from labeling.db import open_store, session_scope
from labeling.face_labels import Prediction, approve_faces, record_predictions, reject_faces, relabel_faces
from labeling.queries import faces_frame
from labeling.schema import AuditEvent, Face, FaceEmbedding, Media, Track, vector_to_bytes
from test_app_decision_ticks_and_filters import _tick
from test_app_pages import errors, messages, no_exception, sign_in

REVIEW = "explorer/pages/review.py"
PLAN = (("A", 8), ("B", 6), ("C", 3), ("D", 1), ("E", 5))  # class letter, faces


class Store(NamedTuple):
    data_dir: Path
    url: str
    store: object
    faces: dict[str, list[int]]  # class letter -> its face ids
    classes: dict[str, int]  # class letter -> class id


def _add_faces(store, vectors: list[np.ndarray], start: int) -> list[int]:
    """One photo, track and face (embedding of model m1) per vector, as ingest stores them."""
    ids = []
    with session_scope(store) as s:
        for j, v in enumerate(vectors, start):
            media = Media(sha256=f"{j + 1:064x}", path=f"/data/p{j}.jpg", kind="image", status="ok")
            s.add(media)
            s.flush()
            face = Face(media_id=media.id, face_index=0, frame_index=0, x1=0, y1=0, x2=10, y2=10, probability=0.99,
                        landmarks=[[0, 0]] * 5)
            s.add(face)
            s.flush()
            vector = vector_to_bytes(np.asarray(v, np.float32))
            track = Track(media_id=media.id, model_id="m1", track_index=0, n_faces=1, representative_face_id=face.id,
                          vector=vector)
            s.add(track)
            s.flush()
            s.add(FaceEmbedding(face_id=face.id, model_id="m1", dim=len(v), vector=vector, track_id=track.id))
            ids.append(face.id)
    return ids


@pytest.fixture
def synthetic(tmp_path: Path) -> Store:
    """Classes A-E labelled by "ann" herself (what these tests follow is the versions a tick saw; faces another
    editor decided wait for a tick of their own, tests/test_explore_review_stale_ticks.py); A's 2nd face lies at B's centre and its 3rd far from everyone (both
    "far from centroid"), E's faces at A's centre (a look-alike class)."""
    rng = np.random.default_rng(0)
    centres = {name: rng.normal(size=8) * 3 for name, _ in PLAN}
    names = [name for name, n in PLAN for _ in range(n)]
    vectors = [centres["A" if name == "E" else name] + rng.normal(size=8) * 0.8 for name in names]
    vectors[1], vectors[2] = centres["B"] + rng.normal(size=8) * 0.5, rng.normal(size=8) * 3
    url = f"sqlite:///{tmp_path}/store.db"
    store = open_store(url)
    ids = _add_faces(store, vectors, 0)
    faces = {name: [i for i, n in zip(ids, names) if n == name] for name, _ in PLAN}
    classes = {name: add_class(store, f"Person {name}", "ann")[0] for name, _ in PLAN}
    for name, members in faces.items():
        relabel_faces(store, members, classes[name], "ann")
    return Store(tmp_path, url, store, faces, classes)


@pytest.fixture
def review(synthetic: Store, monkeypatch) -> AppTest:
    """The Review page with "ann" signed in."""
    at = sign_in(open_app(monkeypatch, synthetic.data_dir, synthetic.url), "ann")
    at.switch_page(REVIEW).run()
    no_exception(at)
    return at


def _label(fx: Store, face: int) -> tuple[str, str | None]:
    row = faces_frame(fx.store).set_index("face_id").loc[face]
    return row["label_status"], row["editor"]


def _table(at: AppTest, key: str):
    return next(e for e in at.data_editor if e.key == key or str(e.key).startswith(f"{key}__")).value


def _suspects_caption(at: AppTest) -> str:
    return next(c.value for c in at.caption if "suspect faces" in c.value)


def _approve_tick_again_and_undo(at: AppTest, face: int, undo_key: str) -> None:
    """Approve a ticked face, tick it again, then undo the approval with the given button."""
    _tick(at, "review_members", [face])
    at.button(key="review_members_bulk_approve").click().run()
    assert not errors(at)
    _tick(at, "review_members", [face])
    at.button(key=undo_key).click().run()
    no_exception(at)
    assert not errors(at)
    assert any(m.startswith("Undone:") for m in messages(at)), messages(at)
    assert face in _table(at, "review_members").query("pick")["id"].tolist()  # still ticked


# -- 1. the editor's own change to a still-ticked face is no conflict ---------------------------------------
@pytest.mark.parametrize("undo_key", ["review_undo", "undo_last"])  # the page's undo, the sidebar's Undo last
def test_a_face_still_ticked_after_an_own_undo_is_acted_on(review, synthetic, undo_key):
    face = synthetic.faces["A"][5]
    _approve_tick_again_and_undo(review, face, undo_key)
    assert _label(synthetic, face)[0] == "relabeled"  # the undo restored the earlier label
    review.button(key="review_members_bulk_reject").click().run()
    no_exception(review)
    assert not errors(review), errors(review)
    assert _label(synthetic, face) == ("rejected", "ann")


@pytest.mark.parametrize("undo_key", ["review_undo", "undo_last"])
def test_another_editors_change_after_an_own_undo_is_still_refused(review, synthetic, undo_key):
    face = synthetic.faces["A"][5]
    _approve_tick_again_and_undo(review, face, undo_key)
    approve_faces(synthetic.store, [face], "bob")  # between the tick and the press: the row looks the same
    review.button(key="review_members_bulk_reject").click().run()
    no_exception(review)
    # bob's decision now waits for a tick of its own: the press wrote nothing, and the page names it
    assert any("another editor's decision" in w.value for w in review.warning), [w.value for w in review.warning]
    assert review.button(key="review_members_bulk_reject").disabled
    assert _label(synthetic, face) == ("approved", "bob")
    review.checkbox(key="review_members_bulk_override").check().run()
    review.button(key="review_members_bulk_reject").click().run()
    no_exception(review)
    # ticked for bob's decision, the press still acts on the version the face was ticked at: refused, naming bob
    assert any("Conflict" in e and "bob" in e for e in errors(review)), errors(review)
    assert _label(synthetic, face) == ("approved", "bob")


def test_a_face_ticked_in_two_tables_is_acted_on_in_the_second_after_the_first(review, synthetic):
    face = synthetic.faces["D"][0]
    review.toggle(key="review_suspects_decided").set_value(True).run()
    review.selectbox(key="review_class").set_value("Person D").run()
    _tick(review, "review_suspects", [face])
    _tick(review, "review_members", [face])
    review.button(key="review_members_bulk_approve").click().run()
    assert _label(synthetic, face) == ("approved", "ann")
    assert face in _table(review, "review_suspects").query("pick")["id"].tolist()
    review.button(key="review_suspects_bulk_reject").click().run()
    no_exception(review)
    assert not errors(review), errors(review)
    assert _label(synthetic, face) == ("rejected", "ann")


# -- 2. a Reasons filter whose reason leaves the queue stays, and is named --------------------------------
def test_a_reasons_filter_stays_and_is_named_when_its_faces_leave_the_queue(review, synthetic):
    review.toggle(key="review_suspects_decided").set_value(True).run()
    review.multiselect(key="review_reasons").set_value(["far from centroid"]).run()
    far = [int(i) for i in _table(review, "review_suspects")["id"]]
    assert far and "filtered by Reasons: far from centroid" in _suspects_caption(review)
    reject_faces(synthetic.store, far, "bob")  # unlabelled now: no centroid to be far from
    review.run()
    no_exception(review)
    assert review.multiselect(key="review_reasons").value == ["far from centroid"]
    caption = _suspects_caption(review)
    assert caption.startswith("0 suspect faces (filtered by Reasons: far from centroid, which no face"), caption
    assert _table(review, "review_suspects").empty


# -- 3. a queue longer than the table says so ----------------------------------------------------------------
def test_a_suspect_queue_longer_than_the_table_says_only_the_first_200_are_listed(synthetic, monkeypatch):
    extra = _add_faces(synthetic.store, list(np.random.default_rng(1).normal(size=(250, 8))), 1000)
    b = synthetic.classes["B"]
    record_predictions(synthetic.store, [Prediction(f, b, 0.2, [(b, 0.2)]) for f in extra], "run2")
    at = open_app(monkeypatch, synthetic.data_dir, synthetic.url)
    at.switch_page(REVIEW).run()
    no_exception(at)
    caption = _suspects_caption(at)
    total = int(caption.split()[0])
    assert total >= 250 and len(_table(at, "review_suspects")) == 200
    assert "Only the first 200 are listed" in caption and f"the other {total - 200}" in caption, caption


def test_bulk_approve_help_names_a_retired_class_as_the_cause(review, synthetic):
    """Review words the retired-class cause on its own, as Explore does: the face has a class, so "neither a
    class nor a prediction" would be false of it."""
    from labeling.classes import set_class_status

    face = synthetic.faces["D"][0]
    set_class_status(synthetic.store, synthetic.classes["D"], "retired", "bob")
    review.toggle(key="review_suspects_decided").set_value(True).run()
    _tick(review, "review_suspects", [face])
    approve = review.button(key="review_suspects_bulk_approve")
    assert approve.disabled
    assert "are of retired class 'Person D'" in approve.help and "neither a class" not in approve.help, approve.help


def test_a_face_still_ticked_after_an_own_undo_on_the_overview_is_acted_on(review, synthetic):
    """The Overview's undo is the editor's own write too (labeling.pages.common.write forgets the ticks'
    versions), so Review does not refuse the still-ticked face as changed by the editor themself."""
    face = synthetic.faces["A"][5]
    _tick(review, "review_members", [face])
    review.button(key="review_members_bulk_approve").click().run()
    _tick(review, "review_members", [face])
    review.switch_page("labeling/pages/home.py").run()
    no_exception(review)
    with synthetic.store() as s:
        approval = s.scalar(select(func.max(AuditEvent.id)))
    review.selectbox(key="overview_undo_event").set_value(approval).run()
    review.button(key="overview_undo").click().run()
    no_exception(review)
    assert not errors(review), errors(review)
    review.switch_page(REVIEW).run()
    assert face in _table(review, "review_members").query("pick")["id"].tolist()  # still ticked
    review.button(key="review_members_bulk_reject").click().run()
    no_exception(review)
    assert not errors(review), errors(review)
    assert _label(synthetic, face) == ("rejected", "ann")
