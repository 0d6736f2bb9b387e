"""modes.joint_pixels puts each stored joint where the renderer drew it, per target channel."""

import numpy as np
import pytest

from pose_vq.data import modes, skeleton

LIMB_JOINTS = sorted({j for limb in skeleton.LIMBS for j in limb})  # the neck is in no limb


def _examples(builder, n=4):
    source = builder.as_data_source(split="train")
    return [source[i] for i in range(min(n, len(source)))]


def _values_at(clip, points):
    """clip (T, H, W, C) values at the rounded (x, y) of points (C, T, J, 2) -> (C, T, J)."""
    t, size = clip.shape[0], clip.shape[1]
    xy = np.clip(np.rint(points), 0, size - 1).astype(int)
    c_idx, t_idx = np.meshgrid(np.arange(points.shape[0]), np.arange(t), indexing="ij")
    return clip[t_idx[..., None], xy[..., 1], xy[..., 0], c_idx[..., None]]


@pytest.mark.parametrize("mode", ["m2d", "c2d"])
def test_keypoint_peaks_at_joint_pixels(build_small, mode):
    builder = build_small(mode, kind="keypoint", score_source="ones")
    m = modes.MODES[mode]
    for ex in _examples(builder):
        target = modes.target_from_input(m, ex["heatmaps"].astype(np.float32) / 255)
        points = modes.joint_pixels(m, ex["joints2d"], ex["joints3d"], target.shape[1])
        assert points.shape == (target.shape[-1], target.shape[0], skeleton.NUM_JOINTS, 2)
        inside = np.all((points >= -0.5) & (points < target.shape[1] - 0.5), axis=-1)
        assert inside.mean() > 0.9
        # Full-strength keypoints peak at 1 exactly at their rounded centres.
        np.testing.assert_array_equal(_values_at(target, points)[inside], 1.0)


@pytest.mark.parametrize("mode", ["3d", "m2d_3d"])
def test_3d_joints_lie_on_their_limbs_in_every_plane(build_small, mode):
    builder = build_small(mode, score_source="ones")
    m = modes.MODES[mode]
    key = "target_heatmaps" if m.has_separate_target else "heatmaps"
    for ex in _examples(builder):
        target = ex[key].astype(np.float32) / 255
        points = modes.joint_pixels(m, ex["joints2d"], ex["joints3d"], target.shape[1])
        assert points.shape == (3, target.shape[0], skeleton.NUM_JOINTS, 2)
        # A limb endpoint is at most half a voxel's diagonal from the nearest voxel
        # centre of the projected column: exp(-0.75 / (2 * 0.75^2)) = 0.51 of full strength.
        values = _values_at(target, points)[..., LIMB_JOINTS]
        assert values.min() >= 0.51 - 1 / 255
        # Off the joints, most pixels are background: the check is not vacuous.
        assert np.mean(target < 0.1) > 0.5


def test_keypoint_kind_is_refused_for_3d(build_small):
    with pytest.raises(ValueError, match="3D limbs only"):
        build_small("3d", kind="keypoint")
