"""Ingest defects, each failing without its fix: a file reached through a symbolic link was stored under one
name only (a tags row naming the other was told "not ingested"), a folder without media reported a green
"ingested 0" with no word of what was looked for, and a warm re-run counted a batch's byte copy as a cache hit
where the first run counted it as a copy."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from conftest import ingest_settings, open_app
from embeddings.pipeline import IngestPipeline, discover
from labeling.cli import app
from labeling.db import open_store
from labeling.importers import import_tags
from labeling.ingest import ingest
from labeling.schema import Media, MediaPath
from test_app_pages import button, go, messages, no_exception
from test_ingest_robustness import _photo


def _linked_tree(root: Path, lfw_dir: Path) -> tuple[Path, Path]:
    """in/nested/deep/a.jpg, and in/a-link.jpg -> nested/deep/a.jpg (the link sorts first)."""
    (root / "nested" / "deep").mkdir(parents=True)
    real = _photo(lfw_dir, "Tony_Blair", root / "nested" / "deep" / "a.jpg")
    link = root / "a-link.jpg"
    link.symlink_to(Path("nested") / "deep" / "a.jpg")
    return real, link


# -- 1. every name of a linked file, its real name first ----------------------------------------------------

def test_discovery_keeps_every_name_of_a_linked_file_its_real_name_first(tmp_path, lfw_dir):
    """Before, the link alone was kept (it sorts first, and the file's other name was dropped as seen)."""
    real, link = _linked_tree(tmp_path / "in", lfw_dir)
    (tmp_path / "in" / "broken.jpg").symlink_to("nowhere.jpg")  # still its own file: fails when read
    (tmp_path / "in" / "loop.jpg").symlink_to("loop.jpg")
    found = discover([tmp_path / "in"])
    assert found.files == [real, link, tmp_path / "in" / "broken.jpg", tmp_path / "in" / "loop.jpg"]
    assert discover([link, tmp_path / "in"]).files[:2] == [real, link]  # named first, the link still comes second
    assert discover([real, real]).files == [real]  # one name once
    assert found.empty == []


@pytest.mark.slow
def test_a_linked_file_is_stored_under_both_names_and_found_by_a_tags_row(tmp_path, lfw_dir, pipeline_models):
    real, link = _linked_tree(tmp_path / "in", lfw_dir)
    settings = ingest_settings(tmp_path)
    store = open_store(settings.resolved_database_url)
    summary = ingest([tmp_path / "in"], settings, pipeline=IngestPipeline(settings, **pipeline_models), store=store)
    assert (summary.ingested, summary.copies, summary.failed, summary.notes) == (1, 1, 0, [])  # a link is no copy note
    with store() as s:
        [(media_id, path)] = s.execute(select(Media.id, Media.path)).all()
        names = set(s.scalars(select(MediaPath.path).where(MediaPath.media_id == media_id)))
    assert path == str(real) and names == {str(real), str(link)}  # kept under its real name
    tags = tmp_path / "tags.csv"
    tags.write_text("file,uploader_tags\ndeep/a.jpg,gross\na-link.jpg,sick\n")
    imported = import_tags(store, tags, editor="ann")
    assert (imported.tags, imported.skipped) == (2, [])


# -- 2. a folder without media says so ------------------------------------------------------------------------

def test_a_folder_without_media_gets_a_note_naming_what_was_looked_for(tmp_path):
    empty, text = tmp_path / "empty", tmp_path / "text"
    empty.mkdir()
    (text / "sub").mkdir(parents=True)
    (text / "readme.txt").write_text("hi")
    (text / "sub" / "notes.md").write_text("hi")
    (text / ".hidden.gif").write_bytes(b"GIF89a")
    found = discover([empty, text])
    assert found.files == []
    looked = found.empty[0].split("(looked for ")[1].split(" recursively")[0].split(", ")
    assert looked[:3] == [".gif", ".webp", ".mp4"] and ".jpg" in looked and ".mkv" in looked
    assert [note.split(" (")[0] for note in found.empty] == [f"no media files found in {empty}",
                                                             f"no media files found in {text}"]
    assert found.empty[0].endswith("; 0 other files skipped)") and found.empty[1].endswith("; 3 other files skipped)")
    assert discover([tmp_path]).empty == [found.empty[0].replace(str(empty), str(tmp_path))
                                          .replace("0 other files", "3 other files")]
    (text / "sub" / "clip.gif").write_bytes(b"GIF89a")
    assert discover([text, text / "sub"]).empty == []  # the subfolder's file is the named folder's too


def test_the_cli_notes_a_folder_without_media_and_exits_0(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    result = CliRunner().invoke(app, ["ingest", str(folder), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1] == "ingested 0, cached 0, failed 0, faces 0"
    assert any(line.startswith(f"note no media files found in {folder} (looked for .gif, .webp, .mp4,")
               and line.endswith("recursively; 1 other file skipped)") for line in lines), lines


def test_the_ingest_page_warns_of_a_folder_without_media(tmp_path, monkeypatch):
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    at = open_app(monkeypatch, tmp_path / "data", f"sqlite:///{tmp_path / 'ingest.db'}")
    at.session_state["editor"] = "ann"
    go(at, "ingest")
    at.text_input(key="ingest_folder").input(str(folder))
    button(at, "Ingest folder").click().run()
    no_exception(at)
    warnings = [w.value for w in at.warning]
    assert "ingested 0, cached 0, failed 0, faces 0" in warnings, messages(at)
    assert any(w.startswith(f"no media files found in {folder}") for w in warnings), warnings
    assert not at.success
