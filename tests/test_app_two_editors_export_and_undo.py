"""Two editors at once in the app, driven headless with
streamlit.testing.v1.AppTest on the fixture store (real photos and a real GIF, see
test_queries.build_fixture_store); the second editor ("bob") works through the same operations the pages call:

- Export: a press made while a colleague's export appeared exports nothing and names that export, instead of
  following it in place of the editor's choice ("none" or an older export); the choice is kept;
- Undo last (sidebar) and Review's "Undo my last operation" undo the operation they showed, or nothing:
  when a colleague undid it meanwhile they say who, in which operation and when, not undo an older one;
- Explore: a bulk press met by another editor's decision on a selected face says what was not written and why;
- Classes: a Merge press whose only target was retired meanwhile is refused with what happened, not lost;
- a refusal for a class chosen and gone says when the change was made (a line under it).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from labeling.audit import undo_event, undo_last
from labeling.classes import add_class, set_class_attributes, set_class_status
from labeling.errors import UndoError
from labeling.export import export_dataset
from labeling.face_labels import relabel_faces
from labeling.recognition import resolve_face_model
from labeling.schema import AuditEvent, CelebrityClass, FaceLabel
import test_app_decision_ticks_and_filters
from test_app_decision_ticks_and_filters import _explore
from test_app_pages import button, errors, go, no_exception, sign_in
from test_app_stale_class_choices import _gone
from test_queries import FixtureStore
from test_tags_picks_and_utc_notes import utc_at

fixture_store = test_app_decision_ticks_and_filters.fixture_store  # a store of its own per test (they write) ...
app = test_app_decision_ticks_and_filters.app  # ... and a fresh app session (no editor) on it
lasso = test_app_decision_ticks_and_filters.lasso  # the points Explore's 2D view reports as lassoed


def _warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning]


def _undone_by(fx: FixtureStore, event_id: int) -> int | None:
    with fx.store() as s:
        return s.get(AuditEvent, event_id).undone_by_id


# -- 1. Export: a colleague's export meanwhile --------------------------------------------------------------
def _bobs_export(fx: FixtureStore, out: Path) -> None:
    export_dataset(fx.store, Path(fx.data_dir), out, "bob", face_model=resolve_face_model(fx.store, None))


def test_export_press_after_a_colleagues_export_writes_nothing_and_keeps_the_choice(app, fixture_store, tmp_path):
    first = tmp_path / "bob-1"
    _bobs_export(fixture_store, first)
    sign_in(app, "ann")
    go(app, "export")
    box = app.selectbox(key="export_previous")
    assert Path(box.value).resolve() == first.resolve()  # the newest is proposed
    box.set_value("")  # ann: "none: number classes in creation order, draw the split anew"
    mine = tmp_path / "ann"
    app.text_input(key="export_out_dir").input(str(mine))
    second = tmp_path / "bob-2"
    _bobs_export(fixture_store, second)  # meanwhile
    button(app, "Run export").click().run()
    no_exception(app)
    assert not (mine / "manifest.json").exists()  # nothing was exported against bob's export
    note = [w for w in _warnings(app) if "Nothing was exported" in w]
    assert len(note) == 1 and f"A new export appeared since this page was drawn: {second.resolve()} (by bob at " in note[0]
    assert app.selectbox(key="export_previous").value == ""  # ann's choice stands
    button(app, "Run export").click().run()  # pressed again on the form as now drawn: her choice
    no_exception(app)
    assert not errors(app), errors(app)
    manifest = json.loads((mine / "manifest.json").read_text())
    assert "previous_export" not in manifest and manifest["class_index_order"] == "class_id"
    # her own export is then proposed to follow, as before
    assert Path(app.selectbox(key="export_previous").value).resolve() == mine.resolve()


# -- 2. Undo last: the operation shown, or nothing ---------------------------------------------------------------
def _two_operations(fx: FixtureStore) -> tuple[int, int]:
    """ann's two operations (the older, the newer) on a class of her own."""
    class_id, created = add_class(fx.store, "Undo Case", "ann")
    edited = set_class_attributes(fx.store, class_id, "ann", country="Chile")
    return created.event_id, edited.event_id


def test_undo_last_refuses_when_the_operation_shown_was_undone_by_a_colleague(fixture_store):
    older, newer = _two_operations(fixture_store)
    undo = undo_event(fixture_store.store, newer, "bob")
    with pytest.raises(UndoError, match=rf"^#{newer} was already undone by bob in operation {undo.event_id} at "
                                        rf"{utc_at(fixture_store.store, undo.event_id)}; nothing was undone; "
                                        rf"press again to undo #{older}$"):
        undo_last(fixture_store.store, "ann", expected=newer)
    assert _undone_by(fixture_store, older) is None
    undo_last(fixture_store.store, "ann", expected=older)
    assert _undone_by(fixture_store, older) is not None


def test_sidebar_undo_last_does_not_undo_an_older_operation(app, fixture_store):
    older, newer = _two_operations(fixture_store)
    sign_in(app, "ann")
    assert f"#{newer}" in app.button(key="undo_last").help
    undo = undo_event(fixture_store.store, newer, "bob")  # meanwhile
    app.button(key="undo_last").click().run()
    no_exception(app)
    assert errors(app) == [f"Cannot undo: #{newer} was already undone by bob in operation {undo.event_id} at "
                           f"{utc_at(fixture_store.store, undo.event_id)}; nothing was undone; press again to "
                           f"undo #{older}"]
    assert _undone_by(fixture_store, older) is None
    assert f"#{older}" in app.button(key="undo_last").help  # the rerun offers the next one
    app.button(key="undo_last").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    assert _undone_by(fixture_store, older) is not None


def test_reviews_undo_does_not_undo_an_older_operation(app, fixture_store):
    older, newer = _two_operations(fixture_store)
    sign_in(app, "ann")
    app.switch_page("explorer/pages/review.py").run()
    no_exception(app)
    undo = undo_event(fixture_store.store, newer, "bob")  # meanwhile
    app.button(key="review_undo").click().run()
    no_exception(app)
    assert any(f"#{newer} was already undone by bob in operation {undo.event_id}" in e for e in errors(app)), errors(app)
    assert _undone_by(fixture_store, older) is None
    app.button(key="review_undo").click().run()
    no_exception(app)
    assert _undone_by(fixture_store, older) is not None


# -- 3. Explore: a bulk press met by another editor's decision ------------------------------------------------
def test_explore_bulk_press_after_a_colleagues_decision_says_what_was_not_written(app, fixture_store, lasso):
    first, second = fixture_store.gif_faces[:2]
    ariel = fixture_store.classes["Ariel Sharon"]
    sign_in(app, "ann")
    _explore(app)
    lasso.extend([first, second])
    app.run()
    no_exception(app)
    app.selectbox(key="explore_bulk_class").set_value(ariel)
    relabeled = relabel_faces(fixture_store.store, [first], fixture_store.classes["Serena Williams"], "bob")
    button(app, "Relabel 2").click().run()
    no_exception(app)
    assert (f"Nothing was written: face {first} relabeled by bob in operation {relabeled.event_id} at "
            f"{utc_at(fixture_store.store, relabeled.event_id)}.") in " ".join(_warnings(app)), _warnings(app)
    with fixture_store.store() as s:
        labels = {r.face_id: (r.status, r.editor) for r in s.scalars(select(FaceLabel).where(
            FaceLabel.face_id.in_([first, second])))}
    assert labels[first] == ("relabeled", "bob") and labels[second][1] != "ann"
    app.run()  # said for the press only
    assert not any("Nothing was written" in w for w in _warnings(app))


# -- 4. Classes: a Merge press whose only target left ----------------------------------------------------------
def test_merge_press_whose_only_target_was_retired_is_refused_not_lost(app, fixture_store):
    ariel, serena = fixture_store.classes["Ariel Sharon"], fixture_store.classes["Serena Williams"]
    sign_in(app, "ann")
    go(app, "classes")
    app.selectbox(key="class_selected").set_value(ariel).run()
    assert [o.split(" (id")[0] for o in app.selectbox(key=f"merge_target_{ariel}").options] == ["Serena Williams"]
    app.selectbox(key=f"merge_target_{ariel}").set_value(serena)  # the box has no default: ann chooses it
    retired = set_class_status(fixture_store.store, serena, "retired", "bob")  # meanwhile: the only target
    button(app, "Merge").click().run()
    no_exception(app)
    assert errors(app) == [_gone("Serena Williams", f"retired by bob in operation {retired.event_id}")]
    # 5. when: a line under the refusal
    when = f"Operation {retired.event_id} (bob) was at {utc_at(fixture_store.store, retired.event_id)}."
    assert when in [c.value for c in app.caption], [c.value for c in app.caption]
    with fixture_store.store() as s:
        assert s.get(CelebrityClass, ariel).status == "active" and s.get(CelebrityClass, ariel).merged_into_id is None
    app.run()
    assert not errors(app)  # said for the press only


def test_split_into_an_existing_class_retired_meanwhile_is_refused(app, fixture_store):
    ariel, serena = fixture_store.classes["Ariel Sharon"], fixture_store.classes["Serena Williams"]
    sign_in(app, "ann")
    go(app, "classes")
    app.selectbox(key="class_selected").set_value(ariel).run()
    with fixture_store.store() as s:
        member = s.scalars(select(FaceLabel.face_id).where(FaceLabel.class_id == ariel)).first()
    app.multiselect(key=f"split_faces_{ariel}").set_value([member])
    app.radio(key=f"split_mode_{ariel}").set_value("an existing class")
    app.selectbox(key=f"split_target_{ariel}").set_value(serena)
    retired = set_class_status(fixture_store.store, serena, "retired", "bob")  # meanwhile: the only target
    button(app, "Split").click().run()
    no_exception(app)
    assert errors(app) == [_gone("Serena Williams", f"retired by bob in operation {retired.event_id}")]
    with fixture_store.store() as s:
        assert not s.scalars(select(FaceLabel).where(FaceLabel.class_id == serena, FaceLabel.editor == "ann")).all()
