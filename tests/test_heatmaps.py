"""Renderers against the slow, obviously-correct oracles of tests/heatmap_oracle.py."""

import numpy as np
import pytest

from pose_vq.data import heatmaps, skeleton
from tests.heatmap_oracle import oracle_2d, oracle_3d


def _random_pose(rng, frames, size, dims):
    pts = rng.uniform(2, size - 3, size=(frames, skeleton.NUM_JOINTS, dims))
    pts[0, 1] = pts[0, 3] + 0.4  # a limb shorter than one pixel: keypoint fallback
    pts[-1, 5] = [size - 1.2] + [1.3] * (dims - 1)  # near the border
    scores = rng.uniform(0, 1, size=(frames, skeleton.NUM_JOINTS))
    scores[0, 7] = 0.0005  # below the drawing threshold
    return pts, scores


@pytest.mark.parametrize("combine", [True, False])
def test_limbs_2d_match_oracle(combine):
    rng = np.random.default_rng(0)
    size = 24
    pts, scores = _random_pose(rng, 3, size, 2)
    fast = heatmaps.render_2d(pts, scores, size, sigma=0.75, combine=combine)
    slow = oracle_2d(pts, scores, 0.75, size, combine)
    assert fast.shape == slow.shape
    assert np.abs(fast - slow).max() <= 1e-5
    assert fast.max() > 0.1


def test_keypoints_2d_match_oracle():
    rng = np.random.default_rng(1)
    size = 20
    pts, scores = _random_pose(rng, 2, size, 2)
    pts[1, 4] = [7.5, 8.5]  # half-way: round half to even like Python's round
    fast = heatmaps.render_2d(pts, scores, size, sigma=1.5, kind="keypoint", combine=False)
    slow = oracle_2d(pts, scores, 1.5, size, combine=False, kind="keypoint")
    assert np.abs(fast - slow).max() <= 1e-5


@pytest.mark.parametrize("sigma", [0.75, 1.6])
def test_3d_projections_match_brute_force_volume(sigma):
    rng = np.random.default_rng(2)
    size = 20
    pts, scores = _random_pose(rng, 3, size, 3)
    pts[1, 8] = pts[1, 7] + [0.0, 0.0, 6.0]  # a limb along the projected z axis
    pts[2, 13] = pts[2, 12] + [0.2, 0.1, 0.0]  # short in 3D, still drawn
    fast = heatmaps.render_3d_projections(pts, scores, size, sigma=sigma)
    slow = oracle_3d(pts, scores, sigma, size)
    assert np.abs(fast - slow).max() <= 1e-5
    assert fast.max() > 0.1


def test_3d_value_applied_once():
    """The reference squared the limb value; the peak of a drawn limb is its value."""
    pts = np.full((1, skeleton.NUM_JOINTS, 3), 10.0)
    ia, ib = skeleton.LIMBS[3]
    pts[0, ia] = [4.0, 10.0, 10.0]
    pts[0, ib] = [14.0, 10.0, 10.0]
    scores = np.zeros((1, skeleton.NUM_JOINTS))
    scores[0, [ia, ib]] = 0.5
    out = heatmaps.render_3d_projections(pts, scores, 20)
    assert out.max() == pytest.approx(0.5)


def test_scale_and_center_fits_and_centres():
    rng = np.random.default_rng(3)
    pts = rng.normal(500, 200, size=(2, 5, 19, 2))
    pts[1] *= 0.1
    fitted = heatmaps.scale_and_center(pts, 64)
    for c in range(2):
        lo, hi = fitted[c].min(axis=(0, 1)), fitted[c].max(axis=(0, 1))
        assert max(hi - lo) == pytest.approx(0.9 * 64)
        np.testing.assert_allclose((lo + hi) / 2, 32)
    # Shape is preserved up to one isotropic scale.
    ratio = (fitted[0, 1, 3] - fitted[0, 0, 0]) / (pts[0, 1, 3] - pts[0, 0, 0])
    assert ratio[0] == pytest.approx(ratio[1])


def test_scale_and_center_degenerate_point():
    fitted = heatmaps.scale_and_center(np.ones((1, 2, 19, 3)), 16)
    assert np.all(np.isfinite(fitted))
    np.testing.assert_allclose(fitted, 8.0)


def test_gaussian_scores_clipped_and_seeded():
    a = heatmaps.gaussian_scores(np.random.default_rng(0), (1000,))
    b = heatmaps.gaussian_scores(np.random.default_rng(0), (1000,))
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert abs(a.mean() - 0.65) < 0.02


def test_render_views_modes():
    rng = np.random.default_rng(4)
    views = rng.uniform(0, 1920, size=(3, 4, 19, 2))
    scores = np.ones((3, 4, 19))
    m2d = heatmaps.render_views(views, scores, 32)
    assert m2d.shape == (4, 32, 32, 3)
    c2d = heatmaps.render_views(views[:1], scores[:1], 32, per_limb=True)
    assert c2d.shape == (4, 32, 32, skeleton.NUM_LIMBS)
    np.testing.assert_allclose(c2d.max(-1), m2d[..., 0], atol=1e-7)
    with pytest.raises(ValueError, match="exactly one camera"):
        heatmaps.render_views(views, scores, 32, per_limb=True)


def test_scale_and_center_leaves_absent_points_out_of_the_fit():
    rng = np.random.default_rng(5)
    pts = rng.normal(500, 200, size=(2, 4, 19, 2))
    with_absent = pts.copy()
    with_absent[0, 1, 3] = np.nan  # absent joints: NaN (one coordinate is enough)
    with_absent[1, :, 8, 0] = np.nan
    with_absent[1, 2, 5] = np.nan
    fitted = heatmaps.scale_and_center(with_absent, 32)
    present = np.isfinite(with_absent).all(-1)
    np.testing.assert_array_equal(np.isfinite(fitted).all(-1), present)
    for c in range(2):  # the same fit as of the present points alone
        kept = pts[c][present[c]]
        alone = heatmaps.scale_and_center(kept[None, None], 32)[0, 0]
        np.testing.assert_allclose(fitted[c][present[c]], alone, rtol=1e-12)
    with np.errstate(all="raise"):  # a slice with no point at all: left NaN, no warning
        assert np.isnan(heatmaps.scale_and_center(np.full((1, 2, 19, 3), np.nan), 16)).all()


def test_renderers_skip_non_finite_joints():
    """A NaN joint draws nothing and ends every limb it is in: the same heatmaps as
    scoring it 0 (only its limbs are left out)."""
    rng = np.random.default_rng(6)
    size = 20
    pts, scores = _random_pose(rng, 2, size, 3)
    scores = np.maximum(scores, 0.1)
    gone = pts.copy()
    gone[0, 8], gone[1, 1, 0] = np.nan, np.nan  # one coordinate is enough
    zero = scores.copy()
    zero[0, 8] = zero[1, 1] = 0.0
    np.testing.assert_array_equal(heatmaps.render_3d_projections(gone, scores, size),
                                  heatmaps.render_3d_projections(pts, zero, size))
    for kind in ("limb", "keypoint"):
        np.testing.assert_array_equal(
            heatmaps.render_2d(gone[..., :2], scores, size, kind=kind, combine=False),
            heatmaps.render_2d(pts[..., :2], zero, size, kind=kind, combine=False))
