"""Round 16: `giflens import raw-dataset` shows ingest's own progress (each file as it is read, then the
batched inference), and a labels.csv row without images says its class is kept."""
from __future__ import annotations

import shutil
from pathlib import Path

from labeling.db import open_store
from labeling.importers import import_raw_dataset
from models.settings import Settings


def raw_dataset(tmp_path: Path, lfw_dir: Path) -> Path:
    """Two LFW people with two photos each, and a third label whose folder is missing."""
    raw = tmp_path / "raw"
    for person in ("Ariel_Sharon", "Colin_Powell"):
        (raw / "raw_dataset" / person).mkdir(parents=True)
        for photo in sorted((lfw_dir / person).glob("*.jpg"))[:2]:
            shutil.copy(photo, raw / "raw_dataset" / person / photo.name)
    (raw / "labels.csv").write_text("Label,Index\nAriel_Sharon,0\nColin_Powell,1\nMissing_Person,2\n", encoding="utf-8")
    return raw


def test_the_import_reports_each_file_read_and_keeps_a_class_without_images(tmp_path, lfw_dir):
    raw = raw_dataset(tmp_path, lfw_dir)
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    read: list[tuple[Path, int]] = []
    started: list[int] = []
    summary = import_raw_dataset(store, raw, Settings(data_dir=tmp_path / "data"), "ann",
                                 on_start=started.append, on_read=lambda path, batch: read.append((path, batch)))
    assert started == [4]
    assert sorted({Path(p).name for p, _ in read}) == sorted(p.name for p in raw.glob("raw_dataset/*/*.jpg"))
    assert any(batch for _, batch in read)  # the batched inference is announced too
    missing = [s for s in summary.skipped if "Missing_Person" in s]
    assert missing and "class kept" in missing[0], summary.skipped
    assert summary.created == 3  # the class list is labels.csv: the class without images is created
