"""Explore in a real browser at 1,000 / 10,000 / 50,000 faces: is it still usable?

bench/app.py measures what the server computes; this measures what an editor waits for, with
`streamlit run app.py` and Debian's Chromium (WebGL on the CPU through SwiftShader, as on these
machines: a laptop's GPU draws faster), on a SQLite store of that many faces:

- (the app's first page, the Overview, is opened first: the server's first script run imports the
  app's libraries, some 10-20 s that are not Explore's;)
- first map: from opening Explore to every face drawn by plotly.js (the PCA preview), and the
  bytes the browser received over Streamlit's websocket until then;
- UMAP swap: until the page replaced the preview with UMAP by itself (fitted in a worker process
  meanwhile; the preview stays usable);
- hover: from moving the mouse onto a 3D marker to plotly.js naming it (WebGL picking);
- click picked: from pressing the button on that marker to plotly.js reporting the click (it
  picks in its render loop while the button is down);
- click to details: from clicking that marker to its details (crop, labels, history) shown;
- recolour: from choosing another "Colour by" to the map redrawn with every point;
- JS heap of the page once UMAP shows.

The baseline is the smallest size, measured in the same run: each figure is also printed as a
ratio against it. Nothing passes or fails on time.

Data, as in bench/app.py: the 5,985 real dlib embeddings of LFW photos (bench/lfw_faces.py) and,
past that, noisy copies of them (the same real photo as crop and media, the copy's person as
its prediction). Real photos are approved labels (source import), copies predicted.

    NUMBA_CACHE_DIR=.numba-cache uv run python bench/app_browser.py                # 1k, 10k, 50k
    NUMBA_CACHE_DIR=.numba-cache uv run python bench/app_browser.py --sizes 1000 10000
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba-cache"))

from bench.app import noisy_copies  # noqa: E402
from bench.lfw_faces import LfwFaces, load_lfw_faces  # noqa: E402
from bench.streamlit_browser import (POINTS_3D, WAIT_MS, chromium_page, click_3d_point, settle,  # noqa: E402
                                     streamlit_app, umap_ready)

FACE_MODEL = "dlib-resnet-v1"
MB = 1024 * 1024


@dataclass
class SyntheticStore:
    url: str
    data_dir: Path
    face_ids: np.ndarray  # every face, in insertion order


def build_store(data_dir: Path, lfw: LfwFaces, images: Path, n: int, rng: np.random.Generator) -> SyntheticStore:
    """A store of n faces: the first real LFW photos (all of them past 5,985) plus noisy copies."""
    from sqlalchemy import insert, select

    from labeling.db import open_store
    from labeling.schema import CelebrityClass, Face, FaceEmbedding, FaceLabel, Media, utcnow, vector_to_bytes
    from labeling.validation import class_name_key

    real = min(n, len(lfw.paths))
    order = rng.permutation(len(lfw.paths))[:real]
    vectors, names, src = lfw.vectors[order], lfw.names[order], np.arange(real)
    if n > real:
        copies, copy_names, copy_src = noisy_copies(vectors, names, n - real, 0.02, rng)
        vectors, names, src = np.vstack([vectors, copies]), np.concatenate([names, copy_names]), np.concatenate([src, copy_src])
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{data_dir / 'giflens.db'}"
    store = open_store(url)
    now = utcnow()
    with store.begin() as s:
        people = sorted(set(names.tolist()))
        s.execute(insert(CelebrityClass), [{"name": p.replace("_", " "), "name_key": class_name_key(p.replace("_", " ")),
                                            "status": "active", "created_at": now, "updated_at": now} for p in people])
        class_id = {name.replace(" ", "_"): cid for cid, name in s.execute(select(CelebrityClass.id, CelebrityClass.name))}
        photo_paths = [str(images / p) for p in lfw.paths[order]]
        s.execute(insert(Media), [{"path": path, "kind": "image", "status": "ok", "sha256": f"{i:064x}",
                                   "width": 250, "height": 250, "total_frames": 1, "created_at": now, "updated_at": now}
                                  for i, path in enumerate(photo_paths)])
        media_id = dict(s.execute(select(Media.path, Media.id)).all())
        copy_no = np.zeros(real, int)
        faces = []
        for i, j in enumerate(src):
            faces.append({"media_id": media_id[photo_paths[j]], "face_index": int(copy_no[j]), "frame_index": 0,
                          "x1": 70.0, "y1": 70.0, "x2": 180.0, "y2": 180.0, "probability": 0.999, "landmarks": []})
            copy_no[j] += 1
        s.execute(insert(Face), faces)
        face_ids = np.array(s.scalars(select(Face.id).order_by(Face.id)).all())
        s.execute(insert(FaceEmbedding), [{"face_id": int(f), "model_id": FACE_MODEL, "dim": int(v.shape[0]),
                                           "vector": vector_to_bytes(v), "crop_path": photo_paths[j]}
                                          for f, v, j in zip(face_ids, vectors, src)])
        confidences = rng.uniform(0.4, 1.0, n)
        s.execute(insert(FaceLabel), [
            {"face_id": int(f), "status": "approved" if i < real else "predicted",
             "class_id": class_id[name], "predicted_class_id": class_id[name], "predicted_confidence": float(c),
             "source": "import" if i < real else "model", "updated_at": now}
            for i, (f, name, c) in enumerate(zip(face_ids, names, confidences))])
    return SyntheticStore(url, data_dir, face_ids)


def _wait_points(pg, n: int, trace: str | None = None) -> None:
    """Until plotly.js draws every face (plus the selected one's highlight, once there is one), and
    when `trace` is given, a legend group of that name (the new colouring, not the old figure)."""
    named = ("true" if trace is None else "[...document.querySelector('.st-key-explore_3d .js-plotly-plot')._fullData]"
             f".some(t => t.name === {trace!r})")
    pg.wait_for_function(f"() => ({POINTS_3D})() >= {n} && {named}", timeout=WAIT_MS, polling=100)


def measure(store: SyntheticStore, n: int, rng: np.random.Generator, log: Path) -> dict[str, float]:
    received = [0]
    with streamlit_app(store.data_dir, store.url, log) as url, chromium_page(url, settle_first=False) as pg:
        pg.on("websocket", lambda ws: ws.on("framereceived", lambda payload: received.__setitem__(
            0, received[0] + len(payload))))
        start = time.perf_counter()
        pg.goto(url)  # the Overview first: the server's first script run imports the app's libraries
        settle(pg)
        warm_up = time.perf_counter() - start - 0.6
        received[0] = 0
        start = time.perf_counter()
        pg.goto(f"{url}/explore")
        _wait_points(pg, n)
        first_map, first_bytes = time.perf_counter() - start, received[0]
        umap_ready(pg)
        umap_swap = time.perf_counter() - start
        _wait_points(pg, n)
        heap = pg.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize : 0")
        clicked = click_3d_point(pg, rng.permutation(store.face_ids)[:60], hover_timeout_ms=5000)
        pg.get_by_text(f"face {clicked.face_id}", exact=True).wait_for(timeout=WAIT_MS)
        click = time.perf_counter() - clicked.pressed_at - 0.6  # settle's own fixed waits taken off

        start = time.perf_counter()
        pg.locator(".st-key-explore_colour").click()
        pg.get_by_role("option", name="label status", exact=True).click()
        _wait_points(pg, n, trace="approved")
        recolour = time.perf_counter() - start
    return {"warm_up_s": warm_up, "first_map_s": first_map, "first_map_mb": first_bytes / MB, "umap_swap_s": umap_swap,
            "hover_ms": clicked.hover_s * 1000, "click_pick_ms": clicked.pick_s * 1000, "click_to_details_s": click, "recolour_s": recolour, "js_heap_mb": heap / MB,
            "face_id": clicked.face_id}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "lfw")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from bench.checks import at_least, existing_dir

    existing_dir(parser, "--images", args.images)
    for n in args.sizes:
        at_least(parser, "--sizes", n, 1)
    sizes = sorted(set(args.sizes))
    lfw = load_lfw_faces(args.images)
    print(f"real LFW embeddings: {len(lfw.paths)}; Chromium with SwiftShader (WebGL on the CPU), 1500 x 1000")
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="giflens-bench-browser-") as tmp:
        for n in sizes:
            rng = np.random.default_rng(args.seed)
            start = time.perf_counter()
            store = build_store(Path(tmp) / f"store-{n}", lfw, args.images, n, rng)
            built = time.perf_counter() - start
            results[n] = measure(store, n, rng, Path(tmp) / f"streamlit-{n}.log")
            r = results[n]
            print(f"{n:>6} faces (store built in {built:.1f} s, app's first page {r['warm_up_s']:.1f} s): first map {r['first_map_s']:.1f} s "
                  f"({r['first_map_mb']:.2f} MB received), UMAP swapped in after {r['umap_swap_s']:.1f} s, "
                  f"hover {r['hover_ms']:.0f} ms, click picked in {r['click_pick_ms']:.0f} ms, click to details {r['click_to_details_s']:.2f} s "
                  f"(face {int(r['face_id'])}), recolour {r['recolour_s']:.2f} s, JS heap {r['js_heap_mb']:.0f} MB",
                  flush=True)
    base = sizes[0]
    keys = ["first_map_s", "umap_swap_s", "hover_ms", "click_pick_ms", "click_to_details_s", "recolour_s", "first_map_mb", "js_heap_mb"]
    for n in sizes[1:]:
        ratios = ", ".join(f"{k} {results[n][k] / results[base][k]:.2f}x" for k in keys if results[base][k])
        print(f"{n:>6} faces against {base} ({n / base:.0f}x the points): {ratios}")
    top = sizes[-1]
    r = results[top]
    print(f"points={top} first_map_s={r['first_map_s']:.2f} click_to_details_s={r['click_to_details_s']:.2f} "
          f"recolour_s={r['recolour_s']:.2f} hover_ms={r['hover_ms']:.0f} umap_swap_s={r['umap_swap_s']:.1f} "
          f"first_map_ratio={r['first_map_s'] / results[base]['first_map_s']:.2f} "
          f"click_ratio={r['click_to_details_s'] / results[base]['click_to_details_s']:.2f}")


if __name__ == "__main__":
    main()
