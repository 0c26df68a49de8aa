"""Decode media files into sampled RGB frames, with guards against bad input.

The format comes from the file's first bytes, never from its extension: uploads
are often misnamed, and the extension is the attacker's choice. Every refusal is
a MediaError whose message names the file and the limit, and whose `reason` is a
short code stored with the failed media row.

Sizes and frame counts are read from the headers (our own walk of the GIF, WebP
and animated PNG block structure, Pillow's header parse for PNG/JPEG, the container
for video) and checked against MediaLimits before any pixel is decoded, so a
decompression bomb or a million-frame GIF costs a header read, not the machine.
An animation also has a compositing budget (canvas pixels x frames drawn to reach
the last sample), so a small file of many tiny frames on a huge canvas costs
a header read too, not minutes of decoding.

Transparent pixels (GIF transparency, alpha in PNG/WebP and in VP8/VP9 WebM) are
composited onto white, as on a web page; without this they show whatever colour the
encoder left under them (arbitrary palette entries), which differs per file and
misleads the hash and the embedders. Video frames are shown as players show them:
non-square pixels stretched to the display aspect, then turned by the rotation matrix.

The frames kept of one file share a budget of MediaLimits.max_retained_pixels pixels
(`retained_frame_pixels`), so a small file cannot hold gigabytes until inference: the frames of
a huge animation canvas are shrunk, and so are those of full-HD video sampled at more than 64
frames, though never below 640x360 (RETAIN_FLOOR_PIXELS).
"""
from __future__ import annotations

import os
import stat
import struct
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps

from embeddings.phash import drop_near_duplicates, phash64, tile_phashes
from embeddings.sampling import evenly_spaced_indices
from models.face_detector import DETECT_MAX_PIXELS, detection_size, shrink

# A cut-off file must fail loudly, never come back as half an image padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# The content is sniffed anyway; these are the names a folder walk picks up. `.apng` is animated PNG's
# registered extension, `.jfif` / `.jpe` / `.jif` are JPEGs (Chrome saves many JPEGs as `.jfif`).
MEDIA_EXTENSIONS = frozenset({".gif", ".webp", ".mp4", ".webm", ".mov", ".mkv", ".m4v", ".jpg", ".jpeg", ".jpe", ".jfif",
                              ".jif", ".png", ".apng"})


def has_media_extension(path: Path) -> bool:
    """Named like media (the content is checked when the file is read)."""
    return path.suffix.lower() in MEDIA_EXTENSIONS


def is_media_file(path: Path) -> bool:
    """A file a folder ingest picks up (by extension; its content is checked when it is read)."""
    return has_media_extension(path) and path.is_file()

TRANSPARENT_BACKGROUND = (255, 255, 255)

# Long videos are sampled by seeking when samples are further apart than a typical
# keyframe interval (x264's default is 250): each seek then decodes at most about one
# GOP instead of every frame in between. Shorter gaps decode straight through.
SEEK_MIN_GAP = 300

# The area the face detector searches (models.face_detector.DETECT_MAX_PIXELS, full HD): a bigger frame is
# shown to MTCNN shrunk to that area anyway, so shrinking a kept frame to it loses no face. The default
# budget keeps frames this big for up to 64 sampled frames (`retained_frame_pixels`).
RETAIN_MIN_FRAME_PIXELS = DETECT_MAX_PIXELS
# No kept frame is shrunk below 640x360, whatever the sampling: the size of an ordinary GIF or clip, whose
# faces of min_face_size (20 px) the detector finds as they are. The default budget (max_retained_pixels)
# gives 512 frames, the most --frames asks for, 0.26 Mpixels each: above this floor, so the budget holds.
RETAIN_FLOOR_PIXELS = 640 * 360

# WebM keeps VP8/VP9 alpha in a side channel that FFmpeg's native decoders ignore (they give the colour
# stored under transparent pixels, mostly black); libvpx decodes it (yuva420p). Used when the stream says
# alpha_mode=1 (GIPHY's transparent stickers) and the decoder is in the PyAV build.
ALPHA_DECODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}

_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"})
_QUICKTIME_ATOMS = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})


class MediaError(Exception):
    """A file giflens will not use, with a human message and a short reason code.

    Reasons: too_large, bomb, too_many_frames, empty, unreadable, truncated, unsupported.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class MediaLimits:
    """Upper bounds that keep one hostile or broken file from exhausting memory or time."""

    max_file_bytes: int = 200 * 1024 * 1024
    max_pixels: int = 40_000_000  # per frame
    max_frames: int = 20_000
    # Canvas pixels x frames composited to reach an animation's last sample (GIF, animated WebP):
    # 100 canvases at the per-frame limit; about 12 s of compositing at the 320 Mpixel/s Pillow
    # managed on a 6300x6300 GIF, and 500x what the largest of the 63 shared GIFs needs (8 Mpixels).
    max_decode_pixels: int = 4_000_000_000
    # Pixels all kept frames of one file may hold (3 bytes each: 400 MB), as the ingest keeps a chunk of
    # files' frames until inference: 16 frames of a 6000x6000 GIF held 1.7 GB (`retained_frame_pixels`).
    # 16 frames of 4K UHD video, so that at the default sampling only canvases beyond 4K are shrunk.
    max_retained_pixels: int = 16 * 3840 * 2160

    @classmethod
    def from_settings(cls, settings) -> "MediaLimits":
        return cls(max_file_bytes=settings.max_file_bytes, max_pixels=settings.max_pixels,
                   max_frames=settings.max_frames, max_decode_pixels=settings.max_decode_pixels)


@dataclass
class SampledMedia:
    kind: str  # gif | webp | apng | video | image, from the content
    frames: list[np.ndarray]  # kept frames (after de-duplication), RGB uint8 [h, w, 3], all the same size
    frame_indices: list[int]  # index of each kept frame in the clip
    frame_hashes: list[int]  # 64-bit DCT pHash of each kept frame
    total_frames: int
    width: int
    height: int
    duration_s: float | None
    # Positions in `frames` that differ as whole pictures (the whole-frame hashes alone
    # de-duplicated): what the GIF embedding averages; faces are looked for in every kept frame.
    scene_positions: list[int]


@dataclass
class DecodedFrames:
    """Sampled frames before de-duplication (what decode_media returns)."""

    kind: str
    frames: list[np.ndarray]
    indices: list[int]
    total: int
    width: int
    height: int
    duration: float | None


# -- format sniffing -----------------------------------------------------------------------

def sniff_format(head: bytes) -> str | None:
    """Container format from magic bytes: gif, png, jpeg, webp, mp4 (ISO BMFF / QuickTime) or matroska."""
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return None if head[8:12] in _HEIF_BRANDS else "mp4"
    if head[4:8] in _QUICKTIME_ATOMS and len(head) >= 8 and int.from_bytes(head[:4], "big") >= 8:
        return "mp4"  # old QuickTime .mov files start with moov/mdat/wide, no ftyp
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # also WebM
    return None


def describe_content(head: bytes) -> str:
    """What an unsupported file looks like, for the error message."""
    if not head:
        return "empty"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "a HEIF/AVIF image"
    for magic, name in (
        (b"PK\x03\x04", "a zip archive"), (b"%PDF", "a PDF document"), (b"BM", "a BMP image"),
        (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"\x1f\x8b", "gzip data"),
        (b"\x7fELF", "an executable"), (b"MZ", "an executable"), (b"OggS", "Ogg audio/video"),
        (b"ID3", "MP3 audio"), (b"fLaC", "FLAC audio"), (b"8BPS", "a Photoshop document"),
    ):
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF":
        return f"a RIFF {head[8:12].decode('latin-1').strip() or 'file'} file (e.g. AVI or WAV)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # The head may end inside a multi-byte character.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            text = None
    if text is not None and all(c.isprintable() or c.isspace() for c in text):
        if text.lstrip().startswith("<"):
            return "markup (HTML/XML/SVG)"
        return f"text ({text[:24].strip()!r}...)"
    return f"unrecognised binary data (starts {head[:8].hex(' ')})"


# -- guards ----------------------------------------------------------------------------------

def _check_pixels(path: Path, width: int, height: int, limits: MediaLimits, what: str = "frame") -> None:
    if width <= 0 or height <= 0:
        raise MediaError("unreadable", f"{path}: {what} size {width}x{height} is invalid")
    if width * height > limits.max_pixels:
        raise MediaError("bomb", f"{path}: {width}x{height} = {width * height:,} pixels per {what} is over the "
                                 f"{limits.max_pixels:,}-pixel limit (decompression bomb guard, set by "
                                 f"GIFLENS_MAX_PIXELS)")


def _check_frames(path: Path, total: int, limits: MediaLimits, at_least: bool = False) -> None:
    if total > limits.max_frames:
        count = f"more than {limits.max_frames:,}" if at_least else f"{total:,}"
        raise MediaError("too_many_frames", f"{path}: {count} frames is over the {limits.max_frames:,}-frame limit")


def _check_compositing(path: Path, width: int, height: int, wanted: list[int], limits: MediaLimits,
                       what: str) -> None:
    """Refuse an animation whose sampling would composite more pixels than the decode budget.

    Each frame is drawn over the previous canvas, so reaching the last sampled frame decodes
    every frame before it at the full canvas size, however small the frame itself is: a 25 KB
    GIF of 1,000 one-pixel frames on a 6300x6300 canvas took 98 s and 2.35 GB. The frame count
    comes from the header walk, so the refusal costs no pixel decoding.
    """
    frames = wanted[-1] + 1 if wanted else 0
    pixels = width * height * frames
    if pixels > limits.max_decode_pixels:
        raise MediaError("bomb", f"{path}: reaching the sampled frames means compositing {frames:,} frames of a "
                                 f"{width}x{height} {what} canvas = {pixels:,} pixels, over the "
                                 f"{limits.max_decode_pixels:,}-pixel decode limit (GIFLENS_MAX_DECODE_PIXELS)")


def _truncated(path: Path, what: str) -> MediaError:
    return MediaError("truncated", f"{path}: {what} (the file is truncated or corrupt)")


# -- RGB conversion --------------------------------------------------------------------------

def to_rgb(image: Image.Image) -> np.ndarray:
    """RGB uint8 pixels of a Pillow frame, transparent areas composited onto white."""
    transparency = image.info.get("transparency")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        transparency is not None and (image.mode in ("P", "L", "1") or isinstance(transparency, tuple)))
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale: scale instead of clipping everything above 255 to white.
        values = np.asarray(image)
        grey = values.astype(np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or grey.max() > 255 else 255.0
        grey = np.clip(grey / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        rgb = np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
        if isinstance(transparency, int):  # a tRNS chunk: the pixels of this one grey value are transparent
            rgb[values == transparency] = TRANSPARENT_BACKGROUND
        return rgb
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, TRANSPARENT_BACKGROUND + (255,))
        canvas.alpha_composite(rgba)
        return np.asarray(canvas.convert("RGB"))
    return np.asarray(image.convert("RGB"))


def _pad_to(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Grow a frame to the clip's canvas (a GIF frame may enlarge the canvas mid-clip)."""
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    out = np.empty((height, width, 3), np.uint8)
    out[:] = TRANSPARENT_BACKGROUND
    out[:h, :w] = frame[:height, :width]
    return out


def retained_frame_pixels(sampled: int, limits: MediaLimits) -> int:
    """The most pixels one kept frame may have when `sampled` frames are taken of a file.

    Why: the frames of a chunk of files wait in memory for inference, and a small file can draw 16
    frames on a 40-Mpixel canvas, or 512 frames of 1080p video (3.2 GB when every frame was kept whole).
    The file's budget (max_retained_pixels) is shared by its frames: a still, 4K video sampled at 16
    frames and 1080p video sampled at up to 64 are kept as they are (the detector searches no more than
    full HD anyway, RETAIN_MIN_FRAME_PIXELS); beyond that, frames are shrunk as the budget requires
    (a face must then be bigger to be found), but never below RETAIN_FLOOR_PIXELS, so an ordinary clip
    is never shrunk and keeps every face the detector finds in it."""
    return max(RETAIN_FLOOR_PIXELS, limits.max_retained_pixels // max(1, sampled))


def fit_pixels(frame: np.ndarray, max_pixels: int) -> np.ndarray:
    """The frame, or the frame shrunk to at most max_pixels with its aspect kept, exactly as the face
    detector shrinks frames, so that every frame of one file gets the same size."""
    return shrink(frame, detection_size(frame.shape[1], frame.shape[0], max_pixels))


# -- GIF -------------------------------------------------------------------------------------

@dataclass
class GifLayout:
    """What a walk over a GIF's block structure learns without decoding pixels."""

    frames: int
    width: int  # canvas, grown by any frame that extends past the logical screen (as Pillow does)
    height: int
    duration_s: float | None  # as browsers play it; None for a still
    # frame index -> where its transparent pixels are found (only frames with a transparent index)
    transparent: dict[int, "GifTransparency"] = field(default_factory=dict)


@dataclass
class GifTransparency:
    """A frame's transparent index and where its LZW data starts: enough to tell which of its
    pixels it draws (`_drawn_pixels`), as Pillow's composited canvas no longer tells."""

    index: int  # the palette index that is not drawn
    left: int
    top: int
    width: int
    height: int
    interlaced: bool
    min_code_size: int
    data_offset: int  # the first sub-block of the frame's image data


def _read_exact(fh: BinaryIO, n: int, path: Path, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise _truncated(path, f"the GIF ends inside {what}")
    return data


def _skip_sub_blocks(fh: BinaryIO, file_size: int, path: Path, what: str) -> None:
    """Skip a chain of data sub-blocks (length byte + data, ended by a zero length) without reading them."""
    while True:
        size = _read_exact(fh, 1, path, what)[0]
        if size == 0:
            return
        if fh.seek(size, os.SEEK_CUR) > file_size:
            raise _truncated(path, f"the GIF ends inside {what}")


def scan_gif(path: Path, limits: MediaLimits, stop_after: int | None = None) -> GifLayout:
    """Count frames, sum delays and check every frame's size from the block structure alone.

    Stops as soon as a limit is crossed, and refuses a file cut inside a block: Pillow would
    silently stop at the cut and return fewer frames. A file whose last frame is complete and that
    only lacks its trailer byte (some encoders and downloads drop it; browsers play it) is accepted:
    every frame it announces is there, also when a complete extension (a comment, XMP data) follows
    that frame. Only a graphic control extension after the last frame announces one more frame, so
    a file ending right after it is truncated.

    `stop_after`: stop at the image descriptor of frame `stop_after + 1`, reading neither it nor what follows:
    `frames` is then `stop_after + 1` ("more than `stop_after`"), and the size, duration and transparency
    describe the frames read before it. Why: a caller asking "one frame or more?" (`is_one_frame`, on every
    GIF of every import) walked a long animation's every block; a file of `stop_after` frames or fewer is
    read, and refused, as without it.
    """
    with open(path, "rb") as fh:
        file_size = os.fstat(fh.fileno()).st_size
        header = _read_exact(fh, 13, path, "its header")
        width, height, packed = struct.unpack("<HHB", header[6:11])
        if width and height:  # a 0x0 logical screen is legal: the frames then set the size
            _check_pixels(path, width, height, limits, "canvas")
        if packed & 0x80:
            _read_exact(fh, 3 << ((packed & 7) + 1), path, "its colour table")
        frames, delay_cs, delay, transparent_index = 0, 0, 0, None
        transparent: dict[int, GifTransparency] = {}
        announced = False  # a graphic control extension was read whose frame has not come yet
        while True:
            introducer = fh.read(1)
            if not introducer:
                if frames and not announced:  # every block read is complete: only the trailer is missing
                    break
                raise _truncated(path, f"the GIF ends without its trailer byte, after {frames} frames")
            if introducer == b"\x3b":
                break
            if introducer == b"\x2c":
                announced = False
            if introducer == b"\x21":
                label = _read_exact(fh, 1, path, "an extension")[0]
                if label == 0xF9:  # graphic control: the frame delay
                    announced = True
                    block = _read_exact(fh, 1, path, "a graphic control extension")
                    body = _read_exact(fh, block[0], path, "a graphic control extension")
                    if len(body) >= 3:
                        delay = struct.unpack("<H", body[1:3])[0]
                    if len(body) >= 4 and body[0] & 1:  # as Pillow reads it: a later extension without one keeps it
                        transparent_index = body[3]
                _skip_sub_blocks(fh, file_size, path, "an extension")
            elif introducer == b"\x2c":
                frames += 1
                if stop_after is not None and frames > stop_after:
                    break
                delay_cs += delay if delay > 1 else 10  # browsers play 0 and 1 cs delays as 10 cs
                delay = 0
                _check_frames(path, frames, limits, at_least=True)
                left, top, w, h, fpacked = struct.unpack("<HHHHB", _read_exact(fh, 9, path, f"frame {frames}"))
                width, height = max(width, left + w), max(height, top + h)
                _check_pixels(path, width, height, limits, "canvas")
                if fpacked & 0x80:
                    _read_exact(fh, 3 << ((fpacked & 7) + 1), path, f"frame {frames}'s colour table")
                min_code_size = _read_exact(fh, 1, path, f"frame {frames}")[0]  # LZW minimum code size
                if transparent_index is not None:
                    transparent[frames - 1] = GifTransparency(transparent_index, left, top, w, h,
                                                              bool(fpacked & 0x40), min_code_size, fh.tell())
                    transparent_index = None
                _skip_sub_blocks(fh, file_size, path, f"frame {frames}'s image data")
            # Any other byte is stray padding; Pillow and browsers skip it too.
    if frames == 0:
        raise MediaError("empty", f"{path}: the GIF holds no frame")
    return GifLayout(frames, width, height, delay_cs / 100 if frames > 1 else None, transparent)


def _decode_gif(path: Path, n_frames: int, limits: MediaLimits) -> DecodedFrames:
    layout = scan_gif(path, limits)
    wanted = evenly_spaced_indices(layout.frames, n_frames)
    _check_compositing(path, layout.width, layout.height, wanted, limits, "GIF")
    wanted_set, cap = set(wanted), retained_frame_pixels(len(wanted), limits)
    frames, indices = [], []
    # Canvas pixels some frame has drawn. Pillow fills a pixel no frame has drawn yet, or one that
    # disposal 2 cleared, with a palette colour (index 0, the background entry or the transparent
    # index's colour, as its canvas is opaque once it is RGB); browsers show it transparent, so it
    # is composited onto white too. Per pixel: a frame's transparent pixels draw nothing.
    painted = np.zeros((layout.height, layout.width), bool)
    with _open_pillow(path, "GIF", limits) as im, open(path, "rb") as fh:
        # Compositing is sequential (each frame is drawn over the previous canvas), so every
        # frame up to the last sample is decoded, but only the sampled ones are converted.
        for index in range(wanted[-1] + 1):
            # Pillow updates disposal_method only for a frame whose disposal bits are non-zero, so
            # a frame with disposal 0 ("leave in place") after a disposal 2 or 3 frame would be
            # cleared or restored like it, and vanish from the next frame: 0 unless this frame says.
            # (Frame 0 was read when the file was opened: seeking to it reads nothing again.)
            if index:
                im.disposal_method = 0
                im.seek(index)
            extent, disposal = im.dispose_extent, im.disposal_method  # as Pillow composites them
            before = painted.copy() if disposal == 3 and extent else None
            _mark_drawn(painted, extent, layout.transparent.get(index), fh)
            if index in wanted_set:
                frames.append(_pad_to(to_rgb(im), layout.width, layout.height))
                if not painted.all():
                    frames[-1] = np.where(painted[:, :, None], frames[-1], np.uint8(TRANSPARENT_BACKGROUND))
                frames[-1] = fit_pixels(frames[-1], cap)
                indices.append(index)
            if disposal == 2:  # restore to background: undrawn again for the next frame
                _mark(painted, extent, False)
            elif before is not None:  # restore to previous
                painted = before
    return DecodedFrames("gif", frames, indices, layout.frames, layout.width, layout.height, layout.duration_s)


def _mark(painted: np.ndarray, extent: tuple[int, int, int, int] | None, drawn: bool) -> None:
    """Mark a frame's rectangle (x0, y0, x1, y1) as drawn or not."""
    if extent is not None:
        x0, y0, x1, y1 = extent
        painted[y0:y1, x0:x1] = drawn


def _mark_drawn(painted: np.ndarray, extent: tuple[int, int, int, int] | None,
                transparency: GifTransparency | None, fh: BinaryIO) -> None:
    """Mark the pixels a frame draws: its whole rectangle, or, with a transparent index, the pixels
    that are not that index (its transparent pixels leave the canvas below as it was).

    A frame over a rectangle already drawn everywhere (most frames of most GIFs: nothing disposed to
    the background below) changes no mark, so its pixels are not decoded a second time: that second
    decode made decoding the shared GIFs about 40% slower."""
    if transparency is not None:
        t = transparency
        if painted[t.top:t.top + t.height, t.left:t.left + t.width].all():
            return
    drawn = _drawn_pixels(transparency, fh) if transparency is not None else None
    if drawn is None:
        _mark(painted, extent, True)
        return
    t = transparency
    painted[t.top:t.top + t.height, t.left:t.left + t.width] |= drawn


def _drawn_pixels(t: GifTransparency, fh: BinaryIO) -> np.ndarray | None:
    """The frame's pixels that are not its transparent index, decoded again from its LZW data with
    Pillow's GIF decoder (Pillow composites them away, so its canvas cannot tell them from the pixels
    below); None when the data does not decode (Pillow then reports the frame broken anyway)."""
    if t.width == 0 or t.height == 0:
        return np.zeros((t.height, t.width), bool)
    fh.seek(t.data_offset)
    data = bytearray()
    while size := fh.read(1):  # the chain of sub-blocks, length bytes included: the decoder reads them
        data += size
        if size[0] == 0:
            break
        data += fh.read(size[0])
    frame = Image.new("P", (t.width, t.height), t.index)  # pixels the data leaves out stay transparent
    try:
        frame.frombytes(bytes(data), "gif", t.min_code_size, t.interlaced, -1)
    except (ValueError, OSError):
        return None
    return np.asarray(frame) != t.index


# -- WebP ------------------------------------------------------------------------------------

@dataclass
class WebpLayout:
    frames: int
    width: int
    height: int
    duration_s: float | None


def scan_webp(path: Path, data: bytes | None = None) -> WebpLayout:
    """Canvas size, frame count and duration from the RIFF chunks, before libwebp allocates a canvas."""
    if data is None:
        data = path.read_bytes()
    riff_size = struct.unpack("<I", data[4:8])[0]
    if riff_size + 8 > len(data):
        raise _truncated(path, f"the WebP header announces {riff_size + 8:,} bytes, the file has {len(data):,}")
    pos, end = 12, riff_size + 8
    view = memoryview(data)
    width = height = 0
    frames, duration_ms, has_image = 0, 0, False
    while pos + 8 <= end:
        fourcc, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = view[pos + 8:pos + 8 + size]
        if len(body) < size:
            raise _truncated(path, f"the WebP chunk {fourcc!r} runs past the end of the file")
        if fourcc == b"VP8X" and size >= 10:
            width = 1 + int.from_bytes(body[4:7], "little")
            height = 1 + int.from_bytes(body[7:10], "little")
        elif fourcc == b"ANMF" and size >= 16:
            frames += 1
            duration_ms += int.from_bytes(body[12:15], "little")
        elif fourcc == b"VP8 " and size >= 10:
            has_image = True
            if not width:
                width, height = (v & 0x3FFF for v in struct.unpack("<HH", bytes(body[6:10])))
        elif fourcc == b"VP8L" and size >= 5:
            has_image = True
            if not width:
                bits = int.from_bytes(body[1:5], "little")
                width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        pos += 8 + size + (size & 1)
    if frames == 0 and has_image:
        frames = 1
    return WebpLayout(frames, width, height, duration_ms / 1000 if duration_ms > 0 else None)


def _decode_webp(path: Path, n_frames: int, limits: MediaLimits) -> DecodedFrames:
    layout = scan_webp(path)
    if layout.frames == 0:
        raise _truncated(path, "the WebP holds no image chunk")
    _check_pixels(path, layout.width, layout.height, limits, "canvas")
    _check_frames(path, layout.frames, limits)
    _check_compositing(path, layout.width, layout.height, evenly_spaced_indices(layout.frames, n_frames), limits,
                       "WebP")
    with _open_pillow(path, "WEBP", limits) as im:
        total = int(getattr(im, "n_frames", 1))
        _check_frames(path, total, limits)
        if total == 1:
            return _decode_still(path, im, limits)
        wanted = evenly_spaced_indices(total, n_frames)
        _check_compositing(path, im.width, im.height, wanted, limits, "WebP")  # libwebp's own count
        frames, cap = [], retained_frame_pixels(len(wanted), limits)
        for index in wanted:  # libwebp composites; seeking forward decodes only up to the target
            im.seek(index)
            frames.append(fit_pixels(to_rgb(im), cap))
        width, height = im.size
    return DecodedFrames("webp", frames, wanted, total, width, height, layout.duration_s)


# -- still images ----------------------------------------------------------------------------

def _open_pillow(path: Path, fmt: str, limits: MediaLimits) -> Image.Image:
    """Image.open restricted to the sniffed format; Pillow's own bomb check becomes giflens's message.

    Why: Pillow refuses a header over twice `Image.MAX_IMAGE_PIXELS` (178,956,970 pixels) in
    Image.open, before the callers' `_check_pixels` sees the size, so a 60000x60000 PNG said "exceeds
    limit of 178956970 pixels" while an 8000x8000 one named GIFLENS_MAX_PIXELS. The size is read again
    from the header alone (`_header_size`) and checked against our limit. Pillow's global is left as
    it is: raising it here would loosen every other Image.open in the process (other threads too)."""
    with warnings.catch_warnings():
        # Our limit is checked from the header before any decode; Pillow's warning level is redundant.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path, formats=[fmt])
        except Image.DecompressionBombError as exc:
            size = _header_size(path, fmt)
            if size is not None:
                _check_pixels(path, *size, limits, "image")
            # within GIFLENS_MAX_PIXELS (set above Pillow's ceiling), or a header only Image.open reads
            raise MediaError("bomb", f"{path}: refused as a decompression bomb: {exc} (Pillow's own ceiling, "
                                     f"which applies whatever GIFLENS_MAX_PIXELS says)") from exc


def _header_size(path: Path, fmt: str) -> tuple[int, int] | None:
    """The (width, height) the file's header declares, read by the format's Pillow plugin without
    Image.open's bomb check and without decoding a pixel; None when the plugin cannot read it."""
    Image.init()
    try:
        factory, _ = Image.OPEN[fmt]
        with open(path, "rb") as fh, factory(fh, str(path)) as im:
            return im.size
    except Exception:  # noqa: BLE001 - only a better message is at stake; the caller refuses the file anyway
        return None


def _decode_still(path: Path, im: Image.Image, limits: MediaLimits) -> DecodedFrames:
    _check_pixels(path, im.width, im.height, limits, "image")
    upright = ImageOps.exif_transpose(im)  # phone photos are stored sideways with an orientation tag
    frame = to_rgb(upright)
    height, width = frame.shape[:2]
    return DecodedFrames("image", [frame], [0], 1, width, height, None)


def _decode_image(path: Path, fmt: str, n_frames: int, limits: MediaLimits) -> DecodedFrames:
    with _open_pillow(path, fmt, limits) as im:
        if fmt == "PNG" and (getattr(im, "is_animated", False) or getattr(im, "default_image", False)):
            return _decode_apng(path, im, n_frames, limits)
        return _decode_still(path, im, limits)


# -- animated PNG ----------------------------------------------------------------------------

@dataclass
class ApngLayout:
    frames: int  # animation frames (fcTL chunks), the default image aside when it is none of them
    duration_s: float | None


def scan_apng(path: Path) -> ApngLayout:
    """Frame count and duration from the chunk structure (acTL, fcTL), without decoding pixels.

    Why a walk of our own: Pillow reads a frame's control chunk only when it seeks to it, and stops
    at a cut without a word, so the frames after the last sample would go unchecked. A file that
    ends inside a chunk, or holds fewer frames than its acTL chunk announces, is truncated."""
    announced, frames, delay = 0, 0, 0.0
    with open(path, "rb") as fh:
        file_size = os.fstat(fh.fileno()).st_size
        fh.seek(8)
        while True:
            head = fh.read(8)
            if not head:
                break  # no IEND: harmless when every frame is there (checked below)
            if len(head) < 8:
                raise _truncated(path, "the PNG ends inside a chunk header")
            size, kind = struct.unpack(">I4s", head)
            if kind == b"IEND":
                break
            if kind in (b"acTL", b"fcTL"):
                body = fh.read(size)
                if len(body) < size or size < (8 if kind == b"acTL" else 26):
                    raise _truncated(path, f"the PNG's {kind.decode()} chunk is cut short")
                if kind == b"acTL":
                    announced = struct.unpack(">I", body[:4])[0]
                else:
                    frames += 1
                    numerator, denominator = struct.unpack(">HH", body[20:24])
                    delay += numerator / (denominator or 100)  # a zero denominator means 1/100 s
                fh.seek(4, os.SEEK_CUR)  # the CRC
            elif fh.seek(size + 4, os.SEEK_CUR) > file_size:
                raise _truncated(path, f"the PNG ends inside its {kind.decode('latin-1')} chunk")
    if frames < announced:
        raise _truncated(path, f"the APNG announces {announced:,} frames but holds {frames:,}")
    return ApngLayout(frames, delay if frames > 1 and delay > 0 else None)


STILL = "still"  # `sampling_key` of a file that is one picture whatever the sampling


def sampling_key(path: Path) -> str | None:
    """What a file's frames cache key names besides the sampling settings: "apng" for a PNG with an
    animation control chunk (acTL) before its image data (the files `decode_media` decodes through
    FFmpeg, `_decode_apng`), "video" for a video container (MP4 / QuickTime, Matroska / WebM:
    `_decode_video`), `STILL` for a JPEG or another PNG (always decoded as one picture, `_decode_still`,
    so --frames changes nothing in it), else None (a GIF or WebP, animated or not: only a scan tells).
    One open, reading the first bytes and, of a PNG, its chunk headers up to the first IDAT: the ingest
    pipeline asks it of every file."""
    with open(path, "rb") as fh:
        form = sniff_format(fh.read(64))
        if form in ("mp4", "matroska"):
            return "video"
        if form == "jpeg":
            return STILL
        if form != "png":
            return None
        fh.seek(8)
        while len(head := fh.read(8)) == 8:
            size, kind = struct.unpack(">I4s", head)
            if kind == b"acTL":
                return "apng"
            if kind in (b"IDAT", b"IEND"):
                return STILL
            fh.seek(size + 4, os.SEEK_CUR)
    return None  # a PNG cut short before its image data: refused when decoded


def is_one_frame(path: Path, limits: MediaLimits) -> bool:
    """Whether a GIF or WebP holds a single frame, from its block structure alone (`scan_gif`, `scan_webp`,
    the scans its decoding starts with: no pixel decoded). Why: `sampling_key` cannot tell such a file from
    an animation by its first bytes, and a caller that treats stills apart (a raw-dataset import's second
    look for a face) must pick the file's cache namespace before decoding it. False for every other file
    and for one the scan refuses (its decoding then says why). A GIF's scan stops at its second frame
    (`stop_after`): an animation is known as one there, however long it is."""
    with open(path, "rb") as fh:
        form = sniff_format(fh.read(64))
    try:
        if form == "gif":
            return scan_gif(path, limits, stop_after=1).frames == 1
        if form == "webp":
            return scan_webp(path).frames == 1
    except (MediaError, EOFError, ValueError, IndexError, struct.error):
        return False
    return False


def animation_decoder(path: Path) -> str | None:
    """"apng" or "video" (`sampling_key`): the decoder whose changes would make a file's cached frames
    stale, so its frames cache key names it; None for every other file."""
    key = sampling_key(path)
    return None if key == STILL else key


def is_apng(path: Path) -> bool:
    """Whether a file is an animated PNG (`animation_decoder`)."""
    return animation_decoder(path) == "apng"


def is_video(path: Path) -> bool:
    """Whether a file's content is a video container (`animation_decoder`)."""
    return animation_decoder(path) == "video"


def _decode_apng(path: Path, im: Image.Image, n_frames: int, limits: MediaLimits) -> DecodedFrames:
    """An animated PNG, sampled like an animated WebP or GIF, its frames composited by FFmpeg.

    Why not Pillow's frames: Pillow blends a semi-transparent frame over the canvas with the wrong
    weights (blend op OVER) and restores the wrong canvas after an OVER frame disposed to PREVIOUS;
    FFmpeg's decoder follows the APNG spec. A default image that is no animation frame (what a viewer
    without APNG support shows) is left out, as browsers and FFmpeg leave it out; one animation frame
    besides it is a still, as a single-frame APNG is."""
    _check_pixels(path, im.width, im.height, limits, "canvas")
    layout = scan_apng(path)
    total = layout.frames
    _check_frames(path, total, limits)
    separate_default = bool(getattr(im, "default_image", False))
    if total == 0 or (total == 1 and not separate_default):  # the default image is the one frame
        return _decode_still(path, im, limits)
    wanted = evenly_spaced_indices(total, n_frames)
    _check_compositing(path, im.width, im.height, wanted, limits, "APNG")
    frames = _composite_apng(path, wanted, total, limits)
    if total == 1:
        return DecodedFrames("image", frames, [0], 1, im.width, im.height, None)
    return DecodedFrames("apng", frames, wanted, total, im.width, im.height, layout.duration_s)


def _composite_apng(path: Path, wanted: list[int], total: int, limits: MediaLimits) -> list[np.ndarray]:
    """The wanted animation frames as FFmpeg composites them (decoding up to the last one), RGB with
    transparent areas on white (`to_rgb`). Fewer frames than the chunks announce is a truncated file."""
    import av

    wanted_set, frames, decoded = set(wanted), [], 0
    cap = retained_frame_pixels(len(wanted), limits)
    with av.open(str(path), format="apng") as container:
        for index, frame in enumerate(container.decode(container.streams.video[0])):
            decoded = index + 1
            if index in wanted_set:
                _check_pixels(path, frame.width, frame.height, limits, "canvas")
                frames.append(fit_pixels(_on_white(frame), cap))
            if index >= wanted[-1]:
                break
    if len(frames) < len(wanted):
        raise _truncated(path, f"the APNG announces {total:,} frames but only {decoded:,} decode")
    return frames


# -- video -----------------------------------------------------------------------------------

@dataclass
class _VideoProbe:
    width: int  # as displayed: non-square pixels stretched (`display_size`), before any rotation
    height: int
    total: int  # frames shown, counted from the packets (`_scan_packets`), whatever the container
    duration: float | None
    rate: Fraction | None
    time_base: Fraction | None
    start: int  # the first shown frame's timestamp: frame i is at start + i / rate when constant_rate
    constant_rate: bool = False  # every shown frame's timestamp on that grid (`grid_rate`)


# How far (in frames) a timestamp may sit off the constant-rate grid: time-base rounding (a WebM's
# millisecond ticks are 0.015 of a 30 fps frame) and nothing more.
GRID_SLACK = Fraction(1, 10)


@dataclass
class _PacketScan:
    """What demuxing a video stream without decoding it tells (`_scan_packets`)."""

    shown: int  # packets the decoder turns into shown frames
    stored: int  # packets with data, the hidden lead-in of a trimmed MP4 (edit list) included
    pts: list[int]  # the shown packets' timestamps in display order (B-frames are stored out of it)
    end: int | None  # when the last shown frame stops showing, in time-base units
    others_s: float | None = None  # seconds from 0 the other streams' packets (sound...) reach; None without
    # any, or when they were not read (`_others_matter`)


def _scan_packets(container, stream, path: Path, limits: MediaLimits) -> _PacketScan:
    """Count a video stream's shown frames and collect their timestamps from the packets alone.

    Why: the header's count is missing (WebM, MKV, fragmented MP4) or counts frames nobody sees (an MP4
    trimmed by stream copy keeps the frames from the keyframe before the cut and an edit list hides
    them: 17,750 stored for 17,670 shown), and only the timestamps tell a constant rate, which seeking
    needs, from a variable one. Demuxing reads the packets without decoding them (18,000 packets of a
    10-minute 640x360 clip in 0.1-0.2 s, against 4-12 s to decode them). A packet the demuxer flags
    discard (before the edit list's start) is decoded for its successors but never shown. Counting
    stops at twice `limits.max_frames`, of shown and of stored packets alike (`_check_stored`): a file
    a little over the limit is refused with its count. Where the other streams' packets reach tells a
    cut file from a video that ends before its sound (`_cut_short`); they are read only when that can
    matter (`_others_matter`), since handing every sound packet to Python makes a long file's scan
    several times slower (a 1-hour MKV with 50 sound packets a second: 0.4 s for the video alone, 1.2 s
    and more with the sound)."""
    shown = stored = 0
    pts: list[int] = []
    end = None
    others = _others_matter(container, stream)
    reach: dict[int, int] = {}  # the latest start (pts) of each other stream, by stream index
    for packet in container.demux() if others else container.demux(stream):
        if not packet.size:  # the end-of-stream marker
            continue
        if packet.stream_index != stream.index:
            _note_start(reach, packet.stream_index, packet.pts)
            continue
        stored += 1
        shown += not packet.is_discard
        if shown > 2 * limits.max_frames:  # refused whatever the rest holds; counted exactly up to here
            _check_frames(path, shown, limits, at_least=True)
        if stored > 2 * limits.max_frames:  # hidden frames are decoded too (`_check_stored`)
            _check_stored(path, stored, stored - shown, limits, at_least=True)
        if packet.is_discard:
            continue
        if packet.pts is not None:
            pts.append(packet.pts)
            stop = packet.pts + (packet.duration or 0)
            end = stop if end is None else max(end, stop)
    pts.sort()
    return _PacketScan(shown, stored, pts, end, _latest_start(container, reach))


def _others_matter(container, stream) -> bool:
    """Whether `_cut_short` will weigh where the other streams reach: only a file that states neither the
    video stream's frame count (an MP4's sample table) nor its duration, but the container's duration
    (WebM, MKV), which covers the sound too.

    Why ask before demuxing: reading the other streams' packets is the bulk of a long file's scan, and an
    MP4's own count and duration tell a cut file without them."""
    states_own = bool(stream.frames) or bool(stream.duration and stream.time_base)
    return not states_own and bool(container.duration)


def _note_start(reach: dict[int, int], index: int, pts: int | None) -> None:
    """Keep the later of the stream's latest start so far and this packet's, as an integer pts.

    Why integers: a Fraction per packet (pts x time base) made the scan of a long file's sound several
    times slower than the demuxing itself; seconds are worked out once per stream (`_latest_start`)."""
    if pts is not None and (index not in reach or pts > reach[index]):
        reach[index] = pts


def _latest_start(container, reach: dict[int, int]) -> float | None:
    """The latest start, in seconds from 0, of the other streams' packets (None when none has one).

    Why the start and not the end: a packet in the file shows that the file reaches its time, but a
    subtitle cue can last long past the bytes that follow it."""
    starts = [float(pts * container.streams[index].time_base)
              for index, pts in reach.items() if container.streams[index].time_base]
    return max(starts, default=None)


def _check_stored(path: Path, stored: int, hidden: int, limits: MediaLimits, at_least: bool = False) -> None:
    """Refuse a video whose stored frames, the hidden lead-in of an edit list included, are over the limit.

    Why: the decoder decodes every stored frame, shown or not (a hidden frame is the reference of the
    next), so the limit on decoding work counts them all. A stream-copy trim of a one-keyframe clip kept
    29,990 hidden frames before its 10 shown ones and passed as a 10-frame clip, then decoded 30,000."""
    if stored > limits.max_frames:
        count = f"more than {limits.max_frames:,}" if at_least else f"{stored:,}"
        hidden_count = f"at least {hidden:,}" if at_least else f"{hidden:,}"
        raise MediaError("too_many_frames", f"{path}: {count} frames stored ({hidden_count} of them hidden lead-in frames "
                                            f"that an edit list skips but the decoder decodes) is over the "
                                            f"{limits.max_frames:,}-frame limit")


def grid_rate(pts: list[int], time_base: Fraction, candidates: list[Fraction | None]) -> Fraction | None:
    """The first candidate rate (frames per second) at which sorted timestamps `pts` (in `time_base`
    units) lie on one grid, pts[0] + i / rate for the i-th, each within GRID_SLACK of a frame; None when
    none fits (variable frame rate) or there are fewer than two timestamps.

    Why: seeking finds frame i by its timestamp, which names the frame only on such a grid. A
    variable-frame-rate clip (phones in low light, screen recorders) is off it: 3,000 frames at 33 ms
    then 3,000 at 66 ms gave seeks that stored frame 3,328 as frame 2,437. Every timestamp is checked,
    so a gap or a change of rate anywhere in the clip is found. The rate the timestamps themselves
    span ((n - 1) frames over last - first) is tried after the container's nominal rates, which can
    be rounded or wrong."""
    if len(pts) < 2 or not time_base or pts[-1] == pts[0]:
        return None
    offsets = (np.asarray(pts, np.int64) - pts[0]).astype(np.float64)
    spanned = Fraction(len(pts) - 1) / ((pts[-1] - pts[0]) * time_base)
    steps = np.arange(len(pts), dtype=np.float64)
    for rate in (*candidates, spanned.limit_denominator(1001), spanned):
        if rate is None or rate <= 0:
            continue
        if np.abs(offsets * float(rate * time_base) - steps).max() <= float(GRID_SLACK):
            return Fraction(rate)
    return None


def sample_aspect(stream) -> Fraction | None:
    """The width:height of a video's pixels when they are not square (the container's value, else the
    codec's, as FFmpeg's own guess goes), None for square or unknown pixels.

    Why: DVD, HDV and many broadcast clips store a 16:9 picture at 4:3 or narrower and tell players to
    stretch it; decoded as stored, faces are squeezed (at 2:1 MTCNN found none)."""
    for aspect in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if aspect is not None and aspect > 0:
            return None if aspect == 1 else Fraction(aspect)
    return None


def display_size(width: int, height: int, aspect: Fraction | None) -> tuple[int, int]:
    """The (width, height) a player shows stored pixels of this aspect at. One side is stretched,
    never shrunk, so no stored pixel is lost: the width for wide pixels, the height for tall ones."""
    if aspect is None:
        return width, height
    if aspect > 1:
        return max(1, round(width * aspect)), height
    return width, max(1, round(height / aspect))


def _alpha_decoder(stream):
    """A libvpx decoding context for a VP8/VP9 stream with an alpha channel (WebM alpha_mode=1), None
    for any other stream and when this PyAV build has no libvpx (its frames then show the colour
    stored under transparent pixels, as before)."""
    import av

    name = ALPHA_DECODERS.get(stream.codec_context.name)
    if name is None or stream.metadata.get("alpha_mode") != "1":
        return None
    try:
        return av.CodecContext.create(name, "r")
    except (ValueError, av.error.FFmpegError):  # UnknownCodecError is a ValueError
        return None


class _VideoReader:
    """A video's first stream and its decoder: FFmpeg's choice, or libvpx for VP8/VP9 with alpha."""

    def __init__(self, path: Path) -> None:
        import av

        self.container = av.open(str(path))
        try:
            self.stream = self.container.streams.video[0]
            self.stream.thread_type = "AUTO"
            self.aspect = sample_aspect(self.stream)
            self.alpha = _alpha_decoder(self.stream)
        except BaseException:
            self.container.close()
            raise

    def __enter__(self) -> "_VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()

    def frames(self):
        """Decoded frames from the current position to the end of the stream."""
        if self.alpha is None:
            return self.container.decode(self.stream)
        return (frame for packet in self.container.demux(self.stream) for frame in self.alpha.decode(packet))

    def seek(self, pts: int) -> None:
        """To the keyframe at or before pts; the container flushes its own decoder, libvpx's is ours."""
        self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)
        if self.alpha is not None:
            self.alpha.flush_buffers()


def _cut_short(declared: int, stored: int, duration: float | None, shown_s: float | None,
               rate: Fraction | None, others_s: float | None = None) -> str | None:
    """Why a file holds less than its header states, None when it holds it all.

    Why: the count comes from the packets, so a file cut off after its header (a broken download) would
    pass as a short clip. An MP4's sample table states the count: the packets must all be there, a frame
    or two and 1% aside. WebM and MKV state only the duration: the frames must reach it, short by at
    most a quarter (as the estimated count from duration x rate once allowed) and two frames. That
    duration is the whole file's, sound included, so where the other streams' packets reach
    (`others_s`) counts too: a screen recording whose sound runs 40% past its last frame holds all
    its frames, while a cut file's streams all stop short, together, where the bytes do."""
    if declared:
        if declared - stored > max(2, declared // 100):
            return f"the header announces {declared:,} frames but only {stored:,} are in the file"
        return None
    if not duration:
        return None
    if not stored:
        return f"the header states {duration:.2f} s but no frame is in the file"
    reached = max((s for s in (shown_s, others_s) if s is not None), default=None)
    if reached is not None and reached < duration - max(2 / float(rate) if rate else 0.0, duration / 4):
        return f"the header states {duration:.2f} s but the file's streams stop at {reached:.2f} s"
    return None


def _probe_video(path: Path, limits: MediaLimits) -> _VideoProbe:
    """Frame size from the codec; frame count, start and rate from the packets (`_scan_packets`), the
    same way for every container; a file cut off short of what its header states is truncated."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise MediaError("unsupported", f"{path}: the container has no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:  # FFmpeg has no decoder for the track's codec id
            raise MediaError("unsupported", f"{path}: unsupported codec: the video stream's codec is unknown to "
                                            "FFmpeg, so it cannot be decoded")
        width, height = display_size(stream.codec_context.width, stream.codec_context.height, sample_aspect(stream))
        _check_pixels(path, width, height, limits)
        time_base = stream.time_base
        # The stream's duration runs from its first frame; the container's from time 0 (a clip whose
        # timestamps start at 30 s states 32 s for 2 s of frames), so its end is compared as is.
        from_zero = not (stream.duration and time_base)
        if not from_zero:
            duration = float(stream.duration * time_base)
        else:
            duration = container.duration / 1_000_000 if container.duration else None
        scan = _scan_packets(container, stream, path, limits)
        _check_frames(path, scan.shown, limits)
        _check_stored(path, scan.stored, scan.stored - scan.shown, limits)
        declared = int(stream.frames or 0)  # an MP4's sample table; WebM, MKV and fragmented MP4 have none
        start = scan.pts[0] if scan.pts else (stream.start_time or 0)
        rate = stream.average_rate or stream.guessed_rate or None
        grid = None
        if len(scan.pts) == scan.shown:
            grid = grid_rate(scan.pts, time_base, [stream.guessed_rate, stream.average_rate])
        if grid is not None:  # the frame spacing itself, not frames / duration (a frame's worth of rounding)
            rate = grid
    shown_s = None
    if scan.end is not None and time_base:
        shown_s = float((scan.end - (0 if from_zero else start)) * time_base)
    # The container's duration covers every stream, the video stream's own the video alone: the other
    # streams are read (scan.others_s, else None) only when the former is the one compared (`_others_matter`).
    cut = _cut_short(declared, scan.stored, duration, shown_s, rate, scan.others_s)
    if cut is not None:
        raise _truncated(path, cut)
    return _VideoProbe(width, height, scan.shown, _played_seconds(duration, shown_s), rate, time_base, start,
                       grid is not None)


def _played_seconds(declared_s: float | None, shown_s: float | None) -> float | None:
    """How long the clip plays, as stored for it: the header's length, or the frames' own where the header
    states none (a WebM or MKV written to a pipe or live) or less than they show (a header edited or
    written before the last fragments). A header longer than the frames reach was already judged by
    `_cut_short`: sound running on past the video, kept as stated."""
    if shown_s is None:
        return declared_s
    return shown_s if declared_s is None or shown_s > declared_s else declared_s


def _on_white(frame) -> np.ndarray:
    """RGB pixels of an FFmpeg frame with alpha (an APNG frame, a VP8/VP9 WebM's), composited onto white
    as every transparent frame is (`to_rgb`)."""
    return to_rgb(Image.fromarray(frame.to_ndarray(format="rgba"), "RGBA"))


def _upright(frame, aspect: Fraction | None = None, max_pixels: int | None = None) -> np.ndarray:
    """RGB pixels of a video frame as a player shows them: alpha composited onto white (`to_rgb`),
    non-square pixels stretched to the display aspect (`display_size`), then turned by the container's
    display matrix (phone videos); shrunk to max_pixels last (`fit_pixels`)."""
    if any(component.is_alpha for component in frame.format.components):
        pixels = _on_white(frame)
    else:
        pixels = frame.to_ndarray(format="rgb24")
    size = display_size(frame.width, frame.height, aspect)
    if size != (frame.width, frame.height):
        pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))
    turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
    if turns:
        pixels = np.ascontiguousarray(np.rot90(pixels, turns))
    return pixels if max_pixels is None else fit_pixels(pixels, max_pixels)


@dataclass
class _Sequential:
    """What a decode from the start returned: the wanted frames, their indices and how many frames were
    decoded (less than wanted[-1] + 1 when the stream ended early)."""

    frames: list[np.ndarray]
    indices: list[int]
    decoded: int


class _OffGrid(Exception):
    """A decoded frame's timestamp is off the probe's constant-rate grid (`_decode_video_sequentially`)."""


def _grid_index(frame, probe: _VideoProbe) -> int:
    """The frame's number on the probe's constant-rate grid (the one seeking uses); _OffGrid without one."""
    if frame.pts is None or not probe.rate or not probe.time_base:
        raise _OffGrid
    position = (frame.pts - probe.start) * probe.time_base * probe.rate
    index = round(position)
    if abs(position - index) > GRID_SLACK:
        raise _OffGrid
    return index


def _decode_video_sequentially(path: Path, wanted: list[int], limits: MediaLimits,
                               probe: _VideoProbe | None = None) -> _Sequential:
    """Decode from the start up to the last wanted frame; converts only the wanted ones.

    Frames are numbered as they come, or, given a constant-rate `probe`, by their timestamps as
    seeking numbers them (`_grid_index`; _OffGrid when one is off the grid). Why: a clip cut mid-GOP
    starts with frames whose references are gone, which the decoder drops (12 of a 300-frame MKV);
    counted, every later frame's number was 12 below the one a seek gives it. A wanted frame the
    decoder drops is replaced by the next one shown; `decoded` is then the last number reached + 1."""
    last, cap = wanted[-1], retained_frame_pixels(len(wanted), limits)
    frames, indices, decoded, pending = [], [], 0, 0
    with _VideoReader(path) as reader:
        for count, frame in enumerate(reader.frames()):
            index = count if probe is None else _grid_index(frame, probe)
            decoded = max(decoded, index + 1)
            if pending < len(wanted) and index >= wanted[pending] and (not indices or index > indices[-1]):
                _check_pixels(path, *display_size(frame.width, frame.height, reader.aspect), limits)
                frames.append(_upright(frame, reader.aspect, cap))
                indices.append(index)
            while pending < len(wanted) and wanted[pending] <= index:
                pending += 1
            if index >= last:
                break
    return _Sequential(frames, indices, decoded)


def _decode_video_by_seeking(path: Path, wanted: list[int], probe: _VideoProbe,
                             limits: MediaLimits) -> list[np.ndarray] | None:
    """Seek to the keyframe before each wanted frame and decode forward to it.

    Frame i is the one whose timestamp is i / rate after the stream start, which holds only for a
    constant-rate stream (`grid_rate`; the caller seeks no other). Returns
    None whenever timestamps cannot be trusted (missing pts, one off the i / rate grid, a seek that lands
    after its target, the stream ending early), and when keyframes are so sparse that
    a seek decodes more frames than decoding straight on from the previous sample
    would (one keyframe for the whole clip made every seek decode from the start);
    the caller then decodes sequentially, each frame once.
    """
    if not probe.rate or not probe.time_base:
        return None
    frames, previous, cap = [], -1, retained_frame_pixels(len(wanted), limits)
    with _VideoReader(path) as reader:
        for target in wanted:
            target_pts = probe.start + int(Fraction(target) / (probe.rate * probe.time_base))
            reader.seek(target_pts)
            found = None
            for position, frame in enumerate(reader.frames()):
                if position > target - previous:
                    return None
                try:
                    index = _grid_index(frame, probe)
                except _OffGrid:  # no timestamp, or one off the constant-rate grid: frame numbers would be guesses
                    return None
                if index >= target:
                    if position == 0 and index > target:
                        return None  # landed after the target: the seek is not trustworthy here
                    found = frame
                    break
            if found is None:
                return None
            _check_pixels(path, *display_size(found.width, found.height, reader.aspect), limits)
            frames.append(_upright(found, reader.aspect, cap))
            previous = target
    return frames


def _decode_video(path: Path, n_frames: int, limits: MediaLimits) -> DecodedFrames:
    probe = _probe_video(path, limits)
    total = probe.total
    if total <= 0:
        raise MediaError("empty", f"{path}: the video stream holds no frames")
    wanted = evenly_spaced_indices(total, n_frames)
    frames: list[np.ndarray] | None = None
    # Seeking finds frames by timestamp, which names the frame only on a constant-rate grid (whatever
    # the container); a variable-rate clip is decoded in one pass, which numbers the frames as they come.
    if (probe.constant_rate and len(wanted) > 1
            and min(b - a for a, b in zip(wanted, wanted[1:])) >= SEEK_MIN_GAP):
        frames = _decode_video_by_seeking(path, wanted, probe, limits)
        indices = wanted
    run = None
    if frames is None and probe.constant_rate:  # numbered as seeking numbers them
        try:
            run = _decode_video_sequentially(path, wanted, limits, probe)
        except _OffGrid:
            run = None
        if run is not None and run.decoded < wanted[-1] + 1:
            run = None  # the decoder stopped short of the grid's end: counted as below instead
    if frames is None and run is not None:
        frames, indices = run.frames, run.indices
    elif frames is None:
        run = _decode_video_sequentially(path, wanted, limits)
        frames, indices, decoded = run.frames, run.indices, run.decoded
        if decoded == 0:
            raise _truncated(path, f"the file holds {total:,} frames but none decodes")
        if decoded < wanted[-1] + 1:
            # The decoder showed fewer frames than the packets hold and ran out of packets doing so:
            # `_cut_short` found them all in the file, so the missing ones are frames the decoder will
            # not show (leading frames of a clip cut mid-GOP, whose references are gone), not a cut file.
            total = decoded
            wanted = evenly_spaced_indices(total, n_frames)
            rerun = _decode_video_sequentially(path, wanted, limits)
            frames, indices = rerun.frames, rerun.indices
    width, height = _shown_size(frames[0], probe)
    return DecodedFrames("video", frames, indices, total, width, height, probe.duration)


def _shown_size(frame: np.ndarray, probe: _VideoProbe) -> tuple[int, int]:
    """The video's (width, height) as players show it: the display size, turned a quarter when the
    frames are (a rotation matrix), whatever `fit_pixels` shrank the kept frames to."""
    height, width = frame.shape[:2]
    if width != height and (width > height) != (probe.width > probe.height):
        return probe.height, probe.width
    return probe.width, probe.height


# -- entry point -----------------------------------------------------------------------------

def _ffmpeg_refusal(path: Path, fmt: str, exc: Exception) -> MediaError | None:
    """The MediaError for one of PyAV's errors (av.error.FFmpegError and its subclasses, which derive
    from Exception only, not OSError or ValueError), None for any other exception.

    Why: FFmpeg raises for anything from a missing decoder to a corrupt packet, and each is one bad
    file, never a reason to stop the batch."""
    try:
        import av
    except ImportError:
        return None
    if not isinstance(exc, av.error.FFmpegError):
        return None
    if isinstance(exc, (av.error.DecoderNotFoundError, av.error.PatchWelcomeError)):
        return MediaError("unsupported", f"{path}: unsupported codec or feature in the {fmt} data: {exc}")
    return _truncated(path, f"cannot decode the {fmt} data: FFmpeg: {exc}")


def _read_head(path: Path, limits: MediaLimits) -> bytes:
    """Stat before reading: the size limit, and no blocking on FIFOs or devices."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise MediaError("unreadable", f"{path}: cannot read: {kind}")
        if info.st_size > limits.max_file_bytes:
            raise MediaError("too_large", f"{path}: {info.st_size:,} bytes is over the "
                                          f"{limits.max_file_bytes:,}-byte limit")
        if info.st_size == 0:
            raise MediaError("empty", f"{path}: the file is empty")
        with open(path, "rb") as fh:
            return fh.read(64)
    except FileNotFoundError as exc:
        raise MediaError("unreadable", f"{path}: no such file") from exc
    except PermissionError as exc:
        raise MediaError("unreadable", f"{path}: cannot read: permission denied") from exc
    except OSError as exc:
        raise MediaError("unreadable", f"{path}: cannot read: {exc.strerror or exc}") from exc


def decode_media(path: Path | str, n_frames: int = 16, limits: MediaLimits = MediaLimits()) -> DecodedFrames:
    """Up to n_frames evenly spaced RGB frames of a file, before de-duplication."""
    path = Path(path)
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    head = _read_head(path, limits)
    fmt = sniff_format(head)
    if fmt is None:
        raise MediaError("unsupported", f"{path}: not a supported image or video "
                                        f"(the content looks like {describe_content(head)})")
    try:
        if fmt == "gif":
            decoded = _decode_gif(path, n_frames, limits)
        elif fmt == "webp":
            decoded = _decode_webp(path, n_frames, limits)
        elif fmt in ("mp4", "matroska"):
            decoded = _decode_video(path, n_frames, limits)
        else:
            decoded = _decode_image(path, fmt.upper(), n_frames, limits)
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaError("bomb", f"{path}: refused as a decompression bomb: {exc}") from exc
    except (OSError, EOFError, SyntaxError, ValueError, IndexError, struct.error) as exc:
        raise _truncated(path, f"cannot decode the {fmt} data: {exc}") from exc
    except Exception as exc:
        refusal = _ffmpeg_refusal(path, fmt, exc)
        if refusal is None:
            raise
        raise refusal from exc
    if not decoded.frames:
        raise MediaError("empty", f"{path}: no frame could be decoded")
    return decoded


def sample_media(path: Path | str, n_frames: int = 16, limits: MediaLimits = MediaLimits(),
                 dedupe_distance: int = 4) -> SampledMedia:
    """Up to n_frames evenly spaced frames, near-duplicates dropped, with their pHashes.

    A frame is kept only if its pHash is more than dedupe_distance bits away from every frame
    kept before it (a negative distance keeps everything). A still shot, one that this leaves
    with a quarter of the budget or less, is compared quarter by quarter as well: someone
    entering at the edge of a still shot barely moves the whole-frame hash (0-2 bits in the
    shared "so-it-begins" GIF), and a face in a dropped frame is a person never found. Doing
    that for every clip would also find them but looks at 1.7x the frames (646 vs 386 over the
    shared GIFs); for still shots only, 1.25x (482).
    """
    decoded = decode_media(path, n_frames, limits)
    hashes = [phash64(f) for f in decoded.frames]
    keep = drop_near_duplicates(hashes, dedupe_distance)
    if len(keep) <= max(1, n_frames // 4) and len(keep) < len(hashes):
        keep = drop_near_duplicates([(h, *tile_phashes(f)) for h, f in zip(hashes, decoded.frames)], dedupe_distance)
    return SampledMedia(
        kind=decoded.kind,
        frames=[decoded.frames[i] for i in keep],
        frame_indices=[decoded.indices[i] for i in keep],
        frame_hashes=[hashes[i] for i in keep],
        total_frames=decoded.total,
        width=decoded.width,
        height=decoded.height,
        duration_s=decoded.duration,
        scene_positions=drop_near_duplicates([hashes[i] for i in keep], dedupe_distance),
    )
