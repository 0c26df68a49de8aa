"""explorer.projection_jobs: UMAP in a worker process on real LFW face embeddings. One job per
embedding set however often it is asked for, its projection lands in the cache folder where the
page finds it, progress is reported while it runs, and a set that cannot be projected fails once
with its reason instead of being retried on every rerun."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.lfw_faces import load_lfw_faces
from explorer.projection import ProjectionError, fingerprint, load_cached
from explorer.projection_jobs import collect, projection_job, running_job, wait_for_projections, warm_up

pytestmark = pytest.mark.slow  # the worker process imports UMAP and compiles its kernels
KEY = "faces-dlib-resnet-v1"


@pytest.fixture(scope="module")
def faces(lfw_dir: Path):
    f = load_lfw_faces(lfw_dir, max_people=12)
    return f.vectors, [str(p) for p in f.paths]


def test_a_job_runs_once_per_embedding_set_and_fills_the_cache(faces, tmp_path):
    vectors, ids = faces
    job = projection_job(vectors, ids, tmp_path, KEY, model_id=KEY)
    assert projection_job(vectors, ids, tmp_path, KEY, model_id=KEY) is job  # a rerun joins the running job
    assert running_job(fingerprint(vectors, ids, KEY)) is job
    stage, fraction = job.progress()
    assert isinstance(stage, str) and 0.0 <= fraction <= 1.0
    assert wait_for_projections(timeout=600)
    how, seconds = job.result()
    assert job.error is None and how == "fitted" and seconds > 0
    cached = load_cached(vectors, ids, tmp_path, model_id=KEY, with_reducer=False)
    assert cached is not None and cached.coords.shape == (len(ids), 3) and np.isfinite(cached.coords).all()
    assert not job.progress_file.exists()  # the worker's progress note is gone with the job
    collect(job)
    assert running_job(job.signature) is None
    # one more photo: a new job, which places it with transform instead of refitting
    more = projection_job(np.vstack([vectors, vectors[:1] * 0.99]), [*ids, "extra"], tmp_path, KEY, model_id=KEY)
    assert more is not job and wait_for_projections(timeout=600)
    assert more.result()[0] == "extended"
    collect(more)


def test_a_set_that_cannot_be_projected_fails_once_with_its_reason(faces, tmp_path):
    vectors, ids = faces
    few = projection_job(vectors[:5], ids[:5], tmp_path, KEY, model_id=KEY)
    assert wait_for_projections(timeout=600)
    assert isinstance(few.error, ProjectionError) and "5" in str(few.error)
    collect(few)  # only successful jobs are forgotten
    assert projection_job(vectors[:5], ids[:5], tmp_path, KEY, model_id=KEY) is few


# The kernels a first fit compiles: UMAP's layout epoch (every fit) and NNDescent's graph build
# (sets of 4,096 points and more; smaller sets find neighbours exactly).
LAYOUT, NN_DESCENT = "umap.layouts._nb_optimize_layout_euclidean_single_epoch", "pynndescent.pynndescent_.nn_descent"
_COMPILED = """
import importlib, sys
from explorer.projection import compile_kernels
if sys.argv[1] != "cold":
    compile_kernels(int(sys.argv[1]))
import umap  # imported either way, so only compile_kernels can have compiled anything
for path in sys.argv[2:]:
    module, name = path.rsplit(".", 1)
    print(path, len(getattr(importlib.import_module(module), name).signatures))
"""


def _compiled_in_fresh_process(n_points: str) -> dict[str, int]:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _COMPILED, n_points, LAYOUT, NN_DESCENT], cwd=root,
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(root)}).stdout
    return {path: int(count) for path, count in (line.split() for line in out.splitlines())}


def test_compile_kernels_compiles_the_path_the_first_fit_will_take():
    assert _compiled_in_fresh_process("cold") == {LAYOUT: 0, NN_DESCENT: 0}  # nothing is compiled at import
    small = _compiled_in_fresh_process("1000")
    assert small[LAYOUT] >= 1 and small[NN_DESCENT] == 0, small  # exact neighbours: NNDescent would be wasted
    large = _compiled_in_fresh_process("50000")
    assert large[LAYOUT] >= 1 and large[NN_DESCENT] >= 1, large


def test_warm_up_runs_once_in_the_worker_not_in_the_app_process():
    assert warm_up(0) is None and warm_up(5) is None  # nothing to project yet, nothing to warm up
    first = warm_up(50_000)
    assert warm_up(60_000) is first  # every rerun of every session asks; the worker warms up once per path
    assert first.result(timeout=600) != os.getpid()
    small = warm_up(1_000)
    assert small is not first and warm_up(2_000) is small and small.result(timeout=600) == first.result()
