"""Identical copies and a store newer than the code, on SQLite and PostgreSQL; each fails without its fix.

A. A byte-identical re-upload under another name renamed the stored media to the copy: `giflens dupes` said
   pairs=0, and `giflens import tags` said the original's name "is not ingested". The media now keeps its
   first path (a moved file's media still follows it), every path is recorded (`media_path`, migration 0013),
   a tags row naming either file tags it, and `dupes` lists the copy at distance 0 as "identical bytes".
B. A store a newer giflens migrated (alembic_version unknown here) failed with Alembic's "Can't locate
   revision"; it is now one line saying the store is newer and how to update.
"""
from __future__ import annotations

import hashlib
import shutil

import pytest
from conftest import downgrade_then_upgrade, ingest_settings
from sqlalchemy import select, text
from typer.testing import CliRunner

from labeling.cli import app
from labeling.db import HEAD, make_engine, migrate, open_store, session_scope
from labeling.importers import import_tags
from labeling.schema import AuditEntity, Media, MediaPath, MediaTag, Tag

runner = CliRunner()


def tags_of(store) -> dict[int, set[str]]:
    with store() as s:
        rows = s.execute(select(MediaTag.media_id, Tag.name).join(Tag, Tag.id == MediaTag.tag_id)).all()
    out: dict[int, set[str]] = {}
    for media_id, tag in rows:
        out.setdefault(media_id, set()).add(tag)
    return out


def paths_of(store, media_id: int) -> list[str]:
    with store() as s:
        return list(s.scalars(select(MediaPath.path).where(MediaPath.media_id == media_id).order_by(MediaPath.id)))


# -- A. identical copies ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_byte_identical_reupload_keeps_the_first_name_is_listed_by_dupes_and_tagged_by_either_name(
        store_url, tmp_path, gifs_dir, pipeline_models):
    from embeddings.pipeline import IngestPipeline
    from labeling.ingest import ingest

    small, other = sorted(gifs_dir.glob("*.gif"), key=lambda p: p.stat().st_size)[:2]
    orig = tmp_path / "orig" / "popcorn.gif"
    orig.parent.mkdir()
    shutil.copyfile(small, orig)
    shutil.copyfile(other, tmp_path / "orig" / "lick.gif")
    copy = tmp_path / "reup" / "popcorn_copy.gif"
    copy.parent.mkdir()
    shutil.copyfile(orig, copy)
    settings = ingest_settings(tmp_path, store_url)
    store = open_store(store_url)
    pipeline = IngestPipeline(settings, **pipeline_models)
    first = ingest([tmp_path / "orig"], settings, pipeline=pipeline, store=store, editor="ann")
    [media_id] = [m["id"] for m in first.media if m["path"] == str(orig)]
    again = ingest([copy], settings, pipeline=pipeline, store=store, editor="bob")
    assert again.notes == [f"{copy}: same content as {orig} (media {media_id}); stored once"]
    with store() as s:
        assert s.get(Media, media_id).path == str(orig)  # was: the copy's path
        # the new name is a change: bob's ingest event names the media
        assert s.scalar(select(AuditEntity.id).where(AuditEntity.event_id == again.event_id,
                                                     AuditEntity.key == f"media:{media_id}")) is not None
    assert paths_of(store, media_id) == [str(orig), str(copy)]
    assert ingest([copy], settings, pipeline=pipeline, store=store, editor="bob").event_id is None  # nothing new

    where = ["--data-dir", str(tmp_path / "data"), "--database-url", store_url]
    result = runner.invoke(app, ["dupes", *where])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["distance", "frames", "media_a", "media_b", "name_a", "name_b"]
    assert lines[1].split()[0] == "0" and lines[1].split()[2:] == [str(media_id), str(media_id), "popcorn.gif",
                                                                   "popcorn_copy.gif", "(identical", "bytes)"]
    summary = dict(kv.split("=") for kv in lines[-1].split())
    assert (summary["pairs"], summary["identical_pairs"], summary["media"]) == ("0", "1", "2")

    tags = tmp_path / "tags.csv"
    tags.write_text("file,uploader_tags\npopcorn.gif,food\npopcorn_copy.gif,meme\n", encoding="utf-8")
    result = runner.invoke(app, ["import", "tags", str(tags), *where])
    assert result.exit_code == 0, result.output
    assert "not ingested" not in result.output
    assert tags_of(store) == {media_id: {"food", "meme"}}

    # the original moved away (its file gone): the media follows it; the copy is still listed, the old name not
    moved = tmp_path / "moved" / "popcorn.gif"
    moved.parent.mkdir()
    orig.rename(moved)
    ingest([moved], settings, pipeline=pipeline, store=store, editor="ann")
    with store() as s:
        assert s.get(Media, media_id).path == str(moved)
    assert paths_of(store, media_id) == [str(orig), str(copy), str(moved)]
    result = runner.invoke(app, ["dupes", *where])
    assert result.exit_code == 0, result.output
    rows = [line.split()[4:6] for line in result.stdout.splitlines()[1:-1]]
    assert rows == [["popcorn.gif", "popcorn_copy.gif"]], result.stdout  # orig/popcorn.gif, gone, is no copy


def _media(store, path: str, data: bytes) -> int:
    with session_scope(store) as s:
        media = Media(sha256=hashlib.sha256(data).hexdigest(), path=path, kind="gif", status="ok", size_bytes=len(data))
        s.add(media)
        s.flush()
        s.add(MediaPath(media_id=media.id, path=path))
        return media.id


def test_a_tags_row_naming_any_ingested_name_of_a_media_item_tags_it_once(store_url, tmp_path):
    """Two copies named alike in two folders are one media item: tagged once, with no "matches 2" note; a
    name no media had stays "not ingested"."""
    store = open_store(store_url)
    media_id = _media(store, "/m/orig/popcorn.gif", b"GIF89a popcorn")
    with session_scope(store) as s:
        s.add_all([MediaPath(media_id=media_id, path="/m/reup/popcorn.gif"),
                   MediaPath(media_id=media_id, path="/m/reup/popcorn_copy.gif")])
    path = tmp_path / "tags.csv"
    path.write_text("file,uploader_tags\npopcorn.gif,food\nreup/popcorn_copy.gif,meme\nnowhere.gif,lost\n",
                    encoding="utf-8")
    summary = import_tags(store, path, editor="ann")
    assert tags_of(store) == {media_id: {"food", "meme"}}
    assert summary.notes == [] and summary.skipped == [f"{path}: line 4: nowhere.gif is not ingested"]


def test_migration_0013_records_each_media_items_path(store_url):
    store = open_store(store_url)
    with session_scope(store) as s:
        s.add_all([Media(sha256=f"{i:064x}", path=f"/m/{i}.gif", kind="gif", status="ok") for i in range(1, 4)])
    downgrade_then_upgrade(store, "0012")
    with store() as s:
        rows = s.execute(select(MediaPath.media_id, MediaPath.path).order_by(MediaPath.media_id)).all()
        media = s.execute(select(Media.id, Media.path).order_by(Media.id)).all()
    assert [tuple(r) for r in rows] == [tuple(m) for m in media] and len(rows) == 3


# -- B. a store newer than this giflens ---------------------------------------------------------------------
def test_a_store_a_newer_giflens_migrated_is_one_line_saying_so(store_url, tmp_path):
    engine = make_engine(store_url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    finally:
        engine.dispose()
    result = runner.invoke(app, ["history", "--data-dir", str(tmp_path / "data"), "--database-url", store_url])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    shown = store_url.replace("postgresql+psycopg://", "postgresql://")  # as editors write it; no password here
    assert lines[0].endswith(f"the store at {shown} is at schema 0099, newer than this giflens (head {HEAD}): "
                             "update giflens (git pull && make sync)"), lines[0]
    assert "Can't locate revision" not in result.output


# -- C. review 2: copies met beside a stored file, kept names overwritten, names taken, failures replaced ------
def _two_clips(gifs_dir) -> tuple:
    """The two smallest real GIFs (different bytes)."""
    return tuple(sorted(gifs_dir.glob("*.gif"), key=lambda p: p.stat().st_size)[:2])


def _ingester(tmp_path, store_url, pipeline_models):
    from embeddings.pipeline import IngestPipeline
    from labeling.ingest import ingest

    settings = ingest_settings(tmp_path, store_url)
    store = open_store(store_url)
    pipeline = IngestPipeline(settings, **pipeline_models)
    return store, lambda paths, **kw: ingest(paths, settings, pipeline=pipeline, store=store, editor="ann", **kw)


def _clip_ingested(tmp_path, store_url, gifs_dir, pipeline_models):
    """m/a.gif (the smallest real GIF) ingested: (folder, a.gif, the other clip, store, run, its media id)."""
    clip, other = _two_clips(gifs_dir)
    folder = tmp_path / "m"
    folder.mkdir()
    a = folder / "a.gif"
    shutil.copyfile(clip, a)
    store, run = _ingester(tmp_path, store_url, pipeline_models)
    [media_id] = [m["id"] for m in run([folder]).media]
    return folder, a, other, store, run, media_id


def _dupes(tmp_path, store_url) -> list[str]:
    result = runner.invoke(app, ["dupes", "--data-dir", str(tmp_path / "data"), "--database-url", store_url])
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


@pytest.mark.slow
def test_c_a_copy_added_beside_an_ingested_file_is_recorded_and_a_rerun_writes_nothing(
        store_url, tmp_path, gifs_dir, pipeline_models):
    """A copy in the same chunk as the stored file gets that file's result, "already stored": it was noted as
    "same content" but its name never recorded (tags naming it skipped, dupes empty)."""
    folder, a, _, store, run, media_id = _clip_ingested(tmp_path, store_url, gifs_dir, pipeline_models)
    b = folder / "b.gif"
    shutil.copyfile(a, b)
    second = run([folder])
    assert second.notes == [f"{b}: same content as {a} (media {media_id}); stored once"]
    assert paths_of(store, media_id) == [str(a), str(b)]  # was: [a] only
    with store() as s:  # the new name is the batch's change: its event names the media
        assert s.scalar(select(AuditEntity.id).where(AuditEntity.event_id == second.event_id,
                                                     AuditEntity.key == f"media:{media_id}")) is not None
    assert run([folder]).event_id is None  # a re-run writes nothing: no event
    assert paths_of(store, media_id) == [str(a), str(b)]

    tags = tmp_path / "tags.csv"
    tags.write_text("file,uploader_tags\nb.gif,meme\n", encoding="utf-8")
    summary = import_tags(store, tags, editor="ann")
    assert summary.skipped == [] and tags_of(store) == {media_id: {"meme"}}
    lines = _dupes(tmp_path, store_url)
    assert lines[1].split()[2:6] == [str(media_id), str(media_id), "a.gif", "b.gif"], lines


@pytest.mark.slow
def test_c_a_kept_name_overwritten_with_another_clip_moves_the_item_to_its_copy(
        store_url, tmp_path, gifs_dir, pipeline_models):
    """a.gif and b.gif the same bytes; a.gif overwritten with another clip: the item kept a.gif (the file was
    there), so it named the new clip, and b.gif was noted as "same content as" a.gif."""
    clip, other = _two_clips(gifs_dir)
    folder = tmp_path / "m"
    folder.mkdir()
    a, b = folder / "a.gif", folder / "b.gif"
    shutil.copyfile(clip, a)
    shutil.copyfile(clip, b)
    store, run = _ingester(tmp_path, store_url, pipeline_models)
    [media_id] = {m["id"] for m in run([folder]).media}
    shutil.copyfile(other, a)
    again = run([folder])
    assert not [n for n in again.notes if "same content" in n], again.notes
    with store() as s:
        assert s.get(Media, media_id).path == str(b)  # was: a.gif, which holds the other clip
        [new_id] = s.scalars(select(Media.id).where(Media.id != media_id))
        assert s.get(Media, new_id).path == str(a)
    assert paths_of(store, media_id) == [str(b)] and paths_of(store, new_id) == [str(a)]
    assert [line for line in _dupes(tmp_path, store_url) if "identical" in line] == []


@pytest.mark.slow
def test_c_a_renamed_items_old_name_taken_by_a_new_clip_no_longer_tags_or_pairs_it(
        store_url, tmp_path, gifs_dir, pipeline_models):
    """a.gif ingested, renamed, and a new clip saved as a.gif: a tags row naming a.gif tagged the renamed
    item too, through its recorded old name."""
    folder, a, other, store, run, old_id = _clip_ingested(tmp_path, store_url, gifs_dir, pipeline_models)
    renamed = folder / "renamed.gif"
    a.rename(renamed)
    run([folder])
    shutil.copyfile(other, a)
    [new_id] = [m["id"] for m in run([folder]).media if m["path"] == str(a)]
    assert paths_of(store, old_id) == [str(renamed)] and paths_of(store, new_id) == [str(a)]
    tags = tmp_path / "tags.csv"
    tags.write_text("file,uploader_tags\na.gif,new\n", encoding="utf-8")
    import_tags(store, tags, editor="ann")
    assert tags_of(store) == {new_id: {"new"}}  # was: both media
    assert [line for line in _dupes(tmp_path, store_url) if "identical" in line] == []


def test_c_tags_and_dupes_ignore_a_recorded_name_that_is_another_items_own_path(store_url, tmp_path):
    """A store written before ingest took names from other items (`_claim_path`): the renamed item still has
    its old name recorded, now another item's own path. Neither tags nor dupes see it as the old item's."""
    store = open_store(store_url)
    old_id = _media(store, "/m/renamed.gif", b"GIF89a old")
    new_id = _media(store, "/m/a.gif", b"GIF89a new")
    with session_scope(store) as s:
        s.add(MediaPath(media_id=old_id, path="/m/a.gif"))
        for media in s.scalars(select(Media)):
            media.frame_hashes = ["f0f0f0f0f0f0f0f0" if media.id == old_id else "0f0f0f0f0f0f0f0f"]
    tags = tmp_path / "tags.csv"
    tags.write_text("file,uploader_tags\na.gif,new\n", encoding="utf-8")
    summary = import_tags(store, tags, editor="ann")
    assert tags_of(store) == {new_id: {"new"}} and summary.notes == []  # was: both, "matches 2 media"
    lines = _dupes(tmp_path, store_url)
    assert [line for line in lines if "identical" in line] == [], lines
    assert "identical_pairs" not in lines[-1]


@pytest.mark.slow
@pytest.mark.parametrize("way", ["alone", "folder"])
def test_c_a_failed_file_replaced_by_a_copy_of_stored_bytes_loses_its_failed_row(
        way, store_url, tmp_path, gifs_dir, pipeline_models):
    """x.gif truncated (failed row), then replaced by a copy of a.gif: its failed row stayed forever, the
    item keeping a.gif's name. Both ways in: x.gif alone (a write) and with a.gif in one chunk (a copy
    given a.gif's stored result, nothing else to write)."""
    clip, _ = _two_clips(gifs_dir)
    folder = tmp_path / "m"
    folder.mkdir()
    a, x = folder / "a.gif", folder / "x.gif"
    shutil.copyfile(clip, a)
    x.write_bytes(clip.read_bytes()[:3000])
    store, run = _ingester(tmp_path, store_url, pipeline_models)
    first = run([folder])
    [failed_id] = [m["id"] for m in first.media if m["status"] == "failed"]
    [media_id] = [m["id"] for m in first.media if m["status"] == "ok"]
    shutil.copyfile(a, x)
    again = run([x] if way == "alone" else [folder])
    assert again.removed == [{"id": failed_id, "path": str(x)}], again.removed
    with store() as s:
        assert s.get(Media, failed_id) is None  # was: failed row x.gif kept
        assert s.get(Media, media_id).path == str(a)
    assert paths_of(store, media_id) == [str(a), str(x)]
    assert run([folder]).event_id is None  # nothing left to do
