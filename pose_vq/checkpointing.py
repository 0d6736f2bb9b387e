"""A run's files in its workdir: the config it was trained with and its orbax checkpoints
(the train state and the data iterator's position).

Training saves and restores whole states; evaluation, export and visualisation restore
the generator alone (``restore_generator``), so they never read optimiser states or the
discriminator. A write that fails for lack of space ends in one ``CheckpointWriteError``
(``CheckpointManager``); the checkpoints before it stay intact and a rerun resumes from
the latest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator, Mapping
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from pose_vq import config as config_lib
from pose_vq import errors, paths
from pose_vq.data import pipeline
from pose_vq.state import GeneratorState, Models, TrainState, abstract_generator_state

CONFIG_FILE = "config.json"


def quiet_orbax_logs() -> None:
    """orbax logs every save step by step at INFO; keep its warnings only (commands call
    this first)."""
    absl_logging.get_absl_handler().python_handler.addFilter(
        lambda record: record.levelno >= logging.WARNING or "/orbax/" not in record.pathname)


def write_run_config(config: ml_collections.ConfigDict, workdir: paths.PathLike) -> None:
    """Keep the run's config in its workdir (process 0): what export and visualisation
    rebuild the model from."""
    if jax.process_index() == 0:
        path = paths.as_path(workdir) / CONFIG_FILE
        path.write_text(config.to_json_best_effort(indent=2) + "\n")


def config_digest(config: ml_collections.ConfigDict | Mapping[str, Any]) -> str:
    """16 hex digits of the sha256 of a config's JSON, keys sorted: names the config a model
    was made with in what is made from it (token exports, probe heads), so that what came
    from another config is told apart."""
    if isinstance(config, ml_collections.ConfigDict):
        config = json.loads(config.to_json_best_effort())
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def load_run_config(workdir: paths.PathLike) -> ml_collections.ConfigDict:
    """The config a run was trained with (``<workdir>/config.json``), over today's
    defaults, so knobs added since the run keep their default values."""
    path = paths.as_path(workdir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir} a pose_vq training workdir?")
    return config_lib.from_json(path.read_text())


class CheckpointWriteError(errors.ActionableError, OSError):
    """A checkpoint could not be written for lack of space; the message names the step,
    the directory, the space it needs and the latest intact checkpoint."""


def _size(n: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = 0
    while n >= 1024 and power < len(units) - 1:
        n, power = n / 1024, power + 1
    return f"{n:.1f} {units[power]}"


def _nbytes(args: Any) -> int:
    """Bytes of the arrays a save's args hold (each item's ``item``: a state, a pytree)."""
    items = args.values() if isinstance(args, ocp.args.Composite) else [args]
    leaves = jax.tree_util.tree_leaves([getattr(a, "item", None) for a in items])
    return sum(int(getattr(x, "nbytes", 0)) for x in leaves)


class CheckpointManager(ocp.CheckpointManager):
    """orbax's manager, whose writes that fail for lack of space raise one
    CheckpointWriteError. orbax writes in a background thread, so a failure surfaces at
    the next ``save`` or ``wait_until_finished``: it is reported as the step that failed.
    ``save`` waits for the previous write first, as orbax's does before writing (the
    callers here call it only on steps they save)."""

    _writing: tuple[int, int] | None = None  # (step, bytes) of the latest save

    def save(self, step: int, *args: Any, **kwargs: Any) -> bool:
        self.wait_until_finished()  # the previous save's failure, as that step's
        self._writing = (step, _nbytes(kwargs.get("args")))
        with self._no_space():
            return super().save(step, *args, **kwargs)

    def wait_until_finished(self) -> None:
        with self._no_space():
            super().wait_until_finished()

    @contextlib.contextmanager
    def _no_space(self) -> Iterator[None]:
        try:
            yield
        except CheckpointWriteError:
            raise
        except Exception as e:
            if self._writing is None or not errors.is_no_space(e):
                raise
            raise CheckpointWriteError(self._no_space_message(*self._writing)) from e

    def _no_space_message(self, step: int, nbytes: int) -> str:
        try:
            free = _size(shutil.disk_usage(self.directory).free) + " free"
        except OSError:
            free = "free space unknown"
        self.reload()  # what is on disk: a failed step was never renamed from its temporary folder
        intact = [s for s in self.all_steps() if s < step]
        kept = (f"the latest intact checkpoint is step {max(intact)}; a rerun resumes from it"
                if intact else "no checkpoint was written before it; a rerun starts over")
        return (f"no space left on the device to write the checkpoint of step {step} to "
                f"{self.directory} (it needs about {_size(nbytes)}, {free}): {kept} once "
                "space is freed")


def checkpoint_manager(workdir: paths.PathLike, keep: int | None = None, every: int = 1,
                       read_only: bool = False) -> CheckpointManager:
    """The run's checkpoints, the last ``keep`` kept (None: all). ``should_save(step)``
    holds every ``every`` steps and at a preemption sync point (orbax's default would
    also save the first step of a run)."""
    policy = ocp.checkpoint_managers.AnySavePolicy([
        ocp.checkpoint_managers.FixedIntervalPolicy(every),
        ocp.checkpoint_managers.PreemptionCheckpointingPolicy()])
    directory = paths.absolute(workdir) / "checkpoints"
    try:
        return CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_decision_policy=policy,
                                                 create=not read_only, read_only=read_only),
            item_handlers={"state": _state_handler(),
                           "data": grain.checkpoint.CheckpointHandler()})
    except ImportError as e:  # orbax asks a gs:// bucket about itself with google-cloud-storage
        if not paths.is_remote(directory):
            raise
        raise errors.ConfigError(f"{directory}: orbax needs {e.name or 'a GCS client'} for "
                                 "checkpoints in a bucket (pip install -e '.[gcs]', included "
                                 "in '.[tpu]')") from e


def _state_handler() -> ocp.PyTreeCheckpointHandler:
    """Orbax's handler, writing replica-parallel only across processes. In one process
    every replica is local: splitting the write among them bought nothing and compiled a
    slicing program per leaf shape (the test suite's three tiny runs: 44.2 instead of
    57.0 s, BENCHMARKS.md). Its leaves are plain arrays (the rng is raw key data), so it keeps no
    typed-key metadata either."""
    if jax.process_count() > 1:
        return ocp.PyTreeCheckpointHandler()
    arrays = ocp.type_handlers.ArrayHandler(use_replica_parallel=False)
    return ocp.PyTreeCheckpointHandler(
        type_handler_registry=ocp.type_handlers.create_type_handler_registry((jax.Array, arrays)))


def save(manager: CheckpointManager, step: int, state: TrainState,
         batches: pipeline.GlobalBatches) -> None:
    """Save the state and the loader's position at ``step`` (asynchronously; whether to
    is the loop's call, through ``manager.should_save``)."""
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave(state),
        data=grain.checkpoint.CheckpointSave(batches)), force=True)


def _require_checkpoint(manager: ocp.CheckpointManager) -> None:
    if manager.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}: train first")


def restore_state(manager: ocp.CheckpointManager, abstract: TrainState,
                  batches: pipeline.GlobalBatches | None = None, step: int | None = None
                  ) -> TrainState:
    """The whole state at ``step`` (default: the latest); also positions ``batches``
    there."""
    _require_checkpoint(manager)
    step = manager.latest_step() if step is None else step
    items = {"state": ocp.args.PyTreeRestore(abstract, restore_args=_restore_args(abstract))}
    if batches is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(batches)
    return manager.restore(step, args=ocp.args.Composite(**items))["state"]


def restore_generator(workdir: paths.PathLike, models: Models, mesh: jax.sharding.Mesh,
                      step: int | None = None) -> GeneratorState:
    """The generator's part of the checkpoint at ``step`` (default: the latest) of a
    workdir, read alone (orbax partial restore) onto ``mesh`` in the shardings the
    models' config gives it (``config.sharding``: replicated by default, or FSDP or
    tensor parallel), whatever mesh the run was trained on."""
    manager = checkpoint_manager(workdir, read_only=True)
    _require_checkpoint(manager)
    step = manager.latest_step() if step is None else step
    abstract = abstract_generator_state(models, mesh)
    item = ocp.args.PyTreeRestore(abstract, restore_args=_restore_args(abstract),
                                  partial_restore=True)
    return GeneratorState(**manager.restore(step, args=ocp.args.Composite(state=item))["state"])


def _restore_args(abstract: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape, dtype=a.dtype),
        abstract)
