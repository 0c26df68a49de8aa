"""Import and export: an export of another store seeded alike, CSVs written by pandas,
the Export page's face model, huge class ids in classes.csv, label indices next to a store's own classes,
kept attributes of an updated class, notes on columns that are no skipped rows, and `make run`'s tags."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, open_app, photo_faces
from sqlalchemy import select
from test_app_pages import button, errors, go, no_exception
from test_cli_settings_and_make_targets import FACENET, giflens_lines, labeled_store, make_dry_run, set_face_model

from labeling.classes import add_class, clear_class_attributes, set_class_attributes
from labeling.db import open_store
from labeling.export import export_dataset
from labeling.importers import import_attributes, import_classes, import_raw_dataset, import_tags, own_export
from labeling.schema import CelebrityClass
from models.settings import Settings

PERSON = "George_W_Bush"
CLASS_HEADER = "folder,index,class_id,name,external_id,display_name,status,gender,ethnicity,birth_year,country\n"


def class_named(store, name: str) -> CelebrityClass:
    with store() as s:
        return s.scalars(select(CelebrityClass).where(CelebrityClass.name == name)).one()


def seeded(url: str, data: Path, lfw_dir: Path, confirmed: bool):
    """A store of four LFW photos (media sha256 as every store seeded from them has) and classes Bee, Cee,
    each holding two of them confirmed, or none (`confirmed=False`: the classes only, as `make run` seeds)."""
    store = open_store(url)
    faces = photo_faces(store, data, lfw_dir / PERSON, 4)
    for i, name in enumerate(["Bee", "Cee"]):
        add_class(store, name, "ann", seed_face_ids=faces[2 * i:2 * i + 2] if confirmed else None)
    return store


# -- 1: only an export whose labels are here already is refused --------------------------------------------
def test_an_export_of_a_store_seeded_alike_is_not_refused(store_url, tmp_path, lfw_dir):
    """Store B holds A's class ids, names and media (seeded the same way), but not A's labels: A's export is
    new labels to B. Once B's editors confirmed the same faces in the same classes, it would duplicate them."""
    a = seeded(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "data-a", lfw_dir, confirmed=True)
    export_dataset(a, tmp_path / "data-a", tmp_path / "a-v1", "ann")
    b = seeded(store_url, tmp_path / "data-b", lfw_dir, confirmed=False)
    assert {c.name: c.id for c in (class_named(b, "Bee"), class_named(b, "Cee"))} == \
        {c.name: c.id for c in (class_named(a, "Bee"), class_named(a, "Cee"))}
    with b() as s:
        assert own_export(s, tmp_path / "a-v1") is None

    with a() as s:  # A's own export, manifest edited: its faces are confirmed there already
        manifest = tmp_path / "a-v1" / "manifest.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "editor": "someone else"}))
        assert "confirmed here already" in own_export(s, tmp_path / "a-v1")
    c = seeded(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "data-c", lfw_dir, confirmed=True)
    with c() as s:  # B's twin with the same labels: importing would label each face twice
        assert "confirmed here already" in own_export(s, tmp_path / "a-v1")


# -- 2: CSVs written by pandas (a row index first) ----------------------------------------------------------
def test_csvs_written_by_pandas_import_with_their_index_column_ignored(store_url, tmp_path):
    store = open_store(store_url)
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"Labels": ["Brad_Pitt_[m.0c6qh]", "Angelina_Jolie"], "Index": [0, 1]}).to_csv(labels)
    assert labels.read_text().startswith(",Labels,Index\n0,")
    summary = import_classes(store, labels)
    assert summary.created == 2 and summary.skipped == []
    assert summary.notes == [f"{labels}: line 1: column 1 has no name in the header; its values (e.g. '0' on line 2) "
                             "are ignored"]
    people = tmp_path / "people.csv"
    pd.DataFrame({"name": ["Brad_Pitt"], "gender": ["male"]}).to_csv(people)
    assert import_attributes(store, people).updated == 1 and class_named(store, "Brad Pitt").gender == "male"
    tags = tmp_path / "tags.csv"
    pd.DataFrame({"file": ["a.gif"], "uploader_tags": ["x"]}).to_csv(tags)
    assert import_tags(store, tags).skipped == [f"{tags}: line 2: a.gif is not ingested"]


def test_a_raw_dataset_with_pandas_csvs_imports(store_url, tmp_path):
    store = open_store(store_url)
    raw = tmp_path / "export"
    (raw / "raw_dataset" / "Ariel_Sharon").mkdir(parents=True)
    pd.DataFrame({"Label": ["Ariel_Sharon"], "Index": [0]}).to_csv(raw / "labels.csv")
    pd.DataFrame({"folder": ["Ariel_Sharon"], "name": ["Ariel Sharon"], "gender": ["male"]}).to_csv(raw / "classes.csv")
    summary = import_raw_dataset(store, raw, Settings(data_dir=tmp_path / "data", database_url=store_url))
    assert summary.created == 1 and class_named(store, "Ariel Sharon").gender == "male"
    assert len(summary.notes) == 2 and all("column 1 has no name in the header" in n for n in summary.notes)


# -- 3: the Export page exports the store's face model, and warns when no face is exported --------------------
@pytest.mark.slow
def test_the_export_page_exports_the_stores_face_model(tmp_path, lfw_dir, monkeypatch):
    """A store ingested with dlib, the app started with GIFLENS_FACE_MODEL=facenet-vggface2: the page exported
    no face at all. It now takes the store's only model, as `giflens export` does."""
    url = f"sqlite:///{tmp_path / 'giflens.db'}"
    labeled_store(url, tmp_path, lfw_dir)
    at = open_app(monkeypatch, tmp_path, url, GIFLENS_FACE_MODEL=FACENET)
    out = run_export(at, tmp_path / "out")
    assert not at.warning or all("No face exported" not in w.value for w in at.warning)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["face_model"], manifest["counts"]["faces"]) == ("dlib-resnet-v1", 4)


@pytest.mark.slow
def test_the_export_page_warns_when_no_face_is_exported(tmp_path, lfw_dir, monkeypatch):
    """Two models: the configured one is used; its faces carry no confirmed label, and the page says so."""
    url = f"sqlite:///{tmp_path / 'giflens.db'}"
    store, ids = labeled_store(url, tmp_path, lfw_dir, faces=4, labeled=2)
    set_face_model(store, ids[2:], FACENET)
    at = open_app(monkeypatch, tmp_path, url, GIFLENS_FACE_MODEL=FACENET)
    out = run_export(at, tmp_path / "out")
    assert json.loads((out / "manifest.json").read_text())["counts"]["faces"] == 0
    assert [w.value for w in at.warning if w.value.startswith("No face exported")] == [
        f"No face exported: none of the 2 confirmed label(s) has a face crop of {FACENET} (faces ingested with "
        "another model? start the app with GIFLENS_FACE_MODEL naming it; crops deleted? ingest again)."]


def run_export(at, out: Path) -> Path:
    at.session_state["editor"] = "ann"
    go(at, "export")
    at.text_input(key="export_out_dir").input(str(out))
    button(at, "Run export").click().run()
    no_exception(at)
    assert not errors(at), errors(at)
    return out


# -- 4: a class id beyond the id column's range -------------------------------------------------------------
def test_a_huge_class_id_in_classes_csv_is_no_crash(store_url, tmp_path):
    """classes.csv ids only tie split.csv to classes.csv: one beyond any integer column is no crash."""
    store = open_store(store_url)
    raw = tmp_path / "export"
    (raw / "raw_dataset" / "Al_Gore").mkdir(parents=True)
    (raw / "labels.csv").write_text("Label,Index\nAl_Gore,0\n", encoding="utf-8")
    (raw / "classes.csv").write_text(CLASS_HEADER + "Al_Gore,0,99999999999999999999,Al Gore,,,active,,,,\n",
                                     encoding="utf-8")
    (raw / "split.csv").write_text("face_id,class_id,label,media_id,group,side,sha256\n"
                                   f"1,99999999999999999999,Al_Gore,1,1,train,{'ab' * 32}\n", encoding="utf-8")
    with store() as s:
        assert own_export(s, raw) is None
    summary = import_raw_dataset(store, raw, Settings(data_dir=tmp_path / "data", database_url=store_url))
    assert summary.created == 1


# -- 5: label indices next to the store's own classes ----------------------------------------------------------
def test_the_index_note_compares_with_the_indices_an_export_would_give(store_url, tmp_path, lfw_dir):
    """A store whose class Zed holds confirmed faces: an export numbers Zed 0, so a file numbering its own
    classes 0, 1 in row order will not come back out. A class without labels is not exported: no shift."""
    store = open_store(store_url)
    add_class(store, "Yan", "ann")  # no labels: never exported, takes no index
    path = tmp_path / "labels.csv"
    path.write_text("Labels,Index\nBrad_Pitt,0\nAngelina_Jolie,1\n", encoding="utf-8")
    assert import_classes(store, path).notes == []
    add_class(store, "Zed", "ann", seed_face_ids=photo_faces(store, tmp_path / "data", lfw_dir / PERSON, 1))
    path.write_text("Labels,Index\nTom_Hanks,0\nMeg_Ryan,1\n", encoding="utf-8")
    assert import_classes(store, path).notes == [
        f"{path}: line 2: label indices are not kept: an export numbers the classes it holds 0..n-1 in the order they "
        "were created (this store's labeled classes first) unless it follows an earlier export, and a fresh one would "
        "give 2 of the 2 here another index than the file (e.g. 'Tom_Hanks': 0 in the file, 1 in an export)"]
    path.write_text("Labels,Index\nBrad_Pitt,0\nAngelina_Jolie,1\nZed,2\n", encoding="utf-8")
    assert import_classes(store, path).notes == []  # Brad, Angelina, Zed: created in that order


# -- 6: kept values of a class that was also updated --------------------------------------------------------
def test_kept_attributes_count_and_are_named_when_the_class_is_updated_too(store_url, tmp_path):
    store = open_store(store_url)
    path = tmp_path / "people.csv"
    path.write_text("name,gender,country\nAdrien_Brody,male,\nAbdullah_Gul,male,\n", encoding="utf-8")
    import_attributes(store, path)
    brody, gul = class_named(store, "Adrien Brody").id, class_named(store, "Abdullah Gul").id
    set_class_attributes(store, brody, "ed", gender="female")
    clear_class_attributes(store, gul, "ed", ["gender"])
    path.write_text("name,gender,country\nAdrien_Brody,male,US\nAbdullah_Gul,male,Turkey\n", encoding="utf-8")
    summary = import_attributes(store, path)
    assert (summary.updated, summary.kept, summary.unchanged) == (2, 2, 0), summary.line()
    assert "2 updated, 0 unchanged, 2 kept (editor's decision)" in summary.line()
    assert summary.notes == [
        f"{path}: line 2: class 'Adrien Brody' keeps its gender 'female', as an editor left it (the file says 'male')",
        f"{path}: line 3: class 'Abdullah Gul' keeps its gender empty, as an editor left it (the file says 'male')"]
    assert (class_named(store, "Adrien Brody").country, class_named(store, "Abdullah Gul").gender) == ("US", None)


def test_a_raw_dataset_counts_a_class_filled_and_kept(store_url, tmp_path):
    """classes.csv fills an empty display name and would fill a gender an editor cleared: filled and kept."""
    store = open_store(store_url)
    cid, _ = add_class(store, "Ariel Sharon", "ann", attributes={"gender": "male"})
    clear_class_attributes(store, cid, "ann", ["gender"])
    raw = tmp_path / "export"
    (raw / "raw_dataset" / "Ariel_Sharon").mkdir(parents=True)
    (raw / "labels.csv").write_text("Label,Index\nAriel_Sharon,0\n", encoding="utf-8")
    (raw / "classes.csv").write_text(CLASS_HEADER + "Ariel_Sharon,0,7,Ariel Sharon,,Arik,active,male,,,\n",
                                     encoding="utf-8")
    summary = import_raw_dataset(store, raw, Settings(data_dir=tmp_path / "data", database_url=store_url))
    assert (summary.updated, summary.kept) == (1, 1), summary.line()
    now = class_named(store, "Ariel Sharon")
    assert (now.display_name, now.gender) == ("Arik", None)


# -- 7: a note on a column is no skipped row -------------------------------------------------------------------
def test_the_shipped_people_file_reports_nothing_skipped(store_url, shared_data):
    store = open_store(store_url)
    path = shared_data / "lfw-people.csv"
    summary = import_attributes(store, path)
    assert summary.skipped == [] and "skipped" not in summary.line(), summary.line()
    assert summary.notes == [f"{path}: line 1: column 'photos' is neither name nor an attribute (gender, ethnicity, "
                             "birth_year, country); ignored"]
    again = import_attributes(store, path)
    assert again.event_id is None and "skipped" not in again.line()


# -- 8: make run's default tags, whatever the spelling of the shared GIFs ------------------------------------
def test_make_run_imports_the_shared_tags_with_the_shared_gifs_however_spelt(tmp_path):
    shared = (ROOT / "../shared/data/gifs").resolve()
    link = tmp_path / "gifs-link"
    os.symlink(shared, link)
    for sample in (str(shared), "./../shared/data/gifs", f"{shared}/", str(link)):
        text = make_dry_run("run", f"SAMPLE={sample}")
        assert 'import tags "../shared/data/gifs.csv"' in text, (sample, giflens_lines(text))
    for sample in (str(tmp_path), str(tmp_path / "nothing-here"), str(shared.parent / "lfw")):
        assert "gifs.csv" not in make_dry_run("run", f"SAMPLE={sample}"), sample
