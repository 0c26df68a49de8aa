"""The retraining export stays stable from one export to the next: each earlier face keeps its train /
validation side, the CLI keeps the newest export's label indices by default, mirrored and cropped
copies of a photo share a side, and classes.csv carries every class attribute."""
from __future__ import annotations

import csv
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import photo_faces
from PIL import Image, ImageOps
from sqlalchemy import select, update
from typer.testing import CliRunner

from labeling.classes import add_class, set_class_attributes
from labeling.cli import app
from labeling.db import open_store, session_scope
from labeling.errors import ValidationError
from labeling.export import (SAME_PHOTO_DISTANCE, EarlierSides, PreviousExportError, copy_groups, earlier_exports,
                             earlier_group_sides, export_dataset, newest_export, read_class_indices,
                             read_earlier_sides, read_previous, same_photo_pairs, sides_to_keep,
                             validation_shortfall, verify_export)
from labeling.face_labels import relabel_faces
from labeling.importers import import_raw_dataset
from labeling.schema import (CelebrityClass, Face, FaceEmbedding, FaceLabel, Media, bytes_to_vector)
from models.settings import Settings

PERSON = "George_W_Bush"  # enough photos for a split with room on both sides


@pytest.fixture(scope="module")
def model_data_dir(tmp_path_factory) -> Path:
    """Embedding cache and face crops shared by this module's real-model tests."""
    return tmp_path_factory.mktemp("giflens-stability-data")


def split_rows(out: Path) -> dict[int, dict[str, str]]:
    return {int(r["face_id"]): r for r in csv.DictReader((out / "split.csv").open(encoding="utf-8"))}


def sides(out: Path) -> dict[int, str]:
    return {f: r["side"] for f, r in split_rows(out).items()}


# -- pure ------------------------------------------------------------------------------------------
def test_groups_keep_their_earlier_side_and_one_uniting_both_sides_trains():
    groups = {1: [1, 2], 3: [3], 4: [4, 5], 6: [6, 7], 8: [8]}
    earlier = {1: "train", 3: "val", 4: "val", 5: "val", 6: "val", 7: "train"}
    kept, both = earlier_group_sides(groups, earlier)
    assert kept == {1: "train", 3: "val", 4: "val", 6: "train"} and both == {6}  # group 8 is new: not kept
    kept, both = earlier_group_sides(groups, earlier, no_validation=True)
    assert set(kept.values()) == {"train"} and both == {6}


def test_same_photo_pairs_match_brute_force_per_class_in_chunks():
    rng = np.random.default_rng(5)
    faces = []
    for m in range(120):
        cls = m % 3
        base = rng.normal(size=16) if m < 60 else faces[m - 60][2]  # media 60.. copy media 0..59 (same class)
        faces.append((cls, m, base + rng.normal(scale=0.01, size=16)))
    faces.append((0, 500, np.zeros(16)))  # placeholders are no identity: they join nothing
    faces.append((0, 501, np.zeros(16)))
    faces.append((1, 61, faces[0][2]))  # the copy of media 0's face, but of another class: no pair
    expected = {tuple(sorted((a[1], b[1]))) for a, b in itertools.combinations(faces, 2)
                if a[0] == b[0] and a[1] != b[1] and np.linalg.norm(a[2]) > 0 and np.linalg.norm(b[2]) > 0
                and np.linalg.norm(a[2] - b[2]) <= 0.1}
    assert same_photo_pairs(faces, 0.1, chunk=7) == expected == same_photo_pairs(faces, 0.1)
    assert expected == {(m, m + 60) for m in range(60)}
    assert same_photo_pairs([], 0.1) == set()


def test_earlier_sides_match_by_sha256_else_media_id_and_bad_rows_are_refused(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "split.csv").write_text(
        "face_id,class_id,label,media_id,group,side,sha256\n1,1,A,10,10,train,aa\n2,1,A,11,10,val,\n"
        "3,1,A,12,12,val,cc\n4,1,A,12,12,train,cc\n", encoding="utf-8")
    earlier = read_earlier_sides(tmp_path / "new" / "classes.csv")  # the class map's folder holds split.csv
    assert earlier.side_of(99, "aa") == "train"  # content, not id: a media item re-ingested since has a new id
    assert earlier.side_of(10, "zz") is None  # a row with a sha256 is not matched by its id alone
    assert earlier.side_of(11, "bb") == "val"  # a row without one is
    assert earlier.side_of(12, "cc") == "train"  # listed on both sides (hand-edited): the safe side
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "split.csv").write_text("face_id,class_id,label,media_id,group,side\n1,1,A,10,10,val\n")
    assert read_earlier_sides(tmp_path / "old").side_of(10, "aa") == "val"  # before the sha256 column
    assert read_earlier_sides(tmp_path) is None  # a bare class map keeps indices only
    for text, message in [("media_id,side\n1,test\n", "line 2: side must be train or val"),
                          ("media_id,side\nx,val\n", "line 2: media_id must be a whole number"),
                          ("media,side\n1,val\n", "lacks column")]:
        (tmp_path / "bad").mkdir(exist_ok=True)
        (tmp_path / "bad" / "split.csv").write_text(text)
        with pytest.raises(ValidationError, match=message):
            read_earlier_sides(tmp_path / "bad")


def test_an_earlier_export_without_validation_gives_no_sides_and_a_short_validation_is_said():
    only_train = EarlierSides(Path("/x/split.csv"), {"aa": "train"}, {3: "train"})
    with_val = EarlierSides(Path("/x/split.csv"), {"aa": "train"}, {3: "val"})
    assert not only_train.has_validation and with_val.has_validation
    kept, notes = sides_to_keep(only_train, 0.2)
    assert kept is None and len(notes) == 1 and "/x has no validation faces" in notes[0]
    assert sides_to_keep(only_train, 0.0) == (only_train, [])  # no validation asked: nothing is lost
    assert sides_to_keep(with_val, 0.2) == (with_val, []) and sides_to_keep(None, 0.2) == (None, [])
    assert "validation holds 8 of 40 faces (20%), under half the 50% asked for: 27 face(s)" in \
        validation_shortfall(8, 40, 0.5, 27)
    assert validation_shortfall(8, 40, 0.5, 0) is None  # short, but not because of kept sides
    assert validation_shortfall(10, 40, 0.5, 27) is None  # exactly half: not far below
    assert validation_shortfall(0, 0, 0.5, 0) is None and validation_shortfall(0, 40, 0.0, 40) is None


def test_copy_groups_join_hash_neighbours_and_copies_of_one_photo():
    rng = np.random.default_rng(1)
    face = rng.normal(size=8)
    hashes = {1: ["ffff0000ffff0000"], 2: ["ffff0000ffff0001"], 3: ["0f0f0f0f0f0f0f0f"], 4: ["f0f0f0f0f0f0f0f0"]}
    faces = [("a", 3, face), ("a", 4, face + 0.001), ("b", 1, rng.normal(size=8))]
    groups, pairs = copy_groups(hashes, faces, 0.1)
    assert pairs == {(3, 4)} and groups == {1: 1, 2: 1, 3: 3, 4: 3}
    assert copy_groups(hashes, faces, None) == ({1: 1, 2: 1, 3: 3, 4: 4}, set())  # a model nobody measured


# -- export without models ------------------------------------------------------------------------
def test_faces_keep_their_earlier_side_when_more_are_confirmed(store_url, tmp_path, lfw_dir):
    """Export 1, then more faces are confirmed: with the earlier export every face keeps its side
    (a model fine-tuned on export 1 is never validated on its own training faces); the new faces
    are split by the share; a group that now unites both sides trains; a share of 0 trains all."""
    store = open_store(store_url)
    data = tmp_path / "data"
    faces = photo_faces(store, data, lfw_dir / PERSON, 40)
    cls, _ = add_class(store, "George W Bush", "ann")
    first, later = faces[:30], faces[30:]
    relabel_faces(store, first, cls, "ann")
    one = export_dataset(store, data, tmp_path / "v1", "ann", split=0.3)
    s1 = sides(tmp_path / "v1")
    assert list(s1.values()).count("val") == 9 and one.manifest["split"]["earlier_sides"] is None

    relabel_faces(store, later, cls, "ann")
    two = export_dataset(store, data, tmp_path / "v2", "ann", split=0.3, previous=tmp_path / "v1")
    s2 = sides(tmp_path / "v2")
    assert all(s2[f] == s1[f] for f in first)
    assert [s2[f] for f in later].count("val") == 3  # the share of the new faces
    assert two.manifest["split"]["earlier_sides"] == {
        "split_csv": str((tmp_path / "v1" / "split.csv").absolute()), "faces_kept_side": 30,
        "faces_moved_to_train": 0, "faces_new": 10, "groups_uniting_both_sides": 0}
    assert verify_export(tmp_path / "v2") == []

    # an export written before split.csv named sha256 is matched by media id
    old = tmp_path / "v1-old"
    shutil.copytree(tmp_path / "v1", old)
    rows = list(csv.DictReader((old / "split.csv").open(encoding="utf-8")))
    with (old / "split.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[c for c in rows[0] if c != "sha256"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert {f: s for f, s in sides(export_dataset(store, data, tmp_path / "v2-old", "ann", split=0.3,
                                                  previous=old).out_dir).items() if f in first} == s1

    # a re-upload of a training photo is found only now (same frame hash as a validation photo):
    # their group trains, and the manifest counts the face that moved
    val_face, train_face = next(f for f in first if s1[f] == "val"), next(f for f in first if s1[f] == "train")
    with session_scope(store) as s:
        media_of = dict(s.execute(select(Face.id, Face.media_id)).all())
        hashes = s.get(Media, media_of[train_face]).frame_hashes
        s.execute(update(Media).where(Media.id == media_of[val_face]).values(frame_hashes=hashes))
    three = export_dataset(store, data, tmp_path / "v3", "ann", split=0.3, previous=tmp_path / "v2")
    s3 = sides(tmp_path / "v3")
    assert s3[val_face] == s3[train_face] == "train"
    assert all(s3[f] == s2[f] for f in faces if f != val_face)
    assert three.manifest["split"]["earlier_sides"]["groups_uniting_both_sides"] == 1
    assert three.manifest["split"]["earlier_sides"]["faces_moved_to_train"] == 1

    none = export_dataset(store, data, tmp_path / "v4", "ann", split=0.0, previous=tmp_path / "v3")
    assert none.val == 0 and none.manifest["split"]["earlier_sides"]["faces_moved_to_train"] == three.val


def test_classes_csv_carries_every_class_attribute(store_url, tmp_path, lfw_dir):
    store = open_store(store_url)
    data = tmp_path / "data"
    faces = photo_faces(store, data, lfw_dir / PERSON, 3)
    bush, _ = add_class(store, "George W Bush", "ann", display_name="George W. Bush", external_id="m.09b6zr",
                        seed_face_ids=faces[:2])
    set_class_attributes(store, bush, "ann", gender="male", ethnicity="white", birth_year=1946,
                         country="United States")
    add_class(store, "Unknown, Someone", "ann", status="proposed", seed_face_ids=faces[2:])
    out = export_dataset(store, data, tmp_path / "out", "ann").out_dir
    text = (out / "classes.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0] == ("folder,index,class_id,name,external_id,display_name,status,gender,ethnicity,"
                                    "birth_year,country")
    rows = list(csv.DictReader(text.splitlines()))
    assert [{k: v for k, v in r.items() if k not in ("folder", "index", "class_id")} for r in rows] == [
        {"name": "George W Bush", "external_id": "m.09b6zr", "display_name": "George W. Bush", "status": "active",
         "gender": "male", "ethnicity": "white", "birth_year": "1946", "country": "United States"},
        {"name": "Unknown, Someone", "external_id": "", "display_name": "", "status": "proposed", "gender": "",
         "ethnicity": "", "birth_year": "", "country": ""}]
    assert read_class_indices(out) == {int(r["class_id"]): int(r["index"]) for r in rows} == {bush: 0, bush + 1: 1}


def test_cli_export_keeps_the_newest_exports_indices_by_default(store_url, tmp_path, lfw_dir):
    """An older class that gets its first face (normal after `giflens import classes`) would take
    its creation-order index and push every later class up; by default the CLI keeps the newest
    earlier export's indices, says which export it followed, and --no-previous starts afresh."""
    store = open_store(store_url)
    data = tmp_path / "data"
    faces = photo_faces(store, data, lfw_dir / PERSON, 6)
    older, _ = add_class(store, "Imported Early", "ann")
    add_class(store, "Bee", "ann", seed_face_ids=faces[:2])
    add_class(store, "Cee", "ann", seed_face_ids=faces[2:4])
    where = ["--data-dir", str(data), "--database-url", store_url]
    runner = CliRunner()

    def export(out: str, *args: str):
        result = runner.invoke(app, ["export", str(tmp_path / out), *where, *args])
        assert result.exit_code == 0, result.output
        return result, {r["name"]: int(r["index"]) for r in csv.DictReader((tmp_path / out / "classes.csv").open())}

    first, indices = export("v1", "--split", "0.5")  # a validation face per class: sides worth keeping
    assert indices == {"Bee": 0, "Cee": 1} and "newest earlier export" not in first.stderr
    relabel_faces(store, faces[4:], older, "ann")
    second, indices = export("v2")
    assert indices == {"Bee": 0, "Cee": 1, "Imported Early": 2}
    assert f"newest earlier export {tmp_path / 'v1'}" in second.stderr
    assert second.stdout.startswith("exported 3 classes") and len(second.stdout.splitlines()) == 1
    manifest = json.loads((tmp_path / "v2" / "manifest.json").read_text())
    assert manifest["previous_export"] == str(tmp_path / "v1") and manifest["split"]["earlier_sides"]["faces_new"] == 2
    assert newest_export(store) == tmp_path / "v2"
    _, indices = export("v3", "--no-previous")
    assert indices == {"Imported Early": 0, "Bee": 1, "Cee": 2}
    assert "previous_export" not in json.loads((tmp_path / "v3" / "manifest.json").read_text())
    named, indices = export("v4", "--previous", str(tmp_path / "v1"))  # named: nothing to announce
    assert indices == {"Bee": 0, "Cee": 1, "Imported Early": 2} and "newest earlier export" not in named.stderr
    shutil.rmtree(tmp_path / "v4")  # the newest on disk is the one followed
    _, indices = export("v5")
    assert indices == {"Imported Early": 0, "Bee": 1, "Cee": 2}
    both = runner.invoke(app, ["export", str(tmp_path / "v6"), *where, "--previous", str(tmp_path / "v1"),
                               "--no-previous"])
    assert both.exit_code == 1 and "contradict" in both.stderr and not (tmp_path / "v6").exists()


def test_an_all_train_earlier_export_keeps_indices_but_the_split_is_drawn_anew(store_url, tmp_path, lfw_dir):
    """Exported once with a share of 0 (allowed): every face trains. Kept, those sides would keep every
    earlier face in training in every later default export, validation getting new media only."""
    store = open_store(store_url)
    data = tmp_path / "data"
    faces = photo_faces(store, data, lfw_dir / PERSON, 30)
    cls, _ = add_class(store, "George W Bush", "ann")
    relabel_faces(store, faces, cls, "ann")
    assert export_dataset(store, data, tmp_path / "v1", "ann", split=0.0).val == 0
    later = export_dataset(store, data, tmp_path / "v2", "ann", split=0.3, previous=tmp_path / "v1")
    fresh = export_dataset(store, data, tmp_path / "fresh", "ann", split=0.3)
    assert later.val == 9 and sides(tmp_path / "v2") == sides(tmp_path / "fresh")
    assert later.manifest["split"]["earlier_sides"] is None and later.manifest["class_index_order"] == "previous export"
    assert later.notes == later.manifest["notes"] and len(later.notes) == 1
    assert f"{tmp_path / 'v1'} has no validation faces" in later.notes[0] and fresh.notes == []
    assert json.loads((tmp_path / "v2" / "manifest.json").read_text())["notes"] == later.notes


def test_a_validation_set_kept_sides_leave_short_is_said(store_url, tmp_path, lfw_dir):
    store = open_store(store_url)
    data = tmp_path / "data"
    faces = photo_faces(store, data, lfw_dir / PERSON, 40)
    cls, _ = add_class(store, "George W Bush", "ann")
    relabel_faces(store, faces[:30], cls, "ann")
    assert export_dataset(store, data, tmp_path / "v1", "ann", split=0.1).val == 3
    relabel_faces(store, faces[30:], cls, "ann")
    short = export_dataset(store, data, tmp_path / "v2", "ann", split=0.5, previous=tmp_path / "v1")
    assert short.val == 3 + 5 and short.notes == short.manifest["notes"]
    assert short.notes == [validation_shortfall(8, 40, 0.5, 27)]
    assert export_dataset(store, data, tmp_path / "v3", "ann", split=0.1, previous=tmp_path / "v1").notes == []


def test_only_intact_exports_of_this_store_are_followed(store_url, tmp_path, lfw_dir):
    """An export folder another store's export replaced, or whose classes.csv or split.csv someone
    edited, is no longer the export the store recorded: the next newest intact one is followed."""
    store = open_store(store_url)
    data = tmp_path / "data"
    faces = photo_faces(store, data, lfw_dir / PERSON, 4)
    add_class(store, "Bee", "ann", seed_face_ids=faces)
    for name in ("v1", "v2", "v3"):
        export_dataset(store, data, tmp_path / name, "ann")
    assert earlier_exports(store) == [tmp_path / "v3", tmp_path / "v2", tmp_path / "v1"]
    with (tmp_path / "v3" / "classes.csv").open("a", encoding="utf-8") as f:
        f.write("Cee,1,99,Cee,,,active,,,,\n")  # edited by hand
    (tmp_path / "v2" / "split.csv").write_text("face_id,class_id,label,media_id,group,side,sha256\n")
    assert newest_export(store) == tmp_path / "v1" and earlier_exports(store) == [tmp_path / "v1"]
    # another store's export into the same folder: a manifest this store never recorded
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    other = open_store(other_url)
    add_class(other, "Bee", "bob", seed_face_ids=photo_faces(other, data, lfw_dir / PERSON, 2, start=10))
    export_dataset(other, data, tmp_path / "v1", "bob", overwrite=True)
    assert newest_export(store) is None and earlier_exports(other) == [tmp_path / "v1"]
    # exported into twice by this store: listed once, the newest record is the one on disk
    export_dataset(store, data, tmp_path / "v1", "ann", overwrite=True)
    export_dataset(store, data, tmp_path / "v1", "ann", overwrite=True, seed=3)
    assert earlier_exports(store) == [tmp_path / "v1"]
    (tmp_path / "v1" / "manifest.json").write_text("not json")
    assert earlier_exports(store) == []


def test_cli_says_which_earlier_export_it_follows_before_running_and_in_its_error(store_url, tmp_path, lfw_dir,
                                                                                  monkeypatch):
    store = open_store(store_url)
    data = tmp_path / "data"
    add_class(store, "Bee", "ann", seed_face_ids=photo_faces(store, data, lfw_dir / PERSON, 2))
    export_dataset(store, data, tmp_path / "v1", "ann")
    (tmp_path / "v1" / "split.csv").write_text("media_id,side\n1,test\n")  # unreadable as sides
    monkeypatch.setattr("labeling.export.newest_export", lambda _store: tmp_path / "v1")
    where = ["--data-dir", str(data), "--database-url", store_url]
    failed = CliRunner().invoke(app, ["export", str(tmp_path / "v2"), *where])
    assert failed.exit_code == 1 and not (tmp_path / "v2").exists()
    said, error = failed.stderr.splitlines()[0], failed.stderr.rstrip()  # said before the run, then the error
    assert said == (f"keeping label indices and train / validation sides of the newest earlier export "
                    f"{tmp_path / 'v1'} (--no-previous to start afresh)")
    assert error.endswith("side must be train or val, got 'test' (the newest earlier export, used by default; "
                          "--no-previous to skip)")
    named = CliRunner().invoke(app, ["export", str(tmp_path / "v2"), *where, "--previous", str(tmp_path / "v1")])
    assert named.exit_code == 1 and "used by default" not in named.stderr and "newest earlier" not in named.stderr
    with pytest.raises(PreviousExportError, match="line 2: side must be train or val"):
        read_previous(tmp_path / "v1")


# -- real models: mirrored and cropped copies ------------------------------------------------------
@pytest.mark.slow
def test_mirrored_and_cropped_copies_never_straddle_the_split(store_url, tmp_path, lfw_dir, model_data_dir):
    """Re-uploads of a photo, resized, cropped by a few pixels or mirrored, move the frame pHash by
    up to ~30 bits but the face embedding (dlib's averages the face and its mirror) barely: the
    export's second signal keeps every copy on the side of its photo, while different photos of one
    person stay apart."""
    raw = tmp_path / "giphy"
    people = ["Al_Gore", "Adrien_Brody"]
    for person in people:
        folder = raw / "raw_dataset" / person
        folder.mkdir(parents=True)
        for src in sorted((lfw_dir / person).glob("*.jpg"))[:3]:
            with Image.open(src) as im:
                im = im.convert("RGB")
                shutil.copy(src, folder / src.name)
                im.resize((200, 200)).save(folder / f"{src.stem}_small.jpg", quality=60)
                im.crop((6, 6, 244, 244)).save(folder / f"{src.stem}_crop.jpg", quality=90)
                ImageOps.mirror(im).save(folder / f"{src.stem}_mirror.jpg", quality=90)
    (raw / "labels.csv").write_text("Label,Index\n" + "".join(f"{p},{i}\n" for i, p in enumerate(people)))
    store = open_store(store_url)
    summary = import_raw_dataset(store, raw, Settings(data_dir=model_data_dir, database_url=store_url), "ann")
    assert summary.labels == 24, summary.skipped

    with store() as s:
        rows = s.execute(select(Media.path, FaceEmbedding.vector, CelebrityClass.name)
                         .join(Face, Face.media_id == Media.id).join(FaceEmbedding, FaceEmbedding.face_id == Face.id)
                         .join(FaceLabel, FaceLabel.face_id == Face.id)
                         .join(CelebrityClass, CelebrityClass.id == FaceLabel.class_id)).all()
    photo = {Path(p).stem: Path(p).stem.split("_small")[0].split("_crop")[0].split("_mirror")[0] for p, _, _ in rows}
    vector = {Path(p).stem: (bytes_to_vector(v), c) for p, v, c in rows}
    copies, others = [], []
    for a, b in itertools.combinations(vector, 2):
        if vector[a][1] == vector[b][1]:
            (copies if photo[a] == photo[b] else others).append(float(np.linalg.norm(vector[a][0] - vector[b][0])))
    threshold = SAME_PHOTO_DISTANCE["dlib-resnet-v1"]
    assert max(copies) < threshold < min(others), (max(copies), min(others))

    out = tmp_path / "export"
    result = export_dataset(store, model_data_dir, out, "ann", split=0.5)
    with store() as s:
        stem_of = {f: Path(p).stem for f, p in s.execute(select(Face.id, Media.path).join(Media, Media.id == Face.media_id))}
    side_of_photo: dict[str, set[str]] = {}
    group_of_photo: dict[str, set[str]] = {}
    for face, row in split_rows(out).items():
        side_of_photo.setdefault(photo[stem_of[face]], set()).add(row["side"])
        group_of_photo.setdefault(photo[stem_of[face]], set()).add(row["group"])
    assert len(side_of_photo) == 6 and all(len(s) == 1 for s in side_of_photo.values()), side_of_photo
    assert all(len(g) == 1 for g in group_of_photo.values())
    assert len(set().union(*group_of_photo.values())) == 6  # different photos are not joined
    assert result.val > 0 and result.train > 0
    assert result.manifest["split"]["same_photo_distance"] == threshold
    assert result.manifest["split"]["groups"] == 6 and verify_export(out) == []
