"""Frame index sampling, the DCT perceptual hash and near-duplicate dropping (pure functions)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from embeddings.phash import drop_near_duplicates, hamming, phash64
from embeddings.sampling import evenly_spaced_indices


@pytest.mark.parametrize("total,n", [(1, 16), (5, 16), (16, 16), (17, 16), (100, 16), (1000, 7), (20_000, 16)])
def test_evenly_spaced_indices(total, n):
    idx = evenly_spaced_indices(total, n)
    assert len(idx) == min(total, n)
    assert idx == sorted(set(idx)) and 0 <= idx[0] and idx[-1] < total
    if total <= n:
        assert idx == list(range(total))
    else:
        assert np.diff(idx).max() - np.diff(idx).min() <= 1
        assert abs(idx[0] - (total - 1 - idx[-1])) <= 1  # symmetric margins


def test_evenly_spaced_indices_exhaustive_small_grid():
    for total in range(0, 120):
        for n in range(0, 24):
            idx = evenly_spaced_indices(total, n)
            assert len(idx) == (min(total, n) if total > 0 and n > 0 else 0)
            assert all(0 <= a < b < total for a, b in zip(idx, idx[1:]))


def test_evenly_spaced_indices_are_segment_centres():
    assert evenly_spaced_indices(100, 4) == [12, 37, 62, 87]
    assert evenly_spaced_indices(3, 16) == [0, 1, 2]
    assert evenly_spaced_indices(0, 16) == [] and evenly_spaced_indices(10, 0) == []


def test_hamming_and_hash_range():
    assert hamming(0, 0) == 0 and hamming(0, (1 << 64) - 1) == 64 and hamming(0b1011, 0b0001) == 2
    rng = np.random.default_rng(1)
    h = phash64(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    assert 0 <= h < 1 << 64
    assert 28 <= bin(h).count("1") <= 32  # bits are "above the median of 64": about half are set


def _jpeg_roundtrip(image: Image.Image, size: tuple[int, int], quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.resize(size, Image.Resampling.BILINEAR).save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_phash_is_stable_under_resizing_and_recompression_and_separates_people(lfw_dir):
    a = Image.open(lfw_dir / "Tony_Blair" / "Tony_Blair_0001.jpg").convert("RGB")
    b = Image.open(lfw_dir / "Serena_Williams" / "Serena_Williams_0001.jpg").convert("RGB")
    ha, hb = phash64(np.asarray(a)), phash64(np.asarray(b))
    for size, quality in (((125, 125), 60), ((500, 500), 90), ((250, 250), 30)):
        assert hamming(ha, phash64(np.asarray(_jpeg_roundtrip(a, size, quality)))) <= 6
    brighter = np.clip(np.asarray(a, dtype=np.int16) + 25, 0, 255).astype(np.uint8)
    assert hamming(ha, phash64(brighter)) <= 6
    assert hamming(ha, hb) >= 16
    small = phash64(np.asarray(_jpeg_roundtrip(a, (125, 125), 60)))
    assert drop_near_duplicates([ha, small, hb], 6) == [0, 2]


def test_phash_separates_many_different_people(lfw_dir):
    people = sorted(p for p in lfw_dir.iterdir() if p.is_dir())[:40]
    hashes = [phash64(np.asarray(Image.open(sorted(p.glob("*.jpg"))[0]).convert("RGB"))) for p in people]
    distances = [hamming(x, y) for i, x in enumerate(hashes) for y in hashes[i + 1:]]
    assert np.median(distances) >= 24  # unrelated pictures: about half the bits differ
    assert min(distances) > 4  # none would be dropped as a near-duplicate at the default distance
    assert drop_near_duplicates(hashes, 4) == list(range(len(hashes)))


def test_phash_accepts_grayscale_and_non_contiguous_frames():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    assert phash64(rgb[:, ::-1]) == phash64(np.ascontiguousarray(rgb[:, ::-1]))
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    assert phash64(gray) == phash64(rgb)


def test_drop_near_duplicates_compares_with_every_kept_frame():
    a, b = 0, (1 << 64) - 1
    near_a, near_b = 0b111, b ^ 0b11
    assert drop_near_duplicates([a, near_a, b, near_b, a], 4) == [0, 2]
    assert drop_near_duplicates([a, near_a, b], 2) == [0, 1, 2]  # 3 bits apart is "> 2"
    assert drop_near_duplicates([a, a, a], -1) == [0, 1, 2]  # a negative distance keeps everything
    assert drop_near_duplicates([], 4) == []


def test_a_small_change_at_the_edge_is_not_a_near_duplicate(lfw_dir):
    """Someone stepping into a corner barely moves the whole-frame hash; a quarter's hash sees it."""
    from embeddings.phash import tile_phashes

    shot = np.asarray(Image.open(lfw_dir / "Colin_Powell" / "Colin_Powell_0001.jpg").convert("RGB")).copy()
    visitor = np.asarray(Image.open(lfw_dir / "Serena_Williams" / "Serena_Williams_0001.jpg").convert("RGB")
                         .resize((40, 40)))
    later = shot.copy()
    later[5:45, 5:45] = visitor
    assert hamming(phash64(shot), phash64(later)) <= 4  # the whole-frame hash alone would drop it
    signatures = [(phash64(f), *tile_phashes(f)) for f in (shot, shot.copy(), later)]
    assert drop_near_duplicates(signatures, 4) == [0, 2]
    assert drop_near_duplicates([s[0] for s in signatures], 4) == [0]


def test_a_person_entering_a_still_shot_is_sampled(gifs_dir):
    """In the shared "so-it-begins" GIF a third person enters at frame 6 of 14, into a still shot
    whose whole-frame hash stays within 2 bits: the frames kept for faces must include one of them,
    while the GIF embedding still averages only frames that differ as whole pictures. A clip with
    motion is de-duplicated by whole-frame hashes alone."""
    from embeddings.media import sample_media

    sampled = sample_media(gifs_dir / "so-it-begins.gif", 16)
    assert max(sampled.frame_indices) >= 6
    scenes = [sampled.frame_indices[i] for i in sampled.scene_positions]
    assert scenes == sorted(scenes) and set(scenes) < set(sampled.frame_indices)
    moving = sample_media(gifs_dir / "not-gonna-lie.gif", 16)
    assert moving.scene_positions == list(range(len(moving.frames)))
