"""Explore in Chromium on a store big enough for UMAP (test_recognition_loop's LFW photos and GIFs):
the PCA preview and a progress bar come at once, the editor can open a point while UMAP computes
in the worker process, and the page swaps in UMAP by itself, with no click, from the one fit it
started (the editor's rerun did not start it again)."""
from __future__ import annotations

import shutil

import pytest

from conftest import session_dir
from bench.streamlit_browser import chromium_page, settle, streamlit_app
from test_browser import SHOTS, _no_exception
from test_recognition_loop import LoopStore, build_loop_store

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> LoopStore:
    data = session_dir(tmp_path_factory, "giflens-recognition-data")
    store = build_loop_store(data, f"sqlite:///{tmp_path_factory.mktemp('umap-browser') / 'store.db'}")
    shutil.rmtree(data / "projections", ignore_errors=True)  # only a cache: this test must see a fit
    return store


def test_explore_swaps_the_pca_preview_for_umap_by_itself(loop: LoopStore, tmp_path):
    with streamlit_app(loop.data_dir, loop.url, tmp_path / "streamlit.log") as url, chromium_page(url) as pg:
        pg.locator("[data-testid='stSidebarNavLink']", has_text="Explore").first.click()
        pg.get_by_text("PCA preview while UMAP computes in the background", exact=False).first.wait_for()
        pg.get_by_text("UMAP in the background").first.wait_for()  # the progress bar's label
        _no_exception(pg, "Explore")
        # the preview is usable: open a face while the fit runs
        face = loop.face("Serena_Williams_0007.jpg")
        box = pg.locator(".st-key-explore_point_id input")
        box.fill(str(face))
        box.press("Enter")
        pg.get_by_text(f"face {face}", exact=True).wait_for()
        # no click: the page reruns itself with UMAP, fitted once
        pg.get_by_text("UMAP (fitted in", exact=False).first.wait_for()
        settle(pg)
        _no_exception(pg, "Explore")
        assert pg.get_by_text("UMAP in the background").count() == 0
        assert pg.locator(".st-key-explore_point_id input").input_value() == str(face)  # the editor's point stays
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / "explore-umap-swapped-in.png"))
    assert (loop.data_dir / "projections").is_dir()
