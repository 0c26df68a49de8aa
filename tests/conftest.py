"""Shared fixtures: real data from ../shared/data, never copied into the repo."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
SHARED_DATA = ROOT.parent / "shared" / "data"
LFW = SHARED_DATA / "lfw"
GIFS = SHARED_DATA / "gifs"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"../shared/data is missing at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def lfw_dir(shared_data: Path) -> Path:
    return LFW


@pytest.fixture(scope="session")
def gifs_dir(shared_data: Path) -> Path:
    return GIFS


# -- ingest: the real networks and a data folder per test ---------------------------------------------
@pytest.fixture(scope="module")
def pipeline_models() -> dict:
    """The networks, loaded once per test module (`IngestPipeline(settings, **pipeline_models)`);
    every test still gets its own data folder (`ingest_settings`)."""
    from embeddings.pipeline import IngestPipeline
    from models.settings import Settings

    p = IngestPipeline(Settings(data_dir=Path("/tmp/unused")))
    return {role: p._model(role) for role in ("detector", "face", "gif")}


def ingest_settings(tmp_path: Path, url: str | None = None):
    """Settings on a data folder of the test's own (its SQLite store, unless a store URL is given)."""
    from models.settings import Settings

    return Settings(data_dir=tmp_path / "data", database_url=url)


def session_dir(tmp_path_factory, name: str) -> Path:
    """A folder the whole test session shares (an embedding cache filled once, so the networks
    run once per image however many stores are built from it)."""
    path = tmp_path_factory.getbasetemp() / name
    path.mkdir(exist_ok=True)
    return path


@contextmanager
def unprivileged() -> Iterator[None]:
    """Root reads any file whatever its mode, so a permission refusal is only seen by a user
    without privileges: under root the block runs with the effective ids of `nobody` (65534)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A scratch folder any user can enter (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="giflens-shared-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- the app, as `giflens app` starts it ---------------------------------------------------------
APP = ROOT / "app.py"
APP_RUN_BOUND_S = 900  # AppTest needs a bound per script run; generous so a busy machine never fails on time


def open_app(monkeypatch, data_dir: Path, url: str, *, password: str | None = None,
             timeout: float = APP_RUN_BOUND_S, **env: str):
    """A fresh app session (no editor yet) on this data folder and store; `env` sets further
    GIFLENS_* settings, password the optional editor password."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("GIFLENS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("GIFLENS_DATABASE_URL", url)
    if password is None:
        monkeypatch.delenv("GIFLENS_EDITOR_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("GIFLENS_EDITOR_PASSWORD", password)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return AppTest.from_file(str(APP), default_timeout=timeout).run()


# -- store rows as ingest writes them, without running the models ---------------------------------
def make_faces(store, n_media: int = 2, faces_per_media: int = 3) -> list[int]:
    """Media and face rows as ingest writes them (geometry only; labels are what is tested)."""
    from labeling.db import session_scope
    from labeling.schema import Face, Media

    with session_scope(store) as s:
        ids = []
        for m in range(n_media):
            media = Media(sha256=f"{m + 1:064x}", path=f"/data/{m}.gif", kind="gif", status="ok")
            s.add(media)
            s.flush()
            for i in range(faces_per_media):
                face = Face(media_id=media.id, face_index=i, frame_index=i, x1=0, y1=0, x2=10, y2=10,
                            probability=0.99, landmarks=[[0, 0]] * 5)
                s.add(face)
                s.flush()
                ids.append(face.id)
        return ids


def plain_media(store, n: int, first: int = 1) -> list[int]:
    """`n` GIF media rows with one recorded path each and distinct made-up hashes from `first` on, for
    tests of tags and their undo, where no frame or face matters."""
    from labeling.db import session_scope
    from labeling.schema import Media, MediaPath

    with session_scope(store) as s:
        media = [Media(sha256=f"{i + first:064x}", path=f"/m/clip{i}.gif", kind="gif", status="ok") for i in range(n)]
        s.add_all(media)
        s.flush()
        s.add_all([MediaPath(media_id=m.id, path=m.path) for m in media])
        return [m.id for m in media]


# -- exports and encoders ----------------------------------------------------------------------------
def lopez_raw_dataset(raw: Path, lfw_dir: Path) -> Path:
    """GIPHY's training layout at `raw` with five LFW photos of George Lopez and six of Jennifer Lopez: two
    of George Lopez's aligned crops hash within the near-duplicate radius, the case export groups guard."""
    for i, person in enumerate(("George_Lopez", "Jennifer_Lopez")):
        (raw / "raw_dataset" / person).mkdir(parents=True)
        for photo in sorted((lfw_dir / person).glob("*.jpg"))[: 5 + i]:
            shutil.copyfile(photo, raw / "raw_dataset" / person / photo.name)
    (raw / "labels.csv").write_text("Label,Index\nGeorge_Lopez,0\nJennifer_Lopez,1\n", encoding="utf-8")
    return raw


def split_rows(out: Path) -> list[dict[str, str]]:
    """The rows of an export's split.csv."""
    import csv

    with (out / "split.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def partition(rows: list[dict[str, str]], key: str) -> set[frozenset[str]]:
    """The groups of an export as sets of `key` (the media's or the crop's sha256): comparable across stores."""
    groups: dict[str, set[str]] = {}
    for r in rows:
        groups.setdefault(r["group"], set()).add(r[key])
    return {frozenset(g) for g in groups.values()}


def encoder(*names: str) -> str:
    """The first of these encoders the locked PyAV wheel provides; a wheel without any fails the test
    instead of skipping it, because then giflens could no longer be shown to read that format."""
    import av

    for name in names:
        try:
            av.codec.Codec(name, "w")
            return name
        except av.codec.codec.UnknownCodecError:
            continue
    pytest.fail(f"the installed av wheel has none of the encoders {names}")


def photo_faces(store, data_dir: Path, folder: Path, n: int, start: int = 0) -> list[int]:
    """n media (photos n° start.. of folder, e.g. one LFW person), one face each with a crop under
    data_dir, as ingest stores them; no label yet. Frame hashes are random but informative (16+ bits
    set, no two near), the face vector a zero placeholder (no identity): only the export's own
    rules group them."""
    import random

    from PIL import Image

    from labeling.db import session_scope
    from labeling.schema import Face, FaceEmbedding, Media

    crops = data_dir / "crops"
    crops.mkdir(parents=True, exist_ok=True)
    photos = sorted(folder.glob("*.jpg"))[start : start + n]
    face_ids = []
    with session_scope(store) as s:
        for i, photo in enumerate(photos, start=start):
            media = Media(sha256=f"{i:064x}", path=str(photo), kind="image", status="ok",
                          frame_hashes=[f"{random.Random(i).getrandbits(64) | 0xFFFF:016x}"])
            s.add(media)
            s.flush()
            face = Face(media_id=media.id, face_index=0, frame_index=0, x1=60, y1=60, x2=190, y2=190,
                        probability=0.99, landmarks=[[0, 0]] * 5)
            s.add(face)
            s.flush()
            with Image.open(photo) as im:
                im.crop((60, 60, 190, 190)).save(crops / f"{face.id}.jpg", quality=92)
            s.add(FaceEmbedding(face_id=face.id, model_id="dlib-resnet-v1", dim=2, vector=b"\0" * 8,
                                crop_path=f"crops/{face.id}.jpg"))
            face_ids.append(face.id)
    return face_ids


# -- SQL stores: SQLite in tmp_path, and a fresh PostgreSQL database per test ---------
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return PG_ADMIN_URL


def temporary_pg_database(admin_url: str = PG_ADMIN_URL):
    """A brand-new PostgreSQL database for one test, dropped afterwards (connections forced out)."""
    from bench.store import postgres_database

    return postgres_database(admin_url, prefix="giflens_test")


@pytest.fixture
def pg_url(pg_admin_url: str):
    with temporary_pg_database(pg_admin_url) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")


def downgrade_then_upgrade(store, revision: str) -> None:
    """Take a store's schema back to `revision`, then up to head again, in one transaction: a migration
    test's round trip over the rows the store holds."""
    from alembic import command

    from labeling.db import alembic_config

    engine = store.kw["bind"]
    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
        command.upgrade(config, "head")


def n_events(store) -> int:
    """Audit events in the store: a refused or failed operation must leave the count as it was."""
    from sqlalchemy import func, select

    from labeling.schema import AuditEvent

    with store() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent))


def roster_data_dir(tmp_path: Path, monkeypatch) -> Path:
    """A data folder whose store holds 4 roster classes with a gender (imported as attributes) and no face."""
    from typer.testing import CliRunner

    from labeling.cli import app

    monkeypatch.delenv("GIFLENS_DATABASE_URL", raising=False)
    monkeypatch.delenv("GIFLENS_DATA_DIR", raising=False)
    data = tmp_path / "data"
    people = tmp_path / "people.csv"
    people.write_text("name,gender\nA One,male\nB Two,female\nC Three,male\nD Four,female\n")
    result = CliRunner().invoke(app, ["import", "attributes", str(people), "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    return data


@pytest.fixture
def downloads(monkeypatch) -> list:
    """Streamlit's in-memory media storage of each AppTest run, kept so a test can read what a
    download button would send (AppTest drops its runtime after the run)."""
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    kept: list[MemoryMediaFileStorage] = []

    class Kept(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            kept.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Kept)
    return kept


@pytest.fixture
def no_store_env(monkeypatch):
    """The data folder and store come from the command line only."""
    monkeypatch.delenv("GIFLENS_DATABASE_URL", raising=False)
    monkeypatch.delenv("GIFLENS_DATA_DIR", raising=False)
