"""The one settings object: every knob comes from here, overridable by `GIFLENS_*` env vars.

Lives in `models/` because it is the lowest layer every other package may import.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GIFLENS_", extra="ignore")

    data_dir: Path = Field(default=Path("giflens-data"), description="cache, SQLite file, model artifacts")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir")

    # sampling
    frames: int = Field(default=16, ge=1, le=512, description="frames sampled evenly per clip")
    dedupe_distance: int = Field(default=4, ge=0, le=64, description="max Hamming distance of near-duplicate frames")

    # guards
    max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    max_pixels: int = Field(default=40_000_000, ge=1, description="per frame, against decompression bombs")
    max_frames: int = Field(default=20_000, ge=1, description="frames in one clip")
    max_decode_pixels: int = Field(default=4_000_000_000, ge=1,
                                   description="canvas pixels x frames composited to reach an animation's last sample")

    # faces
    face_model: str = "dlib-resnet-v1"
    min_face_size: int = Field(default=20, ge=8)
    detect_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    min_face_probability: float = Field(default=0.9, ge=0.0, le=1.0)
    facenet_weights: Path | None = Field(default=None, description="InceptionResnetV1 vggface2 state dict")

    # GIF embeddings
    gif_model: str = "efficientnet-lite0"

    # The app
    umap_warm_up: bool = Field(default=True, description="compile UMAP's kernels in the worker as the app starts")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'giflens.db').resolve()}"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
