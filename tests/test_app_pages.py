"""The Streamlit app driven headless with streamlit.testing.v1.AppTest, on a store built from real
photos and a GIF (see test_queries.build_fixture_store): every page renders, writes need an editor,
and what an editor does on a page lands in the database with its audit event."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from labeling.classes import add_class, rename_class, set_class_status
from labeling.db import open_store
from labeling.pages.common import allowed_extensions, check_upload, human_bytes, parse_ids, safe_file_name
from labeling.errors import ValidationError
from labeling.queries import classes_frame, media_tags_frame, store_overview
from labeling.schema import AuditEvent, CelebrityClass, Export, Face, FaceLabel, Media, MediaTag, Tag
from labeling.tags import add_tags, set_tag_status
from conftest import open_app
from test_queries import GIF, SHARED, FixtureStore, new_fixture_store

PAGES = ["labeling/pages/home.py", "labeling/pages/classes.py", "labeling/pages/tags.py",
         "labeling/pages/ingest.py", "labeling/pages/export.py"]


@pytest.fixture(scope="session")
def app_store(tmp_path_factory) -> FixtureStore:
    """One SQLite store for the app tests; its data folder shares the session's embedding cache."""
    return new_fixture_store(tmp_path_factory, "app-store")


@pytest.fixture
def app(app_store, monkeypatch):
    """A fresh app session (no editor) on the fixture store."""
    return open_app(monkeypatch, app_store.data_dir, app_store.url)


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def go(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"labeling/pages/{page}.py").run()
    no_exception(at)
    return at


def button(at: AppTest, label: str):
    found = [b for b in at.button if b.label == label]
    assert len(found) == 1, f"{len(found)} buttons labelled {label!r}: {[b.label for b in at.button]}"
    return found[0]


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def messages(at: AppTest) -> list[str]:
    return [m.value for m in [*at.success, *at.warning, *at.info]]


def sign_in(at: AppTest, name: str, password: str | None = None) -> AppTest:
    at.sidebar.text_input(key="sign_in_name").input(name)
    if password is not None:
        at.sidebar.text_input(key="sign_in_password").input(password)
    button(at, "Sign in").click().run()
    no_exception(at)
    return at


def count(store, model, *where) -> int:
    with store() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


# -- rendering ---------------------------------------------------------------------------------
def test_every_page_renders_read_only(app, app_store):
    no_exception(app)
    overview = store_overview(app_store.store)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Media"] == str(overview["media_ok"]) and metrics["Faces"] == str(overview["faces"])
    titles = {}
    for page in PAGES:
        app.switch_page(page).run()
        no_exception(app)
        assert not errors(app), (page, errors(app))
        titles[page] = [t.value for t in app.title]
        assert app.sidebar.text_input(key="sign_in_name").value == ""  # nobody is signed in
    assert titles == {PAGES[0]: ["giflens"], PAGES[1]: ["Classes"], PAGES[2]: ["Tags"], PAGES[3]: ["Ingest"],
                      PAGES[4]: ["Export"]}
    # the catalog shows what the store holds
    go(app, "classes")
    shown = app.dataframe[0].value
    assert sorted(shown["name"]) == sorted(classes_frame(app_store.store).query("status != 'retired'")["name"])
    # the ingest page lists the media, the failed file with its error
    go(app, "ingest")
    listed = app.main.dataframe[-1].value
    assert len(listed) == count(app_store.store, Media)
    assert "broken.gif" in set(listed.loc[listed["status"] == "failed", "name"])


def test_writes_are_refused_without_an_editor(app, app_store):
    events, classes = count(app_store.store, AuditEvent), count(app_store.store, CelebrityClass)
    go(app, "classes")
    app.text_input(key="add_class_name").input("Nobody Special")
    button(app, "Add class").click().run()
    no_exception(app)
    assert any("editor name is required" in e for e in errors(app))
    go(app, "tags")
    app.text_input(key=f"tags_new_{app.selectbox(key='tags_media').value}").input("refused")
    button(app, "Add tag").click().run()
    assert any("editor name is required" in e for e in errors(app))
    go(app, "ingest")
    app.text_input(key="ingest_folder").input(str(SHARED / "lfw" / "Hugo_Chavez"))
    button(app, "Ingest folder").click().run()
    assert any("editor name is required" in e for e in errors(app))
    assert count(app_store.store, AuditEvent) == events and count(app_store.store, CelebrityClass) == classes
    assert count(app_store.store, Media, Media.path.like("%Hugo_Chavez%")) == 0
    assert not [b for b in app.button if b.label == "Undo last"]  # nothing to undo without an editor


# -- classes -------------------------------------------------------------------------------------
def test_add_rename_class_with_audit_and_undo(app, app_store):
    sign_in(app, "ann")
    assert any("**ann**" in m.value for m in app.sidebar.markdown)
    go(app, "classes")
    seed = app_store.largest_face[sorted(app_store.largest_face)[0]]
    app.text_input(key="add_class_name").input("Cate Blanchett")
    app.text_input(key="add_class_gender").input("Female")
    app.text_input(key="add_class_seeds").input(str(seed))
    button(app, "Add class").click().run()
    assert any("seed faces carry an editor's decision" in w.value for w in app.warning)  # the fixture's seed
    app.checkbox(key="add_class_override").check()
    button(app, "Add class").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    assert any("add class 'Cate Blanchett' seeded with 1 face(s)" in m for m in messages(app))
    with app_store.store() as s:
        cate = s.scalars(select(CelebrityClass).where(CelebrityClass.name == "Cate Blanchett")).one()
        label = s.scalars(select(FaceLabel).where(FaceLabel.face_id == seed)).one()
    assert (cate.gender, cate.updated_by) == ("female", "ann")
    assert (label.class_id, label.status, label.editor) == (cate.id, "relabeled", "ann")
    assert app.selectbox(key="class_selected").value == cate.id  # the new class is selected for editing

    app.text_input(key=f"rename_name_{cate.id}").input("Catherine Blanchett")
    button(app, "Rename").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    catalog = app.dataframe[0].value
    assert "Catherine Blanchett" in set(catalog["name"]) and "Cate Blanchett" not in set(catalog["name"])
    with app_store.store() as s:
        assert s.get(CelebrityClass, cate.id).name == "Catherine Blanchett"
        event = s.scalars(select(AuditEvent).where(AuditEvent.editor == "ann", AuditEvent.operation == "rename_class")
                          .order_by(AuditEvent.id.desc())).first()
    key = f"class:{cate.id}"
    assert event.before[key]["name"] == "Cate Blanchett" and event.after[key]["name"] == "Catherine Blanchett"
    recent = [c.value for c in app.sidebar.caption if c.value.startswith("**#")]
    assert recent[0] == f"**#{event.id}** rename class 'Cate Blanchett' to 'Catherine Blanchett'", recent
    assert recent[1].startswith(f"**#{event.id - 1}** add class 'Cate Blanchett'"), recent

    # the sidebar's undo reverses the rename, as an audited operation of its own
    button(app, "Undo last").click().run()
    no_exception(app)
    assert any(m.startswith("Undone: undo of operation") for m in messages(app))
    with app_store.store() as s:
        assert s.get(CelebrityClass, cate.id).name == "Cate Blanchett"
        assert s.get(AuditEvent, event.id).undone_by_id is not None


def test_overview_undoes_any_operation_by_its_number_unless_a_later_one_depends_on_it(app, app_store):
    sign_in(app, "cleo")
    go(app, "classes")
    app.text_input(key="add_class_name").input("Undo Target")
    button(app, "Add class").click().run()
    with app_store.store() as s:
        target = s.scalars(select(CelebrityClass).where(CelebrityClass.name == "Undo Target")).one()
    app.text_input(key=f"rename_name_{target.id}").input("Undo Target Renamed")
    button(app, "Rename").click().run()
    no_exception(app)
    with app_store.store() as s:
        added, renamed = s.scalars(select(AuditEvent.id).where(AuditEvent.editor == "cleo").order_by(AuditEvent.id)).all()

    go(app, "home")
    offered = app.selectbox(key="overview_undo_event")
    assert offered.options[0].startswith(f"#{renamed} · cleo · ")  # newest first, with who and what
    assert offered.options[0].endswith(" · rename class 'Undo Target' to 'Undo Target Renamed'")
    assert offered.options[1].startswith(f"#{added} · cleo · ")
    offered.set_value(added).run()
    button(app, "Undo this operation").click().run()
    no_exception(app)  # the rename depends on the add: refused with the reason, nothing written
    assert any(f"operation {added} (add_class) cannot be undone" in e and f"first {renamed} (rename_class) by cleo" in e
               for e in errors(app)), errors(app)
    assert count(app_store.store, AuditEvent, AuditEvent.operation == "undo", AuditEvent.editor == "cleo") == 0

    app.selectbox(key="overview_undo_event").set_value(renamed).run()
    button(app, "Undo this operation").click().run()
    assert any(m.startswith(f"Undone: undo of operation {renamed}") for m in messages(app)), messages(app)
    app.selectbox(key="overview_undo_event").set_value(added).run()
    button(app, "Undo this operation").click().run()
    no_exception(app)
    assert any(m.startswith(f"Undone: undo of operation {added}") for m in messages(app)), messages(app)
    assert count(app_store.store, CelebrityClass, CelebrityClass.id == target.id) == 0
    latest = app.main.dataframe[0].value.set_index("event_id")
    assert latest.loc[renamed, "undone_by"] == f"#{renamed + 1}" and latest.loc[renamed + 1, "undo_of"] == f"#{renamed}"
    assert latest.loc[renamed + 1, "undone_by"] == ""  # blank, not "None"
    undone = [o for o in app.selectbox(key="overview_undo_event").options if o.startswith((f"#{added} ", f"#{renamed} "))]
    assert undone == []  # undone operations are no longer offered


def test_stale_edit_shows_the_conflict(app, app_store):
    app.session_state["editor"] = "ann"
    go(app, "classes")
    serena = app_store.classes["Serena Williams"]
    app.selectbox(key="class_selected").set_value(serena).run()
    no_exception(app)
    with app_store.store() as s:
        version = s.get(CelebrityClass, serena).version
    rename_class(app_store.store, serena, "Serena J. Williams", "bob", expected_version=version)  # meanwhile
    app.text_input(key=f"attr_country_{serena}").input("United States")
    button(app, "Save attributes").click().run()
    no_exception(app)
    assert any(e.startswith("Conflict:") and "changed by bob" in e for e in errors(app)), errors(app)
    with app_store.store() as s:
        row = s.get(CelebrityClass, serena)
    assert (row.country, row.updated_by) == (None, "bob")
    # the boxes are refilled with bob's version (the typed country is not pressed again unseen)
    assert any("refilled" in w.value for w in app.warning), [w.value for w in app.warning]
    assert app.text_input(key=f"attr_country_{serena}").value == ""
    app.text_input(key=f"attr_country_{serena}").input("United States")
    button(app, "Save attributes").click().run()
    assert not errors(app), errors(app)
    with app_store.store() as s:
        assert s.get(CelebrityClass, serena).country == "United States"
    rename_class(app_store.store, serena, "Serena Williams", "bob")


def test_split_merge_and_status_from_the_page(app, app_store):
    app.session_state["editor"] = "ann"
    go(app, "classes")
    ariel = app_store.classes["Ariel Sharon"]
    app.selectbox(key="class_selected").set_value(ariel).run()
    members = app.multiselect(key=f"split_faces_{ariel}").options
    assert len(members) >= 1
    face = int(members[0].split()[1])  # "face 12 · file.jpg · status"
    app.multiselect(key=f"split_faces_{ariel}").select(face)
    app.text_input(key=f"split_name_{ariel}").input("Ariel Sharon (young)")
    button(app, "Split").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    with app_store.store() as s:
        young = s.scalars(select(CelebrityClass).where(CelebrityClass.name == "Ariel Sharon (young)")).one()
        assert s.scalars(select(FaceLabel.class_id).where(FaceLabel.face_id == face)).one() == young.id
    assert app.selectbox(key="class_selected").value == young.id  # the new class is selected

    app.selectbox(key=f"merge_target_{young.id}").set_value(ariel)
    button(app, "Merge").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    with app_store.store() as s:
        merged = s.get(CelebrityClass, young.id)
        assert (merged.status, merged.merged_into_id) == ("retired", ariel)
        assert s.scalars(select(FaceLabel.class_id).where(FaceLabel.face_id == face)).one() == ariel
    assert "Ariel Sharon (young)" not in set(app.dataframe[0].value["name"])  # retired: filtered out by default
    # ... so it is no longer the class to edit; showing retired classes makes it selectable again
    assert app.selectbox(key="class_selected").value != young.id
    app.multiselect(key="class_status_filter").select("retired").run()
    app.selectbox(key="class_selected").set_value(young.id).run()
    no_exception(app)

    app.selectbox(key=f"status_{young.id}").set_value("proposed")
    button(app, "Set status").click().run()
    no_exception(app)
    with app_store.store() as s:
        assert s.get(CelebrityClass, young.id).status == "proposed"
        operations = list(s.scalars(select(AuditEvent.operation).where(AuditEvent.editor == "ann")
                                    .order_by(AuditEvent.id.desc()).limit(3)))
    assert operations == ["set_class_status", "merge_classes", "split_class"]


def selector_ids(at: AppTest) -> list[int]:
    """The class ids the "Class to edit" selector offers ("Name (id 12, active, 3 faces)")."""
    return [int(o.split("(id ")[1].split(",")[0]) for o in at.selectbox(key="class_selected").options]


def test_search_chooses_the_class_to_edit(app, app_store):
    retired, _ = add_class(app_store.store, "Retired Search Person", "ann")
    set_class_status(app_store.store, retired, "retired", "ann")
    app.session_state["editor"] = "ann"
    go(app, "classes")
    serena, ariel = app_store.classes["Serena Williams"], app_store.classes["Ariel Sharon"]
    # no class is edited until the editor chooses one (a quick rename once renamed the catalogue's first)
    assert app.selectbox(key="class_selected").value is None
    assert selector_ids(app) == list(app.dataframe[0].value["class_id"])
    assert not [b for b in app.button if b.label in ("Rename", "Save attributes")]
    with app_store.store() as s:
        before = {c.id: (c.version, c.birth_year) for c in s.scalars(select(CelebrityClass))}

    # the search narrows the table and the selector alike, and the class to edit follows it
    app.text_input(key="class_search").input("williams").run()
    no_exception(app)
    assert list(app.dataframe[0].value["class_id"]) == [serena]
    assert selector_ids(app) == [serena] and app.selectbox(key="class_selected").value == serena
    assert app.text_input(key=f"attr_birth_year_{serena}").value == "1981"
    assert len([t for t in app.text_input if t.key.startswith("attr_birth_year_")]) == 1  # the one class's form
    app.text_input(key=f"attr_birth_year_{serena}").input("1960")
    button(app, "Save attributes").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    with app_store.store() as s:
        after = {c.id: (c.version, c.birth_year) for c in s.scalars(select(CelebrityClass))}
    assert after[serena][1] == 1960  # the searched class got the edit ...
    assert {c: v for c, v in after.items() if c != serena} == {c: v for c, v in before.items() if c != serena}
    assert after[ariel] == before[ariel]  # ... and no other class
    # a second save is based on the version the first one left: no false conflict
    app.text_input(key=f"attr_birth_year_{serena}").input("1981")
    button(app, "Save attributes").click().run()
    assert not errors(app), errors(app)
    with app_store.store() as s:
        assert s.get(CelebrityClass, serena).birth_year == 1981

    # a search nothing matches: no class to edit and no edit form, said so
    app.text_input(key="class_search").input("nobody is called this").run()
    no_exception(app)
    assert len(app.dataframe[0].value) == 0
    assert not [b for b in app.selectbox if b.key == "class_selected"]
    assert not [b for b in app.button if b.label in ("Rename", "Save attributes", "Merge", "Split", "Set status")]
    assert any("No class matches the search and status filter" in m for m in messages(app)), messages(app)

    # a status filter that leaves the selection out drops it (the only class left shown is chosen)
    app.text_input(key="class_search").input("").run()
    app.selectbox(key="class_selected").set_value(serena).run()
    app.multiselect(key="class_status_filter").set_value(["retired"]).run()
    no_exception(app)
    shown = list(app.dataframe[0].value["class_id"])
    assert retired in shown and serena not in shown and selector_ids(app) == shown
    assert app.selectbox(key="class_selected").value == (shown[0] if len(shown) == 1 else None)


def test_a_created_class_is_selected_even_when_the_search_hides_it(app, app_store):
    app.session_state["editor"] = "ann"
    go(app, "classes")
    app.text_input(key="class_search").input("williams").run()
    app.text_input(key="add_class_name").input("Hidden By The Search")
    button(app, "Add class").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    with app_store.store() as s:
        created = s.scalars(select(CelebrityClass).where(CelebrityClass.name == "Hidden By The Search")).one().id
    # the search is cleared so the new class is in the view, and it is the class to edit
    assert app.text_input(key="class_search").value == ""
    assert created in selector_ids(app) and app.selectbox(key="class_selected").value == created
    assert created in set(app.dataframe[0].value["class_id"])


def test_retiring_or_merging_keeps_the_edited_class_in_view(app, app_store):
    """The status filter hides retired classes; retiring (or merging away) the class being edited must
    not move the forms to another class: the filter widens to keep it, or the merge target is selected."""
    gone, _ = add_class(app_store.store, "Retire Me From The Page", "ann")
    kept, _ = add_class(app_store.store, "Merge Me Away", "ann")
    app.session_state["editor"] = "ann"
    go(app, "classes")
    app.selectbox(key="class_selected").set_value(gone).run()
    app.selectbox(key=f"status_{gone}").set_value("retired")
    button(app, "Set status").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    assert app.selectbox(key="class_selected").value == gone and "retired" in app.multiselect(key="class_status_filter").value
    app.selectbox(key="class_selected").set_value(kept).run()
    target = app_store.classes["Serena Williams"]
    app.selectbox(key=f"merge_target_{kept}").set_value(target)
    button(app, "Merge").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    assert app.selectbox(key="class_selected").value == target


def test_page_choices_survive_a_visit_to_another_page(app, app_store):
    """Streamlit forgets a widget's state when a page does not draw it; the choices an editor makes to
    find their place (the GIF on Tags, the search on Classes) are kept for the session."""
    go(app, "tags")
    photo = app_store.media[sorted(app_store.largest_face)[1]]
    app.selectbox(key="tags_media").set_value(photo).run()
    go(app, "classes")
    app.text_input(key="class_search").input("serena").run()
    go(app, "export")
    go(app, "tags")
    assert app.selectbox(key="tags_media").value == photo
    go(app, "classes")
    assert app.text_input(key="class_search").value == "serena"


def test_split_offers_no_retired_class(app, app_store):
    retired, _ = add_class(app_store.store, "Retired Split Target", "ann")
    set_class_status(app_store.store, retired, "retired", "ann")
    proposed, _ = add_class(app_store.store, "Proposed Split Target", "ann", status="proposed")
    app.session_state["editor"] = "ann"
    go(app, "classes")
    ariel = app_store.classes["Ariel Sharon"]
    app.selectbox(key="class_selected").set_value(ariel).run()
    no_exception(app)
    offered = [int(o.split("(id ")[1].split(",")[0]) for o in app.selectbox(key=f"split_target_{ariel}").options]
    statuses = classes_frame(app_store.store).set_index("class_id")["status"]
    assert retired not in offered and ariel not in offered
    assert proposed in offered and app_store.classes["Serena Williams"] in offered
    assert sorted(offered) == sorted(c for c, s in statuses.items() if s != "retired" and c != ariel)


def test_bad_input_is_refused_with_its_reason(app, app_store):
    app.session_state["editor"] = "ann"
    go(app, "classes")
    before = count(app_store.store, CelebrityClass)
    app.text_input(key="add_class_name").input("../etc")
    button(app, "Add class").click().run()
    assert any(e.startswith("Refused:") and "looks like a path" in e for e in errors(app)), errors(app)
    app.text_input(key="add_class_name").input("Someone New")
    app.text_input(key="add_class_seeds").input("12, twelve")
    button(app, "Add class").click().run()
    assert any("whole numbers" in e for e in errors(app)), errors(app)
    assert count(app_store.store, CelebrityClass) == before


def test_password_is_checked_when_configured(app_store, monkeypatch):
    at = open_app(monkeypatch, app_store.data_dir, app_store.url, password="s3cret")
    sign_in(at, "mallory", "guess")
    assert any("wrong password" in e for e in errors(at)) and "editor" not in at.session_state
    sign_in(at, "carol", "s3cret")
    assert at.session_state["editor"] == "carol"


# -- tags ------------------------------------------------------------------------------------------
def test_tag_editor_changes_confidence_and_accepts_suggestions(app, app_store):
    app.session_state["editor"] = "ann"
    go(app, "tags")
    gif = app_store.media[GIF]
    app.selectbox(key="tags_media").set_value(gif).run()
    no_exception(app)
    assert [GIF] in [img.captions for img in app.image]  # the GIF itself is shown
    editor = app.data_editor(key=f"tag_editor_{gif}")
    table = editor.value
    shown = media_tags_frame(app_store.store, media_id=gif, status="active")
    assert list(table["tag"]) == list(shown["tag"])
    row = list(table["tag"]).index("nod")
    app.session_state[f"tag_editor_{gif}"] = {"edited_rows": {row: {"confidence": 0.42}}, "added_rows": [],
                                              "deleted_rows": []}
    button(app, "Save confidences").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    with app_store.store() as s:
        nod = s.execute(select(MediaTag).join(Tag, Tag.id == MediaTag.tag_id)
                        .where(MediaTag.media_id == gif, Tag.name == "nod")).scalar_one()
        event = s.scalars(select(AuditEvent).where(AuditEvent.operation == "set_tag_confidence")
                          .order_by(AuditEvent.id.desc())).first()
    assert (nod.confidence, nod.editor, nod.source) == (pytest.approx(0.42), "ann", "editor")
    assert event.editor == "ann" and event.after[f"media_tag:{gif}:{nod.tag_id}"]["confidence"] == pytest.approx(0.42)
    assert app.data_editor(key=f"tag_editor_{gif}").value.set_index("tag").loc["nod", "confidence"] == pytest.approx(0.42)

    # a confidence outside [0, 1] is refused with its reason and changes nothing
    app.session_state[f"tag_editor_{gif}"] = {"edited_rows": {row: {"confidence": 1.5}}, "added_rows": [],
                                              "deleted_rows": []}
    button(app, "Save confidences").click().run()
    assert any("confidence must be in [0, 1]" in e for e in errors(app)), errors(app)
    with app_store.store() as s:
        assert s.get(MediaTag, nod.id).confidence == pytest.approx(0.42)

    # the experts-voting suggestion is accepted
    suggested = media_tags_frame(app_store.store, media_id=gif, status="suggested")
    assert app.multiselect(key=f"tags_suggestions_{gif}").value == []  # nothing accepted by one careless click
    assert app.button(key="tags_accept").disabled and app.button(key="tags_reject").disabled
    app.multiselect(key=f"tags_suggestions_{gif}").set_value(list(suggested["tag"])).run()
    assert app.button(key="tags_accept").label == f"Accept {len(suggested)}"
    app.button(key="tags_accept").click().run()
    no_exception(app)
    after = media_tags_frame(app_store.store, media_id=gif).set_index("tag")
    for tag in suggested["tag"]:
        assert (after.loc[tag, "status"], after.loc[tag, "source"], after.loc[tag, "editor"]) == \
            ("active", "experts_voting", "ann")


def test_per_tag_bulk_confidence(app, app_store):
    app.session_state["editor"] = "ann"
    go(app, "tags")
    app.selectbox(key="tags_tag").set_value("nod").run()
    no_exception(app)
    carrying = media_tags_frame(app_store.store, tag="nod", status="active")
    table = [d for d in app.dataframe if "media_name" in d.value.columns][0].value
    assert list(table["media_id"]) == list(carrying["media_id"])
    assert list(table["confidence"]) == sorted(table["confidence"], reverse=True)
    app.checkbox(key="bulk_all_nod").check()
    app.number_input(key="bulk_confidence_nod").set_value(0.65)
    button(app, "Set confidence").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    after = media_tags_frame(app_store.store, tag="nod")
    assert set(after["media_id"]) == set(carrying["media_id"]) and set(after["confidence"]) == {0.65}
    assert set(after["editor"]) == {"ann"}


def test_per_tag_bulk_actions_spare_decisions_and_decide_suggestions(tmp_path_factory, monkeypatch):
    """Its own store (rows are added to it). The tag "nod": active on the GIF and a photo, suggested on
    two photos, rejected on the last. Bulk confidence and removal touch the active rows only; the
    suggestions are accepted or rejected in bulk, refused when one changed since the editor looked;
    on the Per GIF tab adding a tag already there is refused, re-adding a rejected one is audited."""
    fx = new_fixture_store(tmp_path_factory, "tags-bulk")
    photos = sorted(fx.largest_face)  # photos[0] carries "nod" (fixture)
    gif, tagged, maybe, spare, rejected = fx.media[GIF], *(fx.media[p] for p in photos)
    add_tags(fx.store, [maybe, spare, rejected], ["nod"], "model-run", confidence=0.5, source="experts_voting",
             status="suggested")
    set_tag_status(fx.store, [(rejected, "nod")], "rejected", "ann")

    def nod() -> dict[int, tuple]:
        frame = media_tags_frame(fx.store, tag="nod")
        return {m: (c, st, e) for m, c, st, e in zip(frame["media_id"], frame["confidence"], frame["status"],
                                                      frame["editor"])}

    def last_event() -> AuditEvent:
        with fx.store() as s:
            return s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()

    at = open_app(monkeypatch, fx.data_dir, fx.url)
    at.session_state["editor"] = "bob"
    go(at, "tags")
    at.selectbox(key="tags_tag").set_value("nod").run()
    no_exception(at)
    tables = [d.value for d in at.dataframe if "media_name" in d.value.columns]
    assert [sorted(t["media_id"]) for t in tables] == [sorted([gif, tagged]), sorted([maybe, spare]), [rejected]]
    assert sorted(at.multiselect(key="bulk_media_nod").options) == sorted([GIF, photos[0]])
    assert sorted(at.multiselect(key="bulk_suggested_nod").options) == sorted(photos[1:3])

    # "all" means all tagged media: the suggestions and the rejection keep their confidence and status
    at.checkbox(key="bulk_all_nod").check()
    at.number_input(key="bulk_confidence_nod").set_value(0.65)
    button(at, "Set confidence").click().run()
    no_exception(at)
    assert not errors(at), errors(at)
    assert nod() == {gif: (0.65, "active", "bob"), tagged: (0.65, "active", "bob"),
                     maybe: (0.5, "suggested", "model-run"), spare: (0.5, "suggested", "model-run"),
                     rejected: (0.5, "rejected", "ann")}
    assert (last_event().operation, last_event().n_entities) == ("set_tag_confidence", 2)

    # one suggestion rejected by picking it
    at.multiselect(key="bulk_suggested_nod").set_value([spare])
    button(at, "Reject suggestions").click().run()
    no_exception(at)
    assert not errors(at), errors(at)
    assert nod()[spare] == (0.5, "rejected", "bob") and nod()[maybe] == (0.5, "suggested", "model-run")
    assert (last_event().operation, last_event().editor) == ("set_tag_status", "bob")

    # experts voting refreshes the other suggestion meanwhile: accepting what bob saw is a conflict
    add_tags(fx.store, [maybe], ["nod"], "model-run", confidence=0.9, source="experts_voting", status="suggested")
    events = count(fx.store, AuditEvent)
    at.checkbox(key="bulk_suggested_all_nod").check()
    button(at, "Accept suggestions").click().run()
    no_exception(at)
    assert any(e.startswith("Conflict:") and "changed by model-run" in e for e in errors(at)), errors(at)
    assert nod()[maybe] == (0.9, "suggested", "model-run") and count(fx.store, AuditEvent) == events
    button(at, "Accept suggestions").click().run()  # now bob has seen the refreshed one
    no_exception(at)
    assert not errors(at), errors(at)
    assert nod()[maybe] == (0.9, "active", "bob") and last_event().operation == "set_tag_status"

    # Per GIF: "nod" is on the GIF already: adding it again is refused and says what to do instead
    at.selectbox(key="tags_media").set_value(gif).run()
    at.text_input(key=f"tags_new_{gif}").input("Nod")
    button(at, "Add tag").click().run()
    no_exception(at)
    assert any(e.startswith("Conflict:") and "is already tagged 'nod' with confidence 0.65 by bob at " in e
               and " UTC; edit its confidence instead" in e for e in errors(at)), errors(at)
    assert nod()[gif] == (0.65, "active", "bob") and count(fx.store, AuditEvent) == events + 1
    # ... a rejected one is restored by adding it, and the audit log keeps the rejection as its before state
    at.selectbox(key="tags_media").set_value(rejected).run()
    at.text_input(key=f"tags_new_{rejected}").input("nod")
    at.number_input(key=f"tags_new_confidence_{rejected}").set_value(0.4)
    button(at, "Add tag").click().run()
    no_exception(at)
    assert not errors(at), errors(at)
    assert nod()[rejected] == (0.4, "active", "bob")
    event = last_event()
    key = next(k for k in event.after if k.startswith(f"media_tag:{rejected}:"))
    assert (event.operation, event.before[key]["status"], event.after[key]["status"]) == ("add_tags", "rejected", "active")
    assert "1 of them rejected before" in event.summary

    # removing "nod" from all tagged media leaves the rejected row (spare): experts voting remembers it
    at.checkbox(key="bulk_all_nod").check()
    button(at, "Remove tag").click().run()
    no_exception(at)
    assert not errors(at), errors(at)
    assert nod() == {spare: (0.5, "rejected", "bob")}

    # "all" means the media bob had on screen: one tagged by carol after the page was drawn is left out
    add_tags(fx.store, [gif], ["nod"], "carol", confidence=0.2)
    at.run()
    add_tags(fx.store, [tagged], ["nod"], "carol", confidence=0.2)
    at.checkbox(key="bulk_all_nod").check()
    at.number_input(key="bulk_confidence_nod").set_value(0.9)
    button(at, "Set confidence").click().run()
    no_exception(at)
    assert not errors(at), errors(at)
    assert any("1 media got 'nod' after the page was drawn and were left out" in w.value for w in at.warning)
    assert nod()[gif] == (0.9, "active", "bob") and nod()[tagged] == (0.2, "active", "carol")


# -- ingest and export ----------------------------------------------------------------------------
def test_ingest_page_folder_and_uploads(tmp_path, monkeypatch, app_store):
    data_dir, folder = tmp_path / "data", tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(SHARED / "lfw" / "Hugo_Chavez" / "Hugo_Chavez_0001.jpg", folder)
    (folder / "broken.gif").write_text("this is text, not a GIF\n")
    url = f"sqlite:///{tmp_path / 'ingest.db'}"
    # LFW photos are under 20 kB, most GIFs far over
    at = open_app(monkeypatch, data_dir, url, GIFLENS_MAX_FILE_BYTES="20000")
    at.session_state["editor"] = "ann"
    go(at, "ingest")
    at.text_input(key="ingest_folder").input(str(folder))
    button(at, "Ingest folder").click().run()
    no_exception(at)
    store = open_store(url)
    faces = count(store, Face)
    assert faces >= 1
    assert f"ingested 1, cached 0, failed 1, faces {faces}" in messages(at)
    failures = [d.value for d in at.dataframe if "reason" in d.value.columns][0]
    # the file's name, then the reason alone (not behind the path again), then where it is
    assert list(failures.columns) == ["file", "reason", "path"]
    assert list(failures["file"]) == ["broken.gif"] and list(failures["path"]) == [str(folder / "broken.gif")]
    assert failures["reason"].iloc[0] and not failures["reason"].iloc[0].startswith(str(folder))
    with store() as s:
        assert sorted((Path(p).name, st) for p, st in s.execute(select(Media.path, Media.status))) == \
            [("Hugo_Chavez_0001.jpg", "ok"), ("broken.gif", "failed")]
        [event] = s.scalars(select(AuditEvent)).all()
    # the batch is one audit event naming the signed-in editor
    assert (event.operation, event.editor, event.n_entities, event.after["failed"]) == ("ingest", "ann", 2, 1)
    assert f"Recorded as audit event {event.id} by ann." in [c.value for c in at.caption]

    # uploads: the size is checked before anything is saved (the widget itself refuses other types, and
    # ingest sniffs the content); the accepted photo is ingested, the fake PNG fails with its reason
    photo = SHARED / "lfw" / "Ai_Sugiyama" / "Ai_Sugiyama_0001.jpg"
    big = SHARED / "gifs" / GIF
    assert {f".{e}" for e in allowed_extensions()} <= set(at.file_uploader(key="ingest_uploads").allowed_type)
    at.file_uploader(key="ingest_uploads").set_value([
        (photo.name, photo.read_bytes(), "image/jpeg"), ("fake.png", b"just some text", "image/png"),
        (big.name, big.read_bytes(), "image/gif")]).run()
    button(at, "Ingest uploaded files").click().run()
    no_exception(at)
    refused = [d.value for d in at.dataframe if "reason" in d.value.columns and big.name in set(d.value["file"])][0]
    assert list(refused["file"]) == [big.name]
    size = f"{big.stat().st_size / 1024:.1f}".removesuffix(".0")
    assert refused["reason"].iloc[0] == f"{size} KiB is over the limit of 19.5 KiB per file"
    assert any(m.startswith("ingested 1, cached 0, failed 1") for m in messages(at)), messages(at)
    failures = [d.value for d in at.dataframe if "reason" in d.value.columns and "fake.png" in d.value["file"].iloc[0]]
    assert failures and "text" in failures[0]["reason"].iloc[0] and failures[0]["file"].iloc[0] == "fake.png"
    assert not failures[0]["reason"].iloc[0].startswith(str(data_dir))  # the hidden upload folder is in "path" only
    # the store's failed files read the same way
    failed = [d.value for d in at.dataframe if "media_id" in d.value.columns and "reason" in d.value.columns][0]
    assert set(failed["file"]) == {"broken.gif", "fake.png"} and not failed["reason"].str.contains(str(tmp_path)).any()
    with store() as s:
        uploaded = s.scalars(select(Media).where(Media.path.like(f"%{photo.name}"))).one()
    assert uploaded.status == "ok" and Path(uploaded.path).is_relative_to(data_dir / "uploads")
    assert Path(uploaded.path).read_bytes() == photo.read_bytes()


def test_ingest_page_browses_the_servers_folders(tmp_path, monkeypatch):
    """Pick a folder without typing its path: open subfolders, go up, use the one shown."""
    from labeling.folders import list_folder

    incoming = tmp_path / "incoming"
    (incoming / "more").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    shutil.copy(SHARED / "lfw" / "Hugo_Chavez" / "Hugo_Chavez_0001.jpg", incoming)
    (incoming / "clip.GIF").write_bytes(b"GIF89a")
    (incoming / "notes.txt").write_text("not media")
    listing = list_folder(incoming)
    assert [p.name for p in listing.subfolders] == ["more"] and listing.media_files == 2 and listing.error is None
    assert "cannot read" in list_folder(tmp_path / "nowhere").error

    at = open_app(monkeypatch, tmp_path / "data", f"sqlite:///{tmp_path / 'browse.db'}")
    go(at, "ingest")
    root = tmp_path.resolve()
    # the server's folders are listed for editors only
    assert not any(f"`{root}`" in c.value for c in at.caption) and not any(b.label == "Up one folder" for b in at.button)
    at.session_state["editor"] = "ann"
    at.run()
    assert any(f"`{root}`" in c.value for c in at.caption), [c.value for c in at.caption]
    sub = at.selectbox(key=f"ingest_browse_sub_{root}")
    assert "incoming" in sub.options and ".hidden" not in sub.options
    sub.set_value("incoming").run()
    no_exception(at)
    assert any(f"`{incoming.resolve()}` · 2 media file(s) here, 1 subfolder(s)" in c.value for c in at.caption)
    button(at, "Use this folder").click().run()
    assert at.text_input(key="ingest_folder").value == str(incoming.resolve())
    button(at, "Up one folder").click().run()
    assert any(f"`{root}`" in c.value for c in at.caption)


def test_export_page_runs_the_export_and_shows_the_manifest(app, app_store, tmp_path):
    app.session_state["editor"] = "ann"
    go(app, "export")
    # something is chosen from the start: no earlier export shows as "none", not as an empty choice
    assert app.selectbox(key="export_previous").value is not None
    # no folder is refused (it would be the server's working directory); a relative one is in the data folder
    app.text_input(key="export_out_dir").input("  ")
    button(app, "Run export").click().run()
    assert "Give an output folder." in errors(app), errors(app)
    app.text_input(key="export_out_dir").input("relative-export")
    button(app, "Run export").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    assert (Path(app_store.data_dir) / "relative-export" / "manifest.json").is_file()
    out = tmp_path / "export"
    app.text_input(key="export_out_dir").input(str(out))
    button(app, "Run export").click().run()
    no_exception(app)
    assert not errors(app), errors(app)
    manifest = json.loads((out / "manifest.json").read_text())
    with app_store.store() as s:
        confirmed = s.execute(select(FaceLabel.face_id, FaceLabel.class_id)
                              .join(CelebrityClass, CelebrityClass.id == FaceLabel.class_id)
                              .where(FaceLabel.status.in_(["approved", "relabeled"]),
                                     CelebrityClass.status != "retired")).all()
        recorded = s.scalars(select(Export).order_by(Export.id.desc())).first()
    crops = sorted(int(p.stem) for p in (out / "raw_dataset").rglob("*.jpg"))
    assert crops == sorted(f for f, _ in confirmed) and len(crops) > 0  # every fixture face has its crop
    assert manifest["counts"]["classes"] == len({c for _, c in confirmed})
    assert any(m.startswith(f"exported {manifest['counts']['classes']} classes, {len(crops)} faces")
               for m in messages(app)), messages(app)
    assert json.loads(app.json[0].value)["counts"] == manifest["counts"]
    assert recorded.editor == "ann" and Path(recorded.out_dir).resolve() == out.resolve()
    past = app.main.dataframe[-1].value
    assert Path(past["out_dir"].iloc[0]).resolve() == out.resolve()
    # a second export into the same folder is refused unless overwrite is ticked
    button(app, "Run export").click().run()
    assert any("exists and is not empty" in e for e in errors(app)), errors(app)
    # the next export keeps the label indices of the newest earlier one by default
    assert Path(app.selectbox(key="export_previous").value).resolve() == out.resolve()
    again = tmp_path / "export-2"
    app.text_input(key="export_out_dir").input(str(again))
    button(app, "Run export").click().run()
    no_exception(app)
    assert (again / "labels.csv").read_text() == (out / "labels.csv").read_text()
    assert json.loads((again / "manifest.json").read_text())["class_index_order"] == "previous export"


def test_upload_checks_and_parsers():
    from models.settings import Settings

    settings = Settings(max_file_bytes=1000)
    assert check_upload("a.GIF", 10, settings) is None
    assert "type .txt is not accepted" in check_upload("notes.txt", 10, settings)
    assert "type .? is not accepted" in check_upload("no-extension", 10, settings)
    assert check_upload("a.jpg", 0, settings) == "the file is empty"
    assert check_upload("a.jpg", 2_500_000, settings) == "2.4 MiB is over the limit of 1000 bytes per file"
    assert human_bytes(200 * 2 ** 20) == "200 MiB" and human_bytes(1536) == "1.5 KiB" and human_bytes(999) == "999 bytes"
    assert safe_file_name("../../etc/passwd") == "passwd" and safe_file_name("..\\x\\.hidden.gif") == "hidden.gif"
    assert safe_file_name("\x00") == "upload"
    assert parse_ids("12, 15 20;12") == [12, 15, 20] and parse_ids("") == []
    with pytest.raises(ValidationError, match="whole numbers"):
        parse_ids("1, -2")


# -- OIDC login (Streamlit's st.login) when [auth] is configured -----------------------------------------
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "test-cookie-secret-not-used",
        "client_id": "giflens-test", "client_secret": "test-client-secret-not-used",
        "server_metadata_url": "https://id.example.invalid/.well-known/openid-configuration"}


def with_auth(at: AppTest, auth: dict, user: dict | None = None) -> AppTest:
    """The same session, now with an [auth] secrets section (and, when given, what st.user holds)."""
    at.secrets["auth"] = auth
    if user is not None:
        at.user = user
    at.run()
    no_exception(at)
    return at


def sidebar_buttons(at: AppTest) -> list[str]:
    return [b.label for b in at.sidebar.button]


def test_without_auth_the_sidebar_asks_for_a_name(app):
    assert "Log in" not in sidebar_buttons(app)
    assert app.sidebar.text_input(key="sign_in_name").value == ""
    assert "Sign in" in [b.label for b in app.button]  # the form's submit button


def test_with_auth_the_sidebar_offers_log_in_and_no_name_form(app, app_store):
    at = with_auth(app, AUTH)
    assert sidebar_buttons(at) == ["Log in"]
    assert not [t for t in at.sidebar.text_input if t.key == "sign_in_name"]  # nobody can type a name
    events = count(app_store.store, AuditEvent)
    go(at, "classes")
    at.text_input(key="add_class_name").input("Nobody Logged In")
    button(at, "Add class").click().run()
    no_exception(at)
    assert any("log in with the sidebar's button" in e for e in errors(at))
    assert count(app_store.store, AuditEvent) == events
    # pressing it hands over to st.login; without a usable provider (no Authlib, no network here) the
    # editor reads why instead of a stack trace
    button(at, "Log in").click().run()
    no_exception(at)
    assert any(e.startswith("Log in is not available") for e in errors(at)), errors(at)


def test_named_providers_get_one_button_each(app):
    at = with_auth(app, {"redirect_uri": AUTH["redirect_uri"], "cookie_secret": AUTH["cookie_secret"],
                         "google": {k: AUTH[k] for k in ("client_id", "client_secret", "server_metadata_url")},
                         "okta": {k: AUTH[k] for k in ("client_id", "client_secret", "server_metadata_url")}})
    assert sidebar_buttons(at) == ["Log in with google", "Log in with okta"]


def test_a_logged_in_user_is_the_editor_the_audit_log_names(app, app_store):
    at = with_auth(app, AUTH, user={"is_logged_in": True, "name": "Ann Oidc", "email": "ann@example.org"})
    assert any("**Ann Oidc**" in m.value for m in at.sidebar.markdown)
    assert "Log out" in sidebar_buttons(at) and "Log in" not in sidebar_buttons(at)
    go(at, "classes")
    at.text_input(key="add_class_name").input("Single Sign On Person")
    button(at, "Add class").click().run()
    no_exception(at)
    assert not errors(at), errors(at)
    with app_store.store() as s:
        added = s.scalars(select(CelebrityClass).where(CelebrityClass.name == "Single Sign On Person")).one()
        event = s.scalars(select(AuditEvent).where(AuditEvent.operation == "add_class")
                          .order_by(AuditEvent.id.desc())).first()
    assert added.updated_by == "Ann Oidc" and event.editor == "Ann Oidc"

    # no name claim: the e-mail names the editor
    at = with_auth(at, AUTH, user={"is_logged_in": True, "email": "bob@example.org"})
    assert any("**bob@example.org**" in m.value for m in at.sidebar.markdown)
