"""Store defects, each failing without its fix: refusing the undo of an operation
that many later edits overlapped read each later event by itself (one query each, 12-16 s for 20,000) while
holding SQLite's write lock; "İstanbul", "ISTANBUL" and "ıstanbul" were three tags and "Σοφός" was stored
"σοφόσ" (migration 0011 recomputes stored names and merges the tags now alike); demographic attribute
values typed precomposed and decomposed were stored two ways."""
from __future__ import annotations

import sqlite3
import unicodedata

import pytest
from conftest import make_faces, n_events
from sqlalchemy import event, select

from labeling.audit import undo_event
from labeling.classes import add_class
from labeling.db import alembic_config, make_engine, migrate, normalise_url, open_store
from labeling.errors import TagExistsError, UndoError
from labeling.face_labels import approve_faces, relabel_faces
from labeling.schema import AuditEvent, Media, MediaTag, Tag
from labeling.tags import add_tags
from labeling.validation import clean_attributes, clean_tag_name


@pytest.fixture
def store(store_url):
    return open_store(store_url)


# -- 1. refusing an undo reads later events in chunks, outside the write lock -----------------------------
def _refusal_and_statements(store, face: int, n_later: int) -> tuple[str, int, list[int]]:
    """An approval of `face`, then n_later relabels of it by bob and carl: the refusal to undo the
    approval, the number of SQL statements the refusal ran, and the ids of the later events."""
    a, _ = add_class(store, f"A{n_later}", "ann")
    b, _ = add_class(store, f"B{n_later}", "ann")
    approved = approve_faces(store, [face], "ann", class_id=a).event_id
    later = [relabel_faces(store, [face], (b, a)[i % 2], ("bob", "carl")[i % 2]).event_id for i in range(n_later)]
    statements: list[str] = []
    engine = store.kw["bind"]

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with pytest.raises(UndoError) as refused:
            undo_event(store, approved, "ann")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return str(refused.value), len(statements), later


def test_refusing_an_undo_runs_as_many_queries_for_many_later_events_as_for_few(store):
    """The refusal counts every later operation and names the first; the statements it runs do not grow
    with their number (each later event was read by a query of its own: 37 more for 37 more events)."""
    counts = {}
    faces = make_faces(store, 2, 1)
    for face, n in zip(faces, (3, 40)):
        message, counts[n], later = _refusal_and_statements(store, face, n)
        assert f"cannot be undone: {n} later operation(s) changed or used the same entities, first {later[0]} " \
               "(relabel_faces) by bob at " in message and message.endswith("undo those first")
    assert counts[40] == counts[3], counts


def test_a_refused_undo_does_not_wait_for_nor_hold_the_sqlite_write_lock(tmp_path):
    """The check runs first in a read transaction: an undo that is refused never takes SQLite's write lock
    (BEGIN IMMEDIATE), which held every other writer back as long as the check ran. Here another writer
    holds the lock: the refusal comes at once, where it waited for the lock (busy timeout, 30 s) and then
    failed as a write collision instead of saying what pins the operation."""
    path = tmp_path / "store.db"
    store = open_store(f"sqlite:///{path}")
    message, _, later = _refusal_and_statements(store, make_faces(store, 1, 1)[0], 2)
    approved = later[0] - 1
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(UndoError, match=rf"operation {approved} \(approve_faces\) cannot be undone: 2 later"):
            undo_event(store, approved, "ann")
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_an_undo_that_nothing_pins_still_goes_through_after_the_read_check(store):
    face = make_faces(store, 1, 1)[0]
    a, _ = add_class(store, "A", "ann")
    approved = approve_faces(store, [face], "ann", class_id=a).event_id
    result = undo_event(store, approved, "ann")
    assert result.changed == 1
    with pytest.raises(UndoError, match=f"was already undone by operation {result.event_id}"):
        undo_event(store, approved, "ann")


# -- 2. tag names: Turkic i and Greek final sigma -----------------------------------------------------------
@pytest.mark.parametrize("spellings, stored", [
    (["İstanbul", "ISTANBUL", "ıstanbul", "istanbul"], "istanbul"),
    (["Σοφός", "ΣΟΦΌΣ", "σοφός"], "σοφός"),
    (["ΟΔΟΣ", "οδος", "Οδος"], "οδος"),
    (["Straße", "STRASSE", "strasse"], "strasse"),  # ß matches "ss" without case: caseless, as before
    (["ΣΟΦΟΣ ΣΟΦΟΣ.", "σοφος σοφος."], "σοφος σοφος."),
])
def test_a_tag_typed_in_any_case_is_one_tag_stored_as_lower_case_reads(store, spellings, stored):
    media = [m for m, in _media(store, make_faces(store, 1, 1))]
    for spelling in spellings:
        try:
            add_tags(store, media, [spelling], "ann")
        except TagExistsError:
            pass
    with store() as s:
        names = list(s.scalars(select(Tag.name).join(MediaTag, MediaTag.tag_id == Tag.id)
                               .where(MediaTag.media_id == media[0])))
    assert names == [stored]
    assert unicodedata.is_normalized("NFC", stored) and "\u0307" not in stored
    assert all(clean_tag_name(s) == stored for s in spellings) and clean_tag_name(stored) == stored


def _media(store, faces):
    from labeling.schema import Face

    with store() as s:
        return s.execute(select(Face.media_id).where(Face.id.in_(faces)).distinct()).all()


def test_migration_0011_recomputes_tag_names_and_merges_the_tags_now_alike(store_url):
    """Tags stored by the code before (casefold only): "i̇stanbul" (U+0307), "istanbul", "ıstanbul" are one
    tag now, the highest id (no id freed for SQLite to hand out again); on a media carrying two of them the active row is kept over a suggestion, then
    the higher confidence; "σοφόσ" is renamed "σοφός". The audit log is not touched."""
    from alembic import command
    from sqlalchemy.orm import sessionmaker

    engine = make_engine(normalise_url(store_url))
    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0010")
    old = sessionmaker(engine)
    with old.begin() as s:
        media = [Media(sha256=f"{i:064x}", path=f"/data/{i}.gif", kind="gif", status="ok") for i in range(3)]
        tags = [Tag(name=n) for n in ("i\u0307stanbul", "istanbul", "\u0131stanbul", "\u03c3\u03bf\u03c6\u03cc\u03c3", "ada")]
        s.add_all(media + tags)
        s.flush()
        m1, m2, m3 = (m.id for m in media)
        dotted, plain, dotless, sigma, ada = (t.id for t in tags)

        def row(m, t, status, conf, version=1):
            return MediaTag(media_id=m, tag_id=t, status=status, confidence=conf, source="editor", version=version)
        s.add_all([row(m1, dotted, "active", 0.5), row(m1, plain, "suggested", 0.9),  # active kept
                   row(m2, plain, "active", 0.8, 3), row(m2, dotless, "active", 0.7, 2),  # higher confidence kept
                   row(m3, dotless, "rejected", 0.2),  # moved
                   row(m1, sigma, "active", 1.0), row(m2, ada, "suggested", 0.3)])
        s.add(AuditEvent(editor="ann", operation="add_tags", summary="added", n_entities=1,
                         before={f"media_tag:{m1}:{plain}": None}, after={f"media_tag:{m1}:{plain}": {"status": "suggested"}}))
    events = n_events(old)
    migrate(engine)
    with old() as s:
        assert dict(s.execute(select(Tag.id, Tag.name)).all()) == {dotless: "istanbul", sigma: "σοφός", ada: "ada"}
        rows = {(r.media_id, r.tag_id): (r.status, r.confidence) for r in s.scalars(select(MediaTag))}
        versions = {(r.media_id, r.tag_id): r.version for r in s.scalars(select(MediaTag))}
    assert rows == {(m1, dotless): ("active", 0.5), (m2, dotless): ("active", 0.8), (m3, dotless): ("rejected", 0.2),
                    (m1, sigma): ("active", 1.0), (m2, ada): ("suggested", 0.3)}
    assert versions[(m2, dotless)] == 4  # above both rows it replaced: an edit based on either is a conflict
    assert n_events(old) == events
    engine.dispose()
    store = open_store(store_url)
    add_tags(store, [m3], ["İSTANBUL"], "bob")  # found under any spelling: the rejected row is restored
    with store() as s:
        assert s.scalar(select(MediaTag.status).where(MediaTag.media_id == m3, MediaTag.tag_id == dotless)) == "active"
    with pytest.raises(TagExistsError):
        add_tags(store, [m1], ["Σοφός"], "bob")


def test_fold_tag_name_is_its_own_fold():
    """A stored name is looked up by folding it again: "İ" + a dot above left "i" + U+0307, which folded
    again to "i", so add_tags failed with a KeyError and migration 0011 renamed two tags to one name."""
    from labeling.validation import fold_tag_name

    for raw in ("\u0130\u0307zmir", "I\u0307\u0307zmir", "\u0130stanbul", "ΣΟΦΌΣ", "ΑΣ1", "σ", "Straße"):
        once = fold_tag_name(raw)
        assert fold_tag_name(once) == once, raw
    assert fold_tag_name("\u0130\u0307zmir") == "izmir"


def test_migration_0011_keeps_what_editors_did_to_the_tags_it_merges(store_url):
    """Stores written before 0011 held "i̇stanbul" and "istanbul" apart (tags made with other names here,
    then renamed in place to what the code before stored). After the migration: the row kept where a media
    carried both is the migration's, so undoing either add is refused instead of deleting the tag the other
    editor added too; a merged-away tag an editor removed stays rejected on that media for experts voting;
    tags stored as "i̇̇zmir" and "i̇zmir" (whose fold was not its own fold) merge instead of failing the
    migration on the unique name."""
    from sqlalchemy import text

    from labeling.auto_tagging import read_inputs
    from labeling.tags import remove_tags

    store = open_store(store_url)
    with store.begin() as s:
        media = [Media(sha256=f"{i + 7:064x}", path=f"/data/m{i}.gif", kind="gif", status="ok") for i in range(3)]
        s.add_all(media)
    m1, m2, m3 = (m.id for m in media)
    ann_add = add_tags(store, [m1], ["old-dotted"], "ann").event_id
    add_tags(store, [m2], ["old-dotted"], "ann")
    bob_add = add_tags(store, [m1], ["old-plain"], "bob").event_id
    remove_tags(store, [m2], ["old-dotted"], "carl")
    add_tags(store, [m3], ["old-izmir-2", "old-izmir-1"], "dan")
    with store() as s:
        ids = dict(s.execute(select(Tag.name, Tag.id)).all())
    engine = store.kw["bind"]
    with engine.begin() as conn:
        for old, stored in (("old-dotted", "i\u0307stanbul"), ("old-plain", "istanbul"),
                            ("old-izmir-2", "i\u0307\u0307zmir"), ("old-izmir-1", "i\u0307zmir")):
            conn.execute(text("UPDATE tag SET name = :n WHERE id = :i"), {"n": stored, "i": ids[old]})
        conn.execute(text("DROP TABLE imported_group"))  # what later migrations add: a store at 0010 lacks it
        conn.execute(text("UPDATE alembic_version SET version_num = '0010'"))
    migrate(engine)
    survivor, izmir = ids["old-plain"], max(ids["old-izmir-1"], ids["old-izmir-2"])
    with store() as s:
        assert dict(s.execute(select(Tag.id, Tag.name)).all()) == {survivor: "istanbul", izmir: "izmir"}
        rows = {(r.media_id, r.tag_id): (r.status, r.editor) for r in s.scalars(select(MediaTag))}
    assert rows == {(m1, survivor): ("active", "migration 0011"), (m2, survivor): ("rejected", "carl"),
                    (m3, izmir): ("active", "migration 0011")}
    for added in (bob_add, ann_add):  # either undo would delete the tag the other editor added too
        with pytest.raises(UndoError):
            undo_event(store, added, "ann")
    with store() as s:
        assert s.scalar(select(MediaTag.status).where(MediaTag.media_id == m1, MediaTag.tag_id == survivor)) == "active"
    assert read_inputs(store).existing[(m2, "istanbul")] == ("editor", "rejected")  # not proposed again


# -- 3. attribute values stored NFC ----------------------------------------------------------------------
def test_a_country_typed_decomposed_is_stored_as_typed_precomposed():
    precomposed, decomposed = "Türkiye", "Tu\u0308rkiye"
    assert clean_attributes({"country": decomposed}) == clean_attributes({"country": precomposed}) == {"country": precomposed}
    assert clean_attributes({"ethnicity": "  Me\u0301tis  "})["ethnicity"] == "métis"
