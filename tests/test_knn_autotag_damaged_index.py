"""Tagging (the kNN index and autotag): a saved kNN index whose graph or vectors file is missing or damaged is
rebuilt (nmslib's RuntimeError became a crash, shuffled vectors wrong neighbours); `giflens autotag`'s line
carries its audit event; the every-weight-is-0 hint counts the neighbours the tagger can find, and a run
that suggests nothing new says the earlier suggestions are kept. Real LFW dlib embeddings and the fixture
store of test_queries."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from bench.lfw_faces import load_lfw_faces
from labeling.audit import undo_event
from labeling.auto_tagging import SOURCE, AutotagResult, autotag, untrusted_experts_hint
from labeling.schema import AuditEvent
from labeling.tags import add_tags
from models.index_store import forget, stored_index
from models.knn_index import KnnIndex, KnnIndexError
from test_queries import new_fixture_store

MODEL = "dlib-resnet-v1"


@pytest.fixture(scope="module")
def faces(lfw_dir: Path):
    return load_lfw_faces(lfw_dir, max_people=20)


def exact_neighbours(faces, ids: list[int], k: int = 5) -> list[list[int]]:
    found, _ = KnnIndex(MODEL, method="exact").fit(faces.vectors, ids).query_ids(ids, k)
    return found.tolist()


def assert_right_neighbours(index: KnnIndex, faces, ids: list[int]) -> None:
    found, _ = index.query_ids(ids, 5)
    ref = exact_neighbours(faces, ids)
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(found.tolist(), ref)]) >= 0.98


def saved(faces, folder: Path) -> list[int]:
    ids = list(range(100, 100 + len(faces.vectors)))
    index, how = stored_index(folder, faces.vectors, ids, MODEL, exact_below=50)  # 259 faces: HNSW
    assert how == "built" and index.uses_hnsw and (folder / "hnsw.bin").is_file()
    forget(folder)  # as a new process: from disk
    return ids


def garble(path: Path, seed: int = 0) -> None:
    """Overwrite bytes in the middle of the file, keeping its size."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    at = rng.integers(len(data) // 4, len(data) - 64, size=200)
    data_arr = np.frombuffer(bytes(data), dtype=np.uint8).copy()
    data_arr[at] = rng.integers(0, 256, size=200, dtype=np.uint8)
    path.write_bytes(data_arr.tobytes())


DAMAGE = {
    "graph deleted": lambda f: (f / "hnsw.bin").unlink(),
    "graph data deleted": lambda f: (f / "hnsw.bin.dat").unlink(),
    "graph truncated": lambda f: os.truncate(f / "hnsw.bin", 100),
    "graph data truncated": lambda f: os.truncate(f / "hnsw.bin.dat", 1000),
    "graph garbled": lambda f: garble(f / "hnsw.bin"),
    "graph random bytes": lambda f: (f / "hnsw.bin").write_bytes(os.urandom(5000)),
    "vectors scrambled": lambda f: np.save(f / "vectors.npy", np.random.default_rng(0).permutation(
        np.load(f / "vectors.npy")), allow_pickle=False),
}


# -- 1, 2. a damaged saved index is rebuilt -----------------------------------------------------------------
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_missing_or_damaged_saved_index_is_rebuilt_with_the_right_neighbours(faces, tmp_path, damage):
    folder = tmp_path / "idx"
    ids = saved(faces, folder)
    DAMAGE[damage](folder)
    index, how = stored_index(folder, faces.vectors, ids, MODEL, exact_below=50)
    assert how == "rebuilt" and index.uses_hnsw
    assert_right_neighbours(index, faces, ids)
    forget(folder)
    again, how = stored_index(folder, faces.vectors, ids, MODEL, exact_below=50)  # the rebuild was saved whole
    assert how == "loaded"
    assert_right_neighbours(again, faces, ids)


def test_load_names_the_damaged_file(faces, tmp_path):
    folder = tmp_path / "idx"
    saved(faces, folder)
    garble(folder / "vectors.npy")
    with pytest.raises(KnnIndexError, match=r"vectors\.npy: damaged"):
        KnnIndex.load(folder)


def test_nmslibs_read_error_is_a_knn_index_error_for_an_index_saved_without_checksums(faces, tmp_path):
    folder = tmp_path / "idx"
    ids = saved(faces, folder)
    meta = json.loads((folder / "index.json").read_text())
    del meta["checksums"]  # as saved before checksums were recorded
    (folder / "index.json").write_text(json.dumps(meta))
    (folder / "hnsw.bin").unlink()
    with pytest.raises(KnnIndexError, match=r"hnsw\.bin: nmslib could not read the HNSW graph \(RuntimeError"):
        KnnIndex.load(folder)
    # stored_index rebuilds such an index once (its files cannot be checked), then loads the new one
    index, how = stored_index(folder, faces.vectors, ids, MODEL, exact_below=50)
    assert how == "rebuilt" and json.loads((folder / "index.json").read_text())["checksums"]
    assert_right_neighbours(index, faces, ids)
    forget(folder)
    assert stored_index(folder, faces.vectors, ids, MODEL, exact_below=50)[1] == "loaded"


def test_a_loaded_graph_damaged_on_disk_since_is_not_copied_into_the_next_save(faces, tmp_path):
    folder = tmp_path / "idx"
    n = len(faces.vectors)
    ids = list(range(n))
    KnnIndex(MODEL, exact_below=50).fit(faces.vectors[: n - 5], ids[: n - 5]).save(folder)
    loaded = KnnIndex.load(folder)
    garble(folder / "hnsw.bin")  # after the load: the graph in memory is intact, the file is not
    loaded.add(faces.vectors[n - 5:], ids[n - 5:])
    copy = KnnIndex.load(loaded.save(tmp_path / "copy"))  # checksums pass: the graph was rebuilt, not copied
    assert copy.uses_hnsw and len(copy) == n
    assert_right_neighbours(copy, faces, ids)


# -- 3. the autotag line carries its event ------------------------------------------------------------------
def test_the_autotag_line_says_its_event_where_predict_does():
    result = AutotagResult({"visual": 0.25, "identity": 0.0}, {}, {}, 12, 5, 3, 2, 1, 0, 4, 1, 2, event_id=17)
    assert result.line() == ("media=12 tagged=5 suggested=3 changed=2 removed=1 rejected_kept=0 originals_confirmed=4 "
                             "originals_lowered=1 originals_changed=2 event=17 weight_visual=0.2500 "
                             "weight_identity=0.0000")
    result.event_id = None
    assert " originals_changed=2 event=none weight_visual=" in result.line()


# -- 4. the every-weight-is-0 hint ---------------------------------------------------------------------------
def test_the_hint_counts_the_neighbours_a_small_tagged_set_has():
    # k=10 but three tagged media: leave-one-out each has 2 tagged neighbours, and shares are out of 2
    hint = untrusted_experts_hint(10, 1.0, tagged=3)
    assert "a tag needs 2 of a media item's 2 nearest tagged media (k=10, but only 3 media are tagged)" in hint
    assert "min_frequency 0.50 lets a single neighbour vote" in hint
    assert "needs 2 of a media item's 3 nearest" in untrusted_experts_hint(10, 0.6, tagged=4)
    assert "min_frequency 0.33 lets" in untrusted_experts_hint(10, 0.6, tagged=4)  # 1/3, rounded down
    # the advice never reads 0.00 and never rounds up past the bound that works
    assert "min_frequency 0.002 lets" in untrusted_experts_hint(500, 0.2, tagged=1000)
    assert "min_frequency 0.14 lets" in untrusted_experts_hint(7, 0.5)
    assert "and min_frequency 0.005 a tag" in untrusted_experts_hint(500, 0.005)
    # k within the tagged set: as before
    assert "needs 10 of a media item's 10 nearest tagged media;" in untrusted_experts_hint(10, 1.0, tagged=50)
    assert "single neighbour" not in untrusted_experts_hint(10, 0.5, tagged=3)


def test_a_run_with_no_trusted_expert_prints_event_none_and_says_the_earlier_suggestions_are_kept(tmp_path_factory):
    fx = new_fixture_store(tmp_path_factory, "r15-autotag")
    photos = sorted(fx.largest_face)
    add_tags(fx.store, [fx.media[p] for p in photos], ["stale"], "model-run", confidence=0.4, source=SOURCE,
             status="suggested")
    silent = autotag(fx.store, "bob", text=None)
    assert not any(silent.weights.values()) and silent.changed == 0 and silent.event_id is None
    assert " event=none " in silent.line()
    assert silent.kept == len(photos) + 1  # the photos' "stale" and the fixture's "happy" on the GIF
    assert f"nothing new suggested: {silent.kept} earlier suggestion(s) kept" in silent.notes[-1]
    hint = next(n for n in silent.notes if n.startswith("no suggestion: every expert's weight is 0"))
    assert hint == untrusted_experts_hint(10, 0.2, silent.tagged) and silent.tagged <= 10

    add_tags(fx.store, [fx.media[photos[0]]], ["Ariel Sharon"], "ann")
    vote = autotag(fx.store, "bob", text=None)
    with fx.store() as s:
        last = s.scalar(select(func.max(AuditEvent.id)))
    assert vote.changed > 0 and vote.event_id == last and f" event={last} " in vote.line()
    assert not any(n.startswith("nothing new suggested") for n in vote.notes)
    undo_event(fx.store, vote.event_id, "bob")  # the number on the line is the one undo takes
