"""Group the faces of one clip into person tracks.

Constrained agglomerative clustering: clusters merge closest-first (cosine
distance between their normalised mean embeddings) while the distance is below
a threshold, and two clusters that have a face in the same frame never merge,
because one frame cannot show the same person twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Track:
    index: int
    members: tuple[int, ...]  # positions of the faces in the input arrays
    vector: np.ndarray  # L2-normalised mean of the members' embeddings
    representative: int  # position of the member closest to the mean


def _normalise(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


class _Distances:
    """Cosine distances between clusters, slot by slot, with each row's minimum kept up to date.

    A cluster keeps the slot of its first face (a merge folds the later slot into the earlier one).
    A pair is blocked (inf) for a cluster with itself, a merged-away slot and two clusters sharing a
    frame. `closest` is the first smallest pair in row-major order, as an argmin over the whole
    matrix would find it, from the row minima instead of the matrix: a merge updates its own row and
    column and recomputes only the rows whose minimum pointed at the two merged slots."""

    def __init__(self, means: np.ndarray, frame: np.ndarray) -> None:
        self.means = means
        self.shares_frame = frame[:, None] == frame[None, :]  # the diagonal too
        self.alive = np.ones(len(frame), dtype=bool)
        self.dist = 1.0 - means @ means.T
        self.dist[self.shares_frame] = np.inf
        self.row_arg = np.argmin(self.dist, axis=1)
        self.row_min = self.dist[np.arange(len(frame)), self.row_arg]

    def closest(self) -> tuple[int, int, float]:
        a = int(np.argmin(self.row_min))
        b = int(self.row_arg[a])
        return a, b, float(self.row_min[a])

    def merge(self, a: int, b: int, mean: np.ndarray) -> None:
        """Slot b folded into slot a (a < b), whose normalised mean is now `mean`."""
        self.alive[b] = False
        self.shares_frame[a] |= self.shares_frame[b]
        self.shares_frame[:, a] = self.shares_frame[a]
        self.means[a] = mean
        column = 1.0 - self.means @ mean
        column[self.shares_frame[a] | ~self.alive] = np.inf
        self.dist[b, :] = self.dist[:, b] = np.inf
        self.dist[a, :] = self.dist[:, a] = column
        to_a = self.row_arg == a
        # a row whose minimum was at a stays there if a came no further; one at b or a moved away is redone
        stale = (self.row_arg == b) | (to_a & (column > self.row_min))
        stale[[a, b]] = True
        better = ~stale & ((column < self.row_min) | ((column == self.row_min) & (a <= self.row_arg)))
        self.row_min[better], self.row_arg[better] = column[better], a
        rows = np.flatnonzero(stale)
        self.row_arg[rows] = np.argmin(self.dist[rows], axis=1)
        self.row_min[rows] = self.dist[rows, self.row_arg[rows]]


def group_tracks(frame_of_face: Sequence[int], embeddings: np.ndarray, max_distance: float) -> list[Track]:
    """Tracks ordered by their first frame; every face belongs to exactly one track.

    Merging closest-first with the distances kept in `_Distances`, not recomputed and re-tested pair
    by pair in Python after every merge: 512 frames of two faces took 57 s that way."""
    n = len(frame_of_face)
    if n == 0:
        return []
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.shape[0] != n:
        raise ValueError(f"{n} frame indices but {emb.shape[0]} embeddings")
    frame = np.asarray(frame_of_face, dtype=np.int64)
    members: list[list[int]] = [[i] for i in range(n)]
    sums = emb.astype(np.float64)
    distances = _Distances(np.stack([_normalise(s) for s in sums]), frame)
    for _ in range(n - 1):
        a, b, distance = distances.closest()
        if not distance < max_distance:
            break
        a, b = min(a, b), max(a, b)
        members[a] += members[b]
        sums[a] += sums[b]
        distances.merge(a, b, _normalise(sums[a]))

    slots = [int(c) for c in np.flatnonzero(distances.alive)]
    order = sorted(slots, key=lambda c: min(int(frame[i]) for i in members[c]))
    tracks = []
    for index, c in enumerate(order):
        track_members = tuple(sorted(members[c], key=lambda i: (int(frame[i]), i)))
        vector = _normalise(sums[c]).astype(np.float32)
        representative = max(track_members, key=lambda i: float(emb[i] @ vector))
        tracks.append(Track(index, track_members, vector, representative))
    return tracks
