"""The probe head: a light transformer over frozen features arranged as a grid of
(time steps, places, width), e.g. token embeddings (t, h * w, D) or DSTformer's joint
features (T, J, rep).

Each place's features are narrowed (``place_width``), the places of a time step are
concatenated in order (so where a token sits is kept, unlike pooling) and mapped to one
``width`` vector per step, and ``depth`` pre-LN transformer blocks attend over the steps.
``per_step=True`` maps each step to ``outputs`` values (pose: that step's frames'
joints); otherwise the mean over steps does (action logits). The mean over steps is also
returned as the clip's embedding (retrieval).
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax

from pose_vq.sharding import logical


def dense(features: int, axes: tuple[str, str], name: str) -> nn.Dense:
    """A Dense layer whose kernel and bias carry logical axes (pose_vq.sharding)."""
    return nn.Dense(features, kernel_init=logical(nn.initializers.lecun_normal(), *axes),
                    bias_init=logical(nn.initializers.zeros, axes[1]), name=name)


def layer_norm(name: str) -> nn.LayerNorm:
    """A LayerNorm over an "embed" axis, its scale and bias named for sharding."""
    return nn.LayerNorm(name=name, scale_init=logical(nn.initializers.ones, "embed"),
                        bias_init=logical(nn.initializers.zeros, "embed"))


def self_attention(num_heads: int, dropout: float, train: bool, name: str, *,
                   decode: bool = False) -> nn.MultiHeadDotProductAttention:
    """Multi-head attention over "embed" features, its weights named for sharding (a
    mask is its call's ``mask=``). ``decode``: one query position a call, the earlier
    keys and values kept in the "cache" collection (autoregressive sampling)."""
    lecun = nn.initializers.lecun_normal()
    return nn.MultiHeadDotProductAttention(
        num_heads, dropout_rate=dropout, deterministic=not train, decode=decode,
        kernel_init=logical(lecun, "embed", "heads", "head_dim"),
        bias_init=logical(nn.initializers.zeros, "heads", "head_dim"),
        out_kernel_init=logical(lecun, "heads", "head_dim", "embed"),
        out_bias_init=logical(nn.initializers.zeros, "embed"), name=name)


class ProbeHead(nn.Module):
    outputs: int
    per_step: bool
    width: int = 128
    place_width: int = 8
    depth: int = 2
    num_heads: int = 4
    dropout: float = 0.1

    @nn.compact
    def __call__(self, features: jax.Array, *, train: bool = False
                 ) -> tuple[jax.Array, jax.Array]:
        chex.assert_rank(features, 4)  # (B, steps, places, width)
        b, steps, places, _ = features.shape
        x = dense(self.place_width, ("channels_in", "channels_out"), "narrow")(features)
        x = dense(self.width, ("channels_in", "embed"), "step_embed")(x.reshape(b, steps, -1))
        x = x + self.param("pos_embed", logical(nn.initializers.normal(0.02), "frames", "embed"),
                           (steps, self.width))
        for i in range(self.depth):
            h = layer_norm(f"norm1_{i}")(x)
            x = x + self_attention(self.num_heads, self.dropout, train, f"attn_{i}")(h, h)
            h = dense(2 * self.width, ("embed", "mlp"), f"fc1_{i}")(layer_norm(f"norm2_{i}")(x))
            h = nn.Dropout(self.dropout, deterministic=not train)(nn.gelu(h))
            x = x + dense(self.width, ("mlp", "embed"), f"fc2_{i}")(h)
        x = layer_norm("norm")(x)
        pooled = x.mean(axis=1)
        out = dense(self.outputs, ("embed", "outputs"), "out")(x if self.per_step else pooled)
        return out, pooled
