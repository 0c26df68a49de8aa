"""The `giflens import ...` and `giflens export` commands, end to end through the Typer app, on both stores."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from labeling.cli import _os_user, app
from labeling.db import open_store
from labeling.export import verify_export
from labeling.schema import AuditEvent, CelebrityClass, Export, FaceLabel

runner = CliRunner()


@pytest.fixture(scope="module")
def cli_data_dir(tmp_path_factory) -> Path:
    """Embedding cache and crops shared by this module's tests (the store is per test: --database-url)."""
    return tmp_path_factory.mktemp("giflens-cli-data")


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def audit(store_url: str) -> list[tuple[str, str, int]]:
    with open_store(store_url)() as s:
        return [(e.operation, e.editor, e.n_entities) for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]


def test_import_classes_and_attributes(store_url, tmp_path, shared_data):
    where = ["--data-dir", tmp_path / "data", "--database-url", store_url]
    result = invoke("import", "classes", shared_data / "giphy-celebrities.csv", *where)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == ("import classes from giphy-celebrities.csv: 2306 classes created, 0 updated, "
                                     "0 unchanged (audit event 1)")
    assert audit(store_url) == [("import_classes", _os_user(), 2306)]

    again = invoke("import", "classes", shared_data / "giphy-celebrities.csv", *where)
    assert again.exit_code == 0 and again.stdout.strip().endswith("2306 unchanged (nothing changed)")

    result = invoke("import", "attributes", shared_data / "lfw-people.csv", *where, "--editor", "bob")
    assert result.exit_code == 0, result.output
    # LFW people already in GIPHY's list get attributes; the others become classes
    with open_store(store_url)() as s:
        overlap = s.scalar(select(func.count()).select_from(CelebrityClass).where(CelebrityClass.updated_by == "bob",
                                                                                  CelebrityClass.external_id.is_not(None)))
        total = s.scalar(select(func.count()).select_from(CelebrityClass))
        brody = s.scalars(select(CelebrityClass).where(CelebrityClass.name == "Adrien Brody")).one()
    assert total == 2306 + int(result.stdout.split(": ")[1].split(" classes created")[0])
    row = next(r for r in csv.DictReader((shared_data / "lfw-people.csv").open()) if r["name"] == "Adrien_Brody")
    assert overlap > 0 and (brody.gender, brody.ethnicity, brody.updated_by) == (row["gender"], row["ethnicity"], "bob")
    assert audit(store_url)[-1][:2] == ("import_attributes", "bob")

    skip = tmp_path / "people.csv"
    skip.write_text("name,gender\nNobody_Known,female\n")
    result = invoke("import", "attributes", skip, *where, "--skip-missing")
    assert result.exit_code == 0 and "no class named 'Nobody Known'" in result.stderr
    assert result.stdout.strip().endswith("1 skipped (nothing changed)")


@pytest.mark.parametrize("command, content, message", [
    ("classes", "Label,Index\nBrad_Pitt_[m.0c6qh],0\nBrad_Pitt_[m.0c6qh],1\n",
     "line 3: label 'Brad_Pitt_[m.0c6qh]' repeats line 2"),
    ("classes", "Brad_Pitt_[m.0c6qh],0\n", "line 1: the header"),
    ("attributes", "nope\n", "lacks column(s) name"),
    ("attributes", "name,gender\nA,male\na,female\n", "line 3: 'a' repeats line 2"),
    ("tags", "file,uploader_tags\nx.gif,a\nx.gif,b\n", "line 3: file 'x.gif' repeats line 2"),
])
def test_bad_input_exits_1_with_the_message_and_writes_nothing(store_url, tmp_path, command, content, message):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    result = invoke("import", command, bad, "--data-dir", tmp_path / "data", "--database-url", store_url)
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and f"error: {bad}" in result.stderr and message in result.stderr
    assert audit(store_url) == []


def test_missing_files_and_folders_exit_1(store_url, tmp_path):
    where = ["--data-dir", tmp_path / "data", "--database-url", store_url]
    result = invoke("import", "tags", tmp_path / "missing.csv", *where)
    assert result.exit_code == 1 and "missing.csv: cannot read" in result.stderr
    result = invoke("import", "raw-dataset", tmp_path, *where)
    assert result.exit_code == 1 and "expected labels.csv and a raw_dataset/ folder" in result.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    result = invoke("export", tmp_path / "full", *where)
    assert result.exit_code == 1 and "not empty" in result.stderr
    result = invoke("export", tmp_path / "full", *where, "--overwrite")
    assert result.exit_code == 1 and "not a giflens export" in result.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"


def test_tags_report_files_that_are_not_ingested(store_url, tmp_path, shared_data):
    result = invoke("import", "tags", shared_data / "gifs.csv", "--data-dir", tmp_path / "data",
                    "--database-url", store_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "import tags from gifs.csv: 0 tags written, 0 unchanged, 63 skipped (nothing changed)"
    assert "gifs.csv: line 2: aint-nobody-got-time-for-that.gif is not ingested" in result.stderr
    assert "... and 13 more skipped" in result.stderr


@pytest.mark.slow
def test_raw_dataset_import_then_export(store_url, tmp_path, lfw_dir, cli_data_dir):
    raw = tmp_path / "giphy"
    people = {"Hugo_Chavez_[m.0d1b_]": "Hugo_Chavez", "Serena_Williams_[m.0c_1x]": "Serena_Williams"}
    for label, person in people.items():
        (raw / "raw_dataset" / label).mkdir(parents=True)
        for photo in sorted((lfw_dir / person).glob("*.jpg"))[:2]:
            (raw / "raw_dataset" / label / photo.name).write_bytes(photo.read_bytes())
    (raw / "labels.csv").write_text("Labels,Index\n" + "".join(f"{label},{i}\n" for i, label in enumerate(people)))
    where = ["--data-dir", cli_data_dir, "--database-url", store_url]

    result = invoke("import", "raw-dataset", raw, *where, "--editor", "ann")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith(
        "import raw dataset from giphy: 4 images, 2 classes created, 4 labels approved, 0 unchanged (audit event")
    with open_store(store_url)() as s:
        labels = s.execute(select(CelebrityClass.name, CelebrityClass.external_id, FaceLabel.status, FaceLabel.source,
                                  FaceLabel.editor).join(FaceLabel, FaceLabel.class_id == CelebrityClass.id)).all()
    assert sorted(labels) == [("Hugo Chavez", "m.0d1b_", "approved", "import", "ann")] * 2 + \
        [("Serena Williams", "m.0c_1x", "approved", "import", "ann")] * 2
    again = invoke("import", "raw-dataset", raw, *where, "--editor", "ann")
    assert again.exit_code == 0 and again.stdout.strip().endswith("4 unchanged (nothing changed)")

    out = tmp_path / "export"
    result = invoke("export", out, *where, "--split", "0.5", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"exported 2 classes, 4 faces (train 2, val 2), 0 tagged media, 4 projector vectors to {out}")
    assert verify_export(out) == []
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["editor"], manifest["split"]["seed"], manifest["split"]["share"]) == (_os_user(), 3, 0.5)
    assert (out / "labels.csv").read_text() == "Label,Index\nHugo_Chavez_[m.0d1b_],0\nSerena_Williams_[m.0c_1x],1\n"

    refused = invoke("export", out, *where)
    assert refused.exit_code == 1 and "not empty" in refused.stderr
    replaced = invoke("export", out, *where, "--overwrite", "--editor", "bob", "--split", "0")
    assert replaced.exit_code == 0 and "(train 4, val 0)" in replaced.stdout
    assert json.loads((out / "manifest.json").read_text())["editor"] == "bob" and verify_export(out) == []
    with open_store(store_url)() as s:
        assert [e.editor for e in s.scalars(select(Export).order_by(Export.id))] == [_os_user(), "bob"]
    result = invoke("export", tmp_path / "other", *where, "--split", "1.5")
    assert result.exit_code == 1 and "split must be in [0, 1)" in result.stderr
