"""Helpers the test modules share."""

import contextlib
import os
import pathlib
import re
import sys
from typing import Any

import jax
import ml_collections
from absl import flags

from pose_vq import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def config_file(name: str) -> ml_collections.ConfigDict:
    """The config of ``configs/NAME[:ARG]`` (e.g. ``demo.py:vqvae``), as --config reads it."""
    return config_lib.load_file(ROOT / "configs" / name)


def own_devices_env() -> dict[str, str]:
    """The environment of a subprocess that makes its own CPU devices (one, or a
    config's ``cpu_devices``): the suite's XLA flags without its device count."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                   os.environ.get("XLA_FLAGS", ""))
    return {**os.environ, "XLA_FLAGS": flags.strip()}


@contextlib.contextmanager
def xla_optimizations():
    """XLA's optimisations on for the programs compiled inside (the suite turns them off:
    most of its programs run once or twice; a loop of hundreds of steps pays for them)."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)


def read_events(logdir: str | os.PathLike) -> dict[str, tuple[str, list[tuple[int, Any]]]]:
    """tag -> (plugin name, [(step, value as a numpy array)]) of every event file in
    ``logdir``, through TensorBoard's own reader (the plugin event accumulator its
    dashboards use)."""
    from tensorboard.backend.event_processing import plugin_event_accumulator
    from tensorboard.util import tensor_util

    acc = plugin_event_accumulator.EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: (acc.SummaryMetadata(tag).plugin_data.plugin_name,
                  [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)])
            for tag in acc.Tags()["tensors"]}


def run_command(module: Any, argv: list[str]) -> Any:
    """Run a command module in-process as ``python -m`` runs it: its ``define_flags()``,
    ``argv`` parsed (and in ``sys.argv``, where config flags find their ``--config.<knob>``
    overrides), then ``main``; its flags are removed afterwards, so the next command (or
    the same one) defines them afresh."""
    before, saved_argv = set(flags.FLAGS), sys.argv
    sys.argv = [module.__name__, *argv]
    try:
        module.define_flags()
        rest = flags.FLAGS(sys.argv)
        return module.main(rest)
    finally:
        sys.argv = saved_argv
        for name in set(flags.FLAGS) - before:
            delattr(flags.FLAGS, name)
