"""App, identity and export: undo by a number no id column holds, exports written where an ingest of the
data folder reads them back, uploads named "..jpg", editor names in two Unicode forms, an OIDC login without a
name claim, and Undo last with nothing left to undo."""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from conftest import open_app
from embeddings.pipeline import discover
from labeling.audit import undo_last
from labeling.classes import add_class
from labeling.cli import app as cli_app
from labeling.db import open_store, session_scope
from labeling.errors import ValidationError
from labeling.export import check_out_dir, export_dataset
from labeling.ingest import IngestSummary, record_ingest_event
from labeling.pages.common import safe_file_name
from labeling.schema import AuditEvent
from labeling.validation import check_editor

AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "test-cookie-secret-not-used",
        "client_id": "giflens-test", "client_secret": "test-client-secret-not-used",
        "server_metadata_url": "https://id.example.invalid/.well-known/openid-configuration"}


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def button(at: AppTest, label: str):
    found = [b for b in at.button if b.label == label]
    assert len(found) == 1, f"{len(found)} buttons labelled {label!r}: {[b.label for b in at.button]}"
    return found[0]


def sign_in(at: AppTest, name: str) -> AppTest:
    at.sidebar.text_input(key="sign_in_name").input(name)
    button(at, "Sign in").click().run()
    no_exception(at)
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


# -- 1. Overview: undo by a number beyond the id columns ------------------------------------------------
def test_undo_by_a_number_no_id_column_holds_is_not_found(store_url, tmp_path, monkeypatch):
    """2**31 typed in the Overview's number box was looked up before undo_event checked it: PostgreSQL refused
    the bound number (DataError, a traceback on the page). Now "Not found", as any unknown number, on both."""
    store = open_store(store_url)
    add_class(store, "Setup Person", "setup")  # an operation to undo: the expander shows
    at = sign_in(open_app(monkeypatch, tmp_path / "data", store_url), "ann")
    for number in (2**31, 2**53 - 1):
        at.number_input(key="overview_undo_number").set_value(number).run()
        button(at, "Undo operation by number").click().run()
        no_exception(at)
        assert errors(at) == [f"Not found: no audit event {number}"], errors(at)


# -- 2. exports in the data folder's uploads (or cache ...), and exports met by an ingest --------------
def test_the_export_page_refuses_folders_giflens_keeps_its_own_data_in(tmp_path, monkeypatch):
    """An export written under <data>/uploads came back as 37 new, unlabeled faces on the next ingest of the
    data folder (its uploads are what that ingest walks). The page refuses it, relative or absolute, and
    <data>/cache and the other output folders, a link to one too; <data>/exports is where exports go."""
    data, url = tmp_path / "data", f"sqlite:///{tmp_path / 'store.db'}"
    at = sign_in(open_app(monkeypatch, data, url), "ann")
    (data / "uploads").mkdir(parents=True, exist_ok=True)
    (data / "link").symlink_to(data / "uploads")
    at.switch_page("labeling/pages/export.py").run()
    for typed, part in (("uploads/myexport", "uploads"), (str(data / "cache" / "x"), "cache"),
                        ("models/e", "models"), ("link/e", "uploads")):
        at.text_input(key="export_out_dir").input(typed)
        button(at, "Run export").click().run()
        no_exception(at)
        [refusal] = errors(at)
        assert refusal.startswith("Refused: ") and f"inside the data folder's {part}/ folder" in refusal, refusal
    assert "would come back as new, unlabeled faces" in errors(at)[0]
    assert not (data / "uploads" / "myexport").exists() and not (data / "cache" / "x").exists()
    at.text_input(key="export_out_dir").input("exports/e1")
    button(at, "Run export").click().run()
    no_exception(at)
    assert not errors(at) and (data / "exports" / "e1" / "manifest.json").is_file()


def test_check_out_dir_refuses_the_uploads_of_the_data_folder_it_is_given(tmp_path):
    data = tmp_path / "data"
    with pytest.raises(ValidationError, match="uploads/ folder"):
        check_out_dir(data / "uploads" / "e", False, data)
    check_out_dir(data / "uploads" / "e", False)  # without a data folder nothing is known of it
    check_out_dir(data / "mine" / "e", False, data)  # a folder of the editor's own in the data folder
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    with pytest.raises(ValidationError, match="cache/ folder"):
        export_dataset(store, data, data / "cache" / "e", "ann")
    assert not data.exists()  # refused before anything was written


def test_the_export_command_refuses_the_uploads(tmp_path):
    """`giflens export` goes through the same check (export_dataset): exit 1, the reason, nothing written."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    open_store(url)
    data = tmp_path / "data"
    result = CliRunner().invoke(cli_app, ["export", str(data / "uploads" / "e"), "--data-dir", str(data),
                                          "--database-url", url, "--editor", "ann"])
    assert result.exit_code == 1, result.output
    assert "uploads/ folder" in result.stderr and not (data / "uploads" / "e").exists()


def _export_like(folder: Path) -> Path:
    """What the export writes, as far as a walk can tell: manifest.json, labels.csv, raw_dataset/<label>/*.jpg."""
    (folder / "raw_dataset" / "0").mkdir(parents=True)
    (folder / "raw_dataset" / "0" / "face_1.jpg").write_bytes(b"crop")
    (folder / "manifest.json").write_text(json.dumps({"format": "giflens-export/1", "files": {"labels.csv": "0" * 64}}))
    (folder / "labels.csv").write_text("filename,label\n")
    return folder


def test_an_ingest_walk_leaves_exports_out_with_a_note(tmp_path):
    """An export met in a folder walked (the uploads of the data folder, a photo folder) is not media: its crops
    would be new faces nobody labels. Named itself, it is left out too, pointing to `import raw-dataset`."""
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / "sub" / "a.jpg").write_bytes(b"x")
    export = _export_like(photos / "myexport")
    found = discover([photos])
    assert found.files == [photos / "sub" / "a.jpg"]
    assert len(found.notes) == 1 and found.notes[0].startswith(f"{export} is a giflens export")
    named = discover([export])
    assert named.files == [] and named.notes[0].endswith(f"giflens import raw-dataset {export}")
    # a raw dataset without a manifest is an editor's own folder: walked as before
    (export / "manifest.json").unlink()
    assert discover([photos]).files == [photos / "myexport" / "raw_dataset" / "0" / "face_1.jpg", photos / "sub" / "a.jpg"]

    data = tmp_path / "data"
    uploaded = _export_like(data / "uploads" / "myexport")
    (data / "uploads" / "abc").mkdir()
    (data / "uploads" / "abc" / "b.gif").write_bytes(b"x")
    found = discover([data], data_dir=data)
    assert found.files == [data / "uploads" / "abc" / "b.gif"]
    assert [n.split(" is ")[0] for n in found.notes] == [str(uploaded)]
    # an import chooses the export's crops itself (keep_outputs): they are its media
    crop = uploaded / "raw_dataset" / "0" / "face_1.jpg"
    assert discover([crop], data_dir=data, keep_outputs=True).files == [crop]


# -- 3. upload names ------------------------------------------------------------------------------------
def test_an_upload_without_a_stem_keeps_its_extension():
    """"..jpg" was saved as "jpg": the leading dots were stripped through the extension's own."""
    assert safe_file_name("..jpg") == "upload.jpg"
    assert safe_file_name("...gif") == "upload.gif"
    assert safe_file_name(" . .png") == "upload.png"
    assert safe_file_name(".hidden.png") == "hidden.png"
    assert safe_file_name(".hidden") == "hidden"
    assert safe_file_name("../../evil.jpg") == "evil.jpg" and safe_file_name("..") == "upload"
    for name in ("clip.gif", "a.b.jpg", "Zoë 😀 clip.jpg"):
        assert safe_file_name(name) == name


# -- 4. editor names in NFC -----------------------------------------------------------------------------
def test_an_editor_typed_decomposed_is_the_same_editor_composed(tmp_path):
    """"José" typed as "e" + U+0301 (macOS) and as one "é" were two editors: Undo last by one found nothing of
    the other's."""
    nfd, nfc = unicodedata.normalize("NFD", "José"), unicodedata.normalize("NFC", "José")
    assert nfd != nfc and check_editor(f" {nfd} ") == nfc
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    _, added = add_class(store, "Nfd Person", nfd)
    undone = undo_last(store, nfc)
    with store() as session:
        event = session.get(AuditEvent, added.event_id)
        assert event.editor == nfc and event.undone_by_id == undone.event_id


# -- 5. OIDC login without a usable name claim -----------------------------------------------------------
def test_a_logged_in_user_without_a_name_claim_is_told_why_not_to_log_in(tmp_path, monkeypatch):
    """Logged in, but the token carries no usable name or e-mail: a change was refused with "log in with the
    sidebar's button", which they had done. The refusal now says what the sidebar says."""
    at = open_app(monkeypatch, tmp_path / "data", f"sqlite:///{tmp_path / 'store.db'}")
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": True, "email": "  "}
    at.run()
    at.switch_page("labeling/pages/classes.py").run()
    at.text_input(key="add_class_name").input("Oidc Nameless")
    button(at, "Add class").click().run()
    no_exception(at)
    [refusal] = errors(at)
    assert "carries no name or e-mail the audit log can record" in refusal and "log in with" not in refusal


# -- 6. Undo last with nothing left to undo --------------------------------------------------------------
def test_undo_last_is_disabled_when_only_undos_and_records_are_left(tmp_path, monkeypatch):
    """The sidebar's Undo last was enabled whenever the editor had operations listed, though every one was an
    undo, a record (an ingest batch) or undone already: each press was refused. It follows undo_last now."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    add_class(store, "Undone Person", "ann")
    undo_last(store, "ann")
    with session_scope(store) as session:
        record_ingest_event(session, "ann", IngestSummary(), [])
    at = sign_in(open_app(monkeypatch, tmp_path / "data", url), "ann")
    [undo] = [b for b in at.sidebar.button if b.label == "Undo last"]
    assert undo.disabled
    add_class(store, "Kept Person", "ann")
    at.run()
    [undo] = [b for b in at.sidebar.button if b.label == "Undo last"]
    assert not undo.disabled
