"""The 3D VQ-GAN generator: encoder -> 1x1x1 quant conv -> codebook -> 1x1x1 post-quant
conv -> decoder, with the reference's level topology.

Encoder: a 3x3x3 stem, then one level per entry of ``channels`` (the stem keeps the first
width) with ``encoder_blocks`` ResBlocks each, attention after every ResBlock of a level
whose spatial side is in ``attention_resolutions``, and a down-sampling after each of the
first ``spatial_downsamples`` levels (also in time for the first ``temporal_downsamples``);
then ResBlock, attention, ResBlock, GN, swish, conv to ``latent_channels``. The decoder
mirrors it with ``decoder_blocks`` ResBlocks per level and up-sampling after levels
1..spatial_downsamples. ``reduce_temporal`` (F8, 48 frames) strides time by 4, 4, 4
down and up-samples by 4, 4, 3 as the reference does. Attention sits where the *actual*
side is in ``attention_resolutions`` in both halves; the reference's decoder used its
configured latent size (16) at every compression, which moves its attention to 8x8
(F16) or 4x4 (F32) latents. At F8 the two agree. At F32 (5 down-samplings over 5 levels)
the reference's decoder up-sampled only after levels 1..4 and returned half-size clips;
here it up-samples after every level.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from pose_vq.models import layers
from pose_vq.models.quantizer import QuantizerOutput, code_width, make_quantizer


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    """Everything that fixes the generator's shapes; ``pose_vq.config.generator_spec``
    builds it from a config."""

    in_channels: int = 3
    out_channels: int = 3
    image_size: int = 128
    frames: int = 64
    channels: tuple[int, ...] = (64, 64, 128, 128, 256)
    latent_channels: int = 256
    encoder_blocks: int = 2
    decoder_blocks: int = 3
    attention_resolutions: tuple[int, ...] = (16,)
    spatial_downsamples: int = 3
    temporal_downsamples: int = 3
    reduce_temporal: bool = False
    dropout: float = 0.0
    norm_groups: int = 32
    num_codes: int = 1024
    quantizer: tuple[tuple[str, Any], ...] = ()  # make_quantizer's knobs (kind, stages, ...)
    dtype: str = "float32"
    conv_impl: str = "native"  # native | folded | winograd (faster convs on CPU, same params)
    remat_levels: int = 0  # highest-resolution levels (each end) recomputed in the backward

    def encoder_levels(self) -> list[dict]:
        """Per level: width, attention, and the (kernel, stride) in time of its down-sampling
        (None: no down-sampling after this level)."""
        out, side = [], self.image_size
        for n, width in enumerate(self.channels):
            down = None
            if n < self.spatial_downsamples:
                if self.reduce_temporal:
                    down = (3, 4)
                elif n < self.temporal_downsamples:
                    down = (3, 2)
                else:
                    down = (2, 1)
            out.append({"width": width, "attention": side in self.attention_resolutions,
                        "down": down, "remat": n < self.remat_levels})
            side = side // 2 if down else side
        return out

    def decoder_levels(self) -> list[dict]:
        """Per level: width, attention, and the temporal factor of its up-sampling (None:
        no up-sampling after this level)."""
        out, side = [], self.image_size >> self.spatial_downsamples
        # Up-sample after levels 1..S, or after every level when S uses them all (F32).
        first = 0 if self.spatial_downsamples == len(self.channels) else 1
        count = 0
        for n, width in enumerate(reversed(self.channels)):
            up = None
            if n >= first and count < self.spatial_downsamples:
                count += 1
                if self.reduce_temporal:
                    up = 3 if count == 3 else 4
                else:
                    up = 2 if count <= self.temporal_downsamples else 1
            out.append({"width": width, "attention": side in self.attention_resolutions, "up": up,
                        "remat": n >= len(self.channels) - self.remat_levels})
            side = side * 2 if up else side
        return out

    @property
    def quantizer_kind(self) -> str:
        return dict(self.quantizer).get("kind", "ema")

    @property
    def stages(self) -> int:
        """Residual quantizer stages: token ids gain a trailing axis of this size when > 1."""
        return dict(self.quantizer).get("stages", 1)

    @property
    def code_dim(self) -> int:
        """Channels of the quantized latent (quantizer.code_width): the quant conv's output
        and the post-quant conv's input."""
        return code_width(self.quantizer_kind, self.num_codes, self.latent_channels,
                          dict(self.quantizer).get("levels", ()))

    def token_shape(self) -> tuple[int, ...]:
        """One clip's token ids: the token grid, with a trailing stage axis when stages > 1."""
        return self.token_grid() + ((self.stages,) if self.stages > 1 else ())

    def token_grid(self) -> tuple[int, int, int]:
        """(frames, height, width) of the token grid for a (frames, size, size) clip."""
        t = self.frames
        for level in self.encoder_levels():
            if level["down"]:
                kernel, stride = level["down"]
                t = (t + 1 - kernel) // stride + 1
        side = self.image_size >> self.spatial_downsamples
        return (t, side, side)


def _middle(s: GeneratorSpec, h: jax.Array, train: bool) -> jax.Array:
    """ResBlock, attention, ResBlock at the lowest resolution (called inside a compact
    method, so the blocks belong to the caller)."""
    dtype = jnp.dtype(s.dtype)
    width = s.channels[-1]
    h = layers.ResBlock(width, s.dropout, s.norm_groups, dtype, s.conv_impl)(h, train)
    h = layers.NonLocalBlock(dtype)(h)
    return layers.ResBlock(width, s.dropout, s.norm_groups, dtype, s.conv_impl)(h, train)


def _level(s: GeneratorSpec, h: jax.Array, level: dict, count: int, train: bool) -> jax.Array:
    """One level's ``count`` ResBlocks, each followed by attention where the level has it
    (called inside a compact method, so the blocks belong to the caller). Blocks of a level
    marked ``remat`` keep no activations for the backward pass; they are recomputed."""
    dtype = jnp.dtype(s.dtype)
    for _ in range(count):
        h = layers.ResBlock(level["width"], s.dropout, s.norm_groups, dtype, s.conv_impl,
                            level["remat"])(h, train)
        if level["attention"]:
            h = layers.NonLocalBlock(dtype, level["remat"])(h)
    return h


class Encoder(nn.Module):
    spec: GeneratorSpec

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        s, dtype = self.spec, jnp.dtype(self.spec.dtype)
        h = layers.conv3d(s.channels[0], dtype=dtype, name="conv_in", impl=s.conv_impl)(x.astype(dtype))
        for level in s.encoder_levels():
            h = _level(s, h, level, s.encoder_blocks, train)
            if level["down"]:
                h = layers.Downsample(*level["down"], dtype=dtype, conv_impl=s.conv_impl)(h)
        h = _middle(s, h, train)
        h = nn.swish(layers.group_norm(s.norm_groups, dtype=dtype)(h))
        return layers.conv3d(s.latent_channels, dtype=dtype, name="conv_out", impl=s.conv_impl)(h)


class Decoder(nn.Module):
    spec: GeneratorSpec

    @nn.compact
    def __call__(self, z: jax.Array, *, train: bool = False) -> jax.Array:
        s, dtype = self.spec, jnp.dtype(self.spec.dtype)
        width = s.channels[-1]
        h = layers.conv3d(width, dtype=dtype, name="conv_in", impl=s.conv_impl)(z.astype(dtype))
        h = _middle(s, h, train)
        for level in s.decoder_levels():
            h = _level(s, h, level, s.decoder_blocks, train)
            if level["up"]:
                h = layers.Upsample(level["up"], dtype=dtype, conv_impl=s.conv_impl)(h)
        # The output's norm and conv in float32 whatever the dtype: bf16 would round the
        # reconstruction to 8 bits of mantissa, coarser than the data's 1/255 levels.
        h = nn.swish(layers.group_norm(s.norm_groups)(h))
        # The adaptive GAN weight is taken on this kernel: params["decoder"]["conv_out"].
        self.sow("intermediates", "conv_out_input", h)
        return layers.conv3d(s.out_channels, dtype=jnp.float32, name="conv_out",
                             impl=s.conv_impl)(h)


class VQGAN(nn.Module):
    """Heatmap clip (B, T, H, W, C_in) -> reconstruction (B, T, H, W, C_out) and tokens."""

    spec: GeneratorSpec

    def setup(self):
        s = self.spec
        dtype = jnp.dtype(s.dtype)
        self.encoder = Encoder(s)
        self.quant_conv = layers.conv3d(s.code_dim, (1, 1, 1), dtype=dtype)
        self.quantizer = make_quantizer(num_codes=s.num_codes, code_dim=s.code_dim,
                                        dtype=dtype, **dict(s.quantizer))
        self.post_quant_conv = layers.conv3d(s.latent_channels, (1, 1, 1), dtype=dtype)
        self.decoder = Decoder(s)

    def __call__(self, x: jax.Array, *, train: bool = False, temperature: float | None = None,
                 step: jax.Array | None = None) -> tuple[jax.Array, QuantizerOutput]:
        q = self.quantize(x, train=train, temperature=temperature, step=step)
        return self.decode_latents(q.quantized, train=train), q

    def quantize(self, x: jax.Array, *, train: bool = False, temperature: float | None = None,
                 step: jax.Array | None = None) -> QuantizerOutput:
        """``temperature``: gumbel's, in training; ``step``: the training step, for the
        schedules that follow it (lfq's entropy weight)."""
        chex.assert_rank(x, 5)  # (B, T, H, W, C_in), channels last
        chex.assert_axis_dimension(x, -1, self.spec.in_channels)
        z = self.quant_conv(self.encoder(x, train=train))
        return self.quantizer(z, train=train, temperature=temperature, step=step)

    def encode(self, x: jax.Array) -> jax.Array:
        """Token ids (B, t, h, w[, stages]) of clips, without updating the codebook."""
        return self.quantize(x, train=False).indices

    def decode_latents(self, quantized: jax.Array, *, train: bool = False) -> jax.Array:
        return self.decoder(self.post_quant_conv(quantized), train=train)

    def decode_indices(self, indices: jax.Array) -> jax.Array:
        """Heatmap clips from token ids (B, t, h, w[, stages])."""
        chex.assert_rank(indices, 4 + (self.spec.stages > 1))
        return self.decode_latents(self.quantizer.lookup(indices))
