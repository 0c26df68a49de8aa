"""A first run's setup and its log:

1. A wrong GIFLENS_GIF_MODEL was a 120-line traceback (`bogus`) or every file of an ingest stored as failed
   (`mtcnn`, a real model but a face detector), exit 0. Both model settings are now checked by the settings
   themselves, so every command and the app refuse them: one line naming the variable and the known models,
   exit 2. (`ingest` also says which of its sources gave an unknown face model, exit 2: test_cli_settings_and_make_targets.)
2. Off a terminal (`make run > log`, nohup, docker logs) a command's progress said nothing until its end:
   rich draws its bar only on a terminal. Plain status lines now reach a log or a pipe as the command runs,
   at the pace of GIFLENS_PROGRESS_EVERY (seconds, validated like every setting).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from conftest import ROOT
from labeling.cli import app

runner = CliRunner()
KNOWN_FACE = "dlib-resnet-v1, facenet-vggface2"


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


# -- 1. an unknown GIF or face model is an invalid setting, for every command and the app -------------------

@pytest.mark.parametrize("model", ["bogus", "mtcnn"])  # no such model; the face detector, no GIF model
def test_an_unknown_gif_model_is_refused_before_an_ingest_with_one_line(tmp_path, monkeypatch, model):
    (tmp_path / "media").mkdir()
    monkeypatch.setenv("GIFLENS_GIF_MODEL", model)
    result = invoke("ingest", tmp_path / "media", "--data-dir", tmp_path / "data")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: invalid setting gif_model (GIFLENS_GIF_MODEL): unknown GIF model "
                                          f"{model!r}; known: efficientnet-lite0"], result.output
    assert result.stdout == "" and not (tmp_path / "data").exists()  # refused before any store or cache


def test_an_unknown_face_model_is_an_invalid_setting_of_other_commands_too(tmp_path, monkeypatch):
    monkeypatch.setenv("GIFLENS_FACE_MODEL", "bogus")
    result = invoke("predict", "--data-dir", tmp_path / "data", "--database-url", f"sqlite:///{tmp_path / 's.db'}")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == ["error: invalid setting face_model (GIFLENS_FACE_MODEL): unknown face model "
                                          f"'bogus'; known: {KNOWN_FACE}"], result.output


def test_the_apps_pages_refuse_an_unknown_model_in_their_settings(monkeypatch):
    """The Ingest page's settings (`giflens app` refuses them before it starts, as `predict` above)."""
    from labeling.pages.common import get_settings

    monkeypatch.setenv("GIFLENS_GIF_MODEL", "mtcnn")
    with pytest.raises(ValidationError, match=r"unknown GIF model 'mtcnn'; known: efficientnet-lite0"):
        get_settings()
    monkeypatch.setenv("GIFLENS_GIF_MODEL", "efficientnet-lite0")
    monkeypatch.setenv("GIFLENS_FACE_MODEL", "facenet-vggface2")
    assert get_settings().face_model == "facenet-vggface2"  # the models shipped still pass


# -- 2. status lines off a terminal ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "abc"])
def test_a_bad_progress_pace_is_an_invalid_setting(tmp_path, monkeypatch, value):
    (tmp_path / "media").mkdir()
    monkeypatch.setenv("GIFLENS_PROGRESS_EVERY", value)
    result = invoke("ingest", tmp_path / "media", "--data-dir", tmp_path / "data")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: invalid setting progress_every (GIFLENS_PROGRESS_EVERY): ")
    assert len(result.stderr.splitlines()) == 1, result.stderr


STATUS = re.compile(r"^ingest (\d+)/4 (\d+:\d\d:\d\d) elapsed(, ~\d+:\d\d:\d\d left)?(: .+)?$")


@pytest.mark.slow
def test_an_ingest_into_a_pipe_says_how_far_it_got_while_it_runs(tmp_path, lfw_dir):
    """stderr and stdout into one pipe, as `giflens ingest ... > log 2>&1` writes them: plain status lines
    come while the command still runs, then the bar drawn once more and the summary, as before."""
    media = tmp_path / "media"
    media.mkdir()
    for photo in sorted((lfw_dir / "George_W_Bush").glob("*.jpg"))[:4]:
        shutil.copy(photo, media / photo.name)
    env = {**os.environ, "GIFLENS_PROGRESS_EVERY": "1", "NUMBA_CACHE_DIR": str(ROOT / ".numba-cache")}
    proc = subprocess.Popen([sys.executable, "-m", "labeling.cli", "ingest", str(media), "--data-dir",
                             str(tmp_path / "data")], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines, running = [], []  # each line, and whether the command was still running when it was read
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        running.append(proc.poll() is None)
    assert proc.wait() == 0, lines

    status = [i for i, line in enumerate(lines) if STATUS.match(line)]
    assert status and running[status[0]], lines  # the first one read while the models loaded or files went through
    assert lines[-1] == "ingested 4, cached 0, failed 0, faces 4", lines  # the summary stays the last line
    assert lines[-2].startswith("ingest ") and "4/4" in lines[-2]  # the bar, drawn once as it stopped
    assert status[-1] < len(lines) - 2  # no status line below it
    assert all(lines[i].isprintable() for i in status)  # plain text: no cursor moves in a log
