"""Pick the torch device once: CUDA when present, else the CPU (the usual case here)."""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
