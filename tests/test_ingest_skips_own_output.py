"""Ingest keeps giflens's own output out:

1. giflens's own output never becomes media, even when a path inside the data folder (other than its
   uploads) is named: an export's folder picked in the Ingest page's browser, a cache crop typed. Discovery
   leaves such a root out with a note; the page refuses it before any work.
2. The Ingest page shows a refusal without the previous run's "Last ingest" above it.

No models: discovery reads names only, and the ingests below find nothing to compute.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from conftest import ingest_settings, open_app
from embeddings.pipeline import discover, is_data_output
from labeling.db import open_store
from labeling.ingest import ingest
from labeling.schema import Media
from models.settings import Settings
from test_app_pages import button, errors, no_exception, sign_in

INGEST = "labeling/pages/ingest.py"


def _touch(path: Path, data: bytes = b"not really an image") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data folder as giflens leaves it: cache and export crops, a model artifact, and one upload."""
    data = tmp_path / "data"
    _touch(data / "cache" / "ns" / "ab" / "abcd" / "face_000.jpg")
    _touch(data / "exports" / "e1" / "raw_dataset" / "0" / "face_1.jpg")
    _touch(data / "models" / "m1" / "preview.png")
    _touch(data / "uploads" / "clip.gif")
    return data


# -- 1. discovery ------------------------------------------------------------------------------------------
def test_discovery_leaves_out_named_paths_of_giflens_own_output_with_a_note(data_dir: Path, tmp_path: Path):
    crop = data_dir / "cache" / "ns" / "ab" / "abcd" / "face_000.jpg"
    export = data_dir / "exports" / "e1"
    found = discover([export, crop, data_dir / "models", data_dir / "uploads"], data_dir=data_dir)
    assert found.files == [data_dir / "uploads" / "clip.gif"]
    assert len(found.notes) == 3, found.notes
    for path, note in zip((export, crop, data_dir / "models"), found.notes):
        assert note.startswith(f"{path} is giflens's own output in the data folder") and "not ingested" in note
    # nothing of the output was even listed (a failed row of such a folder is not the batch's business)
    assert all(not is_data_output(folder, data_dir) for folder in found.folders), found.folders


def test_discovery_of_the_data_folder_still_walks_its_uploads_and_reaches_no_output_through_a_link(
        data_dir: Path, tmp_path: Path):
    found = discover([data_dir], data_dir=data_dir)
    assert found.files == [data_dir / "uploads" / "clip.gif"] and not found.notes
    # a name outside the data folder that leads into its output (a link) is that output too
    link = tmp_path / "elsewhere"
    link.mkdir()
    (link / "crops").symlink_to(data_dir / "exports" / "e1")
    (link / "crop.jpg").symlink_to(data_dir / "cache" / "ns" / "ab" / "abcd" / "face_000.jpg")
    named = discover([link / "crops", link / "crop.jpg"], data_dir=data_dir)
    assert named.files == [] and len(named.notes) == 2, named
    # the same paths without a data folder to compare with are looked at as before
    assert discover([link / "crop.jpg"]).files == [link / "crop.jpg"]


def test_an_ingest_of_output_paths_stores_nothing(data_dir: Path, tmp_path: Path):
    """The old code kept them: each became a media row (failed here, the bytes being no image; a real
    crop became a new media item with unlabelled faces, or an existing item moved onto its own crop)."""
    settings = ingest_settings(tmp_path)  # on `data_dir`
    assert settings.data_dir == data_dir
    crop = data_dir / "cache" / "ns" / "ab" / "abcd" / "face_000.jpg"
    summary = ingest([data_dir / "exports" / "e1", crop], settings)
    assert summary.media == [] and summary.failed == 0, summary
    assert sum("giflens's own output" in n for n in summary.notes) == 2, summary.notes  # said, not silently skipped
    with open_store(settings.resolved_database_url)() as session:
        assert session.scalar(select(func.count()).select_from(Media)) == 0


# -- the Ingest page ---------------------------------------------------------------------------------------
@pytest.fixture
def page(data_dir: Path, tmp_path: Path, monkeypatch) -> AppTest:
    """The Ingest page, signed in as ann, on an empty store."""
    at = open_app(monkeypatch, data_dir, f"sqlite:///{tmp_path / 'store.db'}")
    sign_in(at, "ann")
    at.switch_page(INGEST).run()
    no_exception(at)
    return at


def _ingest_folder(at: AppTest, path: Path | str) -> AppTest:
    at.text_input(key="ingest_folder").input(str(path))
    button(at, "Ingest folder").click().run()
    no_exception(at)
    return at


def _last_ingest_shown(at: AppTest) -> bool:
    return "Last ingest" in [h.value for h in at.subheader]


def test_the_page_refuses_an_export_folder_or_a_cache_crop_before_any_work(page: AppTest, data_dir: Path):
    # the browser still walks into the data folder's exports: picking one is refused, not ingested
    for name in (data_dir.name, "exports", "e1"):
        here = page.session_state["ingest_browse"]
        page.selectbox(key=f"ingest_browse_sub_{Path(here).resolve()}").set_value(name).run()
    button(page, "Use this folder").click().run()
    assert Path(page.text_input(key="ingest_folder").value).resolve() == (data_dir / "exports" / "e1").resolve()
    button(page, "Ingest folder").click().run()
    no_exception(page)
    assert any("giflens's own output in the data folder" in e for e in errors(page)), errors(page)
    assert not _last_ingest_shown(page)
    _ingest_folder(page, data_dir / "cache" / "ns" / "ab" / "abcd" / "face_000.jpg")
    assert any("face_000.jpg is giflens's own output" in e for e in errors(page)), errors(page)
    assert not _last_ingest_shown(page)


# -- 2. a refusal is not shown above the previous run's outcome ---------------------------------------------
def test_a_refused_ingest_is_not_shown_above_the_previous_runs_outcome(page: AppTest, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _ingest_folder(page, empty)  # a real run that finds nothing: its outcome is shown
    assert _last_ingest_shown(page) and not errors(page)
    for typed in (tmp_path / "no-such-folder", "   "):
        _ingest_folder(page, typed)
        assert errors(page), typed
        assert not _last_ingest_shown(page), (typed, [m.value for m in page.success])


def test_a_folder_of_the_editors_own_in_the_data_folder_is_ingested_when_named(data_dir: Path):
    """Only the folders giflens writes are its output: a raw dataset kept beside the store (as the import
    tests and many editors do) is ingested when named, though a walk of the data folder gives uploads only."""
    mine = _touch(data_dir / "raw" / "raw_dataset" / "Ann" / "1.jpg")
    found = discover([data_dir / "raw"], data_dir=data_dir)
    assert found.files == [mine] and not found.notes
    assert discover([data_dir], data_dir=data_dir).files == [data_dir / "uploads" / "clip.gif"]


def test_an_output_folder_that_is_a_link_counts_by_its_target(data_dir: Path, tmp_path: Path):
    """The cache moved to another disk and linked back: its crops, named through the data folder, are still
    giflens's own output."""
    elsewhere = tmp_path / "bigdisk" / "cache"
    elsewhere.parent.mkdir()
    (data_dir / "cache").rename(elsewhere)
    (data_dir / "cache").symlink_to(elsewhere)
    _touch(elsewhere / "crops" / "face-1.jpg")
    found = discover([data_dir / "cache" / "crops"], data_dir=data_dir)
    assert found.files == [] and len(found.notes) == 1, found
    assert discover([data_dir / "cache" / "crops"], data_dir=data_dir, keep_outputs=True).files == [
        data_dir / "cache" / "crops" / "face-1.jpg"]  # an import that chose the files itself


@pytest.mark.slow
def test_an_export_kept_in_the_data_folders_exports_is_imported_with_its_labels(tmp_path: Path, lfw_dir: Path):
    """The Export page writes to <data>/exports by default: importing that export into a fresh store (a round
    trip, or a second store on the same data folder) labels its crops; they are the media the import names."""
    from labeling.importers import import_raw_dataset

    data = tmp_path / "data"
    raw = data / "exports" / "export-1"
    for person in ("Ariel_Sharon", "Serena_Williams"):
        (raw / "raw_dataset" / person).mkdir(parents=True)
        for photo in sorted((lfw_dir / person).glob("*.jpg"))[:2]:
            (raw / "raw_dataset" / person / photo.name).write_bytes(photo.read_bytes())
    (raw / "labels.csv").write_text("Label,Index\nAriel_Sharon,0\nSerena_Williams,1\n")
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    summary = import_raw_dataset(open_store(url), raw, Settings(data_dir=data, database_url=url), "alice")
    assert summary.created == 2 and summary.labels == 4 and not summary.skipped, summary
