"""The per-frame baseline lifter (Martinez et al., "A simple yet effective baseline for
3d human pose estimation", ICCV 2017): each frame's 2D joints, flattened, through a wide
linear layer and residual blocks of two (linear, batch norm, ReLU, dropout) layers, to
that frame's 3D joints. It sees no other frame, which is what DSTformer's temporal
attention is measured against.
"""

from __future__ import annotations

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from pose_vq.sharding import logical


@dataclasses.dataclass(frozen=True)
class MLPLifterSpec:
    width: int = 1024  # Martinez et al.'s linear size
    blocks: int = 2  # residual blocks
    dropout: float = 0.5
    out_dim: int = 3


class MLPLifter(nn.Module):
    """(B, T, J, C) keypoints -> (B, T, J, out_dim), frame by frame; ``mask`` (B, T, J)
    zeroes absent joints as DSTformer does."""

    spec: MLPLifterSpec = MLPLifterSpec()

    @nn.compact
    def __call__(self, keypoints: jax.Array, mask: jax.Array | None = None, *,
                 train: bool = False) -> jax.Array:
        s = self.spec
        chex.assert_rank(keypoints, 4)
        b, t, j, _ = keypoints.shape
        if mask is not None:
            chex.assert_shape(mask, keypoints.shape[:-1])
            keypoints = jnp.where(mask[..., None], keypoints, 0.0)

        def dense(features, axes, name):
            return nn.Dense(features, name=name,
                            kernel_init=logical(nn.initializers.lecun_normal(), *axes),
                            bias_init=logical(nn.initializers.zeros, axes[1]))

        def layer(x, name, axes=("mlp", "mlp")):
            x = dense(s.width, axes, f"{name}_dense")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"{name}_norm",
                             scale_init=logical(nn.initializers.ones, "norm"),
                             bias_init=logical(nn.initializers.zeros, "norm"))(x)
            return nn.Dropout(s.dropout, deterministic=not train)(nn.relu(x))

        x = layer(keypoints.reshape(b * t, -1), "input", ("channels_in", "mlp"))
        for i in range(s.blocks):
            x = x + layer(layer(x, f"block{i}_a"), f"block{i}_b")
        x = dense(j * s.out_dim, ("mlp", "outputs"), "head")(x)
        return x.reshape(b, t, j, s.out_dim)
