"""Clip metrics against scikit-image and an independent NumPy loop over the definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pose_vq import metrics


def _sk_ssim(x, y):
    """The Wang et al. SSIM that the module must reproduce, in float64."""
    return structural_similarity(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                 data_range=1.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)


def _blob(h, w, cy, cx, sigma, amp=1.0):
    yy, xx = np.mgrid[:h, :w]
    return amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))


def _plane_pairs(h, w, rng):
    """(target, pred) planes: noise, heatmap-like blobs, degenerate and flat cases."""
    blob = _blob(h, w, h / 2, w / 3, 2.0)
    broad = np.clip(_blob(h, w, 3, 3, 1.5) + 0.9 * _blob(h, w, h - 3, w - 3, 15.0), 0, 1)
    return {
        "uniform": (rng.uniform(size=(h, w)), rng.uniform(size=(h, w))),
        "shifted_blob": (blob, _blob(h, w, h / 2 + 1.5, w / 3 - 1, 2.0)),
        "blurred_scaled_blob": (blob, _blob(h, w, h / 2, w / 3, 3.0, amp=0.7)),
        "identical": (blob, blob),
        "zeros_pred": (blob, np.zeros((h, w))),
        # Flat, bright planes: float32 E[x^2] - E[x]^2 cancels badly here unless centred.
        "flat_bright": (np.ones((h, w)), np.full((h, w), 0.999)),
        "broad_noisy": (broad, np.clip(broad + rng.normal(0, 1e-3, (h, w)), 0, 1)),
    }


@pytest.mark.parametrize("h,w", [(16, 16), (32, 24), (40, 40)])
def test_ssim_planes_matches_skimage(h, w):
    pairs = _plane_pairs(h, w, np.random.default_rng(h * w))
    xs = np.stack([x for x, _ in pairs.values()])
    ys = np.stack([y for _, y in pairs.values()])
    got = np.asarray(metrics.ssim_planes(xs, ys))
    assert got.dtype == np.float32 and got.shape == (len(pairs),)
    for (name, (x, y)), value in zip(pairs.items(), got):
        assert value == pytest.approx(_sk_ssim(x, y), abs=1e-5), name
    assert got[list(pairs).index("identical")] == pytest.approx(1.0, abs=1e-6)


def test_ssim_planes_leading_dims_and_min_size():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(size=(2, 3, 11, 13)), rng.uniform(size=(2, 3, 11, 13))
    got = np.asarray(metrics.ssim_planes(x, y))
    assert got.shape == (2, 3)
    want = [[_sk_ssim(x[i, j], y[i, j]) for j in range(3)] for i in range(2)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim_planes(np.zeros((10, 16)), np.zeros((10, 16)))


def _random_clips(rng, shape=(2, 5, 16, 16, 3), lo=0.0, hi=1.0, noise=0.15):
    target = rng.uniform(lo, hi, size=shape)
    pred = target + rng.normal(0.0, noise, size=shape) * rng.uniform(0.2, 1.0, (shape[1], 1, 1, 1))
    return target.astype(np.float32), pred.astype(np.float32)


def test_psnr_and_l1_curves():
    target, pred = _random_clips(np.random.default_rng(2))
    curves = metrics.frame_curves(target, pred)
    assert set(curves) == {"ssim", "psnr", "l1"}
    t64 = np.clip(target, 0, 1).astype(np.float64)
    p64 = np.clip(pred, 0, 1).astype(np.float64)
    want_psnr = [[peak_signal_noise_ratio(t64[b, f], p64[b, f], data_range=1)
                  for f in range(target.shape[1])] for b in range(target.shape[0])]
    np.testing.assert_allclose(curves["psnr"], want_psnr, rtol=1e-5)
    np.testing.assert_allclose(curves["l1"], np.abs(t64 - p64).mean(axis=(2, 3, 4)),
                               rtol=1e-5)


def _reference_clip_metrics(target, pred):
    """Straight NumPy/scikit-image loop over the definitions, clip by clip."""
    target = np.clip(np.asarray(target, np.float64), 0, 1)
    pred = np.clip(np.asarray(pred, np.float64), 0, 1)
    b, t, _, _, c = target.shape
    out = {key: np.zeros(b) for key in metrics.METRIC_KEYS}
    for i in range(b):
        curves = {"ssim": np.zeros(t), "psnr": np.zeros(t), "l1": np.zeros(t)}
        for f in range(t):
            gt, pr = target[i, f], pred[i, f]
            curves["ssim"][f] = np.mean([_sk_ssim(gt[..., k], pr[..., k]) for k in range(c)])
            mse = max(np.mean((gt - pr) ** 2), 1e-10)
            curves["psnr"][f] = 20 * np.log10(1 / np.sqrt(mse))
            curves["l1"][f] = np.mean(np.abs(gt - pr))
        for name, curve in curves.items():
            span = curve.max() - curve.min()
            normalised = (curve - curve.min()) / span if span > 0 else np.zeros(t)
            out[name][i] = curve.mean()
            out[f"{name}_tstd"][i] = np.std(normalised, ddof=1)
            out[f"{name}_std"][i] = np.std(curve, ddof=1)
        out["t_std"][i] = np.mean([out[f"{n}_tstd"][i] for n in curves])
        out["tdiff_l1"][i] = np.mean([np.mean(np.abs((pred[i, f + 1] - pred[i, f])
                                                     - (target[i, f + 1] - target[i, f])))
                                      for f in range(t - 1)])
    return out


@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (-0.3, 1.3)], ids=["in_range", "clipped"])
def test_clip_metrics_matches_numpy_reference(lo, hi):
    target, pred = _random_clips(np.random.default_rng(3), lo=lo, hi=hi)
    if lo < 0:
        assert (target < 0).any() and (pred > 1).any()  # clipping is exercised
    got = metrics.clip_metrics(target, pred)
    want = _reference_clip_metrics(target, pred)
    assert tuple(got) == metrics.METRIC_KEYS
    for key in metrics.METRIC_KEYS:
        assert got[key].shape == (2,) and got[key].dtype == jnp.float32, key
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert (np.asarray(got["t_std"]) > 0).all()  # the curves do move


def test_constant_curves_and_identical_clips():
    rng = np.random.default_rng(4)
    # Every frame the same: every curve is constant, so its T-Std is 0, not NaN.
    frame_t, frame_p = _random_clips(rng, shape=(2, 1, 16, 16, 3))
    got = metrics.clip_metrics(np.repeat(frame_t, 4, axis=1), np.repeat(frame_p, 4, axis=1))
    for key in ("ssim_tstd", "psnr_tstd", "l1_tstd", "t_std",
                "ssim_std", "psnr_std", "l1_std", "tdiff_l1"):
        np.testing.assert_array_equal(got[key], 0.0, err_msg=key)
    # Perfect reconstruction: finite 100 dB PSNR (mse floored at 1e-10), SSIM 1, L1 0.
    target, _ = _random_clips(rng, shape=(2, 4, 16, 16, 3))
    got = metrics.clip_metrics(target, target)
    np.testing.assert_allclose(got["psnr"], 100.0, rtol=1e-6)
    np.testing.assert_allclose(got["ssim"], 1.0, atol=1e-6)
    np.testing.assert_array_equal(got["l1"], 0.0)
    assert all(np.isfinite(got[key]).all() for key in metrics.METRIC_KEYS)


def test_t_std_is_blind_to_the_size_of_the_error():
    """The paper's T-Std min-max normalises each curve: an error ten times smaller, frame
    by frame, has the same L1 and PSNR T-Std, while tdiff_l1 shrinks with it. (An i.i.d.
    curve of 16 frames scores about 0.28 at any amplitude: docs/study.md.)"""
    rng = np.random.default_rng(7)
    target = rng.uniform(0.3, 0.7, size=(2, 16, 12, 12, 3))
    noise = rng.uniform(-0.2, 0.2, size=target.shape)
    big, small = (metrics.clip_metrics(target, target + k * noise) for k in (1.0, 0.1))
    for key in ("l1_tstd", "psnr_tstd"):
        np.testing.assert_allclose(small[key], big[key], rtol=1e-3, err_msg=key)
    np.testing.assert_allclose(small["tdiff_l1"], 0.1 * big["tdiff_l1"], rtol=1e-3)


def test_clip_metrics_jit_matches_eager_and_is_float32():
    target, pred = _random_clips(np.random.default_rng(5), lo=-0.2, hi=1.2)
    target, pred = jnp.asarray(target, jnp.bfloat16), jnp.asarray(pred, jnp.bfloat16)
    eager = metrics.clip_metrics(target, pred)
    jitted = jax.jit(metrics.clip_metrics)(target, pred)
    for key in metrics.METRIC_KEYS:
        assert jitted[key].dtype == jnp.float32, key
        np.testing.assert_allclose(jitted[key], eager[key], rtol=1e-5, atol=1e-6,
                                   err_msg=key)


def _dot_clip(xs, size=12, amp=0.8):
    """(1, T, size, size, 1) clip of one ``amp`` pixel at row 5, column xs[t]."""
    clip = np.zeros((1, len(xs), size, size, 1), np.float32)
    clip[0, np.arange(len(xs)), 5, xs, 0] = amp
    return clip


def test_temporal_difference_error_on_known_motion():
    """A dot moving one pixel per frame against copies with closed-form errors: one with a
    still dot added (0: the same changes, while its L1 is not 0), one a pixel behind (its
    changes land a pixel off: pixel space is not shift invariant), one frozen, one twice as
    fast; and a still clip against a still prediction (0)."""
    size, amp, t = 12, 0.8, 5
    target = _dot_clip(np.arange(t) + 2, size, amp)
    error = lambda pred: float(metrics.temporal_difference_error(target, pred)[0])
    biased = target + _dot_clip(np.full(t, 10), size, 0.5)
    biased[:, :, 8] += 0.1
    assert error(biased) == 0.0 and float(metrics.clip_metrics(target, biased)["l1"][0]) > 0
    # One pixel behind: per pair amp, 2 amp and amp on three neighbouring pixels.
    assert error(np.roll(target, -1, axis=3)) == pytest.approx(4 * amp / size**2)
    # Frozen at frame 0: each frame pair the target gains amp at one pixel, loses it at another.
    assert error(_dot_clip(np.full(t, 2), size, amp)) == pytest.approx(2 * amp / size**2)
    # Two pixels per frame from column 2: per pair, the target's and the prediction's
    # changes (+amp where a dot arrives, -amp where it leaves) sum to 4 amp, except in
    # pair 0, where both leave column 2 and cancel there (2 amp).
    fast = _dot_clip(2 * np.arange(t) + 2, size, amp)
    want = (2 + 4 + 4 + 4) * amp / ((t - 1) * size**2)
    assert error(fast) == pytest.approx(want)
    assert error(fast) == pytest.approx(np.mean(np.abs(np.diff(fast, axis=1)
                                                       - np.diff(target, axis=1))))
    # A static clip against a static prediction: no change in either, whatever they differ by.
    still = np.repeat(target[:, :1], t, axis=1)
    assert float(metrics.temporal_difference_error(still, 0.3 * still)[0]) == 0.0
    # Clipped to [0, 1] first, as the other metrics.
    assert error(np.where(target > 0, 5.0, -1.0)) == pytest.approx(
        np.mean(np.abs(np.diff(np.where(target > 0, 1.0, 0.0), axis=1) - np.diff(target, axis=1))))


def test_clip_metrics_rejects_bad_shapes():
    clip = np.zeros((1, 1, 16, 16, 1), np.float32)
    with pytest.raises(ValueError, match="at least 2 frames"):
        metrics.clip_metrics(clip, clip)
    with pytest.raises(ValueError, match=r"\(B, T, H, W, C\)"):
        metrics.clip_metrics(clip[0], clip[0])


# ------------------------------------------------------------------- keypoint space


def _keypoint_errors_loop(target, pred, points, radius):
    """Per-joint Python loop: the same definition, written independently."""
    b, t, h, w, c = target.shape
    out = np.zeros((3, b))
    for i in range(b):
        for ch in range(c):
            for f in range(t):
                for j in range(points.shape[3]):
                    px, py = points[i, ch, f, j]
                    if not (np.isfinite(px) and np.isfinite(py)):
                        continue
                    cx, cy = int(np.round(px)), int(np.round(py))
                    peak_t = peak_p = mass = sx = sy = 0.0
                    for y in range(cy - radius, cy + radius + 1):
                        for x in range(cx - radius, cx + radius + 1):
                            if 0 <= x < w and 0 <= y < h:
                                vt = min(max(target[i, f, y, x, ch], 0), 1)
                                vp = min(max(pred[i, f, y, x, ch], 0), 1)
                                peak_t, peak_p = max(peak_t, vt), max(peak_p, vp)
                                mass, sx, sy = mass + vp, sx + vp * x, sy + vp * y
                    if peak_t <= metrics.KEYPOINT_PRESENT:
                        continue
                    out[2, i] += 1
                    if peak_p < metrics.KEYPOINT_FOUND * peak_t:
                        out[0, i] += radius
                        out[1, i] += 1
                    else:
                        out[0, i] += np.hypot(sx / mass - px, sy / mass - py)
    return out


def _keypoint_clip(points, size, sigma=0.75):
    """(C, T, J, 2) points -> (1, T, size, size, C) combined keypoint heatmaps."""
    from pose_vq.data import heatmaps
    views = [heatmaps.render_2d(p, np.ones(p.shape[:2]), size, sigma=sigma, kind="keypoint")
             for p in points]
    return np.concatenate(views, axis=-1)[None]


def test_keypoint_errors_match_loop_oracle():
    rng = np.random.default_rng(0)
    b, t, s, c, j = 2, 3, 12, 2, 5
    points = rng.uniform(-2, s + 1, (b, c, t, j, 2)).astype(np.float32)
    points[0, 0, 0, 0] = np.nan
    target = np.concatenate([_keypoint_clip(p, s) for p in points])
    pred = np.clip(target + rng.normal(0, 0.2, target.shape), -0.2, 1.2).astype(np.float32)
    pred[1, :, :, :6] = 0  # some joints missed
    found = jax.jit(metrics.keypoint_errors, static_argnums=3)(target, pred, points, 3)
    expected = _keypoint_errors_loop(target, pred, points, 3)
    for k, row in zip(("kp_error_sum", "kp_missed_sum", "kp_count"), expected):
        np.testing.assert_allclose(found[k], row, rtol=1e-5, atol=1e-4)
    assert expected[1, 1] > 0 and expected[2].min() > 0


def test_keypoint_errors_on_rendered_keypoints():
    rng = np.random.default_rng(1)
    s, r = 32, metrics.keypoint_radius(0.75)
    points = np.full((1, 4, 19, 2), np.nan)  # one channel, 4 frames, 4 joints drawn
    points[0, :, :4, 0] = [4.3, 12.5, 19.7, 27.2] + rng.uniform(-0.5, 0.5, (4, 4))
    points[0, :, :4, 1] = rng.uniform(4, s - 4, (4, 4))  # 7+ px apart: disjoint windows
    target = _keypoint_clip(points, s)
    points = points[None].astype(np.float32)
    exact = metrics.keypoint_errors(target, target, points, r)
    n = exact["kp_count"][0]
    assert n == 4 * 4 and exact["kp_missed_sum"][0] == 0
    # The renderer centres blobs at round(c): at most half a pixel's diagonal away.
    assert exact["kp_error_sum"][0] / n <= np.sqrt(0.5) + 1e-5
    # A heatmap shifted by 1 or 2 px in y is found that far away (from the rounded
    # centres), less the tail the window cuts off (0.3 px of the 3 sigma blob at 2 px).
    rounded = np.round(points)
    for shift, cut in ((1, 0.005), (2, 0.04)):
        moved = metrics.keypoint_errors(target, np.roll(target, shift, axis=2), rounded, r)
        assert shift - cut < moved["kp_error_sum"][0] / n <= shift + 1e-5
    # Nothing predicted: every joint missed at the window radius.
    zeros = metrics.keypoint_errors(target, np.zeros_like(target), points, r)
    assert zeros["kp_missed_sum"][0] == n and zeros["kp_error_sum"][0] == pytest.approx(n * r)
    # Joints outside the image or NaN are not counted.
    away = points.copy()
    away[..., 0, 0] = -50
    away[..., 1, :] = np.nan
    assert metrics.keypoint_errors(target, target, away, r)["kp_count"][0] == 4 * 2


def _motion_oracle(points, offsets, found):
    """Per-clip sums of the velocity and acceleration errors by loops over the definition:
    the decoded joints are ``points + offsets``, counted where ``found`` in every frame."""
    b, c, t, j = found.shape
    out = {k: np.zeros(b) for k in ("kp_vel_sum", "kp_vel_pairs", "kp_acc_sum", "kp_acc_triples")}
    decoded = points + offsets
    for i in range(b):
        for ch in range(c):
            for jj in range(j):
                p, g, ok = decoded[i, ch, :, jj], points[i, ch, :, jj], found[i, ch, :, jj]
                for f in range(t - 1):
                    if ok[f] and ok[f + 1]:
                        out["kp_vel_sum"][i] += np.linalg.norm((p[f + 1] - p[f]) - (g[f + 1] - g[f]))
                        out["kp_vel_pairs"][i] += 1
                for f in range(1, t - 1):
                    if ok[f - 1] and ok[f] and ok[f + 1]:
                        second = lambda q: q[f + 1] - 2 * q[f] + q[f - 1]  # noqa: B023 (used at once)
                        out["kp_acc_sum"][i] += np.linalg.norm(second(p) - second(g))
                        out["kp_acc_triples"][i] += 1
    return out


def _moved(clips, offsets):
    """Each (clip, frame, channel) plane of (B, T, H, W, C) moved by whole pixels
    ``offsets`` (B, C, T, 2) as (x, y)."""
    out = np.zeros_like(clips)
    b, t, _, _, c = clips.shape
    for i in range(b):
        for f in range(t):
            for ch in range(c):
                dx, dy = offsets[i, ch, f]
                out[i, f, :, :, ch] = np.roll(clips[i, f, :, :, ch], (dy, dx), axis=(0, 1))
    return out


SIZE = 40  # the motion tests' heatmaps


def _moving_joints(b=2, c=2, t=5, velocity=(1, 0)):
    """(B, C, T, 2 joints, 2) integer joints 12 px apart moving ``velocity`` px per frame:
    with a further move of up to 4 px, each joint's blob (drawn 3 px before its centre
    and 2 after) stays inside its own 7 px window, off the other's and off the border."""
    start = np.array([[10.0, 10.0], [22.0, 24.0]])
    points = start + np.arange(t)[:, None, None] * np.asarray(velocity, float)
    return np.broadcast_to(points, (b, c, t, 2, 2)).astype(np.float32).copy()


def _check_motion(target, pred, points, radius, offsets, found):
    """The errors against the loop oracle on the known offsets, and the references: the
    target's 0 (it decodes whole-pixel joints where they are, up to a constant bias of the
    drawn blob) and still joints' (the oracle on a prediction that stays at 0)."""
    got = jax.jit(metrics.keypoint_motion_errors, static_argnums=3)(target, pred, points, radius)
    want = _motion_oracle(points, np.broadcast_to(offsets[:, :, :, None], points.shape), found)
    still = _motion_oracle(points, -points, found)
    for kind in ("vel", "acc"):
        for k, v in ((f"kp_{kind}_sum", want), (f"kp_{kind}_still_sum", still)):
            np.testing.assert_allclose(got[k], v[f"kp_{kind}_sum"], rtol=1e-5, atol=1e-4,
                                       err_msg=k)
        np.testing.assert_allclose(got[f"kp_{kind}_target_sum"], 0.0, atol=1e-4)
    for k in ("kp_vel_pairs", "kp_acc_triples"):
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    return {f"{k}{ref}": float(np.sum(got[f"kp_{k}{ref}_sum"]) / np.sum(got[f"kp_{k}_{n}"]))
            for k, n in (("vel", "pairs"), ("acc", "triples")) for ref in ("", "_still")}


@pytest.mark.parametrize("shift,speed", [((1, 0), 1.0), ((1, 1), np.sqrt(2)), ((0, -1), 1.0)])
def test_keypoint_motion_of_a_shifted_copy(shift, speed):
    """Joints moving 1 px/frame; the prediction is the target moved by ``shift`` more each
    frame: velocity error |shift| px/frame in every pair, acceleration error 0."""
    points = _moving_joints()
    b, c, t = points.shape[:3]
    target = np.concatenate([_keypoint_clip(p, SIZE) for p in points])
    offsets = np.arange(t)[None, None, :, None] * np.asarray(shift)  # (1, 1, T, 2)
    offsets = np.broadcast_to(offsets, (b, c, t, 2))
    found = np.ones(points.shape[:4], bool)
    means = _check_motion(target, _moved(target, offsets), points, 7, offsets, found)
    assert means["vel"] == pytest.approx(speed, abs=1e-5)
    assert means["acc"] == pytest.approx(0.0, abs=1e-5)
    assert means["vel_still"] == pytest.approx(1.0, abs=1e-5)  # the joints move 1 px/frame


def test_keypoint_motion_of_a_jittered_copy_with_gaps():
    """Random whole-pixel offsets per frame and channel: the errors are numpy's on the
    offsets. A joint absent from one frame, and one missed by the prediction in another,
    drop the pairs and triples through those frames."""
    rng = np.random.default_rng(7)
    points = _moving_joints(velocity=(1, 1))
    b, c, t = points.shape[:3]
    points[0, 1, 2, 0] = np.nan  # absent: not drawn, not counted
    target = np.concatenate([_keypoint_clip(p, SIZE) for p in points])
    offsets = rng.integers(-1, 2, (b, c, t, 2))
    pred = _moved(target, offsets)
    y, x = points[1, 0, 3, 1].astype(int) + offsets[1, 0, 3, ::-1]
    pred[1, 3, y - 4:y + 4, x - 4:x + 4, 0] = 0  # joint 1 of clip 1, channel 0, frame 3 missed
    found = np.isfinite(points[..., 0])
    found[1, 0, 3, 1] = False
    means = _check_motion(target, pred, points, 5, offsets, found)
    assert means["vel"] > 0.5 and means["acc"] > 0.5  # the jitter moves the joints
    missed = metrics.keypoint_errors(target, pred, points, 5)["kp_missed_sum"]
    np.testing.assert_array_equal(missed, [0, 1])


def test_keypoint_motion_of_static_clips_and_the_estimators_floor():
    """Still joints predicted a pixel off: a position error, no velocity or acceleration
    error. The target itself, with joints off the pixel grid, decodes them at the pixels
    the renderer rounded them to: its errors (and the target reference) are numpy's on
    those roundings, over the pairs a prediction is scored on."""
    points = _moving_joints(velocity=(0, 0))
    target = np.concatenate([_keypoint_clip(p, SIZE) for p in points])
    offsets = np.broadcast_to(np.array([1, -1]), points.shape[:3] + (2,))
    found = np.ones(points.shape[:4], bool)
    means = _check_motion(target, _moved(target, offsets), points, 5, offsets, found)
    assert means == {"vel": 0.0, "acc": 0.0, "vel_still": 0.0, "acc_still": 0.0}
    position = metrics.keypoint_errors(target, _moved(target, offsets), points, 5)
    np.testing.assert_allclose(position["kp_error_sum"] / position["kp_count"], np.sqrt(2),
                               rtol=1e-5)

    rng = np.random.default_rng(3)
    points = (points + rng.uniform(-2, 2, points.shape)).astype(np.float32)
    target = np.concatenate([_keypoint_clip(p, SIZE) for p in points])
    rounding = np.rint(points) - points
    got = metrics.keypoint_motion_errors(target, target, points, 3)
    want = _motion_oracle(points, rounding, found)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-4, err_msg=k)
    assert want["kp_vel_sum"].min() > 0  # rounding alone leaves a velocity error
    # A prediction that misses a joint in one frame is scored, and its floor taken, on
    # the pairs and triples left.
    pred = target.copy()
    x, y = np.rint(points[0, 0, 2, 0]).astype(int)
    pred[0, 2, y - 4:y + 4, x - 4:x + 4, 0] = 0
    found[0, 0, 2, 0] = False
    got = metrics.keypoint_motion_errors(target, pred, points, 3)
    want = _motion_oracle(points, rounding, found)
    for kind, count in (("vel", "pairs"), ("acc", "triples")):
        for k in (f"kp_{kind}_sum", f"kp_{kind}_target_sum"):
            np.testing.assert_allclose(got[k], want[f"kp_{kind}_sum"], rtol=1e-5, atol=1e-4,
                                       err_msg=k)
        np.testing.assert_array_equal(got[f"kp_{kind}_{count}"], want[f"kp_{kind}_{count}"])
