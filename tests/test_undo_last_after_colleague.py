"""Round 19 of the undo audit: `giflens undo` with no number, after a colleague undid the editor's last
operation, took back an older one the editor never meant (a class with its seed faces), for good."""
from __future__ import annotations

from conftest import make_faces
from sqlalchemy import select
from typer.testing import CliRunner

from labeling.classes import add_class
from labeling.cli import app
from labeling.db import open_store
from labeling.face_labels import reject_faces
from labeling.schema import CelebrityClass
from labeling.audit import undo_event


def test_undo_without_a_number_refuses_when_a_colleague_undid_the_last_operation(tmp_path):
    url = f"sqlite:///{tmp_path / 'giflens.db'}"
    store = open_store(url)
    faces = make_faces(store, 1, 4)
    alice, created = add_class(store, "Alice", "ann", seed_face_ids=faces)
    rejected = reject_faces(store, faces[:1], "ann")
    carols = undo_event(store, rejected.event_id, "carol")
    args = ["undo", "--data-dir", str(tmp_path), "--database-url", url, "--editor", "ann"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert (f"your last operation #{rejected.event_id} was already undone by carol in operation {carols.event_id}"
            in said), said
    assert f"giflens undo {created.event_id}" in said, said
    with store() as s:  # the class and its seed faces are still there
        assert s.scalar(select(CelebrityClass.status).where(CelebrityClass.id == alice)) == "active"
    # her own newer operation is undone as before, and naming the older one undoes it
    reject_faces(store, faces[1:2], "ann")
    assert CliRunner().invoke(app, args).exit_code == 0
    with store() as s:
        assert s.scalar(select(CelebrityClass.status).where(CelebrityClass.id == alice)) == "active"
    assert CliRunner().invoke(app, args).exit_code == 1  # carol's undo still stands in the way
    assert CliRunner().invoke(app, [*args[:1], str(created.event_id), *args[1:]]).exit_code == 0
    with store() as s:
        assert s.get(CelebrityClass, alice) is None


def test_history_by_a_name_notes_the_class_renamed_away_from_it(tmp_path):
    """`history class:Alice` showed the new 'Alice' only, without a word of class 1 that carried the name."""
    from labeling.classes import rename_class

    url = f"sqlite:///{tmp_path / 'giflens.db'}"
    store = open_store(url)
    old, _ = add_class(store, "Alice", "ann")
    rename_class(store, old, "Alice old", "ann")
    new, _ = add_class(store, "Alice", "carol")
    result = CliRunner().invoke(app, ["history", "class:alice", "--data-dir", str(tmp_path), "--database-url", url])
    assert result.exit_code == 0, result.output
    assert f"'alice' was also the name of class {old} (now 'Alice old'); give class:ID" in result.output
    assert "1 operation(s)" in result.output, result.output  # the history shown is the class called so now
