"""MTCNN face detection (facenet-pytorch; its weights ship inside the wheel)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.device import channels_last, torch_device
from models.registry import INFERENCE_CALLS


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """Grey or RGBA arrays (some LFW JPEGs are grey) as HxWx3 uint8."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    return np.ascontiguousarray(frame[:, :, :3], dtype=np.uint8)


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # x1, y1, x2, y2
    probability: float
    landmarks: np.ndarray  # 5x2: left eye, right eye, nose, mouth left, mouth right


class MTCNNDetector:
    model_id = "mtcnn"

    def __init__(self, min_face_size: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 min_probability: float = 0.9, batch_size: int = 16) -> None:
        from facenet_pytorch import MTCNN

        self.params = self.declared_params(min_face_size=min_face_size, thresholds=thresholds,
                                           min_probability=min_probability)
        self.min_probability = float(min_probability)
        self.batch_size = batch_size
        self._mtcnn = MTCNN(keep_all=True, min_face_size=int(min_face_size), thresholds=list(thresholds),
                            device=torch_device(), post_process=False)
        for net in (self._mtcnn.pnet, self._mtcnn.rnet, self._mtcnn.onet):
            channels_last(net)

    @staticmethod
    def declared_params(min_face_size: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                        min_probability: float = 0.9, **_: Any) -> dict[str, Any]:
        return {"min_face_size": int(min_face_size), "thresholds": [float(t) for t in thresholds],
                "min_probability": float(min_probability), "weights": "facenet-pytorch-2.6.0"}

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Frames of one size go through MTCNN together, in chunks of batch_size."""
        frames = [as_rgb(f) for f in frames]
        out: list[list[Detection]] = [[] for _ in frames]
        by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, frame in enumerate(frames):
            by_size[frame.shape].append(i)
        for positions in by_size.values():
            for start in range(0, len(positions), self.batch_size):
                chunk = positions[start : start + self.batch_size]
                batch = np.stack([frames[i] for i in chunk])
                INFERENCE_CALLS[self.model_id] += 1
                boxes, probs, points = self._mtcnn.detect(batch, landmarks=True)
                for i, b, p, pts in zip(chunk, boxes, probs, points):
                    if b is None:
                        continue
                    dets = [Detection(np.asarray(bb, np.float32), float(pp), np.asarray(ll, np.float32))
                            for bb, pp, ll in zip(b, p, pts) if pp is not None and pp >= self.min_probability]
                    out[i] = sorted(dets, key=lambda d: -float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))
        return out
