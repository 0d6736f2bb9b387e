"""Pose errors and losses against hand-made cases and plain numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose_vq.downstream import pose3d


@pytest.fixture(scope="module")
def poses():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(3, 5, 19, 3))
    weight = (rng.random((3, 5, 19)) > 0.2).astype(np.float32)
    return target, weight


def test_mpjpe_of_a_known_offset_ignores_absent_joints(poses):
    target, weight = poses
    pred = target + np.array([3.0, 4.0, 0.0])  # every joint 5 away
    pred = np.where(weight[..., None] > 0, pred, 1e6)  # absent joints: anything
    assert pose3d.mpjpe(pred, target, weight) == pytest.approx(5.0)


def test_procrustes_of_a_rotated_scaled_shifted_copy_is_zero(poses):
    target, weight = poses
    rot = Rotation.random(15, random_state=1).as_matrix().reshape(3, 5, 3, 3)
    pred = 2.5 * np.einsum("ntij,ntkj->ntki", rot, target) + np.array([1.0, -2.0, 0.5])
    assert pose3d.mpjpe(pred, target, weight) > 0.5
    assert pose3d.p_mpjpe(pred, target, weight) == pytest.approx(0.0, abs=1e-9)
    # A mirror image is not a rotation: Procrustes must not undo it.
    mirrored = target * np.array([-1.0, 1.0, 1.0])
    assert pose3d.p_mpjpe(mirrored, target, weight) > 0.1


def test_n_mpjpe_removes_scale_only(poses):
    target, weight = poses
    assert pose3d.n_mpjpe(0.7 * target, target, weight) == pytest.approx(0.0, abs=1e-12)
    shifted = target + 1.0
    assert pose3d.n_mpjpe(shifted, target, weight) > 0.1


def test_errors_average_per_clip_then_over_clips():
    target = np.zeros((2, 2, 3, 3))
    pred = target.copy()
    pred[0] += [1.0, 0.0, 0.0]  # clip 0: error 1 on its one counted joint
    pred[1] += [3.0, 0.0, 0.0]  # clip 1: error 3 on its six
    weight = np.zeros((2, 2, 3))
    weight[0, 0, 0] = 1.0
    weight[1] = 1.0
    assert pose3d.mpjpe(pred, target, weight) == pytest.approx(2.0)


def test_velocity_error_of_a_constant_offset_is_zero_and_of_a_drift_is_its_step(poses):
    target, weight = poses
    assert pose3d.velocity_error(target + 2.0, target, weight) == pytest.approx(0.0, abs=1e-12)
    drift = target + np.arange(5)[None, :, None, None] * np.array([0.0, 0.0, 0.3])
    assert pose3d.velocity_error(drift, target, weight) == pytest.approx(0.3)


def test_losses_equal_numpy_errors_and_have_finite_gradients(poses):
    target, weight = poses
    rng = np.random.default_rng(1)
    pred = target + rng.normal(scale=0.1, size=target.shape)
    # Per-clip means equal pooled means when every clip counts the same joints.
    w = np.ones_like(weight)
    args = [jnp.asarray(a, jnp.float32) for a in (pred, target, w)]
    assert float(pose3d.mpjpe_loss(*args)) == pytest.approx(pose3d.mpjpe(pred, target, w), rel=1e-5)
    assert float(pose3d.n_mpjpe_loss(*args)) == pytest.approx(pose3d.n_mpjpe(pred, target, w), rel=1e-4)
    assert float(pose3d.velocity_loss(*args)) == pytest.approx(
        pose3d.velocity_error(pred, target, w), rel=1e-5)
    total, terms = pose3d.lifting_loss(*args)
    assert float(total) == pytest.approx(
        float(terms["mpjpe"] + 0.5 * terms["n_mpjpe"] + 20 * terms["velocity"]), rel=1e-6)
    grad = jax.grad(lambda p: pose3d.lifting_loss(p, args[1], jnp.asarray(weight))[0])(args[1])
    assert np.isfinite(np.asarray(grad)).all()  # at zero error too
