"""Shared fixtures: real data from ../shared/data, never copied into the repo."""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
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


# -- SQL stores: SQLite in tmp_path, and a fresh PostgreSQL database per test ---------
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return PG_ADMIN_URL


@contextmanager
def temporary_pg_database(admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """A brand-new PostgreSQL database for one test, dropped afterwards (connections forced out)."""
    from sqlalchemy import create_engine, text

    name = f"giflens_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        from labeling.db import _engine_for

        _engine_for.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url(pg_admin_url: str):
    with temporary_pg_database(pg_admin_url) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")
