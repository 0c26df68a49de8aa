"""Ingest page, retrain and the past exports:

2. Uploads refused before ingest (empty, wrong type, too big) are kept with the last ingest's outcome and
   counted in it: a rerun of the page no longer loses them; uploads merged because they had the same name
   and bytes are said so.
5. An upload named `.mpeg4` (Streamlit's uploader offers it for mp4) is read by its content and saved as
   .mp4; a name that is only an extension (".gif") is refused with that reason, not "type .? is not accepted".
4. Retrain keeps only the deployed model's calibration note (the holdout models' notes gave a second,
   conflicting count), and the note's advice is what an editor can do.
3. Retrain says which model it deployed and why (`RetrainResult.decision`).
6. The past exports say whether each export's folder still holds it (`on_disk`).

Stores: empty SQLite stores fed real photos, a real GIF and a real encoded mp4 through the Ingest page; the
retrain stores are test_retrain_seeds_and_divergence's (synthetic 128-d embeddings in a real store)."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import open_app
from test_app_pages import button, go, no_exception
from conftest import encoder
from test_decode import MP4_ENCODERS, _video, _video_frames
from test_queries import GIF, SHARED
from test_retrain_seeds_and_divergence import small_store

from labeling.db import open_store
from labeling.export import export_dataset
from labeling.queries import EXPORT_COLUMNS, exports_frame, media_frame
from labeling.recognition import fit_classifier, retrain
from models.celebrity_classifier import CalibrationWarning, open_set_threshold

PHOTO = SHARED / "lfw" / "Ai_Sugiyama" / "Ai_Sugiyama_0001.jpg"


def ingest_page(tmp_path: Path, monkeypatch):
    """The Ingest page on an empty store with "ann" signed in."""
    at = open_app(monkeypatch, tmp_path / "data", f"sqlite:///{tmp_path / 'store.db'}")
    at.session_state["editor"] = "ann"
    return go(at, "ingest")


def upload(at, files: list[tuple[str, bytes, str]]):
    at.file_uploader(key="ingest_uploads").set_value(files).run()
    button(at, "Ingest uploaded files").click().run()
    no_exception(at)
    return at


def refused_tables(at) -> list[dict[str, str]]:
    """The refused-before-ingest tables' rows (file, reason: no path, unlike the failures)."""
    return [row for d in at.dataframe if list(d.value.columns) == ["file", "reason"]
            for row in d.value.to_dict("records")]


def warnings_of(at) -> list[str]:
    return [w.value for w in at.warning]


# -- 2. refused uploads kept with the last ingest ---------------------------------------------------------------
@pytest.mark.slow
def test_refused_and_merged_uploads_stay_under_last_ingest_after_a_rerun(tmp_path, monkeypatch):
    at = ingest_page(tmp_path, monkeypatch)
    photo = PHOTO.read_bytes()
    upload(at, [("zero.gif", b"", "image/gif"), (PHOTO.name, photo, "image/jpeg"), (PHOTO.name, photo, "image/jpeg")])
    for run in ("press", "rerun"):
        assert refused_tables(at) == [{"file": "zero.gif", "reason": "the file is empty"}], run
        assert any(w == "1 file(s) refused before ingest:" for w in warnings_of(at)), run
        line = [w for w in warnings_of(at) if w.startswith("ingested 1, cached 0, failed 0")]
        assert line and line[0].endswith("; 1 file(s) refused before ingest"), (run, warnings_of(at))
        infos = [i.value for i in at.info]
        assert f"2 uploads named {PHOTO.name} had the same bytes: ingested once" in infos, (run, infos)
        at.run()  # any rerun of the page (another widget, a sidebar click) kept nothing of it before
        no_exception(at)
    assert len(media_frame(open_store(f"sqlite:///{tmp_path / 'store.db'}"))) == 1


def test_a_press_whose_every_upload_is_refused_is_the_last_ingest(tmp_path, monkeypatch):
    at = ingest_page(tmp_path, monkeypatch)
    upload(at, [("zero.gif", b"", "image/gif")])
    at.run()
    no_exception(at)
    assert "Last ingest" in [s.value for s in at.subheader]
    assert "nothing ingested: 1 file(s) refused before ingest" in warnings_of(at)
    assert refused_tables(at) == [{"file": "zero.gif", "reason": "the file is empty"}]


# -- 5. .mpeg4 and a name that is only an extension ------------------------------------------------------------
@pytest.mark.slow
def test_an_mpeg4_upload_is_an_mp4_and_an_extension_only_name_says_so(tmp_path, monkeypatch):
    video = _video(tmp_path / "clip.mp4", encoder(*MP4_ENCODERS), _video_frames(20)).read_bytes()
    at = ingest_page(tmp_path, monkeypatch)
    assert ".mpeg4" in at.file_uploader(key="ingest_uploads").allowed_type  # what the picker offers
    upload(at, [("clip.mpeg4", video, "video/mp4"), (".gif", (SHARED / "gifs" / GIF).read_bytes(), "image/gif")])
    refused = refused_tables(at)
    assert [r["file"] for r in refused] == [".gif"], refused
    assert refused[0]["reason"].startswith("the name .gif is only an extension, with no name before it")
    assert "type .? is not accepted" not in refused[0]["reason"] and "rename it, e.g. to clip.gif" in refused[0]["reason"]
    media = media_frame(open_store(f"sqlite:///{tmp_path / 'store.db'}"))
    assert list(zip(media["name"], media["kind"], media["status"])) == [("clip.mp4", "video", "ok")]
    assert "clip.mpeg4 was saved as clip.mp4 (the same video format: it is read by its content)" in [
        i.value for i in at.info]


def test_an_mpeg4_upload_whose_content_is_no_video_fails_by_its_content(tmp_path, monkeypatch):
    at = ingest_page(tmp_path, monkeypatch)
    upload(at, [("notes.mpeg4", b"just some text", "video/mp4")])
    assert refused_tables(at) == []  # accepted by its name, as .mp4 is
    failures = [d.value for d in at.dataframe if "path" in d.value.columns and "reason" in d.value.columns
                and "media_id" not in d.value.columns]
    assert failures and list(failures[0]["file"]) == ["notes.mp4"] and "text" in failures[0]["reason"].iloc[0]


# -- 4. one calibration note, the deployed model's, with advice an editor can follow ---------------------------
def test_retrain_keeps_only_the_deployed_models_calibration_note(tmp_path):
    store, _, _ = small_store(tmp_path)
    result = retrain(store, tmp_path / "data", epochs=5)
    counts = [n for n in result.notes if "impostor distances" in n]
    assert len(counts) == 1, result.notes  # was two: the holdout model's count beside the deployed one's
    deployed_fit = fit_classifier(store).data.notes if result.deployed == "centroid" else None
    if deployed_fit is not None:
        assert counts == [n for n in deployed_fit if "impostor distances" in n]
    assert "calibrate()" not in counts[0] and "fit more classes" not in counts[0]
    assert counts[0].endswith("to measure it, confirm faces of more classes, or mark faces of people outside the "
                              "class list unknown in Review")


def test_the_calibration_warning_names_editor_actions():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationWarning)
        open_set_threshold(np.array([0.1, 0.2]), np.array([0.5, 0.6, 0.7]), 0.01, model_id="dlib-resnet-v1")
    message = str(caught[0].message)
    assert re.match(r"only 3 impostor distances: .*far=nan", message) and "calibrate()" not in message
    assert "mark faces of people outside the class list unknown in Review" in message


# -- 3. which model retrain deployed, and why ------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::models.celebrity_classifier.CalibrationWarning")
def test_retrain_says_which_model_it_deployed_and_why(tmp_path):
    store, _, _ = small_store(tmp_path)
    result = retrain(store, tmp_path / "data", epochs=5)
    c = result.comparison
    head = (c["head_accuracy"], c["head_open_set_accuracy"])
    centroid = (c["centroid_accuracy"], c["centroid_open_set_accuracy"])
    expected = (f"head {head[0]:.4f} closed-set / {head[1]:.4f} open-set vs centroid {centroid[0]:.4f} / "
                f"{centroid[1]:.4f} on {c['holdout_faces']} held-out faces: ")
    assert result.decision.startswith(expected), result.decision
    if head == centroid:
        assert result.deployed == "centroid" and result.decision.endswith("the centroid classifier stays (a tie keeps it)")
    elif result.deployed == "centroid":
        assert result.decision.endswith("the centroid classifier stays (the head did not beat it)")
    else:
        assert "the head is deployed (it beat the centroid classifier on " in result.decision
    assert result.to_dict()["decision"] == result.decision  # in the report JSON too


# -- 6. whether each past export is still on disk --------------------------------------------------------------
def test_past_exports_say_whether_their_folder_still_holds_them(store_url, tmp_path):
    store = open_store(store_url)
    data = tmp_path / "data"
    export_dataset(store, data, tmp_path / "v1", "ann")
    export_dataset(store, data, tmp_path / "v2", "ann")
    export_dataset(store, data, tmp_path / "v1", "ann", overwrite=True)  # the first export's folder replaced
    (tmp_path / "v2" / "manifest.json").unlink()  # the second's folder no longer holds it
    past = exports_frame(store)
    assert list(past.columns) == EXPORT_COLUMNS and "on_disk" in EXPORT_COLUMNS
    assert [(Path(d).name, bool(on)) for d, on in zip(past["out_dir"], past["on_disk"])] == [
        ("v1", True), ("v2", False), ("v1", False)]
    assert past["on_disk"].dtype == bool


# -- the Export page shows what the export followed, the past exports in UTC and on disk, and retrain's decision
@pytest.mark.filterwarnings("ignore::models.celebrity_classifier.CalibrationWarning")
def test_the_export_page_names_what_it_followed_and_why_retrain_deployed(tmp_path, monkeypatch):
    _, url, _ = small_store(tmp_path)
    at = open_app(monkeypatch, tmp_path / "data", url)
    at.session_state["editor"] = "ann"
    go(at, "export")
    for name in ("first", "second"):
        at.text_input(key="export_out_dir").input(str(tmp_path / name))
        button(at, "Run export").click().run()
        no_exception(at)
    assert any(c.value.endswith(f"follow the earlier export {tmp_path / 'first'}.") for c in at.caption), \
        [c.value for c in at.caption]
    [past] = [d.value for d in at.dataframe if "on_disk" in d.value.columns]
    assert all(str(v).endswith(" UTC") for v in past["at"]) and past["on_disk"].tolist() == [True, True]
    button(at, "Retrain").click().run()
    no_exception(at)
    shown = [m.value for m in at.markdown]
    assert any(" held-out faces" in m and ("stays" in m or "deployed" in m) for m in shown), shown
