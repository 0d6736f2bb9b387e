"""Camera geometry of calibrated (Panoptic, OpenCV-model) cameras: world -> camera frame
-> distorted pixels, and pixels -> MotionBERT's screen units. World points are in
centimetres; every function takes numpy arrays and broadcasts over leading axes."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Camera:
    """One calibrated camera: x_cam = R @ X + t, then OpenCV distortion and K."""

    name: str
    K: np.ndarray  # (3, 3)
    dist: np.ndarray  # (5,) k1, k2, p1, p2, k3
    R: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,) centimetres
    resolution: tuple[int, int]  # (width, height)


def camera_frame(joints3d: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(..., T, J, 3) world centimetres -> the camera's frame (R (..., 3, 3), t (..., 3))."""
    return np.einsum("...ij,...tkj->...tki", R, joints3d) + t[..., None, None, :]


def project_points(points: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Project (..., 3) world points to (..., 2) pixels; also returns camera depth (...)."""
    x = points @ camera.R.T + camera.t
    depth = x[..., 2]
    xy = x[..., :2] / (depth[..., None] + 1e-5)
    k1, k2, p1, p2, k3 = camera.dist
    u, v = xy[..., 0], xy[..., 1]
    r2 = u * u + v * v
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    ud = u * radial + 2 * p1 * u * v + p2 * (r2 + 2 * u * u)
    vd = v * radial + 2 * p2 * u * v + p1 * (r2 + 2 * v * v)
    K = camera.K
    px = K[0, 0] * ud + K[0, 1] * vd + K[0, 2]
    py = K[1, 1] * vd + K[1, 2]
    return np.stack([px, py], axis=-1), depth


def normalize_screen(uv: np.ndarray, resolution: np.ndarray) -> np.ndarray:
    """Pixels -> MotionBERT's screen units: x in [-1, 1] across the width, y in the same
    scale, centred (``resolution`` (..., 2) is (width, height), broadcast against uv)."""
    w, h = resolution[..., 0:1], resolution[..., 1:2]
    return uv / w * 2.0 - np.concatenate([np.ones_like(w), h / w], axis=-1)
