"""Tags › Per GIF: a saved confidence that sorts its row below another must not leave the edit behind.

The browser keeps a data editor's pending edits by row position for as long as the table is the same
widget (its element id), shows them over the table's values and sends them again with every press. A
saved edit that moved its row down left it on the row moving into its place: that tag showed the typed
value and the next Save wrote it there. AppTest holds no browser, so `press_as_the_browser_would` plays
that part; the browser test drives the grid itself in Chromium.
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from bench.streamlit_browser import chromium_page, settle, streamlit_app
from conftest import open_app
from labeling.queries import media_tags_frame
from labeling.schema import AuditEvent
from test_queries import GIF, FixtureStore, new_fixture_store

SAVE = "tags_save_confidences"


def _events(fx: FixtureStore) -> int:
    with fx.store() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent))


def _active(fx: FixtureStore, gif: int):
    return media_tags_frame(fx.store, media_id=gif, status="active")[["tag", "confidence", "version"]]


def press_as_the_browser_would(at, key: str, edited_id: str, edits: dict) -> None:
    """Press Save as the browser does: with the edits it still holds if the table is the widget they were
    typed in (same element id), with none if the table is a new widget."""
    if at.data_editor(key=key).proto.id == edited_id:
        at.session_state[key] = edits
    at.button(key=SAVE).click().run()


def test_a_saved_edit_that_moves_its_row_is_not_shown_or_saved_on_another_tag(tmp_path_factory, monkeypatch):
    fx = new_fixture_store(tmp_path_factory, "tags-r21-moved-row")
    gif = fx.media[GIF]
    key = f"tag_editor_{gif}"
    at = open_app(monkeypatch, fx.data_dir, fx.url)
    at.session_state["editor"] = "ann"
    at.switch_page("labeling/pages/tags.py").run()
    at.selectbox(key="tags_media").set_value(gif).run()
    table = at.data_editor(key=key)
    first, second = table.value["tag"].iloc[:2]
    assert table.value["confidence"].iloc[0] == table.value["confidence"].iloc[1] == pytest.approx(0.8)

    edits = {"edited_rows": {0: {"confidence": 0.5}}, "added_rows": [], "deleted_rows": []}
    at.session_state[key] = edits
    at.button(key=SAVE).click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    assert any(f"to 0.5: '{first}'" in s.value for s in at.success), [s.value for s in at.success]
    saved = _active(fx, gif)
    assert list(saved["tag"].iloc[:2]) == [second, first]  # the saved row sorted below the other one

    # the table shows the store's values, with no edit left on the row that moved into the first place
    shown = at.data_editor(key=key)
    assert shown.value[["tag", "confidence", "version"]].reset_index(drop=True).equals(saved.reset_index(drop=True))
    events = _events(fx)
    press_as_the_browser_would(at, key, table.proto.id, edits)
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    assert _events(fx) == events and _active(fx, gif).equals(saved)  # nothing written, least of all to `second`
    assert [i.value for i in at.info] == ["No confidence was changed."]


# -- the same in Chromium: the grid's pending edits are the browser's -------------------------------------
def _grid(page) -> list[tuple[str, float]]:
    """(tag, confidence) per row as the grid shows them, pending edits included (its accessible table)."""
    rows = page.locator("[data-testid='stDataFrame']").first.locator("table[role='grid'] tbody tr")
    rows.first.wait_for(state="attached")
    cells = [rows.nth(i).locator("td") for i in range(rows.count())]
    return [(c.nth(0).inner_text().strip(), float(c.nth(1).inner_text())) for c in cells]


def _type_first_confidence(page, value: str) -> None:
    """Type `value` into the first row's confidence cell. The grid is a canvas (rows 35 px high under a
    header as high, the confidence column about a third in): a first click gives it the focus, a double
    click then opens the cell's editor."""
    grid = page.locator("[data-testid='stDataFrame']").first
    cell = {"x": grid.bounding_box()["width"] * 0.4, "y": 36 + 17}
    grid.click(position=cell)
    expect(grid.locator("[data-testid='data-grid-canvas']")).to_be_focused()
    grid.dblclick(position=cell)
    editor = page.locator("#portal input").first
    editor.fill(value)
    editor.press("Enter")


@pytest.mark.browser
@pytest.mark.slow
def test_in_chromium_a_saved_edit_that_moves_its_row_stays_on_its_tag(tmp_path_factory):
    fx = new_fixture_store(tmp_path_factory, "tags-r21-moved-row-browser")
    gif = fx.media[GIF]
    with streamlit_app(fx.data_dir, fx.url, tmp_path_factory.mktemp("streamlit") / "streamlit.log") as url, \
            chromium_page(url) as page:
        page.locator(".st-key-sign_in_name input").fill("ann")
        page.get_by_role("button", name="Sign in").click()
        settle(page)
        page.locator("[data-testid='stSidebarNavLink']", has_text="Tags").first.click()
        settle(page)
        box = page.locator(".st-key-tags_media input")
        box.click()
        box.fill(GIF)
        page.get_by_role("option", name=re.compile(re.escape(GIF))).first.click()
        settle(page)
        first, second = _active(fx, gif)["tag"].iloc[:2]
        assert _grid(page) == [(first, 0.8), (second, 0.8)]

        _type_first_confidence(page, "0.5")
        first_cell = page.locator("[data-testid='stDataFrame'] table[role='grid'] tbody tr").first.locator("td").nth(1)
        expect(first_cell).to_have_text("0.5")  # the edit, pending
        settle(page)
        assert _grid(page) == [(first, 0.5), (second, 0.8)]
        page.get_by_role("button", name="Save confidences").click()
        page.get_by_text(f"to 0.5: '{first}'", exact=False).wait_for()
        settle(page)
        saved = _active(fx, gif)
        assert list(saved["tag"]) == [second, first]
        assert _grid(page) == list(zip(saved["tag"], saved["confidence"]))  # no 0.5 left on `second`'s row

        events = _events(fx)
        page.get_by_role("button", name="Save confidences").click()
        page.get_by_text("No confidence was changed.").wait_for()
        settle(page)
        assert _events(fx) == events and _active(fx, gif).equals(saved)
