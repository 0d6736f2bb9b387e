"""python -m pose_vq.benchmark: FLOP counting against the formula, the --compare grid, and
the encode and pipeline commands end to end on the tiny test model."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from pose_vq import sharding
from pose_vq import step as step_lib
from pose_vq.benchmarks import harness, model
from pose_vq.data import prepare
from pose_vq.state import Models, abstract_state
from tests import config_file, own_devices_env
from tests.test_multihost import write_config_file
from tests.test_train import sharded_run_config, tiny_config


def test_flops_count_the_whole_lowered_program_by_the_formulas():
    mesh = sharding.make_mesh()
    b, n = mesh.size, 64
    a = jax.device_put(jnp.ones((b, n, n)), sharding.batch_sharding(mesh))
    lowered = jax.jit(lambda a: jnp.einsum("bij,bjk->bik", a, a)).lower(a)
    flops, lower_bound = harness.xla_flops(lowered)  # all devices' matmuls
    assert flops == pytest.approx(2 * b * n**3, rel=0.01) and not lower_bound
    # A 3D convolution: XLA's GPU backend hands it to cuDNN, where the compiled program's
    # analysis no longer counts it; the lowered program's count is the formula's.
    x, w = jnp.ones((2, 6, 10, 10, 4)), jnp.ones((3, 3, 3, 4, 8))
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1, 1), "VALID", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")))
    flops, _ = harness.xla_flops(conv.lower(x, w))
    assert flops == pytest.approx(2 * (2 * 4 * 8 * 8 * 8) * (27 * 4), rel=0.01)
    # A shard_map's body counts once, one device's share: step_flops lowers for one device.
    per_device = jax.shard_map(lambda a: jnp.einsum("bij,bjk->bik", a, a), mesh=mesh,
                               in_specs=PartitionSpec("data"), out_specs=PartitionSpec("data"))
    flops, _ = harness.xla_flops(jax.jit(per_device).lower(a))
    assert flops == pytest.approx(2 * n**3, rel=0.01)
    # A loop's body is counted once: the row says its FLOPs are a lower bound.
    k = 4
    looped = jax.jit(lambda a: jax.lax.map(lambda m: m @ m, a)).lower(jnp.ones((k, n, n)))
    flops, lower_bound = harness.xla_flops(looped)
    assert lower_bound and flops == pytest.approx(2 * n**3, rel=0.01)  # of 2 * k * n**3
    # The random-number generator's loops do no arithmetic: the count is whole.
    noisy = jax.jit(lambda k, m: m @ m + jax.random.uniform(k, (n, n)))
    lowered = noisy.lower(jax.random.key(0), jnp.ones((n, n)))
    assert " while(" in lowered.as_text("hlo") and not harness.xla_flops(lowered)[1]


@pytest.mark.xdist_group("sharded_steps")  # the compiled 1-device step is test_train's
def test_step_flops_are_the_compiled_one_device_steps(data_dir):
    """The step row's count against XLA's analysis of the step compiled for one CPU
    device, where no convolution is handed to a library."""
    config = sharded_run_config(data_dir)
    models = Models.create(config)
    batch = {"inputs": jax.ShapeDtypeStruct(models.input_shape(8), jnp.uint8)}
    flops, lower_bound = model.step_flops(models, batch, None)
    one = sharding.make_mesh(devices=jax.devices()[:1])
    compiled = step_lib.make_train_step(models, one).lower(
        abstract_state(models, one), batch, None).compile()
    assert lower_bound  # k-means init's iterations (quantizer.kmeans_init) are a loop
    assert flops == pytest.approx(compiled.cost_analysis()["flops"], rel=0.01)


def test_compare_grid_types_values_and_combines_them():
    rows = model.compare_grid(config_file("demo.py"), [
        "model.dtype=float32,bfloat16", "model.remat_levels=0,1",
        "model.channels=(8,16);(16,32)"])
    assert len(rows) == 8
    changed, config = rows[-1]
    assert changed == {"model.dtype": "bfloat16", "model.remat_levels": 1,
                       "model.channels": (16, 32)}
    assert config.model.remat_levels == 1 and tuple(config.model.channels) == (16, 32)
    assert config_file("demo.py").model.remat_levels == 0  # the base config is untouched
    with pytest.raises(model.CompareError, match="no knob model.width"):
        model.compare_grid(config_file("demo.py"), ["model.width=1,2"])
    with pytest.raises(model.CompareError, match="not a boolean"):
        model.compare_grid(config_file("demo.py"), ["data.synthetic=yes"])


def _run(tmp_path, *args):
    res = subprocess.run([sys.executable, "-m", "pose_vq.benchmark", *args, "--json"],
                         env=own_devices_env(),  # devices: the config's cpu_devices
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def test_encode_and_pipeline_commands(data_dir, tmp_path):
    config = tiny_config(data_dir, **{"loss.perceptual_weight": 0.0})
    config_file = str(write_config_file(config, tmp_path))
    (row,) = _run(tmp_path, "encode", f"--config={config_file}", "--batch_sizes=2", "--steps=1")
    assert row["what"] == "encode" and row["batch"] == 2
    assert row["devices"] == config.cpu_devices == 2  # the config splits the host
    assert row["seconds"] > 0 and row["gflops"] > 0 and row["xla_gib_per_device"] > 0
    assert 0 < row["utilisation"] < 10 and row["peak_tflops_per_device"] > 0
    np.testing.assert_allclose(row["examples_per_sec_per_device"], 2 / row["seconds"] / 2)

    # --steps=0: the loader alone. Its optional step row is the step command's row
    # (benchmarks.model.run_rows, as encode above), not compiled a second time here.
    (result,) = _run(tmp_path, "pipeline", f"--config={config_file}", "--batches=3",
                     "--steps=0")
    loader = result["loader"]
    assert "step" not in result
    assert loader["dataset"] == prepare.dataset_name(config.data)
    assert loader["batch"] == config.train.batch_size
    assert loader["dtype"] == "uint8" and loader["clip_shape"] == [8, 16, 16, 3]
    assert loader["clip_bytes"] == 8 * 16 * 16 * 3 and loader["prefetch"] == 2
    np.testing.assert_allclose(loader["mb_per_sec"],
                               loader["clips_per_sec"] * loader["clip_bytes"] / 1e6)
    assert loader["clips_per_sec"] > 0 and loader["steps_per_sec_fed"] > 0


def test_conv_command_times_every_impl_per_level(tmp_path):
    config = config_file("demo.py")
    config.data.update(frames=8, heatmap_size=16)
    config.model.update(channels=(8, 16), spatial_downsamples=1)
    config.discriminator.num_layers = 2
    path = str(write_config_file(config, tmp_path))
    rows = _run(tmp_path, "conv", f"--config={path}", "--steps=1")
    assert [(r["level"], r["impl"]) for r in rows] == [
        (level, impl) for level in (0, 1) for impl in ("native", "folded", "winograd")]
    assert [r["shape"] for r in rows[::3]] == [[1, 8, 16, 16, 8], [1, 4, 8, 8, 16]]
    assert all(r["forward_s"] > 0 and r["forward_backward_s"] > 0 for r in rows)
    assert all(r["max_abs_diff"] < 1e-4 for r in rows) and rows[0]["max_abs_diff"] == 0


def test_render_rows_measure_their_memory_without_jax():
    """A render row's process (python -m pose_vq.benchmarks.render) imports no JAX: its
    peak RSS is the renderer's (159 MB at 16 px, 281 MB with JAX loaded)."""
    check = ("import sys, pose_vq.benchmarks.render as r; r.define_flags(); "
             "r._render_fn('3d', r._windows(8), 16)(); print('jax' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "False"
