"""Ingest defects, each failing without its fix: a file reached through a symbolic link was stored under one
name only (a tags row naming the other was told "not ingested"), a folder without media reported a green
"ingested 0" with no word of what was looked for, a folder whose media sat in hidden subfolders was said to
hold "0 other files", a warm re-run counted a batch's byte copy as a cache hit where the first run counted it
as a copy, and a file met under two names was read and hashed twice in one batch.

Not tested here (no time limits in tests): discovering with many named folders asked every named folder of
every file found (2,000 named folders and 20,000 files: 231 s, now about 1.5 s); the empty-folder tests below
check that the set that replaced it answers as before."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from conftest import ingest_settings, open_app
import embeddings.pipeline as pipeline_module
from embeddings.cache import sha256_file
from embeddings.pipeline import IngestPipeline, _Hashes, discover
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


def test_nested_and_repeated_named_folders_are_noted_as_before(tmp_path):
    """The folders holding a file are looked up in a set now, not asked file by file: a named folder
    covered by another, a parent named after its child, and a named file keep their answers."""
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c" / "x.gif").write_bytes(b"GIF89a")
    (tmp_path / "a" / "none").mkdir()
    (tmp_path / "lone").mkdir()
    (tmp_path / "lone" / "named.txt").write_text("x")  # a named file counts for its folder, whatever its kind
    (tmp_path / "ab").mkdir()  # a name that starts like "a" but is no part of it
    found = discover([tmp_path / "a" / "b" / "c", tmp_path / "a", tmp_path / "a" / "none", tmp_path / "ab",
                      tmp_path / "lone", tmp_path / "lone" / "named.txt"])
    assert [note.split(" (")[0] for note in found.empty] == [f"no media files found in {tmp_path / 'ab'}"]


# -- 3. hidden folders are said to be left out ------------------------------------------------------------

def test_a_folder_whose_media_are_in_hidden_folders_says_so(tmp_path):
    """Before, single/hid/.x/a.jpg made "0 other files skipped": as if the folder held nothing at all."""
    single = tmp_path / "single"
    (single / "hid" / ".x").mkdir(parents=True)
    (single / "hid" / ".x" / "a.jpg").write_bytes(b"\xff\xd8")
    (single / ".thumbnails").mkdir()
    (single / "note.txt").write_text("x")
    [note] = discover([single]).empty
    assert note.endswith("recursively; 1 other file skipped, 2 hidden folders not searched)"), note
    [one] = discover([single / "hid"]).empty
    assert one.endswith("; 0 other files skipped, 1 hidden folder not searched)"), one


# -- 4. a copy is a copy on every run -------------------------------------------------------------------------

def _faceless(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), colour).save(path)
    return path


@pytest.mark.parametrize("chunk_size", [8, 1])
def test_a_warm_run_counts_copies_as_the_first_run_did(tmp_path, pipeline_models, chunk_size):
    """Five files, four contents: a byte copy and a link. Before, the warm run said "ingested 0, cached 5"
    (four items and a copy) while the first run said "1 copy" and more besides: the counts changed with
    nothing changed on disk. Now both runs count the link and the copy as copies; the four counts still add
    up to the files given."""
    folder = tmp_path / "in"
    a = _faceless(folder / "a.png", (200, 30, 30))
    for colour, name in (((30, 200, 30), "b.png"), ((30, 30, 200), "c.png"), ((90, 90, 90), "d.png")):
        _faceless(folder / name, colour)
    (folder / "e-copy.png").write_bytes(a.read_bytes())
    (folder / "f-link.png").symlink_to("b.png")
    settings = ingest_settings(tmp_path)
    pipeline = IngestPipeline(settings, chunk_size=chunk_size, **pipeline_models)
    first = ingest([folder], settings, pipeline=pipeline)
    assert first.line() == "ingested 4, cached 0, failed 0, faces 0 (2 copies of other files in this batch, stored once)"
    for _ in range(2):
        again = ingest([folder], settings, pipeline=pipeline)
        assert again.line() == "ingested 0, cached 4, failed 0, faces 0 (2 copies of other files in this batch, stored once)"
        assert again.ingested + again.cached + again.failed + again.copies == len(again.media) == 6


# -- 5. one file under two names is hashed once in a batch ---------------------------------------------------

@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The files the pipeline hashes, counted at hashlib (its own code runs as it is), the files taken as
    settled: those just written are read again on purpose (`SETTLED_NS`), and a test's files all are."""
    seen: list[str] = []
    digest = pipeline_module.hashlib.file_digest

    def counted(fh, name):
        seen.append(Path(fh.name).name)
        return digest(fh, name)

    monkeypatch.setattr(pipeline_module.hashlib, "file_digest", counted)
    monkeypatch.setattr(pipeline_module, "SETTLED_NS", 0)
    return seen


def test_a_file_under_several_names_is_hashed_once_per_batch(tmp_path, pipeline_models, reads):
    """A file, a symbolic link to it and a hard link: one read of its bytes in a batch, not three."""
    real = _faceless(tmp_path / "in" / "a.png", (200, 30, 30))
    (tmp_path / "in" / "link.png").symlink_to("a.png")
    os.link(real, tmp_path / "in" / "hard.png")
    other = _faceless(tmp_path / "in" / "z.png", (30, 200, 30))
    files = discover([tmp_path / "in"]).files
    assert len(files) == 4
    pipeline = IngestPipeline(ingest_settings(tmp_path), **pipeline_models)
    results = list(pipeline.run(files))
    assert sorted(reads) == ["a.png", "z.png"]
    assert {r.path.name: r.sha256 for r in results} == {"a.png": sha256_file(real), "hard.png": sha256_file(real),
                                                        "link.png": sha256_file(real), "z.png": sha256_file(other)}
    reads.clear()
    list(pipeline.run(files))  # another batch reads them again
    assert sorted(reads) == ["a.png", "z.png"]


def test_a_file_rewritten_between_two_names_is_hashed_again(tmp_path, reads, monkeypatch):
    """Correctness first: the same inode and size with new bytes (rewritten in place, its modification time
    even put back) is read again, its change time telling; and a file changed more recently than
    `SETTLED_NS` is not remembered at all, so a write within one timestamp tick cannot go unseen."""
    real = tmp_path / "a.bin"
    real.write_bytes(b"one")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    hashes = _Hashes()
    old = hashes.sha256(real, os.stat(real))
    before = os.stat(real)
    while os.stat(real).st_ctime_ns == before.st_ctime_ns:  # written again until the clock ticks (a settled file)
        with open(real, "r+b") as fh:  # same inode, same size
            fh.write(b"two")
    os.utime(real, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert old != hashes.sha256(link, os.stat(link)) == sha256_file(real)
    assert reads == ["a.bin", "link.bin"]
    monkeypatch.setattr(pipeline_module, "SETTLED_NS", 10**18)  # nothing settled: each name read
    recent = _Hashes()
    assert recent.sha256(real, os.stat(real)) == recent.sha256(link, os.stat(link)) == sha256_file(real)
    assert reads == ["a.bin", "link.bin"] * 2
