"""Store defects around migration 0010's class name keys, each failing without its fix. Migration 0010
recomputed the class name keys but not the audit log: an undo of a rename made before it wrote the older
key back (or was refused as a change "outside the audited operations"), and the former names imports link
kept older keys; a class 0010 left with its older key (its new one taken) was not found by its own name,
could not be re-saved, and a byte-identical second class could be added. An export holding a birth year
after this one could not be imported back; a ConflictError built from a row labelled a session-zone time
"UTC"."""
from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from labeling.audit import run_operation, undo_event
from labeling.classes import add_class, find_class, rename_class
from labeling.db import alembic_config, make_engine, migrate, normalise_url, open_store
from labeling.errors import ConflictError, UndoError, ValidationError
from labeling.importers import former_names, import_attributes, read_class_map
from labeling.validation import class_name_key

from test_store_versions_and_undo_refusals import class_row


# -- a store written at migration 0009, then upgraded ---------------------------------------------------
def _key_before_0010():
    """The key function of the code before migration 0010, as that migration keeps it (for its downgrade)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(make_engine("sqlite://"))).get_revision("0010").module._key_before_0010


def _store_at_0009(store_url: str, build) -> sessionmaker:
    """A store at migration 0009 where `build(factory, old_key)` writes classes and audit events as the
    code before 0010 did (its keys), then upgraded to head; the upgraded store's session factory."""
    from alembic import command

    engine = make_engine(normalise_url(store_url))
    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0009")
    build(sessionmaker(engine, expire_on_commit=False), _key_before_0010())
    migrate(engine)
    engine.dispose()
    return open_store(store_url)


def _old_add(factory, old_key, name: str) -> int:
    """add_class as 0009's code wrote it: one audited insert, the key in 0009's format."""
    with run_operation(factory, "ann", "add_class") as op:
        class_id = op.insert_one("class", {"name": name, "name_key": old_key(name), "status": "active",
                                           "created_at": op.now, "updated_by": op.editor})
        op.concern(f"class:{class_id}")
        op.summary = f"add class {name!r}"
    return class_id


def _old_rename(factory, old_key, class_id: int, name: str) -> int:
    """rename_class as 0009's code wrote it: name and key, both snapshots holding 0009 keys; the event id."""
    with run_operation(factory, "ann", "rename_class") as op:
        rows = op.load("class", [(class_id,)])
        op.update("class", {(class_id,): {"name": name, "name_key": old_key(name)}}, rows)
        op.summary = f"rename class {rows[(class_id,)]['name']!r} to {name!r}"
    return op.result.event_id


# -- 1. undoing a rename made before 0010 -------------------------------------------------------------
def test_undoing_a_rename_made_before_0010_restores_the_name_under_the_current_key(store_url):
    """The snapshot's 0009 key went back as it was: "Kıvanç" could not be found by its name, and "KIVANÇ"
    could be added beside it. Undoing a rename to a name 0010 re-keyed was refused: the row's key no longer
    matched the one the event wrote, read as a change outside the audited operations."""
    made: dict[str, int] = {}

    def build(factory, old_key):
        made["kivanc"] = _old_add(factory, old_key, "Kıvanç")
        made["rename_kivanc"] = _old_rename(factory, old_key, made["kivanc"], "Kivanc Tatlitug")
        made["tarik"] = _old_add(factory, old_key, "Tarik Akan")
        made["rename_tarik"] = _old_rename(factory, old_key, made["tarik"], "Tarık Akan")

    store = _store_at_0009(store_url, build)
    undo_event(store, made["rename_kivanc"], "bob")
    assert class_row(store, made["kivanc"]).name_key == class_name_key("Kıvanç")
    with store() as s:
        assert find_class(s, "Kıvanç").id == made["kivanc"]
    with pytest.raises(ValidationError, match="a class named 'Kıvanç' already exists"):
        add_class(store, "KIVANÇ", "bob")
    undo_event(store, made["rename_tarik"], "bob")
    assert (class_row(store, made["tarik"]).name, class_row(store, made["tarik"]).name_key) == ("Tarik Akan", "tarik akan")


# -- 2. a name a class had before a rename made before 0010 --------------------------------------------
def test_a_name_renamed_away_before_0010_still_finds_its_class_on_import(store_url, tmp_path):
    """former_names held the 0009 key of "Kıvanç" ("kıvanç") while imports look names up by the current
    one ("kivanç"): an attributes file naming the class as before the rename created a second class."""
    made: dict[str, int] = {}

    def build(factory, old_key):
        made["kivanc"] = _old_add(factory, old_key, "Kıvanç")
        _old_rename(factory, old_key, made["kivanc"], "Kivanc Tatlitug")

    store = _store_at_0009(store_url, build)
    with store() as s:
        assert former_names(s) == {class_name_key("Kıvanç"): made["kivanc"]}
    path = tmp_path / "attributes.csv"
    path.write_text("name,gender\nKıvanç,male\n", encoding="utf-8")
    summary = import_attributes(store, path, "imp")
    assert (summary.created, summary.updated) == (0, 1)
    assert class_row(store, made["kivanc"]).gender == "male"


# -- 3. a class 0010 left with its older key -------------------------------------------------------------
GREEK, GREEK_UPPER = "Παΐσιος", "\u03a0\u0391\u03aa\u0301\u03a3\u0399\u039f\u03a3"  # ΠΑΪ́ΣΙΟΣ


def _stale_pairs(store_url: str) -> tuple[sessionmaker, dict[str, int]]:
    """Two pairs of classes two names apiece at 0009 and one name each since 0010: the second of each
    pair (by id) keeps its 0009 key, the other holding its new one."""
    made: dict[str, int] = {}

    def build(factory, old_key):
        for name in ("BARIŞ MANÇO", "Barış Manço", GREEK, GREEK_UPPER):
            made[name] = _old_add(factory, old_key, name)

    return _store_at_0009(store_url, build), made


def test_a_class_left_with_its_older_key_is_found_by_its_name_and_can_be_resaved(store_url):
    """Its own name found the other class of the pair, and saving it under its own name (a new display
    name, from the Classes form) was refused as taking the other's name."""
    store, made = _stale_pairs(store_url)
    stale = made["Barış Manço"]
    with store() as s:
        assert {name: find_class(s, name).id for name in made} == made
    old_key = class_row(store, stale).name_key
    assert old_key != class_name_key("Barış Manço")
    rename_class(store, stale, "Barış Manço", "ann", display_name="Barış")
    assert (class_row(store, stale).display_name, class_row(store, stale).name_key) == ("Barış", old_key)
    with pytest.raises(ValidationError, match=r"a class named 'BARIŞ MANÇO' already exists"):
        rename_class(store, stale, "Barış MANÇO", "ann")  # another spelling: the other class's name


def test_no_second_class_takes_the_exact_name_of_a_class_left_with_its_older_key(store_url):
    """Once the other class of the pair is renamed, the current key is free: "Barış Manço" could then be
    added, or another class renamed to it, a byte-identical second class."""
    store, made = _stale_pairs(store_url)
    rename_class(store, made["BARIŞ MANÇO"], "Baris Manco Jr", "ann")
    rename_class(store, made[GREEK], "Paisios", "ann")
    for name in ("Barış Manço", GREEK_UPPER):
        with pytest.raises(ValidationError, match=f"a class named {name!r} already exists \\(id {made[name]}, active\\)"):
            add_class(store, name, "bob")
    with pytest.raises(ValidationError, match=f"a class named 'Barış Manço' already exists \\(id {made['Barış Manço']}"):
        rename_class(store, made["BARIŞ MANÇO"], "Barış Manço", "bob")
    with store() as s:
        assert find_class(s, "Barış Manço").id == made["Barış Manço"]


def test_an_undo_does_not_give_back_the_exact_name_of_a_class_left_with_its_older_key(store_url):
    """A class renamed away from "Barış Manço" at 0009, before another took that name: undoing the rename
    once the current key is free would make two classes named exactly alike."""
    made: dict[str, int] = {}

    def build(factory, old_key):
        made["first"] = _old_add(factory, old_key, "Barış Manço")
        made["rename"] = _old_rename(factory, old_key, made["first"], "Cem Karaca")
        made["stale"] = _old_add(factory, old_key, "Barış Manço")
        made["upper"] = _old_add(factory, old_key, "BARIŞ MANÇO")

    store = _store_at_0009(store_url, build)
    rename_class(store, made["upper"], "Baris Manco Jr", "ann")
    with pytest.raises(UndoError, match=f"class {made['stale']} \\('Barış Manço'\\) is called that now"):
        undo_event(store, made["rename"], "bob")
    assert class_row(store, made["first"]).name == "Cem Karaca"


def test_a_class_left_with_its_older_key_gets_its_name_back_by_undo(store_url):
    """Renamed after 0010 and the rename undone: the class takes back its name and the older key the
    migration left it (the current key is the other class's), so it is found by that name again."""
    store, made = _stale_pairs(store_url)
    stale, other = made["Barış Manço"], made["BARIŞ MANÇO"]
    old_key = class_row(store, stale).name_key
    undo_event(store, rename_class(store, stale, "Baris Typo", "ann").event_id, "ann")
    assert (class_row(store, stale).name, class_row(store, stale).name_key) == ("Barış Manço", old_key)
    assert class_row(store, other).name_key == class_name_key("Barış Manço")
    with store() as s:
        assert find_class(s, "Barış Manço").id == stale and find_class(s, "BARIŞ MANÇO").id == other


# -- 4. an export's future birth year -------------------------------------------------------------------
def test_a_future_birth_year_in_classes_csv_is_read_as_unknown_with_a_note(tmp_path):
    """A store could hold one (accepted up to 2100 before) and its export writes it: the whole classes.csv
    was refused, so the export could not be imported back."""
    future, past = date.today().year + 4, date.today().year - 40
    path = tmp_path / "classes.csv"
    path.write_text(f"folder,name,gender,birth_year\nA,A,female,{future}\nB,B,male,{past}\n", encoding="utf-8")
    notes: list[str] = []
    classes = read_class_map(path, notes)
    assert classes["A"].attributes == {"gender": "female"}
    assert classes["B"].attributes == {"gender": "male", "birth_year": past}
    assert notes == [f"{path}: line 2: birth_year {future} is after this year; read as unknown "
                     "(a birth year cannot be in the future)"]
    path.write_text("folder,name,birth_year\nA,A,1700\n", encoding="utf-8")  # not a typo of a future year
    with pytest.raises(ValidationError, match=r"line 2: birth_year 1700 is outside 1800\.\."):
        read_class_map(path)


# -- 5. ConflictError times in UTC ---------------------------------------------------------------------
def test_a_conflict_error_converts_its_time_to_utc():
    at = datetime(2026, 12, 6, 9, 43, 17, tzinfo=ZoneInfo("America/New_York"))
    assert "by carl at 2026-12-06 14:43:17 UTC" in str(ConflictError("class 1", 1, 2, "carl", at))
    assert "at 2026-12-06 09:43:17 UTC" in str(ConflictError("class 1", 1, 2, "carl", at.replace(tzinfo=None)))


@pytest.mark.postgres
def test_a_conflict_over_a_write_outside_the_operations_gives_its_time_in_utc(pg_url):
    """The row's updated_at names the time when no audited operation wrote the row last; a PostgreSQL
    session in New York hands it back in that zone, and it was printed as UTC unconverted."""
    store = open_store(pg_url + "?options=-c%20timezone%3DAmerica/New_York")
    a, _ = add_class(store, "A", "ann")
    with store.begin() as s:
        s.execute(text("UPDATE celebrity_class SET version = version + 1, updated_at = now() + interval '1 second', "
                       "updated_by = 'sqlfix' WHERE id = :i"), {"i": a})
    with store() as s:
        at = s.scalar(text("SELECT updated_at FROM celebrity_class WHERE id = :i"), {"i": a}).astimezone(timezone.utc)
    with pytest.raises(ConflictError, match=f"changed by sqlfix at {at:%Y-%m-%d %H:%M:%S} UTC"):
        rename_class(store, a, "A2", "dan", expected_version=1)
