"""A run's files: the config round trip, the generator-only restore against the whole
state's, a state written under one mesh restored under others (and the Tokenizer onto
any mesh), and the errors that name what is missing."""

import chex
import jax
import numpy as np
import pytest

from pose_vq import checkpointing, defaults, sharding, tokenize
from pose_vq.state import GeneratorState, Models, abstract_state
from tests.test_train import first_batch

pytestmark = pytest.mark.xdist_group("tiny_runs")  # one worker trains the fixture


@pytest.fixture(scope="module")
def run_dir(tiny_runs):
    return tiny_runs[1] / "vqgan"


def test_generator_restore_equals_the_whole_states_fields(tiny_runs, run_dir):
    config = checkpointing.load_run_config(run_dir)
    assert config.to_dict() == tiny_runs[0].to_dict()  # config.json, read back
    # On one device: the fields, not the layout, are compared here (the next test restores
    # across meshes), and orbax reads 8 shards of every leaf 3-4x as slowly (BENCHMARKS.md).
    models, mesh = Models.create(config), sharding.make_mesh(devices=jax.devices()[:1])
    whole = checkpointing.restore_state(checkpointing.checkpoint_manager(run_dir),
                                        abstract_state(models, mesh))
    part = checkpointing.restore_generator(run_dir, models, mesh)
    assert isinstance(part, GeneratorState) and not hasattr(part, "generator_opt")
    for name in ("step", "generator", "vq_stats", "ema_generator", "ema_vq_stats"):
        chex.assert_trees_all_equal(jax.device_get(getattr(whole, name)),
                                    jax.device_get(getattr(part, name)))


def test_a_state_written_under_fsdp_restores_onto_other_meshes(run_dir):
    """The fixture's run saved its state sharded over 8 devices (FSDP); restored under a
    (4, 2) tensor-parallel mesh and on one device it holds the same values, each leaf
    laid out as the new mesh's rules say; the Tokenizer restores onto any mesh and
    encodes the same tokens."""
    config = checkpointing.load_run_config(run_dir)
    assert config.sharding.strategy == "fsdp"
    manager = checkpointing.checkpoint_manager(run_dir, read_only=True)

    def restore(strategy, mesh):
        config.sharding.strategy = strategy
        models = Models.create(config)
        return checkpointing.restore_state(manager, abstract_state(models, mesh))

    written = restore("fsdp", sharding.make_mesh())
    kernel = lambda s: s.generator["encoder"]["conv_in"]["kernel"]
    assert kernel(written).sharding.spec == jax.sharding.PartitionSpec(
        None, None, None, None, "data")  # 3 input channels: split along the 16 outputs
    tensor_mesh = sharding.make_mesh({"data": 4, "model": 2})
    for strategy, mesh, spec in [
            ("tensor", tensor_mesh, (None, None, None, None, "model")),
            ("replicated", sharding.make_mesh(devices=jax.devices()[:1]), ())]:
        state = restore(strategy, mesh)
        assert kernel(state).sharding.spec == jax.sharding.PartitionSpec(*spec)
        chex.assert_trees_all_equal(jax.device_get(state), jax.device_get(written))

    clips = first_batch(config, 4)["inputs"] / np.float32(255)
    on_data_axis, on_tensor_mesh = (tokenize.Tokenizer.from_workdir(run_dir, mesh=mesh)
                               for mesh in (None, tensor_mesh))
    np.testing.assert_array_equal(on_data_axis.encode(clips), on_tensor_mesh.encode(clips))


def test_missing_checkpoints_and_config_are_named(tmp_path):
    models = Models.create(defaults.get_config())
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*train first"):
        checkpointing.restore_generator(tmp_path, models, sharding.make_mesh())
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        checkpointing.load_run_config(tmp_path)
