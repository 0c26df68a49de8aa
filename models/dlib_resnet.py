"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) rebuilt in PyTorch.

Why: the `dlib-bin` wheel is built without BLAS, so dlib runs this network at about 0.1 s per
face chip, one chip at a time; the same weights in PyTorch run batched on oneDNN several times
faster and give the same 128-d descriptors (checked against dlib in tests/test_dlib_resnet.py).
The weights are read from the .dat file that ships in `face-recognition-models`: no download,
no conversion step, nothing extra to install.

The network is dlib's `anet_type` from `dnn_face_recognition_ex.cpp`: a 7x7 stem, 14 residual
blocks (32, 64, 128, 256, 256 filters), global average pooling and a 128-d linear layer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Residual blocks bottom-up as (filters, downsample): alevel4 .. alevel0 of dlib's anet_type.
BLOCKS: tuple[tuple[int, bool], ...] = (
    (32, False), (32, False), (32, False),
    (64, True), (64, False), (64, False), (64, False),
    (128, True), (128, False), (128, False),
    (256, True), (256, False), (256, False),
    (256, True),
)
CHIP_SIZE = 150

# A length-prefixed layer name as dlib's serialize(std::string) writes it: 0x01, length, name.
_LAYER_NAME = re.compile(rb"\x01([\x03-\x20])(input_rgb_image_sized|con_4|affine_|fc_2)")


@dataclass
class DlibResnetWeights:
    mean_rgb: np.ndarray        # (3,) subtracted from pixels before dividing by 256, as dlib's input layer does
    convs: list[np.ndarray]     # 29 params vectors: filters then biases, bottom-up
    affines: list[np.ndarray]   # 29 params vectors: gamma then beta (the frozen batch norms)
    fc: np.ndarray              # (256, 128): descriptor = pooled features @ fc


class _DatReader:
    """The parts of dlib's serialization format this network uses."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def integer(self) -> int:
        head = self.data[self.pos]
        size = head & 0x0F
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if head & 0x80 else value

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        return float(mantissa) * 2.0 ** exponent

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise ValueError(f"unsupported dlib tensor version {version}")
        shape = [self.integer() for _ in range(4)]
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, "<f4", count, self.pos).copy()
        self.pos += 4 * count
        return values.reshape(shape)


def read_weights(path: Path | str) -> DlibResnetWeights:
    """Walk the .dat file layer by layer (input to output) and collect every parameter tensor."""
    data = Path(path).read_bytes()
    convs: list[np.ndarray] = []
    affines: list[np.ndarray] = []
    mean_rgb = fc = None
    pos = 0
    while (match := _LAYER_NAME.search(data, pos)) is not None:
        if match.group(1)[0] != len(match.group(2)):
            pos = match.start() + 1
            continue
        reader, name = _DatReader(data, match.end()), match.group(2)
        if name == b"input_rgb_image_sized":
            mean_rgb = np.array([reader.real() for _ in range(3)], np.float32)
        elif name == b"con_4":
            convs.append(reader.tensor().ravel())
        elif name == b"affine_":
            affines.append(reader.tensor().ravel())
        else:  # fc_2: num_outputs, num_inputs, then the (inputs, outputs) weight matrix
            outputs, inputs = reader.integer(), reader.integer()
            fc = reader.tensor().reshape(inputs, outputs)
        pos = reader.pos
    expected = 1 + 2 * len(BLOCKS)
    if mean_rgb is None or fc is None or len(convs) != expected or len(affines) != expected:
        raise ValueError(f"{path} is not dlib's face recognition ResNet: found {len(convs)} convolutions, "
                         f"{len(affines)} affine layers, fc {'present' if fc is not None else 'missing'}")
    return DlibResnetWeights(mean_rgb=mean_rgb, convs=convs, affines=affines, fc=fc)


def build_network(weights: DlibResnetWeights):
    """A torch.nn.Module mapping (N, 150, 150, 3) uint8 RGB chips to dlib's raw 128-d descriptors."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def conv(params: np.ndarray, cin: int, cout: int, k: int, stride: int) -> nn.Conv2d:
        # dlib pads stride-1 convolutions by k // 2 and strided ones not at all.
        layer = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if stride == 1 else 0)
        n = cout * cin * k * k
        if params.size != n + cout:
            raise ValueError(f"convolution {cin}->{cout} {k}x{k}: expected {n + cout} parameters, found {params.size}")
        layer.weight.data = torch.from_numpy(params[:n].reshape(cout, cin, k, k).copy())
        layer.bias.data = torch.from_numpy(params[n:].copy())
        return layer

    def affine(params: np.ndarray, conv_layer: nn.Conv2d) -> nn.Conv2d:
        """Fold dlib's affine layer (frozen batch norm: gamma * x + beta) into the convolution before it."""
        gamma, beta = params[: params.size // 2], params[params.size // 2 :]
        g = torch.from_numpy(gamma.copy())
        conv_layer.weight.data *= g.view(-1, 1, 1, 1)
        conv_layer.bias.data = conv_layer.bias.data * g + torch.from_numpy(beta.copy())
        return conv_layer

    def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """dlib's add_prev: tensors of different sizes are added top-left aligned, the rest as zeros."""
        shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

        def grow(t: torch.Tensor) -> torch.Tensor:
            pads = [0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]]
            return F.pad(t, pads) if any(pads) else t

        return grow(a) + grow(b)

    class Block(nn.Module):
        def __init__(self, first: nn.Conv2d, second: nn.Conv2d, down: bool) -> None:
            super().__init__()
            self.first, self.second, self.down = first, second, down

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.second(F.relu(self.first(x)))
            skip = F.avg_pool2d(x, 2, 2) if self.down else x
            return F.relu(add_padded(y, skip))

    class DlibResnet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(weights.mean_rgb).view(1, 3, 1, 1))
            self.stem = affine(weights.affines[0], conv(weights.convs[0], 3, 32, 7, 2))
            blocks, cin = [], 32
            for i, (cout, down) in enumerate(BLOCKS):
                a = affine(weights.affines[1 + 2 * i], conv(weights.convs[1 + 2 * i], cin, cout, 3, 2 if down else 1))
                b = affine(weights.affines[2 + 2 * i], conv(weights.convs[2 + 2 * i], cout, cout, 3, 1))
                blocks.append(Block(a, b, down))
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, weights.fc.shape[1], bias=False)
            self.fc.weight.data = torch.from_numpy(weights.fc.T.copy())

        def forward(self, chips: torch.Tensor) -> torch.Tensor:
            x = (chips.permute(0, 3, 1, 2).float() - self.mean) / 256.0
            x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
            x = self.blocks(x)
            return self.fc(x.mean(dim=(2, 3)))

    return DlibResnet().eval()


def jittered(chips, count: int, seed: int = 0) -> list:
    """`count` copies of (N, H, W, 3) float chips, each warped like dlib's jitter_image: a shift of up
    to 2% of the chip, a zoom-out of up to 3%, a rotation of up to 3 degrees. The seed is fixed so
    a face gets the same embedding every time (the cache relies on it); mirroring is `flip`'s job."""
    import math

    import torch
    from torch.nn import functional as F

    rng = np.random.default_rng(seed)
    x = chips.permute(0, 3, 1, 2)
    out = []
    for _ in range(count):
        (dx, dy), scale, angle = rng.uniform(-0.04, 0.04, 2), 1 / rng.uniform(0.97, 1.0), math.radians(rng.uniform(-3, 3))
        theta = torch.tensor([[scale * math.cos(angle), -scale * math.sin(angle), dx],
                              [scale * math.sin(angle), scale * math.cos(angle), dy]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
        out.append(F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).permute(0, 2, 3, 1))
    return out
