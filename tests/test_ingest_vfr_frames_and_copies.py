"""Ingest defects, each test failing without its fix.

1. A variable-frame-rate video sampled by seeking stored wrong frame numbers (frame 3,328 as 2,437), and a
   VFR WebM a wrong frame total (duration x nominal rate: 4,879 for 600 frames) when sampled sparsely.
2. Copies of one file in a first run into an empty data folder were counted as "cached".
3. Images over Pillow's own ceiling (~179 Mpixels) were refused in Pillow's words, without GIFLENS_MAX_PIXELS.
"""
from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from conftest import ingest_settings
from test_ingest_robustness import write_timed_video
from embeddings.media import SEEK_MIN_GAP, MediaError, MediaLimits, _probe_video, decode_media, sample_media
from embeddings.pipeline import IngestPipeline
from labeling.ingest import ingest

# -- 1. variable frame rate: the stored frame numbers are the frames' own -----------------------------------

BITS, BLOCK = 10, 16  # a frame shows its own number as 10 blocks, white for a 1 bit (5 x 2 blocks of 16 px)
WIDTH, HEIGHT = 5 * BLOCK, 2 * BLOCK


def numbered_frame(i: int, bits: int = BITS, bw: int = BLOCK, bh: int = BLOCK) -> np.ndarray:
    """A frame showing number i: `bits` blocks of bw x bh px in rows of 5, white for a 1 bit."""
    pixels = np.zeros((-(-bits // 5) * bh, 5 * bw, 3), np.uint8)
    for bit in range(bits):
        if (i >> bit) & 1:
            row, col = divmod(bit, 5)
            pixels[row * bh + 2 : (row + 1) * bh - 2, col * bw + 2 : (col + 1) * bw - 2] = 255
    return pixels


def number_shown(frame: np.ndarray, bits: int = BITS, bw: int = BLOCK, bh: int = BLOCK) -> int:
    """The number a decoded `numbered_frame` shows (any size: read at the blocks' centres)."""
    gray = frame.mean(axis=2)
    sy, sx = frame.shape[0] / (-(-bits // 5) * bh), frame.shape[1] / (5 * bw)
    value = 0
    for bit in range(bits):
        row, col = divmod(bit, 5)
        if gray[int((row * bh + bh // 2) * sy), int((col * bw + bw // 2) * sx)] > 128:
            value |= 1 << bit
    return value


_numbered, _number_of = numbered_frame, number_shown


def _vfr_video(path: Path, codec: str, steps_ms: list[int], options: dict[str, str]) -> Path:
    """Frame i shows number i and lasts steps_ms[i] (a millisecond time base), at a declared 30 fps."""
    return write_timed_video(path, codec, 30, [_numbered(i) for i in range(len(steps_ms))], steps_ms, options)


@pytest.fixture(scope="module")
def vfr_videos(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    folder = tmp_path_factory.mktemp("vfr")
    # a phone in low light: 30 fps, then 15 (an exact count in the MP4's sample table, two rates); a keyframe
    # a second, as phones write them, so that a seek decodes little and was trusted
    phone = [33] * 320 + [66] * 320
    # a screen recording: bursts and pauses (a WebM has no count: duration x 30 fps estimates 4,900)
    screen = [10, 300, 40, 1000, 5] * 120
    return {
        "mp4": (_vfr_video(folder / "phone.mp4", "libx264", phone, {"preset": "ultrafast", "crf": "10",
                                                                       "g": "25"}), len(phone)),
        "webm": (_vfr_video(folder / "screen.webm", "libvpx", screen, {"deadline": "realtime", "cpu-used": "8",
                                                                        "crf": "4", "b": "1M"}), len(screen)),
    }


@pytest.mark.parametrize("kind", ["mp4", "webm"])
def test_a_variable_frame_rate_video_stores_its_frames_own_numbers_and_count(vfr_videos, kind):
    """Two samples are further apart than SEEK_MIN_GAP (the old code sought them by timestamp, as if at a
    constant rate), 64 are not (one pass): both give the same total and each frame is the one its index says."""
    path, count = vfr_videos[kind]
    for n_frames in (2, 64):
        decoded = decode_media(path, n_frames)
        assert decoded.total == count, (n_frames, decoded.total)
        assert [_number_of(f) for f in decoded.frames] == decoded.indices, n_frames
    sparse = decode_media(path, 2).indices
    assert len(sparse) == 2 and sparse[1] - sparse[0] >= SEEK_MIN_GAP  # the case that was sought


def test_a_constant_rate_video_is_still_sought_and_right(tmp_path):
    """The seek path is kept for constant-rate files with an exact count (same numbering check)."""
    path = tmp_path / "cfr.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "10", "g": "25"}
        for i in range(700):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_numbered(i), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert _probe_video(path, MediaLimits()).constant_rate
    decoded = decode_media(path, 2)
    assert decoded.total == 700 and [_number_of(f) for f in decoded.frames] == decoded.indices == [175, 525]


# -- 2. copies in one batch are no cache hits ---------------------------------------------------------------

def _faceless(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), colour).save(path)
    return path


@pytest.mark.parametrize("chunk_size", [8, 1])
def test_copies_in_a_first_run_are_counted_as_copies_not_cached(tmp_path, pipeline_models, chunk_size):
    """Two files, one of them under three names, into an empty data folder: nothing came from a cache.
    In one chunk the copies get the first name's result; in chunks of one they find the entries this run
    wrote. The counts add up to the files given; a re-run answers all of them from the cache, as before."""
    folder = tmp_path / "in"
    a = _faceless(folder / "a.png", (200, 30, 30))
    _faceless(folder / "z.png", (30, 200, 30))
    for name in ("b.png", "c.png"):
        (folder / name).write_bytes(a.read_bytes())
    settings = ingest_settings(tmp_path)
    pipeline = IngestPipeline(settings, chunk_size=chunk_size, **pipeline_models)
    first = ingest([folder], settings, pipeline=pipeline)
    assert (first.ingested, first.cached, first.failed, first.copies) == (2, 0, 0, 2)
    assert first.line() == "ingested 2, cached 0, failed 0, faces 0 (2 copies of other files in this batch, stored once)"
    assert re.match(r"ingested (\d+), cached (\d+), failed (\d+), faces (\d+)", first.line())  # the prefix scripts read
    again = ingest([folder], settings, pipeline=pipeline)
    assert again.line() == "ingested 0, cached 2, failed 0, faces 0 (2 copies of other files in this batch, stored once)"


# -- 3. Pillow's ceiling says giflens's limit ------------------------------------------------------------------

def _png_header(path: Path, width: int, height: int) -> Path:
    """A tiny 1-bit PNG whose header claims width x height (decoding it would fail: 4 rows of data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(b"\x00" * 16 * 4)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [60_000, 8_000])  # over Pillow's 178,956,970-pixel ceiling, and under it
def test_an_image_over_pillows_ceiling_names_giflens_limit_and_setting(tmp_path, side):
    path = _png_header(tmp_path / "huge.png", side, side)
    assert path.stat().st_size < 200
    with pytest.raises(MediaError) as refused:
        sample_media(path)
    message = str(refused.value)
    assert refused.value.reason == "bomb"
    assert f"{side}x{side} = {side * side:,} pixels" in message and "40,000,000-pixel limit" in message, message
    assert "GIFLENS_MAX_PIXELS" in message and "178956970" not in message, message
