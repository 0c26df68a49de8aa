"""The CLI: the history of a class by a name it no longer has, and in-memory store URLs
refused as typed (sqlite3's bare `:memory:` too, and `sqlite:///:memory:` not shown percent-encoded)."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from labeling.classes import add_class, rename_class
from labeling.audit import undo_last
from labeling.cli import app
from labeling.db import open_store

runner = CliRunner()


def invoke(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def test_history_of_a_class_by_a_former_name(store_url, tmp_path):
    where = ["--data-dir", tmp_path / "data", "--database-url", store_url]
    store = open_store(store_url)
    brad, _ = add_class(store, "Brad Pitt", "ann")
    rename_class(store, brad, "William Bradley Pitt", "bob")
    typo, _ = add_class(store, "Typo Clas", "ann")
    undo_last(store, "ann")  # the class is gone from the catalog; its history is not

    renamed = invoke("history", "class:brad pitt", *where)
    assert renamed.exit_code == 0, renamed.output
    assert "rename" in renamed.stdout and renamed.stdout.splitlines()[-1].startswith("2 operation(s) of class:brad pitt")
    removed = invoke("history", "class:Typo Clas", *where)
    assert removed.exit_code == 0, removed.output
    assert removed.stdout.splitlines()[-1].startswith("2 operation(s)") and "undo" in removed.stdout

    # two classes once carried the name: the editor picks one by id
    other, _ = add_class(store, "Brad Pitt", "cy")
    rename_class(store, other, "Brad Pitt Jr", "cy")
    both = invoke("history", "class:Brad Pitt", *where)
    assert both.exit_code == 1
    assert both.stderr.strip() == f"error: 'Brad Pitt' was the name of classes {other}, {brad}: give class:ID"
    nobody = invoke("history", "class:Nobody", *where)
    assert nobody.exit_code == 1 and nobody.stderr.strip() == "error: no class is called 'Nobody'"


@pytest.mark.parametrize("url", [":memory:", "sqlite:///:memory:"])
def test_in_memory_urls_are_refused_as_typed(url, tmp_path):
    result = invoke("history", "--data-dir", tmp_path / "data", "--database-url", url)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {url} is an in-memory store: nothing would be kept; give a file, sqlite:///PATH"
    assert not (tmp_path / "data").exists()
