"""Crops an imported export put in different groups stay apart in every later export of the importing store.

A store that imports an earlier giflens export holds each face crop as a media item of its own. Aligned crops of
one person's different photos can hash within the near-duplicate radius; the export that wrote them had the
frames and kept them apart. That used to hold only while an export followed that very export (`--previous`):
the next export, following the store's own or none, joined them and changed groups and sides. The groups are now
recorded at import, groups of one row included, and give the `apart` labels of every later export."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import photo_faces
from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from embeddings.near_duplicates import near_duplicate_media
from labeling.classes import add_class
from labeling.db import open_store, session_scope
from labeling.export import NEAR_DUPLICATE_RADIUS, export_dataset
from labeling.import_groups import (ExportGroups, read_export_groups, record_groups, recorded_group_pairs,
                                    recorded_groups)
from labeling.importers import import_raw_dataset
from labeling.recognition import media_groups
from labeling.schema import Face, ImportedGroup, Media
from models.settings import Settings
from conftest import lopez_raw_dataset, partition, split_rows


# -- the real pipeline: export, import into another store, export there twice ----------------------------------
@pytest.mark.slow
def test_crops_of_different_imported_groups_stay_apart_in_every_later_export(tmp_path, lfw_dir):
    """Store A imports five LFW photos of George Lopez and six of Jennifer Lopez (each photo its own group) and
    exports them (eA); store B imports eA and exports following it (eB), then following eB (what `giflens export`
    does by default) and with none followed (`--no-previous`). Two of George Lopez's crops lie within the radius:
    eB kept them apart already; the two later exports used to join them. Now each keeps eA's groups, and the
    one following eB moves no face."""
    raw = lopez_raw_dataset(tmp_path / "giphy", lfw_dir)
    a_url = f"sqlite:///{tmp_path / 'a.db'}"
    a = open_store(a_url)
    assert import_raw_dataset(a, raw, Settings(data_dir=tmp_path / "data-a", database_url=a_url), "ann").labels == 11
    export_dataset(a, tmp_path / "data-a", tmp_path / "eA", "ann")
    rows_a = split_rows(tmp_path / "eA")
    assert len({r["group"] for r in rows_a}) == 11  # groups of one row, each

    b = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    settings_b = Settings(data_dir=tmp_path / "data-b", database_url=f"sqlite:///{tmp_path / 'b.db'}")
    assert import_raw_dataset(b, tmp_path / "eA", settings_b, "bob").labels == 11
    with b() as s:
        assert s.scalar(select(ImportedGroup.id).limit(1)) is not None  # groups of one row are recorded
        hashes = {sha: h for sha, h in s.execute(select(Media.sha256, Media.frame_hashes))}
        media = list(s.scalars(select(Media.id)))
        assert recorded_group_pairs(s, media) == []  # and join nothing
    group_a = {r["crop_sha256"]: r["group"] for r in rows_a}
    crops = {sha: hashes[sha] for sha in group_a}
    close = [(x, y) for x, y, _, _ in near_duplicate_media(crops, radius=NEAR_DUPLICATE_RADIUS)
             if group_a[x] != group_a[y]]
    assert close, "no two crops of different groups lie within the radius: the case is not exercised"

    export_dataset(b, settings_b.data_dir, tmp_path / "eB", "bob", previous=tmp_path / "eA")
    rows_b = split_rows(tmp_path / "eB")
    assert partition(rows_b, "sha256") == partition(rows_a, "crop_sha256")

    again = export_dataset(b, settings_b.data_dir, tmp_path / "eB2", "bob", previous=tmp_path / "eB")
    rows_b2 = split_rows(tmp_path / "eB2")
    assert partition(rows_b2, "sha256") == partition(rows_a, "crop_sha256")
    assert {r["sha256"]: r["side"] for r in rows_b2} == {r["sha256"]: r["side"] for r in rows_b}
    assert again.manifest["split"]["earlier_sides"]["faces_moved_to_train"] == 0
    assert not any("now train" in n for n in again.notes)

    export_dataset(b, settings_b.data_dir, tmp_path / "eB-fresh", "bob")  # --no-previous
    assert partition(split_rows(tmp_path / "eB-fresh"), "sha256") == partition(rows_a, "crop_sha256")


# -- the store half, fast: recorded groups keep crops apart, a group of one joins nothing -----------------------
def test_recorded_groups_of_one_and_more_keep_crops_apart_without_following(tmp_path, lfw_dir):
    """split.csv: a clip of two crops (group 7) and a still (group 8, one row). Media 0 and 1 are recorded in
    group 7, media 2 in group 8, media 3 in none (a re-upload new here). Media 1 and 2 lie 4 bits apart (the
    audit's two George Lopez crops), media 3 is a copy of media 2. An export following nothing keeps 0 and 1
    together, 2 and its copy 3 together, and the two groups apart; the old code dropped group 8 and joined all."""
    folder = tmp_path / "e"
    folder.mkdir()
    (folder / "split.csv").write_text(
        "face_id,class_id,label,media_id,group,side,sha256,crop_sha256\n"
        "1,1,George_Lopez,7,7,train,m7,c1\n2,1,George_Lopez,7,7,train,m7,c2\n3,1,George_Lopez,8,8,val,m8,c3\n",
        encoding="utf-8")
    groups, note = read_export_groups(folder)
    assert note is None
    clip = groups.key_of(Path("x/y.jpg"), "c1")
    still = groups.key_of(folder / "raw_dataset" / "George_Lopez" / "3.jpg", None)  # by file: a group of one
    assert clip is not None and still is not None and clip != still

    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    faces = photo_faces(store, tmp_path / "data", lfw_dir / "George_Lopez", 4)
    add_class(store, "George Lopez", "ann", seed_face_ids=faces)
    with session_scope(store) as s:
        media = [s.get(Face, f).media_id for f in faces]
        for m, h in zip(media[1:], ["3e846ccfb812f90b", "7b046ccfb812f90b", "7b046ccfb812f90b"]):
            s.execute(update(Media).where(Media.id == m).values(frame_hashes=[h]))
        assert record_groups(s, {media[0]: {clip}, media[1]: {clip}, media[2]: {still}}) == 3
    with session_scope(store) as s:
        assert record_groups(s, {media[2]: {still}}) == 0  # a re-import records nothing new
        assert recorded_group_pairs(s, media) == [(media[0], media[1])]  # a group of one joins nothing
        assert recorded_groups(s, media) == {media[0]: {clip}, media[1]: {clip}, media[2]: {still}}
    out = export_dataset(store, tmp_path / "data", tmp_path / "out", "ann", split=0.5).out_dir
    group_of = {int(r["media_id"]): r["group"] for r in split_rows(out)}
    assert group_of[media[0]] == group_of[media[1]] != group_of[media[2]] == group_of[media[3]]


# -- only groups of one export keep crops apart; retrain's holdout groups as the export does -------------------
def export_groups(folder: Path, rows: str) -> ExportGroups:
    """The groups of an export whose split.csv holds `rows` (face_id,group,crop_sha256 of George Lopez)."""
    folder.mkdir()
    lines = [f"{face},1,George_Lopez,{group},{group},train,m{group},{crop}"
             for face, group, crop in (r.split(",") for r in rows.split())]
    (folder / "split.csv").write_text("face_id,class_id,label,media_id,group,side,sha256,crop_sha256\n"
                                      + "\n".join(lines) + "\n", encoding="utf-8")
    return read_export_groups(folder)[0]


def copies(tmp_path: Path, lfw_dir: Path, n: int) -> tuple[sessionmaker, list[int]]:
    """A store of n confirmed George Lopez media whose frame hashes are identical (re-encoded copies of one
    crop, as far as the hashes tell)."""
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    faces = photo_faces(store, tmp_path / "data", lfw_dir / "George_Lopez", n)
    add_class(store, "George Lopez", "ann", seed_face_ids=faces)
    with session_scope(store) as s:
        media = [s.get(Face, f).media_id for f in faces]
        s.execute(update(Media).where(Media.id.in_(media)).values(frame_hashes=["7b046ccfb812f90b"]))
    return store, media


def as_partition(group_of: dict[int, object]) -> set[frozenset[int]]:
    groups: dict[object, set[int]] = {}
    for m, g in group_of.items():
        groups.setdefault(g, set()).add(m)
    return {frozenset(g) for g in groups.values()}


def record_two_exports(tmp_path: Path, store: sessionmaker, media: list[int]) -> None:
    """Media 0 and 2 are crops export e put in groups 3 and 5; media 1 is a crop export f put in its group 3
    (another store's numbering): one photo reached the store through both exports."""
    e = export_groups(tmp_path / "e", "1,3,c1 2,5,c2")
    f = export_groups(tmp_path / "f", "1,3,d1")
    keys = [e.key_of(Path("x/y.jpg"), "c1"), f.key_of(Path("x/y.jpg"), "d1"), e.key_of(Path("x/y.jpg"), "c2")]
    assert None not in keys and len(set(keys)) == 3
    with session_scope(store) as s:
        assert record_groups(s, {m: {k} for m, k in zip(media, keys)}) == 3


def test_groups_of_two_exports_do_not_keep_copies_of_one_photo_apart(tmp_path, lfw_dir):
    """Export e's groups 3 and 5 were different clips: media 0 and 2 stay apart. Export f's group 3 says
    nothing of e's groups: media 1, whose hashes are those of both, joins one of them (the old code kept all
    three apart, as labels of two exports never overlap, where the store before recorded groups joined them)."""
    store, media = copies(tmp_path, lfw_dir, 3)
    record_two_exports(tmp_path, store, media)
    out = export_dataset(store, tmp_path / "data", tmp_path / "out", "ann", split=0.5).out_dir
    group_of = {int(r["media_id"]): r["group"] for r in split_rows(out)}
    assert group_of[media[0]] != group_of[media[2]]
    assert group_of[media[1]] in (group_of[media[0]], group_of[media[2]])


def test_retrain_holdout_groups_imported_crops_as_the_export_does(tmp_path, lfw_dir):
    """Retrain's holdout (`media_groups`) joins and keeps apart what the export does: the old one passed only
    the recorded groups' joins, so it joined media 0 and 2, which the export keeps apart (different groups of
    export e): the two splits then disagreed on what one clip is, though both claim one definition."""
    store, media = copies(tmp_path, lfw_dir, 3)
    record_two_exports(tmp_path, store, media)
    out = export_dataset(store, tmp_path / "data", tmp_path / "out", "ann", split=0.5).out_dir
    exported = as_partition({int(r["media_id"]): r["group"] for r in split_rows(out)})
    holdout = media_groups(store, [(1, m, np.zeros(128)) for m in media], Settings().face_model)
    assert as_partition(holdout) == exported
    assert len(exported) == 2


def test_group_keys_carry_their_export():
    """A key names its export (`export_of`): two groups of one export share it, one group number of two
    exports does not. A key recorded before keys carried it (64 hex digits) keeps nothing apart, as its
    export is lost; it still joins its own group."""
    from labeling.export import apart_labels, copy_groups
    from labeling.import_groups import export_of, group_key

    e3, e5, f3 = group_key("e", "3"), group_key("e", "5"), group_key("f", "3")
    assert {len(k) for k in (e3, e5, f3)} == {64}
    assert export_of(e3) == export_of(e5) != export_of(f3)
    near = {1: ["7b046ccfb812f90b"], 2: ["7b046ccfb812f90b"]}
    assert copy_groups(near, [], None, apart=apart_labels({1: frozenset([e3]), 2: frozenset([e5])}))[0] == {1: 1, 2: 2}
    assert copy_groups(near, [], None, apart=apart_labels({1: frozenset([e3]), 2: frozenset([f3])}))[0] == {1: 1, 2: 1}
    legacy = {1: frozenset(["a" * 64]), 2: frozenset(["b" * 64])}
    assert copy_groups(near, [], None, apart=apart_labels(legacy))[0] == {1: 1, 2: 1}
    assert copy_groups(near, [], None, joined=[(1, 2)], apart=apart_labels({1: frozenset([e3]),
                                                                          2: frozenset([e5])}))[0] == {1: 1, 2: 1}
