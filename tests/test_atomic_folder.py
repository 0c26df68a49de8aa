"""Model folders are replaced whole or not at all (models/atomic_folder.py)."""
from pathlib import Path

import pytest

from models.atomic_folder import atomic_folder


def _write(folder: Path, text: str) -> None:
    (folder / "a.txt").write_text(text)
    (folder / "b.txt").write_text(text)


def test_replaces_an_existing_folder_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_folder(target) as tmp:
        _write(tmp, "v1")
    with atomic_folder(target) as tmp:
        assert not any(tmp.iterdir()), "the temporary folder starts empty"
        (tmp / "a.txt").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert (target / "a.txt").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_an_error_half_way_keeps_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_folder(target) as tmp:
        _write(tmp, "v1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise KeyboardInterrupt
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a.txt": "v1", "b.txt": "v1"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path: Path) -> None:
    """The temporary folder is renamed over the target last; if that rename fails (here the
    temporary folder is gone), the version moved aside comes back."""
    target = tmp_path / "model"
    with atomic_folder(target) as tmp:
        _write(tmp, "v1")
    with pytest.raises(OSError):
        with atomic_folder(target) as tmp:
            tmp.rmdir()  # nothing left to rename into place
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a.txt": "v1", "b.txt": "v1"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
