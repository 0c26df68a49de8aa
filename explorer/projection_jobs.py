"""UMAP projections computed beside the app, in a worker process, one job per embedding set,
shared by every session of the app.

Why: a UMAP fit of 50,000 faces takes a minute and a half. Run inside the page script, any click
during the fit stops the script and starts the fit again, so an editor who keeps working never
gets the map. Run in a thread of the app, its numba kernels hold the GIL and every page of every
editor freezes until it ends. In a worker process the page draws the PCA preview at once (fully
usable: points can be clicked, filtered and acted on) and swaps in UMAP when the job is done. The
worker writes the projection to the cache folder like any fit; a job keyed by the embedding set's
fingerprint is started once, however many sessions or reruns ask for it.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from explorer.projection import UMAP_EXACT_BELOW, ProjectionParams, fingerprint

_LOCK = threading.Lock()
_JOBS: dict[str, "ProjectionJob"] = {}
_EXECUTOR: ProcessPoolExecutor | None = None
_KEEP_FAILED = 16  # failed jobs are remembered, so a set that cannot be projected is not retried on every rerun
# the worker warmed up, for which neighbour path (True: NNDescent), and how it went
_WARM_UP: tuple[ProcessPoolExecutor, bool, Future] | None = None


@dataclass
class ProjectionJob:
    """A projection being computed: its progress while it runs, how it went after."""

    signature: str
    progress_file: Path
    future: Future = field(default_factory=Future)

    @property
    def done(self) -> bool:
        return self.future.done()

    @property
    def error(self) -> BaseException | None:
        return self.future.exception() if self.done else None

    def progress(self) -> tuple[str, float]:
        """(stage, fraction done) as the worker last reported it."""
        try:
            state = json.loads(self.progress_file.read_text(encoding="utf-8"))
            return str(state["stage"]), float(state["fraction"])
        except (OSError, ValueError, KeyError):
            return ("starting" if not self.done else "done"), 0.0

    def result(self) -> tuple[str, float]:
        """(how, fit seconds): how is "fitted" or "extended" (or "cache" when another process was
        first), as `explorer.views.projection_for` says; raises the worker's error."""
        return self.future.result()


def _project_in_worker(vectors: np.ndarray, ids: list[Any], cache_dir: str, key: str, model_id: str,
                       progress_file: str) -> tuple[str, float]:
    """Runs in the worker process: the fit (or transform), saved to the cache folder."""
    from explorer.views import projection_for  # the worker imports UMAP, the app process need not wait for it

    def report(stage: str, fraction: float) -> None:
        tmp = f"{progress_file}.{os.getpid()}.tmp"
        Path(tmp).write_text(json.dumps({"stage": stage, "fraction": min(max(float(fraction), 0.0), 1.0)}),
                             encoding="utf-8")
        os.replace(tmp, progress_file)

    try:
        projection, how = projection_for(vectors, ids, cache_dir, key, model_id=model_id, on_progress=report)
        return how, float(projection.fit_seconds)
    finally:
        Path(progress_file).unlink(missing_ok=True)


def _warm_up_in_worker(n_points: int) -> int:
    """Runs in the worker process: compiles UMAP's kernels there; returns the worker's pid."""
    from explorer.projection import compile_kernels

    compile_kernels(n_points)
    return os.getpid()


def warm_up(n_points: int) -> Future | None:
    """Start the worker and compile in it the UMAP kernels a set of n_points needs (the faces in
    the store: the set Explore opens on); the Future gives the worker's pid. Once per worker and
    path (exact or NNDescent neighbours); None while there is nothing to project.

    A projection asked for meanwhile queues behind it and would have compiled the same kernels
    itself; the app's own process stays free. A failed warm-up is not retried (the first fit
    will compile, and report any real error); a worker that died is warmed again."""
    global _WARM_UP
    if n_points < ProjectionParams().min_points():
        return None
    path = n_points >= UMAP_EXACT_BELOW
    with _LOCK:
        executor = _executor()
        if _WARM_UP is None or _WARM_UP[0] is not executor or _WARM_UP[1] != path:
            _WARM_UP = (executor, path, executor.submit(_warm_up_in_worker, n_points))
        return _WARM_UP[2]


def _executor() -> ProcessPoolExecutor:
    """One worker process ("spawn": the app's threads and locks are not copied into it), recreated
    when a fit killed it (out of memory)."""
    global _EXECUTOR
    if _EXECUTOR is None or getattr(_EXECUTOR, "_broken", False):
        _EXECUTOR = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    return _EXECUTOR


def projection_job(vectors: np.ndarray, ids: Sequence[Any], cache_dir: Path | str, key: str,
                   model_id: str = "") -> ProjectionJob:
    """The job projecting exactly these vectors and ids, started now unless one already runs or ran."""
    signature = fingerprint(vectors, ids, model_id)
    with _LOCK:
        job = _JOBS.get(signature)
        if job is None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            job = ProjectionJob(signature, Path(cache_dir) / f".progress-{signature[:16]}.json")
            args = (np.asarray(vectors, dtype=np.float32), list(ids), str(cache_dir), key, model_id, str(job.progress_file))
            try:
                job.future = _executor().submit(_project_in_worker, *args)
            except BrokenProcessPool:
                job.future = _executor().submit(_project_in_worker, *args)
            _JOBS[signature] = job
            _forget_old_failures()
        return job


def running_job(signature: str) -> ProjectionJob | None:
    """The job of this signature, if one was started and not collected yet."""
    with _LOCK:
        return _JOBS.get(signature)


def collect(job: ProjectionJob) -> None:
    """Forget a finished, successful job: its projection is in the cache folder now, where the
    next run of any session finds it."""
    with _LOCK:
        if job.done and job.error is None and _JOBS.get(job.signature) is job:
            del _JOBS[job.signature]


def wait_for_projections(timeout: float | None = None) -> bool:
    """Block until every started job has finished (tests, and a script that wants the map ready).
    True when all finished within the timeout."""
    with _LOCK:
        futures = [job.future for job in _JOBS.values()]
    _, pending = wait(futures, timeout=timeout)
    return not pending


def _forget_old_failures() -> None:
    failed = [s for s, job in _JOBS.items() if job.done and job.error is not None]
    for signature in failed[:-_KEEP_FAILED]:
        del _JOBS[signature]
