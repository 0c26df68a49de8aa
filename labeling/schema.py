"""SQLAlchemy 2 schema of the store. Changes go through Alembic migrations (labeling/migrations)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

import numpy as np
from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, LargeBinary, MetaData, String, Text, UniqueConstraint
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
