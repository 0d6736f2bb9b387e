"""Clip reconstruction metrics: per-frame SSIM / PSNR / L1 curves and their T-Std.

Re-implements the reference (PyTorch, piq-based) evaluation in JAX so that numbers are
comparable with the paper. Clips are ``(B, T, H, W, C)`` arrays nominally in [0, 1];
both target and prediction are clipped to [0, 1] first and everything is computed in
float32 whatever the input dtype.

Per clip, each metric's per-frame curve gives its mean over frames, its raw standard
deviation (``*_std``) and the standard deviation of the min-max normalised curve
(``*_tstd``); ``t_std`` is the mean of the three ``*_tstd`` (the paper's T-Std).
Standard deviations use ``ddof=1`` (torch's default, as in the reference).

T-Std is the spread of normalised curves, so it is blind to scale (an all-zeros
prediction scores like a good one). Beside it, in units: ``tdiff_l1``, the mean absolute
error of the frame-to-frame change of the heatmaps (intensity per frame), and for
keypoint heatmaps the decoded joints' velocity and acceleration errors
(``keypoint_motion_errors``, px/frame and px/frame^2).

Difference from the reference: it reshapes its ``(b, c, f, x, y)`` SSIM scores to
``(b*f*c)`` and views them back as ``(b, f, c)``, which mixes channels and frames in its
per-frame SSIM curve. The SSIM mean is unaffected but its T-Std is not; here the curve
is computed per frame as intended. So every value but ``ssim_tstd`` (and ``ssim_std``)
and with it ``t_std`` is comparable with the paper's numbers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

METRIC_KEYS = ("ssim", "psnr", "l1", "ssim_tstd", "psnr_tstd", "l1_tstd",
               "ssim_std", "psnr_std", "l1_std", "t_std", "tdiff_l1")

_WIN, _SIGMA, _K1, _K2 = 11, 1.5, 0.01, 0.03
# Identical frames have mse 0; flooring it makes their PSNR a finite 100 dB, not inf.
_MSE_FLOOR = 1e-10


def _gaussian_band(n: int) -> np.ndarray:
    """(n - 10, n) matrix whose row i holds the normalised 11-tap Gaussian at i..i+10.

    Left-multiplying by it is a 'valid' (unpadded) 1-D Gaussian filter along that axis.
    """
    taps = np.exp(-((np.arange(_WIN) - _WIN // 2) ** 2) / (2 * _SIGMA**2))
    taps /= taps.sum()
    band = np.zeros((n - _WIN + 1, n))
    for i in range(n - _WIN + 1):
        band[i, i:i + _WIN] = taps
    return band.astype(np.float32)


def ssim_planes(x: ArrayLike, y: ArrayLike, data_range: float = 1.0) -> Array:
    """SSIM (Wang et al. 2004) of each (H, W) plane: (..., H, W) -> (...), float32.

    11-tap Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population statistics,
    averaged over the valid (unpadded) region; matches scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`` and piq.ssim (below 384 px, where piq's default
    ``downsample=True`` starts average-pooling first). The separable filter is two
    exact float32 matmuls with banded matrices, which is cheap at heatmap sizes.
    """
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    if x.shape != y.shape:
        raise ValueError(f"ssim_planes: shapes differ, {x.shape} vs {y.shape}")
    h, w = x.shape[-2:]
    if min(h, w) < _WIN:
        raise ValueError(f"ssim_planes: planes must be at least {_WIN}x{_WIN} pixels "
                         f"(the Gaussian window), got {h}x{w}")
    # (Co)variances are shift-invariant; centring both planes on their joint mean first
    # keeps E[x^2] - E[x]^2 from cancelling catastrophically in float32 on flat,
    # bright planes (where it would otherwise push SSIM above 1).
    shift = 0.5 * (jnp.mean(x, axis=(-2, -1), keepdims=True)
                   + jnp.mean(y, axis=(-2, -1), keepdims=True))
    x, y = x - shift, y - shift
    g_h, g_w = _gaussian_band(h), _gaussian_band(w)
    stats = jnp.stack([x, y, x * x, y * y, x * y])
    mu_x, mu_y, e_xx, e_yy, e_xy = jnp.einsum(
        "oh,...hw,pw->...op", g_h, stats, g_w, precision=jax.lax.Precision.HIGHEST)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    mu_x, mu_y = mu_x + shift, mu_y + shift
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return jnp.mean(ssim_map, axis=(-2, -1))


def frame_curves(target: ArrayLike, pred: ArrayLike) -> dict[str, Array]:
    """Per-frame metric curves of (B, T, H, W, C) clips: "ssim", "psnr", "l1", each (B, T).

    SSIM is taken per channel plane then averaged over channels; PSNR uses data range 1
    and floors the mse at 1e-10, so identical frames score 100 dB rather than inf.
    """
    target = jnp.clip(jnp.asarray(target, jnp.float32), 0.0, 1.0)
    pred = jnp.clip(jnp.asarray(pred, jnp.float32), 0.0, 1.0)
    if target.shape != pred.shape or target.ndim != 5:
        raise ValueError("frame_curves: expected two (B, T, H, W, C) clips of equal shape, "
                         f"got {target.shape} and {pred.shape}")
    diff = target - pred
    mse = jnp.mean(diff * diff, axis=(2, 3, 4))
    ssim = ssim_planes(jnp.moveaxis(target, -1, 2), jnp.moveaxis(pred, -1, 2))
    return {
        "ssim": jnp.mean(ssim, axis=-1),
        "psnr": -10.0 * jnp.log10(jnp.maximum(mse, _MSE_FLOOR)),
        "l1": jnp.mean(jnp.abs(diff), axis=(2, 3, 4)),
    }


def _normalised_std(curve: Array) -> Array:
    """ddof=1 std over frames of the min-max normalised curve; 0 for a constant curve.

    The reference would give NaN (0 / 0) for a constant curve; a curve that does not
    move has no temporal fluctuation, so 0 is the meaningful value.
    """
    lo = jnp.min(curve, axis=-1, keepdims=True)
    span = jnp.max(curve, axis=-1, keepdims=True) - lo
    flat = span == 0
    normalised = jnp.where(flat, 0.0, (curve - lo) / jnp.where(flat, 1.0, span))
    return jnp.std(normalised, axis=-1, ddof=1)


def temporal_difference_error(target: ArrayLike, pred: ArrayLike) -> Array:
    """Per-clip (B,) mean over frame pairs, pixels and channels of
    |(pred[t+1] - pred[t]) - (target[t+1] - target[t])|, both clipped to [0, 1]: how far
    the prediction's change from frame to frame is from the target's (heatmap intensity
    per frame). It is 0 where the two clips differ by the same image in every frame (a
    still offset), and it is taken pixel by pixel, so a copy of a moving clip shifted by
    a pixel is not 0 (the joints' velocity error is the shift-invariant one). A still
    prediction, all zeros included, scores the target's own mean absolute change."""
    target = jnp.clip(jnp.asarray(target, jnp.float32), 0.0, 1.0)
    pred = jnp.clip(jnp.asarray(pred, jnp.float32), 0.0, 1.0)
    change = jnp.diff(pred, axis=1) - jnp.diff(target, axis=1)
    return jnp.mean(jnp.abs(change), axis=(1, 2, 3, 4))


def clip_metrics(target: ArrayLike, pred: ArrayLike) -> dict[str, Array]:
    """Per-clip (B,) float32 metrics, keyed by ``METRIC_KEYS``; jit-able.

    For m in (ssim, psnr, l1): ``m`` is the curve's mean over frames, ``m_tstd`` the
    std of its min-max normalised curve and ``m_std`` its raw std (both ddof=1, as
    torch). ``t_std`` is the mean of the three ``m_tstd``; ``tdiff_l1`` is
    ``temporal_difference_error``. Needs T >= 2 frames.
    """
    curves = frame_curves(target, pred)
    if curves["l1"].shape[1] < 2:
        raise ValueError("clip_metrics: need at least 2 frames for a std over time, "
                         f"got clips of shape {jnp.shape(target)}")
    out = {}
    for name, curve in curves.items():
        out[name] = jnp.mean(curve, axis=-1)
        out[f"{name}_tstd"] = _normalised_std(curve)
        out[f"{name}_std"] = jnp.std(curve, axis=-1, ddof=1)
    out["t_std"] = (out["ssim_tstd"] + out["psnr_tstd"] + out["l1_tstd"]) / 3.0
    out["tdiff_l1"] = temporal_difference_error(target, pred)
    return {key: out[key] for key in METRIC_KEYS}


# ------------------------------------------------------------------- keypoint space

KEYPOINT_PRESENT = 0.1  # a joint counts where the target's window peaks above this
KEYPOINT_FOUND = 0.5  # ... and is missed where the prediction's peak is below this x the target's


def keypoint_radius(sigma: float) -> int:
    """Half-width of the soft-argmax window: 3 sigma (the drawn blob), at least 2 px."""
    return max(2, math.ceil(3 * sigma))


def _window_stats(clips: Array, centre: Array, radius: int) -> tuple[Array, Array, Array]:
    """Peak, soft-argmax x and y of the (2R+1)^2 window around integer ``centre`` pixels.

    clips (B, T, H, W, C); centre (B, C, T, J, 2) as (x, y). Outside the image counts as 0;
    an empty window's soft-argmax is its centre.
    """
    b, t, h, w, c = clips.shape
    offsets = jnp.arange(-radius, radius + 1)
    xs = centre[..., 0, None, None] + offsets[None, :]  # (B, C, T, J, 1, K)
    ys = centre[..., 1, None, None] + offsets[:, None]  # (B, C, T, J, K, 1)
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    index = lambda n, axis: jnp.arange(n).reshape([-1 if i == axis else 1 for i in range(6)])
    values = clips[index(b, 0), index(t, 2), jnp.clip(ys, 0, h - 1), jnp.clip(xs, 0, w - 1),
                   index(c, 1)]
    values = jnp.where(inside, jnp.clip(values, 0.0, 1.0), 0.0)
    mass = jnp.sum(values, axis=(-2, -1))
    safe = jnp.where(mass > 0, mass, 1.0)
    x = jnp.where(mass > 0, jnp.sum(values * xs, axis=(-2, -1)) / safe, centre[..., 0])
    y = jnp.where(mass > 0, jnp.sum(values * ys, axis=(-2, -1)) / safe, centre[..., 1])
    return jnp.max(values, axis=(-2, -1)), x, y


def _decode_keypoints(target: ArrayLike, pred: ArrayLike, points: ArrayLike,
                      radius: int) -> tuple[Array, Array, Array, Array]:
    """(present, missed, offset, target_offset) of every (B, C, T, J) joint: the
    definitions in ``keypoint_errors``; ``offset`` (B, C, T, J, 2) is the prediction's
    soft-argmax minus the stored joint in pixels, ``target_offset`` the target's (NaN where
    the joint is absent)."""
    target = jnp.asarray(target, jnp.float32)
    pred = jnp.asarray(pred, jnp.float32)
    points = jnp.asarray(points, jnp.float32)
    finite = jnp.all(jnp.isfinite(points), axis=-1)
    centre = jnp.round(jnp.where(finite[..., None], points, -1e4)).astype(jnp.int32)
    target_peak, target_x, target_y = _window_stats(target, centre, radius)
    pred_peak, x, y = _window_stats(pred, centre, radius)
    present = finite & (target_peak > KEYPOINT_PRESENT)
    missed = present & (pred_peak < KEYPOINT_FOUND * target_peak)
    offset = lambda u, v: jnp.stack([u - points[..., 0], v - points[..., 1]], axis=-1)
    return present, missed, offset(x, y), offset(target_x, target_y)


def _per_clip(values: Array) -> Array:
    """(B, C, T, J) -> (B,) float32 sums."""
    return jnp.sum(values.astype(jnp.float32), axis=(1, 2, 3))


def keypoint_errors(target: ArrayLike, pred: ArrayLike, points: ArrayLike,
                    radius: int) -> dict[str, Array]:
    """Per-clip sums for the keypoint-space error of keypoint heatmap clips; jit-able.

    ``points`` (B, C, T, J, 2) are the stored joints in heatmap pixels (x, y) per target
    channel (``modes.joint_pixels``; non-finite: absent). For every joint present in the
    target (its window around the rounded joint peaks above KEYPOINT_PRESENT), the
    prediction's joint is the soft-argmax (intensity-weighted centroid) of the same
    window; the error is its distance to the stored joint, in pixels. A joint whose
    predicted peak is below KEYPOINT_FOUND x the target's is missed and scores ``radius``,
    so an empty prediction cannot score a small error. Returns (B,) ``kp_error_sum``,
    ``kp_missed_sum`` and ``kp_count`` (present joints).
    """
    present, missed, offset, _ = _decode_keypoints(target, pred, points, radius)
    distance = jnp.hypot(offset[..., 0], offset[..., 1])
    error = jnp.where(missed, float(radius), jnp.where(present, distance, 0.0))
    return {"kp_error_sum": _per_clip(error), "kp_missed_sum": _per_clip(missed),
            "kp_count": _per_clip(present)}


def keypoint_motion_errors(target: ArrayLike, pred: ArrayLike, points: ArrayLike,
                           radius: int) -> dict[str, Array]:
    """Per-clip sums for the joints' velocity and acceleration errors; jit-able.

    The decoded joints p (soft-argmax of the prediction, as in ``keypoint_errors``) are
    compared with the stored joints g, the ground truth. Velocity error, px/frame:
    ||(p[t+1] - p[t]) - (g[t+1] - g[t])|| per joint and frame pair; acceleration error,
    px/frame^2: ||(p[t+1] - 2 p[t] + p[t-1]) - (the same of g)|| per joint and frame
    triple. A pair (triple) counts only where the joint is present in the target and
    found (not missed) in the prediction in each of its frames: a missed joint has no
    decoded position (its rate is ``kp_missed``). Frames are the clip's.

    Two references over the same pairs (triples), since which joints are found depends
    on the prediction: ``*_target_sum``, the target heatmaps' own decoded joints (the
    renderer draws joints at whole pixels, so a moving joint's target jumps: not a floor,
    a prediction that moves more smoothly can score below it), and ``*_still_sum``, joints
    standing still (||g[t+1] - g[t]||: the joints' own speed).
    Returns (B,) ``kp_{vel,acc}_sum``, ``kp_{vel,acc}_target_sum``,
    ``kp_{vel,acc}_still_sum``, ``kp_vel_pairs`` and ``kp_acc_triples``.
    """
    present, missed, offset, target_offset = _decode_keypoints(target, pred, points, radius)
    found = present & ~missed
    velocity_ok = found[:, :, 1:] & found[:, :, :-1]
    acceleration_ok = velocity_ok[:, :, 1:] & velocity_ok[:, :, :-1]
    out = {"kp_vel_pairs": _per_clip(velocity_ok), "kp_acc_triples": _per_clip(acceleration_ok)}
    # Offsets p - g of the prediction, the target and joints standing still (p constant).
    for name, off in (("", offset), ("_target", target_offset),
                      ("_still", -jnp.asarray(points, jnp.float32))):
        # (p[t+1] - p[t]) - (g[t+1] - g[t]) is the change of the offset p - g (NaN where
        # a joint is absent: those pairs are masked out).
        velocity = jnp.diff(off, axis=2)
        acceleration = jnp.diff(velocity, axis=2)
        norm = lambda d, ok: _per_clip(jnp.where(ok, jnp.hypot(d[..., 0], d[..., 1]), 0.0))
        out[f"kp_vel{name}_sum"] = norm(velocity, velocity_ok)
        out[f"kp_acc{name}_sum"] = norm(acceleration, acceleration_ok)
    return out
