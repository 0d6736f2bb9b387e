"""The data-parallel step on 8 CPU devices: LPIPS samples and runs each device's own
clips (equal, value and gradient, to the single-device computation), and the compiled
step's only collectives are the all-reduces of gradients and statistics."""

import collections
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from pose_vq import step as step_lib
from pose_vq.data import pipeline
from pose_vq.state import Models, create_state
from tests.test_train import data_dir, tiny_config  # noqa: F401  (data_dir: a fixture)

LOSS = {"loss.perceptual_planes": 16, "loss.perceptual_chunk": 2}  # 2 planes per clip


def test_perceptual_term_is_local_per_device_and_equals_one_device(data_dir):  # noqa: F811
    config = tiny_config(data_dir, **LOSS)
    models = Models.create(config)
    mesh = pipeline.data_mesh()
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


def test_compiled_step_has_only_gradient_and_statistic_all_reduces(data_dir):  # noqa: F811
    """The optimized HLO of the whole step (LPIPS with sampling and chunking, the GAN,
    the codebook update) on 8 devices: no clip or plane is gathered or moved between
    devices; every all-reduce carries a gradient, a codebook statistic or a scalar; the
    LPIPS weights are an argument, not folded constants. (The
    same sampling left to GSPMD, without shard_map, all-gathers the chunked planes.)"""
    config = tiny_config(data_dir, **LOSS)
    models = Models.create(config)
    mesh = pipeline.data_mesh()
    state = create_state(models, mesh, config.seed)
    batch = {"inputs": jax.ShapeDtypeStruct(models.input_shape(8), jnp.uint8,
                                            sharding=NamedSharding(mesh, PartitionSpec("data")))}
    compiled = step_lib.make_train_step(models, mesh, state).lower(
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
