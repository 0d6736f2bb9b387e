"""3D pose errors and losses with absent joints masked out.

Evaluation errors are numpy, per clip then averaged over clips; losses are jax. Poses are
(..., T, J, 3) with a weight (..., T, J) that is 1 where the joint counts and 0 where it
is absent (never reconstructed) or unusable; a frame or clip with no weight is left out.

- MPJPE: mean Euclidean distance per joint (MotionBERT's protocol 1).
- N-MPJPE: after the least-squares scale of each frame's prediction (scale only).
- P-MPJPE: after each frame's similarity Procrustes alignment (scale, rotation and
  translation; protocol 2), reflections excluded.
- Velocity error (MPJVE): of the frame-to-frame differences.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def _per_clip(values: np.ndarray, weight: np.ndarray) -> float:
    """Mean over clips of each clip's weighted mean of ``values`` (N, T, J)."""
    values, weight = values.reshape(len(values), -1), weight.reshape(len(weight), -1)
    counts = weight.sum(axis=1)
    used = counts > 0
    return float(np.mean((values * weight).sum(axis=1)[used] / counts[used])) if used.any() \
        else float("nan")


def _as_clips(*arrays: np.ndarray) -> list[np.ndarray]:
    """(T, J, D) or (N, T, J, D) float64 arrays -> (N, T, J, D)."""
    return [np.asarray(a, np.float64).reshape((-1,) + np.shape(a)[-3:]) for a in arrays]


def mpjpe(pred: np.ndarray, target: np.ndarray, weight: np.ndarray) -> float:
    pred, target = _as_clips(pred, target)
    w = np.asarray(weight, np.float64).reshape(pred.shape[:-1])
    return _per_clip(np.linalg.norm(pred - target, axis=-1), w)


def scale_align(pred: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Each frame's prediction times the scale minimising its weighted squared error."""
    pred, target = _as_clips(pred, target)
    w = np.asarray(weight, np.float64).reshape(pred.shape[:-1])[..., None]
    num, den = (w * pred * target).sum(axis=(-2, -1)), (w * pred * pred).sum(axis=(-2, -1))
    scale = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    return pred * scale[..., None, None]


def procrustes_align(pred: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Each frame's prediction under the similarity transform (scale, proper rotation,
    translation) that best fits its weighted joints to the target's (Umeyama)."""
    pred, target = _as_clips(pred, target)
    w = np.asarray(weight, np.float64).reshape(pred.shape[:-1])[..., None]
    count = np.maximum(w.sum(axis=-2, keepdims=True), 1e-12)
    mu_p, mu_t = (w * pred).sum(-2, keepdims=True) / count, (w * target).sum(-2, keepdims=True) / count
    p0, t0 = pred - mu_p, target - mu_t
    cov = np.einsum("...ji,...jk->...ik", w * t0, p0)  # (…, 3, 3): target^T pred
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))  # -1: the best orthogonal map is a reflection
    fix = np.ones_like(s)
    fix[..., -1] = d
    rot = u @ (fix[..., None] * vt)  # target ~ rot @ pred
    var_p = (w * p0 ** 2).sum(axis=(-2, -1))
    scale = np.where(var_p > 0, (s * fix).sum(-1) / np.where(var_p > 0, var_p, 1.0), 1.0)
    return scale[..., None, None] * np.einsum("...ik,...jk->...ji", rot, p0) + mu_t


def n_mpjpe(pred: np.ndarray, target: np.ndarray, weight: np.ndarray) -> float:
    return mpjpe(scale_align(pred, target, weight), target, weight)


def p_mpjpe(pred: np.ndarray, target: np.ndarray, weight: np.ndarray) -> float:
    return mpjpe(procrustes_align(pred, target, weight), target, weight)


def velocity_error(pred: np.ndarray, target: np.ndarray, weight: np.ndarray) -> float:
    """MPJVE: the mean distance between predicted and true per-frame displacements, over
    joints counted in both frames of a step."""
    pred, target = _as_clips(pred, target)
    w = np.asarray(weight, np.float64).reshape(pred.shape[:-1])
    dv = np.diff(pred, axis=1) - np.diff(target, axis=1)
    return _per_clip(np.linalg.norm(dv, axis=-1), w[:, 1:] * w[:, :-1])


def errors_mm(pred: np.ndarray, target: np.ndarray, weight: np.ndarray,
              unit_mm: float) -> dict[str, float]:
    """The four errors in millimetres for poses in units of ``unit_mm`` millimetres."""
    return {name: unit_mm * fn(pred, target, weight) for name, fn in (
        ("mpjpe", mpjpe), ("n_mpjpe", n_mpjpe), ("p_mpjpe", p_mpjpe),
        ("velocity_error", velocity_error))}


# ----------------------------------------------------------------------------- losses


def _masked_mean(values, weight):
    return (values * weight).sum() / jnp.maximum(weight.sum(), 1.0)


def _norm(x):
    """Euclidean norm over the last axis with a finite gradient at zero."""
    return jnp.sqrt(jnp.sum(x * x, axis=-1) + 1e-12)


def mpjpe_loss(pred, target, weight):
    return _masked_mean(_norm(pred - target), weight)


def n_mpjpe_loss(pred, target, weight):
    """MotionBERT's scale-normalised MPJPE: each frame's prediction at its least-squares
    scale (over the counted joints)."""
    w = weight[..., None]
    scale = (w * pred * target).sum((-2, -1)) / jnp.maximum((w * pred * pred).sum((-2, -1)), 1e-12)
    return mpjpe_loss(scale[..., None, None] * pred, target, weight)


def velocity_loss(pred, target, weight):
    dv = jnp.diff(pred, axis=-3) - jnp.diff(target, axis=-3)
    return _masked_mean(_norm(dv), weight[..., 1:, :] * weight[..., :-1, :])


def lifting_loss(pred, target, weight, scale_weight: float = 0.5,
                 velocity_weight: float = 20.0) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """MotionBERT's 3D loss: MPJPE + 0.5 N-MPJPE + 20 velocity error (its pose3d configs'
    lambda_scale and lambda_3d_velocity); returns the total and its terms."""
    terms = {"mpjpe": mpjpe_loss(pred, target, weight),
             "n_mpjpe": n_mpjpe_loss(pred, target, weight),
             "velocity": velocity_loss(pred, target, weight)}
    total = terms["mpjpe"] + scale_weight * terms["n_mpjpe"] + velocity_weight * terms["velocity"]
    return total, terms
