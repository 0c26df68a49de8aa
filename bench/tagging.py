"""Tag suggestions by experts voting (models/tagger.py), measured leave-one-out on the shared GIFs.

Data: the shared GIFs, ingested with the real pipeline (cached under --data-dir, so a re-run
does no inference), and their uploader tags from gifs.csv. Three experts:

- visual: the pipeline's GIF embedding (EfficientNet-Lite0 frame features, mean-pooled);
- identity: the GIF's face tracks (dlib track vectors); no celebrity classifier covers these
  people, so kNN over track embeddings is the identity expert (two GIFs are as close as
  their closest pair of tracks); GIFs without faces are not covered by it;
- text: MiniLM over the GIF's ImageNet weak labels from ingest ("comic book, cash machine,
  ..."). Why not titles or tags: the held-out tags are the answer, and these GIFs' titles
  are their file names, from which the tags were made; the weak labels are the only text a
  GIF has once its tags are hidden (a text expert over the *visible* tags helps a GIF that
  already has some; here every tag of the GIF is hidden).

For each GIF with tags, its tags are hidden and the tagger is fitted on the other GIFs only
(weights included), then the GIF is predicted from its own vectors. Precision@5 counts the
held-out tags among the top 5 suggestions (out of 5); recall is the share of the held-out
tags found in the top 5. Per expert: its own ranking (neighbour frequency, nearest carrier
first). Baseline, same folds: the 5 most frequent tags of the other GIFs. Ceiling: a perfect
tagger limited to tags some other GIF carries, the most any neighbour vote can reach here.

What this measures, honestly: 63 GIFs whose tags come from their file names. Only a few
tags are on two GIFs (calvin/hobbes/knock/smock, nods, waiting, lie, are); no tag is on
three. Leave-one-out, a held-out tag can therefore be carried by at most one neighbour, so
its frequency is at most 1/k, any lower bound above 1/k hides everything, and most GIFs
have nothing learnable at all. The figures show that the machinery works end to end on
real embeddings and which expert finds the few learnable pairs; they say little about tag
quality on a real library, where tags repeat across thousands of GIFs.

    uv run python bench/tagging.py [--gifs DIR] [--tags CSV] [--data-dir DIR] [--k 10] [--min-frequency 0.1]
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Mapping

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"  # ../shared beside the checkout, wherever it is
sys.path.insert(0, str(ROOT))

from embeddings.pipeline import IngestPipeline, MediaResult, discover_media  # noqa: E402
from models.settings import Settings  # noqa: E402
from bench.checks import existing_dir, existing_file  # noqa: E402
from labeling.auto_tagging import shared_tags_notes  # noqa: E402
from models.tagger import (IDENTITY, ExpertsVotingTagger,  # noqa: E402
                           TaggerError, shared_tags, tag_lists)

TOP = 5
Modalities = dict[str, tuple[list[str], np.ndarray]]


def read_tags(path: Path) -> dict[str, list[str]]:
    """`file,uploader_tags` with `;`-separated tags; an empty cell is a GIF without tags. Tags are
    spelled as the store spells them; one the store would refuse (say over 100 characters) is left
    out with a SkippedTagWarning naming the file and the tag, and the run goes on."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"file", "uploader_tags"} <= set(reader.fieldnames):
            raise SystemExit(f"{path}: expected the header file,uploader_tags, got {reader.fieldnames}")
        raw = {row["file"]: (row["uploader_tags"] or "").split(";") for row in reader}
    return tag_lists(raw, f"{path.name} uploader_tags")


def ingest(gifs: Path, data_dir: Path) -> list[MediaResult]:
    pipeline = IngestPipeline(Settings(data_dir=data_dir))
    return list(pipeline.run(discover_media([gifs])))


def weak_label_text(result: MediaResult) -> str:
    return ", ".join(label for label, _ in result.top_labels)


def build_modalities(results: list[MediaResult]) -> Modalities:
    from models.registry import create_model

    ids = [r.path.name for r in results]
    track_ids = [r.path.name for r in results for _ in r.tracks]
    tracks = [t.vector for r in results for t in r.tracks]
    text = create_model("minilm-l6-v2").embed([weak_label_text(r) for r in results])
    modalities: Modalities = {"visual": (ids, np.stack([r.gif_embedding for r in results])), "text": (ids, text)}
    if tracks:
        modalities[IDENTITY] = (track_ids, np.stack(tracks))
    return modalities


def split(modalities: Modalities, held: str) -> tuple[Modalities, Modalities]:
    """(everything but the held-out GIF, the held-out GIF's own rows) per modality."""
    train, query = {}, {}
    for name, (ids, x) in modalities.items():
        mask = np.array([i == held for i in ids])
        if (~mask).any():
            train[name] = ([i for i in ids if i != held], x[~mask])
        if mask.any():
            query[name] = ([held] * int(mask.sum()), x[mask])
    return train, query


def precision_recall(ranked: list[str], truth: set[str]) -> tuple[float, float]:
    hits = len(set(ranked[:TOP]) & truth)
    return hits / TOP, hits / len(truth)


def popularity(counts: Mapping[str, int]) -> list[str]:
    """Baseline ranking: most frequent first, ties alphabetical."""
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _shared(tags: dict[str, list[str]]) -> frozenset[str]:
    """The tags the tagger's weights leave out on these tagged GIFs (none below SHARED_MIN_MEDIA of them)."""
    return shared_tags({g: t for g, t in tags.items() if t})


def evaluate(modalities: Modalities, tags: dict[str, list[str]], k: int, min_frequency: float,
             max_distance: dict[str, float] | None = None) -> dict[str, object]:
    """Leave-one-out over every tagged GIF: precision@5 and recall per expert, combined and baseline."""
    names = list(modalities)
    scores: dict[str, list[tuple[float, float]]] = {n: [] for n in [*names, "combined", "baseline", "ceiling"]}
    fold_weights: dict[str, list[float]] = {n: [] for n in names}
    covered: Counter[str] = Counter()
    hits: list[str] = []
    evaluated = []
    for held in [g for g, t in tags.items() if t]:
        train_tags = {g: t for g, t in tags.items() if g != held}
        # a tag (nearly) every GIF carries is no finding (the weights leave it out too, models.tagger.shared_tags):
        # scored, "reaction" on every GIF hit every fold; it is left out of the truth and of every ranking
        shared = _shared(train_tags)
        truth = set(tags[held]) - shared
        if not truth:
            continue
        evaluated.append(held)
        train, query = split(modalities, held)
        limits = {n: d for n, d in (max_distance or {}).items() if n in train} or None
        tagger = ExpertsVotingTagger(k=k, min_frequency=min_frequency, max_distance=limits).fit(train, train_tags)
        for n in names:
            fold_weights[n].append(tagger.weights_.get(n, 0.0))
        votes = tagger.predict_votes(modalities=query)
        for n in names:
            proposals = votes.get(n, {}).get(held)
            covered[n] += proposals is not None
            scores[n].append(precision_recall([t for t in proposals or {} if t not in shared], truth))  # own order
        combined = [t for t, _ in tagger.predict(modalities=query, top=None)[held] if t not in shared][:TOP]
        scores["combined"].append(precision_recall(combined, truth))
        if truth & set(combined):
            hits.append(f"{held} ({', '.join(sorted(truth & set(combined)))})")
        popular = Counter(t for g, ts in train_tags.items() for t in ts if t not in shared)
        scores["baseline"].append(precision_recall(popularity(popular), truth))
        scores["ceiling"].append(precision_recall(sorted(truth & set(popular)), truth))  # tags some other GIF carries
    return {
        "evaluated": len(evaluated),
        "precision_at_5": {n: float(np.mean([p for p, _ in s])) for n, s in scores.items()},
        "recall": {n: float(np.mean([r for _, r in s])) for n, s in scores.items()},
        "gifs_hit": {n: int(sum(p > 0 for p, _ in s)) for n, s in scores.items()},
        "covered": dict(covered),
        "combined_hits": hits,
        "fold_weights": {n: float(np.mean(w)) for n, w in fold_weights.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gifs", type=Path, default=SHARED / "gifs")
    parser.add_argument("--tags", type=Path, default=SHARED / "gifs.csv")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/giflens-bench-gifs"))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--min-frequency", type=float, default=0.1,
                        help="1/k here: no tag is on more than two GIFs, so a higher bound hides every held-out tag")
    args = parser.parse_args()
    existing_dir(parser, "--gifs", args.gifs)
    existing_file(parser, "--tags", args.tags)
    try:  # the tagger's own parameter check, before minutes of ingest rather than after
        ExpertsVotingTagger(k=args.k, min_frequency=args.min_frequency)._check_params()
    except TaggerError as e:
        parser.error(f"--k / --min-frequency: {e}")

    tags_by_file = read_tags(args.tags)
    start = time.perf_counter()
    results = ingest(args.gifs, args.data_dir)
    ingest_s = time.perf_counter() - start
    ok = [r for r in results if r.status == "ok" and r.gif_embedding is not None]
    failed = [r for r in results if r not in ok]
    untagged_files = [r.path.name for r in ok if r.path.name not in tags_by_file]
    ok = [r for r in ok if r.path.name in tags_by_file]
    tags = {r.path.name: tags_by_file[r.path.name] for r in ok}
    print(f"ingest: {len(results)} files, {sum(r.from_cache for r in results)} from cache, {len(failed)} failed, "
          f"{ingest_s:.1f} s (data dir {args.data_dir})")
    for r in failed:
        print(f"  failed: {r.path.name}: {r.error or 'no GIF embedding'}")
    if untagged_files:
        print(f"  not in {args.tags.name}, skipped: {', '.join(untagged_files)}")
    tagged = sum(map(bool, tags.values()))
    if tagged < 2:  # leave-one-out fits on the other tagged GIFs: with fewer than 2 there is nothing to fit
        raise SystemExit(f"{tagged} ingested GIF(s) of {args.gifs} carry tags in {args.tags}: leave-one-out needs "
                         "at least 2 tagged GIFs (the CSV's file column names GIF file names)")
    counts = Counter(t for ts in tags.values() for t in ts)
    shared = sorted(t for t, c in counts.items() if c > 1)
    print(f"tags: {len(tags)} GIFs, {tagged} with tags, {len(counts)} distinct tags, "
          f"{len(shared)} on more than one GIF ({', '.join(shared)}); most GIFs on one tag: {max(counts.values())}")

    start = time.perf_counter()
    modalities = build_modalities(ok)
    n_tracks = len(modalities[IDENTITY][0]) if IDENTITY in modalities else 0
    print(f"experts: visual {modalities['visual'][1].shape[1]}-d, text (MiniLM over ImageNet weak labels) "
          f"{modalities['text'][1].shape[1]}-d, identity {n_tracks} face tracks in "
          f"{len(set(modalities[IDENTITY][0])) if n_tracks else 0} GIFs")

    full = ExpertsVotingTagger(k=args.k, min_frequency=args.min_frequency).fit(modalities, tags)
    print(f"\nmodality weights, fitted on all GIFs (leave-one-out inside fit; k={args.k}, "
          f"min_frequency={args.min_frequency}):")
    for n in full.modalities_:
        print(f"  {n:9s} {full.weights_[n]:.4f}  ({full.hits_[n]} of {full.coverage_[n]} tagged GIFs it covers "
              f"get at least one correct tag)")
    for note in shared_tags_notes(full):  # the notes `giflens autotag` prints
        print(f"  note: {note}")

    report = evaluate(modalities, tags, args.k, args.min_frequency)
    eval_s = time.perf_counter() - start
    names = [*modalities, "combined", "baseline", "ceiling"]
    print(f"\nleave-one-out, {report['evaluated']} tagged GIFs, tags hidden, tagger refitted without the GIF:")
    print(f"  {'expert':9s} {'P@5':>7s} {'recall':>7s} {'GIFs hit':>9s} {'covered':>8s} {'mean fold weight':>17s}")
    for n in names:
        cov = report["covered"].get(n, report["evaluated"])
        w = report["fold_weights"].get(n)
        print(f"  {n:9s} {report['precision_at_5'][n]:7.4f} {report['recall'][n]:7.4f} {report['gifs_hit'][n]:9d} "
              f"{cov:8d} {'' if w is None else f'{w:17.4f}'}")
    print("  (baseline: the 5 most frequent tags of the other GIFs; ceiling: a perfect tagger that can only\n"
          "   suggest tags some other GIF carries, i.e. the most any neighbour vote can reach here)")
    print(f"  GIFs with a held-out tag in the combined top 5: {'; '.join(report['combined_hits']) or 'none'}")

    variants = {"tagger default bound min_frequency=0.2": dict(min_frequency=0.2),
                "identity only within the same-person distance 0.075": dict(max_distance={IDENTITY: 0.075})}
    print("\nvariants (combined):")
    for label, change in variants.items():
        kw = {"k": args.k, "min_frequency": args.min_frequency, **change}
        v = evaluate(modalities, tags, **kw)
        print(f"  {label}: P@5 {v['precision_at_5']['combined']:.4f}, recall {v['recall']['combined']:.4f}, "
              f"GIFs hit {v['gifs_hit']['combined']}")
    print(f"\nevaluation {eval_s:.1f} s")

    p, r = report["precision_at_5"], report["recall"]
    keys = [f"gifs={len(tags)}", f"evaluated={report['evaluated']}",
            f"precision_at_5={p['combined']:.4f}", f"recall={r['combined']:.4f}"]
    for n in [*modalities, "baseline", "ceiling"]:
        keys += [f"{n}_precision_at_5={p[n]:.4f}", f"{n}_recall={r[n]:.4f}"]
    keys += [f"weight_{n}={full.weights_[n]:.4f}" for n in full.modalities_]
    print(" ".join(keys))


if __name__ == "__main__":
    main()
