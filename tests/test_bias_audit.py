"""explorer.bias_audit on the real LFW people attributes (../shared/data/lfw-people.csv) and the
faces of the first 30 LFW people: groups and "unknown", multi-valued ethnicity, the four-fifths
flag on a constructed case, representation against a reference, purity from real clusters, and
the CSV/HTML exports."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.lfw_faces import load_lfw_faces
from explorer.bias_audit import (AuditReport, audit_report, audit_table, class_groups, decade, face_groups,
                                 held_out_grades, small_sample_references)
from explorer.clusters import class_stats


@pytest.fixture(scope="module")
def people(shared_data: Path) -> pd.DataFrame:
    return pd.read_csv(shared_data / "lfw-people.csv", keep_default_na=False, na_values=[""]).rename(
        columns={"name": "class"})


@pytest.fixture(scope="module")
def lfw(lfw_dir: Path):
    return load_lfw_faces(lfw_dir, max_people=30)


@pytest.fixture(scope="module")
def faces(lfw) -> pd.DataFrame:
    """Every photo confirmed by an editor except every third, which is still a model prediction;
    the model is right everywhere (a baseline the constructed cases then break)."""
    n = len(lfw.names)
    status = np.where(np.arange(n) % 3 == 2, "predicted", "approved")
    return pd.DataFrame({"face_id": np.arange(n), "class": lfw.names, "status": status, "predicted": lfw.names})


def test_groups_from_the_real_attribute_file(people):
    groups = class_groups(people)
    assert set(groups["attribute"]) == {"gender", "ethnicity"}  # the file has no birth year or country
    gender = groups[groups["attribute"] == "gender"]
    assert set(gender["group"]) == {"male", "female", "unknown"}
    assert len(gender) == len(people)
    expected_unknown = int(people["gender"].isna().sum())
    assert expected_unknown > 0 and (gender["group"] == "unknown").sum() == expected_unknown
    # Multi-valued ethnicity: one row per value, weights summing to 1 per class.
    jolie = groups[(groups["class"] == "Angelina_Jolie") & (groups["attribute"] == "ethnicity")]
    assert set(jolie["group"]) == {"nativeamerican", "caucasian"} and jolie["weight"].tolist() == [0.5, 0.5]
    eth = groups[groups["attribute"] == "ethnicity"]
    assert eth.groupby("class")["weight"].sum().round(9).eq(1.0).all()
    assert eth["class"].nunique() == len(people)


def test_decade_country_and_missing_values():
    classes = pd.DataFrame({"class": ["a", "b", "c", "d"], "birth_year": [1963, 1971.0, None, "n/a"],
                            "country": ["USA", " usa ", "", None], "gender": ["Female", "female", None, "male"]})
    groups = class_groups(classes)
    by = {(r.attribute, r["class"]): r.group for _, r in groups.iterrows()}
    assert by[("decade", "a")] == "1960s" and by[("decade", "b")] == "1970s"
    assert by[("decade", "c")] == by[("decade", "d")] == "unknown"
    assert by[("country", "a")] == by[("country", "b")] == "usa" and by[("country", "c")] == "unknown"
    assert by[("gender", "a")] == by[("gender", "b")] == "female"
    assert decade(1899) == "1890s" and decade("x") == "unknown"
    with pytest.raises(KeyError, match="religion"):
        class_groups(classes, ["religion"])


def test_counts_shares_and_unknown_group(faces, people, lfw):
    table = audit_table(faces, people)
    gender = table[table["attribute"] == "gender"].set_index("group")
    assert {"male", "female", "unknown"} <= set(gender.index)
    # Recount independently from the two files.
    g = dict(zip(people["class"], people["gender"].fillna("unknown")))
    per_face = pd.Series([g[n] for n in lfw.names])
    for group in ("male", "female", "unknown"):
        assert gender.loc[group, "faces"] == (per_face == group).sum()
        assert gender.loc[group, "classes"] == (people["gender"].fillna("unknown") == group).sum()
        approved = ((per_face == group) & (faces["status"] == "approved")).sum()
        assert gender.loc[group, "approved_faces"] == approved
        assert gender.loc[group, "approved_share"] == pytest.approx(approved / (per_face == group).sum())
    assert gender["class_share"].sum() == pytest.approx(1.0) and gender["face_share"].sum() == pytest.approx(1.0)
    eth = table[table["attribute"] == "ethnicity"]
    assert eth["class_share"].sum() == pytest.approx(1.0)  # multi-valued classes weighted 1/k
    assert eth["classes"].sum() == pytest.approx(len(people))  # ...so each person counts once in all
    assert not table["below_four_fifths"].any()            # a perfect model, no reference: nothing to flag
    assert (table["accuracy"].dropna() == 1.0).all()


def test_four_fifths_flag_on_a_constructed_case(faces, people):
    gender = dict(zip(people["class"], people["gender"].fillna("unknown")))
    g = faces["class"].map(gender)
    broken = faces.copy()
    female = np.flatnonzero(g == "female")
    # The model gets 40% of confirmed female faces wrong and declines ("unknown") on 10% more.
    wrong, declined = female[::5], female[1::10]
    broken.loc[broken.index[wrong], "predicted"] = "Someone_Else"
    broken.loc[broken.index[declined], "predicted"] = "unknown"
    broken.loc[broken.index[female[2::5]], "predicted"] = "Someone_Else"
    report = audit_report(broken, people, attributes=["gender"])
    rows = report.groups("gender").set_index("group")
    confirmed = broken[(g == "female") & (broken["status"] == "approved")]
    expected_acc = (confirmed["predicted"] == confirmed["class"]).mean()
    assert rows.loc["female", "accuracy"] == pytest.approx(expected_acc)
    assert rows.loc["female", "unknown_rate"] == pytest.approx((confirmed["predicted"] == "unknown").mean())
    assert rows.loc["male", "accuracy"] == 1.0 and rows.loc["female", "accuracy_reference"] == 1.0
    assert expected_acc < 0.8
    assert rows.loc["female", "below_four_fifths"] and "accuracy" in rows.loc["female", "flags"]
    assert not rows.loc["male", "below_four_fifths"]
    assert list(report.flagged()["group"]) == ["female"]
    # Predicted (unconfirmed) faces never count toward accuracy: break only those and nothing moves.
    only_predicted = faces.copy()
    mask = (g == "male") & (faces["status"] == "predicted")
    only_predicted.loc[mask, "predicted"] = "Someone_Else"
    assert not audit_table(only_predicted, people, ["gender"])["below_four_fifths"].any()


def test_a_confirmed_face_the_model_never_saw_is_not_graded(faces, people):
    """An imported training set is approved before any prediction exists: those faces are not
    "0% accurate, 100% unknown", they are not measured; a face the model did see and decline is."""
    gender = dict(zip(people["class"], people["gender"].fillna("unknown")))
    g = faces["class"].map(gender)
    unseen = faces.assign(predicted=None, measured=False)
    rows = audit_table(unseen, people, ["gender"]).set_index("group")
    assert rows[["accuracy", "unknown_rate"]].isna().all().all(), rows[["accuracy", "unknown_rate"]]
    assert not rows["below_four_fifths"].any()
    assert (rows["approved_faces"] > 0).all()  # still counted as confirmed faces of their groups
    # half the male faces predicted (one in four of those declined), the other half never seen
    male = np.flatnonzero((g == "male") & (faces["status"] == "approved"))
    seen, declined = male[::2], male[::8]
    mixed = faces.assign(measured=False)
    mixed.loc[mixed.index[seen], "measured"] = True
    mixed.loc[mixed.index[declined], "predicted"] = "unknown"
    row = audit_table(mixed, people, ["gender"]).set_index("group").loc["male"]
    assert row["accuracy"] == pytest.approx(1 - len(declined) / len(seen))
    assert row["unknown_rate"] == pytest.approx(len(declined) / len(seen))
    assert row["approved_faces"] == len(male)
    graded = face_groups(mixed)
    assert graded["correct"].notna().sum() == len(seen) and graded["declined"].sum() == len(declined)


def test_held_out_grades_replace_stored_predictions_of_confirmed_faces(faces, people, lfw):
    """The audit grades each confirmed face with its own photo held out of its class, whatever the
    store holds (here: a stored prediction that is wrong everywhere, as after a bad model run)."""
    stale = faces.assign(predicted="Someone_Else")
    graded = held_out_grades(stale, faces["face_id"], faces["face_id"], lfw.vectors)
    confirmed = faces["status"] == "approved"
    assert (graded.loc[~confirmed, "predicted"] == "Someone_Else").all()  # predictions of undecided faces stay
    per_class = faces[confirmed].groupby("class").size()
    measurable = confirmed & faces["class"].map(per_class).ge(2)
    assert graded.loc[measurable, "measured"].all() and not graded.loc[confirmed & ~measurable, "measured"].any()
    right = (graded.loc[measurable, "predicted"] == faces.loc[measurable, "class"]).mean()
    assert right >= 0.9, right
    rows = audit_table(graded, people, ["gender"]).set_index("group")
    assert (rows["accuracy"] >= 0.85).all() and (rows["unknown_rate"] <= 0.1).all(), rows[["accuracy", "unknown_rate"]]
    # one photo per media item vs all of a class's photos in one media item: then nothing is left to grade it
    one_media = faces["class"].where(faces["class"] == faces["class"].iloc[0], faces["face_id"].astype(str))
    lumped = held_out_grades(stale, faces["face_id"], one_media, lfw.vectors)
    first = confirmed & (faces["class"] == faces["class"].iloc[0])
    assert not lumped.loc[first, "measured"].any() and lumped.loc[measurable & ~first, "measured"].all()


def test_unknown_is_never_the_reference_group(faces, people):
    gender = dict(zip(people["class"], people["gender"].fillna("unknown")))
    g = faces["class"].map(gender)
    worse = faces.copy()
    known = np.flatnonzero(g != "unknown")
    worse.loc[worse.index[known[::4]], "predicted"] = "Someone_Else"  # 75% on male and female
    rows = audit_table(worse, people, ["gender"]).set_index("group")
    assert rows.loc["unknown", "accuracy"] == 1.0
    best_known = rows.loc[["male", "female"], "accuracy"].max()
    assert rows.loc["male", "accuracy_reference"] == pytest.approx(best_known)
    assert not rows.loc[["male", "female"], "below_four_fifths"].any()


def test_representation_against_a_reference(faces, people):
    table = audit_table(faces, people, ["gender"], reference={"gender": {"female": 0.5, "male": 0.5}})
    rows = table.set_index("group")
    known = people["gender"].dropna()
    female_share = (known == "female").mean()  # among classes with a known gender
    assert rows.loc["female", "share_of_known"] == pytest.approx(female_share)
    assert rows.loc["female", "representation_ratio"] == pytest.approx(female_share / 0.5)
    assert female_share < 0.4 and "representation" in rows.loc["female", "flags"]
    assert "representation" not in rows.loc["male", "flags"]
    assert np.isnan(rows.loc["unknown", "representation_ratio"])
    with pytest.raises(ValueError, match="0..1"):
        audit_table(faces, people, ["gender"], reference={"gender": {"female": 50}})


def test_purity_comes_from_real_clusters(faces, people, lfw):
    labels = lfw.names.astype(object).copy()
    labels[np.flatnonzero(lfw.names == "Ariel_Sharon")[:10]] = "Angelina_Jolie"
    stats = class_stats(lfw.vectors, labels)
    rows = audit_table(faces, people, ["gender"], cluster_stats=stats).set_index("group")
    purity = dict(zip(stats["class"], stats["purity"]))
    gender = dict(zip(people["class"], people["gender"].fillna("unknown")))
    female = [c for c in purity if gender[c] == "female"]
    assert rows.loc["female", "purity"] == pytest.approx(np.mean([purity[c] for c in female]))
    assert purity["Angelina_Jolie"] < 0.8 and rows.loc["female", "purity"] < rows.loc["male", "purity"]


def test_faces_without_a_class_and_classes_without_attributes(faces, people):
    extra = faces.copy()
    extra.loc[extra.index[:5], "status"] = "unknown"
    extra.loc[extra.index[:5], "class"] = None
    extra.loc[extra.index[5:8], "class"] = "Not_In_The_Csv"
    extra.loc[extra.index[5:8], "predicted"] = "Not_In_The_Csv"
    f = face_groups(extra)
    assert f["effective_class"].isna().sum() == 5
    report = audit_report(extra, people, ["gender"])
    assert report.summary["faces without a class (unknown / rejected)"] == 5
    rows = report.groups("gender").set_index("group")
    assert rows["faces"].sum() == len(extra) - 5
    baseline = audit_table(faces, people, ["gender"]).set_index("group")
    gender = dict(zip(people["class"], people["gender"].fillna("unknown")))
    moved = pd.Series([gender[c] for c in faces["class"].iloc[:8]]).value_counts()
    for group in ("male", "female"):
        assert rows.loc[group, "faces"] == baseline.loc[group, "faces"] - moved.get(group, 0)
    # The class missing from the attribute file lands in "unknown" (3 faces).
    assert rows.loc["unknown", "faces"] == baseline.loc["unknown", "faces"] - moved.get("unknown", 0) + 3


def test_csv_and_html_are_written(faces, people, tmp_path):
    report = audit_report(faces, people, reference={"gender": {"female": 0.5, "male": 0.5}})
    assert isinstance(report, AuditReport)
    csv = report.to_csv(tmp_path / "audit" / "bias.csv")
    back = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    assert len(back) == len(report.table) and list(back.columns) == list(report.table.columns)
    assert set(back["group"]) >= {"male", "female", "unknown", "caucasian"}
    assert back["below_four_fifths"].tolist() == report.table["below_four_fifths"].tolist()
    page = report.to_html(tmp_path / "audit" / "bias.html").read_text()
    assert page.count("Plotly.newPlot") == len(report.figures()) >= 4
    assert 'src="https://cdn.plot.ly' not in page and len(page) > 1_000_000  # plotly.js inlined: works offline
    assert "Flagged groups" in page and "female" in page and "representation" in page
    small = report.to_html(tmp_path / "audit" / "bias-cdn.html", include_plotlyjs="cdn").read_text()
    assert small.count('src="https://cdn.plot.ly') == 1 and len(small) < 200_000
    assert not list((tmp_path / "audit").glob(".*"))  # no temp files left


def test_when_every_group_is_a_small_sample_the_gap_is_still_flagged(faces, people):
    """No group reaches min_faces: the best of the small groups is the reference, the gap between
    them is flagged (marked small_sample, as a small group flagged against a large one is), and the
    report says the reference is itself a small sample."""
    gender = dict(zip(people["class"], people["gender"].fillna("unknown")))
    g = faces["class"].map(gender)
    broken = faces.copy()
    female = np.flatnonzero((g == "female") & (faces["status"] == "approved"))
    broken.loc[broken.index[female[::2]], "predicted"] = "unknown"  # declined on half the confirmed female faces
    unknown_group = np.flatnonzero(g == "unknown")
    broken.loc[broken.index[unknown_group], "predicted"] = broken.loc[broken.index[unknown_group], "class"]
    rows = audit_table(broken, people, ["gender"]).set_index("group")
    assert rows.loc[["male", "female"], "approved_faces"].min() >= 5  # enough faces: the usual rule...
    assert not small_sample_references(rows.reset_index())
    big = int(rows["approved_faces"].max()) + 1  # ...then no group has enough
    report = audit_report(broken, people, ["gender"], min_faces=big)
    rows = report.groups("gender").set_index("group")
    assert rows["small_sample"].all()
    assert rows.loc["male", "accuracy"] == 1.0 and rows.loc["female", "accuracy"] < 0.8
    assert rows.loc["female", "accuracy_reference"] == rows.loc["male", "accuracy_reference"] == 1.0
    assert rows.loc["female", "accuracy_ratio"] == pytest.approx(rows.loc["female", "accuracy"])
    assert rows.loc["female", "flags"] == "accuracy; recognised_rate" and rows.loc["female", "below_four_fifths"]
    assert not rows.loc["male", "below_four_fifths"]
    assert list(report.flagged()["group"]) == ["female"] and report.flagged()["small_sample"].all()
    assert report.summary["groups flagged"] == 1  # counted like any flag (what --fail-on-flags reads)
    assert small_sample_references(report.table) == {"gender": ["accuracy", "recognised_rate"]}
    note = report.summary["small-sample references"]
    assert note.startswith("gender (accuracy, recognised rate): no group with a value has") and str(big) in note
    assert "itself a small sample" in note
    # "unknown" is still never the reference, even when it is the best served of the small groups
    assert rows.loc["unknown", "accuracy"] == 1.0
    worse = broken.copy()
    male = np.flatnonzero((g == "male") & (faces["status"] == "approved"))
    worse.loc[worse.index[male[::4]], "predicted"] = "Someone_Else"
    rows = audit_table(worse, people, ["gender"], min_faces=big).set_index("group")
    assert rows.loc["male", "accuracy"] < 1.0
    assert rows.loc["female", "accuracy_reference"] == pytest.approx(rows.loc["male", "accuracy"])


def test_a_lone_small_group_is_compared_with_nobody(faces, people):
    """One class, one group: its reference is itself, nothing is flagged and no small-sample
    reference is reported (there is no comparison)."""
    one = faces[faces["class"] == faces["class"].iloc[0]].head(3)
    classes = people[people["class"] == faces["class"].iloc[0]].assign(gender="female")
    report = audit_report(one, classes, ["gender"])
    row = report.groups("gender").iloc[0]
    assert row["small_sample"] and row["accuracy_ratio"] == 1.0 and not row["below_four_fifths"]
    assert report.summary["small-sample references"] == "none"


def test_a_reference_group_absent_from_the_data_is_flagged(faces, people, tmp_path):
    """A group the reference expects and no class belongs to: a zero row, share 0, ratio 0,
    flagged for representation; nothing measured of it, so its rates are empty, not 0."""
    known = people["gender"].dropna()
    reference = {"gender": {"Female": 0.4, "male": 0.4, " Nonbinary ": 0.2, "agender": 0.0}}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # nothing divides by zero
        report = audit_report(faces, people, ["gender", "ethnicity"], reference=reference)
        by_faces = audit_table(faces, people, ["gender"], reference=reference, representation_basis="face_share")
    rows = report.groups("gender").set_index("group")
    assert set(rows.index) == {"female", "male", "nonbinary", "unknown"}  # "Female" is female; share 0: no row
    absent = rows.loc["nonbinary"]
    assert (absent["classes"], absent["faces"], absent["approved_faces"]) == (0, 0, 0)
    assert (absent["class_share"], absent["face_share"], absent["share_of_known"]) == (0, 0, 0)
    assert absent["reference_share"] == pytest.approx(0.2) and absent["representation_ratio"] == 0
    assert absent["flags"] == "representation" and absent["below_four_fifths"]
    for col in ("approved_share", "predicted_share", "accuracy", "unknown_rate", "recognised_rate", "purity",
                "accuracy_ratio", "recognised_rate_ratio", "purity_ratio"):
        assert np.isnan(absent[col]), col
    # the groups that are there are measured as before: the zero row changes no share
    assert rows.loc["female", "share_of_known"] == pytest.approx((known == "female").mean())
    assert rows.loc["female", "representation_ratio"] == pytest.approx((known == "female").mean() / 0.4)
    assert rows["class_share"].sum() == pytest.approx(1.0) and rows["classes"].sum() == len(people)
    assert list(report.groups("gender")["group"])[-2:] == ["nonbinary", "unknown"]  # after the groups found
    assert "nonbinary" not in set(report.groups("ethnicity")["group"])  # no reference there: nothing added
    assert ("gender", "nonbinary") in set(zip(report.flagged()["attribute"], report.flagged()["group"]))
    assert report.summary["groups flagged"] == len(report.flagged())
    face_row = by_faces.set_index("group").loc["nonbinary"]
    assert face_row["share_of_known"] == 0 and face_row["flags"] == "representation"
    # the exports carry the row, and the charts draw it
    back = pd.read_csv(report.to_csv(tmp_path / "bias.csv"), keep_default_na=False, na_values=[""])
    row = back[(back["attribute"] == "gender") & (back["group"] == "nonbinary")].iloc[0]
    assert row["classes"] == 0 and row["representation_ratio"] == 0 and row["flags"] == "representation"
    assert bool(row["below_four_fifths"]) and np.isnan(row["accuracy"])
    page = report.to_html(tmp_path / "bias.html", include_plotlyjs="cdn").read_text()
    assert page.count("nonbinary") >= 3  # flagged list, gender table, representation chart
    assert "nonbinary" in report.figures()["gender/representation"].data[0].x
    with pytest.raises(ValueError, match="listed twice"):
        audit_table(faces, people, ["gender"], reference={"gender": {"Female": 0.5, "female": 0.5}})
