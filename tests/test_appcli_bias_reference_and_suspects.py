"""The app pages, the bias audit and the CLI: the Bias page's reference kept over a
second change of groups (and a deleted row left deleted), the suspect queue keeping imported and
never-predicted labels, `--reference` with a newline and the shell quoting of a comma, "(small
sample)" only on graded flags and graded_faces in the HTML, the Classes status box after an undo,
Explore on media without a face, and `giflens ingest` stopped mid-batch printing what it did."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from conftest import open_app
from explorer.bias_audit import audit_report, carried_reference
from explorer.views import NOTHING_YET, decided_since_prediction, empty_view_message
from labeling.cli_audit import _rests_on_few_faces
from labeling.classes import add_class
from labeling.face_labels import Prediction, approve_faces, decide_faces, record_predictions
from labeling.ingest import ingest
from models.settings import Settings
import test_app_decision_ticks_and_filters
from test_app_bias import SHARE, edit_reference, ok, open_page, representation_table, tab
from test_app_decision_ticks_and_filters import _explore
from test_app_pages import button, no_exception
from test_app_suspects_queue_and_class_boxes import REVIEW, _classes_page, _info, _suspects
from test_biascli_reference_and_history_utc import graded_faces_case, invoke
from test_queries import new_fixture_store

fixture_store = test_app_decision_ticks_and_filters.fixture_store  # a store of its own per test (they write) ...
app = test_app_decision_ticks_and_filters.app  # ... and a fresh app session (no editor) on it


# -- 1. the Bias page keeps the editor's reference over every change of groups ------------------------------------
def _reference_table(at) -> dict[str, float]:
    editor = [d.value for d in tab(at, "Gender").dataframe if SHARE in d.value.columns][0]
    return dict(zip(editor["group"], editor[SHARE]))


def _carried_note(at) -> list[str]:
    return [i.value for i in tab(at, "Gender").info if "keeps the shares you entered" in i.value]


def test_typed_reference_survives_a_second_new_group(tmp_path_factory, monkeypatch, tmp_path):
    fx = new_fixture_store(tmp_path_factory, "review8-groups")
    at = open_page(monkeypatch, fx.url, tmp_path)
    edit_reference(at, "gender", {1: {SHARE: 9}})  # rows: female, male
    add_class(fx.store, "Someone New", "bob", attributes={"gender": "Agender"}, seed_face_ids=[fx.gif_faces[0]])
    at.run()
    ok(at)
    assert _reference_table(at) == pytest.approx({"female": 0.5, "male": 9.0, "agender": 4.75})
    at.run()  # the carried table, left as it is
    add_class(fx.store, "Someone Else", "bob", attributes={"gender": "Nonbinary"}, seed_face_ids=[fx.gif_faces[1]])
    at.run()
    ok(at)
    assert _reference_table(at) == pytest.approx({"female": 0.5, "male": 9.0, "agender": 4.75, "nonbinary": 4.75})
    assert any("nonbinary" in n for n in _carried_note(at)), _carried_note(at)
    assert representation_table(at, "Gender")["reference_share"].to_dict()["male"] == pytest.approx(9 / 19)


def test_typed_reference_survives_toggling_faceless_classes_twice(tmp_path_factory, monkeypatch, tmp_path):
    fx = new_fixture_store(tmp_path_factory, "review8-toggle")
    add_class(fx.store, "Roster Only", "bob", attributes={"gender": "Agender"})  # a class with no face
    at = open_page(monkeypatch, fx.url, tmp_path)
    edit_reference(at, "gender", {1: {SHARE: 9}})  # rows: female, male
    for _ in range(2):
        at.toggle(key="bias_with_faces").set_value(False).run()
        ok(at)
        assert _reference_table(at) == pytest.approx({"female": 0.5, "male": 9.0, "agender": 4.75})
        at.toggle(key="bias_with_faces").set_value(True).run()
        ok(at)
        assert _reference_table(at) == pytest.approx({"female": 0.5, "male": 9.0})
        assert _carried_note(at)
    # a share the editor set for the faceless group is a choice: kept (absent, so flagged) once faces are on
    at.toggle(key="bias_with_faces").set_value(False).run()
    key = next(e.key for e in at.data_editor if str(e.key).startswith("bias_reference_gender_v"))  # a rebuilt table
    at.session_state[key] = {"edited_rows": {2: {SHARE: 2}}, "added_rows": [], "deleted_rows": []}
    at.run()
    ok(at)
    assert representation_table(at, "Gender")["reference_share"]["agender"] == pytest.approx(2 / 11.5)
    at.toggle(key="bias_with_faces").set_value(True).run()
    at.toggle(key="bias_with_faces").set_value(False).run()
    at.toggle(key="bias_with_faces").set_value(True).run()
    ok(at)
    assert _reference_table(at) == pytest.approx({"female": 0.5, "male": 9.0, "agender": 2.0})


def test_carried_reference_leaves_a_deleted_row_deleted_and_keeps_carried_choices():
    rows, new = carried_reference([("male", 1.0)], {"female": 0.5, "male": 0.5}, ["agender", "female", "male"])
    assert new == ["agender"] and rows == [("male", 1.0), ("agender", 1.0)]
    # a carried table: male 9 is the editor's share, agender 4.75 the page's; both groups left the data
    carried = {"female": 0.5, "male": 9.0, "agender": 4.75}
    rows, new = carried_reference(list(carried.items()), carried, ["female"],
                                  proposed={"female": 0.5, "agender": 4.75})
    assert rows == [("female", 0.5), ("male", 9.0)] and new == []


# -- 2. imported labels stay in the suspect queue, editors' decisions leave it ---------------------------------------
def test_only_editor_decisions_leave_the_queue(fixture_store):
    fx = fixture_store
    seeds = set(fx.largest_face.values())  # approved by an editor as class seeds, never predicted
    assert seeds <= decided_since_prediction(fx.store)
    imported, decided = fx.gif_faces[0], fx.gif_faces[1]  # both predicted by the fixture model
    approve_faces(fx.store, [imported], "importer", source="import")  # what `import raw-dataset` writes
    approve_faces(fx.store, [decided], "ann")
    assert decided_since_prediction(fx.store) & {imported, decided} == {decided}
    # a prediction after the editor's decision: in the queue again
    record_predictions(fx.store, [Prediction(decided, fx.classes["Ariel Sharon"], 0.4, [])], "v2")
    assert decided not in decided_since_prediction(fx.store)


def test_an_imported_mislabel_is_in_the_default_queue(app, fixture_store):
    fx = fixture_store
    serena = sorted(f for photo, f in fx.largest_face.items() if photo.startswith("Serena"))[0]
    # a training set filing a Serena Williams photo under Ariel Sharon, before any prediction
    decide_faces(fx.store, [serena], "relabel", "importer", class_id=fx.classes["Ariel Sharon"], source="import")
    app.switch_page(REVIEW).run()
    no_exception(app)
    queue = _suspects(app).set_index("id")
    assert serena in queue.index, queue
    assert queue.loc[serena, "label"] == "Ariel Sharon" and "neighbours disagree" in queue.loc[serena, "reasons"]


# -- 3. --reference: a newline is one error line, and the quoting shown works in a shell ---------------------------
def test_reference_with_a_newline_is_refused_in_one_line(tmp_path, no_store_env):
    data = tmp_path / "data"
    (tmp_path / "people.csv").write_text("name,gender\nA One,female\nB Two,male\n")
    assert invoke("import", "attributes", tmp_path / "people.csv", "--data-dir", data).exit_code == 0
    result = invoke("audit", tmp_path / "out", "--data-dir", data, "--reference", "gender=female:1\nmale:1")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --reference ") and "new-line" in lines[0], lines
    refused = invoke("audit", tmp_path / "out", "--data-dir", data, "--reference", "gender=Korea, Republic of:1")
    assert refused.exit_code == 1
    assert """--reference 'country="Korea, Republic of":1'""" in refused.stderr, refused.stderr


# -- 4. "(small sample)" only on graded flags; the HTML's flagged table says what small_sample counts ----------------
def test_a_purity_flag_on_a_small_sample_gets_no_note(tmp_path):
    faces, classes = graded_faces_case()
    faces["predicted"] = faces["class"]  # every face right: no accuracy flag
    stats = pd.DataFrame({"class": ["X1", "Y1"], "purity": [0.9, 0.5]})
    report = audit_report(faces, classes, cluster_stats=stats, min_faces=30)
    row = next(r for r in report.flagged().itertuples() if r.group == "y")
    assert row.flags == "purity" and row.small_sample
    assert not _rests_on_few_faces(row)
    page = report.to_html(tmp_path / "a.html", include_plotlyjs=False).read_text()
    flagged = page.split("<h2>Flagged groups</h2>")[1].split("<h2>")[0]
    assert "<th>graded_faces</th>" in flagged


# -- 5. the Classes status box follows an undo -------------------------------------------------------------------
def test_status_box_shows_the_store_after_an_undo(app, fixture_store):
    ariel = fixture_store.classes["Ariel Sharon"]
    _classes_page(app, ariel)
    app.selectbox(key=f"status_{ariel}").set_value("proposed")
    button(app, "Set status").click().run()
    no_exception(app)
    assert app.selectbox(key=f"status_{ariel}").value == "proposed"
    button(app, "Undo last").click().run()
    app.run()
    no_exception(app)
    assert app.selectbox(key=f"status_{ariel}").value == "active"


# -- 6. Explore on media without a face ----------------------------------------------------------------------------
def blank_images(folder: Path, n: int, start: int = 0) -> list[Path]:
    """Plain colour PNGs: real media with no face in them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        path = folder / f"blank-{i:02d}.png"
        Image.new("RGB", (64, 64), (20 * i % 256, 120, 200 - 10 * i % 200)).save(path)
        paths.append(path)
    return paths


def test_faces_view_of_faceless_media_says_no_face_was_found(tmp_path, monkeypatch):
    assert empty_view_message("Faces", has_media=True, has_faces=False) != NOTHING_YET
    assert "(3 items)" in empty_view_message("Face tracks", has_media=True, has_faces=False, media_count=3)
    url = f"sqlite:///{tmp_path / 'blank.db'}"
    summary = ingest(blank_images(tmp_path / "media", 2), Settings(data_dir=tmp_path / "data", database_url=url),
                     editor="ann")
    assert summary.ingested == 2 and summary.faces == 0
    at = _explore(open_app(monkeypatch, tmp_path / "data", url), "Faces")
    message = empty_view_message("Faces", has_media=True, has_faces=False)
    assert _info(at) == [message] and "No face was found" in message
    at.selectbox(key="explore_view").set_value("Class centroids").run()
    no_exception(at)
    assert _info(at) == [empty_view_message("Class centroids", has_media=True, has_faces=False)]


# -- ingest 3: a batch the cache stops mid-way prints what it did ----------------------------------------------------
def test_ingest_stopped_by_the_cache_prints_the_partial_summary(tmp_path, no_store_env):
    folder = tmp_path / "media"
    blank_images(folder, 8)
    (folder / "0-broken.jpg").write_text("not a photo")  # sorted first: a failure in the first chunk
    data = tmp_path / "data"
    assert invoke("ingest", folder, "--data-dir", data).exit_code == 0
    # the cache can no longer be written (as on a full disk), and a new file needs an entry; the first
    # chunk of 8 files is all stored already, the second (one stored, one new) stops the batch
    shutil.rmtree(data / "cache" / ".tmp", ignore_errors=True)
    (data / "cache" / ".tmp").write_text("not a folder")
    blank_images(folder, 1, start=20)
    result = invoke("ingest", folder, "--data-dir", data)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert re.fullmatch(r"stopped: ingested 0, cached 7, failed 1, faces 0", result.stdout.strip()), result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: the embedding cache at {data / 'cache'} cannot be used"), lines
    assert [line for line in lines if line.startswith("failed ")] == [
        line for line in lines if "0-broken.jpg" in line] != [], lines
    output = result.output
    assert output.index("failed ") < output.index("stopped: ") < output.index("error: "), output
