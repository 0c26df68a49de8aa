"""Near-duplicate frames among 100,000 64-bit pHashes: multi-index hashing against brute force.

The hashes, shuffled together:
  - real: the pHash of every frame ingest keeps from ../shared/data/gifs (embeddings/media.py
    sampling with the default settings, embeddings/phash.py);
  - real re-encodes: the same frames downscaled to half size and JPEG-compressed (quality
    60), hashed again: what a re-upload of the clip looks like;
  - planted: per real hash, --copies copies with 1 to radius + 2 random bit flips (so some
    are just outside the radius and must NOT be reported);
  - random 64-bit values up to --n.
Both methods find every pair within --radius; the brute force (blocked, vectorised
popcount over all n(n-1)/2 pairs) is the baseline, timed in the same run. m defaults to
choose_m(n, radius); --sweep also times the neighbouring m values.

    uv run python bench/dupes.py [--n 100000] [--radius 6] [--m M] [--sweep]
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embeddings.media import MediaError, MediaLimits, sample_media  # noqa: E402
from bench.checks import at_least, existing_dir  # noqa: E402
from embeddings.near_duplicates import (BITS, MultiIndexHash, NearDuplicateError, _check_radius,  # noqa: E402
                                        brute_force_pairs, choose_m, hamming_distances)
from embeddings.phash import phash64  # noqa: E402
from models.settings import Settings  # noqa: E402


def real_frame_hashes(gifs: Path) -> tuple[list[int], list[int]]:
    """(pHashes of the frames ingest keeps, pHashes of the same frames re-encoded)."""
    settings = Settings()
    limits = MediaLimits.from_settings(settings)
    hashes, reencoded = [], []
    for path in sorted(gifs.glob("*.gif")):
        try:
            sampled = sample_media(path, settings.frames, limits, settings.dedupe_distance)
        except MediaError as exc:
            print(f"  skipped {path.name}: {exc}")
            continue
        hashes += sampled.frame_hashes
        for frame in sampled.frames:
            image = Image.fromarray(frame)
            image = image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.BILINEAR)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=60)
            reencoded.append(phash64(np.asarray(Image.open(buffer).convert("RGB"))))
    return hashes, reencoded


def planted(real: list[int], copies: int, max_flips: int, rng: np.random.Generator) -> list[int]:
    """`copies` variants of each real hash with 1 to max_flips random bit flips (at most all 64 bits)."""
    max_flips = min(max_flips, 64)  # radius 63 or 64 asks for 65-66 flips of a 64-bit hash
    out = []
    for h in real:
        for _ in range(copies):
            bits = rng.choice(64, size=int(rng.integers(1, max_flips + 1)), replace=False)
            out.append(h ^ sum(1 << int(b) for b in bits))
    return out


def time_pairs(hashes: list[int], m: int, radius: int) -> tuple[float, float, set, int]:
    """(fit seconds, pairs seconds, pairs, candidates examined)."""
    start = time.perf_counter()
    index = MultiIndexHash(m).fit(hashes)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    found = index.pairs(radius)
    return fit_s, time.perf_counter() - start, found, index.candidates_examined


def time_queries(hashes: list[int], queries: list[int], m: int, radius: int) -> tuple[float, float, int, bool]:
    """Per-query seconds for MIH.query and for a vectorised scan, candidates per query, same answers."""
    index = MultiIndexHash(m).fit(hashes)
    arr = np.array(hashes, dtype=np.uint64)
    start = time.perf_counter()
    mih = [sorted(i for i, _ in index.query(q, radius)) for q in queries]
    mih_s = (time.perf_counter() - start) / len(queries)
    start = time.perf_counter()
    scan = [np.flatnonzero(hamming_distances(arr, q) <= radius).tolist() for q in queries]
    scan_s = (time.perf_counter() - start) / len(queries)
    return mih_s, scan_s, index.candidates_examined // len(queries), mih == scan


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a bad option before any GIF is decoded. The radius may go up to the library's 64 bits
    (a benchmark measures the far end too), not only the CLI's useful range."""
    existing_dir(parser, "--gifs", args.gifs)
    if not any(args.gifs.glob("*.gif")):
        parser.error(f"--gifs {args.gifs}: no .gif files there; the benchmark needs real GIF frames")
    try:
        _check_radius(args.radius)
    except NearDuplicateError as e:
        parser.error(f"--radius: {e}")
    at_least(parser, "--n", args.n, 1)
    at_least(parser, "--copies", args.copies, 0)
    at_least(parser, "--queries", args.queries, 1)
    if args.m is not None and not 1 <= args.m <= BITS:
        parser.error(f"--m must be between 1 and {BITS} substrings, got {args.m}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gifs", type=Path, default=ROOT.parent / "shared" / "data" / "gifs")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--radius", type=int, default=6)
    parser.add_argument("--m", type=int, default=None, help="substrings (default: choose_m(n, radius))")
    parser.add_argument("--copies", type=int, default=3, help="planted bit-flip copies per real hash")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--sweep", action="store_true", help="also time m - 1, m + 1 and radius + 1")
    args = parser.parse_args()
    check_args(parser, args)
    rng = np.random.default_rng(0)

    start = time.perf_counter()
    real, reencoded = real_frame_hashes(args.gifs)
    if not real:  # a random-only set has no near duplicates: its figures would say nothing about real frames
        parser.error(f"--gifs {args.gifs}: no GIF there yielded a frame (see the skipped lines above)")
    plants = planted(real, args.copies, args.radius + 2, rng)
    n_random = args.n - len(real) - len(reencoded) - len(plants)
    if n_random < 0:
        parser.error(f"--n {args.n} is smaller than the {args.n - n_random} real and planted hashes")
    hashes = real + reencoded + plants + [int(x) for x in rng.integers(0, 2**64, size=n_random, dtype=np.uint64)]
    hashes = [hashes[i] for i in rng.permutation(len(hashes))]
    m = args.m or choose_m(len(hashes), args.radius)
    print(f"{len(hashes)} hashes: {len(real)} real GIF frame pHashes, {len(reencoded)} of their re-encodes "
          f"(half size, JPEG q60), {len(plants)} planted (1-{min(args.radius + 2, 64)} bit flips), {n_random} random "
          f"[{time.perf_counter() - start:.1f} s to build]")
    print(f"radius {args.radius}, m={m} (substrings of {64 // m}-{-(-64 // m)} bits, each probed within "
          f"{args.radius // m} flips)")

    fit_s, mih_s, mih_pairs, candidates = time_pairs(hashes, m, args.radius)
    start = time.perf_counter()
    brute = brute_force_pairs(hashes, None, args.radius)
    brute_s = time.perf_counter() - start
    n = len(hashes)
    all_pairs = n * (n - 1) // 2
    identical = mih_pairs == brute
    print(f"all pairs within {args.radius} bits:")
    print(f"  multi-index hashing: fit {fit_s:.2f} s + pairs {mih_s:.2f} s, {candidates:,} candidate pairs examined "
          f"({candidates / all_pairs:.2e} of all), {len(mih_pairs)} pairs")
    print(f"  brute force:         {brute_s:.2f} s, {all_pairs:,} pairs compared, {len(brute)} pairs")
    real_set = set(real)
    reencode_found = sum(1 for h, e in zip(real, reencoded) if (h ^ e).bit_count() <= args.radius)
    print(f"  re-encodes within the radius of their original frame: {reencode_found}/{len(real)}; "
          f"pairs touching a real frame: {sum(1 for a, b, _ in brute if hashes[a] in real_set or hashes[b] in real_set)}")

    n_queries = min(args.queries, n)  # queries are distinct stored hashes: a small --n has fewer than 1000
    queries = [hashes[i] for i in rng.choice(n, size=n_queries, replace=False)]
    q_mih, q_scan, q_cand, q_same = time_queries(hashes, queries, m, args.radius)
    print(f"single queries ({n_queries}): MIH {q_mih * 1e6:.0f} us ({q_cand} candidates each), "
          f"scan {q_scan * 1e6:.0f} us ({n} hashes each) -> {q_scan / q_mih:.3g}x, identical={q_same}")

    if args.sweep:
        for other in sorted({m - 1, m + 1, args.radius + 1} - {m, 0}):
            f_s, p_s, found, cand = time_pairs(hashes, other, args.radius)
            print(f"  m={other}: fit {f_s:.2f} s + pairs {p_s:.2f} s, {cand:,} candidates, identical={found == brute}")

    print(f"speedup={brute_s / (fit_s + mih_s):.1f} identical={identical} n={n} radius={args.radius} m={m} "
          f"candidates={candidates} brute_pairs={all_pairs} candidate_ratio={all_pairs / max(candidates, 1):.0f} "
          f"pairs={len(brute)} query_speedup={q_scan / q_mih:.3g}")


if __name__ == "__main__":
    main()
