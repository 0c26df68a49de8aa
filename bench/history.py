"""History speed: the audit log of one face and of a GIF track (10 faces) in a store whose bulk operations
each wrote every face, on SQLite and PostgreSQL.

A store of --faces faces (default 20,000) gets --runs model prediction runs over all of them (default 5),
each one audit event holding every face's before and after. History is what an editor opens on a click
in Explore, so it must not grow with the size of those events. The baseline, measured in the same run,
reads whole events and picks the wanted faces out in Python (what giflens did before); the figures are
time and peak traced memory per call, and the ratio baseline / giflens. Both must return the same entries.

    uv run python bench/history.py [--faces 20000] [--runs 5] [--no-postgres]
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from bench.checks import at_least  # noqa: E402
from bench.store import on_both_backends, seed  # noqa: E402
from labeling.audit import HistoryEntry, history  # noqa: E402
from labeling.classes import add_class  # noqa: E402
from labeling.db import open_store  # noqa: E402
from labeling.face_labels import Prediction, record_predictions, relabel_faces  # noqa: E402
from labeling.queries import HISTORY_COLUMNS, _frame, entities_history_frame  # noqa: E402
from labeling.schema import AuditEntity, AuditEvent  # noqa: E402

TRACK_FACES = 10
# seed makes media of 20 faces (fewer --faces seed none); from 40 on, the track taken from the middle of
# the faces (faces[n // 2: n // 2 + 10]) lies wholly within the seeded ones for every n
MIN_FACES = 40


def whole_event_history(store, key: str, limit: int = 200) -> list[HistoryEntry]:
    """Baseline for one face: every event that names it, loaded whole."""
    with store() as session:
        stmt = (select(AuditEvent).join(AuditEntity, AuditEntity.event_id == AuditEvent.id)
                .where(AuditEntity.key == key).order_by(AuditEvent.id.desc()).limit(limit))
        return [HistoryEntry(e.id, e.at, e.editor, e.operation, e.summary, e.before.get(key), e.after.get(key),
                             e.undone_by_id) for e in session.scalars(stmt).unique()]


def whole_event_entities(store, keys: list[str], limit: int = 200):
    """Baseline for a track: every event naming any of its faces, loaded whole."""
    with store() as session:
        ids = sorted(set(session.scalars(select(AuditEntity.event_id).where(AuditEntity.key.in_(keys)))),
                     reverse=True)[:limit]
        events = session.scalars(select(AuditEvent).where(AuditEvent.id.in_(ids)).order_by(AuditEvent.id.desc()))
        rows = [(e.id, e.at, e.editor, e.operation, e.summary, {k: e.before[k] for k in keys if k in e.before},
                 {k: e.after[k] for k in keys if k in e.after}, e.undone_by_id) for e in events]
    return _frame(rows, HISTORY_COLUMNS)


def measure(call: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, peak traced MB) of one call."""
    tracemalloc.start()
    start = time.perf_counter()
    out = call()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return out, seconds, peak


def run(url: str, label: str, n_faces: int, runs: int) -> dict[str, float]:
    store = open_store(url)
    faces = seed(store, n_faces)
    a, _ = add_class(store, "Bench A", "bench")
    b, _ = add_class(store, "Bench B", "bench")
    track = faces[n_faces // 2: n_faces // 2 + TRACK_FACES]
    relabel_faces(store, track[:TRACK_FACES // 2], a, "editor")
    for r in range(runs):
        named, other = (a, b) if r % 2 == 0 else (b, a)
        confidence = 0.5 + r / (4 * runs)
        record_predictions(store, [Prediction(f, named, confidence, [(named, confidence), (other, 1 - confidence)])
                                   for f in faces], f"bench-v{r}")
    relabel_faces(store, track, b, "editor")
    face_key, track_keys = f"face:{track[0]}", [f"face:{f}" for f in track]
    figures: dict[str, float] = {}
    for what, ours, baseline in (
            ("face", lambda: history(store, face_key), lambda: whole_event_history(store, face_key)),
            ("track", lambda: entities_history_frame(store, track_keys), lambda: whole_event_entities(store, track_keys))):
        ours()  # warm: the first query of a connection pays for its setup
        mine, seconds, peak = measure(ours)
        theirs, base_seconds, base_peak = measure(baseline)
        same = mine == theirs if isinstance(mine, list) else mine.equals(theirs)
        assert same, f"{what} history differs from the baseline's"
        print(f"{label:9s} {what} history ({len(mine)} events): {seconds:.3f} s, {peak:.1f} MB; baseline reading whole "
              f"events {base_seconds:.3f} s, {base_peak:.1f} MB; {base_seconds / seconds:.1f}x faster")
        figures.update({f"{what}_s": seconds, f"{what}_baseline_s": base_seconds, f"{what}_speedup": base_seconds / seconds,
                        f"{what}_mb": peak, f"{what}_baseline_mb": base_peak})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5, help="bulk prediction runs over every face")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    at_least(parser, "--faces", args.faces, MIN_FACES,
             f"faces are seeded in media of 20 and the {TRACK_FACES}-face track is taken from their middle")
    at_least(parser, "--runs", args.runs, 0)
    out = on_both_backends(lambda url, label: run(url, label, args.faces, args.runs), args.no_postgres)
    print(" ".join(f"{db}_{k}={v:.3f}" for db, figures in out.items() for k, v in figures.items()))


if __name__ == "__main__":
    main()
