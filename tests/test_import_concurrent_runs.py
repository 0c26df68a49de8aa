"""Two imports of one file at once: the second waits for the first and reports everything
unchanged, as re-running an import does, instead of failing on the classes or tags the first created."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from sqlalchemy import func, select

from labeling.db import open_store, session_scope
from labeling.importers import ImportSummary, import_attributes, import_classes, import_tags
from labeling.schema import CelebrityClass, Media, MediaTag, Tag

N = 200  # lines per file: enough work that the two imports' transactions overlap


def _together(url: str, run: Callable[..., ImportSummary], path: Path) -> list[ImportSummary]:
    """`run(store, path, editor)` in two threads released together, each with its own session; both
    must succeed (an exception in either fails the test)."""
    barrier = threading.Barrier(2)

    def one(editor: str) -> ImportSummary:
        store = open_store(url)
        barrier.wait()
        return run(store, path, editor=editor)

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(one, editor) for editor in ("alice", "bob")]
        return [f.result() for f in futures]


def _count(url: str, model) -> int:
    with session_scope(open_store(url)) as s:
        return s.scalar(select(func.count()).select_from(model))


def test_two_class_imports_at_once_create_each_class_once(store_url: str, tmp_path: Path) -> None:
    """GIPHY's class list format (`Labels,Index`, `Name_[m.id]`): one import creates every class, the other
    finds them all (the old code failed it: "external id ... already belongs to class ...")."""
    path = tmp_path / "celebrities.csv"
    path.write_text("Labels,Index\n" + "".join(f"Person_{i:03d}_[m.0t{i:04d}],{i}\n" for i in range(N)))
    open_store(store_url)  # migrated once, before the race
    summaries = sorted(_together(store_url, import_classes, path), key=lambda s: s.created)
    assert [(s.created, s.updated, s.unchanged) for s in summaries] == [(0, 0, N), (N, 0, 0)]
    assert summaries[0].event_id is None and summaries[1].event_id is not None
    assert _count(store_url, CelebrityClass) == N


def test_two_attribute_imports_at_once_create_each_class_once(store_url: str, tmp_path: Path) -> None:
    """lfw-people.csv's format (names without ids, `photos` ignored): the classes one import creates are
    found by the other (the old code failed it: "saved a class of the same name at the same moment")."""
    path = tmp_path / "people.csv"
    path.write_text("name,photos,gender,ethnicity\n" +
                    "".join(f"Person_{i:03d},{i},{'male' if i % 2 else 'female'},\n" for i in range(N)))
    open_store(store_url)
    summaries = sorted(_together(store_url, import_attributes, path), key=lambda s: s.created)
    assert [(s.created, s.updated, s.kept, s.unchanged) for s in summaries] == [(0, 0, 0, N), (N, 0, 0, 0)]
    assert summaries[0].event_id is None
    assert _count(store_url, CelebrityClass) == N


def test_two_tag_imports_at_once_write_each_tag_once(store_url: str, tmp_path: Path) -> None:
    """gifs.csv's format (`file,uploader_tags`, `;`-separated) over ingested media, every tag new: one
    import creates the tags and writes them, the other finds them all written (the old code failed it:
    "saved the same new tag at the same moment")."""
    store = open_store(store_url)
    with session_scope(store) as s:
        s.add_all(Media(sha256=f"{i + 1:064x}", path=f"/media/clip-{i:03d}.gif", kind="gif", status="ok")
                  for i in range(N))
    path = tmp_path / "gifs.csv"
    path.write_text("file,uploader_tags\n" +
                    "".join(f"clip-{i:03d}.gif,t{i}a;t{i}b;shared\n" for i in range(N)))
    summaries = sorted(_together(store_url, import_tags, path), key=lambda s: s.tags)
    assert [(s.tags, s.unchanged, s.kept, len(s.skipped)) for s in summaries] == [(0, 3 * N, 0, 0), (3 * N, 0, 0, 0)]
    assert summaries[0].event_id is None
    assert _count(store_url, Tag) == 2 * N + 1
    assert _count(store_url, MediaTag) == 3 * N
