"""LFW face verification over the real pipeline (MTCNN detect -> align -> embed).

The standard protocol: a pairs file in LFW's pairs.txt format, 10 folds, the distance
threshold chosen on the other nine folds and measured on the held-out one. Prints
per-fold accuracy, mean +- std, images/s, and finally `accuracy=0.XXXX`.

    uv run python bench/lfw_verify.py --make-pairs --pairs /tmp/pairs.txt --images ../shared/data/lfw
    uv run python bench/lfw_verify.py --pairs /tmp/pairs.txt --images ../shared/data/lfw [--baseline]

LFW's official pairs.txt is not on these machines (no internet), and `--make-pairs` can only
draw from the 423 people with 5+ photos in ../shared/data/lfw, so the pairs differ from the
published protocol. `--baseline` measures how hard a pairs file is: it runs dlib's own reference
pipeline (the one behind dlib's published 0.9938) over the same pairs and prints
`baseline_accuracy=` and `error_ratio=` (our error rate / the baseline's).
"""
from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.checks import at_least, existing_dir, existing_file  # noqa: E402

Pair = tuple[str, int, str, int]  # person1, image1, person2, image2


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def person_images(images: Path, name: str) -> list[Path]:
    """A person's photos: the image files (jpg/jpeg/png, any case, not hidden) in `images/name`, sorted by name."""
    folder = images / name
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                   and p.is_file()), key=lambda p: p.name)


def numbered_images(images: Path, name: str) -> dict[int, Path]:
    """Image number n (1-based) -> file. In a folder with LFW's names (`Name_{n:04d}.jpg`), the numbers
    are those names and nothing else: a number whose file is missing stays missing, so an official pair
    never silently compares another photo (or the same one twice). Elsewhere, 1..count name the image
    files in sorted order."""
    files = person_images(images, name)
    pattern = re.compile(rf"{re.escape(name)}_(\d{{4}})\.jpg")
    lfw = {int(m.group(1)): p for p in files if (m := pattern.fullmatch(p.name))}
    return lfw if lfw else dict(enumerate(files, 1))


def image_path(images: Path, name: str, n: int) -> Path:
    lfw = images / name / f"{name}_{n:04d}.jpg"
    if lfw.is_file():  # LFW's own names: no folder listing
        return lfw
    numbered = numbered_images(images, name)
    if n not in numbered:
        raise FileNotFoundError(f"{images / name} has no image {n}: neither {lfw.name} nor an image number {n} "
                                f"among its {len(numbered)} image files")
    return numbered[n]


def make_pairs(images: Path, folds: int, per_fold: int, seed: int) -> list[list[tuple[list[Pair], list[Pair]]]]:
    """Disjoint people per fold (as in LFW's View 2): matched pairs from people with 2+ photos.

    Raises ValueError, before drawing anything, when a fold cannot supply `per_fold` distinct matched
    or mismatched pairs."""
    if folds < 1 or per_fold < 1:
        raise ValueError(f"--folds and --per-fold must be at least 1 (got {folds} and {per_fold})")
    rng = random.Random(seed)
    numbers = {p.name: sorted(numbered_images(images, p.name)) for p in sorted(images.iterdir()) if p.is_dir()}
    people = {name: len(nums) for name, nums in numbers.items()}
    names = sorted(n for n, c in people.items() if c >= 1)
    rng.shuffle(names)
    groups = [names[i::folds] for i in range(folds)]
    advice = "use fewer folds (--folds) or fewer pairs per fold (--per-fold)"
    for k, group in enumerate(groups, 1):
        counts = [people[n] for n in group]
        n_matched = sum(c * (c - 1) // 2 for c in counts)  # two distinct photos of one person
        # ordered (person1, photo, person2, photo) with different people, as the draw below tells them apart
        n_mismatched = sum(counts) ** 2 - sum(c * c for c in counts)
        where = f"{images}: {len(names)} people with photos split into {folds} folds; fold {k} of {folds}"
        if len(group) < 2:
            raise ValueError(f"{where} has {len(group)} {'person' if len(group) == 1 else 'people'}, "
                             f"2 are needed for mismatched pairs; {advice}")
        if n_matched < per_fold:
            multi = sum(c >= 2 for c in counts)
            raise ValueError(f"{where} can make only {n_matched} distinct matched pairs ({multi} of its {len(group)} "
                             f"people have 2+ photos), {per_fold} requested; {advice}")
        if n_mismatched < per_fold:
            raise ValueError(f"{where} can make only {n_mismatched} distinct mismatched pairs ({len(group)} people, "
                             f"{sum(counts)} photos), {per_fold} requested; {advice}")
    out = []
    for group in groups:
        multi = [n for n in group if people[n] >= 2]
        matched: set[Pair] = set()
        while len(matched) < per_fold:
            name = rng.choice(multi)
            a, b = sorted(rng.sample(numbers[name], 2))  # the same draws as over 1..count when nothing is missing
            matched.add((name, a, name, b))
        mismatched: set[Pair] = set()
        while len(mismatched) < per_fold:
            n1, n2 = rng.sample(group, 2)
            mismatched.add((n1, numbers[n1][rng.randint(1, people[n1]) - 1], n2, numbers[n2][rng.randint(1, people[n2]) - 1]))
        out.append((sorted(matched), sorted(mismatched)))
    return out


def write_pairs(path: Path, folds_pairs, per_fold: int) -> None:
    lines = [f"{len(folds_pairs)}\t{per_fold}"]
    for matched, mismatched in folds_pairs:
        lines += [f"{a}\t{i}\t{j}" for a, i, _, j in matched]
        lines += [f"{a}\t{i}\t{b}\t{j}" for a, i, b, j in mismatched]
    path.write_text("\n".join(lines) + "\n")


def _pair_row(fields: list[str], line: int, matched: bool) -> Pair:
    """One row of a pairs file: `name n1 n2` (matched) or `name1 n1 name2 n2` (mismatched)."""
    want = 3 if matched else 4
    if len(fields) != want:
        raise ValueError(f"line {line}: a {'matched' if matched else 'mismatched'} pair has {want} tab-separated "
                         f"fields, this row has {len(fields)}")
    try:
        if matched:
            return fields[0], int(fields[1]), fields[0], int(fields[2])
        return fields[0], int(fields[1]), fields[2], int(fields[3])
    except ValueError:
        raise ValueError(f"line {line}: image numbers must be integers, got {fields!r}") from None


def read_pairs(path: Path) -> list[tuple[list[Pair], list[Pair]]]:
    """LFW's pairs.txt format: a `folds<TAB>per_fold` header, then per fold per_fold matched rows and
    per_fold mismatched rows. Raises ValueError naming the line when the file is not that shape, so a
    truncated or hand-edited file is refused instead of scoring a short (or empty: nan) fold."""
    rows = [(n, line.split("\t")) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    if not rows:
        raise ValueError("empty file: expected a header line `folds<TAB>pairs per fold`")
    line, header = rows[0]
    try:
        folds, per_fold = (int(x) for x in header) if len(header) == 2 else (None, None)
    except ValueError:
        folds = per_fold = None
    if folds is None or per_fold is None or folds < 1 or per_fold < 1:
        shown = "\t".join(header)
        raise ValueError(f"line {line}: expected the header `folds<TAB>pairs per fold` with two positive integers, "
                         f"got {shown!r}")
    body = rows[1:]
    expected = folds * 2 * per_fold
    if len(body) != expected:
        raise ValueError(f"line {line}: the header announces {folds} folds x 2 x {per_fold} = {expected} pair rows, "
                         f"the file has {len(body)}")
    out = []
    for f in range(folds):
        chunk = body[f * 2 * per_fold : (f + 1) * 2 * per_fold]
        matched = [_pair_row(r, n, True) for n, r in chunk[:per_fold]]
        mismatched = [_pair_row(r, n, False) for n, r in chunk[per_fold:]]
        out.append((matched, mismatched))
    return out


def face_models(face_model: str, kwargs: dict) -> tuple:
    """(MTCNN detector, embedder): loaded apart from embed_images so a throughput clock can start after them."""
    from models.registry import create_model

    return create_model("mtcnn"), create_model(face_model, **kwargs)


def embed_images(paths: list[Path], face_model: str, kwargs: dict,
                 models: tuple | None = None) -> tuple[dict[Path, np.ndarray], int]:
    """One embedding per image: the most central confident face; a centred box when MTCNN finds none.
    `models`: face_models(face_model, kwargs) already loaded, else they are loaded here."""
    from PIL import Image
    from tqdm import tqdm

    from models.face_detector import Detection

    detector, embedder = models or face_models(face_model, kwargs)
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


def embed_images_dlib_native(paths: list[Path]) -> tuple[dict[Path, np.ndarray], int]:
    """dlib's own reference pipeline, the baseline: HOG frontal face detector (upsampled once), its
    5-point shape predictor, `compute_face_descriptor(img, shape)`; the raw descriptors are compared
    by euclidean distance as dlib does. Run over the same pairs, it tells how hard a pairs file is."""
    import dlib
    from PIL import Image
    from tqdm import tqdm

    from models.face_embedders import face_recognition_models_dir

    folder = face_recognition_models_dir()
    detector = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat"))
    vectors, fallbacks = {}, 0
    for p in tqdm(paths, desc="dlib native", unit="image"):
        img = np.asarray(Image.open(p).convert("RGB"))
        h, w = img.shape[:2]
        boxes = detector(img, 1)
        if len(boxes):
            box = min(boxes, key=lambda b: np.hypot(b.center().x - w / 2, b.center().y - h / 2))
        else:
            fallbacks += 1
            s = w / 250
            box = dlib.rectangle(int(75 * s), int(70 * s), int(175 * s), int(195 * s))
        vectors[p] = np.asarray(net.compute_face_descriptor(img, shape(img, box)), dtype=np.float32)
    return vectors, fallbacks


def fold_accuracies(dists: list[np.ndarray], sames: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Standard protocol: each fold scored with the threshold that is best on the other folds."""
    accs, thresholds = [], []
    for k in range(len(dists)):
        train = [i for i in range(len(dists)) if i != k]
        t = best_threshold(np.concatenate([dists[i] for i in train]), np.concatenate([sames[i] for i in train]))
        accs.append(float(((dists[k] < t) == sames[k]).mean()))
        thresholds.append(t)
    return accs, thresholds


def pair_distances(folds, vectors: dict[Path, np.ndarray], images: Path, metric: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    dists, sames = [], []
    for matched, mismatched in folds:
        pairs = matched + mismatched
        a_b = [(vectors[image_path(images, a, i)], vectors[image_path(images, b, j)]) for a, i, b, j in pairs]
        if metric == "cosine":
            dists.append(np.array([1 - float(x @ y) for x, y in a_b]))
        else:
            dists.append(np.array([float(np.linalg.norm(x - y)) for x, y in a_b]))
        sames.append(np.array([True] * len(matched) + [False] * len(mismatched)))
    return dists, sames


def best_threshold(dist: np.ndarray, same: np.ndarray) -> float:
    """The distance below which a pair is called the same person, most accurate on these pairs: cutting
    just below candidates[i] scores acc[i], so the threshold is midway between it and the distance before."""
    candidates = np.unique(dist)
    acc = [((dist < t) == same).mean() for t in candidates]
    i = int(np.argmax(acc))
    return float((candidates[max(i - 1, 0)] + candidates[i]) / 2)


def error_ratio(accuracy: float, baseline_accuracy: float) -> float:
    """Our error rate over the baseline's; a baseline without errors (tiny pair files) leaves the ratio
    undefined (nan), where a division would print inf and a RuntimeWarning."""
    base_error = 1 - baseline_accuracy
    return (1 - accuracy) / base_error if base_error > 0 else float("nan")


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
    parser.add_argument("--jitters", type=int, default=0, help="dlib: extra jittered chips per face (shift, zoom, rotation) averaged in")
    parser.add_argument("--box-scale", type=float, default=0.85, help="dlib: scale of the square box given to the shape predictor")
    parser.add_argument("--reuse-lfw-cache", action="store_true",
                        help="take the embeddings from bench/lfw_faces.py's cache (same pipeline, computed once)")
    parser.add_argument("--baseline", action="store_true",
                        help="also run dlib's own reference pipeline (HOG detector) over the same pairs")
    args = parser.parse_args()

    existing_dir(parser, "--images", args.images)
    at_least(parser, "--jitters", args.jitters, 0)
    if args.make_pairs:
        at_least(parser, "--folds", args.folds, 2, "each fold is scored with the threshold chosen on the other folds")
        try:
            folds = make_pairs(args.images, args.folds, args.per_fold, args.seed)
        except ValueError as e:
            parser.error(str(e))
        write_pairs(args.pairs, folds, args.per_fold)
        print(f"wrote {args.pairs}: {args.folds} folds x ({args.per_fold} matched + {args.per_fold} mismatched) pairs")
        return

    existing_file(parser, "--pairs", args.pairs)
    try:
        folds = read_pairs(args.pairs)
    except ValueError as e:
        parser.error(f"--pairs {args.pairs}: {e}")
    if len(folds) < 2:
        parser.error(f"--pairs {args.pairs}: {len(folds)} fold; at least 2 are needed, each fold is scored with "
                     "the threshold chosen on the other folds")
    try:
        paths = sorted({image_path(args.images, n, i) for m, mm in folds for a, i, b, j in m + mm for n, i in ((a, i), (b, j))})
    except FileNotFoundError as e:
        parser.error(str(e))
    kwargs = {"flip": not args.no_flip, "jitters": args.jitters, "box_scale": args.box_scale} if args.face_model == "dlib-resnet-v1" else {}
    if args.reuse_lfw_cache:  # the same embed_images over every LFW photo, cached by bench/lfw_faces.py
        from bench.lfw_faces import load_lfw_faces

        defaults = {"flip": True, "jitters": 0, "box_scale": 0.85}
        faces = load_lfw_faces(args.images, face_model=args.face_model,
                               **{k: v for k, v in kwargs.items() if defaults.get(k) != v})
        everything = {args.images / p: v for p, v in zip(faces.paths, faces.vectors)}
        vectors = {p: everything[p] for p in paths}
        fallbacks, rate = "n/a", "n/a (cached)"  # no detection ran here, and the time is a cache read
    else:
        models = face_models(args.face_model, kwargs)
        start = time.perf_counter()  # after the models load: throughput of the work, not of the weights' loading
        vectors, n_fallbacks = embed_images(paths, args.face_model, kwargs, models)
        fallbacks, rate = str(n_fallbacks), f"{len(paths) / (time.perf_counter() - start):.2f}"

    dists, sames = pair_distances(folds, vectors, args.images, "cosine")
    accs, thresholds = fold_accuracies(dists, sames)
    for k, (acc, t) in enumerate(zip(accs, thresholds)):
        print(f"fold {k + 1:2d}: accuracy {acc:.4f} (threshold {t:.4f})")
    n_pairs = sum(len(s) for s in sames)
    print(f"model={args.face_model} params={kwargs} pairs={n_pairs} images={len(paths)} "
          f"no_face_fallbacks={fallbacks} images_per_s={rate}")
    print(f"mean {np.mean(accs):.4f} +- {np.std(accs):.4f}, cosine-distance threshold {np.mean(thresholds):.4f}")
    summary = f"accuracy={np.mean(accs):.4f}"
    if args.baseline:
        native, native_fallbacks = embed_images_dlib_native(paths)
        base_accs, base_t = fold_accuracies(*pair_distances(folds, native, args.images, "euclidean"))
        print(f"baseline dlib native (HOG detector, euclidean): mean {np.mean(base_accs):.4f} +- {np.std(base_accs):.4f}, "
              f"threshold {np.mean(base_t):.4f}, no_face_fallbacks={native_fallbacks}")
        summary += (f" baseline_accuracy={np.mean(base_accs):.4f} "
                    f"error_ratio={error_ratio(float(np.mean(accs)), float(np.mean(base_accs))):.3f}")
    print(summary)


if __name__ == "__main__":
    main()
