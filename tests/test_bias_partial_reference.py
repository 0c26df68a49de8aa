"""Bias audit: a group left out of the reference distribution no longer moves the
other groups' flags (the listed groups are compared among themselves, and the CLI, page and report say
which groups were left out and what the shares were normalised to); `giflens audit` on a store whose
attributes are all on classes without faces says so instead of sending the editor to import them; the
report's summary labels say what they count; birth years are read as digits only."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import make_faces
from explorer.bias_audit import audit_report, audit_table, reference_scope_notes
from labeling.classes import add_class
from labeling.cli import app
from labeling.db import open_store
from labeling.errors import ValidationError
from labeling.validation import clean_attributes
from test_app_bias import SHARE, ok, open_page, representation_table, tab
from test_queries import new_fixture_store

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def countries(counts: dict[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """classes by country (n classes per country), one confirmed face each."""
    names = [(f"{c}{i}", c) for c, n in counts.items() for i in range(n)]
    classes = pd.DataFrame({"class": [n for n, _ in names], "country": [c for _, c in names]})
    faces = pd.DataFrame({"face_id": range(len(names)), "class": classes["class"], "status": "approved",
                          "predicted": classes["class"]})
    return faces, classes


# -- 1. a group left out of the reference ---------------------------------------------------------------
def test_a_group_left_out_of_the_reference_moves_no_other_flag():
    """3 a, 3 b, 4 c and a reference a:1,b:1 (c left out): a and b are half of the listed groups each, as
    expected. Before, their share was taken among all 10 known classes (30%) against 50%: both flagged."""
    faces, classes = countries({"a": 3, "b": 3, "c": 4})
    table = audit_table(faces, classes, ["country"], reference={"country": {"a": 0.5, "b": 0.5}}).set_index("group")
    assert table.loc["a", "share_of_known"] == pytest.approx(0.3)  # still said: the data as found
    assert table.loc[["a", "b"], "share_among_listed"].tolist() == pytest.approx([0.5, 0.5])
    assert table.loc[["a", "b"], "representation_ratio"].tolist() == [1.0, 1.0]
    assert pd.isna(table.loc["c", "share_among_listed"]) and pd.isna(table.loc["c", "representation_ratio"])
    assert (table["flags"] == "").all(), table["flags"]
    # every known group listed (the default): the same shares as among the known groups
    full = audit_table(faces, classes, ["country"], reference={"country": {"a": 0.25, "b": 0.25, "c": 0.5}})
    assert full["share_among_listed"].tolist() == full["share_of_known"].tolist()


def test_the_report_names_the_groups_left_out_and_the_normalised_shares(tmp_path):
    faces, classes = countries({"germany": 2, "france": 3, "italy": 5})
    reference = {"country": {"germany": 1.0}}  # what --reference country=germany:10 parses to
    report = audit_report(faces, classes, ["country"], reference=reference)
    note = reference_scope_notes(report.table, report.reference)["country"]
    assert "only germany 100%" in note and "nothing is compared" in note and "france, italy" not in note
    assert "Left out: italy, france" in note
    assert report.summary["reference of country"] == note
    assert note in (report.to_html(tmp_path / "r.html", include_plotlyjs="cdn").read_text()
                    .replace("&#x27;", "'"))
    two = audit_report(faces, classes, ["country"], reference={"country": {"germany": 0.25, "france": 0.75}})
    assert reference_scope_notes(two.table, two.reference)["country"] == (
        "the reference leaves out italy (no representation comparison); its shares, normalised over the groups "
        "listed (germany 25%, france 75%), are compared with each listed group's share among the listed groups only")
    # the chart draws the shares the flags compare: germany 2 of the 5 listed classes, not 2 of 10
    bars = two.figures()["country/representation"].data[0]
    assert dict(zip(bars.x, bars.y)) == pytest.approx({"germany": 0.4, "france": 0.6})
    every = audit_report(faces, classes, ["country"], reference={"country": {"germany": 1, "france": 1, "italy": 1}})
    assert reference_scope_notes(every.table, every.reference) == {}  # nothing left out: nothing to say


# -- 1 and 2 in the CLI -----------------------------------------------------------------------------------
@pytest.fixture
def split_store(tmp_path: Path) -> list[str]:
    """2 classes with faces and no attribute, 3 roster classes (no face) with a country."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    ids = make_faces(store, n_media=2, faces_per_media=2)
    add_class(store, "Ann", "ed", seed_face_ids=ids[:2])
    add_class(store, "Bob", "ed", seed_face_ids=ids[2:])
    for name, country in (("Cid", "spain"), ("Dan", "chile"), ("Eve", "spain")):
        add_class(store, name, "ed", attributes={"country": country})
    return ["--data-dir", str(tmp_path / "data"), "--database-url", url]


def make_faces_after(store) -> list[int]:
    """Two more faces on a media item of their own (make_faces numbers its media from 1)."""
    from labeling.db import session_scope
    from labeling.schema import Face, Media

    with session_scope(store) as s:
        media = Media(sha256=f"{99:064x}", path="/data/99.gif", kind="gif", status="ok")
        s.add(media)
        s.flush()
        faces = [Face(media_id=media.id, face_index=i, frame_index=i, x1=0, y1=0, x2=10, y2=10, probability=0.99,
                      landmarks=[[0, 0]] * 5) for i in range(2)]
        s.add_all(faces)
        s.flush()
        return [f.id for f in faces]


def test_the_cli_says_the_attributes_are_on_classes_without_faces(split_store, tmp_path):
    result = invoke("audit", tmp_path / "out", *split_store)
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert ("none of the 2 classes with faces has a demographic attribute (gender, ethnicity, birth year, "
            "country); 3 classes without faces do (--all-classes to audit them)") in text, text
    assert "import them" not in text
    # the classes with faces have a gender, the roster ones alone a country
    store = open_store(split_store[-1])
    add_class(store, "Fay", "ed", attributes={"gender": "female"}, seed_face_ids=make_faces_after(store))
    result = invoke("audit", tmp_path / "out", *split_store, "--reference", "country=spain:1")
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "none of the 3 classes with faces has a value for country; 3 classes " \
                                     "without faces do (--all-classes to audit them)" in text, text


def test_the_cli_notes_a_reference_that_leaves_groups_out(split_store, tmp_path):
    out = tmp_path / "out"
    result = invoke("audit", out, *split_store, "--all-classes", "--reference", "country=spain:10")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert "note reference of country: the reference lists only spain 100%" in text and "Left out: chile" in text
    rows = {r["group"]: r for r in csv.DictReader((out / "bias-audit.csv").open()) if r["attribute"] == "country"}
    assert rows["chile"]["representation_ratio"] == "" and rows["spain"]["representation_ratio"] == "1"


# -- 1 on the page ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def page_store(tmp_path_factory):
    return new_fixture_store(tmp_path_factory, "bias-round16")


def test_the_page_compares_the_listed_groups_among_themselves(page_store, monkeypatch, tmp_path):
    """Deleting "female" from the gender reference: male is all of the groups listed (ratio 1, not flagged;
    before, its 50% share of the known classes against 100% was flagged), and the page says why."""
    at = open_page(monkeypatch, page_store.url, page_store.data_dir)
    assert not any("leaves out" in i.value or "lists only" in i.value for i in tab(at, "Gender").info)
    at.session_state["bias_reference_gender"] = {"edited_rows": {}, "added_rows": [], "deleted_rows": [0]}
    at.run()
    ok(at)
    rows = representation_table(at, "Gender")
    assert rows.loc["male", "reference_share"] == 1 and rows.loc["male", "representation_ratio"] == 1
    assert pd.isna(rows.loc["female", "share_among_listed"]) and pd.isna(rows.loc["female", "reference_share"])
    assert "representation" not in rows.loc["male", "flags"]
    notes = [i.value for i in tab(at, "Gender").info]
    assert any("The reference lists only male 100%" in n and "Left out: female" in n for n in notes), notes
    assert SHARE  # the editor's column, as test_app_bias names it


# -- 4. summary labels ------------------------------------------------------------------------------------
def test_the_summary_says_what_it_counts(tmp_path):
    faces, classes = countries({"a": 2})
    extra = pd.DataFrame({"face_id": [10, 11, 12], "class": [None, None, None],
                          "status": ["predicted", "unknown", "rejected"], "predicted": [None, None, None]})
    report = audit_report(pd.concat([faces, extra], ignore_index=True), classes, ["country"])
    s = report.summary
    assert s["faces the model declined, awaiting review"] == 1
    assert s["faces an editor marked unknown or rejected"] == 2
    assert s["faces without a class (unknown / rejected)"] == 3  # kept for the code that reads it
    page = report.to_html(tmp_path / "r.html", include_plotlyjs="cdn").read_text()
    assert ("faces without a class (model declined, editor marked unknown/rejected, or not predicted yet): 3"
            in page)
    assert "min graded confirmed faces per group (fewer: small_sample): 5" in page
    assert "unknown / rejected)" not in page and "<li>min confirmed faces" not in page


# -- 5. birth years as digits -------------------------------------------------------------------------------
def test_a_birth_year_is_read_as_digits_only():
    assert clean_attributes({"birth_year": "1975"}) == {"birth_year": 1975}
    assert clean_attributes({"birth_year": " 1975.0 "}) == {"birth_year": 1975}  # a spreadsheet's float column
    assert clean_attributes({"birth_year": 1975.0}) == {"birth_year": 1975}
    for text in ("2e3", "1.975e3", "+1975", "1975.5", "١٩٧٥", "nan", "inf", "0x7b7"):
        with pytest.raises(ValidationError, match=re.escape(f"birth_year must be a year, got '{text}' (digits, as 1975)")):
            clean_attributes({"birth_year": text})
    with pytest.raises(ValidationError, match=r"birth_year 99999 is outside 1800\.\.") as caught:
        clean_attributes({"birth_year": "99999"})
    for text in ("99999999999999999999", "1" * 5000):  # no year: not read as a number (int() refuses 4,300+ digits)
        with pytest.raises(ValidationError, match=re.escape(f"birth_year must be a year, got '{text}'")) as caught:
            clean_attributes({"birth_year": text})
        assert "100000000000000000000" not in str(caught.value)
    with pytest.raises(ValidationError, match=r"birth_year '1700.0' is outside 1800\.\."):
        clean_attributes({"birth_year": "1700.0"})  # the text as typed, where the year reads differently


# -- review of round 16 ------------------------------------------------------------------------------------
def test_a_reference_of_groups_the_data_lacks_flags_them_absent():
    """Listed groups none of which the data holds: each is absent (share 0, flagged), as before the listed
    groups were compared among themselves, not a share of nothing that flags nothing."""
    faces, classes = countries({"a": 3, "b": 3, "c": 4})
    table = audit_table(faces, classes, ["country"], reference={"country": {"zz": 0.5, "yy": 0.5}}).set_index("group")
    assert table.loc[["zz", "yy"], "share_among_listed"].tolist() == [0.0, 0.0]
    assert table.loc[["zz", "yy"], "representation_ratio"].tolist() == [0.0, 0.0]
    assert all("representation" in f for f in table.loc[["zz", "yy"], "flags"])
    report = audit_report(faces, classes, ["country"], reference={"country": {"zz": 1.0}})
    note = reference_scope_notes(report.table, report.reference)["country"]
    assert "absent from the data (zz 100%)" in note and "nothing is compared" not in note


def test_faces_not_predicted_yet_are_no_editors_decision():
    faces, classes = countries({"a": 2})
    extra = pd.DataFrame({"face_id": [10, 11], "class": [None, None], "status": [None, "unlabeled"],
                          "predicted": [None, None]})
    s = audit_report(pd.concat([faces, extra], ignore_index=True), classes, ["country"]).summary
    assert s["faces an editor marked unknown or rejected"] == 0
    assert s["faces not predicted yet"] == 2 and s["faces the model declined, awaiting review"] == 0
