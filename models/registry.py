"""One registry creates every model by name with its pretrained config (timm's `create_model`).

Importing this module is cheap: the networks and torch load inside the factories.
`INFERENCE_CALLS` counts forward passes per model id, so tests can prove a warm cache
runs no inference at all.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

INFERENCE_CALLS: Counter[str] = Counter()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: Callable[..., Any]
    params: Callable[..., dict[str, Any]]  # declared params for given kwargs, without loading weights
    role: str  # "detector" | "face" | "gif"


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, role: str, params: Callable[..., dict[str, Any]]) -> Callable:
    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[name] = ModelSpec(name, factory, params, role)
        return factory

    return decorator


def _spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_model(name: str, **kwargs: Any) -> Any:
    return _spec(name).factory(**kwargs)


def model_params(name: str, **kwargs: Any) -> dict[str, Any]:
    """The parameters that define a model's outputs (part of every cache namespace)."""
    return _spec(name).params(**kwargs)


def list_models(role: str | None = None) -> list[str]:
    return sorted(n for n, s in _REGISTRY.items() if role is None or s.role == role)


# -- registrations (imports inside factories keep this module light) ----------------

def _mtcnn_params(**kw: Any) -> dict[str, Any]:
    from models.face_detector import MTCNNDetector

    return MTCNNDetector.declared_params(**kw)


@register_model("mtcnn", role="detector", params=_mtcnn_params)
def _mtcnn(**kw: Any) -> Any:
    from models.face_detector import MTCNNDetector

    return MTCNNDetector(**kw)


def _dlib_params(**kw: Any) -> dict[str, Any]:
    from models.face_embedders import DlibFaceEmbedder

    return DlibFaceEmbedder.declared_params(**kw)


@register_model("dlib-resnet-v1", role="face", params=_dlib_params)
def _dlib(**kw: Any) -> Any:
    from models.face_embedders import DlibFaceEmbedder

    return DlibFaceEmbedder(**kw)


def _facenet_params(**kw: Any) -> dict[str, Any]:
    from models.face_embedders import FacenetEmbedder

    return FacenetEmbedder.declared_params(**kw)


@register_model("facenet-vggface2", role="face", params=_facenet_params)
def _facenet(**kw: Any) -> Any:
    from models.face_embedders import FacenetEmbedder

    return FacenetEmbedder(**kw)


def _effnet_params(**kw: Any) -> dict[str, Any]:
    from models.gif_embedder import EfficientNetLiteGifEmbedder

    return EfficientNetLiteGifEmbedder.declared_params(**kw)


@register_model("efficientnet-lite0", role="gif", params=_effnet_params)
def _effnet(**kw: Any) -> Any:
    from models.gif_embedder import EfficientNetLiteGifEmbedder

    return EfficientNetLiteGifEmbedder(**kw)
