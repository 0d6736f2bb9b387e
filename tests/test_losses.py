"""VQ-GAN losses: hand values, explicit-gradient and finite-difference oracles."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_vq import losses


def test_l1():
    x = jnp.array([[0.0, 1.0], [2.0, -1.0]])
    y = jnp.array([[1.0, 1.0], [0.0, 1.0]])
    assert float(losses.l1(x, y)) == pytest.approx((1 + 0 + 2 + 2) / 4)


def test_gradient_l1_hand_values():
    """A lone bright pixel in a 5 x 5 plane: 2 of the 20 differences along each axis are
    off by 1 (0.1 each way), where plain L1 is 1/25; time and channels are not
    differenced; a constant offset costs nothing."""
    x = np.zeros((1, 2, 5, 5, 3), np.float32)
    x[0, 0, 2, 2, 0] = 1.0
    y = np.zeros_like(x)
    per_plane = 0.1 / 6  # one of the 2 frames x 3 channels holds the pixel
    assert float(losses.gradient_l1(x, y)) == pytest.approx(per_plane)
    assert float(losses.l1(x, y)) == pytest.approx(1 / 25 / 6)
    assert float(losses.gradient_l1(y + 0.5, y)) == 0.0
    shifted_in_time = np.roll(x, 1, axis=1)
    assert float(losses.gradient_l1(shifted_in_time, x)) == pytest.approx(2 * per_plane)


def test_hinge_and_generator_hand_values():
    real = jnp.array([2.0, 0.5, -1.0])
    fake = jnp.array([-2.0, 0.0, 1.5])
    # relu(1 - real) = [0, .5, 2]; relu(1 + fake) = [0, 1, 2.5]
    assert float(losses.hinge_discriminator_loss(real, fake)) == pytest.approx(
        0.5 * (2.5 / 3 + 3.5 / 3))
    assert float(losses.generator_adversarial_loss(fake)) == pytest.approx(0.5 / 3)
    # A perfect discriminator has zero hinge loss.
    assert float(losses.hinge_discriminator_loss(jnp.full(4, 3.0), jnp.full(4, -1.5))) == 0.0
    # bf16 logits are reduced in float32.
    out = losses.generator_adversarial_loss(fake.astype(jnp.bfloat16))
    assert out.dtype == jnp.float32


class _TinyDecoder(nn.Module):
    """Dense -> reshape -> 3x3 Conv named 'last' (the decoder's last conv)."""

    @nn.compact
    def __call__(self, z):
        h = nn.gelu(nn.Dense(32)(z)).reshape(z.shape[0], 4, 4, 2)
        return nn.Conv(3, (3, 3), name="last")(h)


def _tiny_setup():
    model = _TinyDecoder()
    kz, kt, kp, kd = jax.random.split(jax.random.PRNGKey(0), 4)
    z = jax.random.normal(kz, (5, 6))
    target = jax.random.uniform(kt, (5, 4, 4, 3))
    params = model.init(kp, z)["params"]
    disc_w = jax.random.normal(kd, (3,))

    def rec(p):
        return losses.l1(model.apply({"params": p}, z), target)

    def adv(p):
        logits = jnp.tanh(model.apply({"params": p}, z) @ disc_w)
        return losses.generator_adversarial_loss(logits)

    def with_kernel(p, k):
        return {**p, "last": {**p["last"], "kernel": k}}

    return params, rec, adv, with_kernel


def test_adaptive_weight_matches_explicit_gradients():
    params, rec, adv, with_kernel = _tiny_setup()
    g_rec = jax.grad(rec)(params)["last"]["kernel"]
    g_adv = jax.grad(adv)(params)["last"]["kernel"]
    ratio = np.linalg.norm(np.asarray(g_rec)) / (np.linalg.norm(np.asarray(g_adv)) + 1e-4)
    want = 0.8 * np.clip(ratio, 0.0, 1e4)
    got = losses.adaptive_weight(lambda k: rec(with_kernel(params, k)),
                                 lambda k: adv(with_kernel(params, k)),
                                 params["last"]["kernel"])
    assert 0 < want < 1e4
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    # scale is configurable and the function jits.
    got1 = jax.jit(lambda p: losses.adaptive_weight(
        lambda k: rec(with_kernel(p, k)), lambda k: adv(with_kernel(p, k)),
        p["last"]["kernel"], scale=1.0))(params)
    np.testing.assert_allclose(float(got1), want / 0.8, rtol=1e-6)


def test_adaptive_weight_is_stop_gradiented():
    params, rec, adv, with_kernel = _tiny_setup()

    def weight(p):
        return losses.adaptive_weight(lambda k: rec(with_kernel(p, k)),
                                      lambda k: adv(with_kernel(p, k)), p["last"]["kernel"])

    grads = jax.grad(weight)(params)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree_util.tree_leaves(grads))
    # Also as a factor inside a loss: only the adversarial term's own gradient remains.
    total = lambda p: weight(p) * adv(p)
    g_total = jax.grad(total)(params)
    g_expected = jax.tree_util.tree_map(lambda g: weight(params) * g, jax.grad(adv)(params))
    for a, b in zip(jax.tree_util.tree_leaves(g_total), jax.tree_util.tree_leaves(g_expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-8)


def test_adaptive_weight_clipped():
    params, rec, adv, with_kernel = _tiny_setup()
    kernel = params["last"]["kernel"]
    big_rec = lambda k: 1e3 * rec(with_kernel(params, k))
    flat_adv = lambda k: 0.0 * jnp.sum(k)
    assert float(losses.adaptive_weight(big_rec, flat_adv, kernel)) == pytest.approx(0.8 * 1e4)
    tiny_adv = lambda k: 1e-3 * adv(with_kernel(params, k))
    w = losses.adaptive_weight(lambda k: rec(with_kernel(params, k)), tiny_adv, kernel,
                               max_weight=0.5, scale=1.0)
    assert float(w) == pytest.approx(0.5)
    # Zero reconstruction gradient -> 0 (the lower clip end).
    assert float(losses.adaptive_weight(flat_adv, tiny_adv, kernel)) == 0.0


def test_discriminator_factor_under_jit():
    fn = jax.jit(lambda s: losses.discriminator_factor(s, 5, 0.3))
    got = [float(fn(jnp.int32(s))) for s in (0, 4, 5, 10)]
    assert got == pytest.approx([0.0, 0.0, 0.3, 0.3])
    vmapped = jax.jit(jax.vmap(lambda s: losses.discriminator_factor(s, 5, 0.3)))
    np.testing.assert_allclose(np.asarray(vmapped(jnp.arange(8))),
                               [0, 0, 0, 0, 0, 0.3, 0.3, 0.3], rtol=1e-7)
    assert float(losses.discriminator_factor(7, 5, 1.0)) == 1.0


def test_lecam_formula_and_ema():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    ema_real, ema_fake = 0.3, -0.2
    want = (np.mean(np.maximum(real - ema_fake, 0) ** 2)
            + np.mean(np.maximum(ema_real - fake, 0) ** 2))
    got = losses.lecam_regularizer(jnp.asarray(real), jnp.asarray(fake), ema_real, ema_fake)
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    # Anchors are constants.
    g = jax.grad(lambda er, ef: losses.lecam_regularizer(real, fake, er, ef), argnums=(0, 1))(
        jnp.float32(ema_real), jnp.float32(ema_fake))
    assert float(g[0]) == 0.0 and float(g[1]) == 0.0
    ema = losses.update_lecam_ema(jnp.float32(0.5), jnp.array([1.0, 2.0, 3.0]), 0.9)
    assert float(ema) == pytest.approx(0.9 * 0.5 + 0.1 * 2.0)


def test_r1_against_finite_differences():
    rng = np.random.default_rng(0)
    batch, shape = 3, (2, 3)
    dim = int(np.prod(shape))
    a = rng.normal(size=(dim, dim))
    b = rng.normal(size=dim)
    real = rng.normal(size=(batch, *shape))

    def disc_np(x):  # one example, float64
        v = x.reshape(-1)
        return 0.5 * v @ a @ v + b @ v + 0.7

    a32 = jnp.asarray(a, jnp.float32)

    def disc_jax(x, a_=a32):  # (B, *shape) -> (B,)
        v = x.reshape(x.shape[0], -1)
        return 0.5 * jnp.einsum("bi,ij,bj->b", v, a_, v) + v @ jnp.asarray(b, jnp.float32) + 0.7

    h = 1e-5
    sq_norms = []
    for i in range(batch):
        grad = np.zeros(dim)
        for j in range(dim):
            e = np.zeros(dim)
            e[j] = h
            xi = real[i].reshape(-1)
            grad[j] = (disc_np(xi + e) - disc_np(xi - e)) / (2 * h)
        sq_norms.append(np.sum(grad ** 2))
    want = np.mean(sq_norms)
    got = jax.jit(lambda r: losses.r1_penalty(disc_jax, r))(jnp.asarray(real, jnp.float32))
    np.testing.assert_allclose(float(got), want, rtol=1e-4)
    # Differentiable w.r.t. the discriminator's parameters.
    g_a = jax.grad(lambda a_: losses.r1_penalty(lambda x: disc_jax(x, a_),
                                                jnp.asarray(real, jnp.float32)))(
        jnp.asarray(a, jnp.float32))
    assert bool(jnp.all(jnp.isfinite(g_a))) and float(jnp.max(jnp.abs(g_a))) > 0
