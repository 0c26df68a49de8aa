"""Shared fixtures: real data from ../shared/data, never copied into the repo."""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
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
