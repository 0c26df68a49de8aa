"""The Bias audit page (explorer/pages/bias.py) driven headless with AppTest on stores built from
real LFW photos and a real GIF (test_queries.build_fixture_store), with predictions from the
centroid classifier fitted on the confirmed faces, and with the real attribute file
../shared/data/lfw-people.csv imported on top (noisy: most people have no gender).

What the editor sees is compared with `explorer.bias_audit.audit_report` run on the same store:
the page must show the report, not its own arithmetic. Downloads are read back from Streamlit's
media storage, i.e. the bytes the browser would receive."""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer.bias_audit import (audit_report, class_groups, classes_with_faces, confirmed_class_stats,
                                 held_out_grades, known_attributes, parse_reference, small_sample_references,
                                 store_inputs, uniform_reference)
from labeling.classes import add_class
from labeling.db import open_store
from labeling.importers import import_attributes
from labeling.pages.common import plain
from labeling.queries import classes_frame, faces_frame
from models.celebrity_classifier import UNKNOWN, CentroidKnnClassifier
from labeling.face_labels import Prediction, record_predictions
from conftest import open_app
from test_queries import SHARED, FixtureStore, new_fixture_store

PAGE = "explorer/pages/bias.py"
RUN_BOUND_S = 600  # AppTest needs a bound per run; generous, so a busy shared machine never fails on time
SHARE = "expected share"


def predict_every_face(fx: FixtureStore) -> None:
    """The real centroid + kNN classifier, fitted on the editor-confirmed faces, predicts every face
    (decisions are kept; only the prediction beside them changes), as a retraining round would."""
    frame, vectors = faces_frame(fx.store, with_vectors=True)
    confirmed = frame["label_status"].isin(["approved", "relabeled"]).to_numpy()
    model_id = str(frame["model_id"].iloc[0])
    # A fixed open-set distance (dlib: same person ~0.02-0.06, others 0.09+): two classes give too few
    # impostor pairs to calibrate one.
    names = frame.loc[confirmed, "class_name"].tolist()
    clf = CentroidKnnClassifier(unknown_threshold=0.07).fit(vectors[confirmed], names, model_id)
    labels, confidences = clf.predict(vectors, model_id)
    record_predictions(fx.store, [Prediction(int(f), None if c == UNKNOWN else fx.classes[c], float(p), [])
                                  for f, c, p in zip(frame["face_id"], labels, confidences)], clf.version)


# -- stores ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixture_store(tmp_path_factory) -> FixtureStore:
    """Two LFW people (male/Israel, female/1981) with confirmed faces and a GIF whose faces the
    model predicted; then the real centroid classifier refreshes every prediction."""
    fx = new_fixture_store(tmp_path_factory, "bias-store")
    predict_every_face(fx)
    return fx


@pytest.fixture(scope="module")
def lfw_store(tmp_path_factory) -> FixtureStore:
    """The same photos plus the real LFW attribute roster (423 people; many without gender)."""
    fx = new_fixture_store(tmp_path_factory, "bias-lfw")
    predict_every_face(fx)
    import_attributes(fx.store, SHARED / "lfw-people.csv", "fixture")
    return fx


def open_page(monkeypatch, url: str, data_dir: Path) -> AppTest:
    """The page as an editor reaches it: through the app's navigation."""
    at = open_app(monkeypatch, data_dir, url, timeout=RUN_BOUND_S)
    at.switch_page(PAGE).run()
    ok(at)
    return at


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def expected_report(fx: FixtureStore, reference=None, with_faces: bool = True, **kw):
    """audit_report on the store, as the page reads it by default (uniform references)."""
    faces, classes = store_inputs(faces_frame(fx.store), classes_frame(fx.store))
    if with_faces:
        classes = classes[classes_with_faces(faces, classes)]
    vf, vectors = faces_frame(fx.store, with_vectors=True)
    stats = confirmed_class_stats(faces, vf["face_id"], vectors)
    faces = held_out_grades(faces, vf["face_id"], vf["media_id"], vectors)  # the page's reading, spelt out
    attributes = known_attributes(classes)
    if reference is None:
        groups = class_groups(classes, attributes)
        reference = {a: uniform_reference(groups.loc[groups["attribute"] == a, "group"]) for a in attributes}
    return audit_report(faces, classes, attributes, reference=reference, cluster_stats=stats, **kw)


def tab(at: AppTest, label: str):
    found = [t for t in at.tabs if t.label == label]
    assert len(found) == 1, [t.label for t in at.tabs]
    return found[0]


def table_with(element, column: str) -> pd.DataFrame:
    """The one table (dataframe or data editor) in element that has column."""
    found = [d.value for d in element.dataframe if column in d.value.columns]
    assert len(found) == 1, [list(d.value.columns) for d in element.dataframe]
    return found[0]


def groups_table(at: AppTest, label: str) -> pd.DataFrame:
    return table_with(tab(at, label), "approved_share").set_index("group")


def representation_table(at: AppTest, label: str) -> pd.DataFrame:
    return table_with(tab(at, label), "representation_ratio").set_index("group")


def flagged_shown(at: AppTest) -> set[tuple[str, str, str]]:
    tables = [d.value for d in at.main.dataframe if {"attribute", "flags"} <= set(d.value.columns)]
    return {(r.attribute, r.group, r.flags) for r in tables[0].itertuples()} if tables else set()


def flagged_expected(report) -> set[tuple[str, str, str]]:
    return {(r.attribute, r.group, r.flags) for r in report.flagged().itertuples()}


def edit_reference(at: AppTest, attribute: str, edited: dict, added: list | None = None) -> AppTest:
    """Seed the reference editor's edit state (what the browser sends after cell edits) and rerun."""
    at.session_state[f"bias_reference_{attribute}"] = {"edited_rows": edited, "added_rows": added or [],
                                                       "deleted_rows": []}
    at.run()
    ok(at)
    return at


# -- the pure helpers behind the editor ----------------------------------------------------------------
def test_reference_parsing_normalises_and_explains():
    assert parse_reference({"Female": 60, " male ": 40}) == pytest.approx({"female": 0.6, "male": 0.4})
    assert uniform_reference(["b", "unknown", "a"]) == {"b": 0.5, "a": 0.5}
    table = pd.DataFrame({"group": ["female", None, "male"], "share": [1, None, 3]})  # a blank added row
    assert parse_reference(table) == pytest.approx({"female": 0.25, "male": 0.75})
    for bad, message in [({"female": -0.1, "male": 1}, "non-negative"), ({"female": 0, "male": 0}, "sum to 0"),
                         ({"female": "lots"}, "not a number"), ({"unknown": 1}, "'unknown' cannot"),
                         (pd.DataFrame({"group": ["male", "Male"], "share": [1, 1]}), "twice"),
                         (pd.DataFrame({"group": [None], "share": [1]}), "no group name"),
                         (pd.DataFrame({"group": ["male"], "share": [None]}), "no share")]:
        with pytest.raises(ValueError, match=message):
            parse_reference(bad)


# -- the page -----------------------------------------------------------------------------------------
def test_each_attribute_renders_and_flags_match_the_report(fixture_store, monkeypatch, tmp_path):
    at = open_page(monkeypatch, fixture_store.url, tmp_path)
    assert [t.value for t in at.title] == ["Bias audit"] and not at.error
    report = expected_report(fixture_store)
    # The fixture's classes hold gender, birth year (-> decade) and country; nobody has an ethnicity.
    assert [t.label for t in at.tabs] == ["Gender", "Birth decade", "Country"]
    assert any("ethnicity: not audited" in c.value for c in at.caption)
    faces = faces_frame(fixture_store.store)
    per_class = faces.assign(c=faces["class_name"].fillna(faces["predicted_class_name"])).groupby("c").size()
    ariel, serena = int(per_class["Ariel Sharon"]), int(per_class["Serena Williams"])
    for label, attribute, groups in [("Gender", "gender", {"male": ariel, "female": serena}),
                                     ("Birth decade", "decade", {"1980s": serena, "unknown": ariel}),
                                     ("Country", "country", {"israel": ariel, "unknown": serena})]:
        shown = groups_table(at, label)
        assert shown["faces"].to_dict() == groups  # "unknown" is a group of its own
        assert shown["classes"].to_dict() == {g: 1 for g in groups}
        want = report.groups(attribute).set_index("group")
        for col in ("approved_share", "predicted_share", "accuracy", "unknown_rate", "purity", "flags"):
            pd.testing.assert_series_equal(shown[col], want.loc[shown.index, col], check_names=False,
                                           check_dtype=False)
        assert "unknown" not in representation_table(at, label).index
        assert len(tab(at, label).get("plotly_chart")) >= 2  # quality metric(s) and representation
    assert groups_table(at, "Gender")["purity"].notna().all()  # two confirmed faces per class: measured
    # Nothing is below four fifths with equal reference shares and small samples...
    assert flagged_shown(at) == flagged_expected(report) == set()
    assert any("No group is below 80%" in s.value for s in at.success)
    # ...until every group counts (1 confirmed face is enough) and a stricter bar is set.
    at.number_input(key="bias_min_faces").set_value(1)
    at.number_input(key="bias_threshold").set_value(1.0)
    at.run()
    ok(at)
    report = expected_report(fixture_store, threshold=1.0, min_faces=1)
    assert flagged_shown(at) == flagged_expected(report)
    assert {m.label: m.value for m in at.metric}["Groups flagged"] == str(len(report.flagged()))


def test_reference_distribution_drives_representation(fixture_store, monkeypatch, tmp_path):
    at = open_page(monkeypatch, fixture_store.url, tmp_path)
    editor = table_with(tab(at, "Gender"), SHARE)
    assert editor.to_dict("list") == {"group": ["female", "male"], SHARE: [0.5, 0.5]}  # equal shares to start
    before = representation_table(at, "Gender")
    assert before["reference_share"].to_dict() == {"male": 0.5, "female": 0.5}
    # 80 : 20 as percentages: normalised, and female (half the classes) falls below 0.8 x 0.8.
    edit_reference(at, "gender", {0: {SHARE: 80}, 1: {SHARE: 20}})
    after = representation_table(at, "Gender")
    assert after["reference_share"].to_dict() == pytest.approx({"male": 0.2, "female": 0.8})
    assert after.loc["female", "representation_ratio"] == pytest.approx(0.5 / 0.8)
    assert "representation" in after.loc["female", "flags"] and "representation" not in after.loc["male", "flags"]
    report = expected_report(fixture_store, reference={"gender": {"female": 0.8, "male": 0.2},
                                                       "decade": {"1980s": 1.0}, "country": {"israel": 1.0}})
    assert flagged_shown(at) == flagged_expected(report) and ("gender", "female", "representation") in flagged_shown(at)
    assert any("**female** (representation)" in e.value for e in tab(at, "Gender").error)
    # A group the dataset lacks entirely is named.
    edit_reference(at, "gender", {}, added=[{"group": "Nonbinary", SHARE: 0.1}])
    assert any("absent from the dataset" in w.value and "nonbinary" in w.value for w in tab(at, "Gender").warning)


def test_invalid_reference_is_refused_with_a_clear_error(fixture_store, monkeypatch, tmp_path):
    at = open_page(monkeypatch, fixture_store.url, tmp_path)
    for edited, message in [({0: {SHARE: -0.5}}, "non-negative"), ({0: {SHARE: 0}, 1: {SHARE: 0}}, "sum to 0"),
                            ({1: {"group": "Female"}}, "listed twice")]:
        edit_reference(at, "gender", edited)
        errors = [e.value for e in tab(at, "Gender").error]
        assert any(e.startswith("Invalid reference for gender") and message in e for e in errors), errors
        assert representation_table(at, "Gender")["reference_share"].isna().all()  # no reference until fixed
        assert representation_table(at, "Country")["reference_share"].notna().all()  # the others still apply
    # Reset: equal shares again, and the edits are gone.
    at.button(key="bias_reference_reset_gender").click().run()
    ok(at)
    assert not tab(at, "Gender").error
    assert representation_table(at, "Gender")["reference_share"].to_dict() == {"male": 0.5, "female": 0.5}


def test_csv_and_html_downloads_and_saved_reports(fixture_store, monkeypatch, tmp_path, downloads):
    at = open_page(monkeypatch, fixture_store.url, tmp_path)
    edit_reference(at, "gender", {0: {SHARE: 0.8}, 1: {SHARE: 0.2}})
    buttons = {b.key: b for b in at.get("download_button")}
    assert set(buttons) == {"bias_download_csv", "bias_download_html"}

    def served(key: str) -> bytes:
        file_id = Path(buttons[key].proto.url).stem
        return downloads[-1].get_file(file_id).content

    report = expected_report(fixture_store, reference={"gender": {"female": 0.8, "male": 0.2},
                                                       "decade": {"1980s": 1.0}, "country": {"israel": 1.0}})
    csv = pd.read_csv(io.BytesIO(served("bias_download_csv")), keep_default_na=False, na_values=[""])
    assert list(csv.columns) == list(report.table.columns)
    assert set(zip(csv["attribute"], csv["group"])) == set(zip(report.table["attribute"], report.table["group"]))
    assert {"male", "female", "1980s", "israel", "unknown"} <= set(csv["group"])
    female = csv[(csv["attribute"] == "gender") & (csv["group"] == "female")].iloc[0]
    assert female["reference_share"] == pytest.approx(0.8) and bool(female["below_four_fifths"])
    html = served("bias_download_html").decode()
    assert "<h1>giflens bias audit</h1>" in html and "Flagged groups" in html
    assert all(f"<h2>{a}</h2>" in html for a in ("gender", "decade", "country"))
    assert all(g in html for g in ("female", "male", "1980s", "israel", "representation"))
    assert len(html) > 1_000_000  # plotly.js inlined: the report opens offline
    at.toggle(key="bias_html_offline").set_value(False).run()
    buttons = {b.key: b for b in at.get("download_button")}
    assert 'src="https://cdn.plot.ly' in served("bias_download_html").decode()
    # Writing on the server needs an editor (downloads do not); then saved into <data folder>/reports/
    # under a timestamped name, and a second save never overwrites.
    at.session_state["editor"] = ""
    at.button(key="bias_save").click().run()
    assert any("An editor name is required" in e.value for e in at.error) and not (tmp_path / "reports").exists()
    at.session_state["editor"] = "ann"
    at.button(key="bias_save").click().run()
    ok(at)
    at.button(key="bias_save").click().run()
    saved = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert len(saved) == 4 and {Path(n).suffix for n in saved} == {".csv", ".html"}
    assert all(n.startswith("bias-audit-2") for n in saved)
    assert any("Saved" in s.value and "reports" in s.value for s in at.success)
    back = pd.read_csv(tmp_path / "reports" / saved[0], keep_default_na=False, na_values=[""])
    assert list(back.columns) == list(report.table.columns)


def test_real_attribute_file_with_many_unknowns(lfw_store, monkeypatch, tmp_path):
    """lfw-people.csv names both fixture people but leaves their gender empty (kept as it was),
    adds their ethnicity, and brings 421 roster classes without faces, 60% without gender."""
    at = open_page(monkeypatch, lfw_store.url, tmp_path)
    assert [t.label for t in at.tabs] == ["Gender", "Ethnicity", "Birth decade", "Country"]
    assert any("421 classes without any face are left out" in c.value for c in at.caption)
    assert groups_table(at, "Ethnicity")["classes"].to_dict() == {"caucasian": 1, "african": 1}
    assert flagged_shown(at) == flagged_expected(expected_report(lfw_store))
    # The whole catalog: the roster's missing genders are the largest group, shown as "unknown".
    at.toggle(key="bias_with_faces").set_value(False).run()
    ok(at)
    people = pd.read_csv(SHARED / "lfw-people.csv", keep_default_na=False, na_values=[""])
    gender = groups_table(at, "Gender")
    assert gender.loc["unknown", "classes"] == people["gender"].isna().sum() - 2 == 251  # the fixture two have one
    assert gender.loc["female", "classes"] == (people["gender"] == "female").sum() + 1  # + Serena (fixture)
    assert gender.loc["male", "classes"] == (people["gender"] == "male").sum() + 1  # + Ariel
    assert gender.index[-1] == "unknown"
    assert any("have no gender" in c.value for c in tab(at, "Gender").caption)
    report = expected_report(lfw_store, with_faces=False)
    assert flagged_shown(at) == flagged_expected(report) and len(report.flagged()) > 0
    assert {m.label: m.value for m in at.metric}["Classes"] == str(len(classes_frame(lfw_store.store)))


def test_empty_store_and_store_without_attributes(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_store(url)
    at = open_page(monkeypatch, url, tmp_path)
    assert any("No classes in the store yet" in i.value for i in at.info) and not at.tabs and not at.error
    add_class(open_store(url), "Nobody Known", "ann")
    at.run()
    ok(at)
    assert any("has a demographic attribute" in i.value for i in at.info) and not at.tabs
    assert not at.get("download_button")


def test_a_small_sample_reference_is_said(fixture_store, monkeypatch, tmp_path):
    """Two confirmed faces per class, five needed: no group qualifies, so the best of the small
    groups is the reference, and the page says so (overview and tab), in the report's words."""
    at = open_page(monkeypatch, fixture_store.url, tmp_path)
    report = expected_report(fixture_store)
    assert small_sample_references(report.table)["gender"] == ["accuracy", "recognised_rate"]
    note = report.summary["small-sample references"]
    assert "no group with a value has 5 confirmed faces" in note
    assert any(w.value == plain(f"Small-sample references: {note}.") for w in at.main.warning), \
        [w.value for w in at.warning]
    said = [w.value for w in tab(at, "Gender").warning]
    assert any("No group with a value has 5 confirmed faces" in w and "accuracy and recognised rate is itself a "
               "small sample" in w for w in said), said
    assert groups_table(at, "Gender")["small_sample"].all()
    assert flagged_shown(at) == flagged_expected(report)
    # one confirmed face is enough: every group qualifies and nothing is said
    at.number_input(key="bias_min_faces").set_value(1)
    at.run()
    ok(at)
    assert not [w.value for w in at.warning if "small sample" in w.value]
    assert expected_report(fixture_store, min_faces=1).summary["small-sample references"] == "none"


def test_a_reference_group_absent_from_the_data_is_flagged_and_names_are_shown_as_typed(fixture_store, monkeypatch,
                                                                                         tmp_path, downloads):
    at = open_page(monkeypatch, fixture_store.url, tmp_path)
    odd = "**x** [y](z)"  # a group name that markdown would make bold text and a link
    edit_reference(at, "gender", {}, added=[{"group": "Nonbinary", SHARE: 0.1}, {"group": odd, SHARE: 0.1}])
    rows = representation_table(at, "Gender")
    assert set(rows.index) == {"male", "female", "nonbinary", odd}
    for group in ("nonbinary", odd):
        assert rows.loc[group, "representation_ratio"] == 0 and rows.loc[group, "share_of_known"] == 0
        assert rows.loc[group, "flags"] == "representation" and rows.loc[group, "classes"] == 0
        assert rows.loc[group, "reference_share"] == pytest.approx(0.1 / 1.2)
    groups = groups_table(at, "Gender")
    assert groups.loc["nonbinary", ["accuracy", "unknown_rate", "purity", "approved_share"]].isna().all()
    reference = {"gender": {"female": 0.5, "male": 0.5, "nonbinary": 0.1, odd: 0.1},
                 "decade": {"1980s": 1.0}, "country": {"israel": 1.0}}
    report = expected_report(fixture_store, reference=reference)
    assert {("gender", "nonbinary", "representation"), ("gender", odd, "representation")} <= flagged_shown(at)
    assert flagged_shown(at) == flagged_expected(report)
    assert {m.label: m.value for m in at.metric}["Groups flagged"] == str(len(report.flagged()))
    errors = [e.value for e in tab(at, "Gender").error]
    escaped = plain(odd)
    assert escaped != odd and any(f"**{escaped}** (representation)" in e for e in errors), errors
    assert not any(f"**{odd}**" in e for e in errors)  # never as markdown
    assert any("**nonbinary** (representation)" in e for e in errors)
    warned = [w.value for w in tab(at, "Gender").warning if "absent from the dataset" in w.value]
    assert len(warned) == 1 and escaped in warned[0] and "nonbinary" in warned[0] and "flagged" in warned[0]
    # the downloads carry the rows
    buttons = {b.key: b for b in at.get("download_button")}
    csv = pd.read_csv(io.BytesIO(downloads[-1].get_file(Path(buttons["bias_download_csv"].proto.url).stem).content),
                      keep_default_na=False, na_values=[""])
    absent = csv[(csv["attribute"] == "gender") & csv["group"].isin(["nonbinary", odd])]
    assert len(absent) == 2 and (absent["representation_ratio"] == 0).all() and absent["below_four_fifths"].all()
