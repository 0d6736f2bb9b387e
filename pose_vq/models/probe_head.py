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

import flax.linen as nn
import jax


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
        b, steps, places, _ = features.shape
        x = nn.Dense(self.place_width, name="narrow")(features).reshape(b, steps, -1)
        x = nn.Dense(self.width, name="step_embed")(x)
        x = x + self.param("pos_embed", nn.initializers.normal(0.02), (steps, self.width))
        for i in range(self.depth):
            h = nn.LayerNorm(name=f"norm1_{i}")(x)
            h = nn.MultiHeadDotProductAttention(self.num_heads, dropout_rate=self.dropout,
                                                deterministic=not train, name=f"attn_{i}")(h, h)
            x = x + h
            h = nn.Dense(2 * self.width, name=f"fc1_{i}")(nn.LayerNorm(name=f"norm2_{i}")(x))
            h = nn.Dropout(self.dropout, deterministic=not train)(nn.gelu(h))
            x = x + nn.Dense(self.width, name=f"fc2_{i}")(h)
        x = nn.LayerNorm(name="norm")(x)
        pooled = x.mean(axis=1)
        out = nn.Dense(self.outputs, name="out")(x if self.per_step else pooled)
        return out, pooled
