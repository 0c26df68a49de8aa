"""Limits that keep one file from exhausting memory or time, and frames too small for a face.

- Decode budget: an animation whose sampling would composite more canvas pixels x frames than
  `max_decode_pixels` (GIFLENS_MAX_DECODE_PIXELS) is refused from its header, before Pillow opens
  it, with the numbers in the message, and recorded as a failed file by ingest.
- Detection size: MTCNN sees a frame shrunk to at most DETECT_MAX_PIXELS pixels, batches hold at
  most DETECT_BATCH_PIXELS pixels, and boxes and landmarks come back in the full frame's
  coordinates; frames up to full HD are searched exactly as they are. The cap is part of the
  detector's declared params, hence of the face cache's namespace.
- Tiny frames: a frame too small to hold a min_face_size face gets no faces without running MTCNN,
  and such a file is ingested ok with 0 faces.

Real-model tests are marked slow, like the rest of the suite's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

import embeddings.media as media
from embeddings.media import MediaError, MediaLimits, sample_media
from embeddings.pipeline import IngestPipeline
from labeling.db import open_store
from labeling.ingest import ingest
from labeling.schema import Media
from models.face_detector import (DETECT_BATCH_PIXELS, DETECT_MAX_PIXELS, batches, detection_size,
                                  holds_a_face)
from models.registry import create_model, model_params
from models.settings import Settings

LFW_PHOTO = ("Colin_Powell", "Colin_Powell_0001")
UPSCALED = 3000  # a 250x250 LFW photo blown up 12x: 9 Mpixels, over the detection cap


# -- helpers ---------------------------------------------------------------------------------------

def _animation(path: Path, frames: int, size: tuple[int, int] = (64, 48), fmt: str = "GIF") -> Path:
    """An animation whose frames differ (so no encoder merges them) at `size`."""
    images = [Image.new("RGB", size, (i * 6 % 256, 255 - i * 6 % 256, 40)) for i in range(frames)]
    images[0].save(path, format=fmt, save_all=True, append_images=images[1:], duration=100, loop=0)
    return path


def _never_opened(monkeypatch) -> None:
    """Fail the test if the file reaches Pillow: a budget refusal must come from the header alone."""
    def refuse(path, fmt):
        raise AssertionError(f"{path} was opened with Pillow ({fmt}) before the decode budget refused it")
    monkeypatch.setattr(media, "_open_pillow", refuse)


def _lfw(lfw_dir: Path, size: int | None = None) -> np.ndarray:
    person, photo = LFW_PHOTO
    image = Image.open(lfw_dir / person / f"{photo}.jpg").convert("RGB")
    return np.asarray(image if size is None else image.resize((size, size), Image.Resampling.BICUBIC))


def _spy_on_mtcnn(detector, monkeypatch) -> list[tuple[int, ...]]:
    """Record the shape of every batch the detector hands to facenet-pytorch."""
    shapes: list[tuple[int, ...]] = []
    real = detector._mtcnn.detect

    def spy(batch, landmarks=False):
        shapes.append(tuple(np.asarray(batch).shape))
        return real(batch, landmarks=landmarks)

    monkeypatch.setattr(detector._mtcnn, "detect", spy)
    return shapes


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return float(inter / (area(a) + area(b) - inter))


# -- decode budget (no model) ---------------------------------------------------------------------

def test_gif_over_the_decode_budget_is_refused_from_its_header(tmp_path, monkeypatch):
    # 40 frames sampled at 16: the last sample is frame 38, so 39 frames of 64x48 = 119,808 pixels.
    path = _animation(tmp_path / "many.gif", 40)
    _never_opened(monkeypatch)
    with pytest.raises(MediaError) as err:
        sample_media(path, limits=MediaLimits(max_decode_pixels=100_000))
    message = str(err.value)
    assert err.value.reason == "bomb"
    for words in (str(path), "39 frames", "64x48", "119,808 pixels", "100,000-pixel decode limit",
                  "GIFLENS_MAX_DECODE_PIXELS"):
        assert words in message, message


def test_gif_within_the_decode_budget_is_decoded(tmp_path):
    path = _animation(tmp_path / "many.gif", 40)
    assert sample_media(path, limits=MediaLimits(max_decode_pixels=119_808), dedupe_distance=-1).total_frames == 40
    m = sample_media(path, dedupe_distance=-1)  # the default budget
    assert (m.kind, m.total_frames, len(m.frames)) == ("gif", 40, 16)


def test_fewer_samples_composite_fewer_frames(tmp_path):
    """The budget counts the frames up to the last sample, not the whole clip."""
    path = _animation(tmp_path / "many.gif", 40)
    with pytest.raises(MediaError):
        sample_media(path, n_frames=16, limits=MediaLimits(max_decode_pixels=100_000))
    # One sample: frame 20, so 21 frames x 3,072 pixels = 64,512.
    assert sample_media(path, n_frames=1, limits=MediaLimits(max_decode_pixels=64_512)).frame_indices == [20]


def test_animated_webp_over_the_decode_budget_is_refused_from_its_header(tmp_path, monkeypatch):
    path = _animation(tmp_path / "many.webp", 40, fmt="WEBP")
    assert sample_media(path, limits=MediaLimits(max_decode_pixels=119_808)).total_frames == 40
    _never_opened(monkeypatch)
    with pytest.raises(MediaError) as err:
        sample_media(path, limits=MediaLimits(max_decode_pixels=119_807))
    message = str(err.value)
    assert err.value.reason == "bomb" and "39 frames of a 64x48 WebP canvas" in message, message


def test_the_setting_and_its_environment_variable_reach_the_limits(monkeypatch):
    assert Settings().max_decode_pixels == MediaLimits().max_decode_pixels == 4_000_000_000
    monkeypatch.setenv("GIFLENS_MAX_DECODE_PIXELS", "12345")
    assert MediaLimits.from_settings(Settings()).max_decode_pixels == 12345


def test_ingest_records_a_gif_over_the_budget_as_failed(tmp_path):
    """The refusal goes through ingest's usual failure path (no model is needed to get there)."""
    path = _animation(tmp_path / "many.gif", 40)
    settings = Settings(data_dir=tmp_path / "data", max_decode_pixels=100_000)
    summary = ingest([path], settings)
    assert (summary.ingested, summary.failed) == (0, 1)
    assert "100,000-pixel decode limit" in summary.failures[0][1]
    with open_store(settings.resolved_database_url)() as session:
        row = session.scalars(select(Media)).one()
    assert row.status == "failed" and "119,808 pixels" in row.error


# -- detection size and tiny frames: pure helpers ---------------------------------------------------

def test_detection_size_keeps_frames_up_to_the_cap_and_shrinks_larger_ones():
    assert detection_size(1920, 1080, DETECT_MAX_PIXELS) == (1920, 1080)
    assert detection_size(250, 250, DETECT_MAX_PIXELS) == (250, 250)
    width, height = detection_size(UPSCALED, UPSCALED, DETECT_MAX_PIXELS)
    assert width == height and width * height <= DETECT_MAX_PIXELS and width >= 1439
    w, h = detection_size(8000, 1000, 2_000_000)
    assert w * h <= 2_000_000 and abs(w / h - 8.0) < 0.01


def test_batches_hold_at_most_batch_size_frames_and_batch_pixels():
    positions = list(range(10))
    assert [len(b) for b in batches(positions, 16, 250 * 250, DETECT_BATCH_PIXELS)] == [10]
    assert [len(b) for b in batches(positions, 4, 100, 10**9)] == [4, 4, 2]
    assert [len(b) for b in batches(positions, 16, 1920 * 1080, DETECT_BATCH_PIXELS)] == [4, 4, 2]
    assert [len(b) for b in batches(positions, 16, 10**9, 1)] == [1] * 10  # a frame over budget still goes alone


def test_a_face_fits_once_the_short_side_reaches_min_face_size():
    assert not holds_a_face(1, 1, 20) and not holds_a_face(16, 16, 20) and not holds_a_face(19, 300, 20)
    assert holds_a_face(20, 20, 20) and holds_a_face(300, 20, 20) and not holds_a_face(39, 39, 40)


def test_the_detection_cap_is_part_of_the_cache_key():
    params = model_params("mtcnn")
    assert params["max_pixels"] == DETECT_MAX_PIXELS
    assert model_params("mtcnn", max_pixels=DETECT_MAX_PIXELS // 2) != params
    assert model_params("mtcnn", batch_pixels=1) == params  # batching does not change what is found


# -- detection with the real MTCNN ----------------------------------------------------------------

@pytest.fixture(scope="module")
def detector():
    return create_model("mtcnn")


@pytest.mark.slow
def test_face_in_an_upscaled_photo_is_found_at_the_same_place(detector, lfw_dir, monkeypatch):
    small, big = _lfw(lfw_dir), _lfw(lfw_dir, UPSCALED)
    shapes = _spy_on_mtcnn(detector, monkeypatch)
    found_small, found_big = detector.detect([small, big])
    # MTCNN saw the photo as it is and the blown-up one shrunk under the cap.
    side = detection_size(UPSCALED, UPSCALED, DETECT_MAX_PIXELS)[0]
    assert sorted(shapes) == sorted([(1, 250, 250, 3), (1, side, side, 3)])
    assert len(found_small) == len(found_big) == 1
    factor = UPSCALED / 250
    expected, got = found_small[0], found_big[0]
    # Measured on this photo: box IoU 0.93, landmarks within 1.8% of the box width.
    assert _iou(expected.box * factor, got.box) > 0.85, (expected.box * factor, got.box)
    box_width = float(got.box[2] - got.box[0])
    assert np.abs(expected.landmarks * factor - got.landmarks).max() < 0.05 * box_width
    x1, y1, x2, y2 = got.box
    assert ((got.landmarks[:, 0] > x1) & (got.landmarks[:, 0] < x2)).all()
    assert ((got.landmarks[:, 1] > y1) & (got.landmarks[:, 1] < y2)).all()


@pytest.mark.slow
def test_frames_up_to_full_hd_are_searched_unchanged(detector, lfw_dir, monkeypatch):
    """A full-HD frame goes to MTCNN as it is, and the result is MTCNN's own, to the bit."""
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[400:650, 900:1150] = _lfw(lfw_dir)
    raw_boxes, raw_probs, raw_points = detector._mtcnn.detect(frame[None], landmarks=True)
    shapes = _spy_on_mtcnn(detector, monkeypatch)
    (found,) = detector.detect([frame])
    assert shapes == [(1, 1080, 1920, 3)]
    assert len(found) == len(raw_boxes[0]) == 1
    np.testing.assert_array_equal(found[0].box, np.asarray(raw_boxes[0][0], np.float32))
    np.testing.assert_array_equal(found[0].landmarks, np.asarray(raw_points[0][0], np.float32))
    assert found[0].probability == float(raw_probs[0][0])


@pytest.mark.slow
def test_large_frames_go_to_mtcnn_in_batches_bounded_by_pixels(detector, monkeypatch):
    shapes = _spy_on_mtcnn(detector, monkeypatch)
    frames = [np.full((1200, 1600, 3), 90 + i, np.uint8) for i in range(5)]
    monkeypatch.setattr(detector, "batch_pixels", 2 * 1200 * 1600)
    assert detector.detect(frames) == [[]] * 5
    assert [s[0] for s in shapes] == [2, 2, 1]


@pytest.mark.slow
def test_frames_too_small_for_a_face_get_none_without_mtcnn(detector, monkeypatch):
    shapes = _spy_on_mtcnn(detector, monkeypatch)
    tiny = [np.zeros((1, 1, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), np.zeros((16, 16), np.uint8),
            np.zeros((300, 19, 3), np.uint8)]
    assert detector.detect(tiny) == [[], [], [], []]
    assert shapes == []
    assert detector.detect([np.zeros((20, 20, 3), np.uint8)]) == [[]]  # the smallest size MTCNN can search
    assert shapes == [(1, 20, 20, 3)]


@pytest.mark.slow
def test_tiny_images_and_gifs_are_ingested_ok_with_no_face(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    Image.new("RGB", (1, 1), (10, 20, 30)).save(folder / "one.png")
    Image.new("RGB", (16, 16), (200, 120, 90)).save(folder / "sixteen.jpg")
    _animation(folder / "eight.gif", 5, size=(8, 8))
    settings = Settings(data_dir=tmp_path / "data")
    summary = ingest([folder], settings, pipeline=IngestPipeline(settings))
    assert (summary.ingested, summary.failed, summary.faces) == (3, 0, 0), summary.failures
    with open_store(settings.resolved_database_url)() as session:
        stored = sorted((Path(r.path).name, r.status, len(r.faces)) for r in session.scalars(select(Media)))
    assert stored == [("eight.gif", "ok", 0), ("one.png", "ok", 0), ("sixteen.jpg", "ok", 0)]
