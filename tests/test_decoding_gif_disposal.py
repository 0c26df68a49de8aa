"""Decoding: GIF disposal and transparency as browsers composite them, and failed copies.

The GIFs are written byte by byte (`_write_gif`) so disposal bits, transparent indices and frame
rectangles are exactly what a test says, and compared frame by frame with a small browser-semantics
compositor (`_composite`: the canvas starts transparent, disposal 2 clears the frame's rectangle to
transparent, 3 restores what was there; transparent shows as white, as giflens shows it)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from embeddings.media import decode_media

PAL = [(0, 0, 255), (255, 0, 0), (0, 255, 0), (255, 255, 0), (255, 0, 255)]  # blue red green yellow magenta


def _lzw(indices: np.ndarray, min_code: int = 8) -> bytes:
    """LZW data that sends a clear code often enough that every code stays min_code + 1 bits wide."""
    clear, eoi, size = 1 << min_code, (1 << min_code) + 1, min_code + 1
    codes, run = [], 0
    for v in indices:
        if run == 0:
            codes.append(clear)
        codes.append(int(v))
        run = 0 if run + 1 >= (1 << min_code) - 3 else run + 1
    codes.append(eoi)
    acc = nbits = 0
    out = bytearray()
    for code in codes:
        acc |= code << nbits
        nbits += size
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc, nbits = acc >> 8, nbits - 8
    if nbits:
        out.append(acc)
    data = bytearray([min_code])
    for i in range(0, len(out), 255):
        data += bytes([len(out[i:i + 255])]) + out[i:i + 255]
    return bytes(data + b"\x00")


def _table(palette) -> bytes:
    return b"".join(bytes(c) for c in list(palette) + [(0, 0, 0)] * (256 - len(palette)))


def _interlaced_rows(h: int) -> list[int]:
    return [*range(0, h, 8), *range(4, h, 8), *range(2, h, 4), *range(1, h, 2)]


def _write_gif(path: Path, size: tuple[int, int], frames: list[dict], palette=None) -> Path:
    """frames: dict(x, y, idx (h, w), disposal, transparent (index or None), palette (local), interlaced)."""
    w, h = size
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", w, h, 0xF7 if palette else 0, 0, 0))
    if palette:
        out += _table(palette)
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    for f in frames:
        t = f.get("transparent")
        flags = (f["disposal"] << 2) | (t is not None)
        out += b"\x21\xf9\x04" + struct.pack("<BHB", flags, 10, t or 0) + b"\x00"
        idx = np.asarray(f["idx"], np.uint8)
        local, interlaced = f.get("palette"), f.get("interlaced", False)
        fpacked = (0x87 if local else 0) | (0x40 if interlaced else 0)
        out += b"\x2c" + struct.pack("<HHHHB", f["x"], f["y"], idx.shape[1], idx.shape[0], fpacked)
        if local:
            out += _table(local)
        out += _lzw((idx[_interlaced_rows(idx.shape[0])] if interlaced else idx).ravel())
    path.write_bytes(bytes(out + b"\x3b"))
    return path


def _composite(size: tuple[int, int], frames: list[dict], palette=None) -> list[np.ndarray]:
    """Every frame as a browser shows it, transparent pixels white."""
    w, h = size
    canvas = np.zeros((h, w, 4), np.uint8)
    shown = []
    for f in frames:
        pal = np.array(list(f.get("palette") or palette) + [(0, 0, 0)] * 256, np.uint8)[:256]
        saved = canvas.copy() if f["disposal"] == 3 else None
        idx = np.asarray(f["idx"], np.uint8)
        x, y, (fh, fw) = f["x"], f["y"], idx.shape
        draw = np.ones(idx.shape, bool) if f.get("transparent") is None else idx != f["transparent"]
        region = canvas[y:y + fh, x:x + fw]
        region[draw, :3], region[draw, 3] = pal[idx][draw], 255
        shown.append(np.where(canvas[:, :, 3:] == 255, canvas[:, :, :3], np.uint8(255)))
        if f["disposal"] == 2:
            canvas[y:y + fh, x:x + fw] = 0
        elif saved is not None:
            canvas = saved
    return shown


def _full(value: int, h: int, w: int) -> np.ndarray:
    return np.full((h, w), value, np.uint8)


def _assert_as_browsers_show(path: Path, size, frames, palette=None) -> None:
    decoded = decode_media(path, 16)
    expected = _composite(size, frames, palette)
    assert decoded.indices == list(range(len(frames)))
    for i, frame in zip(decoded.indices, decoded.frames):
        wrong = int((frame != expected[i]).any(axis=2).sum())
        assert wrong == 0, f"frame {i}: {wrong} pixels differ from the browser's"


def test_gif_frame_with_disposal_0_after_a_disposal_2_frame_stays_drawn(tmp_path):
    """Pillow keeps the previous frame's disposal when a frame's bits are 0, so the red box (disposal
    0, "leave in place") was cleared like the green one before it and was gone from the last frame."""
    frames = [dict(x=0, y=0, idx=_full(0, 64, 64), disposal=1),     # blue background
              dict(x=40, y=40, idx=_full(2, 16, 16), disposal=2),   # green box, cleared after
              dict(x=0, y=0, idx=_full(1, 20, 20), disposal=0),     # red box: stays
              dict(x=40, y=0, idx=_full(3, 10, 10), disposal=0)]    # yellow box
    path = _write_gif(tmp_path / "disposal0.gif", (64, 64), frames, PAL)
    last = decode_media(path, 16).frames[-1]
    assert last[5, 5].tolist() == [255, 0, 0]  # the red box
    _assert_as_browsers_show(path, (64, 64), frames, PAL)


def test_gif_frame_with_disposal_0_after_a_disposal_3_frame_stays_drawn(tmp_path):
    frames = [dict(x=0, y=0, idx=_full(0, 64, 64), disposal=1),
              dict(x=40, y=40, idx=_full(2, 16, 16), disposal=3),   # green box, restored away after
              dict(x=0, y=0, idx=_full(1, 20, 20), disposal=0),     # red box: stays
              dict(x=40, y=0, idx=_full(3, 10, 10), disposal=1)]
    path = _write_gif(tmp_path / "disposal0-after3.gif", (64, 64), frames, PAL)
    _assert_as_browsers_show(path, (64, 64), frames, PAL)


def test_gif_area_cleared_by_disposal_2_is_white_under_the_next_frames_transparent_pixels(tmp_path):
    """Frame 0 is opaque, so Pillow composites in RGB: the cleared square took the transparent index's
    colour (magenta) and the next frame's rectangle was marked drawn as a whole, transparent pixels too."""
    spot = _full(4, 30, 30)
    spot[10:20, 10:20] = 1  # index 4 is transparent: only a red spot is drawn
    frames = [dict(x=0, y=0, idx=_full(0, 64, 64), disposal=1),
              dict(x=10, y=10, idx=_full(2, 30, 30), disposal=2, transparent=4),
              dict(x=10, y=10, idx=spot, disposal=1, transparent=4)]
    path = _write_gif(tmp_path / "cleared.gif", (64, 64), frames, PAL)
    last = decode_media(path, 16).frames[-1]
    assert last[12, 12].tolist() == [255, 255, 255] and last[25, 25].tolist() == [255, 0, 0]
    _assert_as_browsers_show(path, (64, 64), frames, PAL)


def test_gif_per_pixel_transparency_with_local_palettes_interlacing_and_no_global_table(tmp_path):
    """The frames' transparent pixels are read again from their own LZW data: local colour tables,
    interlaced rows and a frame without transparency in between all keep the browser's picture."""
    rng = np.random.default_rng(14)
    local = [[tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(6)] for _ in range(5)]
    frames = []
    for k in range(5):
        idx = rng.integers(0, 6, (24 + 3 * k, 30)).astype(np.uint8)
        frames.append(dict(x=5 * k, y=3 * k, idx=idx, disposal=[1, 2, 0, 3, 2][k], palette=local[k],
                           transparent=None if k == 2 else 5, interlaced=k % 2 == 1))
    frames.insert(0, dict(x=0, y=0, idx=_full(0, 60, 70), disposal=1, palette=[(0, 0, 255)]))
    path = _write_gif(tmp_path / "local.gif", (70, 60), frames)
    _assert_as_browsers_show(path, (70, 60), frames)


def test_failed_files_with_the_same_bytes_are_each_listed_and_the_shared_row_noted(tmp_path, monkeypatch):
    """Rows are one per content, so two empty files share one failed row: the batch lists both failures
    and notes which name the row keeps, as it does for stored copies (before: silence about the other)."""
    from typer.testing import CliRunner

    from labeling.cli import app

    media = tmp_path / "media"
    media.mkdir()
    (media / "zero.gif").write_bytes(b"")
    (media / "zero.mp4").write_bytes(b"")
    result = CliRunner().invoke(app, ["ingest", str(media), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"failed {media / 'zero.gif'}: the file is empty" in out
    assert f"failed {media / 'zero.mp4'}: the file is empty" in out
    assert f"{media / 'zero.gif'}: same content as {media / 'zero.mp4'} (media 1); stored once" in out
    assert "failed 2" in out
