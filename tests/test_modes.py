"""modes: joint_pixels puts each stored joint where the renderer drew it, per target channel;
absent joints are never drawn nor fitted, in every mode, kind and score source."""

import json

import numpy as np
import pytest

from conftest import SAMPLE_ROOT
from pose_vq.data import heatmaps, modes, panoptic, skeleton, synthetic
from tests.heatmap_oracle import far_heat

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
        points = modes.joint_pixels(m, ex["joints2d"], ex["joints3d"], target.shape[1],
                                    ex["present"])
        assert points.shape == (target.shape[-1], target.shape[0], skeleton.NUM_JOINTS, 2)
        np.testing.assert_array_equal(np.isfinite(points).all(-1), np.broadcast_to(
            ex["present"], points.shape[:-1]))  # absent joints: NaN
        inside = np.all((points >= -0.5) & (points < target.shape[1] - 0.5), axis=-1)
        assert inside.mean() > 0.9
        # Full-strength keypoints peak at 1 exactly at their rounded centres.
        np.testing.assert_array_equal(_values_at(target, np.nan_to_num(points))[inside], 1.0)


@pytest.mark.parametrize("mode", ["3d", "m2d_3d"])
def test_3d_joints_lie_on_their_limbs_in_every_plane(build_small, mode):
    builder = build_small(mode, score_source="ones")
    m = modes.MODES[mode]
    key = "target_heatmaps" if m.has_separate_target else "heatmaps"
    for ex in _examples(builder):
        target = ex[key].astype(np.float32) / 255
        points = modes.joint_pixels(m, ex["joints2d"], ex["joints3d"], target.shape[1],
                                    ex["present"])
        assert points.shape == (3, target.shape[0], skeleton.NUM_JOINTS, 2)
        # A limb endpoint is at most half a voxel's diagonal from the nearest voxel
        # centre of the projected column: exp(-0.75 / (2 * 0.75^2)) = 0.51 of full strength.
        # (An absent joint is NaN; a present one whose limbs are all absent is undrawn.)
        drawn = np.zeros_like(ex["present"])
        for a, b in skeleton.LIMBS:
            both = ex["present"][:, a] & ex["present"][:, b]
            drawn[:, a] |= both
            drawn[:, b] |= both
        values = _values_at(target, np.nan_to_num(points))[:, drawn]
        assert values.min() >= 0.51 - 1 / 255
        # Off the joints, most pixels are background: the check is not vacuous.
        assert np.mean(target < 0.1) > 0.5


def test_keypoint_kind_is_refused_for_3d(build_small):
    with pytest.raises(ValueError, match="3D limbs only"):
        build_small("3d", kind="keypoint")


# ------------------------------------------------------------------- absent joints

SIZE, SIGMA = 32, 0.75
# The clips each mode renders, and the mode whose joint_pixels place that clip's channels.
CLIPS = {"c2d": [("heatmaps", "c2d")], "m2d": [("heatmaps", "m2d")], "3d": [("heatmaps", "3d")],
         "m2d_3d": [("heatmaps", "m2d"), ("target_heatmaps", "m2d_3d")]}
ABSENT = (3, 8, 11, 14, 16)  # l-shoulder (the straightening's), l-ankle, r-wrist, r-ankle, l-ear


def _with_absent_joints(root):
    """Mark one joint per body and frame absent, Panoptic's three ways: (0, 0, 0, -1),
    confidence -1 at its position, and confidence 0.05 at a spot 2.5 m away."""
    for i, path in enumerate(sorted((root / "synth_m" / panoptic.POSE_DIR).glob("*.json"))):
        frame = json.loads(path.read_text())
        for body in frame["bodies"]:
            j = np.reshape(body["joints19"], (19, 4))
            k = ABSENT[(i + body["id"]) % len(ABSENT)]
            j[k] = [(0, 0, 0, -1), (*j[k, :3], -1), (j[k, 0] + 250, *j[k, 1:3], 0.05)][i % 3]
            body["joints19"] = j.ravel().tolist()
        path.write_text(json.dumps(frame))
    return root


@pytest.fixture(scope="module")
def absent_roots(tmp_path_factory):
    """Roots whose windows have absent joints: synthetic ones and the real sample."""
    root = synthetic.write_synthetic_root(
        tmp_path_factory.mktemp("absent"), ["synth_m"], num_frames=24, num_people=2, seed=5,
        missing_joint_prob=0.0, late_entry_prob=0.0, early_exit_prob=0.0)
    roots = [(_with_absent_joints(root), "synth_m")]
    return roots + ([(SAMPLE_ROOT, "160906_band1")] if SAMPLE_ROOT.is_dir() else [])


@pytest.fixture(scope="module")
def absent_windows(absent_roots):
    """mode -> windows with at least one absent joint, from every root."""
    out = {}
    for name, mode in modes.MODES.items():
        out[name] = [w for root, seq in absent_roots for w in list(modes.iter_mode_windows(
            root, seq, mode, length=8, stride=6, summary=panoptic.ReadSummary()))[:3]
            if not w.present.all()]
        assert {w.sequence for w in out[name]} == {seq for _, seq in absent_roots}, name
    return out


def _segments(points, present, items):
    """(T, S, 2, 2) segments of ``items`` (S joint pairs) between present endpoints of
    (T, J, 2) points, NaN where an endpoint is absent."""
    a, b = np.asarray(items).T
    both = (present[:, a] & present[:, b])[..., None, None]
    return np.where(both, np.stack([points[:, a], points[:, b]], axis=2), np.nan)


@pytest.mark.parametrize("score_source", ["gaussian", "ones", "confidence"])
@pytest.mark.parametrize("mode, kind", [("c2d", "limb"), ("c2d", "keypoint"), ("m2d", "limb"),
                                        ("m2d", "keypoint"), ("3d", "limb"), ("m2d_3d", "limb")])
def test_absent_joints_are_never_drawn_nor_fitted(absent_windows, mode, kind, score_source):
    """No heat above 0.05 farther than 3 sigma + 1 px from the limbs (keypoints) between
    present joints, placed by the renderer's fit; that fit's box is the present joints'."""
    m = modes.MODES[mode]
    items = skeleton.LIMBS if kind == "limb" else [(j, j) for j in range(skeleton.NUM_JOINTS)]
    for w in absent_windows[mode]:
        clips = modes.render_clips(m, w, size=SIZE, sigma=SIGMA, kind=kind,
                                   score_source=score_source, rng=np.random.default_rng(0))
        for key, placing in CLIPS[mode]:
            clip = clips[key]
            points = modes.joint_pixels(modes.MODES[placing], w.joints2d, w.joints3d, SIZE,
                                        w.present)
            assert np.isfinite(points).all(-1).tolist() == np.broadcast_to(
                w.present, points.shape[:-1]).tolist()
            # The box of the present joints fills 0.9 of the side along its tightest axis
            # and is centred on every axis: no absent joint took part in the fit.
            present = points[:, w.present]
            lo, hi = present.min(axis=1), present.max(axis=1)
            np.testing.assert_allclose((lo + hi) / 2, SIZE / 2, atol=1e-4)
            if placing in ("3d", "m2d_3d"):  # three planes of one volume
                assert (hi - lo).max() == pytest.approx(0.9 * SIZE, abs=1e-4)
            else:
                np.testing.assert_allclose((hi - lo).max(axis=-1), 0.9 * SIZE, atol=1e-4)
            per_item = mode == "c2d" and key == "heatmaps"  # one limb (joint) per channel
            for c in range(clip.shape[-1]):
                segments = _segments(points[0 if per_item else c], w.present,
                                     [items[c]] if per_item else items)
                assert far_heat(clip[..., c], segments, 3 * SIGMA + 1) <= 0.05, (
                    w.sequence, w.body_id, w.start_frame, key, c)


def test_joint_pixels_without_a_mask_places_every_joint(absent_windows):
    """present=None (datasets before 2.0.0, drawn with every joint) keeps the raw fit."""
    w = absent_windows["m2d"][0]
    raw = modes.joint_pixels(modes.MODES["m2d"], w.joints2d, w.joints3d, SIZE)
    assert np.isfinite(raw).all()
    np.testing.assert_allclose(raw, heatmaps.scale_and_center(w.joints2d, SIZE), rtol=1e-6)
