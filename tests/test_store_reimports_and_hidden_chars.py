"""Store defects an audit found, each reproduced on SQLite and PostgreSQL (and failing without its fix):
re-imports that undid editors' splits or removals, hidden characters in editor names and free text,
numpy ids in class operations, a TRUNCATE that emptied the audit log, and class attributes lost on
an export's round trip."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import downgrade_then_upgrade, make_faces
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from labeling.audit import history, undo_event, undo_last
from labeling.classes import (add_class, merge_classes, rename_class, set_class_attributes, set_class_status,
                              split_class)
from labeling.db import HEAD, alembic_config, current_revision, open_store
from labeling.errors import ValidationError
from labeling.face_labels import Prediction, approve_faces, record_predictions, relabel_faces
from labeling.importers import import_classes, import_raw_dataset, import_tags, read_class_map, read_labels_csv
from labeling.schema import AuditEntity, AuditEvent, CelebrityClass, Face, FaceLabel, MediaTag, Tag
from labeling.tags import add_tags, remove_tags
from labeling.validation import check_editor, clean_attributes
from models.settings import Settings


@pytest.fixture
def store(store_url):
    return open_store(store_url)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One data folder (embedding cache, crops) for the real-model tests here: each photo is inferred once."""
    return tmp_path_factory.mktemp("giflens-fixes-data")


def label(store, face_id: int) -> tuple:
    with store() as s:
        row = s.scalars(select(FaceLabel).where(FaceLabel.face_id == face_id)).one()
        return row.status, row.class_id, row.source, row.editor


def n_events(store) -> int:
    with store() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent))


def class_named(store, name: str) -> CelebrityClass:
    with store() as s:
        return s.scalars(select(CelebrityClass).where(CelebrityClass.name == name)).one()


# -- 1. an editor's merge or split is an editor's decision ------------------------------------------
def test_labels_an_editor_moves_become_editor_decisions_and_undo_restores_their_source(store):
    faces = make_faces(store, 1, 4)
    gore, _ = add_class(store, "Al Gore", "import:labels.csv")
    other, _ = add_class(store, "Other", "ann")
    approve_faces(store, faces[:3], "import:giphy", class_id=gore, source="import")
    record_predictions(store, [Prediction(faces[3], gore, 0.8, [(gore, 0.8)])], "centroid-v1")
    new_id, split = split_class(store, gore, faces[:1], "alice", new_name="Al Gore Lookalike")
    assert label(store, faces[0]) == ("approved", new_id, "editor", "alice")
    merge_classes(store, gore, other, "bob")
    assert [label(store, f) for f in faces[1:3]] == [("approved", other, "editor", "bob")] * 2
    assert label(store, faces[3])[:3] == ("predicted", other, "model")  # the model's guess stays the model's,
    assert label(store, faces[3])[3] != "bob"  # not the mover's
    undo_last(store, "bob")
    undo_event(store, split.event_id, "alice")
    assert [label(store, f)[:3] for f in faces[:3]] == [("approved", gore, "import")] * 3
    assert label(store, faces[3])[:3] == ("predicted", gore, "model")


PEOPLE = ["Ariel_Sharon", "Hugo_Chavez"]


def make_raw_dataset(root: Path, lfw_dir: Path, per_person: int = 2, classes_csv: str | None = None) -> Path:
    """GIPHY's layout (labels.csv + raw_dataset/<Label>/*.jpg) from a few LFW photos, plus an
    export's classes.csv when given."""
    (root / "raw_dataset").mkdir(parents=True)
    (root / "labels.csv").write_text("Label,Index\n" + "".join(f"{p},{i}\n" for i, p in enumerate(PEOPLE)))
    for person in PEOPLE:
        (root / "raw_dataset" / person).mkdir()
        for photo in sorted((lfw_dir / person).glob("*.jpg"))[:per_person]:
            (root / "raw_dataset" / person / photo.name).write_bytes(photo.read_bytes())
    if classes_csv is not None:
        (root / "classes.csv").write_text(classes_csv, encoding="utf-8")
    return root


@pytest.mark.slow
def test_reimporting_a_raw_dataset_keeps_an_editors_split(store_url, tmp_path, lfw_dir, data_dir):
    """An editor splits imported faces off into a new class; importing the same raw dataset again
    leaves them there (reported as kept) and writes nothing. Once the split is undone, the faces are
    the import's again, where the dataset puts them."""
    store = open_store(store_url)
    settings = Settings(data_dir=data_dir, database_url=store_url)
    raw = make_raw_dataset(tmp_path / "giphy", lfw_dir)
    first = import_raw_dataset(store, raw, settings)
    assert (first.created, first.labels) == (2, 4), first.skipped
    sharon = class_named(store, "Ariel Sharon").id
    with store() as s:
        faces = list(s.scalars(select(FaceLabel.face_id).where(FaceLabel.class_id == sharon).order_by(FaceLabel.face_id)))
    lookalike, split = split_class(store, sharon, faces[:1], "alice", new_name="Ariel Lookalike")
    events = n_events(store)
    again = import_raw_dataset(store, raw, settings)
    assert (again.labels, again.kept, again.unchanged, again.event_id) == (0, 1, 3, None), again.line()
    assert "1 kept (editor's decision)" in again.line()
    assert label(store, faces[0]) == ("approved", lookalike, "editor", "alice")
    assert n_events(store) == events
    undo_event(store, split.event_id, "alice")
    assert label(store, faces[0])[:3] == ("approved", sharon, "import")
    after_undo = import_raw_dataset(store, raw, settings)
    assert (after_undo.labels, after_undo.kept, after_undo.unchanged, after_undo.event_id) == (0, 0, 4, None)


# -- 2. a tag an editor removed stays removed, whatever was undone since ------------------------------
def test_a_removed_tag_stays_removed_on_reimport_after_an_undone_re_add(store, tmp_path):
    """ann removes an uploader tag, adds it back by mistake and undoes that: the tag is gone as she
    wants, and importing the uploader file again must not bring it back (the latest write still in
    force is her removal, not the undone add nor the undo that deleted the row)."""
    with store() as s:
        media = s.scalar(select(Face.media_id).where(Face.id == make_faces(store, 1, 1)[0]))
    path = tmp_path / "tags.csv"
    path.write_text("file,uploader_tags\n0.gif,cat;funny\n", encoding="utf-8")
    assert import_tags(store, path).tags == 2
    remove_tags(store, [media], ["cat"], "ann")
    add_tags(store, [media], ["cat"], "ann")
    undo_last(store, "ann")
    again = import_tags(store, path)
    assert (again.tags, again.kept, again.event_id) == (0, 1, None), again.line()
    with store() as s:
        assert list(s.scalars(select(Tag.name).join(MediaTag, MediaTag.tag_id == Tag.id))) == ["funny"]
    # ann undoes the removal itself: the uploader's tag is back, and a re-import has nothing to add
    undo_last(store, "ann")
    assert import_tags(store, path).event_id is None
    with store() as s:
        assert sorted(s.scalars(select(Tag.name).join(MediaTag, MediaTag.tag_id == Tag.id))) == ["cat", "funny"]


# -- 3. hidden characters in editor names and free text -----------------------------------------------
HIDDEN = ["bob\x00", "bob\n    99  2026-01-01 00:00:00  mallory", "bob\rmallory", "bob\x1b[2J", "bob\u202e",
          "bob\u2028mallory", "bob\u200b", "bob\ud800"]


@pytest.mark.parametrize("editor", HIDDEN, ids=["nul", "newline", "cr", "escape", "bidi", "line-sep", "zero-width",
                                                "surrogate"])
def test_editor_names_with_hidden_characters_are_refused_and_change_nothing(store, editor):
    """A newline in an editor name forged lines in `giflens history`; NUL was stored by SQLite and a raw
    driver error on PostgreSQL. Both stores now refuse the same way, before anything is written."""
    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    events = n_events(store)
    with pytest.raises(ValidationError, match="editor name .* contains"):
        relabel_faces(store, faces, a, editor)
    with pytest.raises(ValidationError, match="editor name"):
        add_class(store, "B", editor)
    assert n_events(store) == events
    with store() as s:
        assert s.scalar(select(func.count()).select_from(FaceLabel)) == 0
        assert list(s.scalars(select(AuditEvent.editor))) == ["ann"]


def test_plain_editor_names_are_still_accepted():
    assert check_editor("  Zoë O'Brien (QA) 🎬 ") == "Zoë O'Brien (QA) 🎬"
    assert check_editor("import:labels.csv") == "import:labels.csv"


@pytest.mark.parametrize("external_id", ["m.1\x00", "m.2\u202e/../x", "m.3\nx", "m.4\u2028x"])
def test_external_ids_with_hidden_characters_are_refused(store, external_id):
    with pytest.raises(ValidationError, match="external id .* contains"):
        add_class(store, "B", "ann", external_id=external_id)
    assert n_events(store) == 0


def test_external_ids_are_trimmed_and_blank_is_none(store):
    from labeling.validation import clean_external_id

    assert clean_external_id("  m.0c6qh ") == "m.0c6qh" and clean_external_id("  ") is None
    with pytest.raises(ValidationError, match="longer than 64"):
        clean_external_id("m." + "x" * 63)
    with pytest.raises(ValidationError, match="must be text"):
        clean_external_id(12)
    class_id, _ = add_class(store, "Brad Pitt", "ann", external_id=" m.0c6qh ")
    assert class_named(store, "Brad Pitt").external_id == "m.0c6qh"


@pytest.mark.parametrize("attribute, value", [("country", "US\x00"), ("gender", "fe\u202emale"),
                                              ("ethnicity", "a\x1bb")])
def test_attribute_values_with_hidden_characters_are_refused(store, attribute, value):
    a, _ = add_class(store, "A", "ann")
    with pytest.raises(ValidationError, match=f"{attribute} .* contains"):
        set_class_attributes(store, a, "ann", **{attribute: value})
    with pytest.raises(ValidationError, match=attribute):
        add_class(store, "B", "ann", attributes={attribute: value})
    assert n_events(store) == 1


@pytest.mark.parametrize("value", [math.nan, np.float64("nan"), math.inf, 3, 1.5, True])
def test_text_attributes_refuse_numbers_and_nan_instead_of_storing_nan(store, value):
    """pandas hands a missing cell over as float NaN: stored as text it read "nan" as a gender."""
    for attribute in ("gender", "ethnicity", "country"):
        with pytest.raises(ValidationError, match=f"{attribute} must be text"):
            clean_attributes({attribute: value})
    a, _ = add_class(store, "A", "ann", attributes={"gender": "female"})
    with pytest.raises(ValidationError, match="gender must be text"):
        set_class_attributes(store, a, "ann", gender=value, country="Chile")
    with pytest.raises(ValidationError, match="birth_year"):
        set_class_attributes(store, a, "ann", birth_year=math.nan)
    row = class_named(store, "A")
    assert (row.gender, row.country, row.version) == ("female", None, 1)
    assert clean_attributes({"gender": None, "country": "  ", "ethnicity": " Hispanic "}) == \
        {"gender": None, "country": None, "ethnicity": "hispanic"}


def test_an_imported_external_id_with_hidden_characters_names_its_line(store, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("Labels,Index\nBrad_Pitt_[m.0c6qh],0\nEvil_[m.1\u202e],1\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"line 3: external id .* bidirectional"):
        import_classes(store, path)
    assert n_events(store) == 0


def test_an_odd_file_name_still_makes_a_one_line_import_editor(store, tmp_path):
    """The default editor of an import is the file's name: one with a newline or tab in it is shown
    with "?" instead (an editor name is one line), not refused."""
    path = tmp_path / "giphy\nlist\t1.csv"
    path.write_text("Labels,Index\nBrad_Pitt,0\n", encoding="utf-8")
    summary = import_classes(store, path)
    with store() as s:
        assert s.get(AuditEvent, summary.event_id).editor == "import:giphy?list?1.csv"


# -- 4. numpy integer ids ----------------------------------------------------------------------------
def test_class_operations_take_numpy_integer_ids(store):
    """The app's tables hand ids over as numpy.int64: SQLite bound them as bytes ("no celebrity class
    with id 2") and PostgreSQL could not write them into the audit log's JSON. Every class operation
    and face decision now takes them like plain ints."""
    faces = make_faces(store, 1, 4)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    c, _ = add_class(store, "C", "ann")
    i64 = np.int64
    relabel_faces(store, [i64(f) for f in faces[:2]], i64(a), "ann")
    relabel_faces(store, [i64(faces[2])], i64(b), "ann")
    approve_faces(store, [faces[3]], "ann", class_id=np.int32(b))
    record_predictions(store, [Prediction(i64(faces[3]), i64(c), 0.7, [(i64(c), 0.7), (np.int32(a), 0.2)])], "v1")
    rename_class(store, i64(c), "C2", "ann", expected_version=1)
    set_class_status(store, i64(c), "proposed", "ann")
    set_class_attributes(store, i64(c), "ann", gender="female")
    target, _ = split_class(store, i64(a), [i64(faces[0])], "ann", target_id=i64(b))
    assert target == b and type(target) is int
    merge = merge_classes(store, i64(a), i64(b), "ann", expected_versions={i64(a): 1, i64(b): 1})
    assert [label(store, f)[:2] for f in faces] == [("relabeled", b), ("relabeled", b), ("relabeled", b),
                                                    ("approved", b)]
    row = class_named(store, "C2")
    assert (row.status, row.gender) == ("proposed", "female")
    undo_event(store, i64(merge.event_id), "ann")
    assert class_named(store, "A").status == "active"
    assert [h.operation for h in history(store, f"class:{a}")][:2] == ["undo", "merge_classes"]
    with pytest.raises(ValidationError, match="class id must be a whole number"):
        rename_class(store, 1.5, "X", "ann")


# -- 5. TRUNCATE of the audit log ---------------------------------------------------------------------
@pytest.mark.postgres
def test_postgres_refuses_to_truncate_the_audit_log_and_the_migration_downgrades(pg_url):
    """0007's row triggers do not fire on TRUNCATE; 0009's statement triggers refuse it, on each table
    and through CASCADE. The migration downgrades and upgrades again."""
    from alembic import command

    store = open_store(pg_url)
    add_class(store, "A", "ann")
    engine = store.kw["bind"]
    for statement in ("TRUNCATE audit_event, audit_entity", "TRUNCATE audit_event CASCADE", "TRUNCATE audit_entity",
                      "TRUNCATE audit_event, audit_entity, celebrity_class, face_label RESTART IDENTITY CASCADE"):
        with pytest.raises(DBAPIError, match="append-only: it cannot be truncated"):
            with engine.begin() as conn:
                conn.execute(text(statement))
    with store() as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == 1
        assert s.scalar(select(func.count()).select_from(AuditEntity)) == 1
    config = alembic_config(engine)
    triggers = text("SELECT tgname FROM pg_trigger WHERE tgname LIKE '%no_truncate' ORDER BY tgname")
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0008")
        assert conn.execute(triggers).scalars().all() == []
        command.upgrade(config, "head")
        assert conn.execute(triggers).scalars().all() == ["audit_entity_no_truncate", "audit_event_no_truncate"]
    assert current_revision(engine) == HEAD
    with pytest.raises(DBAPIError, match="cannot be truncated"):
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_event, audit_entity"))


def test_the_truncate_migration_is_a_no_op_on_sqlite(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    add_class(store, "A", "ann")
    downgrade_then_upgrade(store, "0008")
    engine = store.kw["bind"]
    assert current_revision(engine) == HEAD
    with pytest.raises(DBAPIError, match="append-only"):  # 0007's triggers still refuse the delete
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_event"))


# -- 6. class attributes in an export's classes.csv -----------------------------------------------
NEW_CLASSES_CSV = ("folder,index,class_id,name,external_id,display_name,status,gender,ethnicity,birth_year,country\n"
                   "Ariel_Sharon,0,7,Ariel Sharon,m.0test0,Arik,active,Male,,1928,Israel\n"
                   "Hugo_Chavez,1,9,Hugo Chavez,,,active,male,hispanic,1954.0,Venezuela\n")


def test_an_exports_classes_csv_gives_display_names_and_attributes(tmp_path):
    (tmp_path / "labels.csv").write_text("Label,Index\nAriel_Sharon,0\nHugo_Chavez,1\n", encoding="utf-8")
    (tmp_path / "classes.csv").write_text(NEW_CLASSES_CSV, encoding="utf-8")
    mapped = read_class_map(tmp_path / "classes.csv")
    assert mapped["Ariel_Sharon"].display_name == "Arik" and mapped["Hugo_Chavez"].display_name is None
    assert mapped["Ariel_Sharon"].attributes == {"gender": "male", "birth_year": 1928, "country": "Israel"}
    assert mapped["Hugo_Chavez"].attributes == {"gender": "male", "ethnicity": "hispanic", "birth_year": 1954,
                                                "country": "Venezuela"}
    rows = read_labels_csv(tmp_path / "labels.csv", mapped)
    assert [(r.name, r.external_id) for r in rows] == [("Ariel Sharon", "m.0test0"), ("Hugo Chavez", None)]
    # a classes.csv written before the columns existed still reads: no display names, no attributes
    (tmp_path / "classes.csv").write_text("folder,index,class_id,name,external_id\nAriel_Sharon,0,7,Ariel Sharon,\n",
                                          encoding="utf-8")
    old = read_class_map(tmp_path / "classes.csv")["Ariel_Sharon"]
    assert (old.name, old.external_id, old.display_name, old.attributes, old.status) == (
        "Ariel Sharon", None, None, {}, None)
    assert mapped["Ariel_Sharon"].status == "active"


def test_a_raw_dataset_import_creates_classes_with_their_status_and_keeps_existing_ones(store_url, tmp_path):
    """classes.csv carries each class's status: a class the import creates gets it (a proposed class
    stays a proposal in the new store), an existing class keeps its own (the editors' decision), an
    empty cell means active, and "retired" (a hand-edited file: exports leave retired classes out) holds."""
    store = open_store(store_url)
    hugo, _ = add_class(store, "Hugo Chavez", "ann", status="proposed")
    raw = tmp_path / "export"
    people = {"Ariel_Sharon": "Proposed", "Hugo_Chavez": "active", "Colin_Powell": "retired", "Serena_Williams": ""}
    for folder in people:
        (raw / "raw_dataset" / folder).mkdir(parents=True)
    (raw / "labels.csv").write_text("Label,Index\n" + "".join(f"{p},{i}\n" for i, p in enumerate(people)))
    (raw / "classes.csv").write_text("folder,index,class_id,name,status\n" + "".join(
        f"{p},{i},{i + 1},{p.replace('_', ' ')},{status}\n" for i, (p, status) in enumerate(people.items())))
    summary = import_raw_dataset(store, raw, Settings(data_dir=tmp_path / "data", database_url=store_url))
    assert (summary.created, summary.updated) == (3, 0), summary.skipped
    assert {name: class_named(store, name).status for name in ("Ariel Sharon", "Hugo Chavez", "Colin Powell",
                                                                "Serena Williams")} == {
        "Ariel Sharon": "proposed", "Hugo Chavez": "proposed", "Colin Powell": "retired", "Serena Williams": "active"}
    assert class_named(store, "Hugo Chavez").id == hugo


@pytest.mark.parametrize("row, message", [
    ("Ariel_Sharon,0,7,Ariel Sharon,,,active,,,1700,", "line 2: birth_year 1700 is outside"),
    ("Ariel_Sharon,0,7,Ariel Sharon,,,active,,,,Isr\u202eael", "line 2: country .* bidirectional"),
    ("Ariel_Sharon,0,7,Ariel Sharon,,a\u202eb,active,,,,", "line 2: display name .* bidirectional"),  # "a/b" is fine
    ("Ariel_Sharon,0,7,Ariel Sharon,,,gone,,,,", "line 2: class status must be one of active, proposed, retired, "
                                                "got 'gone'"),
])
def test_bad_values_in_an_exports_classes_csv_name_their_line(tmp_path, row, message):
    path = tmp_path / "classes.csv"
    path.write_text(NEW_CLASSES_CSV.splitlines()[0] + "\n" + row + "\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=message):
        read_class_map(path)


@pytest.mark.slow
def test_a_raw_dataset_import_applies_the_class_attributes_of_classes_csv(store_url, tmp_path, lfw_dir, data_dir):
    """Classes the import creates get the display name and attributes of classes.csv; an existing class
    gets only its empty ones filled, never an editor's value changed (the difference is noted); a
    re-import changes nothing."""
    store = open_store(store_url)
    settings = Settings(data_dir=data_dir, database_url=store_url)
    chavez, _ = add_class(store, "Hugo Chavez", "ann", attributes={"gender": "female", "birth_year": 1954})
    raw = make_raw_dataset(tmp_path / "export", lfw_dir, per_person=1, classes_csv=NEW_CLASSES_CSV)
    summary = import_raw_dataset(store, raw, settings)
    assert (summary.created, summary.updated, summary.labels) == (1, 1, 2), summary.skipped
    assert "1 classes created, 1 classes updated" in summary.line()
    assert summary.skipped == [f"{raw / 'classes.csv'}: line 3: class 'Hugo Chavez' keeps its gender 'female' "
                               "(the file says 'male')"]
    sharon = class_named(store, "Ariel Sharon")
    assert (sharon.display_name, sharon.external_id, sharon.gender, sharon.ethnicity, sharon.birth_year,
            sharon.country) == ("Arik", "m.0test0", "male", None, 1928, "Israel")
    hugo = class_named(store, "Hugo Chavez")
    assert (hugo.id, hugo.display_name, hugo.gender, hugo.ethnicity, hugo.birth_year, hugo.country) == \
        (chavez, None, "female", "hispanic", 1954, "Venezuela")
    events = n_events(store)
    again = import_raw_dataset(store, raw, settings)
    assert (again.created, again.updated, again.labels, again.event_id) == (0, 0, 0, None), again.line()
    assert n_events(store) == events
    # an export without the columns still imports into a fresh store (names and ids only)
    (raw / "classes.csv").write_text("folder,index,class_id,name,external_id\nAriel_Sharon,0,7,Ariel Sharon,m.0test0\n"
                                     "Hugo_Chavez,1,9,Hugo Chavez,\n", encoding="utf-8")
    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    fresh = open_store(fresh_url)
    old = import_raw_dataset(fresh, raw, Settings(data_dir=data_dir, database_url=fresh_url))
    assert (old.created, old.labels, old.skipped) == (2, 2, [])
    assert class_named(fresh, "Ariel Sharon").gender is None
