"""Face embedders: each aligns a detected face to its own canonical pose, then embeds it.

Outputs are L2-normalised float32 rows; `params` (with `model_id`) names the cache namespace.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from models.face_align import template_for, warp_to_template
from models.face_detector import Detection, as_rgb
from models.registry import INFERENCE_CALLS


def l2_normalise(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


@lru_cache(maxsize=1)
def face_recognition_models_dir() -> Path:
    """Where `face-recognition-models` keeps its .dat files; its __init__ needs pkg_resources, so don't import it."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face-recognition-models is not installed (run `make sync`)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


# MTCNN's boxes are larger than the dlib HOG boxes the 5-point shape predictor was trained
# on; shrinking the square box to 0.85 lifted LFW verification from 0.9880 to 0.9900
# (bench/lfw_verify.py, 2,000 pairs, same cost).
BOX_SCALE = 0.85


class DlibFaceEmbedder:
    """dlib's ResNet (128-d, LFW 99.38% as published), run on dlib's own 150 px face chip.

    The chip comes from dlib's 5-point shape predictor run inside MTCNN's box, because the
    ResNet was trained on exactly those chips. The network itself runs in PyTorch
    (models/dlib_resnet.py, same weights and outputs as dlib, about 35x faster per chip than the
    BLAS-less dlib wheel). `flip` adds a mirrored chip and averages; `jitters` adds that many
    dlib-style jittered chips (shift, zoom, rotation; a fixed seed, so outputs are repeatable).
    """

    model_id = "dlib-resnet-v1"
    dim = 128
    batch_size = 64

    def __init__(self, flip: bool = True, jitters: int = 0, padding: float = 0.25, box_scale: float = BOX_SCALE) -> None:
        import dlib
        import torch

        from models.device import channels_last, torch_device
        from models.dlib_resnet import build_network, read_weights

        folder = face_recognition_models_dir()
        self.params = self.declared_params(flip=flip, jitters=jitters, padding=padding, box_scale=box_scale)
        self.flip, self.jitters, self.padding, self.box_scale = flip, int(jitters), float(padding), float(box_scale)
        self._shape = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
        self.device = torch_device()
        self._net = channels_last(build_network(read_weights(folder / "dlib_face_recognition_resnet_model_v1.dat")).to(self.device))
        self._dlib, self._torch = dlib, torch

    @staticmethod
    def declared_params(flip: bool = True, jitters: int = 0, padding: float = 0.25, box_scale: float = BOX_SCALE,
                        **_: Any) -> dict[str, Any]:
        return {"align": "dlib-sp5-chip", "size": 150, "padding": float(padding), "box_scale": float(box_scale),
                "flip": bool(flip), "jitters": int(jitters), "weights": "dlib_face_recognition_resnet_model_v1.dat"}

    def align(self, frame: np.ndarray, detection: Detection) -> np.ndarray:
        x1, y1, x2, y2 = (float(v) for v in detection.box)
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * self.box_scale / 2
        rect = self._dlib.rectangle(int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half)))
        frame = as_rgb(frame)
        shape = self._shape(frame, rect)
        return np.asarray(self._dlib.get_face_chip(frame, shape, size=150, padding=self.padding))

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        from models.dlib_resnet import jittered

        torch = self._torch
        INFERENCE_CALLS[self.model_id] += 1
        out = []
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                chips = torch.from_numpy(np.stack(crops[start : start + self.batch_size])).to(self.device).float()
                views = [chips] + jittered(chips, self.jitters)
                if self.flip:
                    views += [v.flip(2) for v in views]
                out.append(sum(self._net(v) for v in views).cpu().numpy())
        return l2_normalise(np.concatenate(out))


class FacenetEmbedder:
    """facenet-pytorch InceptionResnetV1 (VGGFace2, 512-d) on a 160 px landmark-aligned crop.

    Its pretrained weights are a download, impossible offline: they load from a configured
    file or the torch hub cache; `pretrained=False` gives random weights (for tests).
    """

    model_id = "facenet-vggface2"
    dim = 512
    hub_file = "20180402-114759-vggface2.pt"

    def __init__(self, weights_path: Path | str | None = None, pretrained: bool = True, batch_size: int = 32) -> None:
        import torch
        from facenet_pytorch import InceptionResnetV1

        from models.device import torch_device

        self.device = torch_device()
        self.batch_size = batch_size
        self.params = self.declared_params(weights_path=weights_path, pretrained=pretrained)
        self._net = InceptionResnetV1(pretrained=None, classify=False).eval().to(self.device)
        if pretrained:
            path = self.find_weights(weights_path)
            state = torch.load(path, map_location=self.device, weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("logits.")}
            self._net.load_state_dict(state, strict=False)
        self._torch = torch
        self._template = template_for(160)

    @classmethod
    def find_weights(cls, weights_path: Path | str | None = None) -> Path:
        import torch

        from models.settings import get_settings

        candidates = [Path(p) for p in (weights_path, get_settings().facenet_weights) if p]
        candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / cls.hub_file)
        # each once, in order: the pipeline passes GIFLENS_FACENET_WEIGHTS as weights_path too
        candidates = list(dict.fromkeys(candidates))
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise RuntimeError(
            "facenet-vggface2 weights not found; this machine cannot download them. Put the state dict "
            f"({cls.hub_file}) at one of: {', '.join(map(str, candidates))} or set GIFLENS_FACENET_WEIGHTS."
        )

    @staticmethod
    def declared_params(weights_path: Path | str | None = None, pretrained: bool = True, **_: Any) -> dict[str, Any]:
        weights = Path(weights_path).name if weights_path else FacenetEmbedder.hub_file
        return {"align": "arcface5-similarity", "size": 160, "standardize": "(x-127.5)/128",
                "weights": weights if pretrained else "random"}

    def align(self, frame: np.ndarray, detection: Detection) -> np.ndarray:
        return warp_to_template(as_rgb(frame), detection.landmarks, self._template, 160)

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        torch = self._torch
        out = []
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                batch = np.stack(crops[start : start + self.batch_size]).astype(np.float32)
                x = torch.from_numpy((batch - 127.5) / 128.0).permute(0, 3, 1, 2).to(self.device)
                INFERENCE_CALLS[self.model_id] += 1
                out.append(self._net(x).cpu().numpy())
        return l2_normalise(np.concatenate(out))
