"""Curation store speed: single approve latency and bulk relabel throughput, SQLite and PostgreSQL.

Each store gets 10,000 faces. An editor approves --singles faces one at a time (one operation =
one transaction + one audit event each): median / p95 latency. The per-item baseline for the
bulk path is the same operation one at a time: --singles relabels of one face each; the bulk
path relabels all 10,000 in one operation. Prints labels/s and the bulk/per-item ratio against
single relabels (target >= 20x), and, labelled apart, the ratio against single approves.

    uv run python bench/store.py [--faces 10000] [--singles 300] [--no-postgres]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, insert, select, text  # noqa: E402

from bench.checks import at_least  # noqa: E402
from labeling.classes import add_class  # noqa: E402
from labeling.db import open_store, session_scope  # noqa: E402
from labeling.face_labels import Prediction, approve_faces, record_predictions, relabel_faces  # noqa: E402
from labeling.schema import Face, Media  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def postgres_database(admin_url: str = PG_ADMIN, prefix: str = "giflens_bench") -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards (connections forced out): a benchmark,
    or a test (tests/conftest.py), never touches a real store."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        from labeling.db import _engine_for

        _engine_for.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def on_both_backends(run_one: Callable[[str, str], dict[str, float]], no_postgres: bool) -> dict[str, dict[str, float]]:
    """backend -> run_one(url, backend)'s figures, on a temporary SQLite file and, unless no_postgres, a
    temporary PostgreSQL database."""
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out["sqlite"] = run_one(f"sqlite:///{Path(tmp) / 'bench.db'}", "sqlite")
    if not no_postgres:
        with postgres_database() as url:
            out["postgres"] = run_one(url, "postgres")
    return out


def seed(store, n_faces: int) -> list[int]:
    with session_scope(store) as s:
        per_media = 20
        media = [{"sha256": uuid.uuid4().hex * 2, "path": f"/bench/{i}.gif", "kind": "gif", "status": "ok"}
                 for i in range(n_faces // per_media)]
        s.execute(insert(Media), media)
        media_ids = list(s.scalars(select(Media.id).order_by(Media.id)))
        s.execute(insert(Face), [{"media_id": m, "face_index": i, "frame_index": i, "x1": 0, "y1": 0, "x2": 9, "y2": 9,
                                  "probability": 0.99, "landmarks": [[0, 0]] * 5}
                                 for m in media_ids for i in range(per_media)])
        return list(s.scalars(select(Face.id).order_by(Face.id)))


FACES_PER_MEDIA = 20  # seed's media hold 20 faces each: fewer --faces seed none


def one_at_a_time(faces: list[int], operation: Callable[[int], object]) -> list[float]:
    """Seconds of each single-face operation (its own transaction and audit event)."""
    latencies = []
    for face in faces:
        start = time.perf_counter()
        operation(face)
        latencies.append(time.perf_counter() - start)
    return latencies


def median_p95(latencies: list[float]) -> tuple[float, float]:
    return statistics.median(latencies), sorted(latencies)[int(0.95 * (len(latencies) - 1))]


def run(url: str, label: str, n_faces: int, singles: int) -> dict[str, float]:
    """Single approves (latency), single relabels (the bulk path's per-item baseline: the same operation
    one face at a time), then one bulk relabel of every face. The single relabels move faces to a third
    class, so the bulk relabel still changes every face."""
    store = open_store(url)
    faces = seed(store, n_faces)
    a, _ = add_class(store, "Bench A", "bench")
    b, _ = add_class(store, "Bench B", "bench")
    c, _ = add_class(store, "Bench C", "bench")
    record_predictions(store, [Prediction(f, a, 0.8, [(a, 0.8)]) for f in faces], "bench-v1")
    median, p95 = median_p95(one_at_a_time(faces[:singles], lambda f: approve_faces(store, [f], "editor")))
    relabel_median, relabel_p95 = median_p95(one_at_a_time(faces[:singles], lambda f: relabel_faces(store, [f], c, "editor")))
    start = time.perf_counter()
    result = relabel_faces(store, faces, b, "editor")
    bulk_s = time.perf_counter() - start
    assert result.changed == len(faces)
    approve_rate, relabel_rate, bulk_rate = 1 / median, 1 / relabel_median, len(faces) / bulk_s
    print(f"{label:10s} single approve: median {median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms ({approve_rate:.0f} labels/s); "
          f"single relabel: median {relabel_median * 1000:.1f} ms, p95 {relabel_p95 * 1000:.1f} ms ({relabel_rate:.0f} labels/s)")
    print(f"{label:10s} bulk relabel of {len(faces)}: {bulk_s:.2f} s = {bulk_rate:.0f} labels/s; "
          f"bulk vs single relabel {bulk_rate / relabel_rate:.1f}x (the per-item baseline); "
          f"bulk relabel vs single approve {bulk_rate / approve_rate:.1f}x")
    return {"median_ms": median * 1000, "p95_ms": p95 * 1000, "bulk_per_s": bulk_rate, "ratio": bulk_rate / relabel_rate,
            "relabel_median_ms": relabel_median * 1000, "relabel_p95_ms": relabel_p95 * 1000,
            "ratio_vs_approve": bulk_rate / approve_rate}


def check_counts(parser: argparse.ArgumentParser, faces: int, singles: int) -> None:
    """--faces and --singles that seed and time something, refused before any store is made."""
    at_least(parser, "--faces", faces, FACES_PER_MEDIA, f"faces are seeded in media of {FACES_PER_MEDIA}")
    at_least(parser, "--singles", singles, 1)
    seeded = faces // FACES_PER_MEDIA * FACES_PER_MEDIA
    if singles > seeded:
        parser.error(f"--singles {singles} is more than the {seeded} faces --faces {faces} seeds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=10_000)
    parser.add_argument("--singles", type=int, default=300)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    check_counts(parser, args.faces, args.singles)
    out = on_both_backends(lambda url, label: run(url, label, args.faces, args.singles), args.no_postgres)
    print(" ".join(f"{db}_{k}={v:.1f}" for db, figures in out.items() for k, v in figures.items()))


if __name__ == "__main__":
    main()
