"""What the app's UMAP warm-up saves: a first fit and a first `transform` in a fresh process,
cold and after `explorer.projection.compile_kernels`.

Why it matters: the app computes UMAP in a worker process it starts itself, and a fresh process
pays numba's compile before its first fit does any work, and again before its first `transform`.
The app now warms the worker up for the fit when it starts (`explorer.projection_jobs.warm_up`,
`GIFLENS_UMAP_WARM_UP`), so this compares, on real LFW face embeddings, each in its own fresh
process:
- cold: fit, then place new faces with `transform` (what the first map cost before);
- warm: the warm-up (timed on its own, it runs while the editor is elsewhere), then the same.
A first, unreported cold run computes the embeddings and fills numba's on-disk cache, so both
cases start from the state of an app restarted on a machine that has run it before.

    uv run python bench/umap_warm_up.py --images ../shared/data/lfw

Ends with one line: cold_fit_s= warm_fit_s= cold_transform_s= warm_transform_s= warm_up_s=
first_map_speedup= (cold fit / warm fit, measured in this run).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _child(mode: str, images: Path, new: int) -> dict[str, float]:
    """One fresh process: optionally warm up, then fit all but `new` faces and place the rest."""
    from bench.lfw_faces import load_lfw_faces
    from explorer.projection import compile_kernels, project

    faces = load_lfw_faces(images)
    ids = [str(p) for p in faces.paths]
    warm_up_s = compile_kernels(len(ids) - new) if mode == "warm" else 0.0
    started = time.perf_counter()
    fitted = project(faces.vectors[:-new], ids[:-new])
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    fitted.extend(faces.vectors[-new:], ids[-new:])
    return {"faces": len(ids) - new, "warm_up_s": warm_up_s, "fit_s": fit_s,
            "transform_s": time.perf_counter() - started}


def _run(mode: str, images: Path, new: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--images", str(images), "--new", str(new)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "lfw")
    parser.add_argument("--new", type=int, default=100, help="faces placed with transform after the fit")
    parser.add_argument("--child", choices=("cold", "warm"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    from bench.checks import at_least, existing_dir

    existing_dir(parser, "--images", args.images)
    at_least(parser, "--new", args.new, 1, "the fit leaves the last --new faces out and places them with transform")
    if args.child:
        print(json.dumps(_child(args.child, args.images, args.new)))
        return
    _run("cold", args.images, args.new)  # embeddings and numba's disk cache filled first, outside the figures
    cold, warm = _run("cold", args.images, args.new), _run("warm", args.images, args.new)
    print(f"{cold['faces']} LFW faces fitted, {args.new} placed with transform, each case in a fresh process")
    print(f"{'':8}{'warm-up':>10}{'fit':>10}{'transform':>11}")
    for name, r in (("cold", cold), ("warm", warm)):
        print(f"{name:8}{r['warm_up_s']:>9.1f}s{r['fit_s']:>9.1f}s{r['transform_s']:>10.2f}s")
    print(f"cold_fit_s={cold['fit_s']:.1f} warm_fit_s={warm['fit_s']:.1f} "
          f"cold_transform_s={cold['transform_s']:.2f} warm_transform_s={warm['transform_s']:.2f} "
          f"warm_up_s={warm['warm_up_s']:.1f} first_map_speedup={cold['fit_s'] / warm['fit_s']:.1f}x")


if __name__ == "__main__":
    main()
