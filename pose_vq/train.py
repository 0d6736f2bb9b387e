"""The training loop: ``train_and_evaluate(config, workdir)`` resumes from the workdir's
latest checkpoint, runs the jitted step (pose_vq.step), writes TensorBoard summaries, saves
checkpoints (pose_vq.checkpointing) and evaluates periodically and at the end.

A SIGTERM (or, across processes, JAX's preemption notice) saves a checkpoint and stops
at the next step, so a pre-empted run resumes where it stopped.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util

from pose_vq import checkpointing, evaluate, paths, runtime, sharding, summary
from pose_vq import config as config_lib
from pose_vq import step as step_lib
from pose_vq.data import pipeline, prepare
from pose_vq.state import Models, TrainState, abstract_state, create_state


def summary_name(name: str) -> str:
    """``loss_l1`` -> ``loss/l1``: the group before the first underscore is a TensorBoard
    section."""
    return name.replace("_", "/", 1)


class Preemption:
    """Whether to save and stop: SIGTERM sets a flag (one process: JAX's preemption
    service exists only under jax.distributed); several processes also agree through
    orbax's preemption sync point, so they all stop at the same step."""

    def __init__(self, manager: ocp.CheckpointManager):
        self.requested = False
        self._manager = manager
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        logging.warning("SIGTERM: saving a checkpoint and stopping after this step")
        self.requested = True

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return self._manager.reached_preemption(step) or self.requested
        return self.requested


def _raise_if_non_finite(log: step_lib.StepLog | None, last_saved: int | None) -> None:
    """At a log or checkpoint boundary: stop if a step since the last one was not finite
    (its state change was dropped on device), naming the first such step and its terms."""
    if log is None or not int(log.first_bad_step):
        return
    bad = sorted(summary_name(k) for k, v in log.bad_terms.items() if bool(v))
    kept = (f"the last checkpoint (step {last_saved}) is intact" if last_saved is not None
            else "no checkpoint was written")
    raise FloatingPointError(f"non-finite loss at step {int(log.first_bad_step)}: "
                             f"{', '.join(bad) or 'unknown term'}; training stopped, {kept}")


def device_only() -> Any:
    """The context of the steps between two boundaries: a device-to-host copy there would
    make the host wait on every step, so it is an error (JAX's transfer guard; on CPU,
    where arrays need no copy, the tests trap reads of device values instead)."""
    return jax.transfer_guard_device_to_host("disallow")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: paths.PathLike
                       ) -> TrainState:
    """Train ``config.train.num_steps`` steps in ``workdir``, resuming from its latest
    checkpoint; evaluate periodically and at the end. Returns the final state.

    Between log, checkpoint and evaluation boundaries the host only dispatches: batches
    arrive prefetched, metrics and the first non-finite step accumulate on device
    (``step.StepLog``), and nothing is read back until the next boundary.
    """
    config_lib.validate(config)
    workdir = paths.as_path(workdir)  # gs://bucket/run too
    tc = config.train
    compiles = runtime.CompileCounter().start()
    mesh = sharding.make_mesh(config.sharding.mesh)
    config_lib.check_batch_divisible(config, sharding.data_size(mesh))
    data_dir, name = prepare.prepare_dataset(config.data, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    checkpointing.write_run_config(config, workdir)
    models = Models.create(config)
    writer = summary.SummaryWriter(workdir)
    batches = pipeline.GlobalBatches(pipeline.training_loader_config(config, data_dir, name),
                                     mesh, prefetch=config.data.prefetch)

    manager = checkpointing.checkpoint_manager(workdir, tc.keep_checkpoints, tc.checkpoint_every)
    if manager.latest_step() is not None:
        state = checkpointing.restore_state(manager, abstract_state(models, mesh), batches)
        logging.info("restored step %d from %s", int(state.step), manager.directory)
    else:
        state = create_state(models, mesh, config.seed)
        writer.write_hparams(hparams(config))
    start = int(state.step)
    step_fn = step_lib.make_train_step(models, mesh)
    empty_log = jax.jit(step_lib.StepLog.empty)
    accumulate = jax.jit(step_lib.StepLog.add, donate_argnums=0)
    perceptual = step_lib.load_perceptual(config, mesh)
    evaluator = evaluate.Evaluator(models, mesh, data_dir, name, config, workdir)

    report = summary.Progress(tc.num_steps, writer)
    preemption = Preemption(manager)
    log, window_start, window_steps = None, None, 0
    last_saved = manager.latest_step()
    try:
        for step in range(start + 1, tc.num_steps + 1):
            with device_only(), jax.profiler.StepTraceAnnotation("train", step_num=step):
                batch = next(batches)
                state, update, finite = step_fn(state, pipeline.model_fields(batch),
                                                perceptual)
                log = accumulate(empty_log(update) if log is None else log, update, finite,
                                 step)
            if step == start + 1:  # compilation: excluded from the throughput
                jax.block_until_ready(finite)
                window_start, window_steps = time.perf_counter(), 0
            else:
                window_steps += 1
            report(step)
            final = step == tc.num_steps or preemption.reached(step)
            evaluate_now = (tc.eval_every and step % tc.eval_every == 0) or step == tc.num_steps
            if step % tc.log_every == 0 or final:
                _raise_if_non_finite(log, last_saved)
                scalars = log.metrics.compute()
                if window_steps:
                    elapsed = time.perf_counter() - window_start
                    scalars["perf_examples_per_sec_per_device"] = (
                        window_steps * tc.batch_size / elapsed / jax.device_count())
                    window_start, window_steps = time.perf_counter(), 0
                writer.write_scalars(step, {f"train/{summary_name(k)}": v
                                            for k, v in scalars.items()})
                log = None
            if final or manager.should_save(step):
                _raise_if_non_finite(log, last_saved)
                checkpointing.save(manager, step, state, batches)
                last_saved = step
            if evaluate_now:
                _raise_if_non_finite(log, last_saved)
                manager.wait_until_finished()  # no checkpoint writes beside the evaluation
                evaluator.run(state, step, writer)
            if final:
                break
        if start >= tc.num_steps:  # e.g. the final evaluation was interrupted: redo it
            logging.info("already at step %d of %d: evaluating", start, tc.num_steps)
            evaluator.run(state, start, writer)
    finally:
        preemption.restore()
        manager.wait_until_finished()
        writer.close()
        compiles.stop()
        logging.info("%s", compiles.summary())
    return state


def hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as TensorBoard hparams: dotted knob names, scalars as they are and
    anything else (tuples) as text."""
    flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}
