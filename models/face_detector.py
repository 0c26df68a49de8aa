"""MTCNN face detection (facenet-pytorch; its weights ship inside the wheel).

MTCNN's memory grows with the pixels it is handed: facenet-pytorch turns a whole batch into
float32 and builds an image pyramid from it, so 16 frames of 3000x3000 peaked at 7.9 GB. A
frame is therefore shown to MTCNN with at most DETECT_MAX_PIXELS pixels (boxes and landmarks
are mapped back to the full frame, which alignment keeps using), and a batch holds at most
DETECT_BATCH_PIXELS pixels.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from models.device import channels_last, torch_device
from models.registry import INFERENCE_CALLS

# Full HD. Memory follows the pixel count, not the longest side, so the cap is an area: every frame
# up to 1920x1080 (the shared GIFs, LFW photos, 720p and 1080p video) is detected exactly as before,
# and a larger one is shrunk to this area, which only loses faces under min_face_size x the shrink
# (under 40 px in a 4K frame, under 42 px in a 3000x3000 one: 1.4% of its side).
DETECT_MAX_PIXELS = 1920 * 1080
# Four full-HD frames: MTCNN on 16 frames shrunk from 3000x3000 then peaks at 1.7 GB instead of 2.8 GB
# in one batch (measured, process included), while sixteen frames up to 720x720 (the shared GIFs are
# at most 802x434, LFW photos 250x250) still go sixteen to a batch as before. Batching does not change
# what is found, so this is not part of the cache key.
DETECT_BATCH_PIXELS = 4 * DETECT_MAX_PIXELS
PNET_INPUT = 12  # P-Net's window: MTCNN's pyramid starts at min_face_size -> 12 px


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """Grey or RGBA arrays (some LFW JPEGs are grey) as HxWx3 uint8."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    return np.ascontiguousarray(frame[:, :, :3], dtype=np.uint8)


def detection_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The (width, height) MTCNN sees: the frame itself, or the frame shrunk to max_pixels.

    Aspect ratio is kept; sides are rounded down so the area never exceeds the cap.
    """
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def holds_a_face(width: int, height: int, min_face_size: int) -> bool:
    """Whether MTCNN's image pyramid has a level for this size (facenet-pytorch's own test).

    A frame whose short side is under min_face_size gives no level, and facenet-pytorch then
    fails with "torch.cat(): expected a non-empty list of Tensors" instead of finding nothing.
    """
    return min(width, height) * (float(PNET_INPUT) / min_face_size) >= PNET_INPUT


def shrink(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The frame at `size` (width, height), area-averaged like MTCNN's own pyramid levels."""
    if (frame.shape[1], frame.shape[0]) == size:
        return frame
    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BOX))


def batches(positions: list[int], batch_size: int, frame_pixels: int, batch_pixels: int) -> list[list[int]]:
    """Runs of positions with at most batch_size frames and batch_pixels pixels (never empty)."""
    per_batch = max(1, min(batch_size, batch_pixels // max(1, frame_pixels)))
    return [positions[start : start + per_batch] for start in range(0, len(positions), per_batch)]


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # x1, y1, x2, y2
    probability: float
    landmarks: np.ndarray  # 5x2: left eye, right eye, nose, mouth left, mouth right


class MTCNNDetector:
    model_id = "mtcnn"

    def __init__(self, min_face_size: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 min_probability: float = 0.9, batch_size: int = 16, max_pixels: int = DETECT_MAX_PIXELS,
                 batch_pixels: int = DETECT_BATCH_PIXELS) -> None:
        from facenet_pytorch import MTCNN

        self.params = self.declared_params(min_face_size=min_face_size, thresholds=thresholds,
                                           min_probability=min_probability, max_pixels=max_pixels)
        self.min_face_size = int(min_face_size)
        self.min_probability = float(min_probability)
        self.batch_size = batch_size
        self.max_pixels = int(max_pixels)
        self.batch_pixels = int(batch_pixels)
        self._mtcnn = MTCNN(keep_all=True, min_face_size=int(min_face_size), thresholds=list(thresholds),
                            device=torch_device(), post_process=False)
        for net in (self._mtcnn.pnet, self._mtcnn.rnet, self._mtcnn.onet):
            channels_last(net)

    @staticmethod
    def declared_params(min_face_size: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                        min_probability: float = 0.9, max_pixels: int = DETECT_MAX_PIXELS,
                        **_: Any) -> dict[str, Any]:
        """What defines the detections; max_pixels is one (a bigger frame is searched shrunk),
        so a cache filled before the cap existed, or with another cap, is not reused."""
        return {"min_face_size": int(min_face_size), "thresholds": [float(t) for t in thresholds],
                "min_probability": float(min_probability), "max_pixels": int(max_pixels),
                "weights": "facenet-pytorch-2.6.0"}

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Faces per frame, largest first, in the frames' own coordinates.

        Frames of one size go through MTCNN together, in batches bounded by frame count and
        pixels; a frame too small to hold a min_face_size face gets none without running MTCNN.
        """
        out: list[list[Detection]] = [[] for _ in frames]
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, frame in enumerate(frames):
            by_size[(frame.shape[1], frame.shape[0])].append(i)
        for (width, height), positions in by_size.items():
            size = detection_size(width, height, self.max_pixels)
            if not holds_a_face(*size, self.min_face_size):
                continue
            scale = np.array([width / size[0], height / size[1]], np.float32)
            for chunk in batches(positions, self.batch_size, size[0] * size[1], self.batch_pixels):
                found = self._detect_batch(np.stack([shrink(as_rgb(frames[i]), size) for i in chunk]), scale)
                for i, dets in zip(chunk, found):
                    out[i] = dets
        return out

    def _detect_batch(self, batch: np.ndarray, scale: np.ndarray) -> list[list[Detection]]:
        """One MTCNN call; boxes and landmarks scaled by (sx, sy) back to the full frame."""
        INFERENCE_CALLS[self.model_id] += 1
        boxes, probs, points = self._mtcnn.detect(batch, landmarks=True)
        box_scale = np.tile(scale, 2)
        out: list[list[Detection]] = []
        for b, p, pts in zip(boxes, probs, points):
            if b is None:
                out.append([])
                continue
            dets = [Detection(np.asarray(bb, np.float32) * box_scale, float(pp),
                              np.asarray(ll, np.float32) * scale)
                    for bb, pp, ll in zip(b, p, pts) if pp is not None and pp >= self.min_probability]
            out.append(sorted(dets, key=lambda d: -float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))))
        return out
