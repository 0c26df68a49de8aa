"""Export: confirmed labels in GIPHY's training layout, tags JSONL, projector TSV, and the manifest."""
import json
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import streamlit as st

from labeling.errors import StoreError, utc_text
from labeling.pages.common import (get_settings, get_store, history_table, plain, progress_callback, require_editor,
                                   server_path, show_error, stage_progress)
from labeling.queries import exports_frame

RESULT_KEY = "export_last_result"
REPLACE_USED_KEY = "export_replace_used"  # the last run replaced a folder: untick "Replace"
OUT_KEY = "export_out_dir"
PROPOSED_KEY = "export_proposed_out_dir"  # the folder the page proposed, as opposed to one the editor typed
RETRAIN_KEY = "retrain_last_result"
OPTIONS_KEY = "export_previous_options"  # the earlier exports the form was last drawn with
OWN_EXPORT_KEY = "export_own_run"  # this editor's export just succeeded: propose it to follow next
NO_PREVIOUS = ""  # not None: a selectbox showing None shows "Choose an option", as if nothing were chosen


class StaleChoice(NamedTuple):
    """What changed in the earlier exports since the form was drawn: `message` (None: nothing that a press
    made on that form must not ignore) and `own` (the change is this editor's own export)."""

    message: str | None
    own: bool = False


def export_label(folder: str, past: pd.DataFrame) -> str:
    """An earlier export as a warning names it: its folder, and who made it when if the store records it."""
    match = past[[str(Path(d)) == folder for d in past["out_dir"]]] if len(past) else past
    if not len(match):
        return folder
    return f"{folder} (by {match['editor'].iloc[0]} at {utc_text(match['at'].iloc[0])})"


def previous_changed(drawn: list[str] | None, earlier: list[str], choice: str | None, past: pd.DataFrame,
                     own: bool = False) -> StaleChoice:
    """Why a press of Run export must not run: exports appeared since the form was drawn (a colleague's:
    the editor chose "none" or an older one not knowing a newer one exists), or the export the editor chose
    to follow is no longer offered. Why refuse rather than proceed: the choice decides every label index and
    every face's side, and the old code silently followed the newest, the colleague's."""
    if drawn is None or own:
        return StaleChoice(None, own)
    new = [d for d in earlier if d not in drawn]
    lost = choice is not None and choice not in [NO_PREVIOUS, *earlier]
    if not new and not lost:
        return StaleChoice(None)
    parts = []
    if new:
        parts.append(f"{'A new export' if len(new) == 1 else 'New exports'} appeared since this page was drawn: "
                     + ", ".join(export_label(d, past) for d in new))
    if lost:
        parts.append(f"the export you chose to follow, {choice}, is no longer offered (moved, changed or removed)")
    said = "; ".join(parts)
    return StaleChoice(said[0].upper() + said[1:] + ". Nothing was exported: check \"Keep the label indices and train / "
                       "validation sides of\" and press Run export again.")


def export_face_model(store, settings) -> str:
    """The face model whose crops the export copies, chosen as `giflens export` chooses it (the store's only
    one), or, when the store holds several, GIFLENS_FACE_MODEL if it is one of them (as Retrain below does).
    Why not GIFLENS_FACE_MODEL alone: it names what ingest computes; a store ingested with another model
    would export no face at all. A store without any face embedding exports its classes and tags whatever
    the model. Raises ValidationError when the store holds several models, none of them the configured one."""
    from labeling.queries import face_models
    from labeling.recognition import resolve_face_model

    known = set(face_models(store)["model_id"])
    if not known:
        return settings.face_model
    return resolve_face_model(store, settings.face_model if settings.face_model in known else None)


def no_faces_warning(summary) -> str | None:
    """The warning `giflens export` prints when confirmed labels exist but none had a face crop of the chosen
    model: an export with no face is otherwise easy to take for a successful one."""
    from labeling.export import no_faces_exported

    note = no_faces_exported(summary, "start the app with GIFLENS_FACE_MODEL naming it")
    return None if note is None else f"{note[0].upper()}{note[1:]}."


def page_out_dir(text: str, data_dir: Path) -> Path:
    """The output folder typed on the page: an absolute path (or `~`) as it is, a relative one inside the
    data folder. A relative one whose ".." (applied as the system applies them, after a symbolic link to
    its target's parent) leads out of the data folder is refused (ValidationError): the box says a relative
    path is taken inside the data folder, and "../outside" must not quietly write beside it. One, relative or
    absolute, in a folder giflens keeps its own data in (uploads/, cache/ ...: `refuse_data_folder`) is refused
    too: an export in uploads/ would be ingested as new media by the next ingest of the data folder."""
    from labeling.errors import ValidationError
    from labeling.export import refuse_data_folder
    from labeling.ingest import _anchored  # the rule the export itself follows for ".." (`resolve_out_dir`)

    typed = server_path(text)
    if not typed.is_absolute():
        if not _anchored(data_dir / typed).is_relative_to(data_dir):
            raise ValidationError(f"{text} leads out of the data folder {data_dir}: a relative output folder is "
                                  "taken inside the data folder; give an absolute path to export elsewhere")
        typed = data_dir / typed
    refuse_data_folder(typed, data_dir)
    return typed


def fresh_out_dir(exports: Path, now: datetime) -> Path:
    """<exports>/export-<local time>, or -2, -3 ... after it when that name is taken (two runs in one
    second): an export refuses a folder that is not empty, so each proposal must be a new one."""
    base = exports / f"export-{now:%Y%m%d-%H%M%S}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def verify_lines(folder: Path, on_progress=None) -> tuple[bool, list[str]]:
    """(whole, lines) of a past export's folder checked against its manifest.json (`verify_export`, every file
    hashed, on_progress(done, total) counting them), as `giflens export --verify` says it."""
    from labeling.export import verify_export

    if not folder.is_dir():
        return False, [f"{folder}: no such folder (moved or deleted)"]
    problems = verify_export(folder, on_progress=on_progress)
    if problems:
        return False, problems
    files = len(json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["files"])
    return True, [f"export {folder} verified: {files} files match manifest.json"]


def verify_form(past: pd.DataFrame) -> None:
    """A past export chosen and checked file by file (Verify): "on disk" only stats the files, so a crop
    damaged but of its recorded size, or an export written before sizes were recorded, shows here."""
    folders = list(dict.fromkeys(str(d) for d in past["out_dir"]))
    left, right = st.columns([4, 1])
    chosen = left.selectbox("Check a past export's files against its manifest.json", folders, key="export_verify_dir")
    if right.button("Verify", key="export_verify") and chosen:
        bar = st.progress(0.0, text="Hashing the files ...")  # seconds at 50k crops
        try:
            whole, lines = verify_lines(Path(chosen), on_progress=progress_callback(bar, "files hashed"))
        finally:
            bar.empty()
        if whole:
            st.success(plain(lines[0]))
        else:
            shown = lines[:20] + ([f"... and {len(lines) - 20} more"] if len(lines) > 20 else [])
            st.error(plain(f"{chosen} does not match its manifest.json ({len(lines)} problem(s)): " + "; ".join(shown)))


def damaged_offered(earlier: list[str], past: pd.DataFrame) -> list[str]:
    """The offered exports (`earlier_exports`) the past exports' table shows as not on disk: its on_disk,
    computed once per page run (`exports_frame`), is reused rather than each export checked again."""
    whole = {str(Path(d)) for d, on in zip(past["out_dir"], past["on_disk"]) if on} if len(past) else set()
    return [d for d in earlier if str(Path(d)) not in whole]


settings, store = get_settings(), get_store()
# Where a relative output folder goes, and where the proposals are made: the data folder as the server
# resolves it. A relative GIFLENS_DATA_DIR in a proposal would be joined onto the data folder a second time.
data_dir = Path(settings.data_dir).expanduser().resolve()
st.title("Export")
try:
    from labeling.export import damaged_export_note, earlier_exports, export_dataset, offered_damage
except ImportError as exc:  # the export module is optional for the app to start
    st.info(f"Export is not available in this installation ({exc}).")
    st.stop()

st.caption("Writes labels.csv and raw_dataset/<Label>/*.jpg (confirmed labels of active classes), a train / "
           "validation split that keeps near-duplicate GIFs on one side, tags.jsonl, Embedding Projector TSVs "
           "and manifest.json with checksums. The folder is written whole or not at all.")
# The proposed folder moves on once something is in it (the last export went there), so running the
# export again writes a new folder instead of being refused. A folder the editor typed is kept: running
# into it again is refused unless they tick "Replace", which is theirs to decide. Set before the form
# draws the text box (Streamlit refuses a change to a widget's value once it is drawn).
proposed = st.session_state.get(PROPOSED_KEY)
if OUT_KEY not in st.session_state or (st.session_state[OUT_KEY] == proposed and Path(proposed).exists()):
    st.session_state[OUT_KEY] = st.session_state[PROPOSED_KEY] = str(
        fresh_out_dir(data_dir / "exports", datetime.now()))
past = exports_frame(store)
# Earlier exports of this store still intact on disk, newest first (the rule `giflens export` follows):
# a retraining job that fine-tunes its last model needs each class at the output index it had, so the
# newest is the default.
earlier = [str(d) for d in earlier_exports(store)]
# What a press of Run export was made against: the earlier exports the form offered, and the choice in it.
stale = previous_changed(st.session_state.get(OPTIONS_KEY), earlier, st.session_state.get("export_previous"), past,
                         own=st.session_state.pop(OWN_EXPORT_KEY, False))
st.session_state[OPTIONS_KEY] = earlier
# The editor's choice stays while it is offered (a colleague's export appearing does not move it). Proposed
# again: the newest, when the widget's state is gone (Streamlit drops it when the editor visits another page),
# the choice left the options, or this editor's own export just made a new newest one.
if stale.own or st.session_state.get("export_previous") not in [NO_PREVIOUS, *earlier]:
    st.session_state["export_previous"] = earlier[0] if earlier else NO_PREVIOUS
# "Replace" is ticked for one run: left on, a later export into an existing folder would replace it
# without the editor deciding again. Cleared here, before the checkbox is drawn (see above).
if st.session_state.pop(REPLACE_USED_KEY, False):
    st.session_state["export_overwrite"] = False
# An export offered to follow whose crops were deleted or damaged since: still offered (its class map and split
# are as written, and following an older one instead would draw its training faces into validation), but said:
# "followed" for the one selected to follow, "offered" for the others (the editor would take them for that one)
for folder in damaged_offered(earlier, past):
    if (why := offered_damage(Path(folder))) is not None:
        selected = folder == st.session_state.get("export_previous")  # one of `earlier` or NO_PREVIOUS (above)
        st.warning(plain(damaged_export_note(Path(folder), why, followed=selected)))
with st.form("export_form"):
    out_dir = st.text_input("Output folder (created; must be new or empty)", key=OUT_KEY,
                            help="A relative path is taken inside the data folder (one leading out of it is refused); "
                                 "an absolute path may be anywhere")
    left, middle, right = st.columns(3)
    val_share = left.slider("Validation share (per class)", 0.0, 0.9, 0.2, 0.05, key="export_val_share")
    seed = middle.number_input("Split seed", min_value=0, value=0, step=1, key="export_seed")
    overwrite = right.checkbox("Replace the folder if it exists", key="export_overwrite",
                               help="Only a folder holding an earlier export, and no file its manifest does "
                                    "not list (the OS's own .DS_Store, Thumbs.db and the like aside), is "
                                    "replaced; any other folder is refused")
    previous = st.selectbox("Keep the label indices and train / validation sides of", [NO_PREVIOUS, *earlier],
                            key="export_previous",
                            format_func=lambda d: d or "none: number classes in creation order, draw the split anew",
                            help="Every class still exported keeps the index it had in that export; new classes fill "
                                 "the indices of classes that dropped out, then follow. Every face of that export "
                                 "keeps its side, so a model trained on it is never validated on its training faces")
    submitted = st.form_submit_button("Run export")

if submitted:
    st.session_state.pop(RESULT_KEY, None)  # a refusal must not be shown above the previous run's success
if submitted and stale.message:  # the press chose among other exports than there are now: nothing is written
    st.warning(plain(stale.message))
elif submitted and not out_dir.strip():
    st.error("Give an output folder.")  # an empty path would be the server's working directory
elif submitted and (editor := require_editor()):
    bar = st.progress(0.0, text="Reading the store ...")
    on_progress = progress_callback(bar, "faces")
    try:
        # a relative folder is one in the data folder, not wherever the server happened to be started
        target = page_out_dir(out_dir.strip(), data_dir)  # an absolute path stays itself
        summary = export_dataset(store, data_dir, target, editor, split=val_share,
                                 seed=int(seed), on_progress=on_progress, face_model=export_face_model(store, settings),
                                 overwrite=overwrite, previous=Path(previous) if previous else None)
    except (StoreError, OSError) as exc:
        bar.empty()
        show_error(exc)
    else:
        bar.progress(1.0, text="done")
        st.session_state[RESULT_KEY] = {"line": summary.line(), "manifest": summary.manifest,
                                        "warning": no_faces_warning(summary)}
        st.session_state[REPLACE_USED_KEY] = overwrite
        st.session_state[OWN_EXPORT_KEY] = True  # the next run proposes this export to follow
        st.rerun()  # draw the form again, now proposing the next new folder beside the result

last = st.session_state.get(RESULT_KEY)
if last:
    if last.get("warning"):
        st.warning(plain(last["warning"]))  # notes name classes: shown as typed, never as markdown
    st.success(plain(last["line"]))
    manifest = last["manifest"]
    if manifest.get("previous_export"):  # what its label indices and sides follow, as the CLI says before it starts
        st.caption(plain(f"Label indices and train / validation sides follow the earlier export "
                         f"{manifest['previous_export']}."))
    for note in manifest.get("notes", []):  # earlier sides not kept, or a validation set left short by them
        st.warning(plain(note))
    counts = manifest.get("counts", {})
    cols = st.columns(4)
    for col, key in zip(cols, ("classes", "faces", "train", "val")):
        col.metric(key.capitalize(), counts.get(key, 0))
    st.subheader("Manifest")
    st.json({k: v for k, v in manifest.items() if k not in ("files", "sizes")})
    with st.expander(f"{len(manifest.get('files', {}))} files with their SHA-256"):
        st.json(manifest.get("files", {}), expanded=True)

st.subheader("Past exports")
if len(past):
    # times in UTC as on every page; on_disk: whether the folder still holds that export (a later one may replace it)
    st.dataframe(history_table(past), hide_index=True, width="stretch",
                 column_config={"on_disk": st.column_config.CheckboxColumn("on disk")})
    verify_form(past)
else:
    st.write("No export yet.")

# -- retrain: editors' confirmed labels -> a new model -> new predictions ------------------------
st.subheader("Retrain")
st.caption("Trains the retraining head (softmax + center loss) on the confirmed labels, compares it with the "
           "centroid classifier on held-out confirmed faces, saves both under the data folder's models/ and "
           "predicts the faces nobody decided yet with the better one. Before: the centroid classifier's "
           "holdout accuracy; after: the deployed model's, both trained on the same split.")
with st.form("retrain_form"):
    left, middle, right = st.columns(3)
    center_loss = left.number_input("Center loss lambda", min_value=0.0, value=0.01, step=0.01, format="%.3f",
                                    key="retrain_center_loss")
    hidden = middle.number_input("Hidden width (0: linear head)", min_value=0, value=0, step=64, key="retrain_hidden")
    holdout = right.slider("Holdout share (per class)", 0.05, 0.5, 0.2, 0.05, key="retrain_holdout")
    retrain_submitted = st.form_submit_button("Retrain")

if retrain_submitted:
    st.session_state.pop(RETRAIN_KEY, None)  # a refusal must not be shown above the previous run's success
if retrain_submitted and (editor := require_editor()):
    from labeling.queries import face_models
    from labeling.recognition import retrain

    known_models = set(face_models(store)["model_id"])
    face_model = settings.face_model if settings.face_model in known_models else None
    retrain_bar = st.progress(0.0, text="Training ...")
    on_retrain_progress, on_retrain_step = stage_progress(retrain_bar, "steps")
    try:
        outcome = retrain(store, Path(settings.data_dir), face_model, center_loss_lambda=float(center_loss),
                          hidden=int(hidden) or None, holdout_share=float(holdout), editor=editor,
                          on_progress=on_retrain_progress, on_step=on_retrain_step)
    except (StoreError, OSError) as exc:
        retrain_bar.empty()
        show_error(exc)
    else:
        retrain_bar.progress(1.0, text="done")
        st.session_state[RETRAIN_KEY] = {
            "line": outcome.line(), "before": outcome.before, "after": outcome.after, "deployed": outcome.deployed,
            "version": outcome.model_version, "artifact": str(outcome.artifact), "report": str(outcome.report),
            "predicted": outcome.refresh.faces, "changed": outcome.refresh.changed, "notes": outcome.notes,
            "decision": outcome.decision}

retrained = st.session_state.get(RETRAIN_KEY)
if retrained:
    st.success(f"Retrained: deployed {retrained['deployed']} {retrained['version']}; "
               f"{retrained['predicted']} undecided faces predicted ({retrained['changed']} changed).")
    before_col, after_col, version_col = st.columns(3)
    before_col.metric("Holdout accuracy before", f"{retrained['before']:.4f}")
    change = retrained["after"] - retrained["before"]
    after_col.metric("Holdout accuracy after", f"{retrained['after']:.4f}", delta=f"{change:+.4f}",
                     delta_color="normal" if round(change, 4) else "off")  # a tie is no green arrow
    version_col.metric("Model version", retrained["version"].removeprefix("centroid-knn-").removeprefix("head-"),
                       help=retrained["version"])
    if retrained.get("decision"):  # which model, and why: a tie keeps the centroid classifier
        st.write(plain(retrained["decision"]))
    st.code(retrained["line"], language=None)
    st.caption(f"Artifact: {retrained['artifact']} · report: {retrained['report']}")
    for note in retrained["notes"]:
        st.info(plain(note))
