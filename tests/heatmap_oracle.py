"""Slow, obviously-correct heatmap renderers: per pixel (2D) and per voxel (3D).

Written independently of ``pose_vq.data.heatmaps`` (no shared code, the segment distance
by clamped projection rather than by the reference's dominance test) so the tests and
``python -m pose_vq.benchmark render`` can hold the fast kernels against them.
"""

import math

import numpy as np

from pose_vq.data import skeleton


def _in_box(p, lo_pts, hi_pts, sigma, size):
    """The reference's integer-truncated drawing box, per axis."""
    for k in range(len(p)):
        lo = max(int(lo_pts[k] - 3 * sigma), 0)
        hi = min(int(hi_pts[k] + 3 * sigma) + 1, size)
        if not lo <= p[k] < hi:
            return False
    return True


def _seg_dist2(p, a, b):
    p, a, b = (np.asarray(v, float) for v in (p, a, b))
    t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0.0, 1.0)
    return float(np.sum((p - (a + t * (b - a))) ** 2))


def oracle_pixel_2d(x, y, pts, scores, sigma, size, kind="limb"):
    """Value of pixel (x, y) for every limb (or joint): a list, one entry per channel."""
    values = []
    items = skeleton.LIMBS if kind == "limb" else [(j, j) for j in range(len(pts))]
    for ia, ib in items:
        a, b = pts[ia], pts[ib]
        if kind == "keypoint" or (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 < 1:
            val = scores[ia]
            c = [round(a[0]), round(a[1])]
            if val < 1e-3 or not _in_box((x, y), c, c, sigma, size):
                values.append(0.0)
            else:
                values.append(val * math.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2) / (2 * sigma**2)))
            continue
        val = min(scores[ia], scores[ib])
        if val < 1e-3 or not _in_box((x, y), np.minimum(a, b), np.maximum(a, b), sigma, size):
            values.append(0.0)
            continue
        values.append(val * math.exp(-_seg_dist2((x, y), a, b) / (2 * sigma**2)))
    return values


def oracle_2d(pts, scores, sigma, size, combine, kind="limb"):
    channels = []
    for f in range(len(pts)):
        frame = np.zeros((size, size, len(skeleton.LIMBS) if kind == "limb" else pts.shape[1]))
        for y in range(size):
            for x in range(size):
                frame[y, x] = oracle_pixel_2d(x, y, pts[f], scores[f], sigma, size, kind)
        channels.append(frame.max(-1, keepdims=True) if combine else frame)
    return np.stack(channels)


def oracle_3d(pts, scores, sigma, size):
    """Brute force: every voxel of the volume, then max-projections."""
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).astype(float)
    out = []
    for f in range(len(pts)):
        vol = np.zeros((size,) * 3)
        for ia, ib in skeleton.LIMBS:
            a, b = pts[f, ia], pts[f, ib]
            val = min(scores[f, ia], scores[f, ib])
            if val < 1e-5 or np.sum((a - b) ** 2) < 1e-5:
                continue
            d = b - a
            t = np.clip(((grid - a) @ d) / (d @ d), 0, 1)
            d2 = np.sum((grid - (a + t[..., None] * d)) ** 2, -1)
            box = np.ones((size,) * 3, bool)
            for k in range(3):
                lo = max(int(min(a[k], b[k]) - 3 * sigma), 0)
                hi = min(int(max(a[k], b[k]) + 3 * sigma) + 1, size)
                coord = grid[..., k]
                box &= (coord >= lo) & (coord < hi)
            vol = np.maximum(vol, np.where(box, val * np.exp(-d2 / (2 * sigma**2)), 0))
        out.append(np.stack([vol.max(0), vol.max(1), vol.max(2)], -1))
    return np.stack(out)


def far_heat(planes, segments, reach):
    """The largest value of (T, H, W) planes farther than ``reach`` pixels from every
    segment of their frame. ``segments`` (T, S, 2, 2): endpoint pairs as (x = column,
    y = row), NaN where a frame has fewer than S; zero-length segments are points."""
    planes = np.asarray(planes, float)
    t, h, w = planes.shape
    ys, xs = np.mgrid[:h, :w]
    p = np.stack([xs, ys], -1).reshape(1, -1, 1, 2).astype(float)
    seg = np.asarray(segments, float).reshape(t, 1, -1, 2, 2)
    a, b = seg[..., 0, :], seg[..., 1, :]
    d = b - a
    u = np.clip(np.sum((p - a) * d, -1) / np.maximum(np.sum(d * d, -1), 1e-12), 0.0, 1.0)
    dist = np.linalg.norm(p - (a + u[..., None] * d), axis=-1)
    dist = np.where(np.isnan(dist), np.inf, dist).min(-1, initial=np.inf).reshape(t, h, w)
    return float(np.where(dist > reach, planes, 0.0).max())
