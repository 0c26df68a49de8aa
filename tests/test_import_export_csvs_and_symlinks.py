"""Import and export: another store's earlier export, editors' attributes on re-import,
symlinked images and OUT_DIRs, header spellings, spreadsheet CSVs, an export imported into its own store,
the no-validation note, and label indices an import cannot keep."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import photo_faces
from sqlalchemy import func, select

from labeling.audit import undo_event
from labeling.classes import add_class, clear_class_attributes, rename_class, set_class_attributes
from labeling.db import open_store
from labeling.errors import ValidationError
from labeling.export import (EarlierSides, PreviousExportError, export_dataset, read_earlier_sides, sides_to_keep,
                             verify_export)
from labeling.importers import (import_attributes, import_classes, import_raw_dataset, import_tags, own_export,
                                read_attributes_csv)
from labeling.schema import CelebrityClass, Export, Face, FaceLabel, Media
from models.settings import Settings

PERSON = "George_W_Bush"


def count(store, model, *where) -> int:
    with store() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def class_named(store, name: str) -> CelebrityClass:
    with store() as s:
        return s.scalars(select(CelebrityClass).where(CelebrityClass.name == name)).one()


def store_with_classes(url: str, data: Path, lfw_dir: Path, names: list[str], start: int = 0, per_class: int = 2):
    """A store whose classes (created in the order given) each hold `per_class` confirmed faces."""
    store = open_store(url)
    faces = photo_faces(store, data, lfw_dir / PERSON, per_class * len(names), start=start)
    for i, name in enumerate(names):
        add_class(store, name, "ann", seed_face_ids=faces[i * per_class:(i + 1) * per_class])
    return store


def indices(out: Path) -> dict[str, int]:
    return {r["name"]: int(r["index"]) for r in csv.DictReader((out / "classes.csv").open(encoding="utf-8"))}


# -- 1: an earlier export of another store ----------------------------------------------------------------
def test_another_stores_earlier_export_is_matched_by_name_not_by_class_id(store_url, tmp_path, lfw_dir):
    """Store B created Cee before Bee, store A the other way round: B's class ids name A's other class.
    Given B's export as `previous`, A's classes keep B's indices by name (and a note says so); an export
    with no class in common is refused; A's own export, renamed since, or as a bare copy of its
    classes.csv, keeps its indices by id."""
    a = store_with_classes(store_url, tmp_path / "data-a", lfw_dir, ["Bee", "Cee"], per_class=4)
    b = store_with_classes(f"sqlite:///{tmp_path / 'b.db'}", tmp_path / "data-b", lfw_dir, ["Cee", "Bee"], start=10,
                           per_class=4)
    export_dataset(b, tmp_path / "data-b", tmp_path / "b-v1", "bob")
    assert indices(tmp_path / "b-v1") == {"Cee": 0, "Bee": 1}
    assert class_named(a, "Bee").id == class_named(b, "Cee").id  # the same id, another class

    followed = export_dataset(a, tmp_path / "data-a", tmp_path / "a-v1", "ann", previous=tmp_path / "b-v1")
    assert indices(tmp_path / "a-v1") == {"Cee": 0, "Bee": 1}
    assert len(followed.notes) == 1 and "2 of its 2 classes were found by name" in followed.notes[0]
    assert followed.notes == followed.manifest["notes"]

    c = store_with_classes(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "data-c", lfw_dir, ["Dee", "Eee"], start=20)
    export_dataset(c, tmp_path / "data-c", tmp_path / "c-v1", "cid")
    with pytest.raises(PreviousExportError, match="none of its 2 classes is a class of this store"):
        export_dataset(a, tmp_path / "data-a", tmp_path / "a-v2", "ann", previous=tmp_path / "c-v1")
    assert not (tmp_path / "a-v2").exists()

    # this store's own export: trusted when recorded and intact, checked by id and former names otherwise
    rename_class(a, class_named(a, "Cee").id, "Cecilia", "ann")
    own = export_dataset(a, tmp_path / "data-a", tmp_path / "a-v3", "ann", previous=tmp_path / "a-v1")
    assert indices(tmp_path / "a-v3") == {"Cecilia": 0, "Bee": 1} and own.notes == []
    shutil.copy(tmp_path / "a-v1" / "classes.csv", tmp_path / "bare-map.csv")  # no manifest vouches for it
    bare = export_dataset(a, tmp_path / "data-a", tmp_path / "a-v4", "ann", previous=tmp_path / "bare-map.csv")
    assert indices(tmp_path / "a-v4") == {"Cecilia": 0, "Bee": 1} and bare.notes == []


# -- 2: attributes an editor set or cleared survive a re-import ------------------------------------------
def test_reimported_attributes_keep_what_an_editor_set_or_cleared(store_url, tmp_path):
    store = open_store(store_url)
    path = tmp_path / "people.csv"
    path.write_text("name,gender,country,birth_year\nBrad_Pitt,male,United States,1963\n"
                    "Angelina_Jolie,female,United States,1975\n", encoding="utf-8")
    assert import_attributes(store, path).created == 2
    brad, angie = class_named(store, "Brad Pitt").id, class_named(store, "Angelina Jolie").id
    set_class_attributes(store, brad, "ann", gender="nonbinary")
    clear_class_attributes(store, brad, "ann", ["country"])
    again = import_attributes(store, path)
    assert (again.updated, again.kept, again.unchanged, again.event_id) == (0, 1, 1, None), again.line()
    assert "1 kept (editor's decision)" in again.line()
    brad_now = class_named(store, "Brad Pitt")
    assert (brad_now.gender, brad_now.country, brad_now.birth_year) == ("nonbinary", None, 1963)

    # an undone edit is no decision: a newer file's value goes in as if the editor had never touched it
    undone = set_class_attributes(store, angie, "ann", birth_year=1980)
    undo_event(store, undone.event_id, "ann")
    path.write_text("name,birth_year\nAngelina_Jolie,1976\nBrad_Pitt,1964\n", encoding="utf-8")
    newer = import_attributes(store, path)
    assert (newer.updated, newer.kept) == (2, 0), newer.line()
    assert (class_named(store, "Angelina Jolie").birth_year, class_named(store, "Brad Pitt").birth_year) == (1976, 1964)
    # a value the file gives for an attribute nobody set still fills (a class an editor created empty)
    add_class(store, "Tom Hanks", "ann", attributes={"country": "Canada"})
    (tmp_path / "tom.csv").write_text("name,gender,country\nTom_Hanks,male,United States\n", encoding="utf-8")
    tom = import_attributes(store, tmp_path / "tom.csv")
    assert (tom.updated, tom.kept, tom.unchanged) == (1, 1, 0)  # gender in, the editor's country kept
    assert tom.notes == [f"{tmp_path / 'tom.csv'}: line 2: class 'Tom Hanks' keeps its country 'Canada', as an "
                         "editor left it (the file says 'United States')"]
    assert (class_named(store, "Tom Hanks").gender, class_named(store, "Tom Hanks").country) == ("male", "Canada")


def test_a_raw_dataset_import_leaves_cleared_class_details_empty(store_url, tmp_path):
    """An export's classes.csv fills empty class details; one an editor cleared stays empty."""
    store = open_store(store_url)
    raw = tmp_path / "export"
    (raw / "raw_dataset" / "Ariel_Sharon").mkdir(parents=True)
    (raw / "labels.csv").write_text("Label,Index\nAriel_Sharon,0\n", encoding="utf-8")
    (raw / "classes.csv").write_text("folder,index,class_id,name,external_id,display_name,status,gender,ethnicity,"
                                     "birth_year,country\nAriel_Sharon,0,7,Ariel Sharon,m.0test0,Arik,active,male,,"
                                     "1928,Israel\n", encoding="utf-8")
    settings = Settings(data_dir=tmp_path / "data", database_url=store_url)
    assert import_raw_dataset(store, raw, settings).created == 1
    sharon = class_named(store, "Ariel Sharon").id
    clear_class_attributes(store, sharon, "ann", ["gender", "country"])
    rename_class(store, sharon, "Ariel Sharon", "ann", display_name="")
    again = import_raw_dataset(store, raw, settings)
    assert (again.updated, again.kept, again.event_id) == (0, 1, None), again.line()
    now = class_named(store, "Ariel Sharon")
    assert (now.display_name, now.gender, now.birth_year, now.country) == (None, None, 1928, None)


# -- 3: images and class folders linked in --------------------------------------------------------------
@pytest.fixture(scope="module")
def model_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("giflens-round6-data")


@pytest.mark.slow
def test_symlinked_images_and_class_folders_are_labeled_or_reported(tmp_path, lfw_dir, model_data_dir):
    """B holds a link to one of A's photos, and class folder C links to A's folder: each such photo is
    filed under two classes, so it is reported and left unlabeled, never silently skipped; the rest
    are labeled. Every image is either labeled or named in a note."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    raw = tmp_path / "giphy" / "raw_dataset"
    for person, label in (("Ariel_Sharon", "A"), ("Hugo_Chavez", "B")):
        (raw / label).mkdir(parents=True)
        for photo in sorted((lfw_dir / person).glob("*.jpg"))[:2]:
            shutil.copy(photo, raw / label / photo.name)
    first_a = sorted((raw / "A").iterdir())[0]
    (raw / "B" / "linked.jpg").symlink_to(Path("..") / "A" / first_a.name)
    (raw.parent / "labels.csv").write_text("Label,Index\nA,0\nB,1\n", encoding="utf-8")
    summary = import_raw_dataset(store, raw.parent, Settings(data_dir=model_data_dir, database_url=url))
    notes = "\n".join(summary.skipped)
    assert (summary.images, summary.labels) == (5, 3), notes
    assert "linked.jpg: the same image is also under A/; not labeled" in notes
    with store() as s:
        labeled = dict(s.execute(select(Media.path, CelebrityClass.name).select_from(FaceLabel)
                                 .join(Face, Face.id == FaceLabel.face_id).join(Media, Media.id == Face.media_id)
                                 .join(CelebrityClass, CelebrityClass.id == FaceLabel.class_id)).all())
    assert str(first_a) not in labeled and len(labeled) == 3

    (raw / "C").symlink_to("A", target_is_directory=True)
    (raw.parent / "labels.csv").write_text("Label,Index\nA,0\nB,1\nC,2\n", encoding="utf-8")
    again = import_raw_dataset(store, raw.parent, Settings(data_dir=model_data_dir, database_url=url))
    notes = "\n".join(again.skipped)
    assert again.images == 7
    for photo in sorted((raw / "C").iterdir()):
        assert f"{photo}: the same image is also under A/; not labeled" in notes, notes


# -- 4: attribute headers in any case ---------------------------------------------------------------------
def test_attribute_headers_match_in_any_case_and_unknown_columns_are_noted(store_url, tmp_path):
    store = open_store(store_url)
    path = tmp_path / "people.csv"
    path.write_text("name,Gender, COUNTRY ,Birth Year,photos,gendre\nBrad_Pitt,male,United States,1963,3,x\n",
                    encoding="utf-8")
    summary = import_attributes(store, path)
    brad = class_named(store, "Brad Pitt")
    assert (brad.gender, brad.country, brad.birth_year) == ("male", "United States", 1963)
    assert summary.notes == [f"{path}: line 1: column {c!r} is neither name nor an attribute (gender, ethnicity, "
                             "birth_year, country); ignored" for c in ("photos", "gendre")]
    assert summary.skipped == [] and "skipped" not in summary.line()  # notes on columns are no skipped rows
    assert [r.values for r in read_attributes_csv(path)] == [{"gender": "male", "country": "United States",
                                                             "birth_year": 1963}]


# -- 5, 6: OUT_DIR a symlink, or a long name ---------------------------------------------------------------
def test_an_out_dir_that_is_a_symlink_exports_into_the_folder_it_names(store_url, tmp_path, lfw_dir):
    store = store_with_classes(store_url, tmp_path / "data", lfw_dir, ["Bee"])
    (tmp_path / "exports" / "v1").mkdir(parents=True)
    link = tmp_path / "exports" / "latest"
    link.symlink_to("v1", target_is_directory=True)
    first = export_dataset(store, tmp_path / "data", link, "ann")
    assert first.out_dir == tmp_path / "exports" / "v1" and verify_export(tmp_path / "exports" / "v1") == []
    again = export_dataset(store, tmp_path / "data", link, "ann", overwrite=True, seed=3)
    assert link.is_symlink() and verify_export(link) == [] and again.manifest["editor"] == "ann"
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["latest", "v1"]
    with store() as s:
        assert list(s.scalars(select(Export.out_dir))) == [str(tmp_path / "exports" / "v1")] * 2
    with pytest.raises(ValidationError, match="not empty"):
        export_dataset(store, tmp_path / "data", link, "ann")
    loop = tmp_path / "exports" / "loop"
    loop.symlink_to("loop")
    with pytest.raises(ValidationError, match="cannot be followed"):
        export_dataset(store, tmp_path / "data", loop, "ann")


def test_overwriting_an_export_with_a_long_name_works(store_url, tmp_path, lfw_dir):
    """The earlier export is moved aside under a hidden name with a suffix: it must fit 255 bytes too."""
    store = store_with_classes(store_url, tmp_path / "data", lfw_dir, ["Bee"])
    out = tmp_path / ("é" * 120 + "x" * 5)  # 245 bytes
    export_dataset(store, tmp_path / "data", out, "ann")
    again = export_dataset(store, tmp_path / "data", out, "bob", overwrite=True, seed=2)
    assert again.manifest["editor"] == "bob" and verify_export(out) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- 7: an export imported back into its own store -----------------------------------------------------
def test_an_export_imported_into_its_own_store_is_refused(store_url, tmp_path, lfw_dir):
    store = store_with_classes(store_url, tmp_path / "data", lfw_dir, ["Bee", "Cee"])
    out = tmp_path / "v1"
    export_dataset(store, tmp_path / "data", out, "ann")
    settings = Settings(data_dir=tmp_path / "data", database_url=store_url)
    media = count(store, Media)
    with pytest.raises(ValidationError, match=r"is an export of this store \(export 1, written to .*v1\): importing"):
        import_raw_dataset(store, out, settings)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    manifest["editor"] = "someone else"  # edited: no recorded manifest, but classes and media are this store's
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ValidationError, match="confirmed here already in the class its classes.csv names"):
        import_raw_dataset(store, out, settings)
    assert count(store, Media) == media
    other = open_store(f"sqlite:///{tmp_path / 'other.db'}")
    with other() as s:
        assert own_export(s, out) is None  # another store may import it


# -- 8: spreadsheet CSVs ---------------------------------------------------------------------------------
def test_empty_trailing_columns_are_ignored_and_a_semicolon_file_is_named(store_url, tmp_path):
    store = open_store(store_url)
    path = tmp_path / "labels.csv"
    path.write_text("Labels,Index,,\nBrad_Pitt_[m.0c6qh],0,,\n,,,\nAngelina_Jolie,1,,\n", encoding="utf-8")
    assert import_classes(store, path).created == 2
    path.write_text("Labels,Index,,\nTom_Hanks,2,x,\n", encoding="utf-8")  # a value without a column: ignored, noted
    notes = import_classes(store, path).notes  # (and Tom, alone with labels-less classes, would be exported as 0)
    assert [n for n in notes if "label indices" not in n] == [f"{path}: line 1: column 3 has no name in the header; "
                                                              "its values (e.g. 'x' on line 2) are ignored"]
    for sep, said in ((";", "';'"), ("\t", "a tab")):
        path.write_text(f"Labels{sep}Index\nTom_Hanks{sep}2\n", encoding="utf-8")
        with pytest.raises(ValidationError, match=f"the file seems to use {said} as separator; save it as "
                                                  "comma-separated CSV"):
            import_classes(store, path)
    people = tmp_path / "people.csv"
    people.write_text("name,gender,,\nBrad_Pitt,male,,\n", encoding="utf-8")
    assert import_attributes(store, people).updated == 1 and class_named(store, "Brad Pitt").gender == "male"
    people.write_text("name;gender\nBrad_Pitt;male\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="seems to use ';' as separator"):
        import_attributes(store, people)
    tags = tmp_path / "tags.csv"
    tags.write_text("file;uploader_tags\na.gif;x\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="seems to use ';' as separator"):
        import_tags(store, tags)


# -- 9: the no-validation note ----------------------------------------------------------------------------
def test_the_no_validation_note_says_the_share_the_earlier_export_was_written_with(store_url, tmp_path, lfw_dir):
    """Classes of one face each give no validation faces at a share of 0.2: the note must not claim a share of 0."""
    store = store_with_classes(store_url, tmp_path / "data", lfw_dir, ["Bee", "Cee"], per_class=1)
    assert export_dataset(store, tmp_path / "data", tmp_path / "v1", "ann", split=0.2).val == 0
    later = export_dataset(store, tmp_path / "data", tmp_path / "v2", "ann", split=0.2, previous=tmp_path / "v1")
    assert len(later.notes) == 1 and "share of 0)" not in later.notes[0]
    assert f"{tmp_path / 'v1'} has no validation faces (written with a validation share of 0.2, yet none" in later.notes[0]
    assert read_earlier_sides(tmp_path / "v1").share == 0.2
    _, [zero] = sides_to_keep(EarlierSides(Path("/x/split.csv"), {}, {3: "train"}, 0.0), 0.2)
    _, [unknown] = sides_to_keep(EarlierSides(Path("/x/split.csv"), {}, {3: "train"}), 0.2)
    assert "/x has no validation faces (written with a validation share of 0):" in zero
    assert "/x has no validation faces: its label indices" in unknown


# -- 10: label indices an import cannot keep --------------------------------------------------------------
def test_label_indices_an_export_would_not_keep_are_noted(store_url, tmp_path):
    store = open_store(store_url)
    path = tmp_path / "labels.csv"
    path.write_text("Labels,Index\nBrad_Pitt_[m.0c6qh],5\nAngelina_Jolie,0\n", encoding="utf-8")
    summary = import_classes(store, path)
    assert summary.notes == [f"{path}: line 2: label indices are not kept: an export numbers the classes it holds "
                               "0..n-1 in the order they were created (this store's labeled classes first) unless it "
                               "follows an earlier export, and a fresh one would give 2 of the 2 here another index "
                               "than the file (e.g. 'Brad_Pitt_[m.0c6qh]': 5 in the file, 0 in an export)"]
    path.write_text("Labels,Index\nBrad_Pitt_[m.0c6qh],0\nAngelina_Jolie,1\n", encoding="utf-8")
    assert import_classes(store, path).notes == []
