"""Review: class clusters worst first, and the queues an editor works through (suspect faces,
look-alike classes, GIF tracks without a decision), each with bulk actions and undo."""
from __future__ import annotations

import unicodedata

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import streamlit as st
from sqlalchemy import func, select

from explorer.clusters import (class_members, class_stats, face_distances, lookalike_pairs, neighbour_depth,
                               neighbour_rows, suspect_faces, suspect_queue)
from explorer.figures import cluster_review, selected_ids
from explorer.views import (decided_since_prediction, index_dir_for, nameable_faces, named_no_one, own_classes,
                            retired_classes, track_own_class, track_predictions, track_refusals, unnameable_help,
                            unnameable_tracks_help)
from labeling.audit import undo_last
from labeling.classes import merge_classes
from labeling.face_labels import approve_faces, label_tracks, mark_unknown, reject_faces, relabel_faces
from labeling.pages.common import (CHOOSE_CLASS, DRAWN, TICK_VERSIONS, class_usable, current_editor,
                                   decided_faces_tick, flash, forget_tick_versions, get_settings, get_store, keep_choice,
                                   media_file, plain, select_choice, undo_offered, versions_seen,
                                   write)
from labeling.queries import (UNKNOWN_OPEN_SET, UNLABELED, audit_stamp, classes_frame, faces_frame, face_models, prediction_text,
                              tracks_frame)
from labeling.schema import CONFIRMED_STATUSES, FaceEmbedding, Track
from models.index_store import index_fingerprint

# explorer.clusters.suspect_faces' reasons, all of them: the Reasons filter offers each whether or not a face of
# the queue has it now, so a chosen one is never dropped when its last face leaves the queue
SUSPECT_REASONS = ("model disagrees", "neighbours disagree", "low confidence", "far from centroid")
EDITOR_DECISIONS = (*CONFIRMED_STATUSES, "rejected", "unknown")  # label statuses only an editor sets (as on Explore)
GONE = "__gone"  # a pick table's key + this: the notice naming ticked rows that left it this run (pick_table)
LISTED = 200  # suspect faces the table lists (a longer table is slow to draw and to tick through)
NEIGHBOURS = 10  # k of suspect_faces: the labelled neighbours that vote on each face
CONFIDENCE_NOTE = (f"Confidence is the model's score for its best class among the catalog's; on \"{UNKNOWN_OPEN_SET}\" "
                   "it is the score of the class the open-set threshold turned down (too far from everyone known).")

settings, store = get_settings(), get_store()
st.title("Review")

models = face_models(store)
if models.empty:
    st.info("No faces yet: ingest GIFs or photos on the Ingest page (or `giflens ingest`).")
    st.stop()
model_id = (st.selectbox("Face model", models["model_id"].tolist(), key="review_model", persist_state="session")
            if len(models) > 1 else models["model_id"].iloc[0])


# -- reads and computations cached until the store changes (a tick reruns the whole page) ---------------
def store_stamp(model_id: str) -> tuple:
    """Cheap numbers that change whenever what this page shows does: the newest audit event (every
    operation writes one, an undo too), plus the writes made without an event: an ingest run without
    an editor (faces and tracks added or dropped) and track predictions (rewritten by every `predict`)."""
    with store() as session:
        events = audit_stamp(session)
        faces_now = session.execute(select(func.count(), func.max(FaceEmbedding.face_id))
                                    .where(FaceEmbedding.model_id == model_id)).one()
        tracks_now = session.execute(select(func.count(), func.max(Track.id), func.max(Track.predicted_at))
                                     .where(Track.model_id == model_id)).one()
    return (*events, *faces_now, *tracks_now)


@st.cache_data(show_spinner="Reading the store ...", max_entries=4)
def cached_faces(url: str, model_id: str, stamp: tuple) -> tuple[pd.DataFrame, np.ndarray]:
    """faces_frame with vectors (url, model_id, stamp: the cache key)."""
    return faces_frame(store, model_id, with_vectors=True)


def class_labels(frame: pd.DataFrame, column: str) -> list[str | None]:
    """A label column as a list with None for no label (what explorer.clusters takes). As object first: on
    pandas' string dtype `where(..., None)` keeps NaN, and a count of labels `is not None` counted every face."""
    return frame[column].astype(object).where(frame[column].notna(), None).tolist()


@st.cache_data(show_spinner=False, max_entries=4)
def cached_class_stats(url: str, model_id: str, stamp: tuple) -> pd.DataFrame:
    """class_stats of the model's labelled faces (url, model_id, stamp: the cache key)."""
    frame, vecs = cached_faces(url, model_id, stamp)
    return class_stats(vecs, class_labels(frame, "class_name"))


@st.cache_data(show_spinner=False, max_entries=4)
def cached_face_distances(url: str, model_id: str, stamp: tuple) -> pd.DataFrame:
    """face_distances over every face of the model (url, model_id, stamp: the cache key). Opening a class
    filters it (class_members): before, every rerun computed it over all faces up to three times to keep
    one class (1.5 s a rerun at 20,000 faces)."""
    frame, vecs = cached_faces(url, model_id, stamp)
    return face_distances(vecs, class_labels(frame, "class_name"), ids=frame["face_id"].tolist())


@st.cache_data(show_spinner=False, max_entries=4)
def cached_lookalikes(url: str, model_id: str, stamp: tuple) -> pd.DataFrame:
    """lookalike_pairs of the model's labelled faces, the top 30 (url, model_id, stamp: the cache key)."""
    frame, vecs = cached_faces(url, model_id, stamp)
    return lookalike_pairs(vecs, class_labels(frame, "class_name"), top=30)


@st.cache_data(show_spinner=False, max_entries=4)
def vectors_key(url: str, model_id: str, stamp: tuple) -> str:
    """A fingerprint of the faces' ids and vectors (what their neighbours depend on), computed once per
    change of the store: a decision leaves it as it was, an ingest or a re-embedding changes it."""
    frame, vecs = cached_faces(url, model_id, stamp)
    return index_fingerprint(model_id, frame["face_id"].astype(int).tolist(), vecs)


@st.cache_data(show_spinner="Finding each face's neighbours ...", max_entries=2)
def cached_neighbours(url: str, data_dir: str, model_id: str, vectors: str, _stamp: tuple,
                      _depth: int) -> np.ndarray:
    """Each face's nearest faces, labelled or not (neighbour_rows), kept while the vectors stay: the cache
    key is (url, data_dir, model_id, vectors: `vectors_key`), not the store's stamp, so a decision, an
    undo or a move of the slider never searches again (half of a 9.4 s Reject press at 20,000 faces was
    this search). _stamp and _depth are not part of the key: the frame to read, and how deep to search
    (neighbour_depth with the labels of the first call; a face left short later searches on its own)."""
    frame, vecs = cached_faces(url, model_id, _stamp)
    return neighbour_rows(vecs, frame["face_id"].tolist(), index_dir_for(Path(data_dir), "Faces", model_id),
                          model_id, _depth)


@st.cache_data(show_spinner="Finding suspect faces ...", max_entries=4)
def cached_suspect_signals(url: str, data_dir: str, model_id: str, stamp: tuple) -> pd.DataFrame:
    """suspect_faces over every face of the model before the confidence threshold (min_confidence None),
    with the current labels voting among the kept neighbours (all arguments: the cache key; data_dir:
    the saved index)."""
    frame, vecs = cached_faces(url, model_id, stamp)
    labels = class_labels(frame, "class_name")
    labelled = sum(label is not None for label in labels)
    # fewer than 2 labelled faces: no neighbour vote at all (suspect_faces searches nothing), so none kept
    nearest = None if labelled < 2 else cached_neighbours(url, data_dir, model_id, vectors_key(url, model_id, stamp),
                                                          stamp, neighbour_depth(NEIGHBOURS, len(frame), labelled))
    return suspect_faces(vecs, labels, class_labels(frame, "predicted_class_name"),
                         frame["predicted_confidence"].to_numpy(np.float64), ids=frame["face_id"].tolist(),
                         k=NEIGHBOURS, min_confidence=None, index_dir=index_dir_for(Path(data_dir), "Faces", model_id),
                         model_id=model_id, nearest=nearest)


@st.cache_data(show_spinner=False, max_entries=4)
def cached_suspects(url: str, data_dir: str, model_id: str, min_conf: float, stamp: tuple) -> pd.DataFrame:
    """The suspect faces for one "Low confidence below" (all arguments: the cache key): the threshold only
    filters cached_suspect_signals, so a move of the slider computes nothing else."""
    return suspect_queue(cached_suspect_signals(url, data_dir, model_id, stamp), min_conf)


@st.cache_data(show_spinner=False, max_entries=4)
def cached_tracks(url: str, model_id: str, stamp: tuple) -> pd.DataFrame:
    """tracks_frame (url, model_id, stamp: the cache key)."""
    return tracks_frame(store, model_id)


URL = settings.database_url or str(settings.data_dir)
STAMP = store_stamp(model_id)
faces = cached_faces(URL, model_id, STAMP)[0]
labels = class_labels(faces, "class_name")
catalog = classes_frame(store)
active = catalog[catalog["status"] == "active"]
class_ids = active["class_id"].tolist()
class_names = dict(zip(active["class_id"], active["name"]))
face_versions = dict(zip(faces["face_id"].astype(int), faces["version"].astype(int)))
retired = retired_classes(store)
unnameable = set(faces.loc[~nameable_faces(faces, retired), "face_id"].astype(int))  # nothing to approve, or retired
every_name = dict(zip(catalog["class_id"], catalog["name"]))  # retired classes included
status_of = dict(zip(faces["face_id"].astype(int), faces["label_status"]))
# NFC: an editor's own decisions stored under the NFD spelling of their name (before names were normalised)
editor_of = {int(f): (unicodedata.normalize("NFC", e) if isinstance(e, str) else "")
             for f, e in zip(faces["face_id"], faces["editor"])}
# the faces whose label an editor set (not the model, not an import): the decisions `others_decisions_guard` keeps
by_editor = set(faces.loc[faces["source"] == "editor", "face_id"].astype(int))


def face_fate(face_id: int) -> str:
    """A face as a notice names it: its id, and its label now and who set it (why it left a queue)."""
    status, editor = status_of.get(face_id), editor_of.get(face_id)
    if status is None:
        return f"face {face_id} (gone from the store)"
    return f"face {face_id} ({status}{f' by {editor}' if editor else ''})"


def thumbnails(face_ids: list[int], captions: list[str], per_row: int = 8) -> None:
    crops = faces.set_index("face_id")["crop_path"]
    for start in range(0, len(face_ids), per_row):
        cols = st.columns(per_row)
        for col, fid, cap in zip(cols, face_ids[start:start + per_row], captions[start:start + per_row]):
            path = media_file(crops.get(fid), settings)
            if path is not None:
                col.image(str(path), width="stretch")
            col.caption(plain(cap))  # captions name classes: shown as typed, never as markdown


def untick(table_key: str) -> Callable[[Any], None]:
    """After a bulk action, clear the table's ticks (the faces acted on leave or move in the queue)."""
    def clear(_result: Any) -> None:
        st.session_state.pop(f"{table_key}__picked", None)
        forget_tick_versions()
        st.session_state[f"{table_key}__generation"] = st.session_state.get(f"{table_key}__generation", 0) + 1
        # the action's rerun wipes pick_table's warning: the editor must still learn why fewer rows changed
        # than were ticked (the button counted the ticks left, the rows that left are named here)
        gone = st.session_state.pop(f"{table_key}{GONE}", None)
        if gone:
            flash(gone, "warning")
    return clear


def versions_at_tick(table_key: str, row_faces: Mapping[int, Mapping[int, int]], ticked: list[int]) -> dict[int, int]:
    """The label versions of the ticked rows' faces as the table showed them when the editor ticked each
    row: a bulk action's expected_versions. `row_faces`: per row the table draws, its faces' versions now.

    Why not `versions_seen` over the ticked faces: a tick reruns the page, which reads the store again,
    so a face another editor decided between the table's drawing and the tick would be recorded with
    that editor's version, and the press would overwrite the decision unseen (the row looks the same).
    Every face the table draws is recorded on every run; a ticked row keeps the versions drawn in the run
    before its tick until it is unticked, acted on, or a press on it is refused (`bulk_write`)."""
    drawn = versions_seen(f"{table_key}{DRAWN}", {f: v for faces in row_faces.values() for f, v in faces.items()})
    memory: dict[int, dict[int, int]] = st.session_state.setdefault(f"{table_key}{TICK_VERSIONS}", {})
    kept = {r: memory.get(r) or {f: drawn[f] for f in row_faces[r]} for r in ticked if r in row_faces}
    memory.clear()
    memory.update(kept)
    return {f: v for faces in kept.values() for f, v in faces.items()}


UNDO_SHOWN = "review_undo_shown"  # the operation "Undo my last operation" offered when it was drawn


def bulk_write(table_key: str, operation: Callable[[Any, str], Any]) -> None:
    """Run a bulk operation on a table's ticked rows (`write`: it reruns the page when it succeeds). When
    it is refused (a face changed since it was ticked), the versions of the ticks are forgotten: the
    table drawn beside the refusal is what the next press acts on, as on Explore."""
    write(operation, after=untick(table_key))
    st.session_state.pop(f"{table_key}{TICK_VERSIONS}", None)


def others_decisions_guard(face_ids: list[int], key: str) -> tuple[bool, str | None]:
    """Whether the buttons may act on the ticked faces, and the buttons' help when they may not.

    Explore's rule (`decided_faces_tick`): a face another editor confirmed, rejected or marked unknown
    changes only with a tick of its own, "Change the N decided face(s) too". The tick is for those faces
    at those versions: when they change (this editor's action, another editor's decision) it comes back
    unticked, so a tick given for two decisions never stands for others. Only editors' decisions: a label
    an import wrote is what this tab is there to correct, and the editor's own take no tick."""
    me = current_editor()
    theirs = sorted(f for f in face_ids if f in by_editor and status_of.get(f) in EDITOR_DECISIONS
                    and editor_of.get(f) != me)
    if not theirs:
        return True, None
    agreed = tuple((f, face_versions[f]) for f in theirs)
    named = ", ".join(face_fate(f) for f in theirs[:10]) + (" ..." if len(theirs) > 10 else "")
    if decided_faces_tick(len(theirs), f"{len(theirs)} of the ticked faces carry another editor's decision ({named}): "
                          "any action on them, approve included, changes those decisions.", key, agreed):
        return True, None
    return False, f"Tick \"Change the {len(theirs)} decided face(s) too\" first: this changes editors' decisions"


def bulk_actions(face_ids: list[int], listed: list[int], key: str, table_key: str, guard: bool = False) -> None:
    """Approve / reject / relabel / mark unknown on the chosen faces (of the `listed` ones the table draws):
    one operation, one audit event. A face another editor changed since it was ticked is refused
    (`versions_at_tick`), not overwritten. guard: faces another editor decided wait for a tick of their
    own (`others_decisions_guard`)."""
    seen = versions_at_tick(table_key, {f: {f: face_versions[f]} for f in listed}, face_ids)
    if not face_ids:
        st.caption("Tick faces in the table to act on them.")
        return
    allowed, guard_help = others_decisions_guard(face_ids, f"{key}_override") if guard else (True, None)
    cols = st.columns([1, 1, 1, 2, 1])
    # as on Explore: a face with nothing to approve disables Approve, and the help says which and what to do
    unnamed = sorted(set(face_ids) & unnameable)
    unnamed_faces = faces[faces["face_id"].isin(unnamed)]
    gives = own_classes(unnamed_faces)
    retired_names = [plain(repr(every_name.get(c, f"class {c}"))) for c in sorted(set(gives.dropna().astype(int)) & retired)]
    of_retired = set(unnamed_faces.loc[gives.isin(retired), "face_id"].astype(int))
    no_one = unnamed_faces.loc[named_no_one(gives, unnamed_faces["predicted_confidence"]), "face_id"].astype(int)
    approve_help = unnameable_help(unnamed, "relabel them, or untick them", retired_names, of_retired, no_one.tolist())
    if cols[0].button(f"Approve {len(face_ids)}", key=f"{key}_approve", disabled=bool(unnamed) or not allowed,
                      help=approve_help or guard_help):
        bulk_write(table_key, lambda s, e: approve_faces(s, face_ids, e, expected_versions=seen))
    if cols[1].button(f"Reject {len(face_ids)}", key=f"{key}_reject", disabled=not allowed, help=guard_help):
        bulk_write(table_key, lambda s, e: reject_faces(s, face_ids, e, expected_versions=seen))
    if cols[2].button(f"Mark {len(face_ids)} unknown", key=f"{key}_unknown", disabled=not allowed, help=guard_help):
        bulk_write(table_key, lambda s, e: mark_unknown(s, face_ids, e, expected_versions=seen))
    if class_ids:
        target = select_choice(cols[3], "Relabel to", class_ids, index=None, placeholder=CHOOSE_CLASS,
                               format_func=lambda c: class_names[c], key=f"{key}_class", label_visibility="collapsed")
        if (cols[4].button(f"Relabel {len(face_ids)}", key=f"{key}_relabel", disabled=not allowed, help=guard_help)
                and class_usable(store, target)):
            bulk_write(table_key, lambda s, e: relabel_faces(s, face_ids, int(target.value), e, expected_versions=seen))


def pick_table(frame: pd.DataFrame, key: str, describe: Callable[[int], str] = str) -> list[int]:
    """The frame as a table with a tick box per row; returns the ticked ids.

    Ticks are kept by id, not by row position: st.data_editor remembers edits per row position,
    and a queue recomputed between two clicks (another editor's decision, another class opened)
    would move them onto faces nobody ticked. When the rows change, the editor is rebuilt from
    the ids ticked before, and ticked rows that left the table are named, not silently dropped (`describe`
    names a row by its id: e.g. a face with its label now and who set it). The notice is also kept for a
    bulk action of this run (`untick`), whose rerun would otherwise wipe it unread."""
    ids = [int(i) for i in frame["id"]]
    picked_before = st.session_state.get(f"{key}__picked", [])
    if st.session_state.get(f"{key}__ids", ids) != ids:
        st.session_state[f"{key}__generation"] = st.session_state.get(f"{key}__generation", 0) + 1
        gone = [i for i in picked_before if i not in set(ids)]
        if gone:
            more = " ..." if len(gone) > 20 else ""
            notice = (f"{len(gone)} ticked row(s) left this list since (changed meanwhile, or another list was "
                      f"opened), so nothing will be done to them: {', '.join(map(describe, gone[:20]))}{more}")
            st.warning(notice)
            st.session_state[f"{key}{GONE}"] = notice
        else:
            st.session_state.pop(f"{key}{GONE}", None)
    else:
        st.session_state.pop(f"{key}{GONE}", None)
    generation = st.session_state.get(f"{key}__generation", 0)
    # bool even with no row: an empty column would be float, which a checkbox column refuses
    ticks = pd.Series([i in set(picked_before) for i in ids], index=frame.index, dtype=bool)
    shown = frame.assign(pick=ticks)[["pick", *frame.columns]]
    edited = st.data_editor(shown, hide_index=True, key=key if generation == 0 else f"{key}__{generation}",
                            disabled=list(frame.columns), width="stretch",
                            column_config={"pick": st.column_config.CheckboxColumn("pick", width="small")})
    picked = [int(i) for i in edited.loc[edited["pick"], "id"]]
    st.session_state[f"{key}__ids"], st.session_state[f"{key}__picked"] = ids, picked
    return picked


def filter_note(reasons: list[str], n: int) -> str:
    """The Reasons filter in the queue's caption: a filter left on (across pages too) must not pass for
    the whole queue, least of all once its reasons match no face any more."""
    if not reasons:
        return ""
    none = ", which no face of the queue has now" if n == 0 else ""
    return f" (filtered by Reasons: {', '.join(reasons)}{none})"


def listed_note(n: int, with_decided: bool = False) -> str:
    """Say when the table lists only the first LISTED of the queue, and how to reach the others: deciding
    these takes them out of the queue, unless decided faces are kept in it ("Decided faces too")."""
    if n <= LISTED:
        return ""
    how = ("turn off Decided faces too (decided faces then leave the queue) or narrow it" if with_decided else
           "decide them, or narrow the queue")
    return f"Only the first {LISTED} are listed: {how} (Reasons, Low confidence below) to reach the other {n - LISTED}. "


clusters_tab, suspects_tab, lookalikes_tab, tracks_tab = st.tabs(
    ["Class clusters", "Suspect faces", "Look-alike classes", "Tracks without a decision"])

with clusters_tab:
    labelled = sum(label is not None for label in labels)
    if labelled < 2:
        st.info("Cluster review needs labelled faces: approve or predict some first.")
    else:
        stats = cached_class_stats(URL, model_id, STAMP)
        chart = st.plotly_chart(cluster_review(stats), key="review_clusters_chart", on_select="rerun",
                                selection_mode=("points",))
        st.dataframe(stats, hide_index=True, width="stretch", key="review_stats")
        clicked = selected_ids(chart)
        names = stats["class"].tolist()
        # a new click on the chart opens that class; the choice otherwise stays (also across pages)
        click = clicked[0] if clicked and clicked[0] in names else None
        if click is not None and click != st.session_state.get("review_class_click"):
            st.session_state["review_class"] = click
        st.session_state["review_class_click"] = click
        keep_choice("review_class", names)
        opened = st.selectbox("Open a class (worst first)", names, key="review_class", persist_state="session")
        members = class_members(cached_face_distances(URL, model_id, STAMP), opened)
        st.caption(f"{len(members)} faces of {plain(opened)}, farthest from the centroid first")
        thumbnails(members["id"].head(24).tolist(), [f"{i} · {d:.3f}" for i, d in zip(members["id"].head(24), members["distance"].head(24))])
        # status and editor: whose decisions an action here would change (they take a tick of their own)
        member_ids = members["id"].astype(int)
        members = members.assign(status=[status_of.get(i, UNLABELED) for i in member_ids],
                                 editor=[editor_of.get(i, "") for i in member_ids])
        ticked = pick_table(members[["id", "status", "editor", "distance", "robust_z", "is_outlier", "nearest_class"]],
                            "review_members", describe=face_fate)
        bulk_actions(ticked, member_ids.tolist(), "review_members_bulk", "review_members", guard=True)

with suspects_tab:
    if not any(label is not None for label in labels):
        # the neighbours and the centroids a face is compared with are labelled faces: none yet
        st.info("Nothing to review yet: suspect faces are compared with labelled faces. Add classes seeded with "
                "faces on the Classes page, label faces on Explore, or predict some first.")
    else:
        left, middle, right = st.columns([2, 1, 2])
        min_conf = left.slider("Low confidence below", 0.0, 1.0, 0.5, 0.05, key="review_min_conf",
                               persist_state="session")
        # A face an editor decided after the model's last word on it is done: the queue shrinks as it is
        # worked through; the decided ones come back on request (to check the decisions themselves).
        with_decided = middle.toggle("Decided faces too", key="review_suspects_decided", persist_state="session",
                                     help="Include faces an editor approved, relabelled, rejected or marked unknown "
                                          "since the model's last prediction for them.")
        # The saved index of every face of this model (data folder/indexes), shared with Explore.
        queue = cached_suspects(URL, str(settings.data_dir), model_id, min_conf, STAMP)
        decided = decided_since_prediction(store)
        hidden = int(queue["id"].isin(decided).sum())
        if not with_decided:
            queue = queue[~queue["id"].isin(decided)]
        only = right.multiselect("Reasons", SUSPECT_REASONS, key="review_reasons", persist_state="session")
        if only:
            queue = queue[queue["reasons"].map(lambda t: any(r in t.split("; ") for r in only))]
        done_note = "" if with_decided or not hidden else f"{hidden} decided face(s) left out. "
        st.caption(f"{len(queue)} suspect faces{filter_note(only, len(queue))}, most suspicious first. "
                   f"{listed_note(len(queue), with_decided)}{done_note}{CONFIDENCE_NOTE}")
        head = queue.head(LISTED)
        table = head[["id", "label", "predicted", "confidence", "neighbour_label", "reasons"]].assign(
            predicted=prediction_text(head["predicted"], head["confidence"]),
            status=[status_of.get(int(i), UNLABELED) for i in head["id"]])
        # an undecided face's caption says the model's guess, as the table's "predicted" does: "unlabeled" under
        # a face the table calls "unknown (open set)" read as two answers
        thumbnails(head["id"].head(16).tolist(), [f"{i} · {f'guess: {guess}' if pd.isna(label) else label}"
                                                  for i, label, guess in zip(head["id"].head(16), head["label"].head(16),
                                                                             table["predicted"].head(16))])
        ticked = pick_table(table[["id", "status", "label", "predicted", "confidence", "neighbour_label", "reasons"]],
                            "review_suspects", describe=face_fate)
        bulk_actions(ticked, head["id"].astype(int).tolist(), "review_suspects_bulk", "review_suspects")

with lookalikes_tab:
    if sum(label is not None for label in labels) < 2:
        st.info("Look-alike pairs need at least two classes with faces.")
    else:
        pairs = cached_lookalikes(URL, model_id, STAMP)
        st.caption("Class pairs with the closest centroids: candidates for a merge or for relabelling")
        st.dataframe(pairs, hide_index=True, width="stretch", key="review_lookalikes")
        # Two classes of one person (a re-import under another spelling, a duplicate added by hand) are
        # merged right here; look-alikes of two people are reviewed in the Class clusters tab instead.
        id_of = {name: cid for cid, name in zip(catalog["class_id"], catalog["name"])}
        mergeable = [(a, b) for a, b in zip(pairs["class_a"], pairs["class_b"])
                     if a in id_of and b in id_of and {a, b} <= set(class_names.values())]
        if mergeable:
            pair = st.selectbox("Pair", mergeable, format_func=lambda p: f"{p[0]}  ·  {p[1]}", key="review_lookalike_pair")
            class_versions = dict(zip(catalog["class_id"].astype(int), catalog["version"].astype(int)))
            seen_classes = versions_seen("review_lookalike_classes", {id_of[n]: class_versions[id_of[n]] for n in pair})
            # The closest pairs are usually two people who look alike: the editor sees both classes'
            # most typical faces and says they are one person before a merge button does anything.
            for name in pair:
                typical = class_members(cached_face_distances(URL, model_id, STAMP), name, farthest_first=False)
                st.caption(f"{plain(name)}: {len(typical)} faces, the most typical first")
                thumbnails(typical["id"].head(8).tolist(), [f"{i}" for i in typical["id"].head(8)])
            same = st.checkbox("These are the same person", key=f"review_merge_same_{pair[0]}_{pair[1]}",
                               help="A merge moves every face of one class into the other (Undo takes it back).")
            into_b, into_a = st.columns(2)
            for col, (source, target) in ((into_b, pair), (into_a, pair[::-1])):
                if col.button(f"Merge {plain(source)} into {plain(target)}", key=f"review_merge_{source}_{target}",
                              disabled=not same):
                    write(lambda s, e, src=id_of[source], dst=id_of[target]: merge_classes(
                        s, src, dst, e, expected_versions={src: seen_classes[src], dst: seen_classes[dst]}))

with tracks_tab:
    tracks = cached_tracks(URL, model_id, STAMP)
    # A photo's track is one face, already in the other queues; the people of GIFs and videos are
    # what this queue is for, so photos join only on request.
    if not st.toggle("Photos too", key="review_tracks_photos",
                     help="A photo holds one face per track: include the faces of photos nobody decided yet."):
        tracks = tracks[tracks["media_kind"] != "image"]
    todo = tracks[~tracks["has_decision"]]
    st.caption(f"{len(todo)} of {len(tracks)} tracks have no decision yet. {CONFIDENCE_NOTE}")
    if len(todo):
        predicted = prediction_text(todo["predicted_class_name"], todo["predicted_confidence"])
        table = pd.DataFrame({"id": todo["track_id"], "media": todo["media_path"].map(lambda p: Path(str(p)).name),
                              "faces": todo["n_faces"], "predicted": predicted,
                              "confidence": todo["predicted_confidence"]})
        shown = todo.dropna(subset=["representative_face_id"]).head(16)
        thumbnails(shown["representative_face_id"].astype(int).tolist(),
                   [f"track {t} · {name}" for t, name in zip(shown["track_id"], predicted.loc[shown.index])])
        ticked = pick_table(table, "review_tracks")
        listed = faces[faces["track_id"].isin(table["id"])]
        row_faces = {int(t): dict(zip(part["face_id"].astype(int), part["version"].astype(int)))
                     for t, part in listed.groupby("track_id")}
        seen = versions_at_tick("review_tracks", row_faces, ticked)
        if not ticked:
            st.caption("Tick tracks in the table to act on every face of each.")
        else:  # one operation for the whole selection, so "Undo" takes all of it back
            cols = st.columns(5)
            # Explore's rule (views.nameable_tracks): Approve only where the store's approval succeeds
            picked = todo[todo["track_id"].isin(ticked)]
            members = faces[faces["track_id"].isin(ticked)]
            standing = track_predictions(store, picked)
            reasons = dict(zip(picked["track_id"].astype(int), track_refusals(picked, members, None, standing, retired)))
            unnamed = sorted(t for t, reason in reasons.items() if reason is not None)
            gives = {standing.get(t, (None, None))[0] for t in unnamed} | set(track_own_class(members).dropna())
            names = [plain(repr(every_name.get(c, f"class {c}"))) for c in sorted({c for c in gives if c in retired})]
            if cols[0].button(f"Approve {len(ticked)} track(s)", key="review_tracks_approve", disabled=bool(unnamed),
                              help=unnameable_tracks_help(unnamed, "relabel them, or untick them", names, reasons)
                              if unnamed else None):
                bulk_write("review_tracks", lambda s, e: label_tracks(s, ticked, "approve", e, expected_versions=seen))
            if cols[1].button(f"Reject {len(ticked)} track(s)", key="review_tracks_reject"):
                bulk_write("review_tracks", lambda s, e: label_tracks(s, ticked, "reject", e, expected_versions=seen))
            if cols[2].button(f"Mark {len(ticked)} track(s) unknown", key="review_tracks_unknown"):
                bulk_write("review_tracks", lambda s, e: label_tracks(s, ticked, "unknown", e, expected_versions=seen))
            if class_ids:
                target = select_choice(cols[3], "Relabel to", class_ids, index=None, placeholder=CHOOSE_CLASS,
                                       format_func=lambda c: class_names[c], key="review_tracks_class",
                                       label_visibility="collapsed")
                if (cols[4].button(f"Relabel {len(ticked)} track(s)", key="review_tracks_relabel")
                        and class_usable(store, target)):
                    bulk_write("review_tracks", lambda s, e: label_tracks(s, ticked, "relabel", e,
                                                                          class_id=int(target.value),
                                                                          expected_versions=seen))

st.divider()
# The press undoes the operation the button was drawn for (the last run's, `undo_offered`), not whatever is
# the editor's last by the time it arrives: after a colleague undid that one, an older operation the editor
# never saw here would go instead. `undo_last` refuses then, saying who undid it; this run offers the next.
shown_undo = st.session_state.get(UNDO_SHOWN)
if st.button("Undo my last operation", key="review_undo"):
    write(lambda s, e: undo_last(s, e, expected=shown_undo), after=forget_tick_versions)
st.session_state[UNDO_SHOWN] = undo_offered(store, current_editor())
