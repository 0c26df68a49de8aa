"""Bias audit defects: a group at exactly four fifths (or exactly at its reference share)
flagged only because it holds a multi-ethnicity class, `giflens audit` leaving out the classes without
any face without saying so, and a failed report write leaving its temporary file behind."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_faces, roster_data_dir
from sqlalchemy import select
from typer.testing import CliRunner

from explorer.bias_audit import audit_report, audit_table, left_out_text
from labeling.cli import app, make_settings
from labeling.db import open_store
from labeling.face_labels import relabel_faces
from labeling.schema import CelebrityClass

runner = CliRunner()
LEFT_OUT = "2 classes without any face left out (--all-classes to include them)"


def graded(rows: list[tuple[str, int, int]], declined: bool = False) -> pd.DataFrame:
    """Confirmed faces: (class, faces, right); a wrong face is declined (unknown) or given another class."""
    out = []
    for cls, n, right in rows:
        for i in range(n):
            wrong = None if declined else f"not-{cls}"
            out.append({"face_id": f"{cls}{i}", "class": cls, "status": "approved",
                        "predicted": cls if i < right else wrong})
    return pd.DataFrame(out)


# -- 1. exactly four fifths is not below four fifths, whatever the weights ---------------------------------
def test_a_multi_ethnicity_group_at_exactly_four_fifths_is_not_flagged():
    classes = pd.DataFrame({"class": ["A", "B", "C"], "ethnicity": ["x;y;z", "w", "v"]})
    table = audit_table(graded([("A", 20, 16), ("B", 20, 20), ("C", 20, 16)], declined=True), classes).set_index("group")
    for group in ("x", "y", "z", "v"):  # 1/3 of A's 16 of 20 in x, y, z; all of C's in v: the same 80%
        row = table.loc[group]
        assert row["accuracy"] == row["recognised_rate"] == 0.8, row  # one set of faces: the rates agree
        assert row["accuracy_ratio"] == row["recognised_rate_ratio"] == 0.8 and row["flags"] == "", row
    assert table.loc["x", "graded_faces"] == pytest.approx(20 / 3)


def test_a_real_gap_in_a_multi_ethnicity_group_is_still_flagged():
    classes = pd.DataFrame({"class": ["A", "B"], "ethnicity": ["x;y;z", "w"]})
    table = audit_table(graded([("A", 20, 15), ("B", 20, 20)], declined=True), classes).set_index("group")
    assert table.loc["x", "accuracy_ratio"] == 0.75 and table.loc["x", "flags"] == "accuracy; recognised_rate"


def test_equal_accuracy_is_not_flagged_at_threshold_one():
    classes = pd.DataFrame({"class": ["A", "B"], "ethnicity": ["x;y;z", "w"]})
    table = audit_table(graded([("A", 6, 4), ("B", 6, 4)]), classes, threshold=1.0, min_faces=1)
    assert table["accuracy_ratio"].tolist() == [1.0] * 4 and not table["below_four_fifths"].any(), table


def test_representation_exactly_at_the_reference_is_not_flagged_at_threshold_one():
    classes = pd.DataFrame({"class": ["A", "B"], "ethnicity": ["a;b;c", "d"]})
    faces = graded([("A", 1, 1), ("B", 1, 1)])
    for basis in ("class_share", "face_share"):
        table = audit_table(faces, classes, reference={"ethnicity": {"a": 1 / 6, "b": 1 / 6, "c": 1 / 6, "d": 0.5}},
                            threshold=1.0, min_faces=1, representation_basis=basis).set_index("group")
        assert table["representation_ratio"].tolist() == [1.0] * 4 and (table["flags"] == "").all(), table
        assert table.loc["a", "share_of_known"] == pytest.approx(1 / 6, abs=1e-15)  # from the unrounded counts
        assert table.loc["a", "classes"] == 0.333333333  # the count shown is still rounded


# -- 3. a failed write leaves no temporary file ------------------------------------------------------------
def small_report():
    classes = pd.DataFrame({"class": ["A", "B"], "gender": ["female", "male"]})
    return audit_report(graded([("A", 5, 5), ("B", 5, 4)]), classes)


@pytest.mark.parametrize("name", ["bias-audit.html", "bias-audit.csv"])
def test_a_failed_write_removes_its_temporary_file(tmp_path, name):
    (tmp_path / name).mkdir()  # a folder where the report should go: the final rename fails
    report = small_report()
    write = report.to_html if name.endswith(".html") else report.to_csv
    with pytest.raises(OSError):
        write(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert write(tmp_path / "ok" / name).exists() and sorted(p.name for p in (tmp_path / "ok").iterdir()) == [name]


# -- 2. the classes left out are said -----------------------------------------------------------------------
def test_the_report_summary_says_what_was_left_out(tmp_path):
    classes = pd.DataFrame({"class": ["A", "B"], "gender": ["female", "male"]})
    faces = graded([("A", 5, 5), ("B", 5, 4)])
    assert left_out_text(0, "--all-classes to include them") == ""
    assert left_out_text(1, "x") == "1 class without any face left out (x)"
    report = audit_report(faces, classes, left_out=left_out_text(2, "--all-classes to include them"))
    assert report.summary["not audited"] == LEFT_OUT
    assert f"<li>not audited: {LEFT_OUT}</li>" in report.to_html(tmp_path / "a.html").read_text(encoding="utf-8")
    assert "not audited" not in audit_report(faces, classes).summary


@pytest.fixture
def store_with_roster(tmp_path, monkeypatch) -> Path:
    """4 roster classes with a gender, 2 of them with 3 approved faces each (no embeddings: nothing graded)."""
    data = roster_data_dir(tmp_path, monkeypatch)
    store = open_store(make_settings(data_dir=data).resolved_database_url)
    faces = make_faces(store, 2, 3)
    with store() as s:
        ids = dict(s.execute(select(CelebrityClass.name, CelebrityClass.id)).all())
    relabel_faces(store, faces[:3], ids["A One"], "ann")
    relabel_faces(store, faces[3:], ids["B Two"], "ann")
    return data


def test_the_audit_command_says_which_classes_it_left_out(store_with_roster, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["audit", str(out), "--data-dir", str(store_with_roster)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (f"audit of 2 classes, 6 faces (6 confirmed) over gender: 0 group(s) flagged; "
                                     f"{LEFT_OUT}; wrote {out / 'bias-audit.csv'} and {out / 'bias-audit.html'}")
    assert LEFT_OUT in (out / "bias-audit.html").read_text(encoding="utf-8")
    rows = list(csv.DictReader((out / "bias-audit.csv").open()))
    assert sum(float(r["classes"]) for r in rows) == 2
    whole = runner.invoke(app, ["audit", str(out), "--data-dir", str(store_with_roster), "--all-classes"])
    assert whole.exit_code == 0, whole.output
    assert whole.stdout.startswith("audit of 4 classes") and "left out" not in whole.stdout
    assert "not audited" not in (out / "bias-audit.html").read_text(encoding="utf-8")


def test_the_audit_command_leaves_no_temporary_file_when_it_cannot_write(store_with_roster, tmp_path):
    out = tmp_path / "out"
    (out / "bias-audit.html").mkdir(parents=True)
    result = runner.invoke(app, ["audit", str(out), "--data-dir", str(store_with_roster)])
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in out.iterdir()) == ["bias-audit.csv", "bias-audit.html"]


def test_the_charts_colour_a_group_as_the_table_flags_it():
    """0.72 is exactly four fifths of 0.9, but 0.8 * 0.9 is 0.7200000000000001 in floats: the bar is red
    only if the table flags the group, never by the chart's own arithmetic."""
    from explorer.figures import FLAG_COLOR, OK_COLOR, audit_bars, representation_bars

    classes = pd.DataFrame({"class": ["A", "B"], "gender": ["female", "male"]})
    table = audit_table(graded([("A", 25, 18), ("B", 10, 9)], declined=True), classes)
    assert (table["flags"] == "").all(), table
    assert list(audit_bars(table, "gender").data[0].marker.color) == [OK_COLOR] * 2
    gap = audit_table(graded([("A", 25, 17), ("B", 10, 9)], declined=True), classes)
    colours = dict(zip(gap["group"], audit_bars(gap, "gender").data[0].marker.color))
    assert colours == {"female": FLAG_COLOR, "male": OK_COLOR}
    shares = audit_table(graded([("A", 1, 1), ("B", 1, 1)]), classes, threshold=0.9,
                         reference={"gender": {"female": 0.5 / 0.9, "male": 1 - 0.5 / 0.9}})
    assert list(representation_bars(shares, "gender", threshold=0.9).data[0].marker.color) == [
        FLAG_COLOR if f else OK_COLOR for f in shares["flags"].str.contains("representation")]
