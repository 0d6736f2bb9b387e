"""Benchmarks that print one table of figures measured in the same run.

    python -m pose_vq.benchmark render [--frames=64] [--size=128]
    python -m pose_vq.benchmark step --config=configs/3d_1024.py [--config.<knob>=...] \
        [--batch_sizes=1,2] [--compare=model.dtype=float32,bfloat16] [--compare=...]
    python -m pose_vq.benchmark encode --config=configs/3d_1024.py [--batch_sizes=1]
    python -m pose_vq.benchmark pipeline --config=configs/demo.py [--workdir=DIR]
    python -m pose_vq.benchmark conv --config=configs/3d_1024.py [--batch_sizes=1]

``render``: seconds per sample of each mode's heatmap rendering at the paper size, from
real reader windows of a synthetic Panoptic root, next to the slow oracle of the test
suite (timed on ``--oracle_frames`` frames and scaled to the clip; run from the
repository root so ``tests/`` is importable), with the peak memory of each mode.

``step``: the whole training step (generator with LPIPS, discriminator, adaptive weight,
EMA) of a config on random clips; ``encode``: clips to token ids. One row per batch size
and per combination of ``--compare`` values (``knob=v1,v2``; ``;`` separates values that
contain commas). Each row runs in a fresh process on all local devices, with the batch
split over them, and reports: seconds per step after compilation (mean of ``--steps``),
examples per second per device, FLOPs per step from XLA's cost analysis, the FLOP rate
against a matmul peak measured in the same process on the same devices in the model's
dtype, XLA's peak memory per device (arguments + outputs + temporaries) and the
process's peak RSS (or the accelerator's peak bytes in use).

``pipeline``: the grain loader's rate on the config's dataset (built first if the config
says how) beside the rate at which the training step consumes examples.

``conv``: one 3x3x3 convolution (width to width) at each level of the config's encoder,
as each ``model.conv_impl`` computes it, forward and forward + backward, with the
largest difference from the native result; one process, with the CPU paths' XLA flag set.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
COMMANDS = ("render", "step", "encode", "pipeline", "conv")

RENDER_MODES = ("2d", "m2d", "c2d", "3d")  # 2d: one camera, max over limbs


def _windows(frames: int):
    """One 3d-mode reader window (its 2D views serve the 2D modes), from a synthetic root."""
    from pose_vq.data import modes, panoptic, synthetic

    with tempfile.TemporaryDirectory() as tmp:
        synthetic.write_synthetic_root(tmp, ["bench"], num_frames=frames + 8, num_people=1,
                                       late_entry_prob=0.0, early_exit_prob=0.0, seed=1,
                                       missing_joint_prob=0.0)
        summary = panoptic.ReadSummary()
        return next(modes.iter_mode_windows(tmp, "bench", modes.MODES["3d"], length=frames,
                                            stride=frames, summary=summary))


def _render_fn(mode: str, window, size: int):
    from pose_vq.data import heatmaps

    rng = np.random.default_rng(0)
    if mode == "3d":
        scores = heatmaps.gaussian_scores(rng, window.joints3d.shape[:2])
        return lambda: heatmaps.render_volume_projections(window.joints3d, scores, size)
    views = window.joints2d[:1] if mode in ("2d", "c2d") else window.joints2d
    scores = heatmaps.gaussian_scores(rng, views.shape[:3])
    return lambda: heatmaps.render_views(views, scores, size, per_limb=mode == "c2d")


def _oracle_seconds_per_sample(mode: str, window, size: int, oracle_frames: int) -> float | None:
    try:
        from tests import heatmap_oracle
    except ImportError:
        return None
    from pose_vq.data import heatmaps

    frames = window.joints3d.shape[0]
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    if mode == "3d":
        pts = heatmaps.scale_and_center(window.joints3d[None], size)[0][:oracle_frames]
        heatmap_oracle.oracle_3d(pts, heatmaps.gaussian_scores(rng, pts.shape[:2]), 0.75, size)
    else:
        cams = 1 if mode in ("2d", "c2d") else window.joints2d.shape[0]
        for view in heatmaps.scale_and_center(window.joints2d[:cams], size):
            pts = view[:oracle_frames]
            heatmap_oracle.oracle_2d(pts, heatmaps.gaussian_scores(rng, pts.shape[:2]), 0.75,
                                     size, combine=mode != "c2d")
    return (time.perf_counter() - start) * frames / oracle_frames


def _measure_one(mode: str, frames: int, size: int, repeats: int, oracle_frames: int) -> dict:
    window = _windows(frames)
    render = _render_fn(mode, window, size)
    render()  # compile (numba caches) and warm up
    start = time.perf_counter()
    for _ in range(repeats):
        out = render()
    seconds = (time.perf_counter() - start) / repeats
    tracemalloc.start()
    render()
    _, peak_alloc = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the oracle
    return {
        "mode": mode, "frames": frames, "size": size, "channels": int(out.shape[-1]),
        "seconds_per_sample": seconds,
        "oracle_seconds_per_sample": _oracle_seconds_per_sample(mode, window, size, oracle_frames),
        "render_alloc_peak_mb": peak_alloc / 2**20,
        "peak_rss_mb": peak_rss_mb,
    }


def bench_render(frames: int, size: int, repeats: int, oracle_frames: int) -> list[dict]:
    """Each mode measured in a fresh process (clean peak memory)."""
    rows = []
    for mode in RENDER_MODES:
        cmd = [sys.executable, "-m", "pose_vq.benchmark", "_render_one", mode,
               str(frames), str(size), str(repeats), str(oracle_frames)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode:
            raise RuntimeError(f"render benchmark for {mode} failed:\n{res.stderr[-2000:]}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return rows


def _print_render_table(rows: list[dict]) -> None:
    print(f"# render benchmark on {platform.node()}: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, numba threads {os.environ.get('NUMBA_NUM_THREADS', 'all')}")
    print(f"{'mode':>5} {'frames':>6} {'size':>5} {'ch':>3} {'s/sample':>10} {'oracle s':>10} "
          f"{'speed-up':>9} {'alloc MB':>9} {'rss MB':>7}")
    for r in rows:
        oracle = r["oracle_seconds_per_sample"]
        ratio = f"{oracle / r['seconds_per_sample']:9.0f}x" if oracle else f"{'n/a':>9}"
        print(f"{r['mode']:>5} {r['frames']:6d} {r['size']:5d} {r['channels']:3d} "
              f"{r['seconds_per_sample']:10.4f} {oracle or float('nan'):10.2f} {ratio} "
              f"{r['render_alloc_peak_mb']:9.1f} {r['peak_rss_mb']:7.0f}")


# --------------------------------------------------------------------------- model rows


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
    axes = []
    for spec in compare:
        knob, sep, values = spec.partition("=")
        if not sep or not values:
            raise app.UsageError(f"--compare={spec}: expected knob=value1,value2")
        try:
            current = _get(config, knob)
        except (KeyError, AttributeError):
            raise app.UsageError(f"--compare={spec}: the config has no knob {knob}") from None
        try:
            axes.append([(knob, parse_value(v, current))
                         for v in values.split(";" if ";" in values else ",")])
        except (ValueError, SyntaxError) as e:
            raise app.UsageError(f"--compare={spec}: {e}") from None
    rows = []
    for combo in itertools.product(*axes):
        c = ml_collections.ConfigDict(config.to_dict())
        for knob, value in combo:
            section, _, key = knob.rpartition(".")
            (_get(c, section) if section else c)[key] = value
        rows.append((dict(combo), c))
    return rows


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config[part]
    return config


def _matmul_peak(mesh, dtype) -> float:
    """FLOP/s per device of a large matmul on every device of the mesh at once."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    from jax.sharding import NamedSharding, PartitionSpec  # noqa: PLC0415

    n = 2048 if jax.devices()[0].platform == "cpu" else 8192
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    a = jax.device_put(jnp.ones((mesh.size, n, n), dtype), sharding)
    mm = jax.jit(lambda a: jnp.einsum("bij,bjk->bik", a, a), out_shardings=sharding)
    seconds = _time(lambda: mm(a), repeats=5 if n == 2048 else 20)
    return 2 * n**3 / seconds


def _time(fn, repeats: int) -> float:
    """Mean seconds per call after one warm-up call."""
    import jax  # noqa: PLC0415

    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def _memory(compiled) -> float:
    m = compiled.memory_analysis()
    if m is None:
        return float("nan")
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes) / 2**30


def _flops(compiled, devices: int) -> tuple[float, bool]:
    """FLOPs of one call summed over the ``devices`` it runs on (XLA's cost analysis is per
    device), and whether that is a lower bound: XLA counts a loop's body once (e.g. the
    LPIPS chunks of ``loss.perceptual_chunk``)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    has_loop = " while(" in compiled.as_text()
    return float(cost.get("flops", float("nan"))) * devices, has_loop


def _peak_memory_gib() -> float:
    import jax  # noqa: PLC0415

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure_row(what: str, config: ml_collections.ConfigDict, batch: int, steps: int) -> dict:
    """One row of the step or encode table (runs in its own process: ``_row``)."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    from jax.sharding import NamedSharding, PartitionSpec  # noqa: PLC0415

    from pose_vq import train  # noqa: PLC0415
    from pose_vq.data import pipeline  # noqa: PLC0415
    from pose_vq.models.vqgan import VQGAN  # noqa: PLC0415

    config.train.batch_size = batch
    models = train.Models.create(config)
    mesh = pipeline.data_mesh()
    if batch % mesh.size:
        raise ValueError(f"batch {batch} is not divisible by the {mesh.size} devices")
    data = NamedSharding(mesh, PartitionSpec("data"))
    rng = np.random.default_rng(0)
    clips = lambda shape: jax.device_put(rng.uniform(size=shape).astype(np.float32), data)
    start = time.perf_counter()
    if what == "step":
        state = train.create_state(models, mesh, config.seed)
        batch_arrays = {"inputs": clips(models.input_shape(batch)),
                        "targets": clips(models.target_shape(batch))}
        compiled = train.make_train_step(models, mesh, state).lower(state, batch_arrays).compile()
        holder = [state]

        def run():
            holder[0], _, finite = compiled(holder[0], batch_arrays)
            return finite
    else:
        x = clips(models.input_shape(batch))
        variables = jax.jit(lambda: models.generator.init(
            {"params": jax.random.key(0), "vq": jax.random.key(1)}, x[:1]))()
        encode = jax.jit(lambda v, x: models.generator.apply(v, x, method=VQGAN.encode),
                         out_shardings=data)
        compiled = encode.lower(variables, x).compile()
        run = lambda: compiled(variables, x)
    compile_s = time.perf_counter() - start
    seconds = _time(run, steps)
    flops, flops_lower_bound = _flops(compiled, mesh.size)
    peak = _matmul_peak(mesh, jnp.dtype(config.model.dtype))
    return {
        "what": what, "batch": batch, "devices": mesh.size, "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind, "dtype": config.model.dtype,
        "seconds": seconds, "examples_per_sec_per_device": batch / seconds / mesh.size,
        "gflops": flops / 1e9, "flops_lower_bound": flops_lower_bound,
        "tflops_per_sec": flops / seconds / 1e12,
        "peak_tflops_per_device": peak / 1e12,
        "utilisation": flops / seconds / (peak * mesh.size),
        "xla_gib_per_device": _memory(compiled), "peak_gib": _peak_memory_gib(),
        "compile_seconds": compile_s,
    }


def run_rows(what: str, config: ml_collections.ConfigDict, batch_sizes: list[int],
             compare: list[str], steps: int) -> list[dict]:
    """Measure every (compare combination, batch size), each in a fresh process."""
    rows = []
    for changed, c in compare_grid(config, compare):
        for batch in batch_sizes:
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump({"what": what, "batch": batch, "steps": steps,
                           "config": c.to_json_best_effort()}, f)
            try:
                res = subprocess.run([sys.executable, "-m", "pose_vq.benchmark", "_row", f.name],
                                     capture_output=True, text=True, check=False)
            finally:
                os.unlink(f.name)
            if res.returncode:
                rows.append({"what": what, "batch": batch, "changed": changed,
                             "error": (res.stderr.strip().splitlines() or ["?"])[-1][:200]})
                continue
            rows.append({**json.loads(res.stdout.strip().splitlines()[-1]), "changed": changed})
    return rows


def _row_main(path: str) -> None:
    from pose_vq import config as config_lib  # noqa: PLC0415

    with open(path) as f:
        job = json.load(f)
    config = config_lib.from_json(job["config"])
    config_lib.configure_jax(config)
    print(json.dumps(measure_row(job["what"], config, job["batch"], job["steps"])))


def print_model_table(rows: list[dict]) -> None:
    ok = [r for r in rows if "error" not in r]
    if ok:
        r = ok[0]
        print(f"# {r['what']} benchmark on {platform.node()}: {r['platform']} "
              f"({r['device_kind']}), {r['devices']} device(s), {os.cpu_count()} host cores")
    print(f"{'changed':<34} {'batch':>5} {'s/step':>8} {'ex/s/dev':>9} {'GFLOP':>9} "
          f"{'TFLOP/s':>8} {'peak':>7} {'util':>6} {'XLA GiB':>8} {'peak GiB':>8} "
          f"{'vs 1st':>7}")
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
              f"{r['peak_gib']:8.2f} {r['examples_per_sec_per_device'] / first:6.2f}x")
    print("s/step: mean after compilation; peak: measured matmul TFLOP/s per device in the "
          "model's dtype; util: model FLOP rate / (peak x devices); XLA GiB: arguments + "
          "outputs + temporaries per device; peak GiB: the process's peak RSS (CPU) or the "
          "device's peak bytes in use; vs 1st: examples/s/device relative to the first row; "
          "+: the program loops (e.g. loss.perceptual_chunk) and XLA counts a loop body "
          "once, so its FLOPs, TFLOP/s and util are lower bounds")


# --------------------------------------------------------------------------- pipeline


def loader_rate(config: ml_collections.ConfigDict, workdir: str, batches: int) -> dict:
    """Examples per second of the training loader alone (host side, global batches)."""
    from pose_vq.data import pipeline  # noqa: PLC0415

    data_dir, name = pipeline.prepare_dataset(config.data, workdir)
    loader = pipeline.GlobalBatches(pipeline.LoaderConfig(
        data_dir=data_dir, name=name, split="train", global_batch_size=config.train.batch_size,
        seed=config.seed, worker_count=config.data.worker_count), pipeline.data_mesh())
    for _ in range(2):  # worker start-up and first reads
        next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    seconds = (time.perf_counter() - start) / batches
    return {"dataset": name, "batch": config.train.batch_size,
            "workers": config.data.worker_count, "seconds_per_batch": seconds,
            "examples_per_sec": config.train.batch_size / seconds}


# --------------------------------------------------------------------------- conv


def bench_conv(config: ml_collections.ConfigDict, batch: int, repeats: int) -> list[dict]:
    """Seconds per call of a level's 3x3x3 conv under every conv_impl (same parameters)."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from pose_vq import config as config_lib  # noqa: PLC0415
    from pose_vq.models import layers  # noqa: PLC0415

    spec = config_lib.generator_spec(config)
    frames, side, rows = spec.frames, spec.image_size, []
    for n, level in enumerate(spec.encoder_levels()):
        width = level["width"]
        x = jnp.asarray(np.random.default_rng(n).random((batch, frames, side, side, width),
                                                        np.float32))
        gflop = 2 * batch * frames * side * side * 27 * width * width / 1e9
        native = None
        for impl in config_lib.CONV_IMPLS:
            conv = layers.conv3d(width, impl=impl)
            params = conv.init(jax.random.key(0), x)  # the same for every impl
            forward = jax.jit(conv.apply)
            grads = jax.jit(jax.grad(lambda p, x, conv=conv: jnp.sum(conv.apply(p, x) ** 2),
                                     argnums=(0, 1)))
            y = forward(params, x)
            native = y if native is None else native
            rows.append({"level": n, "shape": [batch, frames, side, side, width], "impl": impl,
                         "forward_s": _time(lambda: forward(params, x), repeats),
                         "forward_backward_s": _time(lambda: grads(params, x), repeats),
                         "gflop": gflop, "max_abs_diff": float(jnp.max(jnp.abs(y - native)))})
        if level["down"]:
            kernel, stride = level["down"]
            frames, side = (frames + 1 - kernel) // stride + 1, side // 2
    return rows


def print_conv_table(rows: list[dict]) -> None:
    print(f"# conv benchmark on {platform.node()}: one 3x3x3 conv per encoder level")
    print(f"{'level':>5} {'shape':<22} {'impl':<9} {'fwd s':>8} {'fwd+bwd s':>10} "
          f"{'GFLOP':>7} {'fwd GF/s':>9} {'vs folded':>10} {'max |diff|':>10}")
    folded = {r["level"]: r for r in rows if r["impl"] == "folded"}
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        ref = folded[r["level"]]
        print(f"{r['level']:5d} {shape:<22} {r['impl']:<9} {r['forward_s']:8.3f} "
              f"{r['forward_backward_s']:10.3f} {r['gflop']:7.1f} "
              f"{r['gflop'] / r['forward_s']:9.0f} "
              f"{ref['forward_backward_s'] / r['forward_backward_s']:9.2f}x "
              f"{r['max_abs_diff']:10.1e}")
    print("GFLOP: a direct 3x3x3 convolution's multiply-adds x 2 (Winograd does fewer, so its "
          "GF/s is an equivalent rate); vs folded: forward+backward speed relative to the folded "
          "conv; max |diff|: largest difference from the native output")


# --------------------------------------------------------------------------- CLI


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == "_row":  # internal: one model row in a fresh process
        _row_main(argv[2])
        return
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"usage: python -m pose_vq.benchmark {{{'|'.join(COMMANDS)}}} ...")
    what = argv[1]
    if what == "render":
        rows = bench_render(FLAGS.frames, FLAGS.size, FLAGS.repeats, FLAGS.oracle_frames)
        _print(rows, _print_render_table)
        return
    config = FLAGS.config
    if config is None:
        raise app.UsageError(f"{what} needs --config, e.g. --config=configs/demo.py")
    from pose_vq import config as config_lib  # noqa: PLC0415

    try:
        config_lib.validate(config)
    except config_lib.ConfigError as e:
        raise app.UsageError(f"invalid config: {e}") from None
    batch_sizes = [int(b) for b in FLAGS.batch_sizes] or [config.train.batch_size]
    if what in ("step", "encode"):
        _print(run_rows(what, config, batch_sizes, FLAGS.compare, FLAGS.steps), print_model_table)
        return
    if what == "conv":
        config_lib.enable_cpu_conv_flag()  # before any backend use, as configure_jax does
        _print(bench_conv(config, batch_sizes[0] if FLAGS.batch_sizes else 1, FLAGS.steps),
               print_conv_table)
        return
    config_lib.configure_jax(config)
    with tempfile.TemporaryDirectory() as tmp:
        loader = loader_rate(config, FLAGS.workdir or tmp, FLAGS.batches)
    step = run_rows("step", config, [config.train.batch_size], [], FLAGS.steps)[0]
    if FLAGS.json:
        print(json.dumps({"loader": loader, "step": step}))
        return
    print(f"# pipeline benchmark on {platform.node()}: {loader['dataset']}, global batch "
          f"{loader['batch']}, {loader['workers']} grain workers")
    print(f"{'stage':<12} {'s/batch':>8} {'examples/s':>11}")
    print(f"{'loader':<12} {loader['seconds_per_batch']:8.3f} {loader['examples_per_sec']:11.2f}")
    if "error" in step:
        print(f"train step failed: {step['error']}")
        return
    step_rate = step["batch"] / step["seconds"]
    print(f"{'train step':<12} {step['seconds']:8.3f} {step_rate:11.2f}")
    verdict = "keeps up" if loader["examples_per_sec"] >= step_rate else "is the bottleneck"
    print(f"the loader delivers {loader['examples_per_sec'] / step_rate:.1f}x what the step "
          f"consumes: it {verdict}")


def _print(rows: list[dict], table) -> None:
    if FLAGS.json:
        for row in rows:
            print(json.dumps(row))
    else:
        table(rows)


def define_flags() -> None:
    """The command's flags (defined only when it runs, so importing this module never
    clashes with another command's flags)."""
    config_flags.DEFINE_config_file("config", None, "step/encode/pipeline/conv: configs/*.py[:arg].",
                                    lock_config=False)
    flags.DEFINE_list("batch_sizes", [], "step/encode: global batch sizes, one row each "
                      "(default: the config's train.batch_size); conv: the first (default 1).")
    flags.DEFINE_multi_string("compare", [], "step/encode: knob=v1,v2 (';' between values "
                              "that contain commas); rows for every combination.")
    flags.DEFINE_integer("steps", 3, "step/encode/pipeline/conv: timed calls after compilation.")
    flags.DEFINE_integer("batches", 20, "pipeline: timed loader batches.")
    flags.DEFINE_string("workdir", None, "pipeline: where the config builds its dataset "
                        "(default: a temporary directory).")
    flags.DEFINE_integer("frames", 64, "render: clip length.")
    flags.DEFINE_integer("size", 128, "render: heatmap side.")
    flags.DEFINE_integer("repeats", 10, "render: timed renders per mode.")
    flags.DEFINE_integer("oracle_frames", 1, "render: frames the slow oracle renders.")
    flags.DEFINE_bool("json", False, "One JSON object per row instead of the table.")


if __name__ == "__main__":
    define_flags()
    if len(sys.argv) > 1 and sys.argv[1] == "_render_one":  # internal: one mode, fresh process
        mode, frames, size, repeats, oracle_frames = sys.argv[2], *map(int, sys.argv[3:7])
        print(json.dumps(_measure_one(mode, frames, size, repeats, oracle_frames)))
    else:
        app.run(main)
