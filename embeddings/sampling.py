"""Which frames of a clip to look at."""
from __future__ import annotations


def evenly_spaced_indices(total: int, n: int) -> list[int]:
    """Up to n distinct, increasing indices spread evenly over [0, total).

    A clip of n frames or fewer gives all its frames. Otherwise each index is the
    centre of one of n equal segments, so a 100-frame clip sampled at 4 gives
    12, 37, 62, 87: the first and last frames (fades, title cards, the loop seam)
    are not over-represented, and gaps differ by at most one frame.
    """
    if total <= 0 or n <= 0:
        return []
    if total <= n:
        return list(range(total))
    return [int((k + 0.5) * total / n) for k in range(n)]
