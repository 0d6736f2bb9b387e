"""VQ-GAN training losses: reconstruction, hinge GAN, adaptive weight, LeCam and R1.

Pure functions of arrays (and, for the gradient-based ones, of loss callables), all
jit-friendly. Reductions are done in float32 whatever the input dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def _f32(x: ArrayLike) -> Array:
    return jnp.asarray(x).astype(jnp.float32)


def l1(x: ArrayLike, y: ArrayLike) -> Array:
    """Mean absolute error over all elements."""
    return jnp.mean(jnp.abs(_f32(x) - _f32(y)))


def gradient_l1(x: ArrayLike, y: ArrayLike) -> Array:
    """Mean absolute error of the clips' finite differences along height and width
    ((B, T, H, W, C) clips; the gradient difference loss of Mathieu et al. 2016): it
    charges a blurred edge, which plain L1 charges little when the edge is thin."""
    d = _f32(x) - _f32(y)
    return (jnp.mean(jnp.abs(jnp.diff(d, axis=2))) + jnp.mean(jnp.abs(jnp.diff(d, axis=3)))) / 2


def foreground_l1(x: ArrayLike, y: ArrayLike) -> Array:
    """Mean of |x - y| weighted by the target ``y`` in [0, 1]: the error where the body
    is drawn. Limbs are a few percent of a heatmap's pixels, so plain L1 lets a blurred or
    missing arm cost little next to the background."""
    target = jnp.clip(_f32(y), 0.0, 1.0)
    return jnp.mean(jnp.abs(_f32(x) - target) * target)


def hinge_discriminator_loss(real_logits: ArrayLike, fake_logits: ArrayLike) -> Array:
    """Hinge loss for D: 0.5 * (mean relu(1 - real) + mean relu(1 + fake))."""
    loss_real = jnp.mean(jax.nn.relu(1.0 - _f32(real_logits)))
    loss_fake = jnp.mean(jax.nn.relu(1.0 + _f32(fake_logits)))
    return 0.5 * (loss_real + loss_fake)


def generator_adversarial_loss(fake_logits: ArrayLike) -> Array:
    """Generator's adversarial loss: -mean(fake logits)."""
    return -jnp.mean(_f32(fake_logits))


def adaptive_weight(rec_loss_fn: Callable[[Array], Array],
                    adv_loss_fn: Callable[[Array], Array],
                    kernel: Array, *, max_weight: float = 1e4, scale: float = 0.8,
                    eps: float = 1e-4) -> Array:
    """VQ-GAN adaptive adversarial weight (Esser et al. 2021), stop-gradiented.

    ``rec_loss_fn`` and ``adv_loss_fn`` map the decoder's last conv kernel to a scalar
    loss (close over everything else). Returns
    ``scale * clip(||d rec / d kernel|| / (||d adv / d kernel|| + eps), 0, max_weight)``.
    The reference multiplies by a fixed 0.8 (``scale``). Each callable is evaluated (and
    differentiated) once more here, on top of the caller's own forward pass.
    """
    g_rec = jax.grad(rec_loss_fn)(kernel)
    g_adv = jax.grad(adv_loss_fn)(kernel)
    norm_rec = jnp.linalg.norm(_f32(g_rec).ravel())
    norm_adv = jnp.linalg.norm(_f32(g_adv).ravel())
    weight = jnp.clip(norm_rec / (norm_adv + eps), 0.0, max_weight)
    return jax.lax.stop_gradient(scale * weight)


def discriminator_factor(step: ArrayLike, start: ArrayLike, factor: ArrayLike) -> Array:
    """``factor`` once ``step >= start``, else 0 (works with traced ``step``)."""
    return jnp.where(jnp.asarray(step) >= start, _f32(factor), jnp.float32(0.0))


def lecam_regularizer(real_logits: ArrayLike, fake_logits: ArrayLike,
                      ema_real: ArrayLike, ema_fake: ArrayLike) -> Array:
    """LeCam regulariser (Tseng et al. 2021).

    ``mean(relu(real - ema_fake)^2) + mean(relu(ema_real - fake)^2)``; the EMA anchors
    are constants (stop_gradient).
    """
    ema_real = jax.lax.stop_gradient(_f32(ema_real))
    ema_fake = jax.lax.stop_gradient(_f32(ema_fake))
    reg_real = jnp.mean(jnp.square(jax.nn.relu(_f32(real_logits) - ema_fake)))
    reg_fake = jnp.mean(jnp.square(jax.nn.relu(ema_real - _f32(fake_logits))))
    return reg_real + reg_fake


def update_lecam_ema(ema: ArrayLike, logits: ArrayLike, decay: float) -> Array:
    """EMA of the mean logit: ``decay * ema + (1 - decay) * mean(logits)`` (no gradient)."""
    mean = jax.lax.stop_gradient(jnp.mean(_f32(logits)))
    return decay * _f32(ema) + (1.0 - decay) * mean


def r1_penalty(disc_fn: Callable[[Array], Array], real: Array) -> Array:
    """R1 gradient penalty (Mescheder et al. 2018), without the gamma / 2 factor.

    Mean over the batch of ``||d D(real_i) / d real_i||^2``. Computed as the gradient of
    ``sum(disc_fn(real))`` w.r.t. ``real``, which equals the per-example gradients when
    ``disc_fn`` treats examples independently (no batch statistics). Differentiable
    w.r.t. whatever ``disc_fn`` closes over (the discriminator's params).
    """
    grads = jax.grad(lambda r: jnp.sum(_f32(disc_fn(r))))(real)
    per_example = jnp.sum(jnp.square(_f32(grads)).reshape(grads.shape[0], -1), axis=1)
    return jnp.mean(per_example)
