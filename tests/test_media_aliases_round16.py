"""Round 16, identical copies and a store newer than the code, on SQLite and PostgreSQL; each fails without its fix.

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
from alembic import command
from conftest import ingest_settings
from sqlalchemy import select, text
from typer.testing import CliRunner

from labeling.cli import app
from labeling.db import HEAD, alembic_config, make_engine, migrate, open_store, session_scope
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
    engine = store.kw["bind"]
    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0012")
        command.upgrade(config, "head")
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
