"""Regression tests of audited bugs in recognition and its readers.

1. A track predicted as a class merged into another that was retired since (no merge of its own) read,
   in the review queue and when approving the track, as the retired class: `merged_targets` followed the
   merge chain only, while the top lists and the identity expert (`current_class_targets`) read it as
   unknown. One rule now (`labeling.queries.current_class_targets`).
2. `giflens predict`'s progress bar sat at 0 while every face was predicted (minutes at 50k faces) and
   moved only once rows were written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from labeling.classes import add_class, merge_classes, retire_class
from labeling.db import open_store, session_scope
from labeling.errors import ValidationError
from labeling.face_labels import label_track
from labeling.queries import current_class_targets, current_track_predictions, tracks_frame
from labeling.recognition import fit_classifier, refresh_predictions, track_predictions_frame
from labeling.schema import AuditEvent, Face, FaceEmbedding, FaceLabel, Media, Track, vector_to_bytes

DLIB = "dlib-resnet-v1"
DIM = 128
PHOTOS_PER_CLASS = 6
TRACK_FACES = 3


@dataclass
class Store:
    store: Any
    classes: dict[str, int]
    track: int
    track_faces: list[int]
    n_faces: int


def _add_face(s, media: Media, index: int, vector: np.ndarray, track_id: int | None = None) -> int:
    face = Face(media_id=media.id, face_index=index, frame_index=index, x1=0, y1=0, x2=10, y2=10, probability=0.99,
                landmarks=[[0, 0]] * 5)
    s.add(face)
    s.flush()
    s.add(FaceEmbedding(face_id=face.id, model_id=DLIB, dim=DIM, vector=vector_to_bytes(vector), track_id=track_id))
    return face.id


def _near(rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    """A face of the person at `centre`: well inside any open-set threshold (cosine distance ~0.006)."""
    v = centre + rng.normal(size=DIM) * 0.01
    return (v / np.linalg.norm(v)).astype(np.float32)


def build_store(url: str) -> Store:
    """Three classes (A, B, C) of six confirmed photos each, and one undecided GIF track of three faces of A,
    as ingest and an editor's labels would leave them (the vectors planted, not inferred)."""
    rng = np.random.default_rng(10)
    centres = {name: v / np.linalg.norm(v) for name, v in (("A", rng.normal(size=DIM)), ("B", rng.normal(size=DIM)),
                                                              ("C", rng.normal(size=DIM)))}
    store = open_store(url)
    photos: dict[str, list[int]] = {}
    with session_scope(store) as s:
        for n, (name, centre) in enumerate(centres.items()):
            photos[name] = []
            for i in range(PHOTOS_PER_CLASS):
                media = Media(sha256=f"{n * 100 + i + 1:064x}", path=f"/data/{name}{i}.jpg", kind="image", status="ok",
                              frame_hashes=[f"{int(rng.integers(0, 2**63)) | 0xFFFF:016x}"])
                s.add(media)
                s.flush()
                photos[name].append(_add_face(s, media, 0, _near(rng, centre)))
        gif = Media(sha256=f"{999:064x}", path="/data/a.gif", kind="gif", status="ok")
        s.add(gif)
        s.flush()
        vectors = [_near(rng, centres["A"]) for _ in range(TRACK_FACES)]
        mean = np.mean(vectors, axis=0)
        track = Track(media_id=gif.id, model_id=DLIB, track_index=0, n_faces=TRACK_FACES,
                      vector=vector_to_bytes((mean / np.linalg.norm(mean)).astype(np.float32)))
        s.add(track)
        s.flush()
        track_faces = [_add_face(s, gif, i, v, track.id) for i, v in enumerate(vectors)]
        track.representative_face_id = track_faces[0]
        track_id = track.id
    classes = {name: add_class(store, f"Person {name}", "ann", seed_face_ids=faces)[0] for name, faces in photos.items()}
    return Store(store, classes, track_id, track_faces, len(centres) * PHOTOS_PER_CLASS + TRACK_FACES)


def _queue_class(store, track: int) -> Any:
    return tracks_frame(store, DLIB).set_index("track_id").loc[track, "predicted_class_id"]


def _events(store) -> int:
    with store() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent))


# -- 1. one rule for the class a stored class id stands for now ---------------------------------------
def test_a_track_predicted_as_a_class_merged_into_a_retired_one_reads_unknown_and_is_not_approved(store_url):
    st = build_store(store_url)
    a, b = st.classes["A"], st.classes["B"]
    refresh_predictions(st.store, DLIB, editor="bob")
    with st.store() as s:
        assert s.get(Track, st.track).predicted_class_id == a
        assert current_track_predictions(s, [st.track])[st.track][0] == a
    assert _queue_class(st.store, st.track) == a

    merge_classes(st.store, a, b, "ann")  # A's labels and predictions move to B; the track's row still says A
    with st.store() as s:
        assert s.get(Track, st.track).predicted_class_id == a
        assert current_track_predictions(s, [st.track])[st.track][0] == b
        assert current_class_targets(s)[a] == b
    assert _queue_class(st.store, st.track) == b

    retire_class(st.store, b, "ann")  # B retired without a merge: A's faces now stand for nobody
    with st.store() as s:
        assert current_class_targets(s)[a] is None and current_class_targets(s)[b] is None
        predicted, at = current_track_predictions(s, [st.track])[st.track]
        assert predicted is None and at is not None  # the model's answer, read as unknown
    queue = tracks_frame(st.store, DLIB).set_index("track_id").loc[st.track]
    assert pd.isna(queue["predicted_class_id"]) and queue["predicted_class_name"] is None
    # the same answer as the track predictions frame (one rule for every reader)
    row = track_predictions_frame(st.store, DLIB).set_index("track_id").loc[st.track]
    assert pd.isna(row["predicted_class_id"]) and not row["stale"]

    events = _events(st.store)
    with pytest.raises(ValidationError, match=rf"track {st.track} has no predicted class to approve \(the model named 'Person A' for "
                                              rf"track {st.track}, retired since\)"):
        label_track(st.store, st.track, "approve", "ann")
    assert _events(st.store) == events
    with st.store() as s:
        statuses = set(s.scalars(select(FaceLabel.status).where(FaceLabel.face_id.in_(st.track_faces))))
    assert statuses == {"predicted"}  # nothing approved, least of all as the retired class


def test_a_class_merged_into_an_active_class_still_reads_as_it(store_url):
    st = build_store(store_url)
    a, b, c = st.classes["A"], st.classes["B"], st.classes["C"]
    refresh_predictions(st.store, DLIB, editor="bob")
    merge_classes(st.store, a, b, "ann")
    merge_classes(st.store, b, c, "ann")  # a chain: A -> B -> C, C active
    with st.store() as s:
        targets = current_class_targets(s)
        assert (targets[a], targets[b], targets[c]) == (c, c, c)
        assert current_track_predictions(s, [st.track])[st.track][0] == c
    assert _queue_class(st.store, st.track) == c
    approved = label_track(st.store, st.track, "approve", "ann")
    assert approved.event_id is not None
    with st.store() as s:
        labels = set(s.execute(select(FaceLabel.status, FaceLabel.class_id).where(FaceLabel.face_id.in_(st.track_faces))))
    assert labels == {("approved", c)}


# -- 2. the progress of a refresh moves while faces are predicted -------------------------------------
class CountingPredictor:
    """A fitted classifier that counts the faces it has been asked for top classes (`predict_faces` asks
    once per batch), so a progress call can tell whether it came before every face was predicted."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.faces_predicted = 0

    def predict_top(self, vectors: Any, model_id: str, top: int = 5) -> list[list[tuple[str, float]]]:
        self.faces_predicted += len(vectors)
        return self._inner.predict_top(vectors, model_id, top)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_refresh_progress_moves_while_predicting_and_ends_at_the_total(store_url):
    st = build_store(store_url)
    predictor = CountingPredictor(fit_classifier(st.store, DLIB).classifier)
    seen: list[tuple[int, int, int]] = []
    result = refresh_predictions(st.store, DLIB, predictor, editor="bob", batch_size=4,
                                 on_progress=lambda d, t: seen.append((d, t, predictor.faces_predicted)))
    assert result.faces == st.n_faces == predictor.faces_predicted and result.tracks == 1
    total = result.faces + result.tracks
    assert {t for _, t, _ in seen} == {total}
    done = [d for d, _, _ in seen]
    assert done[0] == 0 and done[-1] == total and done == sorted(done) and all(0 <= d <= total for d in done)
    # before the last batch was predicted (so before any row was written) the bar had moved
    while_predicting = [d for d, _, predicted in seen if predicted < st.n_faces]
    assert any(0 < d for d in while_predicting), seen
    written = [d for d, _, predicted in seen if predicted == st.n_faces]
    assert max(while_predicting) < written[-1] and len(set(written)) > 2  # and it goes on moving as rows are written
    with st.store() as s:
        assert s.scalar(select(func.count()).select_from(FaceLabel).where(FaceLabel.model_version.is_not(None))) == \
            st.n_faces
