"""Ingest: a folder on the server or uploaded files -> cached embeddings and store rows, with progress."""
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import streamlit as st

from embeddings.pipeline import ModelUnavailableError, data_output_note, is_own_output, path_text
from labeling.errors import StoreError
from labeling.folders import list_folder
from labeling.ingest import _anchored, ingest  # _anchored: ".." as ingest (and the system) applies it
from labeling.pages.common import (UPLOADS, allowed_extensions, check_upload, current_editor, failure_row,
                                   get_pipeline, get_settings, get_store, human_bytes, plain, require_editor,
                                   safe_file_name, save_upload, server_path, show_error)
from labeling.queries import media_frame

RESULT_KEY = "ingest_last_result"

settings, store = get_settings(), get_store()
# Where a relative path typed is read, as on the Export page: the data folder as the server resolves it.
DATA_DIR = Path(settings.data_dir).expanduser().resolve()
# An upload's folder in a note: "<data folder>/uploads/<content hash>/" (`save_upload`), under either name the
# data folder has (as configured, made absolute as ingest makes it, or resolved).
UPLOAD_PATH = re.compile("|".join(
    re.escape(path_text(folder) + os.sep) + r"[0-9a-f]{16}" + re.escape(os.sep)
    for folder in dict.fromkeys([_anchored(Path(settings.data_dir) / UPLOADS), DATA_DIR / UPLOADS])))
st.title("Ingest")
st.caption(f"Accepted types: {', '.join(allowed_extensions())}; at most {human_bytes(settings.max_file_bytes)}, "
           f"{settings.max_pixels / 1e6:.0f} Mpixels per frame and {settings.max_frames} frames per file "
           f"(an animation at most {settings.max_decode_pixels / 1e9:g} Gpixels composited to reach its samples). "
           f"{settings.frames} frames are sampled per clip; faces with {settings.face_model}, GIFs with "
           f"{settings.gif_model}.")


@dataclass
class SavedUploads:
    """What `save_uploads` saved: the files, the upload names saved as each path (more than one: uploads merged,
    the same name and bytes) and the notes known before the ingest (a name saved under another extension)."""

    paths: list[Path] = field(default_factory=list)
    merged: dict[str, list[str]] = field(default_factory=dict)  # path as ingest names it -> the upload names
    notes: list[str] = field(default_factory=list)


# "<path>: same content as <kept path> (media N); stored once" (labeling.ingest._copy_notes)
COPY_NOTE = re.compile(r"^(?P<path>.+): same content as (?P<kept>.+) \(media (?P<id>\d+)\); stored once$")


def failed_copy_note(note: str, failures: list[tuple[str, str]]) -> bool:
    """Whether a note says a file that failed is "same content as ... stored once". Why left out: nothing of
    it was stored; the failures table says why it failed, and "stored once" read as if it had been."""
    match = COPY_NOTE.match(note)
    return match is not None and match["path"] in {path for path, _ in failures}


def merge_notes(merged: dict[str, list[str]], media: list[dict], notes: list[str]) -> tuple[list[str], list[str]]:
    """A line per group of uploads merged (the same name and bytes) saying what became of their one file, and
    the ingest's notes without the copy notes those lines replace.

    Why not "ingested once" for all: the file may be a copy of another media item (then it is stored with that
    one, which the line names) or may have failed (the failures table says so)."""
    copies = {m["path"]: m for note in notes if (m := COPY_NOTE.match(note))}
    status = {entry["path"]: entry["status"] for entry in media}
    lines, replaced = [], set()
    for path, names in merged.items():
        if len(names) < 2:
            continue
        head = f"{len(names)} uploads named {Path(path).name} had the same bytes"
        if status.get(path, "ok") != "ok":
            lines.append(f"{head}: saved once; it failed (see the failures)")
        elif (copy := copies.get(path)) is not None:
            lines.append(f"{head}: stored with media {copy['id']} ({upload_names(copy['kept'])})")
            replaced.add(copy.string)
        else:
            lines.append(f"{head}: ingested once")
    return lines, [n for n in notes if n not in replaced]


def upload_names(note: str) -> str:
    """A note with each upload's hidden path (<data folder>/uploads/<content hash>/<name>) shown as its name,
    as `failure_row` shows a failed one: the folder named by a hash says nothing to an editor."""
    return UPLOAD_PATH.sub("", note)


def run_ingest(paths: list[Path], editor: str, refused: list[dict[str, str]] | None = None,
               uploads: SavedUploads | None = None) -> None:
    """Ingest with a progress bar as the signed-in editor (the batch's audit event names them);
    the outcome is kept in the session and shown below, with the uploads refused before ingest and
    the notes on uploads merged or renamed (kept with it: a rerun of the page must not lose them)."""
    bar = st.progress(0.0, text="Looking for media ...")
    state = {"total": 0, "done": 0, "read": 0}

    def on_start(total: int) -> None:
        state["total"] = total
        bar.progress(0.0, text=f"0 / {total} files")

    def on_read(path: Path, batch: int) -> None:
        """What goes on between results, which come a chunk at a time after its batched inference."""
        state["read"] += 1
        doing = (f"detecting faces in {batch} file{'s' if batch != 1 else ''}" if batch
                 else f"read {state['read']} of {state['total']}: {plain(path.name)}")
        bar.progress(min(state["done"] / max(state["total"], 1), 1.0),
                     text=f"{state['done']} / {state['total']} · {doing}")

    def on_result(result) -> None:
        state["done"] += 1
        total = max(state["total"], 1)
        bar.progress(min(state["done"] / total, 1.0), text=f"{state['done']} / {state['total']} · {plain(Path(result.path).name)}")

    try:
        summary = ingest(paths, settings, on_start=on_start, on_result=on_result, on_read=on_read,
                         pipeline=get_pipeline(settings),
                         store=store, editor=editor)
    except ModelUnavailableError as exc:
        bar.empty()
        st.error(f"A model could not be loaded, nothing was ingested: {plain(str(exc))}")
        return
    except (OSError, StoreError) as exc:
        bar.empty()
        show_error(exc)
        return
    bar.progress(1.0, text=f"{state['done']} / {state['total']} files")
    refused_note = f"; {len(refused)} file(s) refused before ingest" if refused else ""
    uploads = uploads or SavedUploads()
    notes = [n for n in summary.notes if not failed_copy_note(n, summary.failures)]
    merged_notes, notes = merge_notes(uploads.merged, summary.media, notes)
    st.session_state[RESULT_KEY] = {"line": summary.line() + refused_note, "files": state["total"],
                                    "event_id": summary.event_id, "editor": editor,
                                    "failures": [failure_row(str(p), why) for p, why in summary.failures],
                                    "notes": [upload_names(n) for n in notes], "refused": list(refused or []),
                                    "upload_notes": merged_notes + uploads.notes,
                                    "empty": [upload_names(n) for n in summary.empty]}


BROWSE_KEY = "ingest_browse"  # the folder the browser shows

# Streamlit's uploader adds ".mpeg4" wherever ".mp4" is allowed (its TYPE_PAIRS). The decoder reads the format
# from the content (embeddings.media.sniff_format), so such a file is an mp4 by another name: it is saved as
# .mp4, the name a folder ingest and the pages (Explore plays it as a video) know it by.
UPLOAD_ALIASES = {".mpeg4": ".mp4"}


def upload_name(name: str) -> str:
    """The name an upload is checked and saved under: an alias extension (UPLOAD_ALIASES) replaced."""
    suffix = Path(name).suffix
    alias = UPLOAD_ALIASES.get(suffix.lower())
    return name[:len(name) - len(suffix)] + alias if alias else name


def extension_only(name: str) -> str | None:
    """Why an upload named only by an extension (".gif") is refused, None for any other name. Why: the
    uploader lets ".gif" through (the name ends in .gif), but to Python it is a hidden file named ".gif" with
    no extension at all (`Path('.gif').suffix == ''`), which check_upload called "type .? is not accepted"."""
    base = name.replace("\\", "/").split("/")[-1]
    types = {f".{e}" for e in allowed_extensions()} | set(UPLOAD_ALIASES)
    if Path(base).suffix or "." + base.lstrip(".").lower() not in types:
        return None
    return (f"the name {base} is only an extension, with no name before it (a hidden file, which a folder "
            f"ingest leaves out too): rename it, e.g. to clip{base.lower()}")


def upload_refusal(name: str, size: int) -> str | None:
    """Why an upload is refused before it is saved (None: accepted), by the name it is saved under."""
    return extension_only(name) or check_upload(upload_name(name), size, settings)


def merge_key(name: str, data: bytes) -> tuple[str, str]:
    """What save_upload stores an upload by: its safe name and its content. Two uploads with the same key are
    one file on disk (save_upload returns one path for both), so the second is ingested as the first."""
    return safe_file_name(upload_name(name)), hashlib.sha256(data).hexdigest()


def save_uploads(uploads: list, refused: list[dict[str, str]]) -> SavedUploads:
    """The accepted uploads saved (each file once), with the names saved as each file (uploads with the same
    name and bytes are merged: said after the ingest, `merge_notes`) and a note per upload saved under another
    extension (UPLOAD_ALIASES). A file that cannot be saved joins `refused`, the rest go on."""
    saved = SavedUploads()
    seen: dict[tuple[str, str], list[str]] = {}
    for f in uploads:
        data = f.getvalue()
        key = merge_key(f.name, data)
        if key in seen:
            seen[key].append(f.name)
            continue
        try:
            path = save_upload(upload_name(f.name), data, settings)
        except OSError as exc:  # a full disk, a data folder not writable: this file is refused, the rest go on
            refused.append({"file": f.name, "reason": f"could not be saved: {exc.strerror or exc}"})
            continue
        saved.paths.append(path)
        seen[key] = saved.merged[path_text(_anchored(path))] = [f.name]  # the path as ingest names it
    saved.notes = [f"{name} was saved as {upload_name(name)} (the same video format: it is read by its content)"
                   for name in dict.fromkeys(f.name for f in uploads) if upload_name(name) != name]
    return saved


def show_refused(refused: list[dict[str, str]]) -> None:
    """The uploads refused before ingest, with their reasons."""
    if refused:
        st.warning(f"{len(refused)} file(s) refused before ingest:")
        st.dataframe(pd.DataFrame(refused), hide_index=True, width="stretch")


def typed_target(text: str) -> Path | None:
    """The folder or file typed, when it exists on the server and is no output of giflens's own (the browser
    lists the data folder's cache and exports too: ingest leaves them out, so picking one is refused here,
    before any work); None after saying why not. A relative path is read inside the data folder, as the Export
    page reads one, not in the folder the server was started from (which the editor cannot know); errors name
    the full path looked at."""
    if not text.strip():
        st.error("Give a folder or a file path.")
        return None
    try:
        target = _anchored(Path(settings.data_dir).expanduser() / server_path(text.strip()))  # an absolute one (or ~) stays itself
    except StoreError as exc:  # "~nosuchuser/gifs": no home folder to expand it to
        show_error(exc)
        return None
    if not target.exists():
        st.error(f"{plain(path_text(target))} does not exist on the server.")
        return None
    if is_own_output(target, settings.data_dir):
        st.error(plain(data_output_note(target)))
        return None
    return target


def _browse_to(path: str) -> None:
    st.session_state[BROWSE_KEY] = path


def _open_subfolder(parent: str, key: str) -> None:
    """A callback: the browser shows the chosen subfolder in the same rerun the choice makes."""
    if st.session_state.get(key) is not None:
        _browse_to(str(Path(parent) / st.session_state[key]))


def _use_browsed() -> None:
    """Before the form draws its text box (a callback), so the box can take the browsed folder."""
    st.session_state["ingest_folder"] = st.session_state[BROWSE_KEY]


def folder_browser() -> None:
    """Walk the server's folders from the data folder's parent and pick one for the form below."""
    here = Path(st.session_state.setdefault(BROWSE_KEY, str(Path(settings.data_dir).resolve().parent)))
    listing = list_folder(here)
    st.caption(f"`{listing.path}` · {listing.media_files} media file(s) here, "
               f"{len(listing.subfolders)} subfolder(s)")
    if listing.error:
        st.warning(plain(listing.error))
    up, use = st.columns(2)
    up.button("Up one folder", key="ingest_browse_up", on_click=_browse_to, args=(str(listing.path.parent),),
              disabled=listing.path.parent == listing.path)
    use.button("Use this folder", key="ingest_browse_use", on_click=_use_browsed)
    if listing.subfolders:
        key = f"ingest_browse_sub_{listing.path}"
        st.selectbox("Open a subfolder", [p.name for p in listing.subfolders], index=None, key=key,
                     placeholder=f"{len(listing.subfolders)} subfolder(s)", on_change=_open_subfolder,
                     args=(str(listing.path), key))


folder_tab, upload_tab = st.tabs(["Folder", "Upload files"])
with folder_tab:
    with st.expander("Browse the server's folders"):
        if current_editor():  # a listing of the server's folders is for editors, not for anyone who can reach the app
            folder_browser()
        else:
            st.caption("Sign in with your name in the sidebar to browse the server's folders.")
    with st.form("ingest_folder_form"):
        folder = st.text_input("Folder or file on the server", key="ingest_folder",
                               placeholder="/path/to/media (folders are searched recursively)",
                               help=f"A relative path is read inside the data folder, {DATA_DIR}.")
        go_folder = st.form_submit_button("Ingest folder")
    if go_folder:  # a refusal below is not shown above the previous run's outcome
        st.session_state.pop(RESULT_KEY, None)
    # The editor first: whether a typed path exists is the server's business, not anyone's who can reach the app.
    if go_folder and (editor := require_editor()) and (target := typed_target(folder)) is not None:
        run_ingest([target], editor)

with upload_tab:
    uploads = st.file_uploader("Media files", type=allowed_extensions(), accept_multiple_files=True,
                               key="ingest_uploads")
    if st.button("Ingest uploaded files", key="ingest_uploads_button", disabled=not uploads):
        st.session_state.pop(RESULT_KEY, None)  # a refusal below is not shown above the previous run's outcome
        refused = [{"file": f.name, "reason": why} for f in uploads if (why := upload_refusal(f.name, f.size))]
        accepted = [f for f in uploads if not upload_refusal(f.name, f.size)]
        editor = require_editor() if accepted else None
        saved = save_uploads(accepted, refused) if editor else SavedUploads()
        if saved.paths:
            run_ingest(saved.paths, editor, refused, saved)
        elif refused and (editor or not accepted):  # every file refused: that is this press's outcome
            st.session_state[RESULT_KEY] = {"line": f"nothing ingested: {len(refused)} file(s) refused before ingest",
                                            "files": 0, "event_id": None, "editor": editor, "failures": [],
                                            "notes": [], "refused": refused, "upload_notes": []}
        if RESULT_KEY not in st.session_state:  # not signed in, or the ingest failed: shown for this run only
            show_refused(refused)

last = st.session_state.get(RESULT_KEY)
if last:
    st.subheader("Last ingest")
    # A folder that gave nothing (`IngestSummary.empty`) is no success: "ingested 0" in green hid a wrong folder.
    (st.warning if last["failures"] or last.get("refused") or last.get("empty") else st.success)(plain(last["line"]))
    if last.get("event_id") is not None:
        st.caption(f"Recorded as audit event {last['event_id']} by {plain(last['editor'])}.")
    else:
        st.caption("Nothing changed in the store, so no audit event was recorded.")
    if last["failures"]:
        st.write("Failures and their reasons:")
        st.dataframe(pd.DataFrame(last["failures"]), hide_index=True, width="stretch")
    show_refused(last.get("refused", []))
    for note in [*last.get("upload_notes", []), *last.get("notes", [])]:
        (st.warning if note in last.get("empty", []) else st.info)(plain(note))

media = media_frame(store)
st.subheader(f"Media in the store ({len(media)})")
failed = media[media["status"] == "failed"]
if len(failed):
    with st.expander(f"{len(failed)} failed file(s)"):
        rows = pd.DataFrame([failure_row(str(p), str(e or "")) for p, e in zip(failed["path"], failed["error"])])
        st.dataframe(pd.concat([failed[["media_id"]].reset_index(drop=True), rows], axis=1), hide_index=True,
                     width="stretch")
st.dataframe(media[["media_id", "name", "kind", "status", "faces", "tracks", "tags", "width", "height", "total_frames",
                    "size_bytes", "path"]], hide_index=True, width="stretch")
