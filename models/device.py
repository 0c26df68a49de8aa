"""Pick the torch device once: CUDA when present, else the CPU (the usual case here)."""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _inputs_channels_last(_module, args: tuple) -> tuple:
    import torch

    return tuple(a.contiguous(memory_format=torch.channels_last) if torch.is_tensor(a) and a.dim() == 4 else a
                 for a in args)


def channels_last(module):
    """Run a convolutional network in NHWC memory order, inputs included.

    Why: on the CPU, oneDNN's convolutions and PyTorch's max pooling are several times faster on
    channels-last tensors (max_pool2d of a 16x10x298x166 tensor: 30 ms NCHW, 9 ms NHWC); MTCNN,
    whose P-net pools every level of the image pyramid, runs 35% faster with the same boxes."""
    import torch

    module.to(memory_format=torch.channels_last)
    module.register_forward_pre_hook(_inputs_channels_last)
    return module
