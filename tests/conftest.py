"""Shared fixtures: real data from ../shared/data, never copied into the repo."""
from __future__ import annotations

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
