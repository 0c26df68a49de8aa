"""Explore (and Review's suspect queue):

- Explore's class search compares names as the Classes page does (labeling.validation.class_name_key): a
  decomposed accent ("JOSE\u0301", as a macOS paste gives it) or a doubled space finds "José María";
- the "Change the N decided face(s) too" tick of a 2D selection is for the decided faces it was given for:
  after a bulk action decided more of the same selection the box comes back unticked;
- a disabled bulk Approve says of a face the model predicted but left unknown (below the open-set threshold)
  that the model names no one for it, not that it has "neither a class nor a prediction".

Real SQLite stores (test_review_own_changes_and_filters's synthetic store: real faces, embeddings, labels and predictions
written through the store's own functions), the pages' own widgets (AppTest)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import open_app
from explorer.views import filter_points, filter_summary, unnameable_help
from labeling.classes import add_class
from labeling.face_labels import Prediction, record_predictions, relabel_faces
from labeling.queries import faces_frame
from test_app_decision_ticks_and_filters import _explore, _tick, lasso  # noqa: F401  (the lasso fixture)
from test_app_pages import no_exception, sign_in
from test_review_own_changes_and_filters import REVIEW, Store, _add_faces, synthetic  # noqa: F401  (the synthetic fixture)

JOSE = "José María"  # as typed, composed (NFC)


def _explore_page(fx: Store, monkeypatch, view: str = "Faces") -> AppTest:
    return _explore(sign_in(open_app(monkeypatch, fx.data_dir, fx.url), "ann"), view)


def _status(fx: Store, faces: list[int]) -> dict[int, str]:
    frame = faces_frame(fx.store).set_index("face_id")
    return {f: frame.loc[f, "label_status"] for f in faces}


# -- 1. the class search compares as class_name_key does --------------------------------------------------
def test_filter_points_search_matches_decomposed_accents_and_runs_of_spaces():
    points = pd.DataFrame({"id": [1, 2, 3], "class": [JOSE, "Al Gore", "unlabeled"], "status": "predicted",
                           "confidence": 0.5, "media_id": 1})
    for search in ["JOSE\u0301", "josé  maría", " Jose\u0301 Mari\u0301a ", "ＪＯＳＥ\u0301"]:
        assert filter_points(points, search=search).tolist() == [True, False, False], search
    assert filter_points(points, search="  ").all()  # only spaces: no search
    # a chosen class the search does find is not named as "outside the search"
    assert filter_summary([JOSE], search="JOSE\u0301") == f"search {'JOSE' + chr(0x301)!r} · classes {JOSE}"
    assert "(outside the search)" in filter_summary(["Al Gore"], search="JOSE\u0301")


def test_explore_class_search_finds_a_class_typed_with_a_decomposed_accent(synthetic, monkeypatch):  # noqa: F811
    jose = add_class(synthetic.store, JOSE, "setup")[0]
    relabel_faces(synthetic.store, synthetic.faces["D"], jose, "setup")
    page = _explore_page(synthetic, monkeypatch)
    for search in ["JOSE\u0301", "jose\u0301  mari\u0301a"]:
        page.text_input(key="explore_search").input(search).run()
        no_exception(page)
        assert JOSE in page.multiselect(key="explore_classes").options, (search, page.multiselect(
            key="explore_classes").options)
        shown = [c.value for c in page.caption if c.value.startswith("Filtered:")]
        assert shown and shown[0].endswith(f"— 1 of {len(faces_frame(synthetic.store))} shown"), (search, shown)


# -- 2. the tick is for the decided faces it was given for ---------------------------------------------------
def _override(page: AppTest, prefix: str):
    boxes = [c for c in page.checkbox if str(c.key).startswith(prefix)]
    assert len(boxes) == 1, [c.key for c in page.checkbox]
    return boxes[0]


@pytest.mark.parametrize("view, prefix", [("Faces", "explore_bulk"), ("Face tracks", "explore_bulk_tracks")])
def test_the_decided_faces_tick_comes_back_unticked_after_a_bulk_action(synthetic, monkeypatch, lasso,  # noqa: F811
                                                                        view, prefix):
    decided = synthetic.faces["A"][0]  # relabelled by "setup"
    fresh = _add_faces(synthetic.store, [synthetic_vector(synthetic, decided)], 100)[0]
    b = synthetic.classes["B"]
    record_predictions(synthetic.store, [Prediction(fresh, b, 0.9, [(b, 0.9)])], "m-v1")
    if view == "Faces":
        page, picked = _explore_page(synthetic, monkeypatch), [decided, fresh]
    else:
        tracks = faces_frame(synthetic.store).set_index("face_id")["track_id"]
        page, picked = _explore_page(synthetic, monkeypatch, view), [int(tracks[decided]), int(tracks[fresh])]
    lasso[:] = picked
    page.run()
    no_exception(page)
    box = _override(page, f"{prefix}_override")
    assert box.label == "Change the 1 decided face(s) too" and not box.value
    box.check().run()
    page.button(key=f"{prefix}_reject").click().run()
    no_exception(page)
    assert _status(synthetic, [decided, fresh]) == {decided: "rejected", fresh: "rejected"}
    box = _override(page, f"{prefix}_override")
    assert box.label == "Change the 2 decided face(s) too"
    assert not box.value, "the tick given for 1 decided face stands for 2"
    assert page.button(key=f"{prefix}_unknown").disabled


def synthetic_vector(fx: Store, face: int) -> np.ndarray:
    """A vector next to the face's, so a new face lands among the store's points."""
    frame, vectors = faces_frame(fx.store, with_vectors=True)
    return vectors[int(np.flatnonzero(frame["face_id"].to_numpy() == face)[0])] + 0.01


# -- 3. a face the model left unknown has a prediction -------------------------------------------------------
NO_ONE = "the model names no one for them (below the open-set threshold)"


def test_unnameable_help_words_faces_the_model_left_unknown_on_their_own():
    assert unnameable_help([3, 5, 8], "x", retired_faces=[], no_one=[5, 8]) == (
        f"2 of the faces have no class, and {NO_ONE} (faces 5, 8); "
        "1 of the faces have neither a class nor a prediction to approve (faces 3): x")
    assert unnameable_help([5], "x", no_one=[5]) == f"1 of the faces have no class, and {NO_ONE} (faces 5): x"
    assert unnameable_help([3, 5], "x", ["'Bob'"], retired_faces=[3], no_one=[5]) == (
        f"1 of the faces have no class, and {NO_ONE} (faces 5); 1 of the faces are of retired class 'Bob' "
        "(faces 3): x")


def _unknown_and_bare(fx: Store) -> tuple[int, int]:
    """Two new faces: one the model predicted but left unknown (its top candidate stored), one with no label."""
    near = synthetic_vector(fx, fx.faces["A"][0])
    unknown, bare = _add_faces(fx.store, [near, near + 0.02], 100)
    record_predictions(fx.store, [Prediction(unknown, None, 0.31, [(fx.classes["A"], 0.31)])], "m-v1")
    return unknown, bare


def test_explore_bulk_approve_help_says_the_model_named_no_one(synthetic, monkeypatch, lasso):  # noqa: F811
    unknown, bare = _unknown_and_bare(synthetic)
    page = _explore_page(synthetic, monkeypatch)
    lasso[:] = [unknown, bare]
    page.run()
    no_exception(page)
    approve = page.button(key="explore_bulk_approve")
    assert approve.disabled
    assert f"1 of the faces have no class, and {NO_ONE} (faces {unknown})" in approve.help, approve.help
    assert f"1 of the faces have neither a class nor a prediction to approve (faces {bare})" in approve.help
    lasso[:] = [unknown]
    page.run()
    approve = page.button(key="explore_bulk_approve")
    assert approve.disabled and NO_ONE in approve.help and "neither a class" not in approve.help, approve.help


def test_review_bulk_approve_help_says_the_model_named_no_one(synthetic, monkeypatch):  # noqa: F811
    unknown, _ = _unknown_and_bare(synthetic)
    page = sign_in(open_app(monkeypatch, synthetic.data_dir, synthetic.url), "ann")
    page.switch_page(REVIEW).run()
    no_exception(page)
    _tick(page, "review_suspects", [unknown])
    approve = page.button(key="review_suspects_bulk_approve")
    assert approve.disabled
    assert approve.help == (f"1 of the faces have no class, and {NO_ONE} (faces {unknown}): relabel them, or "
                            "untick them"), approve.help
