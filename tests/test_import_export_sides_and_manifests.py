"""Import / export defects, each failing without its fix: an export imported into another store
and exported there without following it split one clip's crops across train and validation; an export
copied without manifest.json and split.csv and imported back into its own store doubled every face; an export
of a store without confirmed labels said nothing; a tags file named in composed Unicode missed a decomposed
file name, and a name differing only in case got no hint; a class list's skipped rows were also counted
unchanged; an image filed under two labels named only one of its copies."""
from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

import pytest
from conftest import n_events, photo_faces
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from labeling.classes import add_class, rename_class
from labeling.cli import app
from labeling.db import open_store, session_scope
from labeling.errors import ValidationError
from labeling.export import NO_CONFIRMED_LABELS, export_dataset
from labeling.import_groups import read_export_groups, record_groups, recorded_group_pairs
from labeling.importers import import_classes, import_raw_dataset, import_tags
from labeling.schema import Face, FaceEmbedding, FaceLabel, ImportedGroup, Media
from models.settings import Settings
from conftest import split_rows

runner = CliRunner()


@pytest.fixture(scope="module")
def model_data_dir(tmp_path_factory) -> Path:
    """Embedding cache and face crops shared by this module's real-model tests."""
    return tmp_path_factory.mktemp("giflens-round15-data")


def clip_store(url: str, data: Path, lfw_dir: Path):
    """Store A: one GIF of Al Gore (one media item, four faces frame by frame, each crop a real face) and
    three stills of Hugo Chavez, every face confirmed. No model runs: rows as ingest writes them."""
    store = open_store(url)
    crops = data / "crops"
    crops.mkdir(parents=True, exist_ok=True)
    gore = sorted((lfw_dir / "Al_Gore").glob("*.jpg"))[:4]
    with session_scope(store) as s:
        clip = Media(sha256="c" * 64, path="/m/gore.gif", kind="gif", status="ok",
                     frame_hashes=["0f0f0f0f0f0f0f0f"] * 4)
        s.add(clip)
        s.flush()
        clip_faces = []
        for i, photo in enumerate(gore):
            face = Face(media_id=clip.id, face_index=i, frame_index=i, x1=60, y1=60, x2=190, y2=190,
                        probability=0.99, landmarks=[[0, 0]] * 5)
            s.add(face)
            s.flush()
            with Image.open(photo) as im:
                im.crop((30, 30, 220, 220)).save(crops / f"{face.id}.jpg", quality=92)
            s.add(FaceEmbedding(face_id=face.id, model_id="dlib-resnet-v1", dim=2, vector=b"\0" * 8,
                                crop_path=f"crops/{face.id}.jpg"))
            clip_faces.append(face.id)
    stills = photo_faces(store, data, lfw_dir / "Hugo_Chavez", 3)
    add_class(store, "Al Gore", "ann", seed_face_ids=clip_faces)
    add_class(store, "Hugo Chavez", "ann", seed_face_ids=stills)
    return store


# -- 1. one clip's crops stay one group in a store that imported the export, followed or not (and 6) -----------------
@pytest.mark.slow
def test_an_imported_clips_crops_stay_on_one_side_with_and_without_following(tmp_path, lfw_dir, model_data_dir):
    a = clip_store(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "data-a", lfw_dir)
    export_dataset(a, tmp_path / "data-a", tmp_path / "eA", "ann", split=0.5)
    clip = {r["crop_sha256"] for r in split_rows(tmp_path / "eA") if r["label"] == "Al_Gore"}
    assert len(clip) == 4 and len({r["group"] for r in split_rows(tmp_path / "eA") if r["label"] == "Al_Gore"}) == 1

    b_url = f"sqlite:///{tmp_path / 'b.db'}"
    b = open_store(b_url)
    settings = Settings(data_dir=model_data_dir, database_url=b_url)
    imported = import_raw_dataset(b, tmp_path / "eA", settings, "bob")
    assert imported.labels == 7, imported.skipped
    with b() as s:
        assert s.scalar(select(func.count(func.distinct(ImportedGroup.group_key)))) == 4  # the clip's, each still's
        assert s.scalar(select(func.count()).select_from(ImportedGroup)) == 7
    again = import_raw_dataset(b, tmp_path / "eA", settings, "bob")  # idempotent: nothing new, no event
    assert again.labels == 0 and again.event_id is None
    with b() as s:
        assert s.scalar(select(func.count()).select_from(ImportedGroup)) == 7

    where = ["--data-dir", str(model_data_dir), "--database-url", b_url, "--split", "0.5"]
    for out, extra in (("eB", []), ("eB-fresh", ["--no-previous"]), ("eB-seed", ["--no-previous", "--seed", "3"])):
        result = runner.invoke(app, ["export", str(tmp_path / out), *where, *extra])
        assert result.exit_code == 0, result.output
        rows = [r for r in split_rows(tmp_path / out) if r["sha256"] in clip]
        assert len(rows) == 4 and len({r["side"] for r in rows}) == 1, rows  # one clip, one side
        assert len({r["group"] for r in rows}) == 1

    # 6. an image filed under two labels (a crop ingested above: its cache entry is reused) names both copies
    raw = tmp_path / "giphy" / "raw_dataset"
    crop = sorted((tmp_path / "eA" / "raw_dataset" / "Al_Gore").glob("*.jpg"))[0]
    for label in ("CON", "PRO"):
        (raw / label).mkdir(parents=True)
        shutil.copyfile(crop, raw / label / "dupe.jpg")
    (raw.parent / "labels.csv").write_text("Label,Index\nCON,0\nPRO,1\n", encoding="utf-8")
    summary = import_raw_dataset(b, raw.parent, settings, "bob")
    assert summary.labels == 0
    assert summary.skipped == [f"{raw / 'PRO' / 'dupe.jpg'}: the same image is also under CON/; not labeled, and "
                               f"neither is {raw / 'CON' / 'dupe.jpg'}: neither copy is labeled (file it under one "
                               "label)"]


def test_export_groups_are_read_namespaced_and_join_only_recorded_media(store_url, tmp_path, lfw_dir):
    """The pure half: split.csv's groups (of one row too), keyed by file and crop bytes, namespaced by the
    file's content; recorded groups join the media they hold in an export, and only those."""
    folder = tmp_path / "e"
    folder.mkdir()
    (folder / "split.csv").write_text(
        "face_id,class_id,label,media_id,group,side,sha256,crop_sha256\n"
        "1,1,Al_Gore,7,7,train,m7,c1\n2,1,Al_Gore,7,7,train,m7,c2\n3,1,Al_Gore,8,8,val,m8,c3\n", encoding="utf-8")
    groups, note = read_export_groups(folder)
    assert note is None
    key = groups.key_of(folder / "raw_dataset" / "Al_Gore" / "1.jpg", None)
    assert key is not None and key == groups.key_of(Path("x/y.jpg"), "c2")  # by file, or by the crop's bytes
    assert groups.key_of(folder / "raw_dataset" / "Al_Gore" / "3.jpg", "c3") not in (None, key)  # a clip of its own
    other = tmp_path / "f"
    other.mkdir()
    (other / "split.csv").write_text((folder / "split.csv").read_text().replace("val", "train"), encoding="utf-8")
    assert read_export_groups(other)[0].key_of(Path("a/b.jpg"), "c1") != key  # another export: another key
    assert read_export_groups(tmp_path)[0].by_file == {}  # GIPHY's layout, no split.csv: nothing

    store = open_store(store_url)
    faces = photo_faces(store, tmp_path / "data", lfw_dir / "Al_Gore", 4)
    add_class(store, "Al Gore", "ann", seed_face_ids=faces)
    with store() as s:
        media = list(s.scalars(select(Media.id).order_by(Media.id)))
    with session_scope(store) as s:
        assert record_groups(s, {media[0]: {key}, media[1]: {key}}) == 2
    with session_scope(store) as s:
        assert record_groups(s, {media[0]: {key}}) == 0
        assert recorded_group_pairs(s, media) == [(media[0], media[1])]
    for split in (0.5, 0.25):
        out = export_dataset(store, tmp_path / "data", tmp_path / f"out-{split}", "ann", split=split)
        sides = {int(r["media_id"]): r["side"] for r in split_rows(out.out_dir)}
        assert sides[media[0]] == sides[media[1]]
        assert len({r["group"] for r in split_rows(out.out_dir) if int(r["media_id"]) in media[:2]}) == 1


# -- 2. an export without its manifest and split.csv, imported back into its own store ------------------------------
def test_an_own_export_without_manifest_or_split_is_refused_or_its_crops_skipped(tmp_path, lfw_dir):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    data = tmp_path / "data"
    store = open_store(url)
    faces = photo_faces(store, data, lfw_dir / "Al_Gore", 3)
    add_class(store, "Al Gore", "ann", seed_face_ids=faces)
    export_dataset(store, data, tmp_path / "e1", "ann")
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(tmp_path / "e1" / "labels.csv", plain / "labels.csv")
    shutil.copytree(tmp_path / "e1" / "raw_dataset", plain / "raw_dataset")
    before = n_events(store)
    settings = Settings(data_dir=data, database_url=url)
    with pytest.raises(ValidationError, match=r"is an export of this store \(each of its 3 image\(s\) is, byte for "
                                              r"byte, the face crop of a face confirmed here"):
        import_raw_dataset(store, plain, settings, "ann")
    assert n_events(store) == before
    with store() as s:
        assert s.scalar(select(func.count()).select_from(Media)) == 3

    # beside an image of its own (here one no decoder reads: no model needed), the crops are skipped, one note
    (plain / "raw_dataset" / "Al_Gore" / "zz-broken.jpg").write_bytes(b"not an image")
    summary = import_raw_dataset(store, plain, settings, "ann")
    crops_note = [n for n in summary.skipped if "face crops of faces confirmed here" in n]
    assert len(crops_note) == 1 and crops_note[0].startswith("3 image(s) are, byte for byte, face crops")
    assert summary.labels == 0 and summary.images == 4
    with store() as s:
        assert s.scalar(select(func.count()).select_from(FaceLabel)) == 3
        assert s.scalar(select(func.count()).select_from(Media).where(Media.status == "ok")) == 3


@pytest.mark.slow
def test_a_sibling_stores_export_with_its_manifest_is_imported_though_its_crops_match(tmp_path, lfw_dir):
    """Two stores seeded from the same photos write the same crops, byte for byte: the crops check is for the
    bare layout only, so another store's export (manifest and split.csv beside it, a class renamed there)
    is imported, as the README promises."""
    data = tmp_path / "data"
    mine = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    add_class(mine, "Al Gore", "ann", seed_face_ids=photo_faces(mine, data, lfw_dir / "Al_Gore", 2))
    sibling = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    gore, _ = add_class(sibling, "Al Gore", "bob", seed_face_ids=photo_faces(sibling, tmp_path / "b", lfw_dir / "Al_Gore", 2))
    rename_class(sibling, gore, "Albert Gore", "bob")
    export_dataset(sibling, tmp_path / "b", tmp_path / "eb", "bob")
    summary = import_raw_dataset(mine, tmp_path / "eb", Settings(data_dir=data, database_url=f"sqlite:///{tmp_path / 'a.db'}"),
                                 "ann")
    assert not [n for n in summary.skipped if "face crops of faces confirmed here" in n], summary.skipped
    assert summary.images == 2 and summary.labels == 2


# -- 3. an export of a store without confirmed labels says so ----------------------------------------------------
def test_an_export_without_confirmed_labels_has_a_note(tmp_path, lfw_dir):
    data = tmp_path / "data"
    url = f"sqlite:///{tmp_path / 'a.db'}"
    photo_faces(open_store(url), data, lfw_dir / "Al_Gore", 2)  # ingested media, nothing approved
    result = runner.invoke(app, ["export", str(tmp_path / "out"), "--data-dir", str(data), "--database-url", url])
    assert result.exit_code == 0, result.output
    assert "note no confirmed labels (approved or relabeled faces" in " ".join(result.stderr.split())
    assert "run `giflens import raw-dataset`" in " ".join(result.stderr.split())
    assert result.stdout.strip().startswith("exported 0 classes, 0 faces")
    summary = export_dataset(open_store(url), data, tmp_path / "out2", "ann")
    assert summary.notes == summary.manifest["notes"] == [NO_CONFIRMED_LABELS]


# -- 4. tags: file names compared in NFC; a name differing only in case gets a hint -------------------------------
def test_tags_match_names_in_any_unicode_form_and_hint_at_a_case_only_difference(store_url, tmp_path):
    store = open_store(store_url)
    decomposed = unicodedata.normalize("NFD", "Beyoncé.jpg")
    with session_scope(store) as s:
        s.add(Media(sha256="a" * 64, path=f"/m/{decomposed}", kind="image", status="ok", size_bytes=10))
        s.add(Media(sha256="b" * 64, path="/m/Al_Gore_0002.jpg", kind="image", status="ok", size_bytes=10))
    tags = tmp_path / "tags.csv"
    tags.write_text(f"file,uploader_tags\n{unicodedata.normalize('NFC', 'Beyoncé.jpg')},singer\n"
                    f"m/{unicodedata.normalize('NFC', 'Beyoncé.jpg')},stage\nal_gore_0002.jpg,politics\n",
                    encoding="utf-8")
    summary = import_tags(store, tags, "ann")
    assert summary.tags == 2, summary.skipped
    assert summary.skipped == [f"{tags}: line 4: al_gore_0002.jpg is not ingested; did you mean Al_Gore_0002.jpg? "
                               "(file names are matched in their exact case)"]


# -- 5. a class list's rows add up ---------------------------------------------------------------------------------
def test_class_import_counts_each_row_once(store_url, tmp_path):
    store = open_store(store_url)
    first, second = tmp_path / "c1.csv", tmp_path / "c2.csv"
    first.write_text("Labels,Index\nBrad_Pitt_[m.0c6qh],0\nTom_Hanks_[m.0bxtg],1\n", encoding="utf-8")
    second.write_text("Labels,Index\nBrad_Pitt_[m.999],0\nTom_Hanks_[m.0bxtg],1\nBradley_Pitt_[m.0c6qh],2\n"
                      "Meryl_Streep,3\n", encoding="utf-8")
    import_classes(store, first, "ann")
    summary = import_classes(store, second, "ann")
    assert (summary.created, summary.updated, summary.unchanged, len(summary.skipped)) == (1, 0, 1, 2), summary
    assert summary.created + summary.updated + summary.unchanged + len(summary.skipped) == 4
    assert "1 classes created, 0 updated, 1 unchanged, 2 skipped" in summary.line()
