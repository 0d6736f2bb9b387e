"""A run's files: the config round trip, the generator-only restore against the whole
state's, a state written under one mesh restored under others (and the Tokenizer onto
any mesh), and the errors that name what is missing or could not be written."""

import errno
import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from pose_vq import checkpointing, defaults, errors, sharding, tokenize
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


class _FullDisk:
    """A commit future that fails as TensorStore does when the disk fills under orbax."""

    def result(self, timeout=None):
        raise ValueError("RESOURCE_EXHAUSTED: Error writing \"w/0\" in OCDBT database: Failed "
                         "to write 16384 bytes to file 16: No space left on device "
                         "[os_error_code='28']")


def _tree(value: float) -> dict:
    return {"w": jnp.full((64, 64), value, jnp.float32), "b": jnp.arange(8, dtype=jnp.float32)}


def _save(manager, step: int, value: float) -> None:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(_tree(value))))


def _expected_message(manager, step: int, kept: str) -> str:
    needs = (64 * 64 + 8) * 4 / 1024  # float32 bytes of _tree, in KiB
    return (rf"no space left on the device to write the checkpoint of step {step} to "
            rf"{re.escape(str(manager.directory))} \(it needs about {needs:.1f} KiB, "
            rf"[\d.]+ [KMGT]?i?B free\): {kept} once space is freed")


def test_a_write_out_of_space_is_one_error_and_the_last_checkpoint_stays(tmp_path, monkeypatch):
    """A checkpoint write whose background commit fails for lack of space (TensorStore's
    error under orbax's threads; it surfaces at the next wait): one CheckpointWriteError
    naming the step, the directory, the bytes it needs and the intact checkpoint; the
    partial step is no checkpoint on restore."""
    manager = checkpointing.checkpoint_manager(tmp_path)
    _save(manager, 1, 1.0)
    manager.wait_until_finished()
    write = ocp.type_handlers.ArrayHandler.serialize

    async def full_disk(self, values, infos, args=None):
        return [*await write(self, values, infos, args), _FullDisk()]

    monkeypatch.setattr(ocp.type_handlers.ArrayHandler, "serialize", full_disk)
    with pytest.raises(checkpointing.CheckpointWriteError) as raised:
        _save(manager, 2, 2.0)
        manager.wait_until_finished()
    message = str(raised.value)
    assert re.fullmatch(_expected_message(manager, 2, "the latest intact checkpoint is step 1; a "
                                          "rerun resumes from it"), message), message
    assert errors.is_no_space(raised.value.__cause__)  # --verbose shows what orbax raised
    monkeypatch.undo()
    manager.close()

    again = checkpointing.checkpoint_manager(tmp_path, read_only=True)
    assert again.all_steps() == [1] and again.latest_step() == 1
    target = _tree(0.0)
    placed = jax.tree_util.tree_map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), target)
    restored = again.restore(1, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(target, restore_args=placed)))
    chex.assert_trees_all_equal(restored["state"], jax.device_get(_tree(1.0)))
    again.close()


def test_a_save_refused_at_once_is_reported_as_its_step(tmp_path, monkeypatch):
    """orbax's own call failing (here before it starts writing, so none of its threads is
    left waiting): a full disk is the same one error, other failures go through as
    they are."""
    manager = checkpointing.checkpoint_manager(tmp_path)
    for error in (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "checkpoints/1"),
                  PermissionError(errno.EACCES, os.strerror(errno.EACCES), "checkpoints/1")):

        def refuse(self, step, *args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(ocp.CheckpointManager, "save", refuse)
        with pytest.raises(OSError) as raised:
            _save(manager, 1, 1.0)
        if error.errno == errno.ENOSPC:
            assert re.fullmatch(_expected_message(manager, 1, "no checkpoint was written before "
                                                  "it; a rerun starts over"), str(raised.value))
        else:
            assert raised.value is error
    monkeypatch.undo()
    manager.close()
