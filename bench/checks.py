"""Argument checks the bench scripts share: a bad path or count is refused with parser.error (exit 2,
one line naming the option) before any model loads or anything is ingested, not after minutes of work
with a traceback."""
from __future__ import annotations

import argparse
from pathlib import Path


def existing_dir(parser: argparse.ArgumentParser, flag: str, path: Path) -> None:
    """A folder the script reads: a typo must not become an empty (and silently meaningless) benchmark."""
    if not path.is_dir():
        parser.error(f"{flag} {path}: {'not a folder' if path.exists() else 'no such folder'}")


def existing_file(parser: argparse.ArgumentParser, flag: str, path: Path) -> None:
    """A file the script reads, refused by name rather than by a FileNotFoundError traceback."""
    if not path.is_file():
        parser.error(f"{flag} {path}: {'not a file' if path.exists() else 'no such file'}")


def at_least(parser: argparse.ArgumentParser, flag: str, value: int | float | None, minimum: int | float,
             why: str = "") -> None:
    """A count (or size) below what the script can measure anything with; None means "not given"."""
    if value is not None and value < minimum:
        parser.error(f"{flag} must be at least {minimum}, got {value}" + (f": {why}" if why else ""))
