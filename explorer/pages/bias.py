"""Bias audit: who is in the dataset and how well the model serves each demographic group.

One tab per attribute the classes hold (gender, ethnicity, birth decade, country), each with its
groups table, charts and the editor's reference distribution; groups below four fifths of the
best-served group (or of their reference share) are flagged in red. The numbers come from
`explorer.bias_audit.audit_report` (its module docstring says how to read them); this page only
loads the store, collects the editor's settings and shows or exports the report.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from explorer.audit_inputs import read_audit_inputs
from explorer.bias_audit import (COUNT_COLUMNS, MULTI_VALUED, REPRESENTATION_BASES, AuditReport, audit_report,
                                 carried_reference, class_groups, classes_with_faces, count_text, counted, face_groups,
                                 known_attributes, left_out_text, no_faces_text, parse_reference, reference_proposals,
                                 reference_scope_notes,
                                 small_sample_references, uniform_reference, unmeasured_representation,
                                 untouched_reference)
from labeling.pages.common import get_settings, get_store, plain, require_editor
from labeling.queries import audit_stamp, store_overview

LABELS = {"gender": "Gender", "ethnicity": "Ethnicity", "decade": "Birth decade", "country": "Country"}
REPORTS = "reports"  # under the data folder
HTML_CACHE_KEY = "_bias_html_cache"  # (fingerprint, bytes): the HTML export is only rebuilt when the report changes
SHARE = "expected share"
# The flags come right after the group, pinned with it: the finding must not sit past the right
# edge of a wide table, where a narrow window clips it.
GROUP_COLUMNS = ["group", "flags", "classes", "faces", "class_share", "face_share", "approved_faces", "graded_faces",
                 "approved_share", "predicted_share", "accuracy", "unknown_rate", "purity", "small_sample"]
REPRESENTATION_COLUMNS = ["group", "flags", "classes", "faces", "share_of_known", "share_among_listed",
                          "reference_share", "representation_ratio"]
FLAGGED_COLUMNS = ["attribute", "group", "flags", "classes", "faces", "approved_faces", "graded_faces", "small_sample"]
PERCENT = ["class_share", "face_share", "approved_share", "predicted_share", "accuracy", "unknown_rate", "purity",
           "share_of_known", "share_among_listed", "reference_share"]
COLUMN_CONFIG = {"attribute": st.column_config.TextColumn("attribute", pinned=True),
                 "group": st.column_config.TextColumn("group", pinned=True),
                 "flags": st.column_config.TextColumn("flags", pinned=True, width="medium",
                                                      help="The four-fifths rules this group fails")}
COUNT_RULE = ("A class with several ethnicities (k values) counts as 1/k of a class in each of its groups, and so "
              "do its faces: counts can be fractional, they add up to the attribute's classes and faces, and every "
              "share or rate is a ratio of these counts.")
FLAG_BACKGROUND = "background-color: #fbd5d5; color: #7f1d1d"


# -- loading (cached until the store changes) ---------------------------------------------------
def store_stamp() -> tuple:
    """Cheap numbers that change whenever the store does (every write is an audit event; ingest adds faces)."""
    store = get_store()
    with store() as session:
        events = audit_stamp(session)
    overview = store_overview(store)
    return (*events, overview["faces"], overview["classes"])


@st.cache_data(show_spinner="Reading the store ...", max_entries=4)
def load_inputs(url: str, stamp: tuple) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """(faces, classes, cluster stats) for the audit: explorer.audit_inputs.read_audit_inputs, cached
    until the store changes."""
    return read_audit_inputs(get_store())


# -- the editor's reference distribution -----------------------------------------------------
def reference_editor(attribute: str, groups: list[str]) -> dict[str, float] | None:
    """The table of group -> expected share for one attribute (uniform over its known groups to
    start with); None, after saying why, when what the editor typed is not a distribution. The groups
    it lists that the data lacks are named once the report exists (`absent_warning`)."""
    start = reference_rows(attribute, groups)  # may rebuild the table, with a new version
    # Reset = a new key: the browser keeps a data editor's edits for as long as its key lives.
    version = st.session_state.get(f"_bias_reference_version_{attribute}", 0)
    key = f"bias_reference_{attribute}" + (f"_v{version}" if version else "")
    default = pd.DataFrame({"group": [g for g, _ in start], SHARE: [v for _, v in start]})
    st.markdown(f"**Reference distribution: {LABELS[attribute].lower()}**")
    st.caption("The share of each group you expect among classes with a known value (population, user base, "
               "a target...). Any non-negative weights or percentages: they are normalised to sum to 1 over the "
               "groups listed. Add a row for a group the dataset lacks. A group left out has no reference, and the "
               "listed groups are then compared by their share among the listed groups only (share_among_listed): "
               "one group at 10 alone is 100% of the groups listed, so list the others to expect it at 10%.")
    rows = st.data_editor(default, key=key, num_rows="dynamic", hide_index=True, width="stretch",
                          column_config={"group": st.column_config.TextColumn("group"),
                                         SHARE: st.column_config.NumberColumn(SHARE, format="%.3f")})
    st.session_state[f"_bias_reference_typed_{attribute}"] = list(zip(rows["group"].tolist(), rows[SHARE].tolist()))
    st.button("Reset to equal shares", key=f"bias_reference_reset_{attribute}", on_click=reset_reference,
              args=(attribute, version))
    if note := st.session_state.get(f"_bias_reference_note_{attribute}"):
        st.info(plain(note))
    try:
        reference = parse_reference(rows, share_col=SHARE, attribute=attribute)
    except ValueError as exc:
        # the message quotes the group names the editor typed: shown as typed, never as markdown
        st.error(plain(f"Invalid reference for {LABELS[attribute].lower()}: {exc}. Representation is shown without "
                       "a reference until it is fixed."))
        return None
    return reference


def absent_warning(report: AuditReport, attribute: str) -> None:
    """Name the groups of the reference that no class belongs to, and whether they are flagged: the report
    decides per attribute (`representation_note`), since by faces one attribute can have nothing to count
    (no face of a class with a known gender) while another is measured, and a page-wide guess said
    "flagged" of groups the report did not flag."""
    rows = report.groups(attribute)
    absent = sorted(rows.loc[(rows["classes"] == 0) & (rows["reference_share"] > 0), "group"].astype(str))
    if not absent:
        return
    note = unmeasured_representation(rows).get(attribute)
    st.warning(plain(f"In the reference but absent from the dataset (no class at all): {', '.join(absent)}. "
                     f"{'It is' if len(absent) == 1 else 'Each is'} shown with 0 classes"
                     + (f"; {note}, so {'it is not' if len(absent) == 1 else 'none is'} flagged." if note else
                        " and flagged for representation.")))


def reference_rows(attribute: str, groups: list[str]) -> list[tuple]:
    """The (group, share) rows the reference table starts from: equal shares, until the set of groups
    changes under an editor's typed shares (another editor adds a class of a new group). Then the
    table is rebuilt from what was typed, by group name (`carried_reference`), under a new key, so
    that no edit of the old table lands on another row, and the page says what changed: a silent
    return to equal shares would drop the editor's shares and the flags they raise.

    The base remembers which rows the page proposed (equal shares, a new group's fill) as opposed to
    the editor's: a carried table left as it is still holds the editor's shares, so the next change of
    groups carries it again instead of taking it for an untouched table."""
    base_key, typed_key = f"_bias_reference_base_{attribute}", f"_bias_reference_typed_{attribute}"
    base = st.session_state.get(base_key)  # (groups, rows, proposed rows: group -> share)
    if base is not None and base[0] == tuple(groups):
        return base[1]
    typed = st.session_state.get(typed_key)
    note = None
    if base is None or untouched_reference(typed, base[1], base[2], attribute):  # nothing typed: equal shares of now
        rows = list(uniform_reference(groups).items())
        proposed = dict(rows)
    else:
        rows, new = carried_reference(typed, dict(base[1]), groups, proposed=base[2], attribute=attribute)
        proposed = reference_proposals(rows, base[2], new, attribute)
        added = f" New: {', '.join(new)}, at the mean of your shares (edit them)." if new else ""
        note = (f"The {LABELS[attribute].lower()} groups in the data changed: the reference keeps the shares you "
                f"entered, by group.{added}")
    if base is not None:
        version_key = f"_bias_reference_version_{attribute}"
        st.session_state[version_key] = st.session_state.get(version_key, 0) + 1
    st.session_state[base_key] = (tuple(groups), rows, proposed)
    st.session_state[f"_bias_reference_note_{attribute}"] = note
    return rows


def reset_reference(attribute: str, version: int) -> None:
    """"Reset to equal shares": a new table of equal shares (new key), nothing carried over."""
    for name in ("base", "typed", "note"):
        st.session_state.pop(f"_bias_reference_{name}_{attribute}", None)
    st.session_state[f"_bias_reference_version_{attribute}"] = version + 1


# -- showing the report ------------------------------------------------------------------------
def highlight(table: pd.DataFrame, flagged: pd.Series):
    """Flagged rows in red, shares as percentages: the finding must be the first thing one sees."""
    percent = [c for c in PERCENT if c in table.columns]
    styles = np.where(flagged.to_numpy()[:, None], FLAG_BACKGROUND, "")
    styler = table.style.apply(lambda _: pd.DataFrame(np.broadcast_to(styles, table.shape), index=table.index,
                                                      columns=table.columns), axis=None)
    ratios = {c: "{:.2f}" for c in table.columns if c.endswith("_ratio")}
    counts = {c: count_text for c in COUNT_COLUMNS if c in table.columns}  # 7, 6.5: not 7.000000
    return styler.format({**{c: "{:.1%}" for c in percent}, **ratios, **counts}, na_rep="")


def show_table(table: pd.DataFrame, columns: list[str], key: str) -> None:
    rows = table.reset_index(drop=True)
    st.dataframe(highlight(rows[columns], rows["below_four_fifths"]), key=key, hide_index=True, width="stretch",
                 column_config=COLUMN_CONFIG)


def show_attribute(report: AuditReport, attribute: str, figures: dict) -> None:
    rows = report.groups(attribute)
    flagged = rows[rows["below_four_fifths"]]
    unknown = rows.loc[rows["group"] == "unknown", "class_share"]
    if len(unknown) and unknown.iloc[0] > 0:
        n = rows.loc[rows["group"] == "unknown", "classes"].iloc[0]
        st.caption(f"{counted(n, 'class', 'classes')} ({unknown.iloc[0]:.0%}) {'has' if n == 1 else 'have'} no "
                   f"{LABELS[attribute].lower()}: the group \"unknown\", shown as found, never the best-served group "
                   "nor part of the representation shares.")
    if len(flagged):  # group names are data (an editor may type any reference group): shown as typed
        named = ", ".join(f"**{plain(str(g))}** ({plain(str(f))})" for g, f in zip(flagged["group"], flagged["flags"]))
        st.error(f"Below four fifths: {named}")
    small = small_sample_references(rows).get(attribute)
    if small:
        metrics = " and ".join(m.replace("_", " ") for m in small)
        st.warning(f"No group with a value has {report.summary['min confirmed faces per group']} confirmed faces "
                   f"graded, so the best-served group for {metrics} is itself a small sample: its comparisons (and "
                   "flags, marked small_sample) rest on few faces.")
    st.markdown("**Groups**")
    show_table(rows, GROUP_COLUMNS, f"bias_groups_{attribute}")
    st.caption("Accuracy and unknown rate are measured on editor-confirmed labels (approved or relabeled): each face "
               "is classified by the nearest class centroid and the open-set threshold with its own GIF or photo "
               "held out of its class (a face the model was fitted on would only test its memory); "
               "purity on the confirmed faces of each class, in the embedding space. A group with fewer than the "
               "minimum of graded confirmed faces (graded_faces) is marked small_sample: its rates are noisy."
               + (" " + COUNT_RULE if attribute in MULTI_VALUED else ""))
    charts = [(k, f) for k, f in figures.items() if k.split("/")[0] == attribute]
    for i in range(0, len(charts), 2):
        for col, (k, fig) in zip(st.columns(2), charts[i:i + 2]):
            col.plotly_chart(fig, key=f"bias_chart_{k.replace('/', '_')}", width="stretch")
    st.markdown("**Representation against the reference**")
    if unmeasured := unmeasured_representation(rows).get(attribute):
        st.warning(f"{unmeasured[0].upper()}{unmeasured[1:]}: no share to compare with the reference.")
    if note := reference_scope_notes(report.table, report.reference).get(attribute):
        st.info(plain(f"{note[0].upper()}{note[1:]}."))  # group names are data: shown as typed
    show_table(rows[rows["group"] != "unknown"], REPRESENTATION_COLUMNS, f"bias_representation_{attribute}")


def show_overview(report: AuditReport, purity_measured: bool, missing: list[str]) -> None:
    summary = report.summary
    metrics = st.columns(5)
    metrics[0].metric("Classes", summary["classes"])
    metrics[1].metric("Faces in a class", summary["faces in a class"])
    metrics[2].metric("Confirmed faces", summary["faces confirmed by an editor"])
    metrics[3].metric("Purity measured", "yes" if purity_measured else "no",
                      help="Needs classes with at least two confirmed faces that have embeddings")
    metrics[4].metric("Groups flagged", summary["groups flagged"])
    notes = ["Retired classes and their faces are left out (they are not exported)."]
    if missing:
        notes.insert(0, f"No class has a value for {', '.join(missing)}: not audited.")
    st.caption(" ".join(notes))
    if summary["small-sample references"] != "none":  # the report worked it out already
        st.warning(plain(f"Small-sample references: {summary['small-sample references']}."))
    flagged = report.flagged()
    st.subheader("Flagged groups")
    # said whether or not other groups are flagged: an attribute that compared nothing is no clean pass
    unmeasured = [f"{n[0].upper()}{n[1:]}." for n in unmeasured_representation(report.table).values()]
    passed = "of the best-served group or of its reference share."
    if unmeasured:
        st.warning(plain(" ".join(unmeasured) + " Nothing is compared there, so nothing there is flagged for "
                         "representation." + ("" if len(flagged) else
                                              f" No group measured is below {report.threshold:.0%} {passed}")))
    if len(flagged):
        st.dataframe(highlight(flagged[FLAGGED_COLUMNS], flagged["below_four_fifths"]), key="bias_flagged",
                     hide_index=True, width="stretch", column_config=COLUMN_CONFIG)
    elif not unmeasured:
        st.success(f"No group is below {report.threshold:.0%} {passed}")


def report_bytes(report: AuditReport, offline: bool) -> tuple[bytes, bytes]:
    """CSV and HTML of the report, written by AuditReport.to_csv / to_html into a temporary folder.
    The HTML (with plotly.js inlined it is ~4.6 MB) is rebuilt only when the report changes: its table, summary,
    reference or threshold (which the HTML states and draws its lines at, and which is in neither the table
    nor the summary: moving it without changing a flag would otherwise serve the earlier page)."""
    with tempfile.TemporaryDirectory(prefix="giflens-bias-") as tmp:
        csv = report.to_csv(Path(tmp) / "bias-audit.csv").read_bytes()
        inputs = [report.summary, report.reference, report.threshold, report.attributes, offline]
        fingerprint = hashlib.sha256(csv + json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()
        cached = st.session_state.get(HTML_CACHE_KEY)
        if cached and cached[0] == fingerprint:
            return csv, cached[1]
        js = "inline" if offline else "cdn"
        page = report.to_html(Path(tmp) / "bias-audit.html", include_plotlyjs=js).read_bytes()
    st.session_state[HTML_CACHE_KEY] = (fingerprint, page)
    return csv, page


def save_report(report: AuditReport, data_dir: Path, offline: bool) -> list[Path]:
    """<data folder>/reports/bias-audit-<UTC time>.csv and .html; never overwrites an earlier report."""
    folder = Path(data_dir) / REPORTS
    base = stem = f"bias-audit-{time.strftime('%Y%m%d-%H%M%SZ', time.gmtime())}"
    n = 1
    while (folder / f"{stem}.csv").exists() or (folder / f"{stem}.html").exists():
        n += 1
        stem = f"{base}-{n}"
    return [report.to_csv(folder / f"{stem}.csv"),
            report.to_html(folder / f"{stem}.html", include_plotlyjs="inline" if offline else "cdn")]


# -- the page -------------------------------------------------------------------------------------
settings = get_settings()
st.title("Bias audit")
faces, classes, stats = load_inputs(settings.resolved_database_url, store_stamp())
if classes.empty:
    st.info("No classes in the store yet, so there is nothing to audit. Import a class list and its "
            "demographic attributes (`giflens import classes ...`, `giflens import attributes ...`) or add "
            "classes on the Classes page.")
    st.stop()
if not known_attributes(classes):
    nobody = "No class" if len(classes) == 1 else f"None of the {len(classes)} classes"
    st.info(f"{nobody} has a demographic attribute (gender, ethnicity, birth year, country) yet. Import them "
            "with `giflens import attributes <csv>` or set them on the Classes page.")
    st.stop()

left, middle, right, far = st.columns(4)
threshold = left.number_input("Flag below this share of the best group", min_value=0.5, max_value=1.0, value=0.8,
                              step=0.05, key="bias_threshold", help="0.8: the four-fifths rule")
min_faces = middle.number_input("Minimum graded faces per group", min_value=1, value=5, step=1,
                                key="bias_min_faces", help="Graded confirmed faces; fewer: the group's rates are marked small_sample")
basis = right.radio("Representation counts", list(REPRESENTATION_BASES), horizontal=True, key="bias_basis",
                    help="Share of classes (people) or of faces in each group")
with_faces = far.toggle("Only classes with faces", value=True, key="bias_with_faces",
                        help="A class without any face (a roster entry from an attributes file, say) is not in "
                             "the training data")
offline = far.toggle("HTML works offline", value=True, key="bias_html_offline",
                     help="Embed plotly.js in the HTML report (about 4.6 MB); off: load it from a CDN")

has_faces = classes_with_faces(faces, classes)
by_faces = REPRESENTATION_BASES[basis] == "face_share"
scope = ""
if with_faces:
    if not has_faces.any():
        # said in the report too, which is read without this page
        scope = no_faces_text(len(classes), by_faces, 'choose "classes" under "Representation counts"')
        (st.warning if by_faces else st.info)(f"{scope[0].upper()}{scope[1:]}.")
    else:
        classes = classes[has_faces].reset_index(drop=True)
attributes = known_attributes(classes)
if not attributes:
    nobody = "The class with faces has no" if len(classes) == 1 else \
        f"None of the {len(classes)} classes with faces has a"
    st.info(f"{nobody} demographic attribute yet: set them on the Classes page, or turn off \"Only classes with "
            "faces\" to audit the whole catalog.")
    st.stop()
left_out = int((~has_faces).sum()) if with_faces and has_faces.any() else 0
if left_out:
    st.caption(f"{counted(left_out, 'class', 'classes')} without any face {'is' if left_out == 1 else 'are'} left out.")

overview = st.container()  # filled once the report exists; shown above the tabs
tabs = dict(zip(attributes, st.tabs([LABELS[a] for a in attributes])))
results, references, absent_notes = {}, {}, {}
for attribute, tab in tabs.items():
    with tab:
        results[attribute] = st.container()
        groups = class_groups(classes, [attribute])["group"]
        known = sorted(set(groups) - {"unknown"})  # sorted: the editor's rows must not move between runs
        reference = reference_editor(attribute, known)
        if reference is not None:
            references[attribute] = reference
        absent_notes[attribute] = st.container()  # filled from the report, below

report = audit_report(faces, classes, attributes, reference=references, cluster_stats=stats, threshold=threshold,
                      min_faces=int(min_faces), representation_basis=REPRESENTATION_BASES[basis],
                      left_out=left_out_text(left_out, 'turn off "Only classes with faces" to include them'),
                      scope=scope)
missing = [LABELS[a].lower() for a in ("gender", "ethnicity", "decade", "country") if a not in attributes]
with overview:
    show_overview(report, stats is not None and bool(stats["purity"].notna().any()), missing)
    graded = face_groups(faces)
    unseen = int((graded["confirmed"] & graded["correct"].isna()).sum())
    if unseen:  # not "0% accurate": a class needs faces outside the face's own GIF or photo to be graded
        st.caption(f"{counted(unseen, 'confirmed face')} {'is' if unseen == 1 else 'are'} not graded for accuracy: "
                   "a face is graded when it has an embedding and its class has confirmed faces in other GIFs or "
                   "photos, in at least two classes.")

figures = report.figures()
for attribute in attributes:
    with results[attribute]:
        show_attribute(report, attribute, figures)
    with absent_notes[attribute]:
        absent_warning(report, attribute)

st.subheader("Export")
csv_bytes, html_bytes = report_bytes(report, offline)
cols = st.columns(3)
cols[0].download_button("Download CSV", csv_bytes, file_name="bias-audit.csv", mime="text/csv",
                        key="bias_download_csv", on_click="ignore")
cols[1].download_button("Download HTML", html_bytes, file_name="bias-audit.html", mime="text/html",
                        key="bias_download_html", on_click="ignore")
# downloads are browsing; writing files on the server is a change like any other: signed-in editors only
if cols[2].button(f"Save to {REPORTS}/", key="bias_save", help=f"Into {Path(settings.data_dir) / REPORTS}") \
        and require_editor():
    saved = save_report(report, settings.data_dir, offline)
    st.success("Saved " + " and ".join(f"`{p}`" for p in saved))
