"""App pages: a lost class choice across reruns and own-search notices, driven headless with streamlit.testing.v1.AppTest on the
fixture store (real photos and a real GIF, see test_queries.build_fixture_store); the second editor
("bob") works through the same labeling operations the pages call:

- a class chosen in a select box that another editor retires stays "lost" across reruns (ticking another
  face is one) until the editor picks again or a press is refused for it; the Overview's undo likewise (test_app_stale_class_choices, rerun-then-press);
- Split's existing target refuses a class retired meanwhile, naming what happened, as Merge does;
- the Classes page stays quiet when the editor's own search or filter hides the class being edited, names
  the class as it was drawn, and says "Nothing was saved" only when a form was submitted;
- Tags: a table changed under the edit's own rerun is said at once, not "No confidence was changed.";
- Explore's relabel box (a default from the model's guess) logs no "default value ... Session State" warning.
"""
from __future__ import annotations

import logging

import pytest
from sqlalchemy import func, select
from streamlit.elements.lib import policies

from labeling.classes import add_class, rename_class, set_class_attributes, set_class_status
from labeling.errors import utc_text
from labeling.pages.common import class_fate, plain
from labeling.queries import media_tags_frame
from labeling.schema import AuditEvent, FaceLabel
from labeling.tags import add_tags
import test_app_decision_ticks_and_filters
from test_app_decision_ticks_and_filters import _explore, _tick
from test_app_pages import button, errors, go, no_exception, sign_in
from test_app_stale_class_choices import _gone, _label, _warnings
from test_queries import GIF

fixture_store = test_app_decision_ticks_and_filters.fixture_store  # the fixtures: a store of its own per test (they write) ...
app = test_app_decision_ticks_and_filters.app  # ... and a fresh app session (no editor) on it


def _review_suspects(app, faces: list[int]) -> None:
    """Ann on Review with these faces ticked among the suspects."""
    sign_in(app, "ann")
    app.switch_page("explorer/pages/review.py").run()
    app.slider(key="review_min_conf").set_value(0.6).run()  # the GIF's faces (0.55) join the suspects
    _tick(app, "review_suspects", faces)


# -- 1. a lost choice survives the reruns before the press -------------------------------------------------
def test_review_relabel_refuses_a_class_retired_even_after_another_rerun(app, fixture_store):
    a, b = fixture_store.gif_faces[:2]
    delta, _ = add_class(fixture_store.store, "Delta Four", "bob")
    before = {f: _label(fixture_store, f) for f in (a, b)}
    _review_suspects(app, [a])
    box = "review_suspects_bulk_class"
    app.selectbox(key=box).set_value(delta).run()
    retired = set_class_status(fixture_store.store, delta, "retired", "bob")  # meanwhile
    _tick(app, "review_suspects", [a, b])  # ann ticks one more face: a rerun before the press
    assert app.selectbox(key=box).value is None  # the box has no default: it falls back to no class at all
    _tick(app, "review_suspects", [a, b])  # and another
    app.button(key="review_suspects_bulk_relabel").click().run()
    no_exception(app)
    assert errors(app) == [_gone("Delta Four", f"retired by bob in operation {retired.event_id}")]
    assert {f: _label(fixture_store, f) for f in (a, b)} == before
    # refused once: the next press acts on the class the box shows, once ann chose one
    shown = fixture_store.classes["Serena Williams"]
    app.selectbox(key=box).set_value(shown).run()
    app.button(key="review_suspects_bulk_relabel").click().run()
    assert not errors(app), errors(app)
    assert {f: _label(fixture_store, f) for f in (a, b)} == {f: ("relabeled", shown, "ann") for f in (a, b)}


def test_review_relabel_goes_to_the_class_picked_after_the_loss(app, fixture_store):
    face = fixture_store.gif_faces[0]
    delta, _ = add_class(fixture_store.store, "Delta Four", "bob")
    echo, _ = add_class(fixture_store.store, "Echo Five", "bob")
    _review_suspects(app, [face])
    box = "review_suspects_bulk_class"
    app.selectbox(key=box).set_value(delta).run()
    set_class_status(fixture_store.store, delta, "retired", "bob")  # meanwhile
    app.run()  # the box falls back
    app.selectbox(key=box).set_value(echo).run()  # ann picks again
    app.button(key="review_suspects_bulk_relabel").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    assert _label(fixture_store, face) == ("relabeled", echo, "ann")


def test_review_relabel_keeps_a_lost_class_that_comes_back(app, fixture_store):
    face = fixture_store.gif_faces[0]
    delta, _ = add_class(fixture_store.store, "Delta Four", "bob")
    _review_suspects(app, [face])
    box = "review_suspects_bulk_class"
    app.selectbox(key=box).set_value(delta).run()
    set_class_status(fixture_store.store, delta, "retired", "bob")  # meanwhile
    app.run()
    assert app.selectbox(key=box).value != delta
    set_class_status(fixture_store.store, delta, "active", "bob")  # and back
    app.run()
    assert app.selectbox(key=box).value == delta  # ann's choice again: she never picked another
    app.button(key="review_suspects_bulk_relabel").click().run()
    assert not errors(app), errors(app)
    assert _label(fixture_store, face) == ("relabeled", delta, "ann")


# -- 4. Split into an existing class retired meanwhile --------------------------------------------------------
def test_split_refuses_a_target_retired_after_it_was_chosen(app, fixture_store):
    ariel = fixture_store.classes["Ariel Sharon"]
    delta, _ = add_class(fixture_store.store, "Delta Four", "bob")
    sign_in(app, "ann")
    go(app, "classes")
    app.selectbox(key="class_selected").set_value(ariel).run()
    faces = app.multiselect(key=f"split_faces_{ariel}").options[:1]
    assert faces
    app.multiselect(key=f"split_faces_{ariel}").set_value([int(faces[0].split()[1])])
    app.radio(key=f"split_mode_{ariel}").set_value("an existing class")
    app.selectbox(key=f"split_target_{ariel}").set_value(delta)
    retired = set_class_status(fixture_store.store, delta, "retired", "bob")  # meanwhile
    button(app, "Split").click().run()
    no_exception(app)
    assert errors(app) == [_gone("Delta Four", f"retired by bob in operation {retired.event_id}")]
    with fixture_store.store() as s:
        assert s.scalar(select(func.count()).select_from(FaceLabel).where(FaceLabel.class_id == delta)) == 0


# -- 2, 3. Classes: whose search hid the class, and its name as drawn --------------------------------------
def test_own_search_after_another_editors_edit_is_no_news(app, fixture_store):
    ariel = fixture_store.classes["Ariel Sharon"]
    sign_in(app, "ann")
    go(app, "classes")
    app.selectbox(key="class_selected").set_value(ariel).run()
    set_class_attributes(fixture_store.store, ariel, "bob", country="France")  # meanwhile: nothing that hides it
    app.text_input(key="class_search").input("serena").run()  # ann's own search leaves Ariel out
    no_exception(app)
    assert not _warnings(app), _warnings(app)
    assert app.selectbox(key="class_selected").value == fixture_store.classes["Serena Williams"]


def test_own_search_with_another_editors_retire_names_the_retire(app, fixture_store):
    ariel = fixture_store.classes["Ariel Sharon"]
    sign_in(app, "ann")
    go(app, "classes")
    app.selectbox(key="class_selected").set_value(ariel).run()
    retired = set_class_status(fixture_store.store, ariel, "retired", "bob")  # meanwhile: hides it in ann's view
    app.text_input(key="class_search").input("serena").run()
    no_exception(app)
    assert _warnings(app) == [plain(
        f"'Ariel Sharon' left the classes shown: retired by bob in operation {retired.event_id} (the status filter "
        "hides it). The forms now edit 'Serena Williams'.")]


def test_moved_out_names_the_class_as_drawn(app, fixture_store):
    ariel = fixture_store.classes["Ariel Sharon"]
    sign_in(app, "ann")
    go(app, "classes")
    app.text_input(key="class_search").input("ariel").run()
    assert app.selectbox(key="class_selected").value == ariel
    renamed = rename_class(fixture_store.store, ariel, "Zed *Person*", "bob")  # meanwhile
    app.run()
    no_exception(app)
    assert _warnings(app) == [plain(
        f"'Ariel Sharon' left the classes shown: renamed to 'Zed *Person*' by bob in operation {renamed.event_id} "
        "(the search hides it).")]  # nothing was submitted: nothing was lost either
    app.run()
    assert not _warnings(app)  # said once


def test_class_fate_describes_an_attribute_edit(fixture_store):
    delta, _ = add_class(fixture_store.store, "Delta Four", "bob")
    set_class_status(fixture_store.store, delta, "retired", "bob")
    edited = set_class_attributes(fixture_store.store, delta, "bob", country="France", gender=None)
    assert class_fate(fixture_store.store, delta) == (
        "Delta Four", "retired", f"country set to 'France' by bob in operation {edited.event_id}")


# -- 5. Tags: the table changed before the edit's own rerun --------------------------------------------------
def test_tag_table_changed_before_the_edits_rerun_is_said_at_once(app, fixture_store):
    gif = fixture_store.media[GIF]
    key = f"tag_editor_{gif}"
    sign_in(app, "ann")
    go(app, "tags")
    app.selectbox(key="tags_media").set_value(gif).run()
    row = list(app.data_editor(key=key).value["tag"]).index("nod")
    bob = add_tags(fixture_store.store, [gif], ["aaa-bob"], "bob", confidence=1.0)  # sorts to the top
    app.session_state[key] = {"edited_rows": {row: {"confidence": 0.42}}, "added_rows": [], "deleted_rows": []}
    app.run()  # the cell edit's own rerun, with bob's tag already in the table
    no_exception(app)
    with fixture_store.store() as s:
        at = utc_text(s.get(AuditEvent, bob.event_id).at)
    assert _warnings(app) == [f"The tag table changed since you edited it (operation {bob.event_id} by bob at {at}); "
                              "your edits were not saved — edit again."]
    # edited again on the table as it is now, the edit is saved
    row = list(app.data_editor(key=key).value["tag"]).index("nod")
    app.session_state[key] = {"edited_rows": {row: {"confidence": 0.42}}, "added_rows": [], "deleted_rows": []}
    app.run()
    assert not _warnings(app), _warnings(app)
    button(app, "Save confidences").click().run()
    assert not errors(app), errors(app)
    now = media_tags_frame(fixture_store.store, media_id=gif).set_index("tag")
    assert now.loc["nod", "confidence"] == pytest.approx(0.42) and now.loc["nod", "editor"] == "ann"


# -- 6. Explore: a default and a value set from the script, never both ---------------------------------------
class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_explore_relabel_box_logs_no_default_value_warning(app, fixture_store, monkeypatch):
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)  # Streamlit says it once per process
    records = _Records()
    logger = logging.getLogger(policies.__name__)
    logger.addHandler(records)
    try:
        face = fixture_store.gif_faces[0]
        sign_in(app, "ann")
        _explore(app)
        app.number_input(key="explore_point_id").set_value(face).run()
        box = f"explore_relabel_class_{face}"
        guess = app.selectbox(key=box).value
        other = next(c for c in fixture_store.classes.values() if c != guess)
        app.selectbox(key=box).set_value(other).run()
        app.run()
        no_exception(app)
        assert app.selectbox(key=box).value == other
    finally:
        logger.removeHandler(records)
    assert not [m for m in records.messages if "default value" in m], records.messages
