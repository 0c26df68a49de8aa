"""Regression tests of audited bugs in recognition, near-duplicates and the benches.

1. The centroid classifier scored a face differently alone, in a subset and in the whole store (float32
   kNN similarities divided by the temperature), so re-running the same model wrote new versions and events.
2. A track's stored top classes still named a class merged away (or retired) since the refresh.
3. `giflens dupes --radius 64` paired every media with every other, at gigabytes of memory.
4. `retrain --holdout 0.05` blamed the classes' sizes when the share was too small for them.
5. bench/dupes.py crashed on a small --n or a radius near 64; bench/tagging.py on a CSV tagging < 2 GIFs.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import session_dir
from typer.testing import CliRunner

from bench.dupes import planted
from labeling.classes import merge_classes
from labeling.cli import app
from labeling.auto_tagging import read_inputs
from labeling.errors import ValidationError
from labeling.queries import faces_frame, model_candidates
from labeling.recognition import refresh_predictions, retrain, smallest_holdout_share, stratified_holdout, \
    track_predictions_frame
from test_recognition_loop import build_loop_store

ROOT = Path(__file__).resolve().parents[1]
DLIB = "dlib-resnet-v1"
runner = CliRunner()


@pytest.fixture(scope="session")
def loop_data_dir(tmp_path_factory) -> Path:
    """The embedding cache test_recognition_loop.py fills (same folder: each file is inferred once per session)."""
    return session_dir(tmp_path_factory, "giflens-recognition-data")


# -- 1. a face's confidences do not depend on the batch it is scored in ----------------------------
@pytest.mark.slow
def test_rerunning_one_model_on_all_then_undecided_faces_writes_nothing(store_url, loop_data_dir):
    loop = build_loop_store(loop_data_dir, store_url)
    first = refresh_predictions(loop.store, DLIB, data_dir=loop.data_dir)
    assert first.changed and first.event_ids
    for scope in ("undecided", "all", "undecided"):
        again = refresh_predictions(loop.store, DLIB, data_dir=loop.data_dir, faces=scope)
        assert again.model_version == first.model_version
        assert (again.changed, again.event_ids) == (0, []), scope


# -- 2. a stored track top list reads as the classes' current targets ------------------------------
@pytest.mark.slow
def test_track_top_classes_name_the_merge_target_not_the_merged_class(store_url, loop_data_dir):
    loop = build_loop_store(loop_data_dir, store_url)
    ariel, hugo = loop.classes["Ariel Sharon"], loop.classes["Hugo Chavez"]
    refresh_predictions(loop.store, DLIB, data_dir=loop.data_dir)
    media = loop.media["Ariel_Sharon_0007.jpg"]
    before = track_predictions_frame(loop.store, media_id=media).iloc[0]
    assert before["predicted_class_id"] == ariel and ariel in [c for c, _ in before["predicted_top"]]
    merge_classes(loop.store, ariel, hugo, "carol")
    row = track_predictions_frame(loop.store, media_id=media).iloc[0]
    top = [c for c, _ in row["predicted_top"]]
    assert ariel not in top and top[0] == hugo and len(top) == len(set(top))
    assert (row["predicted_class_id"], row["predicted_class_name"]) == (hugo, "Hugo Chavez")
    assert row["predicted_top"][0][1] == before["predicted_top"][0][1]  # the merged class's score, kept once
    # the face's own top classes (Explore's "Model's top classes") and the identity expert's tags too
    face_id = int(faces_frame(loop.store, media_id=media).iloc[0]["face_id"])
    candidates = [c for c, _, _ in model_candidates(loop.store, face_id=face_id)]
    assert ariel not in candidates and candidates[0] == hugo
    identity = read_inputs(loop.store).identity
    assert "ariel sharon" not in {t.lower() for tags in identity.values() for t in tags}
    assert "hugo chavez" in {t.lower() for t in identity[media]}


# -- 3. giflens dupes refuses radii that pair unrelated media -------------------------------------
def test_dupes_refuses_a_radius_that_pairs_unrelated_media(tmp_path):
    where = ["--data-dir", str(tmp_path / "none")]  # refused before any store is opened
    result = runner.invoke(app, ["dupes", *where, "--radius", "64"])
    assert result.exit_code == 1
    assert "radius 64 is above 16" in result.output and "32 of 64 bits" in result.output
    assert "above" in runner.invoke(app, ["dupes", *where, "--radius", "17"]).output


# -- 4. a holdout share too small for the classes says which share works ----------------------------
def test_smallest_holdout_share_is_the_first_that_holds_faces_out():
    classes = np.array([1] * 5 + [2] * 7 + [3] * 2)
    groups = np.arange(len(classes)).astype(object)
    share = smallest_holdout_share(classes, groups)
    assert share == 0.08
    assert stratified_holdout(classes, groups, share).any() and not stratified_holdout(classes, groups, 0.07).any()
    assert smallest_holdout_share(np.array([1, 1, 1]), np.array([0, 0, 0], dtype=object)) is None


@pytest.mark.slow
def test_retrain_with_a_too_small_share_names_the_share_that_works(loop_data_dir, tmp_path):
    loop = build_loop_store(loop_data_dir, f"sqlite:///{tmp_path / 'giflens.db'}")
    with pytest.raises(ValidationError) as caught:
        retrain(loop.store, loop.data_dir, DLIB, holdout_share=0.05, epochs=1)
    message = str(caught.value)
    assert "0.05" in message and "smallest share that holds faces out is 0.09" in message  # classes of 6 photos
    assert "at least 3 confirmed faces" not in message


# -- 5. the benches run on small and edge inputs -----------------------------------------------------
def test_planted_copies_flip_at_most_every_bit():
    rng = np.random.default_rng(0)
    copies = planted([0, 2**64 - 1], 4, 66, rng)  # radius 64 asks for up to 66 flips
    assert len(copies) == 8 and all(0 <= c < 2**64 for c in copies)


def _bench(script: str, *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT)


@pytest.mark.slow
def test_dupes_bench_with_fewer_hashes_than_queries(tmp_path, gifs_dir):
    gifs = tmp_path / "gifs"
    gifs.mkdir()
    (gifs / "waiting.gif").write_bytes((gifs_dir / "waiting.gif").read_bytes())
    done = _bench("dupes.py", "--gifs", gifs, "--n", 300, "--radius", 63)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert "n=300 radius=63" in last
    assert float(re.search(r"query_speedup=(\S+)", last).group(1)) > 0  # 0.032 printed as 0.0 before
    assert "single queries (300)" in done.stdout


def test_tagging_bench_without_two_tagged_gifs_says_why(tmp_path):
    (tmp_path / "gifs").mkdir()
    tags = tmp_path / "tags.csv"
    tags.write_text("file,uploader_tags\nnot-here.gif,foo;bar\n", encoding="utf-8")
    done = _bench("tagging.py", "--gifs", tmp_path / "gifs", "--tags", tags, "--data-dir", tmp_path / "data")
    assert done.returncode == 1
    assert "leave-one-out needs at least 2 tagged GIFs" in done.stderr and "Traceback" not in done.stderr
