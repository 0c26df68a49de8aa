"""The model registry and the real networks with their shipped weights."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from models.face_align import ARCFACE_112, similarity_transform, template_for, warp_to_template
from models.registry import INFERENCE_CALLS, create_model, list_models, model_params


def _photo(lfw_dir, person, i=1):
    return np.asarray(Image.open(lfw_dir / person / f"{person}_{i:04d}.jpg").convert("RGB"))


def test_registry_names_and_errors():
    assert list_models("face") == ["dlib-resnet-v1", "facenet-vggface2"]
    assert set(list_models()) >= {"mtcnn", "efficientnet-lite0"}
    with pytest.raises(ValueError, match="known models: .*dlib-resnet-v1"):
        create_model("resnet-9000")
    assert model_params("dlib-resnet-v1") != model_params("dlib-resnet-v1", flip=False)


def test_similarity_transform_recovers_a_known_transform():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_112
    dst = (scale * (rot @ src.T)).T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


def test_warp_puts_landmarks_on_the_template():
    image = np.zeros((200, 200, 3), np.uint8)
    landmarks = ARCFACE_112 * 1.3 + 20
    for x, y in landmarks.astype(int):
        image[y - 1 : y + 2, x - 1 : x + 2] = 255
    crop = warp_to_template(image, landmarks, template_for(160), 160)
    for x, y in template_for(160).round().astype(int):
        assert crop[y - 1 : y + 2, x - 1 : x + 2].max() > 100


@pytest.fixture(scope="module")
def detector():
    return create_model("mtcnn")


@pytest.fixture(scope="module")
def dlib_embedder():
    return create_model("dlib-resnet-v1")


def test_mtcnn_finds_one_face_with_landmarks_and_batches(detector, lfw_dir):
    frames = [_photo(lfw_dir, p) for p in ("Tony_Blair", "Serena_Williams", "Hugo_Chavez")] + [data.astronaut()]
    before = INFERENCE_CALLS["mtcnn"]
    batched = detector.detect(frames)
    assert INFERENCE_CALLS["mtcnn"] - before == 2  # 3 LFW photos share a size: one batch, the astronaut another
    for frame, dets in zip(frames, batched):
        assert len(dets) >= 1 and dets[0].probability > 0.99
        x1, y1, x2, y2 = dets[0].box
        assert (dets[0].landmarks[:, 0] > x1).all() and (dets[0].landmarks[:, 0] < x2).all()
        assert dets[0].landmarks[0, 0] < dets[0].landmarks[1, 0]  # left eye left of right eye
    single = detector.detect([frames[1]])[0][0]
    np.testing.assert_allclose(single.box, batched[1][0].box, atol=1.0)


def test_mtcnn_finds_no_face_in_coffee(detector):
    assert detector.detect([data.coffee()]) == [[]]


def test_dlib_embeddings_separate_people(detector, dlib_embedder, lfw_dir):
    photos = [_photo(lfw_dir, "Tony_Blair", 1), _photo(lfw_dir, "Tony_Blair", 2), _photo(lfw_dir, "Colin_Powell", 1)]
    crops = [dlib_embedder.align(p, detector.detect([p])[0][0]) for p in photos]
    assert all(c.shape == (150, 150, 3) for c in crops)
    v = dlib_embedder.embed(crops)
    assert v.shape == (3, 128) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    same, different = 1 - v[0] @ v[1], 1 - v[0] @ v[2]
    assert same < 0.075 < different


def test_facenet_architecture_with_random_weights(detector, lfw_dir):
    model = create_model("facenet-vggface2", pretrained=False)
    photo = _photo(lfw_dir, "Tony_Blair")
    crop = model.align(photo, detector.detect([photo])[0][0])
    assert crop.shape == (160, 160, 3)
    v = model.embed([crop, crop[:, ::-1].copy()])
    assert v.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)


def test_facenet_without_weights_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="GIFLENS_FACENET_WEIGHTS"):
        create_model("facenet-vggface2", weights_path=tmp_path / "missing.pt")


def test_facenet_loads_a_weights_file(tmp_path, lfw_dir):
    import torch

    random_model = create_model("facenet-vggface2", pretrained=False)
    path = tmp_path / "vggface2.pt"
    torch.save(random_model._net.state_dict(), path)
    loaded = create_model("facenet-vggface2", weights_path=path)
    crop = np.asarray(Image.fromarray(_photo(lfw_dir, "Tony_Blair")).resize((160, 160)))
    np.testing.assert_allclose(loaded.embed([crop]), random_model.embed([crop]), atol=1e-5)
    assert loaded.params["weights"] == "vggface2.pt"


def test_efficientnet_espresso_and_features():
    model = create_model("efficientnet-lite0")
    before = INFERENCE_CALLS["efficientnet-lite0"]
    feats, probs = model.features_and_probs([data.coffee(), data.astronaut()])
    assert INFERENCE_CALLS["efficientnet-lite0"] == before + 1
    assert feats.shape == (2, 1280) and probs.shape == (2, 1000)
    top = int(np.argmax(probs[0]))
    assert model.imagenet_labels[top] == "espresso" and probs[0, top] > 0.8
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-4)
