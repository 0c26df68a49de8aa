"""The one settings object: every knob comes from here, overridable by `GIFLENS_*` env vars.

Lives in `models/` because it is the lowest layer every other package may import.
"""
from __future__ import annotations

import json
import math
import numbers
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.registry import unknown_model_message  # cheap: the networks and torch load inside its factories

THRESHOLDS_EXPECTED = "expected a JSON list of 3 numbers in [0, 1]"


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
    # NoDecode: the env value reaches `_check_thresholds` as text, so a bad one is one settings error, not
    # pydantic-settings' SettingsError traceback
    detect_thresholds: Annotated[tuple[float, float, float], NoDecode] = Field(
        default=(0.6, 0.7, 0.7), description="MTCNN's P-, R- and O-net probability thresholds, as a JSON list")
    min_face_probability: float = Field(default=0.9, ge=0.0, le=1.0)
    facenet_weights: Path | None = Field(default=None, description="InceptionResnetV1 vggface2 state dict")

    # GIF embeddings
    gif_model: str = "efficientnet-lite0"

    # The app
    umap_warm_up: bool = Field(default=True, description="compile UMAP's kernels in the worker as the app starts")

    # The CLI
    progress_every: float = Field(default=10.0, ge=1, allow_inf_nan=False,
                                  description="seconds between a command's status lines off a terminal (a log, a pipe)")

    @field_validator("face_model", "gif_model")
    @classmethod
    def _check_model(cls, value: str, info: ValidationInfo) -> str:
        """A model the registry knows in that role. Why checked here: every command and the app read their
        models from these settings, and a typo was a traceback, or (a model of another role, `mtcnn` as
        the GIF model) every file of an ingest stored as failed: a setup mistake recorded as bad media."""
        problem = unknown_model_message("face" if info.field_name == "face_model" else "gif", value)
        if problem is not None:  # as a context value, not the template: a name's braces are not placeholders
            raise PydanticCustomError("unknown_model", "{problem}", {"problem": problem})
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _check_data_dir(cls, value: Any) -> Any:
        """An empty GIFLENS_DATA_DIR= would be Path(''), the current folder: a store and cache made wherever
        the command runs, never the folder the editor meant. Refused; unset it for the default."""
        if isinstance(value, str) and not value.strip():
            raise PydanticCustomError("empty_data_dir", "must not be empty (unset it for the default, giflens-data)")
        return value

    @field_validator("detect_thresholds", mode="before")
    @classmethod
    def _check_thresholds(cls, value: Any) -> Any:
        """Three probabilities, one per MTCNN stage. Why checked here: a value above 1 (a typo, 7 for 0.7) is
        accepted by the detector and silently finds no face at all; a list of two is not "Field required"."""
        given = value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        ok = (isinstance(value, (list, tuple)) and len(value) == 3
              and all(isinstance(t, numbers.Real) and not isinstance(t, bool) and math.isfinite(t) and 0 <= t <= 1
                      for t in value))
        if not ok:
            raise PydanticCustomError("detect_thresholds", THRESHOLDS_EXPECTED + ", got {given}", {"given": repr(given)})
        return value

    @property
    def sqlite_path(self) -> Path:
        """The embedded default store's file in the data folder (used when no database URL is set)."""
        return self.data_dir / "giflens.db"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.sqlite_path.resolve()}"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
