"""Tag names kept the emoji presentation selectors (U+FE0E text, U+FE0F emoji), so "❤" and "❤️" were two tags
that look alike: adding "❤" to a GIF tagged "❤️" was not refused as already tagged, the Per tag box listed
both, and bulk actions, experts voting and tags.jsonl split one word in two. `fold_tag_name` now drops them
where they select how a symbol is drawn (a stray one selects nothing and is still refused in a new name), and
migration 0014 recomputes stored names and merges the tags now alike as 0011 did. Each test but the guard
on class names fails without the fix; on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from conftest import downgrade_then_upgrade, n_events
from sqlalchemy import select, text

from labeling.audit import undo_event
from labeling.db import open_store
from labeling.errors import TagExistsError, UndoError, ValidationError
from labeling.importers import import_tags
from labeling.queries import tag_counts_frame
from labeling.schema import MediaTag, Tag
from labeling.tags import add_tags, remove_tags
from labeling.validation import class_name_key, clean_class_name, clean_tag_name, fold_tag_name
from conftest import plain_media

HEART, HEART_EMOJI, HEART_TEXT = "\u2764", "\u2764\ufe0f", "\u2764\ufe0e"
FLAG = "\U0001f3f3\ufe0f\u200d\U0001f308"  # rainbow flag: white flag, emoji selector, joiner, rainbow


def _rows(store) -> dict[tuple[int, str], tuple[str, str]]:
    with store() as s:
        return {(m, name): (status, editor) for m, name, status, editor in s.execute(
            select(MediaTag.media_id, Tag.name, MediaTag.status, MediaTag.editor).join(Tag, Tag.id == MediaTag.tag_id))}


@pytest.fixture
def store(store_url):
    return open_store(store_url)


def test_a_tag_with_or_without_its_presentation_selector_is_one_tag():
    for spelling in (HEART, HEART_EMOJI, HEART_TEXT, HEART_EMOJI + "\ufe0f\ufe0e"):
        assert clean_tag_name(spelling, new=True) == HEART
    flag = clean_tag_name(FLAG, new=True)  # the emoji sequence stays whole and valid without its selector
    assert flag == "\U0001f3f3\u200d\U0001f308" and fold_tag_name(flag) == flag
    assert clean_tag_name("=\ufe0e\u0338\ufe0f") == "\u2260"  # composed "≠" loses the selector after it too
    assert clean_tag_name("\u845b\U000e0100", new=True) == "\u845b\U000e0100"  # a CJK variant is a chosen glyph
    for stray in ("smile\ufe0f", "\ufe0fsmile", "a \ufe0e"):  # selecting nothing: still refused in a new tag
        assert fold_tag_name(stray) == stray
        with pytest.raises(ValidationError, match="invisible characters"):
            clean_tag_name(stray, new=True)


def test_class_names_keep_their_own_rules():
    """Class names are not folded by `fold_tag_name`: the display name keeps the emoji selector as typed."""
    assert clean_class_name("I " + HEART_EMOJI + " NY") == "I " + HEART_EMOJI + " NY"
    assert class_name_key("I " + HEART_EMOJI + " NY") == class_name_key("I " + HEART + " NY")


def test_adding_the_heart_without_its_emoji_selector_to_a_gif_tagged_with_it_is_refused(store):
    [gif, other] = plain_media(store, 2, first=91)
    add_tags(store, [gif], [HEART_EMOJI], "ann")
    for spelling in (HEART, HEART_TEXT):
        with pytest.raises(TagExistsError):
            add_tags(store, [gif], [spelling], "bob")
    add_tags(store, [other], [HEART_TEXT], "bob")
    assert _rows(store) == {(gif, HEART): ("active", "ann"), (other, HEART): ("active", "bob")}
    counts = tag_counts_frame(store)
    assert counts["tag"].tolist() == [HEART]  # the Per tag box lists one tag, on both GIFs
    remove_tags(store, [gif, other], [HEART_EMOJI], "carl")  # found under any spelling
    assert _rows(store) == {}


def test_giflens_import_tags_reads_both_hearts_as_one_tag(store, tmp_path):
    [gif] = plain_media(store, 1, first=91)
    path = tmp_path / "tags.csv"
    path.write_text(f"file,uploader_tags\nclip0.gif,{HEART_EMOJI};{HEART};{HEART_TEXT};love\n", encoding="utf-8")
    summary = import_tags(store, path, editor="ann")
    assert summary.skipped == []
    assert set(_rows(store)) == {(gif, HEART), (gif, "love")}


def test_migration_0014_merges_the_hearts_and_keeps_what_editors_did(store):
    """Tags stored before 0014 held "❤", "❤︎" and "❤️" apart (made here under other names, then renamed in place
    to what the code before stored). After the migration they are one tag "❤", the highest id (the emoji
    one); the row kept where a media carried two is the migration's, so undoing either add is refused
    instead of deleting the heart the other editor added too; a merged-away heart an editor removed stays a
    rejection on that media for experts voting; a tag stored with a selector and no twin is renamed; the
    audit log is not touched, and operations after the migration are undone as before."""
    from labeling.auto_tagging import read_inputs

    m1, m2, m3, m4 = plain_media(store, 4, first=91)
    bob_add = add_tags(store, [m1], ["old-plain"], "bob").event_id
    add_tags(store, [m2], ["old-text"], "ann")
    ann_add = add_tags(store, [m1], ["old-emoji"], "ann").event_id
    remove_tags(store, [m2], ["old-text"], "carl")
    add_tags(store, [m3], ["old-plain"], "dan")
    add_tags(store, [m4], ["old-flag"], "dan")
    with store() as s:
        ids = dict(s.execute(select(Tag.name, Tag.id)).all())
    with store.kw["bind"].begin() as conn:
        for old, stored in (("old-plain", HEART), ("old-text", HEART_TEXT), ("old-emoji", HEART_EMOJI),
                            ("old-flag", FLAG)):
            conn.execute(text("UPDATE tag SET name = :n WHERE id = :i"), {"n": stored, "i": ids[old]})
    events = n_events(store)
    downgrade_then_upgrade(store, "0013")
    heart = ids["old-emoji"]
    with store() as s:
        assert dict(s.execute(select(Tag.id, Tag.name)).all()) == {heart: HEART, ids["old-flag"]: clean_tag_name(FLAG)}
    assert _rows(store) == {(m1, HEART): ("active", "migration 0014"), (m2, HEART): ("rejected", "carl"),
                            (m3, HEART): ("active", "dan"), (m4, clean_tag_name(FLAG)): ("active", "dan")}
    assert n_events(store) == events
    for added in (bob_add, ann_add):  # either undo would delete the heart the other editor added too
        with pytest.raises(UndoError):
            undo_event(store, added, "ann")
    assert read_inputs(store).existing[(m2, HEART)] == ("editor", "rejected")  # not proposed again
    with pytest.raises(TagExistsError):
        add_tags(store, [m1, m3], [HEART_EMOJI], "eve")
    with pytest.raises(TagExistsError):
        add_tags(store, [m4], [FLAG], "eve")
    removed = remove_tags(store, [m3], [HEART_TEXT], "eve").event_id
    undo_event(store, removed, "eve")
    assert _rows(store)[(m3, HEART)] == ("active", "dan")
    downgrade_then_upgrade(store, "0013")  # run again: nothing left to merge or rename
    assert _rows(store)[(m1, HEART)] == ("active", "migration 0014") and n_events(store) == events + 2
