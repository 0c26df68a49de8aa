"""Import / export defects, each failing without its fix: tags rows
naming a file through `..`, a linked folder or Windows separators matched nothing (and the very file was said to
be "ingested under another name"); an import of tags read every file it could not match and asked the store once
per row; Replace refused an export the OS had put a .DS_Store into, or one written before manifests had a
`format`; a raw dataset's GIF labeled one face of one frame, whoever it showed; a running export's temporary
folder aged as if dead; and imports naming a class exactly reached its look-alike where migration 0010 left two
classes whose names fold alike."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import photo_faces, session_dir
from sqlalchemy import event, select
from test_import_export_csvs_and_symlinks import PERSON, store_with_classes
from test_import_export_external_ids_and_sides import tags_by_path
from test_store_older_class_keys import _stale_pairs

from labeling import export as export_module
from labeling.classes import add_class
from labeling.db import open_store, session_scope
from labeling.errors import ValidationError
from labeling.export import export_dataset, verify_export
from labeling.face_labels import approve_faces
from labeling.importers import (faces_to_label, import_attributes, import_classes, import_raw_dataset, import_tags,
                                own_export)
from labeling.schema import CelebrityClass, Face, FaceEmbedding, FaceLabel, Media, Track
from models.settings import Settings


def add_media(store, path: Path) -> int:
    """A media row for a file on disk, as ingest stores it (absolute path, sha256, size)."""
    data = path.read_bytes()
    with session_scope(store) as s:
        media = Media(sha256=hashlib.sha256(data).hexdigest(), path=str(path), kind="gif", status="ok",
                      size_bytes=len(data))
        s.add(media)
        s.flush()
        return media.id


# -- 1. tags rows naming a file through .., a linked folder, Windows separators ---------------------------
def test_a_tags_row_naming_the_stored_file_through_dots_a_link_or_backslashes_tags_it(store_url, tmp_path):
    store = open_store(store_url)
    clip = tmp_path / "media" / "clips" / "x.gif"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"GIF89a the stored clip")
    add_media(store, clip)
    (tmp_path / "link").symlink_to(tmp_path / "media")
    (tmp_path / "media" / "alias.gif").symlink_to(clip)  # another name of the stored file itself
    copy = tmp_path / "meta" / "copy.gif"  # a genuine copy: another file holding the same bytes
    copy.parent.mkdir()
    shutil.copyfile(clip, copy)
    path = tmp_path / "meta" / "tags.csv"
    path.write_text("file,uploader_tags\n../media/clips/x.gif,wave\n"
                    f"{tmp_path}/link/clips/x.gif,hello\nclips\\x.gif,win\n./../media/alias.gif,alias\n"
                    "copy.gif,copied\n../media/clips/gone.gif,lost\n", encoding="utf-8")
    summary = import_tags(store, path)
    assert tags_by_path(store) == {str(clip): {"wave", "hello", "win", "alias"}}
    assert summary.skipped == [
        f"{path}: line 6: copy.gif is ingested under another name: media 1, {clip}, has the same content "
        "(a media item is stored once per content, and this file itself was never ingested); not tagged",
        f"{path}: line 7: ../media/clips/gone.gif is not ingested"]
    assert summary.notes == []


def test_a_dots_path_to_a_file_not_on_disk_matches_by_the_folders_after_the_dots(store_url, tmp_path):
    """The tags file moved away from the media (or the media moved): `../media/clips/x.gif` still names the
    media stored as .../media/clips/x.gif, and not one of that name in another folder."""
    store = open_store(store_url)
    with session_scope(store) as s:
        for n, stored in enumerate(["/m/media/clips/x.gif", "/m/other/x.gif"], start=1):
            s.add(Media(sha256=f"{n:064x}", path=stored, kind="gif", status="ok", size_bytes=10))
    path = tmp_path / "meta" / "tags.csv"
    path.parent.mkdir()
    path.write_text("file,uploader_tags\n../media/clips/x.gif,wave\n", encoding="utf-8")
    assert import_tags(store, path).skipped == []
    assert tags_by_path(store) == {"/m/media/clips/x.gif": {"wave"}}


# -- 3. unmatched rows: no file read unless its size is a stored one, no query per row --------------------
def test_an_unmatched_row_reads_no_file_of_another_size_and_asks_the_store_nothing(store_url, tmp_path):
    store = open_store(store_url)
    folder = tmp_path / "clips"
    folder.mkdir()
    stored = folder / "stored.gif"
    stored.write_bytes(b"GIF89a" + b"s" * 100)
    add_media(store, stored)
    same_size = folder / "same-size.gif"  # might be a copy: read, found to differ
    same_size.write_bytes(b"GIF89a" + b"d" * 100)
    for i in range(30):
        (folder / f"other{i}.gif").write_bytes(b"GIF89a" + b"o" * (200 + i))
    opened: list[str] = []
    watching = [False]

    def audit(name: str, args: tuple) -> None:
        if watching[0] and name == "open" and isinstance(args[0], (str, bytes, Path)):
            opened.append(Path(str(args[0])).name)

    sys.addaudithook(audit)  # the interpreter's own record of every file opened; cannot be removed
    statements: list[str] = []
    engine = store.kw["bind"]

    def count(conn, cursor, statement, *args) -> None:
        if watching[0]:
            statements.append(statement)

    def run(rows: int) -> list[str]:
        path = folder / "tags.csv"
        path.write_text("file,uploader_tags\nstored.gif,kept\nsame-size.gif,x\n"
                        + "".join(f"other{i}.gif,x\n" for i in range(rows)), encoding="utf-8")
        statements.clear()
        opened.clear()
        watching[0] = True
        try:
            summary = import_tags(store, path)
        finally:
            watching[0] = False
        assert len(summary.skipped) == rows + 1 and summary.skipped[0].endswith("same-size.gif is not ingested")
        return list(statements)

    event.listen(engine, "before_cursor_execute", count)
    try:
        run(2)  # writes the one tag; the runs compared below find it there
        few, many = run(2), run(30)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert not [name for name in opened if name.startswith("other")], opened
    assert "same-size.gif" in opened
    assert len(many) == len(few)  # one read of the store, whatever the rows


# -- 4. Replace: files the OS writes, manifests written before `format` ------------------------------------
def test_replace_ignores_files_the_os_writes_and_takes_an_export_older_than_format(store_url, tmp_path, lfw_dir):
    data = tmp_path / "data"
    store = store_with_classes(store_url, data, lfw_dir, ["Bee"])
    out = tmp_path / "out"
    export_dataset(store, data, out, "ann")
    for name in (".DS_Store", "raw_dataset/.DS_Store", "raw_dataset/Bee/._1.jpg", "Thumbs.db", "desktop.ini"):
        (out / name).write_bytes(b"os")
    assert export_dataset(store, data, out, "bob", overwrite=True).manifest["editor"] == "bob"
    assert verify_export(out) == []

    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    del manifest["format"]  # as the first version wrote it
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValidationError, match=r"out is not empty and holds an earlier export plus 1 file\(s\) its "
                                              r"manifest does not list: notes.txt; move them out first; refusing"):
        export_dataset(store, data, out, "ann", overwrite=True)
    (out / "notes.txt").unlink()
    assert export_dataset(store, data, out, "cy", overwrite=True).manifest["editor"] == "cy"

    manifest = {"files": {"readme.md": "0" * 64}}  # no format, and not an export's files: still refused
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ValidationError, match=r"is not a giflens export \(its manifest.json is not a giflens-export/1"):
        export_dataset(store, data, out, "ann", overwrite=True)


# -- 5. a raw dataset's GIFs and videos: one person's track, or a note --------------------------------------
def test_faces_to_label_takes_a_stills_largest_face_a_clips_one_track_and_no_face_of_several(store_url):
    store = open_store(store_url)
    with session_scope(store) as s:
        media = {}
        for name, kind, faces in [("photo", "image", [(0, 0, 0, 40, None), (1, 0, 0, 90, None)]),
                                  ("one-person", "gif", [(0, 0, 0, 40, 0), (1, 1, 0, 90, 0), (2, 2, 0, 50, 0)]),
                                  ("two-people", "gif", [(0, 0, 0, 90, 0), (1, 0, 100, 140, 1), (2, 1, 0, 90, 0)]),
                                  ("untracked", "video", [(0, 0, 0, 90, None), (1, 3, 0, 40, None)])]:
            m = Media(sha256=name.encode().hex().ljust(64, "0"), path=f"/d/{name}", kind=kind, status="ok")
            s.add(m)
            s.flush()
            media[name] = m.id
            tracks: dict[int, Track] = {}
            for index, frame, x1, x2, track in faces:
                face = Face(media_id=m.id, face_index=index, frame_index=frame, x1=x1, y1=0, x2=x2, y2=x2 - x1,
                            probability=0.99, landmarks=[[0, 0]] * 5)
                s.add(face)
                s.flush()
                if track is not None and track not in tracks:
                    tracks[track] = Track(media_id=m.id, model_id="dlib-resnet-v1", track_index=track, n_faces=1,
                                          vector=b"\0" * 8)
                    s.add(tracks[track])
                    s.flush()
                s.add(FaceEmbedding(face_id=face.id, model_id="dlib-resnet-v1", dim=2, vector=b"\0" * 8,
                                    track_id=tracks[track].id if track is not None else None))
        s.flush()
        face_ids = {m: sorted(s.scalars(select(Face.id).where(Face.media_id == i))) for m, i in media.items()}
        found = faces_to_label(s, list(media.values()), "dlib-resnet-v1")
    assert found.faces == {media["photo"]: [face_ids["photo"][1]], media["one-person"]: face_ids["one-person"]}
    assert found.people == {media["two-people"]: 2, media["untracked"]: 2}


@pytest.fixture(scope="module")
def model_data_dir(tmp_path_factory) -> Path:
    return session_dir(tmp_path_factory, "giflens-review8-data")


@pytest.mark.slow
def test_a_raw_dataset_gif_of_one_person_labels_its_track_and_one_of_two_people_is_noted(store_url, tmp_path,
                                                                                      gifs_dir, model_data_dir):
    raw = tmp_path / "ds" / "raw_dataset"
    (raw / "Jennifer_Lawrence_[m.0h1x8ml]").mkdir(parents=True)
    (raw / "Some_Cast").mkdir()
    shutil.copyfile(gifs_dir / "jlaw-nods.gif", raw / "Jennifer_Lawrence_[m.0h1x8ml]" / "jlaw-nods.gif")
    two = raw / "Some_Cast" / "giphy-celeb-detection-example.gif"
    shutil.copyfile(gifs_dir / "giphy-celeb-detection-example.gif", two)
    (raw.parent / "labels.csv").write_text("Labels,Index\nJennifer_Lawrence_[m.0h1x8ml],0\nSome_Cast,1\n",
                                           encoding="utf-8")
    store = open_store(store_url)
    summary = import_raw_dataset(store, raw.parent, Settings(data_dir=model_data_dir, database_url=store_url), "ann")
    with store() as s:
        media = dict(s.execute(select(Media.path, Media.id)).all())
        jlaw = media[str(raw / "Jennifer_Lawrence_[m.0h1x8ml]" / "jlaw-nods.gif")]
        faces = set(s.scalars(select(Face.id).where(Face.media_id == jlaw)))
        tracks = set(s.scalars(select(FaceEmbedding.track_id).where(FaceEmbedding.face_id.in_(faces))))
        labeled = dict(s.execute(select(FaceLabel.face_id, CelebrityClass.name)
                                 .join(CelebrityClass, CelebrityClass.id == FaceLabel.class_id)).all())
        people = len(set(s.scalars(select(FaceEmbedding.track_id).join(Face, Face.id == FaceEmbedding.face_id)
                                   .where(Face.media_id == media[str(two)]))))
    assert len(faces) > 1 and len(tracks) == 1  # one person, seen in several frames
    assert labeled == {f: "Jennifer Lawrence" for f in faces}
    assert summary.labels == len(faces) and people == 2
    assert summary.skipped == [f"{two}: 2 people (face tracks) in it; not labeled: file one person per clip, "
                               "or label it in Review"]


# -- 6. a running export's temporary folder stays young ----------------------------------------------------
def test_a_running_export_keeps_its_temporary_folder_young(store_url, tmp_path, lfw_dir, monkeypatch):
    data = tmp_path / "data"
    store = store_with_classes(store_url, data, lfw_dir, ["Bee", "Cee"])
    monkeypatch.setattr(export_module, "TMP_TOUCH_EVERY", 1)
    out = tmp_path / "exports" / "out"
    ages: list[float] = []

    def progress(done: int, total: int) -> None:
        (tmp,) = out.parent.glob(".out.tmp-*")
        if done == 1:  # as if the copy had run for an hour
            old = tmp.stat().st_mtime - 3600
            os.utime(tmp, (old, old))
            ages.append(tmp.stat().st_mtime)
        elif done == total:
            ages.append(tmp.stat().st_mtime)

    export_dataset(store, data, out, "ann", on_progress=progress)
    assert len(ages) == 2 and ages[1] - ages[0] > 3000


# -- classes whose names fold alike since migration 0010 ---------------------------------------------------
def test_imports_naming_a_class_exactly_reach_it_not_its_look_alike(store_url, tmp_path, lfw_dir):
    """"Barış Manço" keeps its 0009 key (the current one is "BARIŞ MANÇO"'s): an attributes file, a class list
    giving its external id, and its own export's classes.csv must find it by its exact name."""
    store, made = _stale_pairs(store_url)
    stale, other = made["Barış Manço"], made["BARIŞ MANÇO"]
    people = tmp_path / "people.csv"
    people.write_text("name,gender\nBarış Manço,male\n", encoding="utf-8")
    import_attributes(store, people, "imp")
    listing = tmp_path / "list.csv"
    listing.write_text("Labels,Index\nBarış_Manço_[m.0bm],0\n", encoding="utf-8")
    assert import_classes(store, listing).skipped == []
    with store() as s:
        rows = {c.id: (c.gender, c.external_id) for c in s.scalars(select(CelebrityClass))}
    assert rows[stale] == ("male", "m.0bm") and rows[other] == (None, None)

    data = tmp_path / "data"
    faces = photo_faces(store, data, lfw_dir / PERSON, 2)
    approve_faces(store, faces, "ann", class_id=stale)
    add_class(store, "Bee", "ann", seed_face_ids=photo_faces(store, data, lfw_dir / PERSON, 2, start=2))
    out = tmp_path / "out"
    export_dataset(store, data, out, "ann")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    manifest["editor"] = "someone else"  # not the recorded manifest: its labels tell it is this store's
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with store() as s:
        assert own_export(s, out) is not None
