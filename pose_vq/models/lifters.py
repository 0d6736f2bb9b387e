"""The per-frame baseline lifter (Martinez et al., "A simple yet effective baseline for
3d human pose estimation", ICCV 2017): each frame's 2D joints, flattened, through a wide
linear layer and residual blocks of two (linear, batch norm, ReLU, dropout) layers, to
that frame's 3D joints. It sees no other frame, which is what DSTformer's temporal
attention is measured against.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp


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
        b, t, j, _ = keypoints.shape
        if mask is not None:
            keypoints = jnp.where(mask[..., None], keypoints, 0.0)

        def layer(x, name):
            x = nn.Dense(s.width, name=f"{name}_dense")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"{name}_norm")(x)
            return nn.Dropout(s.dropout, deterministic=not train)(nn.relu(x))

        x = layer(keypoints.reshape(b * t, -1), "input")
        for i in range(s.blocks):
            x = x + layer(layer(x, f"block{i}_a"), f"block{i}_b")
        return nn.Dense(j * s.out_dim, name="head")(x).reshape(b, t, j, s.out_dim)
