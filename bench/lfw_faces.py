"""Real dlib face embeddings of LFW photos, computed once over the real pipeline and kept in an .npz.

Recognition, kNN and explorer benchmarks all need the same thing: one embedding per LFW
photo, with the person's name. Embedding all 5,985 photos takes about a minute on two
cores (MTCNN, dlib's chip, the ResNet in PyTorch), so the result is saved (keyed by the image
list and the embedder parameters) and reused by every later run.

    uv run python bench/lfw_faces.py --images ../shared/data/lfw --out /tmp/giflens-lfw-faces.npz
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CACHE = Path("/tmp/giflens-lfw-faces.npz")
DEFAULT_MODEL = "dlib-resnet-v1"


@dataclass
class LfwFaces:
    names: np.ndarray    # (n,) person per photo
    paths: np.ndarray    # (n,) photo path relative to the images folder
    vectors: np.ndarray  # (n, 128) L2-normalised float32


def _key(paths: list[Path], images: Path, face_model: str, kwargs: dict) -> str:
    listing = "\n".join(str(p.relative_to(images)) for p in paths)
    return hashlib.sha256(json.dumps([listing, face_model, kwargs], sort_keys=True).encode()).hexdigest()[:16]


def model_key(face_model: str, kwargs: dict) -> str:
    """What a cache file is valid for: the embedder and its non-default parameters."""
    return json.dumps([face_model, kwargs], sort_keys=True)


def cache_file(cache: Path, face_model: str, kwargs: dict) -> Path:
    """One cache file per model key: `cache` itself for the default model (the name every test and bench
    already uses), `<stem>.<hash of the key><suffix>` beside it for any other. One shared file kept only
    the last model, so one --no-flip or --jitters run threw away every default embedding."""
    key = model_key(face_model, kwargs)
    if key == model_key(DEFAULT_MODEL, {}):
        return cache
    return cache.with_name(f"{cache.stem}.{hashlib.sha256(key.encode()).hexdigest()[:12]}{cache.suffix}")


def load_lfw_faces(images: Path, cache: Path = DEFAULT_CACHE, min_photos: int = 1, max_people: int | None = None,
                   face_model: str = DEFAULT_MODEL, only: Collection[str] | None = None, **kwargs) -> LfwFaces:
    """Embeddings of every photo of the people with at least min_photos photos (sorted by name); `only`
    keeps just the people so named, so a quick run embeds only the photos it uses. `cache` is the default
    model's file; other models and parameters keep theirs beside it (cache_file)."""
    from bench.lfw_verify import embed_images

    people = sorted(p for p in images.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= min_photos
                    and (only is None or p.name in only))
    if max_people is not None:
        people = people[:max_people]
    paths = [f for person in people for f in sorted(person.glob("*.jpg"))]
    key = _key(paths, images, face_model, kwargs)
    cache = cache_file(cache, face_model, kwargs)
    stored: dict[str, np.ndarray] = {}
    if cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            stored = {"paths": data["paths"], "vectors": data["vectors"], "model": data["model"]}
    # Reuse any photo already embedded with the same model, whatever subset it was part of.
    known: dict[str, np.ndarray] = {}
    if stored and str(stored["model"]) == model_key(face_model, kwargs):
        known = dict(zip(stored["paths"].tolist(), stored["vectors"]))
    missing = [p for p in paths if str(p.relative_to(images)) not in known]
    if missing:
        vectors, _ = embed_images(missing, face_model, kwargs)
        for p, v in vectors.items():
            known[str(p.relative_to(images))] = v
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{key}.tmp.npz")
        all_paths = sorted(known)
        np.savez(tmp, paths=np.array(all_paths), vectors=np.stack([known[p] for p in all_paths]).astype(np.float32),
                 model=np.array(model_key(face_model, kwargs)))
        tmp.replace(cache)
    rel = [str(p.relative_to(images)) for p in paths]
    return LfwFaces(names=np.array([r.split("/")[0] for r in rel]), paths=np.array(rel),
                    vectors=np.stack([known[r] for r in rel]).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "lfw")
    parser.add_argument("--out", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--min-photos", type=int, default=1)
    args = parser.parse_args()
    from bench.checks import at_least, existing_dir

    existing_dir(parser, "--images", args.images)
    at_least(parser, "--min-photos", args.min_photos, 1)
    faces = load_lfw_faces(args.images, args.out, args.min_photos)
    print(f"photos={len(faces.paths)} people={len(set(faces.names))} dim={faces.vectors.shape[1]} cache={args.out}")


if __name__ == "__main__":
    main()
