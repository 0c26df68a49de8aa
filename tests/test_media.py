"""Decoding, sampling and perceptual hashing on generated and real media."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from embeddings.media import MediaError, MediaLimits, sample_media
from embeddings.phash import drop_near_duplicates, hamming, phash64
from embeddings.sampling import evenly_spaced_indices


def _frames(n: int, size=(64, 48)) -> list[Image.Image]:
    rng = np.random.default_rng(n)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def _gif(path, frames, **kw):
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0, **kw)
    return path


@pytest.mark.parametrize("total,n", [(1, 16), (5, 16), (16, 16), (100, 16), (1000, 7)])
def test_evenly_spaced_indices(total, n):
    idx = evenly_spaced_indices(total, n)
    assert len(idx) == min(total, n) and idx == sorted(set(idx))
    assert 0 <= idx[0] and idx[-1] < total
    if total > n:
        gaps = np.diff(idx)
        assert gaps.max() - gaps.min() <= 1


def test_animated_gif_sampled_evenly(tmp_path):
    m = sample_media(_gif(tmp_path / "a.gif", _frames(40)), n_frames=8)
    assert (m.kind, m.total_frames, m.width, m.height) == ("gif", 40, 64, 48)
    assert m.frame_indices == evenly_spaced_indices(40, 8)
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in m.frames)
    assert m.frame_hashes == [phash64(f) for f in m.frames]
    assert m.duration_s == pytest.approx(2.0)


def test_identical_frames_are_deduplicated(tmp_path):
    frame = _frames(1)[0]
    m = sample_media(_gif(tmp_path / "same.gif", [frame.copy() for _ in range(20)]))
    assert m.total_frames >= 1 and len(m.frames) == 1


def test_gif_transparency_and_disposal_are_composited(tmp_path):
    base = Image.new("P", (20, 20), 1)
    base.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    patch = Image.new("P", (20, 20), 0)  # index 0 = transparent
    patch.putpalette(base.getpalette())
    patch.paste(2, (5, 5, 10, 10))
    path = tmp_path / "t.gif"
    base.save(path, save_all=True, append_images=[patch], transparency=0, disposal=1, duration=100, optimize=False)
    m = sample_media(path, dedupe_distance=-1)
    second = m.frames[1]
    assert tuple(second[0, 0]) == (255, 0, 0)  # shows the first frame through the transparency
    assert tuple(second[7, 7]) == (0, 255, 0)  # the painted square


def test_single_frame_gif_png_named_gif_and_exif_jpeg(tmp_path):
    _frames(1)[0].save(tmp_path / "still.gif")
    assert sample_media(tmp_path / "still.gif").kind == "gif"
    _frames(1)[0].save(tmp_path / "really-a-png.gif", format="PNG")
    m = sample_media(tmp_path / "really-a-png.gif")
    assert m.kind == "image" and m.total_frames == 1
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    m = sample_media(tmp_path / "rot.jpg")
    assert (m.width, m.height) == (20, 40)
    assert m.frames[0][2, 10, 2] > 200  # the blue band is now at the top


def test_animated_webp(tmp_path):
    path = tmp_path / "a.webp"
    frames = _frames(6)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=80, lossless=True)
    m = sample_media(path)
    assert (m.kind, m.total_frames, len(m.frames)) == ("webp", 6, 6)


@pytest.mark.parametrize("suffix,codec", [(".mp4", "mpeg4"), (".webm", "libvpx")])
def test_video(tmp_path, suffix, codec):
    import av

    path = tmp_path / f"clip{suffix}"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in _frames(30):
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    m = sample_media(path, n_frames=5)
    assert m.kind == "video" and m.total_frames == 30 and len(m.frames) == 5
    assert m.frames[0].shape == (48, 64, 3)


def test_every_shared_gif_decodes(gifs_dir):
    paths = sorted(gifs_dir.glob("*.gif"))
    assert len(paths) >= 63 and any("'" in p.name for p in paths)
    for path in paths:
        m = sample_media(path)
        assert m.kind == "gif" and 1 <= len(m.frames) <= 16
        assert m.frames[0].shape == (m.height, m.width, 3)


def test_phash_is_stable_under_resizing_and_separates_people(lfw_dir):
    a = Image.open(lfw_dir / "Tony_Blair" / "Tony_Blair_0001.jpg").convert("RGB")
    buf = io.BytesIO()
    a.resize((125, 125)).save(buf, format="JPEG", quality=60)
    small = Image.open(buf).convert("RGB")
    b = Image.open(lfw_dir / "Serena_Williams" / "Serena_Williams_0001.jpg").convert("RGB")
    ha, hs, hb = (phash64(np.asarray(x)) for x in (a, small, b))
    assert hamming(ha, hs) <= 6 < 10 < hamming(ha, hb)
    assert drop_near_duplicates([ha, hs, hb], 6) == [0, 2]


@pytest.mark.parametrize(
    "make,limits,reason,words",
    [
        (lambda p: p.write_bytes(b""), MediaLimits(), "empty", "empty"),
        (lambda p: p.write_text("hello, not a gif"), MediaLimits(), "unsupported", "text"),
        (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(100)), MediaLimits(), "unsupported", "zip"),
        (lambda p: p.write_bytes(b"GIF89a" + bytes(2000)), MediaLimits(max_file_bytes=100), "too_large", "100-byte limit"),
        (lambda p: Image.new("1", (6000, 6000)).save(p, format="PNG"), MediaLimits(max_pixels=1_000_000), "bomb",
         "decompression bomb"),
        (lambda p: _gif(p, _frames(10)), MediaLimits(max_frames=5), "too_many_frames", "5-frame limit"),
    ],
)
def test_bad_input_is_refused_with_a_clear_reason(tmp_path, make, limits, reason, words):
    path = tmp_path / "bad.gif"
    make(path)
    with pytest.raises(MediaError) as err:
        sample_media(path, limits=limits)
    assert err.value.reason == reason
    assert str(path) in str(err.value) and words in str(err.value)


def test_truncated_files(tmp_path, gifs_dir, lfw_dir):
    jpeg = (lfw_dir / "Tony_Blair" / "Tony_Blair_0001.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 5])
    with pytest.raises(MediaError) as err:
        sample_media(tmp_path / "cut.jpg")
    assert err.value.reason == "truncated"
    gif = (gifs_dir / "where.gif").read_bytes()
    for keep in (1500, len(gif) // 2, len(gif) * 9 // 10, len(gif) - 1):  # cut inside header, mid-file, last frames, trailer
        (tmp_path / "cut.gif").write_bytes(gif[:keep])
        with pytest.raises(MediaError) as err:
            sample_media(tmp_path / "cut.gif")
        assert err.value.reason == "truncated", keep


def test_missing_file_and_directory(tmp_path):
    for path, words in ((tmp_path / "nope.gif", "no such file"), (tmp_path, "cannot read")):
        with pytest.raises(MediaError) as err:
            sample_media(path)
        assert err.value.reason == "unreadable" and words in str(err.value)
