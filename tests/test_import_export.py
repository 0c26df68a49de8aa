"""Imports of GIPHY's layouts and reference CSVs, and the export for retraining, on both stores."""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import random
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import photo_faces, temporary_pg_database
from PIL import Image
from sqlalchemy import func, select

from labeling.audit import undo_event
from labeling.classes import add_class, rename_class, retire_class, set_class_attributes, set_class_status
from labeling.db import current_revision, open_store, session_scope
from labeling.errors import ValidationError
from labeling.export import (ILLEGAL_CHARS, RESERVED_NAMES, assign_sides, class_indices, export_dataset, folder_key,
                             near_duplicate_groups, read_class_indices, safe_folder_name, unique_folder_names,
                             verify_export)
from labeling.face_labels import approve_faces, relabel_faces
from labeling.importers import (import_attributes, import_classes, import_raw_dataset, import_tags, parse_giphy_label,
                                read_labels_csv)
from labeling.ingest import ingest
from labeling.schema import (AuditEvent, CelebrityClass, Export, Face, FaceEmbedding, FaceLabel, Media, MediaEmbedding,
                             MediaTag, Tag, bytes_to_vector)
from labeling.tags import add_tags, remove_tags, set_tag_confidences, set_tag_status
from models.settings import Settings

PEOPLE = ["Ariel_Sharon", "Hugo_Chavez", "Serena_Williams"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One data folder (embedding cache and face crops) shared by these tests: each photo is inferred once."""
    return tmp_path_factory.mktemp("giflens-data")


@pytest.fixture
def second_store_url(request, store_url, tmp_path, pg_admin_url):
    """A second, empty store of the same kind as store_url (for round trips)."""
    if store_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'second.db'}"
        return
    with temporary_pg_database(pg_admin_url) as url:
        yield url


def count(store, model, *where) -> int:
    with store() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def events(store) -> list[AuditEvent]:
    with store() as s:
        return list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))


# -- parsing -----------------------------------------------------------------------------------
def test_parse_giphy_names():
    assert parse_giphy_label("Brad_Pitt_[m.0c6qh]") == ("Brad Pitt", "m.0c6qh")
    assert parse_giphy_label("50_Cent_[m.01vvyc_]") == ("50 Cent", "m.01vvyc_")
    assert parse_giphy_label("Mike_Myers_[m.0p__8]") == ("Mike Myers", "m.0p__8")
    assert parse_giphy_label("Dua_Lipa_[g.11bxfyskcg]") == ("Dua Lipa", "g.11bxfyskcg")  # Knowledge Graph ids too
    assert parse_giphy_label("Tony_Blair") == ("Tony Blair", None)


def test_every_giphy_label_parses_to_a_name_and_an_id(shared_data):
    rows = read_labels_csv(shared_data / "giphy-celebrities.csv")
    assert len(rows) == 2306 and [r.index for r in rows] == list(range(2306))
    assert all(r.external_id and "[" not in r.name and "_" not in r.name for r in rows)
    # and the export writes GIPHY's own labels back as folder names
    folders = unique_folder_names([(i, r.name, r.external_id) for i, r in enumerate(rows)])
    assert [folders[i] for i in range(len(rows))] == [r.label for r in rows]


# -- class list ----------------------------------------------------------------------------------
def test_giphy_class_list_imports_once(store_url, shared_data):
    store = open_store(store_url)
    first = import_classes(store, shared_data / "giphy-celebrities.csv")
    assert (first.created, first.updated, first.unchanged) == (2306, 0, 0) and first.event_id is not None
    assert first.line().startswith("import classes from giphy-celebrities.csv: 2306 classes created")
    with store() as s:
        brad = s.scalars(select(CelebrityClass).where(CelebrityClass.name == "Brad Pitt")).one()
        dua = s.scalars(select(CelebrityClass).where(CelebrityClass.name == "Dua Lipa")).one()
        assert (brad.external_id, brad.status, brad.updated_by) == ("m.0c6qh", "active", "import:giphy-celebrities.csv")
        assert dua.external_id == "g.11bxfyskcg"
    [event] = events(store)
    assert (event.operation, event.editor, event.n_entities) == ("import_classes", "import:giphy-celebrities.csv", 2306)

    again = import_classes(store, shared_data / "giphy-celebrities.csv", editor="bob")
    assert (again.created, again.updated, again.unchanged, again.event_id) == (0, 0, 2306, None)
    assert again.line().endswith("(nothing changed)")
    assert count(store, AuditEvent) == 1 and count(store, CelebrityClass) == 2306


def test_class_list_fills_a_missing_external_id_and_keeps_a_different_one(store_url, tmp_path):
    store = open_store(store_url)
    brad, _ = add_class(store, "brad pitt", "ann")
    angie, _ = add_class(store, "Angelina Jolie", "ann", external_id="m.0ann")
    path = tmp_path / "list.csv"
    path.write_text("Labels,Index\nBrad_Pitt_[m.0c6qh],0\nAngelina_Jolie_[m.0other],1\nZoë_🎬_[m.1],2\n", encoding="utf-8")
    summary = import_classes(store, path)
    assert (summary.created, summary.updated, summary.unchanged) == (1, 1, 0)  # the Angelina row is skipped
    assert any("keeps its external id m.0ann" in note and "line 3" in note for note in summary.skipped)
    with store() as s:
        assert (s.get(CelebrityClass, brad).name, s.get(CelebrityClass, brad).external_id) == ("brad pitt", "m.0c6qh")
        assert s.get(CelebrityClass, angie).external_id == "m.0ann"
        assert s.scalars(select(CelebrityClass.name).where(CelebrityClass.external_id == "m.1")).one() == "Zoë 🎬"
    assert import_classes(store, path).event_id is None


def test_reimport_finds_renamed_classes_by_external_id_or_former_name(store_url, tmp_path):
    store = open_store(store_url)
    path = tmp_path / "list.csv"
    path.write_text("Labels,Index\nBrad_Pitt_[m.0c6qh],0\nAdrien_Brody,1\n", encoding="utf-8")
    import_classes(store, path)
    with store() as s:
        ids = dict(s.execute(select(CelebrityClass.name, CelebrityClass.id)).all())
    rename_class(store, ids["Brad Pitt"], "William Bradley Pitt", "ann")
    rename_class(store, ids["Adrien Brody"], "Adrien Brody (actor)", "ann")
    again = import_classes(store, path)
    assert (again.created, again.event_id) == (0, None), again.line()
    with store() as s:
        assert sorted(s.scalars(select(CelebrityClass.name))) == ["Adrien Brody (actor)", "William Bradley Pitt"]



def test_classes_sharing_an_external_id_are_reported_not_silently_chosen(store_url, tmp_path):
    """An older store may hold two classes with one external id (new ones cannot get a taken id): a
    line goes to the one whose name it gives, and the import says so; a line whose id belongs to one
    class and whose name to another goes by the id (it survives renames), and says so too."""
    store = open_store(store_url)
    gore, _ = add_class(store, "Al Gore", "ann")
    impostor, _ = add_class(store, "Impostor", "ann", external_id="m.0d05fv")
    with session_scope(store) as s:  # as an older store could hold it
        s.get(CelebrityClass, gore).external_id = "m.0d05fv"
    path = tmp_path / "list.csv"
    path.write_text("Labels,Index\nAl_Gore_[m.0d05fv],0\n", encoding="utf-8")
    shared = import_classes(store, path)
    assert shared.created == 0 and any("classes 'Al Gore', 'Impostor' share external id m.0d05fv; 'Al Gore' went "
                                       "to 'Al Gore'" in n for n in shared.skipped), shared.skipped
    with session_scope(store) as s:
        s.get(CelebrityClass, gore).external_id = None
    split = import_classes(store, path)
    assert split.created == 0 and any("went to 'Impostor', which holds external id m.0d05fv, not to the class "
                                      "named 'Al Gore'" in n for n in split.skipped), split.skipped


def test_two_spellings_with_one_external_id_in_one_file_make_one_class(store_url, tmp_path):
    """One person, two spellings, one Freebase id in the same file: one class (the first spelling),
    not a refused import (an external id belongs to one class)."""
    store = open_store(store_url)
    path = tmp_path / "list.csv"
    path.write_text("Labels,Index\nBeyonce_[m.016fmk],0\nBeyonce_Knowles_[m.016fmk],1\n", encoding="utf-8")
    summary = import_classes(store, path)
    assert summary.created == 1, summary.line()
    with store() as s:
        assert s.execute(select(CelebrityClass.name, CelebrityClass.external_id)).all() == [("Beyonce", "m.016fmk")]


def test_tags_an_editor_removed_stay_removed_on_reimport(store_url, tmp_path):
    """The uploader file is imported again after an editor removed one of its tags: the removal
    stands (imports never override an editor). Undoing the import itself is not a removal: importing
    again brings the tags back. A blank editor name is refused before anything is read."""
    store = open_store(store_url)
    with session_scope(store) as s:
        media = Media(sha256="d" * 64, path="/incoming/wave.gif", kind="gif", status="ok")
        s.add(media)
        s.flush()
        media_id = media.id
    path = tmp_path / "tags.csv"
    path.write_text("file,uploader_tags\nwave.gif,nod;wink\n", encoding="utf-8")
    first = import_tags(store, path)
    assert first.tags == 2
    undo_event(store, first.event_id, "ann")
    assert count(store, MediaTag) == 0
    assert import_tags(store, path).tags == 2
    remove_tags(store, [media_id], ["nod"], "ann")
    again = import_tags(store, path)
    assert (again.tags, again.kept, again.event_id) == (0, 1, None), again.line()
    with store() as s:
        assert list(s.scalars(select(Tag.name).join(MediaTag, MediaTag.tag_id == Tag.id))) == ["wink"]
    with pytest.raises(ValidationError, match="editor name is required"):
        import_tags(store, path, editor="  ")


# -- attributes --------------------------------------------------------------------------------
def test_attributes_import_keeps_unknown_unknown(store_url, shared_data, tmp_path):
    store = open_store(store_url)
    existing, _ = add_class(store, "Adrien Brody", "ann", attributes={"country": "United States"})
    summary = import_attributes(store, shared_data / "lfw-people.csv")
    assert (summary.created, summary.updated, summary.unchanged) == (422, 1, 0)
    rows = list(csv.DictReader((shared_data / "lfw-people.csv").open(encoding="utf-8")))
    with store() as s:
        by_name = {c.name: c for c in s.scalars(select(CelebrityClass))}
    assert len(by_name) == 423
    for row in rows:
        cls = by_name[row["name"].replace("_", " ")]
        assert cls.gender == (row["gender"].lower() or None), row
        assert cls.ethnicity == (row["ethnicity"].lower() or None), row
    assert by_name["Adrien Brody"].country == "United States"  # not in the file: untouched
    unknown = [r["name"] for r in rows if not r["gender"]]
    assert len(unknown) == 253 and by_name[unknown[0].replace("_", " ")].gender is None

    again = import_attributes(store, shared_data / "lfw-people.csv")
    assert (again.created, again.updated, again.unchanged, again.event_id) == (0, 0, 423, None)

    # an empty cell never clears what an editor set; a value changes it
    name = unknown[0]
    cid = by_name[name.replace("_", " ")].id
    set_class_attributes(store, cid, "ann", gender="female")
    partial = tmp_path / "partial.csv"
    partial.write_text(f"name,gender,birth_year\n{name},,\nAdrien_Brody,,1973\n")
    summary = import_attributes(store, partial, editor="bob")
    assert (summary.updated, summary.unchanged) == (1, 1)
    with store() as s:
        assert s.get(CelebrityClass, cid).gender == "female"
        assert s.get(CelebrityClass, existing).birth_year == 1973


def test_attributes_for_unknown_people_can_be_reported_instead(store_url, tmp_path):
    store = open_store(store_url)
    add_class(store, "Known Person", "ann")
    path = tmp_path / "people.csv"
    path.write_text("name,gender\nKnown_Person,male\nNobody_Yet,female\n")
    summary = import_attributes(store, path, create_missing=False)
    assert (summary.created, summary.updated) == (0, 1)
    assert summary.skipped == [f"{path}: line 3: no class named 'Nobody Yet'"]
    assert count(store, CelebrityClass) == 1


# -- bad input ---------------------------------------------------------------------------------
BAD_CLASS_LISTS = [
    ("", "line 1: the file is empty; expected a header Label,Index or Labels,Index"),
    ("Name,Index\nA,0\n", "lacks column(s) Label; expected Label,Index or Labels,Index"),
    ("Brad_Pitt_[m.0c6qh],0\n", "line 1: the header 'Brad_Pitt_[m.0c6qh],0' lacks column(s) Label, Index"),
    ("Name,Number\nA,0\n", "lacks column"),
    ("Label,Labels,Index\nA,B,0\n", "appear more than once"),
    ("Label,Index\nA,0\nA,1\n", "line 3: label 'A' repeats line 2"),
    ("Label,Index\nA,0\nB,0\n", "line 3: index 0 repeats line 2"),
    ("Label,Index\nBrad_Pitt_[m.1],0\nbrad_pitt,1\n", "line 3: label 'brad_pitt' names the same class"),
    ("Labels,Index\nA,zero\n", "line 2: index 'zero' is not an integer"),
    ("Labels,Index\nA,-1\n", "negative"),
    ("Label,Index\nA,0,extra\n", "line 2: 3 fields"),
    ("Label,Index\nA,0\n\n../etc,1\n", "line 4: class name '../etc' looks like a path"),
    ("Label,Index\nevil\u202etxt,0\n", "bidirectional"),
    ("Label,Index\n,0\n", "empty label"),
    ("Label,Index\n\"unterminated,0\n", "not valid CSV"),
]


def test_an_exports_class_map_tells_underscores_from_spaces(tmp_path):
    """An export names "Brad_Pitt" and "Brad Pitt [m.0c6qh]" Brad_Pitt/ and Brad_Pitt_[m.0c6qh]/; parsed
    alone both folders mean "Brad Pitt", but classes.csv says which is which, so the export imports."""
    from labeling.importers import read_class_map

    (tmp_path / "labels.csv").write_text("Label,Index\nBrad_Pitt,0\nBrad_Pitt_[m.0c6qh],1\n", encoding="utf-8")
    (tmp_path / "classes.csv").write_text("folder,name,external_id\nBrad_Pitt,Brad_Pitt,\n"
                                          "Brad_Pitt_[m.0c6qh],Brad Pitt,m.0c6qh\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="names the same class"):
        read_labels_csv(tmp_path / "labels.csv")
    rows = read_labels_csv(tmp_path / "labels.csv", read_class_map(tmp_path / "classes.csv"))
    assert [(r.name, r.external_id) for r in rows] == [("Brad_Pitt", None), ("Brad Pitt", "m.0c6qh")]


@pytest.mark.parametrize("content, message", BAD_CLASS_LISTS)
def test_bad_class_lists_are_refused_whole(store_url, tmp_path, content, message):
    store = open_store(store_url)
    path = tmp_path / "labels.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValidationError) as info:
        import_classes(store, path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert count(store, CelebrityClass) == 0 and count(store, AuditEvent) == 0


@pytest.mark.parametrize("content, message", [
    ("gender,ethnicity\nmale,\n", "lacks column(s) name"),
    ("name,photos\nA,3\n", "no attribute column"),
    ("name,gender\nA_B,male\nA B,female\n", "line 3: 'A B' repeats line 2"),
    ("name,birth_year\nA,nineteen\n", "line 2: birth_year must be a year"),
    ("name,birth_year\nA,1970.5\n", "line 2: birth_year must be a year, got '1970.5'"),
    ("name,birth_year\nA,nan\n", "line 2: birth_year must be a year, got 'nan'"),
    ("name,birth_year\nA,inf\n", "line 2: birth_year must be a year, got 'inf'"),
    ("name,gender\na/b,male\n", "line 2: class name 'a/b' looks like a path"),
    (b"name,gender\n\xff\xfe,male\n", "not UTF-8"),
])
def test_bad_attribute_files_are_refused_whole(store_url, tmp_path, content, message):
    store = open_store(store_url)
    path = tmp_path / "people.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValidationError) as info:
        import_attributes(store, path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert count(store, CelebrityClass) == 0 and count(store, AuditEvent) == 0


def test_a_year_column_written_as_floats_imports(store_url, tmp_path):
    """pandas writes a birth_year column with gaps as 1963.0 (the gaps make it float): a whole year, not an error."""
    store = open_store(store_url)
    path = tmp_path / "people.csv"
    path.write_text("name,birth_year\nBrad_Pitt,1963.0\nAngelina_Jolie,\n")
    summary = import_attributes(store, path)
    assert summary.created == 2
    with store() as s:
        years = dict(s.execute(select(CelebrityClass.name, CelebrityClass.birth_year)).all())
    assert years == {"Brad Pitt": 1963, "Angelina Jolie": None}


@pytest.mark.parametrize("content, message", [
    ("file,tags\na.gif,x\n", "lacks column(s) uploader_tags"),
    ("file,uploader_tags\na.gif,x\na.gif,y\n", "line 3: file 'a.gif' repeats line 2"),
    ("file,uploader_tags\na.gif,ok;" + "x" * 101 + "\n", "line 2: tag is 101 characters long"),
    ("file,uploader_tags\n,x\n", "line 2: empty file name"),
])
def test_bad_tag_files_are_refused_whole(store_url, tmp_path, content, message):
    store = open_store(store_url)
    path = tmp_path / "tags.csv"
    path.write_text(content)
    with pytest.raises(ValidationError) as info:
        import_tags(store, path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert count(store, Tag) == 0 and count(store, AuditEvent) == 0


def test_missing_file_and_bad_layout_are_clear_errors(store_url, tmp_path):
    store = open_store(store_url)
    with pytest.raises(ValidationError, match="nope.csv: cannot read"):
        import_classes(store, tmp_path / "nope.csv")
    with pytest.raises(ValidationError, match="expected labels.csv and a raw_dataset/ folder"):
        import_raw_dataset(store, tmp_path, Settings(data_dir=tmp_path / "data", database_url=store_url))


def test_a_symlinked_class_folder_is_read_and_a_label_never_leaves_raw_dataset(tmp_path, lfw_dir):
    """Editors keep photos where they are and link class folders in; a label still names one folder
    directly inside raw_dataset/, whatever the link points at."""
    from labeling.importers import scan_raw_dataset

    raw = tmp_path / "giphy"
    (raw / "raw_dataset").mkdir(parents=True)
    (raw / "raw_dataset" / "Ariel_Sharon").symlink_to(lfw_dir / "Ariel_Sharon", target_is_directory=True)
    (raw / "labels.csv").write_text("Label,Index\nAriel_Sharon,0\n")
    _, names, images, notes = scan_raw_dataset(raw)
    assert names == {"Ariel_Sharon": ("Ariel Sharon", None)} and not notes
    assert [p.name for p in images["Ariel_Sharon"]] == sorted(p.name for p in (lfw_dir / "Ariel_Sharon").iterdir())
    for label in ("..", "."):
        (raw / "labels.csv").write_text(f"Label,Index\n{label},0\n")
        with pytest.raises(ValidationError):
            scan_raw_dataset(raw)


# -- folder names, groups, sides (pure) ----------------------------------------------------------------
HOSTILE = ["CON", "con", "Con.txt", "NUL ", "COM1", "LPT¹", "AUX.tar.gz", "...", "..", ".hidden", "trailing. ",
           "Zoë 🎬", "Zoe\u0308 🎬", "a:b", "a?b", "A?B", "x" * 300, "🎬" * 100, 'quote "me"', "tab\there",
           "back\\slash", "-dash", "class", "ＣＯＮ", "   ", "Brad Pitt"]


def test_safe_folder_names_for_hostile_names(tmp_path):
    assert safe_folder_name("CON") == "_CON"
    assert safe_folder_name("nul.txt") == "_nul.txt"
    assert safe_folder_name("../../etc") == "etc"
    assert safe_folder_name("a:b*c?") == "a_b_c"
    assert safe_folder_name("trailing. ") == "trailing"
    assert safe_folder_name("...") == "class"
    assert safe_folder_name("Zoë 🎬") == "Zoë_🎬"
    assert safe_folder_name("Brad Pitt", "m.0c6qh") == "Brad_Pitt_[m.0c6qh]"
    assert safe_folder_name("x", "m/../..\\1") == "x_[m_.._.._1]"
    assert safe_folder_name("50 Cent", "m.01vvyc_") == "50_Cent_[m.01vvyc_]"
    assert parse_giphy_label(safe_folder_name("Mike Myers", "m.0p__8")) == ("Mike Myers", "m.0p__8")
    folders = unique_folder_names([(i + 1, name, None) for i, name in enumerate(HOSTILE)])
    assert len({folder_key(f) for f in folders.values()}) == len(HOSTILE)
    for folder in folders.values():
        assert folder not in (".", "..") and not folder.startswith(".")
        assert not set(folder) & ILLEGAL_CHARS and folder == folder.strip(" .")
        assert not any(unicodedata.category(c)[0] == "C" for c in folder)
        assert unicodedata.normalize("NFKC", folder.split(".")[0]).upper() not in RESERVED_NAMES
        assert len(folder.encode("utf-8")) <= 255 and folder == unicodedata.normalize("NFC", folder)
        made = tmp_path / folder
        made.mkdir()
        assert made.resolve().parent == tmp_path.resolve()


def test_near_duplicate_groups_match_brute_force():
    rng = random.Random(7)

    def natural() -> int:  # a median-threshold pHash sets 32 of 64 bits
        return sum(1 << b for b in rng.sample(range(64), 32))

    bases = [natural() for _ in range(150)]
    media = {}
    for m in range(300):
        h = bases[rng.randrange(150)]
        for _ in range(rng.randrange(0, 10)):
            h ^= 1 << rng.randrange(64)
        media[m] = [f"{h:016x}", f"{natural():016x}"]
    media[300] = media[301] = ["0000000000000001", "0000000000000000"]  # flat frames join nothing
    media[302] = []
    groups = near_duplicate_groups(media, radius=6)

    parent = {m: m for m in media}

    def find(m):
        while parent[m] != m:
            m = parent[m]
        return m

    for a, b in itertools.combinations(media, 2):
        if any((int(x, 16) ^ int(y, 16)).bit_count() <= 6 for x in media[a] for y in media[b]
               if int(x, 16).bit_count() >= 16 and int(y, 16).bit_count() >= 16):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    assert groups == {m: find(m) for m in media}
    assert 20 < len(set(groups.values())) < 250  # the data has both joins and singletons
    assert groups[300] == 300 and groups[301] == 301 and groups[302] == 302


def test_sides_are_whole_groups_stratified_and_seeded():
    rng = random.Random(3)
    group_classes = {g: Counter({rng.randrange(5): rng.randrange(1, 4)}) for g in range(200)}
    group_classes[999] = Counter({0: 2, 1: 1})
    sides = assign_sides(group_classes, 0.2, seed=0)
    assert set(sides) == set(group_classes) and set(sides.values()) == {"train", "val"}
    totals, val = Counter(), Counter()
    for g, counts in group_classes.items():
        totals.update(counts)
        if sides[g] == "val":
            val.update(counts)
    for c, n in totals.items():
        assert val[c] <= round(0.2 * n) + 0.5 and val[c] >= 0.2 * n - 3, (c, val[c], n)
    assert assign_sides(group_classes, 0.2, seed=0) == sides
    assert assign_sides(group_classes, 0.2, seed=1) != sides
    assert set(assign_sides(group_classes, 0.0, seed=0).values()) == {"train"}
    with pytest.raises(ValidationError):
        assign_sides(group_classes, 1.0, seed=0)


# -- export without models -----------------------------------------------------------------------
def fake_labeled_faces(store, data_dir: Path, lfw_dir: Path, n: int = 3) -> list[int]:
    """Media, faces and crops (real LFW photos, cropped) as ingest would store them, labeled by an editor."""
    face_ids = photo_faces(store, data_dir, lfw_dir / PEOPLE[0], n)
    cls, _ = add_class(store, "A", "ann")
    relabel_faces(store, face_ids, cls, "ann")
    return face_ids


def test_interrupted_export_leaves_nothing_and_keeps_the_previous_one(store_url, tmp_path, lfw_dir):
    store = open_store(store_url)
    data = tmp_path / "data"
    fake_labeled_faces(store, data, lfw_dir)
    exports = tmp_path / "exports"

    def crash(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_dataset(store, data, exports / "out", "ann", on_progress=crash)
    assert list(exports.iterdir()) == [] and count(store, Export) == 0

    first = export_dataset(store, data, exports / "out", "ann")
    assert first.faces == 3 and verify_export(exports / "out") == []
    before = {p.name: p.read_bytes() for p in (exports / "out").rglob("*") if p.is_file()}
    with pytest.raises(KeyboardInterrupt):
        export_dataset(store, data, exports / "out", "ann", on_progress=crash, overwrite=True, seed=5)
    assert [p.name for p in exports.iterdir()] == ["out"]
    assert {p.name: p.read_bytes() for p in (exports / "out").rglob("*") if p.is_file()} == before
    assert count(store, Export) == 1


def test_a_terminated_export_leaves_nothing(store_url, tmp_path, lfw_dir):
    """SIGTERM (a stopped container, a killed job) ends the CLI like Ctrl-C: the temporary folder goes."""
    import os
    import signal

    from labeling.cli import _exit_on_sigterm

    store = open_store(store_url)
    data = tmp_path / "data"
    fake_labeled_faces(store, data, lfw_dir)
    exports = tmp_path / "exports"
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with pytest.raises(SystemExit) as exc:
            export_dataset(store, data, exports / "out", "ann",
                           on_progress=lambda done, total: done == 2 and os.kill(os.getpid(), signal.SIGTERM))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert exc.value.code == 128 + signal.SIGTERM
    assert list(exports.iterdir()) == [] and count(store, Export) == 0


def test_an_export_folder_with_a_name_near_the_limit_is_written(store_url, tmp_path, lfw_dir):
    """The temporary folder beside OUT_DIR takes a suffix: a name that fits 255 bytes itself must
    not fail because the temporary one would not."""
    store = open_store(store_url)
    data = tmp_path / "data"
    fake_labeled_faces(store, data, lfw_dir, n=2)
    out = tmp_path / ("é" * 120 + "x" * 10)  # 250 bytes
    export_dataset(store, data, out, "ann")
    assert (out / "manifest.json").is_file() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_refuses_to_clobber(store_url, tmp_path, lfw_dir):
    store = open_store(store_url)
    data = tmp_path / "data"
    fake_labeled_faces(store, data, lfw_dir, n=2)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    with pytest.raises(ValidationError, match="not empty"):
        export_dataset(store, data, tmp_path / "home", "ann")
    with pytest.raises(ValidationError, match="not a giflens export"):
        export_dataset(store, data, tmp_path / "home", "ann", overwrite=True)
    assert (tmp_path / "home" / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValidationError, match="not a folder"):
        export_dataset(store, data, tmp_path / "file", "ann")
    (tmp_path / "empty").mkdir()
    assert export_dataset(store, data, tmp_path / "empty", "ann").faces == 2
    again = export_dataset(store, data, tmp_path / "empty", "bob", overwrite=True, seed=3)
    assert again.manifest["editor"] == "bob" and verify_export(tmp_path / "empty") == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(ValidationError, match="split"):
        export_dataset(store, data, tmp_path / "new", "ann", split=1.0)
    with pytest.raises(ValidationError, match="editor"):
        export_dataset(store, data, tmp_path / "new", " ")


def exported_indices(out: Path) -> dict[str, int]:
    """Label -> index of an export, after checking that labels.csv, classes.csv, raw_dataset/,
    split.csv and the manifest agree with each other."""
    labels = list(csv.DictReader((out / "labels.csv").open(encoding="utf-8")))
    classes = list(csv.DictReader((out / "classes.csv").open(encoding="utf-8")))
    index = {r["Label"]: int(r["Index"]) for r in labels}
    assert sorted(index.values()) == list(range(len(index)))  # dense
    assert [int(r["Index"]) for r in labels] == [int(r["index"]) for r in classes] == sorted(index.values())
    assert {r["folder"]: int(r["index"]) for r in classes} == index
    assert {p.name for p in (out / "raw_dataset").iterdir()} == set(index)
    split = list(csv.DictReader((out / "split.csv").open(encoding="utf-8")))
    folder_of_class = {int(r["class_id"]): r["folder"] for r in classes}
    assert all(folder_of_class[int(r["class_id"])] == r["label"] for r in split)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["classes"] == len(index) and verify_export(out) == []
    return index


def test_label_indices_stay_put_when_a_class_is_added_or_dropped(store_url, tmp_path, lfw_dir):
    """Indices follow class ids, not names: a new class whose name sorts first still takes the next
    index. A class that drops out moves the later ones down, unless the previous export is given."""
    store = open_store(store_url)
    data = tmp_path / "data"
    faces = fake_labeled_faces(store, data, lfw_dir, n=8)
    with store() as s:
        first = s.scalars(select(CelebrityClass.id).where(CelebrityClass.name == "A")).one()
    rename_class(store, first, "Brad", "ann")
    add_class(store, "Mid", "ann", seed_face_ids=faces[4:6])
    add_class(store, "Zed", "ann", seed_face_ids=faces[6:8])
    export_dataset(store, data, tmp_path / "v1", "ann")
    assert exported_indices(tmp_path / "v1") == {"Brad": 0, "Mid": 1, "Zed": 2}

    add_class(store, "Aaron", "ann", seed_face_ids=faces[2:4])
    approve_faces(store, faces[2:4], "ann")
    assert {label.status for label in labels_of(store, faces[2:4])} == {"approved"}
    v2 = export_dataset(store, data, tmp_path / "v2", "ann")
    assert exported_indices(v2.out_dir) == {"Brad": 0, "Mid": 1, "Zed": 2, "Aaron": 3}
    assert v2.manifest["class_index_order"] == "class_id" and "previous_export" not in v2.manifest

    with store() as s:
        mid = s.scalars(select(CelebrityClass.id).where(CelebrityClass.name == "Mid")).one()
    retire_class(store, mid, "ann")
    export_dataset(store, data, tmp_path / "v3", "ann")
    assert exported_indices(tmp_path / "v3") == {"Brad": 0, "Zed": 1, "Aaron": 2}  # Zed and Aaron move down one
    # with the previous export only the class whose index no longer fits moves, into the hole
    kept = export_dataset(store, data, tmp_path / "v3-kept", "ann", previous=tmp_path / "v2")
    assert exported_indices(kept.out_dir) == {"Brad": 0, "Aaron": 1, "Zed": 2}
    assert kept.manifest["class_index_order"] == "previous export"
    assert kept.manifest["previous_export"] == str((tmp_path / "v2").absolute())
    # a class back from retirement is new to that export: it takes the next index, the others keep theirs
    set_class_status(store, mid, "active", "ann")
    v4 = export_dataset(store, data, tmp_path / "v4", "ann", previous=tmp_path / "v3-kept" / "classes.csv")
    assert exported_indices(v4.out_dir) == {"Brad": 0, "Aaron": 1, "Zed": 2, "Mid": 3}
    # an export over itself keeps its own indices: the previous mapping is read before it is replaced
    again = export_dataset(store, data, tmp_path / "v4", "ann", overwrite=True, previous=tmp_path / "v4")
    assert exported_indices(again.out_dir) == {"Brad": 0, "Aaron": 1, "Zed": 2, "Mid": 3}


def labels_of(store, face_ids) -> list[FaceLabel]:
    with store() as s:
        return list(s.scalars(select(FaceLabel).where(FaceLabel.face_id.in_(face_ids))))


def test_class_indices_are_dense_and_keep_earlier_indices():
    assert class_indices([7, 3, 5]) == {3: 0, 5: 1, 7: 2}
    assert class_indices([]) == {}
    before = {1: 0, 2: 1, 3: 2, 4: 3}
    assert class_indices([1, 2, 3, 4, 9], before) == {1: 0, 2: 1, 3: 2, 4: 3, 9: 4}  # a new class appends
    assert class_indices([1, 3, 4], before) == {1: 0, 3: 2, 4: 1}  # one class moves into the hole
    assert class_indices([1, 3, 4, 8, 9], before) == {1: 0, 3: 2, 4: 3, 8: 1, 9: 4}  # a new class fills it
    assert class_indices([3, 4], before) == {3: 0, 4: 1}  # nobody survives below n: earlier order kept
    assert class_indices([4, 3, 1, 2], {4: 0, 3: 1, 1: 2, 2: 3}) == {4: 0, 3: 1, 1: 2, 2: 3}  # not id order
    assert class_indices([5, 6], before) == {5: 0, 6: 1}  # nothing in common: id order


def test_a_bad_previous_mapping_is_refused_before_anything_is_written(store_url, tmp_path, lfw_dir):
    store = open_store(store_url)
    data = tmp_path / "data"
    fake_labeled_faces(store, data, lfw_dir, n=2)
    bad = {"missing.csv": None,
           "no-columns.csv": "folder,name\nA,A\n",
           "text.csv": "class_id,index\n1,first\n",
           "negative.csv": "class_id,index\n1,-1\n",
           "class-twice.csv": "class_id,index\n1,0\n1,1\n",
           "index-twice.csv": "class_id,index\n1,0\n2,0\n"}
    messages = {"missing.csv": "cannot read", "no-columns.csv": "lacks column", "text.csv": "whole numbers",
                "negative.csv": "negative", "class-twice.csv": "class 1 repeats line 2",
                "index-twice.csv": "index 0 repeats line 2"}
    for name, text in bad.items():
        if text is not None:
            (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(ValidationError, match=messages[name]):
            export_dataset(store, data, tmp_path / "out", "ann", previous=tmp_path / name)
    assert not (tmp_path / "out").exists() and count(store, Export) == 0
    (tmp_path / "ok.csv").write_text("folder,index,class_id,name,external_id\nA,0,1,A,\n", encoding="utf-8")
    assert read_class_indices(tmp_path / "ok.csv") == {1: 0}


# -- real models: raw dataset, tags, export, round trip --------------------------------------------
def make_raw_dataset(root: Path, lfw_dir: Path, per_person: int = 2) -> Path:
    """GIPHY's layout from a few LFW people, plus a faceless image and one photo filed twice."""
    (root / "raw_dataset").mkdir(parents=True)
    with (root / "labels.csv").open("w") as f:
        f.write("Label,Index\n")
        for i, person in enumerate(PEOPLE):
            label = f"{person}_[m.test{i}]"
            f.write(f"{label},{i}\n")
            (root / "raw_dataset" / label).mkdir()
            for photo in sorted((lfw_dir / person).glob("*.jpg"))[:per_person]:
                (root / "raw_dataset" / label / photo.name).write_bytes(photo.read_bytes())
    first = sorted((lfw_dir / PEOPLE[0]).glob("*.jpg"))[0]
    with Image.open(first) as im:  # a corner of the photo: background, no face
        im.crop((0, 0, 70, 70)).save(root / "raw_dataset" / f"{PEOPLE[0]}_[m.test0]" / "corner.jpg")
    twice = sorted((lfw_dir / PEOPLE[2]).glob("*.jpg"))[per_person]
    for label in (f"{PEOPLE[1]}_[m.test1]", f"{PEOPLE[2]}_[m.test2]"):
        (root / "raw_dataset" / label / "filed-twice.jpg").write_bytes(twice.read_bytes())
    (root / "raw_dataset" / "Not_Listed").mkdir()
    return root


def confirmed_catalog(store) -> list[tuple[str, str | None, int]]:
    with store() as s:
        return sorted(s.execute(
            select(CelebrityClass.name, CelebrityClass.external_id, func.count(FaceLabel.id))
            .join(FaceLabel, FaceLabel.class_id == CelebrityClass.id)
            .where(FaceLabel.status.in_(("approved", "relabeled")), CelebrityClass.status != "retired")
            .group_by(CelebrityClass.name, CelebrityClass.external_id)).all())


@pytest.mark.slow
def test_raw_dataset_import_export_round_trip(store_url, second_store_url, tmp_path, lfw_dir, data_dir):
    store = open_store(store_url)
    settings = Settings(data_dir=data_dir, database_url=store_url)
    raw = make_raw_dataset(tmp_path / "giphy", lfw_dir, per_person=3)
    summary = import_raw_dataset(store, raw, settings)
    assert (summary.images, summary.created, summary.labels) == (12, 3, 9), summary.skipped
    notes = "\n".join(summary.skipped)
    assert "corner.jpg: no face found" in notes and "filed-twice.jpg: the same image is also under" in notes
    assert "raw_dataset/Not_Listed/: not in labels.csv" in notes
    with store() as s:
        labels = s.execute(select(CelebrityClass.name, CelebrityClass.external_id, FaceLabel.source, FaceLabel.status,
                                  FaceLabel.editor).join(FaceLabel, FaceLabel.class_id == CelebrityClass.id)).all()
    assert sorted(set(labels)) == [(p.replace("_", " "), f"m.test{i}", "import", "approved", "import:giphy")
                                   for i, p in enumerate(PEOPLE)]
    assert len(labels) == 9
    n_events = count(store, AuditEvent)
    again = import_raw_dataset(store, raw, settings)
    assert (again.created, again.labels, again.unchanged, again.event_id) == (0, 0, 9, None)
    assert count(store, AuditEvent) == n_events

    # an editor's decision survives a re-import
    with store() as s:
        faces = list(s.scalars(select(FaceLabel.face_id).order_by(FaceLabel.face_id)))
        chavez = s.scalars(select(CelebrityClass.id).where(CelebrityClass.name == "Hugo Chavez")).one()
    relabel_faces(store, faces[:1], chavez, "ann")
    kept = import_raw_dataset(store, raw, settings)
    assert (kept.kept, kept.labels, kept.event_id) == (1, 0, None)

    # hostile but valid class names export to safe, distinct folders; a retired class is not exported
    # faces: 3 per person in label order; faces[0] is now Hugo Chavez's, faces[1:6] go to hostile names,
    # faces[6] to a class that is then retired, faces[7:9] stay Serena Williams' imported labels
    hostile = ["CON", "Zoë 🎬", "...", "a:b", "A?B"]
    for name, face in zip(hostile, faces[1:6]):
        cls, _ = add_class(store, name, "ann")
        relabel_faces(store, [face], cls, "ann")
    gone, _ = add_class(store, "Gone", "ann", seed_face_ids=faces[6:7])
    retire_class(store, gone, "ann")

    out = tmp_path / "exports" / "v1"
    result = export_dataset(store, data_dir, out, "ann", split=0.34, seed=1)
    assert (result.classes, result.faces, result.missing_crops) == (7, 8, 0)
    assert result.line().startswith("exported 7 classes, 8 faces (train")
    assert sorted(p.name for p in out.iterdir()) == ["classes.csv", "labels.csv", "manifest.json", "projector",
                                                     "raw_dataset", "split.csv", "tags.jsonl"]
    labels_rows = list(csv.DictReader((out / "labels.csv").open(encoding="utf-8")))
    class_rows = list(csv.DictReader((out / "classes.csv").open(encoding="utf-8")))
    assert [int(r["Index"]) for r in labels_rows] == list(range(7))
    assert [int(r["class_id"]) for r in class_rows] == sorted(int(r["class_id"]) for r in class_rows)
    folder_of = {r["name"]: r["folder"] for r in class_rows}
    assert folder_of["CON"] == "_CON" and folder_of["Zoë 🎬"] == "Zoë_🎬" and folder_of["..."] == "class"
    assert folder_of["a:b"] == "a_b" and folder_of["A?B"].startswith("A_B_") and "Gone" not in folder_of
    assert folder_of["Hugo Chavez"] == "Hugo_Chavez_[m.test1]" and "Ariel Sharon" not in folder_of
    assert {r["Label"] for r in labels_rows} == set(folder_of.values()) == {p.name for p in (out / "raw_dataset").iterdir()}
    with store() as s:
        expected = dict(s.execute(select(FaceLabel.face_id, CelebrityClass.name)
                                  .join(CelebrityClass, CelebrityClass.id == FaceLabel.class_id)
                                  .where(CelebrityClass.status == "active")).all())
        crops = dict(s.execute(select(FaceEmbedding.face_id, FaceEmbedding.crop_path)).all())
    exported = {int(p.stem): p.parent.name for p in (out / "raw_dataset").rglob("*.jpg")}
    assert exported == {f: folder_of[name] for f, name in expected.items()}
    for face, folder in exported.items():
        assert (out / "raw_dataset" / folder / f"{face}.jpg").read_bytes() == (data_dir / crops[face]).read_bytes()

    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert verify_export(out) == []
    assert manifest["label_provenance"] == {"editor": {"relabeled": 6}, "import": {"approved": 2}}
    assert manifest["schema_version"] == current_revision(store.kw["bind"]) and manifest["editor"] == "ann"
    assert manifest["counts"]["faces"] == 8 and manifest["counts"]["train"] + manifest["counts"]["val"] == 8
    (out / "labels.csv").write_text("Label,Index\n", encoding="utf-8")
    assert verify_export(out) == ["labels.csv: sha256 differs"]
    (out / "labels.csv").write_text("\n".join(["Label,Index", *[f"{r['Label']},{r['Index']}" for r in labels_rows]]) + "\n",
                                    encoding="utf-8")
    assert verify_export(out) == []
    split = list(csv.DictReader((out / "split.csv").open(encoding="utf-8")))
    assert sorted(int(r["face_id"]) for r in split) == sorted(exported)
    meta = (out / "projector" / "metadata.tsv").read_text(encoding="utf-8").splitlines()
    vectors = (out / "projector" / "vectors.tsv").read_text().splitlines()
    assert meta[0] == "face_id\tclass\tstatus\tsource\tside" and len(meta) - 1 == len(vectors) == 9
    assert all(len(v.split("\t")) == 128 for v in vectors)
    assert Counter(tuple(m.split("\t")[2:4]) for m in meta[1:]) == {("relabeled", "editor"): 7, ("approved", "import"): 2}
    assert {m.split("\t")[1] for m in meta[1:]} == {"Hugo Chavez", "Serena Williams", "Gone", *hostile}
    with store() as s:
        row = s.scalars(select(Export)).one()
        assert (row.editor, row.out_dir, row.manifest["counts"]["faces"]) == ("ann", str(out.absolute()), 8)

    # importing the export into a fresh store gives the same classes and confirmed labels
    fresh = open_store(second_store_url)
    back = import_raw_dataset(fresh, out, Settings(data_dir=data_dir, database_url=second_store_url))
    assert (back.created, back.labels, back.skipped) == (7, 8, []), back.skipped
    assert confirmed_catalog(fresh) == confirmed_catalog(store)
    assert import_raw_dataset(fresh, out, Settings(data_dir=data_dir, database_url=second_store_url)).event_id is None


def two_people_photo(lfw_dir: Path, path: Path, large: str, small: str) -> tuple[int, int]:
    """One image of two LFW people side by side: `small` at half size on the left, `large` at full
    size on the right (so "first face found" or "leftmost face" would pick the wrong one).
    Returns the x range (start, end) where the large photo sits."""
    with Image.open(sorted((lfw_dir / large).glob("*.jpg"))[0]) as a, \
            Image.open(sorted((lfw_dir / small).glob("*.jpg"))[0]) as b:
        a, b = a.convert("RGB"), b.convert("RGB").resize((b.width // 2, b.height // 2), Image.LANCZOS)
        canvas = Image.new("RGB", (b.width + a.width, a.height), (128, 128, 128))
        canvas.paste(b, (0, (a.height - b.height) // 2))
        canvas.paste(a, (b.width, 0))
        path.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(path, quality=95)
        return b.width, b.width + a.width


@pytest.mark.slow
def test_raw_dataset_import_labels_the_largest_face_when_several(store_url, tmp_path, lfw_dir, data_dir):
    """GIPHY's folders name one person per image; when an image shows several faces, the label goes
    on the largest one. With this pair the small face is the leftmost and (with MTCNN today) the
    more confident one, so neither rule would land on Ariel Sharon's face."""
    raw = tmp_path / "giphy"
    label = "Ariel_Sharon_[m.test]"
    x_start, x_end = two_people_photo(lfw_dir, raw / "raw_dataset" / label / "sharon-and-schroeder.jpg",
                                      large="Ariel_Sharon", small="Gerhard_Schroeder")
    (raw / "labels.csv").write_text(f"Label,Index\n{label},0\n")
    store = open_store(store_url)
    summary = import_raw_dataset(store, raw, Settings(data_dir=data_dir, database_url=store_url), "ann")
    assert (summary.images, summary.created, summary.labels) == (1, 1, 1), summary.skipped
    with store() as s:
        faces = list(s.scalars(select(Face)))
        [(face_id, class_name, status, source)] = s.execute(
            select(FaceLabel.face_id, CelebrityClass.name, FaceLabel.status, FaceLabel.source)
            .join(CelebrityClass, CelebrityClass.id == FaceLabel.class_id)).all()
    assert len(faces) == 2, [(f.x1, f.y1, f.x2, f.y2) for f in faces]  # both people were found
    area = {f.id: (f.x2 - f.x1) * (f.y2 - f.y1) for f in faces}
    labeled = next(f for f in faces if f.id == face_id)
    assert (class_name, status, source) == ("Ariel Sharon", "approved", "import")
    assert area[face_id] == max(area.values()) and area[face_id] > 2 * min(area.values())
    assert x_start <= (labeled.x1 + labeled.x2) / 2 <= x_end  # the face of the large photo: Ariel Sharon's


def test_largest_face_does_not_depend_on_the_order_faces_were_stored(store_url):
    """The detector happens to list big faces first; the choice must not rely on that."""
    from labeling.importers import _largest_faces

    store = open_store(store_url)
    boxes = {"small-first": [(0, 0, 40, 40), (50, 0, 150, 100), (160, 0, 190, 30)],
             "big-last": [(0, 0, 30, 30), (40, 0, 80, 40), (90, 0, 200, 110)]}
    expected = {}
    with session_scope(store) as s:
        for name, faces in boxes.items():
            media = Media(sha256=name.encode().hex().ljust(64, "0"), path=f"/data/{name}.jpg", kind="image", status="ok")
            s.add(media)
            s.flush()
            rows = [Face(media_id=media.id, face_index=i, frame_index=0, x1=x1, y1=y1, x2=x2, y2=y2, probability=0.99,
                         landmarks=[[0, 0]] * 5) for i, (x1, y1, x2, y2) in enumerate(faces)]
            s.add_all(rows)
            s.flush()
            expected[media.id] = max(rows, key=lambda f: (f.x2 - f.x1) * (f.y2 - f.y1)).id
        assert _largest_faces(s, list(expected)) == expected


def resized_copy(src: Path, dest: Path, scale: float = 0.75) -> Path:
    """The same clip re-encoded smaller: a near-duplicate with different bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    frames, durations = [], []
    with Image.open(src) as im:
        size = (int(im.width * scale), int(im.height * scale))
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            frames.append(im.convert("RGB").resize(size, Image.Resampling.LANCZOS))
            durations.append(im.info.get("duration", 80))
    frames[0].save(dest, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return dest


@pytest.mark.slow
def test_near_duplicates_never_straddle_the_split_and_tags_export(store_url, tmp_path, gifs_dir, shared_data, data_dir):
    store = open_store(store_url)
    settings = Settings(data_dir=data_dir, database_url=store_url)
    src, other = gifs_dir / "are-you-a-cop.gif", gifs_dir / "aint-nobody-got-time-for-that.gif"
    copy = resized_copy(src, tmp_path / "copy" / "are-you-a-cop-small.gif")
    ingest([src, copy, other], settings, store=store)

    summary = import_tags(store, shared_data / "gifs.csv")
    with store() as s:
        media = {Path(p).name: m for p, m in s.execute(select(Media.path, Media.id))}
    assert summary.tags == 2 + 4 and summary.event_id is not None  # are;cop and aint;nobody;got;time
    assert len([n for n in summary.skipped if "is not ingested" in n]) == 63 - 2
    with store() as s:
        rows = s.execute(select(MediaTag.media_id, Tag.name, MediaTag.confidence, MediaTag.source, MediaTag.editor)
                         .join(Tag, Tag.id == MediaTag.tag_id)).all()
    assert {(m, t) for m, t, *_ in rows} == {(media[src.name], "are"), (media[src.name], "cop"),
                                             *[(media[other.name], t) for t in ("aint", "nobody", "got", "time")]}
    assert {(c, so, e) for *_, c, so, e in rows} == {(1.0, "uploader", "import:gifs.csv")}
    assert import_tags(store, shared_data / "gifs.csv").event_id is None
    set_tag_status(store, [(media[src.name], "are")], "rejected", "ann")
    kept = import_tags(store, shared_data / "gifs.csv")
    assert (kept.kept, kept.tags, kept.event_id) == (1, 0, None)
    # experts voting lowered an uploader tag nobody confirmed: re-importing the file leaves it so
    set_tag_confidences(store, [(media[other.name], "got", 0.7)], "experts", source="uploader")
    assert import_tags(store, shared_data / "gifs.csv").event_id is None

    with store() as s:
        faces = dict(s.execute(select(Face.id, Face.media_id)).all())
    assert {media[src.name], media[copy.name], media[other.name]} <= set(faces.values()), "all three clips have faces"
    cls, _ = add_class(store, "Crowd", "ann")
    relabel_faces(store, list(faces), cls, "ann")
    add_tags(store, [media[src.name]], ["police"], "ann", confidence=0.8)
    out = tmp_path / "export"
    result = export_dataset(store, data_dir, out, "ann", split=0.5)
    split = list(csv.DictReader((out / "split.csv").open(encoding="utf-8")))
    group = {int(r["media_id"]): r["group"] for r in split}
    assert group[media[src.name]] == group[media[copy.name]] != group[media[other.name]]
    side_of_group: dict[str, set[str]] = {}
    side_of_media: dict[int, set[str]] = {}
    for r in split:
        side_of_group.setdefault(r["group"], set()).add(r["side"])
        side_of_media.setdefault(int(r["media_id"]), set()).add(r["side"])
    assert all(len(s) == 1 for s in side_of_group.values()) and all(len(s) == 1 for s in side_of_media.values())
    assert side_of_media[media[src.name]] == side_of_media[media[copy.name]]
    assert result.train > 0 and result.val > 0 and result.train + result.val == len(faces)
    assert result.manifest["split"]["groups"] == 2

    lines = [json.loads(line) for line in (out / "tags.jsonl").read_text(encoding="utf-8").splitlines()]
    by_path = {Path(item["media"]).name: item for item in lines}
    assert set(by_path) == {src.name, other.name}
    assert by_path[src.name]["tags"] == [["cop", 1.0], ["police", 0.8]]  # the rejected tag is not exported
    assert by_path[src.name]["sha256"] and sorted(by_path[other.name]["tags"]) == [
        ["aint", 1.0], ["got", 0.7], ["nobody", 1.0], ["time", 1.0]]
    # each tag's source rides along, so a retraining job can weigh an editor's tag above an uploader's
    assert by_path[src.name]["sources"] == {"cop": "uploader", "police": "editor"}
    assert set(by_path[other.name]["sources"].values()) == {"uploader"}
    assert result.manifest["tag_provenance"] == {"editor": 1, "uploader": 5}


@pytest.mark.slow
def test_gif_embeddings_export_for_the_projector(store_url, tmp_path, gifs_dir, lfw_dir, shared_data, data_dir):
    """Two real GIFs and a still photo: only the GIFs have a GIF embedding, so only they are rows of the
    GIF projector files, each vector the stored one, beside its media's metadata; the face files keep
    their names, and the manifest counts and hashes the new files like every other."""
    store = open_store(store_url)
    settings = Settings(data_dir=data_dir, database_url=store_url)
    cop, aint = gifs_dir / "are-you-a-cop.gif", gifs_dir / "aint-nobody-got-time-for-that.gif"
    photo = sorted((lfw_dir / "Ariel_Sharon").glob("*.jpg"))[0]
    ingest([cop, aint, photo], settings, store=store)
    import_tags(store, shared_data / "gifs.csv")
    with store() as s:
        media = {Path(p).name: m for p, m in s.execute(select(Media.path, Media.id))}
        stored = {m: bytes_to_vector(v) for m, v in s.execute(select(MediaEmbedding.media_id, MediaEmbedding.vector))}
    assert set(stored) == {media[cop.name], media[aint.name]}, "a still photo has no GIF embedding"
    set_tag_confidences(store, [(media[cop.name], "are", 0.4)], "ann")  # "cop" (1.0) now leads

    out = tmp_path / "export"
    result = export_dataset(store, data_dir, out, "ann")
    projector = out / "projector"
    assert sorted(p.name for p in projector.iterdir()) == ["gif_metadata.tsv", "gif_vectors.tsv", "metadata.tsv",
                                                          "vectors.tsv"]
    vectors = np.loadtxt(projector / "gif_vectors.tsv", delimiter="\t", ndmin=2)
    meta = [line.split("\t") for line in (projector / "gif_metadata.tsv").read_text(encoding="utf-8").splitlines()]
    assert meta[0] == ["media_id", "file", "kind", "tags"]
    assert vectors.shape == (len(stored), 1280) == (len(meta) - 1, 1280)
    for (media_id, _, _, _), vector in zip(meta[1:], vectors):  # row i of the vectors is row i of the metadata
        assert np.allclose(vector, stored[int(media_id)], atol=1e-6)
    by_file = {name: (int(m), kind, tags) for m, name, kind, tags in meta[1:]}
    assert by_file == {cop.name: (media[cop.name], "gif", "cop (1.00); are (0.40)"),
                       aint.name: (media[aint.name], "gif", "aint (1.00); got (1.00); nobody (1.00); time (1.00)")}

    manifest = result.manifest
    assert manifest["counts"]["gif_projector_vectors"] == result.gif_vectors == len(stored)
    assert manifest["gif_model"] == settings.gif_model
    for rel in ("projector/gif_vectors.tsv", "projector/gif_metadata.tsv", "projector/vectors.tsv",
                "projector/metadata.tsv"):
        assert manifest["files"][rel] == hashlib.sha256((out / rel).read_bytes()).hexdigest()
    assert verify_export(out) == []
