"""dlib's face ResNet rebuilt in PyTorch must give dlib's own descriptors for the same chips."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models.dlib_resnet import BLOCKS, read_weights
from models.face_embedders import face_recognition_models_dir
from models.registry import create_model

PEOPLE = ["Colin_Powell", "Serena_Williams", "Hugo_Chavez", "Gloria_Macapagal_Arroyo"]


@pytest.fixture(scope="module")
def chips(lfw_dir) -> list[np.ndarray]:
    detector, embedder = create_model("mtcnn"), create_model("dlib-resnet-v1", flip=False)
    frames = [np.asarray(Image.open(lfw_dir / p / f"{p}_{i:04d}.jpg").convert("RGB")) for p in PEOPLE for i in (1, 2)]
    return [embedder.align(frame, dets[0]) for frame, dets in zip(frames, detector.detect(frames))]


def test_weights_are_read_from_the_shipped_dat_file():
    weights = read_weights(face_recognition_models_dir() / "dlib_face_recognition_resnet_model_v1.dat")
    assert len(weights.convs) == len(weights.affines) == 1 + 2 * len(BLOCKS)
    assert weights.convs[0].size == 32 * 3 * 7 * 7 + 32 and weights.fc.shape == (256, 128)
    np.testing.assert_allclose(weights.mean_rgb, [122.782, 117.001, 104.298], atol=1e-3)


def test_a_file_that_is_not_the_face_resnet_is_refused():
    with pytest.raises(ValueError, match="not dlib's face recognition ResNet"):
        read_weights(face_recognition_models_dir() / "shape_predictor_5_face_landmarks.dat")


def test_torch_descriptors_equal_dlibs(chips):
    import dlib

    net = dlib.face_recognition_model_v1(str(face_recognition_models_dir() / "dlib_face_recognition_resnet_model_v1.dat"))
    reference = np.asarray(net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips], 0), np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    ours = create_model("dlib-resnet-v1", flip=False).embed(chips)
    assert np.abs(ours - reference).max() < 1e-4
    # and the descriptors still tell people apart: each photo's nearest other photo is the same person
    sims = ours @ ours.T - 2 * np.eye(len(ours))
    assert [PEOPLE[j // 2] for j in sims.argmax(1)] == [p for p in PEOPLE for _ in (1, 2)]


def test_flip_and_jitters_are_repeatable_and_stay_close(chips):
    plain = create_model("dlib-resnet-v1", flip=False).embed(chips)
    tta = create_model("dlib-resnet-v1", flip=True, jitters=2)
    first, second = tta.embed(chips), tta.embed(chips)
    np.testing.assert_array_equal(first, second)
    cosines = (first * plain).sum(1)
    assert cosines.min() > 0.97 and cosines.max() < 0.99999  # a different view of the same face
