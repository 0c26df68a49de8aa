"""The CLI, its settings and the Makefile: the export's face model, settings that were a
traceback or silently wrong (detection thresholds, an empty data folder), where a bad face model came from,
the facenet weights' candidates, `history` of ids that name nothing or classes named by digits, the
autotag help, the order of the export's note and refusal, and `make run` / `make bench`."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, make_faces, photo_faces
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from labeling.classes import add_class
from labeling.cli import app
from labeling.db import open_store, session_scope
from labeling.export import verify_export
from labeling.schema import Export, FaceEmbedding

runner = CliRunner()
PERSON = "George_W_Bush"
FACENET = "facenet-vggface2"


def invoke(*args: object, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def exports(url: str) -> int:
    with open_store(url)() as s:
        return s.scalar(select(func.count()).select_from(Export))


def labeled_store(url: str, data: Path, lfw_dir: Path, faces: int = 4, labeled: int = 4):
    """A store of `faces` LFW photos with crops (dlib-resnet-v1 embeddings), the first `labeled` confirmed."""
    store = open_store(url)
    ids = photo_faces(store, data, lfw_dir / PERSON, faces)
    add_class(store, "George W Bush", "ann", seed_face_ids=ids[:labeled])
    return store, ids


def set_face_model(store, face_ids: list[int], model: str) -> None:
    """The embeddings of these faces as if ingested with `model` (crops stay where they are)."""
    with session_scope(store) as s:
        s.execute(update(FaceEmbedding).where(FaceEmbedding.face_id.in_(face_ids)).values(model_id=model))


# -- 1. export uses the store's only face model, as predict does ----------------------------------------
def test_export_defaults_to_the_stores_only_face_model(store_url, tmp_path, lfw_dir, monkeypatch):
    """A store ingested with --face-model facenet-vggface2 exported 0 faces with exit 0: the export read
    GIFLENS_FACE_MODEL (dlib by default). A model the store does not hold is refused before any work."""
    data = tmp_path / "data"
    store, ids = labeled_store(store_url, data, lfw_dir)
    set_face_model(store, ids, FACENET)
    monkeypatch.setenv("GIFLENS_FACE_MODEL", "dlib-resnet-v1")  # what ingest would compute: not the export's choice
    where = ["--data-dir", data, "--database-url", store_url]

    result = invoke("export", tmp_path / "out", *where)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("exported 1 classes, 4 faces"), result.stdout
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["face_model"] == FACENET
    assert verify_export(tmp_path / "out") == [] and "warning" not in result.stderr

    wrong = invoke("export", tmp_path / "wrong", *where, "--face-model", "dlib-resnet-v1", "--no-previous")
    assert wrong.exit_code == 1, wrong.output
    assert wrong.stderr.splitlines() == [f"error: the store has no face embeddings of model 'dlib-resnet-v1' "
                                         f"(it has {FACENET} (4 faces))"], wrong.stderr
    assert not (tmp_path / "wrong").exists() and exports(store_url) == 1


def test_export_of_a_model_without_the_labeled_faces_warns(store_url, tmp_path, lfw_dir):
    """Two models in the store: the export asks which (as predict does); the one whose faces carry no
    confirmed label exports no face, and says so above the summary instead of passing for a good export."""
    data = tmp_path / "data"
    store, ids = labeled_store(store_url, data, lfw_dir, faces=4, labeled=2)
    set_face_model(store, ids[2:], FACENET)  # the two unlabeled faces
    where = ["--data-dir", data, "--database-url", store_url, "--no-previous"]

    ambiguous = invoke("export", tmp_path / "any", *where)
    assert ambiguous.exit_code == 1 and "name the one to use (--face-model)" in ambiguous.stderr, ambiguous.output
    assert len(ambiguous.stderr.splitlines()) == 1 and not (tmp_path / "any").exists()

    result = invoke("export", tmp_path / "facenet", *where, "--face-model", FACENET)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("exported 0 classes, 0 faces"), result.stdout
    assert (f"warning: no face exported: none of the 2 confirmed label(s) has a face crop of {FACENET}"
            in " ".join(result.stderr.split())), result.stderr
    good = invoke("export", tmp_path / "dlib", *where, "--face-model", "dlib-resnet-v1")
    assert good.exit_code == 0 and good.stdout.startswith("exported 1 classes, 2 faces") and "warning" not in good.stderr


# -- 2 and 7. settings that were a traceback or silently wrong -------------------------------------------
@pytest.mark.parametrize("value", ["0.6,0.7,0.7", "[0.6,0.7]", "[0.6,0.7,7]", "[0.6,0.7,-0.1]", '["a",0.7,0.7]'])
def test_bad_detection_thresholds_are_one_line_exit_2(tmp_path, monkeypatch, value):
    """Not JSON was a ~130-line SettingsError traceback, two numbers "Field required", 7 accepted (no face found)."""
    monkeypatch.setenv("GIFLENS_DETECT_THRESHOLDS", value)
    result = invoke("dupes", "--data-dir", tmp_path / "data")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: invalid setting detect_thresholds (GIFLENS_DETECT_THRESHOLDS): "
                                          f"expected a JSON list of 3 numbers in [0, 1], got {value!r}"], result.stderr
    assert not (tmp_path / "data").exists()


def test_good_detection_thresholds_still_read_from_the_environment(monkeypatch):
    from models.settings import Settings

    monkeypatch.setenv("GIFLENS_DETECT_THRESHOLDS", "[0.5, 0.6, 1]")
    assert Settings().detect_thresholds == (0.5, 0.6, 1.0)
    monkeypatch.delenv("GIFLENS_DETECT_THRESHOLDS")
    assert Settings().detect_thresholds == (0.6, 0.7, 0.7)
    assert Settings(detect_thresholds=[0, 0.5, 0.5]).detect_thresholds == (0.0, 0.5, 0.5)


def test_an_empty_data_dir_is_refused_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIFLENS_DATA_DIR", "")
    result = invoke("dupes")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == ["error: invalid setting data_dir (GIFLENS_DATA_DIR): must not be empty "
                                          "(unset it for the default, giflens-data)"], result.stderr
    assert list(tmp_path.iterdir()) == []  # no giflens.db in the current folder


# -- 6. where a bad face model came from; the weights' candidates once each ------------------------------
def test_an_unknown_face_model_names_where_it_came_from(tmp_path, monkeypatch):
    (tmp_path / "media").mkdir()
    monkeypatch.setenv("GIFLENS_FACE_MODEL", "bogus")
    where = ["--data-dir", tmp_path / "data", "--database-url", f"sqlite:///{tmp_path / 'store.db'}"]
    result = invoke("ingest", tmp_path / "media", *where)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == ["error: unknown face model 'bogus' (GIFLENS_FACE_MODEL); known: "
                                          "dlib-resnet-v1, facenet-vggface2"]
    option = invoke("ingest", tmp_path / "media", *where, "--face-model", "nope")
    assert option.exit_code == 2 and "unknown face model 'nope' (--face-model)" in option.stderr, option.output


def test_missing_facenet_weights_list_each_place_once(tmp_path, monkeypatch):
    from models.face_embedders import FacenetEmbedder
    from models.settings import get_settings

    weights = tmp_path / "nonexistent.pt"
    monkeypatch.setenv("GIFLENS_FACENET_WEIGHTS", str(weights))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    get_settings.cache_clear()
    try:
        with pytest.raises(RuntimeError) as caught:
            FacenetEmbedder.find_weights(weights)  # as the pipeline passes GIFLENS_FACENET_WEIGHTS
    finally:
        get_settings.cache_clear()
    message = str(caught.value)
    assert message.count(str(weights)) == 1, message
    assert f"{weights}, {tmp_path / 'torch' / 'hub' / 'checkpoints' / FacenetEmbedder.hub_file} or set" in message


# -- 8. history: digits that name a class, ids that name nothing -----------------------------------------
def test_history_of_a_class_named_by_digits_and_of_ids_that_name_nothing(store_url, tmp_path):
    where = ["--data-dir", tmp_path / "data", "--database-url", store_url]
    store = open_store(store_url)
    add_class(store, "2001", "ann")  # class id 1
    make_faces(store, n_media=1, faces_per_media=1)  # media 1, face 1: rows without any audit event

    named = invoke("history", "class:2001", *where)
    assert named.exit_code == 0, named.output
    assert named.stdout.splitlines()[0].endswith("ann  add class '2001'"), named.stdout
    assert named.stdout.splitlines()[-1] == "1 operation(s) of class:2001 shown, newest first"
    assert invoke("history", "class:1", *where).stdout.splitlines()[-1].startswith("1 operation(s)")
    face = invoke("history", "face:1", *where)  # a face nobody touched: no operation, not an error
    assert face.exit_code == 0 and face.stdout.strip() == "0 operation(s) of face:1 shown, newest first", face.output

    for entity, message in [("face:99", "no face 99 in the store (nor in its audit log)"),
                            ("media:7", "no media 7 in the store (nor in its audit log)"),
                            ("class:4242", "no class has id 4242 or is called '4242'"),
                            ("class:99999999999999999999", "no class has id 99999999999999999999 or is called "
                                                           "'99999999999999999999'")]:
        result = invoke("history", entity, *where)
        assert result.exit_code == 1, (entity, result.output)
        assert result.stderr.splitlines() == [f"error: {message}"] and result.stdout == "", result.output


# -- 9. autotag --help on the text expert -----------------------------------------------------------------
def test_autotag_help_says_the_tags_text_expert_reads_the_answer():
    result = invoke("autotag", "--help", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "With --text tags (the default) the text expert reads each media item's own tags" in text
    assert "partly measured on the answer" in text and "--text weak-labels reads the ImageNet labels" in text


# -- 10. no note above a refusal ---------------------------------------------------------------------------
def test_an_out_dir_under_a_file_is_refused_before_the_note_on_the_earlier_export(store_url, tmp_path, lfw_dir):
    data = tmp_path / "data"
    labeled_store(store_url, data, lfw_dir, faces=2, labeled=2)
    where = ["--data-dir", data, "--database-url", store_url]
    assert invoke("export", tmp_path / "first", *where).exit_code == 0  # the earlier export a new one would follow
    (tmp_path / "notes.txt").write_text("x")
    out = tmp_path / "notes.txt" / "deeper" / "export"
    result = invoke("export", out, *where)
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [f"error: cannot create {out}: {tmp_path / 'notes.txt'} is not a folder"]
    assert exports(store_url) == 1


# -- 3, 4, 5. the Makefile ----------------------------------------------------------------------------------
def make_dry_run(*args: str, **env: str) -> str:
    """`make -n` in the repo: the commands it would run, none run (UV given, so no uv lookup matters)."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("GIFLENS_") and k not in {"SAMPLE", "TAGS", "CLASSES", "DATA_DIR", "MAKEFLAGS"}}
    proc = subprocess.run(["make", "-n", *args, "UV=uv"], cwd=ROOT, env={**clean, **env}, capture_output=True,
                          text=True, check=True)
    return proc.stdout


def giflens_lines(text: str) -> list[str]:
    return [re.sub(r"^.*?(uv run giflens)", r"\1", line) for line in text.splitlines() if "uv run giflens" in line]


def test_make_run_uses_giflens_data_dir():
    assert all('--data-dir "giflens-data"' in line for line in giflens_lines(make_dry_run("run")))
    lines = giflens_lines(make_dry_run("run", GIFLENS_DATA_DIR="/srv/giflens"))
    assert lines and all('--data-dir "/srv/giflens"' in line for line in lines), lines
    lines = giflens_lines(make_dry_run("run", "DATA_DIR=mine", GIFLENS_DATA_DIR="/srv/giflens"))
    assert all('--data-dir "mine"' in line for line in lines), lines


def test_make_run_imports_the_shared_tags_only_with_the_shared_sample():
    default = make_dry_run("run")
    assert 'import tags "../shared/data/gifs.csv"' in default
    assert 'import tags "../shared/data/gifs.csv"' in make_dry_run("run", "SAMPLE=../shared/data/gifs/")
    other = make_dry_run("run", "SAMPLE=/media/mine")
    assert "gifs.csv" not in other and 'ingest "/media/mine"' in other
    assert 'import classes "../shared/data/giphy-celebrities.csv"' in other  # the class list stays
    assert 'import tags "/media/tags.csv"' in make_dry_run("run", "SAMPLE=/media/mine", "TAGS=/media/tags.csv")


def test_make_bench_runs_the_benchmarks():
    text = make_dry_run("bench")
    for script in ("store", "dupes", "knn", "recognition", "tagging"):
        assert f"uv run python bench/{script}.py" in text, text
        assert (ROOT / "bench" / f"{script}.py").is_file()
