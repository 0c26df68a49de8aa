"""Grouping faces into person tracks (pure function, synthetic vectors)."""
from __future__ import annotations

import numpy as np
import pytest

from embeddings.tracks import group_tracks


def _unit(rng, d=128):
    v = rng.normal(size=d)
    return v / np.linalg.norm(v)


def _noisy(rng, v, scale=0.03):
    w = v + rng.normal(scale=scale, size=v.shape)
    return w / np.linalg.norm(w)


def test_alternating_people_make_two_tracks():
    rng = np.random.default_rng(1)
    a, b = _unit(rng), _unit(rng)
    emb = np.stack([_noisy(rng, a if i % 2 == 0 else b) for i in range(10)])
    tracks = group_tracks(list(range(10)), emb, max_distance=0.2)
    assert [t.members for t in tracks] == [(0, 2, 4, 6, 8), (1, 3, 5, 7, 9)]
    assert all(abs(np.linalg.norm(t.vector) - 1) < 1e-5 for t in tracks)
    assert tracks[0].representative in tracks[0].members


def test_faces_of_one_frame_never_share_a_track_even_if_identical():
    rng = np.random.default_rng(2)
    a = _unit(rng)
    emb = np.stack([a, a, a])
    tracks = group_tracks([0, 0, 1], emb, max_distance=0.5)
    assert len(tracks) == 2
    for t in tracks:
        frames = [[0, 0, 1][i] for i in t.members]
        assert len(frames) == len(set(frames))


def test_two_people_in_every_frame():
    rng = np.random.default_rng(3)
    a, b = _unit(rng), _unit(rng)
    frames, emb = [], []
    for f in range(6):
        for person in (b, a) if f % 2 else (a, b):
            frames.append(f)
            emb.append(_noisy(rng, person))
    tracks = group_tracks(frames, np.stack(emb), max_distance=0.2)
    assert len(tracks) == 2
    assert sorted(len(t.members) for t in tracks) == [6, 6]


def test_empty_and_mismatched_inputs():
    assert group_tracks([], np.zeros((0, 128)), 0.2) == []
    with pytest.raises(ValueError):
        group_tracks([0, 1], np.zeros((3, 128)), 0.2)
