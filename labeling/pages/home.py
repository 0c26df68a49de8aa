"""Overview: what the store holds, and the latest operations of every editor."""
from typing import Callable

import pandas as pd
import streamlit as st

from labeling.audit import undo_event, undoable_events
from labeling.errors import StoreError, utc_text
from labeling.pages.common import (database_label, forget_lost, get_settings, get_store, history_table, plain,
                                   select_choice, show_error, write)
from labeling.schema import AuditEvent
from labeling.queries import events_frame, store_overview
from labeling.validation import check_id

settings, store = get_settings(), get_store()
st.title("giflens")
st.caption(f"Data folder `{settings.data_dir}` · database `{database_label(settings)}`")

overview = store_overview(store)
labels = overview["labels"]
cols = st.columns(5)
cols[0].metric("Media", overview["media_ok"], help=f"{overview['media_failed']} failed")
cols[1].metric("Faces", overview["faces"], help=f"{overview['faces_unlabeled']} without any label")
cols[2].metric("Classes", overview["classes_active"], help=f"{overview['classes']} including proposed and retired")
cols[3].metric("Confirmed labels", labels.get("approved", 0) + labels.get("relabeled", 0),
               help="approved or relabeled by an editor or an import")
cols[4].metric("Active tags", overview["tags_active"], help=f"{overview['tags_suggested']} suggestions waiting")
if labels:
    st.write("Face labels by status: " + ", ".join(f"{status} {n}" for status, n in sorted(labels.items())))


def page_links(pages: list[tuple[str, str, str]]) -> None:
    """Links to the pages to go on with, side by side: (script as app.py's st.navigation registers it, label,
    icon). Why: the Overview said where to go but the editor had to find the page in the sidebar."""
    for column, (page, label, icon) in zip(st.columns(len(pages)), pages):
        column.page_link(page, label=label, icon=icon)


if overview["media_ok"] + overview["media_failed"] == 0:
    st.info("The store is empty: add media on the Ingest page, or run `giflens ingest FOLDER`.")
    page_links([("labeling/pages/ingest.py", "Ingest media", ":material/upload:")])
else:
    page_links([("explorer/pages/explore.py", "Explore", ":material/scatter_plot:"),
                ("explorer/pages/review.py", "Review", ":material/rule:"),
                ("labeling/pages/classes.py", "Classes", ":material/badge:"),
                ("labeling/pages/tags.py", "Tags", ":material/sell:")])

st.subheader("Latest operations")
events = events_frame(store, limit=30)
if len(events):
    for column in ("undone_by", "undo_of"):  # "#12", or blank where there is none (not a grey "None")
        events[column] = [f"#{int(v)}" if pd.notna(v) else "" for v in events[column]]
    events = history_table(events)  # times as giflens history prints them, whatever the server's zone
    st.dataframe(events.drop(columns=["n_entities"]), hide_index=True, width="stretch", column_config={
        "event_id": st.column_config.NumberColumn("event", width="small"),
        "at": st.column_config.TextColumn("at"),
        "summary": st.column_config.TextColumn("summary", width="large"),
        "undone_by": st.column_config.TextColumn("undone by", width="small", help="the event that took this one back"),
        "undo_of": st.column_config.TextColumn("undo of", width="small", help="the event this one took back"),
    })
else:
    st.write("No operation yet.")


def _forget_choice() -> None:
    """After an undo the select box shows nothing chosen (not the operation that took its place)."""
    st.session_state.pop("overview_undo_event", None)


def _forget_number() -> None:
    """After an undo by number the box is empty again: a second press must not be taken for a new undo."""
    st.session_state.pop("overview_undo_number", None)


def _undo(event_id: int, after: Callable[[], None]) -> None:
    """Undo operation `event_id` as the signed-in editor, as the picker and the number box both do: one
    already undone says by whom; any other refusal (no such operation, an undo, a record, a later operation
    depending on it) is undo_event's own message. The number is checked first (`check_id`), as undo_event
    checks it: the lookup below must not be the first to meet a number no id column holds (2**31 typed in the
    box), which PostgreSQL refuses with a DataError instead of "not found"."""
    try:
        event_id = check_id(event_id, "audit event")
    except StoreError as exc:
        show_error(exc)
        return
    if (undone := _already_undone(event_id)) is not None:
        st.warning(undone)
    else:
        write(lambda s, e: undo_event(s, event_id, e), after=lambda _: after())


def _already_undone(event_id: int) -> str | None:
    """"operation #5 was already undone by bob (#6)" when it was, else None. The operation leaves the list
    when another editor undoes it, and the select box would quietly fall back to nothing chosen."""
    with store() as session:
        event = session.get(AuditEvent, event_id)
        undo = session.get(AuditEvent, event.undone_by_id) if event is not None and event.undone_by_id else None
        return None if undo is None else f"operation #{event_id} was already undone by {plain(undo.editor)} (#{undo.id})"


undoable = undoable_events(store, limit=30)
if undoable:
    with st.expander("Undo an operation"):
        st.caption("Any editor's operation can be taken back by its number (pick one of the latest below, or type "
                   "any operation's number), unless a later operation changed the same faces, classes or tags "
                   "(then undo that one first). The undo is audited under your name.")
        choices = {e.id: f"#{e.id} · {e.editor} · {utc_text(e.at)} · {e.summary}" for e in undoable}
        # Nothing chosen to start with, and nothing again after an undo: the operation undone leaves the list,
        # and a select box with a default would move on to the next one, which a second press would undo.
        choice = select_choice(st, "Operation", list(choices), format_func=choices.get, key="overview_undo_event",
                               index=None, placeholder="Pick the operation to undo")
        # the operation the editor picked, even when it left the list meanwhile (another editor undid it)
        chosen = choice.value if choice.lost is None else choice.lost
        if st.button("Undo this operation", key="overview_undo", disabled=chosen is None,
                     help="Pick an operation above first" if chosen is None else None):
            forget_lost(choice)  # pressed: an operation that left the list is not offered again
            _undo(int(chosen), _forget_choice)
        # The list holds the latest ones only: any older operation is undone by its number (events table,
        # `giflens history`), checked and refused as the picker's are.
        number = st.number_input("or type its number", min_value=1, value=None, step=1, key="overview_undo_number",
                                 placeholder="an operation's number, e.g. from giflens history")
        if st.button("Undo operation by number", key="overview_undo_by_number", disabled=number is None,
                     help="Type an operation's number first" if number is None else None):
            _undo(int(number), _forget_number)
