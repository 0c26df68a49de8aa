"""Pages at catalog scale (an audit's 2,306 classes and 20,000 faces): what a rerun, a decision or a move of
a slider recomputes, and the order names are listed in.

- Review keeps each face's nearest faces while the vectors stay (`neighbour_rows`, keyed on a fingerprint of
  ids and vectors), and only votes again with the labels of the moment: a decision or a move of "Low
  confidence below" searches nothing (half of a 9.4 s Reject press was that search). The queue is the one
  the one-shot `suspect_faces` gives, on real LFW embeddings (exact and saved HNSW index) and on the page.
- Review computes the per-face distances and the look-alike pairs once per change of the store, not on every
  rerun (a tick reruns the page).
- The Classes and Tags boxes label their options from one dict built per run, not a DataFrame lookup per
  option (over a second per 2,306-option box).
- Names starting with an accented letter are listed among their letter, not after "Z" (classes_frame and the
  Tags page's "GIF or image" box).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import explorer.clusters
from bench.lfw_faces import load_lfw_faces
from conftest import open_app, plain_media
from explorer.clusters import (lookalike_pairs, members_by_distance, neighbour_depth,
                               neighbour_rows, suspect_faces, suspect_queue)
from labeling.classes import add_class
from labeling.db import open_store
from labeling.face_labels import reject_faces, relabel_faces
from labeling.queries import classes_frame, faces_frame
from models.knn_index import KnnIndex
from test_app_pages import no_exception, sign_in
from test_review_own_changes_and_filters import _add_faces, _table, review, synthetic  # noqa: F401 (fixtures)

MODEL = "dlib-resnet-v1"


# -- 1. neighbours kept while the vectors stay; the vote and the threshold redone --------------------------
@pytest.fixture(scope="module")
def lfw(lfw_dir: Path):
    """Every photo of the first 30 LFW people (458 photos), real dlib embeddings."""
    f = load_lfw_faces(lfw_dir, max_people=30)
    return f.names.astype(object), f.paths, f.vectors


def _split(vectors, labels, predicted, conf, ids, folder, nearest, min_confidence):
    """The Review page's path: kept neighbours, the vote over every face, then the threshold."""
    signals = suspect_faces(vectors, labels, predicted, conf, ids=ids, min_confidence=None, index_dir=folder,
                            model_id=MODEL, nearest=nearest)
    return suspect_queue(signals, min_confidence)


@pytest.mark.parametrize("exact_below", [2000, 100], ids=["exact", "saved-hnsw"])
def test_suspects_from_kept_neighbours_equal_the_one_shot_queue(lfw, tmp_path, monkeypatch, exact_below):
    """Neighbours searched once, with a third of the faces unlabelled, then labels changed (a class's faces
    moved to another, some unlabelled): every threshold gives the one-shot queue, and no vote searches."""
    from models import index_store

    monkeypatch.setattr(index_store, "EXACT_BELOW", exact_below)
    names, paths, vectors = lfw
    labels = names.copy()
    labels[::3] = None
    predicted = names.copy()
    conf = np.linspace(0.2, 1.0, len(names))
    conf[::7] = np.nan  # not predicted yet
    ids = [f"face-{p}" for p in paths]
    folder = index_store.index_folder(tmp_path, f"faces-{MODEL}")
    nearest = neighbour_rows(vectors, ids, folder, MODEL,
                             neighbour_depth(10, len(ids), int(sum(label is not None for label in labels))))
    assert nearest.shape == (len(ids), neighbour_depth(10, len(ids), int(sum(lb is not None for lb in labels))))
    changed = labels.copy()
    changed[np.flatnonzero(names == "Andre_Agassi")[:4]] = "Ariel_Sharon"  # a decision: relabel
    changed[1::5] = None  # decisions: rejected, marked unknown
    for now in (labels, changed):
        for min_confidence in (0.5, 0.3, 0.9):
            expected = suspect_faces(vectors, now, predicted, conf, ids=ids, min_confidence=min_confidence,
                                     index_dir=folder, model_id=MODEL)
            searches = KnnIndex.searches
            out = _split(vectors, now, predicted, conf, ids, folder, nearest, min_confidence)
            assert KnnIndex.searches == searches, "the kept neighbours were searched again"
            pd.testing.assert_frame_equal(out, expected)
    assert (expected["reasons"].str.contains("neighbours disagree")).any()
    assert (expected["reasons"].str.contains("low confidence")).any()


def test_a_face_short_of_labelled_neighbours_searches_on_its_own(lfw, tmp_path):
    """Kept rows too shallow for the labels of the moment (most faces unlabelled since): the faces left
    short search further, only they, and the queue is still the one-shot one."""
    names, paths, vectors = lfw
    labels = names.copy()
    labels[np.arange(len(names)) % 10 != 0] = None  # a tenth labelled
    ids = list(range(len(names)))
    nearest = neighbour_rows(vectors, ids, tmp_path / "index", MODEL, 5)
    conf = np.full(len(names), 0.9)
    expected = suspect_faces(vectors, labels, names, conf, ids=ids, index_dir=tmp_path / "index", model_id=MODEL)
    searches = KnnIndex.searches
    pd.testing.assert_frame_equal(_split(vectors, labels, names, conf, ids, tmp_path / "index", nearest, 0.5),
                                  expected)
    assert KnnIndex.searches > searches


def _suspects_now(store) -> pd.DataFrame:
    """The one-shot queue of the store's faces as the Review page lists it (model m1, k 10, threshold 0.5)."""
    frame, vecs = faces_frame(store, "m1", with_vectors=True)
    labels = frame["class_name"].where(frame["class_name"].notna(), None).tolist()
    predicted = frame["predicted_class_name"].where(frame["predicted_class_name"].notna(), None).tolist()
    return suspect_faces(vecs, labels, predicted, frame["predicted_confidence"].to_numpy(np.float64),
                         ids=frame["face_id"].tolist(), min_confidence=0.5)


def _page_suspects(at) -> pd.DataFrame:
    return _table(at, "review_suspects")[["id", "label", "neighbour_label", "reasons"]].reset_index(drop=True)


def test_review_searches_no_neighbours_after_a_decision_or_a_slider_move(review, synthetic):  # noqa: F811
    review.toggle(key="review_suspects_decided").set_value(True).run()  # the synthetic faces are all decided
    no_exception(review)
    searches = KnnIndex.searches
    a1, a2 = synthetic.faces["A"][1:3]  # two faces of A far from it: "neighbours disagree" among their reasons
    reject_faces(synthetic.store, [a1], "bob")
    review.run()
    no_exception(review)
    review.slider(key="review_min_conf").set_value(0.9).run()
    no_exception(review)
    assert KnnIndex.searches == searches, "a decision or the slider searched the neighbours again"
    page = _page_suspects(review)
    expected = _suspects_now(synthetic.store)
    # the page lists the one-shot queue (at its threshold: none of these faces has a prediction)
    pd.testing.assert_frame_equal(page[["id", "reasons"]], expected[["id", "reasons"]], check_dtype=False)
    assert a1 not in page["id"].tolist() and a2 in page["id"].tolist()
    # new vectors (an ingest without an editor): their neighbours are searched, once
    _add_faces(synthetic.store, [np.ones(8)], 1000)
    review.run()
    no_exception(review)
    assert KnnIndex.searches > searches
    searches = KnnIndex.searches
    review.slider(key="review_min_conf").set_value(0.4).run()
    review.run()
    assert KnnIndex.searches == searches


def test_review_with_one_labelled_face_searches_no_neighbours(tmp_path, monkeypatch):
    """Below 2 labelled faces nobody votes: the page still searched every face's n-1 neighbours (6,000
    faces: 42 s, 2.8 GB) and kept them. And the depth kept is capped however few faces are labelled."""
    url = f"sqlite:///{tmp_path}/store.db"
    store = open_store(url)
    ids = _add_faces(store, list(np.random.default_rng(3).normal(size=(40, 8))), 0)
    relabel_faces(store, ids[:1], add_class(store, "Person A", "ann")[0], "ann")
    searches = KnnIndex.searches
    at = sign_in(open_app(monkeypatch, tmp_path, url), "ann")
    at.switch_page("explorer/pages/review.py").run()
    no_exception(at)
    assert any("suspect" in c.value for c in at.caption), [c.value for c in at.caption]  # the queue was drawn
    assert KnnIndex.searches == searches, "neighbours searched with one labelled face"
    assert neighbour_depth(10, 20_000, 1) == 256 and neighbour_depth(10, 20_000, 20_000) == 22


# -- 2. per-face distances and look-alike pairs once per change of the store ------------------------------
@pytest.fixture
def per_face_calls(monkeypatch) -> dict[str, int]:
    """How often the page computes per-face distances or look-alike pairs over every face (the real
    functions, counted)."""
    counts = {"_per_face": 0, "lookalike_pairs": 0}
    for name in counts:
        real = getattr(explorer.clusters, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(explorer.clusters, name, counted)
    return counts


def test_review_reruns_compute_no_distances_and_open_classes_from_one_frame(review, synthetic, per_face_calls):  # noqa: F811
    review.run()
    review.selectbox(key="review_class").select("Person B").run()
    no_exception(review)
    assert per_face_calls == {"_per_face": 0, "lookalike_pairs": 0}, "a rerun computed distances over every face"
    frame, vecs = faces_frame(synthetic.store, "m1", with_vectors=True)
    labels = frame["class_name"].where(frame["class_name"].notna(), None).tolist()
    members = members_by_distance(vecs, labels, "Person B", ids=frame["face_id"].tolist())
    shown = _table(review, "review_members")
    assert shown["id"].tolist() == members["id"].tolist()
    assert np.allclose(shown["distance"].to_numpy(float), members["distance"].to_numpy(float))
    pairs = next(d.value for d in review.dataframe if "class_a" in d.value.columns)
    assert pairs[["class_a", "class_b"]].values.tolist() == \
        lookalike_pairs(vecs, labels, top=30)[["class_a", "class_b"]].values.tolist()
    per_face_calls.update(dict.fromkeys(per_face_calls, 0))  # (the expectations above computed some)
    reject_faces(synthetic.store, [synthetic.faces["B"][0]], "bob")  # a change: computed again, once each
    review.run()
    no_exception(review)
    assert per_face_calls["lookalike_pairs"] == 1
    assert per_face_calls["_per_face"] == 3  # class stats, the per-face frame, the suspects (not per class opened)
    assert synthetic.faces["B"][0] not in _table(review, "review_members")["id"].tolist()


# -- 3. class and media boxes label their options from one dict ------------------------------------------
@pytest.fixture
def loc_calls(monkeypatch) -> list[int]:
    """How many DataFrame .loc lookups a run makes (the real indexer, counted)."""
    from pandas.core.indexing import _LocIndexer

    calls = [0]
    real = _LocIndexer.__getitem__

    def counted(self, key):
        calls[0] += 1
        return real(self, key)
    monkeypatch.setattr(_LocIndexer, "__getitem__", counted)
    return calls


def _rerun_counted(tmp_path, monkeypatch, url: str, page: str, loc_calls: list[int], choose: int | None = None):
    """The page opened with "ann" signed in (and class `choose` picked to edit), then run again with the .loc
    lookups of that rerun counted."""
    at = sign_in(open_app(monkeypatch, tmp_path, url), "ann")
    at.switch_page(page).run()
    no_exception(at)
    if choose is not None:  # the Classes page edits no class until one is chosen
        at.selectbox(key="class_selected").set_value(choose).run()
        no_exception(at)
    loc_calls[0] = 0
    at.run()
    no_exception(at)
    return at


def test_the_class_boxes_cost_no_lookup_per_option(tmp_path, monkeypatch, loc_calls):
    url = f"sqlite:///{tmp_path}/store.db"
    store = open_store(url)
    n = 150
    for i in range(n):
        add_class(store, f"Person {i:03d}", "ann")
    catalog = classes_frame(store)
    selected = int(catalog["class_id"].iloc[0])
    at = _rerun_counted(tmp_path, monkeypatch, url, "labeling/pages/classes.py", loc_calls, choose=selected)
    boxes = {b.label: b for b in at.selectbox}
    assert len(boxes["Class to edit"].options) == n and len(boxes["Into"].options) == n - 1
    assert loc_calls[0] < n // 3, f"{loc_calls[0]} .loc lookups for {n} classes: one per option"
    expected = [f"{r.name} (id {r.class_id}, {r.status}, {r.faces} faces)" for r in catalog.itertuples()]
    assert boxes["Class to edit"].options == expected
    assert boxes["Into"].options == [e for e, c in zip(expected, catalog["class_id"]) if c != selected]
    assert boxes["Existing class"].options == boxes["Into"].options


def test_the_media_box_costs_no_lookup_per_option(tmp_path, monkeypatch, loc_calls):
    url = f"sqlite:///{tmp_path}/store.db"
    store = open_store(url)
    n = 150
    ids = plain_media(store, n)
    at = _rerun_counted(tmp_path, monkeypatch, url, "labeling/pages/tags.py", loc_calls)
    box = next(b for b in at.selectbox if b.label == "GIF or image")
    assert loc_calls[0] < n // 3, f"{loc_calls[0]} .loc lookups for {n} media items: one per option"
    assert sorted(box.options) == sorted(f"clip{i}.gif (id {m}, gif, 0 tags)" for i, m in enumerate(ids))


# -- 4. accented names among their letter -----------------------------------------------------------------
NAMES = ["Zoe Saldana", "Émile Hirsch", "Eva Green", "Ádám Bogdán", "Adam Sandler", "Óscar Jaenada",
         "Oscar Isaac", "Brad_Pitt", "Brad Paisley", "Łukasz Fabiański", "Luke Evans", "éclair", "Eclair"]
ORDER = ["Ádám Bogdán", "Adam Sandler", "Brad Paisley", "Brad_Pitt", "Eclair", "éclair", "Émile Hirsch",
         "Eva Green", "Łukasz Fabiański", "Luke Evans", "Oscar Isaac", "Óscar Jaenada", "Zoe Saldana"]


def test_the_class_catalog_lists_accented_names_among_their_letter(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    for name in NAMES:
        add_class(store, name, "ann")
    assert classes_frame(store)["name"].tolist() == ORDER


def test_the_media_box_lists_accented_file_names_among_their_letter(tmp_path, monkeypatch):
    from labeling.db import session_scope
    from labeling.schema import Media, MediaPath

    url = f"sqlite:///{tmp_path}/store.db"
    store = open_store(url)
    files = ["zebra.gif", "été.gif", "eagle.gif", "Ábel.gif", "abba.gif", "photo.jpg", "Émoi.jpg"]
    with session_scope(store) as s:
        media = [Media(sha256=f"{i + 1:064x}", path=f"/m/{f}", kind="image" if f.endswith(".jpg") else "gif",
                       status="ok") for i, f in enumerate(files)]
        s.add_all(media)
        s.flush()
        s.add_all([MediaPath(media_id=m.id, path=m.path) for m in media])
    at = sign_in(open_app(monkeypatch, tmp_path, url), "ann")
    at.switch_page("labeling/pages/tags.py").run()
    no_exception(at)
    box = next(b for b in at.selectbox if b.label == "GIF or image")
    assert [o.split(" (id")[0] for o in box.options] == ["abba.gif", "Ábel.gif", "eagle.gif", "été.gif",
                                                         "zebra.gif", "Émoi.jpg", "photo.jpg"]
