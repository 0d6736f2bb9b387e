"""3D PatchGAN discriminator with the reference's topology (64 filters, 3 layers, kernel 4).

The reference normalises with BatchNorm, whose statistics at its training batch of 1
are one clip's, and which under data parallelism either couples devices (synchronised
statistics) or depends on the per-device batch. GroupNorm normalises each example by
itself: the same function at any batch size and device count, with the same affine
parameter count as BatchNorm (so the model size still matches the reference's).
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from pose_vq.models import layers


class PatchDiscriminator(nn.Module):
    """Clip (B, T, H, W, C) -> patch logits (B, T/8, H/8, W/8, 1) for 3 layers."""

    filters: int = 64
    num_layers: int = 3
    norm_groups: int = 32
    dtype: str = "float32"
    conv_impl: str = "native"  # folded / winograd: faster layers on CPU, same params

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        chex.assert_rank(x, 5)
        dtype = jnp.dtype(self.dtype)
        init = nn.initializers.normal(0.02)  # the reference's DCGAN-style initialisation
        conv = lambda f, stride, pad, bias=True: layers.conv3d(
            f, (4, 4, 4), strides=(stride,) * 3, padding=((pad, pad),) * 3, use_bias=bias,
            dtype=dtype, kernel_init=init, impl=self.conv_impl)
        h = nn.leaky_relu(conv(self.filters, 2, 1)(x.astype(dtype)), 0.2)
        for i in range(1, self.num_layers + 1):
            width = self.filters * min(2**i, 8)
            h = conv(width, 2 if i < self.num_layers else 1, 1, bias=False)(h)
            h = layers.group_norm(min(self.norm_groups, width), dtype=dtype)(h)
            h = nn.leaky_relu(h, 0.2)
        return conv(1, 1, 2)(h).astype(jnp.float32)
