"""Bias audit defects: representation counted by faces when no class has a face flagged every known group
(ratio 0, "Groups flagged" 4, `--fail-on-flags` exit 3) although nothing was measured; and placeholder
attribute values ("N/A", "none", "-", "?") became demographic groups of their own instead of "unknown".
An attribute whose representation could not be measured is said so by the report (CSV, HTML, summary), the
CLI and the page, per attribute, whichever classes are audited; and a carried reference keeps Namibia ("NA")."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import make_faces, open_app, roster_data_dir
from explorer.bias_audit import (UNKNOWN, audit_report, audit_table, carried_reference, class_groups,
                                 known_attributes, parse_reference, reference_proposals, uniform_reference,
                                 unmeasured_representation)
from labeling.classes import add_class
from labeling.cli import app
from labeling.db import open_store
from test_app_bias import SHARE, tab

runner = CliRunner()
PLACEHOLDERS = ["N/A", "n/a", "NA", "none", "NULL", "nan", "-", "?", " Unknown ", ""]


def approved(classes: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"face_id": range(len(classes)), "class": classes, "status": "approved", "predicted": classes})


# -- 1. by faces with no face: nothing measured, nothing flagged ------------------------------------------
def test_by_faces_without_any_face_measures_and_flags_nothing():
    classes = pd.DataFrame({"class": ["a", "b", "c"], "gender": ["female", "male", "male"]})
    reference = {"gender": {"female": 0.5, "male": 0.3, "nonbinary": 0.2}}  # nonbinary: absent from the data too
    table = audit_table(approved([]), classes, ["gender"], reference=reference,
                        representation_basis="face_share").set_index("group")
    assert table["share_among_listed"].isna().all(), table["share_among_listed"].to_dict()
    assert table["representation_ratio"].isna().all(), table["representation_ratio"].to_dict()
    assert not table["below_four_fifths"].any(), table["flags"].to_dict()
    # counted by classes, the same store is measured: the absent group is flagged as before
    by_classes = audit_table(approved([]), classes, ["gender"], reference=reference).set_index("group")
    assert by_classes.loc["nonbinary", "representation_ratio"] == 0 and by_classes.loc["nonbinary", "flags"] == "representation"


def test_by_faces_when_only_classes_without_a_value_have_faces():
    """Faces, but none of a class with a known gender: there is no share among known groups to compare."""
    classes = pd.DataFrame({"class": ["a", "b", "c"], "gender": ["female", "male", None]})
    table = audit_table(approved(["c", "c"]), classes, ["gender"], reference={"gender": {"female": 1, "male": 1}},
                        representation_basis="face_share")
    assert not table["below_four_fifths"].any(), table[["group", "flags"]].to_dict("records")


def test_a_reference_of_groups_the_data_lacks_is_still_flagged_absent_by_faces():
    """The "absent group, share 0" rule stays for an attribute that has something to count."""
    classes = pd.DataFrame({"class": ["a", "b"], "gender": ["female", "male"]})
    table = audit_table(approved(["a", "b"]), classes, ["gender"], reference={"gender": {"nonbinary": 1.0}},
                        representation_basis="face_share").set_index("group")
    assert table.loc["nonbinary", "share_among_listed"] == 0 and table.loc["nonbinary", "flags"] == "representation"


def test_the_audit_command_by_faces_on_a_roster_flags_nothing(tmp_path, monkeypatch):
    data = roster_data_dir(tmp_path, monkeypatch)
    out = tmp_path / "out"
    result = runner.invoke(app, ["audit", str(out), "--data-dir", str(data), "--basis", "faces", "--fail-on-flags"])
    assert result.exit_code == 0, result.output
    assert "flagged" not in result.stdout.replace("0 group(s) flagged", ""), result.stdout
    assert "0 group(s) flagged" in result.stdout and "representation by faces cannot be measured" in result.stdout
    back = pd.read_csv(out / "bias-audit.csv", keep_default_na=False, na_values=[""])
    assert back["representation_ratio"].isna().all() and not back["below_four_fifths"].any()


@pytest.mark.slow
def test_the_page_by_faces_on_a_roster_flags_nothing(tmp_path, monkeypatch):
    data = roster_data_dir(tmp_path, monkeypatch)
    at = open_app(monkeypatch, data, f"sqlite:///{data / 'giflens.db'}", timeout=600)
    at.switch_page("explorer/pages/bias.py").run()
    at.radio(key="bias_basis").set_value("faces").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if "Below four fifths" in e.value]
    assert {m.label: m.value for m in at.metric}["Groups flagged"] == "0"
    # nothing flagged because nothing was compared: a warning, not a clean pass
    assert not at.success, [s.value for s in at.success]
    assert any("Representation of gender not measured" in w.value for w in at.warning), [w.value for w in at.warning]
    at.toggle(key="bias_with_faces").set_value(False).run()  # the whole catalog: said all the same
    assert not at.exception and not at.success, [s.value for s in at.success]
    assert any("Representation of gender not measured: no face of a class with a known gender" in w.value
               for w in at.warning), [w.value for w in at.warning]


# -- 1b. the report itself says which attribute was not measured ------------------------------------------
def test_the_report_names_each_attribute_whose_representation_was_not_measured(tmp_path):
    """Faces only on a class with no gender: gender's representation is not measured, country's is."""
    classes = pd.DataFrame({"class": ["a", "b", "c"], "gender": ["female", "male", None], "country": ["FR", "US", "FR"]})
    report = audit_report(approved(["c", "c"]), classes, ["gender", "country"],
                          reference={"gender": {"female": 1, "male": 1, "nonbinary": 1}},
                          representation_basis="face_share")
    note = "representation of gender not measured: no face of a class with a known gender"
    assert unmeasured_representation(report.table) == {"gender": note}
    assert report.summary["representation of gender"] == "not measured: no face of a class with a known gender"
    assert "representation of country" not in report.summary and report.summary["groups flagged"] == 0
    rows = report.table.set_index(["attribute", "group"])["representation_note"]
    assert set(rows["gender"]) == {"not measured: no face of a class with a known gender"} and set(rows["country"]) == {""}
    back = pd.read_csv(report.to_csv(tmp_path / "a.csv"), keep_default_na=False)
    assert set(back.loc[back["attribute"] == "gender", "representation_note"]) == {
        "not measured: no face of a class with a known gender"}
    assert "representation of gender: not measured" in report.to_html(tmp_path / "a.html", "cdn").read_text()
    by_classes = audit_report(approved(["c", "c"]), classes, ["gender", "country"])
    assert unmeasured_representation(by_classes.table) == {}  # counted by classes, both are measured


def test_the_audit_command_of_all_classes_by_faces_says_nothing_was_measured(tmp_path, monkeypatch):
    """--all-classes skips the "no class has a face yet" scope: the report's own note still says it."""
    data = roster_data_dir(tmp_path, monkeypatch)
    out = tmp_path / "out"
    result = runner.invoke(app, ["audit", str(out), "--data-dir", str(data), "--basis", "faces", "--all-classes",
                                 "--reference", "gender=female:1,male:1,nonbinary:1", "--fail-on-flags"])
    assert result.exit_code == 0, result.output
    assert "note representation of gender not measured: no face of a class with a known gender" in result.output
    assert "0 group(s) flagged (representation not measured for gender)" in result.stdout, result.stdout
    back = pd.read_csv(out / "bias-audit.csv", keep_default_na=False)
    assert (back["representation_note"] == "not measured: no face of a class with a known gender").all()
    assert "representation of gender: not measured" in (out / "bias-audit.html").read_text()


@pytest.mark.slow
def test_the_page_decides_per_attribute_whether_representation_was_measured(tmp_path, monkeypatch):
    """Faces only on a class with a country and no gender: gender is not measured by faces, country is. The
    page warned that an absent nonbinary was "flagged for representation" though the report flagged nothing."""
    data = roster_data_dir(tmp_path, monkeypatch)
    url = f"sqlite:///{data / 'giflens.db'}"
    store = open_store(url)
    add_class(store, "No Gender", "bob", attributes={"country": "FR"}, seed_face_ids=make_faces(store, 1, 2))
    at = open_app(monkeypatch, data, url, timeout=600)
    at.switch_page("explorer/pages/bias.py").run()
    at.radio(key="bias_basis").set_value("faces").run()
    at.toggle(key="bias_with_faces").set_value(False).run()  # the roster classes hold the genders
    at.session_state["bias_reference_gender"] = {"edited_rows": {}, "deleted_rows": [],
                                                 "added_rows": [{"group": "nonbinary", SHARE: 1}]}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Groups flagged"] == "0"
    absent = [w.value for w in tab(at, "Gender").warning if "absent from the dataset" in w.value]
    assert len(absent) == 1 and "not flagged" in absent[0] and "flagged for representation" not in absent[0], absent
    warned = " ".join(w.value for w in at.warning)
    assert "Representation of gender not measured" in warned and "of country not measured" not in warned
    assert not at.success, [s.value for s in at.success]


# -- 2. placeholder values are unknown ------------------------------------------------------------------
def test_placeholder_values_are_the_unknown_group():
    names = [f"p{i}" for i in range(len(PLACEHOLDERS))] + ["f", "m"]
    classes = pd.DataFrame({"class": names, "gender": PLACEHOLDERS + ["Female", "male"]})
    groups = class_groups(classes, ["gender"])
    assert sorted(set(groups["group"])) == ["female", "male", UNKNOWN]
    assert uniform_reference(groups["group"]) == {"female": 0.5, "male": 0.5}
    table = audit_table(approved(names), classes, ["gender"],
                        reference={"gender": uniform_reference(groups["group"])}).set_index("group")
    assert table.loc[UNKNOWN, "classes"] == len(PLACEHOLDERS)
    assert table.loc["female", "share_of_known"] == 0.5 and not table["below_four_fifths"].any()
    # an attribute nobody filled in with more than a placeholder is not audited at all
    assert known_attributes(pd.DataFrame({"class": ["a", "b"], "gender": ["N/A", "-"], "country": ["FR", "?"]})) == \
        ["country"]


def test_placeholders_among_several_ethnicities_are_dropped():
    classes = pd.DataFrame({"class": ["a", "b"], "ethnicity": ["african;N/A", "none; ?"]})
    groups = class_groups(classes, ["ethnicity"]).set_index("class")
    assert groups.loc["a", "group"] == "african" and groups.loc["a", "weight"] == 1.0
    assert groups.loc["b", "group"] == UNKNOWN


def test_na_in_the_country_column_is_namibia():
    """"NA" is Namibia's ISO 3166-1 code, and country is stored as typed ("FR", "US"): a country column keeps
    it as a group (the one under-represented country the audit should show, not fold into unknown); the
    placeholders no country is called ("N/A", "none", "-") are unknown there too."""
    classes = pd.DataFrame({"class": list("abcde"), "country": ["NA", "FR", "N/A", "-", "na"]})
    groups = class_groups(classes, ["country"]).set_index("class")["group"]
    assert groups.to_dict() == {"a": "na", "b": "fr", "c": UNKNOWN, "d": UNKNOWN, "e": "na"}
    assert parse_reference({"NA": 1, "FR": 1}, attribute="country") == {"na": 0.5, "fr": 0.5}
    table = audit_table(approved(list("abcde")), classes, ["country"],
                        reference={"country": {"NA": 0.5, "FR": 0.5}}).set_index("group")
    assert table.loc["na", "classes"] == 2 and table.loc["na", "reference_share"] == 0.5
    assert math.isclose(table.loc["na", "share_of_known"], 2 / 3)
    rows, new = carried_reference([("NA", 0.7), ("FR", 0.3)], {"NA": 0.5, "FR": 0.5}, ["na", "fr"],
                                  attribute="country")
    assert rows == [("NA", 0.7), ("FR", 0.3)] and new == []


def test_a_carried_country_reference_keeps_namibia_at_its_proposed_share():
    """Namibia left at the page's proposed share, France changed, then Germany appears: Namibia is still in
    the data, so its row stays and counts in the new group's fill. Matched as a placeholder (no attribute), its
    row was taken for a proposal of a group gone from the data and dropped."""
    proposed = {"na": 0.5, "fr": 0.5}
    rows, new = carried_reference([("na", 0.5), ("fr", 0.2)], proposed, ["de", "fr", "na"], proposed=proposed,
                                  attribute="country")
    assert new == ["de"] and rows == [("na", 0.5), ("fr", 0.2), ("de", pytest.approx(0.35))]
    assert reference_proposals(rows, proposed, new, "country") == {"na": 0.5, "de": pytest.approx(0.35)}


@pytest.mark.slow
def test_the_page_carries_a_country_reference_with_namibia_when_a_country_appears(tmp_path, monkeypatch):
    monkeypatch.delenv("GIFLENS_DATABASE_URL", raising=False)
    monkeypatch.delenv("GIFLENS_DATA_DIR", raising=False)
    data = tmp_path / "data"
    people = tmp_path / "people.csv"
    people.write_text("name,country\nA One,NA\nB Two,FR\n")
    assert runner.invoke(app, ["import", "attributes", str(people), "--data-dir", str(data)]).exit_code == 0
    at = open_app(monkeypatch, data, f"sqlite:///{data / 'giflens.db'}", timeout=600)
    at.switch_page("explorer/pages/bias.py").run()

    def reference() -> dict:
        editor = [d.value for d in tab(at, "Country").dataframe if SHARE in d.value.columns][0]
        return dict(zip(editor["group"], editor[SHARE]))

    assert reference() == {"fr": 0.5, "na": 0.5}
    at.session_state["bias_reference_country"] = {"edited_rows": {0: {SHARE: 0.2}}, "added_rows": [],
                                                  "deleted_rows": []}  # France 0.2, Namibia left as proposed
    at.run()
    people.write_text("name,country\nC Three,DE\n")  # another editor adds a German class
    assert runner.invoke(app, ["import", "attributes", str(people), "--data-dir", str(data)]).exit_code == 0
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert reference() == pytest.approx({"fr": 0.2, "na": 0.5, "de": 0.35})


def test_a_placeholder_in_a_reference_is_refused_as_unknown():
    for typed in ("N/A", "NA", "none", "-"):
        with pytest.raises(ValueError, match="unknown"):
            parse_reference({typed: 1, "female": 1}, attribute="gender")


def test_the_audit_command_counts_placeholders_as_unknown(tmp_path, monkeypatch):
    monkeypatch.delenv("GIFLENS_DATABASE_URL", raising=False)
    monkeypatch.delenv("GIFLENS_DATA_DIR", raising=False)
    data, out = tmp_path / "data", tmp_path / "out"
    people = tmp_path / "people.csv"
    people.write_text("name,gender,country\nA One,female,NA\nB Two,male,FR\nC Three,N/A,-\nD Four,none,?\n")
    assert runner.invoke(app, ["import", "attributes", str(people), "--data-dir", str(data)]).exit_code == 0
    result = runner.invoke(app, ["audit", str(out), "--data-dir", str(data), "--reference", "country=NA:1,FR:1"])
    assert result.exit_code == 0, result.output
    back = pd.read_csv(out / "bias-audit.csv", keep_default_na=False, na_values=[""])
    assert sorted(back.loc[back["attribute"] == "gender", "group"]) == ["female", "male", UNKNOWN]
    assert sorted(back.loc[back["attribute"] == "country", "group"]) == ["fr", "na", UNKNOWN]
    refused = runner.invoke(app, ["audit", str(out), "--data-dir", str(data), "--reference", "gender=N/A:1,male:1"])
    assert refused.exit_code != 0 and "unknown" in refused.output
