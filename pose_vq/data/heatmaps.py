"""Gaussian limb and keypoint heatmaps, 2D planes and 3D plane projections.

Semantics are the reference implementation's (mmaction's pose-target generator):

* a limb (a, b) with endpoint scores (s_a, s_b) gives each pixel p inside the limb's
  box, the endpoints' bounding box grown by 3 sigma (integer-truncated bounds),
  the value ``min(s_a, s_b) * exp(-d(p, [a, b])^2 / (2 sigma^2))``, where d is the
  distance to the segment; limbs shorter than one pixel in 2D fall back to a keypoint
  Gaussian at the rounded start point with value s_a; nothing is drawn when the
  value is below 1e-3 (2D) or 1e-5 (3D); overlapping drawings combine by maximum;
* a keypoint gives ``s * exp(-|p - round(c)|^2 / (2 sigma^2))`` inside round(c) +- 3 sigma;
* the 3D mode draws limbs in a ``size^3`` volume indexed [x, y, z] and keeps its three
  max-projections, channel 0 = max over x (rows y, cols z), 1 = max over y (rows x,
  cols z), 2 = max over z (rows x, cols y). The reference multiplied the limb value by
  min(s_a, s_b) twice; here it is applied once, as in 2D.

Nothing dense is materialised: the kernels visit only each limb's box, and a 3D
projection is computed directly. Along the projected axis the squared distance to a
segment is convex, so its minimum over integer positions lies at the floor or ceiling
of the continuous minimiser, which the 2D point-to-segment problem in the remaining
two axes gives in closed form. Arrays are channels-last: (frames, height, width, channels).

A non-finite point is an absent joint: it is never drawn, never part of a limb, and takes
no part in ``scale_and_center``'s fit (``modes`` marks absent joints NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numba
import numpy as np

from pose_vq.data import skeleton

EPS_2D = 1e-3
EPS_3D = 1e-5
# exp(-30) ~ 1e-13: pixels farther out are left at zero (an error far below float32's
# resolution of the values drawn), which spares the exp in most of a diagonal limb's box.
_CUTOFF = 30.0


def scale_and_center(points: np.ndarray, size: float, fill: float = 0.9) -> np.ndarray:
    """Fit each leading slice of (..., F, J, D) points into [0, size]^D.

    One isotropic scale per slice (per camera for 2D) maps the window's bounding box to
    ``fill`` of ``size`` along its tightest axis, then the box is centred, as the reference
    does. A degenerate box (a single point) is centred without scaling. Non-finite points
    (absent joints) stay non-finite and take no part in the box.
    """
    points = np.asarray(points, dtype=np.float64)
    finite = np.isfinite(points).all(axis=-1, keepdims=True)
    lo = np.where(finite, points, np.inf).min(axis=(-3, -2), keepdims=True)
    hi = np.where(finite, points, -np.inf).max(axis=(-3, -2), keepdims=True)
    lo, hi = np.where(lo <= hi, lo, 0.0), np.where(lo <= hi, hi, 0.0)  # no point: empty box
    extent = hi - lo
    with np.errstate(divide="ignore"):
        per_axis = np.where(extent > 0, size / np.where(extent > 0, extent, 1.0), np.inf)
    scale = per_axis.min(axis=-1, keepdims=True) * fill
    scale = np.where(np.isfinite(scale), scale, 1.0)
    offset = (size - extent * scale) / 2 - lo * scale
    return points * scale + offset


GAUSSIAN_SCORE_MEAN = 0.65


def gaussian_scores(rng: np.random.Generator, shape: Sequence[int],
                    mean: float = GAUSSIAN_SCORE_MEAN, std: float = 0.16) -> np.ndarray:
    """The reference's random joint scores: N(mean, std) clipped to [0, 1]."""
    return np.clip(rng.normal(mean, std, size=tuple(shape)), 0.0, 1.0)


# ------------------------------------------------------------------------ kernels


@numba.njit(cache=True, inline="always")
def _segment_d2_2d(px, py, ax, ay, bx, by, d2_ab):
    d2a = (px - ax) ** 2 + (py - ay) ** 2
    d2b = (px - bx) ** 2 + (py - by) ** 2
    coeff = (d2a - d2b + d2_ab) / (2.0 * d2_ab)
    if coeff <= 0.0:
        return d2a
    if coeff >= 1.0:
        return d2b
    qx = ax + coeff * (bx - ax)
    qy = ay + coeff * (by - ay)
    return (px - qx) ** 2 + (py - qy) ** 2


@numba.njit(cache=True)
def _draw_keypoint_2d(img, cx, cy, value, sigma):
    if value < EPS_2D or not (np.isfinite(cx) and np.isfinite(cy)):
        return
    h, w = img.shape
    mx, my = np.rint(cx), np.rint(cy)
    x0, x1 = max(int(mx - 3 * sigma), 0), min(int(mx + 3 * sigma) + 1, w)
    y0, y1 = max(int(my - 3 * sigma), 0), min(int(my + 3 * sigma) + 1, h)
    inv = 1.0 / (2.0 * sigma * sigma)
    for y in range(y0, y1):
        for x in range(x0, x1):
            v = np.exp(-((x - mx) ** 2 + (y - my) ** 2) * inv) * value
            if v > img[y, x]:
                img[y, x] = v


@numba.njit(cache=True)
def _draw_limb_2d(img, ax, ay, bx, by, sa, sb, sigma):
    value = min(sa, sb)
    if value < EPS_2D or not (np.isfinite(ax) and np.isfinite(ay) and np.isfinite(bx) and np.isfinite(by)):
        return
    h, w = img.shape
    x0, x1 = max(int(min(ax, bx) - 3 * sigma), 0), min(int(max(ax, bx) + 3 * sigma) + 1, w)
    y0, y1 = max(int(min(ay, by) - 3 * sigma), 0), min(int(max(ay, by) + 3 * sigma) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    d2_ab = (ax - bx) ** 2 + (ay - by) ** 2
    if d2_ab < 1.0:
        _draw_keypoint_2d(img, ax, ay, sa, sigma)
        return
    inv = 1.0 / (2.0 * sigma * sigma)
    for y in range(y0, y1):
        for x in range(x0, x1):
            e = _segment_d2_2d(x, y, ax, ay, bx, by, d2_ab) * inv
            if e > _CUTOFF:
                continue
            v = np.exp(-e) * value
            if v > img[y, x]:
                img[y, x] = v


@numba.njit(cache=True, parallel=True)
def _render_2d(points, scores, limbs, sigma, out, with_limbs, combine):
    """points (F, J, 2), scores (F, J) -> out (F, H, W, C), drawn channel-first per frame."""
    num_frames = points.shape[0]
    for f in numba.prange(num_frames):
        n_items = limbs.shape[0] if with_limbs else points.shape[1]
        for i in range(n_items):
            img = out[f, :, :, 0] if combine else out[f, :, :, i]
            if with_limbs:
                a, b = limbs[i, 0], limbs[i, 1]
                _draw_limb_2d(img, points[f, a, 0], points[f, a, 1], points[f, b, 0],
                              points[f, b, 1], scores[f, a], scores[f, b], sigma)
            else:
                _draw_keypoint_2d(img, points[f, i, 0], points[f, i, 1], scores[f, i], sigma)


@numba.njit(cache=True, inline="always")
def _segment_d2_3d(p0, p1, p2, a, d, d2_ab):
    e0, e1, e2 = p0 - a[0], p1 - a[1], p2 - a[2]
    t = (e0 * d[0] + e1 * d[1] + e2 * d[2]) / d2_ab
    if t <= 0.0:
        return e0 * e0 + e1 * e1 + e2 * e2
    if t >= 1.0:
        f0, f1, f2 = p0 - a[0] - d[0], p1 - a[1] - d[1], p2 - a[2] - d[2]
        return f0 * f0 + f1 * f1 + f2 * f2
    g0, g1, g2 = e0 - t * d[0], e1 - t * d[1], e2 - t * d[2]
    return g0 * g0 + g1 * g1 + g2 * g2


@numba.njit(cache=True)
def _project_limb_3d(img, axis, a, b, value, sigma, size):
    """Max over ``axis`` of a limb's volume drawing, into img (size, size)."""
    lo = np.empty(3, np.int64)
    hi = np.empty(3, np.int64)
    for k in range(3):
        lo[k] = max(int(min(a[k], b[k]) - 3 * sigma), 0)
        hi[k] = min(int(max(a[k], b[k]) + 3 * sigma) + 1, size)
        if lo[k] >= hi[k]:
            return
    d = b - a
    d2_ab = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    # u, w: the image's row and column axes; the projected axis is ``axis``.
    u = 1 if axis == 0 else 0
    w = 1 if axis == 2 else 2
    du, dw, dk = d[u], d[w], d[axis]
    d2_uw = du * du + dw * dw
    inv = 1.0 / (2.0 * sigma * sigma)
    p = np.empty(3)
    for i in range(lo[u], hi[u]):
        for j in range(lo[w], hi[w]):
            # Continuous minimiser along the projected axis: the segment point closest to
            # (i, j) in the u-w plane, lifted to its coordinate along ``axis``.
            if d2_uw > 1e-12:
                t = ((i - a[u]) * du + (j - a[w]) * dw) / d2_uw
                t = min(max(t, 0.0), 1.0)
            else:
                t = 0.5
            kstar = min(max(a[axis] + t * dk, float(lo[axis])), float(hi[axis] - 1))
            best = np.inf
            for k in (np.floor(kstar), np.ceil(kstar)):
                p[u], p[w], p[axis] = i, j, k
                best = min(best, _segment_d2_3d(p[0], p[1], p[2], a, d, d2_ab))
            if best * inv > _CUTOFF:
                continue
            v = np.exp(-best * inv) * value
            if v > img[i, j]:
                img[i, j] = v


@numba.njit(cache=True, parallel=True)
def _render_3d_projections(points, scores, limbs, sigma, out):
    """points (F, J, 3) in volume coordinates -> out (F, size, size, 3)."""
    size = out.shape[1]
    for f in numba.prange(points.shape[0]):
        for i in range(limbs.shape[0]):
            ia, ib = limbs[i, 0], limbs[i, 1]
            value = min(scores[f, ia], scores[f, ib])
            a, b = points[f, ia], points[f, ib]
            if value < EPS_3D or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
                continue
            if ((a - b) ** 2).sum() < EPS_3D:
                continue
            for axis in range(3):
                _project_limb_3d(out[f, :, :, axis], axis, a, b, value, sigma, size)


# ------------------------------------------------------------------------- public


def render_2d(
    points: np.ndarray, scores: np.ndarray, size: int, *, sigma: float = 0.75,
    kind: Literal["limb", "keypoint"] = "limb", combine: bool = True,
    limbs: Sequence[tuple[int, int]] = skeleton.LIMBS,
) -> np.ndarray:
    """Heatmaps of (F, J, 2) pixel points already in [0, size) coordinates.

    Returns (F, size, size, 1) when ``combine`` (max over limbs or keypoints), else one
    channel per limb (F, size, size, L) or per joint (F, size, size, J).
    """
    points = np.ascontiguousarray(points, dtype=np.float64)
    scores = np.ascontiguousarray(np.broadcast_to(scores, points.shape[:2]), dtype=np.float64)
    limb_array = np.asarray(limbs, dtype=np.int64).reshape(-1, 2)
    channels = 1 if combine else (len(limb_array) if kind == "limb" else points.shape[1])
    out = np.zeros((points.shape[0], size, size, channels), np.float32)
    _render_2d(points, scores, limb_array, float(sigma), out, kind == "limb", combine)
    return out


def render_3d_projections(
    points: np.ndarray, scores: np.ndarray, size: int, *, sigma: float = 0.75,
    limbs: Sequence[tuple[int, int]] = skeleton.LIMBS,
) -> np.ndarray:
    """Max-projections (F, size, size, 3) of the limb volume of (F, J, 3) volume points."""
    points = np.ascontiguousarray(np.clip(points, 0, size - 1), dtype=np.float64)
    scores = np.ascontiguousarray(np.broadcast_to(scores, points.shape[:2]), dtype=np.float64)
    out = np.zeros((points.shape[0], size, size, 3), np.float32)
    _render_3d_projections(points, scores, np.asarray(limbs, np.int64).reshape(-1, 2), float(sigma), out)
    return out


def render_views(
    joints2d: np.ndarray, scores: np.ndarray, size: int, *, sigma: float = 0.75,
    kind: Literal["limb", "keypoint"] = "limb", per_limb: bool = False,
) -> np.ndarray:
    """Scale, centre and render (C, F, J, 2) camera views into a (F, size, size, ch) clip.

    ``per_limb=False``: one channel per camera, max over limbs (the ``2d``/``m2d`` modes).
    ``per_limb=True``: one camera's limbs (or joints) as channels (the ``c2d`` mode).
    """
    if per_limb and joints2d.shape[0] != 1:
        raise ValueError(f"per-limb channels need exactly one camera, got {joints2d.shape[0]}")
    fitted = scale_and_center(joints2d, size)
    views = [render_2d(fitted[c], scores[c], size, sigma=sigma, kind=kind, combine=not per_limb)
             for c in range(fitted.shape[0])]
    return views[0] if len(views) == 1 else np.concatenate(views, axis=-1)


def render_volume_projections(
    joints3d: np.ndarray, scores: np.ndarray, size: int, *, sigma: float = 0.75
) -> np.ndarray:
    """Scale, centre and render (F, J, 3) joints as the ``3d`` mode's (F, size, size, 3)."""
    fitted = scale_and_center(joints3d[None], size)[0]
    return render_3d_projections(fitted, scores, size, sigma=sigma)
