"""Which frames of a clip to look at."""
from __future__ import annotations


def evenly_spaced_indices(total: int, n: int) -> list[int]:
    """Up to n distinct indices spread over [0, total), first and middle-of-segment aligned.

    Each index is the centre of one of n equal segments, so a 100-frame clip sampled at 4
    gives 12, 37, 62, 87: the clip's start and end fades are not over-represented.
    """
    if total <= 0 or n <= 0:
        return []
    if total <= n:
        return list(range(total))
    return sorted({min(total - 1, int((k + 0.5) * total / n)) for k in range(n)})
