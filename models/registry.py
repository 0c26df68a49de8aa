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


def unknown_model_message(role: str, name: str, source: str | None = None) -> str | None:
    """`unknown face model 'x' (--face-model); known: a, b` when the registry has no `role` model of that name,
    else None; `source` (an option, an environment variable) is named when given. Why one function: the
    settings and the command line refuse the same mistake, and their two copies of the sentence could drift."""
    known = list_models(role)
    if name in known:
        return None
    where = f" ({source})" if source else ""
    return f"unknown {'GIF' if role == 'gif' else role} model {name!r}{where}; known: {', '.join(known)}"


# -- registrations (imports inside factories keep this module light) ----------------

def _lazy(module: str, cls: str) -> type:
    import importlib

    return getattr(importlib.import_module(module), cls)


def register_lazy(name: str, role: str, module: str, cls: str) -> None:
    """Register a model class by import path; it must offer `declared_params(**kwargs)`."""
    register_model(name, role, params=lambda **kw: _lazy(module, cls).declared_params(**kw))(
        lambda **kw: _lazy(module, cls)(**kw))


register_lazy("mtcnn", "detector", "models.face_detector", "MTCNNDetector")
register_lazy("dlib-resnet-v1", "face", "models.face_embedders", "DlibFaceEmbedder")
register_lazy("facenet-vggface2", "face", "models.face_embedders", "FacenetEmbedder")
register_lazy("efficientnet-lite0", "gif", "models.gif_embedder", "EfficientNetLiteGifEmbedder")
register_lazy("minilm-l6-v2", "text", "models.text_embedder", "TextEmbedder")
