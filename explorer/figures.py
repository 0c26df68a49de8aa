"""Plotly figure builders for the explorer: DataFrame in, `plotly.graph_objects.Figure` out.

No Streamlit here: pages hand these figures to `st.plotly_chart` and read selections back with
`selected_ids`. What shapes the code is the browser payload at 50,000 points:
- coordinates go out as float32 typed arrays (plotly >= 6 encodes numpy arrays as base64
  `bdata`, 4 bytes per float32 instead of ~18 characters per JSON float64);
- each point carries only its id in `customdata` (an integer typed array for database ids);
  the class name is the trace name, shown with `%{fullData.name}` in the hovertemplate,
  instead of being repeated in a per-point text array. Hover columns a page asks for ride along
  in `customdata`, but never the column the traces are named (or coloured) by, and floats rounded
  to the 3 decimals the hover shows: at 20,000 faces that took Explore's 3D figure from 2.2 MB
  to 1.1 MB (class names with accents or emoji cost ~40 bytes a point as JSON escapes);
- one trace per shown class (top N by size, the rest folded into "other") keeps the legend
  usable and lets an editor toggle classes.
Colours are stable: a class gets the same colour in every figure and every session (hashed
into a fixed palette, collisions probed in name order), so editors can learn them.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

__all__ = [
    "OTHER",
    "UNKNOWN",
    "audit_bars",
    "category_colors",
    "cluster_review",
    "payload_bytes",
    "representation_bars",
    "scatter_2d",
    "scatter_3d",
    "selected_ids",
]

OTHER = "other"
UNKNOWN = "unknown"
# Class colours that cannot be mistaken for one another or for the greys below. Plotly's Dark24 + Light24
# held near-twins (#FB0D0D / #FD3216 both read as the same red) and greyish blues next to the
# "unlabeled" grey. This is Dark24, Light24 and Alphabet (plotly.colors.qualitative) filtered in that order:
# an entry is kept when its CIE Lab chroma is >= 30 (a hue, never a grey, near-black or near-white) and it is
# >= 10 CIEDE2000 from every entry kept before it. Spelled out so a plotly upgrade cannot recolour classes;
# tests/test_ui_colours_classes_voting.py checks both rules.
PALETTE: tuple[str, ...] = (
    "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#B68100", "#750D86", "#EB663B",
    "#511CFB", "#00A08B", "#6C7C32", "#862A16", "#A777F1", "#620042", "#1616A7", "#DA60CA",
    "#6C4516", "#0D2A63", "#AF0038", "#00FE35", "#6A76FC", "#0DF9FF", "#F6F926", "#FF9616",
    "#EEA6FB", "#00B5F7", "#22FFA7", "#E3EE9E", "#86CE00", "#E48F72", "#85660D", "#1C8356",
    "#325A9B", "#F8A19F", "#2ED9FF", "#B10DA1", "#B00068",
)
# Greys for "no class": points nobody has labelled must not look like one more celebrity.
# "rejected" and "marked unknown" are labeling.queries.TURNED_DOWN (figures stay free of the store).
FIXED_COLORS = {OTHER: "#c8c8c8", UNKNOWN: "#7f7f7f", "unlabeled": "#b4b4b4", "untagged": "#b4b4b4",
                "rejected": "#9a9a9a", "marked unknown": "#7f7f7f"}
FLAG_COLOR = "#d62728"
OK_COLOR = "#1f77b4"
TEMPLATE = "plotly_white"


# -- colours -----------------------------------------------------------------------------
def category_colors(categories: Iterable[Any], palette: Sequence[str] = PALETTE) -> dict[str, str]:
    """A colour per category that depends on its name, not on its rank or on the other classes
    (as long as no two shown classes hash to the same slot; then the later name in sorted
    order takes the next free slot, so a given set of shown classes always gets the same colours).
    Every PALETTE entry is well apart from every other, so the next free slot is never a near-twin
    of a colour already shown. "other", "unknown", "unlabeled", "untagged" and a turned-down
    prediction are always greys."""
    out: dict[str, str] = {}
    used: set[int] = set()
    for name in sorted({str(c) for c in categories}):
        if name in FIXED_COLORS:
            out[name] = FIXED_COLORS[name]
            continue
        slot = int.from_bytes(hashlib.md5(name.encode()).digest()[:4], "big") % len(palette)
        for step in range(len(palette)):
            probe = (slot + step) % len(palette)
            if probe not in used:
                slot = probe
                break
        used.add(slot)
        out[name] = palette[slot]
    return out


# -- shared pieces -----------------------------------------------------------------------
def _check_columns(df: pd.DataFrame, columns: Iterable[str | None]) -> None:
    missing = [c for c in columns if c is not None and c not in df.columns]
    if missing:
        raise KeyError(f"columns {missing} are not in the DataFrame (has {list(df.columns)})")


def _customdata(df: pd.DataFrame, id_col: str, hover_cols: Sequence[str]) -> np.ndarray:
    """Id first, then the hover columns; integer ids as a typed array, not JSON numbers."""
    ids = df[id_col].to_numpy()
    if not hover_cols:
        if ids.dtype.kind in "iu":
            lo, hi = (ids.min(), ids.max()) if len(ids) else (0, 0)
            return ids.astype(np.int32 if np.iinfo(np.int32).min <= lo and hi <= np.iinfo(np.int32).max else np.float64)
        return ids.astype(object)
    cols = [df[id_col]] + [df[c] for c in hover_cols]
    if all(pd.api.types.is_numeric_dtype(c) for c in cols):
        return np.column_stack([c.to_numpy(np.float64) for c in cols])
    # as JSON: a float sent with 17 digits costs 18 characters a point, the hover shows 3 decimals
    return np.column_stack([(c.round(3) if pd.api.types.is_float_dtype(c) else c).to_numpy(object) for c in cols])


def _hovertemplate(first_line: str, id_col: str, hover_cols: Sequence[str], extra: str = "",
                   float_cols: Sequence[str] = ()) -> str:
    lines = [first_line, f"{id_col}: %{{customdata{'[0]' if hover_cols else ''}}}"]
    lines += [f"{c}: %{{customdata[{i + 1}]{':.3f' if c in float_cols else ''}}}" for i, c in enumerate(hover_cols)]
    if extra:
        lines.append(extra)
    return "<br>".join(lines) + "<extra></extra>"


def _coords(df: pd.DataFrame, cols: Sequence[str]) -> list[np.ndarray]:
    return [df[c].to_numpy(np.float32) for c in cols]


def _categories(values: pd.Series, max_classes: int) -> tuple[pd.Series, list[str]]:
    """Labels with the classes outside the top max_classes (by size, then name) folded into
    "other"; returns the folded labels and the legend order (largest first, "other" last)."""
    labels = values.astype(object).where(values.notna(), UNKNOWN).astype(str)
    labels = labels.where(labels != "", UNKNOWN)
    counts = labels.value_counts()
    order = sorted(counts.index, key=lambda c: (-counts[c], c))
    shown = [c for c in order if c != OTHER][:max_classes]
    folded = labels.where(labels.isin(shown), OTHER)
    legend = shown + ([OTHER] if (folded == OTHER).any() else [])
    return folded, legend


def _is_continuous(values: pd.Series, color_kind: str) -> bool:
    if color_kind not in ("auto", "categorical", "continuous"):
        raise ValueError(f"color_kind must be auto, categorical or continuous, got {color_kind!r}")
    if color_kind != "auto":
        return color_kind == "continuous"
    return pd.api.types.is_float_dtype(values)


def _point_traces(df: pd.DataFrame, trace_cls: type, coord_cols: Sequence[str], coord_names: Sequence[str],
                  color_by: str | None, id_col: str, hover_cols: Sequence[str], max_classes: int,
                  color_kind: str, marker: dict[str, Any], colorscale: str, cmin: float | None,
                  cmax: float | None) -> list[Any]:
    traces: list[Any] = []
    float_cols = [c for c in hover_cols if pd.api.types.is_float_dtype(df[c])]

    def make(part: pd.DataFrame, name: str, hover_first: str, marker_extra: dict[str, Any], *, named: bool = True,
             **kw: Any) -> Any:
        # named: the trace's name (or colour) already says the point's color_by value, so it is not sent per point
        cols = [c for c in hover_cols if not (named and c == color_by)]
        xyz = dict(zip(coord_names, _coords(part, coord_cols)))
        return trace_cls(**xyz, mode="markers", name=name, customdata=_customdata(part, id_col, cols),
                         hovertemplate=_hovertemplate(hover_first, id_col, cols, kw.pop("extra", ""), float_cols),
                         marker={**marker, **marker_extra}, **kw)

    if color_by is None:
        return [make(df, "faces", "%{fullData.name}", {"color": OK_COLOR}, showlegend=False)]
    values = df[color_by]
    if _is_continuous(values, color_kind):
        v = pd.to_numeric(values, errors="coerce")
        has = v.notna().to_numpy()
        lo = cmin if cmin is not None else (0.0 if v.min() >= 0 and v.max() <= 1 else float(v.min()))
        hi = cmax if cmax is not None else (1.0 if v.min() >= 0 and v.max() <= 1 else float(v.max()))
        part = df[has]
        traces.append(make(part, color_by, f"{color_by}: %{{marker.color:.3f}}",
                           {"color": v[has].to_numpy(np.float32), "colorscale": colorscale, "cmin": lo, "cmax": hi,
                            "colorbar": {"title": {"text": color_by}, "thickness": 14}, "showscale": True},
                           showlegend=False))
        if (~has).any():
            traces.append(make(df[~has], f"no {color_by}", "%{fullData.name}", {"color": FIXED_COLORS[UNKNOWN]}))
        return traces
    folded, legend = _categories(values, max_classes)
    colors = category_colors(legend)
    codes = folded.to_numpy()
    for name in legend:
        part = df[codes == name]
        # "other" folds many classes: its points keep their own (hover shows which class each is)
        traces.append(make(part, name, f"<b>%{{fullData.name}}</b> ({color_by})", {"color": colors[name]},
                           named=name != OTHER, legendgroup=name))
    return traces


def _highlight(df: pd.DataFrame, trace_cls: type, coord_cols: Sequence[str], coord_names: Sequence[str],
               id_col: str, highlight_ids: Iterable[Any] | None, size: float) -> list[Any]:
    if highlight_ids is None:
        return []
    part = df[df[id_col].isin(list(highlight_ids))]
    if part.empty:
        return []
    xyz = dict(zip(coord_names, _coords(part, coord_cols)))
    return [trace_cls(**xyz, mode="markers", name="highlighted", customdata=_customdata(part, id_col, ()),
                      hovertemplate=_hovertemplate("<b>highlighted</b>", id_col, ()),
                      marker={"size": size, "color": "rgba(0,0,0,0)", "line": {"color": "black", "width": 2}})]


# -- point clouds ------------------------------------------------------------------------
# Plotly's default eye (1.25, 1.25, 1.25) leaves the cube a third of the chart's width: closer and
# lower, the clusters fill it and the editor still sees every side.
EYE = {"x": 1.05, "y": 1.05, "z": 0.7}


def point_size(n_points: int) -> float:
    """3D dot size for n points: 5 at 100 or fewer, 4 at 1,000, 3 at 10,000, 2.5 from 30,000.

    Why: 50,000 large dots merge into one cloud, while a few hundred dots of the size that keeps
    50,000 apart are hard to see and to click.
    """
    return float(np.clip(7.0 - np.log10(max(n_points, 1)), 2.5, 5.0))


def scatter_3d(df: pd.DataFrame, color_by: str | None = None, *, id_col: str = "id", x: str = "x", y: str = "y",
               z: str = "z", hover_cols: Sequence[str] = (), max_classes: int = 20, color_kind: str = "auto",
               marker_size: float | None = None, opacity: float = 0.85, colorscale: str = "Viridis",
               cmin: float | None = None, cmax: float | None = None, highlight_ids: Iterable[Any] | None = None,
               title: str | None = None) -> go.Figure:
    """The Explore view: one WebGL 3D point per row, id in customdata.

    color_by: a categorical column (class, status, gender...: one legend entry per top
    max_classes value, the rest as "other") or a float column such as confidence (colour bar,
    0..1 when the values lie in it). highlight_ids get a black ring (suspects, a selection).
    `uirevision` keeps the camera where the editor left it when the page reruns. marker_size:
    None sizes the dots by how many there are (`point_size`).
    """
    _check_columns(df, [id_col, x, y, z, color_by, *hover_cols])
    marker_size = point_size(len(df)) if marker_size is None else marker_size
    marker = {"size": marker_size, "opacity": opacity, "line": {"width": 0}}
    traces = _point_traces(df, go.Scatter3d, (x, y, z), ("x", "y", "z"), color_by, id_col, hover_cols,
                           max_classes, color_kind, marker, colorscale, cmin, cmax)
    traces += _highlight(df, go.Scatter3d, (x, y, z), ("x", "y", "z"), id_col, highlight_ids, marker_size * 3)
    fig = go.Figure(traces)
    axis = {"showticklabels": False, "title": {"text": ""}, "showspikes": False}
    fig.update_layout(template=TEMPLATE, title=title, uirevision="explore-3d", margin={"l": 0, "r": 0, "t": 30 if title else 36, "b": 0},
                      scene={"xaxis": axis, "yaxis": axis, "zaxis": axis, "aspectmode": "data",
                             "camera": {"eye": EYE}},
                      legend={"itemsizing": "constant", "title": {"text": color_by or ""}},
                      hoverlabel={"namelength": -1})
    return fig


def scatter_2d(df: pd.DataFrame, color_by: str | None = None, *, id_col: str = "id", x: str = "x", y: str = "y",
               hover_cols: Sequence[str] = (), max_classes: int = 20, color_kind: str = "auto",
               marker_size: float = 4.0, opacity: float = 0.8, colorscale: str = "Viridis",
               cmin: float | None = None, cmax: float | None = None, highlight_ids: Iterable[Any] | None = None,
               title: str | None = None) -> go.Figure:
    """The Select view: WebGL 2D points with lasso (default) and box selection, for picking a
    group of faces to relabel. Read the picked ids with `selected_ids(event)`."""
    _check_columns(df, [id_col, x, y, color_by, *hover_cols])
    marker = {"size": marker_size, "opacity": opacity}
    traces = _point_traces(df, go.Scattergl, (x, y), ("x", "y"), color_by, id_col, hover_cols, max_classes,
                           color_kind, marker, colorscale, cmin, cmax)
    for t in traces:
        t.update(selected={"marker": {"opacity": 1.0}}, unselected={"marker": {"opacity": 0.12}})
    traces += _highlight(df, go.Scattergl, (x, y), ("x", "y"), id_col, highlight_ids, marker_size * 2.5)
    fig = go.Figure(traces)
    axis = {"showticklabels": False, "title": {"text": ""}, "zeroline": False, "showgrid": False}
    fig.update_layout(template=TEMPLATE, title=title, dragmode="lasso", clickmode="event+select",
                      uirevision="explore-2d", margin={"l": 0, "r": 0, "t": 30 if title else 36, "b": 0},
                      xaxis=axis, yaxis={**axis, "scaleanchor": "x", "scaleratio": 1},
                      legend={"itemsizing": "constant", "title": {"text": color_by or ""}},
                      modebar_add=["select2d", "lasso2d"], hoverlabel={"namelength": -1})
    return fig


def selected_ids(selection: Mapping[str, Any] | None) -> list[Any]:
    """Ids of the selected points, from a Plotly selection event or Streamlit's
    `st.plotly_chart(..., on_select="rerun")` return value (`{"selection": {"points": [...]}}`).
    The id is customdata[0] (or customdata itself when it is a scalar); order kept, no repeats."""
    if not selection:
        return []
    inner = selection.get("selection", selection)
    points = inner.get("points", []) if isinstance(inner, Mapping) else []
    out: list[Any] = []
    seen: set[Any] = set()
    for p in points:
        cd = p.get("customdata") if isinstance(p, Mapping) else None
        if cd is None:
            continue
        ident = cd[0] if isinstance(cd, (list, tuple)) else cd
        if isinstance(ident, float) and ident.is_integer():
            ident = int(ident)
        if ident not in seen:
            seen.add(ident)
            out.append(ident)
    return out


def payload_bytes(fig: go.Figure) -> int:
    """Bytes of the figure JSON: what Streamlit ships to the browser for this chart."""
    return len(fig.to_json().encode())


# -- bias audit --------------------------------------------------------------------------
def _attribute_rows(table: pd.DataFrame, attribute: str) -> pd.DataFrame:
    _check_columns(table, ["attribute", "group"])
    rows = table[table["attribute"] == attribute]
    if rows.empty:
        raise KeyError(f"no rows for attribute {attribute!r} (have {sorted(table['attribute'].unique())})")
    return rows


def _below(rows: pd.DataFrame, ratio_col: str, ratio: Any, threshold: float) -> np.ndarray:
    """Which bars are red: the audit table's own ratio column when it has one (rounded as its flags
    compare it, so a group the table does not flag is never drawn red by float noise in
    threshold x best), else the ratio computed here."""
    values = rows[ratio_col] if ratio_col in rows.columns else ratio
    return np.asarray(pd.Series(values, index=rows.index, dtype=float) < threshold)


def audit_bars(table: pd.DataFrame, attribute: str, metric: str = "accuracy", threshold: float = 0.8,
               title: str | None = None) -> go.Figure:
    """One bar per group of an attribute for a quality metric (accuracy, purity, recognised
    rate...), red where the group is below `threshold` (four fifths) of the best-served group,
    with that threshold drawn as a dashed line. Uses the audit table's `{metric}_reference`
    column (the best-served group's value) when present, else the best group shown."""
    rows = _attribute_rows(table, attribute)
    _check_columns(rows, [metric])
    rows = rows[rows[metric].notna()]
    ref_col = f"{metric}_reference"
    if ref_col in rows.columns and rows[ref_col].notna().any():
        best = float(rows[ref_col].dropna().iloc[0])
    else:
        best = float(rows[metric].max()) if len(rows) else np.nan
    line = threshold * best
    flagged = _below(rows, f"{metric}_ratio", rows[metric] / best if best > 0 else np.nan, threshold)
    faces = rows["faces"].to_numpy() if "faces" in rows.columns else np.full(len(rows), np.nan)
    fig = go.Figure(go.Bar(
        x=rows["group"].astype(str), y=rows[metric].astype(float), marker_color=np.where(flagged, FLAG_COLOR, OK_COLOR).tolist(),
        text=[f"{v:.2f}" for v in rows[metric]], textposition="outside", customdata=faces,
        hovertemplate=f"%{{x}}<br>{metric}: %{{y:.3f}}<br>faces: %{{customdata}}<extra></extra>", name=metric))
    if np.isfinite(line):
        fig.add_hline(y=line, line_dash="dash", line_color=FLAG_COLOR,
                      annotation_text=f"{threshold:.0%} of best ({best:.2f})", annotation_position="top right")
    fig.update_layout(template=TEMPLATE, title=title or f"{metric} by {attribute}", yaxis_title=metric,
                      xaxis_title=attribute, showlegend=False, margin={"t": 50})
    return fig


def representation_bars(table: pd.DataFrame, attribute: str, share: str = "share_of_known",
                        reference: str = "reference_share", threshold: float = 0.8, title: str | None = None) -> go.Figure:
    """Share of the dataset per group next to the reference share the editor set, with a tick at
    `threshold` x reference: groups whose bar ends below their tick are under-represented."""
    rows = _attribute_rows(table, attribute)
    _check_columns(rows, [share])
    rows = rows[rows[share].notna()]
    groups = rows["group"].astype(str)
    has_ref = reference in rows.columns and rows[reference].notna().any()
    ratio_col = "representation_ratio" if (share, reference) == ("share_of_known", "reference_share") else ""
    under = (_below(rows, ratio_col, rows[share] / rows[reference].where(rows[reference] > 0), threshold)
             if has_ref else np.zeros(len(rows), bool))
    fig = go.Figure(go.Bar(x=groups, y=rows[share], name="dataset", marker_color=np.where(under, FLAG_COLOR, OK_COLOR).tolist(),
                           hovertemplate=f"%{{x}}<br>{share}: %{{y:.3f}}<extra></extra>"))
    if has_ref:
        fig.add_bar(x=groups, y=rows[reference], name="reference", marker_color="#aaaaaa",
                    hovertemplate="%{x}<br>reference: %{y:.3f}<extra></extra>")
        fig.add_scatter(x=groups, y=threshold * rows[reference], mode="markers", name=f"{threshold:.0%} of reference",
                        marker={"symbol": "line-ew-open", "size": 28, "color": FLAG_COLOR, "line": {"width": 2}})
    fig.update_layout(template=TEMPLATE, barmode="group", title=title or f"representation by {attribute}",
                      yaxis_title="share", xaxis_title=attribute, yaxis_tickformat=".0%", margin={"t": 50})
    return fig


# -- cluster review ------------------------------------------------------------------------
def cluster_review(stats: pd.DataFrame, *, class_col: str = "class", size_col: str = "size",
                   purity_col: str = "purity", color_col: str | None = "spread", purity_line: float = 0.9,
                   title: str | None = None) -> go.Figure:
    """Purity against size, one point per class (output of `explorer.clusters.class_stats`):
    big impure classes (bottom right) are the most damaging to training and come first in
    review. Class name in customdata, so a click opens that class."""
    _check_columns(stats, [class_col, size_col, purity_col, color_col])
    rows = stats[stats[purity_col].notna()]
    marker: dict[str, Any] = {"size": 7, "opacity": 0.85}
    if color_col is not None:
        marker.update(color=rows[color_col].to_numpy(np.float32), colorscale="Viridis", showscale=True,
                      colorbar={"title": {"text": color_col}, "thickness": 14})
    fig = go.Figure(go.Scattergl(
        x=rows[size_col].to_numpy(), y=rows[purity_col].to_numpy(np.float32), mode="markers", marker=marker,
        customdata=rows[class_col].astype(str).to_numpy(object),
        hovertemplate=f"<b>%{{customdata}}</b><br>{size_col}: %{{x}}<br>{purity_col}: %{{y:.2f}}<extra></extra>"))
    fig.add_hline(y=purity_line, line_dash="dot", line_color="#888888")
    # Curated classes sit between 0.9 and 1: a 0-1 axis would press them into one line at the top.
    lowest = min(purity_line - 0.1, float(rows[purity_col].min()) if len(rows) else 0.0)
    floor = max(np.floor(lowest * 10) / 10, 0.0) - 0.02
    fig.update_layout(template=TEMPLATE, title=title or "class purity vs size", xaxis_title=f"{size_col} (log)",
                      yaxis_title=purity_col, xaxis_type="log", yaxis_range=[floor, 1.02], clickmode="event+select",
                      margin={"t": 50})
    ticks = log_ticks(rows[size_col].to_numpy(np.float64))
    fig.update_xaxes(tickvals=ticks, ticktext=[f"{t:,}" for t in ticks])
    return fig


def log_ticks(values: np.ndarray) -> list[int]:
    """1-2-5 ticks spanning the values, for a log axis of counts: Plotly's own log ticks label
    20 and 30 as small "2" and "3" after "10", which editors misread as two and three faces."""
    finite = values[np.isfinite(values) & (values > 0)]
    if not len(finite):
        return [1, 10, 100]
    low, high = float(finite.min()), float(finite.max())
    steps = [m * 10 ** e for e in range(int(np.floor(np.log10(low))), int(np.log10(high)) + 2) for m in (1, 2, 5)]
    inside = [t for t in steps if low / 2 < t < high * 2]
    return inside or [int(round(low))]
