"""SQLAlchemy 2 schema of the store. Changes go through Alembic migrations (labeling/migrations)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

import numpy as np
from sqlalchemy import (JSON, BigInteger, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, LargeBinary,
                        MetaData, String, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def vector_to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def bytes_to_vector(data: bytes, dim: int | None = None) -> np.ndarray:
    vector = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if dim is not None and vector.shape[0] != dim:
        raise ValueError(f"stored vector has {vector.shape[0]} values, expected {dim}")
    return vector


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Media(Base):
    __tablename__ = "media"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[Optional[str]] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16), default="unknown")
    status: Mapped[str] = mapped_column(String(16), default="ok", index=True)
    error: Mapped[Optional[str]] = mapped_column(Text)
    size_bytes: Mapped[Optional[int]] = mapped_column(BigInteger)
    width: Mapped[Optional[int]] = mapped_column(Integer)
    height: Mapped[Optional[int]] = mapped_column(Integer)
    total_frames: Mapped[Optional[int]] = mapped_column(Integer)
    sampled_frames: Mapped[Optional[list[int]]] = mapped_column(JSON)
    frame_hashes: Mapped[Optional[list[str]]] = mapped_column(JSON)  # 16-hex-digit 64-bit pHashes
    duration_s: Mapped[Optional[float]] = mapped_column(Float)
    # The cache entries (face and GIF namespaces) the stored rows came from: same key, same rows.
    source_key: Mapped[Optional[str]] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    faces: Mapped[list["Face"]] = relationship(back_populates="media", cascade="all, delete-orphan", passive_deletes=True)

    __mapper_args__ = {"version_id_col": version}


class Face(Base):
    __tablename__ = "face"
    __table_args__ = (UniqueConstraint("media_id", "face_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    face_index: Mapped[int] = mapped_column(Integer)
    frame_index: Mapped[int] = mapped_column(Integer)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    probability: Mapped[float] = mapped_column(Float)
    landmarks: Mapped[Any] = mapped_column(JSON)

    media: Mapped[Media] = relationship(back_populates="faces")


class Track(Base):
    __tablename__ = "track"
    __table_args__ = (UniqueConstraint("media_id", "model_id", "track_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(String(64))
    track_index: Mapped[int] = mapped_column(Integer)
    n_faces: Mapped[int] = mapped_column(Integer)
    representative_face_id: Mapped[Optional[int]] = mapped_column(ForeignKey("face.id", ondelete="SET NULL"))
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    # One celebrity prediction for the whole track (labeling/recognition.py, migration 0003): derived
    # model output like the vector, rewritten by every refresh; None class = the model says unknown.
    # A class id without a foreign key: see migration 0003 for why.
    predicted_class_id: Mapped[Optional[int]] = mapped_column(Integer, index=True)
    predicted_confidence: Mapped[Optional[float]] = mapped_column(Float)
    predicted_distance: Mapped[Optional[float]] = mapped_column(Float)  # cosine, to the best class's centroid
    predicted_top: Mapped[Optional[list]] = mapped_column(JSON)  # [[class_id, confidence], ...]
    prediction_method: Mapped[Optional[str]] = mapped_column(String(16))  # "mean" | "product"
    model_version: Mapped[Optional[str]] = mapped_column(String(64))
    predicted_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))


# The columns of a track's prediction, written together by a refresh and cleared together when the
# track's members change.
TRACK_PREDICTION_FIELDS = ("predicted_class_id", "predicted_confidence", "predicted_distance", "predicted_top",
                           "prediction_method", "model_version", "predicted_at")


class FaceEmbedding(Base):
    __tablename__ = "face_embedding"
    __table_args__ = (UniqueConstraint("face_id", "model_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    face_id: Mapped[int] = mapped_column(ForeignKey("face.id", ondelete="CASCADE"))
    model_id: Mapped[str] = mapped_column(String(64), index=True)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    crop_path: Mapped[Optional[str]] = mapped_column(Text)  # relative to the data folder
    track_id: Mapped[Optional[int]] = mapped_column(ForeignKey("track.id", ondelete="SET NULL"), index=True)


class MediaEmbedding(Base):
    __tablename__ = "media_embedding"
    __table_args__ = (UniqueConstraint("media_id", "model_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    top_labels: Mapped[Optional[list]] = mapped_column(JSON)  # [[imagenet label, probability], ...]


class ImportedGroup(Base):
    """One group of an imported export that held this media item (migration 0012): its crops of one clip.

    Why: `giflens import raw-dataset` of an export ingests each face crop as a media item of its own, so
    the crops of one multi-frame GIF share no frame hash or embedding here; only the export's split.csv
    `group` says they were one clip. Media sharing a `group_key` stay one group in every later export
    (`labeling.export.copy_groups`), or one clip's faces would train and validate at once. The key is
    namespaced by the export it came from (`labeling.import_groups.group_key`), so groups of two exports
    never meet by their numbers alone; it reads `<export>:<group>`, so crops of different groups of ONE
    export are also kept apart (a group of one row too), while copies from two exports may still join.
    Keys recorded before that format (64 hex digits, no export part) join their own crops and keep
    nothing apart; importing that export again records them anew.
    Provenance, not an editor's decision: not audited."""

    __tablename__ = "imported_group"
    __table_args__ = (UniqueConstraint("media_id", "group_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    group_key: Mapped[str] = mapped_column(String(64), index=True)


class MediaPath(Base):
    """One path a media item's bytes were ingested from (migration 0013): its name, and the name of every
    identical copy ingested since.

    Why: media are one row per content (unique sha256), so a byte-identical re-upload under another name
    is the same row; `media.path` keeps the first name (an editor's labels were made on that file), and
    the copies' names live here. `giflens import tags` matches a row's file name against every one of them,
    and `giflens dupes` lists them as identical copies. Provenance, not an editor's decision: not audited."""

    __tablename__ = "media_path"
    __table_args__ = (UniqueConstraint("media_id", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text, index=True)  # ingest takes a path from other items that held it
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# -- curation: classes, labels, tags, audit --------------------------------------------
CLASS_STATUSES = ("active", "proposed", "retired")
LABEL_STATUSES = ("predicted", "approved", "rejected", "relabeled", "unknown")
UNDECIDED_STATUSES = ("predicted",)  # the model's guess only: refreshed by every prediction run
CONFIRMED_STATUSES = ("approved", "relabeled")  # editor-confirmed class: what export and training read
LABEL_SOURCES = ("model", "editor", "import")
TAG_SOURCES = ("uploader", "model", "experts_voting", "editor", "import")
TAG_STATUSES = ("active", "suggested", "rejected")
CLASS_NAME_MAX = 200


class CelebrityClass(Base):
    __tablename__ = "celebrity_class"
    # AUTOINCREMENT: SQLite would otherwise give a new class the id of one an undo deleted (migration 0008)
    __table_args__ = (CheckConstraint("status IN ('active', 'proposed', 'retired')", name="status"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(CLASS_NAME_MAX))
    name_key: Mapped[str] = mapped_column(String(CLASS_NAME_MAX), unique=True)  # casefolded: uniqueness ignores case
    display_name: Mapped[Optional[str]] = mapped_column(String(CLASS_NAME_MAX))
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)
    external_id: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    gender: Mapped[Optional[str]] = mapped_column(String(64))
    ethnicity: Mapped[Optional[str]] = mapped_column(String(200))
    birth_year: Mapped[Optional[int]] = mapped_column(Integer)
    country: Mapped[Optional[str]] = mapped_column(String(100))
    merged_into_id: Mapped[Optional[int]] = mapped_column(ForeignKey("celebrity_class.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_by: Mapped[Optional[str]] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer, default=1)


class FaceLabel(Base):
    """One row per face: the model's latest prediction next to the editor's decision."""

    __tablename__ = "face_label"
    __table_args__ = (
        CheckConstraint("status IN ('predicted', 'approved', 'rejected', 'relabeled', 'unknown')", name="status"),
        CheckConstraint("source IN ('model', 'editor', 'import')", name="source"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    face_id: Mapped[int] = mapped_column(ForeignKey("face.id", ondelete="CASCADE"), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    class_id: Mapped[Optional[int]] = mapped_column(ForeignKey("celebrity_class.id"), index=True)
    predicted_class_id: Mapped[Optional[int]] = mapped_column(ForeignKey("celebrity_class.id"), index=True)
    predicted_confidence: Mapped[Optional[float]] = mapped_column(Float)
    predicted_top: Mapped[Optional[list]] = mapped_column(JSON)  # [[class_id, confidence], ...]
    model_version: Mapped[Optional[str]] = mapped_column(String(64))
    predicted_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(16))
    editor: Mapped[Optional[str]] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)


class Tag(Base):
    __tablename__ = "tag"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MediaTag(Base):
    __tablename__ = "media_tag"
    __table_args__ = (
        UniqueConstraint("media_id", "tag_id"),
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence"),
        CheckConstraint("status IN ('active', 'suggested', 'rejected')", name="status"),
        CheckConstraint("source IN ('uploader', 'model', 'experts_voting', 'editor', 'import')", name="source"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tag.id"), index=True)
    confidence: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="active")
    editor: Mapped[Optional[str]] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)


class AuditEvent(Base):
    """Append-only: rows are inserted, and only `undone_by_id` is ever set afterwards."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    editor: Mapped[str] = mapped_column(String(200), index=True)
    operation: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text)
    n_entities: Mapped[int] = mapped_column(Integer)
    before: Mapped[dict] = mapped_column(JSON)  # entity key -> row (None when it did not exist)
    after: Mapped[dict] = mapped_column(JSON)
    undo_of_id: Mapped[Optional[int]] = mapped_column(ForeignKey("audit_event.id"))
    undone_by_id: Mapped[Optional[int]] = mapped_column(ForeignKey("audit_event.id"))


class AuditEntity(Base):
    """Which entities an event wrote (or only concerned): history and undo dependencies by index."""

    __tablename__ = "audit_entity"
    __table_args__ = (Index("ix_audit_entity_key_event", "key", "event_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("audit_event.id"), index=True)
    key: Mapped[str] = mapped_column(String(80))
    written: Mapped[bool] = mapped_column(Boolean)


class Export(Base):
    __tablename__ = "export"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    editor: Mapped[str] = mapped_column(String(200))
    out_dir: Mapped[str] = mapped_column(Text)
    manifest: Mapped[dict] = mapped_column(JSON)
