"""``step`` and ``encode``: the whole training step (generator with LPIPS, discriminator,
adaptive weight, EMA) of a config on random clips, or clips to token ids. One row per
batch size and per combination of ``--compare`` values (``knob=v1,v2``; ``;`` separates
values that contain commas), each in a fresh process on all local devices with the batch
split over them: seconds per step after compilation, examples/s/device, FLOPs from XLA's
cost analysis of the program lowered for one device, the FLOP rate against a matmul peak
measured in the same process in the model's dtype, XLA's memory per device and the
process's (or accelerator's) peak."""

from __future__ import annotations

import ast
import itertools
import json
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app
from flax import traverse_util

from pose_vq import config as config_lib
from pose_vq import errors, runtime, sharding
from pose_vq import step as step_lib
from pose_vq.benchmarks import harness
from pose_vq.models.vqgan import VQGAN
from pose_vq.state import Models, abstract_state, create_state


class CompareError(ValueError):
    """A --compare value that names no knob or does not parse as the knob's type."""


def parse_value(text: str, current: Any) -> Any:
    """A command-line value for a knob, typed like the knob's current value."""
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{text!r} is not a boolean")
        return text.lower() in ("true", "1")
    if isinstance(current, (int, float)):
        return type(current)(text)
    if isinstance(current, (tuple, list)):
        return tuple(ast.literal_eval(text))
    return text


def compare_grid(config: ml_collections.ConfigDict, compare: list[str]
                 ) -> list[tuple[dict[str, Any], ml_collections.ConfigDict]]:
    """Every combination of the ``knob=v1,v2`` values, as (changed knobs, config)."""
    knobs = traverse_util.flatten_dict(config.to_dict(), sep=".")
    axes = []
    for spec in compare:
        knob, sep, values = spec.partition("=")
        if not sep or not values:
            raise CompareError(f"--compare={spec}: expected knob=value1,value2")
        if knob not in knobs:
            raise CompareError(f"--compare={spec}: the config has no knob {knob}")
        try:
            axes.append([(knob, parse_value(v, knobs[knob]))
                         for v in values.split(";" if ";" in values else ",")])
        except (ValueError, SyntaxError) as e:
            raise CompareError(f"--compare={spec}: {e}") from None
    rows = []
    for combo in itertools.product(*axes):
        c = ml_collections.ConfigDict(config.to_dict())
        c.update_from_flattened_dict(dict(combo))
        rows.append((dict(combo), c))
    return rows


def _shapes(tree: Any) -> Any:
    """Shapes and dtypes of a tree of arrays, without their placement."""
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def step_flops(models: Models, batch: dict[str, Any], perceptual: Any
               ) -> tuple[float, bool]:
    """FLOPs of one training step at the whole batch (``harness.xla_flops``), from the step
    lowered for one device: the same model on any mesh and platform."""
    one_device = sharding.make_mesh({"data": 1, "model": 1}, jax.devices()[:1])
    return harness.xla_flops(step_lib.make_train_step(models, one_device).lower(
        abstract_state(models, one_device), _shapes(batch), _shapes(perceptual)))


def measure_row(what: str, config: ml_collections.ConfigDict, batch: int, steps: int) -> dict:
    """One row of the step or encode table (in its own process: see ``run_rows``)."""
    config.train.batch_size = batch
    models = Models.create(config)
    mesh = sharding.make_mesh(config.sharding.mesh)
    if batch % sharding.data_size(mesh):
        raise ValueError(f"batch {batch} is not divisible by the {sharding.data_size(mesh)} "
                         "devices of the data axis")
    data = sharding.batch_sharding(mesh)
    rng = np.random.default_rng(0)
    clips = lambda shape: jax.device_put(rng.uniform(size=shape).astype(np.float32), data)
    stored = lambda shape: jax.device_put(rng.integers(0, 256, shape, np.uint8), data)
    start = time.perf_counter()
    if what == "step":  # on stored uint8 clips, as the loader gives them
        state = create_state(models, mesh, config.seed)
        batch_arrays = {"inputs": stored(models.input_shape(batch))}
        if models.mode.has_separate_target:
            batch_arrays["targets"] = stored(models.target_shape(batch))
        perceptual = step_lib.load_perceptual(config, mesh)
        program, args = step_lib.make_train_step(models, mesh), (state, batch_arrays, perceptual)
        holder = [state]

        def run():
            holder[0], _, finite = compiled(holder[0], batch_arrays, perceptual)
            return finite
    else:
        x = clips(models.input_shape(batch))
        init = lambda: models.generator.init({"params": jax.random.key(0),
                                              "vq": jax.random.key(1)}, x[:1])
        placed = sharding.tree_shardings(jax.eval_shape(init), mesh, sharding.rules_for(config))
        variables = jax.jit(lambda: nn.unbox(init()), out_shardings=placed)()
        state = variables
        apply = lambda v, x: models.generator.apply(v, x, method=VQGAN.encode)
        program, args = jax.jit(apply, out_shardings=data), (variables, x)
    times = {"setup_seconds": time.perf_counter() - start}
    with runtime.CompileCounter() as cache:  # trace, lower and compile apart (JAX's AOT stages)
        start = time.perf_counter()
        traced = program.trace(*args)
        times["trace_seconds"] = time.perf_counter() - start
        lowered = traced.lower()
        times["lower_seconds"] = time.perf_counter() - start - times["trace_seconds"]
        compiled = lowered.compile()
        times["compile_seconds"] = (time.perf_counter() - start - times["trace_seconds"]
                                    - times["lower_seconds"])
    if what == "encode":
        run = lambda: compiled(*args)
    seconds = harness.time_calls(run, steps) if steps else float("nan")  # 0: compile only
    if what == "step":
        flops, flops_lower_bound = step_flops(models, batch_arrays, perceptual)
    else:  # lowered unplaced: for one device
        flops, flops_lower_bound = harness.xla_flops(
            jax.jit(apply).lower(_shapes(variables), _shapes(x)))
    peak = harness.matmul_peak(mesh, jnp.dtype(config.model.dtype))
    return {
        "what": what, "batch": batch, "devices": mesh.size, "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind, "dtype": config.model.dtype,
        "seconds": seconds, "examples_per_sec_per_device": batch / seconds / mesh.size,
        "gflops": flops / 1e9, "flops_lower_bound": flops_lower_bound,
        "tflops_per_sec": flops / seconds / 1e12,
        "peak_tflops_per_device": peak / 1e12,
        "utilisation": flops / seconds / (peak * mesh.size),
        "xla_gib_per_device": harness.xla_memory_gib(compiled),
        "state_gib_per_device": sharding.bytes_per_device(state) / 2**30,
        "peak_gib": harness.peak_memory_gib(), **times,
        "compile_from_cache": cache.requests > 0 and cache.hits == cache.requests,
    }


def run_row(what: str, config: ml_collections.ConfigDict, batch: int, steps: int) -> dict:
    """One row of the step or encode table, measured in a fresh process."""
    return harness.run_job("pose_vq.benchmarks.model", {
        "what": what, "batch": batch, "steps": steps, "config": config.to_json_best_effort()})


def run_rows(what: str, config: ml_collections.ConfigDict, batch_sizes: list[int],
             compare: list[str], steps: int) -> list[dict]:
    """Measure every (compare combination, batch size), each in a fresh process; a row
    that fails keeps its error's last line."""
    rows = []
    for changed, c in compare_grid(config, compare):
        for batch in batch_sizes:
            try:
                rows.append({**run_row(what, c, batch, steps), "changed": changed})
            except RuntimeError as e:
                rows.append({"what": what, "batch": batch, "changed": changed,
                             "error": str(e).splitlines()[0]})
    return rows


def print_table(rows: list[dict]) -> None:
    ok = [r for r in rows if "error" not in r]
    if ok:
        r = ok[0]
        print(f"# {r['what']} benchmark on {harness.machine()}: {r['platform']} "
              f"({r['device_kind']}), {r['devices']} device(s)")
    print(f"{'changed':<34} {'batch':>5} {'s/step':>8} {'ex/s/dev':>9} {'GFLOP':>9} "
          f"{'TFLOP/s':>8} {'peak':>7} {'util':>6} {'XLA GiB':>8} {'state':>6} "
          f"{'peak GiB':>8} {'vs 1st':>7} {'trace':>6} {'lower':>6} {'compile':>8}")
    first = ok[0]["examples_per_sec_per_device"] if ok else None
    for r in rows:
        changed = ",".join(f"{k.split('.')[-1]}={v}" for k, v in r["changed"].items()) or "-"
        if "error" in r:
            print(f"{changed:<34} {r['batch']:5d} failed: {r['error']}")
            continue
        bound = "+" if r.get("flops_lower_bound") else " "
        print(f"{changed:<34} {r['batch']:5d} {r['seconds']:8.3f} "
              f"{r['examples_per_sec_per_device']:9.2f} {r['gflops']:8.1f}{bound}"
              f"{r['tflops_per_sec']:8.3f} {r['peak_tflops_per_device']:7.3f} "
              f"{100 * r['utilisation']:5.1f}% {r['xla_gib_per_device']:8.2f} "
              f"{r['state_gib_per_device']:6.2f} {r['peak_gib']:8.2f} "
              f"{r['examples_per_sec_per_device'] / first:6.2f}x {r['trace_seconds']:6.1f} "
              f"{r['lower_seconds']:6.1f} {r['compile_seconds']:7.1f}"
              f"{'c' if r['compile_from_cache'] else ' '}")
    print("s/step: mean after compilation (nan with --steps=0: compiled, not run); peak: "
          "measured matmul TFLOP/s per device in the model's dtype; util: model FLOP rate / "
          "(peak x devices); XLA GiB: arguments + "
          "outputs + temporaries per device; state: the GiB of it that is the train state "
          "(step) or the weights (encode) as sharded by config.sharding; peak GiB: the "
          "process's peak RSS (CPU) or the device's peak bytes in use; vs 1st: "
          "examples/s/device relative to the first row; "
          "GFLOP: the program lowered for one device (the same on every platform); +: a loop "
          "does arithmetic (e.g. loss.perceptual_chunk) and XLA counts its body once, so "
          "the FLOPs, TFLOP/s and util are lower bounds; trace, lower, compile: seconds of "
          "JAX's three stages before the first step; c: every program came from the "
          "persistent compilation cache (compilation_cache_dir)")


@errors.one_line_failures
def main(argv: list[str]) -> None:
    """One row, in the fresh process ``run_rows`` starts: ``argv[1]`` is its job file."""
    if len(argv) != 2:
        raise app.UsageError("usage: python -m pose_vq.benchmarks.model JOB.json")
    with open(argv[1]) as f:
        job = json.load(f)
    row_config = config_lib.from_json(job["config"])
    runtime.configure_jax(row_config)
    print(json.dumps(measure_row(job["what"], row_config, job["batch"], job["steps"])))


def define_flags() -> None:
    """The row process's flags: ``--verbose`` (the job comes as a file)."""
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
