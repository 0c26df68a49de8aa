"""Celebrity recognition on real LFW face embeddings: closed-set top-1, open-set, tracks, head vs centroid.

Data: the dlib embedding of every LFW photo (bench/lfw_faces.py, cached). People with 10+ photos
are the celebrities. For k = 1, 3, 5 reference photos per person (several random draws,
averaged), the rest of their photos are the queries.

- closed-set top-1: every 10+ person enrolled; CentroidKnnClassifier.predict_top against the
  baseline measured in the same run, plain 1-nearest-reference-photo.
- open-set: a quarter of the 10+ people get no class. Their photos must come out "unknown";
  the enrolled people's held-out photos must get their own class. The threshold is the
  classifier's own, calibrated leave-one-out on the reference photos for target_far. The
  measured false-accept rate is the share of the unenrolled people's photos that got a name;
  it is also measured on the people with 5-9 photos, who are never enrolled.
- tracks: synthetic GIF tracks of 3-5 query photos of one person (enrolled or not), classified
  by the product of per-face probabilities (GIPHY) and by the normalised mean embedding.
- head vs centroid: models.retrain_head on the same reference photos (and on half of each
  person's photos), scored on the held-out photos.

    uv run python bench/recognition.py --images ../shared/data/lfw [--draws 5] [--max-people N]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.checks import at_least, existing_dir  # noqa: E402
from bench.lfw_faces import load_lfw_faces  # noqa: E402
from models.celebrity_classifier import (UNKNOWN, CalibrationWarning, CentroidKnnClassifier,  # noqa: E402
                                         compare_track_methods)

MODEL = "dlib-resnet-v1"
REFERENCE_COUNTS = (1, 3, 5)


def split_references(names: np.ndarray, people: list[str], k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(reference rows, query rows): k random photos of each person, the rest of their photos."""
    refs, queries = [], []
    for person in people:
        idx = rng.permutation(np.flatnonzero(names == person))
        refs += idx[:k].tolist()
        queries += idx[k:].tolist()
    return np.array(refs), np.array(queries)


def nearest_reference_top1(x: np.ndarray, names: np.ndarray, refs: np.ndarray, queries: np.ndarray) -> float:
    """Baseline: the label of the single most similar reference photo."""
    nearest = (x[queries] @ x[refs].T).argmax(axis=1)
    return float(np.mean(names[refs][nearest] == names[queries]))


def make_tracks(names: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> tuple[list[np.ndarray], list[str]]:
    """Disjoint tracks of 3-5 photos of one person each, from the given rows."""
    tracks, labels = [], []
    by_person: dict[str, list[int]] = defaultdict(list)
    for r in rng.permutation(rows).tolist():
        by_person[str(names[r])].append(r)
    for person, members in sorted(by_person.items()):
        start = 0
        while len(members) - start >= 3:
            size = int(rng.integers(3, 6))
            chunk = members[start:start + size]
            if len(chunk) < 3:
                break
            tracks.append(np.array(chunk))
            labels.append(person)
            start += size
    return tracks, labels


def fit_quietly(x: np.ndarray, labels: list[str], **params) -> tuple[CentroidKnnClassifier, bool]:
    """Fit, recording (not printing per draw) whether calibration had too few impostors."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationWarning)
        clf = CentroidKnnClassifier(**params).fit(x, labels, MODEL)
    return clf, any(issubclass(w.category, CalibrationWarning) for w in caught)


MIN_PEOPLE = 4  # the open-set draw leaves a quarter of the people unenrolled: fewer than four leaves nobody


def run_draw(x: np.ndarray, names: np.ndarray, people: list[str], never_enrolled: np.ndarray, k: int, draw: int,
             with_head: bool) -> dict[str, float]:
    rng = np.random.default_rng(1000 * k + draw)
    out: dict[str, float] = {}
    min_faces = 1 if k == 1 else 2  # with one reference a class has no genuine pair; allowed for this measurement

    # closed set: everybody enrolled
    refs, queries = split_references(names, people, k, rng)
    start = time.perf_counter()
    clf, _ = fit_quietly(x[refs], names[refs].tolist(), min_faces_per_class=min_faces)
    out["fit_s"] = time.perf_counter() - start
    start = time.perf_counter()
    top = clf.predict_top(x[queries], MODEL, top=1)
    out["predict_per_s"] = len(queries) / (time.perf_counter() - start)
    out["top1"] = float(np.mean([row[0][0] == truth for row, truth in zip(top, names[queries])]))
    out["baseline_top1"] = nearest_reference_top1(x, names, refs, queries)

    # open set: a quarter of the people have no class
    shuffled = rng.permutation(people).tolist()
    unenrolled = sorted(shuffled[: len(people) // 4])
    enrolled = sorted(shuffled[len(people) // 4:])
    refs, queries = split_references(names, enrolled, k, rng)
    strangers = np.flatnonzero(np.isin(names, unenrolled))
    clf, too_few = fit_quietly(x[refs], names[refs].tolist(), min_faces_per_class=min_faces)
    known_labels, _ = clf.predict(x[queries], MODEL)
    stranger_labels, _ = clf.predict(x[strangers], MODEL)
    never_labels, _ = clf.predict(x[never_enrolled], MODEL)
    known_right = known_labels == names[queries]
    stranger_right = stranger_labels == UNKNOWN
    out.update({
        "open_set_accuracy": float((known_right.sum() + stranger_right.sum()) / (len(queries) + len(strangers))),
        "known_named_right": float(known_right.mean()),
        "known_named_wrong": float(np.mean((known_labels != names[queries]) & (known_labels != UNKNOWN))),
        "strangers_unknown": float(stranger_right.mean()),
        "false_accept_rate": float(1 - stranger_right.mean()),
        "false_accept_rate_never_enrolled": float(np.mean(never_labels != UNKNOWN)),
        "calibrated_far": clf.false_accept_rate_, "calibrated_gar": clf.genuine_accept_rate_,
        "threshold": clf.threshold_, "calibration_warning": float(too_few),
    })

    # tracks of enrolled and unenrolled people, from photos the classifier has not seen
    tracks, labels = make_tracks(names, np.concatenate([queries, strangers]), rng)
    result = compare_track_methods(clf, [x[t] for t in tracks], labels, MODEL)
    for method, scores in result.items():
        for key in ("accuracy", "open_set_accuracy", "mean_confidence"):
            out[f"track_{method}_{key}"] = scores[key]
    out["tracks_known"], out["tracks_unknown"] = result["product"]["known_tracks"], result["product"]["unknown_tracks"]

    if with_head:
        from models.retrain_head import compare_on_holdout

        holdout = np.concatenate([queries, strangers])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            head = compare_on_holdout((x[refs], names[refs].tolist()), (x[holdout], names[holdout].tolist()),
                                      model_id=MODEL)
            half = {p: rng.permutation(np.flatnonzero(names == p)) for p in enrolled}
            half_refs = np.concatenate([idx[: len(idx) // 2] for idx in half.values()])
            half_queries = np.concatenate([idx[len(idx) // 2:] for idx in half.values()])
            half_holdout = np.concatenate([half_queries, strangers])
            head_half = compare_on_holdout((x[half_refs], names[half_refs].tolist()),
                                           (x[half_holdout], names[half_holdout].tolist()), model_id=MODEL)
        for prefix, res in (("head", head), ("head_half", head_half)):
            for key in ("centroid_accuracy", "head_accuracy", "centroid_open_set_accuracy", "head_open_set_accuracy"):
                out[f"{prefix}_{key}"] = res[key]
    return out


def mean_std(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    if np.isnan(a).all():
        return "n/a"
    return f"{np.nanmean(a):.4f} +- {np.nanstd(a):.4f}"


def quick_run_people(images: Path, max_people: int | None) -> set[str] | None:
    """With --max-people N, the first N people with 10+ photos (enrolled or held out) and the first N with
    5-9 (never enrolled): a quick run embeds only those photos, not all of LFW; None: everyone."""
    if max_people is None:
        return None
    counts = {p.name: len(list(p.glob("*.jpg"))) for p in sorted(images.iterdir()) if p.is_dir()}
    enrolled = sorted(n for n, c in counts.items() if c >= 10)[:max_people]
    never_enrolled = sorted(n for n, c in counts.items() if 5 <= c < 10)[:max_people]
    return set(enrolled) | set(never_enrolled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "lfw")
    parser.add_argument("--draws", type=int, default=5, help="random reference draws per k, averaged")
    parser.add_argument("--max-people", type=int, default=None, help="only the first N people with 10+ photos")
    parser.add_argument("--no-head", action="store_true", help="skip the retrained-head comparison")
    args = parser.parse_args()
    existing_dir(parser, "--images", args.images)
    at_least(parser, "--draws", args.draws, 1)
    if args.max_people is not None and args.max_people < MIN_PEOPLE:
        parser.error(f"--max-people needs at least {MIN_PEOPLE}: a quarter of the people are left unenrolled "
                     "for the open-set measurement")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    faces = load_lfw_faces(args.images, only=quick_run_people(args.images, args.max_people))
    names, x = faces.names.astype(str), faces.vectors
    person, counts = np.unique(names, return_counts=True)
    people = sorted(person[counts >= 10].tolist())[: args.max_people]
    never_enrolled = np.flatnonzero(np.isin(names, person[counts < 10]))
    if len(people) < MIN_PEOPLE:
        parser.error(f"{args.images} has {len(people)} people with 10+ photos; the benchmark needs at least "
                     f"{MIN_PEOPLE} (a quarter are left unenrolled for the open-set measurement)")
    print(f"LFW dlib embeddings: {len(names)} photos of {len(person)} people; {len(people)} people with 10+ photos "
          f"({int(np.isin(names, people).sum())} photos); {len(never_enrolled)} photos of "
          f"{int((counts < 10).sum())} people with 5-9 photos, never enrolled")
    print(f"classifier defaults: {CentroidKnnClassifier().get_params()}; {args.draws} draws per k")

    results: dict[int, list[dict[str, float]]] = {}
    for k in REFERENCE_COUNTS:
        results[k] = [run_draw(x, names, people, never_enrolled, k, d, with_head=not args.no_head and k == 5)
                      for d in range(args.draws)]
        r = results[k]
        col = lambda key: [d[key] for d in r]  # noqa: E731
        print(f"\nk={k} reference photos per person")
        print(f"  closed-set top-1 ({len(people)} classes): {mean_std(col('top1'))}   "
              f"baseline 1-nearest photo: {mean_std(col('baseline_top1'))}   "
              f"ratio {np.mean(col('top1')) / np.mean(col('baseline_top1')):.4f}")
        print(f"  fit {np.mean(col('fit_s')) * 1e3:.1f} ms; predict {np.mean(col('predict_per_s')):.0f} faces/s")
        print(f"  open-set ({len(people) - len(people) // 4} enrolled, {len(people) // 4} unenrolled): accuracy "
              f"{mean_std(col('open_set_accuracy'))}")
        print(f"    enrolled photos named right {mean_std(col('known_named_right'))}, named wrong "
              f"{mean_std(col('known_named_wrong'))} (the rest: refused as unknown)")
        print(f"    unenrolled photos answered unknown {mean_std(col('strangers_unknown'))}")
        print(f"    threshold {mean_std(col('threshold'))} (cosine distance to the best class's centroid)")
        print(f"    false-accept rate: calibrated on references {mean_std(col('calibrated_far'))} "
              f"(genuine accept {mean_std(col('calibrated_gar'))}); measured on unenrolled people "
              f"{mean_std(col('false_accept_rate'))}; on never-enrolled 5-9 photo people "
              f"{mean_std(col('false_accept_rate_never_enrolled'))}")
        if any(col("calibration_warning")):
            print(f"    calibration warned (too few impostors) in {int(sum(col('calibration_warning')))} draws")
        print(f"  tracks of 3-5 photos ({int(np.mean(col('tracks_known')))} enrolled, "
              f"{int(np.mean(col('tracks_unknown')))} unenrolled per draw):")
        for method in ("product", "mean"):
            print(f"    {method:7s}: top-1 {mean_std(col(f'track_{method}_accuracy'))}, open-set "
                  f"{mean_std(col(f'track_{method}_open_set_accuracy'))}, mean confidence "
                  f"{mean_std(col(f'track_{method}_mean_confidence'))}")
        if "head_head_accuracy" in r[0]:
            for prefix, what in (("head", f"{k} reference photos"), ("head_half", "half of each person's photos")):
                print(f"  retrained head vs centroid classifier, trained on {what}:")
                print(f"    closed-set top-1: centroid {mean_std(col(f'{prefix}_centroid_accuracy'))}, head "
                      f"{mean_std(col(f'{prefix}_head_accuracy'))}")
                print(f"    open-set accuracy: centroid {mean_std(col(f'{prefix}_centroid_open_set_accuracy'))}, head "
                      f"{mean_std(col(f'{prefix}_head_open_set_accuracy'))}")

    top1 = {k: np.mean([d["top1"] for d in results[k]]) for k in REFERENCE_COUNTS}
    open_acc = np.mean([d["open_set_accuracy"] for d in results[5]])
    far = np.mean([d["false_accept_rate"] for d in results[5]])
    print()
    print(f"top1_k1={top1[1]:.4f} top1_k3={top1[3]:.4f} top1_k5={top1[5]:.4f} "
          f"open_set_accuracy={open_acc:.4f} false_accept_rate={far:.4f}")


if __name__ == "__main__":
    main()
