"""Import / export: one external id never joins two people, only a real export
is replaced, copies filed under two classes share a side, tags rows with folders name one file, a
raw dataset takes every media type ingest reads and names what it leaves out, a short validation set
is said, and a killed export's temporary folder is removed by the next one."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, photo_faces
from PIL import Image, ImageOps
from sqlalchemy import select, update
from test_import_export_csvs_and_symlinks import PERSON, class_named, count, store_with_classes

from labeling.classes import add_class, rename_class
from labeling.db import open_store, session_scope
from labeling.errors import ValidationError
from labeling.export import (copy_groups, export_dataset, remove_stale_temporaries, same_photo_pairs,
                             small_validation, validation_shortfall, verify_export)
from labeling.importers import (import_attributes, import_classes, import_raw_dataset, import_tags, read_attributes_csv,
                                read_class_map, read_labels_csv, scan_raw_dataset)
from labeling.schema import CelebrityClass, Face, FaceEmbedding, FaceLabel, Media, MediaTag, Tag, vector_to_bytes
from models.settings import Settings


def tags_by_path(store) -> dict[str, set[str]]:
    with store() as s:
        rows = s.execute(select(Media.path, Tag.name).join(MediaTag, MediaTag.media_id == Media.id)
                         .join(Tag, Tag.id == MediaTag.tag_id)).all()
    out: dict[str, set[str]] = {}
    for path, tag in rows:
        out.setdefault(path, set()).add(tag)
    return out


def split_sides(out: Path) -> dict[int, str]:
    """media id -> side, from an export's split.csv."""
    return {int(r["media_id"]): r["side"] for r in csv.DictReader((out / "split.csv").open(encoding="utf-8"))}


# -- 1. one external id, two names -------------------------------------------------------------------------
def test_a_file_giving_one_external_id_to_two_names_is_refused_before_anything_is_written(store_url, tmp_path):
    store = open_store(store_url)
    raw = tmp_path / "ds"
    for label in ("Al_Gore_[m.0abc]", "Adrien_Brody_[m.0abc]"):
        (raw / "raw_dataset" / label).mkdir(parents=True)
    (raw / "labels.csv").write_text("Labels,Index\nAl_Gore_[m.0abc],0\nAdrien_Brody_[m.0abc],1\n", encoding="utf-8")
    message = (r"line 3: label 'Adrien_Brody_\[m.0abc\]' has the external id m.0abc of line 2 "
               r"\(label 'Al_Gore_\[m.0abc\]'\): one external id names one person")
    with pytest.raises(ValidationError, match=message):
        read_labels_csv(raw / "labels.csv")
    with pytest.raises(ValidationError, match=message):
        import_raw_dataset(store, raw, Settings(data_dir=tmp_path / "data", database_url=store_url))

    people = tmp_path / "people.csv"
    people.write_text("name,gender\nJohn_Smith_[m.0abc],male\nJane_Doe_[m.0abc],female\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"line 3: 'Jane_Doe_\[m.0abc\]' has the external id m.0abc of line 2"):
        read_attributes_csv(people)
    with pytest.raises(ValidationError, match="one external id names one person"):
        import_attributes(store, people)

    (raw / "classes.csv").write_text("folder,name,external_id\nA,Al Gore,m.0abc\nB,Adrien Brody,m.0abc\n",
                                     encoding="utf-8")
    with pytest.raises(ValidationError, match=r"line 3: class 'Adrien Brody' has the external id m.0abc of line 2"):
        read_class_map(raw / "classes.csv")
    assert count(store, CelebrityClass) == 0 and count(store, Media) == 0
    # one name written twice, or different ids: nothing to refuse
    people.write_text("name,gender\nJohn_Smith_[m.0abc],male\nJane_Doe_[m.0abd],female\n", encoding="utf-8")
    assert len(read_attributes_csv(people)) == 2


def test_a_line_reaching_a_class_by_its_external_id_alone_is_noted(store_url, tmp_path):
    """A class list may spell one person twice (one class, the first spelling), but where the second line
    went is said; so is a line whose id belongs to a class of another name, unless a rename links them."""
    store = open_store(store_url)
    path = tmp_path / "list.csv"
    path.write_text("Labels,Index\nJohn_Smith_[m.0abc],0\nJane_Doe_[m.0abc],1\n", encoding="utf-8")
    summary = import_classes(store, path)
    assert summary.created == 1
    assert summary.skipped == [f"{path}: line 3: 'Jane Doe' went to 'John Smith', which holds its external id m.0abc; "
                               "no class 'Jane Doe' is created: if they are two people, fix the id"]

    gore, _ = add_class(store, "Al Gore", "ann", external_id="m.0d05fv")
    path.write_text("Labels,Index\nAlbert_Gore_[m.0d05fv],0\n", encoding="utf-8")
    assert any("'Albert Gore' went to 'Al Gore', which holds its external id m.0d05fv" in n
               for n in import_classes(store, path).skipped)
    rename_class(store, gore, "Albert Gore", "ann")
    rename_class(store, gore, "Al Gore", "ann")  # once named so: the file's name is this class's former one
    assert import_classes(store, path).skipped == []


# -- 2. only a real export is replaced ---------------------------------------------------------------------
def test_overwrite_replaces_only_a_folder_holding_an_export_and_nothing_else(store_url, tmp_path, lfw_dir):
    store = store_with_classes(store_url, tmp_path / "data", lfw_dir, ["Bee"])
    ext = tmp_path / "myext"
    (ext / "src").mkdir(parents=True)
    (ext / "manifest.json").write_text(json.dumps({"manifest_version": 3, "name": "my chrome extension"}))
    (ext / "src" / "work.txt").write_text("precious")
    with pytest.raises(ValidationError, match=r"is not a giflens export \(its manifest.json is not a "
                                              r"giflens-export/1 manifest\); refusing to overwrite it"):
        export_dataset(store, tmp_path / "data", ext, "ann", overwrite=True)
    (ext / "manifest.json").write_text("{not json")
    with pytest.raises(ValidationError, match="cannot be read as JSON"):
        export_dataset(store, tmp_path / "data", ext, "ann", overwrite=True)
    assert (ext / "src" / "work.txt").read_text() == "precious"

    out = tmp_path / "out"
    export_dataset(store, tmp_path / "data", out, "ann")
    (out / "notes.txt").write_text("my training notes")
    (out / "raw_dataset" / "Bee" / "extra.jpg").write_bytes(b"x")
    with pytest.raises(ValidationError, match=r"2 file\(s\) its manifest does not list: notes.txt, "
                                              r"raw_dataset/Bee/extra.jpg; move them out first"):
        export_dataset(store, tmp_path / "data", out, "ann", overwrite=True)
    assert (out / "notes.txt").read_text() == "my training notes"
    (out / "notes.txt").unlink()
    (out / "raw_dataset" / "Bee" / "extra.jpg").unlink()
    (out / "split.csv").unlink()  # a listed file gone, or edited, loses nothing of anyone's
    assert export_dataset(store, tmp_path / "data", out, "bob", overwrite=True).manifest["editor"] == "bob"
    assert verify_export(out) == []


# -- 3. copies filed under two classes ---------------------------------------------------------------------
def test_same_photo_pairs_across_classes_match_brute_force_in_tiles():
    rng = np.random.default_rng(8)
    faces = [(m % 4, m, rng.normal(scale=0.05, size=16)) for m in range(90)]
    faces += [((m + 1) % 4, 1000 + m, faces[m][2] + rng.normal(scale=0.001, size=16)) for m in range(30)]
    faces.append((0, 2000, np.zeros(16)))
    expected = {(a[1], b[1]) for i, a in enumerate(faces) for b in faces[i + 1:]
                if a[1] != b[1] and np.linalg.norm(a[2]) > 0 and np.linalg.norm(b[2]) > 0
                and np.linalg.norm(a[2] - b[2]) <= 0.1}
    assert {(m, 1000 + m) for m in range(30)} <= expected
    assert same_photo_pairs(faces, 0.1, chunk=7, across_classes=True) == expected
    assert same_photo_pairs(faces, 0.1, across_classes=True) == expected
    assert same_photo_pairs(faces, 0.1) == set()  # per class, as before: every copy is under another class
    groups, pairs = copy_groups({m: None for _, m, _ in faces}, faces, 0.1)
    assert pairs == expected and all(groups[m] == groups[1000 + m] for m in range(30))


def test_a_photo_and_its_copy_under_another_class_share_a_side(store_url, tmp_path, lfw_dir):
    """Al Gore's photos, and copies of them filed as "Albert Gore" (one person, two catalog entries): each
    copy's face embedding is its photo's, the frame hashes differ (mirrored), and the split must keep
    them together whatever their labels."""
    store = open_store(store_url)
    data = tmp_path / "data"
    faces = photo_faces(store, data, lfw_dir / PERSON, 16)
    rng = np.random.default_rng(3)
    vectors = [rng.normal(scale=0.05, size=128) for _ in range(8)]
    with session_scope(store) as s:
        for i, face in enumerate(faces):
            s.execute(update(FaceEmbedding).where(FaceEmbedding.face_id == face)
                      .values(dim=128, vector=vector_to_bytes(vectors[i % 8] + rng.normal(scale=0.002, size=128))))
        media_of = dict(s.execute(select(Face.id, Face.media_id)).all())
    add_class(store, "Al Gore", "ann", seed_face_ids=faces[:8])
    add_class(store, "Albert Gore", "ann", seed_face_ids=faces[8:])
    out = tmp_path / "out"
    summary = export_dataset(store, data, out, "ann", split=0.5)
    sides = split_sides(out)
    assert summary.manifest["split"]["same_photo_media_pairs"] == 8 and summary.manifest["split"]["groups"] == 8
    assert [sides[media_of[faces[i]]] for i in range(8)] == [sides[media_of[faces[i + 8]]] for i in range(8)]


# -- 4. tags rows naming a folder ---------------------------------------------------------------------------
def test_a_tags_row_with_a_folder_tags_that_file_only_and_a_shared_name_is_noted(store_url, tmp_path):
    store = open_store(store_url)
    copy = tmp_path / "tags" / "copy.gif"
    copy.parent.mkdir()
    copy.write_bytes(b"GIF89a same bytes as /m/original.gif")
    with session_scope(store) as s:
        for n, path in enumerate(["/m/clips_a/x.jpg", "/m/clips_b/x.jpg", "/m/y.jpg"], start=1):
            s.add(Media(sha256=f"{n:064x}", path=path, kind="image", status="ok"))
        s.add(Media(sha256=hashlib.sha256(copy.read_bytes()).hexdigest(), path="/m/original.gif", kind="gif",
                    status="ok"))
    path = copy.parent / "tags.csv"
    path.write_text("file,uploader_tags\nclips_a/x.jpg,politician;gore\nclips_b/x.jpg,actor\nx.jpg,funny\n"
                    "clips_c/x.jpg,lost\ncopy.gif,wave\nnowhere.gif,gone\n", encoding="utf-8")
    summary = import_tags(store, path)
    assert tags_by_path(store) == {"/m/clips_a/x.jpg": {"politician", "gore", "funny"}, "/m/clips_b/x.jpg": {"actor", "funny"}}
    assert summary.notes == [f"{path}: line 4: x.jpg matches 2 ingested media (/m/clips_a/x.jpg, /m/clips_b/x.jpg); "
                             "tagged all of them (give the file's folder too, e.g. clips_a/x.jpg, to tag one)"]
    assert summary.skipped == [
        f"{path}: line 5: clips_c/x.jpg is not ingested; no media in that folder, but 2 of that name elsewhere "
        "(/m/clips_a/x.jpg, /m/clips_b/x.jpg)",
        f"{path}: line 6: copy.gif is ingested under another name: media 4, /m/original.gif, has the same content "
        "(a media item is stored once per content, and this file itself was never ingested); not tagged",
        f"{path}: line 7: nowhere.gif is not ingested"]


# -- 5. a raw dataset's media types, sub-folders and other files -------------------------------------------
def test_a_raw_dataset_takes_every_type_ingest_reads_and_names_what_it_leaves_out(tmp_path):
    folder = tmp_path / "ds" / "raw_dataset" / "Al_Gore"
    (folder / "2019").mkdir(parents=True)
    for name in ("a.webp", "b.bmp", "c.gif", "d.tif", "2019/e.jpg", "f.JPG", "g.mp4", ".hidden.jpg", "Thumbs.db"):
        (folder / name).write_bytes(b"x")
    (folder / "broken.jpg").symlink_to("missing.jpg")
    (tmp_path / "ds" / "labels.csv").write_text("Label,Index\nAl_Gore,0\n", encoding="utf-8")
    _, _, images, notes = scan_raw_dataset(tmp_path / "ds")
    assert [p.name for p in images["Al_Gore"]] == ["a.webp", "c.gif", "f.JPG", "g.mp4"]
    assert [n.split(":")[0] for n in notes] == ["raw_dataset/Al_Gore/2019/", "raw_dataset/Al_Gore/Thumbs.db",
                                                "raw_dataset/Al_Gore/b.bmp", "raw_dataset/Al_Gore/broken.jpg",
                                                "raw_dataset/Al_Gore/d.tif"]
    assert "its files are not imported" in notes[0] and "a link to nothing" in notes[3]
    assert notes[2].startswith("raw_dataset/Al_Gore/b.bmp: not a file type ingest reads (") and ".webp" in notes[2]


# -- 6. a validation set far under the share asked for ------------------------------------------------------
def test_a_short_validation_set_is_said_for_a_fresh_export_naming_the_classes_without_one(store_url, tmp_path,
                                                                                          lfw_dir):
    """Every photo is there twice (one frame hash: near-duplicates): groups of 2 faces, larger than a class of
    6's validation target of round(1.2) = 1, so all train; the export says so, and names the classes."""
    store = open_store(store_url)
    data = tmp_path / "data"
    faces = photo_faces(store, data, lfw_dir / PERSON, 12)
    with session_scope(store) as s:
        media = [s.get(Face, f).media_id for f in faces]
        for first, second in zip(media[::2], media[1::2]):
            s.get(Media, second).frame_hashes = s.get(Media, first).frame_hashes
    add_class(store, "Bee", "ann", seed_face_ids=faces[:6])
    add_class(store, "Cee", "ann", seed_face_ids=faces[6:])
    summary = export_dataset(store, data, tmp_path / "out", "ann", split=0.2)
    assert (summary.train, summary.val) == (12, 0)
    assert summary.notes == summary.manifest["notes"] == [
        "validation holds 0 of 12 faces (0%), under half the 20% asked for: a group (the faces of one media item "
        "with its near-duplicates and copies) goes to one side whole, and to validation only while each of its "
        "classes stays within round(share x its faces), so groups larger than a class's validation target stay in "
        "train (more faces per class, or a larger share, give validation room)",
        "2 class(es) have no validation face, though their share asks for one or more: 'Bee', 'Cee'"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["notes"] == summary.notes


def test_the_short_validation_notes_speak_only_when_more_was_asked_for_than_given():
    assert small_validation(0, 12, 0.2, 0, 0, []) == []  # classes of 1-2 faces aim at none: the documented rule
    assert small_validation(3, 12, 0.2, 0, 3, []) == []  # not under half
    assert small_validation(1, 40, 0.2, 0, 8, []) != [] and small_validation(0, 0, 0.2, 0, 0, []) == []
    assert small_validation(8, 40, 0.5, 27, 20, []) == [validation_shortfall(8, 40, 0.5, 27)]
    names = [f"C{i}" for i in range(12)]
    assert small_validation(8, 40, 0.5, 27, 20, names)[1] == (
        "12 class(es) have no validation face, though their share asks for one or more: "
        + ", ".join(repr(n) for n in names[:10]) + " and 2 more")


# -- 7. a killed export's temporary folder ---------------------------------------------------------------------
KILLED_EXPORT = """
import os, sys
from pathlib import Path
from labeling.db import open_store
from labeling.export import export_dataset

def progress(done, total):
    if done == 2:
        os._exit(9)  # as SIGKILL, OOM or a power cut would: no handler runs

export_dataset(open_store(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), "ann", on_progress=progress)
"""


def test_a_killed_exports_temporary_folder_is_removed_by_the_next_export(store_url, tmp_path, lfw_dir):
    fcntl = pytest.importorskip("fcntl")  # here, not at the top: the rest of the module runs on Windows too
    store = store_with_classes(store_url, tmp_path / "data", lfw_dir, ["Bee", "Cee"])
    exports = tmp_path / "exports"
    out = exports / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", KILLED_EXPORT, store_url, str(tmp_path / "data"), str(out)],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 9, run.stderr
    (leftover,) = [p for p in exports.iterdir()]
    assert leftover.name.startswith(".out.tmp-") and any(leftover.rglob("*.jpg"))

    old = time.time() - 3600
    young = exports / ".out.tmp-00000000000a"  # just created by an export starting now: not yet locked
    held = exports / ".out.tmp-00000000000b"  # an export running for an hour: it holds its lock
    others = [exports / ".out.tmp-mine", exports / ".other.tmp-00000000000c", exports / ".out.old-0000000d"]
    for folder in [young, held, *others]:
        folder.mkdir()
        (folder / "x").write_text("x")
    for folder in [leftover, held, *others]:
        os.utime(folder, (old, old))
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert export_dataset(store, tmp_path / "data", out, "ann").faces == 4
    finally:
        os.close(fd)
    assert sorted(p.name for p in exports.iterdir()) == sorted(["out", young.name, held.name,
                                                                *(p.name for p in others)])
    assert remove_stale_temporaries(out) == [held]  # its export is gone now; the young one is left for later
    assert remove_stale_temporaries(out, min_age=0) == [young]


# -- 3 and 5 with the real models: GIPHY's layout with WebP and GIF, and mirrored copies under a second class --
@pytest.fixture(scope="module")
def model_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("giflens-round8-data")


@pytest.mark.slow
def test_a_real_raw_dataset_with_webp_gif_and_copies_under_a_second_class(store_url, tmp_path, lfw_dir,
                                                                         model_data_dir):
    raw = tmp_path / "ds" / "raw_dataset"
    photos = sorted((lfw_dir / "Al_Gore").glob("*.jpg"))[:6]
    (raw / "Al_Gore" / "2019").mkdir(parents=True)
    (raw / "Albert_Gore").mkdir()
    for n, photo in enumerate(photos):
        with Image.open(photo) as im:
            im = im.convert("RGB")
            target = raw / "Al_Gore" / (photo.stem + (".webp", ".gif", ".jpg", ".jpg", ".jpg", ".jpg")[n])
            im.save(target)
            if n >= 2:
                ImageOps.mirror(im).save(raw / "Albert_Gore" / f"mirror_{photo.name}", quality=90)
    Image.open(photos[0]).save(raw / "Al_Gore" / "b.bmp")
    Image.open(photos[1]).save(raw / "Al_Gore" / "2019" / "e.jpg")
    (raw.parent / "labels.csv").write_text("Label,Index\nAl_Gore,0\nAlbert_Gore,1\n", encoding="utf-8")
    store = open_store(store_url)
    summary = import_raw_dataset(store, raw.parent, Settings(data_dir=model_data_dir, database_url=store_url), "ann")
    assert (summary.images, summary.labels) == (10, 10), summary.skipped
    assert [n.split(":")[0] for n in summary.skipped] == ["raw_dataset/Al_Gore/2019/", "raw_dataset/Al_Gore/b.bmp"]
    with store() as s:
        labeled = dict(s.execute(select(Media.path, CelebrityClass.name).join(Face, Face.media_id == Media.id)
                                 .join(FaceLabel, FaceLabel.face_id == Face.id)
                                 .join(CelebrityClass, CelebrityClass.id == FaceLabel.class_id)).all())
        media = dict(s.execute(select(Media.path, Media.id)).all())
    assert labeled[str(raw / "Al_Gore" / f"{photos[0].stem}.webp")] == "Al Gore"
    assert labeled[str(raw / "Al_Gore" / f"{photos[1].stem}.gif")] == "Al Gore"
    assert class_named(store, "Albert Gore").status == "active"

    out = tmp_path / "out"
    result = export_dataset(store, model_data_dir, out, "ann", split=0.5)
    sides = split_sides(out)
    for photo in photos[2:]:
        original, mirrored = (media[str(raw / "Al_Gore" / photo.name)],
                              media[str(raw / "Albert_Gore" / f"mirror_{photo.name}")])
        assert sides[original] == sides[mirrored], photo.name
    assert result.manifest["split"]["same_photo_media_pairs"] >= 4 and result.val > 0
