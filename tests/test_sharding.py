"""Sharding on 8 CPU devices: every parameter names its axes and the rules place them
(FSDP holds an eighth of the state per device, at paper scale too); LPIPS samples and
runs each device's own clips (equal, value and gradient, to the single-device
computation), and the compiled data-parallel step's only collectives are the
all-reduces of gradients and statistics. (test_train: the FSDP and 4x2 tensor-parallel
steps equal one device's; test_checkpointing and test_tokenize: a state written under
one mesh restores under others; test_multihost: FSDP across two processes.)"""

import collections
import dataclasses
import functools
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from pose_vq import defaults, sharding
from pose_vq import step as step_lib
from pose_vq.downstream.dstformer import MOTIONBERT, DSTformer
from pose_vq.downstream.lifters import MLPLifter, MLPLifterSpec
from pose_vq.downstream.probe_head import ProbeHead
from pose_vq.models.discriminator import PatchDiscriminator
from pose_vq.models.lpips import LPIPS
from pose_vq.state import Models, abstract_state, init_state
from tests.test_train import tiny_config

P = PartitionSpec
BOXED = functools.partial(jax.tree_util.tree_leaves_with_path,
                          is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def _named_variables():
    """(model, its variables as init makes them, boxes kept) for every module with
    parameters, abstractly: the VQ-GAN with attention and each codebook kind, the
    discriminator, LPIPS, DSTformer, the MLP lifter and the probe head."""
    c = defaults.get_config()
    c.data.update(frames=8, heatmap_size=16)
    c.model.update(channels=(32, 64), spatial_downsamples=1, temporal_downsamples=1,
                   attention_resolutions=(8,), norm_groups=16)
    c.discriminator.update(filters=8, num_layers=2)
    for kind in ("ema", "learned", "gumbel"):
        c.quantizer.kind = kind
        state = jax.eval_shape(functools.partial(init_state, Models.create(c), 0, True))
        yield f"vqgan[{kind}]", {"params": state.generator, "vq_stats": state.vq_stats}
    yield "discriminator", jax.eval_shape(
        lambda: PatchDiscriminator(8, 2).init(jax.random.key(0), jnp.zeros((1, 8, 16, 16, 3))))
    clip = jnp.zeros((1, 16, 16, 3))
    yield "lpips", jax.eval_shape(lambda: LPIPS().init(jax.random.key(0), clip, clip))
    keypoints = jnp.zeros((1, 8, 17, 3))
    tiny = dataclasses.replace(MOTIONBERT, dim=32, depth=1, num_heads=4, rep_dim=24)
    yield "dstformer", jax.eval_shape(lambda: DSTformer(tiny).init(jax.random.key(0), keypoints))
    yield "mlp_lifter", jax.eval_shape(
        lambda: MLPLifter(MLPLifterSpec(width=32, blocks=1)).init(jax.random.key(0), keypoints))
    yield "probe_head", jax.eval_shape(lambda: ProbeHead(10, False, width=16).init(
        jax.random.key(0), jnp.zeros((1, 4, 6, 8))))


def test_every_parameter_names_its_axes():
    """Each parameter and codebook statistic carries one logical name (or None) per
    axis, from the documented vocabulary; only BatchNorm's running statistics and the
    k-means flag (0-d) are plain."""
    seen = set()
    for model, variables in _named_variables():
        for path, leaf in BOXED(variables):
            key = f"{model}{jax.tree_util.keystr(path)}"
            if "batch_stats" in key:
                continue
            assert isinstance(leaf, nn.LogicallyPartitioned), key
            assert len(leaf.names) == leaf.value.ndim, (key, leaf.names, leaf.value.shape)
            assert set(leaf.names) <= set(sharding.LOGICAL_AXES) | {None}, (key, leaf.names)
            seen.update(leaf.names)
    assert seen - {None} == set(sharding.LOGICAL_AXES)  # every name is used somewhere


def _mesh(data, model):
    return sharding.make_mesh({"data": data, "model": model})


@pytest.mark.parametrize("names, shape, mesh, rules, expected", [
    # FSDP: the first named axis that 'data' divides; conv taps are never sharded
    ((None, None, None, "channels_in", "channels_out"), (3, 3, 3, 32, 64), (8, 1), "fsdp",
     P(None, None, None, "data")),
    ((None, None, None, "channels_in", "channels_out"), (3, 3, 3, 4, 64), (8, 1), "fsdp",
     P(None, None, None, None, "data")),  # 4 input channels: the output ones instead
    (("channels_out",), (3,), (8, 1), "fsdp", P()),  # no divisible axis: whole
    (("codes", "code_dim"), (1024, 256), (8, 1), "fsdp", P("data")),
    # tensor: output widths over 'model', input widths over 'data'
    ((None, "channels_in", "channels_out"), (3, 32, 64), (4, 2), "tensor", P(None, "data", "model")),
    (("codes", "code_dim"), (1024, 256), (4, 2), "tensor", P("model", "data")),
    (("channels_in", "channels_out"), (64, 3), (4, 2), "tensor", P("data")),
    # an axis of one device shards nothing: the same rules on any mesh
    ((None, "channels_in", "channels_out"), (3, 32, 64), (8, 1), "tensor", P(None, "data")),
    ((None, "channels_in", "channels_out"), (3, 32, 64), (1, 1), "fsdp", P()),
    (("channels_in", "channels_out"), (64, 64), (8, 1), "replicated", P()),
])
def test_rules_place_each_axis_once_where_it_divides(names, shape, mesh, rules, expected):
    devices = jax.devices()[:mesh[0] * mesh[1]]
    m = sharding.make_mesh({"data": mesh[0], "model": mesh[1]}, devices)
    assert sharding.partition_spec(names, shape, m, sharding.STRATEGIES[rules]) == expected


def test_mesh_shapes_and_their_errors():
    assert dict(_mesh(-1, 2).shape) == {"data": 4, "model": 2}
    assert dict(sharding.make_mesh().shape) == {"data": 8, "model": 1}
    with pytest.raises(ValueError, match="does not fit 8 devices"):
        _mesh(-1, 3)
    with pytest.raises(ValueError, match="unknown axes"):
        sharding.make_mesh({"pipeline": 2})


def test_fsdp_holds_an_eighth_of_the_paper_state_per_device():
    """The 61 M-parameter model's whole train state (parameters, Adam moments, EMAs,
    codebook statistics) per device: all of it replicated, an eighth of it (to 0.1%)
    under FSDP on 8 devices, and about an eighth under (4, 2) tensor parallelism;
    shapes only, nothing allocated."""
    config = defaults.get_config()
    boxed = jax.eval_shape(functools.partial(init_state, Models.create(config), 0, True))
    abstract = nn.unbox(boxed)
    total = sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(abstract))

    def per_device(strategy, mesh):
        placed = jax.tree_util.tree_map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
            sharding.tree_shardings(boxed, mesh, sharding.STRATEGIES[strategy]))
        return sharding.bytes_per_device(placed)

    assert per_device("replicated", _mesh(8, 1)) == total > 850 * 2**20
    assert total / 8 <= per_device("fsdp", _mesh(8, 1)) < total / 8 * 1.001
    assert total / 8 <= per_device("tensor", _mesh(4, 2)) < total / 8 * 1.01


LOSS = {"loss.perceptual_planes": 16, "loss.perceptual_chunk": 2}  # 2 planes per clip


def test_perceptual_term_is_local_per_device_and_equals_one_device(data_dir):
    config = tiny_config(data_dir, **LOSS)
    models = Models.create(config)
    mesh = sharding.make_mesh()
    assert mesh.size == 8
    rng = np.random.default_rng(0)
    recon, target = (rng.uniform(size=models.target_shape(8)).astype(np.float32)
                     for _ in range(2))
    key = jax.random.key(3)

    def term(mesh):
        return jax.jit(jax.value_and_grad(lambda p, r, t, k: step_lib.perceptual_term(
            models, p, r, t, k, mesh), argnums=1))

    perceptual = step_lib.load_perceptual(config)
    one_value, one_grad = term(None)(perceptual, recon, target, key)
    clips = NamedSharding(mesh, PartitionSpec("data"))
    value, grad = term(mesh)(step_lib.load_perceptual(config, mesh),
                             jax.device_put(recon, clips), jax.device_put(target, clips), key)
    np.testing.assert_allclose(value, one_value, rtol=1e-5)
    np.testing.assert_allclose(grad, one_grad, rtol=1e-4, atol=1e-6 * np.abs(one_grad).max())
    # 2 of each clip's 8 x 3 planes: the gradient is non-zero on exactly those
    touched = np.abs(np.asarray(grad)).reshape(8, 8, -1, 3).max(axis=2) > 0
    assert touched.sum(axis=(1, 2)).tolist() == [2] * 8


def _collectives(hlo: str) -> list[tuple[str, list[int]]]:
    """(kind, element count of each operand) of every collective in optimized HLO text
    (XLA combines all-reduces into tuples)."""
    kinds = "all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter|collective-broadcast"
    ops = re.findall(rf"^\s*(?:ROOT\s+)?%[\w.\-]+ = (.+?) ({kinds})(?:-start)?\(", hlo, re.M)
    return [(kind, [math.prod(int(d) for d in dims.split(",") if d)
                    for dims in re.findall(r"[a-z]+\d*\[([\d,]*)\]", shapes)])
            for shapes, kind in ops]


def test_compiled_step_has_only_gradient_and_statistic_all_reduces(data_dir):
    """The optimized HLO of the whole step (LPIPS with sampling and chunking, the GAN,
    the codebook update) on 8 devices: no clip or plane is gathered or moved between
    devices; every all-reduce carries a gradient, a codebook statistic or a scalar; the
    LPIPS weights are an argument, not folded constants. (The
    same sampling left to GSPMD, without shard_map, all-gathers the chunked planes.)"""
    config = tiny_config(data_dir, **LOSS)
    models = Models.create(config)
    mesh = sharding.make_mesh()
    state = abstract_state(models, mesh)  # shapes and shardings: nothing is run
    batch = {"inputs": jax.ShapeDtypeStruct(models.input_shape(8), jnp.uint8,
                                            sharding=NamedSharding(mesh, PartitionSpec("data")))}
    compiled = step_lib.make_train_step(models, mesh).lower(
        state, batch, step_lib.load_perceptual(config, mesh)).compile()
    hlo = compiled.as_text()
    # The LPIPS weights (VGG16's largest kernel: 2.4M values) are arguments, not constants.
    constants = re.findall(r"= \w+\[([\d,]*)\]\S* constant\(", hlo)
    assert max(math.prod(int(d) for d in c.split(",") if d) for c in constants) < 65536
    ops = _collectives(hlo)
    kinds = collections.Counter(kind for kind, _ in ops)
    assert set(kinds) == {"all-reduce"}, kinds  # e.g. sampling on the global batch gathers
    # Each all-reduced operand is the size of a parameter or statistic leaf (or a scalar).
    sizes = {x.size for x in jax.tree_util.tree_leaves(state)} | {1}
    other = [n for _, counts in ops for n in counts if n not in sizes]
    assert not other, other
