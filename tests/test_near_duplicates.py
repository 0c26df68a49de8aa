"""Multi-index hashing against brute force on random + planted hashes, and near-duplicate
media on real GIF frames (a shared GIF and a resized, re-encoded copy written to tmp_path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageSequence

from embeddings.media import sample_media
from embeddings.near_duplicates import (MultiIndexHash, NearDuplicateError, brute_force_pairs, choose_m,
                                        flip_masks, near_duplicate_media, parse_hex_hash, substring_widths)
from embeddings.phash import hamming


def planted_hashes(rng: np.random.Generator, n_random: int, n_seeds: int, copies: int, max_flips: int) -> list[int]:
    """Random 64-bit hashes plus clusters: each seed with copies a few random bit flips away."""
    hashes = [int(h) for h in rng.integers(0, 2**64, size=n_random + n_seeds, dtype=np.uint64)]
    for seed in hashes[n_random:]:
        for _ in range(copies):
            bits = rng.choice(64, size=int(rng.integers(0, max_flips + 1)), replace=False)
            hashes.append(seed ^ sum(1 << int(b) for b in bits))
    # A few exact repeats too: identical frames are the commonest duplicate of all.
    hashes += hashes[:5]
    order = rng.permutation(len(hashes))
    return [hashes[i] for i in order]


def python_pairs(hashes: list[int], radius: int) -> set[tuple[int, int, int]]:
    """Slowest, most obvious reference: Python's own popcount over every pair."""
    return {(i, j, hamming(a, b)) for i, a in enumerate(hashes) for j, b in enumerate(hashes[i + 1 :], i + 1)
            if hamming(a, b) <= radius}


def test_brute_force_equals_the_obvious_loop():
    hashes = planted_hashes(np.random.default_rng(1), 150, 20, 3, 8)
    for radius in (0, 3, 8):
        assert brute_force_pairs(hashes, None, radius, block=16) == python_pairs(hashes, radius)


@pytest.mark.parametrize("m,radius", [(4, 6), (4, 3), (2, 5), (5, 9), (7, 6), (1, 2), (3, 0), (8, 10)])
def test_mih_pairs_equal_brute_force(m, radius):
    rng = np.random.default_rng(m * 100 + radius)
    hashes = planted_hashes(rng, 2000, 150, 3, radius + 2)  # flips past the radius: some pairs must be left out
    ids = [f"h{i}" for i in range(len(hashes))]
    index = MultiIndexHash(m).fit(hashes, ids)
    found = index.pairs(radius)
    expected = brute_force_pairs(hashes, ids, radius)
    assert found == expected
    assert len(expected) > 150  # the planted clusters are there to be found
    n = len(hashes)
    assert 0 < index.candidates_examined <= n * (n - 1) // 2
    if m in (4, 5):  # sensible m: a small fraction of all pairs is examined
        assert index.candidates_examined < n * (n - 1) // 2 / 50


def test_too_many_substrings_still_exact():
    """m = 64 gives 1-bit tables: more candidates than pairs, so pairs compares every pair."""
    hashes = planted_hashes(np.random.default_rng(5), 200, 20, 3, 6)
    index = MultiIndexHash(64).fit(hashes)
    assert index.pairs(5) == python_pairs(hashes, 5)
    n = len(hashes)
    assert index.candidates_examined == n * (n - 1) // 2


@pytest.mark.parametrize("m", [1, 3, 4, 6])
def test_mih_query_equals_a_scan(m):
    rng = np.random.default_rng(7)
    hashes = planted_hashes(rng, 3000, 100, 4, 7)
    index = MultiIndexHash(m).fit(hashes)
    for q in hashes[:40] + [int(x) for x in rng.integers(0, 2**64, size=10, dtype=np.uint64)]:
        for radius in (0, 4, 7):
            got = index.query(q, radius)
            want = sorted(((i, hamming(q, h)) for i, h in enumerate(hashes) if hamming(q, h) <= radius),
                          key=lambda t: t[1])
            assert sorted(got) == sorted(want)
            assert [d for _, d in got] == sorted(d for _, d in got)


def test_query_examines_few_candidates():
    hashes = planted_hashes(np.random.default_rng(3), 20000, 50, 2, 4)
    index = MultiIndexHash(4).fit(hashes)
    index.query(hashes[0], 6)
    assert 0 < index.candidates_examined < len(hashes) / 20


def test_substrings_and_masks():
    assert substring_widths(4) == [16] * 4
    assert substring_widths(5) == [13, 13, 13, 13, 12] and sum(substring_widths(7)) == 64
    masks = flip_masks(16, 1)
    assert len(masks) == 17 and len(set(masks.tolist())) == 17 and masks[0] == 0
    assert len(flip_masks(10, 2)) == 1 + 10 + 45


def test_choose_m():
    assert choose_m(100_000, 6) == 4  # the paper's 64 / log2(n) for a radius that needs one flip per table
    assert choose_m(100_000, 0) == 1  # exact match: one table over the whole hash
    for n, r in ((1000, 4), (100_000, 10), (10**6, 8)):
        assert 1 <= choose_m(n, r) <= r + 1


def test_errors():
    with pytest.raises(NearDuplicateError, match="m must be"):
        MultiIndexHash(0)
    with pytest.raises(NearDuplicateError, match="m must be"):
        MultiIndexHash(65)
    with pytest.raises(NearDuplicateError, match="not fitted"):
        MultiIndexHash().query(5, 3)
    with pytest.raises(NearDuplicateError, match="not fitted"):
        MultiIndexHash().pairs(3)
    with pytest.raises(NearDuplicateError, match="64-bit"):
        MultiIndexHash().fit([2**64], [1])
    with pytest.raises(NearDuplicateError, match="64-bit"):
        MultiIndexHash().fit([-1], [1])
    with pytest.raises(NearDuplicateError, match="2 hashes but 1 ids"):
        MultiIndexHash().fit([1, 2], ["a"])
    with pytest.raises(NearDuplicateError, match="duplicate ids"):
        MultiIndexHash().fit([1, 2], ["a", "a"])
    index = MultiIndexHash().fit([1, 2], ["a", "b"])
    with pytest.raises(NearDuplicateError, match="radius"):
        index.pairs(-1)
    with pytest.raises(NearDuplicateError, match="radius"):
        index.query(1, 65)
    with pytest.raises(NearDuplicateError, match="not a hex"):
        near_duplicate_media({"a": ["zz"]}, 4)
    with pytest.raises(NearDuplicateError, match="longer than 64"):
        parse_hex_hash("1" * 17)
    assert parse_hex_hash("00000000000000ff") == 255
    assert issubclass(NearDuplicateError, ValueError)


def test_near_duplicate_media_counts_frames_and_ignores_one_clips_own_frames():
    a = ["0000000000000000", "ffffffffffffffff", "00000000ffffffff"]
    b = ["0000000000000003", "fffffffffffffff0"]  # 2 and 4 bits from a's first two frames
    c = ["0000000000000001", "0123456789abcdef"]  # 1 bit from a[0] and 1 bit from b[0]... and 0 from itself
    d = ["0000000000000000", "0000000000000000"]  # a clip whose frames repeat: not a pair with itself
    found = near_duplicate_media({"a": a, "b": b, "c": c, "d": d, "e": []}, radius=4)
    by_pair = {(x, y): (n, dist) for x, y, n, dist in found}
    assert by_pair[("a", "b")] == (2, 2)
    assert by_pair[("a", "c")] == (1, 1)
    assert by_pair[("a", "d")] == (1, 0)  # a's one frame matches both of d's: one frame of a
    assert by_pair[("b", "c")] == (1, 1)
    assert not any(x == y for x, y, _, _ in found)
    assert found[0][3] == 0  # closest first
    assert near_duplicate_media({}, 4) == []


def _reencode(src: Path, dst: Path, scale: float, brightness: float) -> None:
    """A re-upload: every frame resized, brightened, and quantised again into a new GIF."""
    with Image.open(src) as im:
        frames, durations = [], []
        for frame in ImageSequence.Iterator(im):
            rgb = frame.convert("RGB")
            rgb = rgb.resize((max(1, int(rgb.width * scale)), max(1, int(rgb.height * scale))), Image.Resampling.BILINEAR)
            frames.append(ImageEnhance.Brightness(rgb).enhance(brightness).quantize(colors=64))
            durations.append(frame.info.get("duration", 100))
    frames[0].save(dst, save_all=True, append_images=frames[1:], duration=durations, loop=0)


def test_near_duplicate_media_on_real_gifs(gifs_dir, tmp_path):
    names = ["aint-nobody-got-time-for-that.gif", "awkward.gif", "bender.gif", "barf.gif"]
    copy = tmp_path / "reupload.gif"
    _reencode(gifs_dir / names[0], copy, scale=0.6, brightness=1.15)
    media = {p.name: [f"{h:016x}" for h in sample_media(p, 16).frame_hashes]
             for p in [gifs_dir / n for n in names] + [copy]}
    found = near_duplicate_media(media, radius=6)
    pairs = {(a, b) for a, b, _, _ in found}
    assert (names[0], "reupload.gif") in pairs
    assert pairs == {(names[0], "reupload.gif")}  # the four shared GIFs are different clips
    (_, _, n_frames, distance), = found
    assert n_frames >= min(len(media[names[0]]), len(media["reupload.gif"])) - 1
    assert distance <= 6
    # The media answer is built on frame pairs that brute force confirms.
    flat = [(name, parse_hex_hash(h)) for name, hs in media.items() for h in hs]
    brute = brute_force_pairs([h for _, h in flat], None, 6)
    assert {(flat[i][0], flat[j][0]) for i, j, _ in brute if flat[i][0] != flat[j][0]} == pairs
