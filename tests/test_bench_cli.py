"""The bench scripts refuse bad arguments with one line (exit 2), before any model loads or anything is
ingested; lfw_verify's pairs files are checked line by line; lfw_faces keeps one cache file per model;
app.py runs on a small --images folder; store.py's bulk ratio is against single relabels."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import lfw_faces, lfw_verify

ROOT = Path(__file__).resolve().parents[1]
FIVE_PHOTO_PEOPLE = ["Ahmed_Chalabi", "Ai_Sugiyama", "Alan_Greenspan", "Alastair_Campbell"]


def _bench(script: str, *args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def _refused(done: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2 with argparse's usage plus one `error:` line holding every word, and no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def _people(root: Path, people: dict[str, int]) -> Path:
    for person, n in people.items():
        (root / person).mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            Image.new("RGB", (4, 4), (40 * i % 256, len(person), 0)).save(root / person / f"{person}_{i:04d}.jpg")
    return root


def _lfw_subset(root: Path, lfw_dir: Path, people: list[str]) -> Path:
    """Real LFW people linked into a folder of their own: relative paths (and so the shared embedding
    cache's entries) are LFW's own."""
    root.mkdir(parents=True, exist_ok=True)
    for person in people:
        (root / person).symlink_to(lfw_dir / person, target_is_directory=True)
    return root


# -- 1. lfw_verify: --folds for --make-pairs, and pairs files checked line by line ------------------
def test_make_pairs_refuses_a_single_fold(tmp_path):
    images = _people(tmp_path / "people", {"A": 3, "B": 3, "C": 3, "D": 3})
    done = _bench("lfw_verify.py", "--make-pairs", "--folds", "1", "--per-fold", "1", "--pairs", tmp_path / "p.txt",
                  "--images", images)
    _refused(done, "--folds must be at least 2")
    assert not (tmp_path / "p.txt").exists()


@pytest.mark.parametrize("text, words", [
    ("garbage\n", ["line 1", "header"]),
    ("2\t0\n", ["line 1", "two positive integers"]),  # folds without pairs: accuracy=nan before
    ("2\t1\nA\t1\t2\nA\t1\tB\t1\nB\t1\t2\n", ["4 pair rows", "has 3"]),  # truncated
    ("2\t1\nA\t1\t2\nA\t1\tB\nB\t1\t2\nB\t1\tA\t2\n", ["line 3", "mismatched pair has 4", "has 3"]),
    ("2\t1\nA\t1\t2\t9\nA\t1\tB\t1\nB\t1\t2\nB\t1\tA\t2\n", ["line 2", "matched pair has 3", "has 4"]),
    ("2\t1\nA\tone\t2\nA\t1\tB\t1\nB\t1\t2\nB\t1\tA\t2\n", ["line 2", "integers"]),
    ("1\t1\nA\t1\t2\nA\t1\tB\t1\n", ["1 fold", "at least 2"]),
])
def test_a_malformed_pairs_file_is_refused_naming_the_line(tmp_path, text, words):
    images = _people(tmp_path / "people", {"A": 2, "B": 2})
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(text)
    _refused(_bench("lfw_verify.py", "--pairs", pairs, "--images", images), "--pairs", *words)


def test_read_pairs_reads_a_well_formed_file(tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\t1\nA\t1\t2\nA\t1\tB\t1\n\nB\t1\t2\nB\t1\tA\t2\n")
    assert lfw_verify.read_pairs(pairs) == [([("A", 1, "A", 2)], [("A", 1, "B", 1)]),
                                            ([("B", 1, "B", 2)], [("B", 1, "A", 2)])]


# -- 2. lfw_faces: one cache file per model key -------------------------------------------------------
def test_the_default_model_keeps_the_cache_file_name(tmp_path):
    cache = tmp_path / "faces.npz"
    assert lfw_faces.cache_file(cache, "dlib-resnet-v1", {}) == cache
    other = lfw_faces.cache_file(cache, "dlib-resnet-v1", {"flip": False})
    assert other.parent == tmp_path and other != cache and other.suffix == ".npz"
    assert lfw_faces.cache_file(cache, "dlib-resnet-v1", {"jitters": 2}) not in (cache, other)


@pytest.mark.slow
def test_a_run_with_other_options_keeps_the_default_embeddings(tmp_path, lfw_dir):
    cache = tmp_path / "faces.npz"
    only = {"Ahmed_Chalabi"}
    default = lfw_faces.load_lfw_faces(lfw_dir, cache=cache, only=only)
    no_flip = lfw_faces.load_lfw_faces(lfw_dir, cache=cache, only=only, flip=False)
    assert not np.allclose(default.vectors, no_flip.vectors)
    with np.load(cache) as data:  # the old single file now held the no-flip model only
        assert str(data["model"]) == lfw_faces.model_key("dlib-resnet-v1", {})
        assert np.array_equal(data["vectors"], default.vectors)
    written = cache.stat().st_mtime_ns
    again = lfw_faces.load_lfw_faces(lfw_dir, cache=cache, only=only)
    assert np.array_equal(again.vectors, default.vectors) and cache.stat().st_mtime_ns == written  # no re-embedding


# -- 3-5. every bench script checks its arguments before loading anything -----------------------------
@pytest.mark.parametrize("script, args, words", [
    ("lfw_verify.py", ["--pairs", "/nonexistent/pairs.txt", "--images", ROOT], ["--pairs", "no such file"]),
    ("lfw_verify.py", ["--pairs", "p.txt", "--images", "/nonexistent/lfw"], ["--images"]),
    ("lfw_faces.py", ["--images", "/nonexistent/lfw"], ["--images", "no such folder"]),
    ("knn.py", ["--images", "/nonexistent/lfw"], ["--images", "no such folder"]),
    ("knn.py", ["--max-people", "0"], ["--max-people must be at least 1"]),
    ("knn.py", ["--queries", "0"], ["--queries must be at least 1"]),
    ("knn.py", ["--k", "0"], ["--k must be at least 1"]),
    ("recognition.py", ["--images", "/nonexistent/lfw"], ["--images", "no such folder"]),
    ("recognition.py", ["--draws", "0"], ["--draws must be at least 1"]),
    ("app.py", ["--images", "/nonexistent/lfw"], ["--images", "no such folder"]),
    ("app.py", ["--sizes", "0"], ["--sizes must be at least 1"]),
    ("app.py", ["--sizes", "10000", "10500"], ["--sizes", "n10k, n10k"]),
    ("app_browser.py", ["--images", "/nonexistent/lfw"], ["--images", "no such folder"]),
    ("app_browser.py", ["--sizes", "0"], ["--sizes must be at least 1"]),
    ("umap_warm_up.py", ["--images", "/nonexistent/lfw"], ["--images", "no such folder"]),
    ("umap_warm_up.py", ["--new", "0"], ["--new must be at least 1"]),
    ("ingest.py", ["--gifs", "/nonexistent/gifs"], ["--gifs", "no such folder"]),
    ("ingest.py", ["--lfw", "/nonexistent/lfw"], ["--lfw", "no such folder"]),
    ("ingest.py", ["--photos", "-1"], ["--photos must be at least 0"]),
    ("ingest.py", ["--photos", "999999"], ["--photos 999999 is more than the"]),
    ("dupes.py", ["--gifs", "/nonexistent/gifs"], ["--gifs", "no such folder"]),
    ("dupes.py", ["--radius", "65"], ["--radius", "between 0 and 64"]),
    ("dupes.py", ["--radius", "-1"], ["--radius", "between 0 and 64"]),
    ("dupes.py", ["--n", "0"], ["--n must be at least 1"]),
    ("dupes.py", ["--queries", "0"], ["--queries must be at least 1"]),
    ("tagging.py", ["--gifs", "/nonexistent/gifs"], ["--gifs", "no such folder"]),
    ("tagging.py", ["--tags", "/nonexistent/tags.csv"], ["--tags", "no such file"]),
    ("store.py", ["--faces", "19", "--no-postgres"], ["--faces must be at least 20"]),
    ("store.py", ["--singles", "0", "--no-postgres"], ["--singles must be at least 1"]),
    ("store.py", ["--faces", "40", "--singles", "41", "--no-postgres"], ["--singles 41 is more than the 40 faces"]),
    ("history.py", ["--faces", "30", "--no-postgres"], ["--faces must be at least 40"]),
])
def test_bad_arguments_are_one_line_errors(script, args, words):
    _refused(_bench(script, *args), *words)


def test_dupes_refuses_gifs_without_frames(tmp_path):
    """A folder of no GIFs, or of GIFs none of which decodes, is not benchmarked on random hashes alone."""
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(_bench("dupes.py", "--gifs", empty, "--n", "100"), "--gifs", "no .gif files")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "broken.gif").write_bytes(b"GIF89a not really")
    _refused(_bench("dupes.py", "--gifs", broken, "--n", "100"), "--gifs", "no GIF there yielded a frame")


@pytest.mark.parametrize("args, words", [(["--k", "0"], ["k must be a positive integer"]),
                                         (["--min-frequency", "1.5"], ["min_frequency must be in [0, 1]"])])
def test_tagging_checks_the_tagger_parameters_before_the_ingest(tmp_path, gifs_dir, args, words):
    data = tmp_path / "data"
    done = _bench("tagging.py", "--gifs", gifs_dir, "--data-dir", data, *args)
    _refused(done, *words)
    assert not data.exists()  # nothing ingested


# -- 6. lfw_verify: no throughput from a cache read ---------------------------------------------------
@pytest.mark.slow
def test_reused_embeddings_print_no_throughput(tmp_path, lfw_dir):
    images = _lfw_subset(tmp_path / "lfw", lfw_dir, FIVE_PHOTO_PEOPLE)
    pairs = tmp_path / "pairs.txt"
    assert _bench("lfw_verify.py", "--make-pairs", "--folds", "2", "--per-fold", "2", "--pairs", pairs,
                  "--images", images).returncode == 0
    fresh = _bench("lfw_verify.py", "--pairs", pairs, "--images", images)
    assert fresh.returncode == 0, fresh.stderr
    assert re.search(r"no_face_fallbacks=\d+ images_per_s=\d+\.\d\d$", fresh.stdout, re.M), fresh.stdout
    cached = _bench("lfw_verify.py", "--pairs", pairs, "--images", images, "--reuse-lfw-cache")
    assert cached.returncode == 0, cached.stderr
    assert "no_face_fallbacks=n/a images_per_s=n/a (cached)" in cached.stdout, cached.stdout
    assert re.search(r"^accuracy=\d\.\d{4}$", cached.stdout, re.M)


# -- 7. app.py on a small --images folder --------------------------------------------------------------
@pytest.mark.slow
def test_app_bench_warms_up_on_a_small_folder(tmp_path, lfw_dir):
    images = _lfw_subset(tmp_path / "lfw", lfw_dir, [*FIVE_PHOTO_PEOPLE, "Allyson_Felix", "Albert_Costa"])
    done = _bench("app.py", "--images", images, "--sizes", "100", "--new", "10", "--no-naive")
    assert done.returncode == 0, done.stderr
    assert "fit 21 + save + transform" in done.stdout
    assert "real_photos=31" in done.stdout.strip().splitlines()[-1]


def test_app_bench_refuses_a_folder_too_small_to_warm_up(tmp_path):
    images = _people(tmp_path / "people", {"A": 5, "B": 5})
    _refused(_bench("app.py", "--images", images), "has 10 photos", "at least 30")


# -- 8. store.py: bulk relabel against single relabels --------------------------------------------------
def test_store_bench_measures_single_relabels_as_the_bulk_baseline():
    done = _bench("store.py", "--faces", "40", "--singles", "5", "--no-postgres")
    assert done.returncode == 0, done.stderr
    assert "single relabel: median" in done.stdout and "bulk vs single relabel" in done.stdout
    assert "bulk relabel vs single approve" in done.stdout
    last = done.stdout.strip().splitlines()[-1]
    keys = [pair.split("=")[0] for pair in last.split()]
    assert keys == ["sqlite_median_ms", "sqlite_p95_ms", "sqlite_bulk_per_s", "sqlite_ratio", "sqlite_relabel_median_ms",
                    "sqlite_relabel_p95_ms", "sqlite_ratio_vs_approve"]
