"""Bias audit defects: one attribute value in two Unicode forms (NFC / NFD) split into two
groups, the CSV writing large counts in scientific notation (and dropping their fractions), and
`giflens audit` (and the report) silent when no class has a face and the whole catalog is audited."""
from __future__ import annotations

import io
import unicodedata
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from conftest import open_app, roster_data_dir
from explorer.bias_audit import (audit_report, audit_table, carried_reference, class_groups, no_faces_text,
                                 parse_reference)
from labeling.cli import app

runner = CliRunner()
NFC = "Côte d'Ivoire"
NFD = unicodedata.normalize("NFD", NFC)


def approved(classes: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"face_id": range(len(classes)), "class": classes, "status": "approved", "predicted": classes})


# -- 1. one value in two Unicode forms (or with doubled spaces) is one group ----------------------------------
def test_precomposed_and_decomposed_spellings_are_one_group():
    assert NFC != NFD
    classes = pd.DataFrame({"class": ["a", "b", "c"], "country": [NFC, NFD, "France"]})
    for typed in (NFC, NFD):  # the reference typed in either form matches both classes
        table = audit_table(approved(["a", "b", "c"]), classes, ["country"],
                            reference={"country": parse_reference({typed: 2, "France": 1})}).set_index("group")
        assert list(table.index) == ["côte d'ivoire", "france"], list(table.index)
        assert table.loc["côte d'ivoire", "classes"] == 2
        assert abs(table.loc["côte d'ivoire", "share_of_known"] - 2 / 3) < 1e-12
        assert table.loc["côte d'ivoire", "representation_ratio"] == 1
        assert not table["below_four_fifths"].any(), table["flags"].to_dict()


def test_inner_spaces_and_forms_in_multi_valued_values_and_references():
    classes = pd.DataFrame({"class": ["a", "b"], "ethnicity": [f"{NFD};Afro  Caribbean", f"{NFC} ; afro caribbean"]})
    groups = class_groups(classes, ["ethnicity"])
    assert sorted(set(groups["group"])) == ["afro caribbean", "côte d'ivoire"]
    assert groups["weight"].tolist() == [0.5] * 4
    assert parse_reference({NFD: 1, "Afro   Caribbean ": 1}) == {"côte d'ivoire": 0.5, "afro caribbean": 0.5}
    # a reference row typed in the other form is the same group: kept, and no second row proposed
    rows, new = carried_reference([(NFD, 0.7), ("France", 0.3)], {NFD: 0.5, "France": 0.5}, [NFC, "france"])
    assert rows == [(NFD, 0.7), ("France", 0.3)] and new == []


# -- 2. counts in the CSV are exact ---------------------------------------------------------------------
def test_large_and_fractional_counts_are_written_exactly(tmp_path):
    """1,234,567 faces of one class ("%.6g" wrote 1.23457e+06) and 300,001 of a class with three ethnicities
    (100000.333... in each group, which "%.6g" wrote as 100000)."""
    classes = pd.DataFrame({"class": ["big", "mixed"], "ethnicity": ["d", "a;b;c"]})
    faces = approved(["big"] * 1_234_567 + ["mixed"] * 300_001)
    report = audit_report(faces, classes, ["ethnicity"])
    path = report.to_csv(tmp_path / "bias.csv")
    text = path.read_text()
    assert "e+" not in text
    back = pd.read_csv(path, keep_default_na=False, na_values=[""]).set_index("group")
    assert back.loc["d", "faces"] == 1_234_567 and back.loc["d", "approved_faces"] == 1_234_567
    assert ",1234567," in text
    for group in "abc":
        assert back.loc[group, "faces"] == report.groups("ethnicity").set_index("group").loc[group, "faces"]
        assert abs(back.loc[group, "faces"] - 300_001 / 3) < 1e-6
        assert abs(back.loc[group, "classes"] - 1 / 3) < 1e-9
    assert abs(back["faces"].sum() - (1_234_567 + 300_001)) < 1e-6
    assert back.loc["d", "classes"] == 1 and ",1," in text.splitlines()[1]  # whole counts stay integers


# -- 3. a run that falls back to the whole catalog says so ------------------------------------------------
def test_no_faces_text():
    assert no_faces_text(4) == "no class has a face yet: all 4 classes audited by class counts"
    assert no_faces_text(1) == "no class has a face yet: the only class audited by class counts"
    assert audit_report(approved([]), pd.DataFrame({"class": ["a"], "gender": ["f"]}),
                        scope=no_faces_text(1)).summary["scope"] == no_faces_text(1)
    assert "scope" not in audit_report(approved([]), pd.DataFrame({"class": ["a"], "gender": ["f"]})).summary


def test_the_audit_command_says_it_audited_the_whole_catalog(tmp_path, monkeypatch):
    data = roster_data_dir(tmp_path, monkeypatch)
    out = tmp_path / "out"
    note = "no class has a face yet: all 4 classes audited by class counts"
    result = runner.invoke(app, ["audit", str(out), "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (f"audit of 4 classes, 0 faces (0 confirmed) over gender: 0 group(s) flagged; "
                                     f"{note}; wrote {out / 'bias-audit.csv'} and {out / 'bias-audit.html'}")
    assert f"<li>scope: {note}</li>" in (out / "bias-audit.html").read_text(encoding="utf-8")
    # asked for: nothing to explain
    whole = runner.invoke(app, ["audit", str(out), "--data-dir", str(data), "--all-classes"])
    assert whole.exit_code == 0, whole.output
    assert whole.stdout.startswith("audit of 4 classes") and "no class has a face" not in whole.stdout
    assert "<li>scope:" not in (out / "bias-audit.html").read_text(encoding="utf-8")


def test_the_page_and_its_report_say_it_audited_the_whole_catalog(tmp_path, monkeypatch, downloads):
    kept = downloads
    data = roster_data_dir(tmp_path, monkeypatch)
    at = open_app(monkeypatch, data, f"sqlite:///{data / 'giflens.db'}", timeout=600)
    at.switch_page("explorer/pages/bias.py").run()
    assert not at.exception, [e.value for e in at.exception]
    note = "no class has a face yet: all 4 classes audited by class counts"
    assert [i.value for i in at.info] == [f"N{note[1:]}."]
    buttons = {b.key: b for b in at.get("download_button")}
    html = kept[-1].get_file(Path(buttons["bias_download_html"].proto.url).stem).content.decode("utf-8")
    assert f"<li>scope: {note}</li>" in html
    csv = kept[-1].get_file(Path(buttons["bias_download_csv"].proto.url).stem).content
    assert pd.read_csv(io.BytesIO(csv))["classes"].sum() == 4
    at.toggle(key="bias_with_faces").set_value(False).run()
    assert not at.exception and not at.info


def test_by_faces_with_no_face_says_nothing_was_compared(tmp_path, monkeypatch):
    """Representation by faces with no face yet measures nothing and flags nothing: the run says so and how
    to count classes, instead of "audited by class counts" over an audit that compared nothing."""
    assert no_faces_text(4, True, "--basis classes counts classes") == (
        "no class has a face yet: representation by faces cannot be measured (all 4 classes listed, nothing "
        "compared); --basis classes counts classes")
    data = roster_data_dir(tmp_path, monkeypatch)
    out = tmp_path / "out"
    result = runner.invoke(app, ["audit", str(out), "--data-dir", str(data), "--basis", "faces"])
    assert result.exit_code == 0, result.output
    assert "representation by faces cannot be measured" in result.stdout
    assert "audited by class counts" not in result.stdout
    at = open_app(monkeypatch, data, f"sqlite:///{data / 'giflens.db'}", timeout=600)
    at.switch_page("explorer/pages/bias.py").run()
    at.radio(key="bias_basis").set_value("faces").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any('choose "classes" under "Representation counts"' in w.value for w in at.warning)
    assert not at.info


def test_the_html_reference_line_shows_group_names_as_written(tmp_path):
    classes = pd.DataFrame({"class": ["a", "b"], "country": ["대한민국", "Côte d'Ivoire"]})
    faces = approved(["a", "b"])
    report = audit_report(faces, classes, ["country"], reference={"country": parse_reference({"대한민국": 1, "Côte d'Ivoire": 1})})
    text = report.to_html(tmp_path / "r.html", include_plotlyjs=False).read_text(encoding="utf-8")
    line = text[text.index("reference distribution:"):].split("</p>")[0]
    assert "대한민국" in line and "\\u" not in line
