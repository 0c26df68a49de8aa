"""Explore's class colours, the Classes page's class to edit, and the experts voting count.

1. Classes shown together get colours far apart (CIEDE2000 >= 10) and far from the greys of points that are
   no class: Halle Berry (#FB0D0D) and Jennifer Aniston (#FD3216) were one red, Arnold Schwarzenegger
   (#778AAE) read as the "unlabeled" grey.
2. The Classes page's "Class to edit" starts empty, so the edit tabs act on no class until the editor picks
   one (it started on the catalog's first class, "50 Cent", and a quick Rename renamed it); an Add refused
   because the class exists selects that class.
3. Experts voting counts the media it votes on, the number its summary reports: the bar read "68 / 68" beside
   "experts voting over 66 media" (it also counted fitting and writing as steps).
"""
from __future__ import annotations

import csv
import itertools
import random
import re

import numpy as np
import pandas as pd
import pytest
from conftest import open_app
from plotly.colors import hex_to_rgb
from skimage.color import deltaE_ciede2000, rgb2lab
from typer.testing import CliRunner

from explorer.figures import FIXED_COLORS, PALETTE, category_colors, scatter_3d
from labeling.auto_tagging import autotag
from labeling.classes import add_class
from labeling.cli import app as cli_app
from labeling.db import open_store
from test_app_pages import button, errors, go, no_exception
from test_queries import new_fixture_store

MIN_DELTA_E = 10.0  # CIEDE2000: two class colours an editor tells apart at a glance in a scatter
MIN_CHROMA = 30.0  # CIE Lab chroma: a hue, not a grey
SHOT_CLASSES = ["Halle Berry", "Jennifer Aniston", "Jennifer Lopez", "Serena Williams", "Arnold Schwarzenegger",
                "Al Gore"]  # the classes of the audit's Explore screenshot (e4_face59_relabeled.png)
GIPHY = "/work/shared/data/giphy-celebrities.csv"


def lab(color: str) -> np.ndarray:
    return rgb2lab(np.array([hex_to_rgb(color)], float)[None] / 255)[0, 0]


def delta_e(a: str, b: str) -> float:
    return float(deltaE_ciede2000(lab(a), lab(b)))


def too_close(colors: dict[str, str]) -> list[tuple[str, str, float]]:
    """Pairs of classes whose colours are near-twins, and classes whose colour is near a no-class grey."""
    pairs = [(a, b, delta_e(colors[a], colors[b])) for a, b in itertools.combinations(sorted(colors), 2)]
    greys = [(a, grey, delta_e(colors[a], color)) for a in colors for grey, color in FIXED_COLORS.items()]
    return [p for p in pairs + greys if p[2] < MIN_DELTA_E]


def giphy_names(n: int, seed: int = 21) -> list[str]:
    """n class names as the GIPHY list imports them ("50_Cent_[m.01vvyc_]" is "50 Cent")."""
    with open(GIPHY, newline="", encoding="utf-8") as f:
        labels = [row["Labels"] for row in csv.DictReader(f)]
    names = [re.sub(r"_\[[^\]]*\]$", "", label).replace("_", " ") for label in labels]
    return random.Random(seed).sample(names, n)


# -- 1. colours -------------------------------------------------------------------------------------------
def test_palette_has_no_near_twins_and_no_greys():
    twins = [(a, b) for a, b in itertools.combinations(PALETTE, 2) if delta_e(a, b) < MIN_DELTA_E]
    assert not twins, twins  # was: 11 pairs, #FB00D1 / #FE00CE, #B68100 / #B68E00 ...
    greyish = [c for c in PALETTE if np.hypot(*lab(c)[1:]) < MIN_CHROMA]
    assert not greyish, greyish  # was: #778AAE, #222A2A, #B2828D ...


def test_the_screenshots_classes_get_colours_apart_from_each_other_and_the_unlabeled_grey():
    points = list(enumerate(SHOT_CLASSES * 3 + ["unlabeled"] * 4))
    frame = pd.DataFrame({"id": [i for i, _ in points], "class": [n for _, n in points],
                          "x": np.arange(len(points), dtype=float), "y": 0.0, "z": 0.0})
    shown = {t.name: t.marker.color for t in scatter_3d(frame, "class").data}
    assert set(SHOT_CLASSES) <= set(shown) and shown["unlabeled"] == FIXED_COLORS["unlabeled"]
    classes = {n: c for n, c in shown.items() if n in SHOT_CLASSES}
    assert not too_close(classes), too_close(classes)  # was: Halle Berry / Jennifer Aniston 2.9


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_twenty_giphy_classes_get_colours_apart(seed):
    names = giphy_names(20, seed)
    colors = category_colors(names)
    assert not too_close(colors), too_close(colors)
    assert category_colors(list(reversed(names))) == colors  # the same classes shown: the same colours


# -- 2. the class to edit ---------------------------------------------------------------------------------
@pytest.fixture
def catalog_app(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'classes.db'}"
    store = open_store(url)
    ids = {name: add_class(store, name, "import")[0] for name in ["50 Cent", "Maria Shriver", "Zoe Saldana"]}
    at = open_app(monkeypatch, tmp_path / "data", url)
    at.session_state["editor"] = "ann"
    go(at, "classes")
    return at, ids


def test_class_to_edit_starts_empty_and_no_form_edits_the_first_class(catalog_app):
    at, ids = catalog_app
    assert at.selectbox(key="class_selected").value is None  # was: 50 Cent
    assert not [t for t in at.text_input if t.key.startswith("rename_name_")]  # no Rename form for any class
    assert not [b for b in at.button if b.label in ("Rename", "Save attributes", "Merge", "Split", "Set status")]
    at.selectbox(key="class_selected").set_value(ids["Zoe Saldana"]).run()
    no_exception(at)
    assert at.text_input(key=f"rename_name_{ids['Zoe Saldana']}").value == "Zoe Saldana"


def test_an_add_refused_as_existing_selects_that_class(catalog_app):
    at, ids = catalog_app
    at.text_input(key="add_class_name").set_value("maria  SHRIVER")  # the store's key: the same class
    button(at, "Add class").click().run()
    no_exception(at)
    maria = ids["Maria Shriver"]
    assert errors(at) == [f"Refused: a class named 'Maria Shriver' already exists (id {maria}, active): it is now "
                          "the class to edit."], errors(at)
    assert at.selectbox(key="class_selected").value == maria  # was: 50 Cent, and "Rename 50 Cent" below
    assert at.text_input(key=f"rename_name_{maria}").value == "Maria Shriver"
    assert not [t for t in at.text_input if t.key == f"rename_name_{ids['50 Cent']}"]


# -- 3. the experts voting count --------------------------------------------------------------------------
def test_autotag_counts_the_media_its_summary_reports(tmp_path_factory):
    fx = new_fixture_store(tmp_path_factory, "ui-voting-count")
    said: list[tuple[int, int]] = []
    result = autotag(fx.store, "bob", text=None, on_progress=lambda done, total: said.append((done, total)))
    assert result.media > 0 and f"experts voting over {result.media} media" in result.summary
    assert {total for _, total in said} == {result.media}, said  # was: media + 2
    assert said[0] == (0, result.media) and said[-1] == (result.media, result.media)
    assert [done for done, _ in said] == sorted(done for done, _ in said)


def test_cli_autotag_bar_counts_the_media_of_its_summary(tmp_path_factory):
    fx = new_fixture_store(tmp_path_factory, "ui-voting-cli")
    out = CliRunner().invoke(cli_app, ["autotag", "--text", "none", "--editor", "bob", "--database-url", fx.url,
                                       "--data-dir", str(fx.data_dir)])
    assert out.exit_code == 0, out.output
    media = int(re.search(r"\bmedia=(\d+)", out.output).group(1))
    counts = re.findall(r"^autotag\b[^\n]*?\s(\d+)/(\d+)\s", out.output, flags=re.M)
    assert counts, out.output
    assert {int(total) for _, total in counts} == {media}, out.output  # was: "autotag 68/68" beside media=66
