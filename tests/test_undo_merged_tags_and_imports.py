"""Undo over tags a migration merged away, and over an import that recorded an export's groups.

1. Undoing the removal of a tag that migration 0011 (Turkic i, final sigma) or 0014 (emoji presentation
   selectors) merged into another re-created a row of the deleted tag: the foreign key refused it and the
   editor read "restoring it would break a database constraint (FOREIGN KEY constraint failed)". It is now
   refused by name: which tag it became, and the one audited edit that does what the undo meant; nothing
   is written onto the surviving tag's row (it may hold a newer decision). Fails without the fix.
2. Undoing `giflens import raw-dataset` of an export takes its labels (and the classes it created) back;
   its media stay (the ingest is a record, not undone), and so do the groups its split.csv gave them
   (labeling.schema.ImportedGroup): provenance of those bytes, true whatever they are labeled, which keeps
   one clip's crops on one side once they are labeled again. A guard of that decision: passes before too.

The stores of 1 are written as the code before each migration wrote them: tags stored under the names it
stored ("i̇stanbul" with U+0307, "❤️"), and its add and remove operations through the same audited
`Operation`, with the summaries it wrote (today's `add_tags` would fold the names first)."""
from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import downgrade_then_upgrade, n_events
from sqlalchemy import func, select

from labeling.audit import run_operation, undo_event
from labeling.db import open_store, session_scope
from labeling.errors import UndoError
from labeling.schema import AuditEvent, FaceLabel, ImportedGroup, Media, MediaTag, Tag
from labeling.tags import add_tags, names_in_summary, remove_tags
from conftest import plain_media

OLD_DOTTED, PLAIN = "i\u0307stanbul", "istanbul"  # what the code before 0011 stored for "İstanbul" and "istanbul"
HEART_EMOJI, HEART = "\u2764\ufe0f", "\u2764"  # two tags before 0014, one after


@pytest.fixture
def store(store_url):
    return open_store(store_url)


def _old_tags(store, *names: str) -> list[int]:
    """Tag rows under the names the code before the migration stored (today's code folds them on creation)."""
    with session_scope(store) as s:
        tags = [Tag(name=n) for n in names]
        s.add_all(tags)
        s.flush()
        return [t.id for t in tags]


def _old_add(store, editor: str, media_id: int, tags: dict[int, str]) -> int:
    """An add_tags as the code before wrote it: the rows apply_tags writes, its summary naming the tags typed."""
    with run_operation(store, editor, "add_tags") as op:
        keys = [(media_id, t) for t in tags]
        rows = op.load("media_tag", keys)
        op.update("media_tag", {k: {"confidence": 1.0, "source": "editor", "status": "active", "editor": editor}
                                for k in keys}, rows)
        op.concern(f"media:{media_id}")
        op.summary = f"add tag(s) {', '.join(map(repr, tags.values()))} to 1 media ({len(tags)} changed)"
    return op.result.event_id


def _old_remove(store, editor: str, media_id: int, tags: dict[int, str]) -> int:
    """A remove_tags as the code before wrote it (`labeling.tags.remove_tags`, its own name lookup)."""
    with run_operation(store, editor, "remove_tags") as op:
        rows = op.load("media_tag", [(media_id, t) for t in tags])
        op.delete("media_tag", rows)
        op.concern(f"media:{media_id}")
        op.summary = f"remove tag(s) {', '.join(map(repr, tags.values()))} from 1 media ({len(rows)} removed)"
    return op.result.event_id


def _rows(store) -> dict[tuple[int, str], tuple[str, str, int]]:
    with store() as s:
        return {(m, name): (status, editor, version) for m, name, status, editor, version in s.execute(
            select(MediaTag.media_id, Tag.name, MediaTag.status, MediaTag.editor, MediaTag.version)
            .join(Tag, Tag.id == MediaTag.tag_id))}


def test_a_summary_gives_back_the_names_it_quotes():
    assert names_in_summary("remove tag(s) 'funny', \"it's\", 'a\\\\b' and 2 more from 3 media (4 removed)") == [
        "funny", "it's", "a\\b"]
    assert names_in_summary("import uploader tags from tags.csv: 3 written") == []


def test_undoing_the_removal_of_a_tag_0011_merged_away_names_the_tag_it_became(store):
    """A tag "i̇stanbul" (stored so before 0011) removed from clip0.gif, and "istanbul" on clip1.gif: 0011 merges
    the first into the second (the higher id) and keeps the removal as a rejection of "istanbul" on clip0.gif.
    Undoing the removal is refused naming "istanbul" and the add that puts it back, not a raw foreign key
    error; the add event's summary picks the tag out of the two the removal named. The advice works."""
    m1, m2 = plain_media(store, 2, first=501)
    dotted, plain, ada = _old_tags(store, OLD_DOTTED, PLAIN, "ada")
    _old_add(store, "ann", m1, {dotted: OLD_DOTTED})
    _old_add(store, "ann", m1, {ada: "ada"})
    _old_add(store, "bob", m2, {plain: PLAIN})
    removed = _old_remove(store, "carl", m1, {dotted: OLD_DOTTED, ada: "ada"})
    downgrade_then_upgrade(store, "0010")
    before, events = _rows(store), n_events(store)
    assert before[(m1, PLAIN)][:2] == ("rejected", "carl")
    with pytest.raises(UndoError) as refused:
        undo_event(store, removed, "carl")
    message = str(refused.value)
    assert "constraint" not in message.lower()
    assert message.startswith(f"operation {removed} (remove_tags) cannot be undone: tag {dotted}, which it removed "
                              f"from clip0.gif (media {m1}), no longer exists: migration 0011 or 0014 merged it into "
                              f"tag 'istanbul' (id {plain}), as tag names that fold alike (a Turkic i, a final sigma, an "
                              "emoji presentation selector) are one tag now; an undo is not moved onto another "
                              "tag's row, where it could overwrite a newer decision: ")
    assert message.endswith("to put it back, add tag 'istanbul' to clip0.gif (media "
                            f"{m1}) again (it is rejected there now, by carl)")
    assert (_rows(store), n_events(store)) == (before, events)  # nothing written, "ada" not restored alone
    add_tags(store, [m1], ["İstanbul"], "carl")
    assert _rows(store)[(m1, PLAIN)][:2] == ("active", "carl")


def test_undoing_a_removal_0014_merged_never_overwrites_the_surviving_tags_row(store):
    """clip0.gif carried "❤️" (ann) and "❤" (bob), two tags before 0014; dan removed "❤️". After 0014 "❤️" is
    "❤" (the higher id), whose row on clip0.gif is bob's own decision: undoing dan's removal is refused naming
    it, and bob's row is left as it is."""
    [m1] = plain_media(store, 1, first=501)
    emoji, plain = _old_tags(store, HEART_EMOJI, HEART)
    _old_add(store, "ann", m1, {emoji: HEART_EMOJI})
    _old_add(store, "bob", m1, {plain: HEART})
    removed = _old_remove(store, "dan", m1, {emoji: HEART_EMOJI})
    downgrade_then_upgrade(store, "0013")
    before = _rows(store)
    assert before == {(m1, HEART): ("active", "bob", 1)}
    with pytest.raises(UndoError, match=rf"merged it into tag '{HEART}' \(id {plain}\).*: clip0.gif \(media {m1}\) "
                                        rf"carries tag '{HEART}' now \(active, confidence 1\): edit that tag if it "
                                        "should differ$"):
        undo_event(store, removed, "dan")
    assert _rows(store) == before


def test_a_tag_whose_old_name_no_summary_holds_is_still_refused_by_what_happened(store):
    """Named under a placeholder when removed, renamed in place to what the code before stored: no summary
    quotes a tag there is now, so the refusal says it was merged into another tag, and how to redo it."""
    [m1, m2] = plain_media(store, 2, first=501)
    emoji, plain = _old_tags(store, "old-emoji", "old-plain")
    _old_add(store, "ann", m1, {emoji: "old-emoji"})
    _old_add(store, "bob", m2, {plain: "old-plain"})
    removed = remove_tags(store, [m1], ["old-emoji"], "carl").event_id
    with session_scope(store) as s:
        s.get(Tag, emoji).name, s.get(Tag, plain).name = HEART_EMOJI, HEART
    downgrade_then_upgrade(store, "0013")
    with pytest.raises(UndoError, match=rf"tag {emoji}, which it removed from clip0.gif \(media {m1}\), no longer "
                                        "exists: migration 0011 or 0014 merged it into another tag whose name folds "
                                        r"alike .*: redo what you want on clip0.gif \(media \d+\) as a new operation"):
        undo_event(store, removed, "carl")


def test_undoing_an_operation_after_the_merge_still_works(store):
    """The check refuses only rows of tags that are gone: an undo of tags that exist goes through."""
    [m1] = plain_media(store, 1, first=501)
    added = add_tags(store, [m1], ["Funny "], "ann").event_id
    removed = remove_tags(store, [m1], ["FUNNY"], "bob").event_id
    undo_event(store, removed, "bob")
    assert _rows(store)[(m1, "funny")][:2] == ("active", "ann")
    undo_event(store, added, "ann")  # the removal and its undo cancel out
    assert _rows(store) == {}


# -- 2. the groups an imported export recorded stay with its media when the import is undone -----------------
def _export_folder(root: Path, lfw_dir: Path) -> tuple[Path, int]:
    """An export's layout as `giflens export` writes it: labels.csv, raw_dataset/<Label>/<face id>.jpg (real
    LFW photos) and a split.csv whose group column holds three crops of one clip and one still alone."""
    person = "Al_Gore"
    folder = root / "export"
    (folder / "raw_dataset" / person).mkdir(parents=True)
    (folder / "labels.csv").write_text(f"Label,Index\n{person},0\n", encoding="utf-8")
    photos = sorted((lfw_dir / person).glob("*.jpg"))[:4]
    with (folder / "split.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["face_id", "label", "group", "side"])
        for face_id, photo in enumerate(photos, start=11):
            shutil.copyfile(photo, folder / "raw_dataset" / person / f"{face_id}.jpg")
            writer.writerow([face_id, person, "7" if face_id < 14 else "14", "train"])
    return folder, 3


@pytest.mark.slow
def test_undoing_an_import_keeps_its_media_and_the_groups_its_export_gave_them(tmp_path, lfw_dir):
    from labeling.importers import import_raw_dataset
    from models.settings import Settings

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    settings = Settings(data_dir=tmp_path / "data", database_url=url)
    folder, grouped = _export_folder(tmp_path, lfw_dir)
    imported = import_raw_dataset(store, folder, settings, "bob")
    assert imported.labels == 4, imported.skipped

    def state() -> tuple[int, set[tuple[int, str]], int]:
        with store() as s:
            return (s.scalar(select(func.count()).select_from(Media)),
                    set(map(tuple, s.execute(select(ImportedGroup.media_id, ImportedGroup.group_key)))),
                    s.scalar(select(func.count()).select_from(FaceLabel)))

    media, groups, labels = state()
    assert (media, labels) == (4, 4)
    assert max(Counter(key for _, key in groups).values()) == grouped  # the clip's three crops share one group
    undo = undo_event(store, imported.event_id, "bob")
    with store() as s:
        assert s.get(AuditEvent, imported.event_id).undone_by_id == undo.event_id
    assert state() == (4, groups, 0)  # the labels go; the media and the groups of their clips stay
    again = import_raw_dataset(store, folder, settings, "bob")  # redone by importing again: nothing doubled
    assert again.labels == 4 and state() == (4, groups, 4)
