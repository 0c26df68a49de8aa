"""The `giflens import ...` and `giflens export` commands, end to end through the Typer app, on both stores."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from labeling.cli import _os_user, app
from labeling.db import open_store
from labeling.export import verify_export
from labeling.schema import AuditEvent, CelebrityClass, Export, FaceLabel, Media

runner = CliRunner()


@pytest.fixture(scope="module")
def cli_data_dir(tmp_path_factory) -> Path:
    """Embedding cache and crops shared by this module's tests (the store is per test: --database-url)."""
    return tmp_path_factory.mktemp("giflens-cli-data")


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def audit(store_url: str) -> list[tuple[str, str, int]]:
    with open_store(store_url)() as s:
        return [(e.operation, e.editor, e.n_entities) for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]


def test_import_classes_and_attributes(store_url, tmp_path, shared_data):
    where = ["--data-dir", tmp_path / "data", "--database-url", store_url]
    result = invoke("import", "classes", shared_data / "giphy-celebrities.csv", *where)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == ("import classes from giphy-celebrities.csv: 2306 classes created, 0 updated, "
                                     "0 unchanged (audit event 1)")
    assert audit(store_url) == [("import_classes", _os_user(), 2306)]

    again = invoke("import", "classes", shared_data / "giphy-celebrities.csv", *where)
    assert again.exit_code == 0 and again.stdout.strip().endswith("2306 unchanged (nothing changed)")

    result = invoke("import", "attributes", shared_data / "lfw-people.csv", *where, "--editor", "bob")
    assert result.exit_code == 0, result.output
    # LFW people already in GIPHY's list get attributes; the others become classes
    with open_store(store_url)() as s:
        overlap = s.scalar(select(func.count()).select_from(CelebrityClass).where(CelebrityClass.updated_by == "bob",
                                                                                  CelebrityClass.external_id.is_not(None)))
        total = s.scalar(select(func.count()).select_from(CelebrityClass))
        brody = s.scalars(select(CelebrityClass).where(CelebrityClass.name == "Adrien Brody")).one()
    assert total == 2306 + int(result.stdout.split(": ")[1].split(" classes created")[0])
    row = next(r for r in csv.DictReader((shared_data / "lfw-people.csv").open()) if r["name"] == "Adrien_Brody")
    assert overlap > 0 and (brody.gender, brody.ethnicity, brody.updated_by) == (row["gender"], row["ethnicity"], "bob")
    assert audit(store_url)[-1][:2] == ("import_attributes", "bob")

    skip = tmp_path / "people.csv"
    skip.write_text("name,gender\nNobody_Known,female\n")
    result = invoke("import", "attributes", skip, *where, "--skip-missing")
    assert result.exit_code == 0 and "no class named 'Nobody Known'" in result.stderr
    assert result.stdout.strip().endswith("1 skipped (nothing changed)")


@pytest.mark.parametrize("command, content, message", [
    ("classes", "Label,Index\nBrad_Pitt_[m.0c6qh],0\nBrad_Pitt_[m.0c6qh],1\n",
     "line 3: label 'Brad_Pitt_[m.0c6qh]' repeats line 2"),
    ("classes", "Brad_Pitt_[m.0c6qh],0\n", "line 1: the header"),
    ("attributes", "nope\n", "lacks column(s) name"),
    ("attributes", "name,gender\nA,male\na,female\n", "line 3: 'a' repeats line 2"),
    ("tags", "file,uploader_tags\nx.gif,a\nx.gif,b\n", "line 3: file 'x.gif' repeats line 2"),
])
def test_bad_input_exits_1_with_the_message_and_writes_nothing(store_url, tmp_path, command, content, message):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    result = invoke("import", command, bad, "--data-dir", tmp_path / "data", "--database-url", store_url)
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and f"error: {bad}" in result.stderr and message in result.stderr
    assert audit(store_url) == []


def test_missing_files_and_folders_exit_1(store_url, tmp_path):
    where = ["--data-dir", tmp_path / "data", "--database-url", store_url]
    result = invoke("import", "tags", tmp_path / "missing.csv", *where)
    assert result.exit_code == 1 and "missing.csv: cannot read" in result.stderr
    result = invoke("import", "raw-dataset", tmp_path, *where)
    assert result.exit_code == 1 and "expected labels.csv and a raw_dataset/ folder" in result.stderr
    assert "0/?" not in result.stderr, result.stderr  # refused before any work: no empty progress bar under it
    assert result.stderr.count("\n") == 1, repr(result.stderr)  # nor a blank line
    empty = invoke("export", tmp_path / "empty", *where)  # nothing to export: no "0/?" bar left either
    assert empty.exit_code == 0 and empty.stdout.startswith("exported 0 classes, 0 faces"), empty.output
    assert empty.stderr == "", repr(empty.stderr)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    result = invoke("export", tmp_path / "full", *where)
    assert result.exit_code == 1 and "not empty" in result.stderr
    result = invoke("export", tmp_path / "full", *where, "--overwrite")
    assert result.exit_code == 1 and "not a giflens export" in result.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"


def test_tags_report_files_that_are_not_ingested(store_url, tmp_path, shared_data):
    result = invoke("import", "tags", shared_data / "gifs.csv", "--data-dir", tmp_path / "data",
                    "--database-url", store_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "import tags from gifs.csv: 0 tags written, 0 unchanged, 63 skipped (nothing changed)"
    assert "gifs.csv: line 2: aint-nobody-got-time-for-that.gif is not ingested" in result.stderr
    assert "... and 13 more skipped" in result.stderr


@pytest.mark.slow
def test_raw_dataset_import_then_export(store_url, tmp_path, lfw_dir, cli_data_dir):
    raw = tmp_path / "giphy"
    people = {"Hugo_Chavez_[m.0d1b_]": "Hugo_Chavez", "Serena_Williams_[m.0c_1x]": "Serena_Williams"}
    for label, person in people.items():
        (raw / "raw_dataset" / label).mkdir(parents=True)
        for photo in sorted((lfw_dir / person).glob("*.jpg"))[:2]:
            (raw / "raw_dataset" / label / photo.name).write_bytes(photo.read_bytes())
    (raw / "labels.csv").write_text("Labels,Index\n" + "".join(f"{label},{i}\n" for i, label in enumerate(people)))
    where = ["--data-dir", cli_data_dir, "--database-url", store_url]

    result = invoke("import", "raw-dataset", raw, *where, "--editor", "ann")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith(
        "import raw dataset from giphy: 4 images, 2 classes created, 4 labels approved, 0 unchanged (audit event")
    with open_store(store_url)() as s:
        labels = s.execute(select(CelebrityClass.name, CelebrityClass.external_id, FaceLabel.status, FaceLabel.source,
                                  FaceLabel.editor).join(FaceLabel, FaceLabel.class_id == CelebrityClass.id)).all()
    assert sorted(labels) == [("Hugo Chavez", "m.0d1b_", "approved", "import", "ann")] * 2 + \
        [("Serena Williams", "m.0c_1x", "approved", "import", "ann")] * 2
    again = invoke("import", "raw-dataset", raw, *where, "--editor", "ann")
    assert again.exit_code == 0 and again.stdout.strip().endswith("4 unchanged (nothing changed)")

    out = tmp_path / "export"
    result = invoke("export", out, *where, "--split", "0.5", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"exported 2 classes, 4 faces (train 2, val 2), 0 tagged media, 4 face projector vectors to {out}")
    assert verify_export(out) == []
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["editor"], manifest["split"]["seed"], manifest["split"]["share"]) == (_os_user(), 3, 0.5)
    assert (out / "labels.csv").read_text() == "Label,Index\nHugo_Chavez_[m.0d1b_],0\nSerena_Williams_[m.0c_1x],1\n"

    refused = invoke("export", out, *where)  # refused before the note on the earlier export it would follow
    assert refused.exit_code == 1, refused.output
    assert refused.stderr.splitlines() == [f"error: {out} exists and is not empty; choose another folder or replace it (--overwrite; on the Export page, \"Replace the folder if it exists\")"]
    replaced = invoke("export", out, *where, "--overwrite", "--editor", "bob", "--split", "0")
    assert replaced.exit_code == 0 and "(train 4, val 0)" in replaced.stdout
    assert replaced.stderr.startswith(f"keeping label indices and train / validation sides of the newest earlier "
                                      f"export {out}"), replaced.stderr
    assert "4/4" in replaced.stderr and replaced.stdout.count("\n") == 1  # the bar, then the summary alone on stdout
    assert json.loads((out / "manifest.json").read_text())["editor"] == "bob" and verify_export(out) == []
    with open_store(store_url)() as s:
        assert [e.editor for e in s.scalars(select(Export).order_by(Export.id))] == [_os_user(), "bob"]
    result = invoke("export", tmp_path / "other", *where, "--split", "1.5")
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == ["error: the validation split must be in [0, 1), got 1.5"]
    kept = invoke("export", tmp_path / "kept", *where, "--previous", out)
    assert kept.exit_code == 0, kept.output
    assert (tmp_path / "kept" / "labels.csv").read_text() == (out / "labels.csv").read_text()
    assert json.loads((tmp_path / "kept" / "manifest.json").read_text())["class_index_order"] == "previous export"
    missing = invoke("export", tmp_path / "none", *where, "--previous", tmp_path / "no-such-export")
    assert missing.exit_code == 1 and "no-such-export" in missing.stderr and not (tmp_path / "none").exists()


@pytest.mark.parametrize("url, message", [
    ("not a url", "cannot open the store (--database-url / GIFLENS_DATABASE_URL): Could not parse SQLAlchemy URL"),
    ("postgresql://postgres:s3cret@127.0.0.1:1/giflens", "cannot open the store postgresql://postgres:***@127.0.0.1:1/giflens: "
                                                        "connection failed"),
    ("mysql://editor@db.example/giflens", "cannot open the store mysql://editor@db.example/giflens: the database driver is not "
                                          "installed"),
])
def test_a_bad_database_url_is_one_line_exit_1_for_every_command(tmp_path, url, message):
    """A typo in --database-url (or a server that is down) is the editor's input, not a crash: every command
    says so on one line before any work, and the password never reaches the terminal."""
    (tmp_path / "tags.csv").write_text("file,uploader_tags\nx.gif,a\n")
    (tmp_path / "media").mkdir()
    for command in (["import", "tags", tmp_path / "tags.csv"], ["import", "raw-dataset", tmp_path], ["export", tmp_path / "out"],
                    ["ingest", tmp_path / "media"], ["predict"], ["retrain"], ["autotag"], ["dupes"], ["app"],
                    ["audit", tmp_path / "out"]):
        result = invoke(*command, "--data-dir", tmp_path / "data", "--database-url", url)
        assert result.exit_code == 1, (command, result.output)
        assert result.stdout == "" and "Traceback" not in result.stderr, (command, result.stderr)
        assert result.stderr.startswith(f"error: {message}") and len(result.stderr.strip().splitlines()) == 1, \
            (command, result.stderr)
        assert "s3cret" not in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


def test_a_data_folder_that_is_a_file_or_a_bad_setting_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    result = invoke("dupes", "--data-dir", tmp_path / "file")
    assert result.exit_code == 1 and result.stderr.startswith("error: cannot open the store sqlite:///"), result.output
    assert "File exists" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    monkeypatch.setenv("GIFLENS_FRAMES", "abc")
    result = invoke("dupes", "--data-dir", tmp_path / "data")
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.output
    assert result.stderr.startswith("error: invalid setting frames (GIFLENS_FRAMES): Input should be a valid integer")
    assert not (tmp_path / "data").exists()


def test_export_where_no_folder_can_be_made_is_refused(store_url, tmp_path):
    """OUT_DIR under a file (or in a folder nobody may write) is bad input: exit 1, no export recorded."""
    (tmp_path / "notes.txt").write_text("x")
    open_store(store_url)  # a giflens store (export refuses a database without one)
    where = ["--data-dir", tmp_path / "data", "--database-url", store_url]
    result = invoke("export", tmp_path / "notes.txt" / "export", *where)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: cannot create {tmp_path / 'notes.txt' / 'export'}: {tmp_path / 'notes.txt'}")
    with open_store(store_url)() as s:
        assert s.scalar(select(func.count()).select_from(Export)) == 0
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary folder left behind


def test_ingest_of_a_path_that_does_not_exist_is_refused_and_stores_nothing(store_url, tmp_path):
    """A typo on the command line is not a media file to record as failed: exit 1 before any work."""
    (tmp_path / "media").mkdir()
    result = invoke("ingest", tmp_path / "media", tmp_path / "typo.gif", "--data-dir", tmp_path / "data",
                    "--database-url", store_url)
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and result.stderr.strip() == f"error: no such file or folder: {tmp_path / 'typo.gif'}"
    model = invoke("ingest", tmp_path / "media", "--face-model", "nope", "--data-dir", tmp_path / "data",
                   "--database-url", store_url)  # one line and exit 2, not Typer's usage box
    assert model.exit_code == 2 and model.stdout == "", model.output
    assert model.stderr.splitlines() == ["error: unknown face model 'nope' (--face-model); known: dlib-resnet-v1, "
                                         "facenet-vggface2"], model.stderr
    with open_store(store_url)() as s:
        assert s.scalar(select(func.count()).select_from(Media)) == 0
    assert audit(store_url) == []


def test_an_explicitly_empty_editor_is_refused_not_replaced_by_the_os_user(store_url, tmp_path):
    """`--editor ""` (an unset shell variable, say) would otherwise attribute the batch to whoever runs it."""
    (tmp_path / "media").mkdir()
    result = invoke("ingest", tmp_path / "media", "--data-dir", tmp_path / "data", "--database-url", store_url,
                    "--editor", "")
    assert result.exit_code == 1, result.output
    assert "an editor name is required" in result.stderr
    assert audit(store_url) == []


@pytest.mark.slow
def test_relative_paths_are_stored_absolute(store_url, tmp_path, gifs_dir, lfw_dir, cli_data_dir, monkeypatch):
    """`giflens ingest ../shared/data/gifs` (the README's quick start) must store paths the app can open from
    anywhere: it reads a relative media path under the data folder, where "../shared/..." points nowhere.
    A raw dataset named relatively is ingested and labeled the same way."""
    from labeling.pages.common import media_file
    from models.settings import Settings

    work = tmp_path / "work"
    (work / "media").mkdir(parents=True)
    (work / "media" / "hello.gif").write_bytes((gifs_dir / "hello.gif").read_bytes())
    (work / "giphy" / "raw_dataset" / "Tony_Blair").mkdir(parents=True)
    for photo in sorted((lfw_dir / "Tony_Blair").glob("*.jpg"))[:2]:
        (work / "giphy" / "raw_dataset" / "Tony_Blair" / photo.name).write_bytes(photo.read_bytes())
    (work / "giphy" / "labels.csv").write_text("Labels,Index\nTony_Blair,0\n")
    monkeypatch.chdir(work)
    where = ["--data-dir", cli_data_dir, "--database-url", store_url]

    result = invoke("ingest", "media", *where)
    assert result.exit_code == 0 and ", failed 0, faces " in result.stdout, result.output  # cached on the 2nd store
    result = invoke("import", "raw-dataset", "giphy", *where)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith("import raw dataset from giphy: 2 images, 1 classes created, 2 labels approved")
    with open_store(store_url)() as s:
        paths = sorted(s.scalars(select(Media.path)))
    assert paths == sorted([str(work / "media" / "hello.gif")] +
                           [str(p) for p in (work / "giphy" / "raw_dataset" / "Tony_Blair").glob("*.jpg")])
    settings = Settings(data_dir=cli_data_dir, database_url=store_url)
    monkeypatch.chdir(tmp_path)  # the app runs elsewhere
    assert all(media_file(p, settings) == Path(p) for p in paths)


def test_a_server_that_never_answers_times_out(tmp_path, monkeypatch):
    """A host that accepts the connection and then says nothing (a wrong port behind a firewall, a hung server)
    made every command wait forever: libpq has no connect timeout by default."""
    import socket
    import threading

    import labeling.db

    monkeypatch.setattr(labeling.db, "PG_CONNECT_TIMEOUT_S", 1)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # the kernel completes the handshake; nobody ever accepts or answers
    closer = threading.Timer(20, silent.close)  # without a timeout the command would wait this long, then fail otherwise
    closer.start()
    try:
        url = f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/giflens"
        result = invoke("dupes", "--data-dir", tmp_path / "data", "--database-url", url)
    finally:
        closer.cancel()
        silent.close()
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == f"error: cannot open the store {url}: connection timeout expired"


def test_history_and_undo_from_the_command_line(store_url, tmp_path):
    where = ["--data-dir", tmp_path / "data", "--database-url", store_url]
    (tmp_path / "classes.csv").write_text("Labels,Index\nAda_Lovelace_[m.0k2x],0\nGrace_Hopper_[m.03c0],1\n")
    (tmp_path / "people.csv").write_text("name,gender,country\nAda_Lovelace,female,UK\n")
    assert invoke("import", "classes", tmp_path / "classes.csv", *where, "--editor", "ann").exit_code == 0
    assert invoke("import", "attributes", tmp_path / "people.csv", *where, "--editor", "bob").exit_code == 0

    log = invoke("history", *where)
    assert log.exit_code == 0, log.output
    lines = log.stdout.strip().splitlines()
    assert "bob  import attributes from people.csv" in lines[0] and "ann  import classes" in lines[1]
    assert lines[-1] == "2 operation(s) in the store shown, newest first"
    ada = invoke("history", "class:ada lovelace", *where)  # a class by name, any case
    assert ada.exit_code == 0 and ada.stdout.strip().endswith("2 operation(s) of class:ada lovelace shown, newest first")
    assert invoke("history", *where, "--editor", "ann").stdout.count("import") == 1

    # bob undoes his last operation: Ada's attributes are gone, audited as an undo by bob
    undo = invoke("undo", *where, "--editor", "bob")
    assert undo.exit_code == 0, undo.output
    assert undo.stdout.startswith("undo of operation 2: import attributes") and "(audit event 3, 1 row(s) restored)" in undo.stdout
    with open_store(store_url)() as s:
        ada_row = s.scalars(select(CelebrityClass).where(CelebrityClass.name == "Ada Lovelace")).one()
    assert (ada_row.gender, ada_row.country) == (None, None)
    assert audit(store_url)[-1] == ("undo", "bob", 1)
    assert "[undone by 3]" in invoke("history", "class:1", *where).stdout

    again = invoke("undo", "2", *where, "--editor", "bob")
    assert again.exit_code == 1 and "already undone by operation 3" in again.output
    assert "bob has no operation left to undo" in invoke("undo", *where, "--editor", "bob").output
    assert "no audit event 99" in invoke("undo", "99", *where).output
    for bad, message in [("face:x", "'face:x': a face is named by its id"),
                         ("media:abc", "'media:abc': a media is named by its id"),
                         ("class:Nobody", "no class is called 'Nobody'"),
                         ("foo:1", "'foo:1': expected face:ID, media:ID, class:ID or class:NAME"),
                         ("gif7", "'gif7': expected face:ID, media:ID, class:ID or class:NAME")]:
        result = invoke("history", bad, *where)  # one line and exit 1, not Typer's usage box
        assert result.exit_code == 1, result.output
        assert result.stderr.splitlines() == [f"error: {message}"] and result.stdout == "", result.output
    assert len(audit(store_url)) == 3  # refusals wrote nothing


def test_history_finds_classes_by_their_giphy_label_and_filters_by_editor_before_the_limit(store_url, tmp_path):
    where = ["--data-dir", tmp_path / "data", "--database-url", store_url]
    (tmp_path / "classes.csv").write_text("Labels,Index\nBrad_Pitt_[m.0c6qh],0\nAdrien_Brody,1\n")
    assert invoke("import", "classes", tmp_path / "classes.csv", *where, "--editor", "ann").exit_code == 0
    for n, editor in enumerate(["ann", "bob", "bob", "bob"]):  # ann's operation is the oldest
        (tmp_path / "people.csv").write_text(f"name,birth_year\nBrad Pitt,{1960 + n}\n")
        assert invoke("import", "attributes", tmp_path / "people.csv", *where, "--editor", editor).exit_code == 0

    # names as GIPHY's class list and labels.csv write them, as well as the stored names
    for name in ["Brad_Pitt_[m.0c6qh]", "Brad_Pitt", "brad pitt"]:
        result = invoke("history", f"class:{name}", *where)
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[-1] == f"5 operation(s) of class:{name} shown, newest first"
    brody = invoke("history", "class:Adrien_Brody", *where)
    assert brody.exit_code == 0 and "1 operation(s) of class:Adrien_Brody" in brody.stdout, brody.output

    # ann's operations are the two oldest of five: --limit 1 still finds the newest of them
    ann = invoke("history", "class:Brad_Pitt_[m.0c6qh]", *where, "--editor", "ann", "--limit", "1")
    assert ann.exit_code == 0, ann.output
    lines = ann.stdout.splitlines()
    assert len(lines) == 2 and "ann  import attributes from people.csv" in lines[0], ann.stdout
    assert lines[-1] == "1 operation(s) of class:Brad_Pitt_[m.0c6qh] by ann shown, newest first"
    both = invoke("history", "class:Brad Pitt", *where, "--editor", "ann", "--limit", "5")
    assert both.stdout.splitlines()[-1].startswith("2 operation(s)") and "import classes" in both.stdout
