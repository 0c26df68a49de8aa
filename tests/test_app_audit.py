"""What an editor ran into using the app in Chromium (an audit on a store of 40 LFW people and the 63
GIFs), checked headless with streamlit.testing.v1.AppTest on the fixture store (real photos and a real
GIF, see test_queries.build_fixture_store):

- a message flashed after an action ("Done: ...") came before the page's elements and went away on the
  next run, which moved every element of the page one place: the browser, which keys elements by
  position, then forgot their state (the open Filters expander of Explore collapsed on the next click);
- Explore kept the point picked in one view when the editor switched to another: face 12 was then
  shown (and highlighted) as track 12 or GIF 12, a different thing, or "No gifs point with id 12".
"""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from conftest import open_app
from labeling.queries import tracks_frame
from test_app_pages import button, no_exception, sign_in
from test_queries import FixtureStore, new_fixture_store

pytestmark = pytest.mark.slow  # the fixture store is ingested with the real networks

EXPLORE = "explorer/pages/explore.py"
CLASSES = "labeling/pages/classes.py"


@pytest.fixture(scope="module")
def audit_store(tmp_path_factory) -> FixtureStore:
    """One fixture store for this module (its own SQLite file; the session's data folder and cache)."""
    return new_fixture_store(tmp_path_factory, "audit-store")


@pytest.fixture
def app(audit_store, monkeypatch) -> AppTest:
    """A fresh app session (no editor) on the module's store."""
    return open_app(monkeypatch, audit_store.data_dir, audit_store.url)


def title_position(at: AppTest) -> int:
    """Where the page's title sits among the main area's top-level elements: the position the
    browser keys every later element of the page by."""
    return next(i for i, node in at.main.children.items() if getattr(node, "type", None) == "title")


def test_a_flashed_message_does_not_move_the_page(app):
    sign_in(app, "auditor")
    app.switch_page(CLASSES).run()
    no_exception(app)
    before = title_position(app)
    app.text_input(key="add_class_name").input("Flash Gordon")
    button(app, "Add class").click().run()
    no_exception(app)
    assert any("Done: " in m.value for m in app.success), [m.value for m in app.success]  # the flash shows...
    assert title_position(app) == before  # ...without moving the page under it
    app.run()  # the next run: the flash is gone, and the page is still where it was
    assert not any("Done: " in m.value for m in app.success)
    assert title_position(app) == before


def test_switching_the_explore_view_forgets_the_point_picked_in_the_other_view(app, audit_store):
    # a face whose id is also a track's: the old page showed that track as if it were the face
    shared_ids = sorted(set(audit_store.gif_faces) & set(tracks_frame(audit_store.store)["track_id"].astype(int)))
    assert shared_ids, "the fixture store has no face id that is also a track id"
    face_id = shared_ids[0]
    app.switch_page(EXPLORE).run()
    no_exception(app)
    app.number_input(key="explore_point_id").set_value(face_id).run()
    no_exception(app)
    relabel = f"explore_relabel_class_{face_id}"
    assert relabel in [s.key for s in app.selectbox]  # the face's details and actions show
    app.selectbox(key="explore_view").set_value("Face tracks").run()
    no_exception(app)
    assert app.number_input(key="explore_point_id").value is None
    assert "No point selected." in [c.value for c in app.caption]
    # nothing of the face, nor of the track that happens to carry its id, is shown or acted on
    assert relabel not in [s.key for s in app.selectbox]
    # a typed id that is not in the view says so in the view's own words
    app.number_input(key="explore_point_id").set_value(999_999).run()
    assert [w.value for w in app.warning] == ["No Face track with id 999999 in this view."]
