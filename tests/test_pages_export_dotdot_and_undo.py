"""Pages: an export folder typed with ".." is the folder the system takes it for (refused at once
when not empty, nothing created beside it), on the Export page and in `giflens export`; the Export page keeps
a relative folder inside the data folder; the Overview undoes any operation by its number, not only the 30
latest it lists."""
from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from conftest import make_faces, open_app
from labeling.classes import add_class
from labeling.cli import app as cli_app
from labeling.db import open_store, session_scope
from labeling.export import resolve_out_dir
from labeling.ingest import IngestSummary, record_ingest_event
from labeling.schema import AuditEvent, CelebrityClass, Face
from test_app_pages import button, errors, go, messages, no_exception

NOT_EMPTY = "exists and is not empty"


def _export_page(monkeypatch, tmp_path: Path):
    """The Export page of a fresh empty store, signed in as ann, on a data folder holding an editor's file."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("mine", encoding="utf-8")
    at = open_app(monkeypatch, data, f"sqlite:///{tmp_path / 'store.db'}")
    at.session_state["editor"] = "ann"
    return go(at, "export"), data


def _run_export(at, folder: str) -> list[str]:
    at.text_input(key="export_out_dir").input(folder)
    button(at, "Run export").click().run()
    no_exception(at)
    return errors(at)


# -- 1. "typo/.." is the data folder: refused at once, and "typo" is not created ---------------------------
def test_export_page_refuses_a_folder_typed_through_dotdot_as_the_folder_it_names(monkeypatch, tmp_path):
    at, data = _export_page(monkeypatch, tmp_path)
    shown = _run_export(at, "typo/..")
    assert shown == [f"Refused: {data} {NOT_EMPTY}; choose another folder or replace it (--overwrite; on the Export page, \"Replace the folder if it exists\")"], shown
    assert sorted(p.name for p in data.iterdir()) == ["notes.txt"]  # no "typo", no export, no temporary


def test_cli_export_refuses_a_folder_typed_through_dotdot_before_writing(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    open_store(url)
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("mine", encoding="utf-8")
    monkeypatch.chdir(data)
    result = CliRunner().invoke(cli_app, ["export", "typo/..", "--data-dir", str(data), "--database-url", url])
    assert result.exit_code != 0, result.output
    assert NOT_EMPTY in result.output and "changed while" not in result.output, result.output
    assert sorted(p.name for p in data.iterdir()) == ["notes.txt"]


def test_resolve_out_dir_applies_dotdot_after_a_link_to_the_link_target(tmp_path):
    """As the system does: "link/.." is the folder holding the link's target, not the one holding the link."""
    target = tmp_path / "elsewhere" / "deep"
    target.mkdir(parents=True)
    (tmp_path / "here").mkdir()
    os.symlink(target, tmp_path / "here" / "link")
    assert resolve_out_dir(tmp_path / "here" / "link" / "..") == tmp_path / "elsewhere"
    assert resolve_out_dir(tmp_path / "typo" / ".." / "out") == tmp_path / "out"


# -- 2. the page's relative folder stays inside the data folder ---------------------------------------------
def test_export_page_refuses_a_relative_folder_leading_out_of_the_data_folder(monkeypatch, tmp_path):
    at, data = _export_page(monkeypatch, tmp_path)
    shown = _run_export(at, "../outside")
    assert shown == [f"Refused: ../outside leads out of the data folder {data}: a relative output folder is taken "
                     "inside the data folder; give an absolute path to export elsewhere"], shown
    assert not (tmp_path / "outside").exists()
    # an absolute path anywhere is still the editor's to choose, and a relative one inside the data folder
    assert _run_export(at, str(tmp_path / "outside")) == []
    assert (tmp_path / "outside" / "manifest.json").is_file()
    assert _run_export(at, "sub/../inside") == []
    assert (data / "inside" / "manifest.json").is_file()


# -- 3. Overview: any operation by its number -----------------------------------------------------------------
def _undo_number(at, number: int) -> None:
    at.number_input(key="overview_undo_number").set_value(number).run()  # a browser reruns on the change
    button(at, "Undo operation by number").click().run()
    no_exception(at)


def test_overview_undoes_an_operation_older_than_the_list_by_its_number(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    first = add_class(store, "Person 00", "cleo")[1].event_id
    for i in range(1, 31):
        add_class(store, f"Person {i:02d}", "cleo")
    (tmp_path / "data").mkdir()
    at = open_app(monkeypatch, tmp_path / "data", url)
    at.session_state["editor"] = "ann"
    at.run()
    assert not any(o.startswith(f"#{first} ") for o in at.selectbox(key="overview_undo_event").options)
    assert at.button(key="overview_undo_by_number").disabled  # nothing typed yet

    _undo_number(at, first)
    assert not errors(at), errors(at)
    with store() as s:
        undo = s.get(AuditEvent, first).undone_by_id
        assert undo is not None and s.get(AuditEvent, undo).editor == "ann"
        assert s.query(CelebrityClass).filter_by(name="Person 00").count() == 0
    assert at.number_input(key="overview_undo_number").value is None  # a second press undoes nothing

    # refused as the picker refuses, each with its reason, and nothing written
    _undo_number(at, first)
    assert f"operation #{first} was already undone by ann (#{undo})" in messages(at), messages(at)
    _undo_number(at, undo)
    assert any(f"operation {undo} is itself an undo" in e for e in errors(at)), errors(at)
    _undo_number(at, 999)
    assert any("no audit event 999" in e for e in errors(at)), errors(at)
    faces = make_faces(store, 1, 1)
    with store() as s:
        media_id = s.get(Face, faces[0]).media_id
    with session_scope(store) as s:
        record = record_ingest_event(s, "ann", IngestSummary(cached=1, faces=1, media=[{"id": media_id, "status": "ok"}]),
                                     [media_id])
    _undo_number(at, record)
    assert any(f"operation {record} (ingest) cannot be undone: it is a record of ingest" in e for e in errors(at)), errors(at)
    with store() as s:
        assert s.query(AuditEvent).count() == record  # no undo written by the refusals
