"""Exports in a series: class folders that stay, hidden leftovers of any export name removed, damaged exports
neither vouched for nor followed silently (and `giflens export --verify`, the page's Verify), and a round trip
whose tight crops MTCNN misses without a border."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, open_app, photo_faces
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from labeling.classes import add_class, rename_class, retire_class, set_class_status
from labeling.face_labels import approve_faces
from labeling.cli import app
from labeling.db import open_store
from labeling.export import (earlier_exports, export_dataset, followable_export, intact_export, newest_export,
                             remove_stale_temporaries, verify_export)
from labeling.importers import REDETECT_BORDER, BorderRetryDetector, import_raw_dataset
from labeling.queries import exports_frame
from labeling.schema import CelebrityClass, Export, FaceLabel
from models.settings import Settings

PERSON = "George_W_Bush"  # enough LFW photos for every class below


def folders(out: Path) -> dict[str, str]:
    """class name -> its folder in an export's classes.csv."""
    with (out / "classes.csv").open(encoding="utf-8") as f:
        return {r["name"]: r["folder"] for r in csv.DictReader(f)}


def store_of(tmp_path: Path, lfw_dir: Path, names: list[str], per_class: int = 2):
    """A store whose classes (created in this order) hold `per_class` confirmed faces each."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    faces = photo_faces(store, tmp_path / "data", lfw_dir / PERSON, per_class * len(names))
    ids = [add_class(store, name, "ann", seed_face_ids=faces[i * per_class:(i + 1) * per_class])[0]
           for i, name in enumerate(names)]
    return store, ids


# -- 1. class folders across chained exports -----------------------------------------------------------------

def _export_page(monkeypatch, data: Path, tmp_path: Path):
    """The Export page of the store in tmp_path, "ann" signed in, run once without an exception."""
    at = open_app(monkeypatch, data, f"sqlite:///{tmp_path / 'store.db'}")
    at.sidebar.text_input(key="sign_in_name").input("ann")
    [b for b in at.button if b.label == "Sign in"][0].click().run()
    at.switch_page("labeling/pages/export.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at

def test_a_class_keeps_its_folder_when_a_colliding_class_comes_back(tmp_path, lfw_dir):
    """'CON' (class 1) and 'Con.' (class 3) both want `_CON` / `_Con`, one folder on a case-insensitive disk.
    With CON retired, Con. took `_Con`; CON re-activated used to take the plain name by class-id order and
    push Con. to `_Con_3`: a retraining job reading the series found Con.'s faces under another folder, and
    on macOS CON's new `_CON` was Con.'s old folder. Followed, each class keeps its folder; only the class
    without one gets the suffix. A class renamed since gets its new name's folder."""
    store, (con, bee, con_dot) = store_of(tmp_path, lfw_dir, ["CON", "Bee", "Con."])
    assert folders(export_dataset(store, tmp_path / "data", tmp_path / "v0", "ann").out_dir) == {
        "CON": "_CON", "Bee": "Bee", "Con.": "_Con_3"}  # unchanged without an earlier export

    retire_class(store, con, "ann")
    v1 = export_dataset(store, tmp_path / "data", tmp_path / "v1", "ann", previous=tmp_path / "v0").out_dir
    assert folders(v1) == {"Bee": "Bee", "Con.": "_Con_3"}  # kept from v0: it had that folder there

    v1b = export_dataset(store, tmp_path / "data", tmp_path / "v1b", "ann").out_dir  # started afresh
    assert folders(v1b) == {"Bee": "Bee", "Con.": "_Con"}
    set_class_status(store, con, "active", "ann")
    v2 = export_dataset(store, tmp_path / "data", tmp_path / "v2", "ann", previous=v1b).out_dir
    assert folders(v2) == {"CON": "_CON_1", "Bee": "Bee", "Con.": "_Con"}
    assert {p.name for p in (v2 / "raw_dataset").iterdir()} == {"_CON_1", "Bee", "_Con"}
    with (v2 / "labels.csv").open(encoding="utf-8") as f:
        assert {r["Label"] for r in csv.DictReader(f)} == {"_CON_1", "Bee", "_Con"}

    rename_class(store, bee, "Bea", "ann")
    v3 = export_dataset(store, tmp_path / "data", tmp_path / "v3", "ann", previous=v2).out_dir
    assert folders(v3) == {"CON": "_CON_1", "Bea": "Bea", "Con.": "_Con"}


# -- 2. a killed export's leftovers, whatever folder it went to ------------------------------------------------
KILLED_EXPORT = """
import os, sys
from pathlib import Path
from labeling.db import open_store
from labeling.export import export_dataset

def progress(done, total):
    if done == 2:
        os._exit(9)  # as SIGKILL would: no handler runs

export_dataset(open_store(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), "ann", on_progress=progress)
"""


def test_leftovers_of_an_export_into_another_folder_are_removed_and_said(tmp_path, lfw_dir):
    """The Export page proposes a new timestamped folder each time, so a killed export's hidden temporary
    folder (`.export-<stamp>.tmp-<hex>`) was never cleared: only `.<OUT_DIR>.tmp-*` was looked for. Now any
    export name's, as safely as before (old enough, locked by no one; another name's only when it holds
    nothing but what an export writes), and the summary says what went."""
    pytest.importorskip("fcntl")
    store, _ = store_of(tmp_path, lfw_dir, ["Bee", "Cee"])
    exports = tmp_path / "data" / "exports"
    killed = exports / "export-20261207-150000"
    run = subprocess.run([sys.executable, "-c", KILLED_EXPORT, f"sqlite:///{tmp_path / 'store.db'}",
                          str(tmp_path / "data"), str(killed)],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert run.returncode == 9, run.stderr
    (leftover,) = exports.iterdir()
    assert leftover.name.startswith(".export-20261207-150000.tmp-") and any(leftover.rglob("*.jpg"))
    done = export_dataset(store, tmp_path / "data", exports / "export-a", "ann")
    shutil.copytree(done.out_dir, tmp_path / "kept")
    export_dataset(store, tmp_path / "data", exports / "export-a", "ann", overwrite=True)
    replaced = exports / ".export-a.old-0000000a"  # the export it replaced, left by an interrupted delete
    (tmp_path / "kept").rename(replaced)
    foreign = exports / ".notes.tmp-00000000000c"  # another program's: not what an export writes
    foreign.mkdir()
    (foreign / "draft.txt").write_text("mine")
    old = time.time() - 3600
    for folder in (leftover, foreign):
        os.utime(folder, (old, old))

    summary = export_dataset(store, tmp_path / "data", exports / "export-b", "ann")
    assert sorted(p.name for p in exports.iterdir()) == [foreign.name, "export-a", "export-b"]
    (note,) = [n for n in summary.notes if "hidden folder" in n]
    assert "removed 2 hidden folder(s)" in note and leftover.name in note and replaced.name in note
    assert note in summary.manifest["notes"]
    assert remove_stale_temporaries(exports / "export-c", min_age=0) == []  # the foreign one stays


# -- 3. damaged exports: not "on disk", followed all the same with a note, verified on demand ------------------
def test_an_export_whose_crops_were_deleted_or_damaged_is_not_vouched_for(tmp_path, lfw_dir, monkeypatch):
    """intact_export checked manifest.json, classes.csv and split.csv only: an export whose crops were deleted
    or cut short stayed "on disk". Now every listed file must be there, of its recorded size, for "on disk";
    it is still followed (its class map and split are as written), with a note; `giflens export --verify DIR`
    and the page's Verify hash every file."""
    store, _ = store_of(tmp_path, lfw_dir, ["Bee", "Cee"], per_class=3)
    data = tmp_path / "data"
    v1 = export_dataset(store, data, tmp_path / "v1", "ann").out_dir
    v2 = export_dataset(store, data, tmp_path / "v2", "ann", previous=v1).out_dir
    assert newest_export(store) == v2 and exports_frame(store)["on_disk"].tolist() == [True, True]
    sizes = json_of(v2)["sizes"]
    assert sizes["labels.csv"] == (v2 / "labels.csv").stat().st_size and len(sizes) == len(json_of(v2)["files"])
    with open_store(f"sqlite:///{tmp_path / 'store.db'}")() as s:  # the store's row stays small
        assert "sizes" not in s.scalars(select(Export.manifest)).first()

    runner = CliRunner()
    ok = runner.invoke(app, ["export", "--verify", str(v2)])
    assert ok.exit_code == 0 and f"export {v2} verified: {len(json_of(v2)['files'])} files match manifest.json" in ok.stdout

    crops = sorted((v2 / "raw_dataset").rglob("*.jpg"))
    shutil.rmtree(crops[0].parent)  # a class folder deleted
    crops[-1].write_bytes(b"x")  # a crop cut short
    (v2 / ".DS_Store").write_bytes(b"finder")  # the OS's own: no difference
    assert exports_frame(store)["on_disk"].tolist() == [False, True]
    assert not intact_export(v2, hash_of(v2)) and followable_export(v2, hash_of(v2))
    assert newest_export(store) == v2 and earlier_exports(store) == [v2, v1]
    problems = verify_export(v2)
    assert f"{crops[-1].relative_to(v2).as_posix()}: sha256 differs" in problems
    assert any(p.endswith(": missing") for p in problems) and not any(".DS_Store" in p for p in problems)
    bad = runner.invoke(app, ["export", "--verify", str(v2)])
    assert bad.exit_code == 1 and "sha256 differs" in bad.stderr and "does not match its manifest.json" in bad.stderr
    assert runner.invoke(app, ["export", "--verify", str(tmp_path / "data")]).exit_code == 1  # no manifest

    # the page: the damaged export stays offered and proposed, said; Verify checks a past export file by file
    at = _export_page(monkeypatch, data, tmp_path)
    assert at.selectbox(key="export_previous").value == str(v2)
    assert str(v1) in at.selectbox(key="export_previous").options
    (warned,) = [w.value for w in at.warning if "followed, but not whole" in w.value]
    assert str(v2) in warned and "missing" in warned and "of another size" in warned
    at.selectbox(key="export_verify_dir").set_value(str(v2))
    [b for b in at.button if b.label == "Verify"][0].click().run()
    assert any("does not match its manifest.json" in e.value and "sha256 differs" in e.value for e in at.error)
    at.selectbox(key="export_verify_dir").set_value(str(v1))
    [b for b in at.button if b.label == "Verify"][0].click().run()
    assert any(f"export {v1} verified" in s.value for s in at.success)

    # the CLI's default follows it too, and says it is not whole
    monkeypatch.setenv("GIFLENS_DATA_DIR", str(data))
    run = runner.invoke(app, ["export", str(tmp_path / "v3"), "--database-url", f"sqlite:///{tmp_path / 'store.db'}",
                              "--editor", "ann"])
    assert run.exit_code == 0, run.stdout
    text = " ".join(run.stderr.split())
    assert f"{v2}: followed, but not whole since it was written" in text
    assert json_of(tmp_path / "v3")["previous_export"] == str(v2)


def sides(out: Path) -> dict[int, str]:
    with (out / "split.csv").open(encoding="utf-8") as f:
        return {int(r["face_id"]): r["side"] for r in csv.DictReader(f)}


def test_a_crop_deleted_from_the_newest_export_does_not_draw_its_training_faces_into_validation(tmp_path, lfw_dir):
    """The reviewer's case: one crop deleted by hand from the newest export (its class map and split untouched)
    made newest_export pass it over for the one before, and a new export following that drew faces the
    newest trained on again, 8 of them into validation. The newest is followed, with a note."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    data = tmp_path / "data"
    first = photo_faces(store, data, lfw_dir / PERSON, 10)
    bee, _ = add_class(store, "Bee", "ann", seed_face_ids=first)
    v1 = export_dataset(store, data, tmp_path / "v1", "ann", split=0.3).out_dir
    approve_faces(store, photo_faces(store, data, lfw_dir / PERSON, 40, start=10), "ann", class_id=bee)
    v2 = export_dataset(store, data, tmp_path / "v2", "ann", split=0.3, previous=v1).out_dir
    next((v2 / "raw_dataset").rglob("*.jpg")).unlink()
    assert newest_export(store) == v2
    v3 = export_dataset(store, data, tmp_path / "v3", "ann", split=0.3, seed=1, previous=newest_export(store))
    s2, s3 = sides(v2), sides(v3.out_dir)
    assert not [f for f, side in s2.items() if side == "train" and s3.get(f) == "val"]
    assert any(n.startswith(f"{v2}: followed, but not whole") and "1 file(s) missing" in n for n in v3.notes)


def test_the_page_checks_each_export_once_and_from_cache_after(tmp_path, lfw_dir, monkeypatch):
    """Every page draw ran export_damage (an is_file and a stat per file, through Path) on every past export,
    twice (exports_frame, earlier_exports): 20 s for 5 exports of 50k crops. Now one os.stat per file, and
    the answer kept until a folder of the export changes: a later draw stats its folders, not its files.
    A crop deleted since is still found (its folder changed)."""
    store, _ = store_of(tmp_path, lfw_dir, ["Bee", "Cee"], per_class=6)
    v1 = export_dataset(store, tmp_path / "data", tmp_path / "v1", "ann").out_dir
    files = len(json_of(v1)["files"])
    assert exports_frame(store)["on_disk"].tolist() == [True]
    calls = []
    real_stat = os.stat

    def counting_stat(path, *args, **kwargs):
        calls.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    assert exports_frame(store)["on_disk"].tolist() == [True] and earlier_exports(store) == [v1]
    crop_stats = [c for c in calls if c.endswith(".jpg")]
    assert crop_stats == [] and len(calls) < files, (len(calls), files)
    monkeypatch.undo()
    next((v1 / "raw_dataset").rglob("*.jpg")).unlink()
    assert exports_frame(store)["on_disk"].tolist() == [False] and earlier_exports(store) == [v1]


def json_of(out: Path) -> dict:
    import json

    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def hash_of(out: Path) -> str:
    import hashlib

    return hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()


# -- 4. a round trip through an export: tight crops get a second look with a border --------------------------------
TIGHT = ("Tony_Blair", "Tony_Blair_0004.jpg")  # its aligned crop is one MTCNN finds no face in, bare


def test_a_round_trip_keeps_a_face_mtcnn_misses_in_its_tight_crop(tmp_path, lfw_dir, pipeline_models):
    """`giflens import raw-dataset` of an export skipped a confirmed face ("no face found"): MTCNN finds none in
    the tight aligned crop of LFW's Tony_Blair_0004. The import now looks once more with a black border."""
    raw = tmp_path / "raw"
    (raw / "raw_dataset" / "Tony_Blair").mkdir(parents=True)
    for name in ("Tony_Blair_0001.jpg", "Tony_Blair_0002.jpg", TIGHT[1]):
        shutil.copyfile(lfw_dir / "Tony_Blair" / name, raw / "raw_dataset" / "Tony_Blair" / name)
    (raw / "labels.csv").write_text("Label,Index\nTony_Blair,0\n", encoding="utf-8")
    a_data = tmp_path / "a-data"
    a = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    first = import_raw_dataset(a, raw, Settings(data_dir=a_data, database_url=f"sqlite:///{tmp_path / 'a.db'}"), "ann")
    assert first.labels == 3, first.skipped
    out = export_dataset(a, a_data, tmp_path / "ex", "ann").out_dir
    crops = sorted((out / "raw_dataset" / "Tony_Blair").glob("*.jpg"))
    assert len(crops) == 3

    # the premise: bare, MTCNN misses one of the crops; with the border, none
    frames = [np.asarray(Image.open(c).convert("RGB")) for c in crops]
    bare = pipeline_models["detector"].detect(frames)
    assert sum(not d for d in bare) == 1
    retried = BorderRetryDetector(pipeline_models["detector"]).detect(frames)
    assert all(retried) and REDETECT_BORDER == 40
    (missed,) = [i for i, d in enumerate(bare) if not d]
    box = retried[missed][0].box  # in the crop's own coordinates: the face fills the crop
    assert box[0] < 40 and box[2] > 110 and box[2] - box[0] < 200

    b_url = f"sqlite:///{tmp_path / 'b.db'}"
    b = open_store(b_url)
    back = import_raw_dataset(b, out, Settings(data_dir=tmp_path / "b-data", database_url=b_url), "bob")
    assert back.labels == 3 and not [s for s in back.skipped if "no face found" in s], back.skipped
    with b() as s:
        labels = s.execute(select(FaceLabel.status, CelebrityClass.name)
                           .join(CelebrityClass, CelebrityClass.id == FaceLabel.class_id)).all()
    assert sorted(labels) == [("approved", "Tony Blair")] * 3


def test_a_reimport_looks_again_at_a_crop_an_import_without_the_retry_cached_faceless(tmp_path, lfw_dir, monkeypatch):
    """The faces cache is keyed by MTCNN's parameters only: a tight crop an ingest, or a giflens before the
    retry, cached without a face stayed faceless on every import after (the retry never ran). The import's stills
    have a faces namespace of their own (`import_pipeline`): no entry an ingest wrote is the import's answer."""
    import labeling.importers as importers
    from embeddings.pipeline import IngestPipeline

    raw = tmp_path / "raw"
    (raw / "raw_dataset" / "Tony_Blair").mkdir(parents=True)
    for name in ("Tony_Blair_0001.jpg", "Tony_Blair_0002.jpg", TIGHT[1]):
        shutil.copyfile(lfw_dir / "Tony_Blair" / name, raw / "raw_dataset" / "Tony_Blair" / name)
    (raw / "labels.csv").write_text("Label,Index\nTony_Blair,0\n", encoding="utf-8")
    a = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    import_raw_dataset(a, raw, Settings(data_dir=tmp_path / "a-data", database_url=f"sqlite:///{tmp_path / 'a.db'}"), "ann")
    out = export_dataset(a, tmp_path / "a-data", tmp_path / "ex", "ann").out_dir

    def import_into(name: str):
        url = f"sqlite:///{tmp_path / name}"
        return import_raw_dataset(open_store(url), out, Settings(data_dir=tmp_path / "b-data", database_url=url), "bob")

    with monkeypatch.context() as m:  # the import as giflens did it before the retry: its no-face entry cached
        m.setattr(importers, "import_pipeline", lambda s: IngestPipeline(s))
        before = import_into("b.db")
    assert before.labels == 2 and [s for s in before.skipped if "no face" in s]
    same = import_into("b.db")  # the store holding the faceless media: its stored shortcut is no hit either
    assert not [s for s in same.skipped if "no face" in s], same.skipped
    with open_store(f"sqlite:///{tmp_path / 'b.db'}")() as s:
        assert len(s.scalars(select(FaceLabel.face_id)).all()) == 3
    again = import_into("c.db")  # a fresh store, the same data folder (its cache, now with the face)
    assert again.labels == 3, again.skipped


# -- 5. hidden folders of other names: only what an export writes, beside what replaced it -----------------------
def test_other_programs_and_hand_made_hidden_folders_are_left_alone(tmp_path):
    """Leftovers of other export names were taken on their name and top-level entries: an empty
    `.sync.tmp-<12 digits>` (another program's), `.photos.tmp-<date>` holding projector/my-notes.txt, and a
    hand-made backup `.v1.old-<date>` holding an export were deleted. Now only a folder whose whole tree is what
    an export writes is, and a replaced one only beside the export that replaced it."""
    pytest.importorskip("fcntl")
    parent = tmp_path / "exports"
    sync = parent / ".sync.tmp-0123456789ab"
    sync.mkdir(parents=True)
    photos = parent / ".photos.tmp-202612071500"
    (photos / "projector").mkdir(parents=True)
    (photos / "projector" / "my-notes.txt").write_text("mine")
    backup = parent / ".v1.old-20261207"
    backup.mkdir()
    (backup / "labels.csv").write_text("Label,Index\n")
    (backup / "manifest.json").write_text('{"format": "giflens-export/1", "files": {"labels.csv": "x"}}')
    extra = parent / ".v2.tmp-00000000000f"  # an export's files, plus a user's sub-folder of crops
    (extra / "raw_dataset" / "Bee" / "mine").mkdir(parents=True)
    (extra / "raw_dataset" / "Bee" / "1.jpg").write_bytes(b"jpg")
    (extra / "labels.csv").write_text("Label,Index\n")
    killed = parent / ".v3.tmp-00000000000e"  # a killed export's: removed
    (killed / "raw_dataset" / "Bee").mkdir(parents=True)
    (killed / "raw_dataset" / "Bee" / "7.jpg").write_bytes(b"jpg")
    (killed / "projector").mkdir()
    (killed / "projector" / "vectors.tsv").write_text("")
    (killed / "labels.csv").write_text("Label,Index\n")
    old = time.time() - 3600
    for folder in parent.iterdir():
        os.utime(folder, (old, old))
    assert remove_stale_temporaries(parent / "export-new") == [killed]
    assert sorted(p.name for p in parent.iterdir()) == sorted(p.name for p in (sync, photos, backup, extra))
    assert (photos / "projector" / "my-notes.txt").read_text() == "mine"


# -- 6. round 19: damage found again after a while, caches kept for many exports, the page's note, a cache entry
#       never rewritten ---------------------------------------------------------------------------------------
def test_a_crop_cut_short_in_place_is_found_once_the_kept_answer_is_a_minute_old(tmp_path, lfw_dir, monkeypatch):
    """export_damage's answer was kept while manifest.json, the followed files and the export's folders kept their
    stats: a crop overwritten or cut short in place changes none of them, so the export stayed "on disk" for the
    server's life. The answer is now kept DAMAGE_RECHECK_SECONDS at most, then every file is stat'ed again."""
    import labeling.export as ex

    store, _ = store_of(tmp_path, lfw_dir, ["Bee", "Cee"])
    v1 = export_dataset(store, tmp_path / "data", tmp_path / "v1", "ann").out_dir
    assert exports_frame(store)["on_disk"].tolist() == [True]
    crop = next((v1 / "raw_dataset").rglob("*.jpg"))
    folder_before = os.stat(crop.parent).st_mtime_ns
    with open(crop, "r+b") as f:  # cut short in place: same inode, same folder
        f.truncate(10)
    assert os.stat(crop.parent).st_mtime_ns == folder_before
    assert ex.DAMAGE_RECHECK_SECONDS == 60
    assert intact_export(v1, hash_of(v1))  # within the minute: the kept answer, no stat per crop
    real = time.monotonic
    monkeypatch.setattr(ex, "_clock", lambda: real() + ex.DAMAGE_RECHECK_SECONDS + 1)
    why = ex.export_damage(v1, hash_of(v1))
    assert why is not None and "1 of another size than written" in why and crop.name in why
    assert exports_frame(store)["on_disk"].tolist() == [False]


def test_the_page_keeps_its_cached_checks_for_hundreds_of_exports(tmp_path, lfw_dir, monkeypatch):
    """Past 512 paths a cache was cleared whole: with 200 exports (3 hashed files each) every page draw hashed
    every manifest, classes.csv and split.csv again. Now the least recently used go first, and the caches hold
    what the store's recorded exports need: a second draw hashes nothing."""
    import labeling.export as ex

    store, _ = store_of(tmp_path, lfw_dir, ["Bee", "Cee"])
    v0 = export_dataset(store, tmp_path / "data", tmp_path / "exports" / "v0", "ann").out_dir
    with store() as s:
        row = s.scalars(select(Export)).one()
        record, at = dict(row.manifest), row.at
    with store() as s:  # 199 more recorded exports: copies of the first, each in its own folder
        for i in range(1, 200):
            shutil.copytree(v0, tmp_path / "exports" / f"v{i}")
            s.add(Export(at=at, editor="ann", out_dir=str(tmp_path / "exports" / f"v{i}"), manifest=record))
        s.commit()
    hashed: list[str] = []
    real = ex.sha256_file

    def counting(path):
        hashed.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(ex, "sha256_file", counting)

    def draw() -> int:  # what the Export page reads of the past exports on each run
        hashed.clear()
        assert exports_frame(store)["on_disk"].all() and len(earlier_exports(store)) == 200
        return len(hashed)

    assert draw() >= 200  # the first draw reads them
    assert draw() == 0  # the next finds every answer kept
    assert ex._cache_room >= 3 * 200
    monkeypatch.setattr(ex, "_cache_room", 3)  # full: the least recently used goes, not every entry
    cache: OrderedDict = OrderedDict()
    for path in "abc":
        ex._remember(cache, path, (0,), path)
    assert ex._recall(cache, "a") == ((0,), "a")
    ex._remember(cache, "d", (0,), "d")
    assert list(cache) == ["c", "a", "d"]


def test_the_page_says_followed_only_of_the_export_selected(tmp_path, lfw_dir, monkeypatch):
    """The page warned "followed, but not whole" of every damaged export it offered, also an older one the editor
    had not selected: they took the selected one for damaged. Now only the selected one is "followed", the
    others "offered"."""
    store, _ = store_of(tmp_path, lfw_dir, ["Bee", "Cee"], per_class=3)
    data = tmp_path / "data"
    v1 = export_dataset(store, data, tmp_path / "v1", "ann").out_dir
    v2 = export_dataset(store, data, tmp_path / "v2", "ann", previous=v1).out_dir
    next((v1 / "raw_dataset").rglob("*.jpg")).unlink()  # the older one damaged
    at = _export_page(monkeypatch, data, tmp_path)
    assert at.selectbox(key="export_previous").value == str(v2)
    (warned,) = [w.value for w in at.warning if "not whole" in w.value]
    assert warned.startswith(f"{v1}: offered, but not whole") and "if followed" in warned
    at.session_state["export_previous"] = str(v1)  # the editor selected it (the form's choice, once sent)
    at.run()
    assert at.selectbox(key="export_previous").value == str(v1)
    assert not at.exception, [e.value for e in at.exception]
    (warned,) = [w.value for w in at.warning if "not whole" in w.value]
    assert warned.startswith(f"{v1}: followed, but not whole")


def test_an_interrupted_import_leaves_no_cache_entry_the_store_disagrees_with(tmp_path, lfw_dir, monkeypatch):
    """The import rewrote an ordinary still's faceless faces entry in place with its border retry's face, while
    ingest's warm shortcut takes an entry never to change: an import killed between a chunk's cache write and its
    store write (here: its pipeline run with no store) left the store with no face for good, the cache saying one.
    The import's stills now have a faces namespace of their own (written once, like every entry): a re-import
    stores the face, the ordinary entry is untouched, and an ordinary ingest keeps finding what it always found.
    GIFs and videos are not looked at twice (only stills are tight crops)."""
    import labeling.importers as importers
    from embeddings.media import STILL
    from embeddings.pipeline import IngestPipeline
    from labeling.importers import import_pipeline
    from labeling.ingest import ingest
    from labeling.schema import Face

    raw = tmp_path / "raw"
    (raw / "raw_dataset" / "Tony_Blair").mkdir(parents=True)
    for name in ("Tony_Blair_0001.jpg", TIGHT[1]):
        shutil.copyfile(lfw_dir / "Tony_Blair" / name, raw / "raw_dataset" / "Tony_Blair" / name)
    (raw / "labels.csv").write_text("Label,Index\nTony_Blair,0\n", encoding="utf-8")
    a_url = f"sqlite:///{tmp_path / 'a.db'}"
    import_raw_dataset(open_store(a_url), raw, Settings(data_dir=tmp_path / "a-data", database_url=a_url), "ann")
    out = export_dataset(open_store(a_url), tmp_path / "a-data", tmp_path / "ex", "ann").out_dir
    crops = sorted((out / "raw_dataset").rglob("*.jpg"))
    url = f"sqlite:///{tmp_path / 'b.db'}"
    settings = Settings(data_dir=tmp_path / "b-data", database_url=url)
    with monkeypatch.context() as m:  # an import before the retry (or an ingest): a faceless entry, and the row
        m.setattr(importers, "import_pipeline", lambda s: IngestPipeline(s))
        first = import_raw_dataset(open_store(url), out, settings, "bob")
    assert first.labels == 1
    ordinary = IngestPipeline(settings)
    faces_ns = ordinary._namespaces(STILL).faces
    shas = [importers.sha256_file(c) for c in crops]

    def ordinary_counts() -> list[int]:
        return [int(ordinary.cache.meta(faces_ns, sha)["faces"]) for sha in shas]

    assert sorted(ordinary_counts()) == [0, 1]
    list(import_pipeline(settings).run(crops))  # the import's pipeline ran; its store writes never came
    assert sorted(ordinary_counts()) == [0, 1]  # the shared entry is not rewritten
    again = import_raw_dataset(open_store(url), out, settings, "bob")
    with open_store(url)() as s:
        assert len(s.scalars(select(Face.id)).all()) == 2 and len(s.scalars(select(FaceLabel.face_id)).all()) == 2
    assert not [x for x in again.skipped if "no face" in x], again.skipped

    fresh = f"sqlite:///{tmp_path / 'c.db'}"  # an ordinary ingest, on the same data folder: what it always found
    ingest(crops, settings, store=open_store(fresh), keep_outputs=True)
    with open_store(fresh)() as s:
        assert len(s.scalars(select(Face.id)).all()) == 1

    # a faceless GIF beside the stills: detected once, into the ordinary namespace, as ingest does it
    frames = [Image.new("RGB", (120, 90), (40 * i, 90, 160)) for i in range(3)]
    frames[0].save(raw / "raw_dataset" / "Tony_Blair" / "sky.gif", save_all=True, append_images=frames[1:],
                   duration=100, loop=0)
    retried: list[int] = []
    real_detect = BorderRetryDetector.detect

    def counting(self, batch):
        retried.append(len(batch))
        return real_detect(self, batch)

    monkeypatch.setattr(BorderRetryDetector, "detect", counting)
    d_url = f"sqlite:///{tmp_path / 'd.db'}"
    d_settings = Settings(data_dir=tmp_path / "d-data", database_url=d_url)
    back = import_raw_dataset(open_store(d_url), raw, d_settings, "dee")
    assert back.labels == 2 and sum(retried) == 2, (back.skipped, retried)  # the two stills' frames only
    gif_sha = importers.sha256_file(raw / "raw_dataset" / "Tony_Blair" / "sky.gif")
    gif_ns = IngestPipeline(d_settings)._namespaces(None).faces
    assert IngestPipeline(d_settings).cache.meta(gif_ns, gif_sha)["faces"] == 0
