"""embeddings.media end to end: every format decodes, sampling and pHash behave, bad input is refused.

All media is generated in tmp_path with Pillow and PyAV (or read from ../shared/data);
the decoders are never mocked.
"""
from __future__ import annotations

import itertools
import re
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import unprivileged
from PIL import Image

from embeddings.media import MediaError, MediaLimits, sample_media
from embeddings.phash import drop_near_duplicates, hamming, phash64
from embeddings.sampling import evenly_spaced_indices
from conftest import encoder

# Eight saturated colours: a GIF stores them exactly, so decoded frames can be compared bit for bit.
COLOURS = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0],
                    [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255]], dtype=np.uint8)
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


# -- media builders ----------------------------------------------------------------------------

def _noise_frames(n: int, width: int = 64, height: int = 48, seed: int = 0) -> list[np.ndarray]:
    """n visibly different frames (random blocks of the eight COLOURS), exact through GIF and lossless WebP."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        blocks = COLOURS[rng.integers(0, len(COLOURS), (-(-height // 4), -(-width // 4)))]
        frames.append(np.ascontiguousarray(blocks.repeat(4, axis=0).repeat(4, axis=1)[:height, :width]))
    return frames


def _save_animation(path: Path, frames: list[np.ndarray], **kw) -> Path:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], **kw)
    return path


def _gif(path: Path, frames: list[np.ndarray], duration: int = 50) -> Path:
    return _save_animation(path, frames, format="GIF", duration=duration, loop=0)


def _video_frames(n: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    """Frames a lossy codec keeps apart: a brightness ramp plus a white square moving left to right."""
    frames = []
    for i in range(n):
        frame = np.full((height, width, 3), 20 + 6 * i, dtype=np.uint8)
        x = 2 + i * (width - 18) // max(1, n - 1)
        frame[16:32, x:x + 16] = 255
        frames.append(frame)
    return frames


MP4_ENCODERS = ("libx264", "h264", "mpeg4")
WEBM_ENCODERS = ("libvpx-vp9", "libvpx")


def _video(path: Path, codec: str, frames: list[np.ndarray], rate: int = 10) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG announcing width x height 1-bit pixels with no pixel data: costs nothing to write."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _refusal(path: Path, reason: str, limits: MediaLimits = MediaLimits()) -> str:
    """Decode, expect a MediaError with this reason naming the file; returns the message without the path
    (so a word looked for in the message cannot match the test's tmp_path)."""
    with pytest.raises(MediaError) as err:
        sample_media(path, limits=limits)
    message = str(err.value)
    assert err.value.reason == reason, message
    assert str(path) in message
    return message.replace(str(path), "<path>")


def _check_frames(m, width: int, height: int) -> None:
    assert (m.width, m.height) == (width, height)
    assert len(m.frames) == len(m.frame_indices) == len(m.frame_hashes) >= 1
    for frame in m.frames:
        assert frame.dtype == np.uint8 and frame.shape == (height, width, 3)
    assert m.frame_indices == sorted(set(m.frame_indices))
    assert 0 <= m.frame_indices[0] and m.frame_indices[-1] < m.total_frames
    assert m.frame_hashes == [phash64(f) for f in m.frames]


# -- every supported format ----------------------------------------------------------------------

def test_multi_frame_gif(tmp_path):
    frames = _noise_frames(12, 40, 28)
    m = sample_media(_gif(tmp_path / "anim.gif", frames, duration=70), dedupe_distance=-1)
    assert (m.kind, m.total_frames) == ("gif", 12)
    _check_frames(m, 40, 28)
    assert m.frame_indices == list(range(12))  # 12 <= 16 samples: every frame
    for index, frame in zip(m.frame_indices, m.frames):
        np.testing.assert_array_equal(frame, frames[index])
    assert m.duration_s == pytest.approx(0.84)


def test_single_frame_gif(tmp_path):
    frame = _noise_frames(1, 30, 20)[0]
    Image.fromarray(frame).save(tmp_path / "still.gif")
    m = sample_media(tmp_path / "still.gif")
    assert (m.kind, m.total_frames, m.frame_indices) == ("gif", 1, [0])
    _check_frames(m, 30, 20)
    np.testing.assert_array_equal(m.frames[0], frame)


def test_animated_webp(tmp_path):
    frames = _noise_frames(6, 48, 32)
    path = _save_animation(tmp_path / "anim.webp", frames, duration=80, lossless=True, loop=0)
    m = sample_media(path, dedupe_distance=-1)
    assert (m.kind, m.total_frames) == ("webp", 6)
    _check_frames(m, 48, 32)
    assert m.frame_indices == list(range(6))
    for index, frame in zip(m.frame_indices, m.frames):
        np.testing.assert_array_equal(frame, frames[index])
    assert m.duration_s == pytest.approx(0.48)


def test_static_webp_is_an_image(tmp_path):
    frame = _noise_frames(1, 24, 16)[0]
    Image.fromarray(frame).save(tmp_path / "still.webp", lossless=True)
    m = sample_media(tmp_path / "still.webp")
    assert (m.kind, m.total_frames) == ("image", 1)
    _check_frames(m, 24, 16)
    np.testing.assert_array_equal(m.frames[0], frame)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA"])
def test_static_png(tmp_path, mode):
    frame = _noise_frames(1, 36, 20)[0]
    image = Image.fromarray(frame)
    if mode == "L":
        image = image.convert("L")
    elif mode == "P":
        image = image.quantize(8)
    elif mode == "RGBA":
        image = image.convert("RGBA")  # fully opaque: alpha must not change a pixel
    image.save(tmp_path / "still.png")
    m = sample_media(tmp_path / "still.png")
    assert (m.kind, m.total_frames, m.frame_indices, m.duration_s) == ("image", 1, [0], None)
    _check_frames(m, 36, 20)
    np.testing.assert_array_equal(m.frames[0], np.asarray(image.convert("RGB")))


def test_static_jpeg(tmp_path, lfw_dir):
    source = lfw_dir / "Tony_Blair" / "Tony_Blair_0001.jpg"
    m = sample_media(source)
    assert (m.kind, m.total_frames, m.duration_s) == ("image", 1, None)
    _check_frames(m, 250, 250)
    np.testing.assert_array_equal(m.frames[0], np.asarray(Image.open(source).convert("RGB")))
    # A generated JPEG with a non-square size, to catch a width/height mix-up.
    Image.new("RGB", (50, 30), RED).save(tmp_path / "red.jpg", quality=95)
    m = sample_media(tmp_path / "red.jpg")
    assert m.kind == "image"
    _check_frames(m, 50, 30)
    assert np.abs(m.frames[0].astype(int) - RED).max() <= 8


@pytest.mark.parametrize(
    "orientation,size,blue_at,red_at",
    [
        (1, (40, 20), (10, 2), (10, 35)),   # stored upright: blue band on the left
        (3, (40, 20), (10, 37), (10, 5)),   # turned 180 degrees: blue on the right
        (6, (20, 40), (2, 10), (35, 10)),   # turned 90 clockwise: the left edge goes to the top
        (8, (20, 40), (37, 10), (5, 10)),   # turned 90 anticlockwise: the left edge goes to the bottom
    ],
)
def test_jpeg_exif_orientation(tmp_path, orientation, size, blue_at, red_at):
    image = Image.new("RGB", (40, 20), RED)
    image.paste(BLUE, (0, 0, 10, 20))  # the 10 leftmost stored columns are blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    m = sample_media(tmp_path / "phone.jpg")
    assert m.kind == "image"
    _check_frames(m, *size)
    frame = m.frames[0].astype(int)
    assert np.abs(frame[blue_at] - BLUE).max() <= 40, frame[blue_at]
    assert np.abs(frame[red_at] - RED).max() <= 40, frame[red_at]


def _assert_video(m, source: list[np.ndarray], n_frames: int) -> None:
    assert (m.kind, m.total_frames) == ("video", len(source))
    _check_frames(m, 64, 48)
    assert m.frame_indices == evenly_spaced_indices(len(source), n_frames)
    assert m.duration_s == pytest.approx(len(source) / 10, abs=0.15)
    for index, frame in zip(m.frame_indices, m.frames):
        # The decoded frame is the source frame at that index: closest of all, and close in absolute terms.
        errors = [np.abs(frame.astype(int) - s.astype(int)).mean() for s in source]
        assert int(np.argmin(errors)) == index and errors[index] < 6, (index, errors[index])


def test_mp4(tmp_path):
    source = _video_frames(30)
    m = sample_media(_video(tmp_path / "clip.mp4", encoder(*MP4_ENCODERS), source), n_frames=5, dedupe_distance=-1)
    _assert_video(m, source, 5)


def test_webm(tmp_path):
    source = _video_frames(30)
    m = sample_media(_video(tmp_path / "clip.webm", encoder(*WEBM_ENCODERS), source), n_frames=5, dedupe_distance=-1)
    _assert_video(m, source, 5)


def test_video_with_few_frames_gives_all_of_them(tmp_path):
    source = _video_frames(6)
    m = sample_media(_video(tmp_path / "short.mp4", encoder(*MP4_ENCODERS), source), n_frames=16, dedupe_distance=-1)
    _assert_video(m, source, 16)
    assert m.frame_indices == list(range(6))


# -- GIF compositing -----------------------------------------------------------------------------

def test_gif_partial_frame_with_transparency_keeps_the_previous_frame(tmp_path):
    palette = [0, 0, 0, *RED, *GREEN, *BLUE] + [0] * (256 * 3 - 12)  # index 0 is the transparent one
    first = Image.new("P", (20, 20), 1)
    first.paste(3, (10, 0, 20, 20))  # left half red, right half blue
    first.putpalette(palette)
    second = Image.new("P", (20, 20), 0)  # all transparent ...
    second.paste(2, (8, 4, 13, 9))  # ... but a 5x5 green square straddling the red/blue border
    second.putpalette(palette)
    path = tmp_path / "partial.gif"
    first.save(path, save_all=True, append_images=[second], transparency=0, disposal=1, duration=100,
               optimize=False)

    m = sample_media(path, dedupe_distance=-1)
    assert (m.kind, m.total_frames, m.frame_indices) == ("gif", 2, [0, 1])
    expected_first = np.zeros((20, 20, 3), np.uint8)
    expected_first[:, :10] = RED
    expected_first[:, 10:] = BLUE
    expected_second = expected_first.copy()
    expected_second[4:9, 8:13] = GREEN
    np.testing.assert_array_equal(m.frames[0], expected_first)
    np.testing.assert_array_equal(m.frames[1], expected_second)


# -- sampling ------------------------------------------------------------------------------------

@pytest.mark.parametrize("total,n", list(itertools.product([0, 1, 2, 5, 7, 16, 17, 40, 100, 1001], [0, 1, 3, 8, 16])))
def test_evenly_spaced_indices_properties(total, n):
    indices = evenly_spaced_indices(total, n)
    assert len(indices) == min(n, total)
    assert indices == sorted(set(indices))  # increasing, distinct
    assert all(0 <= i < total for i in indices)
    if 0 < total <= n:
        assert indices == list(range(total))
    elif n > 1 and total > n:
        gaps = np.diff(indices)
        assert gaps.max() - gaps.min() <= 1  # evenly spread


def test_evenly_spaced_indices_centres_segments():
    assert evenly_spaced_indices(100, 4) == [12, 37, 62, 87]
    assert evenly_spaced_indices(40, 8) == [2, 7, 12, 17, 22, 27, 32, 37]
    assert evenly_spaced_indices(10, 1) == [5]


def test_forty_distinct_frames_sampled_at_eight(tmp_path):
    frames = _noise_frames(40)
    m = sample_media(_gif(tmp_path / "forty.gif", frames), n_frames=8)
    assert (m.kind, m.total_frames) == ("gif", 40)
    _check_frames(m, 64, 48)
    assert len(m.frames) == 8  # distinct frames: de-duplication keeps them all
    assert m.frame_indices == evenly_spaced_indices(40, 8)
    for index, frame in zip(m.frame_indices, m.frames):
        np.testing.assert_array_equal(frame, frames[index])
    assert m.frame_hashes == [phash64(frames[i]) for i in m.frame_indices]
    assert m.duration_s == pytest.approx(2.0)


def _identical_frames_gif(path: Path, n: int) -> Path:
    """n frames with the same pixels. Pillow merges equal frames on save, so the frames alternate
    between two palette entries holding the same colour: equal pixels, different frame data."""
    palette = [10, 200, 30, 10, 200, 30, 200, 20, 90, 200, 20, 90] + [0] * (256 * 3 - 12)
    frames = []
    for k in range(n):
        frame = Image.new("P", (32, 24), k % 2)  # background: entry 0 or 1
        frame.paste(2 + k % 2, (4, 4, 12, 20))  # square: entry 2 or 3
        frame.putpalette(palette)
        frames.append(frame)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, optimize=False)
    return path


def test_identical_frames_are_deduplicated_to_one(tmp_path):
    path = _identical_frames_gif(tmp_path / "same.gif", 20)
    m = sample_media(path)
    assert (m.kind, m.total_frames) == ("gif", 20)
    assert m.frame_indices == [0] and len(m.frames) == len(m.frame_hashes) == 1
    assert m.frame_hashes == [phash64(m.frames[0])]
    assert m.frames[0][0, 0].tolist() == [10, 200, 30] and m.frames[0][10, 8].tolist() == [200, 20, 90]
    # A negative distance keeps every sample, all with the same hash.
    everything = sample_media(path, dedupe_distance=-1)
    assert everything.frame_indices == evenly_spaced_indices(20, 16)
    assert len(set(everything.frame_hashes)) == 1


def test_near_duplicate_runs_keep_their_first_frame(tmp_path):
    a, b = _noise_frames(2, seed=7)

    def touched(frame: np.ndarray, k: int) -> np.ndarray:
        """The frame with one pixel changed (Pillow would merge exactly equal frames on save)."""
        out = frame.copy()
        out[k, k] = COLOURS[1] if tuple(out[k, k]) != tuple(COLOURS[1]) else COLOURS[0]
        return out

    frames = [a, touched(a, 1), touched(a, 2), b, touched(b, 3), touched(b, 4), touched(a, 5), touched(a, 6)]
    assert max(hamming(phash64(f), phash64(frames[0 if i < 3 or i > 5 else 3])) for i, f in enumerate(frames)) <= 4
    m = sample_media(_gif(tmp_path / "runs.gif", frames))
    assert m.total_frames == 8
    assert m.frame_indices == [0, 3]  # the first of each run; the return of scene a is dropped too
    np.testing.assert_array_equal(m.frames[0], a)
    np.testing.assert_array_equal(m.frames[1], b)


# -- pHash ---------------------------------------------------------------------------------------

def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("person", ["Tony_Blair", "Serena_Williams", "Colin_Powell", "Hugo_Chavez"])
def test_phash_survives_half_size_jpeg_recompression(tmp_path, lfw_dir, person):
    source = lfw_dir / person / f"{person}_0001.jpg"
    original = Image.open(source).convert("RGB")
    small = tmp_path / "small.jpg"
    original.resize((original.width // 2, original.height // 2), Image.Resampling.BILINEAR).save(small, quality=60)
    assert hamming(phash64(_rgb(source)), phash64(_rgb(small))) <= 6
    # The same through the decoder: the stored frame hashes.
    h_original, h_small = sample_media(source).frame_hashes[0], sample_media(small).frame_hashes[0]
    assert hamming(h_original, h_small) <= 6


@pytest.mark.parametrize("a,b", [("Tony_Blair", "Serena_Williams"), ("Colin_Powell", "Hugo_Chavez"),
                                 ("George_W_Bush", "Gloria_Macapagal_Arroyo")])
def test_phash_separates_different_people(lfw_dir, a, b):
    ha = phash64(_rgb(lfw_dir / a / f"{a}_0001.jpg"))
    hb = phash64(_rgb(lfw_dir / b / f"{b}_0001.jpg"))
    assert hamming(ha, hb) > 10


def test_phash_is_a_deterministic_64_bit_value(lfw_dir):
    frame = _rgb(lfw_dir / "Tony_Blair" / "Tony_Blair_0001.jpg")
    h = phash64(frame)
    assert isinstance(h, int) and 0 <= h < 2 ** 64
    assert phash64(frame.copy()) == h
    assert 16 <= h.bit_count() <= 48  # median threshold: about half the bits set
    assert phash64(np.asarray(Image.fromarray(frame).convert("L"))) == h  # grey input hashes the same
    assert hamming(h, h) == 0 and hamming(0, 2 ** 64 - 1) == 64


def test_drop_near_duplicates():
    assert drop_near_duplicates([], 4) == []
    assert drop_near_duplicates([5, 5, 5], 4) == [0]
    assert drop_near_duplicates([5, 5, 5], -1) == [0, 1, 2]
    # The distance must be strictly greater than max_distance to keep a frame.
    assert drop_near_duplicates([0, 0b1111], 4) == [0]
    assert drop_near_duplicates([0, 0b11111], 4) == [0, 1]
    # Compared with every *kept* frame: 0b111 is dropped (3 from 0), so 0b111111 is only compared with 0.
    assert drop_near_duplicates([0, 0b111, 0b111111], 4) == [0, 2]
    # ... and a later return of a kept frame is dropped too.
    far = 2 ** 64 - 1
    assert drop_near_duplicates([0, far, 1, far ^ 1], 4) == [0, 1]


# -- the shared GIFs -----------------------------------------------------------------------------

def test_every_shared_gif_decodes(gifs_dir):
    paths = sorted(gifs_dir.glob("*.gif"))
    assert len(paths) == 63 and any("'" in p.name for p in paths)
    failures = []
    for path in paths:
        try:
            m = sample_media(path)
            assert m.kind == "gif" and m.total_frames >= 1
            assert 1 <= len(m.frames) <= min(16, m.total_frames)
            _check_frames(m, m.width, m.height)
            assert set(m.frame_indices) <= set(evenly_spaced_indices(m.total_frames, 16))
        except (MediaError, AssertionError) as exc:
            failures.append(f"{path.name}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)


# -- bad input -----------------------------------------------------------------------------------

def test_empty_file(tmp_path):
    (tmp_path / "empty.gif").write_bytes(b"")
    _refusal(tmp_path / "empty.gif", "empty")


@pytest.mark.parametrize(
    "content,words",
    [
        ("hello, this is not a gif at all\n", "text"),
        ("Compte rendu de la réunion: thé à 10h\n", "text"),  # accented UTF-8 is text too
        # A multi-byte character cut by the end of the sniffed head (32 or 64 bytes) is still text.
        ("x" * 31 + "é" * 40, "text"),
        ("x" * 63 + "é" * 40, "text"),
    ],
)
def test_text_named_gif_is_unsupported(tmp_path, content, words):
    path = tmp_path / "notes.gif"
    path.write_text(content, encoding="utf-8")
    assert words in _refusal(path, "unsupported")


@pytest.mark.parametrize(
    "content,words",
    [(b"PK\x03\x04" + bytes(100), "zip"), (b"%PDF-1.7\n" + bytes(100), "PDF"), (bytes(range(256)), "binary")],
)
def test_other_content_is_unsupported(tmp_path, content, words):
    (tmp_path / "odd.gif").write_bytes(content)
    assert words in _refusal(tmp_path / "odd.gif", "unsupported")


def test_content_wins_over_the_extension(tmp_path):
    frame = _noise_frames(1, 30, 20)[0]
    Image.fromarray(frame).save(tmp_path / "really-a-png.gif", format="PNG")
    m = sample_media(tmp_path / "really-a-png.gif")
    assert (m.kind, m.total_frames) == ("image", 1)
    np.testing.assert_array_equal(m.frames[0], frame)
    _gif(tmp_path / "really-a-gif.jpg", _noise_frames(3))
    m = sample_media(tmp_path / "really-a-gif.jpg")
    assert (m.kind, m.total_frames) == ("gif", 3)


@pytest.mark.parametrize("name", ["where.gif", "bender.gif", "don't-know-what-i-expected.gif"])
def test_truncated_real_gif(tmp_path, gifs_dir, name):
    data = (gifs_dir / name).read_bytes()
    path = tmp_path / "cut.gif"
    path.write_bytes(data[: len(data) // 2])
    # Refused outright rather than returning the frames before the cut.
    _refusal(path, "truncated")


def test_gif_missing_only_its_trailer_is_used_but_one_cut_after_an_extension_is_truncated(tmp_path):
    data = _gif(tmp_path / "full.gif", _noise_frames(10)).read_bytes()
    assert data.endswith(b";")
    (tmp_path / "cut.gif").write_bytes(data[:-1])  # every frame complete: browsers play it
    assert sample_media(tmp_path / "cut.gif").total_frames == 10
    start = data.rindex(b"\x21\xf9\x04")  # the last frame's graphic control extension
    (tmp_path / "cut.gif").write_bytes(data[: start + 8])  # the extension complete, its frame missing
    message = _refusal(tmp_path / "cut.gif", "truncated")
    assert "trailer" in message and re.search(r"\b9\b", message)  # names the frames that were complete


def test_truncated_jpeg(tmp_path, lfw_dir):
    data = (lfw_dir / "Tony_Blair" / "Tony_Blair_0001.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 5])
    _refusal(tmp_path / "cut.jpg", "truncated")


def test_truncated_mp4(tmp_path):
    data = _video(tmp_path / "clip.mp4", encoder(*MP4_ENCODERS), _video_frames(30)).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 2 // 5])  # the moov index is at the end: gone
    _refusal(tmp_path / "cut.mp4", "truncated")


def test_truncated_webm(tmp_path):
    data = _video(tmp_path / "clip.webm", encoder(*WEBM_ENCODERS), _video_frames(30)).read_bytes()
    (tmp_path / "cut.webm").write_bytes(data[: len(data) * 2 // 5])  # the header still promises 30 frames
    _refusal(tmp_path / "cut.webm", "truncated")


def test_too_large(tmp_path):
    path = _gif(tmp_path / "big.gif", _noise_frames(2))
    message = _refusal(path, "too_large", MediaLimits(max_file_bytes=100))
    assert f"{path.stat().st_size:,} bytes" in message and "100-byte limit" in message
    # The limit itself is allowed: a 100-byte file is judged on its content.
    (tmp_path / "hundred.gif").write_text("a" * 100)
    _refusal(tmp_path / "hundred.gif", "unsupported", MediaLimits(max_file_bytes=100))


def test_pixel_bomb(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (6000, 6000)).save(path)  # 36 Mpx in a few kB
    assert path.stat().st_size < 20_000
    message = _refusal(path, "bomb", MediaLimits(max_pixels=1_000_000))
    assert "6000x6000" in message and "1,000,000-pixel limit" in message
    # Within the limit the same file decodes.
    m = sample_media(path, limits=MediaLimits(max_pixels=36_000_000))
    assert (m.kind, m.width, m.height) == ("image", 6000, 6000)


def test_header_only_bomb_is_refused_with_default_limits(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(20_000, 20_000))  # 400 Mpx announced in under 100 bytes
    _refusal(path, "bomb")


def test_gif_canvas_bomb(tmp_path):
    path = _gif(tmp_path / "wide.gif", _noise_frames(2, 2000, 1000))
    assert "2000x1000" in _refusal(path, "bomb", MediaLimits(max_pixels=1_000_000))


def test_too_many_frames(tmp_path):
    path = _gif(tmp_path / "ten.gif", _noise_frames(10))
    message = _refusal(path, "too_many_frames", MediaLimits(max_frames=5))
    assert "5-frame limit" in message
    assert sample_media(path, limits=MediaLimits(max_frames=10)).total_frames == 10  # the limit itself is fine


def test_too_many_frames_in_a_webp(tmp_path):
    path = _save_animation(tmp_path / "ten.webp", _noise_frames(10), duration=40, lossless=True)
    _refusal(path, "too_many_frames", MediaLimits(max_frames=5))


def test_missing_file(tmp_path):
    assert "no such file" in _refusal(tmp_path / "nope.gif", "unreadable")


def test_directory(tmp_path):
    (tmp_path / "folder.gif").mkdir()
    _refusal(tmp_path / "folder.gif", "unreadable")


def test_unreadable_permissions(shared_tmp):
    path = _gif(shared_tmp / "locked.gif", _noise_frames(2))
    path.chmod(0)
    try:
        with unprivileged():
            _refusal(path, "unreadable")
    finally:
        path.chmod(0o644)


def test_audio_only_container_is_unsupported(tmp_path):
    codec = encoder("libopus", "aac")
    path = tmp_path / ("sound.webm" if codec == "libopus" else "sound.mp4")
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 9600), np.float32), format="flt", layout="mono")
        frame.sample_rate = 48000
        for packet in itertools.chain(stream.encode(frame), stream.encode()):
            out.mux(packet)
    assert "no video stream" in _refusal(path, "unsupported")


def test_str_path_is_accepted(tmp_path):
    path = _gif(tmp_path / "it's a gif.gif", _noise_frames(3))
    assert sample_media(str(path)).total_frames == 3
