"""Decoding and sampling real media: files generated here (Pillow, PyAV, hand-built GIF bytes) and ../shared/data."""
from __future__ import annotations

import os
import struct
import zlib

import av
import numpy as np
import pytest
from conftest import unprivileged
from PIL import Image

from embeddings.media import (
    SEEK_MIN_GAP,
    MediaError,
    MediaLimits,
    _decode_video_by_seeking,
    _probe_video,
    sample_media,
    scan_gif,
)
from embeddings.phash import phash64
from embeddings.sampling import evenly_spaced_indices

WHITE, BLACK, RED, BLUE, GREEN = (255, 255, 255), (0, 0, 0), (255, 0, 0), (0, 0, 255), (0, 255, 0)


def _frames(n: int, size=(64, 48)) -> list[Image.Image]:
    rng = np.random.default_rng(n)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def _gif(path, frames, **kw):
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0, **kw)
    return path


def _raw_gif(path, size, palette, frames, *, trailer=True):
    """GIF bytes written by hand, to control frame rectangles, disposal and transparency exactly.

    palette: 4 RGB colours. frames: (left, top, indices[h, w], disposal, transparent index or None).
    The LZW stream sends a CLEAR code before every pixel, which keeps every code 3 bits wide:
    valid GIF, trivial to write.
    """
    w, h = size
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", w, h, 0xF1, 0, 0))
    for rgb in palette:
        out += bytes(rgb)
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    for left, top, idx, disposal, transparent in frames:
        idx = np.asarray(idx)
        flags = (disposal << 2) | (transparent is not None)
        out += b"\x21\xf9\x04" + struct.pack("<BHB", flags, 10, transparent or 0) + b"\x00"
        out += b"\x2c" + struct.pack("<HHHHB", left, top, idx.shape[1], idx.shape[0], 0)
        codes = [c for v in idx.ravel() for c in (4, int(v))] + [5]
        acc = nbits = 0
        lzw = bytearray()
        for code in codes:
            acc |= code << nbits
            nbits += 3
            while nbits >= 8:
                lzw.append(acc & 0xFF)
                acc, nbits = acc >> 8, nbits - 8
        if nbits:
            lzw.append(acc)
        out += b"\x02"
        for i in range(0, len(lzw), 255):
            out += bytes([len(lzw[i:i + 255])]) + lzw[i:i + 255]
        out += b"\x00"
    if trailer:
        out += b"\x3b"
    path.write_bytes(bytes(out))
    return path


def _video(path, codec, n=30, size=(64, 48), rate=10, gop=None, frame=None, rotation=None, container=None):
    """Encode a real clip with PyAV; frame(i) gives the RGB pixels of frame i."""
    frame = frame or (lambda i: np.asarray(_frames(1, size)[0]) // 2 + np.uint8(4 * (i % 30)))
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame(i)), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _refused(path, reason, *words, limits=MediaLimits()):
    with pytest.raises(MediaError) as err:
        sample_media(path, limits=limits)
    assert err.value.reason == reason, str(err.value)
    message = str(err.value)
    assert str(path) in message and all(w in message for w in words), message
    return message


# -- GIF ---------------------------------------------------------------------------------------

def test_animated_gif_sampled_evenly(tmp_path):
    m = sample_media(_gif(tmp_path / "a.gif", _frames(40)), n_frames=8)
    assert (m.kind, m.total_frames, m.width, m.height) == ("gif", 40, 64, 48)
    assert m.frame_indices == evenly_spaced_indices(40, 8)
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in m.frames)
    assert m.frame_hashes == [phash64(f) for f in m.frames]
    assert m.duration_s == pytest.approx(2.0)


def test_gif_compositing_transparency_disposal_and_partial_frames(tmp_path):
    palette = [BLACK, RED, BLUE, GREEN]  # index 0 is the transparent one
    f0 = np.full((8, 8), 1)
    f0[7, 7] = 0  # a hole in the first frame: white, as on a page
    f1 = np.full((4, 4), 2)
    f1[0, 0] = 0  # see-through: the red underneath shows
    path = _raw_gif(tmp_path / "c.gif", (8, 8), palette, [
        (0, 0, f0, 1, 0),                  # do not dispose
        (1, 1, f1, 2, 0),                  # partial frame, then restore to background (transparent)
        (5, 5, np.full((2, 2), 3), 3, 0),  # partial frame, then restore to previous
        (0, 0, np.full((1, 1), 2), 1, 0),
    ])
    m = sample_media(path, dedupe_distance=-1)
    assert (m.kind, m.total_frames, len(m.frames), m.width, m.height) == ("gif", 4, 4, 8, 8)
    assert m.duration_s == pytest.approx(0.4)

    expected = [np.empty((8, 8, 3), np.uint8) for _ in range(4)]
    expected[0][:] = RED
    expected[0][7, 7] = WHITE
    expected[1][:] = expected[0]
    expected[1][1:5, 1:5] = BLUE
    expected[1][1, 1] = RED
    expected[2][:] = expected[1]
    expected[2][1:5, 1:5] = WHITE  # frame 1 disposed to background
    expected[2][5:7, 5:7] = GREEN
    expected[3][:] = expected[2]
    expected[3][5:7, 5:7] = RED  # frame 2 restored to what was there before it
    expected[3][0, 0] = BLUE
    for i, (got, want) in enumerate(zip(m.frames, expected)):
        assert np.array_equal(got, want), f"frame {i}:\n{got[..., 0]}\n{got[..., 2]}"


def test_gif_written_by_pillow_with_transparency_and_optimised_frames(tmp_path):
    base = Image.new("P", (20, 20), 1)
    base.putpalette([*BLACK, *RED, *GREEN] + [0] * 759)
    patch = Image.new("P", (20, 20), 0)  # index 0 = transparent
    patch.putpalette(base.getpalette())
    patch.paste(2, (5, 5, 10, 10))
    path = tmp_path / "t.gif"
    base.save(path, save_all=True, append_images=[patch], transparency=0, disposal=1, duration=100)
    second = sample_media(path, dedupe_distance=-1).frames[1]
    assert tuple(second[0, 0]) == RED  # the first frame shows through the transparency
    assert tuple(second[7, 7]) == GREEN  # the painted square


def test_gif_frame_past_the_logical_screen_grows_every_frame_alike(tmp_path):
    path = _raw_gif(tmp_path / "grow.gif", (8, 8), [BLACK, RED, BLUE, GREEN],
                    [(0, 0, np.full((8, 8), 1), 1, None), (6, 6, np.full((4, 4), 2), 1, None)])
    m = sample_media(path, dedupe_distance=-1)
    assert (m.width, m.height) == (10, 10)
    assert [f.shape for f in m.frames] == [(10, 10, 3), (10, 10, 3)]
    assert tuple(m.frames[1][9, 9]) == BLUE and tuple(m.frames[0][9, 9]) == WHITE


def test_gif_with_a_zero_logical_screen_takes_its_size_from_the_frames(tmp_path):
    path = _raw_gif(tmp_path / "zero.gif", (0, 0), [BLACK, RED, BLUE, GREEN],
                    [(0, 0, np.full((4, 6), 1), 1, None), (0, 0, np.full((4, 6), 2), 1, None)])
    m = sample_media(path, dedupe_distance=-1)
    assert (m.width, m.height, m.total_frames) == (6, 4, 2) and tuple(m.frames[-1][0, 0]) == BLUE


def test_identical_frames_are_deduplicated(tmp_path):
    pattern = np.indices((16, 16)).sum(axis=0) // 3 % 4  # stripes in all four colours
    path = _raw_gif(tmp_path / "same.gif", (16, 16), [BLACK, RED, BLUE, GREEN],
                    [(0, 0, pattern, 1, None)] * 20)
    m = sample_media(path)
    assert (m.total_frames, m.frame_indices) == (20, [0])
    assert len(m.frames) == len(m.frame_hashes) == 1


def test_near_identical_frames_are_deduplicated_but_distinct_ones_kept(tmp_path, lfw_dir):
    rng = np.random.default_rng(3)
    base = np.asarray(Image.open(lfw_dir / "Tony_Blair" / "Tony_Blair_0001.jpg").convert("RGB")).astype(np.int16)
    other = Image.open(lfw_dir / "Serena_Williams" / "Serena_Williams_0001.jpg").convert("RGB")
    noisy = [Image.fromarray(np.clip(base + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8))
             for _ in range(10)]
    m = sample_media(_gif(tmp_path / "near.gif", noisy + [other] * 2))
    assert m.total_frames >= 11  # Pillow merges the two identical trailing frames into one
    assert m.frame_indices == [0, 10] and len(m.frame_hashes) == 2


def test_still_gif_png_named_gif_and_exif_rotated_jpeg(tmp_path):
    _frames(1)[0].save(tmp_path / "still.gif")
    m = sample_media(tmp_path / "still.gif")
    assert (m.kind, m.total_frames, len(m.frames), m.duration_s) == ("gif", 1, 1, None)

    _frames(1)[0].save(tmp_path / "really-a-png.gif", format="PNG")
    m = sample_media(tmp_path / "really-a-png.gif")
    assert (m.kind, m.total_frames, m.width, m.height) == ("image", 1, 64, 48)

    im = Image.new("RGB", (40, 20), RED)
    im.paste(BLUE, (0, 0, 10, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    m = sample_media(tmp_path / "rot.jpg")
    assert (m.kind, m.width, m.height, m.frames[0].shape) == ("image", 20, 40, (40, 20, 3))
    assert m.frames[0][2, 10, 2] > 200 and m.frames[0][37, 10, 0] > 200  # blue band now on top


def test_png_alpha_16bit_and_jpeg(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[:, :6] = (0, 0, 255, 255)  # left half opaque blue, right half fully transparent black
    Image.fromarray(rgba).save(tmp_path / "a.png")
    m = sample_media(tmp_path / "a.png")
    assert tuple(m.frames[0][5, 2]) == BLUE and tuple(m.frames[0][5, 10]) == WHITE

    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(tmp_path / "g16.png")
    assert abs(int(sample_media(tmp_path / "g16.png").frames[0][0, 0, 0]) - 128) <= 1

    _frames(1)[0].save(tmp_path / "p.jpeg", quality=90)
    m = sample_media(tmp_path / "p.jpeg")
    assert (m.kind, m.total_frames, m.frames[0].shape) == ("image", 1, (48, 64, 3))


def test_animated_webp_and_still_webp(tmp_path):
    path = tmp_path / "a.webp"
    frames = _frames(6)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=80, lossless=True)
    m = sample_media(path)
    assert (m.kind, m.total_frames, len(m.frames), m.width, m.height) == ("webp", 6, 6, 64, 48)
    assert m.duration_s == pytest.approx(0.48)
    assert np.array_equal(m.frames[3], np.asarray(frames[3]))  # lossless: the exact pixels

    m = sample_media(_gif(tmp_path / "n.webp", _frames(40), format="GIF"), n_frames=5)  # a GIF named .webp
    assert (m.kind, m.total_frames, m.frame_indices) == ("gif", 40, evenly_spaced_indices(40, 5))

    frames[0].save(tmp_path / "s.webp", quality=80)
    m = sample_media(tmp_path / "s.webp")
    assert (m.kind, m.total_frames, m.width, m.height) == ("image", 1, 64, 48)


def test_every_shared_gif_decodes(gifs_dir):
    paths = sorted(gifs_dir.glob("*.gif"))
    assert len(paths) >= 63 and any("'" in p.name for p in paths)
    assert any(p.name == "giphy-celeb-detection-example.gif" for p in paths)
    for path in paths:
        m = sample_media(path)
        with Image.open(path) as im:
            assert scan_gif(path, MediaLimits()).frames == im.n_frames == m.total_frames, path.name
        assert m.kind == "gif" and 1 <= len(m.frames) <= 16
        assert (m.duration_s is None) if m.total_frames == 1 else m.duration_s >= 0.02 * m.total_frames
        assert all(f.shape == (m.height, m.width, 3) and f.dtype == np.uint8 for f in m.frames)
        assert m.frame_indices == sorted(m.frame_indices)
        assert set(m.frame_indices) <= set(evenly_spaced_indices(m.total_frames, 16))


# -- video -------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix,codec", [(".mp4", "libx264"), (".mp4", "mpeg4"), (".webm", "libvpx"),
                                          (".mov", "mpeg4"), (".mkv", "libx264")])
def test_video(tmp_path, suffix, codec):
    path = _video(tmp_path / f"clip{suffix}", codec, n=30, frame=lambda i: np.full((48, 64, 3), 8 * i, np.uint8))
    m = sample_media(path, n_frames=5, dedupe_distance=-1)
    assert (m.kind, m.total_frames, m.width, m.height) == ("video", 30, 64, 48)
    assert m.frame_indices == evenly_spaced_indices(30, 5) and m.duration_s == pytest.approx(3.0, abs=0.15)
    for index, frame in zip(m.frame_indices, m.frames):
        assert frame.shape == (48, 64, 3) and abs(float(frame.mean()) - 8 * index) < 6  # the right frames


def test_video_misnamed_and_rotated(tmp_path):
    def frame(i):
        pixels = np.zeros((48, 64, 3), np.uint8)
        pixels[:, :10] = BLUE  # blue band on the left of the stored frame
        return pixels

    path = _video(tmp_path / "clip.gif", "mpeg4", n=5, frame=frame, rotation=90, container="mp4")
    m = sample_media(path)
    assert (m.kind, m.width, m.height, m.frames[0].shape) == ("video", 48, 64, (64, 48, 3))
    assert m.frames[0][60, 24, 2] > 200 and m.frames[0][5, 24, 2] < 60  # turned counter-clockwise: band at the bottom


def test_long_video_is_sampled_by_seeking_to_the_same_frames(tmp_path):
    rng = np.random.default_rng(5)
    pictures = rng.integers(0, 256, (700, 32, 32, 3), dtype=np.uint8)
    path = _video(tmp_path / "long.mp4", "mpeg4", n=700, size=(32, 32), rate=25, gop=25, frame=lambda i: pictures[i])
    wanted = evenly_spaced_indices(700, 2)
    with av.open(str(path)) as container:  # the reference: every frame, decoded in order
        everything = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    sought = _decode_video_by_seeking(path, wanted, _probe_video(path, MediaLimits()), MediaLimits())
    assert sought is not None, "the seek path gave up on a plain constant-rate file"
    m = sample_media(path, n_frames=2)
    assert (m.total_frames, m.frame_indices) == (700, wanted)
    for index, got, via_api in zip(wanted, sought, m.frames):
        assert np.array_equal(got, everything[index]) and np.array_equal(via_api, everything[index])


def test_a_video_with_one_keyframe_is_decoded_straight_through_not_by_seeking(tmp_path):
    """One keyframe for the whole clip: every seek would land at the start and decode all the way to its
    sample again (16 samples of a long 4K clip: minutes). The seek path gives up as soon as a seek costs
    more frames than decoding on from the previous sample, and the frames come from one pass."""
    ramp = np.linspace(0, 200, 32, dtype=np.uint8)[None, :, None].repeat(32, 0).repeat(3, 2)
    pictures = [ramp + np.uint8(i // 20) for i in range(1000)]  # slow change: no scene cut forces a keyframe
    path = _video(tmp_path / "one-key.mp4", "mpeg4", n=1000, size=(32, 32), rate=25, gop=2000,
                  frame=lambda i: pictures[i])
    wanted = evenly_spaced_indices(1000, 3)
    assert min(b - a for a, b in zip(wanted, wanted[1:])) >= SEEK_MIN_GAP  # the seek path is tried
    assert _decode_video_by_seeking(path, wanted, _probe_video(path, MediaLimits()), MediaLimits()) is None
    with av.open(str(path)) as container:
        everything = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    m = sample_media(path, n_frames=3, dedupe_distance=-1)
    assert m.frame_indices == wanted
    assert all(np.array_equal(got, everything[i]) for i, got in zip(wanted, m.frames))


# -- refusals ----------------------------------------------------------------------------------

def _png_header(path, width, height):
    """A 1-bit PNG that declares width x height but holds only 4 rows: decoding it would fail."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(b"\x00" * (width // 8 + 2) * 4)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    # Over Pillow's own hard limit, and over ours but under Pillow's: both refused from the header.
    _refused(_png_header(tmp_path / "huge.png", 20_000, 20_000), "bomb", "decompression bomb")
    _refused(_png_header(tmp_path / "big.png", 8_000, 8_000), "bomb", "64,000,000", "40,000,000-pixel limit")
    _refused(_png_header(tmp_path / "small.png", 1_200, 1_000), "bomb", "1,000,000-pixel limit",
             limits=MediaLimits(max_pixels=1_000_000))

    palette = [BLACK, RED, BLUE, GREEN]
    _refused(_raw_gif(tmp_path / "screen.gif", (60_000, 60_000), palette, [(0, 0, [[1]], 1, None)]),
             "bomb", "60000x60000")
    _refused(_raw_gif(tmp_path / "far.gif", (8, 8), palette, [(0, 0, [[1]], 1, None), (50_000, 0, [[1]], 1, None)]),
             "bomb", "50001x8", limits=MediaLimits(max_pixels=100_000))

    frames = _frames(2)
    frames[0].save(tmp_path / "w.webp", save_all=True, append_images=frames[1:], lossless=True)
    data = bytearray((tmp_path / "w.webp").read_bytes())
    assert data[12:16] == b"VP8X"
    data[24:30] = (16_383).to_bytes(3, "little") * 2  # canvas 16384 x 16384
    (tmp_path / "w.webp").write_bytes(bytes(data))
    _refused(tmp_path / "w.webp", "bomb", "16384x16384")

    _refused(_video(tmp_path / "v.mp4", "mpeg4", n=3), "bomb", "64x48", "1,000-pixel limit",
             limits=MediaLimits(max_pixels=1_000))


@pytest.mark.parametrize(
    "make,limits,reason,words",
    [
        (lambda p: p.write_bytes(b""), MediaLimits(), "empty", ["empty"]),
        (lambda p: p.write_text("hello, not a gif"), MediaLimits(), "unsupported", ["text", "hello"]),
        (lambda p: p.write_text("<!doctype html><p>hi</p>"), MediaLimits(), "unsupported", ["markup"]),
        (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(100)), MediaLimits(), "unsupported", ["zip archive"]),
        (lambda p: p.write_bytes(bytes(range(7, 200))), MediaLimits(), "unsupported", ["binary data"]),
        (lambda p: p.write_bytes(b"\x00\x00\x00\x1cftypheic" + bytes(100)), MediaLimits(), "unsupported", ["HEIF"]),
        (lambda p: p.write_bytes(b"GIF89a" + bytes(2000)), MediaLimits(max_file_bytes=100), "too_large",
         ["2,006 bytes", "100-byte limit"]),
        (lambda p: _gif(p, _frames(10)), MediaLimits(max_frames=5), "too_many_frames", ["5-frame limit"]),
        (lambda p: _frames(4)[0].save(p, format="WEBP", save_all=True, append_images=_frames(4)[1:]),
         MediaLimits(max_frames=3), "too_many_frames", ["4 frames", "3-frame limit"]),
        (lambda p: _video(p, "mpeg4", n=12, container="matroska"), MediaLimits(max_frames=10), "too_many_frames", ["12 frames", "10-frame limit"]),
        (lambda p: _raw_gif(p, (8, 8), [BLACK] * 4, []), MediaLimits(), "empty", ["no frame"]),
    ],
)
def test_bad_input_is_refused_with_a_clear_reason(tmp_path, make, limits, reason, words):
    path = tmp_path / "bad.gif"
    make(path)
    _refused(path, reason, *words, limits=limits)


def test_a_gif_with_many_frames_is_refused_without_reading_them_all(tmp_path):
    path = _raw_gif(tmp_path / "many.gif", (2, 2), [BLACK, RED, BLUE, GREEN], [(0, 0, [[1]], 1, None)] * 50_000)
    _refused(path, "too_many_frames", "more than 20,000 frames")


def test_truncated_files(tmp_path, gifs_dir, lfw_dir):
    jpeg = (lfw_dir / "Tony_Blair" / "Tony_Blair_0001.jpg").read_bytes()
    for keep in (len(jpeg) // 2, len(jpeg) * 2 // 5, 200):
        (tmp_path / "cut.jpg").write_bytes(jpeg[:keep])
        _refused(tmp_path / "cut.jpg", "truncated")

    gif = (gifs_dir / "where.gif").read_bytes()
    for keep in (10, 1500, len(gif) // 2, len(gif) * 9 // 10, len(gif) - 2):  # header, first frame, middle, tail, last block
        (tmp_path / "cut.gif").write_bytes(gif[:keep])
        _refused(tmp_path / "cut.gif", "truncated")
    (tmp_path / "cut.gif").write_bytes(gif[:-1])  # only the trailer byte missing: every frame is there
    assert sample_media(tmp_path / "cut.gif").total_frames == scan_gif(gifs_dir / "where.gif", MediaLimits()).frames
    (tmp_path / "padded.gif").write_bytes(gif + bytes(64))  # junk after the trailer is harmless
    assert sample_media(tmp_path / "padded.gif").total_frames == scan_gif(gifs_dir / "where.gif", MediaLimits()).frames

    _frames(1, (120, 90))[0].save(tmp_path / "p.png")
    png = (tmp_path / "p.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    _refused(tmp_path / "cut.png", "truncated")

    frames = _frames(6)
    frames[0].save(tmp_path / "a.webp", save_all=True, append_images=frames[1:], lossless=True)
    webp = (tmp_path / "a.webp").read_bytes()
    (tmp_path / "cut.webp").write_bytes(webp[: len(webp) // 2])
    _refused(tmp_path / "cut.webp", "truncated", "announces")

    for name, codec in (("clip.mp4", "mpeg4"), ("clip.mkv", "mpeg4"), ("clip.webm", "libvpx")):
        video = _video(tmp_path / name, codec, n=60).read_bytes()
        (tmp_path / f"cut-{name}").write_bytes(video[: len(video) // 2])
        _refused(tmp_path / f"cut-{name}", "truncated")


def test_unreadable_paths(tmp_path):
    _refused(tmp_path / "nope.gif", "unreadable", "no such file")
    _refused(tmp_path, "unreadable", "cannot read", "directory")
    os.mkfifo(tmp_path / "pipe.gif")  # opening it for reading would block forever
    _refused(tmp_path / "pipe.gif", "unreadable", "not a regular file")


def test_permission_denied(shared_tmp):
    path = _gif(shared_tmp / "secret.gif", _frames(2))
    path.chmod(0)
    with unprivileged():
        _refused(path, "unreadable", "permission denied")
