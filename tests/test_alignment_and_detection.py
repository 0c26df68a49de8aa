"""Alignment normalises pose, and MTCNN finds faces in the shared GIFs (issue 2's test list).

Alignment: LFW photos rotated by +-20 degrees are detected, aligned by both embedders and detected again
on the aligned crop; the eyes come out level and where each embedder's template puts them, and the dlib
embedding of a rotated photo stays next to the upright one's, which an unaligned crop does not.

Detection: the ingest pipeline over a few named reaction GIFs of actors finds confident faces with their
5 landmarks inside the box, and none in two cartoons. The data folder is the session's recognition cache
(tests/test_recognition_loop.py ingests some of the same GIFs with the same settings), so a GIF already
seen in the session costs no inference.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import session_dir
from PIL import Image

from embeddings.pipeline import IngestPipeline, MediaResult
from models.face_align import template_for
from models.face_detector import Detection
from models.registry import create_model
from models.settings import Settings

pytestmark = pytest.mark.slow

# -- alignment ----------------------------------------------------------------------------------------

# Frontal LFW photos; the alignment thresholds below were measured on exactly these.
PHOTOS = ["Serena_Williams_0001", "Colin_Powell_0001", "Hugo_Chavez_0001"]
ROTATIONS = (20, -20)  # degrees, counter-clockwise as PIL rotates

# dlib's get_face_chip_details (dlib/image_transforms/interpolation.h) maps the 5-point shape predictor's
# eye corners to these unit-square positions; an eye centre is the mean of its two corners, and the chip
# adds `padding` on every side: x_chip = (padding + x) / (1 + 2 * padding) * size.
_DLIB_EYE_CORNERS = np.array([[[0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242]],   # left
                              [[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677]]])  # right


def dlib_chip_eyes(size: int = 150, padding: float = 0.25) -> np.ndarray:
    return (padding + _DLIB_EYE_CORNERS.mean(axis=1)) / (1 + 2 * padding) * size  # ~(47.7, 47.1), (100.3, 47.1)


# MTCNN's landmarks are unreliable when the face fills the whole image (on a bare 150 px dlib chip the
# eyes of one face moved by 18 px between rotations); a black border of this width makes them stable.
REDETECT_BORDER = 40
# Measured on PHOTOS (MTCNN re-run on the bordered crop; eye angle = atan2 of right eye minus left eye):
#   rotated input, before alignment: -16.9 .. -19.6 deg (+20 rotation), +19.0 .. +20.3 deg (-20 rotation)
#   dlib chip:     |angle| <= 3.84 deg (Colin Powell 2.4 .. 3.8, Hugo Chavez 3.4 .. 3.5, Serena Williams <= 0.9)
#   facenet crop:  |angle| <= 2.36 deg
# The dlib chip's residual tilt is the same for a person's upright and rotated photo (dlib aligns on eye
# corners, MTCNN reports eye centres), so it belongs to the face, not to the rotation.
MAX_EYE_ANGLE_DEG = 6.0
# Eye centres vs the template, max Euclidean error: dlib chip (150 px, template eye distance 52.6 px)
# <= 10.7 px (Colin Powell, whose eyes MTCNN puts wider apart than dlib's corners imply; Hugo Chavez <= 5.5,
# Serena Williams <= 1.1); facenet crop (160 px, template eye distance 50.3 px) <= 4.4 px.
MAX_DLIB_EYE_ERROR_PX = 15.0
MAX_FACENET_EYE_ERROR_PX = 8.0
# Cosine distance of the dlib embedding of a rotated photo to the upright photo's, both aligned: <= 0.0009
# (Tony Blair's tilted head, not used here: 0.0016). Without alignment (`_unaligned_crop`, rotated vs
# upright): 0.0198 .. 0.0602 (Serena 0.0198 / 0.0227, Colin 0.0593 / 0.0409, Hugo 0.0412 / 0.0602).
# 0.01 sits 10x above the aligned distances and 2x below the unaligned ones, so the test fails if
# alignment is skipped. (TRACK_MAX_DISTANCE, 0.075, is far too loose to tell: unaligned crops of one
# rotated photo pass it.)
MAX_ALIGNED_DISTANCE = 0.01


def _rotated(person_photo: str, lfw_dir: Path, angle: float) -> np.ndarray:
    person = person_photo.rsplit("_", 1)[0]
    image = Image.open(lfw_dir / person / f"{person_photo}.jpg").convert("RGB")
    return np.asarray(image.rotate(angle, resample=Image.BILINEAR, expand=False, fillcolor=(0, 0, 0)))


def _eye_angle(landmarks: np.ndarray) -> float:
    dx, dy = landmarks[1] - landmarks[0]
    return float(np.degrees(np.arctan2(dy, dx)))


def _unaligned_crop(frame: np.ndarray, detection: Detection, size: int = 150) -> np.ndarray:
    """The baseline alignment replaces: MTCNN's box made square and resized, no rotation."""
    x1, y1, x2, y2 = (float(v) for v in detection.box)
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) / 2
    box = tuple(int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
    return np.asarray(Image.fromarray(frame).crop(box).resize((size, size), Image.BILINEAR))


@pytest.fixture(scope="module")
def detector():
    return create_model("mtcnn")


@pytest.fixture(scope="module")
def embedders():
    # facenet with random weights: only its alignment is under test here
    return {"dlib": create_model("dlib-resnet-v1"), "facenet": create_model("facenet-vggface2", pretrained=False)}


@pytest.fixture(scope="module")
def aligned(detector, embedders, lfw_dir):
    """Per (photo, rotation): the input's eye angle, both aligned crops, and MTCNN's landmarks on each crop."""
    keys = [(p, a) for p in PHOTOS for a in (0, *ROTATIONS)]
    frames = [_rotated(p, lfw_dir, a) for p, a in keys]
    detections = [dets[0] for dets in detector.detect(frames)]  # largest face first
    crops = {name: [e.align(f, d) for f, d in zip(frames, detections)] for name, e in embedders.items()}
    out = {k: {"input_angle": _eye_angle(d.landmarks), "frame": f, "detection": d}
           for k, f, d in zip(keys, frames, detections)}
    for name, crops_of in crops.items():
        bordered = [np.pad(c, ((REDETECT_BORDER,) * 2, (REDETECT_BORDER,) * 2, (0, 0))) for c in crops_of]
        for k, crop, dets in zip(keys, crops_of, detector.detect(bordered)):
            assert dets, f"no face found again in the {name} crop of {k}"
            out[k][name] = crop
            out[k][f"{name}_landmarks"] = dets[0].landmarks - REDETECT_BORDER
    return out


def test_rotated_inputs_really_are_rotated(aligned):
    """Guards the set-up: without alignment the eyes of the rotated photos are far from level."""
    for photo in PHOTOS:
        assert abs(aligned[photo, 0]["input_angle"]) < 5  # measured <= 2.1
        assert aligned[photo, 20]["input_angle"] < -12  # measured -16.9 .. -19.6
        assert aligned[photo, -20]["input_angle"] > 12  # measured +19.0 .. +20.3


@pytest.mark.parametrize("embedder", ["dlib", "facenet"])
def test_alignment_levels_the_eyes_and_puts_them_on_the_template(aligned, embedder):
    size = {"dlib": 150, "facenet": 160}[embedder]
    template = dlib_chip_eyes() if embedder == "dlib" else template_for(160)[:2]
    tolerance = MAX_DLIB_EYE_ERROR_PX if embedder == "dlib" else MAX_FACENET_EYE_ERROR_PX
    for (photo, angle), found in aligned.items():
        crop, eyes = found[embedder], found[f"{embedder}_landmarks"][:2]
        assert crop.shape == (size, size, 3)
        assert abs(_eye_angle(eyes)) < MAX_EYE_ANGLE_DEG, (photo, angle, _eye_angle(eyes), found["input_angle"])
        error = np.linalg.norm(eyes - template, axis=1).max()
        assert error < tolerance, (photo, angle, eyes.round(1).tolist(), template.round(1).tolist())


def test_alignment_makes_the_embedding_rotation_invariant(aligned, embedders):
    dlib = embedders["dlib"]
    for photo in PHOTOS:
        keys = [(photo, a) for a in (0, *ROTATIONS)]
        chips = dlib.embed([aligned[k]["dlib"] for k in keys])
        plain = dlib.embed([_unaligned_crop(aligned[k]["frame"], aligned[k]["detection"]) for k in keys])
        for i, angle in enumerate(ROTATIONS, start=1):
            with_alignment, without = 1 - float(chips[0] @ chips[i]), 1 - float(plain[0] @ plain[i])
            assert with_alignment < MAX_ALIGNED_DISTANCE, (photo, angle, with_alignment)
            # what alignment buys: the unaligned crops of the same photos drift past the threshold
            assert without > MAX_ALIGNED_DISTANCE, (photo, angle, without)


# -- detection on the shared GIFs ---------------------------------------------------------------------

# Reaction GIFs of actors, one person each; measured with the default settings (16 frames, de-duplicated):
# name: sampled frames, faces, best probability
FACE_GIFS = {
    "jlaw-nods.gif": (2, 2, 0.9944),            # Jennifer Lawrence
    "zoey-nods-no-biggie.gif": (1, 1, 0.9998),  # Zooey Deschanel
    "taylor-snark.gif": (7, 7, 1.0),            # Taylor Swift
    "mcfly-confused.gif": (3, 4, 0.9999),       # Michael J. Fox (plus a small second face, p 0.968)
    "morpheus-kungfu.gif": (2, 2, 1.0),         # Laurence Fishburne
}
# Cartoons: 0 faces measured in each (1 sampled frame each).
NO_FACE_GIFS = ["calvin-hobbes-dont-knock-smock-1.gif", "bender.gif"]


@pytest.fixture(scope="module")
def gif_results(tmp_path_factory, gifs_dir) -> dict[str, MediaResult]:
    settings = Settings(data_dir=session_dir(tmp_path_factory, "giflens-recognition-data"))
    paths = [gifs_dir / name for name in [*FACE_GIFS, *NO_FACE_GIFS]]
    return {r.path.name: r for r in IngestPipeline(settings).run(paths)}


@pytest.mark.parametrize("name", list(FACE_GIFS))
def test_mtcnn_finds_the_actor_in_a_shared_gif(gif_results, name):
    result = gif_results[name]
    assert result.status == "ok" and result.kind == "gif", result.error
    faces = result.faces
    assert any(f.probability >= 0.9 for f in faces), [f.probability for f in faces]
    assert max(f.probability for f in faces) >= 0.98
    # a face in most sampled frames, not a lucky one
    assert len({f.frame_index for f in faces}) >= len(result.sampled_frames) / 2
    for f in faces:
        x1, y1, x2, y2 = f.box
        landmarks = np.asarray(f.landmarks)
        assert landmarks.shape == (5, 2)
        assert ((landmarks[:, 0] >= x1) & (landmarks[:, 0] <= x2)).all(), (f.box, f.landmarks)
        assert ((landmarks[:, 1] >= y1) & (landmarks[:, 1] <= y2)).all(), (f.box, f.landmarks)
        assert landmarks[0, 0] < landmarks[1, 0]  # left eye left of the right eye
        assert max(landmarks[0, 1], landmarks[1, 1]) < min(landmarks[3, 1], landmarks[4, 1])  # eyes above mouth
        assert f.embedding.shape == (128,) and abs(np.linalg.norm(f.embedding) - 1) < 1e-4


@pytest.mark.parametrize("name", NO_FACE_GIFS)
def test_mtcnn_finds_no_face_in_a_cartoon_gif(gif_results, name):
    result = gif_results[name]
    assert result.status == "ok" and result.kind == "gif", result.error
    assert result.faces == [] and result.tracks == []
