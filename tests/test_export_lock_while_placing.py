"""An export waiting for another one to finish placing its folder must not hold the store's write lock: on
SQLite (one writer at a time) every editor's write stalled behind it, and failed with "database is locked"
after the busy timeout."""
from __future__ import annotations

import os
import threading
import time

from test_import_export_csvs_and_symlinks import store_with_classes

from labeling.classes import add_class
from labeling.export import _lock_folder, export_dataset


def test_an_export_waiting_to_place_its_folder_lets_editors_write(tmp_path, lfw_dir):
    data = tmp_path / "data"
    store = store_with_classes(f"sqlite:///{tmp_path / 'store.db'}", data, lfw_dir, ["Bee", "Cee"])
    exports = tmp_path / "exports"
    exports.mkdir()
    held = _lock_folder(exports, wait=True)  # another export placing into this folder right now
    assert held is not None
    outcome: dict[str, object] = {}

    def export() -> None:
        try:
            outcome["summary"] = export_dataset(store, data, exports / "out", "ann")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    worker = threading.Thread(target=export)
    worker.start()
    try:
        while not any(exports.glob(".out.tmp-*/manifest.json")) and worker.is_alive():
            time.sleep(0.05)
        time.sleep(0.5)  # the export reaches the folder lock and waits there
        assert worker.is_alive() and not (exports / "out").exists()
        class_id, result = add_class(store, "Dee", "bob")  # stalls then fails while the export holds the write lock
        assert class_id > 0 and result.event_id is not None
    finally:
        os.close(held)
        worker.join()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"].classes == 2 and (exports / "out" / "manifest.json").is_file()
