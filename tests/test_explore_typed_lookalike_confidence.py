"""Round 19, Explore: a press meant for another point, look-alike class names, which confidence is shown,
and demographic groups as the Bias audit names them.

- typing a face id and pressing a decision button in the same run (the id box commits on blur) decided the
  typed face, whose details were never shown: nothing is written, the page says which face it now shows;
- "New celebrity class from the selection" added 'person_a' beside 'Person A' without a word: it makes the
  Classes page's look-alike check, and waits for "It is a different person";
- a relabelled face was coloured (and filtered, and described) by the model's confidence in the class the
  editor moved it away from, a rejected one by its prediction's: a decided point carries the model's
  probability for its class now (NaN when the model's top classes leave it out, or when turned down);
- colouring by gender, ethnicity or country grouped "Female ", "female" and "N/A" apart from the Bias audit.

Real SQLite stores written through the store's own functions, the page's own widgets (AppTest)."""
from __future__ import annotations

import math
from datetime import datetime, timezone

from sqlalchemy import select

from explorer.bias_audit import _group
from explorer.views import view_points
from labeling.classes import set_class_attributes
from labeling.db import session_scope
from labeling.face_labels import Prediction, approve_faces, record_predictions, reject_faces, relabel_faces
from labeling.queries import classes_frame
from labeling.schema import Face, Track
from test_app_pages import no_exception
from test_explore_selection_groups import _page, _status, _store, lasso, live_lasso  # noqa: F401 (a fixture)


def _details(at) -> str:
    return next(m.value for m in at.markdown if "status **" in m.value)


# -- 1. a press is for the point whose details were drawn --------------------------------------------------
def test_a_press_in_the_run_that_types_another_id_writes_nothing(tmp_path, monkeypatch):
    fx = _store(tmp_path)
    page = _page(fx, monkeypatch)
    shown, typed = fx.faces[0], fx.faces[5]
    page.number_input(key="explore_point_id").set_value(shown).run()
    no_exception(page)
    page.number_input(key="explore_point_id").set_value(typed)  # committed on blur: the click's own run
    page.button(key="explore_reject").click().run()
    no_exception(page)
    assert _status(fx, [shown, typed]) == ["predicted", "predicted"]
    assert any(f"the details now show face {typed}" in w.value for w in page.warning), [w.value for w in page.warning]
    page.button(key="explore_reject").click().run()  # pressed again, on the details it was drawn for
    no_exception(page)
    assert _status(fx, [shown, typed]) == ["predicted", "rejected"]


# -- 2. a class from the selection gets the look-alike check ----------------------------------------------
def test_a_class_from_the_selection_named_like_another_waits_for_the_tick(tmp_path, monkeypatch, live_lasso):  # noqa: F811
    fx = _store(tmp_path)
    page = _page(fx, monkeypatch)
    lasso(page, live_lasso, fx.faces[:2])
    page.text_input(key="explore_new_class_name").input("person_a")
    page.button(key="explore_new_class_add").click().run()
    no_exception(page)
    assert "person_a" not in set(classes_frame(fx.store)["name"])
    assert any("'Person A'" in w.value and "different person" in w.value for w in page.warning), \
        [w.value for w in page.warning]
    page.checkbox(key="explore_new_class_different").check()
    page.button(key="explore_new_class_add").click().run()
    no_exception(page)
    assert "person_a" in set(classes_frame(fx.store)["name"])


# -- 3. the confidence of a decided point is the model's for its class now ---------------------------------
def test_decided_faces_carry_the_models_confidence_in_their_class(tmp_path, monkeypatch):
    fx = _store(tmp_path)
    a, b, c = fx.classes
    f = fx.faces
    # the model: class A at 0.8, B at 0.15 for the first faces (C not among its top classes)
    record_predictions(fx.store, [Prediction(i, a, 0.8, [(a, 0.8), (b, 0.15)]) for i in f[:4]], "m-v2")
    relabel_faces(fx.store, [f[0]], b, "ann")  # moved to B: the model gave B 0.15
    relabel_faces(fx.store, [f[1]], c, "ann")  # moved to C: not in the model's top classes
    reject_faces(fx.store, [f[2]], "ann")
    approve_faces(fx.store, [f[3]], "ann")
    points = view_points(fx.store, "Faces", "m1")[0].set_index("id")["confidence"]
    assert math.isclose(points[f[0]], 0.15) and math.isclose(points[f[3]], 0.8)
    assert math.isnan(points[f[1]]) and math.isnan(points[f[2]])
    assert math.isclose(points[f[4]], 0.8)  # undecided: the model's own, as before
    page = _page(fx, monkeypatch)
    page.number_input(key="explore_point_id").set_value(f[0]).run()
    no_exception(page)
    line = _details(page)
    assert "model's confidence in it 0.15" in line and "model: Person A 0.80" in line, line
    page.selectbox(key="explore_colour").set_value("confidence").run()
    no_exception(page)
    assert any("Confidence: the model's probability for the class each point shows" in c.value
               for c in page.caption), [c.value for c in page.caption]


def test_decided_tracks_carry_the_models_confidence_in_their_class(tmp_path):
    fx = _store(tmp_path)
    a, b, _ = fx.classes
    face = fx.faces[0]
    with session_scope(fx.store) as s:
        track = s.scalars(select(Track).join(Face, Face.media_id == Track.media_id).where(Face.id == face)).one()
        track.predicted_class_id, track.predicted_confidence, track.predicted_top = a, 0.7, [[a, 0.7], [b, 0.25]]
        track.predicted_at, track.model_version = datetime.now(timezone.utc), "m-v1"
        track_id = track.id
    before = view_points(fx.store, "Face tracks", "m1")[0].set_index("id")["confidence"]
    assert math.isclose(before[track_id], 0.7)
    relabel_faces(fx.store, [face], b, "ann")
    after = view_points(fx.store, "Face tracks", "m1")[0].set_index("id")["confidence"]
    assert math.isclose(after[track_id], 0.25)
    reject_faces(fx.store, [face], "ann")
    assert math.isnan(view_points(fx.store, "Face tracks", "m1")[0].set_index("id")["confidence"][track_id])


# -- 4. demographic groups are the Bias audit's -----------------------------------------------------------
def test_colouring_by_an_attribute_uses_the_bias_audit_groups(tmp_path):
    fx = _store(tmp_path)
    a, b, c = fx.classes
    for class_id, gender, country in ((a, "Female ", "NA"), (b, "N/A", "Cote d'Ivoire"), (c, "female", "-")):
        version = int(classes_frame(fx.store).set_index("class_id").loc[class_id, "version"])
        set_class_attributes(fx.store, class_id, "ann", expected_version=version, gender=gender, country=country)
    for view in ("Faces", "Face tracks"):
        points = view_points(fx.store, view, "m1")[0]
        assert set(points["gender"]) == {"female", "unknown"}, view
        assert set(points["country"]) == {"na", "cote d'ivoire", "unknown"}, view  # "NA" is Namibia
        frame = classes_frame(fx.store)
        assert set(points["gender"]) == {_group(g, "gender") for g in frame["gender"]}
