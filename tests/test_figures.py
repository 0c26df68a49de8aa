"""explorer.figures on real LFW face embeddings (PCA coordinates, so no UMAP compile here): one
point per row with its id, classes as legend traces (top N + other), confidence as a colour
bar, lasso selection read back to ids, a compact browser payload, and the audit/review charts."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from bench.lfw_faces import load_lfw_faces
from explorer.figures import (OTHER, audit_bars, category_colors, cluster_review, log_ticks, payload_bytes, representation_bars,
                              point_size, scatter_2d, scatter_3d, selected_ids)
from explorer.projection import pca_preview


@pytest.fixture(scope="module")
def frame(lfw_dir: Path) -> pd.DataFrame:
    """Every photo of the first 30 LFW people with PCA coordinates, int ids and a confidence."""
    f = load_lfw_faces(lfw_dir, max_people=30)
    c = pca_preview(f.vectors)
    ids = np.arange(len(c)) * 7 + 1000  # not the row numbers, so a mix-up would show
    conf = (f.vectors @ f.vectors.mean(axis=0)).astype(np.float64)  # any real per-face float
    conf = (conf - conf.min()) / (conf.max() - conf.min())
    return pd.DataFrame({"id": ids, "x": c[:, 0], "y": c[:, 1], "z": c[:, 2], "class": f.names, "confidence": conf,
                         "path": f.paths})


def decode(value):
    """A JSON array, or plotly's base64 typed array {"dtype", "bdata"[, "shape"]} as the browser reads it."""
    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if "shape" in value:
            arr = arr.reshape([int(s) for s in str(value["shape"]).split(",")])
        return arr
    return np.asarray(value, dtype=object)


def points(fig: go.Figure, skip: tuple[str, ...] = ("highlighted",)) -> pd.DataFrame:
    """Every plotted point back as (trace name, id, x, y[, z]), read from the JSON sent to the browser."""
    rows = []
    for t in json.loads(fig.to_json())["data"]:
        if t.get("name") in skip:
            continue
        cd = decode(t["customdata"])
        part = pd.DataFrame({"trace": t["name"], "id": cd[:, 0] if cd.ndim == 2 else cd,
                             "x": decode(t["x"]).astype(float), "y": decode(t["y"]).astype(float)})
        if "z" in t:
            part["z"] = decode(t["z"]).astype(float)
        rows.append(part)
    return pd.concat(rows, ignore_index=True)


def test_scatter_3d_has_one_point_per_row_with_its_id(frame):
    fig = scatter_3d(frame, "class")
    assert all(isinstance(t, go.Scatter3d) for t in fig.data)
    got = points(fig)
    assert len(got) == len(frame) and got["id"].is_unique
    merged = got.astype({"id": np.int64}).merge(frame, on="id", suffixes=("", "_df"))
    assert len(merged) == len(frame)
    for axis in "xyz":
        np.testing.assert_allclose(merged[axis], merged[f"{axis}_df"], rtol=1e-6)
    # Each point sits in its own class's trace (30 people <= 20 shown + "other").
    shown = merged[merged["trace"] != OTHER]
    assert (shown["trace"] == shown["class"]).all()
    # Hover comes from the template (class = trace name, id = customdata), no per-point text.
    for t in fig.data:
        assert t.text is None and t.hovertext is None
        assert "%{fullData.name}" in t.hovertemplate and "%{customdata}" in t.hovertemplate
    assert fig.layout.legend.itemsizing == "constant" and fig.layout.uirevision


def test_dots_shrink_as_points_grow_so_few_stay_visible_and_many_stay_apart(frame):
    sizes = [point_size(n) for n in (1, 100, 1_000, 10_000, 50_000, 1_000_000)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 5.0 and sizes[-1] == 2.5
    assert sizes[2] == pytest.approx(4.0)
    few, many = scatter_3d(frame.head(50), "class"), scatter_3d(frame, "class")
    assert {t.marker.size for t in few.data} == {5.0}
    assert {t.marker.size for t in many.data} == {point_size(len(frame))} and point_size(len(frame)) < 5.0
    assert {t.marker.size for t in scatter_3d(frame, "class", marker_size=2.0).data} == {2.0}


def test_many_classes_fold_into_top_n_and_other(frame):
    fig = scatter_3d(frame, "class", max_classes=5)
    names = [t.name for t in fig.data]
    counts = frame["class"].value_counts()
    top5 = sorted(counts.index, key=lambda c: (-counts[c], c))[:5]
    assert names == top5 + [OTHER]
    sizes = {t.name: len(t.x) for t in fig.data}
    assert sizes["Ariel_Sharon"] == 77 and sizes[OTHER] == len(frame) - counts[top5].sum()
    assert fig.data[-1].marker.color == "#c8c8c8"


def test_class_colours_are_stable_and_distinct(frame):
    a = {t.name: t.marker.color for t in scatter_3d(frame, "class").data}
    shuffled = frame.sample(frac=1.0, random_state=3)
    b = {t.name: t.marker.color for t in scatter_3d(shuffled, "class").data}
    assert a == b  # row order does not change colours
    shown = [c for n, c in a.items() if n != OTHER]
    assert len(set(shown)) == len(shown)  # no two shown classes share a colour
    # A class keeps its colour when classes that do not collide with it come and go.
    alone = category_colors(["Ariel_Sharon"])["Ariel_Sharon"]
    assert category_colors(["Ariel_Sharon", OTHER, "unknown"])["Ariel_Sharon"] == alone
    assert a["Ariel_Sharon"] == alone or any(category_colors([n])[n] == alone for n in a if n < "Ariel_Sharon")


def test_confidence_is_a_colour_bar(frame):
    with_gap = frame.copy()
    with_gap.loc[with_gap.index[:4], "confidence"] = np.nan
    fig = scatter_3d(with_gap, "confidence", hover_cols=["path"])
    main, missing = fig.data
    assert main.marker.showscale and main.marker.cmin == 0.0 and main.marker.cmax == 1.0
    assert len(main.x) == len(frame) - 4 and len(missing.x) == 4
    np.testing.assert_allclose(np.asarray(main.marker.color), frame["confidence"].iloc[4:].to_numpy(), rtol=1e-6)
    assert "%{customdata[1]}" in main.hovertemplate and "%{customdata[0]}" in main.hovertemplate
    assert list(np.asarray(main.customdata)[0]) == [frame["id"].iloc[4], frame["path"].iloc[4]]


def test_scatter_2d_lasso_selection_gives_back_ids(frame):
    fig = scatter_2d(frame, "class", hover_cols=["confidence"], highlight_ids=frame["id"].iloc[:3])
    assert all(isinstance(t, go.Scattergl) for t in fig.data)
    assert fig.layout.dragmode == "lasso" and "select" in fig.layout.clickmode
    assert fig.data[-1].name == "highlighted" and len(fig.data[-1].x) == 3
    got = points(fig)
    assert len(got) == len(frame) and set(got["id"].astype(np.int64)) == set(frame["id"])
    assert "confidence: %{customdata[1]:.3f}" in fig.data[0].hovertemplate
    # What Streamlit's on_select returns: the points inside a lasso around the right half.
    inside = got[got["x"] > got["x"].median()]
    event = {"selection": {"points": [{"curve_number": 0, "point_index": 0, "customdata": [float(i), 0.5]}
                                      for i in inside["id"]]}}
    assert selected_ids(event) == [int(i) for i in inside["id"]]
    assert selected_ids({"points": [{"customdata": "a/b.jpg"}, {"customdata": "a/b.jpg"}]}) == ["a/b.jpg"]
    assert selected_ids(None) == [] and selected_ids({"selection": {"points": []}}) == []


def test_payload_is_compact(frame):
    import plotly.express as px

    big = pd.concat([frame.assign(id=frame["id"] + k * 100_000) for k in range(10)], ignore_index=True)  # 4,580 rows
    fig = scatter_3d(big, "class")
    payload = payload_bytes(fig)
    text = fig.to_json()
    assert '"dtype":"f4"' in text and '"bdata"' in text  # float32 typed arrays, not JSON numbers
    assert '"dtype":"i4"' in text                        # integer ids, not strings
    naive = payload_bytes(px.scatter_3d(big, x="x", y="y", z="z", color="class", hover_name="class",
                                        hover_data=["id"]))
    assert payload < naive, (payload, naive)
    # 3 float32 + 1 int32 per point, base64: ~21 bytes; allow the trace and layout overhead.
    assert payload < 25 * len(big) + 40_000, payload / len(big)


def test_missing_columns_are_named(frame):
    with pytest.raises(KeyError, match="gender"):
        scatter_3d(frame, "gender")
    with pytest.raises(KeyError, match="'z'"):
        scatter_3d(frame.drop(columns=["z"]), "class")


# -- audit and review charts --------------------------------------------------------------
AUDIT = pd.DataFrame({
    "attribute": ["gender"] * 3,
    "group": ["male", "female", "unknown"],
    "faces": [200, 80, 40],
    "accuracy": [0.95, 0.70, 0.90],
    "accuracy_reference": [0.95] * 3,
    "share_of_known": [0.7, 0.3, np.nan],
    "reference_share": [0.5, 0.5, np.nan],
})


def test_audit_bars_mark_groups_below_four_fifths():
    fig = audit_bars(AUDIT, "gender", "accuracy")
    bar = fig.data[0]
    assert list(bar.x) == ["male", "female", "unknown"]
    colors = dict(zip(bar.x, bar.marker.color))
    assert colors["female"] != colors["male"] == colors["unknown"]  # 0.70 < 0.8 * 0.95 = 0.76
    line = [s for s in fig.layout.shapes if s.type == "line"][0]
    assert line.y0 == pytest.approx(0.76)
    with pytest.raises(KeyError, match="country"):
        audit_bars(AUDIT, "country")


def test_representation_bars_compare_with_the_reference():
    fig = representation_bars(AUDIT, "gender")
    dataset, reference, ticks = fig.data
    assert list(dataset.x) == ["male", "female"] and list(reference.y) == [0.5, 0.5]
    assert list(ticks.y) == pytest.approx([0.4, 0.4])
    colors = dict(zip(dataset.x, dataset.marker.color))
    assert colors["female"] != colors["male"]  # 0.3 < 0.8 * 0.5


def test_cluster_review_is_one_point_per_class():
    stats = pd.DataFrame({"class": ["a", "b", "c", "d"], "size": [5, 50, 12, 1], "purity": [1.0, 0.6, 0.9, np.nan],
                          "spread": [0.02, 0.05, 0.03, 0.0]})
    fig = cluster_review(stats)
    t = fig.data[0]
    assert isinstance(t, go.Scattergl) and list(t.customdata) == ["a", "b", "c"]  # singleton purity unknown
    assert list(t.x) == [5, 50, 12] and fig.layout.xaxis.type == "log"
    assert fig.layout.yaxis.range == pytest.approx((0.58, 1.02))  # the lowest purity (0.6) stays in view
    clean = cluster_review(stats.assign(purity=[1.0, 0.95, 0.92, np.nan]))
    assert clean.layout.yaxis.range[0] == pytest.approx(0.78)  # not 0: the spread between 0.92 and 1 shows
    # sizes 5-50 read as whole counts on a 1-2-5 scale, never a bare "2" meaning 20
    assert list(fig.layout.xaxis.tickvals) == [5, 10, 20, 50] and list(fig.layout.xaxis.ticktext) == ["5", "10", "20", "50"]


def test_log_ticks_span_the_counts_on_a_1_2_5_scale():
    assert log_ticks(np.array([8.0, 560.0])) == [5, 10, 20, 50, 100, 200, 500, 1000]
    assert log_ticks(np.array([3.0])) == [2, 5]
    assert log_ticks(np.array([np.nan, 0.0])) == [1, 10, 100]
