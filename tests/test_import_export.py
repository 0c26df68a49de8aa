"""Imports of GIPHY's layouts and reference CSVs, and the export for retraining, on both stores."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from labeling.classes import add_class
from labeling.db import open_store
from labeling.errors import ValidationError
from labeling.export import export_dataset, near_duplicate_groups, safe_folder_name, unique_folder_names
from labeling.face_labels import relabel_faces
from labeling.importers import (import_attributes, import_classes, import_raw_dataset, import_tags,
                                parse_giphy_label, read_labels_csv)
from labeling.ingest import ingest
from labeling.schema import AuditEvent, CelebrityClass, Face, FaceLabel, Media, MediaTag
from models.settings import Settings

PEOPLE = ["Ariel_Sharon", "Hugo_Chavez", "Serena_Williams"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One data folder (embedding cache and face crops) shared by these tests: each photo is inferred once."""
    return tmp_path_factory.mktemp("giflens-data")


def count(store, model, *where) -> int:
    with store() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def test_parse_giphy_names():
    assert parse_giphy_label("Brad_Pitt_[m.0c6qh]") == ("Brad Pitt", "m.0c6qh")
    assert parse_giphy_label("50_Cent_[m.01vvyc_]") == ("50 Cent", "m.01vvyc_")
    assert parse_giphy_label("Tony_Blair") == ("Tony Blair", None)


def test_giphy_class_list_imports_once(store_url, shared_data):
    store = open_store(store_url)
    first = import_classes(store, shared_data / "giphy-celebrities.csv")
    assert first.created == 2306 and first.event_id is not None
    with store() as s:
        brad = s.scalars(select(CelebrityClass).where(CelebrityClass.name == "Brad Pitt")).one()
        assert brad.external_id == "m.0c6qh" and brad.status == "active"
    again = import_classes(store, shared_data / "giphy-celebrities.csv")
    assert (again.created, again.unchanged, again.event_id) == (0, 2306, None)
    assert count(store, AuditEvent) == 1


def test_attributes_import_keeps_unknown_unknown(store_url, shared_data):
    store = open_store(store_url)
    summary = import_attributes(store, shared_data / "lfw-people.csv")
    assert summary.created == 423
    rows = list(csv.DictReader((shared_data / "lfw-people.csv").open()))
    with store() as s:
        by_name = {c.name: c for c in s.scalars(select(CelebrityClass))}
    for row in rows[:50]:
        cls = by_name[row["name"].replace("_", " ")]
        assert cls.gender == (row["gender"] or None)
        assert cls.ethnicity == (row["ethnicity"].lower() or None)
    again = import_attributes(store, shared_data / "lfw-people.csv")
    assert (again.created, again.updated, again.event_id) == (0, 0, None)


@pytest.mark.parametrize("content, message", [
    ("Name,Number\nA,0\n", "lacks column"),
    ("Label,Index\nA,0\nA,1\n", "line 3: label 'A' repeats line 2"),
    ("Label,Index\nA,0\nB,0\n", "index 0 repeats"),
    ("Labels,Index\nA,zero\n", "not an integer"),
    ("Label,Index\n../etc,0\n", "looks like a path"),
])
def test_bad_class_lists_are_refused_whole(store_url, tmp_path, content, message):
    store = open_store(store_url)
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(ValidationError, match=message):
        import_classes(store, path)
    assert count(store, CelebrityClass) == 0


def make_raw_dataset(root: Path, lfw_dir: Path, per_person: int = 2) -> Path:
    (root / "raw_dataset").mkdir(parents=True)
    with (root / "labels.csv").open("w") as f:
        f.write("Label,Index\n")
        for i, person in enumerate(PEOPLE):
            label = f"{person}_[m.test{i}]"
            f.write(f"{label},{i}\n")
            (root / "raw_dataset" / label).mkdir()
            for photo in sorted((lfw_dir / person).glob("*.jpg"))[:per_person]:
                (root / "raw_dataset" / label / photo.name).write_bytes(photo.read_bytes())
    return root


@pytest.mark.slow
def test_raw_dataset_import_export_round_trip(store_url, tmp_path, lfw_dir, data_dir):
    store = open_store(store_url)
    settings = Settings(data_dir=data_dir, database_url=store_url)
    raw = make_raw_dataset(tmp_path / "giphy", lfw_dir)
    summary = import_raw_dataset(store, raw, settings)
    assert (summary.created, summary.labels) == (3, 6), summary.skipped
    with store() as s:
        labels = s.execute(select(CelebrityClass.name, FaceLabel.source, FaceLabel.status)
                           .join(FaceLabel, FaceLabel.class_id == CelebrityClass.id)).all()
    assert sorted(set(labels)) == [(p.replace("_", " "), "import", "approved") for p in PEOPLE]
    assert import_raw_dataset(store, raw, settings).labels == 0  # idempotent

    # hostile but valid class names still export to safe folders
    with store() as s:
        faces = list(s.scalars(select(FaceLabel.face_id).order_by(FaceLabel.face_id)))
    con, _ = add_class(store, "CON", "ann")
    relabel_faces(store, faces[:1], con, "ann")
    emoji, _ = add_class(store, "Zoë 🎬 \"quoted\"", "ann")
    relabel_faces(store, faces[2:3], emoji, "ann")  # faces come two per person

    out = tmp_path / "export"
    result = export_dataset(store, data_dir, out, "ann", val_share=0.34)
    assert result.faces == 6 and result.classes == 5
    manifest = json.loads((out / "manifest.json").read_text())
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest
    assert manifest["label_provenance"] == {"editor/relabeled": 2, "import/approved": 4}
    rows = list(csv.DictReader((out / "labels.csv").open(encoding="utf-8")))
    assert [int(r["Index"]) for r in rows] == list(range(5))
    folders = {r["Label"] for r in rows}
    assert "_CON" in folders and "Zoë_🎬__quoted" in folders
    assert all(len(list((out / "raw_dataset" / f).glob("*.jpg"))) >= 1 for f in folders)
    assert len((out / "projector" / "vectors.tsv").read_text().splitlines()) == 6
    assert not list(tmp_path.glob(".export.tmp-*"))

    # importing the export into a fresh store gives the same classes and confirmed labels
    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    fresh = open_store(fresh_url)
    again = import_raw_dataset(fresh, out, Settings(data_dir=data_dir, database_url=fresh_url))
    assert again.labels == 6
    def catalog(st):
        with st() as s:
            return sorted(s.execute(select(CelebrityClass.name, func.count(FaceLabel.id))
                                    .join(FaceLabel, FaceLabel.class_id == CelebrityClass.id)
                                    .group_by(CelebrityClass.name)).all())
    assert catalog(fresh) == catalog(store)
    with pytest.raises(ValidationError, match="not empty"):
        export_dataset(store, data_dir, out, "ann")


@pytest.mark.slow
def test_near_duplicates_stay_on_one_side_and_tags_export(store_url, tmp_path, gifs_dir, shared_data, data_dir):
    store = open_store(store_url)
    settings = Settings(data_dir=data_dir, database_url=store_url)
    src = gifs_dir / "are-you-a-cop.gif"
    copy = tmp_path / "copy" / "are-you-a-cop-small.gif"
    copy.parent.mkdir()
    with Image.open(src) as im:
        frames = []
        try:
            while True:
                frames.append(im.convert("RGB").resize((im.width * 3 // 4, im.height * 3 // 4)))
                im.seek(im.tell() + 1)
        except EOFError:
            pass
        frames[0].save(copy, save_all=True, append_images=frames[1:], duration=im.info.get("duration", 80), loop=0)
    ingest([src, copy, gifs_dir / "aint-nobody-got-time-for-that.gif"], settings, store=store)
    summary = import_tags(store, shared_data / "gifs.csv")
    assert summary.created >= 2 and any("not ingested" in s for s in summary.skipped)
    assert import_tags(store, shared_data / "gifs.csv").created == 0
    with store() as s:
        media = dict(s.execute(select(Media.path, Media.id)).all())
        faces = list(s.scalars(select(Face.id).where(Face.media_id.in_([media[str(src)], media[str(copy)]]))))
    assert faces, "the test GIF has faces"
    cls, _ = add_class(store, "Cop", "ann")
    relabel_faces(store, faces, cls, "ann")
    out = tmp_path / "export"
    export_dataset(store, data_dir, out, "ann", val_share=0.5)
    split = list(csv.DictReader((out / "split.csv").open()))
    sides = {r["media_id"]: r["side"] for r in split}
    groups = {r["media_id"]: r["group"] for r in split}
    assert groups[str(media[str(src)])] == groups[str(media[str(copy)])]
    assert sides[str(media[str(src)])] == sides[str(media[str(copy)])]
    lines = [json.loads(l) for l in (out / "tags.jsonl").read_text().splitlines()]
    cop = next(l for l in lines if l["path"] == str(src))
    assert ["cop", 1.0] in cop["tags"]


def test_interrupted_export_leaves_nothing(store_url, tmp_path):
    store = open_store(store_url)
    with store() as s, s.begin():
        media = Media(sha256="f" * 64, path="/x.gif", kind="gif", status="ok")
        s.add(media)
        s.flush()
        s.add(Face(media_id=media.id, face_index=0, frame_index=0, x1=0, y1=0, x2=5, y2=5, probability=1.0, landmarks=[]))
    with store() as s:
        face = s.scalar(select(Face.id))
    cls, _ = add_class(store, "A", "ann")
    relabel_faces(store, [face], cls, "ann")

    def crash(done, total):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        export_dataset(store, tmp_path, tmp_path / "out", "ann", on_progress=crash)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "store.db" and not p.name.startswith("store.db")) == []


def test_safe_folder_names():
    assert safe_folder_name("CON") == "_CON"
    assert safe_folder_name("nul.txt") == "_nul.txt"
    assert safe_folder_name("../../etc") == "etc"
    assert safe_folder_name("a:b*c?") == "a_b_c"
    assert safe_folder_name("trailing. ") == "trailing"
    assert safe_folder_name("Brad Pitt", "m.0c6qh") == "Brad_Pitt_[m.0c6qh]"
    names = unique_folder_names([(1, "Ann", None), (2, "ANN", None)])
    assert names == {1: "Ann", 2: "ANN_2"}


def test_near_duplicate_groups():
    a = "0f0f0f0f0f0f0f0f"
    near = f"{int(a, 16) ^ 0b111:016x}"
    far = f"{int(a, 16) ^ (2**40 - 1):016x}"
    groups = near_duplicate_groups({1: [a], 2: [far, near], 3: [far[::-1]], 4: []})
    assert groups[1] == groups[2] == 1 and groups[3] == 3 and groups[4] == 4


def test_cli_import_and_export_errors(tmp_path, shared_data):
    from labeling.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["import", "classes", str(shared_data / "giphy-celebrities.csv"), "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("classes: created 2306, updated 0, unchanged 0")
    bad = tmp_path / "bad.csv"
    bad.write_text("nope\n")
    result = runner.invoke(app, ["import", "attributes", str(bad), "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "lacks column" in result.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result = runner.invoke(app, ["export", str(tmp_path / "full"), "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "not empty" in result.output
