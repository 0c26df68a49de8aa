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


def group_tracks(frame_of_face: Sequence[int], embeddings: np.ndarray, max_distance: float) -> list[Track]:
    """Tracks ordered by their first frame; every face belongs to exactly one track."""
    n = len(frame_of_face)
    if n == 0:
        return []
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.shape[0] != n:
        raise ValueError(f"{n} frame indices but {emb.shape[0]} embeddings")
    clusters: list[list[int]] = [[i] for i in range(n)]
    frames: list[set[int]] = [{int(frame_of_face[i])} for i in range(n)]
    sums: list[np.ndarray] = [emb[i].astype(np.float64) for i in range(n)]

    while len(clusters) > 1:
        means = np.stack([_normalise(s) for s in sums])
        dist = 1.0 - means @ means.T
        np.fill_diagonal(dist, np.inf)
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                if frames[a] & frames[b]:
                    dist[a, b] = dist[b, a] = np.inf
        a, b = np.unravel_index(int(np.argmin(dist)), dist.shape)
        if not dist[a, b] < max_distance:
            break
        a, b = (int(a), int(b)) if a < b else (int(b), int(a))
        clusters[a] += clusters.pop(b)
        frames[a] |= frames.pop(b)
        sums[a] = sums[a] + sums.pop(b)

    order = sorted(range(len(clusters)), key=lambda c: min(int(frame_of_face[i]) for i in clusters[c]))
    tracks = []
    for index, c in enumerate(order):
        members = tuple(sorted(clusters[c], key=lambda i: (int(frame_of_face[i]), i)))
        vector = _normalise(sums[c]).astype(np.float32)
        representative = max(members, key=lambda i: float(emb[i] @ vector))
        tracks.append(Track(index, members, vector, representative))
    return tracks
