"""Near-duplicate frames and media from 64-bit perceptual hashes, by multi-index hashing (MIH).

Why MIH: re-uploads, re-encodes and resized copies of a GIF have frame pHashes
(embeddings/phash.py) a few bits apart, and finding them by comparing every pair is
quadratic. Split each hash into m disjoint substrings: if two hashes differ in at most r
bits, at least one of their m substrings differs in at most floor(r / m) bits (pigeonhole).
So each substring gets a table (here a sorted array), a query probes every substring value
within floor(r / m) flips of its own, and only those candidates get the full Hamming
distance. Exact, and it examines a small fraction of the pairs (Norouzi, Punjani & Fleet,
"Fast Search in Hamming Space with Multi-Index Hashing", CVPR 2012).
"""
from __future__ import annotations

from functools import lru_cache
from itertools import combinations
from math import comb
from typing import Callable, Hashable, Iterator, Mapping, Sequence

import numpy as np

BITS = 64


class NearDuplicateError(ValueError):
    """Bad input: hashes that are not 64-bit values, ids that do not match, a bad radius or m."""


def hamming_distances(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """Vectorised popcount of a XOR b over uint64 arrays (numpy's native bitwise_count)."""
    return np.bitwise_count(np.bitwise_xor(a, np.uint64(b) if isinstance(b, int) else b))


def _as_hashes(hashes: Sequence[int]) -> np.ndarray:
    values = [int(h) for h in hashes]
    if any(h < 0 or h >> BITS for h in values):
        raise NearDuplicateError("hashes must be unsigned 64-bit integers")
    return np.array(values, dtype=np.uint64)


def _as_ids(ids: Sequence[Hashable] | None, n: int) -> list[Hashable]:
    out = list(range(n)) if ids is None else list(ids)
    if len(out) != n:
        raise NearDuplicateError(f"{n} hashes but {len(out)} ids")
    if len(set(out)) != n:
        raise NearDuplicateError("duplicate ids")
    return out


def _check_radius(radius: int) -> int:
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or not 0 <= radius <= BITS:
        raise NearDuplicateError(f"radius must be an integer between 0 and {BITS}, got {radius!r}")
    return int(radius)


# Beyond this radius "near-duplicate" stops meaning a copy: two unrelated 64-bit hashes are 32 +- 4 bits
# apart, so at radius 16 about 1 pair of unrelated frames in 26,000 already matches, at 20 1 in 540,
# and from ~24 up a good share of all pairs does (3,000 media at radius 32: 2.5 million pairs, 2 GB).
# The library accepts 0-64 (benchmarks, tests); `giflens dupes` refuses more than this.
MAX_USEFUL_RADIUS = 16


def check_useful_radius(radius: int) -> int:
    """The radius when it can still tell copies from unrelated media (see MAX_USEFUL_RADIUS), else a
    NearDuplicateError saying why, before any pair is built. A value that is no radius at all (not an
    integer, negative) is refused naming the range `giflens dupes` documents (0 to MAX_USEFUL_RADIUS),
    not the library's 0 to 64, which would contradict its help."""
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise NearDuplicateError(f"radius must be an integer between 0 and {MAX_USEFUL_RADIUS}, got {radius!r}")
    radius = int(radius)
    if radius > MAX_USEFUL_RADIUS:
        raise NearDuplicateError(
            f"radius {radius} is above {MAX_USEFUL_RADIUS}: unrelated frames' hashes are about 32 of 64 bits "
            f"apart, so such a radius pairs unrelated media by the thousands (copies are usually within 6)")
    return radius


def substring_widths(m: int) -> list[int]:
    """Widths of the m substrings, as equal as possible (any m from 1 to 64, not only divisors)."""
    return [BITS // m + (1 if j < BITS % m else 0) for j in range(m)]


@lru_cache(maxsize=64)
def flip_masks(width: int, max_flips: int) -> np.ndarray:
    """Every mask of up to max_flips set bits in a width-bit substring (0 first); read-only, cached."""
    masks = [0]
    for r in range(1, min(max_flips, width) + 1):
        masks += [sum(1 << p for p in bits) for bits in combinations(range(width), r)]
    out = np.array(masks, dtype=np.uint64)
    out.flags.writeable = False
    return out


def expected_cost(n: int, radius: int, m: int) -> float:
    """Probes plus expected candidates per query for uniformly spread hashes (the cost MIH minimises)."""
    s = radius // m
    cost = 0.0
    for w in substring_widths(m):
        probes = sum(comb(w, i) for i in range(min(s, w) + 1))
        cost += probes * (1 + n / 2.0 ** w)
    return cost


def choose_m(n: int, radius: int) -> int:
    """The number of substrings with the least expected work for n hashes at this radius.

    More than radius + 1 substrings only shortens them (more collisions) without reducing
    the probes, so the search is over 1..radius + 1; for 100,000 hashes it lands near the
    paper's m = 64 / log2(n), e.g. m = 4 for radius 6.
    """
    _check_radius(radius)
    return min(range(1, min(radius + 1, BITS) + 1), key=lambda m: (expected_cost(max(n, 1), radius, m), m))


_DIRECT_MAX_WIDTH = 22  # substrings up to this wide get a bucket-offset array (2^22 int64 = 32 MB at most)


def _expand(lo: np.ndarray, hi: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every slice order[lo_i:hi_i] flattened, and the i it came from; no Python loop."""
    counts = hi - lo
    total = int(counts.sum())
    source = np.repeat(np.arange(len(lo), dtype=np.int64), counts)
    offsets = np.repeat(lo - (np.cumsum(counts) - counts), counts)
    return source, order[np.arange(total, dtype=np.int64) + offsets]


class MultiIndexHash:
    """Exact Hamming-radius search over 64-bit hashes; `fit` then `query` or `pairs`.

    candidates_examined counts the full-distance comparisons made since fit (a candidate
    found through several substrings is compared, and counted, each time): the number to
    set against brute force's n per query or n(n-1)/2 for all pairs.
    """

    def __init__(self, m: int = 4) -> None:
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= BITS:
            raise NearDuplicateError(f"m must be an integer between 1 and {BITS}, got {m!r}")
        self.m = int(m)
        self.widths = substring_widths(self.m)
        self.shifts = [sum(self.widths[:j]) for j in range(self.m)]
        self.hashes_: np.ndarray | None = None
        self.ids_: list[Hashable] | None = None
        self.candidates_examined = 0

    def __len__(self) -> int:
        return 0 if self.hashes_ is None else len(self.hashes_)

    def _substrings(self, hashes: np.ndarray, j: int) -> np.ndarray:
        return (hashes >> np.uint64(self.shifts[j])) & np.uint64((1 << self.widths[j]) - 1)

    def fit(self, hashes: Sequence[int], ids: Sequence[Hashable] | None = None) -> "MultiIndexHash":
        """Index the hashes; ids (default: positions) name them in results and must be unique."""
        h = _as_hashes(hashes)
        ids = _as_ids(ids, len(h))
        # One table per substring: positions sorted by substring value, so a bucket is a
        # contiguous slice of `order`. Narrow substrings find their slice by direct address
        # (offsets indexed by value: two gathers per probe); wide ones by binary search.
        self._subs, self._order, self._offsets, self._sorted = [], [], [], []
        for j, width in enumerate(self.widths):
            subs = self._substrings(h, j)
            order = np.argsort(subs, kind="stable")
            self._subs.append(subs)
            self._order.append(order)
            if width <= _DIRECT_MAX_WIDTH and (1 << width) <= 8 * len(h) + (1 << 16):  # not mostly empty
                counts = np.bincount(subs.astype(np.int64), minlength=1 << width)
                self._offsets.append(np.concatenate([[0], np.cumsum(counts)]))
                self._sorted.append(None)
            else:
                self._offsets.append(None)
                self._sorted.append(subs[order])
        self.hashes_, self.ids_, self.candidates_examined = h, ids, 0
        return self

    def _check_fitted(self) -> None:
        if self.hashes_ is None:
            raise NearDuplicateError("the index is not fitted: call fit(hashes, ids) first")

    def _bucket(self, j: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) in _order[j] of the hashes whose j-th substring equals each value."""
        offsets = self._offsets[j]
        if offsets is not None:
            v = values.astype(np.int64)
            return offsets[v], offsets[v + 1]
        return (np.searchsorted(self._sorted[j], values, side="left"),
                np.searchsorted(self._sorted[j], values, side="right"))

    def _n_probes(self, radius: int) -> int:
        """Probes per hash (all tables), counted without building the masks: it can be astronomical."""
        s = radius // self.m
        return sum(sum(comb(w, i) for i in range(min(s, w) + 1)) for w in self.widths)

    def _probes(self, radius: int) -> Iterator[tuple[int, np.ndarray]]:
        """(table, flip mask) of every probe the pigeonhole bound needs at this radius."""
        for j, width in enumerate(self.widths):
            for mask in flip_masks(width, radius // self.m):
                yield j, mask

    def query(self, hash: int, radius: int) -> list[tuple[Hashable, int]]:
        """(id, distance) of every stored hash within radius of hash, nearest first."""
        self._check_fitted()
        radius = _check_radius(radius)
        (h,) = _as_hashes([hash])
        if self._n_probes(radius) >= len(self):
            cand = np.arange(len(self))  # more probes than hashes: a scan is the cheaper exact search
        else:
            found = []
            for j, width in enumerate(self.widths):
                lo, hi = self._bucket(j, self._substrings(h, j) ^ flip_masks(width, radius // self.m))
                found.append(_expand(lo, hi, self._order[j])[1])
            cand = np.concatenate(found)
        self.candidates_examined += len(cand)
        cand = np.unique(cand[hamming_distances(self.hashes_[cand], h) <= radius])  # found via several tables
        dist = hamming_distances(self.hashes_[cand], h)
        order = np.argsort(dist, kind="stable")
        return [(self.ids_[int(cand[i])], int(dist[i])) for i in order]

    def pairs(self, radius: int, on_progress: Callable[[int, int], None] | None = None
              ) -> set[tuple[Hashable, Hashable, int]]:
        """Every unordered pair of stored hashes within radius, as (id_a, id_b, distance) with a fitted before b.
        on_progress(done, total): the probes searched (each one a pass over every hash: the slow part, 19 s for
        600,000 frames), or the blocks compared when every pair is."""
        self._check_fitted()
        radius = _check_radius(radius)
        n = len(self)
        raw = 0
        if self._n_probes(radius) < n:
            for j, mask in self._probes(radius):
                lo, hi = self._bucket(j, self._subs[j] ^ mask)
                raw += int((hi - lo).sum())
        if self._n_probes(radius) >= n or raw // 2 >= n * (n - 1) // 2:
            # Substrings too short for this radius (m far above choose_m): the tables would
            # hand back more candidates than there are pairs, so compare every pair instead.
            self.candidates_examined += n * (n - 1) // 2
            return brute_force_pairs(self.hashes_.tolist(), self.ids_, radius, on_progress=on_progress)
        hits = []
        probes = self._n_probes(radius)
        for done, (j, mask) in enumerate(self._probes(radius)):
            if on_progress is not None:
                on_progress(done, probes)
            lo, hi = self._bucket(j, self._subs[j] ^ mask)
            first, second = _expand(lo, hi, self._order[j])
            keep = first < second  # each unordered pair once (it is also found from the other side)
            first, second = first[keep], second[keep]
            self.candidates_examined += len(first)
            close = hamming_distances(self.hashes_[first], self.hashes_[second]) <= radius
            hits.append(first[close] * n + second[close])
        if on_progress is not None:
            on_progress(probes, probes)
        codes = np.unique(np.concatenate(hits)) if hits else np.empty(0, dtype=np.int64)
        a, b = codes // n, codes % n
        dist = hamming_distances(self.hashes_[a], self.hashes_[b])
        return {(self.ids_[i], self.ids_[j], d) for i, j, d in zip(a.tolist(), b.tolist(), dist.tolist())}


def brute_force_pairs(hashes: Sequence[int], ids: Sequence[Hashable] | None, radius: int,
                      block: int = 64, on_progress: Callable[[int, int], None] | None = None
                      ) -> set[tuple[Hashable, Hashable, int]]:
    """The reference: every pair compared, a block of rows at a time (vectorised popcount); on_progress(done,
    total) counts the blocks."""
    radius = _check_radius(radius)
    h = _as_hashes(hashes)
    ids = _as_ids(ids, len(h))
    out = set()
    blocks = -(-len(h) // block)
    for start in range(0, len(h), block):
        if on_progress is not None:
            on_progress(start // block, blocks)
        rows = h[start : start + block]
        dist = hamming_distances(rows[:, None], h[None, start:])  # (block, n - start): only columns j >= start
        r, c = np.nonzero(dist <= radius)
        keep = c > r  # j > i: each unordered pair once, no self pairs
        r, c = r[keep], c[keep]
        out.update((ids[start + a], ids[start + b], int(d)) for a, b, d in zip(r.tolist(), c.tolist(), dist[r, c].tolist()))
    if on_progress is not None:
        on_progress(blocks, blocks)
    return out


def parse_hex_hash(value: str) -> int:
    """A stored frame hash (16 hex digits, as ingest writes them) as an integer."""
    try:
        h = int(value, 16)
    except (TypeError, ValueError) as exc:
        raise NearDuplicateError(f"not a hex frame hash: {value!r}") from exc
    if h >> BITS or len(value.strip()) > 16:
        raise NearDuplicateError(f"frame hash longer than 64 bits: {value!r}")
    return h


def near_duplicate_media(frame_hashes_by_media: Mapping[Hashable, Sequence[str]], radius: int = 6,
                         m: int | None = None, on_progress: Callable[[int, int], None] | None = None
                         ) -> list[tuple[Hashable, Hashable, int, int]]:
    """Media that share near-duplicate frames: (media_a, media_b, n_matching_frames, min_distance).

    n_matching_frames is the smaller of (frames of a with a match in b, frames of b with a
    match in a): at least that many frames of each clip have a counterpart in the other, so a
    single shared title card counts 1 while a re-encode of a whole clip counts all of them.
    media_a is the one listed first in the input. Sorted closest first, then most frames.
    m defaults to choose_m for the number of frames. on_progress(done, total): the search's passes
    (`MultiIndexHash.pairs`).
    """
    radius = _check_radius(radius)
    rank = {media: r for r, media in enumerate(frame_hashes_by_media)}
    owners, values = [], []
    for media, hashes in frame_hashes_by_media.items():
        for h in hashes or ():
            owners.append(media)
            values.append(parse_hex_hash(h))
    if not values:
        return []
    index = MultiIndexHash(choose_m(len(values), radius) if m is None else m).fit(values)
    found: dict[tuple[Hashable, Hashable], tuple[set[int], set[int], int]] = {}
    for i, j, d in index.pairs(radius, on_progress=on_progress):
        if owners[i] == owners[j]:
            continue
        if rank[owners[i]] > rank[owners[j]]:
            i, j = j, i
        key = (owners[i], owners[j])
        frames_a, frames_b, best = found.get(key, (set(), set(), BITS))
        frames_a.add(i)
        frames_b.add(j)
        found[key] = (frames_a, frames_b, min(best, d))
    rows = [(a, b, min(len(fa), len(fb)), d) for (a, b), (fa, fb, d) in found.items()]
    return sorted(rows, key=lambda r: (r[3], -r[2], rank[r[0]], rank[r[1]]))
