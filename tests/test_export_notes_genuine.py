"""Round 17 of the recognition-loop audit, each failing without its fix: an export imported into another store
and exported there following it moved a validation face to train without a word (two aligned crops of different
photos of one person lay within the near-duplicate radius, and nothing said so outside manifest.json); a retired
class holding confirmed faces left the export silently; and the classifier's genuine distances left out one face
at a time, so the frames of one GIF calibrated against each other and the genuine-accept rate read too well."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import photo_faces
from PIL import Image
from sqlalchemy import update

from bench.lfw_faces import load_lfw_faces
from bench.lfw_verify import embed_images
from embeddings.near_duplicates import near_duplicate_media
from labeling.classes import add_class, merge_classes, retire_class
from labeling.db import open_store, session_scope
from labeling.export import (NEAR_DUPLICATE_RADIUS, copy_groups, export_dataset, moved_to_train_note,
                             retired_classes_note)
from labeling.importers import import_raw_dataset
from labeling.schema import Media
from models.celebrity_classifier import CentroidKnnClassifier, leave_one_out_distances
from models.settings import Settings
from conftest import lopez_raw_dataset, partition, split_rows

MODEL = "dlib-resnet-v1"


def set_hashes(store, face_ids: list[int], hashes: list[str]) -> None:
    """Frame hashes of the media holding `face_ids` (one each), as ingest would store them."""
    from labeling.schema import Face

    with session_scope(store) as s:
        for face_id, h in zip(face_ids, hashes):
            media_id = s.get(Face, face_id).media_id
            s.execute(update(Media).where(Media.id == media_id).values(frame_hashes=[h]))


# -- 1b. crops an earlier export kept apart stay apart on a round trip (real pipeline) ----------------------------
def round_trip(tmp_path: Path, lfw_dir: Path):
    """Store A imports five LFW photos of George Lopez and six of Jennifer Lopez and exports them (eA); store B
    imports eA. Returns B, its settings, and eA's split.csv rows."""
    raw = lopez_raw_dataset(tmp_path / "giphy", lfw_dir)
    data_a, data_b = tmp_path / "data-a", tmp_path / "data-b"
    a = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    assert import_raw_dataset(a, raw, Settings(data_dir=data_a, database_url=f"sqlite:///{tmp_path / 'a.db'}"),
                              "ann").labels == 11
    export_dataset(a, data_a, tmp_path / "eA", "ann")
    b = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    settings_b = Settings(data_dir=data_b, database_url=f"sqlite:///{tmp_path / 'b.db'}")
    assert import_raw_dataset(b, tmp_path / "eA", settings_b, "bob").labels == 11
    return b, settings_b, split_rows(tmp_path / "eA")


def close_crops(store, rows_a: list[dict[str, str]]) -> list[tuple[str, str, int]]:
    """(crop sha256, crop sha256, bits) of the imported crops of different eA groups within the radius."""
    group_a = {r["crop_sha256"]: r["group"] for r in rows_a}
    with session_scope(store) as s:
        hashes = {sha: h for sha, h in s.query(Media.sha256, Media.frame_hashes) if sha in group_a}
    return [(x, y, d) for x, y, _, d in near_duplicate_media(hashes, radius=NEAR_DUPLICATE_RADIUS)
            if group_a[x] != group_a[y]]


@pytest.mark.slow
def test_a_round_trip_keeps_apart_the_crops_an_export_kept_apart(tmp_path, lfw_dir):
    """Store B's export follows eA. Two of George Lopez's aligned crops lie within the near-duplicate radius
    (the audit's case): B used to join them, so the validation one trained. Now every group and every side of
    A's export holds in B's, and nothing moves."""
    b, settings_b, rows_a = round_trip(tmp_path, lfw_dir)
    summary = export_dataset(b, settings_b.data_dir, tmp_path / "eB", "bob", previous=tmp_path / "eA")
    rows_b = split_rows(tmp_path / "eB")
    assert close_crops(b, rows_a), "no two crops of different groups lie within the radius: the case is not exercised"
    assert partition(rows_b, "sha256") == partition(rows_a, "crop_sha256")
    assert {r["sha256"]: r["side"] for r in rows_b} == {r["crop_sha256"]: r["side"] for r in rows_a}
    earlier = summary.manifest["split"]["earlier_sides"]
    assert earlier["faces_moved_to_train"] == 0 and earlier["faces_kept_side"] == 11
    assert summary.val == sum(r["side"] == "val" for r in rows_a) >= 2


@pytest.mark.slow
def test_a_re_upload_near_two_crops_an_export_kept_apart_joins_one_and_bridges_nothing(tmp_path, lfw_dir):
    """The reviewer's case: store B ingests a re-encoded copy of one of the two close crops (its hashes lie
    near both) and confirms its face. B's export, following eA, used to join the two crops through the copy
    (the pair rule looked at the crops alone), moving a validation face to train. Now the copy joins the
    crop it copies, the other crop keeps its group and side, and nothing moves."""
    from labeling.face_labels import relabel_faces
    from labeling.ingest import ingest
    from labeling.schema import CelebrityClass, Face

    b, settings_b, rows_a = round_trip(tmp_path, lfw_dir)
    x, y, _ = close_crops(b, rows_a)[0]
    copied = {r["crop_sha256"]: r for r in rows_a}[x]
    copy = tmp_path / "upload" / "reupload.jpg"
    copy.parent.mkdir()
    with Image.open(tmp_path / "eA" / "raw_dataset" / copied["label"] / f"{copied['face_id']}.jpg") as im:
        im.save(copy, quality=90)
    assert ingest([copy], settings_b, store=b).ingested == 1
    with session_scope(b) as s:
        media = s.query(Media).filter(Media.path.like("%reupload.jpg")).one()
        face_ids = [f.id for f in s.query(Face).filter(Face.media_id == media.id)]
        copy_sha, class_id = media.sha256, s.query(CelebrityClass.id).filter(
            CelebrityClass.name == copied["label"].replace("_", " ")).scalar()
    assert len(face_ids) == 1 and relabel_faces(b, face_ids, class_id, "bob").changed == 1
    with session_scope(b) as s:
        hashes = dict(s.query(Media.sha256, Media.frame_hashes).filter(Media.sha256.in_([x, y, copy_sha])))
    near = {frozenset(p[:2]) for p in near_duplicate_media(hashes, radius=NEAR_DUPLICATE_RADIUS)}
    assert {frozenset((copy_sha, x)), frozenset((copy_sha, y))} <= near, "the copy is not near both: not exercised"

    summary = export_dataset(b, settings_b.data_dir, tmp_path / "eB", "bob", previous=tmp_path / "eA")
    rows_b = {r["sha256"]: r for r in split_rows(tmp_path / "eB")}
    assert rows_b[copy_sha]["group"] == rows_b[x]["group"] != rows_b[y]["group"]
    assert partition([r for r in rows_b.values() if r["sha256"] != copy_sha], "sha256") == \
        partition(rows_a, "crop_sha256")
    assert {sha: r["side"] for sha, r in rows_b.items() if sha != copy_sha} == \
        {r["crop_sha256"]: r["side"] for r in rows_a}
    assert summary.manifest["split"]["earlier_sides"]["faces_moved_to_train"] == 0
    assert not any("now train" in n for n in summary.notes)


def test_hashes_do_not_join_crops_of_different_earlier_groups_but_other_signals_do():
    """The pure half: media 1 and 2 lie 4 bits apart; kept apart by their earlier groups, they join only
    through another signal (an earlier group, a same-photo face) or a media item without an earlier group,
    which joins by its hashes as always (a copy new to this export)."""
    h1, h2 = "3e846ccfb812f90b", "7b046ccfb812f90b"  # the audit's two George Lopez crops: 4 bits apart
    hashes = {1: [h1], 2: [h2], 3: [h1]}
    groups, _ = copy_groups(hashes, [], None)
    assert groups[1] == groups[2] == groups[3]
    groups, _ = copy_groups(hashes, [], None, apart={1: "71", 2: "75"})
    assert groups[1] == groups[3] != groups[2]  # 3, a copy of 1 new to this export, joins 1 and bridges nothing
    groups, _ = copy_groups({1: [h1], 2: [h2], 3: [h2]}, [], None, apart={1: "71", 2: "75"})
    assert groups[2] == groups[3] != groups[1]  # closest first: 3 is 2's copy, 4 bits from 1
    groups, _ = copy_groups({**hashes, 4: [h2]}, [], None, joined=[(3, 4)], apart={1: "71", 2: "75"})
    assert groups[3] == groups[4] and groups[1] != groups[2]  # joined first: 3 and 4, then one of 1 and 2 at most
    groups, _ = copy_groups({1: [h1], 2: [h2]}, [], None, apart={1: "71", 2: "75"})
    assert groups[1] != groups[2]
    groups, _ = copy_groups({1: [h1], 2: [h2]}, [], None, joined=[(1, 2)], apart={1: "71", 2: "75"})
    assert groups[1] == groups[2]
    groups, _ = copy_groups({1: [h1], 2: [h2]}, [], None, apart={1: "71", 2: "71"})
    assert groups[1] == groups[2]


# -- 1a. validation faces that now train are named in a note --------------------------------------------------
def test_validation_faces_moved_to_train_are_named_and_explained(tmp_path, lfw_dir):
    """Two photos of each class: at a share of 0.5 each class gives one validation face. Exported first with
    a radius of 0, George Lopez's two photos (frame hashes 4 bits apart) are two groups on two sides; the next
    export, at the default radius, joins them and trains the pair: a note says so, and names the class. A
    share of 0 trains every earlier validation face: the note says that is why."""
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    lopez = photo_faces(store, tmp_path, lfw_dir / "George_Lopez", 2)
    gore = photo_faces(store, tmp_path, lfw_dir / "Al_Gore", 2, start=2)
    set_hashes(store, lopez, ["3e846ccfb812f90b", "7b046ccfb812f90b"])
    add_class(store, "George Lopez", "ann", seed_face_ids=lopez)
    add_class(store, "Al Gore", "ann", seed_face_ids=gore)
    first = export_dataset(store, tmp_path, tmp_path / "e1", "ann", split=0.5, near_duplicate_radius=0)
    assert first.val == 2 and first.notes == []

    second = export_dataset(store, tmp_path, tmp_path / "e2", "ann", split=0.5, previous=tmp_path / "e1")
    assert second.manifest["split"]["earlier_sides"]["faces_moved_to_train"] == 1
    assert second.notes == [moved_to_train_note(tmp_path / "e1", ["George Lopez"], 1, False)]
    assert second.notes[0].startswith(f"1 face(s) that were validation faces in {tmp_path / 'e1'} now train "
                                      "(of 'George Lopez'): 1 group(s) of copies here unite media of its train and "
                                      "validation sides (frame hashes within 6 bits")
    assert json.loads((tmp_path / "e2" / "manifest.json").read_text(encoding="utf-8"))["notes"] == second.notes

    none = export_dataset(store, tmp_path, tmp_path / "e3", "ann", split=0.0, previous=tmp_path / "e1")
    assert none.val == 0 and none.notes == [
        f"2 face(s) that were validation faces in {tmp_path / 'e1'} now train (of 'Al Gore', 'George Lopez'): a "
        "validation share of 0 asks for no validation set"]


# -- 2. retired classes holding confirmed faces are named -------------------------------------------------------
def test_retired_classes_with_confirmed_faces_are_named_in_a_note(tmp_path, lfw_dir):
    """A retired class's confirmed faces are left out, as ever, now with a note naming it and counting them; a
    class retired by a merge holds no labels any more and is not named."""
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    kept = photo_faces(store, tmp_path, lfw_dir / "Al_Gore", 2)
    gone = photo_faces(store, tmp_path, lfw_dir / "George_Lopez", 3, start=2)  # media numbered apart
    merged = photo_faces(store, tmp_path, lfw_dir / "Hugo_Chavez", 2, start=5)
    gore, _ = add_class(store, "Al Gore", "ann", seed_face_ids=kept)
    lopez, _ = add_class(store, "George Lopez", "ann", seed_face_ids=gone)
    chavez, _ = add_class(store, "Hugo Chávez", "ann", seed_face_ids=merged)
    retire_class(store, lopez, "ann")
    merge_classes(store, chavez, gore, "ann")
    summary = export_dataset(store, tmp_path, tmp_path / "e", "ann")
    assert summary.classes == 1 and summary.faces == 4
    note = "1 retired class(es) (3 confirmed face(s)) left out: 'George Lopez'; set a class active again on the " \
           "Classes page to export it"
    assert summary.notes == [note]
    assert json.loads((tmp_path / "e" / "manifest.json").read_text(encoding="utf-8"))["notes"] == [note]
    many = retired_classes_note([(f"Class {i}", 2) for i in range(12)])
    assert many.startswith("12 retired class(es) (24 confirmed face(s)) left out: 'Class 0', ") and \
        "'Class 9' and 2 more;" in many and "Class 10" not in many


# -- 3. genuine distances leave one media item out -------------------------------------------------------------
@pytest.fixture(scope="module")
def gif_frames(lfw_dir: Path, tmp_path_factory) -> dict:
    """Two 'GIFs' of Jennifer Lopez, four frames each (one LFW photo shifted by 0-3 px, as a still head moves
    across frames), embedded by the real pipeline; ten other LFW people, five photos each, one media item each."""
    folder = tmp_path_factory.mktemp("gif-frames")
    paths, media = [], []
    for g, photo in enumerate(sorted((lfw_dir / "Jennifer_Lopez").glob("*.jpg"))[:2]):
        with Image.open(photo) as im:
            for shift in range(4):
                path = folder / f"gif{g}-frame{shift}.jpg"
                im.crop((shift, shift, 250 - 3 + shift, 250 - 3 + shift)).resize((250, 250)).save(path, quality=90)
                paths.append(path)
                media.append(f"gif-{g}")
    vectors, _ = embed_images(paths, MODEL, {})
    others = load_lfw_faces(lfw_dir, min_photos=10, max_people=10)
    keep = np.concatenate([np.flatnonzero(others.names == p)[:5] for p in sorted(set(others.names.tolist()))])
    x = np.vstack([np.stack([vectors[p] for p in paths]), others.vectors[keep]]).astype(np.float64)
    return {"x": x / np.linalg.norm(x, axis=1, keepdims=True),
            "y": ["Jennifer_Lopez"] * len(paths) + others.names[keep].astype(str).tolist(),
            "media": media + [f"photo-{i}" for i in keep.tolist()], "frames": len(paths)}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::models.celebrity_classifier.CalibrationWarning")  # 11 classes: capped, as meant
def test_genuine_distances_hold_out_the_whole_media_item(gif_frames):
    """Each frame measured against a centroid holding its own GIF's other frames lies near 0; with media
    given, it is measured against the other GIF only. The threshold comes from impostors alone: it, the
    version and every prediction stay the same, while the genuine-accept rate and counts are honest."""
    x, y, media, n = gif_frames["x"], gif_frames["y"], gif_frames["media"], gif_frames["frames"]
    classes, index = np.unique(np.asarray(y), return_inverse=True)
    by_face, _ = leave_one_out_distances(x, index, len(classes))
    by_media, impostor = leave_one_out_distances(x, index, len(classes), media)
    assert len(by_face) == len(by_media) == len(x)  # rows in order: the GIF frames come first
    other_gif = [x[4:8].mean(axis=0), x[:4].mean(axis=0)]
    expected = [1 - float(x[i] @ (c / np.linalg.norm(c))) for i in range(n) for c in [other_gif[i // 4]]]
    np.testing.assert_allclose(by_media[:n], expected, atol=1e-6)
    assert by_face[:n].max() < by_media[:n].min()  # its siblings flattered every frame
    np.testing.assert_array_equal(by_face[n:], by_media[n:])  # one face per media item: nothing changes
    np.testing.assert_array_equal(impostor, leave_one_out_distances(x, index, len(classes))[1])

    plain = CentroidKnnClassifier().fit(x, y, MODEL)
    grouped = CentroidKnnClassifier().fit(x[::-1], y[::-1], MODEL, groups=media[::-1])  # any row order
    assert grouped.threshold_ == plain.threshold_ and grouped.version == plain.version
    assert grouped.genuine_accept_rate_ == float(np.mean(by_media <= plain.threshold_))
    assert plain.genuine_accept_rate_ == float(np.mean(by_face <= plain.threshold_))
    assert (plain.predict(x, MODEL)[0] == grouped.predict(x, MODEL)[0]).all()

    one_gif = CentroidKnnClassifier().fit(x, y, MODEL, groups=["gif"] * n + media[n:])  # a class of one media item
    assert one_gif.calibration_sizes_ == {"genuine": len(x) - n, "impostor": len(x)}
    with pytest.raises(ValueError, match="groups"):
        CentroidKnnClassifier().fit(x, y, MODEL, groups=media[:-1])
