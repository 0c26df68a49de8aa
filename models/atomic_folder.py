"""Folders written whole or not at all (saved classifiers, retraining heads, kNN indexes).

Why: a reader (the app, the next `giflens predict`) may open a model folder at any moment, and a
save killed half-way must not leave half a model behind. Everything is written into a temporary
folder beside the target, then swapped in by renames: the old folder is moved aside first and put
back if the swap fails, so the target always holds one complete version.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; on a clean exit it replaces `target`.

    On any error (or Ctrl-C) inside the block the temporary folder is removed and `target` is
    left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    old: Path | None = None
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}-{tmp.name[-8:]}")
            target.rename(old)
        try:
            tmp.rename(target)
        except BaseException:
            if old is not None:
                old.rename(target)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
