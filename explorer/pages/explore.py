"""Explore: the embedding space in 3D (UMAP, cosine), a point's details with actions, and a 2D view
for lasso / box selection and bulk actions. Data and projections come from explorer/views.py."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from sqlalchemy import func, select

from explorer.click_bridge import plotly_click
from explorer.figures import PALETTE, scatter_2d, scatter_3d, selected_ids
from explorer.projection import ProjectionError, fingerprint, load_cached, pca_preview
from explorer.projection_jobs import collect, projection_job, running_job
from explorer.views import (COLOR_OPTIONS, CONFIDENCE_RULE, HOVER, VIEWS, empty_view_message, filter_points, filter_summary,
                            named_no_one, nearest, retired_classes, searched_classes, track_predictions,
                            track_refusal_help, track_refusals, unnameable_help, unnameable_tracks_help, view_points)
from labeling.classes import add_class
from labeling.face_labels import decide_faces, label_track, label_tracks
from labeling.errors import StoreError
from labeling.pages.common import (CHOOSE_CLASS, class_usable, decided_faces_tick, different_person, flash,
                                   forget_look_alikes, get_settings, get_store, history_table, media_file, plain,
                                   select_choice, show_error, versions_seen, write)
from labeling.queries import (TURNED_DOWN, UNLABELED, audit_stamp, classes_frame, face_models, faces_frame, history_frame, name_order_key,
                              media_tags_frame, model_candidates, track_history_frame)
from labeling.schema import CONFIRMED_STATUSES, Media
from labeling.tags import add_tags
from labeling.validation import clean_tag_name

UMAP_MIN_POINTS = 16  # n_neighbors + 1
SELECTED = "explore_selected"  # id of the point whose details show
POINT_ID = "explore_point_id"
ISOLATED = "explore_isolated"  # ids of the points last chosen with the 2D lasso or box (this view's)
LASSO = "explore_lasso"  # the last non-empty 2D selection, kept while the 2D figure is redrawn (see _lasso)
CHART_2D = "explore_2d"  # the 2D chart's key: in the session only while Explore drew it in its last run
NEW_CLASS_BUTTON = "explore_new_class_add"  # the "Add class" press of a Faces selection (see _lost_press)
NEW_CLASS_DIFFERENT = "explore_new_class_different"  # its "It is a different person" tick (look-alike names)
BUTTONS_FOR = "explore_buttons_for"  # (view, model, point id) the point's decision buttons were last drawn for
BULK_TAG_BUTTON = "explore_bulk_tag_add"  # the "Tag N GIF(s)" press of a GIFs selection (see _lost_press)
PLANES = {"x-y": ("x", "y"), "x-z": ("x", "z"), "y-z": ("y", "z")}  # pairs of the 3D map's axes
EDITOR_DECISIONS = (*CONFIRMED_STATUSES, "rejected", "unknown")  # label statuses only an editor sets
BULK_NOUNS = {"Faces": "face(s)", "Face tracks": "track(s)", "GIFs": "GIF(s)"}  # views with 2D bulk actions
settings, store = get_settings(), get_store()
st.title("Explore")
if CHART_2D not in st.session_state:
    # Streamlit forgets a chart's selection once a run does not draw it (another page was visited): the lasso
    # drawn before is gone from the chart, and kept on it would come back unasked (see _lasso)
    st.session_state.pop(LASSO, None)


def _forget_selection() -> None:
    """A new view has points of another kind: face 12 and GIF 12 are different things, so the point
    picked in the old view must not be shown (or highlighted) as the new view's point of that id."""
    for name in (SELECTED, "explore_last_pick", ISOLATED, LASSO):
        st.session_state.pop(name, None)
    st.session_state[POINT_ID] = None  # set, not popped: the browser keeps showing a popped widget's value
    st.session_state["explore_isolate"] = False  # face ids isolated in the old view mean nothing in the new one


models = face_models(store)
controls = st.columns([1.2, 1.2, 1.2, 2])
view = controls[0].selectbox("Points", VIEWS, key="explore_view", persist_state="session", on_change=_forget_selection)
model_id = None
if view in ("Faces", "Face tracks", "Class centroids") and len(models) > 1:
    model_id = controls[1].selectbox("Face model", models["model_id"].tolist(), key="explore_model",
                                     persist_state="session")
elif len(models):
    model_id = models["model_id"].iloc[0]
colour = controls[2].selectbox("Colour by", list(COLOR_OPTIONS), key="explore_colour", persist_state="session")


@st.cache_data(show_spinner="Reading the store ...", max_entries=8)
def _points(url: str, view: str, model_id: str | None, stamp: tuple[int, int]) -> tuple[pd.DataFrame, np.ndarray]:
    return view_points(store, view, model_id)


def _stamp() -> tuple[int, int]:
    """Changes whenever an operation commits (`audit_stamp`), so cached point tables never go stale."""
    with store() as session:
        return audit_stamp(session)


stamp = _stamp()
points_from = settings.database_url or str(settings.data_dir)
points, vectors = _points(points_from, view, model_id, stamp)
if points.empty:
    with store() as session:  # what is in the store says why this view is empty
        has_media = session.scalar(select(func.count()).select_from(Media).where(Media.status == "ok")) > 0
    # empty centroids over faces that all carry an editor's "no": say so, not "no class has faces yet"
    face_statuses = (_points(points_from, "Faces", model_id, stamp)[0]["status"]
                     if view == "Class centroids" and not models.empty else ())
    st.info(empty_view_message(view, has_media=has_media, has_faces=not models.empty, face_statuses=face_statuses))
    st.stop()


def _keeping_chosen(options: list[str], key: str) -> list[str]:
    """A multiselect's options plus what the editor chose there that they leave out. Streamlit drops a
    chosen value that is no longer an option, so a search typed later (or another view) would undo a
    Classes or Status filter unseen; kept, it stays chosen and the caption above the map names it."""
    return [*options, *(c for c in st.session_state.get(key) or [] if c not in options)]


def _media_name(media_id: int) -> str:
    """A media item's file name: from this view's points, else (a GIF chosen in another view) from the store."""
    if media_id in gif_names.index:
        return str(gif_names[media_id])
    with store() as session:
        item = session.get(Media, int(media_id))
    return Path(item.path).name if item is not None else f"media {media_id}"


with controls[3].expander("Filters", expanded=False):
    search = st.text_input("Search a class by name", key="explore_search", persist_state="session")
    # as filter_points and the Classes page compare, on the names as stored (not group_safe's " (class)")
    class_choices = sorted(searched_classes(points, search), key=lambda n: (name_order_key(n), n.casefold(), n))
    classes = st.multiselect("Classes", _keeping_chosen(class_choices, "explore_classes"), key="explore_classes",
                             persist_state="session")
    statuses = st.multiselect("Status", _keeping_chosen(sorted(points["status"].unique()), "explore_statuses"),
                              key="explore_statuses", persist_state="session")
    confidence = st.slider("Confidence", 0.0, 1.0, (0.0, 1.0), 0.05, key="explore_confidence", persist_state="session")
    gif_names = points.drop_duplicates("media_id").set_index("media_id")["media_name"]
    # the GIF chosen in another view stays an option (and chosen), as the Classes and Status filters keep theirs
    media_options = [None, *gif_names.index.tolist()]
    media_options += [m for m in [st.session_state.get("explore_media")] if m is not None and m not in gif_names.index]
    media_choice = st.selectbox("GIF", media_options, key="explore_media", persist_state="session",
                                format_func=lambda m: "any" if m is None else f"{_media_name(m)} (id {m})")
    isolate = st.toggle("Isolate the 2D selection", key="explore_isolate",
                        help="Show only the points last selected with the lasso or box in the 2D view")

keep = st.session_state.get(ISOLATED) if isolate else None
mask = filter_points(points, classes, statuses, confidence, media_choice, search, keep)
# Filters outlive a change of view and a closed expander: say which ones hide points, above the map.
# Drawn always (empty when none is set), so the elements after it keep their place on the page.
filters_note = st.empty()
active_filters = filter_summary(classes, statuses, confidence, None if media_choice is None else _media_name(media_choice),
                                search, None if keep is None else len(keep), present=set(points["class"]),
                                found=class_choices,
                                media_present=media_choice is None or media_choice in gif_names.index)
if active_filters:
    filters_note.caption(f"Filtered: {plain(active_filters)} — {int(mask.sum()):,} of {len(points):,} shown")

# -- projection: PCA at once, UMAP in the background (cached; new points placed with transform) ----
cache_dir = Path(settings.data_dir) / "projections"
key = f"{view.lower().replace(' ', '-')}-{model_id or 'media'}"
chart = st.empty()
ids = points["id"].to_numpy()
pending = None  # the UMAP job still running: the PCA preview is shown (and usable) meanwhile
try:
    if len(vectors) < UMAP_MIN_POINTS:
        raise ProjectionError(f"{len(vectors)} points, UMAP needs {UMAP_MIN_POINTS}")
    signature = fingerprint(vectors, ids, key)  # hashed once per run: the job lookup and the cache share it
    job = running_job(signature)
    if job is None and (projection := load_cached(vectors, ids, cache_dir, model_id=key, with_reducer=False,
                                                  signature=signature)) is None:
        job = projection_job(vectors, ids, cache_dir, key, model_id=key)
    if job is not None and not job.done:
        pending = job
        raise ProjectionError("UMAP is computing in the background")
    if job is not None:
        if job.error is not None:  # remembered, not retried on every rerun; the editor keeps the PCA view
            raise ProjectionError(f"UMAP failed: {job.error}")
        collect(job)
        projection = load_cached(vectors, ids, cache_dir, model_id=key, with_reducer=False, signature=signature)
        if projection is None:
            raise ProjectionError("the projection computed in the background is not in the cache folder")
    how, fit_seconds = job.result() if job is not None else ("cache", 0.0)
    coords = projection.coords
    method_note = {"cache": "UMAP (cached)", "extended": "UMAP (new points placed with transform)",
                   "fitted": f"UMAP (fitted in {fit_seconds:.1f} s)"}[how]
    projected_by = "umap"
except ProjectionError as exc:
    coords = pca_preview(vectors) if len(vectors) > 3 else np.zeros((len(vectors), 3), np.float32)
    method_note = ("PCA preview while UMAP computes in the background" if pending is not None
                   else f"PCA, not UMAP ({exc})")
    projected_by = "pca"
if coords.shape[1] < 3:
    coords = np.pad(coords, ((0, 0), (0, 3 - coords.shape[1])))
frame = points.assign(x=coords[:, 0], y=coords[:, 1], z=coords[:, 2])
shown = frame[mask]
selected_now = st.session_state.get(SELECTED)
highlight = [selected_now] if selected_now is not None else None
# the centroids view has one point per class: every palette colour before folding into "other"
fig3 = scatter_3d(shown, COLOR_OPTIONS[colour], hover_cols=HOVER, highlight_ids=highlight,
                  max_classes=len(PALETTE) if view == "Class centroids" else 20).update_layout(height=640)
if view == "GIFs" and COLOR_OPTIONS[colour] == "class":  # a GIF's "class" is its most confident tag
    fig3.update_layout(legend_title_text="top tag")
if pending is not None:
    fig3.update_layout(title="PCA preview: UMAP is computing ...")


def _name_confidence(figure):
    """The colour bar of a map coloured by confidence says which confidence (`CONFIDENCE_RULE`)."""
    if COLOR_OPTIONS[colour] == "confidence" and view in ("Faces", "Face tracks"):
        figure.for_each_trace(lambda t: t.update(marker_colorbar_title_text="model's confidence<br>in the class shown")
                              if getattr(t.marker, "showscale", None) else None)
    return figure


fig3 = _name_confidence(fig3)
event = chart.plotly_chart(fig3, key="explore_3d", on_select="rerun", selection_mode=("points",))
st.caption(f"{len(shown):,} of {len(points):,} {view.lower()} · {method_note} · click a point for its details")
confidence_note = st.empty()  # drawn always, so the elements after it keep their place on the page
if view in ("Faces", "Face tracks") and (COLOR_OPTIONS[colour] == "confidence" or tuple(confidence) != (0.0, 1.0)):
    confidence_note.caption(CONFIDENCE_RULE)


@st.fragment(run_every=2.0)
def _await_umap(signature: str) -> None:
    """Polls the background fit; the whole page reruns once, with UMAP, when it is done."""
    job = running_job(signature)
    if job is None or job.done:
        st.rerun(scope="app")
    stage, fraction = job.progress()
    st.progress(fraction, text=f"UMAP in the background: {stage} (the map is replaced when it is ready)")


if pending is not None:
    _await_umap(pending.signature)
clicked = selected_ids(plotly_click("explore_3d"))  # 3D clicks: Streamlit's on_select never sees them
picked = selected_ids(event)
fresh_pick = picked[0] if picked and picked[0] != st.session_state.get("explore_last_pick") else None
choice = clicked[0] if clicked else fresh_pick
if choice is not None:
    st.session_state["explore_last_pick"] = choice
    st.session_state[SELECTED] = st.session_state[POINT_ID] = int(choice)  # the id box shows what was clicked


def _select_typed() -> None:
    value = st.session_state.get(POINT_ID)
    st.session_state[SELECTED] = None if value is None else int(value)


def _reseed_point_id() -> None:
    """The id box shows the point whose details show. The selection outlives a visit to another page,
    the box's value (a widget's, forgotten while its page is away) does not: an empty box beside a
    point's details hides which point they are."""
    if st.session_state.get(POINT_ID) is None and st.session_state.get(SELECTED) is not None:
        st.session_state[POINT_ID] = st.session_state[SELECTED]


def _pressed(key: str) -> bool:
    """Whether a decision button `key`_approve, _reject, _unknown or _relabel was pressed in this run, read
    before the buttons are drawn: one drawn disabled (another editor decided a face since) returns False, and
    the press would otherwise pass without a word (`decided_faces_tick` says what changed)."""
    return any(st.session_state.get(f"{key}_{b}") for b in ("approve", "reject", "unknown", "relabel"))


def _tick_first(decided: int) -> str:
    return f"Tick \"Change the {decided} decided face(s) too\" first: this changes editors' decisions"


def _approve_class(value: object) -> int | None:
    """A point's "approve_class" as the class id Approve sends (None: approving needs no class)."""
    return None if pd.isna(value) else int(value)


def _class_name(class_id: int) -> str:
    """A class's name as typed, retired ones included (the catalog, not only the active classes)."""
    return str(all_names.get(class_id, f"class {class_id}"))


def _track_reasons(chosen: list[int], members: pd.DataFrame) -> dict[int, str | None]:
    """Per chosen track (members: their faces), why Approve is not offered (views.track_refusals, the rule
    the points' "nameable" follows), so its help names the cause that holds: the model naming no one, a face
    with no class, faces predicted as different classes, a retired class."""
    tracks = pd.DataFrame({"track_id": chosen})
    sent = shown.set_index("id")["approve_class"].reindex(chosen)
    reasons = track_refusals(tracks, members, [_approve_class(c) for c in sent], track_predictions(store, tracks),
                             retired)
    return dict(zip(chosen, reasons))


def _confidence_text(row: pd.Series, candidates: list[tuple[int, str, float]]) -> str:
    """The details line's confidence: the map's (`CONFIDENCE_RULE`: the model's probability for the class the
    point shows) for a decided point, and apart from it the model's own guess, "model: <class> 0.84". Why: a
    relabelled face read "confidence 0.95", the model's faith in the class the editor moved it away from."""
    if row["kind"] not in ("face", "track") or row["status"] not in EDITOR_DECISIONS:
        return f" · confidence {row['confidence']:.2f}" if pd.notna(row["confidence"]) else ""
    mine = (f" · model's confidence in it {row['confidence']:.2f}" if pd.notna(row["confidence"]) else
            "" if row["status"] in TURNED_DOWN else " · not among the model's top classes")
    return mine + (f" · model: {plain(candidates[0][1])} {candidates[0][2]:.2f}" if candidates else "")


def _stale_press(point: tuple) -> bool:
    """Whether a decision button of the point details was pressed while they were drawn for another point
    (`BUTTONS_FOR`), and if so say so. Why: the id box commits a typed id on blur, in the same run as the
    click on a button, so the press came for the point shown before and would decide one never shown."""
    drawn_for = st.session_state.get(BUTTONS_FOR)
    if not _pressed("explore") or drawn_for is None or drawn_for == point:
        return False
    st.warning(f"Nothing was written: the details now show {noun.lower()} {point[-1]} (the button was pressed "
               f"for {noun.lower()} {drawn_for[-1]}); check it and press again.")
    return True


catalog = classes_frame(store)
active = catalog[catalog["status"] == "active"]
class_ids = active["class_id"].tolist()
class_names = dict(zip(active["class_id"], active["name"]))
all_names = dict(zip(catalog["class_id"], catalog["name"]))
retired = retired_classes(store)
details, bulk = st.tabs(["Point details", "2D selection and bulk actions"])

# -- one point: crop, GIF, labels, history, neighbours, actions ----------------------------------
with details:
    noun = view[:-1] if view.endswith("s") else view  # "Face track", "GIF", ...
    _reseed_point_id()
    st.number_input(f"{noun} id", min_value=0, step=1, value=None,
                    key=POINT_ID, on_change=_select_typed, help="Type an id, or click a point in the 3D view")
    point_id = st.session_state.get(SELECTED)
    rows = points.index[points["id"] == point_id] if point_id is not None else []
    if point_id is None:
        st.caption("No point selected.")
    elif len(rows) == 0:
        st.warning(f"No {noun} with id {point_id} in this view.")
    else:
        row_no = int(rows[0])
        row = points.loc[row_no]
        left, middle, right = st.columns([1, 2, 2])
        crop = media_file(row["crop_path"], settings)
        if crop is not None:
            left.image(str(crop), caption=f"{row['kind']} {point_id}", width="stretch")
        source = media_file(row["media_path"], settings)
        if source is not None and source.suffix.lower() in (".mp4", ".webm", ".mov", ".mkv", ".m4v"):
            middle.video(str(source))
        elif source is not None:
            middle.image(str(source), caption=row["media_name"], width="stretch")  # a GIF plays
        candidates = (model_candidates(store, **{f"{row['kind']}_id": int(point_id)})
                      if row["kind"] in ("face", "track") else [])
        right.markdown(f"**{plain(row['class'])}** · status **{row['status']}**" + _confidence_text(row, candidates)
                       + f"  \nsource {plain(row['source'])} · {plain(row['media_name'])} (media {row['media_id']})")
        # A face and a GIF have audit keys of their own (a GIF's: ingest and its tags); a track is
        # decided through its faces, so its history is theirs.
        if row["kind"] == "face":
            events = history_frame(store, f"face:{point_id}", limit=20)
        elif row["kind"] == "track":
            right.caption("History of the track's faces")
            events = track_history_frame(store, int(point_id), limit=20)
        elif row["kind"] == "gif":
            right.caption("History of the GIF: ingest, tags and its faces' labels")
            events = history_frame(store, f"media:{point_id}", limit=20)
        else:  # a centroid's id is its class's (views.centroid_points)
            right.caption(f"{row['n']} face(s) make this centroid; the class's history (rename, merge, split, "
                          "attributes); its faces, nearest the centroid first, are on the Review page")
            events = history_frame(store, f"class:{int(point_id)}", limit=20)
        right.dataframe(history_table(events), hide_index=True, height=180)
        if row["kind"] in ("face", "track"):
            if candidates:
                right.caption("Model's top classes: " + ", ".join(f"{plain(name)} {p:.2f}" for _, name, p in candidates[:5])
                              + (" (below the open-set threshold: unknown)" if row["class"] == UNLABELED else ""))
        if row["kind"] in ("face", "track"):
            target = None  # no active class: approve, reject and mark unknown still apply
            if class_ids:
                # default to the model's best guess that is still an active class, else none: the catalog's
                # first class would be relabeled to by one press nobody aimed
                guess = next((c for c, _, _ in candidates if c in class_names), None)
                target = select_choice(right, "Relabel to", class_ids, format_func=lambda c: class_names[c],
                                       index=class_ids.index(guess) if guess is not None else None,
                                       placeholder=CHOOSE_CLASS,
                                       key=f"explore_relabel_class_{point_id}")  # per point: its own default
            else:
                right.caption("No active class to relabel to: add one, or make one active, on the Classes page")
            # the label versions shown, so a decision on a face another editor changed meanwhile is refused
            allowed, guard_help = True, None
            if row["kind"] == "track":
                # a track is decided through all its faces: the editors' decisions among them are as much in
                # the way here as in a 2D selection of tracks, and take the same tick
                members = faces_frame(store, model_id, track_ids=[int(point_id)])
                seen = versions_seen("explore_point_track", dict(zip(members["face_id"].astype(int), members["version"])))
                by_editors = members["label_status"].isin(EDITOR_DECISIONS)
                decided = int(by_editors.sum())
                with right:
                    # agreed: as for a 2D selection, the tick is for these decided faces at these versions only
                    allowed = decided_faces_tick(decided, f"{decided} of the track's {len(members)} face(s) carry an "
                                               "editor's decision: any decision on the track, approve included, "
                                               "changes those.", key=f"explore_point_override_{point_id}",
                                               pressed=_pressed("explore"),
                                               agreed=tuple(sorted(zip(
                                                   members.loc[by_editors, "face_id"].astype(int),
                                                   members.loc[by_editors, "version"].astype(int)))))
                guard_help = None if allowed else _tick_first(decided)
            else:
                seen = versions_seen("explore_point", {int(point_id): row["version"]})
            buttons = iter(right.columns(2) + right.columns(2))  # two rows: four labels fit a third of the page
            with right:
                stale = _stale_press((view, model_id, int(point_id)))
            st.session_state[BUTTONS_FOR] = (view, model_id, int(point_id))

            def act(decision: str, class_id: int | None = None) -> None:
                if stale:  # pressed for the point drawn before (see _stale_press): nothing is written
                    return
                if row["kind"] == "track":
                    write(lambda s, e: label_track(s, int(point_id), decision, e, class_id=class_id,
                                                   expected_versions=seen))
                    return
                write(lambda s, e: decide_faces(s, [int(point_id)], decision, e, class_id=class_id,
                                                expected_versions=seen))

            no_class = not row["nameable"]  # nothing to approve (views.nameable_faces / nameable_tracks)
            turned_down = row["kind"] == "face" and row["status"] in TURNED_DOWN and candidates
            gives = _approve_class(row["approves"])
            nothing = (f"Class {plain(_class_name(gives))} is retired: labels cannot be added to it; relabel "
                       "to another class" if gives in retired else
                       "No class to approve: pick one and relabel" if row["kind"] == "face" else
                       track_refusal_help(_track_reasons([int(point_id)], members)[int(point_id)]) if no_class
                       else None)
            # a track an editor decided confirms the class its point shows, not the model's (views.track_approve_classes)
            approve_class = _approve_class(row["approve_class"])
            approve_help = (nothing if no_class else guard_help if not allowed else
                            f"The model was right after all: confirms {plain(candidates[0][1])}" if turned_down else
                            f"Confirms {plain(row['class'])}, the editors' decision, for every face of the track"
                            if approve_class is not None else None)
            if next(buttons).button("Approve", key="explore_approve", width="stretch", disabled=no_class or not allowed,
                                    help=approve_help):
                act("approve", approve_class)
            if next(buttons).button("Reject", key="explore_reject", width="stretch", disabled=not allowed,
                                    help=guard_help):
                act("reject")
            if target is not None and next(buttons).button("Relabel", key="explore_relabel", width="stretch",
                                                           disabled=not allowed, help=guard_help):
                if class_usable(store, target):
                    act("relabel", int(target.value))
            if next(buttons).button("Mark unknown", key="explore_unknown", width="stretch", disabled=not allowed,
                                    help=guard_help):
                act("unknown")
        near_rows, near_dist = nearest(vectors, row_no, k=8)
        if len(near_rows):
            st.subheader("Nearest neighbours")
            gallery = st.columns(len(near_rows))
            for col, r, d in zip(gallery, near_rows, near_dist):
                n = points.loc[int(r)]
                picture = media_file(n["crop_path"], settings) or media_file(n["media_path"], settings)
                if picture is not None:
                    col.image(str(picture), width="stretch")
                col.caption(f"{n['id']} · {plain(n['class'])} · {d:.3f}")

# -- 2D view: lasso / box, then one action on every selected point ------------------------------
def _decision_buttons(count: str, key: str, override: bool, approve_ok: bool, decide: Callable[[str, int | None], None],
                      approve_help: str | None = None) -> None:
    """Approve / reject / mark unknown / relabel for a 2D selection (`count`: "12", "3 track(s)");
    decide(decision, class id) writes. Every button but approve waits for `override`."""
    cols = st.columns(4)
    if cols[0].button(f"Approve {count}", key=f"{key}_approve", disabled=not approve_ok, help=approve_help):
        decide("approve", None)
    if cols[1].button(f"Reject {count}", key=f"{key}_reject", disabled=not override):
        decide("reject", None)
    if cols[2].button(f"Mark {count} unknown", key=f"{key}_unknown", disabled=not override):
        decide("unknown", None)
    with cols[3]:
        if class_ids:
            target = select_choice(st, "Relabel to", class_ids, format_func=lambda c: class_names[c], key=f"{key}_class",
                                   index=None, placeholder=CHOOSE_CLASS)
            if st.button(f"Relabel {count}", key=f"{key}_relabel", disabled=not override):
                # the class chosen is still the one in the box, and one was chosen
                if class_usable(store, target):
                    decide("relabel", int(target.value))


def _track_approve_class(chosen: list[int]) -> tuple[int | None, str | None]:
    """The one class id approving the chosen tracks sends, and why they cannot be approved together (else None).

    Each track comes out as one class (views.track_approves: the class editors decided, else the model's
    person for it): tracks that all come out as X are approved by sending X (`label_tracks` gives every
    face X, approved where it agrees with the face's label or prediction, relabelled elsewhere), which
    also confirms editors' relabels to X. Sent without a class only when no track needs one (the model's
    person per track). One `label_tracks` call (one decision, one undo) sends one class, so a selection
    coming out as two is refused, naming each track and its class."""
    needs = shown.loc[shown["id"].isin(chosen), ["id", "approve_class", "approves"]]
    if needs["approve_class"].isna().all():
        return None, None
    gives = {_approve_class(c) for c in needs["approves"]}
    if len(gives) == 1 and None not in gives:
        return next(iter(gives)), None
    which = ", ".join(f"{t} ({'several classes' if pd.isna(c) else plain(_class_name(int(c)))})"
                      for t, c in zip(needs["id"].head(10), needs["approves"].head(10)))
    return None, (f"One Approve confirms one class, and these tracks come out as {len(gives)}: track(s) {which}"
                  f"{' ...' * (len(needs) > 10)}. Select the tracks of one class (colour by class), or approve "
                  "them one by one")


def _retired_ids(ids: list[int]) -> list[int]:
    """Those of the points whose class Approve would give (views' "approves") is retired."""
    part = shown[shown["id"].isin(ids)]
    return sorted(int(i) for i, c in zip(part["id"], part["approves"]) if not pd.isna(c) and int(c) in retired)


def _retired_names(ids: list[int]) -> list[str]:
    """The retired classes Approve would give the points (views' "approves"), quoted as shown."""
    hit = sorted({int(c) for c in shown.loc[shown["id"].isin(ids), "approves"].dropna() if int(c) in retired})
    return [plain(repr(_class_name(c))) for c in hit]


def _unnamed(chosen: list[int]) -> list[int]:
    """The chosen points with no class to approve (see POINT_COLUMNS' "nameable"), in id order."""
    return sorted(set(chosen) & set(shown.loc[~shown["nameable"].astype(bool), "id"].astype(int)))


def _bulk_faces(chosen: list[int]) -> None:
    """Approve, reject, mark unknown, relabel or seed a new class with the selected faces."""
    shown_versions = dict(zip(shown["id"].astype(int), shown["version"]))
    seen = versions_seen("explore_bulk", {i: shown_versions[i] for i in chosen if i in shown_versions})
    # A lasso catches whatever lies in the way, editors' decisions included (approved, relabelled,
    # rejected, marked unknown): changing those, approve included, takes a tick of its own.
    decided = shown[shown["id"].isin(chosen) & shown["status"].isin(EDITOR_DECISIONS)]
    classes_hit = ", ".join(f"{plain(c)} {n}" for c, n in decided["class"].value_counts().head(5).items())
    override = decided_faces_tick(len(decided), f"{len(decided)} of the selected faces are confirmed, rejected or marked "
                                f"unknown by an editor ({classes_hit}): any action on them, approve included, "
                                "changes those decisions.", key=f"explore_bulk_override_{hash(tuple(chosen))}",
                                pressed=_pressed("explore_bulk"),
                                agreed=tuple(sorted(zip(decided["id"].astype(int), decided["version"].astype(int)))))
    unnamed = _unnamed(chosen)
    part = shown[shown["id"].isin(unnamed)]
    no_one = part.loc[named_no_one(part["approves"], part["predicted_confidence"]), "id"].astype(int).tolist()
    _decision_buttons(str(len(chosen)), "explore_bulk", override, approve_ok=not unnamed and override,
                      approve_help=(unnameable_help(unnamed, "relabel them, or select without them",
                                                    _retired_names(unnamed), _retired_ids(unnamed), no_one) if unnamed
                                    else _tick_first(len(decided)) if not override
                                    else "Each face gets its class, else the model's prediction"),
                      decide=lambda d, c: write(lambda s, e: decide_faces(s, chosen, d, e, class_id=c,
                                                                          expected_versions=seen), after=_forget_lasso))
    with st.form("explore_new_class"):
        name = st.text_input("New celebrity class from the selection", key="explore_new_class_name")
        different = st.checkbox("It is a different person", key=NEW_CLASS_DIFFERENT,
                                help="Add the class although an existing class has the same name once accents, "
                                     "case and underscores are ignored: the page names them first")
        if (st.form_submit_button("Add class", disabled=not override, key=NEW_CLASS_BUTTON)
                and different_person(catalog, "explore_new_class", name, different, "Add class")):
            write(lambda s, e: add_class(s, name, e, seed_face_ids=chosen, expected_versions=seen),
                  after=_class_added)


def _class_added(result: object = None) -> None:
    """After a class from the selection: the selection is done, and the next name's look-alikes need their tick."""
    _forget_lasso(result)
    forget_look_alikes("explore_new_class", NEW_CLASS_DIFFERENT)


def _bulk_tracks(chosen: list[int]) -> None:
    """One decision for every face of the selected GIF person tracks: one operation, one undo."""
    members = faces_frame(store, model_id, track_ids=chosen)
    seen = versions_seen("explore_bulk_tracks", dict(zip(members["face_id"].astype(int), members["version"])))
    # Any editor decision among the faces (approved, relabelled, rejected, marked unknown): every button,
    # approve included (it gives each face the track's predicted person), would change it.
    decided = int(members["label_status"].isin(EDITOR_DECISIONS).sum())
    override = decided_faces_tick(decided, f"{decided} face(s) of the selected tracks carry an editor's decision: any "
                                "decision on the tracks, approve included, changes those.",
                                key=f"explore_bulk_tracks_override_{hash(tuple(chosen))}",
                                pressed=_pressed("explore_bulk_tracks"),
                                agreed=tuple(sorted((int(f), int(v)) for f, v, d in zip(
                                    members["face_id"], members["version"],
                                    members["label_status"].isin(EDITOR_DECISIONS)) if d)))
    unnamed = _unnamed(chosen)
    approve_class, mixed = _track_approve_class(chosen)
    _decision_buttons(f"{len(chosen)} track(s)", "explore_bulk_tracks", override,
                      approve_ok=not unnamed and not mixed and override,
                      approve_help=(unnameable_tracks_help(unnamed, "relabel them, or select without them",
                                                           _retired_names(unnamed), _track_reasons(unnamed, members))
                                    if unnamed else mixed or (_tick_first(decided) if not override else
                                    "Every face of each track gets the person the model named for it"
                                    if approve_class is None else
                                    f"Every face of the tracks gets {plain(_class_name(approve_class))}, the "
                                    "class their points show")),
                      decide=lambda d, c: write(lambda s, e: label_tracks(
                          s, chosen, d, e, class_id=approve_class if d == "approve" else c, expected_versions=seen),
                          after=_forget_lasso))


def _bulk_gifs(chosen: list[int]) -> None:
    """Tag the selected GIFs: GIFs that look alike sit together, so one lasso tags a visual family.
    GIFs that already carry the tag keep their confidence (adding never overwrites one)."""
    with st.form("explore_bulk_tag"):
        left, right = st.columns([3, 1])
        tag = left.text_input("Tag the selected GIFs with", key="explore_bulk_tag_name")
        confidence = right.number_input("Confidence", 0.0, 1.0, 1.0, 0.05, key="explore_bulk_tag_confidence")
        submitted = st.form_submit_button(f"Tag {len(chosen)} GIF(s)", key=BULK_TAG_BUTTON)
    if not submitted:
        return
    try:
        rows = media_tags_frame(store, tag=tag)  # a bad tag name is refused here
    except StoreError as exc:
        show_error(exc)
        return
    rows = rows[rows["media_id"].isin(chosen)]
    # Left alone: GIFs carrying the tag (their confidence is someone's decision) and GIFs where an
    # editor rejected it (the Tags page restores one on purpose). Pending suggestions are accepted.
    skipped = {status: rows.loc[rows["status"] == status, "media_id"].astype(int).tolist()
               for status in ("active", "rejected")}
    targets = [m for m in chosen if m not in {*skipped["active"], *skipped["rejected"]}]
    notices = _left_alone(skipped, tag)
    if not targets:  # nothing to write, no rerun: the notices show in this run
        for notice in notices:
            st.info(plain(notice))
        return
    # the versions of the suggestions read now: one changed before the write is refused, not taken over
    seen = {(int(m), int(t)): int(v) for m, t, v in rows.loc[rows["media_id"].isin(targets),
                                                               ["media_id", "tag_id", "version"]].itertuples(index=False)}
    if write(lambda s, e: add_tags(s, targets, [tag], e, confidence=float(confidence), expected_versions=seen),
             after=_forget_lasso, rerun=False) is not None:
        for notice in notices:  # flashed after the outcome: a write reruns the page, which would wipe an st.info
            flash(notice, "info")
        st.rerun()


def _left_alone(skipped: dict[str, list[int]], tag: str) -> list[str]:
    """What a bulk tag left alone and why: the GIFs already carrying it and those where an editor rejected it."""
    why = {"active": "already carry it and keep their confidence",
           "rejected": "had it rejected by an editor (restore it on the Tags page)"}
    return [f"{len(skipped[status])} of the selected GIFs {why[status]}: {clean_tag_name(tag)!r} is not added there"
            for status in why if skipped[status]]


def _lasso_controls() -> tuple:
    """What the 2D figure is drawn with, besides the points' labels: plane, colour, Isolate (and the ids it
    keeps), the filters, the point whose details show, and the projection (UMAP replacing the PCA preview
    moves every point). A change of these redraws the chart while the editor's selection stands (`_lasso`)."""
    return (plane, colour, None if keep is None else tuple(keep), tuple(classes), tuple(statuses), tuple(confidence),
            media_choice, search, st.session_state.get(SELECTED), projected_by)


def _lassoed_state(ids: list[int]) -> int:
    """What the selection's points are now (label status, class, version; filters aside): a decision on one
    of them ends a kept selection, a write elsewhere does not."""
    rows = points.loc[points["id"].astype(int).isin(ids), ["id", "status", "class", "version"]]
    return hash(tuple(rows.sort_values("id").itertuples(index=False, name=None)))


def _lasso(event: object) -> tuple[list[int], bool]:
    """The 2D selection to act on, and whether it is a kept one (the map no longer shows it).

    Why kept: Streamlit names the 2D chart by its whole figure, so a change to the figure (Isolate narrowed
    to the last lasso, a plane switched, a filter) makes a new chart with no selection, and a bulk button
    pressed in the run that redraws it met no selection and was dropped unseen. So the last non-empty
    selection of this view is kept in the session, restricted to the points shown, until the editor draws
    another, clears it (the Clear button, or deselecting on the chart that shows it), a write succeeds, the
    view or model changes, none of its points is shown, or the editor leaves the page (see the page's top).

    Only redraws caused by Explore's own controls (`_lasso_controls`) keep it: an empty selection is read
    as cleared when the controls are those of the chart that showed it (the editor deselected there), or
    when one of its points changed since (`_lassoed_state`: a decision on it, by anyone). A write elsewhere
    in the store, an ingest batch or UMAP replacing the PCA preview leave the selection's points as they
    were, and it stands."""
    lassoed = [int(i) for i in selected_ids(event)]
    where = (view, model_id)
    if lassoed:
        st.session_state[LASSO] = {"where": where, "ids": lassoed, "controls": _lasso_controls(),
                                   "data": _lassoed_state(lassoed)}
        return lassoed, False
    kept = st.session_state.get(LASSO)
    if not kept or kept["where"] != where:
        return [], False
    on_map = set(shown["id"].astype(int))
    still = [i for i in kept["ids"] if i in on_map]
    # the chart that showed the selection drawn again without it, the data changed, or all of it hidden
    if kept["data"] != _lassoed_state(kept["ids"]) or kept["controls"] == _lasso_controls() or not still:
        st.session_state.pop(LASSO)
        return [], False
    kept["controls"] = None  # drawn on earlier controls: a later return to them is a new, empty chart
    return still, True


def _forget_lasso(_result: object = None) -> None:
    """A write (or the Clear button) ends the kept selection: the points changed, or the editor said so."""
    st.session_state.pop(LASSO, None)


def _lost_press() -> None:
    """A bulk button pressed while no selection is left (its points were hidden or decided meanwhile): say
    so, rather than letting the press pass without a word."""
    if (any(_pressed(k) for k in ("explore_bulk", "explore_bulk_tracks"))
            or any(st.session_state.get(k) for k in (NEW_CLASS_BUTTON, BULK_TAG_BUTTON))):
        st.warning("Nothing was written: the 2D selection was cleared before the press reached the page (a "
                   "decision on its points, or none of them shown any more). Select the points again and press again.")


with bulk:
    if len(shown) and view in BULK_NOUNS:
        # the map is 3D: a cluster hidden behind another in one plane stands apart in another
        plane = st.radio("Plane of the 3D map", list(PLANES), horizontal=True, key="explore_plane",
                         persist_state="session")
        # no ring for the point whose details show: opening one would redraw the chart, and drop its selection
        fig2 = _name_confidence(scatter_2d(shown, COLOR_OPTIONS[colour], x=PLANES[plane][0], y=PLANES[plane][1],
                                           hover_cols=HOVER))
        event2 = st.plotly_chart(fig2, key=CHART_2D, on_select="rerun", selection_mode=("points", "box", "lasso"))
        chosen, kept = _lasso(event2)
        if chosen and not kept:
            st.session_state[ISOLATED] = chosen
        noun = BULK_NOUNS[view]
        st.write(f"{len(chosen)} {noun} selected" + (f": {', '.join(map(str, chosen[:20]))}" + (" ..." if len(chosen) > 20 else "") if chosen else
                 " (draw a lasso or a box around points)"))
        if kept:
            left, right = st.columns([4, 1])
            left.caption("Kept from your last lasso or box: the map was redrawn since, so it no longer shows them.")
            right.button("Clear selection", key="explore_clear_lasso", on_click=_forget_lasso)
        if chosen:
            {"Faces": _bulk_faces, "Face tracks": _bulk_tracks, "GIFs": _bulk_gifs}[view](chosen)
        else:
            _lost_press()
    elif len(shown):
        st.info("Bulk actions work on faces, face tracks and GIFs: a class centroid is decided through its faces "
                "(Review page).")
