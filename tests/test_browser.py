"""The app in a real browser: `streamlit run app.py` on a store built from real LFW photos and a real
GIF, driven by Playwright for Python in Debian's Chromium (never `playwright install`: no downloads).

The end-to-end flow an editor follows: sign in, open Explore, see the points drawn by Plotly, pick a
face, relabel it, then read the new label and its audit event back from the database; and in the 2D
view, box-select a group of faces with the mouse and mark them unknown in one bulk action. Every page is
screenshotted into test-artifacts/screenshots/ (kept by CI as artifacts; the README shows some).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from bench.streamlit_browser import POINTS_3D, chromium_page, click_3d_point, settle, streamlit_app, umap_ready
from labeling.schema import AuditEvent, CelebrityClass, FaceEmbedding, FaceLabel, MediaTag, Tag
from labeling.tags import set_tag_status
from test_queries import FixtureStore, new_fixture_store

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-artifacts" / "screenshots"
EDITOR = "browser-editor"
# Every page of the navigation, by the title its sidebar link shows.
PAGES = ["Overview", "Explore", "Review", "Classes", "Tags", "Bias audit", "Ingest", "Export"]


@pytest.fixture(scope="module")
def browser_store(tmp_path_factory) -> FixtureStore:
    return new_fixture_store(tmp_path_factory, "browser-store")


@pytest.fixture(scope="module")
def server(browser_store: FixtureStore, tmp_path_factory):
    with streamlit_app(browser_store.data_dir, browser_store.url,
                       tmp_path_factory.mktemp("streamlit") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(server) as pg:
        yield pg


def _open(pg, title: str) -> None:
    pg.locator("[data-testid='stSidebarNavLink']", has_text=title).first.click()
    pg.wait_for_function("t => document.title.includes(t) || true", arg=title)
    settle(pg)


def _no_exception(pg, where: str) -> None:
    errors = pg.locator("[data-testid='stException']")
    assert errors.count() == 0, f"{where}: {errors.first.inner_text()[:2000]}"


def _shot(pg, name: str) -> Path:
    """The whole page: Streamlit scrolls inside its main block, so the viewport grows to fit it."""
    path = SHOTS / f"{name}.png"
    size = pg.viewport_size
    height = pg.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                         " return m ? m.scrollHeight : document.body.scrollHeight; }")
    pg.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height) + 40, 6000))})
    pg.wait_for_timeout(500)
    pg.screenshot(path=str(path))
    pg.set_viewport_size(size)
    return path


def _sign_in(pg, name: str = EDITOR) -> None:
    """Sign in as `name`, signing the previous editor (an earlier test's) out first."""
    sign_out = pg.get_by_role("button", name="Sign out")
    if sign_out.count():
        sign_out.click()
        settle(pg)
    pg.locator(".st-key-sign_in_name input").fill(name)
    pg.get_by_role("button", name="Sign in").click()
    settle(pg)
    pg.get_by_text(f"Editor: {name}").wait_for()


def _coloured_pixels(png: Path) -> int:
    """Pixels that are neither background white nor grey: the markers Plotly drew."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return int((spread > 60).sum())


def test_every_page_renders_in_chromium(page):
    links = [link.inner_text().split("\n")[-1] for link in page.locator("[data-testid='stSidebarNavLink']").all()]
    for title in links:
        _open(page, title)
        if title == "Explore":
            umap_ready(page)
        _no_exception(page, title)
        _shot(page, title.lower().replace(" ", "-"))
    assert set(PAGES) <= set(links), f"pages missing from the navigation: {set(PAGES) - set(links)}"


def test_explore_relabel_lands_in_the_database(page, browser_store: FixtureStore):
    _sign_in(page)
    _open(page, "Explore")
    umap_ready(page)
    _no_exception(page, "Explore")

    # The Plotly figure reached the browser with every face and WebGL drew it.
    plot = page.locator(".st-key-explore_3d .js-plotly-plot")
    plot.wait_for()
    n_points = page.evaluate(POINTS_3D)
    assert n_points >= len(browser_store.gif_faces) + len(browser_store.largest_face)
    assert plot.locator("canvas").count() >= 1
    shot = SHOTS / "explore-3d.png"
    plot.screenshot(path=str(shot))
    assert _coloured_pixels(shot) > 50, "the 3D canvas shows no coloured markers"

    # Click one of the GIF's faces (predicted Serena Williams) in the 3D view, then relabel it to
    # Ariel Sharon. The first face whose marker is not hidden behind another one is clicked.
    face_id = click_3d_point(page, browser_store.gif_faces).face_id
    target = "Ariel Sharon"
    page.get_by_text(f"face {face_id}", exact=True).wait_for()
    assert page.locator(".st-key-explore_point_id input").input_value() == str(face_id)  # the id box follows the click
    _shot(page, "explore-point")
    # The dropdown starts at the model's guess (Serena Williams); the editor picks Ariel Sharon, so the
    # change is visible in the database.
    dropdown = page.locator(f".st-key-explore_relabel_class_{face_id}")
    dropdown.wait_for(state="visible")
    settle(page)
    dropdown.locator("input").click()
    dropdown.locator("input").fill(target)  # the dropdown filters as one types; Enter takes the match
    page.keyboard.press("Enter")
    settle(page)
    page.get_by_role("button", name="Relabel", exact=True).click()
    settle(page)
    _no_exception(page, "Explore after relabel")
    _shot(page, "explore-after-relabel")

    with browser_store.store() as s:
        label = s.scalar(select(FaceLabel).where(FaceLabel.face_id == face_id))
        event = s.scalars(select(AuditEvent).where(AuditEvent.editor == EDITOR).order_by(AuditEvent.id.desc())).first()
    assert label is not None and label.class_id == browser_store.classes[target]
    assert label.status == "relabeled" and label.editor == EDITOR
    assert event is not None and "relabel" in event.operation
    assert f"face:{face_id}" in event.after and event.after[f"face:{face_id}"]["class_id"] == browser_store.classes[target]


# Every face marker of the 2D view and where it sits on screen: plotly.js's own axis mapping
# (c2p, data to pixel) from the corner of the plot area, the drag layer the mouse works on.
_POINTS_2D = """() => {
  const gd = document.querySelector('.st-key-explore_2d .js-plotly-plot');
  const area = gd.querySelector('.draglayer .nsewdrag').getBoundingClientRect();
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, out = [];
  for (const t of gd._fullData) {
    if (t.type !== 'scattergl' || t.name === 'highlighted' || t.visible !== true) continue;
    for (let i = 0; i < t._length; i++) {
      const c = t.customdata[i];
      out.push({id: Number(Array.isArray(c) ? c[0] : c), x: area.left + xa.c2p(t.x[i]), y: area.top + ya.c2p(t.y[i])});
    }
  }
  return {points: out, area: {left: area.left, top: area.top, right: area.right, bottom: area.bottom},
          dragmode: gd._fullLayout.dragmode};
}"""


def _label_state(fx: FixtureStore) -> dict[int, tuple]:
    with fx.store() as s:
        return {r.face_id: (r.status, r.class_id, r.version, r.editor) for r in s.scalars(select(FaceLabel))}


def _last_event_id(fx: FixtureStore) -> int:
    with fx.store() as s:
        return int(s.scalar(select(func.max(AuditEvent.id))) or 0)


def _open_2d(page, noun: str):
    """The 2D tab of Explore, once plotly.js has drawn its points and nothing is selected yet."""
    page.get_by_role("tab", name="2D selection and bulk actions").click()
    plot = page.locator(".st-key-explore_2d .js-plotly-plot")
    plot.wait_for(state="visible")
    page.wait_for_function("""() => { const gd = document.querySelector('.st-key-explore_2d .js-plotly-plot');
                                      return gd && gd._fullLayout && gd.querySelector('.draglayer .nsewdrag')
                                             && gd._fullData.some(t => t.type === 'scattergl' && t._length > 0); }""")
    settle(page)
    page.get_by_text(f"0 {noun} selected").wait_for()
    return plot


def test_explore_2d_box_selection_bulk_action_lands_in_the_database(page, browser_store: FixtureStore):
    editor = "bulk-editor"
    _open(page, "Explore")
    umap_ready(page)
    _sign_in(page, editor)
    _no_exception(page, "Explore")
    # The 2D view is the second tab, on the Faces points (the default view).
    view = page.locator(".st-key-explore_view")
    assert view.locator("input").input_value() == "Faces"
    plot = _open_2d(page, "face(s)")

    # Box select (the modebar's button: the figure opens in lasso mode), then drag a box over the
    # left part of the plot, from the plot's left edge to the widest gap between points, so some
    # faces are inside and some outside.
    plot.hover()
    plot.locator(".modebar-btn[data-title='Box Select']").click()
    layout = page.evaluate(_POINTS_2D)
    assert layout["dragmode"] == "select"
    points, area = layout["points"], layout["area"]
    assert len(points) >= 4, f"the 2D view shows only {len(points)} faces"
    xs = sorted(p["x"] for p in points)
    gap, cut = max((xs[i + 1] - xs[i], (xs[i] + xs[i + 1]) / 2) for i in range(len(xs) - 1))
    assert gap > 6, f"the faces are too close together for a box between them ({gap:.1f} px)"
    left = sorted({p["id"] for p in points if p["x"] < cut})
    right = sorted({p["id"] for p in points if p["x"] > cut})
    assert left and right
    # the side holding more editor-confirmed faces: the guard on changing decisions is part of the flow
    before = _label_state(browser_store)
    decided = {f for f, v in before.items() if v[0] in ("approved", "relabeled", "rejected", "unknown")}
    to_right = len(decided & set(right)) > len(decided & set(left))
    inside = right if to_right else left
    x0, x1 = (cut, area["right"] - 3) if to_right else (area["left"] + 3, cut)

    page.mouse.move(x0, area["top"] + 3)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (area["top"] + area["bottom"]) / 2, steps=10)
    page.mouse.move(x1, area["bottom"] - 3, steps=10)
    page.mouse.up()
    # on_select="rerun": the page reruns and lists what Streamlit received from plotly.js
    message = page.get_by_text(re.compile(r"^\d+ face\(s\) selected: "))
    message.wait_for()
    settle(page)
    _no_exception(page, "Explore after the box selection")
    count, listed = message.inner_text().split(" face(s) selected: ")
    assert int(count) == len(inside) and sorted(int(i) for i in listed.split(",")) == inside
    _shot(page, "explore-2d-selection")

    before, last_event = _label_state(browser_store), _last_event_id(browser_store)
    alerts = page.locator("[data-testid='stAlert']")
    mark = page.get_by_role("button", name=f"Mark {len(inside)} unknown", exact=True)
    confirmed = [f for f in inside if f in decided]
    assert confirmed, "the fixture's approved faces should be in the box"
    # editors' decisions in the box: changing them takes a tick of its own
    assert alerts.first.inner_text().startswith(f"{len(confirmed)} of the selected faces are confirmed")
    assert mark.is_disabled()
    page.get_by_text(f"Change the {len(confirmed)} decided face(s) too").click()
    settle(page)
    assert mark.is_enabled()
    mark.click()
    page.get_by_text(re.compile(r"^Done: marked")).wait_for()  # the outcome, flashed after the write and its rerun
    settle(page)
    _no_exception(page, "Explore after the bulk action")
    assert alerts.first.inner_text().startswith(f"Done: marked {len(inside)} face(s) unknown"), alerts.first.inner_text()
    _shot(page, "explore-2d-after-bulk")

    after = _label_state(browser_store)
    changed = sorted(f for f in after if after[f] != before.get(f))
    assert changed == inside, f"faces changed: {changed}, selected: {inside}"
    assert all(after[f][0] == "unknown" and after[f][1] is None and after[f][3] == editor for f in inside)
    with browser_store.store() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.id > last_event)).all()
    assert [(e.editor, e.operation, e.n_entities) for e in events] == [(editor, "unknown_faces", len(inside))]
    assert {k for k in events[0].after if k.startswith("face:")} == {f"face:{f}" for f in inside}



def _class_row(fx: FixtureStore, name: str) -> tuple:
    with fx.store() as s:
        return s.execute(select(CelebrityClass.id, CelebrityClass.name, CelebrityClass.country)
                         .where(CelebrityClass.name == name)).one()


def _choose(page, key: str, option: str, attempts: int = 3) -> None:
    """Pick an option of a selectbox by typing it into its search box, as a keyboard user would.

    Tried again when the list closed under the pointer: a rerun of the whole app (a projection job
    finishing, `explore.py`'s poll) redraws the selectbox between typing and clicking, and the option
    then never comes back (a loaded CI machine waited out the whole click timeout for it)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box = page.locator(f".st-key-{key} input")
    for attempt in range(attempts):
        box.click()
        box.fill(option)
        try:
            page.get_by_role("option", name=option, exact=True).click(timeout=60_000)
            break
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise
            settle(page)
    settle(page)
    assert box.input_value() == option


def _box_select_everything(page, plot, noun: str) -> list[int]:
    """Box-select the whole 2D plot area; returns the ids the page says it received (all drawn)."""
    plot.hover()
    plot.locator(".modebar-btn[data-title='Box Select']").click()
    layout = page.evaluate(_POINTS_2D)
    drawn, area = sorted({p["id"] for p in layout["points"]}), layout["area"]
    assert drawn
    page.mouse.move(area["left"] + 2, area["top"] + 2)
    page.mouse.down()
    page.mouse.move((area["left"] + area["right"]) / 2, (area["top"] + area["bottom"]) / 2, steps=10)
    page.mouse.move(area["right"] - 2, area["bottom"] - 2, steps=10)
    page.mouse.up()
    message = page.get_by_text(re.compile(rf"^{len(drawn)} {re.escape(noun)} selected: "))
    message.wait_for()
    settle(page)
    assert sorted(int(i) for i in message.inner_text().split(" selected: ")[1].split(",")) == drawn
    return drawn


def test_explore_2d_box_tags_the_gifs_inside_it(page, browser_store: FixtureStore):
    """The GIFs view's 2D selection tags every GIF in the box at once; a GIF already carrying the
    tag keeps its confidence (adding never overwrites)."""
    editor, tag = "gif-editor", "box-tagged"
    _open(page, "Explore")
    _sign_in(page, editor)
    _choose(page, "explore_view", "GIFs")
    settle(page)
    umap_ready(page)
    _no_exception(page, "Explore, GIFs")
    plot = _open_2d(page, "GIF(s)")
    gifs = _box_select_everything(page, plot, "GIF(s)")
    last_event = _last_event_id(browser_store)
    page.locator(".st-key-explore_bulk_tag_name input").fill(tag)
    page.locator(".st-key-explore_bulk_tag_confidence input").fill("0.8")
    page.get_by_role("button", name=f"Tag {len(gifs)} GIF(s)").click()
    page.get_by_text(re.compile(r"^Done: add tag")).wait_for()
    settle(page)
    _no_exception(page, "Explore after tagging GIFs")
    _shot(page, "explore-2d-gifs-tagged")
    with browser_store.store() as s:
        rows = s.execute(select(MediaTag.media_id, MediaTag.confidence, MediaTag.status, MediaTag.editor)
                         .join(Tag, Tag.id == MediaTag.tag_id).where(Tag.name == tag)).all()
        events = s.scalars(select(AuditEvent).where(AuditEvent.id > last_event)).all()
    assert sorted(r.media_id for r in rows) == gifs
    assert all(r.confidence == pytest.approx(0.8) and r.status == "active" and r.editor == editor for r in rows)
    assert [(e.editor, e.operation) for e in events] == [(editor, "add_tags")]

    # again: every GIF carries it now, so nothing is written and the confidences stay
    assert _box_select_everything(page, plot, "GIF(s)") == gifs
    page.locator(".st-key-explore_bulk_tag_name input").fill(tag)
    page.locator(".st-key-explore_bulk_tag_confidence input").fill("0.3")
    page.get_by_role("button", name=f"Tag {len(gifs)} GIF(s)").click()
    page.get_by_text(f"{len(gifs)} of the selected GIFs already carry it and keep their confidence").wait_for()
    assert _last_event_id(browser_store) == events[-1].id

    # a tag an editor rejected on a GIF is not brought back by a lasso either
    set_tag_status(browser_store.store, [(gifs[0], "happy")], "rejected", "another-editor")
    rejected_at = _last_event_id(browser_store)
    _open(page, "Overview")  # a fresh Explore, as an editor coming back to it
    _open(page, "Explore")
    _choose(page, "explore_view", "GIFs")
    assert _box_select_everything(page, _open_2d(page, "GIF(s)"), "GIF(s)") == gifs
    page.locator(".st-key-explore_bulk_tag_name input").fill("happy")
    page.get_by_role("button", name=f"Tag {len(gifs)} GIF(s)").click()
    page.get_by_text("had it rejected by an editor").wait_for()
    assert _last_event_id(browser_store) == rejected_at


def test_explore_2d_box_decides_the_face_tracks_inside_it(page, browser_store: FixtureStore):
    """The Face tracks view's 2D selection decides every face of every track in the box: one event."""
    editor = "track-editor"
    _open(page, "Explore")
    _sign_in(page, editor)
    _choose(page, "explore_view", "Face tracks")
    settle(page)
    umap_ready(page)
    plot = _open_2d(page, "track(s)")
    tracks = _box_select_everything(page, plot, "track(s)")
    with browser_store.store() as s:
        members = sorted(f.face_id for f in s.scalars(select(FaceEmbedding).where(FaceEmbedding.track_id.in_(tracks))))
    before, last_event = _label_state(browser_store), _last_event_id(browser_store)
    decided = [f for f in members if before.get(f, ("",))[0] in ("approved", "relabeled", "rejected", "unknown")]
    reject = page.get_by_role("button", name=f"Reject {len(tracks)} track(s)", exact=True)
    approve = page.get_by_role("button", name=f"Approve {len(tracks)} track(s)", exact=True)
    assert members and decided, "the fixture's photos are one-face tracks with approved labels"
    # editors' decisions among the faces: changing them, by approving the tracks too, takes a tick of its own
    assert reject.is_disabled() and approve.is_disabled()
    page.get_by_text(f"Change the {len(decided)} decided face(s) too").click()
    settle(page)
    reject.click()
    page.get_by_text(re.compile(r"^Done: reject")).wait_for()
    settle(page)
    _no_exception(page, "Explore after deciding tracks")
    after = _label_state(browser_store)
    assert sorted(f for f in after if after[f] != before.get(f)) == members
    assert all(after[f][0] == "rejected" and after[f][3] == editor for f in members)
    with browser_store.store() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.id > last_event)).all()
    assert [(e.editor, e.n_entities) for e in events] == [(editor, len(members))]
    assert events[0].operation in ("reject_track", "reject_tracks")


def test_classes_a_rename_keeps_the_class_selected_for_the_next_edit(page, browser_store: FixtureStore):
    """The browser sends a selectbox's choice back as its label: after a rename that label was gone
    and Streamlit fell back to the first class, so the next form (attributes, merge) hit a class
    the editor never picked."""
    _open(page, "Classes")
    _sign_in(page, "class-editor")
    _no_exception(page, "Classes")
    first = _class_row(browser_store, "Ariel Sharon")
    chooser = page.locator(".st-key-class_selected input").first
    chooser.click()
    chooser.fill("Serena")
    page.locator("[role='option']", has_text="Serena Williams").first.click()
    settle(page)
    serena_id = _class_row(browser_store, "Serena Williams")[0]

    alerts = page.locator("[data-testid='stAlert']")
    page.get_by_role("tab", name="Rename", exact=True).click()
    panel = page.locator("[role='tabpanel']:visible").first
    panel.locator(f".st-key-rename_name_{serena_id} input").fill("Serena J. Williams")
    panel.get_by_role("button", name="Rename", exact=True).click()
    alerts.first.wait_for()
    settle(page)
    assert "to 'Serena J. Williams'" in alerts.first.inner_text(), alerts.first.inner_text()
    assert page.locator(".st-key-class_selected input").first.input_value().startswith("Serena J. Williams")

    page.get_by_role("tab", name="Attributes", exact=True).click()
    panel = page.locator("[role='tabpanel']:visible").first
    panel.locator(f".st-key-attr_country_{serena_id} input").fill("USA")
    panel.get_by_role("button", name="Save attributes", exact=True).click()
    page.get_by_text(re.compile(r"Done: class 'Serena J\. Williams'")).wait_for()
    settle(page)
    _no_exception(page, "Classes after the rename and the attributes")
    assert _class_row(browser_store, "Serena J. Williams") == (serena_id, "Serena J. Williams", "USA")
    assert _class_row(browser_store, "Ariel Sharon") == first  # the first class in the list is untouched
