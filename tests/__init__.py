"""Helpers the test modules share."""

import contextlib
import os
import re
from typing import Any

import jax


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
