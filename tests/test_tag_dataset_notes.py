"""A tag dataset import (`giflens import tags tags.jsonl`) words its notes as the other imports do.

Why: its skip for a tag it could not create showed the name with repr, where every other message shows names
`quoted` (a zero-width joiner as typed, not as \\u200d); and its note for a line naming several ingested media
was a shorter copy of the tags CSV's, without the hint how to tag one only."""
from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from labeling.db import open_store, session_scope
from labeling.importers import import_tags
from labeling.schema import Media
from labeling.tag_dataset import import_tag_dataset


def _store_with(store_url: str, paths: list[str]) -> sessionmaker[Session]:
    store = open_store(store_url)
    with session_scope(store) as s:
        for n, path in enumerate(paths, start=1):
            s.add(Media(sha256=f"{n:064x}", path=path, kind="image", status="ok"))
    return store


def _jsonl(path: Path, *items: dict) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


def test_an_uncreatable_tag_is_named_quoted_as_other_messages_name_tags(store_url, tmp_path):
    """A joiner after a Latin letter cannot be in a new tag; the tag, with a quote in it too, is shown as typed in
    the quotes repr would pick, as `quoted` shows it, no `\\u200d` in its name."""
    store = _store_with(store_url, ["/m/y.jpg"])
    tag = "don't\u200d"
    path = _jsonl(tmp_path / "tags.jsonl", {"media": "y.jpg", "tags": [[tag, 0.4], ["wave", 0.5]]})
    summary = import_tag_dataset(store, path)
    assert summary.skipped[0].startswith(f'{path}: line 1: tag "don\'t\u200d" left out: this store has no such '
                                         "tag, and it cannot be created: ")
    assert summary.tags == 1


def test_a_dataset_line_naming_several_media_is_noted_as_the_tags_csv_notes_it(store_url, tmp_path):
    """Both imports match a name alone to every ingested media of that name and tag all of them; both say how to
    tag one only, in one wording."""
    store = _store_with(store_url, ["/m/clips_a/x.jpg", "/m/clips_b/x.jpg"])
    csv = tmp_path / "tags.csv"
    csv.write_text("file,uploader_tags\nx.jpg,funny\n", encoding="utf-8")
    jsonl = _jsonl(tmp_path / "tags.jsonl", {"media": "x.jpg", "tags": [["wave", 0.5]]})
    said = ("x.jpg matches 2 ingested media (/m/clips_a/x.jpg, /m/clips_b/x.jpg); tagged all of them (give the "
            "file's folder too, e.g. clips_a/x.jpg, to tag one)")
    assert import_tags(store, csv).notes == [f"{csv}: line 2: {said}"]
    summary = import_tag_dataset(store, jsonl)
    assert summary.notes == [f"{jsonl}: line 1: {said}"] and summary.tags == 2
