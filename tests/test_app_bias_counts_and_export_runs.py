"""App page details: bias counts, tag order and repeated exports, checked on the pure helpers behind it and driven headless with
streamlit.testing.v1.AppTest on the fixture store (real photos and a real GIF, see
test_queries.build_fixture_store):

- Export proposes a new folder for every run, so "Run export" twice in a session writes two exports
  instead of refusing the second, and a refusal is never shown beside the previous run's success;
- the Tags page lists GIFs and videos before the (many) photos, each group by file name;
- the Bias audit counts a class with several ethnicities the same way in its counts and its shares,
  says "1 class" (not "1 classes"), and shows the flags beside the group, not past the table's edge.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import test_app_decision_ticks_and_filters
from conftest import open_app
from explorer.bias_audit import audit_table, count_text, counted
from labeling.classes import set_class_attributes
from labeling.schema import Media
from test_app_bias import tab, table_with
from test_app_pages import button, errors, go, no_exception
from test_queries import GIF, SHARED, FixtureStore, new_fixture_store

BIAS_PAGE = "explorer/pages/bias.py"


@pytest.fixture(scope="module")
def fixture_store(tmp_path_factory) -> FixtureStore:
    """One fixture store for this module (its own SQLite file; the session's data folder and cache);
    `app` (test_app_decision_ticks_and_filters) opens a fresh app session on it. Module-wide: these tests do not share writes."""
    return new_fixture_store(tmp_path_factory, "polish-store")


app = test_app_decision_ticks_and_filters.app  # the fixture: a fresh app session (no editor) on this module's fixture_store


# -- bias audit: one counting rule for counts and shares (pure) ----------------------------------------
@pytest.fixture
def mixed() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Nine classes: five caucasian, two "latino;caucasian", one african, one without an ethnicity.
    c5 (mixed) is always misrecognised, two faces of c6 (mixed) still await review, one african
    face was declined by the model."""
    ethnicity = ["caucasian"] * 5 + ["Latino; caucasian", "latino;caucasian", "african", None]
    classes = pd.DataFrame({"class": [f"c{i}" for i in range(9)], "ethnicity": ethnicity, "gender": ["female"] * 9})
    rows = []
    for i, n in enumerate([2, 2, 2, 2, 2, 4, 4, 3, 1]):
        for j in range(n):
            status = "predicted" if i == 6 and j >= 2 else "approved"
            predicted = "Someone_Else" if i == 5 else "unknown" if (i, j) == (7, 0) else f"c{i}"
            rows.append((f"c{i}", status, predicted))
    faces = pd.DataFrame(rows, columns=["class", "status", "predicted"]).rename_axis("face_id").reset_index()
    return faces, classes


def test_multi_valued_classes_count_as_they_weigh_in_the_shares(mixed):
    faces, classes = mixed
    purity = {**{f"c{i}": 1.0 for i in range(9)}, "c5": 0.5}
    table = audit_table(faces, classes, ["ethnicity", "gender"], cluster_stats=purity,
                        reference={"ethnicity": {"caucasian": 0.5, "latino": 0.25, "african": 0.25}})
    eth = table[table["attribute"] == "ethnicity"].set_index("group")
    # The audit's example: "caucasian" was 7 classes (counted whole) beside a 75% share of the 8 known.
    assert eth.loc["caucasian", "classes"] == 6.0 and eth.loc["latino", "classes"] == 1.0
    assert eth.loc["caucasian", "share_of_known"] == pytest.approx(0.75) == 6.0 / 8
    # Counts add up to the classes and faces there are, and every share is its count over that total.
    assert eth["classes"].sum() == len(classes) and eth["faces"].sum() == len(faces)
    assert eth["class_share"].tolist() == pytest.approx((eth["classes"] / len(classes)).tolist())
    assert eth["face_share"].tolist() == pytest.approx((eth["faces"] / len(faces)).tolist())
    known = eth.drop(index="unknown")
    assert known["share_of_known"].tolist() == pytest.approx((known["classes"] / known["classes"].sum()).tolist())
    # Faces and confirmed faces follow the same weights (a mixed class's 4 faces are 2 in each group)...
    assert eth.loc["caucasian", "faces"] == 5 * 2 + 2 + 2 and eth.loc["latino", "faces"] == 4
    assert eth.loc["caucasian", "approved_faces"] == 10 + 2 + 1 and eth.loc["latino", "approved_faces"] == 3
    assert eth["approved_share"].tolist() == pytest.approx((eth["approved_faces"] / eth["faces"]).tolist())
    assert eth.loc["caucasian", "predicted_share"] == pytest.approx(1 / 14)
    # ...and so do the rates: ratios of the weighted counts.
    assert eth.loc["caucasian", "accuracy"] == pytest.approx((10 + 0 + 1) / 13)
    assert eth.loc["latino", "accuracy"] == pytest.approx(1 / 3)
    assert (eth.loc["african", "accuracy"], eth.loc["african", "unknown_rate"]) == pytest.approx((2 / 3, 1 / 3))
    assert eth.loc["caucasian", "purity"] == pytest.approx((5 * 1.0 + 0.5 * 0.5 + 0.5 * 1.0) / 6)
    assert eth.loc["latino", "purity"] == pytest.approx(0.75)
    assert eth.loc["latino", "small_sample"] and not eth.loc["caucasian", "small_sample"]
    # Representation is judged on the same shares: 1 of 8 known classes against an expected quarter.
    assert eth.loc["latino", "representation_ratio"] == pytest.approx(0.125 / 0.25)
    assert "representation" in eth.loc["latino", "flags"] and "representation" not in eth.loc["caucasian", "flags"]
    # A single-valued attribute keeps whole counts.
    gender = table[table["attribute"] == "gender"].set_index("group")
    assert (gender.loc["female", "classes"], gender.loc["female", "faces"]) == (9, 22)


def test_thirds_add_up_to_whole_classes():
    """Three classes of three ethnicities each: 1/3 + 1/3 + 1/3 must be exactly one class."""
    classes = pd.DataFrame({"class": ["a", "b", "c"], "ethnicity": ["x;y;z"] * 3})
    faces = pd.DataFrame({"face_id": range(3), "class": ["a", "b", "c"], "status": "approved",
                          "predicted": ["a", "b", "c"]})
    eth = audit_table(faces, classes, ["ethnicity"]).set_index("group")
    assert eth["classes"].tolist() == [1.0, 1.0, 1.0] and eth["faces"].tolist() == [1.0, 1.0, 1.0]
    assert counted(eth.loc["x", "classes"], "class", "classes") == "1 class"


def test_counts_read_as_numbers_and_words():
    assert [count_text(n) for n in (7, 7.0, 6.5, 1 / 3, 0, np.float64(251.0))] == ["7", "7", "6.5", "0.33", "0", "251"]
    assert count_text(float("nan")) == ""
    assert counted(1, "class", "classes") == "1 class"
    assert counted(1.0, "class", "classes") == "1 class"
    assert counted(2, "class", "classes") == "2 classes"
    assert counted(0, "class", "classes") == "0 classes"
    assert counted(0.5, "class", "classes") == "0.5 classes"  # a fraction takes the plural
    assert counted(1, "face") == "1 face" and counted(3, "face") == "3 faces"


# -- bias audit page: "1 class", flags beside the group --------------------------------------------
def test_bias_page_says_one_class_and_shows_the_flags_first(fixture_store, monkeypatch, tmp_path):
    at = open_app(monkeypatch, tmp_path, fixture_store.url)
    at.switch_page(BIAS_PAGE).run()
    no_exception(at)
    captions = [c.value for c in at.caption]
    # Ariel Sharon has no birth year and Serena Williams no country: one class of two each.
    assert any(c.startswith("1 class (50%) has no birth decade:") for c in captions), captions
    assert any(c.startswith("1 class (50%) has no country:") for c in captions), captions
    assert not any("1 classes" in c for c in captions)
    # Every table leads with the group and its flags, both pinned so no scrolling hides them. An 80 : 20
    # reference for female : male flags female (half the classes), so the flagged table shows too.
    at.session_state["bias_reference_gender"] = {"edited_rows": {0: {"expected share": 80}, 1: {"expected share": 20}},
                                                 "added_rows": [], "deleted_rows": []}
    at.run()
    no_exception(at)
    tables = [d for d in at.main.dataframe if "flags" in d.value.columns]
    groups = [d for d in tables if "approved_share" in d.value.columns]
    representation = [d for d in tables if "representation_ratio" in d.value.columns]
    flagged = [d for d in tables if "attribute" in d.value.columns]
    assert groups and representation and flagged, [list(d.value.columns) for d in tables]
    for d in groups + representation:
        assert list(d.value.columns[:2]) == ["group", "flags"]
    assert list(flagged[0].value.columns[:3]) == ["attribute", "group", "flags"] and len(flagged[0].value)
    for d in tables:
        config = json.loads(d.proto.columns)
        assert config["flags"].get("pinned") is True and config["group"].get("pinned") is True, config


def test_bias_page_counts_a_mixed_class_as_its_share(tmp_path_factory, tmp_path, monkeypatch):
    """Its own store: Ariel Sharon gets two ethnicities, Serena Williams one. The Ethnicity tab shows
    half a class in each of Ariel's groups, shares that are those counts over the two classes, and
    the caption says why; single-valued tabs keep whole counts and no such caption."""
    fx = new_fixture_store(tmp_path_factory, "polish-ethnicity")
    set_class_attributes(fx.store, fx.classes["Ariel Sharon"], "fixture", ethnicity="Caucasian;East Asian")
    set_class_attributes(fx.store, fx.classes["Serena Williams"], "fixture", ethnicity="african")
    at = open_app(monkeypatch, tmp_path, fx.url)
    at.switch_page(BIAS_PAGE).run()
    no_exception(at)
    ethnicity = table_with(tab(at, "Ethnicity"), "approved_share").set_index("group")
    assert ethnicity["classes"].to_dict() == {"african": 1.0, "caucasian": 0.5, "east asian": 0.5}
    assert ethnicity["class_share"].to_dict() == pytest.approx({"african": 0.5, "caucasian": 0.25, "east asian": 0.25})
    faces = ethnicity["faces"]
    assert faces["caucasian"] == faces["east asian"] and faces.sum() == table_with(
        tab(at, "Gender"), "approved_share")["faces"].sum()  # every face once, half of Ariel's in each group
    assert (ethnicity["face_share"] == faces / faces.sum()).all()
    assert any("1/k of a class" in c.value for c in tab(at, "Ethnicity").caption)
    assert not any("1/k of a class" in c.value for c in tab(at, "Gender").caption)


# -- tags page: GIFs and videos before photos --------------------------------------------------------
def test_tags_page_lists_gifs_and_videos_before_photos(tmp_path_factory, tmp_path, monkeypatch):
    """Its own store (rows are added to it): a GIF, a video and a photo named to sort apart from their
    ids and case. Only names and kinds matter to the order, so they are added as rows, not ingested."""
    fx = new_fixture_store(tmp_path_factory, "polish-tags")
    shutil.copy(SHARED / "gifs" / GIF, tmp_path / "Bbb.gif")
    added = Media(path=str(tmp_path / "Bbb.gif"), kind="gif", status="ok")
    with fx.store() as s, s.begin():
        s.add_all([Media(path=str(tmp_path / "zz-clip.mp4"), kind="video", status="ok"),
                   Media(path=str(tmp_path / "aaa.JPG"), kind="image", status="ok"), added,
                   Media(path=str(tmp_path / "0-failed.gif"), kind="gif", status="failed")])
    assert added.id > max(fx.media.values())  # the newest GIF, listed first by its name
    at = open_app(monkeypatch, fx.data_dir, fx.url)
    go(at, "tags")
    box = at.selectbox(key="tags_media")
    names = [label.split(" (id ")[0] for label in box.options]
    photos = sorted((n for n in fx.media if n.endswith(".jpg")), key=str.casefold)
    assert names == ["Bbb.gif", GIF, "zz-clip.mp4", "aaa.JPG", *photos]
    assert box.value == added.id  # the page opens on the first GIF, not on a photo
    assert ["Bbb.gif"] in [img.captions for img in at.image]
    box.set_value(fx.media[GIF]).run()
    no_exception(at)
    assert [GIF] in [img.captions for img in at.image]


# -- export: a new folder per run --------------------------------------------------------------------
def test_export_twice_in_a_session_writes_two_new_folders(app, fixture_store, tmp_path):
    app.session_state["editor"] = "ann"
    go(app, "export")
    exports = fixture_store.data_dir / "exports"
    written: list[Path] = []
    try:
        for run in range(2):
            proposed = Path(app.text_input(key="export_out_dir").value)
            assert proposed.parent == exports and proposed.name.startswith("export-") and not proposed.exists()
            assert proposed not in written
            button(app, "Run export").click().run()
            no_exception(app)
            assert not errors(app), (run, errors(app))
            assert (proposed / "manifest.json").is_file()
            written.append(proposed)
            done = [s.value for s in app.success if s.value.startswith("exported")]
            assert len(done) == 1 and str(proposed) in done[0], done
            # The form now proposes the next new folder, beside the result of this run.
            assert Path(app.text_input(key="export_out_dir").value) not in written
        assert json.loads((written[0] / "manifest.json").read_text())["counts"] == \
            json.loads((written[1] / "manifest.json").read_text())["counts"]

        # A folder the editor types is used and kept; running into it again is refused, and the
        # refusal stands alone: the earlier success (and its manifest) is no longer shown.
        typed = tmp_path / "my-export"
        app.text_input(key="export_out_dir").input(str(typed))
        button(app, "Run export").click().run()
        no_exception(app)
        assert not errors(app), errors(app)
        assert (typed / "manifest.json").is_file() and app.text_input(key="export_out_dir").value == str(typed)
        button(app, "Run export").click().run()
        no_exception(app)
        assert any("exists and is not empty" in e for e in errors(app)), errors(app)
        assert not [s.value for s in app.success if s.value.startswith("exported")]
        assert not app.json and "Manifest" not in [h.value for h in app.subheader]

        # "Replace" replaces it, once: the tick is cleared after the run, so the next run is refused again.
        app.checkbox(key="export_overwrite").check()
        button(app, "Run export").click().run()
        no_exception(app)
        assert not errors(app), errors(app)
        assert [s.value for s in app.success if s.value.startswith("exported")]
        assert app.checkbox(key="export_overwrite").value is False
        button(app, "Run export").click().run()
        assert any("exists and is not empty" in e for e in errors(app)), errors(app)
    finally:
        for folder in written:  # the data folder is the session's, shared with other tests
            shutil.rmtree(folder, ignore_errors=True)


def test_messages_show_names_as_typed_never_as_markup():
    """A tag or class name in a success or error banner is text: no bold, no link, no html; the
    punctuation of ordinary messages is left as it reads."""
    from labeling.pages.common import plain

    assert plain("add tag(s) '**huge** [click](https://x.y)' to 1 media") == \
        r"add tag(s) '\*\*huge\*\* [click\](https://x.y)' to 1 media"
    assert plain("<b>_x_</b> `y` ~z~ $w$ a|b") == r"\<b\>\_x\_\</b\> \`y\` \~z\~ \$w\$ a\|b"
    assert plain("tag ':red[alarm]' and :smile:") == r"tag '\:red[alarm]' and \:smile:"
    for ordinary in ("operation 7 (add_class) cannot be undone", "confidence must be in [0, 1], got 1.5"):
        assert plain(ordinary) == ordinary
