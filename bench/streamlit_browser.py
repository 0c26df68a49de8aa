"""Drive the app as an editor does: `streamlit run app.py` on a store, Debian's Chromium through
Playwright. Shared by the browser tests (tests/test_browser*.py) and the browser benchmark
(bench/app_browser.py), so both measure and check the same app the same way.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WAIT_MS = int(os.environ.get("GIFLENS_BROWSER_WAIT_MS", "240000"))  # generous: a busy 2-core machine must not fail on time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)


@contextmanager
def streamlit_app(data_dir: Path, url: str, log: Path) -> Iterator[str]:
    """`streamlit run app.py` as an editor would start it, on a free port, over this store."""
    port = free_port()
    env = dict(os.environ, GIFLENS_DATA_DIR=str(data_dir), GIFLENS_DATABASE_URL=url)
    env.pop("GIFLENS_EDITOR_PASSWORD", None)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    app_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(app_url, proc, log)
        yield app_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def chromium_page(url: str, settle_first: bool = True) -> Iterator[Any]:
    """A page of Debian's Chromium on the app, once its first script run is over."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make test` installs it (make chromium)"
    with sync_playwright() as p:
        # SwiftShader gives headless Chromium WebGL without a GPU (Plotly's 3D and scattergl need it).
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
        pg = browser.new_page(viewport={"width": 1500, "height": 1000})
        pg.set_default_timeout(WAIT_MS)
        if settle_first:
            pg.goto(url)
            settle(pg)
        try:
            yield pg
        finally:
            browser.close()


def settle(pg) -> None:
    """Wait until the script run is over (Streamlit marks its root with the script's run state)."""
    pg.wait_for_selector("[data-testid='stSidebarNav']")
    pg.wait_for_timeout(300)
    pg.wait_for_function("() => document.querySelector('[data-testid=\"stApp\"]')"
                         "?.getAttribute('data-test-script-state') !== 'running'", timeout=WAIT_MS)
    pg.wait_for_timeout(300)


def umap_ready(pg) -> None:
    """Explore draws the PCA preview at once and reruns itself with UMAP when the background job is
    done: wait for that, so clicks land on the map that stays."""
    pg.get_by_text(re.compile(r"· click a point for its details")).first.wait_for(timeout=WAIT_MS)
    pg.wait_for_function("() => ![...document.querySelectorAll('[data-testid=\"stCaptionContainer\"]')]"
                         ".some(c => c.innerText.includes('UMAP computes in the background'))", timeout=WAIT_MS)
    settle(pg)


# How many points the 3D view draws: the traces plotly.js built from the figure Streamlit sent.
POINTS_3D = """() => { const gd = document.querySelector('.st-key-explore_3d .js-plotly-plot');
  if (!gd || !gd._fullData) return 0;
  return gd._fullData.filter(t => t.visible !== false && t.type === 'scatter3d')
                     .reduce((n, t) => n + (t._length || (t.x ? t.x.length : 0)), 0); }"""

# Where a 3D point lands on screen, as plotly.js places its hover labels: data coordinates
# scaled by the scene's dataScale, through the camera's model, view and projection matrices.
PROJECT_3D = """(args) => {
  const gd = document.querySelector('.st-key-explore_3d .js-plotly-plot');
  const scene = gd._fullLayout.scene._scene;
  const cam = scene.glplot.cameraParams, scale = scene.dataScale;
  for (const trace of gd._fullData) {
    if (trace.type !== 'scatter3d' || trace.name === 'highlighted' || !trace.customdata) continue;
    const i = Array.from(trace.customdata).findIndex(c => (Array.isArray(c) ? c[0] : c) === args.id);
    if (i < 0) continue;
    const v = [trace.x[i] * scale[0], trace.y[i] * scale[1], trace.z[i] * scale[2], 1];
    const mul = (m, u) => [0, 1, 2, 3].map(r => [0, 1, 2, 3].reduce((s, c) => s + m[4 * c + r] * u[c], 0));
    const p = mul(cam.projection, mul(cam.view, mul(cam.model, v)));
    const box = scene.container.getBoundingClientRect();
    return {x: box.left + (0.5 * p[0] / p[3] + 0.5) * box.width, y: box.top + (0.5 - 0.5 * p[1] / p[3]) * box.height};
  }
  return null;
}"""


@dataclass
class Click3d:
    face_id: int
    hover_s: float  # mouse onto the marker -> plotly.js names it (WebGL picking)
    pick_s: float  # button down -> plotly.js reports the click
    pressed_at: float  # time.perf_counter() when the button went down


def click_3d_point(pg, candidates: Iterable[int], hover_timeout_ms: int = 600) -> Click3d:
    """Click the first candidate whose 3D marker answers the mouse (hover names it within
    hover_timeout_ms), holding the button until plotly.js reports the click: it picks a 3D click
    in its render loop while the button is down (a hand holds it ~100 ms; a frame of 50,000
    markers in SwiftShader takes longer). Returns once the app's script run is over."""
    pg.evaluate("""() => { const gd = document.querySelector('.st-key-explore_3d .js-plotly-plot');
                          const id = e => { const c = e.points[0].customdata; return Array.isArray(c) ? c[0] : c; };
                          window.__giflensHover = window.__giflensClick = null;
                          gd.on('plotly_hover', e => { window.__giflensHover = id(e); });
                          gd.on('plotly_click', e => { window.__giflensClick = id(e); }); }""")
    for face_id in map(int, candidates):
        xy = pg.evaluate(PROJECT_3D, {"id": face_id})
        if xy is None:
            continue
        pg.mouse.move(xy["x"] + 40, xy["y"] + 40)
        pg.evaluate("() => { window.__giflensHover = null; }")
        start = time.perf_counter()
        pg.mouse.move(xy["x"], xy["y"])
        try:
            pg.wait_for_function(f"() => window.__giflensHover === {face_id}", timeout=hover_timeout_ms, polling=20)
        except PlaywrightTimeoutError:  # hidden behind another marker: try the next one
            continue
        hover = time.perf_counter() - start
        pressed_at = time.perf_counter()
        pg.mouse.down()
        pg.wait_for_function(f"() => window.__giflensClick === {face_id}", timeout=WAIT_MS, polling=20)
        pick = time.perf_counter() - pressed_at
        pg.mouse.up()
        settle(pg)
        return Click3d(face_id, hover, pick, pressed_at)
    raise AssertionError(f"none of the faces {candidates} could be hovered in the 3D view")
