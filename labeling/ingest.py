"""Write ingest results to the SQL store: one transaction per media item.

Media are keyed by content hash, so the same bytes under two paths are one item and a
re-run updates rows in place instead of duplicating them. Face rows are kept when the
detections did not change, so labels that later point at them survive re-ingests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from embeddings.pipeline import IngestPipeline, MediaResult, discover_media
from labeling.db import open_store, session_scope
from labeling.schema import (TRACK_PREDICTION_FIELDS, Face, FaceEmbedding, Media, MediaEmbedding, Track,
                             vector_to_bytes)
from models.settings import Settings


@dataclass
class IngestSummary:
    ingested: int = 0
    cached: int = 0
    failed: int = 0
    faces: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def add(self, result: MediaResult) -> None:
        if result.status != "ok":
            self.failed += 1
            self.failures.append((str(result.path), result.error or result.reason or "failed"))
            return
        if result.from_cache:
            self.cached += 1
        else:
            self.ingested += 1
        self.faces += len(result.faces)

    def line(self) -> str:
        return f"ingested {self.ingested}, cached {self.cached}, failed {self.failed}, faces {self.faces}"


def _find_media(session: Session, result: MediaResult) -> Media | None:
    if result.sha256 is not None:
        return session.scalar(select(Media).where(Media.sha256 == result.sha256))
    return session.scalar(select(Media).where(Media.path == str(result.path), Media.sha256.is_(None)))


def _same_detections(faces: list[Face], result: MediaResult) -> bool:
    if len(faces) != len(result.faces):
        return False
    for row, rec in zip(sorted(faces, key=lambda f: f.face_index), result.faces):
        if row.frame_index != rec.frame_index:
            return False
        if not np.allclose([row.x1, row.y1, row.x2, row.y2], rec.box, atol=0.5):
            return False
    return True


def _upsert_tracks(session: Session, media_id: int, model: str, result: MediaResult, faces: list[Face]) -> list[Track]:
    """The media item's tracks for this face model, updated in place by track index.

    A re-ingest of the same file rebuilds the same tracks: keeping their rows keeps their ids (the
    Explore page's cached projections) and their celebrity predictions. A track whose members changed
    (another vector or representative) loses its prediction, which described other faces."""
    old = {t.track_index: t for t in session.scalars(
        select(Track).where(Track.media_id == media_id, Track.model_id == model))}
    tracks = []
    for t in result.tracks:
        vector, representative = vector_to_bytes(t.vector), faces[t.representative_face_index].id
        row = old.pop(t.track_index, None)
        if row is None:
            row = Track(media_id=media_id, model_id=model, track_index=t.track_index)
            session.add(row)
        elif (row.vector, row.representative_face_id, row.n_faces) != (vector, representative, len(t.face_indices)):
            for column in TRACK_PREDICTION_FIELDS:
                setattr(row, column, None)
        row.n_faces, row.representative_face_id, row.vector = len(t.face_indices), representative, vector
        tracks.append(row)
    for row in old.values():
        session.delete(row)
    session.flush()
    return tracks


def store_result(session: Session, result: MediaResult) -> Media:
    """Upsert one media item with its faces, embeddings and tracks (caller owns the transaction)."""
    media = _find_media(session, result)
    if media is None:
        media = Media(sha256=result.sha256, path=str(result.path))
        session.add(media)
    media.path = str(result.path)
    media.status = result.status
    media.error = result.error
    media.size_bytes = result.size_bytes
    if result.status != "ok":
        if media.kind is None:
            media.kind = result.kind
        session.flush()
        return media  # a failure never deletes what an earlier good run stored
    media.kind = result.kind
    media.width, media.height = result.width, result.height
    media.total_frames = result.total_frames
    media.sampled_frames = result.sampled_frames
    media.frame_hashes = result.frame_hashes
    media.duration_s = result.duration_s
    session.flush()

    existing = list(session.scalars(select(Face).where(Face.media_id == media.id)))
    if existing and not _same_detections(existing, result):
        session.execute(delete(Face).where(Face.media_id == media.id))
        session.flush()
        existing = []
    if not existing:
        existing = [
            Face(media_id=media.id, face_index=r.face_index, frame_index=r.frame_index,
                 x1=r.box[0], y1=r.box[1], x2=r.box[2], y2=r.box[3],
                 probability=r.probability, landmarks=r.landmarks)
            for r in result.faces
        ]
        session.add_all(existing)
        session.flush()
    faces = sorted(existing, key=lambda f: f.face_index)

    if result.face_model is not None:
        model = result.face_model
        tracks = _upsert_tracks(session, media.id, model, result, faces)
        by_face = {e.face_id: e for e in session.scalars(
            select(FaceEmbedding).where(FaceEmbedding.face_id.in_([f.id for f in faces]), FaceEmbedding.model_id == model))}
        for face, rec in zip(faces, result.faces):
            row = by_face.get(face.id) or FaceEmbedding(face_id=face.id, model_id=model)
            row.dim = int(rec.embedding.shape[0])
            row.vector = vector_to_bytes(rec.embedding)
            row.crop_path = rec.crop_path
            row.track_id = tracks[rec.track_index].id if rec.track_index >= 0 else None
            session.add(row)

    if result.gif_model is not None and result.gif_embedding is not None:
        row = session.scalar(select(MediaEmbedding).where(
            MediaEmbedding.media_id == media.id, MediaEmbedding.model_id == result.gif_model))
        row = row or MediaEmbedding(media_id=media.id, model_id=result.gif_model)
        row.dim = int(result.gif_embedding.shape[0])
        row.vector = vector_to_bytes(result.gif_embedding)
        row.top_labels = [[label, p] for label, p in result.top_labels]
        session.add(row)
    session.flush()
    return media


def ingest(
    paths: Iterable[Path | str],
    settings: Settings,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[MediaResult], None] | None = None,
    pipeline: IngestPipeline | None = None,
    store: sessionmaker | None = None,
) -> IngestSummary:
    """Ingest files and folders into the cache and the store; a bad file never stops the batch."""
    files = discover_media(paths)
    if on_start is not None:
        on_start(len(files))
    pipeline = pipeline or IngestPipeline(settings)
    store = store or open_store(settings.resolved_database_url)
    summary = IngestSummary()
    for result in pipeline.run(files):
        with session_scope(store) as session:
            store_result(session, result)
        summary.add(result)
        if on_result is not None:
            on_result(result)
    return summary
