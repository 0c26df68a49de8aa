"""64-bit DCT perceptual hash: near-identical frames get hashes a few bits apart.

Why this variant: grayscale, resized to 32x32 (Lanczos, so the resize averages
rather than aliases), 2-D DCT-II (scipy.fft.dctn, orthonormal), the top-left 8x8
block of lowest frequencies *including* the DC term, and bit i set when
coefficient i (row-major in the 8x8 block, so bit 0 is DC) is above the median
of the 64. Comparing to the median makes the hash insensitive to brightness and
contrast changes and sets about half the bits; the low frequencies survive the
rescaling and recompression that near-duplicate frames and re-uploads differ
by, while a different picture flips about half the bits (~32).

Changing anything here changes every stored hash: bump the pipeline's PHASH_VERSION.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image
from scipy.fft import dctn

_BIT_WEIGHTS = np.array([1 << i for i in range(64)], dtype=object)


def phash64(frame: np.ndarray) -> int:
    """Unsigned 64-bit perceptual hash of an RGB (or grayscale) uint8 frame."""
    gray = Image.fromarray(np.ascontiguousarray(frame)).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    return _hash_32x32(np.asarray(gray, dtype=np.float64))


def _hash_32x32(gray: np.ndarray) -> int:
    coeffs = dctn(gray, norm="ortho")[:8, :8].ravel()
    bits = coeffs > np.median(coeffs)
    return int(_BIT_WEIGHTS[bits].sum()) if bits.any() else 0


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()


def tile_phashes(frame: np.ndarray, grid: int = 2) -> tuple[int, ...]:
    """pHashes of the grid x grid tiles of a frame, row by row.

    The whole-frame hash keeps only the lowest frequencies, so a small change (a second person
    stepping in at the edge) moves it by 0-2 bits; the same change rewrites its tile's hash."""
    # One resize of the whole frame to grid x 32 px, then 32 px tiles: the same as resizing each
    # tile on its own, up to Lanczos' edge handling, for a fraction of the cost.
    gray = Image.fromarray(np.ascontiguousarray(frame)).convert("L").resize((32 * grid, 32 * grid), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray, dtype=np.float64)
    return tuple(_hash_32x32(pixels[r * 32 : (r + 1) * 32, c * 32 : (c + 1) * 32]) for r in range(grid) for c in range(grid))


def drop_near_duplicates(hashes: Sequence[int | Sequence[int]], max_distance: int) -> list[int]:
    """Positions to keep: a frame stays only if it is farther than max_distance from every kept frame.

    A hash may be a tuple of hashes (whole frame and tiles): then a frame is a near-duplicate only
    when every one of them is within max_distance. Greedy in clip order, so the first frame of a
    run of near-identical frames is the one kept; comparing against every kept frame (not just
    the previous one) also drops a scene that returns later (ping-pong loops, cuts back to the
    same shot).
    """
    signatures = [(h,) if isinstance(h, int) else tuple(h) for h in hashes]
    kept: list[int] = []
    for i, sig in enumerate(signatures):
        if not any(all(hamming(x, y) <= max_distance for x, y in zip(sig, signatures[k])) for k in kept):
            kept.append(i)
    return kept
