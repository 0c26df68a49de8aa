"""Demographic audit of the celebrity dataset: who is in it, how well the model serves each
group, and which groups fall below four fifths of the best-served one.

Pure functions on two DataFrames (the pages and the CLI load them from the store):

faces    one row per face: `face_id`, `class` (the label; for status "predicted" it may be
         empty and `predicted` is used), `status` ("approved" / "relabeled" = confirmed by an
         editor, "predicted", "unknown", "rejected"), `predicted` (the model's class; empty or
         "unknown" = the model declined), optional `correct` (bool, overrides predicted == class),
         optional `measured` (bool, default true: whether the face is graded at all; a confirmed
         face that cannot be graded, see `held_out_grades`, is left out of accuracy and unknown
         rate rather than counted as a face the model declined).
classes  one row per class: `class` (or `name`) and any of `gender`, `ethnicity`,
         `birth_year` (audited by decade) or `decade`, `country`.

Choices that matter for reading the numbers:
- Missing attributes are the group "unknown", shown like any other group: how much of the
  dataset has no attribute is itself an audit finding. Missing means blank, "unknown" or one of the
  placeholders spreadsheets and exports write for "no value" (`PLACEHOLDERS`: "N/A", "NA", "none",
  "null", "nan", "-", "?", any case), except "NA" in a country column, which is Namibia's ISO code. It is never the reference
  ("best-served") group, since it is not a demographic group.
- A class with several ethnicities (`african;caucasian`, k values) is 1/k of a class in each of
  its groups, and so is each of its faces. Every count in a row (`classes`, `faces`,
  `approved_faces`) is such a weighted count and every share or rate is a ratio of them, so the
  numbers of a row agree with each other (3 classes of 5 with a known value is a 60% share) and
  the counts and shares of an attribute sum to its classes / faces and to 1, which is what a
  reference distribution is compared with. Counting the class whole in each group would count
  one person several times and inflate every group it belongs to. A count is therefore
  fractional (6.5 classes) only where a multi-valued class belongs to the group; gender, decade
  and country are single-valued and their counts are whole.
- Accuracy and unknown-rate are measured on editor-confirmed labels only: predicted labels are
  the model grading itself. The app grades each confirmed face held out (`held_out_grades`: its
  media item left out of its class centroid) rather than with the stored prediction, which
  `giflens predict` makes with that very face in the training set.
- The four-fifths rule (EEOC adverse-impact rule of thumb): a group is flagged for a metric when
  its value is below `threshold` (0.8) x the best eligible group's value; for representation,
  when its share among the classes of the groups the reference lists (`share_among_listed`) is
  below `threshold` x the reference share the editor set. The reference's shares are weights
  normalised over the groups it lists, so they can only be compared with shares taken among those
  same groups: a group left out of the reference has no representation comparison and does not
  change the others' (a reference describes known groups, so "unknown" is never among them). With
  every known group listed, as by default, the share among the listed groups is `share_of_known`.
  `reference_scope_notes` says, for the report, the CLI and the page alike, which groups a reference
  left out and what its shares were normalised to. Groups with fewer
  than `min_faces` graded confirmed faces (`graded_faces`, weighted as above) are still flagged but
  marked `small_sample`: accuracy and unknown rate are ratios over the graded faces only, and a
  class whose faces all come from one GIF has many confirmed faces but none graded, so the count of
  confirmed faces would vouch for a rate measured on one or two faces.
- The best-served group of accuracy and recognised rate is taken among groups with `min_faces`
  graded confirmed faces; when no known group with a value has that many, among all known groups with a
  value, so a gap between small groups is still flagged (marked `small_sample`) and the report says
  the reference is itself a small sample (`small_sample_references`, the summary's
  "small-sample references").
- A group of the reference distribution that no class belongs to (`nonbinary` expected at 20%,
  nobody in the data) gets a row of its own with 0 classes and faces, a 0 share and representation
  ratio 0, so it is flagged for representation; its quality metrics are empty, not 0 (nothing was
  measured). A group expected at share 0 gets no such row. An attribute none of whose known groups
  has anything to count (representation by faces and no face yet of a class with a known value)
  measures no representation at all: every share_among_listed and representation ratio is empty
  and nothing is flagged for representation. Its rows say so in `representation_note` ("not measured:
  no face of a class with a known gender"), and so does the report's summary ("representation of
  gender"), which the CLI prints and the page shows as a warning: an audit that compared nothing must
  not read as a clean one.
"""
from __future__ import annotations

import contextlib
import html
import json
import math
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer.figures import UNKNOWN, audit_bars, representation_bars

__all__ = [
    "AuditReport",
    "CONFIRMED",
    "carried_reference",
    "reference_proposals",
    "untouched_reference",
    "COUNT_COLUMNS",
    "MULTI_VALUED",
    "QUALITY_METRICS",
    "audit_report",
    "audit_table",
    "class_groups",
    "groups_of",
    "decade",
    "decade_name",
    "classes_with_faces",
    "confirmed_class_stats",
    "count_text",
    "counted",
    "face_groups",
    "held_out_grades",
    "known_attributes",
    "left_out_text",
    "no_faces_text",
    "parse_reference",
    "small_sample_references",
    "unmeasured_representation",
    "reference_scope_notes",
    "summary_label",
    "spreadsheet_text",
    "store_inputs",
    "uniform_reference",
]

CONFIRMED = ("approved", "relabeled")
ATTRIBUTES = ("gender", "ethnicity", "decade", "country")
MULTI_VALUED = {"ethnicity"}
COUNT_COLUMNS = ("classes", "faces", "approved_faces", "graded_faces")  # weighted counts (see above): whole unless multi-valued
# Higher is better for each; unknown-rate enters as recognised_rate = 1 - unknown_rate.
QUALITY_METRICS = ("accuracy", "recognised_rate", "purity")
REPRESENTATION_BASES = {"classes": "class_share", "faces": "face_share"}  # what representation counts
ATTRIBUTE_WORDS = {"decade": "birth decade"}  # how a note names an attribute, when not by its column name


# -- normalising attributes ------------------------------------------------------------------
# What spreadsheets, exports and people write for "no value": the group "unknown" like a blank cell. Kept
# short on purpose: each entry is a word no gender, ethnicity or decade is called. A group of its own, such
# a placeholder took part of the default equal-shares reference and diluted every real group's share.
PLACEHOLDERS = frozenset({UNKNOWN, "n/a", "na", "none", "null", "nan", "-", "?"})
# Placeholders that are real values of one attribute: "NA" is Namibia's ISO 3166-1 code, and country is
# stored as typed (FR, US). Folding Namibia into unknown would hide exactly the kind of group an audit is
# for; a stray "NA" meant as a placeholder stays a visible group "na" an editor can correct.
NAMED_IN = {"country": frozenset({"na"})}


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT or \
        (isinstance(v, str) and v.strip() == "")


def _group(v: Any, attribute: str | None = None) -> str:
    """An attribute value (or a reference's group name) of `attribute` as the group it names: a placeholder
    (`PLACEHOLDERS`, less the attribute's `NAMED_IN`) is "unknown"; otherwise case, surrounding
    and repeated inner spaces ignored, and Unicode-normalised (NFC). Why NFC: "Côte d'Ivoire" typed
    precomposed and pasted decomposed (NFD, as macOS file names and some exports give it) look the
    same and must be one group, not two with the same name and split shares; casefolding alone
    keeps their different code points. Normalised before and after casefolding, since casefolding
    can take a composed character apart (canonical caseless matching, Unicode 3.13)."""
    if _is_missing(v):
        return UNKNOWN
    text = " ".join(unicodedata.normalize("NFD", str(v)).split())
    name = unicodedata.normalize("NFC", text.casefold())
    if name in PLACEHOLDERS - NAMED_IN.get(attribute or "", frozenset()):
        return UNKNOWN
    return (decade_name(name) or name) if attribute == "decade" else name


_DECADE = re.compile(r"([0-9]{3}0)(?:s|'s|\u2019s)?")  # 1940, 1940s, 1940's (also with a typographic apostrophe)


def decade_name(text: str) -> str | None:
    """"1940", "1940s", "1940's" (any case) -> "1940s", the group `decade` names; None for any other shape.

    Why: an editor writes a decade as they say it; the audit's decade groups are named "1940s", and a
    reference listing "1940" was taken as a group of its own, flagged absent from the data."""
    found = _DECADE.fullmatch(text.strip().casefold())
    return f"{found.group(1)}s" if found else None


def _decade_refusal(typed: str) -> str:
    """Why a reference's group is no birth decade, and how to write it: "1945 falls in the 1940s"."""
    year = re.fullmatch(r"[0-9]{4}", typed.strip())
    hint = f" ({typed.strip()} falls in the {int(typed) // 10 * 10}s)" if year else ""
    return (f"{typed!r} is not a birth decade{hint}: write a decade as 1940s (1940 and 1940's read the same), "
            "as the audit names its decade groups")


def decade(birth_year: Any) -> str:
    """1963 -> "1960s"; missing or not a plausible year -> "unknown". A year after the current one is
    no birth year yet (a typo, 2090 for 1990): a "2090s" group would count as a known group in the
    representation shares and get an equal share of the default reference."""
    if _is_missing(birth_year):
        return UNKNOWN
    try:
        year = int(float(birth_year))
    except (TypeError, ValueError, OverflowError):
        return UNKNOWN
    return f"{year // 10 * 10}s" if 1000 <= year <= time.gmtime().tm_year else UNKNOWN


def _class_column(df: pd.DataFrame) -> str:
    for name in ("class", "name"):
        if name in df.columns:
            return name
    raise KeyError(f"the classes table needs a 'class' (or 'name') column; it has {list(df.columns)}")


def _available_attributes(classes: pd.DataFrame) -> list[str]:
    have = set(classes.columns)
    return [a for a in ATTRIBUTES if a in have or (a == "decade" and "birth_year" in have)]


def groups_of(value: Any, attribute: str) -> list[str]:
    """The groups one class's value of `attribute` falls in (`_group`): a multi-valued attribute (ethnicity,
    `;`-separated) gives each known value once, "unknown" only when none is known; any other one group."""
    if attribute in MULTI_VALUED and not _is_missing(value):
        return list(dict.fromkeys(g for g in (_group(p, attribute) for p in str(value).split(";"))
                                  if g != UNKNOWN)) or [UNKNOWN]
    return [_group(value, attribute)]


def class_groups(classes: pd.DataFrame, attributes: Sequence[str] | None = None) -> pd.DataFrame:
    """Long table (class, attribute, group, weight): one row per class and group it belongs to.
    Multi-valued attributes (ethnicity, `;`-separated) give one row per value with weight 1/k;
    missing values give the group "unknown"."""
    cls_col = _class_column(classes)
    attributes = list(attributes) if attributes is not None else _available_attributes(classes)
    rows: list[tuple[str, str, str, float]] = []
    for attr in attributes:
        if attr == "decade" and "decade" not in classes.columns:
            if "birth_year" not in classes.columns:
                raise KeyError("attribute 'decade' needs a 'birth_year' or 'decade' column in the classes table")
            values = classes["birth_year"].map(decade)
        elif attr not in classes.columns:
            raise KeyError(f"attribute {attr!r} is not a column of the classes table ({list(classes.columns)})")
        else:
            values = classes[attr]
        for cls, v in zip(classes[cls_col].astype(str), values):
            groups = groups_of(v, attr)
            for g in groups:
                rows.append((cls, attr, g, 1.0 / len(groups)))
    out = pd.DataFrame(rows, columns=["class", "attribute", "group", "weight"])
    return out.drop_duplicates(["class", "attribute", "group"]).reset_index(drop=True)


def face_groups(faces: pd.DataFrame) -> pd.DataFrame:
    """Faces with their effective class (the confirmed class, or the model's for status
    "predicted"), confirmed/predicted flags, whether the model declined (said unknown) and
    whether it was right (both empty for a face that is not `measured`). Faces without an
    effective class (status unknown/rejected) keep `effective_class` empty and belong to no group."""
    for col in ("class", "status"):
        if col not in faces.columns:
            raise KeyError(f"the faces table needs a {col!r} column; it has {list(faces.columns)}")
    status = faces["status"].astype(str).str.strip().str.casefold()
    label = faces["class"].map(lambda v: None if _is_missing(v) else str(v))
    predicted = (faces["predicted"] if "predicted" in faces.columns else pd.Series(None, index=faces.index))
    predicted = predicted.map(lambda v: None if _is_missing(v) or str(v).casefold() == UNKNOWN else str(v))
    confirmed = status.isin(CONFIRMED) & label.notna()
    is_predicted = status.eq("predicted")
    effective = label.where(confirmed | (is_predicted & label.notna()), predicted.where(is_predicted))
    if "correct" in faces.columns:
        correct = faces["correct"].map(lambda v: np.nan if _is_missing(v) else float(bool(v)))
    else:
        correct = (predicted == label).astype(float)
    measured = faces["measured"].astype(bool) if "measured" in faces.columns else pd.Series(True, index=faces.index)
    out = pd.DataFrame({
        "face_id": faces["face_id"] if "face_id" in faces.columns else faces.index,
        "effective_class": effective,
        "confirmed": confirmed,
        "predicted_status": is_predicted,
        "declined": predicted.isna() & measured,
        "correct": correct.where(confirmed & measured),
    }, index=faces.index)
    return out


def _purity_map(cluster_stats: pd.DataFrame | Mapping[str, float] | None) -> dict[str, float]:
    if cluster_stats is None:
        return {}
    if isinstance(cluster_stats, pd.DataFrame):
        return {str(c): float(p) for c, p in zip(cluster_stats["class"], cluster_stats["purity"]) if not _is_missing(p)}
    return {str(c): float(p) for c, p in cluster_stats.items() if not _is_missing(p)}


def _count(weighted: pd.Series) -> float:
    """A weighted count, rid of float noise (3 x 1/3 is 1.0, not 0.9999999999999999), so that whole
    counts stay whole and compare equal to the integers a reader counts. For display and the
    small-sample test only: a rate divided from rounded counts is off by up to 1e-10 (16/20 faces of
    a 1/3-weighted class gave 0.79999999991), which flagged a group at exactly four fifths."""
    return round(float(weighted.sum()), 9)


def _fraction(numerator: float, denominator: float) -> float:
    """numerator / denominator of unrounded weighted sums (see `_count`), NaN when nothing was counted."""
    return numerator / denominator if denominator else np.nan


RATIO_DIGITS = 9  # a ratio is compared with the threshold at this precision: see `_ratio_column`
# Rates are written rid of float noise at this precision (16/20 faces of a 1/3-weighted class: 0.8, not
# 0.7999999999999999). Shares are not: they are compared with the editor's reference share, which carries
# float noise of its own (1/6), and rounding one side only would move a share at its reference off it.
VALUE_DIGITS = 12
RATE_COLUMNS = ("approved_share", "predicted_share", "accuracy", "unknown_rate", "recognised_rate",
                "purity") + tuple(f"{m}_reference" for m in QUALITY_METRICS)


def _ratio_column(values: pd.Series, reference: pd.Series) -> np.ndarray:
    """values / reference (NaN where the reference is not positive), rounded to RATIO_DIGITS decimals.
    Why rounded: dividing sums of 1/k weights leaves float noise ((16/3) / (20/3) is
    0.7999999999999999), and a ratio compared strictly with the threshold would flag a group at
    exactly four fifths, or exactly at its reference share, only because its class is multi-valued.
    A real gap is far wider than 1e-9."""
    ratio = np.where(reference > 0, values / reference.where(reference > 0, 1), np.nan)
    return np.round(ratio.astype(float), RATIO_DIGITS)


# -- the table --------------------------------------------------------------------------------
def audit_table(faces: pd.DataFrame, classes: pd.DataFrame, attributes: Sequence[str] | None = None,
                reference: Mapping[str, Mapping[str, float]] | None = None,
                cluster_stats: pd.DataFrame | Mapping[str, float] | None = None, threshold: float = 0.8,
                min_faces: int = 5, representation_basis: str = "class_share") -> pd.DataFrame:
    """One row per (attribute, group): classes, faces, class_share / face_share (counts weighted
    1/k for a class with k values, shares = count / the attribute's total, summing to 1; see the
    module docstring), share_of_known (the representation_basis share among groups other than
    "unknown": what a reference distribution is compared with), approved_share, predicted_share,
    accuracy and unknown_rate on the measured (graded) confirmed faces, graded_faces (their weighted
    count, which small_sample compares with min_faces), recognised_rate, purity (mean over the group's classes, weighted alike), each quality metric's
    `_reference` (best eligible group) and `_ratio`, reference_share and representation_ratio,
    representation_note (why representation was not measured, on every row of such an attribute; see
    `_unmeasured_notes`), and the flags: small_sample, flags (which rules fired), below_four_fifths."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be within (0, 1], got {threshold}")
    if representation_basis not in ("class_share", "face_share"):
        raise ValueError("representation_basis must be 'class_share' or 'face_share'")
    reference = {k: dict(v) for k, v in (reference or {}).items()}
    for attr, shares in reference.items():
        bad = {g: s for g, s in shares.items() if not 0 <= float(s) <= 1}
        if bad:
            raise ValueError(f"reference shares must lie in 0..1; {attr}: {bad}")
        # matched like the groups (case and surrounding spaces ignored): "Female" must find "female",
        # not become a group of its own that the data lacks
        named: dict[str, float] = {}
        for g, share in shares.items():
            name = _group(g, attr)
            if name in named:
                raise ValueError(f"reference group {name!r} is listed twice for {attr}")
            named[name] = float(share)
        reference[attr] = named
    groups = class_groups(classes, attributes)
    attributes = list(dict.fromkeys(groups["attribute"])) if attributes is None else list(attributes)
    f = face_groups(faces)
    purity = _purity_map(cluster_stats)
    known = set(groups["class"])
    assigned = f[f["effective_class"].notna()].assign(declined_confirmed=lambda d: d["declined"] & d["confirmed"])
    # Classes seen in faces but missing from the classes table: every attribute unknown.
    extra = sorted(set(assigned["effective_class"]) - known)
    if extra:
        groups = pd.concat([groups, pd.DataFrame([(c, a, UNKNOWN, 1.0) for c in extra for a in attributes],
                                                 columns=groups.columns)], ignore_index=True)
    per_class = assigned.groupby("effective_class").agg(
        faces=("face_id", "size"), confirmed=("confirmed", "sum"), predicted=("predicted_status", "sum"),
        declined_confirmed=("declined_confirmed", "sum"),
        correct=("correct", "sum"), correct_n=("correct", "count"))
    g = groups.join(per_class, on="class").fillna({"faces": 0, "confirmed": 0, "predicted": 0,
                                                   "declined_confirmed": 0, "correct": 0, "correct_n": 0})
    g["purity"] = g["class"].map(purity)
    rows = []
    for (attr, grp), part in g.groupby(["attribute", "group"], sort=False):
        # One rule for every number of the row: a class with k values is 1/k of a class here, and
        # so is each of its faces; rates are ratios of these weighted counts, divided from the
        # unrounded sums (`_count` rounds the counts shown).
        w = part["weight"]
        total = {c: float((w * part[c]).sum()) for c in
                 ("faces", "confirmed", "predicted", "correct", "correct_n", "declined_confirmed")}
        measured = part["purity"].notna()
        rows.append({
            "attribute": attr, "group": grp,
            "classes": _count(w), "faces": _count(w * part["faces"]),
            "approved_faces": _count(w * part["confirmed"]), "graded_faces": _count(w * part["correct_n"]),
            "_classes": float(w.sum()), "_faces": total["faces"],
            "approved_share": _fraction(total["confirmed"], total["faces"]),
            "predicted_share": _fraction(total["predicted"], total["faces"]),
            "accuracy": _fraction(total["correct"], total["correct_n"]),
            "unknown_rate": _fraction(total["declined_confirmed"], total["correct_n"]),
            "purity": float(np.average(part["purity"][measured], weights=w[measured])) if measured.any() else np.nan,
            "purity_classes": int(measured.sum()),
        })
    if not rows:
        return pd.DataFrame(rows)
    # A group the reference expects and no class belongs to: the worst under-representation, so it
    # gets a row (0 classes, 0 faces, share 0) and is flagged below; nothing was measured of it.
    found = {(r["attribute"], r["group"]) for r in rows}
    for attr in attributes:
        for grp, share in reference.get(attr, {}).items():
            if grp != UNKNOWN and share > 0 and (attr, grp) not in found:
                rows.append({"attribute": attr, "group": grp, "classes": 0.0, "faces": 0.0, "approved_faces": 0.0,
                             "graded_faces": 0.0, "_classes": 0.0, "_faces": 0.0,
                             "approved_share": np.nan, "predicted_share": np.nan, "accuracy": np.nan,
                             "unknown_rate": np.nan, "purity": np.nan, "purity_classes": 0})
    table = pd.DataFrame(rows)
    table["recognised_rate"] = 1.0 - table["unknown_rate"]
    for attr, idx in table.groupby("attribute").groups.items():
        part = table.loc[idx]
        table.loc[idx, "class_share"] = part["_classes"] / part["_classes"].sum() if part["_classes"].sum() else np.nan
        table.loc[idx, "face_share"] = part["_faces"] / part["_faces"].sum() if part["_faces"].sum() else np.nan
    # the faces the rates were measured on, not the confirmed ones: see the module docstring
    table["small_sample"] = table["graded_faces"] < min_faces
    for metric in QUALITY_METRICS:
        table[f"{metric}_reference"] = np.nan
        for attr, idx in table.groupby("attribute").groups.items():
            eligible, _ = _reference_candidates(table.loc[idx], metric)
            if len(eligible):
                table.loc[idx, f"{metric}_reference"] = float(eligible[metric].max())
        table[f"{metric}_ratio"] = _ratio_column(table[metric], table[f"{metric}_reference"])
    # A reference distribution describes people whose group is known: compare it with the share
    # among classes (or faces) whose attribute is known, not diluted by "unknown".
    basis = "_classes" if representation_basis == "class_share" else "_faces"
    known = table["group"] != UNKNOWN
    known_total = table[known].groupby("attribute")[basis].sum()
    table["share_of_known"] = np.where(known, table[basis] / table["attribute"].map(known_total).replace(0, np.nan), np.nan)
    table["reference_share"] = [reference.get(a, {}).get(g, np.nan) for a, g in zip(table["attribute"], table["group"])]
    unmeasured = _unmeasured_notes(table, basis)
    table["share_among_listed"] = _share_among_listed(table, reference, basis, unmeasured)
    table["representation_ratio"] = _ratio_column(table["share_among_listed"], table["reference_share"])
    table["representation_note"] = [unmeasured.get(a, "") for a in table["attribute"]]
    table[list(RATE_COLUMNS)] = table[list(RATE_COLUMNS)].round(VALUE_DIGITS)  # the ratios are taken: for output
    flags = []
    for _, r in table.iterrows():
        fired = [m for m in QUALITY_METRICS if r[f"{m}_ratio"] < threshold]
        if r["representation_ratio"] < threshold:
            fired.append("representation")
        flags.append("; ".join(fired))
    table["flags"] = flags
    table["below_four_fifths"] = table["flags"] != ""
    order = {a: i for i, a in enumerate(attributes)}
    table["_a"] = table["attribute"].map(order)
    table["_u"] = table["group"] == UNKNOWN
    table = table.sort_values(["_a", "_u", "faces", "group"], ascending=[True, True, False, True], kind="stable")
    columns = ["attribute", "group", "classes", "faces", "class_share", "face_share", "share_of_known",
               "share_among_listed", "reference_share", "representation_ratio", "representation_note", "approved_faces", "graded_faces", "approved_share", "predicted_share", "accuracy",
               "unknown_rate", "recognised_rate", "purity"] + \
              [f"{m}_{s}" for m in QUALITY_METRICS for s in ("reference", "ratio")] + \
              ["small_sample", "flags", "below_four_fifths"]
    return table[columns].reset_index(drop=True)


def _share_among_listed(table: pd.DataFrame, reference: Mapping[str, Mapping[str, float]], basis: str,
                        unmeasured: Collection[str]) -> np.ndarray:
    """Each group's `basis` count over the count of the groups its attribute's reference lists (NaN for a group
    the reference leaves out, and for every group of an attribute without a reference).

    Why not the share among all known groups: the reference's shares are normalised over the groups it
    lists, so a group left out (latino, with african:1,caucasian:1) took its classes out of the expected
    shares but not out of the observed ones, and the others' ratios, and flags, moved with it. A group
    listed at share 0 counts here: the editor expects none of it, and it takes its part of the data."""
    listed = np.array([g != UNKNOWN and g in reference.get(a, {}) for a, g in zip(table["attribute"], table["group"])],
                      dtype=bool)
    totals = table[listed].groupby("attribute")[basis].sum()
    denominator = table["attribute"].map(totals).astype(float)
    # listed groups none of which the data holds: each is absent, share 0 (flagged), not a share of nothing
    shares = np.where(denominator > 0, table[basis] / denominator.where(denominator > 0, 1.0), 0.0)
    # ... but only where the known groups have something to count. With none (by faces, no face yet of a class
    # with a known value) nothing was measured: share 0 flagged every group and failed `--fail-on-flags`.
    measured = ~table["attribute"].isin(list(unmeasured))  # `_unmeasured_notes`
    return np.where(listed & measured.to_numpy(), shares, np.nan)


def _unmeasured_notes(table: pd.DataFrame, basis: str) -> dict[str, str]:
    """{attribute: "not measured: no face of a class with a known gender"} for each attribute whose known
    groups count 0 in `basis` ("_classes" or "_faces"): its representation is not measured at all
    (`_share_among_listed`). The one rule that decides it, so that the table, the report, the CLI and the
    page say it of the same attributes."""
    known = table[table["group"] != UNKNOWN].groupby("attribute")[basis].sum()
    what = "face of a class" if basis == "_faces" else "class"
    return {str(a): f"not measured: no {what} with a known {ATTRIBUTE_WORDS.get(str(a), str(a))}"
            for a in dict.fromkeys(table["attribute"]) if not known.get(a, 0) > 0}


def _representation_notes(table: pd.DataFrame) -> dict[str, str]:
    """{attribute: its `representation_note`} for each attribute of an audit table that has one."""
    if table.empty or "representation_note" not in table:
        return {}
    notes = table.loc[table["representation_note"].astype(str) != "", ["attribute", "representation_note"]]
    return {str(a): str(n) for a, n in zip(notes["attribute"], notes["representation_note"])}


def _representation_of(attribute: str) -> str:
    """"representation of birth decade": how a note names what was not measured."""
    return f"representation of {ATTRIBUTE_WORDS.get(attribute, attribute)}"


def unmeasured_representation(table: pd.DataFrame) -> dict[str, str]:
    """{attribute: "representation of gender not measured: no face of a class with a known gender"} for each
    attribute of an audit table whose representation was not measured (its `representation_note`); empty when
    every one was. Why a note: nothing is flagged there, and without one such an audit passes for clean."""
    return {a: f"{_representation_of(a)} {n}" for a, n in _representation_notes(table).items()}


def reference_scope_notes(table: pd.DataFrame, reference: Mapping[str, Mapping[str, float]]) -> dict[str, str]:
    """{attribute: note} for each reference that leaves out a known group of the data: the groups left
    out (no representation comparison), and the listed groups' shares as normalised, compared with their
    share among the listed groups only. Why: "country=germany:10" meant 10% to its editor and was
    read as 100% without a word; said like this, the rule and its consequence are on the page, in the
    CLI's output and in the report alike. A single listed group is 100% of the listed groups whatever
    the data, so it is compared with nothing, and the note says so."""
    out: dict[str, str] = {}
    if table.empty:
        return out
    for attr, shares in reference.items():
        rows = table[(table["attribute"] == attr) & (table["group"] != UNKNOWN)]
        listed = {_group(g, attr): float(v) for g, v in shares.items()}
        left = [str(g) for g in rows["group"] if g not in listed]
        if not left or not listed:
            continue
        named = ", ".join(f"{g} {v:.0%}" for g, v in listed.items())
        observed = rows.loc[rows["group"].isin(listed), "share_among_listed"] if "share_among_listed" in rows else None
        if observed is not None and len(observed) and observed.isna().all():  # see `_share_among_listed`
            note = (f"nothing measured for the groups the reference lists ({named}); it leaves out "
                    f"{', '.join(left)}")
        elif observed is not None and not (observed.fillna(0) > 0).any():
            note = (f"the reference lists only groups absent from the data ({named}): each is flagged absent; "
                    f"left out: {', '.join(left)}")
        elif len(listed) == 1:
            note = (f"the reference lists only {named}; a single group is 100% of the groups listed whatever "
                    f"the data, so nothing is compared. Left out: {', '.join(left)}. To expect {next(iter(listed))} at "
                    "a share of the whole, list the other groups with their shares too")
        else:
            note = (f"the reference leaves out {', '.join(left)} (no representation comparison); its shares, "
                    f"normalised over the groups listed ({named}), are compared with each listed group's share "
                    "among the listed groups only")
        out[attr] = note
    return out


def _reference_candidates(rows: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, bool]:
    """The groups of one attribute among which the best-served group of `metric` is taken, and
    whether that reference is a small sample that others are compared with: known groups with a
    value and `min_faces` graded confirmed faces, or, when no such group exists, every known group with a
    value (the gap between small groups is still a finding). Purity is measured per class whatever
    the face count, so it never falls back."""
    valued = rows[(rows["group"] != UNKNOWN) & rows[metric].notna()]
    if metric == "purity":
        return valued, False
    supported = valued[~valued["small_sample"].astype(bool)]
    if len(supported) or valued.empty:
        return supported, False
    compared = int(rows[metric].notna().sum()) > 1  # a lone group with a value is compared with nobody
    return valued, compared


def small_sample_references(table: pd.DataFrame) -> dict[str, list[str]]:
    """{attribute: [quality metrics]} whose best-served group (the reference the others are compared
    with) is a small sample, because no known group with a value has `min_faces` graded confirmed faces, and
    another group is compared with it; empty when every reference has enough faces."""
    out: dict[str, list[str]] = {}
    if table.empty:
        return out
    for attr in dict.fromkeys(table["attribute"]):
        rows = table[table["attribute"] == attr]
        small = [m for m in QUALITY_METRICS if _reference_candidates(rows, m)[1]]
        if small:
            out[attr] = small
    return out


def small_sample_reference_text(table: pd.DataFrame, min_faces: int) -> str:
    """The summary's words for `small_sample_references`: "" when there is none."""
    found = small_sample_references(table)
    if not found:
        return ""
    what = "; ".join(f"{attr} ({', '.join(m.replace('_', ' ') for m in metrics)})" for attr, metrics in found.items())
    return (f"{what}: no group with a value has {min_faces} confirmed faces graded, so the best-served group the "
            "others are compared with is itself a small sample")


# -- the report -------------------------------------------------------------------------------
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula


def spreadsheet_text(value: Any) -> Any:
    """A text cell as a spreadsheet must show it: one beginning like a formula (`=HYPERLINK(...)`, `+`,
    `-`, `@`) gets a leading apostrophe, so Excel and LibreOffice show the text rather than evaluate
    it (CSV injection). Group names are attribute values, free text from an import or an editor.
    Anything else (numbers, missing values) is returned as it is."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


# Display labels of summary keys kept for the code that reads them (tests, scripts) whose words say less than
# what they count: the faces without a class include those the model declined, not only the editor's
# unknown / rejected; and small_sample counts graded faces, not all confirmed ones.
SUMMARY_LABELS = {
    "faces without a class (unknown / rejected)": ("faces without a class (model declined, editor marked unknown/rejected, "
                                                   "or not predicted yet)"),
    "min confirmed faces per group": "min graded confirmed faces per group (fewer: small_sample)",
}


def summary_label(key: str) -> str:
    """How a summary key is shown to a reader (`SUMMARY_LABELS`), the key itself when it says what it counts."""
    return SUMMARY_LABELS.get(key, key)


@dataclass
class AuditReport:
    """An audit computed once and then read, charted or exported without recomputing."""

    table: pd.DataFrame
    attributes: tuple[str, ...]
    threshold: float
    reference: dict[str, dict[str, float]]
    summary: dict[str, Any]
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def groups(self, attribute: str) -> pd.DataFrame:
        return self.table[self.table["attribute"] == attribute].reset_index(drop=True)

    def flagged(self) -> pd.DataFrame:
        """Groups below four fifths of the best-served group (or of their reference share)."""
        return self.table[self.table["below_four_fifths"]].reset_index(drop=True)

    def figures(self) -> dict[str, go.Figure]:
        """Charts per attribute: accuracy, recognised rate, purity (when measured) and
        representation; keys like "gender/accuracy"."""
        out: dict[str, go.Figure] = {}
        for attr in self.attributes:
            rows = self.groups(attr)
            if rows.empty:
                continue
            for metric in QUALITY_METRICS:
                if rows[metric].notna().any():
                    out[f"{attr}/{metric}"] = audit_bars(self.table, attr, metric, self.threshold)
            out[f"{attr}/representation"] = self._representation_figure(attr, rows)
        return out

    def _representation_figure(self, attr: str, rows: pd.DataFrame) -> go.Figure:
        """The representation chart: each group's share among the listed groups next to its reference share,
        when the reference leaves a group out (the shares the flags compare); else the share among known
        groups, the same numbers. Swapped into the column the chart reads, so its red bars are the flags."""
        listed, known = rows["share_among_listed"], rows["share_of_known"]
        if not listed.notna().any() or listed.fillna(-1).equals(known.fillna(-1)):
            return representation_bars(self.table, attr, threshold=self.threshold)
        view = self.table.assign(share_of_known=self.table["share_among_listed"])
        return representation_bars(view, attr, threshold=self.threshold,
                                   title=f"representation by {attr} (share among the groups the reference lists)")

    def to_csv(self, path: Path | str) -> Path:
        """The full table, one row per (attribute, group), for spreadsheets and diffs between audits.
        Text cells are written through `spreadsheet_text`: group names are free text an editor typed."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = self.table.copy()
        for col in table.columns:
            if table[col].dtype == object or pd.api.types.is_string_dtype(table[col].dtype):
                table[col] = table[col].map(spreadsheet_text)
        for col in COUNT_COLUMNS:  # exact: %.6g wrote 1234567 faces as 1.23457e+06
            if col in table.columns:
                table[col] = table[col].map(_exact_count)
        return _write_replacing(path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"))

    def to_html(self, path: Path | str, include_plotlyjs: str | bool = "inline") -> Path:
        """A self-contained page: summary, flagged groups, then per attribute its table and charts.
        "inline" embeds plotly.js once (about 4.6 MB) so the file works offline; "cdn" links it."""
        if include_plotlyjs not in ("inline", "cdn", True, False):
            raise ValueError("include_plotlyjs must be 'inline', 'cdn', True or False")
        js: Any = True if include_plotlyjs in ("inline", True) else include_plotlyjs
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = {c: "{:.3f}".format for c in self.table.columns if pd.api.types.is_float_dtype(self.table[c])}
        fmt.update({c: count_text for c in COUNT_COLUMNS})  # 7 classes, 6.5 classes: not 7.000

        def table_html(df: pd.DataFrame) -> str:
            if df.empty:
                return "<p>none</p>"
            return "<div style='overflow-x:auto'>" + df.to_html(index=False, classes="audit", na_rep="", formatters=fmt,
                                                                border=0) + "</div>"

        parts = [
            "<!doctype html><html><head><meta charset='utf-8'><title>giflens bias audit</title>",
            "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
            "table.audit{border-collapse:collapse;font-size:13px;margin:1em 0}"
            "table.audit td,table.audit th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
            "h2{margin-top:2em}.note{color:#555}</style></head><body>",
            "<h1>giflens bias audit</h1>",
            f"<p class='note'>created {html.escape(self.created_at)}; four-fifths threshold {self.threshold:g}; "
            f"reference distribution: {html.escape(json.dumps(self.reference, ensure_ascii=False)) if self.reference else 'none set'}</p>",
            "<ul>" + "".join(f"<li>{html.escape(summary_label(str(k)))}: {html.escape(str(v))}</li>"
                            for k, v in self.summary.items()) + "</ul>",
            "<h2>Flagged groups</h2>",
            table_html(self.flagged()[["attribute", "group", "faces", "approved_faces", "graded_faces", "flags",
                                        "small_sample"]]),  # small_sample counts graded faces
        ]
        figures = self.figures()
        first = True
        for attr in self.attributes:
            rows = self.groups(attr)
            if rows.empty:
                continue
            parts.append(f"<h2>{html.escape(attr)}</h2>")
            parts.append(table_html(rows.drop(columns=["attribute"])))
            for key, fig in figures.items():
                if key.split("/")[0] != attr:
                    continue
                parts.append(fig.to_html(full_html=False, include_plotlyjs=js if first else False,
                                         default_height="380px"))
                first = False
        parts.append("</body></html>")
        return _write_replacing(path, lambda tmp: tmp.write_text("\n".join(parts), encoding="utf-8"))


def _exact_count(n: Any) -> str:
    """A count for the CSV: whole counts as integers (1234567, not 1.23457e+06 as "%.6g" wrote them),
    weighted ones (see the module docstring) with every digit `_count` kept (100000.333333333, where
    "%.6g" wrote 100000 and lost the fraction). Rates and ratios keep "%.6g": they lie in 0..1 or near it."""
    if _is_missing(n):
        return ""
    n = float(n)
    return str(int(n)) if n == round(n) else repr(n)


def _write_replacing(path: Path, write: Callable[[Path], Any]) -> Path:
    """Write a report through a temporary file beside `path` and then put it in place, so a reader
    never sees half a report. On any failure (a full disk, a folder where the file should go, Ctrl-C)
    the temporary file is removed: an inline HTML report is ~4.6 MB, and a hidden .tmp left behind
    by every failed run fills the reports folder unseen."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):  # the write's own error is the one to report
            tmp.unlink(missing_ok=True)
        raise
    return path


def audit_report(faces: pd.DataFrame, classes: pd.DataFrame, attributes: Sequence[str] | None = None,
                 reference: Mapping[str, Mapping[str, float]] | None = None,
                 cluster_stats: pd.DataFrame | Mapping[str, float] | None = None, threshold: float = 0.8,
                 min_faces: int = 5, representation_basis: str = "class_share", left_out: str = "",
                 scope: str = "") -> AuditReport:
    """Run the audit (see `audit_table`) and wrap it with its parameters and a summary.

    left_out: what the caller left out of `classes` before the audit (`left_out_text`), stated in the
    summary ("not audited") so that a report read on its own does not pass for the whole catalog.
    scope: why the caller audited other classes than it usually does (`no_faces_text`: no class has a
    face, so the whole catalog), stated in the summary ("scope")."""
    table = audit_table(faces, classes, attributes, reference, cluster_stats, threshold, min_faces, representation_basis)
    f = face_groups(faces)
    # the editor's own "no class" decisions, apart from faces no model has looked at yet (ingested since the last predict)
    editor_no_class = faces["status"].astype(str).str.strip().str.casefold().isin({"unknown", "rejected"})
    attrs = tuple(dict.fromkeys(table["attribute"])) if len(table) else tuple(attributes or ())
    summary = {
        "faces": int(len(f)),
        "faces in a class": int(f["effective_class"].notna().sum()),
        "faces confirmed by an editor": int(f["confirmed"].sum()),
        "faces without a class (unknown / rejected)": int(f["effective_class"].isna().sum()),
        "faces the model declined, awaiting review": int((f["predicted_status"] & f["effective_class"].isna()).sum()),
        "faces an editor marked unknown or rejected": int(editor_no_class.sum()),
        "faces not predicted yet": int((~f["predicted_status"] & ~editor_no_class & f["effective_class"].isna()).sum()),
        "classes": int(classes[_class_column(classes)].nunique()),
        "groups flagged": int(table["below_four_fifths"].sum()) if len(table) else 0,
        "representation basis": representation_basis,
        "min confirmed faces per group": min_faces,
        "small-sample references": small_sample_reference_text(table, min_faces) or "none",
    }
    for attr, note in reference_scope_notes(table, reference or {}).items():
        summary[f"reference of {attr}"] = note
    for attr, note in _representation_notes(table).items():  # "representation of gender": "not measured: ..."
        summary[_representation_of(attr)] = note
    if left_out:
        summary["not audited"] = left_out
    if scope:
        summary["scope"] = scope
    return AuditReport(table=table, attributes=attrs, threshold=threshold,
                       reference={k: dict(v) for k, v in (reference or {}).items()}, summary=summary)


# -- words for the numbers (the page's captions) ------------------------------------------------
def left_out_text(classes_without_faces: int, how_to_include: str) -> str:
    """"3 classes without any face left out (--all-classes to include them)": the note of an audit that
    left out the roster classes nobody has a face of (`classes_with_faces`); "" when none was. The
    report, the CLI and the page say it alike: a silent omission reads as the whole catalog audited."""
    if classes_without_faces <= 0:
        return ""
    return f"{counted(classes_without_faces, 'class', 'classes')} without any face left out ({how_to_include})"


def no_faces_text(classes: int, by_faces: bool = False, how_to_count_classes: str = "") -> str:
    """"no class has a face yet: all 4 classes audited by class counts": the note of an audit meant for the
    classes with faces (`classes_with_faces`) when no class has one, so it falls back to the whole catalog.
    The CLI, the report and the page say it alike: without it the run reads as one that left nothing out.

    by_faces: representation counted by faces (`REPRESENTATION_BASES`), which with no face measures nothing,
    so no group can be flagged; the note says so and how to count classes instead, rather than pass an
    audit that compared nothing for a clean one."""
    which = "the only class" if classes == 1 else f"all {counted(classes, 'class', 'classes')}"
    if by_faces:
        return (f"no class has a face yet: representation by faces cannot be measured ({which} listed, "
                f"nothing compared){'; ' + how_to_count_classes if how_to_count_classes else ''}")
    return f"no class has a face yet: {which} audited by class counts"


def count_text(n: float) -> str:
    """A count as a reader writes it: whole counts without decimals (7, not 7.0), weighted ones
    (see the module docstring) with at most two (6.5, 0.33)."""
    n = float(n)
    if math.isnan(n):
        return ""
    if n == round(n):
        return str(int(round(n)))
    return f"{n:.2f}".rstrip("0").rstrip(".")


def counted(n: float, singular: str, plural: str | None = None) -> str:
    """"1 class", "2 classes", "0.5 classes": the singular only for exactly one, as in English
    (a weighted count that is not whole takes the plural)."""
    text = count_text(n)
    word = singular if text == "1" else (plural if plural is not None else f"{singular}s")
    return f"{text} {word}"


# -- inputs from the store and the editor's reference (used by the Bias audit page) -------------
def store_inputs(faces: pd.DataFrame, classes: pd.DataFrame,
                 include_retired: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(faces, classes) for `audit_report` from `labeling.queries.faces_frame` / `classes_frame`.

    Retired classes are left out with their faces by default: they are not exported, so they are
    not part of what a retraining job learns from, and the audit is about that dataset."""
    keep = classes if include_retired else classes[classes["status"] != "retired"]
    audit_classes = keep[["name", "gender", "ethnicity", "birth_year", "country"]].rename(columns={"name": "class"})
    audit_faces = pd.DataFrame({"face_id": faces["face_id"], "class": faces["class_name"],
                                "status": faces["label_status"], "predicted": faces["predicted_class_name"]})
    if "model_id" in faces.columns:  # the face model of the embeddings: `held_out_grades` caps as it does
        audit_faces["model_id"] = faces["model_id"]
    if not include_retired:
        retired = set(classes.loc[classes["status"] == "retired", "name"].astype(str))
        effective = face_groups(audit_faces)["effective_class"]
        audit_faces = audit_faces[~effective.isin(retired)]
    return audit_faces.reset_index(drop=True), audit_classes.reset_index(drop=True)


def classes_with_faces(faces: pd.DataFrame, classes: pd.DataFrame) -> pd.Series:
    """Per class row: does any face carry it (confirmed, or predicted for a face awaiting review)?
    A class nobody has a face of (a roster entry from an attributes file) is not in the data."""
    in_data = set(face_groups(faces)["effective_class"].dropna())
    return classes[_class_column(classes)].astype(str).isin(in_data)


def confirmed_class_stats(faces: pd.DataFrame, face_ids: Sequence[Any], vectors: np.ndarray) -> pd.DataFrame | None:
    """`explorer.clusters.class_stats` (purity per class) over the editor-confirmed faces only:
    clusters of predicted labels would grade the model with its own answers. face_ids name the
    rows of vectors (faces without an embedding are simply absent). None when no confirmed face
    has a vector."""
    from explorer.clusters import ClusterError, class_stats

    f = face_groups(faces)
    confirmed = pd.Series(f["effective_class"].where(f["confirmed"]).to_numpy(object), index=f["face_id"].to_numpy())
    confirmed = confirmed[~confirmed.index.duplicated()]
    labels = pd.Series(list(face_ids)).map(confirmed).to_numpy(object)
    labels = np.array([None if _is_missing(v) else v for v in labels], dtype=object)
    if len(labels) == 0 or all(v is None for v in labels):
        return None
    try:
        return class_stats(vectors, labels)
    except ClusterError:
        return None


def held_out_grades(faces: pd.DataFrame, face_ids: Sequence[Any], media_ids: Sequence[Any],
                    vectors: np.ndarray, model_id: str | None = None) -> pd.DataFrame:
    """`faces` with the `predicted` answer and `measured` flag of every editor-confirmed face
    replaced by a held-out grade (models.celebrity_classifier.held_out_centroid_predictions, its
    media item held out of its class): what the classifier's centroid rule says of a face it was
    not fitted on. The stored prediction of a confirmed face is no such grade: `giflens predict`
    fits on the confirmed faces and then predicts them too, and an imported training photo may
    have none at all. face_ids / media_ids name the rows of vectors; a confirmed face without a
    vector, or whose class has no face outside its media item, is not measured.

    model_id names the face model of the vectors, so that the threshold is capped as the deployed
    classifier caps it for a short class list (`prior_capped`); None takes the one model named in the
    faces' model_id column (`store_inputs` keeps faces_frame's), if there is one."""
    from models.celebrity_classifier import CentroidKnnClassifier, held_out_centroid_predictions

    if model_id is None and "model_id" in faces.columns:
        models = faces["model_id"].dropna().unique()
        model_id = str(models[0]) if len(models) == 1 else None

    out = faces.copy()
    f = face_groups(out)
    label_of = pd.Series(f["effective_class"].where(f["confirmed"]).to_numpy(object), index=f["face_id"].to_numpy())
    label_of = label_of[~label_of.index.duplicated()].dropna()
    rows = pd.Series(list(face_ids)).map(label_of)
    keep = rows.notna().to_numpy()
    predicted = pd.Series(np.nan, index=label_of.index, dtype=object)
    measured = pd.Series(False, index=label_of.index)
    if keep.any():
        labels = rows[keep].astype(str).to_numpy()
        answer, graded = held_out_centroid_predictions(
            np.asarray(vectors)[keep], labels, np.asarray(list(media_ids), dtype=object)[keep],
            target_far=CentroidKnnClassifier().target_far, model_id=model_id)
        ids = np.asarray(list(face_ids), dtype=object)[keep]
        predicted.loc[ids] = answer
        measured.loc[ids] = graded
    is_confirmed = f["confirmed"].to_numpy()
    out["measured"] = (out["measured"].astype(bool) if "measured" in out.columns else True)
    out.loc[is_confirmed, "predicted"] = out.loc[is_confirmed, "face_id"].map(predicted).to_numpy(object)
    out.loc[is_confirmed, "measured"] = out.loc[is_confirmed, "face_id"].map(measured).fillna(False).to_numpy(bool)
    return out


def known_attributes(classes: pd.DataFrame) -> list[str]:
    """The attributes (gender, ethnicity, decade, country) that at least one class has a value
    for: an attribute nobody filled in is one "unknown" bar, which says less than its absence."""
    groups = class_groups(classes)
    known = groups[groups["group"] != UNKNOWN]
    present = set(known["attribute"])
    return [a for a in dict.fromkeys(groups["attribute"]) if a in present]


def uniform_reference(groups: Sequence[str]) -> dict[str, float]:
    """Equal shares over the known groups (parity): the default an editor starts from."""
    known = [g for g in dict.fromkeys(groups) if g != UNKNOWN]
    return {g: 1.0 / len(known) for g in known} if known else {}


def carried_reference(typed: Sequence[tuple[Any, Any]], base: Mapping[str, float],
                      groups: Sequence[str], proposed: Mapping[str, float] | None = None,
                      attribute: str | None = None) -> tuple[list[tuple[Any, Any]], list[str]]:
    """The reference an editor typed, carried over to a new set of groups: (rows, new groups).

    typed: the (group, share) rows of the editor's table as they are now; base: the rows it started
    from (group -> share); groups: the known groups of the data now; proposed: the rows of base the
    page filled in itself, not the editor (default: all of base, a table of equal shares). Why: when
    a class with a new group value appears (another editor adds one) the table must be rebuilt, and
    rebuilding it from equal shares would drop the editor's shares, and the flags they raise, without
    a word. A table carried over once holds the editor's shares: they are choices the next change of
    groups must keep too, which is why proposals and the table's rows are told apart.

    Each typed row is kept, by group name, while its group is still in the data or the editor added
    or changed it (a row left at its proposed share for a group nobody belongs to any more is
    dropped: it was the default, not a choice, and would be flagged as absent). Each group the table
    did not offer gets the mean of the kept shares of groups in the data (an untouched equal reference
    stays equal; 1.0 when there is none), which an editor can then change; a row the editor deleted
    stays deleted ("a group left out has no reference"). attribute: whose groups these are, so that names
    are matched as its values are (`_group`: "NA" is a country, not a placeholder)."""
    present = {_group(g, attribute) for g in groups} - {UNKNOWN}
    start = {_group(g, attribute) for g in base}
    default = {_group(g, attribute): v for g, v in (base if proposed is None else proposed).items()}
    kept: list[tuple[Any, Any]] = []
    for group, share in typed:
        if _is_missing(group):
            if not _is_missing(share):
                kept.append((group, share))  # half-typed: parse_reference says what is missing
            continue
        name = _group(group, attribute)
        if name in present or name not in default or _number(share) != _number(default[name]):
            kept.append((group, share))
    named = {_group(g, attribute) for g, _ in kept if not _is_missing(g)}
    new = [g for g in dict.fromkeys(groups) if g != UNKNOWN and _group(g, attribute) not in named | start]
    shares = [v for g, s in kept if not _is_missing(g) and _group(g, attribute) in present
              for v in [_number(s)] if v is not None and v >= 0]
    fill = float(np.mean(shares)) if shares else 1.0
    return kept + [(g, fill) for g in new], new


def reference_proposals(rows: Sequence[tuple[Any, Any]], proposed: Mapping[str, float],
                        new: Sequence[str], attribute: str | None = None) -> dict[str, float]:
    """The rows of a carried table (`carried_reference`) the page filled in, not the editor: the new
    groups at their fill, and the earlier proposals carried unchanged. The next change of groups drops
    these, and only these, when their group leaves the data."""
    default = {_group(g, attribute): v for g, v in proposed.items()}
    fresh = {_group(g, attribute) for g in new}
    out: dict[str, float] = {}
    for group, share in rows:
        name = None if _is_missing(group) else _group(group, attribute)
        if name is not None and (name in fresh or (name in default and _number(share) == _number(default[name]))):
            out[name] = share
    return out


def untouched_reference(typed: Sequence[tuple[Any, Any]] | None, rows: Sequence[tuple[Any, Any]],
                        proposed: Mapping[str, float], attribute: str | None = None) -> bool:
    """Whether the editor left a reference table as the page proposed it: the same rows, none of them
    the editor's (a carried table's shares are the editor's, even when not touched since)."""
    if typed is None:
        return True
    named = {_group(g, attribute) for g, _ in rows if not _is_missing(g)}
    return list(typed) == list(rows) and reference_proposals(rows, proposed, [], attribute).keys() == named


def _number(value: Any) -> float | None:
    """A typed share as a finite number, or None (blank, text, infinite)."""
    if _is_missing(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_reference(rows: pd.DataFrame | Mapping[str, Any], group_col: str = "group",
                    share_col: str = "share", attribute: str | None = None) -> dict[str, float]:
    """An editor's reference table (group -> expected share) as shares summing to 1.

    Shares may be fractions, percentages or any weights: they are normalised. Group names are
    matched like the audit's groups of `attribute` (`_group`: case, extra spaces and Unicode form ignored,
    placeholders such as "N/A" unknown, "NA" a country). Raises ValueError
    with a message an editor can act on: a blank group, a repeated group, "unknown" or a placeholder (a
    reference describes known groups), a share that is missing, not a number or negative, or
    shares summing to 0. Rows left completely blank are ignored (a half-added row)."""
    if isinstance(rows, Mapping):
        rows = pd.DataFrame({group_col: list(rows.keys()), share_col: list(rows.values())})
    shares: dict[str, float] = {}
    for i, (group, share) in enumerate(zip(rows[group_col], rows[share_col]), start=1):
        if _is_missing(group) and _is_missing(share):
            continue
        if _is_missing(group):
            raise ValueError(f"row {i} has a share but no group name")
        name = _group(group, attribute)
        if name == UNKNOWN:
            typed = " ".join(str(group).split())
            what = "'unknown'" if typed.casefold() == UNKNOWN else f"{typed!r} (a placeholder for no value, counted as 'unknown')"
            raise ValueError(f"{what} cannot be in the reference: it describes groups whose value is known; "
                             "remove that row")
        if attribute == "decade" and decade_name(name) is None:
            raise ValueError(_decade_refusal(" ".join(str(group).split())))
        if name in shares:
            raise ValueError(f"group {name!r} is listed twice")
        if _is_missing(share):
            raise ValueError(f"group {name!r} has no share: enter one, or delete the row")
        try:
            value = float(share)
        except (TypeError, ValueError):
            raise ValueError(f"the share of {name!r} is not a number: {share!r}") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"shares must be non-negative numbers; {name!r} has {value:g}")
        shares[name] = value
    total = sum(shares.values())
    if not shares or total <= 0:
        raise ValueError("the shares sum to 0: give at least one group a positive share")
    return {g: v / total for g, v in shares.items()}
