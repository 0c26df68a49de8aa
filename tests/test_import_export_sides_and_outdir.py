"""Import / export defects, each failing without its fix: an export imported into another store
lost every earlier side (its crops are new media there), so training faces became validation faces; a file
saved into OUT_DIR, or another export finished into it, while an export ran was deleted; an existing empty
OUT_DIR in a folder that cannot be written was refused as if it had to be created; an interrupted delete of a
replaced export left a hidden full copy for good; an export of an upgraded store (two classes whose names fold
alike) could not be imported; a tag with an invisible character was refused without its file and line; an
attributes file named "Laura_Bush" created "Laura Bush" beside it; a class folder named in decomposed Unicode
was missed."""
from __future__ import annotations

import csv
import json
import shutil
import unicodedata
from pathlib import Path

import pytest
from conftest import photo_faces, unprivileged
from PIL import Image
from sqlalchemy import select
from test_import_export_csvs_and_symlinks import PERSON, class_named, count, store_with_classes
from test_store_older_class_keys import _stale_pairs

from embeddings.cache import sha256_file
from labeling.classes import add_class
from labeling.db import open_store
from labeling.errors import ValidationError
from labeling.export import (EarlierSides, earlier_group_pairs, export_dataset, intact_export, no_face_kept,
                             read_earlier_sides, remove_stale_temporaries, verify_export)
from labeling.face_labels import approve_faces
from labeling.importers import import_attributes, import_raw_dataset, import_tags, scan_raw_dataset
from labeling.schema import CelebrityClass, Export, FaceLabel, Media
from models.settings import Settings
from conftest import split_rows


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- 1. an export imported into another store keeps its sides -------------------------------------------------
def test_earlier_sides_find_an_imported_crop_by_its_bytes_and_older_split_files_still_read(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "split.csv").write_text(
        "face_id,class_id,label,media_id,group,side,sha256,crop_sha256\n"
        "1,1,A,10,10,train,m10,c1\n2,1,A,10,10,train,m10,c2\n3,1,A,11,11,val,m11,c3\n4,1,A,12,12,val,m12,c4\n"
        "5,1,A,12,12,train,m12,c4\n", encoding="utf-8")
    earlier = read_earlier_sides(tmp_path / "new")
    assert earlier.side_of(99, "c1") == earlier.side_of(98, "c2") == "train"  # crops of one clip, imported
    assert earlier.side_of(97, "c3") == "val" and earlier.key_of(97, "c3") == ("crop", "c3")
    assert earlier.side_of(96, "c4") == "train"  # two crops byte for byte alike on both sides: the safe one
    assert earlier.side_of(10, "m10") == "train" and earlier.side_of(95, "zz") is None
    # the crops of one earlier group (one clip) are joined here, whatever their media ids
    assert earlier_group_pairs(earlier, {99: "c1", 98: "c2", 97: "c3", 10: "m10", 95: "zz"}) == [(99, 98), (99, 10)]

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "split.csv").write_text("face_id,class_id,label,media_id,group,side,sha256\n"
                                                "1,1,A,10,10,val,m10\n", encoding="utf-8")
    old = read_earlier_sides(tmp_path / "old")
    assert old.side_of(10, "m10") == "val" and old.by_crop_sha256 == {}
    assert "records no sha256 of its face crops" in no_face_kept(old)
    assert "records no" not in no_face_kept(earlier)
    assert EarlierSides(Path("/x/split.csv"), {}, {}, None, {"c": "val"}).has_validation


def test_an_earlier_export_keeping_no_face_on_its_side_is_noted(store_url, tmp_path, lfw_dir):
    """Store B holds the classes of store A (same names, same ids) but other photos: A's export following B's
    keeps B's indices, but no face of it is B's, and the editor hears it; of an export written before split.csv
    recorded crop sha256s, the note says why its crops cannot be found."""
    a = store_with_classes(store_url, tmp_path / "data-a", lfw_dir, ["Bee", "Cee"], per_class=4)
    b = store_with_classes(f"sqlite:///{tmp_path / 'b.db'}", tmp_path / "data-b", lfw_dir, ["Bee", "Cee"], start=10,
                           per_class=4)
    export_dataset(b, tmp_path / "data-b", tmp_path / "b-v1", "bob")
    followed = export_dataset(a, tmp_path / "data-a", tmp_path / "a-v1", "ann", previous=tmp_path / "b-v1")
    note = no_face_kept(read_earlier_sides(tmp_path / "b-v1"))
    assert followed.notes == followed.manifest["notes"] == [f"{tmp_path / 'b-v1'}: {note}"]
    assert "no face keeps an earlier side" in followed.notes[0] and "records no" not in followed.notes[0]

    rows = split_rows(tmp_path / "b-v1")
    with (tmp_path / "b-v1" / "split.csv").open("w", encoding="utf-8", newline="") as f:  # as an older giflens wrote it
        writer = csv.DictWriter(f, [c for c in rows[0] if c != "crop_sha256"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    older = export_dataset(a, tmp_path / "data-a", tmp_path / "a-v2", "ann", previous=tmp_path / "b-v1")
    assert len(older.notes) == 1 and "records no sha256 of its face crops" in older.notes[0]
    own = export_dataset(a, tmp_path / "data-a", tmp_path / "a-v3", "ann", previous=tmp_path / "a-v1")
    assert own.notes == [] and own.manifest["split"]["earlier_sides"]["faces_new"] == 0


@pytest.fixture(scope="module")
def model_data_dir(tmp_path_factory) -> Path:
    """Embedding cache and face crops shared by this module's real-model tests."""
    return tmp_path_factory.mktemp("giflens-round9-data")


@pytest.mark.slow
def test_an_export_imported_into_another_store_keeps_every_face_on_its_side(store_url, tmp_path, lfw_dir, gifs_dir,
                                                                          model_data_dir):
    """Store A imports a GIF of one person and stills of another and exports; store B imports that export
    (each crop becomes a media item of its own) and exports following it: every face keeps its side, no face
    A's export trained on is a validation face of B's, and the GIF's crops stay one group."""
    raw = tmp_path / "ds" / "raw_dataset"
    (raw / "Jennifer_Lawrence").mkdir(parents=True)
    (raw / "Al_Gore").mkdir()
    shutil.copyfile(gifs_dir / "jlaw-nods.gif", raw / "Jennifer_Lawrence" / "jlaw-nods.gif")
    for photo in sorted((lfw_dir / "Al_Gore").glob("*.jpg"))[:6]:
        shutil.copyfile(photo, raw / "Al_Gore" / photo.name)
    (raw.parent / "labels.csv").write_text("Label,Index\nJennifer_Lawrence,0\nAl_Gore,1\n", encoding="utf-8")
    a = open_store(store_url)
    import_raw_dataset(a, raw.parent, Settings(data_dir=model_data_dir, database_url=store_url), "ann")
    first = export_dataset(a, model_data_dir, tmp_path / "eA", "ann", split=0.5)
    assert first.val > 0 and first.train > 1

    b_url = f"sqlite:///{tmp_path / 'b.db'}"
    b = open_store(b_url)
    imported = import_raw_dataset(b, tmp_path / "eA", Settings(data_dir=model_data_dir, database_url=b_url), "bob")
    assert imported.labels == first.faces, imported.skipped
    second = export_dataset(b, model_data_dir, tmp_path / "eB", "bob", split=0.5, previous=tmp_path / "eA")

    earlier = {r["crop_sha256"]: r for r in split_rows(tmp_path / "eA")}
    with b() as s:
        sha_of = dict(s.execute(select(Media.id, Media.sha256)).all())
    later = [(earlier[sha_of[int(r["media_id"])]], r) for r in split_rows(tmp_path / "eB")]
    assert len(later) == first.faces and all(e["side"] == r["side"] for e, r in later)
    assert second.manifest["split"]["earlier_sides"]["faces_kept_side"] == first.faces and second.notes == []
    clip = {r["group"] for e, r in later if e["label"] == "Jennifer_Lawrence"}
    assert len([e for e, _ in later if e["label"] == "Jennifer_Lawrence"]) > 1 and len(clip) == 1


# -- 2. what appears in OUT_DIR while an export runs is never deleted ----------------------------------------------
def test_a_file_saved_into_out_dir_while_the_export_runs_is_kept(store_url, tmp_path, lfw_dir):
    data = tmp_path / "data"
    store = store_with_classes(store_url, data, lfw_dir, ["Bee", "Cee"])
    exports = tmp_path / "exports"
    out = exports / "out"
    out.mkdir(parents=True)  # made beforehand, empty: accepted

    def save_a_file(done: int, total: int) -> None:
        if done == 1:
            (out / "README.txt").write_text("do not delete")

    with pytest.raises(ValidationError, match=rf"^{out} changed while the export ran \(it is not empty any more\); "
                                              "it is left as it is and this export was not kept"):
        export_dataset(store, data, out, "ann", on_progress=save_a_file)
    assert [p.name for p in out.iterdir()] == ["README.txt"] and (out / "README.txt").read_text() == "do not delete"
    assert hidden(exports) == [] and count(store, Export) == 0

    # an earlier export replaced with overwrite, into which someone saves a file meanwhile: refused too
    shutil.rmtree(out)
    export_dataset(store, data, out, "ann")

    def add_to_the_export(done: int, total: int) -> None:
        if done == 1:
            (out / "model.pt").write_text("weights")

    with pytest.raises(ValidationError, match=r"changed while the export ran \(it holds an earlier export plus 1 "
                                              r"file\(s\) its manifest does not list: model.pt"):
        export_dataset(store, data, out, "ann", overwrite=True, on_progress=add_to_the_export)
    assert (out / "model.pt").read_text() == "weights" and hidden(exports) == [] and count(store, Export) == 1


def test_two_exports_into_one_new_folder_never_replace_each_other_unasked(store_url, tmp_path, lfw_dir):
    data = tmp_path / "data"
    store = store_with_classes(store_url, data, lfw_dir, ["Bee", "Cee"])
    out = tmp_path / "exports" / "out"
    done = {}

    def bob_finishes_first(n: int, total: int) -> None:
        if n == 1 and "bob" not in done:
            done["bob"] = export_dataset(store, data, out, "bob", split=0.5)

    with pytest.raises(ValidationError, match="changed while the export ran"):
        export_dataset(store, data, out, "ann", on_progress=bob_finishes_first)
    assert json.loads((out / "manifest.json").read_text())["editor"] == "bob" and verify_export(out) == []
    with store() as s:
        rows = s.execute(select(Export.editor, Export.out_dir, Export.manifest)).all()
    assert [(e, d) for e, d, _ in rows] == [("bob", str(out))] and intact_export(out, rows[0][2]["manifest_sha256"])

    done.clear()  # with overwrite, an export another one finished meanwhile is an export: it may be replaced
    shutil.rmtree(out)
    replaced = export_dataset(store, data, out, "ann", overwrite=True, on_progress=bob_finishes_first)
    assert json.loads((out / "manifest.json").read_text())["editor"] == "ann" and verify_export(out) == []
    assert hidden(out.parent) == [] and replaced.faces == 4


# -- 3. an existing empty OUT_DIR in a folder that cannot be written ------------------------------------------------
def test_an_empty_out_dir_in_a_folder_that_cannot_be_written_is_refused_saying_why(shared_tmp, lfw_dir):
    data = shared_tmp / "data"
    store = store_with_classes(f"sqlite:///{shared_tmp / 'store.db'}", data, lfw_dir, ["Bee", "Cee"])
    for path in [shared_tmp, *shared_tmp.rglob("*")]:  # the store and crops are anyone's: only the parent is not
        path.chmod(0o777 if path.is_dir() else 0o666)
    locked = shared_tmp / "locked"
    (locked / "out").mkdir(parents=True, mode=0o777)
    (locked / "out").chmod(0o777)
    locked.chmod(0o555)
    try:
        with unprivileged(), pytest.raises(ValidationError) as refused:
            export_dataset(store, data, locked / "out", "ann")
    finally:
        locked.chmod(0o755)
    assert str(refused.value) == (
        f"cannot export into {locked / 'out'}: an export is built in a hidden folder beside it and renamed into place "
        f"at the end, and {locked} cannot be written (Permission denied); choose an OUT_DIR in a folder you can "
        "write, or make that folder writable")
    assert list((locked / "out").iterdir()) == [] and count(store, Export) == 0


# -- 4. an interrupted delete of a replaced export ------------------------------------------------------------------
def test_a_replaced_export_is_deleted_even_when_interrupted_or_by_the_next_export(store_url, tmp_path, lfw_dir,
                                                                                 monkeypatch):
    data = tmp_path / "data"
    store = store_with_classes(store_url, data, lfw_dir, ["Bee", "Cee"])
    exports = tmp_path / "exports"
    out = exports / "out"
    export_dataset(store, data, out, "ann")
    real, calls = shutil.rmtree, []

    def ctrl_c_once(path, *args, **kwargs):  # the editor's Ctrl-C while the replaced export is deleted
        if ".out.old-" in str(path) and not calls:
            calls.append(path)
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", ctrl_c_once)
    with pytest.raises(KeyboardInterrupt):
        export_dataset(store, data, out, "ann", overwrite=True, seed=3)
    monkeypatch.setattr(shutil, "rmtree", real)
    assert calls and hidden(exports) == [] and verify_export(out) == [] and count(store, Export) == 2

    # what a kill leaves while it goes: a whole earlier export, or part of one whose manifest (deleted last)
    # still vouches for what is left, or empty folders; a folder of that name holding anything else stays
    whole, part, empty, other = (exports / f".out.old-0000000{n}" for n in "abcd")
    shutil.copytree(out, whole)
    shutil.copytree(out, part)
    shutil.rmtree(part / "raw_dataset")
    (empty / "raw_dataset").mkdir(parents=True)
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    export_dataset(store, data, out, "ann", overwrite=True, seed=4)
    assert hidden(exports) == [other.name]
    assert remove_stale_temporaries(out) == []


# -- 5. an export of an upgraded store ----------------------------------------------------------------------------
def test_an_export_of_an_upgraded_store_with_look_alike_classes_imports(store_url, tmp_path, lfw_dir):
    """"Barış Manço" and "BARIŞ MANÇO" fold alike since migration 0010, which kept both: their export is
    imported into a fresh store (one class for both, noted) and into another upgraded store (each its own)."""
    store, made = _stale_pairs(store_url)
    data = tmp_path / "data"
    for n, name in enumerate(("Barış Manço", "BARIŞ MANÇO")):
        approve_faces(store, photo_faces(store, data, lfw_dir / PERSON, 2, start=2 * n), "ann", class_id=made[name])
    out = tmp_path / "out"
    export_dataset(store, data, out, "ann")
    ds = tmp_path / "ds"  # the export's class map, its class folders empty: the classes are what is imported here
    (ds / "raw_dataset").mkdir(parents=True)
    for name in ("labels.csv", "classes.csv"):
        shutil.copyfile(out / name, ds / name)
    for folder in (out / "raw_dataset").iterdir():
        (ds / "raw_dataset" / folder.name).mkdir()
    labels, names, _, _ = scan_raw_dataset(ds)
    assert sorted(n for n, _ in names.values()) == sorted(["Barış Manço", "BARIŞ MANÇO"])

    fresh = open_store(f"sqlite:///{tmp_path / 'fresh.db'}")
    summary = import_raw_dataset(fresh, ds, Settings(data_dir=tmp_path / "fresh-data"), "imp")
    with fresh() as s:
        assert s.scalars(select(CelebrityClass.name)).all() == [names[labels[0].label][0]]
    assert summary.created == 1 and len([n for n in summary.notes if "this store holds one class for both" in n]) == 1

    other, twins = _stale_pairs(f"sqlite:///{tmp_path / 'other.db'}")
    summary = import_raw_dataset(other, ds, Settings(data_dir=tmp_path / "other-data"), "imp")
    assert summary.created == 0 and not any("one class for both" in n for n in summary.notes)


# -- 6, 7, 8: a tag's file and line, a name written with underscores, decomposed folder names ----------------------
def test_a_tag_with_an_invisible_character_is_refused_with_its_file_and_line(store_url, tmp_path):
    path = tmp_path / "tags.csv"
    path.write_text("file,uploader_tags\nx.jpg,un\ny.jpg,un;cat\u200d;dog\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=rf"^{path}: line 3: tag 'cat\\u200d' contains invisible characters"):
        import_tags(open_store(store_url), path)


def test_an_attributes_file_reaches_a_class_named_with_an_underscore(store_url, tmp_path):
    store = open_store(store_url)
    laura, _ = add_class(store, "Laura_Bush", "ann")
    path = tmp_path / "people.csv"
    path.write_text("name,gender\nLaura_Bush,female\nAdrien_Brody_[m.0abc],male\n", encoding="utf-8")
    summary = import_attributes(store, path)
    assert (summary.created, summary.updated) == (1, 1)
    assert class_named(store, "Laura_Bush").gender == "female" and class_named(store, "Adrien Brody").gender == "male"
    assert count(store, CelebrityClass) == 2


def test_a_class_folder_named_in_decomposed_unicode_is_read(tmp_path, lfw_dir):
    ds = tmp_path / "ds"
    label = unicodedata.normalize("NFC", "Zoë_Saldaña")
    folder = ds / "raw_dataset" / unicodedata.normalize("NFD", label)  # as macOS, or an archive made there, writes it
    folder.mkdir(parents=True)
    photo = folder / "a.jpg"
    Image.open(next(iter(sorted((lfw_dir / PERSON).glob("*.jpg"))))).save(photo)
    (ds / "labels.csv").write_text(f"Label,Index\n{label},0\n", encoding="utf-8")
    labels, names, images, notes = scan_raw_dataset(ds)
    assert images == {label: [photo]} and notes == [] and names[label][0] == unicodedata.normalize("NFC", "Zoë Saldaña")

    (ds / "raw_dataset" / label).mkdir()  # both forms side by side: the exact one is read, the other named
    _, _, images, notes = scan_raw_dataset(ds)
    assert images == {label: []}
    assert notes[-1] == (f"raw_dataset/{folder.name}/: a label's name in another Unicode form, beside the folder of "
                         "that label; not imported")


def test_split_csv_records_each_crops_sha256(store_url, tmp_path, lfw_dir):
    data = tmp_path / "data"
    store = store_with_classes(store_url, data, lfw_dir, ["Bee", "Cee"])
    out = tmp_path / "out"
    export_dataset(store, data, out, "ann")
    rows = split_rows(out)
    crops = [out / "raw_dataset" / r["label"] / f"{r['face_id']}.jpg" for r in rows]
    assert len(rows) == count(store, FaceLabel) == 4
    assert [r["crop_sha256"] for r in rows] == [sha256_file(c) for c in crops]
