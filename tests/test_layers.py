"""The CPU convolutions (folded, winograd) compute the same function as XLA's native 3D
convolution (same parameters), for values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_vq.models import layers

CASES = [  # (input shape, kernel, strides, padding)
    ((2, 6, 9, 8, 3), (3, 3, 3), (1, 1, 1), "SAME"),  # every generator conv
    ((1, 5, 8, 8, 2), (3, 3, 3), (1, 2, 2), ((1, 1), (0, 1), (0, 1))),  # spatial-only downsample
    ((2, 16, 16, 16, 3), (4, 4, 4), (2, 2, 2), ((1, 1),) * 3),  # discriminator layers
    ((1, 9, 11, 10, 2), (4, 4, 4), (2, 2, 2), ((1, 1),) * 3),  # odd sizes
    ((1, 7, 12, 9, 2), (4, 4, 4), (2, 2, 2), ((2, 2),) * 3),  # padding > 1
    ((1, 8, 8, 8, 2), (2, 2, 2), (2, 2, 2), "VALID"),
    ((1, 9, 9, 9, 2), (3, 3, 3), (2, 2, 2), "VALID"),  # the encoder's down-sampling
    ((1, 4, 4, 4, 3), (4, 4, 4), (1, 1, 1), ((1, 1),) * 3),  # outputs smaller than the kernel
    ((1, 2, 3, 2, 3), (1, 1, 1), (1, 1, 1), "VALID"),  # 1x1x1 (quant conv, shortcut)
    ((1, 18, 6, 5, 3), (3, 3, 3), (1, 1, 1), "SAME"),  # winograd F(4, 3), 18 = 4 * 5 - 2
    ((2, 16, 5, 6, 4), (3, 3, 3), (1, 1, 1), ((0, 2), (1, 1), (1, 1))),  # F(4, 3), 16 frames
    ((1, 3, 6, 6, 2), (3, 3, 3), (1, 1, 1), "SAME"),  # 3 frames: winograd falls back to folded
]


@pytest.mark.parametrize("impl", ["folded", "winograd"])
@pytest.mark.parametrize("shape,kernel,strides,padding", CASES)
def test_cpu_convolutions_equal_native(shape, kernel, strides, padding, impl):
    x = jnp.asarray(np.random.default_rng(0).random(shape, np.float32))
    native = layers.conv3d(5, kernel, strides=strides, padding=padding, impl="native")
    folded = layers.conv3d(5, kernel, strides=strides, padding=padding, impl=impl)
    loss = lambda module: lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))

    @jax.jit  # one program, not an op-by-op compile of each
    def both(x):
        params = native.init(jax.random.key(0), x)
        return [(m.apply(params, x), jax.grad(loss(m), argnums=(0, 1))(params, x))
                for m in (native, folded)]

    (y_native, g_native), (y_folded, g_folded) = both(x)
    assert y_native.shape == y_folded.shape
    np.testing.assert_allclose(y_folded, y_native, atol=2e-5)
    for a, b in zip(jax.tree_util.tree_leaves(g_native), jax.tree_util.tree_leaves(g_folded)):
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4)

@pytest.mark.parametrize("size,kernel,stride,pad", [(2, 3, 1, 1), (3, 4, 1, 2), (5, 3, 2, 0),
                                                    (4, 4, 1, 1), (9, 3, 1, 1)])
def test_conv2d_equals_xla(size, kernel, stride, pad):
    """layers.conv2d's matmul path (outputs shorter than the kernel) and its XLA path
    against lax.conv_general_dilated."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.random((2, size, size + 1, 3), np.float32))
    k = jnp.asarray(rng.random((kernel, kernel, 3, 4), np.float32))
    pads = ((pad, pad), (pad, pad))
    want = jax.lax.conv_general_dilated(x, k, (stride, stride), pads,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(layers.conv2d(x, k, (stride, stride), pads), want, rtol=1e-5)


@pytest.mark.parametrize("frames,convs", [(18, 6), (8, 4), (3, 1)])
def test_winograd_takes_its_path(frames, convs):
    """F(4, 3) runs 6 2D convolutions, F(2, 3) 4, and clips too short for either the one
    folded convolution: the equality test above covers each branch."""
    x = jnp.ones((1, frames, 6, 6, 2))
    conv = layers.conv3d(3, impl="winograd")
    jaxpr = jax.make_jaxpr(conv.apply)(conv.init(jax.random.key(0), x), x)
    assert str(jaxpr).count("conv_general_dilated") == convs
