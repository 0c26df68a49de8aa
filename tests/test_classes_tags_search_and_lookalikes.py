"""Classes and Tags pages:

1. The class search ignores accents and reads "_" as a space: "Beyoncé", "Céline Dion" find the "Beyonce" and
   "Celine Dion" GIPHY's list imported, "Brad_Pitt" (the CSV / folder form) finds "Brad Pitt", and a GIPHY
   label "Brad_Pitt_[m.0c6qh]" finds the class of that external id; exact matches work as before.
2. Adding (or renaming to) a name that only accents, case or underscores tell from an existing class's is
   not written at once: the page names the look-alike classes and asks for "It is a different person".
3. Per GIF "Remove tags" on picks another editor removed meanwhile: nothing is written, each vanished tag is
   named with who removed it in which operation, the rest stay picked; a press with no pick says
   "Choose the tags first."
Stores are small SQLite files built with the labeling operations; the pages run in AppTest."""
from __future__ import annotations

from conftest import make_faces, open_app
from labeling.classes import add_class
from labeling.db import open_store
from labeling.queries import classes_frame, media_frame, media_tags_frame, search_classes
from labeling.tags import add_tags, remove_tags
from labeling.validation import class_name_key, search_key
from test_app_pages import button, errors, go, no_exception
from test_tags_picks_and_utc_notes import utc_at


def _catalog_store(tmp_path):
    """A store with GIPHY-style classes (no accents, some with a Freebase id): (url, store, name -> id)."""
    url = f"sqlite:///{tmp_path / 'classes.db'}"
    store = open_store(url)
    ids = {}
    for name, external in [("Beyonce", "m.01mpq7s"), ("Celine Dion", "m.01cwhp"), ("Zoe Saldana", "m.05qg6g"),
                           ("Brad Pitt", "m.0c6qh"), ("Michael Pitt", None), ("Celine", None)]:
        ids[name] = add_class(store, name, "import", external_id=external)[0]
    return url, store, ids


def _found(catalog, text: str, statuses=None) -> list[str]:
    return sorted(search_classes(catalog, text, statuses)["name"])


# -- 1. search --------------------------------------------------------------------------------------------
def test_search_finds_accent_and_underscore_variants_and_a_giphy_label(tmp_path):
    assert search_key("Zoë Saldaña") == search_key("ZOE_SALDANA") == "zoe saldana"
    assert class_name_key("Beyoncé") != class_name_key("Beyonce")  # the uniqueness key is unchanged
    _, store, _ = _catalog_store(tmp_path)
    catalog = classes_frame(store)
    # each found nothing before
    assert _found(catalog, "Beyoncé") == ["Beyonce"]
    assert _found(catalog, "Céline Dion") == ["Celine Dion"]
    assert _found(catalog, "Zoë Saldaña") == ["Zoe Saldana"]
    assert _found(catalog, "Brad_Pitt") == ["Brad Pitt"]
    assert _found(catalog, "Brad_Pitt_[m.0c6qh]") == ["Brad Pitt"]
    assert _found(catalog, "Bradley Pitt [m.0c6qh]") == ["Brad Pitt"]  # renamed since: its id still finds it
    # as before: parts of names, external ids, full-width forms, the status filter
    assert _found(catalog, "pitt") == ["Brad Pitt", "Michael Pitt"]
    assert _found(catalog, "m.01cwhp") == ["Celine Dion"]
    assert _found(catalog, "ＢＥＹＯＮＣＥ") == ["Beyonce"]
    assert _found(catalog, "céline") == ["Celine", "Celine Dion"]
    assert _found(catalog, "Beyoncé", ["retired"]) == [] and _found(catalog, "nobody here") == []


# -- 2. look-alike names on the Classes page --------------------------------------------------------------
def test_adding_or_renaming_to_a_look_alike_name_names_the_classes_and_needs_a_tick(tmp_path, monkeypatch):
    url, store, ids = _catalog_store(tmp_path)
    at = open_app(monkeypatch, tmp_path / "data", url)
    at.session_state["editor"] = "ann"
    go(at, "classes")
    at.text_input(key="class_search").set_value("Beyoncé").run()
    assert list(at.dataframe[0].value["name"]) == ["Beyonce"]  # was: no class matches

    count = len(classes_frame(store))
    at.text_input(key="add_class_name").set_value("Beyoncé")
    button(at, "Add class").click().run()
    no_exception(at)
    warned = [w.value for w in at.warning if "different person" in w.value]
    assert warned == [f"'Beyoncé' reads as 1 existing class(es) once accents, case and underscores are ignored: "
                      f"'Beyonce' (id {ids['Beyonce']}, active). If it is the same person, use that class. Nothing "
                      "was written: tick \"It is a different person\" and press Add class again."], warned
    assert not at.success and len(classes_frame(store)) == count  # was: "Done: add class 'Beyoncé'"

    at.checkbox(key="add_class_different").check()
    button(at, "Add class").click().run()
    no_exception(at)
    assert not errors(at) and any("add class 'Beyoncé'" in s.value for s in at.success)
    assert "Beyoncé" in set(classes_frame(store)["name"])
    assert not at.checkbox(key="add_class_different").value  # the next name needs its own tick

    # the very name (its key) is the store's to refuse, not a look-alike to confirm
    at.text_input(key="add_class_name").set_value("BEYONCE")
    button(at, "Add class").click().run()
    assert not [w.value for w in at.warning if "different person" in w.value]
    assert any("already exists" in e for e in errors(at)), errors(at)

    # renaming "Celine" to "Céline Dion" while "Celine Dion" exists
    celine = ids["Celine"]
    at.text_input(key="class_search").set_value("").run()
    at.selectbox(key="class_selected").set_value(celine).run()
    at.text_input(key=f"rename_name_{celine}").set_value("Céline_Dion")
    button(at, "Rename").click().run()
    no_exception(at)
    warned = [w.value for w in at.warning if "different person" in w.value]
    assert len(warned) == 1 and f"'Celine Dion' (id {ids['Celine Dion']}, active)" in warned[0], warned
    assert "press Rename again" in warned[0]
    assert classes_frame(store).set_index("class_id").loc[celine, "name"] == "Celine"
    at.checkbox(key=f"rename_different_{celine}").check()
    button(at, "Rename").click().run()
    no_exception(at)
    assert not errors(at), errors(at)
    assert classes_frame(store).set_index("class_id").loc[celine, "name"] == "Céline_Dion"

    # a rename that keeps the accent-free name (a display name, accents added) is not asked about
    beyonce = ids["Beyonce"]
    at.selectbox(key="class_selected").set_value(beyonce).run()
    at.text_input(key=f"rename_display_{beyonce}").set_value("Queen B")
    button(at, "Rename").click().run()
    no_exception(at)
    assert not [w.value for w in at.warning if "different person" in w.value]
    assert classes_frame(store).set_index("class_id").loc[beyonce, "display_name"] == "Queen B"


# -- 3. Per GIF "Remove tags" on picks another editor removed meanwhile ------------------------------------
def _removal_warnings(at) -> list[str]:
    return [w.value for w in at.warning if "picked to remove" in w.value]


def _active(store, media_id: int) -> list[str]:
    return sorted(media_tags_frame(store, media_id=media_id, status="active")["tag"])


def test_per_gif_remove_on_picks_another_editor_removed_writes_nothing_and_says_who(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    store = open_store(url)
    make_faces(store, 1, 0)  # one GIF, as ingest writes it (its file is not needed here)
    gif = int(media_frame(store)["media_id"].iloc[0])
    add_tags(store, [gif], ["aint", "got", "nobody", "time"], "alice", confidence=0.7)
    at = open_app(monkeypatch, tmp_path / "data", url)
    at.session_state["editor"] = "ann"
    go(at, "tags")
    picker = f"tags_remove_{gif}"

    # nothing picked
    button(at, "Remove").click().run()
    no_exception(at)
    assert errors(at) == ["Choose the tags first."] and _active(store, gif) == ["aint", "got", "nobody", "time"]

    # the one pick is gone: was no message at all
    at.multiselect(key=picker).set_value(["got"])
    removed = remove_tags(store, [gif], ["got"], "bob")
    button(at, "Remove").click().run()
    no_exception(at)
    assert _removal_warnings(at) == [
        f"Tag(s) you picked to remove are no longer on this media item: 'got' removed by bob in operation "
        f"{removed.event_id} ({utc_at(store, removed.event_id)}). Nothing was removed."], _removal_warnings(at)
    assert not errors(at) and not at.success

    # one of two picks is gone: nothing removed (was: the other removed alone), the other kept picked
    at.multiselect(key=picker).set_value(["time", "nobody"])
    removed = remove_tags(store, [gif], ["nobody"], "bob")
    button(at, "Remove").click().run()
    no_exception(at)
    note = _removal_warnings(at)
    assert len(note) == 1 and f"'nobody' removed by bob in operation {removed.event_id}" in note[0], note
    assert "Nothing was removed. Still picked: 'time'; press again to remove those." in note[0], note
    assert not at.success and _active(store, gif) == ["aint", "time"]
    assert at.multiselect(key=picker).value == ["time"]

    # pressed again on what is left: removed, and no warning
    button(at, "Remove").click().run()
    no_exception(at)
    assert not _removal_warnings(at) and any("remove tag(s) 'time'" in s.value for s in at.success)
    assert _active(store, gif) == ["aint"]

    # the last tag went meanwhile: the form is gone with it, and the press is still answered
    at.multiselect(key=picker).set_value(["aint"])
    removed = remove_tags(store, [gif], ["aint"], "bob")
    button(at, "Remove").click().run()
    no_exception(at)
    note = _removal_warnings(at)
    assert len(note) == 1 and f"'aint' removed by bob in operation {removed.event_id}" in note[0], note
