"""Export notes and the dupes radius: an earlier export of no face is followed without a false note that it lacks validation
faces; the export summary says its projector count is of faces; `giflens dupes` refuses a radius naming
the range it documents (0 to 16)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import photo_faces
from typer.testing import CliRunner

from embeddings.near_duplicates import MAX_USEFUL_RADIUS, NearDuplicateError, check_useful_radius, near_duplicate_media
from labeling.classes import add_class
from labeling.cli import app
from labeling.db import open_store
from labeling.export import export_dataset, read_earlier_sides, sides_to_keep
from labeling.face_labels import relabel_faces

runner = CliRunner()
NO_VALIDATION = "has no validation faces"


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_exporting_twice_a_store_without_confirmed_labels_notes_nothing_false(store_url, tmp_path):
    """The README quick start: a store with no confirmed label exported twice, the second following the first."""
    open_store(store_url)  # an empty giflens store
    where = ["--data-dir", tmp_path / "data", "--database-url", store_url]
    first = cli("export", tmp_path / "v1", *where)
    assert first.exit_code == 0, first.output
    second = cli("export", tmp_path / "v2", *where)  # follows v1, the newest earlier export, by default
    assert second.exit_code == 0, second.output
    assert f"{tmp_path / 'v1'}" in second.output  # it does follow v1 (said before it starts)
    assert NO_VALIDATION not in second.output and "drawn anew" not in second.output
    assert json.loads((tmp_path / "v2" / "manifest.json").read_text(encoding="utf-8"))["notes"] == []
    # the summary's projector count is of faces (GIF vectors are counted apart)
    assert "0 face projector vectors to" in second.stdout and "GIF vectors in projector/gif_vectors.tsv" in second.stdout


def test_an_earlier_export_of_no_face_keeps_no_sides_and_gets_no_note(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "split.csv").write_text("face_id,class_id,label,media_id,group,side,sha256,crop_sha256\n")
    empty = read_earlier_sides(tmp_path / "v1")
    assert empty is not None and empty.lists_nothing and not empty.has_validation
    assert sides_to_keep(empty, 0.2) == (None, []) and sides_to_keep(empty, 0.0) == (None, [])


def test_faces_labeled_after_an_export_of_none_are_split_without_notes(store_url, tmp_path, lfw_dir):
    """v1 had no face; v2's faces are all new to it: neither "no validation faces" nor "none of this
    export's faces is of a media item its split.csv lists" (it lists none) applies."""
    store = open_store(store_url)
    data = tmp_path / "data"
    assert export_dataset(store, data, tmp_path / "v1", "ann").faces == 0
    faces = photo_faces(store, data, lfw_dir / "George_W_Bush", 10)
    cls, _ = add_class(store, "George W Bush", "ann")
    relabel_faces(store, faces, cls, "ann")
    later = export_dataset(store, data, tmp_path / "v2", "ann", split=0.2, previous=tmp_path / "v1")
    assert later.faces == 10 and later.val == 2 and later.notes == []
    assert later.manifest["split"]["earlier_sides"] is None
    assert later.line().startswith("exported 1 classes, 10 faces (train 8, val 2), 0 tagged media, "
                                   "10 face projector vectors to ")


@pytest.mark.parametrize("radius", [-1, 1.5, True])
def test_a_radius_that_is_none_names_the_useful_range(radius):
    with pytest.raises(NearDuplicateError, match=f"radius must be an integer between 0 and {MAX_USEFUL_RADIUS}, got"):
        check_useful_radius(radius)
    assert check_useful_radius(MAX_USEFUL_RADIUS) == MAX_USEFUL_RADIUS
    with pytest.raises(NearDuplicateError, match=f"above {MAX_USEFUL_RADIUS}"):
        check_useful_radius(MAX_USEFUL_RADIUS + 1)
    with pytest.raises(NearDuplicateError, match="between 0 and 64"):  # the library itself accepts up to 64
        near_duplicate_media({1: ["ffff0000ffff0000"]}, radius=-1)


def test_dupes_refuses_a_negative_radius_as_its_help_says(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_store(url)
    result = cli("dupes", "--radius", "-1", "--data-dir", tmp_path / "data", "--database-url", url)
    assert result.exit_code == 1 and result.stdout == ""
    assert f"radius must be an integer between 0 and {MAX_USEFUL_RADIUS}, got -1" in result.stderr
