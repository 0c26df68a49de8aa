"""Decoding fixes: anamorphic video, VP8/VP9 alpha in WebM, the retained-pixels budget, and the
extensions a folder walk picks up."""
from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from conftest import encoder
from test_decode import _noise_frames, _video_frames
from test_ingest_apng_and_warm_reruns import _write_apng

from embeddings import media as media_module
from embeddings.media import (
    RETAIN_MIN_FRAME_PIXELS,
    SEEK_MIN_GAP,
    MediaLimits,
    _decode_video_by_seeking,
    _decode_video_sequentially,
    _probe_video,
    decode_media,
    is_media_file,
    is_video,
    retained_frame_pixels,
    sample_media,
    to_rgb,
)
from embeddings.phash import hamming, phash64
from embeddings.pipeline import discover_media
from models.face_detector import DETECT_MAX_PIXELS


# -- builders ----------------------------------------------------------------------------------

def _write_video(path: Path, codec: str, frames: list[np.ndarray], fmt: str = "rgb24", pix_fmt: str = "yuv420p",
                 sar: Fraction | None = None, rate: int = 10, container: str | None = None,
                 rotation: int | None = None) -> Path:
    """Frames (RGB or RGBA) encoded at their stored size, with a sample aspect ratio and a display
    rotation when given."""
    # libvpx's VP8 encoder refuses alpha with its default alternate reference frames
    options = {"auto-alt-ref": "0"} if codec == "libvpx" and pix_fmt == "yuva420p" else {}
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, options=options)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format=fmt)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _block_frames(n: int, width: int, height: int) -> list[np.ndarray]:
    """n frames of 8-pixel colour blocks (30 different ones, repeated): detail a squeeze would blur and
    a lossy codec keeps."""
    cycle = [np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.NEAREST))
             for f in _noise_frames(30, width // 8, height // 8, seed=5)]
    return [cycle[i % 30] for i in range(n)]


def _assert_seeks(path: Path, decoded) -> None:
    """A clip whose samples lie SEEK_MIN_GAP apart or more gives the same frames by seeking (the path
    `decode_media` takes for it) as by decoding straight through."""
    limits = MediaLimits()
    if len(decoded.indices) < 2 or min(b - a for a, b in zip(decoded.indices, decoded.indices[1:])) < SEEK_MIN_GAP:
        return
    sought = _decode_video_by_seeking(path, decoded.indices, _probe_video(path, limits), limits)
    assert sought is not None, "the seek path gave up"
    straight = _decode_video_sequentially(path, decoded.indices, limits).frames
    for a, b, c in zip(sought, straight, decoded.frames):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def _mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# -- 1. non-square pixels -------------------------------------------------------------------------

@pytest.mark.parametrize("sar, stored", [(Fraction(2), (64, 96)), (Fraction(4, 3), (96, 96)),
                                         (Fraction(1, 2), (128, 48))])
@pytest.mark.parametrize("n_total, n_frames", [(10, 16), (700, 2)])  # decoded straight through, and by seeking
def test_anamorphic_video_is_decoded_at_its_display_aspect(tmp_path, sar, stored, n_total, n_frames):
    """A 128x96 picture stored squeezed with a sample aspect ratio comes back at 128x96, as players show
    it (wide pixels stretch the width, tall ones the height), and looks like the square-pixel copy."""
    display = _block_frames(n_total, 128, 96)
    squeezed = [np.asarray(Image.fromarray(f).resize(stored, Image.Resampling.LANCZOS)) for f in display]
    codec = encoder("libx264", "h264", "mpeg4")
    m = decode_media(_write_video(tmp_path / "anamorphic.mp4", codec, squeezed, sar=sar), n_frames=n_frames)
    square = decode_media(_write_video(tmp_path / "square.mp4", codec, display), n_frames=n_frames)
    assert (m.width, m.height) == (square.width, square.height) == (128, 96)
    assert m.indices == square.indices
    _assert_seeks(tmp_path / "anamorphic.mp4", m)
    for frame, reference in zip(m.frames, square.frames):
        assert frame.shape == (96, 128, 3)
        assert _mean_error(frame, reference) < 8
        assert hamming(phash64(frame), phash64(reference)) <= 12  # different pictures: about 32


def test_a_rotated_anamorphic_video_is_stretched_before_it_is_turned(tmp_path):
    """The rotation matrix turns the displayed picture: stretch first, then turn (a 64x96 SAR 2:1 clip,
    128x96 on screen, turned a quarter shows 96x128; turned first, it would come out 192x64)."""
    display = _block_frames(4, 128, 96)
    squeezed = [np.asarray(Image.fromarray(f).resize((64, 96), Image.Resampling.LANCZOS)) for f in display]
    path = _write_video(tmp_path / "clip.mp4", encoder("libx264", "h264", "mpeg4"), squeezed, sar=Fraction(2),
                        rotation=90)
    m = decode_media(path, n_frames=4)
    assert (m.width, m.height) == (96, 128)
    for frame, index in zip(m.frames, m.indices):
        assert frame.shape == (128, 96, 3)
        assert _mean_error(frame, np.rot90(display[index])) < 8  # counter-clockwise, as test_media checks


# -- 2. VP8/VP9 with alpha --------------------------------------------------------------------------

def _sticker(n: int, size: int = 64) -> list[np.ndarray]:
    """RGBA frames: a transparent border around an opaque picture that changes every 5 frames."""
    pictures = _noise_frames(2, size // 2, size // 2, seed=3)
    frames = []
    for i in range(n):
        rgba = np.zeros((size, size, 4), np.uint8)
        quarter = size // 4
        rgba[quarter:size - quarter, quarter:size - quarter, :3] = pictures[i // 5 % 2]
        rgba[quarter:size - quarter, quarter:size - quarter, 3] = 255
        frames.append(rgba)
    return frames


@pytest.mark.parametrize("codec", ["libvpx-vp9", "libvpx"])
@pytest.mark.parametrize("n_total, n_frames", [(20, 16), (700, 2)])
def test_transparent_webm_is_composited_on_white(tmp_path, codec, n_total, n_frames):
    """A WebM with an alpha channel (alpha_mode=1, GIPHY's stickers) decodes as GIF, WebP and PNG do:
    transparent areas on white, the hashes those of the sticker composited on white."""
    frames = _sticker(n_total)
    webm = _write_video(tmp_path / "sticker.webm", encoder(codec), frames, fmt="rgba", pix_fmt="yuva420p")
    with av.open(str(webm)) as check:
        assert check.streams.video[0].metadata.get("alpha_mode") == "1"
    video = sample_media(webm, n_frames=n_frames)
    assert video.kind == "video" and (video.width, video.height) == (64, 64)
    _assert_seeks(webm, decode_media(webm, n_frames=n_frames))
    for frame, index in zip(video.frames, video.frame_indices):
        reference = to_rgb(Image.fromarray(frames[index], "RGBA"))
        assert (frame[:8, :8] >= 250).all() and (frame[-8:, -8:] >= 250).all()  # the border: white, not black
        assert _mean_error(frame, reference) < 10
        assert hamming(phash64(frame), phash64(reference)) <= 6


def test_transparent_webm_without_libvpx_still_decodes(tmp_path, monkeypatch):
    """A PyAV build without the libvpx decoder falls back to FFmpeg's own (no alpha) instead of failing."""
    webm = _write_video(tmp_path / "sticker.webm", encoder("libvpx-vp9"), _sticker(10), fmt="rgba",
                        pix_fmt="yuva420p")
    monkeypatch.setitem(media_module.ALPHA_DECODERS, "vp9", "no-such-decoder")
    m = sample_media(webm)
    assert m.kind == "video" and (m.width, m.height) == (64, 64)


# -- 3. retained pixels -----------------------------------------------------------------------------

def test_the_retained_frame_floor_is_what_the_face_detector_searches():
    """Shrinking a kept frame to the detector's area never loses a face MTCNN would find."""
    assert RETAIN_MIN_FRAME_PIXELS == DETECT_MAX_PIXELS
    limits = MediaLimits()
    assert retained_frame_pixels(1, limits) >= limits.max_pixels  # a still is never shrunk
    assert retained_frame_pixels(16, limits) >= 3840 * 2160  # 4K video at the default sampling is kept whole
    assert retained_frame_pixels(64, limits) >= RETAIN_MIN_FRAME_PIXELS  # 1080p video at 64 frames is kept whole
    assert 512 * retained_frame_pixels(512, limits) <= limits.max_retained_pixels  # --frames' maximum: the budget holds


def test_a_gif_on_a_huge_canvas_keeps_bounded_frames(tmp_path):
    """Four different frames on a 2400x2400 canvas, a budget of four detector areas: each kept frame is
    shrunk to at most the detector's area (the same picture, smaller), the media keeps its real size."""
    side = 2400
    frames = [np.asarray(Image.fromarray(f).resize((side, side), Image.Resampling.NEAREST))
              for f in _noise_frames(4, 24, 24, seed=7)]
    path = tmp_path / "big.gif"
    Image.fromarray(frames[0]).save(path, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]],
                                    duration=100)
    limits = MediaLimits(max_retained_pixels=4 * RETAIN_MIN_FRAME_PIXELS)
    m = sample_media(path, n_frames=4, limits=limits)
    assert (m.width, m.height) == (side, side) and len(m.frames) == 4
    for frame, source in zip(m.frames, frames):
        height, width = frame.shape[:2]
        assert width == height and width * height <= RETAIN_MIN_FRAME_PIXELS and width >= 1400
        assert _mean_error(frame, np.asarray(Image.fromarray(source).resize((width, height), Image.Resampling.BOX))) < 2
    assert sum(f.shape[0] * f.shape[1] for f in m.frames) <= limits.max_retained_pixels


def test_a_large_photo_is_kept_whole(tmp_path, lfw_dir):
    """A single 3000x3000 photo (9 Mpixels, over the detector's area) is not shrunk: alignment crops
    faces from the full frame."""
    photo = Image.open(next(iter(sorted(lfw_dir.glob("*/*.jpg"))))).convert("RGB").resize((3000, 3000))
    photo.save(tmp_path / "big.jpg", quality=90)
    m = sample_media(tmp_path / "big.jpg")
    assert m.frames[0].shape == (3000, 3000, 3)


# -- 6. extensions ----------------------------------------------------------------------------------

def test_folder_walk_picks_up_apng_and_jpeg_aliases(tmp_path, lfw_dir):
    """.apng, .jfif, .jpe and .jif files are found in a folder and decode by their content."""
    jpeg = next(iter(sorted(lfw_dir.glob("*/*.jpg"))))
    for suffix in (".jfif", ".jpe", ".JIF"):
        shutil.copy(jpeg, tmp_path / f"photo{suffix}")
    red, blue = np.zeros((32, 32, 4), np.uint8), np.zeros((32, 32, 4), np.uint8)
    red[..., 0] = red[..., 3] = blue[..., 2] = blue[..., 3] = 255
    _write_apng(tmp_path / "clip.apng", 32, [(red, 0, 0, 0, 0), (blue, 0, 0, 0, 0)])
    found = discover_media([tmp_path])
    assert sorted(p.name for p in found) == ["clip.apng", "photo.JIF", "photo.jfif", "photo.jpe"]
    assert all(is_media_file(p) for p in found)
    kinds = {p.suffix: sample_media(p).kind for p in found}
    assert kinds == {".apng": "apng", ".jfif": "image", ".jpe": "image", ".JIF": "image"}


def test_is_video_reads_the_content(tmp_path, lfw_dir):
    """Videos by their bytes (for the pipeline's cache key), whatever the name says."""
    clip = _write_video(tmp_path / "clip.gif", encoder("libx264", "h264", "mpeg4"), _video_frames(3), container="mp4")
    webm = _write_video(tmp_path / "clip.bin", encoder("libvpx-vp9", "libvpx"), _video_frames(3), container="webm")
    photo = shutil.copy(next(iter(sorted(lfw_dir.glob("*/*.jpg")))), tmp_path / "photo.mp4")
    assert is_video(clip) and is_video(webm) and not is_video(Path(photo))
