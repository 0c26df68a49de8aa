"""Clicks on a Plotly 3D chart, sent back to Python.

Streamlit's `st.plotly_chart(..., on_select="rerun")` listens to Plotly's selection events,
and plotly.js has no selection in 3D: a click on a 3D point never reached Python (checked in
Chromium: the selection stays empty). Plotly does emit `plotly_click` for 3D points, so this
JS-only `st.components.v2` component finds the chart by its widget key and forwards each
click as a trigger value shaped like a selection event, which `explorer.figures.selected_ids`
reads like any other.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

_JS = """
export default function (component) {
  const { setTriggerValue, data } = component;
  const attach = () => {
    const gd = document.querySelector(`.st-key-${data.chart_key} .js-plotly-plot`);
    if (!gd || typeof gd.on !== "function" || gd.__giflensClickBridge) return;
    gd.__giflensClickBridge = true;  // Streamlit may swap the chart's node on a rerun: attach again then
    gd.on("plotly_click", (event) => {
      const points = ((event && event.points) || [])
        .filter((p) => p.customdata !== undefined)
        .map((p) => ({ customdata: p.customdata, curve_number: p.curveNumber, point_index: p.pointNumber }));
      if (points.length) setTriggerValue("clicked", { selection: { points } });
    });
  };
  attach();
  const timer = setInterval(attach, 500);
  return () => clearInterval(timer);
}
"""

_bridge = st.components.v2.component("giflens_plotly_click_bridge", js=_JS)


def plotly_click(chart_key: str, *, key: str | None = None) -> dict[str, Any] | None:
    """The click on the chart with widget key `chart_key` that caused this rerun, as
    `{"selection": {"points": [{"customdata": ...}]}}`, or None (a trigger lasts one run)."""
    result = _bridge(data={"chart_key": chart_key}, key=key or f"{chart_key}_click", on_clicked_change=lambda: None)
    return getattr(result, "clicked", None)
