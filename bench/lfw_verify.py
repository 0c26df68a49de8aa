"""LFW face verification over the real pipeline (MTCNN detect -> align -> embed).

The standard protocol: a pairs file in LFW's pairs.txt format, 10 folds, the distance
threshold chosen on the other nine folds and measured on the held-out one. Prints
per-fold accuracy, mean +- std, images/s, and finally `accuracy=0.XXXX`.

    uv run python bench/lfw_verify.py --make-pairs --pairs /tmp/pairs.txt --images ../shared/data/lfw
    uv run python bench/lfw_verify.py --pairs /tmp/pairs.txt --images ../shared/data/lfw
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

Pair = tuple[str, int, str, int]  # person1, image1, person2, image2


def make_pairs(images: Path, folds: int, per_fold: int, seed: int) -> list[list[tuple[list[Pair], list[Pair]]]]:
    """Disjoint people per fold (as in LFW's View 2): matched pairs from people with 2+ photos."""
    rng = random.Random(seed)
    people = {p.name: len(list(p.glob("*.jpg"))) for p in sorted(images.iterdir()) if p.is_dir()}
    names = sorted(n for n, c in people.items() if c >= 1)
    rng.shuffle(names)
    groups = [names[i::folds] for i in range(folds)]
    out = []
    for group in groups:
        multi = [n for n in group if people[n] >= 2]
        matched: set[Pair] = set()
        while len(matched) < per_fold:
            name = rng.choice(multi)
            a, b = sorted(rng.sample(range(1, people[name] + 1), 2))
            matched.add((name, a, name, b))
        mismatched: set[Pair] = set()
        while len(mismatched) < per_fold:
            n1, n2 = rng.sample(group, 2)
            mismatched.add((n1, rng.randint(1, people[n1]), n2, rng.randint(1, people[n2])))
        out.append((sorted(matched), sorted(mismatched)))
    return out


def write_pairs(path: Path, folds_pairs, per_fold: int) -> None:
    lines = [f"{len(folds_pairs)}\t{per_fold}"]
    for matched, mismatched in folds_pairs:
        lines += [f"{a}\t{i}\t{j}" for a, i, _, j in matched]
        lines += [f"{a}\t{i}\t{b}\t{j}" for a, i, b, j in mismatched]
    path.write_text("\n".join(lines) + "\n")


def read_pairs(path: Path) -> list[tuple[list[Pair], list[Pair]]]:
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    folds, per_fold = int(rows[0][0]), int(rows[0][1])
    body, out = rows[1:], []
    for f in range(folds):
        chunk = body[f * 2 * per_fold : (f + 1) * 2 * per_fold]
        matched = [(r[0], int(r[1]), r[0], int(r[2])) for r in chunk[:per_fold]]
        mismatched = [(r[0], int(r[1]), r[2], int(r[3])) for r in chunk[per_fold:]]
        out.append((matched, mismatched))
    return out


def image_path(images: Path, name: str, n: int) -> Path:
    return images / name / f"{name}_{n:04d}.jpg"


def embed_images(paths: list[Path], face_model: str, kwargs: dict) -> tuple[dict[Path, np.ndarray], int]:
    """One embedding per image: the most central confident face; a centred box when MTCNN finds none."""
    from PIL import Image
    from tqdm import tqdm

    from models.face_detector import Detection
    from models.registry import create_model

    detector, embedder = create_model("mtcnn"), create_model(face_model, **kwargs)
    vectors, fallbacks = {}, 0
    for start in tqdm(range(0, len(paths), 16), desc="embed", unit="batch"):
        batch = paths[start : start + 16]
        frames = [np.asarray(Image.open(p).convert("RGB")) for p in batch]
        crops = []
        for frame, dets in zip(frames, detector.detect(frames)):
            h, w = frame.shape[:2]
            if dets:
                det = min(dets, key=lambda d: np.hypot((d.box[0] + d.box[2]) / 2 - w / 2, (d.box[1] + d.box[3]) / 2 - h / 2))
            else:  # LFW faces are centred: use LFW's typical face box and landmark positions
                fallbacks += 1
                s = w / 250
                box = np.array([75, 70, 175, 195], np.float32) * s
                marks = np.array([[105, 115], [145, 115], [125, 140], [108, 165], [142, 165]], np.float32) * s
                det = Detection(box, 0.0, marks)
            crops.append(embedder.align(frame, det))
        for p, v in zip(batch, embedder.embed(crops)):
            vectors[p] = v
    return vectors, fallbacks


def best_threshold(dist: np.ndarray, same: np.ndarray) -> float:
    candidates = np.unique(dist)
    acc = [((dist < t) == same).mean() for t in candidates]
    i = int(np.argmax(acc))
    return float((candidates[i] + candidates[min(i + 1, len(candidates) - 1)]) / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--make-pairs", action="store_true", help="write a pairs file from --images and exit")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--per-fold", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--face-model", default="dlib-resnet-v1")
    parser.add_argument("--no-flip", action="store_true", help="dlib: no mirrored-crop averaging")
    parser.add_argument("--jitters", type=int, default=0, help="dlib: num_jitters")
    parser.add_argument("--box-scale", type=float, default=0.85, help="dlib: scale of the square box given to the shape predictor")
    args = parser.parse_args()

    if args.make_pairs:
        folds = make_pairs(args.images, args.folds, args.per_fold, args.seed)
        write_pairs(args.pairs, folds, args.per_fold)
        print(f"wrote {args.pairs}: {args.folds} folds x ({args.per_fold} matched + {args.per_fold} mismatched) pairs")
        return

    folds = read_pairs(args.pairs)
    paths = sorted({image_path(args.images, n, i) for m, mm in folds for a, i, b, j in m + mm for n, i in ((a, i), (b, j))})
    kwargs = {"flip": not args.no_flip, "jitters": args.jitters, "box_scale": args.box_scale} if args.face_model == "dlib-resnet-v1" else {}
    start = time.perf_counter()
    vectors, fallbacks = embed_images(paths, args.face_model, kwargs)
    seconds = time.perf_counter() - start

    dists, sames = [], []
    for matched, mismatched in folds:
        pairs = matched + mismatched
        dists.append(np.array([1 - float(vectors[image_path(args.images, a, i)] @ vectors[image_path(args.images, b, j)])
                               for a, i, b, j in pairs]))
        sames.append(np.array([True] * len(matched) + [False] * len(mismatched)))
    accs, thresholds = [], []
    for k in range(len(folds)):
        train = [i for i in range(len(folds)) if i != k]
        t = best_threshold(np.concatenate([dists[i] for i in train]), np.concatenate([sames[i] for i in train]))
        accs.append(float(((dists[k] < t) == sames[k]).mean()))
        thresholds.append(t)
        print(f"fold {k + 1:2d}: accuracy {accs[-1]:.4f} (threshold {t:.4f})")
    n_pairs = sum(len(s) for s in sames)
    print(f"model={args.face_model} params={kwargs} pairs={n_pairs} images={len(paths)} "
          f"no_face_fallbacks={fallbacks} images_per_s={len(paths) / seconds:.2f}")
    print(f"mean {np.mean(accs):.4f} +- {np.std(accs):.4f}, cosine-distance threshold {np.mean(thresholds):.4f}")
    print(f"accuracy={np.mean(accs):.4f}")


if __name__ == "__main__":
    main()
