"""Team flows (editors sharing one store, each with their own data folder): an export
that skips confirmed faces whose crops are in another editor's data folder says so, `giflens retrain`
names the faces it changed as `giflens predict` does, and an ingest of media the store already holds
says its "ingested" items were computed again for this data folder's cache only.

Two data folders share one SQLite file through --database-url: the same situation as PostgreSQL's."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ingest_settings, photo_faces
from test_recognition_calibration_and_ties import store_faces
from typer.testing import CliRunner

from labeling.classes import add_class
from labeling.cli import app
from labeling.db import open_store
from labeling.export import export_dataset, no_faces_exported

runner = CliRunner()
PERSON = "George_W_Bush"
OTHER = "Colin_Powell"
ANOTHER_DATA_DIR = "faces ingested or imported with another --data-dir? editors sharing one database should " \
                   "share one data folder, or ingest the media with this one"


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Output as one line of single spaces: a long warning may be wrapped by the console."""
    return " ".join(text.split())


def test_export_from_another_data_folder_warns_when_every_crop_is_missing(tmp_path, lfw_dir):
    """bob ingested (here: stored crops under his data folder); alice exports the same store with hers.
    The warning was "another model? crops deleted?", which neither describes nor fixes this."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    bob, alice = tmp_path / "bob", tmp_path / "alice"
    store = open_store(url)
    add_class(store, "George W Bush", "bob", seed_face_ids=photo_faces(store, bob, lfw_dir / PERSON, 3))

    result = invoke("export", tmp_path / "out", "--data-dir", alice, "--database-url", url, "--editor", "alice")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("exported 0 classes, 0 faces (train 0, val 0), 3 without a crop skipped")
    assert (f"warning: no face exported: 3 confirmed label(s) skipped: their face crops are not in the data "
            f"folder {alice} ({ANOTHER_DATA_DIR}; crops deleted? ingest again)") in flat(result.stderr), result.stderr
    assert "another model" not in result.stderr

    same = invoke("export", tmp_path / "bob-out", "--data-dir", bob, "--database-url", url, "--no-previous")
    assert same.exit_code == 0 and same.stdout.startswith("exported 1 classes, 3 faces") and "warning" not in same.stderr


def test_export_missing_some_crops_warns_too(tmp_path, lfw_dir):
    """The partial case said only "N without a crop skipped" in the summary, though the export lacks a
    whole class and later exports follow it. The exit stays 0: what is available is still exported."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    bob, alice = tmp_path / "bob", tmp_path / "alice"
    store = open_store(url)
    add_class(store, "George W Bush", "bob", seed_face_ids=photo_faces(store, bob, lfw_dir / PERSON, 3))
    add_class(store, "Colin Powell", "alice", seed_face_ids=photo_faces(store, alice, lfw_dir / OTHER, 2, start=10))

    result = invoke("export", tmp_path / "out", "--data-dir", alice, "--database-url", url, "--editor", "alice")
    assert result.exit_code == 0, result.output
    assert re.match(r"exported 1 classes, 2 faces \(train \d, val \d\), 3 without a crop skipped", result.stdout)
    warning = flat(result.stderr)
    assert (f"warning: 3 confirmed label(s) skipped: their face crops are not in the data folder {alice} "
            f"({ANOTHER_DATA_DIR}; crops deleted? ingest again)") in warning, result.stderr
    assert "no face exported" not in warning

    # the app's Export page words it with the same function, from the same summary
    summary = export_dataset(store, alice, tmp_path / "page", "alice")
    note = no_faces_exported(summary, "start the app with GIFLENS_FACE_MODEL naming it")
    assert (summary.missing_crops, summary.crops_not_found, summary.data_dir) == (3, 3, alice.absolute())
    assert note is not None and note.startswith(f"3 confirmed label(s) skipped: their face crops are not in the "
                                                f"data folder {alice} ({ANOTHER_DATA_DIR}")


def test_retrain_names_the_faces_it_changed_as_predict_does(tmp_path):
    """A retrain that changed nothing ended with `predicted=5 event=none`: it now says `faces=5 changed=0`
    (predict's words), before= after= still last."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(2, 128))
    store = open_store(url)
    _, faces = store_faces(store, [c + 0.05 * rng.normal(size=128) for c in centres for _ in range(8)])
    add_class(store, "Bee", "ann", seed_face_ids=faces[:6])
    add_class(store, "Cee", "ann", seed_face_ids=faces[8:14])  # faces 6, 7, 14, 15 stay undecided
    where = ["--data-dir", tmp_path / "data", "--database-url", url, "--epochs", "2", "--holdout", "0.34"]

    lines = []
    for _ in range(2):
        result = invoke("retrain", *where)
        assert result.exit_code == 0, result.output
        lines.append(result.stdout.strip().splitlines()[-1])
    first, second = lines
    assert re.search(r" faces=4 changed=4 event=\d+ before=\S+ after=\S+$", first), first
    assert re.search(r" faces=4 changed=0 event=none before=\S+ after=\S+$", second), second
    assert "predicted=" not in second


@pytest.mark.slow
def test_ingest_of_media_the_store_holds_says_so(tmp_path, lfw_dir, pipeline_models):
    """alice ingests the photos bob already stored, with her own (empty) data folder: the store is
    unchanged, so "ingested 2" says they were only computed again for her cache; the four counts stay."""
    from embeddings.pipeline import IngestPipeline
    from labeling.ingest import ingest

    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in sorted((lfw_dir / PERSON).glob("*.jpg"))[:2]:
        shutil.copy(photo, photos)
    url = f"sqlite:///{tmp_path / 'store.db'}"

    def run(editor: str) -> str:
        settings = ingest_settings(tmp_path / editor, url)
        return ingest([photos], settings, pipeline=IngestPipeline(settings, **pipeline_models), editor=editor).line()

    bob = run("bob")
    faces = re.fullmatch(r"ingested 2, cached 0, failed 0, faces (\d+)", bob).group(1)
    assert run("alice") == (f"ingested 2, cached 0, failed 0, faces {faces} "
                            f"(2 already in the store: computed again for this data folder's cache)")
    assert run("alice") == f"ingested 0, cached 2, failed 0, faces {faces}"  # her cache is filled now
    assert Path(tmp_path / "alice" / "data").is_dir()
