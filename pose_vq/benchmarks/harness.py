"""What every benchmark shares: timing after a warm-up, XLA's FLOP and memory analyses,
a matmul peak measured beside the model, one row per fresh process, and printing. JAX is
imported by the functions that use it: render's row processes, which import this
module, measure their peak memory without it."""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any


def machine() -> str:
    """This host in a few words, for a table's heading."""
    return (f"{platform.node()}: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores")


def time_calls(fn: Callable[[], Any], repeats: int) -> float:
    """Mean seconds per call after one warm-up call (waits for JAX's async results)."""
    import jax  # noqa: PLC0415 (render's row processes measure their peak memory without JAX: 159 MB, 281 with it)

    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def matmul_peak(mesh, dtype) -> float:
    """FLOP/s per device of a large matmul on every device of the mesh at once. On CPU
    n=1024 already saturates the cores (96 GFLOP/s per device on a 2-core VM, against 79
    at n=2048, in 0.3 s instead of 1.6 s)."""
    import jax  # noqa: PLC0415 (no JAX in render's row processes: time_calls says why)
    import jax.numpy as jnp  # noqa: PLC0415 (as jax)
    from jax.sharding import NamedSharding, PartitionSpec  # noqa: PLC0415 (as jax)

    cpu = jax.devices()[0].platform == "cpu"
    n = 1024 if cpu else 8192
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names))  # one matmul per device
    a = jax.device_put(jnp.ones((mesh.size, n, n), dtype), sharding)
    mm = jax.jit(lambda a: jnp.einsum("bij,bjk->bik", a, a), out_shardings=sharding)
    seconds = time_calls(lambda: mm(a), repeats=5 if cpu else 20)
    return 2 * n**3 / seconds


def xla_memory_gib(compiled) -> float:
    """XLA's arguments + outputs + temporaries per device of a compiled program."""
    m = compiled.memory_analysis()
    if m is None:
        return float("nan")
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes) / 2**30


def xla_flops(lowered) -> tuple[float, bool]:
    """FLOPs of one call of a lowered program as XLA's cost analysis counts them before the
    backend's passes: the same on every platform, and the whole batch's on a mesh, except
    that a shard_map's body counts once (so lower for one device). And whether that is a
    lower bound: a loop's body counts once, which matters where it does arithmetic (e.g.
    the LPIPS chunks of ``loss.perceptual_chunk``). Not the compiled program's count: on
    GPU that leaves out the convolutions XLA hands to cuDNN (0.85 of the paper step's 126
    TFLOP on an H200, BENCHMARKS.md)."""
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan"))), loops_do_arithmetic(lowered.as_text("hlo"))


_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([^\s(]+)[^\n]*\{\n(.*?)^\}", re.M | re.S)
_CALLED = re.compile(r"(?:body|condition|to_apply|calls|true_computation|false_computation)"
                     r"=%?([\w.\-]+)|branch_computations=\{([^}]*)\}")


def loops_do_arithmetic(hlo: str) -> bool:
    """Whether a while loop of an HLO module's text, or a computation it calls, holds a dot
    or a convolution: the loops of the random-number generator hold neither."""
    computations = dict(_COMPUTATION.findall(hlo))
    todo = re.findall(r" while\(.*?body=%?([\w.\-]+)", hlo)
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in computations:
            continue
        seen.add(name)
        body = computations[name]
        if re.search(r"\s(?:dot|convolution)\(", body):
            return True
        for called, branches in _CALLED.findall(body):
            todo.extend([called] if called else re.findall(r"[\w.\-]+", branches))
    return False


def peak_memory_gib() -> float:
    """The accelerator's peak bytes in use, or this process's peak RSS on a CPU."""
    import jax  # noqa: PLC0415 (no JAX in render's row processes: time_calls says why)

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_fresh(module: str, *args: str) -> dict:
    """``python -m module args...`` in a fresh process (clean memory peaks, its own XLA
    flags); its last stdout line is the row, as JSON. Raises with the process's stderr."""
    res = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                         check=False)
    if res.returncode:
        raise RuntimeError((res.stderr.strip().splitlines() or ["?"])[-1][:200]
                           + "\n" + res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_job(module: str, job: dict, flag: str | None = None) -> dict:
    """``run_fresh`` with ``job`` handed over as a JSON file: its path is the argument, or
    ``--flag=PATH`` when ``flag`` is given."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    try:
        return run_fresh(module, f"--{flag}={f.name}" if flag else f.name)
    finally:
        os.unlink(f.name)


def emit(rows: list[dict], table: Callable[[list[dict]], None], as_json: bool) -> None:
    """One JSON object per row, or the command's table."""
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        table(rows)

