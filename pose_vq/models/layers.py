"""Building blocks of the 3D VQ-GAN, channels-last (batch, frames, height, width, channels).

Pre-activation ResBlocks (GroupNorm, swish, 3x3x3 conv, twice), non-local attention over
every position of a level, padded stride-2 down-sampling and nearest up-sampling + conv,
following the reference's topology. Parameters are float32; ``dtype`` sets activations.
Every 3D convolution is a ``Conv3D``, computed by one of three paths with the same
parameters (``native``, or the CPU paths ``folded`` and ``winograd``; ``model.conv_impl``
and ``pose_vq.runtime.conv_impl_for`` choose); the 1x1x1 ones (shortcuts, attention
projections, the generator's quant convs) always run native.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pose_vq.sharding import logical

Dtype = Any


def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int] = (1, 1),
           pads: Any = ((0, 0), (0, 0))) -> jax.Array:
    """An NHWC x HWIO convolution. When an output side is shorter than the kernel's it runs
    as one matmul over the kernel's shifted copies of the input (im2col): XLA's CPU
    convolution takes 10-100x longer there (BENCHMARKS.md); the result is the same."""
    kh, kw, c, o = kernel.shape
    out = [(n + lo + hi - k) // s + 1
           for n, (lo, hi), k, s in zip(x.shape[1:3], pads, (kh, kw), strides)]
    if min(out) >= max(kh, kw):
        return jax.lax.conv_general_dilated(x, kernel, strides, pads,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    (sh, sw), (oh, ow) = strides, out
    patches = jnp.concatenate([x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
                               for i in range(kh) for j in range(kw)], axis=-1)
    return patches @ kernel.reshape(kh * kw * c, o)


class Conv3D(nn.Module):
    """A 3D convolution with a (kt, kh, kw, C, O) kernel, computed natively, "folded" or
    "winograd": the same function and parameters, so a checkpoint works with any.

    ``folded`` is a CPU path (XLA's native 3D convolution is slow on CPUs): it stacks
    the kt frames each output frame sees along channels and runs one 2D convolution
    (``conv2d``) with the kernel reshaped to (kh, kw, kt * C, O). A stride-2 conv with
    even kernel sides (the discriminator's) first becomes a space-to-depth rearrangement
    and a stride-1 conv with half the kernel, whose input gradient is ~20x cheaper on CPU
    than XLA's dilated transposed conv. ``winograd`` is ``folded`` except for 3-tap convs
    of stride 1 in time (every ResBlock's and up-sampling's) with at least
    ``WINOGRAD_MIN_FRAMES`` output frames, which it computes with Winograd's minimal
    filtering over frames (``_temporal_winograd``): up to half the multiply-adds. Off the
    CPU every path runs ``native`` (``pose_vq.runtime.conv_impl_for``).
    """

    features: int
    kernel_size: tuple[int, int, int] = (3, 3, 3)
    strides: tuple[int, int, int] = (1, 1, 1)
    padding: Any = "SAME"
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    impl: str = "native"  # native | folded | winograd

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kt, kh, kw = self.kernel_size
        kernel = self.param("kernel", logical(self.kernel_init, None, None, None, "channels_in",
                                              "channels_out"),
                            (kt, kh, kw, x.shape[-1], self.features), jnp.float32
                            ).astype(self.dtype)
        x = x.astype(self.dtype)
        pads = self._pads()
        cpu_path = self.impl in ("folded", "winograd")
        if cpu_path and self.strides == (2, 2, 2) and kt % 2 == kh % 2 == kw % 2 == 0:
            y = self._space_to_depth(x, kernel, pads)
        elif (self.impl == "winograd" and kt == 3 and self.strides[0] == 1
              and x.shape[1] + sum(pads[0]) - 2 >= WINOGRAD_MIN_FRAMES):
            y = _temporal_winograd(x, kernel, self.strides[1:], pads)
        elif cpu_path:
            y = _folded(x, kernel, self.strides, pads)
        else:
            y = jax.lax.conv_general_dilated(x, kernel, self.strides, pads,
                                             dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
        if self.use_bias:
            y = y + self.param("bias", logical(nn.initializers.zeros, "channels_out"),
                               (self.features,), jnp.float32).astype(self.dtype)
        return y

    def _pads(self) -> list[tuple[int, int]]:
        if self.padding == "VALID":
            return [(0, 0)] * 3
        if self.padding == "SAME":
            return [((k - 1) // 2, k // 2) for k in self.kernel_size]
        return [tuple(p) for p in self.padding]

    def _space_to_depth(self, x, kernel, pads):
        """Stride 2, even kernel 2k: y[o] = sum_a sum_b x[2(o + a) + b] w[2a + b] over
        a < k, b < 2, i.e. a stride-1 conv with kernel k over 2x2x2 blocks of x."""
        spatial = x.shape[1:4]
        out = [(n + lo + hi - k) // 2 + 1 for n, (lo, hi), k in zip(spatial, pads, kernel.shape)]
        # Pad (or crop) each axis to exactly the 2 * (out + k - 1) samples the outputs read.
        need = [2 * (o + k // 2 - 1) for o, k in zip(out, kernel.shape)]
        x = jnp.pad(x, ((0, 0), *[(lo, max(0, m - n - lo)) for n, (lo, _), m
                                  in zip(spatial, pads, need)], (0, 0)))
        x = x[:, :need[0], :need[1], :need[2]]
        b, t, h, w, c = x.shape
        x = x.reshape(b, t // 2, 2, h // 2, 2, w // 2, 2, c)
        x = jnp.transpose(x, (0, 1, 3, 5, 2, 4, 6, 7)).reshape(b, t // 2, h // 2, w // 2, 8 * c)
        kt, kh, kw, _, o = kernel.shape
        k = kernel.reshape(kt // 2, 2, kh // 2, 2, kw // 2, 2, c, o)
        k = jnp.transpose(k, (0, 2, 4, 1, 3, 5, 6, 7)).reshape(kt // 2, kh // 2, kw // 2, 8 * c, o)
        return _folded(x, k, (1, 1, 1), [(0, 0)] * 3)


def _folded(x: jax.Array, kernel: jax.Array, strides, pads) -> jax.Array:
    """A 3D convolution as one 2D convolution over the kt (strided) frames each output
    frame reads, stacked along channels."""
    kt, kh, kw, c, o = kernel.shape
    x = jnp.pad(x, ((0, 0), pads[0], (0, 0), (0, 0), (0, 0)))
    st = strides[0]
    frames = (x.shape[1] - kt) // st + 1
    stacked = jnp.concatenate([x[:, i:i + st * (frames - 1) + 1:st] for i in range(kt)], axis=-1)
    b, t, h, w, _ = stacked.shape
    folded_kernel = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(kh, kw, kt * c, o)
    y = conv2d(stacked.reshape(b * t, h, w, kt * c), folded_kernel, tuple(strides[1:]),
               tuple(tuple(p) for p in pads[1:]))
    return y.reshape(b, t, *y.shape[1:])


# Winograd's F(m, 3): m outputs of a 3-tap correlation from m + 2 inputs with m + 2
# products instead of 3m (Lavin & Gray, arXiv 1509.09308). (B^T, G, A^T) per m: inputs
# d -> B^T d, taps g -> G g, products p -> A^T p. Interpolation points 0, +-1 (m = 2) and
# 0, +-1, +-2 (m = 4), each with the point at infinity.
_WINOGRAD = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
        np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]]),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]])),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]])),
}
WINOGRAD_MIN_FRAMES = 4  # shorter outputs (the deepest levels, little of the work) stay folded
WINOGRAD_F4_FRAMES = 16  # from this many output frames F(4, 3), below it F(2, 3)


def _combine(coefficients: np.ndarray, arrays: list[jax.Array]) -> jax.Array:
    """sum_i coefficients[i] * arrays[i], skipping zeros and multiplying by +-1 for free."""
    total = None
    for c, a in zip(coefficients, arrays):
        if c == 0:
            continue
        term = a if c == 1 else -a if c == -1 else a * jnp.asarray(c, a.dtype)
        total = term if total is None else total + term
    return total


def _temporal_winograd(x: jax.Array, kernel: jax.Array, spatial_strides, pads) -> jax.Array:
    """A 3-tap, stride-1-in-time 3D convolution with Winograd's F(m, 3) over frames.

    The frames are cut into tiles of m + 2 (stride m) and transformed by B^T into m + 2
    streams; stream j is convolved in 2D (``conv2d``) with the kernel's transformed tap
    j, and A^T turns the m + 2 results into m output frames. Per m output frames that is
    m + 2 2D convolutions over C channels where the folded conv does m over 3C: 2x (m=4)
    or 1.5x (m=2) fewer multiply-adds, and no 3x-stacked copy of the input. Exact in real
    arithmetic; in float32 within ~1e-5 of the direct conv (tested).
    """
    (lo, hi), spatial_pads = pads[0], tuple(tuple(p) for p in pads[1:])
    b, t, h, w, c = x.shape
    frames = t + lo + hi - 2
    m = 4 if frames >= WINOGRAD_F4_FRAMES else 2
    tiles = -(-frames // m)
    x = jnp.pad(x, ((0, 0), (lo, tiles * m + 2 - t - lo), (0, 0), (0, 0), (0, 0)))
    input_transform, kernel_transform, output_transform = _WINOGRAD[m]
    taps = jnp.einsum("ji,ihwco->jhwco", kernel_transform.astype(np.float32),
                      kernel.astype(jnp.float32)).astype(kernel.dtype)
    shifted = [x[:, i:i + m * (tiles - 1) + 1:m].reshape(b * tiles, h, w, c) for i in range(m + 2)]
    streams = [conv2d(_combine(input_transform[j], shifted), taps[j], tuple(spatial_strides),
                      spatial_pads) for j in range(m + 2)]
    y = jnp.stack([_combine(output_transform[r], streams) for r in range(m)], axis=1)
    return y.reshape(b, tiles * m, *y.shape[2:])[:, :frames]


def conv3d(features: int, kernel: tuple[int, int, int] = (3, 3, 3), *, strides=(1, 1, 1),
           padding: Any = "SAME", use_bias: bool = True, dtype: Dtype = jnp.float32,
           name: str | None = None, kernel_init: Any = None,
           impl: str = "native") -> Conv3D:
    """The one 3D convolution every block uses (``kernel_init`` default: LeCun normal)."""
    kernel_init = kernel_init or nn.initializers.lecun_normal()
    return Conv3D(features, tuple(kernel), tuple(strides), padding, use_bias, dtype,
                  kernel_init, impl, name=name)


def group_norm(num_groups: int, epsilon: float = 1e-6, dtype: Dtype = jnp.float32
               ) -> nn.GroupNorm:
    """GroupNorm with float32 parameters named as per-channel ("norm") axes."""
    return nn.GroupNorm(num_groups=num_groups, epsilon=epsilon, dtype=dtype,
                        param_dtype=jnp.float32,
                        scale_init=logical(nn.initializers.ones, "norm"),
                        bias_init=logical(nn.initializers.zeros, "norm"))


class ResBlock(nn.Module):
    """GN -> swish -> conv -> GN -> swish -> dropout -> conv, plus a (1x1x1 when the
    width changes) shortcut. ``remat`` recomputes the block's activations in the backward
    pass instead of keeping them (same parameters and function)."""

    features: int
    dropout: float = 0.0
    norm_groups: int = 32
    dtype: Dtype = jnp.float32
    conv_impl: str = "native"
    remat: bool = False

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        body = nn.remat(ResBlock._body, static_argnums=(2,)) if self.remat else ResBlock._body
        return body(self, x, train)

    @nn.compact
    def _body(self, x: jax.Array, train: bool) -> jax.Array:
        norm = lambda: group_norm(self.norm_groups, dtype=self.dtype)
        h = conv3d(self.features, dtype=self.dtype, impl=self.conv_impl)(nn.swish(norm()(x)))
        h = nn.swish(norm()(h))
        h = nn.Dropout(self.dropout, deterministic=not train or self.dropout == 0.0)(h)
        h = conv3d(self.features, dtype=self.dtype, impl=self.conv_impl)(h)
        if x.shape[-1] != self.features:
            x = conv3d(self.features, (1, 1, 1), dtype=self.dtype, name="shortcut")(x)
        return x + h


class NonLocalBlock(nn.Module):
    """Single-head self-attention over all frames x height x width positions.

    The residual adds the block's *input*; the reference added the normalised input,
    which removes the skip path's identity (fixed here).
    """

    dtype: Dtype = jnp.float32
    remat: bool = False  # recompute in the backward pass (the (N, N) scores are not kept)

    def __call__(self, x: jax.Array) -> jax.Array:
        return (nn.remat(NonLocalBlock._body) if self.remat else NonLocalBlock._body)(self, x)

    @nn.compact
    def _body(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        h = group_norm(1, epsilon=1e-5, dtype=self.dtype)(x)
        proj = lambda name: conv3d(c, (1, 1, 1), dtype=self.dtype, name=name)
        q, k, v = proj("q")(h), proj("k")(h), proj("v")(h)
        flat = lambda a: a.reshape(a.shape[0], -1, c)
        # Logits and softmax in float32 (bf16's rounding of large logits shifts the weights).
        scores = jnp.einsum("bqc,bkc->bqk", flat(q), flat(k),
                            preferred_element_type=jnp.float32) * c**-0.5
        weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        out = jnp.einsum("bqk,bkc->bqc", weights, flat(v)).reshape(x.shape)
        return x + proj("proj_out")(out)


class Downsample(nn.Module):
    """Pad one zero after the end of each of frames/height/width, then a VALID strided
    conv: (kt, 3, 3) kernel, (st, 2, 2) stride; (2, 1) in time keeps the frame count."""

    temporal_kernel: int = 3
    temporal_stride: int = 2
    dtype: Dtype = jnp.float32
    conv_impl: str = "native"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 1), (0, 0)))
        return conv3d(x.shape[-1], (self.temporal_kernel, 3, 3),
                      strides=(self.temporal_stride, 2, 2), padding="VALID", dtype=self.dtype,
                      impl=self.conv_impl)(x)


class Upsample(nn.Module):
    """Nearest-neighbour up-sampling by (temporal_factor, 2, 2), then a 3x3x3 conv."""

    temporal_factor: int = 2
    dtype: Dtype = jnp.float32
    conv_impl: str = "native"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(x, self.temporal_factor, axis=1)
        x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
        return conv3d(x.shape[-1], dtype=self.dtype, impl=self.conv_impl)(x)
