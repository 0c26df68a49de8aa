"""KnnIndex: HNSW (nmslib) against exact search on real face embeddings: recall@10 and query speed.

Real set: the dlib embedding of every LFW photo (5,985; bench/lfw_faces.py, cached). 500
photos are held out as queries, the rest indexed. Exact search (KnnIndex method="exact",
one matrix product) is both the ground truth and the speed baseline, measured in the same
run. Queries are timed one at a time through the public API (how the explorer asks
"who looks like this face?") and as one batch.

6k items is small for HNSW, so the run also measures a larger SYNTHETIC-AUGMENTED set,
labelled as such: the real embeddings plus copies with Gaussian noise (sigma per dimension,
default 0.02, i.e. about 0.23 in norm before re-normalising: inside one person's spread,
whose photos sit at cosine distance up to ~0.2) up to --large items; the queries are the
held-out real photos. Also an ef_search sweep (recall against speed) and exact vs HNSW
per-query time at growing sizes, which is where `exact_below` should sit.

    uv run python bench/knn.py [--images ../shared/data/lfw] [--large 50000] [--queries 500]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.checks import at_least, existing_dir  # noqa: E402
from bench.lfw_faces import load_lfw_faces  # noqa: E402
from models.knn_index import KnnIndex  # noqa: E402

MODEL = "dlib-resnet-v1"


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true k nearest that the approximate search returned."""
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found.tolist(), truth.tolist())]))


def time_single(index: KnnIndex, queries: np.ndarray, k: int, repeats: int = 3) -> tuple[float, np.ndarray]:
    """Best-of-repeats seconds per query, asking one query at a time, and the answers."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        found = [index.query(q, k)[0][0] for q in queries]
        best = min(best, (time.perf_counter() - start) / len(queries))
    return best, np.stack(found)


def time_batch(index: KnnIndex, queries: np.ndarray, k: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        index.query(queries, k)
        best = min(best, (time.perf_counter() - start) / len(queries))
    return best


def compare(label: str, base: np.ndarray, queries: np.ndarray, k: int, ef_search: int = 100) -> dict[str, float]:
    ids = np.arange(len(base))
    exact = KnnIndex(MODEL, method="exact").fit(base, ids)
    start = time.perf_counter()
    hnsw = KnnIndex(MODEL, method="hnsw", ef_search=ef_search).fit(base, ids)
    build_s = time.perf_counter() - start
    exact_s, truth = time_single(exact, queries, k)
    hnsw_s, found = time_single(hnsw, queries, k)
    exact_b, hnsw_b = time_batch(exact, queries, k), time_batch(hnsw, queries, k)
    out = {"n": len(base), "recall": recall_at_k(found, truth), "build_s": build_s,
           "exact_qps": 1 / exact_s, "hnsw_qps": 1 / hnsw_s, "speedup": exact_s / hnsw_s,
           "batch_exact_qps": 1 / exact_b, "batch_hnsw_qps": 1 / hnsw_b, "batch_speedup": exact_b / hnsw_b}
    print(f"{label}: {len(base)} items, {len(queries)} queries, k={k}, M={hnsw.M}, ef_construction="
          f"{hnsw.ef_construction}, ef_search={ef_search}")
    print(f"  HNSW build {build_s:.2f} s; recall@{k} {out['recall']:.4f}")
    print(f"  one at a time: exact {out['exact_qps']:.0f} q/s, HNSW {out['hnsw_qps']:.0f} q/s -> {out['speedup']:.2f}x")
    print(f"  one batch:     exact {out['batch_exact_qps']:.0f} q/s, HNSW {out['batch_hnsw_qps']:.0f} q/s -> "
          f"{out['batch_speedup']:.2f}x")
    return out


def ef_sweep(base: np.ndarray, queries: np.ndarray, k: int, values: list[int]) -> None:
    ids = np.arange(len(base))
    exact = KnnIndex(MODEL, method="exact").fit(base, ids)
    exact_s, truth = time_single(exact, queries, k)
    hnsw = KnnIndex(MODEL, method="hnsw").fit(base, ids)
    print(f"  ef_search sweep ({len(base)} items; exact {1 / exact_s:.0f} q/s):")
    for ef in values:
        hnsw.ef_search = ef  # a query-time parameter: the graph is the same
        hnsw_s, found = time_single(hnsw, queries, k)
        print(f"    ef_search={ef:4d}: recall@{k} {recall_at_k(found, truth):.4f}, {1 / hnsw_s:.0f} q/s, "
              f"{exact_s / hnsw_s:.2f}x exact")


def crossover(pool: np.ndarray, queries: np.ndarray, k: int, sizes: list[int]) -> int | None:
    """Smallest measured size from which on HNSW answers single queries faster than exact search."""
    print("  per-query time against index size (one query at a time):")
    faster = []
    for n in sizes:
        base, ids = pool[:n], np.arange(n)
        exact_s, _ = time_single(KnnIndex(MODEL, method="exact").fit(base, ids), queries, k)
        hnsw_s, _ = time_single(KnnIndex(MODEL, method="hnsw").fit(base, ids), queries, k)
        print(f"    n={n:6d}: exact {exact_s * 1e6:7.0f} us, HNSW {hnsw_s * 1e6:7.0f} us, HNSW {exact_s / hnsw_s:.2f}x")
        faster.append(hnsw_s < exact_s)
    first = None
    for n, wins in zip(reversed(sizes), reversed(faster)):
        if not wins:
            break
        first = n
    return first


def augmented(real: np.ndarray, size: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    copies = [real]
    while sum(len(c) for c in copies) < size:
        noisy = real + rng.normal(0, sigma, real.shape).astype(np.float32)
        copies.append(noisy / np.linalg.norm(noisy, axis=1, keepdims=True))
    return np.concatenate(copies)[:size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "lfw")
    parser.add_argument("--max-people", type=int, default=None, help="a subset of LFW people (for a quick run)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--large", type=int, default=50_000, help="size of the augmented set (0 skips it)")
    parser.add_argument("--sigma", type=float, default=0.02)
    args = parser.parse_args()
    existing_dir(parser, "--images", args.images)
    at_least(parser, "--max-people", args.max_people, 1)
    at_least(parser, "--queries", args.queries, 1)
    at_least(parser, "--k", args.k, 1)
    at_least(parser, "--large", args.large, 0, "0 skips the augmented set")
    at_least(parser, "--sigma", args.sigma, 0)
    rng = np.random.default_rng(0)

    faces = load_lfw_faces(args.images, max_people=args.max_people)
    order = rng.permutation(len(faces.vectors))
    n_queries = min(args.queries, len(order) // 5)
    queries, base = faces.vectors[order[:n_queries]], faces.vectors[order[n_queries:]]
    print(f"LFW dlib embeddings: {len(faces.vectors)} photos of {len(set(faces.names))} people, dim "
          f"{faces.vectors.shape[1]}; {n_queries} held-out photos as queries")

    real = compare("real LFW", base, queries, args.k)
    ef_sweep(base, queries, args.k, [10, 20, 40, 100, 200])
    summary = {f"recall_at_{args.k}": real["recall"], "speedup": real["speedup"], "batch_speedup": real["batch_speedup"],
               "n": real["n"]}
    if args.large:
        pool = augmented(base, args.large, args.sigma, rng)
        large = compare(f"real + noisy copies (synthetic augmentation, sigma={args.sigma})", pool, queries, args.k)
        sizes = [s for s in (1000, 2000, 5000, 10_000, 20_000, args.large) if s <= args.large]
        first = crossover(pool, queries[:200], args.k, sizes)
        summary.update({"large_n": large["n"], f"large_recall_at_{args.k}": large["recall"],
                        "large_speedup": large["speedup"], "large_batch_speedup": large["batch_speedup"],
                        "hnsw_faster_from_n": first if first is not None else "none"})
    print(summary_line(summary))


def summary_line(summary: dict[str, Any]) -> str:
    """`key=value` pairs: recalls with 4 decimals (whatever --k names them), other figures with 2.

    Why by "recall" and not the key's ending: `recall_at_5` with --k 5 printed as 1.00 hid a 0.9960."""
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) and "recall" in k else
                    f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items())


if __name__ == "__main__":
    main()
