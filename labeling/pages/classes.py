"""Classes: the catalog (sortable, searchable) and every class operation, each audited and undoable."""
from typing import Any, Callable

import pandas as pd
import streamlit as st

from labeling.classes import add_class, find_class, merge_classes, rename_class, set_class_attributes, set_class_status, split_class
from labeling.errors import StoreError, ValidationError
from labeling.pages.common import different_person as shared_different_person
from labeling.pages.common import forget_look_alikes
from labeling.pages.common import (Choice, class_usable, class_fate, current_editor, escape_markdown, flash,
                                   get_settings, get_store, history_table, keep_choice, last_change, media_file,
                                   parse_ids, plain, refuse_lost_class, require_editor, select_choice, show_error,
                                   versions_seen, write)
from labeling.queries import DECIDED_STATUSES, TURNED_DOWN, classes_frame, faces_frame, history_frame, search_classes
from labeling.schema import CLASS_STATUSES
from labeling.validation import ATTRIBUTES

SELECT_KEY = "class_selected"
NEXT_KEY = "class_selected_next"  # set by an operation; becomes the selection on the next run
SEARCH_KEY = "class_search"
STATUS_KEY = "class_status_filter"
SEEDS_WARNED_KEY = "add_class_seeds_warned"  # decided seed faces the last warning named: face id -> version
ADD_DIFFERENT_KEY = "add_class_different"  # the Add form's "It is a different person" tick
FILLED_KEY = "class_forms_filled"  # class id -> the version its rename and attribute boxes were filled from
VIEW_KEY = "class_view_drawn"  # the search, status filter and class being edited as the last run drew them
FORMS = ("rename", "attributes", "merge", "split", "status")  # the class's forms: "<form>_submit_<class id>"
DEFAULT_STATUSES = ["active", "proposed"]
CHOOSE_TO_EDIT = "Choose the class to edit"  # the selector's placeholder: it starts empty (see fallback)
CATALOG_COLUMNS = ["class_id", "name", "status", "faces", "confirmed", "predicted", "predicted_by_model", "gender",
                   "ethnicity", "birth_year", "country", "external_id", "display_name", "merged_into_name",
                   "updated_by", "updated_at", "version"]

settings, store = get_settings(), get_store()
catalog = classes_frame(store)
drawn_view = st.session_state.get(VIEW_KEY)  # as drawn last run (moved_out)
seen = versions_seen("classes", dict(zip(catalog["class_id"].tolist(), catalog["version"].tolist())))
by_id = catalog.set_index("class_id")


def show_created() -> None:
    """A class an operation just created, retired or merged into (NEXT_KEY) becomes the selection. The
    selector only offers the filtered view, so when the search or the status filter hides that class
    they are widened (the search cleared, its status added) before their widgets are drawn."""
    created = st.session_state.pop(NEXT_KEY, None)
    if created not in by_id.index:
        return
    st.session_state[SELECT_KEY] = created
    statuses = st.session_state[STATUS_KEY]
    if created in search_classes(catalog, st.session_state.get(SEARCH_KEY, ""), statuses or None)["class_id"].tolist():
        return
    st.session_state[SEARCH_KEY] = ""
    status = by_id.loc[created, "status"]
    if statuses and status not in statuses:
        st.session_state[STATUS_KEY] = [*statuses, status]


# the status filter's default lives in the session state (not the widget) so that show_created may widen it
st.session_state.setdefault(STATUS_KEY, list(DEFAULT_STATUSES))
show_created()

st.title("Classes")
left, right = st.columns([3, 2])
text = left.text_input("Search", key=SEARCH_KEY, persist_state="session",
                       placeholder="name, display name or external id")
statuses = right.multiselect("Status", CLASS_STATUSES, key=STATUS_KEY, persist_state="session")
view = search_classes(catalog, text, statuses or None)
st.dataframe(view[CATALOG_COLUMNS], hide_index=True, width="stretch",
             column_config={"faces": st.column_config.NumberColumn(help="faces labeled with the class now"),
                            "confirmed": st.column_config.NumberColumn(help="approved or relabeled"),
                            "predicted_by_model": st.column_config.NumberColumn(help="the model's latest prediction")})
st.caption(f"{len(view)} of {len(catalog)} classes · click a column header to sort")


def class_labels(frame: pd.DataFrame) -> dict[int, str]:
    """Each class's option text in the class boxes, built once per run over whole columns: a format_func
    reading by_id.loc[...] per option cost 0.5 ms an option, over a second per 2,306-option box (three
    boxes a run)."""
    ids = frame["class_id"].astype(int)
    text = (frame["name"].astype(str) + " (id " + ids.astype(str) + ", " + frame["status"].astype(str) + ", "
            + frame["faces"].astype(str) + " faces)")
    return dict(zip(ids.tolist(), text.tolist()))


LABELS = class_labels(catalog)


def label(class_id: int) -> str:
    """A class box's option text (LABELS), "class <id>" for an id the catalog no longer holds."""
    return LABELS.get(class_id, f"class {class_id}")


def other_classes(class_id: int) -> list[int]:
    """The classes a merge or a split of `class_id` may move faces to: every other class but the retired
    ones (which take no labels), in catalog order; one vectorised filter, not a lookup per class."""
    usable = (catalog["class_id"] != class_id) & (catalog["status"] != "retired")
    return catalog.loc[usable, "class_id"].astype(int).tolist()


def expected(class_id: int) -> int:
    """The version the editor was shown, so an edit based on a stale view is refused (merge, split; the
    forms of boxes check the version the boxes were filled from, `boxes_version`)."""
    return seen.get(class_id, int(by_id.loc[class_id, "version"]))


def keep_editing(class_id: int) -> None:
    """The class to select after an operation that may hide it (created, retired, merged into) from the
    filtered view: `show_created` makes it the selection on the next run."""
    st.session_state[NEXT_KEY] = class_id


def select_created(result) -> None:
    keep_editing(result[0])


def label_text(face: pd.Series) -> str:
    """"face 5 approved as 'Serena Williams' by bob", "face 6 rejected by bob", "face 7 predicted as 'Al Gore'":
    a face's label as it is now (a faces_frame row)."""
    status = face["label_status"]
    name = face["class_name"] if pd.notna(face["class_name"]) else (
        face["predicted_class_name"] if status == "predicted" else None)
    named = f" as {name!r}" if pd.notna(name) else ""
    by = f" by {face['editor']}" if pd.notna(face["editor"]) else ""
    return f"face {int(face['face_id'])} {TURNED_DOWN.get(status, status)}{named}{by}"


def seed_versions(seed_ids: list[int], override: bool) -> dict[int, int] | None:
    """The seed faces' label versions (add_class's expected_versions), or None after a warning when some
    carry an editor's decision (approved, relabeled, rejected, marked unknown) the editor has not agreed to
    change: a new class takes its seed faces whatever was decided for them, as a new class seeded with a
    selection on Explore does, which needs the same tick.

    The tick counts for the decided faces the last warning named, at the versions it named them: a face
    decided (again) since is named in a new warning rather than relabeled unseen."""
    faces = faces_frame(store)
    faces = faces[faces["face_id"].isin(seed_ids)]
    decided = faces[faces["label_status"].isin(DECIDED_STATUSES)]
    named = dict(zip(decided["face_id"].astype(int), decided["version"].astype(int)))
    if named and not (override and st.session_state.get(SEEDS_WARNED_KEY) == named):
        st.session_state[SEEDS_WARNED_KEY] = named
        listed = "; ".join(label_text(f) for _, f in decided.head(10).iterrows())
        st.warning(plain(f"{len(named)} of the seed faces carry an editor's decision, which the new class would "
                         f"change: {listed}{' ...' if len(named) > 10 else ''}. Nothing was written: tick \"Change "
                         "seed faces editors decided too\" and press Add class again, or leave them out."))
        return None
    return dict(zip(faces["face_id"].astype(int), faces["version"].astype(int)))


def keep_split_members(class_id: int, members: set[int]) -> str | None:
    """Call before the split form is drawn. When it was submitted with faces that are no longer the class's
    (another editor rejected or relabeled them meanwhile), why nothing is split (naming them and their
    label now); None otherwise.

    The faces picked are read before the box is drawn, as the run that drew them resolves them: the box
    itself drops a face that left its options without a word (and one whose label, shown in its option,
    changed), so a press would split part of the editor's choice. On a press the box is set to the picked
    faces still in the class: the next press splits those."""
    key = f"split_faces_{class_id}"
    picked = [int(f) for f in st.session_state.get(key) or [] if str(f).isdigit()]
    if not st.session_state.get(f"split_submit_{class_id}"):
        return None
    st.session_state[key] = [f for f in picked if f in members]
    left = [f for f in picked if f not in members]
    if not left:
        return None
    now = faces_frame(store).set_index("face_id", drop=False)
    named = [label_text(now.loc[f]) if f in now.index else f"face {f} no longer in the store" for f in left[:10]]
    return (f"Nothing was split: {len(left)} of the faces picked left {by_id.loc[class_id, 'name']!r} since they "
            f"were shown ({'; '.join(named)}{' ...' if len(left) > 10 else ''}). The others stay picked: press "
            "Split again to move them.")


def different_person(form: str, name: str, ticked: bool, button: str, but: int | None = None,
                     current: str | None = None) -> bool:
    """Whether `name` may be written by the form (the look-alike check, shared with Explore):
    `common.different_person` over this page's catalog."""
    return shared_different_person(catalog, form, name, ticked, button, but, current)


def seeded(result) -> None:
    """After a class was added: select it, and forget the decided seed faces and look-alikes a warning named."""
    st.session_state.pop(SEEDS_WARNED_KEY, None)
    st.session_state.pop("add_class_override", None)  # the next class's decided seeds need their own tick
    forget_look_alikes("add", ADD_DIFFERENT_KEY)
    select_created(result)


def fill_forms(class_id: int, row: pd.Series) -> int | None:
    """Fill the class's rename, attribute and status boxes with what the store holds whenever the class
    changed since they were filled (an undo, another editor's operation, the editor's own save), or the
    boxes were not drawn last run. A box keeps its own state once drawn and ignores a new `value=` (or
    `index=`): left alone, it would show an undone value, and the next save would write it back with
    the one field the editor typed (or set the undone status again).

    Returns the version the boxes showed when this run began (None: never filled), the one a press of
    their forms is checked against (`boxes_version`). A press on boxes filled from an older version is
    refilled too: its write is refused as a conflict naming who changed the class, and the editor
    finds the class as it is now to check before pressing again. Keeping what was typed instead left
    the stale boxes on screen while the page moved on to the version read meanwhile, so the next press
    wrote them over the other editor's change."""
    text = {c: "" if pd.isna(row[c]) else str(row[c]) for c in ("name", "display_name", *ATTRIBUTES)}
    boxes = {f"rename_name_{class_id}": text["name"], f"rename_display_{class_id}": text["display_name"],
             **{f"attr_{a}_{class_id}": text[a] for a in ATTRIBUTES}, f"status_{class_id}": row["status"]}
    filled = st.session_state.setdefault(FILLED_KEY, {})
    shown = filled.get(class_id)
    version = int(row["version"])
    if shown != version or not all(k in st.session_state for k in boxes):
        filled[class_id] = version
        st.session_state.update(boxes)
    return shown


def boxes_version(class_id: int, shown: int | None) -> int:
    """The version a press of the rename, attributes or status form is checked against: the one its boxes
    were filled from (`fill_forms`), not the one the page read last run (`expected`), which a refused
    press moves on while the boxes still hold what the editor saw before."""
    return expected(class_id) if shown is None else shown


def save_boxes(action: Callable[[Any, str], Any], stale: bool, after: Callable[[Any], None] | None = None) -> None:
    """`write` for a form of boxes `fill_forms` fills; when they were stale (refilled in this run, the
    write refused as a conflict), say that nothing was written and that they now show the class as it is."""
    if write(action, after=after) is None and stale:
        st.warning("Nothing was saved: the boxes were refilled with the class as it is now; check and press again.")


def text_or_none(value: str) -> str | None:
    return value.strip() or None


def submitted(class_id: int) -> bool:
    """Whether one of the class's forms was submitted in this run (read before they are drawn)."""
    return any(st.session_state.get(f"{form}_submit_{class_id}") for form in FORMS)


def moved_out(class_id: int | None, options: list[int]) -> str | None:
    """Why the class being edited left the filtered view, when another editor's operation moved it out
    (retired, merged, renamed, removed since the page was drawn); None when it is still shown, or when
    the editor's own search or filter, or their own operation, left it out.

    The class is the one the last run drew for editing, named as drawn; the search and filter of that
    run are what tell another editor's change (the class no longer matches them) from the editor's own
    change of the search or the filter (it still would). Its forms are keyed by class, so a form
    submitted for it in this run is not drawn and its click is lost: the editor is then told so."""
    if drawn_view is None or class_id is None or class_id != drawn_view["selected"] or class_id in options:
        return None
    if class_id in search_classes(catalog, drawn_view["search"], drawn_view["statuses"] or None)["class_id"].tolist():
        return None  # still matches what the editor saw: their own search or status filter left it out
    change = last_change(store, [f"class:{int(class_id)}"])
    if change is not None and change.editor == current_editor():
        return None  # the editor's own operation, already reported
    name, status, how = class_fate(store, class_id, shown=drawn_view["name"])
    hidden = ("" if status is None else " (the status filter hides it)" if statuses and status not in statuses
              else " (the search hides it)")
    head = f"{name!r} left the classes shown: {how}{hidden}."
    now = fallback(options)
    then = (f"the forms now edit {by_id.loc[now, 'name']!r}." if now is not None
            else f"{CHOOSE_TO_EDIT.lower()} above." if options else "")
    if submitted(class_id):
        return f"{head} Nothing was saved for it" + (f"; {then}" if then else ".")
    return f"{head} {then[:1].upper()}{then[1:]}" if then else head


def fallback(options: list[int]) -> int | None:
    """The class to edit when the editor's choice is not among the options (none picked yet, or their search
    or another editor's change left it out): the one class shown when the search narrowed the view to it,
    otherwise none, and the forms wait for the editor to choose. Why not the view's first class: the
    selector started on "50 Cent", so a quick Rename after a refused Add renamed a class nobody picked."""
    return options[0] if len(options) == 1 else None


def name_holder(name: str) -> int | None:
    """The class of the catalog drawn that already holds `name`, found as the store finds it (`find_class`, on
    its stored name keys, not keys derived again here), if any; a name the store would refuse outright, or a
    class added since the catalog was read, is left to `add_class` to refuse with its reason."""
    try:
        with store() as session:
            found = find_class(session, name)
    except ValidationError:
        return None
    return found.id if found is not None and found.id in by_id.index else None


def refuse_taken(holder: int) -> None:
    """An Add naming a class that exists: refused as the store would, and that class becomes the one to
    edit, so the Rename or Attributes tab the editor turns to next acts on the class they named."""
    row = by_id.loc[holder]
    flash(f"Refused: a class named {row['name']!r} already exists (id {holder}, {row['status']}): it is now the "
          "class to edit.", "error")
    keep_editing(holder)
    st.rerun()


def lost_press(submit_key: str, box_key: str) -> None:
    """A press of a form that is not drawn this run (its last option left meanwhile: another editor retired
    or merged the only class to merge into) is otherwise lost without a word: refuse it naming what happened
    to the class the editor chose (`refuse_lost_class`). Read before anything is drawn: the button's press
    and the box's value as the run that drew them left them."""
    picked = st.session_state.get(box_key)
    if st.session_state.get(submit_key) and picked is not None:
        refuse_lost_class(store, Choice(None, picked, box_key))


def split(class_id: int, faces: list[int], new_name: str | None, different: bool, target: Choice) -> None:
    """The Split press: into a new class (`new_name`, not None) or the existing class `target`.

    A new class's name gets the look-alike check that Add and Rename make (`different_person`): split
    into "Albert Costá" beside "Albert Costa" made a second class of one person without a word. An
    existing class must be chosen (the box has no default) and still be offered (`refuse_lost_class`)."""
    form = f"split_{class_id}"

    def created(result) -> None:
        forget_look_alikes(form, f"split_different_{class_id}")
        select_created(result)

    if new_name is not None:
        if different_person(form, new_name, different, "Split"):
            write(lambda s, e: split_class(s, class_id, faces, e, new_name=new_name, expected_version=expected(class_id)),
                  after=created)
    elif class_usable(store, target, "Choose the existing class to move the faces to: nothing was split."):
        write(lambda s, e: split_class(s, class_id, faces, e, target_id=target.value, expected_version=expected(class_id)),
              after=select_created)


# The class to edit is one the editor picked in the filtered view: a search or status filter that leaves
# the selection out empties it (`fallback`), so no form acts on a class the editor did not pick.
options = view["class_id"].tolist()
notice = st.empty()  # always drawn: a message that comes and goes must not shift the elements below
if (why := moved_out(st.session_state.get(SELECT_KEY), options)) is not None:
    notice.warning(plain(why))
if options:
    if st.session_state.get(SELECT_KEY) not in options:
        st.session_state[SELECT_KEY] = fallback(options)
    keep_choice(SELECT_KEY, options)
    selected = st.selectbox("Class to edit", options, index=None, placeholder=CHOOSE_TO_EDIT, format_func=label,
                            key=SELECT_KEY, persist_state="session")
else:
    selected = None
    st.info("No class matches the search and status filter: change them, or add a class.")
st.session_state[VIEW_KEY] = {"search": text, "statuses": list(statuses), "selected": selected,
                              "name": None if selected is None else by_id.loc[selected, "name"]}

add_tab, edit_tab, attrs_tab, merge_tab, split_tab, status_tab, history_tab = st.tabs(
    ["Add", "Rename", "Attributes", "Merge", "Split", "Status", "History"])

with add_tab:
    with st.form("add_class_form"):
        name = st.text_input("Name", key="add_class_name")
        display = st.text_input("Display name (optional)", key="add_class_display")
        cols = st.columns(4)
        attrs = {a: cols[i].text_input(a.replace("_", " ").capitalize(), key=f"add_class_{a}") for i, a in enumerate(ATTRIBUTES)}
        seeds = st.text_input("Seed faces (optional): face ids, e.g. a selection from the explorer",
                              key="add_class_seeds", placeholder="12, 15, 20")
        override = st.checkbox("Change seed faces editors decided too", key="add_class_override",
                               help="Seed faces are relabeled to the new class, whatever an editor decided for them "
                                    "(approved, relabeled, rejected, marked unknown): the page names them first")
        different = st.checkbox("It is a different person", key=ADD_DIFFERENT_KEY,
                                help="Add the class although an existing class has the same name once accents, "
                                     "case and underscores are ignored: the page names them first")
        if st.form_submit_button("Add class") and require_editor():
            try:
                seed_ids = parse_ids(seeds)
            except StoreError as exc:
                show_error(exc)
            else:
                if (holder := name_holder(name)) is not None:
                    refuse_taken(holder)
                new_person = different_person("add", name, different, "Add class")
                seen_seeds = seed_versions(seed_ids, override)  # both warnings at once, not one per press
                if new_person and seen_seeds is not None:
                    write(lambda s, e: add_class(s, name, e, display_name=text_or_none(display),
                                                 attributes={k: v for k, v in attrs.items() if v.strip()},
                                                 seed_face_ids=seed_ids, expected_versions=seen_seeds),
                          after=seeded)

for tab in (edit_tab, attrs_tab, merge_tab, split_tab, status_tab, history_tab):
    if selected is None:
        tab.info(f"{CHOOSE_TO_EDIT} in the box above the tabs." if options
                 else "No class to edit: no class matches the search and status filter.")

if selected is not None:
    row = by_id.loc[selected]
    name_md = escape_markdown(row["name"])  # a class named `*NSYNC*` or `[x](y)` is shown as typed
    shown = fill_forms(selected, row)
    stale = shown is not None and shown != int(row["version"])  # a press now is on boxes filled from an older version
    pressed_on = boxes_version(selected, shown)
    with edit_tab:
        st.write(f"Rename **{name_md}**")
        with st.form(f"rename_class_form_{selected}"):
            new_name = st.text_input("New name", key=f"rename_name_{selected}")  # filled by fill_forms
            new_display = st.text_input("Display name (blank: none)", key=f"rename_display_{selected}")
            rename_different = st.checkbox(
                "It is a different person", key=f"rename_different_{selected}",
                help="Rename although another class has the new name once accents, case and underscores are "
                     "ignored: the page names them first")
            if (st.form_submit_button("Rename", key=f"rename_submit_{selected}")
                    and different_person(f"rename_{selected}", new_name, rename_different, "Rename", but=selected,
                                         current=row["name"])):
                save_boxes(lambda s, e: rename_class(s, selected, new_name, e, expected_version=pressed_on,
                                                     display_name=new_display), stale,
                           after=lambda _: forget_look_alikes(f"rename_{selected}", f"rename_different_{selected}"))

    with attrs_tab:
        st.write(f"Demographic attributes of **{name_md}** (blank clears one; used by the bias audit)")
        with st.form(f"attributes_form_{selected}"):
            cols = st.columns(4)
            values = {}
            for i, a in enumerate(ATTRIBUTES):  # filled by fill_forms
                values[a] = cols[i].text_input(a.replace("_", " ").capitalize(), key=f"attr_{a}_{selected}")
            if st.form_submit_button("Save attributes", key=f"attributes_submit_{selected}"):
                save_boxes(lambda s, e: set_class_attributes(s, selected, e, expected_version=pressed_on,
                                                             **{k: text_or_none(v) for k, v in values.items()}),
                           stale)

    with merge_tab:
        targets = other_classes(selected)
        st.write(f"Merge **{name_md}** into another class: its labels and predictions move there, "
                 "and it is retired.")
        if not targets:
            lost_press(f"merge_submit_{selected}", f"merge_target_{selected}")
            st.info("There is no other class to merge into (a retired class takes no labels): add one first.")
        else:
            with st.form(f"merge_form_{selected}"):
                # no default: a press before the editor chose would merge into the catalog's first class
                target = select_choice(st, "Into", targets, index=None, placeholder="Choose the class to merge into",
                                       format_func=label, key=f"merge_target_{selected}")
                if (st.form_submit_button("Merge", key=f"merge_submit_{selected}") 
                        and class_usable(store, target, "Choose the class to merge into: nothing was merged.")):
                    versions = {selected: expected(selected), target.value: expected(target.value)}
                    write(lambda s, e: merge_classes(s, selected, target.value, e, expected_versions=versions),
                          after=lambda _: keep_editing(target.value))  # the merged class is retired: follow its faces

    with split_tab:
        members = faces_frame(store, class_id=selected)
        # a split moves labels: a face only predicted as the class (an editor put it elsewhere) is not offered
        members = members[members["class_id"] == selected]
        st.write(f"Move some of the {len(members)} faces of **{name_md}** to a new or another class.")
        gone = keep_split_members(selected, set(members["face_id"].astype(int)))
        with st.form(f"split_form_{selected}"):
            face_labels = {f: f"face {f} · {p.split('/')[-1]} · {s}"
                           for f, p, s in zip(members["face_id"], members["media_path"], members["label_status"])}
            faces = st.multiselect("Faces", list(face_labels), format_func=face_labels.get,
                                   key=f"split_faces_{selected}")
            mode = st.radio("To", ["a new class", "an existing class"], horizontal=True, key=f"split_mode_{selected}")
            split_name = st.text_input("New class name", key=f"split_name_{selected}")
            split_different = st.checkbox(
                "It is a different person", key=f"split_different_{selected}",
                help="Split into a new class although an existing class has its name once accents, case and "
                     "underscores are ignored: the page names them first")
            split_targets = other_classes(selected)
            split_target = select_choice(st, "Existing class", split_targets, index=None,
                                         format_func=label, key=f"split_target_{selected}")
            pressed = st.form_submit_button("Split", key=f"split_submit_{selected}")
            if pressed and gone:
                st.error(plain(gone))
            elif pressed:
                split(selected, faces, split_name if mode == "a new class" else None, split_different, split_target)
        crops = [(f, media_file(p, settings)) for f, p in zip(members["face_id"], members["crop_path"])][:24]
        crops = [(f, p) for f, p in crops if p is not None]
        if crops:
            st.image([str(p) for _, p in crops], caption=[f"face {f}" for f, _ in crops], width=96)

    with status_tab:
        st.write(f"**{name_md}** is {row['status']}. Retired classes keep their labels but take no new ones "
                 "and are not exported.")
        with st.form(f"status_form_{selected}"):
            status = st.selectbox("Status", CLASS_STATUSES, key=f"status_{selected}")  # filled by fill_forms
            if st.form_submit_button("Set status", key=f"status_submit_{selected}"):
                save_boxes(lambda s, e: set_class_status(s, selected, status, e, expected_version=pressed_on),
                           stale, after=lambda _: keep_editing(selected))  # retired: still the one edited

    with history_tab:
        events = history_table(history_frame(store, f"class:{selected}"))
        if len(events):
            st.dataframe(events, hide_index=True, width="stretch")
        else:
            st.write("No operation on this class yet.")
