"""Explore's track details and Review's bulk actions:

- Explore, one track's details: the "Change the N decided face(s) too" tick is for the decided faces (and
  versions) it was given for: after the editor's own action on the track, or another editor's decision on
  one of its faces, it comes back unticked (round 14 did this for 2D selections);
- Review: ticked rows that left a table (another editor decided a suspect face) are named in a notice that
  survives the bulk action's rerun, with the face's label now and who set it;
- Review, Class clusters: the members table shows each face's status and editor, and faces another editor
  decided wait for the same tick as on Explore before any bulk action changes them.

Real SQLite stores (test_review_own_changes_and_filters's synthetic store: real faces, embeddings, labels and predictions
written through the store's own functions), the pages' own widgets (AppTest)."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

from conftest import open_app
from labeling.face_labels import Prediction, approve_faces, record_predictions, reject_faces
from labeling.queries import faces_frame
from test_app_decision_ticks_and_filters import _explore, _tick
from test_app_pages import errors, no_exception, sign_in
from test_explore_search_and_approve_help import _status, synthetic_vector
from test_review_own_changes_and_filters import REVIEW, Store, _add_faces, _table, synthetic  # noqa: F401  (the synthetic fixture)


def _ann(fx: Store, monkeypatch) -> AppTest:
    return sign_in(open_app(monkeypatch, fx.data_dir, fx.url), "ann")


def _predicted_near(fx: Store, face: int, letter: str, n: int = 1) -> list[int]:
    """n new faces next to `face`, which the model predicts as class `letter` (no editor decided them)."""
    near = synthetic_vector(fx, face)
    fresh = _add_faces(fx.store, [near + 0.01 * k for k in range(n)], 100)
    c = fx.classes[letter]
    record_predictions(fx.store, [Prediction(f, c, 0.9, [(c, 0.9)]) for f in fresh], "m-v1")
    return fresh


# -- 1. Explore, one track: the tick is for the decided faces it was given for --------------------------------
def test_the_track_panels_tick_comes_back_unticked_after_an_action_and_after_another_editors_decision(
        synthetic, monkeypatch):  # noqa: F811
    face = synthetic.faces["A"][0]  # relabelled by "setup": one decided face in its track
    track = int(faces_frame(synthetic.store).set_index("face_id").loc[face, "track_id"])
    page = _explore(_ann(synthetic, monkeypatch), "Face tracks")
    page.number_input(key="explore_point_id").set_value(track).run()
    no_exception(page)
    key = f"explore_point_override_{track}"
    assert page.checkbox(key=key).label == "Change the 1 decided face(s) too" and not page.checkbox(key=key).value
    assert page.button(key="explore_reject").disabled
    page.checkbox(key=key).check().run()
    page.button(key="explore_unknown").click().run()  # the editor's own action
    no_exception(page)
    assert _status(synthetic, [face]) == {face: "unknown"}
    assert not page.checkbox(key=key).value, "the tick given before the action still stands after it"
    assert page.button(key="explore_reject").disabled
    page.checkbox(key=key).check().run()
    assert not page.button(key="explore_reject").disabled
    reject_faces(synthetic.store, [face], "bob")  # another editor, between the tick and the next press
    page.run()
    no_exception(page)
    assert not page.checkbox(key=key).value, "the tick given for ann's decision stands for bob's"
    assert any(i.value.startswith("The decided faces changed since the box was ticked") for i in page.info)
    assert page.button(key="explore_relabel").disabled and page.button(key="explore_approve").disabled


# -- 2. Review: ticked rows that left the table are named after the action's rerun -----------------------------
def test_a_ticked_suspect_another_editor_decided_is_named_after_the_bulk_action(synthetic, monkeypatch):  # noqa: F811
    # two faces among A's that the model calls B: "neighbours disagree", nobody decided them
    first, second = _predicted_near(synthetic, synthetic.faces["A"][0], "B", 2)
    page = _ann(synthetic, monkeypatch)
    page.switch_page(REVIEW).run()
    no_exception(page)
    _tick(page, "review_suspects", [first, second])
    assert page.button(key="review_suspects_bulk_unknown").label == "Mark 2 unknown"
    reject_faces(synthetic.store, [first], "bob")  # leaves the queue (decided since the prediction)
    page.button(key="review_suspects_bulk_unknown").click().run()
    no_exception(page)
    assert not errors(page), errors(page)
    assert _status(synthetic, [first, second]) == {first: "rejected", second: "unknown"}
    notices = [w.value for w in page.warning]
    assert any(w.startswith("1 ticked row(s) left this list") and f"face {first} (rejected by bob)" in w
               for w in notices), notices
    assert any(s.value.startswith("Done: marked 1 face(s) unknown") for s in page.success)


# -- 3. Review, Class clusters: another editor's decisions take a tick ------------------------------------------
def test_class_members_show_status_and_editor_and_others_decisions_need_the_tick(synthetic, monkeypatch):  # noqa: F811
    bobs = synthetic.faces["A"][5]
    approve_faces(synthetic.store, [bobs], "bob")
    fresh = _predicted_near(synthetic, synthetic.faces["A"][0], "A")[0]  # the model's guess only
    page = _ann(synthetic, monkeypatch)
    page.switch_page(REVIEW).run()
    no_exception(page)
    page.selectbox(key="review_class").set_value("Person A").run()
    table = _table(page, "review_members").set_index("id")
    assert {"status", "editor"} <= set(table.columns)
    assert (table.loc[bobs, "status"], table.loc[bobs, "editor"]) == ("approved", "bob")
    assert table.loc[fresh, "status"] == "predicted"
    _tick(page, "review_members", [fresh])  # nobody's decision: no tick asked for
    assert not page.button(key="review_members_bulk_reject").disabled
    assert not [c for c in page.checkbox if str(c.key).startswith("review_members_bulk_override")]
    _tick(page, "review_members", [fresh, bobs])
    box = page.checkbox(key="review_members_bulk_override")
    assert box.label == "Change the 1 decided face(s) too" and not box.value
    assert any(f"face {bobs} (approved by bob)" in w.value for w in page.warning)
    for action in ("approve", "reject", "unknown", "relabel"):
        assert page.button(key=f"review_members_bulk_{action}").disabled, action
    assert _status(synthetic, [bobs]) == {bobs: "approved"}
    box.check().run()
    page.button(key="review_members_bulk_reject").click().run()
    no_exception(page)
    assert not errors(page), errors(page)
    frame = faces_frame(synthetic.store).set_index("face_id")
    assert frame.loc[[bobs, fresh], ["label_status", "editor"]].values.tolist() == [["rejected", "ann"]] * 2
