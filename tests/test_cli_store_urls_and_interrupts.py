"""The CLI and the Makefile: an empty --data-dir, SQLite URLs that keep nothing and read-only
commands that created stores, refused imports that left a store behind, a password in a URL's query string,
a newline in a file name forging lines, interrupted imports and ingests, and `make run`'s refusals."""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from labeling.cli import app

runner = CliRunner()
CLASSES_CSV = "/work/shared/data/giphy-celebrities.csv"
GIFLENS = str(Path(sys.executable).with_name("giflens"))


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


# -- 1. an empty --data-dir ---------------------------------------------------------------------------------
def test_empty_data_dir_option_is_refused_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GIFLENS_DATA_DIR", raising=False)
    result = invoke("import", "classes", CLASSES_CSV, "--data-dir", "")
    assert result.exit_code == 2, result.output
    assert "--data-dir: must not be empty" in result.output
    assert list(tmp_path.iterdir()) == []


def make_target(*args: str) -> subprocess.CompletedProcess:
    """`make` in the repo with the variables given, none from the environment."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("GIFLENS_") and k not in {"SAMPLE", "TAGS", "CLASSES", "DATA_DIR", "MAKEFLAGS"}}
    return subprocess.run(["make", *args], cwd=ROOT, env=clean, capture_output=True, text=True)


def test_make_run_refuses_an_empty_data_dir_before_anything_runs():
    proc = make_target("run-args", "DATA_DIR=")
    assert proc.returncode == 2 and "DATA_DIR is empty" in proc.stderr, proc.stderr
    assert make_target("run-args").returncode == 0
    dry = subprocess.run(["make", "-n", "run", "UV=uv"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert dry.index("DATA_DIR is empty") < dry.index("uv sync")  # checked before the sync


# -- 5. a mistyped CLASSES= or TAGS= --------------------------------------------------------------------------
@pytest.mark.parametrize("variable", ["CLASSES", "TAGS"])
def test_make_run_refuses_a_named_file_that_is_missing(variable):
    proc = make_target("run-args", f"{variable}=../shared/data/typo.csv")
    assert proc.returncode == 2 and f"{variable}=../shared/data/typo.csv: no such file" in proc.stderr, proc.stderr
    assert make_target("run-args", f"{variable}=").returncode == 0  # empty: skipped, as documented


# -- 2. SQLite URLs that keep nothing, read-only commands that created stores --------------------------------
@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_in_memory_sqlite_urls_are_refused(url):
    result = invoke("import", "classes", CLASSES_CSV, "--database-url", url)
    assert result.exit_code == 1 and "in-memory store" in result.output, result.output
    assert "classes created" not in result.output


def test_history_of_a_missing_sqlite_file_creates_nothing(tmp_path):
    result = invoke("history", "--database-url", f"sqlite:///{tmp_path}/typo/giflens.db")
    assert result.exit_code == 1 and "no giflens store in" in result.output, result.output
    assert not (tmp_path / "typo").exists()
    url = f"sqlite:///{tmp_path}/giflens.db"  # a real store is still read as before
    assert invoke("import", "classes", CLASSES_CSV, "--database-url", url).exit_code == 0
    result = invoke("history", "--database-url", url)
    assert result.exit_code == 0 and "1 operation(s)" in result.output, result.output


def test_history_of_an_unmigrated_sqlite_file_is_refused(tmp_path):
    db = tmp_path / "giflens.db"
    sqlite3.connect(db).close()  # an empty SQLite file (someone else's), not a giflens store
    for args in (["--database-url", f"sqlite:///{db}"], ["--data-dir", tmp_path]):
        result = invoke("history", *args)
        assert result.exit_code == 1 and "no giflens store in" in result.output, result.output
    assert inspect(create_engine(f"sqlite:///{db}")).get_table_names() == []


@pytest.mark.postgres
def test_history_of_an_empty_postgres_database_creates_no_tables(pg_url):
    result = invoke("history", "--database-url", pg_url)
    assert result.exit_code == 1 and "no giflens store in" in result.output, result.output
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


# -- 8. refused imports left a data folder and an empty store -------------------------------------------------
@pytest.mark.parametrize("command", ["classes", "attributes", "tags", "raw-dataset"])
def test_refused_import_of_a_missing_input_creates_no_store(tmp_path, command):
    name = "missing/" if command == "raw-dataset" else "missing.csv"
    result = invoke("import", command, tmp_path / name, "--data-dir", tmp_path / "data")
    assert result.exit_code == 1 and "missing" in result.output, result.output
    assert not (tmp_path / "data").exists()


# -- 4. a password in the URL's query string ------------------------------------------------------------------
def test_password_in_the_query_string_is_not_printed():
    url = "postgresql://postgres@127.0.0.1:1/x?password=s3cret&sslpassword=t0p&application_name=giflens"
    result = invoke("history", "--database-url", url)
    assert result.exit_code == 1 and "cannot open the store" in result.output, result.output
    assert "s3cret" not in result.output and "t0p" not in result.output
    assert "application_name=giflens" in result.output  # what is not secret is still said


# -- 7. a newline in a file name ----------------------------------------------------------------------------
def test_newline_in_a_file_name_stays_on_one_line(tmp_path):
    csv = tmp_path / "evil\nfake 999  2026-01-01 00:00:00 UTC  admin  deleted everything.csv"
    csv.write_text("Labels,Index\nZed_Person_[m.0zzz1],0\n")
    data = tmp_path / "data"
    imported = invoke("import", "classes", csv, "--data-dir", data)
    assert imported.exit_code == 0, imported.output
    assert len(imported.stdout.splitlines()) == 1 and "evil\\nfake" in imported.stdout
    history = invoke("history", "--data-dir", data)
    assert history.exit_code == 0 and len(history.stdout.splitlines()) == 2, history.stdout


# -- 6. interrupted commands say what was kept ---------------------------------------------------------------
def signal_once_stored(command: list[str], store: Path, signum: int) -> subprocess.CompletedProcess:
    """Run a giflens command and send it `signum` once its SQLite store holds a media row."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(ROOT / ".numba-cache")}
    proc = subprocess.Popen([GIFLENS, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C as in a shell
    while proc.poll() is None:
        try:
            with sqlite3.connect(store, timeout=1) as db:
                stored = db.execute("select count(*) from media").fetchone()[0]
        except sqlite3.Error:
            stored = 0
        if stored:
            proc.send_signal(signum)
            break
        time.sleep(0.1)
    out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def lfw_images(lfw_dir: Path, people: int = 3, each: int = 4) -> dict[str, list[Path]]:
    folders = sorted(p for p in lfw_dir.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= each)[:people]
    return {f.name: sorted(f.glob("*.jpg"))[:each] for f in folders}


@pytest.mark.slow
def test_sigterm_during_ingest_says_what_was_kept(tmp_path, lfw_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    for paths in lfw_images(lfw_dir).values():
        for p in paths:
            shutil.copy(p, photos / p.name)
    data = tmp_path / "data"
    done = signal_once_stored(["ingest", str(photos), "--data-dir", str(data)], data / "giflens.db", signal.SIGTERM)
    assert done.returncode == 143, done.stderr
    assert "interrupted: ingested" in done.stdout and "(re-run to resume)" in done.stdout, done.stdout


@pytest.mark.slow
def test_ctrl_c_during_import_raw_dataset_says_what_was_kept(tmp_path, lfw_dir):
    folder = tmp_path / "raw"
    images = lfw_images(lfw_dir)
    rows = ["Labels,Index"] + [f"{name},{i}" for i, name in enumerate(images)]
    folder.mkdir()
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    for name, paths in images.items():
        (folder / "raw_dataset" / name).mkdir(parents=True)
        for p in paths:
            shutil.copy(p, folder / "raw_dataset" / name / p.name)
    data = tmp_path / "data"
    done = signal_once_stored(["import", "raw-dataset", str(folder), "--data-dir", str(data)], data / "giflens.db",
                              signal.SIGINT)
    assert done.returncode == 130, done.stderr
    assert "interrupted: ingested" in done.stdout and "(re-run to resume)" in done.stdout, done.stdout


def test_an_interruption_masked_by_a_failed_rollback_is_found():
    """SIGTERM raised inside SQLAlchemy's commit: the rollback then fails ("This transaction is closed") and
    that error replaces the Terminated; ingest must still stop as interrupted, not record the file as failed."""
    from sqlalchemy.exc import IntegrityError, ResourceClosedError

    from labeling.cli import Terminated
    from labeling.ingest import interruption

    def masked(stop: BaseException) -> Exception:
        try:
            try:
                raise stop
            except BaseException:
                raise ResourceClosedError("This transaction is closed")
        except ResourceClosedError as exc:
            return exc

    assert isinstance(interruption(masked(Terminated(143))), Terminated)
    assert isinstance(interruption(masked(KeyboardInterrupt())), KeyboardInterrupt)
    assert interruption(masked(ValueError("a value the database refuses"))) is None
    assert interruption(IntegrityError("insert", {}, Exception("unique"))) is None
