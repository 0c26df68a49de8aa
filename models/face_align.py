"""Face alignment geometry: a similarity transform from 5 landmarks to a template.

Pure numpy (+ OpenCV for the warp). Landmark order everywhere: left eye, right eye,
nose tip, left mouth corner, right mouth corner (MTCNN's order, image coordinates).
"""
from __future__ import annotations

import cv2
import numpy as np

# ArcFace's 112x112 template (insightface), widely used for 5-point alignment.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def template_for(size: int, base: np.ndarray = ARCFACE_112, base_size: int = 112) -> np.ndarray:
    return base * (size / base_size)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the least-squares similarity (rotation, uniform scale, shift) taking src to dst (Umeyama)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    var_s = (s**2).sum() / len(src)
    scale = np.trace(np.diag(sigma) @ sign) / var_s
    shift = mu_d - scale * rotation @ mu_s
    return np.hstack([scale * rotation, shift[:, None]])


def warp_to_template(image: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    matrix = similarity_transform(landmarks, template)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
