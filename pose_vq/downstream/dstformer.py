"""DSTformer, MotionBERT's dual-stream spatio-temporal transformer (Zhu et al., "Learning
Human Motion Representations: A Unified Perspective", arXiv 2210.06551), in Flax.

A clip of 2D keypoints (B, T, J, 3: x, y, confidence) becomes one token per joint per
frame: a linear embedding plus learned joint (spatial) and frame (temporal) position
embeddings. Each of ``depth`` levels runs two pre-LN streams on the same input, one
attending over the joints of a frame and then over the frames of a joint (S-T), the
other in the opposite order (T-S), each attention followed by its MLP, and fuses them
with per-token weights: a softmax over a linear map of both streams' features,
initialised to an even average. A final LayerNorm, a tanh representation layer and a
linear head (3D joints by default) follow. Any joint count (``num_joints``) and any clip
length up to ``max_frames``; the inputs' last axis is (x, y, confidence).
"""

from __future__ import annotations

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from pose_vq.sharding import logical

# MotionBERT initialises every linear layer and both position embeddings from a normal
# truncated at +-2 std, std 0.02, with zero biases.
_INIT = nn.initializers.truncated_normal(0.02)


@dataclasses.dataclass(frozen=True)
class DSTformerSpec:
    dim: int = 512  # token width
    depth: int = 5  # fused (S-T, T-S) levels
    num_heads: int = 8
    mlp_ratio: float = 2.0
    rep_dim: int = 512  # the tanh representation's width
    out_dim: int = 3  # the head's outputs per joint (0: no head)
    num_joints: int = 17
    max_frames: int = 243
    dropout: float = 0.0  # after the embedding, each MLP layer and attention projection


# MotionBERT's released model and its Lite version (their pose3d configs).
MOTIONBERT = DSTformerSpec()
MOTIONBERT_LITE = DSTformerSpec(dim=256, mlp_ratio=4.0)


def _dense(features: int, name: str, axes: tuple[str, str] = ("embed", "mlp")) -> nn.Dense:
    """A linear layer whose kernel's (input, output) axes are named ``axes``."""
    return nn.Dense(features, kernel_init=logical(_INIT, *axes),
                    bias_init=logical(nn.initializers.zeros, axes[1]), name=name)


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-5, name=name,
                        scale_init=logical(nn.initializers.ones, "embed"),
                        bias_init=logical(nn.initializers.zeros, "embed"))


class _Attention(nn.Module):
    """Multi-head self-attention over axis -2 of (..., N, C) tokens."""

    num_heads: int
    dropout: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        *lead, n, c = x.shape
        qkv = _dense(3 * c, "qkv")(x).reshape(*lead, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = (qkv[..., i, :, :] for i in range(3))
        out = nn.dot_product_attention(q, k, v)  # softmax(q k / sqrt(head dim)) v
        out = _dense(c, "proj", ("mlp", "embed"))(out.reshape(*lead, n, c))
        return nn.Dropout(self.dropout, deterministic=not train)(out)


class _Mlp(nn.Module):
    hidden: int
    dropout: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        h = nn.gelu(_dense(self.hidden, "fc1")(x), approximate=False)
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = _dense(x.shape[-1], "fc2", ("mlp", "embed"))(h)
        return nn.Dropout(self.dropout, deterministic=not train)(h)


class _Stream(nn.Module):
    """One stream of a level: spatial then temporal (``order='st'``) or the reverse, each
    a pre-LN attention and a pre-LN MLP with residuals, on (B, T, J, C) tokens."""

    spec: DSTformerSpec
    order: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        s = self.spec
        for axis in self.order:  # "s": over joints (axis 2), "t": over frames (axis 1)
            norm = lambda name: _layer_norm(f"{name}_{axis}")  # noqa: B023 (used in this iteration)
            attend = _Attention(s.num_heads, s.dropout, name=f"attn_{axis}")
            if axis == "s":
                x = x + attend(norm("norm1")(x), train)
            else:  # frames to axis -2 and back
                x = x + jnp.swapaxes(attend(jnp.swapaxes(norm("norm1")(x), 1, 2), train), 1, 2)
            x = x + _Mlp(int(s.dim * s.mlp_ratio), s.dropout, name=f"mlp_{axis}")(
                norm("norm2")(x), train)
        return x


class DSTformer(nn.Module):
    """(B, T, J, 3) keypoints -> (B, T, J, out_dim), or the (B, T, J, rep_dim)
    representation with ``representation=True``. ``mask`` (B, T, J), true where a joint
    is present: absent joints enter as zeros (MotionBERT's convention for missing and
    masked joints), whatever their stored values."""

    spec: DSTformerSpec = MOTIONBERT

    @nn.compact
    def __call__(self, keypoints: jax.Array, mask: jax.Array | None = None, *,
                 train: bool = False, representation: bool = False) -> jax.Array:
        s = self.spec
        chex.assert_rank(keypoints, 4)
        chex.assert_axis_dimension(keypoints, -1, 3)  # x, y, confidence
        if mask is not None:
            chex.assert_shape(mask, keypoints.shape[:-1])
        _, t, j, _ = keypoints.shape
        if j != s.num_joints or t > s.max_frames:
            raise ValueError(f"DSTformer for {s.num_joints} joints and up to {s.max_frames} "
                             f"frames got {j} joints and {t} frames")
        if mask is not None:
            keypoints = jnp.where(mask[..., None], keypoints, 0.0)
        joint_pos = self.param("pos_embed", logical(_INIT, "joints", "embed"),
                               (s.num_joints, s.dim))
        frame_pos = self.param("temp_embed", logical(_INIT, "frames", None, "embed"),
                               (s.max_frames, 1, s.dim))
        embed = _dense(s.dim, "joints_embed", ("channels_in", "embed"))
        x = embed(keypoints) + joint_pos + frame_pos[:t]
        x = nn.Dropout(s.dropout, deterministic=not train)(x)
        for level in range(s.depth):
            x_st = _Stream(s, "st", name=f"blocks_st_{level}")(x, train)
            x_ts = _Stream(s, "ts", name=f"blocks_ts_{level}")(x, train)
            # Per-token fusion weights; zero kernel and equal biases: an even average at init.
            fuse = nn.Dense(2, kernel_init=logical(nn.initializers.zeros, "mlp", "outputs"),
                            bias_init=logical(nn.initializers.constant(0.5), "outputs"),
                            name=f"ts_attn_{level}")
            alpha = jax.nn.softmax(fuse(jnp.concatenate([x_st, x_ts], axis=-1)), axis=-1)
            x = x_st * alpha[..., :1] + x_ts * alpha[..., 1:]
        x = _layer_norm("norm")(x)
        rep = jnp.tanh(_dense(s.rep_dim, "pre_logits")(x))
        if representation or not s.out_dim:
            return rep
        return _dense(s.out_dim, "head", ("mlp", "outputs"))(rep)
