"""The bias audit and the CLI: the Bias page's HTML after a threshold change and its
reference kept when the groups change, small samples counted on graded faces, "(small sample)" only on
quality flags, future birth years, `--reference` groups holding a comma, formulas in the CSV, `history`
in UTC whatever the PostgreSQL session's zone, commands that need a store refusing a folder without one,
and `giflens ingest` on a cache that cannot be used or interrupted by Ctrl-C."""
from __future__ import annotations

import csv
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timezone
from pathlib import Path

import pandas as pd
import pytest
from conftest import LFW, ROOT
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from explorer.bias_audit import audit_report, carried_reference, class_groups, decade
from labeling.classes import add_class
from labeling.cli import app
from labeling.cli_audit import _rests_on_few_faces
from labeling.db import open_store
from labeling.schema import AuditEvent
from test_app_bias import SHARE, edit_reference, ok, open_page, representation_table, tab  # noqa: F401
from test_queries import new_fixture_store

runner = CliRunner()


def invoke(*args: object, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def roster(path: Path, rows: list[tuple[str, ...]], header: str = "name,gender,country") -> Path:
    """An attributes CSV (csv module quoting, so a value may hold a comma)."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header.split(","))
        writer.writerows(rows)
    return path


# -- readme_bias 1: the downloaded HTML follows the threshold ---------------------------------------------
@pytest.fixture(scope="module")
def bias_store(tmp_path_factory):
    return new_fixture_store(tmp_path_factory, "bias-round8")


def test_html_download_follows_the_threshold_when_no_flag_changes(bias_store, monkeypatch, tmp_path, downloads):
    """0.8 -> 0.85 changed no flag, so the CSV and summary stayed the same and the cached HTML of 0.8 was served."""
    at = open_page(monkeypatch, bias_store.url, tmp_path)

    def served(key: str) -> bytes:
        button = {b.key: b for b in at.get("download_button")}[key]
        return downloads[-1].get_file(Path(button.proto.url).stem).content

    before_csv = served("bias_download_csv")
    assert b"four-fifths threshold 0.8;" in served("bias_download_html")
    at.number_input(key="bias_threshold").set_value(0.85).run()
    ok(at)
    assert served("bias_download_csv") == before_csv  # the case: no flag moved
    html = served("bias_download_html")
    assert b"four-fifths threshold 0.85;" in html and b"four-fifths threshold 0.8;" not in html


# -- app 6: the reference an editor typed survives a change of the groups -----------------------------------
def test_typed_reference_is_kept_by_group_when_a_new_group_appears(tmp_path_factory, monkeypatch, tmp_path):
    fx = new_fixture_store(tmp_path_factory, "bias-round8-groups")
    at = open_page(monkeypatch, fx.url, tmp_path)
    edit_reference(at, "gender", {1: {SHARE: 9}})  # rows: female, male
    assert representation_table(at, "Gender")["reference_share"].to_dict() == pytest.approx(
        {"female": 0.5 / 9.5, "male": 9 / 9.5})
    # another editor adds a class of a new gender, with a face: the page reruns on the changed store
    add_class(fx.store, "Someone New", "bob", attributes={"gender": "Agender"}, seed_face_ids=[fx.gif_faces[0]])
    at.run()
    ok(at)
    editor = [d.value for d in tab(at, "Gender").dataframe if SHARE in d.value.columns][0]
    shares = dict(zip(editor["group"], editor[SHARE]))
    assert shares == pytest.approx({"female": 0.5, "male": 9.0, "agender": 4.75})  # new: the mean of the typed shares
    reference = representation_table(at, "Gender")["reference_share"].to_dict()
    assert reference == pytest.approx({"female": 0.5 / 14.25, "male": 9 / 14.25, "agender": 4.75 / 14.25})
    notes = [i.value for i in tab(at, "Gender").info]
    assert any("keeps the shares you entered" in n and "agender" in n for n in notes), notes
    # reset: equal shares over the groups of now, and no note
    at.button(key="bias_reference_reset_gender").click().run()
    ok(at)
    assert representation_table(at, "Gender")["reference_share"].to_dict() == pytest.approx(
        {"female": 1 / 3, "male": 1 / 3, "agender": 1 / 3})
    assert not [i.value for i in tab(at, "Gender").info if "keeps the shares" in i.value]


def test_carried_reference_keeps_choices_and_drops_untouched_defaults():
    base = {"female": 0.5, "male": 0.5}
    # untouched: still equal shares once normalised
    rows, new = carried_reference([("female", 0.5), ("male", 0.5)], base, ["agender", "female", "male"])
    assert rows == [("female", 0.5), ("male", 0.5), ("agender", 0.5)] and new == ["agender"]
    # a group gone from the data: its default row goes, an edited or added one stays (flagged as absent)
    rows, _ = carried_reference([("female", 0.5), ("male", 0.5), ("Nonbinary", 0.2)], base, ["female"])
    assert rows == [("female", 0.5), ("Nonbinary", 0.2)]
    rows, _ = carried_reference([("female", 0.5), ("male", 0.7)], base, ["female"])
    assert rows == [("female", 0.5), ("male", 0.7)]


# -- readme_bias 2: small samples are counted on the faces that were graded ----------------------------------
def graded_faces_case() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Group x: 20 confirmed faces, 1 graded (its other faces share one GIF: no held-out grade) and right.
    Group y: 20 confirmed faces, all graded, 15 right."""
    rows = []
    for i in range(20):
        rows.append({"face_id": i, "class": "X1", "status": "approved", "predicted": "X1", "measured": i == 0})
    for i in range(20):
        rows.append({"face_id": 20 + i, "class": "Y1", "status": "approved", "predicted": "Y1" if i < 15 else "X1",
                     "measured": True})
    return pd.DataFrame(rows), pd.DataFrame({"class": ["X1", "Y1"], "gender": ["x", "y"]})


def test_small_sample_counts_graded_faces_not_confirmed_ones(tmp_path):
    faces, classes = graded_faces_case()
    report = audit_report(faces, classes, min_faces=5)
    rows = report.table.set_index("group")
    assert rows.loc["x", "approved_faces"] == 20 and rows.loc["x", "graded_faces"] == 1
    assert rows.loc["y", "graded_faces"] == 20
    assert bool(rows.loc["x", "small_sample"]) and not bool(rows.loc["y", "small_sample"])
    # x's one face is no reference for y's twenty: y is the best-served group and is not flagged
    assert rows.loc["y", "accuracy_reference"] == pytest.approx(0.75)
    assert "accuracy" not in rows.loc["y", "flags"]
    written = pd.read_csv(report.to_csv(tmp_path / "a.csv"))
    assert "graded_faces" in written.columns


# -- readme_bias 3: "(small sample)" only where a graded metric fired -----------------------------------------
def test_small_sample_note_only_on_quality_flags(tmp_path, no_store_env):
    data = tmp_path / "data"
    people = roster(tmp_path / "people.csv", [("A One", "male", ""), ("B Two", "male", ""), ("C Three", "male", ""),
                                              ("D Four", "female", "")])
    assert invoke("import", "attributes", people, "--data-dir", data).exit_code == 0
    result = invoke("audit", tmp_path / "out", "--data-dir", data, "--all-classes")
    assert result.exit_code == 0, result.output
    flagged = [line for line in result.stderr.splitlines() if line.startswith("flagged")]
    assert flagged == ["flagged gender female: representation"], result.stderr
    # a quality flag on a small sample keeps its note
    faces, classes = graded_faces_case()
    row = next(audit_report(faces, classes, min_faces=30).flagged().itertuples())
    assert "accuracy" in row.flags and row.small_sample and _rests_on_few_faces(row)


# -- readme_bias 4: a birth year after this year is no decade -----------------------------------------------
def test_future_birth_years_are_unknown():
    year = time.gmtime().tm_year
    assert decade(year) == f"{year // 10 * 10}s" and decade(year + 1) == "unknown" and decade(2100) == "unknown"
    groups = class_groups(pd.DataFrame({"class": ["a", "b"], "birth_year": [2090, 1990]}), ["decade"])
    assert groups["group"].tolist() == ["unknown", "1990s"]


# -- readme_bias 5: --reference names a group holding a comma -----------------------------------------------
def test_reference_group_with_a_comma(tmp_path, no_store_env):
    data = tmp_path / "data"
    people = roster(tmp_path / "people.csv", [("A One", "", "Korea, Republic of"), ("B Two", "", "France"),
                                              ("C Three", "", "France")])
    assert invoke("import", "attributes", people, "--data-dir", data).exit_code == 0
    out = tmp_path / "out"
    result = invoke("audit", out, "--data-dir", data, "--all-classes",
                    "--reference", 'country="Korea, Republic of":1,France:3')
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "bias-audit.csv").set_index(["attribute", "group"])
    assert table.loc[("country", "korea, republic of"), "reference_share"] == pytest.approx(0.25)
    assert table.loc[("country", "france"), "reference_share"] == pytest.approx(0.75)
    refused = invoke("audit", out, "--data-dir", data, "--all-classes", "--reference", "country=Korea, Republic of:1")
    assert refused.exit_code == 1
    assert "a comma separates pairs" in refused.stderr and '"Korea, Republic of":1' in refused.stderr


# -- readme_bias 6: a group name that is a formula stays text in the CSV --------------------------------------
def test_csv_cells_that_read_as_formulas_are_neutralised(tmp_path):
    evil = '=HYPERLINK("http://evil.example","click")'
    classes = pd.DataFrame({"class": ["a", "b", "c", "d"], "gender": [evil, "+1", "male", "@sum"]})
    faces = pd.DataFrame({"face_id": [1], "class": ["a"], "status": ["approved"], "predicted": ["a"]})
    path = audit_report(faces, classes).to_csv(tmp_path / "bias.csv")
    cells = {row["group"] for row in csv.DictReader(path.open(encoding="utf-8"))}
    assert cells == {"'" + evil.casefold(), "'+1", "male", "'@sum"}
    assert not any(c[:1] in "=+-@" for c in cells)


# -- store 2: history in UTC, labelled, whatever the session's time zone --------------------------------------
def history_times(*args: object) -> list[str]:
    result = invoke("history", *args)
    assert result.exit_code == 0, result.output
    return [re.search(r"^\s*\d+  (\S+ \S+ \S+)  ", line)[1] for line in result.stdout.splitlines()[:-1]]


def event_time_utc(url: str) -> str:
    with open_store(url)() as s:
        at = s.scalars(select(AuditEvent.at)).one()
    at = at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"


def test_history_prints_utc_on_sqlite(tmp_path, no_store_env):
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'giflens.db'}"
    add_class(open_store(url), "Ada", "ann")
    assert history_times("--data-dir", data) == [event_time_utc(url)]


@pytest.mark.postgres
def test_history_prints_utc_whatever_the_postgres_session_zone(pg_url, tmp_path, no_store_env):
    add_class(open_store(pg_url), "Ada", "ann")
    expected = [event_time_utc(pg_url)]
    for zone in ("America/New_York", "Asia/Tokyo"):
        url = f"{pg_url}?options=-c%20timezone%3D{zone}"
        assert history_times("--data-dir", tmp_path, "--database-url", url) == expected, zone


# -- recognition 3: commands that need a store refuse a folder without one -------------------------------------
NEEDS_A_STORE = [["predict"], ["retrain"], ["autotag"], ["dupes"], ["history"], ["undo"], ["export", "OUT"],
                 ["audit", "OUT"]]


@pytest.mark.parametrize("command", NEEDS_A_STORE, ids=lambda c: c[0])
def test_commands_that_read_a_store_refuse_a_folder_without_one(command, tmp_path, no_store_env):
    out = tmp_path / "out"
    args = [out if a == "OUT" else a for a in command]
    for folder in (tmp_path / "typo", tmp_path / "empty"):
        if folder.name == "empty":
            folder.mkdir()
        result = invoke(*args, "--data-dir", folder)
        assert result.exit_code == 1, (command, result.output)
        assert result.stdout == "" and result.stderr.startswith(f"error: no giflens store in {folder} "), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "typo").exists() and list((tmp_path / "empty").iterdir()) == [] and not out.exists()


def test_imports_still_create_the_store_and_a_database_url_without_one_is_refused(tmp_path, no_store_env):
    data = tmp_path / "data"
    (tmp_path / "classes.csv").write_text("Labels,Index\nAda_Lovelace_[m.0k2x],0\n")
    assert invoke("import", "classes", tmp_path / "classes.csv", "--data-dir", data).exit_code == 0
    assert (data / "giflens.db").is_file()
    assert invoke("history", "--data-dir", data).exit_code == 0
    url = f"sqlite:///{tmp_path / 'new.db'}"  # a read-only command never turns a mistyped URL into a new store
    result = invoke("history", "--data-dir", tmp_path / "elsewhere", "--database-url", url)
    assert result.exit_code == 1 and "no giflens store in" in result.stderr, result.output
    assert not (tmp_path / "new.db").exists()


# -- ingest 4: a cache that cannot be used is one error line ---------------------------------------------------
def test_ingest_with_a_cache_that_cannot_be_written_is_one_error_line(tmp_path, no_store_env):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (200, 100, 50)).save(photo)
    data = tmp_path / "data"
    (data / "cache").mkdir(parents=True)
    (data / "cache" / ".tmp").write_text("not a folder")  # every cache write fails, as on a full disk
    result = invoke("ingest", photo, "--data-dir", data)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: the embedding cache at {data / 'cache'} cannot be used")
    assert "Traceback" not in result.output and result.stdout == ""
    # a file where the cache folder belongs: the same one line
    (tmp_path / "other" / "cache").parent.mkdir()
    (tmp_path / "other" / "cache").write_text("not a folder")
    result = invoke("ingest", photo, "--data-dir", tmp_path / "other")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert result.stderr.startswith(f"error: the embedding cache at {tmp_path / 'other' / 'cache'} cannot be used")


# -- ingest 7: Ctrl-C says what was stored and that a re-run resumes ------------------------------------------
def stored_media(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM media").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


@pytest.mark.slow
def test_ctrl_c_during_ingest_prints_what_was_stored(tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "0-broken.jpg").write_text("not a photo")  # sorted first: a failure before the interruption
    for person in ("George_W_Bush", "Colin_Powell"):
        for photo in sorted((LFW / person).glob("*.jpg"))[:40]:
            (folder / photo.name).write_bytes(photo.read_bytes())
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIFLENS_")}
    # SIGINT as a terminal's Ctrl-C sends it; its default disposition restored, whatever this process inherited
    proc = subprocess.Popen([sys.executable, "-m", "labeling.cli", "ingest", str(folder), "--data-dir", str(data)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while proc.poll() is None and stored_media(data / "giflens.db") < 4:
        time.sleep(0.1)
    assert proc.poll() is None, "the batch finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate()
    assert proc.returncode == 130, (out, err)
    last = out.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and last.endswith(" (re-run to resume)"), out
    assert "Traceback" not in err and "Aborted" not in err
    # the summary ingest() attaches to the interruption: the numbers and the failures so far
    match = re.fullmatch(r"interrupted: ingested (\d+), cached 0, failed 1, faces \d+ \(re-run to resume\)", last)
    assert match and int(match[1]) >= 2, last  # 4 rows stored, the last perhaps not yet counted
    # (the progress bar's own lines name the file just read, 0-broken.jpg among them when a frame was drawn
    # then: they are the bar's, not a listing of failures)
    listed = [line for line in err.splitlines() if not line.lstrip().startswith("ingest ")]
    assert [line for line in listed if line.startswith("failed ")] == [
        line for line in listed if "0-broken.jpg" in line] != [], err
