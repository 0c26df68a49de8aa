"""`giflens audit`: the app's bias audit written as CSV and HTML."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from labeling.cli import (DatabaseUrl, DataDir, _path_argument, _store_for, app, console, interruption_said,
                          make_settings, refuse, status_task)  # status_task: a spinner on a terminal, status lines in a log

if TYPE_CHECKING:
    import pandas as pd


def _parse_references(given: list[str]) -> dict[str, dict[str, float]]:
    """--reference gender=female:50,male:50 (shares as weights, normalised) -> {attribute: shares}.

    A comma separates pairs; a group whose name holds one is quoted as in a CSV line, and the whole value
    in single quotes for the shell (which would otherwise eat the double quotes):
    --reference 'country="Korea, Republic of":1,France:2' (the pairs are read as one CSV row)."""
    import csv

    import pandas as pd

    from explorer.bias_audit import ATTRIBUTES, parse_reference

    out: dict[str, dict[str, float]] = {}
    for text in given:
        attribute, sep, pairs = text.partition("=")
        attribute = attribute.strip().casefold()
        if not sep or attribute not in ATTRIBUTES or not pairs.strip():
            refuse(f"--reference {text!r}: expected ATTRIBUTE=GROUP:SHARE,GROUP:SHARE with ATTRIBUTE one of "
                   f"{', '.join(ATTRIBUTES)}")
        if attribute in out:  # a second option would silently replace the first
            refuse(f"--reference {text!r}: {attribute} is given twice; give each attribute once")
        try:  # a newline outside quotes is no CSV row: refused like any other bad value, not a traceback
            rows = [p.rpartition(":") for p in next(csv.reader([pairs], skipinitialspace=True))]
        except csv.Error as exc:
            reason = str(exc).split(" - ")[0]  # not csv's advice on opening files
            refuse(f"--reference {text!r}: {reason}; give the pairs on one line, as GROUP:SHARE,GROUP:SHARE")
        if any(not sep for _, sep, _ in rows):
            refuse(f"--reference {text!r}: every group needs a share, as GROUP:SHARE; a comma separates pairs, so "
                   "quote a group that holds one, and the whole value for the shell: "
                   """--reference 'country="Korea, Republic of":1'""")
        try:  # rows, not a dict: a group listed twice is refused by parse_reference, not silently dropped
            out[attribute] = parse_reference(pd.DataFrame({"group": [g for g, _, _ in rows],
                                                           "share": [v for _, _, v in rows]}), attribute=attribute)
        except ValueError as exc:
            refuse(f"--reference {text!r}: {exc}")
    return out


def without_faces_text(with_faces: pd.DataFrame, catalog: pd.DataFrame, what: str,
                       attributes: list[str] | None = None) -> str:
    """"none of the 3 classes with faces has a value for country; 2 classes without faces do (--all-classes to
    audit them)": why an audit of the classes with faces has nothing to say, worded as the page words it.
    Why: "the store has no class with ..." sent an editor to import attributes the store already holds, on
    roster classes (no face yet) that the audit leaves out by default."""
    from explorer.bias_audit import UNKNOWN, class_groups, counted, known_attributes

    groups = class_groups(catalog, attributes or known_attributes(catalog))
    owners_of = set(groups.loc[groups["group"] != UNKNOWN, "class"]) - set(with_faces["class"].astype(str))
    n, m = len(with_faces), len(owners_of)
    nobody = "the class with faces has no" if n == 1 else f"none of the {n} classes with faces has"
    owners = f"{counted(m, 'class', 'classes')} without faces {'does' if m == 1 else 'do'}"
    return f"{nobody} {what.removeprefix('a ') if n == 1 else what}; {owners} (--all-classes to audit them)"


GRADED_FLAGS = {"accuracy", "recognised_rate"}  # the flags measured on graded faces, which small_sample counts


def _rests_on_few_faces(row) -> bool:
    """Whether a flagged row's "(small sample)" note applies: small_sample speaks of the graded faces that
    accuracy and recognised rate are measured on. A representation flag is a share of classes (or faces)
    and purity is measured on every confirmed face of a class (it never falls back to a small-sample
    reference): on those flags alone the note would cast a doubt they do not have."""
    return bool(row.small_sample) and bool(set(row.flags.split("; ")) & GRADED_FLAGS)


@app.command("audit")
def audit_command(
    out_dir: Annotated[Path, _path_argument("Folder for bias-audit.csv and bias-audit.html (created if missing).",
                                            "OUT_DIR", "nothing written")],
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
    threshold: Annotated[float, typer.Option(
        "--threshold", min=0.5, max=1.0, help="Flag a group below this share of the best-served group.")] = 0.8,
    min_faces: Annotated[int, typer.Option(
        "--min-faces", min=1, help="Fewer graded confirmed faces in a group: its flags are marked small_sample.")] = 5,
    basis: Annotated[str, typer.Option("--basis", help="Representation counts classes (people) or faces.")] = "classes",
    reference: Annotated[Optional[list[str]], typer.Option(
        "--reference", help="Expected shares, e.g. gender=female:50,male:50 (default: equal shares of the known "
                            "groups); repeat per attribute.")] = None,
    all_classes: Annotated[bool, typer.Option(
        "--all-classes", help="Audit every class, also those without any face (roster entries).")] = False,
    fail_on_flags: Annotated[bool, typer.Option(
        "--fail-on-flags", help="Exit 3 when a group is flagged (for scheduled audits).")] = False,
) -> None:
    """The app's bias audit as CSV and HTML; with --fail-on-flags, exit 3 when a group is flagged.

    Groups per gender, ethnicity, birth decade and country: accuracy graded held out, purity,
    representation against a reference, groups below four fifths of the best-served flagged."""
    from rich.markup import escape

    from explorer.audit_inputs import read_audit_inputs
    from explorer.bias_audit import (
        REPRESENTATION_BASES,
        audit_report,
        class_groups,
        classes_with_faces,
        known_attributes,
        left_out_text,
        no_faces_text,
        reference_scope_notes,
        uniform_reference,
        unmeasured_representation,
    )

    if basis not in REPRESENTATION_BASES:
        refuse(f"--basis must be classes or faces, got {basis!r}")
    given = _parse_references(reference or [])
    settings = make_settings(data_dir=data_dir, database_url=database_url)
    store = _store_for(settings, create=False)

    # no count: the grading is a few vectorised passes; Ctrl-C there says nothing was written, exit 130
    with interruption_said(lambda: f"nothing written to {out_dir} (the audit only reads the store)"), \
            status_task("audit", "reading the store and grading confirmed faces"):
        faces, classes, stats = read_audit_inputs(store)
    left_out = scope = ""
    catalog = classes
    if not all_classes and len(classes):
        has_faces = classes_with_faces(faces, classes)
        if has_faces.any():
            left_out = left_out_text(int((~has_faces).sum()), "--all-classes to include them")
            classes = classes[has_faces].reset_index(drop=True)
        else:  # none with a face: the whole catalog is audited (class counts only), and the run says so
            scope = no_faces_text(len(classes), basis == "faces", "--basis classes counts classes")
    attributes = known_attributes(classes) if len(classes) else []
    if not attributes:
        if classes.empty:
            refuse("the store has no classes: import them with `giflens import classes` and their attributes with "
                   "`giflens import attributes CSV`")
        if len(catalog) > len(classes) and known_attributes(catalog):
            refuse(without_faces_text(classes, catalog, "a demographic attribute (gender, ethnicity, birth year, "
                                                        "country)"))
        refuse("the store has no class with a demographic attribute (gender, ethnicity, birth year, country): "
               "import them with `giflens import attributes CSV`")
    unused = sorted(set(given) - set(attributes))
    if unused:
        what = f"a value for {', '.join(unused)}"
        if len(catalog) > len(classes) and set(unused) <= set(known_attributes(catalog)):
            refuse(f"--reference: {without_faces_text(classes, catalog, what, unused)}")
        refuse(f"--reference: no class has {what}")
    references = {a: given.get(a) or uniform_reference(class_groups(classes, [a])["group"]) for a in attributes}
    report = audit_report(faces, classes, attributes, reference=references, cluster_stats=stats,
                          threshold=threshold, min_faces=min_faces,
                          representation_basis=REPRESENTATION_BASES[basis], left_out=left_out, scope=scope)
    out_dir = Path(out_dir)
    try:
        written = [report.to_csv(out_dir / "bias-audit.csv"), report.to_html(out_dir / "bias-audit.html")]
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot write to {escape(str(out_dir))}: {escape(exc.strerror or str(exc))}",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    flagged = report.flagged()
    for row in flagged.itertuples():
        small = " (absent from the data)" if row.classes == 0 else " (small sample)" if _rests_on_few_faces(row) else ""
        console.print(f"[yellow]flagged[/yellow] {row.attribute} {escape(str(row.group))}: {row.flags}{small}",
                      highlight=False, soft_wrap=True)
    for attr, note in reference_scope_notes(report.table, references).items():
        console.print(f"[yellow]note[/yellow] reference of {attr}: {escape(note)}", highlight=False, soft_wrap=True)
    unmeasured = unmeasured_representation(report.table)
    for note in unmeasured.values():  # nothing flagged there because nothing was compared: not a clean pass
        console.print(f"[yellow]note[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
    s = report.summary
    if s.get("small-sample references", "none") != "none":
        console.print(f"[yellow]note[/yellow] {escape(str(s['small-sample references']))}", highlight=False, soft_wrap=True)
    typer.echo(f"audit of {s['classes']} classes, {s['faces in a class']} faces ({s['faces confirmed by an editor']} "
               f"confirmed) over {', '.join(attributes)}: {len(flagged)} group(s) flagged"
               f"{' (representation not measured for ' + ', '.join(unmeasured) + ')' if unmeasured else ''}; "
               f"{left_out + '; ' if left_out else ''}{scope + '; ' if scope else ''}wrote "
               f"{written[0]} and {written[1]}")
    if fail_on_flags and len(flagged):
        raise typer.Exit(3)
