"""Decode media files into sampled RGB frames, with guards against bad input.

The format comes from the file's first bytes, never from its extension. Every
refusal is a MediaError whose message names the file and the limit, and whose
`reason` is a short code stored with the failed media row.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, ImageSequence

from embeddings.phash import drop_near_duplicates, phash64
from embeddings.sampling import evenly_spaced_indices

ImageFile.LOAD_TRUNCATED_IMAGES = False

MEDIA_EXTENSIONS = frozenset({".gif", ".webp", ".mp4", ".webm", ".mov", ".mkv", ".m4v", ".jpg", ".jpeg", ".png"})


class MediaError(Exception):
    """A file giflens will not use, with a human message and a short reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class MediaLimits:
    max_file_bytes: int = 200 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_frames: int = 20_000

    @classmethod
    def from_settings(cls, settings) -> "MediaLimits":
        return cls(settings.max_file_bytes, settings.max_pixels, settings.max_frames)


@dataclass
class SampledMedia:
    kind: str  # gif | webp | video | image
    frames: list[np.ndarray]
    frame_indices: list[int]
    frame_hashes: list[int]
    total_frames: int
    width: int
    height: int
    duration_s: float | None


def sniff_format(head: bytes) -> str | None:
    """Container format from magic bytes: gif, png, jpeg, webp, mp4 or matroska."""
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    return None


def describe_content(head: bytes) -> str:
    """What an unsupported file looks like, for the error message."""
    if not head:
        return "empty"
    for magic, name in ((b"PK\x03\x04", "a zip archive"), (b"%PDF", "a PDF document"), (b"BM", "a BMP image"),
                        (b"\x1f\x8b", "gzip data"), (b"<", "markup (HTML/XML/SVG)")):
        if head.startswith(magic):
            return name
    try:
        text = head.decode("utf-8")
        if all(c.isprintable() or c.isspace() for c in text):
            return "text"
    except UnicodeDecodeError:
        pass
    return "unrecognised binary data"


def _check_pixels(path: Path, width: int, height: int, limits: MediaLimits) -> None:
    if width <= 0 or height <= 0:
        raise MediaError("unreadable", f"{path}: frame size {width}x{height} is invalid")
    if width * height > limits.max_pixels:
        raise MediaError("bomb", f"{path}: {width}x{height} = {width * height:,} pixels per frame is over the "
                                 f"{limits.max_pixels:,}-pixel limit (decompression bomb guard)")


def _check_frames(path: Path, total: int, limits: MediaLimits) -> None:
    if total > limits.max_frames:
        raise MediaError("too_many_frames", f"{path}: {total:,} frames is over the {limits.max_frames:,}-frame limit")


def _decode_pillow(path: Path, fmt: str, n_frames: int, limits: MediaLimits) -> tuple[str, list[np.ndarray], list[int], int, int, int, float | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise MediaError("bomb", f"{path}: refused as a decompression bomb: {exc}") from exc
    with im:
        width, height = im.size
        _check_pixels(path, width, height, limits)
        total = int(getattr(im, "n_frames", 1))
        _check_frames(path, total, limits)
        if fmt in ("gif", "webp") and (total > 1 or fmt == "gif"):
            kind = fmt
            wanted = set(evenly_spaced_indices(total, n_frames))
            frames, indices, duration_ms = [], [], 0.0
            for index, frame in enumerate(ImageSequence.Iterator(im)):
                duration_ms += float(frame.info.get("duration", 0) or 0)
                if index in wanted:
                    frames.append(np.asarray(frame.convert("RGB")))
                    indices.append(index)
            duration = duration_ms / 1000 if duration_ms > 0 else None
        else:
            kind, duration = "image", None
            upright = ImageOps.exif_transpose(im)
            frames, indices = [np.asarray(upright.convert("RGB"))], [0]
            height, width = frames[0].shape[:2]
            total = 1
    return kind, frames, indices, total, width, height, duration


def _decode_video(path: Path, n_frames: int, limits: MediaLimits) -> tuple[str, list[np.ndarray], list[int], int, int, int, float | None]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise MediaError("unsupported", f"{path}: the container has no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        _check_pixels(path, width, height, limits)
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else (
            container.duration / 1_000_000 if container.duration else None)
        total = int(stream.frames or 0)
        if total <= 0 and duration and stream.average_rate:
            total = int(round(duration * float(stream.average_rate)))
        if total <= 0:
            total = sum(1 for packet in container.demux(stream) if packet.size)
            container.seek(0)
        _check_frames(path, total, limits)
        wanted = set(evenly_spaced_indices(total, n_frames))
        last = max(wanted) if wanted else -1
        frames, indices, decoded = [], [], 0
        for index, frame in enumerate(container.decode(stream)):
            decoded = index + 1
            if index in wanted:
                frames.append(frame.to_ndarray(format="rgb24"))
                indices.append(index)
            if index >= last:
                break
        if decoded < total and len(frames) < len(wanted):
            total = decoded  # the header over-promised; keep what decodes
    return "video", frames, indices, total, width, height, duration


def _ends_with_gif_trailer(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\x3b"


def sample_media(path: Path | str, n_frames: int = 16, limits: MediaLimits = MediaLimits(), dedupe_distance: int = 4) -> SampledMedia:
    """Up to n_frames evenly spaced frames, near-duplicates dropped, with their pHashes."""
    path = Path(path)
    try:
        size = os.stat(path).st_size
        if size > limits.max_file_bytes:
            raise MediaError("too_large", f"{path}: {size:,} bytes is over the {limits.max_file_bytes:,}-byte limit")
        with open(path, "rb") as fh:
            head = fh.read(32)
    except FileNotFoundError as exc:
        raise MediaError("unreadable", f"{path}: no such file") from exc
    except OSError as exc:
        raise MediaError("unreadable", f"{path}: cannot read: {exc.strerror or exc}") from exc
    if size == 0:
        raise MediaError("empty", f"{path}: the file is empty")
    fmt = sniff_format(head)
    if fmt is None:
        raise MediaError("unsupported", f"{path}: not a supported image or video (content looks like {describe_content(head)})")
    try:
        if fmt in ("mp4", "matroska"):
            kind, frames, indices, total, width, height, duration = _decode_video(path, n_frames, limits)
        else:
            kind, frames, indices, total, width, height, duration = _decode_pillow(path, fmt, n_frames, limits)
    except MediaError:
        raise
    except (OSError, EOFError, SyntaxError, ValueError, IndexError) as exc:
        raise MediaError("truncated", f"{path}: cannot decode {fmt} data (truncated or corrupt): {exc}") from exc
    except Exception as exc:  # PyAV raises its own error hierarchy (av.error.*)
        if type(exc).__module__.startswith("av"):
            raise MediaError("truncated", f"{path}: cannot decode {fmt} data (truncated or corrupt): {exc}") from exc
        raise
    if not frames:
        raise MediaError("empty", f"{path}: no frame could be decoded")
    if fmt == "gif" and not _ends_with_gif_trailer(path):
        # Pillow stops quietly at a cut-off frame; a GIF without its trailer byte lost its tail.
        raise MediaError("truncated", f"{path}: the GIF ends without its trailer byte (truncated after "
                                      f"{total} readable frames)")
    hashes = [phash64(f) for f in frames]
    keep = drop_near_duplicates(hashes, dedupe_distance)
    return SampledMedia(
        kind=kind,
        frames=[frames[i] for i in keep],
        frame_indices=[indices[i] for i in keep],
        frame_hashes=[hashes[i] for i in keep],
        total_frames=total,
        width=width,
        height=height,
        duration_s=duration,
    )
