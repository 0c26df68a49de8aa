"""Ingest throughput: cold and warm runs of the real pipeline against a naive baseline.

Each phase runs in its own process so its peak memory (ru_maxrss) is its own. Model
loading is done before the clock starts in every phase, so ratios compare the work.
Figures only; nothing here passes or fails on time.

    uv run python bench/ingest.py [--gifs DIR] [--lfw DIR] [--photos 500]
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"


def lfw_sample(lfw: Path, n: int, seed: int = 0) -> list[Path]:
    photos = sorted(lfw.glob("*/*.jpg"))
    return sorted(random.Random(seed).sample(photos, min(n, len(photos))))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_pipeline(data_dir: Path, gifs: list[Path], photos: list[Path]) -> dict:
    from embeddings.pipeline import IngestPipeline
    from labeling.db import open_store
    from labeling.ingest import ingest
    from models.registry import INFERENCE_CALLS
    from models.settings import Settings

    settings = Settings(data_dir=data_dir)
    pipeline = IngestPipeline(settings)
    store = open_store(settings.resolved_database_url)
    out = {}
    for name, files in (("gifs", gifs), ("photos", photos)):
        for role in ("detector", "face", "gif"):  # load weights before the clock starts
            pipeline._model(role)
        calls_before = sum(INFERENCE_CALLS.values())
        start = time.perf_counter()
        summary = ingest(files, settings, pipeline=pipeline, store=store)
        seconds = time.perf_counter() - start
        out[name] = {
            "media": len(files), "seconds": seconds, "faces": summary.faces, "failed": summary.failed,
            "cached": summary.cached, "inference_calls": sum(INFERENCE_CALLS.values()) - calls_before,
        }
    from sqlalchemy import func, select

    import numpy as np

    from labeling.schema import Media, Track

    with store() as session:
        animated = Media.kind != "image"
        media_with_faces = session.scalar(select(func.count(func.distinct(Track.media_id))).join(Media).where(animated))
        tracks = session.scalar(select(func.count(Track.id)).join(Media).where(animated))
        vectors: dict[str, list] = {}
        for path, vector in session.execute(select(Media.path, Track.vector).join(Track).where(animated)):
            vectors.setdefault(Path(path).name, []).append(np.frombuffer(vector, np.float32).tolist())
    out["gif_tracks"], out["media_with_faces"] = tracks, media_with_faces
    out["tracks_per_gif"] = {name: len(v) for name, v in vectors.items()}
    out["track_vectors"] = vectors
    out["peak_mb"] = peak_mb()
    return out


def phase_baseline(gifs: list[Path]) -> dict:
    """Decode every frame, detect and embed frame by frame: no batching, no de-duplication, no cache."""
    import numpy as np
    from PIL import Image, ImageSequence

    from embeddings.pipeline import TRACK_MAX_DISTANCE
    from embeddings.tracks import group_tracks
    from models.registry import create_model

    detector, embedder, gif_model = create_model("mtcnn"), create_model("dlib-resnet-v1"), create_model("efficientnet-lite0")
    faces = tracks = with_faces = 0
    per_gif: dict[str, int] = {}
    track_vectors: dict[str, list] = {}
    start = time.perf_counter()
    for path in gifs:
        frame_of_face, vectors = [], []
        with Image.open(path) as im:
            for index, frame in enumerate(ImageSequence.Iterator(im)):
                rgb = np.asarray(frame.convert("RGB"))
                gif_model.features_and_probs([rgb])
                for det in detector.detect([rgb])[0]:
                    vectors.append(embedder.embed([embedder.align(rgb, det)])[0])
                    frame_of_face.append(index)
        faces += len(vectors)
        if vectors:
            with_faces += 1
            found = group_tracks(frame_of_face, np.stack(vectors), TRACK_MAX_DISTANCE["dlib-resnet-v1"])
            per_gif[path.name], track_vectors[path.name] = len(found), [t.vector.tolist() for t in found]
            tracks += per_gif[path.name]
    seconds = time.perf_counter() - start
    return {"gifs": {"media": len(gifs), "seconds": seconds, "faces": faces}, "gif_tracks": tracks,
            "media_with_faces": with_faces, "tracks_per_gif": per_gif, "track_vectors": track_vectors,
            "peak_mb": peak_mb()}


def unmatched_tracks(tracks: dict[str, list], others: dict[str, list]) -> list[tuple[str, int, float]]:
    """(GIF, track, distance to the nearest track of `others`) for the tracks of `tracks` with no
    track of `others` in the same GIF within the distance that groups faces into one person."""
    import numpy as np

    from embeddings.pipeline import TRACK_MAX_DISTANCE

    limit, out = TRACK_MAX_DISTANCE["dlib-resnet-v1"], []
    for name, vectors in sorted(tracks.items()):
        theirs = np.asarray(others.get(name, []), np.float32).reshape(-1, len(vectors[0]))
        for k, v in enumerate(np.asarray(vectors, np.float32)):
            nearest = float((1 - theirs @ v).min()) if len(theirs) else float("inf")
            if nearest > limit:
                out.append((name, k, nearest))
    return out


def run_phase(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"phase {args[:2]} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gifs", type=Path, default=SHARED / "gifs")
    parser.add_argument("--lfw", type=Path, default=SHARED / "lfw")
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--phase", choices=["cold", "warm", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from bench.checks import at_least, existing_dir

    existing_dir(parser, "--gifs", args.gifs)
    existing_dir(parser, "--lfw", args.lfw)
    at_least(parser, "--photos", args.photos, 0)
    available = len(list(args.lfw.glob("*/*.jpg")))
    if args.photos > available:
        parser.error(f"--photos {args.photos} is more than the {available} photos (<Person>/*.jpg) in --lfw {args.lfw}")
    gifs = sorted(args.gifs.glob("*.gif"))
    photos = lfw_sample(args.lfw, args.photos)

    if args.phase in ("cold", "warm"):
        print(json.dumps(phase_pipeline(args.data_dir, gifs, photos)))
        return
    if args.phase == "baseline":
        print(json.dumps(phase_baseline(gifs)))
        return

    common = ["--gifs", str(args.gifs), "--lfw", str(args.lfw), "--photos", str(args.photos)]
    with tempfile.TemporaryDirectory(prefix="giflens-bench-") as tmp:
        cold = run_phase(["--phase", "cold", "--data-dir", tmp, *common])
        warm = run_phase(["--phase", "warm", "--data-dir", tmp, *common])
    base = run_phase(["--phase", "baseline", *common])

    def rate(d: dict, key: str, what: str = "media") -> float:
        return d[key][what] / d[key]["seconds"]

    print(f"{'phase':<10}{'set':<8}{'media':>7}{'seconds':>10}{'media/s':>10}{'faces':>8}{'faces/s':>9}{'infer':>7}{'peak MB':>9}")
    for name, d in (("cold", cold), ("warm", warm), ("baseline", base)):
        for key in ("gifs", "photos"):
            if key in d:
                r = d[key]
                print(f"{name:<10}{key:<8}{r['media']:>7}{r['seconds']:>10.2f}{rate(d, key):>10.2f}"
                      f"{r['faces']:>8}{r['faces'] / r['seconds']:>9.1f}{r.get('inference_calls', '-'):>7}{d['peak_mb']:>9.0f}")
    cold_total = (cold["gifs"]["media"] + cold["photos"]["media"]) / (cold["gifs"]["seconds"] + cold["photos"]["seconds"])
    warm_total = (warm["gifs"]["media"] + warm["photos"]["media"]) / (warm["gifs"]["seconds"] + warm["photos"]["seconds"])
    print(f"GIF person tracks: pipeline {cold['gif_tracks']} vs baseline {base['gif_tracks']}; "
          f"GIFs with faces: pipeline {cold['media_with_faces']} vs baseline {base['media_with_faces']}")
    # The baseline looks at every frame, so it sees more face instances, and over many frames it
    # may split one person into two tracks (a head turn). What must not be lost is people: a
    # baseline track with no pipeline track of the same person (within the track-grouping
    # distance) in the same GIF is a person the pipeline did not find.
    from embeddings.pipeline import TRACK_MAX_DISTANCE

    missed = unmatched_tracks(base["track_vectors"], cold["track_vectors"])
    extra = unmatched_tracks(cold["track_vectors"], base["track_vectors"])
    print(f"baseline people the pipeline did not find: {len(missed)}; pipeline people the baseline did not find: {len(extra)}")
    for name, k, nearest in missed:
        print(f"  {name}: baseline track {k}, cosine distance {nearest:.3f} to the nearest pipeline track "
              f"(pipeline {cold['tracks_per_gif'].get(name, 0)} tracks, baseline {base['tracks_per_gif'].get(name, 0)}; "
              f"one person's faces are grouped within {TRACK_MAX_DISTANCE['dlib-resnet-v1']})")
    print(
        f"cold_vs_baseline={rate(cold, 'gifs') / rate(base, 'gifs'):.2f} "
        f"warm_vs_cold={warm_total / cold_total:.0f} cold_media_per_s={cold_total:.2f} warm_media_per_s={warm_total:.1f} "
        f"cold_faces_per_s={(cold['gifs']['faces'] + cold['photos']['faces']) / (cold['gifs']['seconds'] + cold['photos']['seconds']):.1f} "
        f"gif_tracks={cold['gif_tracks']} baseline_gif_tracks={base['gif_tracks']} people_missed={len(missed)} "
        f"warm_inference_calls={warm['gifs']['inference_calls'] + warm['photos']['inference_calls']} "
        f"peak_mb_cold={cold['peak_mb']:.0f} peak_mb_baseline={base['peak_mb']:.0f}"
    )


if __name__ == "__main__":
    main()
