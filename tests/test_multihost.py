"""Multi-host training: ``python -m pose_vq.main`` as 2 local CPU processes (one device
each, ``jax.distributed`` with a localhost coordinator), the state sharded over both by
FSDP, equals one process stepping the same global batches; each process reads only its
shard of the data and writes its half of the state."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from pose_vq import checkpointing, sharding, step
from pose_vq.data import pipeline, prepare
from pose_vq.state import Models, abstract_state, create_state
from tests import own_devices_env
from tests.test_train import assert_states_close, sharded_run_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def write_config_file(config, directory) -> pathlib.Path:
    """A config file (``--config=...``) that returns ``config``."""
    (directory / "run_config.json").write_text(config.to_json_best_effort())
    path = directory / "run_config.py"
    path.write_text("import pathlib\nfrom pose_vq import config\n\n\ndef get_config():\n"
                    f"    return config.from_json(pathlib.Path({str(directory / 'run_config.json')!r})"
                    ".read_text())\n")
    return path


def _launch(config, workdir, tmp_path):
    """Both processes of the run, as a user starts them on two hosts. Each writes its
    output to a file: a pipe read after the other process's would fill and stall that
    process, and with it the collectives of both."""
    path = write_config_file(config, tmp_path)
    env = own_devices_env()  # one CPU device per process
    address = f"localhost:{_free_port()}"
    logs = [tmp_path / f"process_{i}.log" for i in range(2)]
    procs = []
    for i, log in enumerate(logs):
        with log.open("w") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "pose_vq.main", f"--config={path}",
                 f"--workdir={workdir}", f"--coordinator_address={address}",
                 "--num_processes=2", f"--process_id={i}"],
                env=env, stdout=out, stderr=subprocess.STDOUT))
    try:
        for proc in procs:
            proc.wait(timeout=600)
    finally:
        for proc in procs:
            proc.kill()
    for i, (proc, log) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, f"process {i} failed:\n{log.read_text()[-4000:]}"


def _single_process(config):
    """The same steps in this process on one device (test_train shows one device equals
    eight), each global batch assembled from the two processes' shards (shard i fills
    the batch's half i, as on their mesh)."""
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    models = Models.create(config)
    state = create_state(models, mesh, config.seed)
    step_fn = step.make_train_step(models, mesh)
    shards = [iter(pipeline.make_loader(pipeline.LoaderConfig(
        data_dir=config.data.data_dir, name=prepare.dataset_name(config.data),
        global_batch_size=config.train.batch_size, seed=config.seed, shard=(i, 2))))
        for i in range(2)]
    for _ in range(config.train.num_steps):
        parts = [pipeline.model_fields(next(s)) for s in shards]
        batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        state, _, finite = step_fn(state, pipeline.to_global(batch, mesh), None)
        assert bool(finite)
    return models, mesh, state


@pytest.mark.xdist_group("sharded_steps")  # with test_train's equality: one set of 1-device programs
def test_two_processes_equal_one(data_dir, tmp_path):
    config = sharded_run_config(data_dir)
    steps = config.train.num_steps
    workdir = tmp_path / "multi"
    _launch(config, workdir, tmp_path)

    models, mesh, expected = _single_process(config)
    manager = checkpointing.checkpoint_manager(workdir, 1)
    assert manager.latest_step() == steps
    restored = checkpointing.restore_state(manager, abstract_state(models, mesh))
    assert int(restored.step) == steps
    assert_states_close(expected, restored)

    # Each process saved its own loader position, over its own half of the records.
    data = workdir / "checkpoints" / str(steps) / "data"
    samplers = [json.loads((data / f"process_{i}-of-2.json").read_text())["sampler"]
                for i in range(2)]
    for i, sampler in enumerate(samplers):
        assert f"shard_index={i}, shard_count=2" in sampler, sampler
    results = json.loads((workdir / "eval_metrics.json").read_text())
    assert results["step"] == steps and results["num_clips"] == config.eval.max_examples
    assert len(list(workdir.glob("events.out.tfevents.*"))) == 1  # process 0's alone


def test_launch_scripts_print_the_documented_commands():
    """launch/*.sh with DRY_RUN=1: valid bash that ends in the documented training command
    (nothing is run against an account)."""
    root = pathlib.Path(__file__).resolve().parent.parent
    env = {**os.environ, "DRY_RUN": "1", "BUCKET": "gs://bucket"}
    tpu = subprocess.run(["bash", str(root / "launch" / "tpu_vm.sh"), "all"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "tpu-vm create pose-vq" in tpu and "--worker=all" in tpu
    assert "--mode=build_data" in tpu
    assert "pose_vq.main\\ --config=configs/3d_1024.py" in tpu and "--distributed" in tpu
    gpu = subprocess.run(["bash", str(root / "launch" / "gpu.sh"), "all"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert ".\\[cuda12\\]" in gpu and "--mode=build_data" in gpu
    assert "--config=configs/3d_1024.py --workdir=runs/3d_f8" in gpu
    assert "--config.model.dtype=bfloat16" in gpu
