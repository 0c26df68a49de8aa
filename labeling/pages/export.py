"""Export: confirmed labels in GIPHY's training layout, tags JSONL, projector TSV, and the manifest."""
from datetime import datetime
from pathlib import Path

import streamlit as st

from labeling.errors import StoreError
from labeling.pages.common import get_settings, get_store, require_editor, show_error
from labeling.queries import exports_frame

RESULT_KEY = "export_last_result"
OUT_KEY = "export_out_dir"

settings, store = get_settings(), get_store()
st.title("Export")
try:
    from labeling.export import export_dataset
except ImportError as exc:  # the export module is optional for the app to start
    st.info(f"Export is not available in this installation ({exc}).")
    st.stop()

st.caption("Writes labels.csv and raw_dataset/<Label>/*.jpg (confirmed labels of active classes), a train / "
           "validation split that keeps near-duplicate GIFs on one side, tags.jsonl, Embedding Projector TSVs "
           "and manifest.json with checksums. The folder is written whole or not at all.")
if OUT_KEY not in st.session_state:
    st.session_state[OUT_KEY] = str(Path(settings.data_dir) / "exports" / f"export-{datetime.now():%Y%m%d-%H%M%S}")
with st.form("export_form"):
    out_dir = st.text_input("Output folder (created; must be new or empty)", key=OUT_KEY)
    left, middle, right = st.columns(3)
    val_share = left.slider("Validation share (per class)", 0.0, 0.9, 0.2, 0.05, key="export_val_share")
    seed = middle.number_input("Split seed", min_value=0, value=0, step=1, key="export_seed")
    overwrite = right.checkbox("Replace the folder if it exists", key="export_overwrite")
    submitted = st.form_submit_button("Run export")

if submitted and (editor := require_editor()):
    bar = st.progress(0.0, text="Reading the store ...")

    def on_progress(done: int, total: int) -> None:
        bar.progress(done / total if total else 1.0, text=f"{done} / {total} faces")

    try:
        summary = export_dataset(store, Path(settings.data_dir), Path(out_dir.strip()), editor, split=val_share,
                                 seed=int(seed), on_progress=on_progress, face_model=settings.face_model,
                                 overwrite=overwrite)
    except (StoreError, OSError) as exc:
        bar.empty()
        show_error(exc)
    else:
        bar.progress(1.0, text="done")
        st.session_state[RESULT_KEY] = {"line": summary.line(), "manifest": summary.manifest}

last = st.session_state.get(RESULT_KEY)
if last:
    st.success(last["line"])
    manifest = last["manifest"]
    counts = manifest.get("counts", {})
    cols = st.columns(4)
    for col, key in zip(cols, ("classes", "faces", "train", "val")):
        col.metric(key.capitalize(), counts.get(key, 0))
    st.subheader("Manifest")
    st.json({k: v for k, v in manifest.items() if k != "files"})
    with st.expander(f"{len(manifest.get('files', {}))} files with their SHA-256"):
        st.json(manifest.get("files", {}), expanded=True)

st.subheader("Past exports")
past = exports_frame(store)
if len(past):
    st.dataframe(past, hide_index=True, width="stretch")
else:
    st.write("No export yet.")
