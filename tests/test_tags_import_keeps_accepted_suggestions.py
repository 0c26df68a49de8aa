"""A tags import leaves alone what an editor decided, accepted suggestions included; tag conflicts say when.

Why: `giflens import tags` (and `make run`, which re-imports the uploader file at every start) took over an
experts-voting suggestion an editor had accepted, as an uploader tag at 1.0 under the importer's name, and
the editor's undo of the accept was then refused. Two tag conflict messages said who but not when."""
from __future__ import annotations

import re

import pytest
from conftest import make_faces
from sqlalchemy import select

from labeling.audit import undo_event
from labeling.auto_tagging import SOURCE, autotag
from labeling.db import open_store
from labeling.errors import utc_text
from labeling.importers import import_tags
from labeling.queries import media_tags_frame
from labeling.schema import MediaTag
from labeling.tags import TagExistsError, add_tags, set_tag_status
from test_queries import GIF, new_fixture_store

COLUMNS = ["tag", "confidence", "source", "status", "editor"]


@pytest.fixture
def store(store_url):
    return open_store(store_url)


def tags_of(store, media_id: int) -> dict[str, list]:
    frame = media_tags_frame(store, media_id=media_id)[COLUMNS]
    return {row[0]: row[1:] for row in frame.values.tolist()}


def tags_csv(tmp_path, file: str, tags: str):
    path = tmp_path / "tags.csv"
    path.write_text(f"file,uploader_tags\n{file},{tags}\n")
    return path


# -- 1. an accepted suggestion is the editor's: the import keeps it, and their undo still works --------------
def test_a_tags_import_keeps_a_suggestion_an_editor_accepted(store, tmp_path):
    make_faces(store, 1, 0)  # media 1: /data/0.gif
    add_tags(store, [1], ["awkward", "shrug"], "model-run", confidence=0.4, source=SOURCE, status="suggested")
    accepted = set_tag_status(store, [(1, "awkward")], "active", "ann")
    mine = tags_of(store, 1)["awkward"]
    assert mine == [0.4, SOURCE, "active", "ann"]

    summary = import_tags(store, tags_csv(tmp_path, "0.gif", "awkward;shrug"), "importer")
    # ann's accept stands as she left it; the pending "shrug" is taken over: the uploader says it is so
    assert (summary.kept, summary.tags) == (1, 1)
    assert tags_of(store, 1) == {"awkward": mine, "shrug": [1.0, "uploader", "active", "importer"]}
    # so her accept, not an import over it, is the tag's latest write: she can undo it
    undo_event(store, accepted.event_id, "ann")
    assert tags_of(store, 1)["awkward"] == [0.4, SOURCE, "suggested", "model-run"]


def test_a_tags_import_keeps_an_imported_tag_an_editor_marked_pending(store, tmp_path):
    make_faces(store, 1, 0)
    csv = tags_csv(tmp_path, "0.gif", "awkward")
    import_tags(store, csv, "importer")
    set_tag_status(store, [(1, "awkward")], "suggested", "ann")
    again = import_tags(store, csv, "importer")
    assert (again.kept, again.tags, again.unchanged) == (1, 0, 0)
    assert tags_of(store, 1)["awkward"] == [1.0, "uploader", "suggested", "ann"]


# -- 2. experts voting after the import leaves the accepted suggestion alone too ---------------------------
@pytest.mark.slow
def test_experts_voting_after_a_tags_import_leaves_an_accepted_suggestion(tmp_path_factory, tmp_path):
    fx = new_fixture_store(tmp_path_factory, "tags-accepted-import")
    gif = fx.media[GIF]
    set_tag_status(fx.store, [(gif, "happy")], "active", "ann")  # the fixture's experts-voting suggestion
    mine = tags_of(fx.store, gif)["happy"]
    assert mine == [0.6, SOURCE, "active", "ann"]
    import_tags(fx.store, tags_csv(tmp_path, GIF, "happy;nod"), "importer")
    autotag(fx.store, "bob", text=None)
    assert tags_of(fx.store, gif)["happy"] == mine


# -- 3. the conflicts say when ------------------------------------------------------------------------------
def test_adding_a_tag_already_there_says_who_set_it_and_when(store):
    make_faces(store, 1, 0)
    add_tags(store, [1], ["party"], "ann", confidence=0.9)
    with store() as s:
        at = s.scalar(select(MediaTag.updated_at))
    with pytest.raises(TagExistsError, match=re.escape(
            f"0.gif (media 1) is already tagged 'party' with confidence 0.90 by ann at {utc_text(at)}; "
            "edit its confidence instead (nothing was added)")):
        add_tags(store, [1], ["party"], "bob")
