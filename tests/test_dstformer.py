"""DSTformer: MotionBERT's parameter counts for both released sizes, shapes for any joint
count and clip length, absent joints masked, and the stream fusion's even start."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_vq.downstream.dstformer import MOTIONBERT, MOTIONBERT_LITE, DSTformer

TINY = dataclasses.replace(MOTIONBERT, dim=32, depth=2, num_heads=4, rep_dim=24,
                           num_joints=19, max_frames=16)


def _count(tree):
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


def _reference_count(d, hidden, depth=5, joints=17, frames=243, rep=512, out=3, inputs=3):
    """MotionBERT's DSTformer (lib/model/DSTformer.py) counted layer by layer: the joint
    embedding, both position embeddings, 2 x depth blocks (4 LayerNorms, 2 attentions of
    qkv + proj, 2 MLPs), depth fusion layers (2d -> 2), the final norm, pre_logits, head."""
    block = 4 * 2 * d + 2 * (d * 3 * d + 3 * d + d * d + d) + 2 * (2 * d * hidden + hidden + d)
    return ((inputs + 1) * d + joints * d + frames * d + 2 * depth * block
            + depth * (2 * d * 2 + 2) + 2 * d + (d + 1) * rep + (rep + 1) * out)


@pytest.mark.parametrize("spec, expected", [(MOTIONBERT, 42_466_317),
                                            (MOTIONBERT_LITE, 16_001_549)])
def test_parameter_counts_equal_motionbert(spec, expected):
    hidden = int(spec.dim * spec.mlp_ratio)
    assert _reference_count(spec.dim, hidden) == expected
    clip = jnp.zeros((1, 243, 17, 3))
    params = jax.eval_shape(lambda: DSTformer(spec).init(jax.random.key(0), clip))
    assert _count(params) == expected


@pytest.fixture(scope="module")
def tiny():
    model = DSTformer(TINY)
    keypoints = jax.random.normal(jax.random.key(1), (2, 8, 19, 3))
    return model, nn.unbox(jax.jit(model.init)(jax.random.key(0), keypoints)), keypoints


def test_shapes_for_any_clip_length(tiny):
    model, variables, keypoints = tiny
    apply = jax.jit(model.apply, static_argnames="representation")
    assert apply(variables, keypoints).shape == (2, 8, 19, 3)
    assert apply(variables, keypoints[:, :5]).shape == (2, 5, 19, 3)
    rep = apply(variables, keypoints, representation=True)
    assert rep.shape == (2, 8, 19, 24) and float(jnp.abs(rep).max()) <= 1.0  # tanh
    with pytest.raises(ValueError, match="up to 16 frames"):
        model.apply(variables, jnp.zeros((1, 17, 19, 3)))


def test_absent_joints_do_not_matter_and_present_ones_do(tiny):
    model, variables, keypoints = tiny
    mask = np.ones((2, 8, 19), bool)
    mask[:, :, 4] = False  # one joint absent throughout
    mask[1, 3, 7] = False  # and one joint of one frame
    moved = keypoints.at[:, :, 4].add(5.0).at[1, 3, 7].add(-3.0)
    apply = jax.jit(model.apply)
    np.testing.assert_array_equal(apply(variables, keypoints, mask), apply(variables, moved, mask))
    assert not np.allclose(apply(variables, keypoints, mask),
                           apply(variables, keypoints.at[0, 0, 0].add(1.0), mask))
    zeroed = keypoints.at[:, :, 4].set(0.0).at[1, 3, 7].set(0.0)  # what masking feeds
    np.testing.assert_allclose(apply(variables, keypoints, mask), apply(variables, zeroed),
                               rtol=1e-6, atol=1e-6)


def test_streams_start_evenly_averaged(tiny):
    """At init every token's fusion weights are (1/2, 1/2): the logits of each level's
    fusion layer are equal for any input."""
    model, variables, keypoints = tiny
    capture = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True,
                                               mutable=["intermediates"]))
    out, state = capture(variables, keypoints)
    for level in range(TINY.depth):
        (logits,) = state["intermediates"][f"ts_attn_{level}"]["__call__"]
        assert logits.shape == (2, 8, 19, 2)
        np.testing.assert_array_equal(logits, 0.5)
    # the fusion is learnable: moving its kernel moves the output
    params = jax.tree_util.tree_map(lambda x: x, variables["params"])
    params["ts_attn_0"] = {**params["ts_attn_0"],
                           "kernel": params["ts_attn_0"]["kernel"].at[0, 0].set(1.0)}
    assert not np.allclose(capture({"params": params}, keypoints)[0], out)
