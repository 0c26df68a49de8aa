"""Tags: per GIF (its tags and confidences, suggestions to accept or reject) and per tag (bulk actions)."""
from numbers import Integral

import pandas as pd
import streamlit as st

from embeddings.pipeline import ANIMATED_KINDS
from labeling.errors import ValidationError, utc_text
from labeling.pages.common import (Change, current_editor, drawn_before, escape_markdown, flash, forget_lost,
                                   get_settings, get_store, history_table, keep_choice, last_change, media_file, plain,
                                   require_editor, select_choice, stage_progress, versions_seen, write)
from labeling.queries import history_frame, media_frame, media_tags_frame, name_order_key, tag_counts_frame
from labeling.tags import add_tags, remove_tags, requoted, set_tag_confidences, set_tag_status
from labeling.validation import clean_tag_name, quoted

MEDIA_KEY = "tags_media"
TAG_KEY = "tags_tag"
TABLE_KEY = "tags_table_drawn"  # media id -> the (tag id, version) rows its confidence table last showed
PICKED_KEY = "tags_suggestions_picked"  # {media id: {tag: tag id}}: the suggestions picked when last drawn
REMOVABLE_KEY = "tags_removable_drawn"  # {media id: {tag: tag id}}: the tags the Remove box last offered
BULK_FORMS = {"bulk_tag_form": ("Set confidence", "Remove tag"),
              "bulk_suggestions_form": ("Accept suggestions", "Reject suggestions")}  # per tag: form -> buttons
VIDEO_KINDS = ("video",)

settings, store = get_settings(), get_store()
st.title("Tags")
media = media_frame(store)
media = media[media["status"] == "ok"].set_index("media_id")


def media_labels(frame: pd.DataFrame) -> dict[int, str]:
    """Each media item's option text in the "GIF or image" box, built once per run over whole columns:
    a format_func reading media.loc[...] per option cost 0.3 ms an option, 0.6 s a run at 2,000 items."""
    ids = pd.Series(frame.index.astype(int), index=frame.index)
    text = (frame["name"].astype(str) + " (id " + ids.astype(str) + ", " + frame["kind"].astype(str) + ", "
            + frame["tags"].astype(str) + " tags)")
    return dict(zip(ids.tolist(), text.tolist()))


MEDIA_LABELS = media_labels(media)


def media_label(media_id: int) -> str:
    """The "GIF or image" box's option text (MEDIA_LABELS), "media <id>" for an item no longer listed."""
    return MEDIA_LABELS.get(media_id, f"media {media_id}")


def media_order(frame: pd.DataFrame) -> list[int]:
    """Media ids as the "GIF or image" box lists them: GIFs and videos first (the photos are many and
    would bury them), each group by file name as names are read (`name_order_key`: accents removed,
    so "été.gif" is among the E's, not after "z"), then case folded, then by id, so an item keeps its
    place between runs."""
    names = frame["name"].fillna("").astype(str).tolist()
    keys = pd.DataFrame({"still": (~frame["kind"].isin(ANIMATED_KINDS)).to_numpy(),
                         "loose": [name_order_key(n) for n in names], "folded": [n.casefold() for n in names],
                         "id": frame.index.astype(int)})
    return keys.sort_values(["still", "loose", "folded", "id"], kind="stable")["id"].tolist()


@st.cache_resource(show_spinner="Loading the text model (MiniLM) ...")
def text_embedder():
    """MiniLM for the text expert, loaded once per server."""
    from models.registry import create_model

    return create_model("minilm-l6-v2")


def run_experts_voting(store, editor: str, k: int, min_frequency: float):
    """Experts voting over every media item, suggestions stored; the progress bar follows the vote."""
    from labeling.auto_tagging import autotag

    bar = st.progress(0.0, text="Voting ...")
    on_progress, on_step = stage_progress(bar, "media", starting="Voting")  # autotag counts media voted on
    try:
        return autotag(store, editor, text_embedder=text_embedder(), k=k, min_frequency=min_frequency,
                       on_progress=on_progress, on_step=on_step)
    finally:
        bar.empty()


def editor_key(media_id: int) -> str:
    return f"tag_editor_{media_id}"


def editor_table(active: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The confidence table as the data editor gets it, indexed (hidden) by its rows' "tag id:version".

    Why: the browser keeps a table's pending edits by row position for as long as the table is the same
    widget, and sends them again with every press; popping the key from st.session_state does not reach
    it. A keyed editor with fixed rows stays the same widget across changes of values alone, but its
    identity takes in an index that is not 0..n-1. Indexed by (tag id, version), the table is a new widget,
    its edits gone from the browser too, as soon as a row is saved, changed, added, removed or moved: a
    saved confidence that sorts its row below another left the edit on the row moving into its place,
    shown there and written to that tag by the next Save."""
    rows = pd.Index([f"{tag_id}:{version}" for tag_id, version in table_rows(active)], name="row")
    return active[columns].set_axis(rows)


def seen_key(name: str, keys: dict[str, tuple[int, int]]) -> tuple[int, int] | None:
    """The (media, tag id) of a typed tag name if this media item shows it (any status), else None;
    a name the store would refuse is left for add_tags to refuse with its reason."""
    try:
        return keys.get(clean_tag_name(name))
    except ValidationError:
        return None


def changed_confidences(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Rows of the tag table whose confidence the editor changed, matched by row (tag id and version,
    `editor_table`), never by position: an edit whose row is not the one drawn now is no change of it."""
    edited = after.reindex(before.index)
    return edited[before["confidence"].to_numpy() != edited["confidence"].to_numpy()]


def empty_confidences(edited: pd.DataFrame) -> list[str]:
    """The tags whose confidence cell the editor cleared (st.data_editor gives None, read as NaN).

    Why: an empty cell is a changed cell, and saving it was refused by the store as "confidence must be
    in [0, 1], got nan", which names no tag: in a table of many, the editor could not tell which
    cell to fix. Named here, before anything is written."""
    return edited.loc[pd.isna(edited["confidence"]), "tag"].tolist()


SUGGESTING_SOURCES = frozenset({"model", "experts_voting"})  # sources whose rows start as suggestions


def rejected_heading(sources: list[str], of: str = "") -> str:
    """"3 rejected suggestion(s)", "2 rejected tag(s)" or "3 rejected tag(s) (1 of them suggestions)": the
    rejected rows named by where they came from. Why: a tag the uploader, an import or an editor gave, rejected
    since, was listed as a "rejected suggestion" though nothing had ever suggested it."""
    n, suggested = len(sources), sum(source in SUGGESTING_SOURCES for source in sources)
    if suggested == n:
        return f"{n} rejected suggestion(s){of}"
    if not suggested:
        return f"{n} rejected tag(s){of}"
    return f"{n} rejected tag(s){of} ({suggested} of them suggestions)"


def empty_confidences_message(tags: list[str]) -> str:
    """"The confidence of 'x' is empty: type a number from 0 to 1", one clause per tag; nothing saved."""
    return "; ".join(f"The confidence of {quoted(t)} is empty: type a number from 0 to 1" for t in tags) + \
        ". Nothing was saved."


def table_rows(active: pd.DataFrame) -> tuple[tuple[int, int], ...]:
    """The confidence table as the editor sees it: its (tag id, version) rows in order (a version moves
    with every change of a row's confidence, source, editor or status)."""
    return tuple(zip(active["tag_id"].astype(int).tolist(), active["version"].astype(int).tolist()))


def drawn_table(media_id: int, active: pd.DataFrame) -> tuple[tuple[int, int], ...] | None:
    """The rows the media's confidence table showed when the page was last drawn (None the first time);
    records this run's for the next press."""
    memory = st.session_state.setdefault(TABLE_KEY, {})
    before = memory.get(media_id)
    memory[media_id] = table_rows(active)
    return before


def pending_edits(media_id: int) -> bool:
    """Whether the media's confidence table holds edits not saved yet (read before the table is drawn:
    the browser's state of the table as the last run drew it)."""
    state = st.session_state.get(editor_key(media_id))
    return isinstance(state, dict) and bool(state.get("edited_rows"))


def table_moved_on(media_id: int, drawn: tuple, now: tuple) -> None:
    """Another editor changed the table between the editor's edits and their press, or between the
    page's drawing and the rerun an edit itself causes: the table is then a new widget (`editor_table`), so
    the browser has dropped the edits, which were kept by row position, maybe now another tag's. Nothing is
    saved; the table is redrawn afresh, and the operation that changed it is named,
    with who ran it and when (UTC, `utc_text`, as every conflict says it)."""
    keys = [f"media_tag:{media_id}:{tag_id}" for tag_id in sorted({t for t, _ in set(drawn) ^ set(now)})]
    change = last_change(store, keys)
    by = (f" (operation {change.event_id} by {change.editor} at {utc_text(change.at)})"
          if change is not None else "")
    flash(f"The tag table changed since you edited it{by}; your edits were not saved — edit again.", "warning")
    st.session_state.pop(editor_key(media_id), None)
    st.rerun()


def what_happened(change: Change | None) -> str:
    """"rejected by bob in operation 9 (2026-12-06 22:31:07 UTC)": what the newest audited write of a media tag
    did to it, who did it and when, for the messages that explain why a choice is gone."""
    if change is None:
        return "changed outside the audited operations"
    status = (change.after or {}).get("status")
    what = ("removed" if change.after is None else "accepted" if status == "active"
            else "rejected" if status == "rejected" else "changed")
    return f"{what} {change.by()} ({utc_text(change.at)})" + (" (an undo)" if change.operation == "undo" else "")


def by_someone_else(change: Change | None) -> bool:
    """Whether another editor (or a change outside the audited operations) moved the rows: the editor's
    own operation was reported when it ran."""
    return change is None or change.editor != current_editor()


def gone_notes(picked: dict, options: list, label) -> list[str]:
    """For each pick ({option: the audit key of its media tag row}) no longer among `options`, changed by
    another editor: "<label(pick)> rejected by bob in operation 9 (...)". The editor's own changes are
    left out (their operation was reported when it ran)."""
    notes = []
    for pick, key in picked.items():
        if pick in options:
            continue
        change = last_change(store, [key])
        if by_someone_else(change):
            notes.append(f"{label(pick)} {what_happened(change)}")
    return notes


def suggestions_gone(media_id: int, options: list[str]) -> list[str]:
    """The suggestions the editor picked on this media item when the page was last drawn that are no
    longer waiting, each with what happened to it; read before the picker is drawn.

    Why: the picker is rebuilt from the suggestions still pending, and Streamlit drops a picked option
    that is no longer offered without a word, so an Accept pressed for a suggestion another editor
    rejected meanwhile did nothing and said nothing. The picks are remembered by media_id (the
    one drawn last) as {tag: tag id}, the tag id being what names the row in the audit log."""
    picked: dict[str, int] = st.session_state.get(PICKED_KEY, {}).get(media_id, {})
    return gone_notes({t: f"media_tag:{media_id}:{i}" for t, i in picked.items()}, options, repr)


def still_picked(media_id: int, options: list[str]) -> list[str]:
    """The suggestions picked when the page was last drawn that are still waiting (the picker keeps them)."""
    return [t for t in st.session_state.get(PICKED_KEY, {}).get(media_id, {}) if t in options]


def remember_picks(media_id: int, chosen: list[str], tag_key: dict[str, tuple[int, int]]) -> None:
    """Record the suggestions picked in this run (for suggestions_gone on the next one)."""
    st.session_state[PICKED_KEY] = {media_id: {t: tag_key[t][1] for t in chosen}}


def warn_picks_gone(head: str, notes: list[str], pressed: str | None, left: list[str], again: str) -> None:
    """Say which picks left the list and who changed them; on a press (`pressed`: what it would have done,
    "accepted"), that nothing was written and which picks are kept (`left`) for the editor to press again.

    Why nothing is written: a press meant for picks of which some were changed meanwhile is not the
    decision the editor made; acting on the rest would also rerun the page and lose this warning."""
    done = f" Nothing was {pressed}." if pressed else ""
    if pressed and left:
        done += f" Still picked: {', '.join(left)}; press again to {again}."
    st.warning(plain(f"{head}: {'; '.join(notes)}.{done}"))


def warn_suggestions_gone(notes: list[str], left: list[str]) -> None:
    """Per GIF: warn_picks_gone for the suggestions picked on the media item, on an Accept or Reject press."""
    pressed = ("accepted" if st.session_state.get("tags_accept")
               else "rejected" if st.session_state.get("tags_reject") else None)
    warn_picks_gone("Suggestion(s) you picked are no longer waiting", notes, pressed, list(map(repr, left)),
                    "decide those")


def removal_picks_gone(media_id: int, options: list[str], tag_key: dict[str, tuple[int, int]]
                       ) -> tuple[list[str], list[str]]:
    """Per GIF, on a press of Remove: (notes on the tags picked to remove that are no longer active on the
    media item, with who changed them; the picks still active). Read before the form is drawn.

    Why: the picks reach the server only with the press, and the box, drawn again with the tags active now,
    drops a tag another editor removed meanwhile without a word, so the press removed the rest alone or,
    with nothing left, nothing, and said nothing. The box's value read before it is drawn is the one the
    browser sent; a removed tag has no row left, so its tag id (which names it in the audit log) is the one
    the box offered when last drawn (REMOVABLE_KEY)."""
    picked = [t for t in st.session_state.get(f"tags_remove_{media_id}") or [] if isinstance(t, str)]
    ids = {**st.session_state.get(REMOVABLE_KEY, {}).get(media_id, {}),
           **{t: i for t, (_, i) in tag_key.items()}}
    notes = gone_notes({t: f"media_tag:{media_id}:{ids[t]}" for t in picked if t in ids}, options, repr)
    unknown = [repr(t) for t in picked if t not in ids and t not in options]  # no id to ask the audit log with
    return notes + unknown, [t for t in picked if t in options]


def media_name(media_id: int) -> str:
    """"barf.gif (id 3)": a media item named in a warning (its row may have left the tag's lists)."""
    name = media.loc[media_id, "name"] if media_id in media.index else "media"
    return f"{name} (id {media_id})"


def bulk_picks_gone(pick_key: str, ids: list[int], tag_id: int) -> tuple[list[str], list[int]]:
    """Per tag: (notes on the media picked under "Or these" that left the form's list since the page was
    drawn, with who changed them; the picks still listed). Read before the form is drawn.

    Why here, not with PICKED_KEY as on Per GIF: a pick inside a form reaches the server only with the
    press, so no earlier run saw it. Read before the picker is drawn, the widget's value is the one the
    browser sent, matched against the options of the page the editor picked on; drawn again, Streamlit
    would drop the picks no longer offered without a word (a press on them then did nothing, or acted on
    the rest alone)."""
    picked = [int(m) for m in st.session_state.get(pick_key) or [] if isinstance(m, Integral)]
    notes = gone_notes({m: f"media_tag:{m}:{tag_id}" for m in picked}, ids, media_name)
    return notes, [m for m in picked if m in ids]


def tag_lost_note(lost: str, shown: str | None) -> str | None:
    """Why the tag the editor had chosen on the Per tag tab is gone (no media carries it any more,
    in any status), who did it and when, or None when it was the editor's own operation.

    Its rows are the ones the page last drew for it (drawn_before); its forms are keyed by the tag, so
    a bulk action pressed for it in this run is not drawn and does nothing: the editor is told so."""
    keys = [f"media_tag:{m}:{t}" for m, t in sorted(drawn_before(f"tags_tag_{lost}"))]
    change = last_change(store, keys)
    if not by_someone_else(change):
        return None
    pressed = any(st.session_state.get(f"{form}_{lost}_{i}") for form, labels in BULK_FORMS.items()
                  for i in range(len(labels)))
    head = f"{quoted(lost)} is no longer on any media: {what_happened(change)}."
    done = " Nothing was done for it." if pressed else ""
    now = f" The page shows {quoted(shown)} now." if shown is not None else ""
    return head + done + now


def _bulk_form(key: str, heading: str, every: tuple[str, str], pick_key: str, ids: list[int], names: dict,
               buttons: tuple[str, ...], extra=None, *, tag_id: int, gone_head: str, verbs: tuple[str, ...],
               again: str) -> tuple[list[int], str | None, object]:
    """One bulk form of the per-tag tab: tick all or pick media, then a button.

    Returns (media chosen, the button pressed or None, what `extra()` drew inside the form, e.g. a
    confidence); a press with nothing chosen is an error on the page, and no button is returned.
    Picked media that left the list since the page was drawn (bulk_picks_gone) are named with who changed
    them (`gone_head`: what they no longer are); a press on the picks then writes nothing (`verbs`: what
    each button would have done, for the warning) and the picks still listed stay picked."""
    gone, left = bulk_picks_gone(pick_key, ids, tag_id)
    with st.form(key):
        st.write(heading)
        every_ticked = st.checkbox(every[0], key=every[1])
        picked = st.multiselect("Or these", ids, format_func=lambda m: names[m], key=pick_key)
        value = extra() if extra is not None else None
        # keyed (key_0, key_1, ...) so a press for a tag that left the page can be read (tag_lost_note)
        pressed = [label for i, (col, label) in enumerate(zip(st.columns(len(buttons)), buttons))
                   if col.form_submit_button(label, key=f"{key}_{i}")]
    chosen = [int(m) for m in (ids if every_ticked else picked)]
    if gone and not every_ticked:  # ticking all acts on the list as drawn (as_drawn): the picks play no part
        done = verbs[buttons.index(pressed[0])] if pressed else None
        warn_picks_gone(gone_head, gone, done, [names.get(m, media_name(m)) for m in left], again)
        return chosen, None, value
    if pressed and not chosen:
        st.error("Choose the media first (or tick all).")
        return chosen, None, value
    return chosen, pressed[0] if pressed else None, value


def show_media(media_id: int) -> None:
    row = media.loc[media_id]
    path = media_file(row["path"], settings)
    if path is None:
        st.warning(f"{plain(str(row['path']))} is not readable from the server.")
    elif row["kind"] in VIDEO_KINDS:
        st.video(str(path))
    else:
        st.image(str(path), caption=row["name"], width="stretch")  # a GIF plays


with st.expander("Suggestions by experts voting"):
    st.caption("Visual (GIF embedding), identity (the celebrities in the GIF) and text (MiniLM over its tags) "
               "experts vote for tags, each weighted by how often it proposes a correct tag on tagged media. "
               "Results are stored as suggestions (source experts_voting) to accept or reject. Uploader and "
               "imported tags get confidence 1.0 when an expert confirms them, else 0.7; editor tags are never "
               "changed and rejected suggestions stay rejected.")
    neighbours, share = st.columns(2)
    k = int(neighbours.number_input("Neighbours per expert (k)", min_value=1, max_value=100, value=10, step=1,
                                    key="tags_experts_k"))
    min_frequency = float(share.number_input(
        "Share of neighbours a tag needs", min_value=0.0, max_value=1.0, value=0.2, step=0.05, format="%.2f",
        key="tags_experts_min_frequency",
        help="GIPHY's lower bound on a tag's frequency among the neighbours. 0.2 asks two of ten to agree; "
             "on a small or sparsely tagged library, 1/k lets a single neighbour vote."))
    if st.button("Run experts voting", key="tags_run_experts") and require_editor():
        write(lambda s, e: run_experts_voting(s, e, k, min_frequency))

per_gif, per_tag = st.tabs(["Per GIF", "Per tag"])

with per_gif:
    if media.empty:
        st.info("No media yet: ingest some on the Ingest page.")
    else:
        ordered = media_order(media)
        keep_choice(MEDIA_KEY, ordered)  # its label counts tags: accepting suggestions changes it
        media_id = st.selectbox("GIF or image", ordered, format_func=media_label, key=MEDIA_KEY,
                                persist_state="session")
        tags = media_tags_frame(store, media_id=media_id)
        active = tags[tags["status"] == "active"].reset_index(drop=True)
        suggested = tags[tags["status"] == "suggested"].reset_index(drop=True)
        rejected = tags[tags["status"] == "rejected"].reset_index(drop=True)
        # (media, tag id) -> the version the editor saw: a tag changed meanwhile is refused, not overwritten
        seen = versions_seen(f"tags_media_{media_id}", dict(zip(zip(tags["media_id"].astype(int), tags["tag_id"].astype(int)),
                                                             tags["version"])))
        tag_key = dict(zip(tags["tag"], zip(tags["media_id"].astype(int), tags["tag_id"].astype(int))))
        removing = bool(st.session_state.get(f"tags_remove_submit_{media_id}"))  # read before the form is drawn
        removed_gone, still_removable = (removal_picks_gone(media_id, active["tag"].tolist(), tag_key) if removing
                                         else ([], []))
        st.session_state[REMOVABLE_KEY] = {media_id: {t: tag_key[t][1] for t in active["tag"]}}
        gone_head = "Tag(s) you picked to remove are no longer on this media item"
        picture, table = st.columns([2, 3])
        with picture:
            show_media(media_id)
        with table:
            st.subheader("Tags")
            if active.empty:
                st.write("No tags yet.")
                if removed_gone:  # the last ones went meanwhile: the form is not drawn, its press is answered here
                    warn_picks_gone(gone_head, removed_gone, "removed", [], "remove those")
            else:
                columns = ["tag", "confidence", "source", "editor", "version"]
                editing = pending_edits(media_id)
                shown_table = editor_table(active, columns)
                edited = st.data_editor(
                    shown_table, key=editor_key(media_id), hide_index=True, num_rows="fixed", width="stretch",
                    disabled=["tag", "source", "editor", "version"],
                    column_config={"confidence": st.column_config.NumberColumn(
                        "confidence", min_value=0.0, max_value=1.0, step=0.01, format="%.2f", required=True)})
                drawn = drawn_table(media_id, active)
                saving = st.button("Save confidences", key="tags_save_confidences")
                if editing and not saving and drawn is not None and drawn != table_rows(active):
                    table_moved_on(media_id, drawn, table_rows(active))  # the edit's own rerun: say so now
                if saving:
                    changed = changed_confidences(shown_table, edited)
                    if drawn is not None and drawn != table_rows(active):
                        table_moved_on(media_id, drawn, table_rows(active))
                    elif empty := empty_confidences(edited):  # the edits stay in the table, to be fixed
                        st.error(plain(empty_confidences_message(empty)))
                    elif changed.empty:
                        st.info("No confidence was changed.")
                    else:
                        items = [(media_id, t, float(c)) for t, c in zip(changed["tag"], changed["confidence"])]
                        versions = {tag_key[t]: seen[tag_key[t]] for t in changed["tag"]}
                        write(lambda s, e: set_tag_confidences(s, items, e, expected_versions=versions),
                              after=lambda _: st.session_state.pop(editor_key(media_id), None))
                with st.form(f"remove_tags_form_{media_id}"):
                    doomed = st.multiselect("Remove tags", active["tag"].tolist(), key=f"tags_remove_{media_id}")
                    remove_pressed = st.form_submit_button("Remove", key=f"tags_remove_submit_{media_id}")
                    if remove_pressed and removed_gone:  # a press on picks some of which went meanwhile writes nothing
                        warn_picks_gone(gone_head, removed_gone, "removed", list(map(repr, still_removable)),
                                        "remove those")
                    elif remove_pressed and not doomed:
                        st.error("Choose the tags first.")
                    elif remove_pressed:
                        write(lambda s, e: remove_tags(s, [media_id], doomed, e,
                                                       expected_versions={tag_key[t]: seen[tag_key[t]] for t in doomed}))

            st.subheader("Suggestions")
            if gone := suggestions_gone(media_id, suggested["tag"].tolist()):
                warn_suggestions_gone(gone, still_picked(media_id, suggested["tag"].tolist()))
            if suggested.empty:
                remember_picks(media_id, [], tag_key)
                st.write("No suggestions waiting.")
            else:
                st.dataframe(suggested[["tag", "confidence", "source"]], hide_index=True, width="stretch")
                # none picked to start with: suggestions are guesses, and one click must not accept them all
                chosen = st.multiselect("Suggestions to accept or reject", suggested["tag"].tolist(),
                                        key=f"tags_suggestions_{media_id}", placeholder="pick suggestions")
                remember_picks(media_id, chosen, tag_key)
                accept, reject = st.columns(2)
                decided = {tag_key[t]: seen[tag_key[t]] for t in chosen}
                n = f" {len(chosen)}" if chosen else ""
                # a press on picks some of which were decided meanwhile writes nothing (warn_suggestions_gone)
                if accept.button(f"Accept{n}", key="tags_accept", disabled=not chosen) and chosen and not gone:
                    write(lambda s, e: set_tag_status(s, [(media_id, t) for t in chosen], "active", e,
                                                      expected_versions=decided),
                          after=lambda _: remember_picks(media_id, [], tag_key))
                if reject.button(f"Reject{n}", key="tags_reject", disabled=not chosen) and chosen and not gone:
                    write(lambda s, e: set_tag_status(s, [(media_id, t) for t in chosen], "rejected", e,
                                                      expected_versions=decided),
                          after=lambda _: remember_picks(media_id, [], tag_key))

            with st.form(f"add_tag_form_{media_id}", clear_on_submit=True):
                st.write("Add a tag")
                new_tag = st.text_input("Tag", key=f"tags_new_{media_id}")
                confidence = st.number_input("Confidence", min_value=0.0, max_value=1.0, value=1.0, step=0.05,
                                             key=f"tags_new_confidence_{media_id}")
                if st.form_submit_button("Add tag"):
                    # a tag shown here as a suggestion or a rejection is taken over only as the editor saw it;
                    # one already active is refused by add_tags ("edit its confidence instead")
                    known = seen_key(new_tag, tag_key)
                    expected = {known: seen[known]} if known else None
                    write(lambda s, e: add_tags(s, [media_id], [new_tag], e, confidence=confidence,
                                                expected_versions=expected))

            if not rejected.empty:
                with st.expander(rejected_heading(rejected["source"].tolist())):
                    st.caption("Experts voting does not suggest these again. To tag the GIF with one after all, "
                               "add it above: that is recorded like any other change.")
                    st.dataframe(rejected[["tag", "confidence", "source", "editor"]], hide_index=True)
        with st.expander("History of this media item"):
            history = history_frame(store, f"media:{media_id}")
            # requoted: a summary logged before names were quoted as typed shows them so too
            history = history.assign(summary=history["summary"].map(requoted)) if "summary" in history else history
            st.dataframe(history_table(history), hide_index=True, width="stretch")

with per_tag:
    counts = tag_counts_frame(store)
    if counts.empty:
        if (gone := st.session_state.pop(TAG_KEY, None)) is not None and (note := tag_lost_note(gone, None)):
            st.warning(plain(note))
        st.info("No tags yet.")
    else:
        by_tag = counts.set_index("tag")
        # select_choice, not a plain box: a tag another editor removed from every media meanwhile leaves the
        # options, and the box would fall back to another tag without a word (and a bulk press do nothing)
        choice = select_choice(st, "Tag", counts["tag"].tolist(), key=TAG_KEY, persist_state="session",
                               format_func=lambda t: f"{t} ({by_tag.loc[t, 'active']} active, "
                                                     f"{by_tag.loc[t, 'suggested']} suggested)")
        tag = choice.value
        if choice.lost is not None:
            forget_lost(choice)  # told once (no form of the lost tag is drawn again, so nothing more to refuse)
            if (note := tag_lost_note(choice.lost, tag)) is not None:  # None: the editor's own operation
                st.warning(plain(note))
        carrying = media_tags_frame(store, tag=tag)
        # the rows the editor had on screen when they pressed: "All" means those, not rows added since
        drawn = {m for m, _ in drawn_before(f"tags_tag_{tag}")}
        seen_tag = versions_seen(f"tags_tag_{tag}", dict(zip(zip(carrying["media_id"].astype(int), carrying["tag_id"].astype(int)),
                                                        carrying["version"])))
        # bulk actions act on one status each: setting a confidence or removing must not touch suggestions
        # (not decided yet) nor rejections (decided against, and remembered so experts voting stays quiet)
        tagged = carrying[carrying["status"] == "active"].reset_index(drop=True)
        pending = carrying[carrying["status"] == "suggested"].reset_index(drop=True)
        refused = carrying[carrying["status"] == "rejected"].reset_index(drop=True)
        names = dict(zip(carrying["media_id"], carrying["media_name"]))
        tag_id = int(carrying["tag_id"].iloc[0]) if len(carrying) else -1  # one id per tag: names its audit rows
        columns = ["media_id", "media_name", "confidence", "source", "editor", "version"]
        shown = escape_markdown(tag)  # a tag is text, not markdown

        def listed(title: str, rows: pd.DataFrame, empty: str) -> list[int]:
            """A heading with the count, the rows (or what their absence means); their media ids."""
            st.subheader(f"{title} ({len(rows)})")
            if rows.empty:
                st.write(empty)
            else:
                st.dataframe(rows[columns], hide_index=True, width="stretch")
            return rows["media_id"].tolist()

        def expected(media_ids: list[int]) -> dict[tuple[int, int], int]:
            """The versions the editor saw of this tag on these media: a row changed since is refused."""
            wanted = set(map(int, media_ids))
            return {k: v for k, v in seen_tag.items() if k[0] in wanted}

        def as_drawn(media_ids: list[int]) -> list[int]:
            """The chosen media the editor saw with this tag; one that got it since the page was drawn
            (another editor, experts voting) is left out, and the page says so."""
            kept = [m for m in media_ids if m in drawn]
            if len(kept) < len(media_ids):
                note = (f"{len(media_ids) - len(kept)} media got {quoted(tag)} after the page was drawn and were left "
                        "out; they are listed now: repeat the action if it should cover them too.")
                if kept:
                    flash(note, "warning")  # the action goes on and reruns the page
                else:
                    st.warning(plain(note))
            return kept

        if active_ids := listed(f"Tagged {shown}", tagged,
                                "No media carries it yet (only suggestions or rejections below)."):
            thumbs = [(m, media_file(media.loc[m, "path"], settings)) for m in active_ids[:8] if m in media.index]
            thumbs = [(m, p) for m, p in thumbs if p is not None and media.loc[m, "kind"] not in VIDEO_KINDS]
            if thumbs:
                st.image([str(p) for _, p in thumbs], caption=[names[m] for m, _ in thumbs], width=160)
            targets, pressed, confidence = _bulk_form(
                f"bulk_tag_form_{tag}", f"Bulk actions on **{shown}** (tagged media only)",
                (f"All {len(tagged)} media tagged with it", f"bulk_all_{tag}"), f"bulk_media_{tag}", active_ids, names,
                ("Set confidence", "Remove tag"),
                extra=lambda: st.number_input("Confidence", min_value=0.0, max_value=1.0, value=1.0, step=0.05,
                                              key=f"bulk_confidence_{tag}"),
                tag_id=tag_id, gone_head=f"Media you picked no longer carry {quoted(tag)}",
                verbs=("changed", "removed"), again="act on those")
            if pressed and not (targets := as_drawn(targets)):
                pressed = None
            if pressed == "Set confidence":
                write(lambda s, e: set_tag_confidences(s, [(m, tag, confidence) for m in targets], e,
                                                       expected_versions=expected(targets)))
            elif pressed == "Remove tag":
                write(lambda s, e: remove_tags(s, targets, [tag], e, expected_versions=expected(targets)))

        if pending_ids := listed(f"Suggested {shown}", pending, "No suggestions waiting."):
            decided, pressed, _ = _bulk_form(
                f"bulk_suggestions_form_{tag}", f"Accept or reject the suggestions of **{shown}**",
                (f"All {len(pending)} suggestions", f"bulk_suggested_all_{tag}"), f"bulk_suggested_{tag}",
                pending_ids, names, ("Accept suggestions", "Reject suggestions"),
                tag_id=tag_id, gone_head=f"Suggestion(s) of {quoted(tag)} you picked are no longer waiting",
                verbs=("accepted", "rejected"), again="decide those")
            if pressed and (decided := as_drawn(decided)):
                status = "active" if pressed == "Accept suggestions" else "rejected"
                write(lambda s, e: set_tag_status(s, [(m, tag) for m in decided], status, e,
                                                  expected_versions=expected(decided)))

        if not refused.empty:
            with st.expander(rejected_heading(refused["source"].tolist(), f" of {shown}")):
                st.caption("Left out of the bulk actions. Experts voting does not suggest these again; adding the "
                           "tag to a GIF on the Per GIF tab restores it there.")
                st.dataframe(refused[columns], hide_index=True, width="stretch")
