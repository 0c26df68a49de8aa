"""Ingest: blank CLI paths, uploads saved side by side, other data folders' caches, relative folders, notes:

1. `giflens ingest ""` (an unset shell variable) is refused, exit 2, nothing ingested: Typer made "" the
   folder the command ran in, which was ingested recursively.
2. Two sessions saving the same upload (name and bytes) at once each write a temporary file of their own: a
   shared ".<name>.part" had one refused (ENOENT) or ingested half-written.
3. A save that fails (over a file size limit) leaves no partial ".part" file, nor the empty folder it made.
4. A walk leaves out another data folder's embedding cache (its face crops would be new media): known by the
   marker every cache writes, or, for one made before it, by its namespace folders; said in the notes.
5. The Ingest page reads a relative folder inside the data folder (as Export does), not in the server's
   working folder, and names the full path when it does not exist.
6. The upload notes say what became of uploads merged (stored with another media item, or failed), leave out
   "same content ... stored once" for a file that failed, and show uploads by name, not by hidden path.
7. The Overview links to Ingest on an empty store, to Explore, Review, Classes and Tags on a populated one.

Real photos (LFW) and a real GIF, real models, real SQLite stores."""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
import unicodedata
import zipfile
from pathlib import Path

from conftest import ROOT, open_app
from test_app_pages import button, errors, go, no_exception
from test_queries import SHARED
from typer.testing import CliRunner

from embeddings.cache import CACHE_MARKER, EmbeddingCache, namespace_for
from embeddings.pipeline import discover
from labeling.cli import app
from labeling.db import open_store
from labeling.ingest import ingest
from labeling.pages.common import UPLOADS, save_upload
from labeling.queries import media_frame
from models.settings import Settings

PHOTO = SHARED / "lfw" / "Hugo_Chavez" / "Hugo_Chavez_0001.jpg"
OTHER_PHOTO = SHARED / "lfw" / "Ai_Sugiyama" / "Ai_Sugiyama_0001.jpg"


def settings_in(folder: Path) -> Settings:
    return Settings(data_dir=folder / "data", database_url=f"sqlite:///{folder / 'store.db'}")


# -- 1. a blank path on the command line ------------------------------------------------------------------------
def test_cli_ingest_refuses_a_blank_path_and_ingests_nothing(tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    (here / PHOTO.name).write_bytes(PHOTO.read_bytes())  # what "" used to ingest: the working folder
    monkeypatch.chdir(here)
    monkeypatch.setenv("GIFLENS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GIFLENS_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    for args in ([""], [str(here / PHOTO.name), "  "]):
        result = CliRunner().invoke(app, ["ingest", *args, "--editor", "ann"])
        assert result.exit_code == 2, result.output
        assert f"path argument {len(args)} is empty" in result.output and "nothing ingested" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]  # no data folder, no store made


# -- 2. the same upload saved by two sessions at once -----------------------------------------------------------
def test_a_save_never_writes_into_another_sessions_temporary_file(tmp_path):
    settings = settings_in(tmp_path)
    data = PHOTO.read_bytes()
    folder = Path(settings.data_dir) / UPLOADS / hashlib.sha256(data).hexdigest()[:16]
    folder.mkdir(parents=True)
    theirs = folder / f".{PHOTO.name}.part"  # another session's save of the same upload, half written
    theirs.write_bytes(data[:100])
    path = save_upload(PHOTO.name, data, settings)
    assert path.read_bytes() == data
    assert theirs.read_bytes() == data[:100]  # was written into, then renamed away under the other session
    assert sorted(p.name for p in folder.iterdir()) == sorted([PHOTO.name, theirs.name])


def test_two_threads_saving_one_upload_both_get_the_whole_file(tmp_path):
    data = os.urandom(32 * 2 ** 20)
    want = hashlib.sha256(data).hexdigest()
    for trial in range(4):
        settings = settings_in(tmp_path / str(trial))
        outcomes: list[str] = []

        def save() -> None:
            try:
                path = save_upload("clip.mp4", data, settings)
                outcomes.append("ok" if hashlib.sha256(path.read_bytes()).hexdigest() == want else "wrong bytes")
            except OSError as exc:
                outcomes.append(f"refused: {exc}")

        threads = [threading.Thread(target=save) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert outcomes == ["ok", "ok"], (trial, outcomes)
        assert [p.name for p in (Path(settings.data_dir) / UPLOADS).rglob("*") if p.is_file()] == ["clip.mp4"]


# -- 3. a save that fails leaves nothing behind -----------------------------------------------------------------
SAVE_OVER_LIMIT = """
import resource, signal, sys
sys.path.insert(0, {root!r})
from models.settings import Settings
from labeling.pages.common import save_upload
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit is then EFBIG, an OSError
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))
try:
    save_upload("big.gif", b"GIF89a" + bytes(2_000_000), Settings(data_dir={data!r}))
except OSError as exc:
    print(exc.strerror)
"""


def test_a_failed_save_leaves_no_partial_file_nor_its_folder(tmp_path):
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-c", SAVE_OVER_LIMIT.format(root=str(ROOT), data=str(data))],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip() == "File too large", (proc.stdout, proc.stderr)
    assert (data / UPLOADS).is_dir() and list((data / UPLOADS).rglob("*")) == []  # was a 1 MB .big.gif.part


def test_ingest_page_refuses_an_upload_it_cannot_save_and_ingests_the_rest(tmp_path, monkeypatch):
    """The page's side of 3 (was blocked through the shared ".<name>.part", which no save uses any more): a
    file where the upload's folder goes, which the system refuses to make a folder of, even for root."""
    blocked = OTHER_PHOTO.read_bytes()
    in_the_way = tmp_path / "data" / UPLOADS / hashlib.sha256(blocked).hexdigest()[:16]
    in_the_way.parent.mkdir(parents=True)
    in_the_way.write_bytes(b"x")
    at = ingest_page(tmp_path, monkeypatch)
    upload(at, [(PHOTO.name, PHOTO.read_bytes(), "image/jpeg"), (OTHER_PHOTO.name, blocked, "image/jpeg")])
    refused = [d.value for d in at.dataframe if list(d.value.columns) == ["file", "reason"]]
    assert len(refused) == 1 and refused[0].to_dict("records") == [
        {"file": OTHER_PHOTO.name, "reason": "could not be saved: File exists"}], refused
    media = media_frame(open_store(f"sqlite:///{tmp_path / 'store.db'}"))
    assert list(zip(media["name"], media["status"])) == [(PHOTO.name, "ok")]
    assert [p.name for p in (tmp_path / "data" / UPLOADS).rglob("*.part")] == []


# -- 4. another data folder's cache met in a walk ---------------------------------------------------------------
def test_ingest_of_a_parent_folder_skips_another_data_folders_cache(tmp_path):
    parent = tmp_path / "parent"
    (parent / "photos").mkdir(parents=True)
    (parent / "photos" / PHOTO.name).write_bytes(PHOTO.read_bytes())
    other = Settings(data_dir=parent / "team-data", database_url=f"sqlite:///{tmp_path / 'other.db'}")
    assert ingest([parent / "photos"], other).faces == 1  # team-data/cache now holds the face's crop
    cache = parent / "team-data" / "cache"
    assert (cache / CACHE_MARKER).is_file()
    crop = next(cache.rglob("face_*.jpg"))

    mine = settings_in(tmp_path / "mine")
    summary = ingest([parent], mine)
    assert [Path(m["path"]).name for m in summary.media] == [PHOTO.name]  # the crop was a second media item
    assert any(n.startswith(f"{cache} is a giflens embedding cache") and "skipped, not ingested" in n
               for n in summary.notes), summary.notes
    named = ingest([crop], mine)  # a crop named on purpose is that cache's output too
    assert named.media == [] and any(f"is in a giflens embedding cache ({cache})" in n for n in named.notes)


def test_a_cache_made_before_the_marker_is_known_by_its_namespaces(tmp_path):
    parent = tmp_path / "parent"
    (parent / "photos").mkdir(parents=True)
    (parent / "photos" / PHOTO.name).write_bytes(PHOTO.read_bytes())
    cache = EmbeddingCache(parent / "old-data" / "cache")
    namespace = namespace_for("dlib-resnet-v1", {"frames": 8})
    cache.describe_namespace(namespace, "dlib-resnet-v1", {"frames": 8})
    cache.put(namespace, "ab" * 32, {"faces": 1}, files={"face_000.jpg": OTHER_PHOTO.read_bytes()})
    (cache.root / CACHE_MARKER).unlink()  # as a cache written before giflens marked its caches
    found = discover([parent])
    assert found.files == [parent / "photos" / PHOTO.name]
    assert any(n.startswith(f"{cache.root} is a giflens embedding cache") for n in found.notes), found.notes


# -- 5. a relative folder on the Ingest page --------------------------------------------------------------------
def ingest_page(tmp_path: Path, monkeypatch):
    at = open_app(monkeypatch, tmp_path / "data", f"sqlite:///{tmp_path / 'store.db'}")
    at.session_state["editor"] = "ann"
    return go(at, "ingest")


def ingest_folder(at, text: str):
    at.text_input(key="ingest_folder").input(text)
    button(at, "Ingest folder").click().run()
    no_exception(at)
    return at


def test_a_relative_folder_is_read_inside_the_data_folder(tmp_path, monkeypatch):
    server_cwd = tmp_path / "server"
    (server_cwd / "incoming").mkdir(parents=True)
    (server_cwd / "incoming" / OTHER_PHOTO.name).write_bytes(OTHER_PHOTO.read_bytes())  # what was read before
    (tmp_path / "data" / "incoming").mkdir(parents=True)
    (tmp_path / "data" / "incoming" / PHOTO.name).write_bytes(PHOTO.read_bytes())
    monkeypatch.chdir(server_cwd)
    at = ingest_page(tmp_path, monkeypatch)
    ingest_folder(at, "incoming")
    media = media_frame(open_store(f"sqlite:///{tmp_path / 'store.db'}"))
    assert list(media["path"]) == [str(tmp_path / "data" / "incoming" / PHOTO.name)]
    ingest_folder(at, "nothere")
    assert errors(at) == [f"{tmp_path / 'data' / 'nothere'} does not exist on the server."]


# -- 6. upload notes ----------------------------------------------------------------------------------------------
def upload(at, files: list[tuple[str, bytes, str]]):
    at.file_uploader(key="ingest_uploads").set_value(files).run()
    button(at, "Ingest uploaded files").click().run()
    no_exception(at)
    return at


def test_upload_notes_say_what_became_of_merged_copies_and_failures_by_name(tmp_path, monkeypatch):
    photo = PHOTO.read_bytes()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(zipfile.ZipInfo("a.jpg", (2020, 1, 1, 0, 0, 0)), photo)
    zipped = archive.getvalue()
    at = ingest_page(tmp_path, monkeypatch)
    upload(at, [("same.jpg", photo, "image/jpeg"),
                (unicodedata.normalize("NFD", "José.jpg"), photo, "image/jpeg"),
                (unicodedata.normalize("NFC", "José.jpg"), photo, "image/jpeg"),
                ("bad.gif", zipped, "image/gif"), ("bad.gif", zipped, "image/gif"), ("v.mp4", zipped, "video/mp4")])
    media = media_frame(open_store(f"sqlite:///{tmp_path / 'store.db'}"))
    same_id = int(media.loc[media["name"] == "same.jpg", "media_id"].iloc[0])
    infos = [i.value for i in at.info]
    assert "2 uploads named José.jpg had the same bytes: stored with media " f"{same_id} (same.jpg)" in infos, infos
    assert "2 uploads named bad.gif had the same bytes: saved once; it failed (see the failures)" in infos, infos
    assert not [n for n in infos if "ingested once" in n or "same content" in n], infos  # José's note is the line
    assert not [n for n in infos if f"{os.sep}{UPLOADS}{os.sep}" in n], infos  # no hidden upload paths


# -- 7. the Overview's links --------------------------------------------------------------------------------------
def page_links(at) -> list[tuple[str, str]]:
    return [(link.proto.label, link.proto.page) for link in at.get("page_link")]


def test_overview_links_to_ingest_when_empty_and_to_the_work_pages_after(tmp_path, monkeypatch):
    at = open_app(monkeypatch, tmp_path / "data", f"sqlite:///{tmp_path / 'store.db'}")
    no_exception(at)
    assert page_links(at) == [("Ingest media", "ingest")]
    at.session_state["editor"] = "ann"
    go(at, "ingest")
    upload(at, [(PHOTO.name, PHOTO.read_bytes(), "image/jpeg")])
    go(at, "home")
    # each target a page app.py registers (st.page_link refuses any other): its url path is read back
    assert page_links(at) == [("Explore", "explore"), ("Review", "review"), ("Classes", "classes"), ("Tags", "tags")]
