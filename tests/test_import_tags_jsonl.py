"""An export's tag dataset round-trips: `giflens import tags tags.jsonl` puts each tag back with its confidence.

Why: `giflens export` wrote tags.jsonl ({"media", "sha256", "media_id", "tags": [[tag, confidence], ...]}), but
`giflens import tags` only read the uploader CSV: a store rebuilt from the same GIFs could not take its tags back.
The fresh store here ingests the same files under other names in another folder, so only the content (sha256)
ties a line to its media item, as between two machines. It is ingested once per module and copied for each test
that writes; the tests that write nothing (refusals, skips) share one copy."""
from __future__ import annotations

import json
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import session_dir
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from labeling.audit import undo_event
from labeling.cli import app
from labeling.db import open_store
from labeling.errors import ValidationError
from labeling.export import export_dataset
from labeling.importers import import_tags
from labeling.ingest import ingest
from labeling.schema import AuditEvent, Media, MediaTag, Tag, utcnow
from labeling.tag_dataset import import_tag_dataset
from labeling.tags import add_tags, remove_tags, set_tag_confidences
from models.settings import Settings
from test_queries import GIF, build_fixture_store, fixture_paths

EXPORTED = {GIF: {"nod": 0.35, "jennifer lawrence": 0.123456, "shrug": 0.5}}  # confidences set before the export


@dataclass
class Trip:
    data_dir: Path
    tags_jsonl: Path
    exported: dict[str, dict[str, float]]  # sha256 -> {tag: confidence}, as the source store holds its active tags
    copies: list[Path]  # the same media under other names, in another folder
    root: Path


def active_tags(store: sessionmaker[Session]) -> dict[str, dict[str, float]]:
    with store() as s:
        rows = s.execute(select(Media.sha256, Tag.name, MediaTag.confidence).join(MediaTag, MediaTag.media_id == Media.id)
                         .join(Tag, Tag.id == MediaTag.tag_id).where(MediaTag.status == "active")).all()
    out: dict[str, dict[str, float]] = {}
    for sha, tag, conf in rows:
        out.setdefault(sha, {})[tag] = conf
    return out


def events(store) -> int:
    with store() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent))


@pytest.fixture(scope="module")
def trip(tmp_path_factory) -> Trip:
    """The fixture store (real photos and GIF, ingested once per session into the shared cache), confidences set
    and a model tag added, then exported."""
    data_dir = session_dir(tmp_path_factory, "giflens-app-data")
    root = tmp_path_factory.mktemp("tags-jsonl")
    fx = build_fixture_store(data_dir, f"sqlite:///{root / 'source.db'}")
    gif = fx.media[GIF]
    set_tag_confidences(fx.store, [(gif, t, c) for t, c in EXPORTED[GIF].items() if t != "shrug"], "ann")
    add_tags(fx.store, [gif], ["shrug"], "model-run", confidence=0.5, source="model")
    export_dataset(fx.store, data_dir, root / "export", "ann")
    copies = root / "elsewhere"
    copies.mkdir()
    paths = []
    for n, path in enumerate(p for p in fixture_paths(data_dir / "scratch") if p.name != "broken.gif"):
        paths.append(copies / f"renamed-{n}{path.suffix}")
        shutil.copyfile(path, paths[-1])
    return Trip(data_dir, root / "export" / "tags.jsonl", active_tags(fx.store), paths, root)


@pytest.fixture(scope="module")
def ingested(trip) -> Path:
    """A new store that ingested the same media (from the session's cache: no network runs) under other names,
    once: `fresh_store` copies it."""
    path = trip.root / "ingested.db"
    ingest(trip.copies, Settings(data_dir=trip.data_dir, database_url=f"sqlite:///{path}"))
    return path


def fresh_store(ingested: Path, name: str) -> tuple[str, sessionmaker[Session]]:
    """A copy of the `ingested` store (SQLite's backup: its write-ahead log is copied too), for a test to write."""
    path = ingested.with_name(f"{name}.db")
    with sqlite3.connect(ingested) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    url = f"sqlite:///{path}"
    return url, open_store(url)


@pytest.fixture(scope="module")
def shared(ingested) -> tuple[str, sessionmaker[Session]]:
    """One copy for the tests that write nothing: a parse error or a skip never touches the store."""
    return fresh_store(ingested, "shared")


def copy_named(trip: Trip, suffix: str) -> Path:
    return next(p for p in trip.copies if p.suffix == suffix)


def write_lines(path: Path, *items: dict) -> Path:
    path.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    return path


def test_an_exported_tag_dataset_imports_back_with_its_confidences_once(trip, ingested):
    lines = [json.loads(line) for line in trip.tags_jsonl.read_text().splitlines()]
    assert {tuple(t) for line in lines for t in line["tags"]} >= {(t, c) for t, c in EXPORTED[GIF].items()}
    assert all(set(line["sources"]) == {t for t, _ in line["tags"]} for line in lines)  # read, not kept
    url, store = fresh_store(ingested, "roundtrip")
    assert active_tags(store) == {}

    run = CliRunner().invoke(app, ["import", "tags", str(trip.tags_jsonl), "--database-url", url,
                                   "--data-dir", str(trip.data_dir)])
    assert run.exit_code == 0, run.output
    written = sum(map(len, trip.exported.values()))
    assert f"import tags from tags.jsonl: {written} tags written, 0 unchanged (audit event" in run.output
    # every media item has the very (tag, confidence) pairs the export's store had: matched by content alone
    assert active_tags(store) == trip.exported
    with store() as s:
        assert set(s.scalars(select(MediaTag.source))) == {"import"}
    before = events(store)

    again = import_tag_dataset(store, trip.tags_jsonl)
    assert (again.tags, again.unchanged, again.kept, again.event_id) == (0, written, 0, None)
    assert events(store) == before and active_tags(store) == trip.exported

    # one audit event, undone as a whole
    with store() as s:
        event = s.scalar(select(func.max(AuditEvent.id)))
    undo_event(store, event, "ann")
    assert active_tags(store) == {}


def test_a_tag_an_editor_removed_is_not_brought_back_and_a_suggestion_is_taken_over(trip, ingested):
    _, store = fresh_store(ingested, "removed")
    with store() as s:
        gif = s.scalar(select(Media.id).where(Media.path.endswith(".gif")))
    add_tags(store, [gif], ["shrug"], "model-run", confidence=0.9, source="model", status="suggested")
    add_tags(store, [gif], ["nod"], "ann", confidence=0.7)
    remove_tags(store, [gif], ["nod"], "ann")

    summary = import_tag_dataset(store, trip.tags_jsonl, "importer")
    assert summary.kept == 1 and summary.skipped == []
    gif_sha = next(sha for sha, tags in trip.exported.items() if "shrug" in tags)
    assert "nod" not in active_tags(store)[gif_sha]
    # the pending suggestion is the dataset's now, at the dataset's confidence
    assert active_tags(store)[gif_sha]["shrug"] == 0.5


@pytest.mark.parametrize("bad", ["1.5", "NaN"])
def test_a_confidence_out_of_range_is_refused_naming_file_and_line_and_nothing_is_written(trip, shared, tmp_path, bad):
    url, store = shared
    sha = next(iter(trip.exported))
    good = json.dumps({"media": "x.gif", "sha256": sha, "tags": [["brand new", 0.4]]})
    path = tmp_path / "tags.jsonl"
    path.write_text(f"{good}\n\n{{\"media\": \"y.gif\", \"sha256\": null, \"tags\": [[\"odd\", {bad}]]}}\n")
    before = events(store)
    with pytest.raises(ValidationError, match=re.escape(f'{path}: line 3: tag "odd": confidence must be in [0, 1], '
                                                        f"got {bad.lower()}")):
        import_tag_dataset(store, path)
    run = CliRunner().invoke(app, ["import", "tags", str(path), "--database-url", url, "--data-dir", str(trip.data_dir)])
    assert run.exit_code == 1 and "line 3" in run.output
    assert events(store) == before and active_tags(store) == {}


def test_lines_matching_no_media_are_skipped_and_listed(trip, shared, tmp_path):
    _, store = shared
    gif = copy_named(trip, ".gif")
    path = write_lines(tmp_path / "tags.jsonl",
                       {"media": "/elsewhere/never-ingested.gif", "sha256": "0" * 64, "tags": [["nod", 1]]},
                       {"sha256": "1" * 64, "tags": [["nod", 1]]},
                       {"media": f"/elsewhere/{gif.name}", "sha256": "2" * 64, "tags": [["nod", 1]]})
    summary = import_tag_dataset(store, path)
    assert summary.skipped == [
        f"{path}: line 1: no ingested media has sha256 {'0' * 64}, nor path /elsewhere/never-ingested.gif",
        f"{path}: line 2: no ingested media has sha256 {'1' * 64}",
        f"{path}: line 3: no ingested media has sha256 {'2' * 64}, nor path /elsewhere/{gif.name}; no media in that "
        f"folder, but 1 of that name elsewhere ({gif})"]
    assert (summary.tags, summary.event_id) == (0, None) and active_tags(store) == {}


def test_a_path_holding_other_content_than_the_lines_sha256_is_not_tagged_and_a_path_alone_is(trip, ingested, tmp_path):
    """The export's GIF is not in this store, but the path it had names a photo here: its tags must not land on
    the photo. A line without sha256 has only its path: that media item is tagged."""
    _, store = fresh_store(ingested, "by-path")
    photo, gif = copy_named(trip, ".jpg"), copy_named(trip, ".gif")
    path = write_lines(tmp_path / "tags.jsonl", {"media": str(photo), "sha256": "3" * 64, "tags": [["nod", 0.35]]},
                       {"media": str(gif), "tags": [["wave", 0.25]]})
    summary = import_tag_dataset(store, path)
    with store() as s:
        photo_id, photo_sha = s.execute(select(Media.id, Media.sha256).where(Media.path == str(photo))).one()
        gif_sha = s.scalar(select(Media.sha256).where(Media.path == str(gif)))
    assert summary.skipped == [f"{path}: line 1: {photo} holds other content here: media {photo_id} ({photo}) has "
                               f"sha256 {photo_sha}, not the line's {'3' * 64} (the file was replaced, or the path "
                               "names another file on this machine); not tagged"]
    assert summary.tags == 1 and active_tags(store) == {gif_sha: {"wave": 0.25}}


def test_a_tag_stored_before_the_invisible_character_rule_imports_and_only_an_uncreatable_one_is_left_out(
        trip, ingested, tmp_path):
    """An export holds the tags its store had, one stored before new names were refused invisible characters
    ("nod" + U+2800): the file imports, that tag where this store has it too, else it alone is left out."""
    _, store = fresh_store(ingested, "old-rule")
    sha = next(sha for sha, tags in trip.exported.items() if "shrug" in tags)
    old = "nod\u2800"
    path = write_lines(tmp_path / "tags.jsonl", {"sha256": sha, "tags": [[old, 0.4], ["shrug", 0.5]]},
                       {"media": "/elsewhere/never-ingested.gif", "tags": [[old, 0.4]]},
                       {"media": str(copy_named(trip, ".jpg")), "tags": [[old, 0.2]]})
    summary = import_tag_dataset(store, path)
    assert summary.skipped[0] == f"{path}: line 2: /elsewhere/never-ingested.gif is not ingested"
    assert summary.skipped[1].startswith(f"{path}: line 1: tag {old!r} left out (also on line 3): this store has "
                                         f"no such tag, and it cannot be created: tag {old!r} contains invisible "
                                         "characters ['0x2800']")
    assert len(summary.skipped) == 2 and summary.tags == 1 and active_tags(store) == {sha: {"shrug": 0.5}}

    with store() as s, s.begin():  # the tag as a store from before the rule holds it
        s.execute(insert(Tag), [{"name": old, "created_at": utcnow()}])
    again = import_tag_dataset(store, path)
    assert again.tags == 2 and active_tags(store)[sha] == {"shrug": 0.5, old: 0.4}


def test_imported_tags_at_another_confidence_keep_the_stores_and_say_so(trip, ingested, tmp_path):
    """An uploader tag from the CSV (1.0) is already imported: the dataset's confidence does not replace it, as
    re-importing changes nothing, but "unchanged" would hide that the two differ."""
    _, store = fresh_store(ingested, "confidences")
    gif = copy_named(trip, ".gif")
    csv = tmp_path / "uploader.csv"
    csv.write_text(f"file,uploader_tags\n{gif},nod;shrug\n")
    import_tags(store, csv)
    summary = import_tag_dataset(store, trip.tags_jsonl)
    written = sum(map(len, trip.exported.values()))
    assert (summary.tags, summary.unchanged) == (written - 2, 0)
    assert summary.notes == [f"{trip.tags_jsonl}: 2 tag(s) already imported keep the store's confidence, not the "
                             "file's (experts voting or an earlier import set them): set them on the Tags page to "
                             "change them"]
    gif_sha = next(sha for sha, tags in trip.exported.items() if "shrug" in tags)
    assert active_tags(store)[gif_sha] == {**trip.exported[gif_sha], "nod": 1.0, "shrug": 1.0}
