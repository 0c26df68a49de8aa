"""`giflens history` and the undo refusal, on SQLite and PostgreSQL.

4. `--limit` past int64 (9223372036854775808) lists everything instead of crashing in the database driver.
5. A face's history names the classes an undone import removed as the audit log knew them, not "class 5".
6. `--limit N` with older operations left says so (on stderr: the summary stays stdout's last line).
8. An undo refused because a later operation wrote into a face label it created speaks of the face's
   label, not of the face (the import created the label; the face was there before and stays).
"""
from __future__ import annotations

import pytest
from conftest import make_faces
from test_undo_blocking import import_labels, predictions
from typer.testing import CliRunner

from labeling.audit import undo_event
from labeling.classes import add_class
from labeling.cli import app
from labeling.db import open_store
from labeling.errors import UndoError
from labeling.face_labels import record_predictions

runner = CliRunner()
PAST_INT64 = str(2**63)


@pytest.fixture
def store(store_url):
    return open_store(store_url)


def history(store_url: str, tmp_path, *args: str):
    return runner.invoke(app, ["history", *args, "--data-dir", str(tmp_path / "data"), "--database-url", store_url])


def test_history_with_a_limit_past_int64_lists_everything(store, store_url, tmp_path):
    a, _ = add_class(store, "Alan", "ann")
    add_class(store, "Bea", "bob")
    for args, summary in [((), "2 operation(s) in the store shown, newest first"),
                          ((f"class:{a}",), f"1 operation(s) of class:{a} shown, newest first"),
                          (("--editor", "bob"), "1 operation(s) in the store by bob shown, newest first")]:
        result = history(store_url, tmp_path, *args, "--limit", PAST_INT64)
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[-1] == summary and result.stderr == "", result.output


def test_history_of_a_face_names_the_classes_an_undone_import_removed(store, store_url, tmp_path):
    """The audit's repro: import, predict, undo the prediction, undo the import (which deletes its classes)."""
    faces = make_faces(store, 1, 2)
    imported, cls = import_labels(store, {"Al Gore": faces[:1], "Tony Blair": faces[1:]}, create_classes=True)
    predicted = record_predictions(store, predictions(faces, cls["Tony Blair"]), "v1").event_id
    undo_event(store, predicted, "ann")
    undo_event(store, imported, "ann")
    result = history(store_url, tmp_path, f"face:{faces[0]}")
    assert result.exit_code == 0, result.output
    gore = f"'Al Gore' (class {cls['Al Gore']})"
    lines = result.stdout.splitlines()
    assert f"        face {faces[0]}: approved {gore} -> no label" in lines, lines
    assert f"        face {faces[0]}: guess 'Tony Blair' (class {cls['Tony Blair']}) -> no class" in lines, lines
    assert f"        face {faces[0]}: no label -> approved {gore}" in lines, lines
    assert lines[-1] == f"4 operation(s) of face:{faces[0]} shown, newest first"


def test_history_says_when_older_operations_are_not_shown(store, store_url, tmp_path):
    a, _ = add_class(store, "Alan", "ann")
    add_class(store, "Bea", "bob")
    add_class(store, "Cleo", "ann")
    cut = history(store_url, tmp_path, "--limit", "2")
    assert cut.exit_code == 0, cut.output
    assert len(cut.stdout.splitlines()) == 3 and cut.stdout.splitlines()[-1] == (
        "2 operation(s) in the store shown, newest first")
    assert cut.stderr == "... older operations not shown (raise --limit above 2)\n"
    whole = history(store_url, tmp_path, "--limit", "3")
    assert whole.exit_code == 0 and whole.stderr == "", whole.output
    assert whole.stdout.splitlines()[-1] == "3 operation(s) in the store shown, newest first"
    # ann's two operations: with --editor the cut is counted among hers only
    assert "older operations not shown" in history(store_url, tmp_path, "--editor", "ann", "--limit", "1").stderr
    assert history(store_url, tmp_path, "--editor", "ann", "--limit", "2").stderr == ""
    # of one entity: class Alan has its creation only
    assert history(store_url, tmp_path, f"class:{a}", "--limit", "1").stderr == ""


def test_an_undo_pinned_through_a_face_label_it_created_names_the_label(store):
    faces = make_faces(store, 1, 1)
    imported, cls = import_labels(store, {"A": faces}, create_classes=True)
    record_predictions(store, predictions(faces, cls["A"]), "v1")
    with pytest.raises(UndoError) as refused:
        undo_event(store, imported, "ann")
    message = str(refused.value)
    assert (f"it wrote into face {faces[0]}'s label, which operation {imported} created, and undoing {imported} "
            "would delete that label with what was written into it; undo those first") in message
    assert "delete that row" not in message
