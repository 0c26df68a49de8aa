"""64-bit DCT perceptual hash: near-identical frames get hashes a few bits apart.

Grayscale, 32x32, 2-D DCT, the 8x8 lowest frequencies (DC included), each bit set
when the coefficient is above their median. Robust to rescaling and recompression,
which is what near-duplicate frames and re-uploads differ by.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.fft import dctn


def phash64(frame: np.ndarray) -> int:
    gray = Image.fromarray(frame).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    coeffs = dctn(np.asarray(gray, dtype=np.float64), norm="ortho")[:8, :8].ravel()
    bits = coeffs > np.median(coeffs)
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def drop_near_duplicates(hashes: list[int], max_distance: int) -> list[int]:
    """Positions to keep: a frame stays only if it is farther than max_distance from every kept frame."""
    kept: list[int] = []
    for i, h in enumerate(hashes):
        if all(hamming(h, hashes[k]) > max_distance for k in kept):
            kept.append(i)
    return kept
