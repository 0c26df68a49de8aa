"""Store defects, each failing without its fix: a Turkish or Greek name and its upper
case made two classes (class_name_key not normalised after folding, Turkic i), the stored keys recomputed
by migration 0010; an undo refusal giving PostgreSQL session-zone times unlabelled; two confidences for
one tag in one edit, the last silently winning; a display name refused for a "/" as if it were a path;
summaries naming a split's target by id and a tag decision by its status; future birth years."""
from __future__ import annotations

from datetime import date, timezone

import pytest
from conftest import make_faces
from sqlalchemy import select, text

from labeling.audit import undo_event
from labeling.classes import add_class, find_class, rename_class, split_class
from labeling.db import alembic_config, make_engine, migrate, normalise_url, open_store
from labeling.errors import UndoError, ValidationError
from labeling.face_labels import approve_faces, relabel_faces
from labeling.schema import AuditEvent
from labeling.tags import add_tags, set_tag_confidences, set_tag_status
from labeling.validation import clean_attributes

import test_store_versions_and_undo_refusals
from test_store_versions_and_undo_refusals import class_row, media_of, n_events, tag_row

store = test_store_versions_and_undo_refusals.store  # the fixture: a store on each of SQLite and PostgreSQL


# -- 1. class names compared case-insensitively in any script -------------------------------------------
@pytest.mark.parametrize("name, upper", [("Barış Manço", "BARIŞ MANÇO"), ("İbrahim Tatlıses", "ibrahim tatlıses"),
                                         ("Παΐσιος", "ΠΑΪ́ΣΙΟΣ"), ("Ῥΰθμος", "ῬΫ́ΘΜΟΣ")])
def test_a_name_and_its_upper_case_are_one_class_in_turkish_and_greek(store, name, upper):
    """casefold leaves "ı" dotless (but "I" becomes "i") and decomposes "ΐ" further than "Ϊ́"'s fold: the
    upper-case spelling was a second class, and a lookup by it found that one instead of the first."""
    first, _ = add_class(store, name, "ann")
    with pytest.raises(ValidationError, match=f"a class named {name!r} already exists"):
        add_class(store, upper, "bob")
    with store() as s:
        assert find_class(s, upper).id == first


def _insert_class(conn, name: str, key: str) -> None:
    conn.execute(text("INSERT INTO celebrity_class (name, name_key, status, created_at, updated_at, version) "
                      "VALUES (:n, :k, 'active', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1)"), {"n": name, "k": key})


def test_migration_0010_recomputes_class_name_keys_and_keeps_a_taken_one(store_url):
    """Keys written before 0010 (NFKC then casefold, as 0009's code computed them) are recomputed; where two
    classes now fold alike, the later keeps its old key (an editor merges them; a migration picks none).
    A downgrade puts back the keys the older code looks names up by."""
    from alembic import command

    engine = make_engine(normalise_url(store_url))
    config = alembic_config(engine)
    greek = "\u03a0\u0391\u03aa\u0301\u03a3\u0399\u039f\u03a3"  # ΠΑΪ́ΣΙΟΣ, its old key ϊ + U+0301 uncomposed
    old = {"Barış Manço": "barış manço", "BARIŞ MANÇO": "bariş manço", "İstanbul": "i\u0307stanbul",
           greek: "\u03c0\u03b1\u03ca\u0301\u03c3\u03b9\u03bf\u03c3", "Ada": "ada"}
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0009")
        for name, key in old.items():
            _insert_class(conn, name, key)
    migrate(engine)
    with engine.connect() as conn:
        keys = dict(conn.execute(text("SELECT name, name_key FROM celebrity_class")).all())
    assert keys == {"Barış Manço": "barış manço",  # "bariş manço" is BARIŞ MANÇO's: two classes, as before
                    "BARIŞ MANÇO": "bariş manço", "İstanbul": "istanbul",
                    greek: "\u03c0\u03b1\u0390\u03c3\u03b9\u03bf\u03c3", "Ada": "ada"}  # ΐ composed now
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0009")
    with engine.connect() as conn:
        assert dict(conn.execute(text("SELECT name, name_key FROM celebrity_class")).all()) == old
    engine.dispose()


# -- 2. undo refusals give times in UTC, labelled ---------------------------------------------------------
@pytest.mark.postgres
def test_an_undo_refusal_gives_the_blocking_operation_time_in_utc(pg_url):
    """A PostgreSQL session in another time zone (a server set up on a machine in New York) hands timestamps
    back in that zone: the refusal printed them unlabelled, five hours off the ConflictError's UTC."""
    store = open_store(pg_url + "?options=-c%20timezone%3DAmerica/New_York")
    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    first = relabel_faces(store, faces, a, "bob")
    later = relabel_faces(store, faces, b, "carl")
    with store() as s:
        at = s.scalar(select(AuditEvent.at).where(AuditEvent.id == later.event_id)).astimezone(timezone.utc)
    with pytest.raises(UndoError) as refused:
        undo_event(store, first.event_id, "bob")
    assert f"first {later.event_id} (relabel_faces) by carl at {at:%Y-%m-%d %H:%M:%S} UTC" in str(refused.value)


# -- 3. one confidence per tag in one edit ----------------------------------------------------------------
def test_two_confidences_for_one_tag_in_one_edit_are_refused_and_nothing_is_written(store):
    media = media_of(store, make_faces(store, 1, 1)[0])
    events = n_events(store)
    with pytest.raises(ValidationError, match=rf"0\.gif \(media {media}\) tag 'x' is given two confidences, "
                                              r"0\.2 and 0\.8"):
        set_tag_confidences(store, [(media, "x", 0.2), (media, " X ", 0.8)], "ann")
    assert tag_row(store, media, "x") is None and n_events(store) == events
    # the same confidence twice is one edit
    result = set_tag_confidences(store, [(media, "x", 0.5), (media, "X", "0.5")], "ann")
    assert result.changed == 1 and tag_row(store, media, "x").confidence == 0.5


# -- 5. display names are not folder names ----------------------------------------------------------------
def test_a_display_name_may_hold_a_slash_and_refusals_call_it_a_display_name(store):
    acdc, _ = add_class(store, "ACDC", "ann", display_name="AC/DC")
    assert class_row(store, acdc).display_name == "AC/DC"
    rename_class(store, acdc, "ACDC", "ann", display_name="  Simon & Garfunkel /  duo ")
    assert class_row(store, acdc).display_name == "Simon & Garfunkel / duo"  # trimmed, spaces collapsed
    with pytest.raises(ValidationError, match="^display name 'AC\u2800' contains invisible characters"):
        rename_class(store, acdc, "ACDC", "ann", display_name="AC\u2800")
    with pytest.raises(ValidationError, match="^display name 'Ali\u3164' contains invisible characters"):
        add_class(store, "Ali", "ann", display_name="Ali\u3164")
    with pytest.raises(ValidationError, match="^display name is 201 characters long; the limit is 200"):
        rename_class(store, acdc, "ACDC", "ann", display_name="x" * 201)
    with pytest.raises(ValidationError, match="^display name 'a\\\\x00b' contains control characters"):
        rename_class(store, acdc, "ACDC", "ann", display_name="a\x00b")
    with pytest.raises(ValidationError, match="class name 'AC/DC' looks like a path"):  # a name is a folder
        add_class(store, "AC/DC", "ann")


# -- app 7. summaries name what an editor knows ----------------------------------------------------------
def test_a_split_summary_names_the_target_class(store):
    faces = make_faces(store, 1, 3)
    a, _ = add_class(store, "Jennifer Lawrence", "ann")
    other, _ = add_class(store, "Jen L", "ann")
    approve_faces(store, faces, "ann", class_id=a)
    new, created = split_class(store, a, [faces[0]], "ann", new_name=" JLaw  Two ")
    assert created.summary == f"split 1 face(s) from 'Jennifer Lawrence' into 'JLaw Two' (class {new})"
    _, moved = split_class(store, a, faces[1:], "ann", target_id=other)
    assert moved.summary == f"split 2 face(s) from 'Jennifer Lawrence' into 'Jen L' (class {other})"


def test_tag_decision_summaries_say_what_was_done(store):
    media = media_of(store, make_faces(store, 1, 1)[0])
    add_tags(store, [media], ["smile", "wink", "nod"], "ann", status="suggested")
    assert set_tag_status(store, [(media, "smile")], "active", "bob").summary == "accepted 1 tag suggestion(s): 'smile'"
    assert set_tag_status(store, [(media, "wink")], "rejected", "bob").summary == "rejected 1 tag suggestion(s): 'wink'"
    assert set_tag_status(store, [(media, "smile")], "suggested", "bob").summary == "marked 1 tag(s) as suggestions: 'smile'"


# -- bias 4. no birth year after this one -----------------------------------------------------------------
def test_a_birth_year_after_this_year_is_refused():
    this_year = date.today().year
    assert clean_attributes({"birth_year": this_year}) == {"birth_year": this_year}
    for future in (this_year + 1, 2090, str(this_year + 1)):
        with pytest.raises(ValidationError, match=rf"birth_year {int(future)} is outside 1800\.\.{this_year} "
                                                  r"\(a birth year cannot be in the future\)"):
            clean_attributes({"birth_year": future})


def test_an_exports_display_name_with_a_slash_is_read_back(tmp_path):
    """classes.csv of an export whose class shows as "AC/DC": the import takes it back (a display name
    is no folder), while a name with '/' is still refused."""
    from labeling.importers import read_class_map

    path = tmp_path / "classes.csv"
    path.write_text("folder,name,display_name\nACDC,ACDC,AC/DC\n", encoding="utf-8")
    assert read_class_map(path)["ACDC"].display_name == "AC/DC"
    path.write_text("folder,name,display_name\nACDC,AC/DC,AC/DC\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="looks like a path"):
        read_class_map(path)
