"""Explorer benchmark: what the Explore page costs at 10,000 and 50,000 faces.

For each size: PCA preview time (the baseline: what the page shows at once), UMAP fit time
(3D, cosine, n_neighbors=15, seeded as the app runs it), cache write and cache hit times,
`transform` time for 1,000 new faces, time to build the 3D and 2D figures and the bytes of
figure JSON sent to the browser (against plotly.express with per-point hover text, the
naive way to draw the same points).

Data, honestly: the 5,985 real dlib embeddings of LFW photos (bench/lfw_faces.py). There are
no 10,000 real faces here, so each larger set is the real photos plus copies of real photos
with small Gaussian noise (re-normalised), labelled with the person they copy; the 1,000
"new" faces are further noisy copies. The script prints how far a copy is from its original
next to how far two real photos of one person are, so the noise can be judged. Copies are
tighter than real photos, so UMAP's neighbour graph is somewhat easier than on 50,000 real
faces; times for the layout epochs scale with the graph size either way.

    NUMBA_CACHE_DIR=.numba-cache uv run python bench/app.py            # 10k and 50k
    NUMBA_CACHE_DIR=.numba-cache uv run python bench/app.py --sizes 10000
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba-cache"))

from bench.checks import at_least, existing_dir  # noqa: E402
from bench.lfw_faces import load_lfw_faces  # noqa: E402
from explorer.figures import payload_bytes, scatter_2d, scatter_3d  # noqa: E402
from explorer.projection import load_cached, pca_preview, project  # noqa: E402


def noisy_copies(vectors: np.ndarray, names: np.ndarray, n: int, sigma: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n copies of randomly chosen real photos plus N(0, sigma^2) per dimension, re-normalised."""
    src = rng.integers(0, len(vectors), n)
    v = vectors[src] + rng.normal(0.0, sigma, (n, vectors.shape[1])).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32), names[src], src


def within_person_distance(vectors: np.ndarray, names: np.ndarray, rng: np.random.Generator) -> float:
    """Median cosine distance between two different real photos of the same person."""
    d = []
    for person in np.unique(names):
        rows = np.flatnonzero(names == person)
        if len(rows) < 2:
            continue
        a, b = rng.choice(rows, 2, replace=False)
        d.append(1.0 - float(vectors[a] @ vectors[b]))
    return float(np.median(d))


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def size_label(n: int) -> str:
    """The prefix of a size's summary keys (n10k_...)."""
    return f"n{n // 1000}k"


MIN_PHOTOS = 30  # UMAP's 15 neighbours in the warm-up fit, plus the 10 photos it places with transform


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what would fail (or print colliding summary keys) only after the embeddings load."""
    existing_dir(parser, "--images", args.images)
    for n in args.sizes:
        at_least(parser, "--sizes", n, 1)
    labels = [size_label(n) for n in args.sizes]
    if len(set(labels)) < len(labels):
        parser.error(f"--sizes {' '.join(map(str, args.sizes))}: sizes name their summary keys by thousands "
                     f"({', '.join(labels)}), so each must fall in a different thousand")
    at_least(parser, "--new", args.new, 1)
    at_least(parser, "--sigma", args.sigma, 0)
    photos = sum(1 for _ in args.images.glob("*/*.jpg"))
    if photos < MIN_PHOTOS:
        parser.error(f"--images {args.images} has {photos} photos (<Person>/*.jpg); the benchmark needs at least "
                     f"{MIN_PHOTOS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "lfw")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--new", type=int, default=1_000, help="faces placed with transform")
    parser.add_argument("--sigma", type=float, default=0.01, help="noise per dimension of the copies")
    parser.add_argument("--no-naive", action="store_true", help="skip the plotly.express payload baseline")
    args = parser.parse_args()
    check_args(parser, args)

    rng = np.random.default_rng(0)
    faces = load_lfw_faces(args.images)
    real_v, real_names = faces.vectors, faces.names
    print(f"real LFW embeddings: {len(real_v)} photos, {len(np.unique(real_names))} people, dim {real_v.shape[1]}")
    probe, _, src = noisy_copies(real_v, real_names, 2000, args.sigma, rng)
    copy_d = float(np.median(1.0 - np.einsum("nd,nd->n", probe, real_v[src])))
    person_d = within_person_distance(real_v, real_names, rng)
    print(f"noise sigma={args.sigma}: median cosine distance copy->original {copy_d:.4f}, "
          f"two real photos of one person {person_d:.4f}")

    # numba compiles UMAP's kernels once per process (or loads them from NUMBA_CACHE_DIR): pay it
    # here, outside the measurements. Above 4,096 points UMAP switches to NNDescent, whose search
    # function is compiled on first transform or pickling, so the warm-up set is above that.
    # A smaller --images folder warms up on what it has, keeping 10 photos apart for the transform.
    w = min(4500, len(real_v) - 10)
    warm_dir = Path(tempfile.mkdtemp(prefix="giflens-bench-warm-"))
    _, warm = timed(lambda: project(real_v[:w], np.arange(w), cache_dir=warm_dir)
                    .extend(real_v[w:w + 10], np.arange(w, w + 10)))
    shutil.rmtree(warm_dir, ignore_errors=True)
    print(f"numba warm-up (compile or load from NUMBA_CACHE_DIR, fit {w:,} + save + transform): {warm:.1f} s")

    summary: dict[str, str] = {"real_photos": str(len(real_v)), "copy_dist": f"{copy_d:.4f}",
                               "person_dist": f"{person_d:.4f}"}
    cache_root = Path(tempfile.mkdtemp(prefix="giflens-bench-app-"))
    try:
        for n in args.sizes:
            tag = size_label(n)
            extra = max(0, n - len(real_v))
            cv, cn, _ = noisy_copies(real_v, real_names, extra, args.sigma, rng)
            vectors = np.concatenate([real_v, cv])[:n]
            names = np.concatenate([real_names, cn])[:n]
            ids = np.arange(n, dtype=np.int64)
            new_v, new_names, _ = noisy_copies(real_v, real_names, args.new, args.sigma, rng)
            print(f"\n== {n} faces ({min(n, len(real_v))} real + {extra} noisy copies), {len(np.unique(names))} people ==")

            preview, t_pca = timed(pca_preview, vectors)
            print(f"PCA preview (baseline)      {t_pca:8.3f} s")
            cache = cache_root / tag
            proj, t_fit = timed(project, vectors, ids, cache_dir=cache, model_id="dlib-resnet-v1")
            t_save = t_fit - proj.fit_seconds
            print(f"UMAP fit 3D                 {proj.fit_seconds:8.2f} s  ({proj.fit_seconds / t_pca:,.0f}x PCA); "
                  f"cache write {t_save:.2f} s (builds UMAP's search index for transform), {dir_bytes(cache) / 1e6:.1f} MB on disk")
            hit, t_hit = timed(load_cached, vectors, ids, cache, model_id="dlib-resnet-v1")
            assert hit is not None and np.array_equal(hit.coords, proj.coords)
            plot_only, t_hit_coords = timed(load_cached, vectors, ids, cache, model_id="dlib-resnet-v1", with_reducer=False)
            print(f"cache hit                   {t_hit:8.3f} s  (coords only: {t_hit_coords:.3f} s, incl. fingerprinting)")
            ext, t_tr = timed(proj.extend, new_v, np.arange(n, n + args.new))
            placed = ext.coords[n:]
            # Placement check: nearest person centroid in 3D for each new face.
            frame = pd.DataFrame(proj.coords, columns=list("xyz")).assign(p=names)
            cent = frame.groupby("p")[list("xyz")].mean()
            nearest = cent.index.to_numpy()[np.argmin(((placed[:, None, :] - cent.to_numpy()[None]) ** 2).sum(-1), axis=1)]
            placed_ok = float((nearest == new_names).mean())
            print(f"transform {args.new} new faces     {t_tr:8.3f} s  ({args.new / t_tr:,.0f} faces/s); "
                  f"nearest person centroid correct for {placed_ok:.1%}")

            df = ext.to_frame()
            df["class"] = np.concatenate([names, new_names])
            fig3, t_f3 = timed(scatter_3d, df, "class")
            b3, t_j3 = timed(payload_bytes, fig3)
            fig2, t_f2 = timed(scatter_2d, df, "class")
            b2, t_j2 = timed(payload_bytes, fig2)
            print(f"figure 3D build             {t_f3:8.3f} s  JSON {t_j3:.3f} s, {b3 / 1e6:.2f} MB ({b3 / len(df):.1f} B/point)")
            print(f"figure 2D build             {t_f2:8.3f} s  JSON {t_j2:.3f} s, {b2 / 1e6:.2f} MB ({b2 / len(df):.1f} B/point)")
            naive = float("nan")
            if not args.no_naive:
                import plotly.express as px

                df64 = df.astype({"x": np.float64, "y": np.float64, "z": np.float64})
                fig_naive, t_naive = timed(px.scatter_3d, df64, x="x", y="y", z="z", color="class",
                                           hover_name="class", hover_data=["id"])
                naive = payload_bytes(fig_naive)
                print(f"naive px.scatter_3d         {t_naive:8.3f} s  JSON {naive / 1e6:.2f} MB "
                      f"({len(fig_naive.data)} traces; ours is {naive / b3:.1f}x smaller)")
            summary.update({
                f"{tag}_pca_s": f"{t_pca:.3f}", f"{tag}_umap_fit_s": f"{proj.fit_seconds:.1f}",
                f"{tag}_umap_vs_pca": f"{proj.fit_seconds / t_pca:.0f}", f"{tag}_cache_write_s": f"{t_save:.1f}",
                f"{tag}_cache_mb": f"{dir_bytes(cache) / 1e6:.1f}", f"{tag}_cache_hit_s": f"{t_hit:.3f}",
                f"{tag}_transform1k_s": f"{t_tr * 1000 / args.new:.2f}", f"{tag}_placed_ok": f"{placed_ok:.3f}",
                f"{tag}_fig3d_s": f"{t_f3:.3f}", f"{tag}_fig3d_bytes": str(b3),
                f"{tag}_fig2d_s": f"{t_f2:.3f}", f"{tag}_fig2d_bytes": str(b2),
                f"{tag}_naive_vs_ours": f"{naive / b3:.1f}",
            })
            del proj, hit, plot_only, ext, fig3, fig2
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
    summary["peak_rss_mb"] = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
    print()
    print(" ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
