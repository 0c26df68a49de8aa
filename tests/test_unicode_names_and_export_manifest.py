"""Unicode names, upload names and export manifests:

1. A folder with someone's own manifest.json beside labels.csv and raw_dataset/ is walked as media, not
   taken for a giflens export (only a giflens manifest makes one).
2. An upload named " .gif" or ".. ..gif" keeps its extension and is not saved hidden.
3. Events stored under the NFD spelling of an editor's name (before names were normalised) are that
   editor's: Undo last and the recent operations find them.
4. Letters with no decomposition ("Ł", "ø", "đ") are searched as the Latin letters typed for them.
"""
from __future__ import annotations

import json
import unicodedata

import pytest
from sqlalchemy import text

from embeddings.pipeline import is_export_folder
from labeling.audit import recent_events, undo_last
from labeling.classes import add_class
from labeling.db import open_store
from labeling.pages.common import safe_file_name
from labeling.schema import CelebrityClass
from labeling.validation import search_key


@pytest.mark.parametrize("manifest, expected", [
    ({"name": "celebs", "version": 3}, False),
    ({"files": {"other.csv": "x"}}, False),
    ({"format": "something-else/1", "files": {"labels.csv": "x"}}, False),
    ({"format": "giflens-export/1", "files": {"labels.csv": "x"}}, True),
    ({"files": {"labels.csv": "x", "classes.csv": "y"}}, True),  # written before `format` existed
])
def test_only_a_giflens_manifest_makes_a_folder_an_export(tmp_path, manifest, expected):
    (tmp_path / "raw_dataset").mkdir()
    (tmp_path / "labels.csv").write_text("Label,Index\n", encoding="utf-8")
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert is_export_folder(tmp_path) is expected
    (tmp_path / "manifest.json").write_text("{not json", encoding="utf-8")
    assert not is_export_folder(tmp_path)


@pytest.mark.parametrize("name, saved", [(" .gif", "upload.gif"), (".. ..gif", "upload.gif"), ("..jpg", "upload.jpg"),
                                         (". .hidden.png", "hidden.png"), ("clip.gif", "clip.gif")])
def test_upload_names_keep_their_extension_and_are_never_hidden(name, saved):
    assert safe_file_name(name) == saved


def test_events_under_the_nfd_spelling_of_a_name_are_the_editors(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    nfc, nfd = "Jos\u00e9", unicodedata.normalize("NFD", "Jos\u00e9")
    add_class(store, "Old Class", nfc)
    engine = store.kw["bind"]
    with engine.begin() as conn:  # as check_editor stored it before names were normalised (the log is append-only:
        conn.execute(text("DROP TRIGGER IF EXISTS audit_event_only_undone_by"))  # its trigger set aside for the setup)
        conn.execute(text("UPDATE audit_event SET editor = :e"), {"e": nfd})
    assert [e.summary for e in recent_events(store, nfc)] == [e.summary for e in recent_events(store, nfd)] != []
    undo_last(store, nfc)
    with store() as s:
        assert s.query(CelebrityClass).count() == 0


@pytest.mark.parametrize("typed, stored", [("Lukasz", "Łukasz"), ("Oystein", "Øystein"), ("Dorde", "Đorđe"),
                                           ("Beyonce", "Beyoncé"), ("Aeschylus", "Æschylus")])
def test_letters_without_a_decomposition_are_searched_as_typed_in_latin(typed, stored):
    assert search_key(typed) == search_key(stored)
