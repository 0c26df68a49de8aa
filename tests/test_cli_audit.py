"""`giflens audit`: the Bias audit page's report from the command line, on a store imported from
GIPHY's training layout (real LFW photos) with real attributes."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labeling.cli import app

runner = CliRunner()
PEOPLE = {"Hugo_Chavez": "male", "Serena_Williams": "female", "Ariel_Sharon": "male", "Colin_Powell": "male"}


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def audited_store(tmp_path_factory, lfw_dir: Path) -> list[str]:
    """4 people x 3 photos imported as approved labels, with their gender; SQLite (the store
    itself is tested on PostgreSQL elsewhere: this is about the report)."""
    root = tmp_path_factory.mktemp("audit")
    raw = root / "giphy"
    for person in PEOPLE:
        (raw / "raw_dataset" / person).mkdir(parents=True)
        for photo in sorted((lfw_dir / person).glob("*.jpg"))[:3]:
            (raw / "raw_dataset" / person / photo.name).write_bytes(photo.read_bytes())
    (raw / "labels.csv").write_text("Label,Index\n" + "".join(f"{p},{i}\n" for i, p in enumerate(PEOPLE)))
    where = ["--data-dir", root / "data", "--database-url", f"sqlite:///{root / 'store.db'}"]
    assert invoke("audit", root / "empty", *where).exit_code == 1  # nothing to audit yet
    assert invoke("import", "raw-dataset", raw, *where).exit_code == 0
    attributes = root / "people.csv"
    attributes.write_text("name,gender\n" + "".join(f"{p},{g}\n" for p, g in PEOPLE.items()))
    assert invoke("import", "attributes", attributes, *where).exit_code == 0
    return [str(w) for w in where]


@pytest.mark.slow
def test_audit_writes_the_report_and_grades_imported_faces(audited_store, tmp_path):
    out = tmp_path / "report"
    result = invoke("audit", out, *audited_store)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (f"audit of 4 classes, 12 faces (12 confirmed) over gender: 1 group(s) flagged; "
                                     f"wrote {out / 'bias-audit.csv'} and {out / 'bias-audit.html'}")
    # equal shares expected by default: 1 woman of 4 people is below four fifths of 50%
    assert "flagged gender female: representation\n" in result.stderr  # a share of classes: no small-sample note
    rows = {r["group"]: r for r in csv.DictReader((out / "bias-audit.csv").open()) if r["attribute"] == "gender"}
    assert set(rows) == {"male", "female"}
    assert (float(rows["male"]["classes"]), float(rows["female"]["classes"])) == (3, 1)
    assert (float(rows["male"]["approved_faces"]), float(rows["female"]["approved_faces"])) == (9, 3)
    # imported photos have no stored prediction, yet every one is graded (held out of its class)
    for group in rows.values():
        assert 0.6 <= float(group["accuracy"]) <= 1.0 and group["unknown_rate"] != ""
    html = (out / "bias-audit.html").read_text(encoding="utf-8")
    assert "giflens bias audit" in html and "plotly" in html.lower()


@pytest.mark.slow
def test_the_reference_decides_representation_flags_and_can_fail_the_run(audited_store, tmp_path):
    out = tmp_path / "report"
    result = invoke("audit", out, *audited_store, "--fail-on-flags")
    assert result.exit_code == 3, result.output
    assert "1 group(s) flagged" in result.stdout and (out / "bias-audit.csv").exists()
    result = invoke("audit", out, *audited_store, "--reference", "gender=female:25,male:75", "--fail-on-flags")
    assert result.exit_code == 0, result.output
    assert "0 group(s) flagged" in result.stdout and "flagged" not in result.stderr
    for bad, message in [(["gender=female"], "needs a share"), (["religion=a:1"], "ATTRIBUTE one of"),
                         (["gender=unknown:1"], "'unknown' cannot"),
                         (["country=usa:1"], "no class has a value for country"),
                         (["gender=female:50,male:50,female:10"], "group 'female' is listed twice"),
                         (["gender=female:50,male:50", "gender=female:25,male:75"], "gender is given twice")]:
        refused = invoke("audit", tmp_path / "x", *audited_store, *(a for r in bad for a in ("--reference", r)))
        # one line and exit 1 like any bad input, not Typer's usage box
        assert refused.exit_code == 1, (bad, refused.output)
        lines = refused.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --reference") and message in lines[0], (bad, lines)
    basis = invoke("audit", tmp_path / "x", *audited_store, "--basis", "people")
    assert basis.exit_code == 1 and basis.stderr.splitlines() == ["error: --basis must be classes or faces, got 'people'"]
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_a_reference_group_the_data_lacks_is_flagged_as_absent(audited_store, tmp_path):
    result = invoke("audit", tmp_path / "report", *audited_store, "--reference", "gender=female:40,male:40,nonbinary:20",
                    "--fail-on-flags")
    assert result.exit_code == 3, result.output
    assert "flagged gender nonbinary: representation (absent from the data)" in result.stderr
