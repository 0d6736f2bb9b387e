"""Multi-host training: ``python -m pose_vq.main --distributed`` as 2 local CPU processes
(one device each) under a faked SLURM job, as srun starts one process per GPU, from a
dataset built once by a separate process (``--mode=build_data``); the state sharded over
both by FSDP equals one process stepping the same global batches; each process reads only
its shard of the data and writes its half of the state. A workdir that is not one folder
for every process is refused before training."""

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

SLURM_PORTS = 61440  # jax's SlurmCluster: the coordinator's port is this + SLURM_JOB_ID % 4096


def _free_port(low: int = 0, high: int = 0) -> int:
    """A free localhost port (in [low, high] when given)."""
    for port in (np.random.default_rng().permutation(np.arange(low, high + 1)) if high else [0]):
        with socket.socket() as s:
            try:
                s.bind(("localhost", int(port)))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free port in [{low}, {high}]")


def write_config_file(config, directory) -> pathlib.Path:
    """A config file (``--config=...``) that returns ``config``."""
    (directory / "run_config.json").write_text(config.to_json_best_effort())
    path = directory / "run_config.py"
    path.write_text("import pathlib\nfrom pose_vq import config\n\n\ndef get_config():\n"
                    f"    return config.from_json(pathlib.Path({str(directory / 'run_config.json')!r})"
                    ".read_text())\n")
    return path


def run_processes(commands, tmp_path) -> list[tuple[int, str]]:
    """(returncode, output) of each (argv, env, cwd), all started at once as a user starts
    them on several hosts. Each writes its output to a file: a pipe read after the other
    process's would fill and stall that process, and with it the collectives of both."""
    logs = [tmp_path / f"process_{i}.log" for i in range(len(commands))]
    procs = []
    for (argv, env, cwd), log in zip(commands, logs):
        with log.open("w") as out:
            procs.append(subprocess.Popen([sys.executable, *argv], env=env, cwd=cwd,
                                          stdout=out, stderr=subprocess.STDOUT))
    try:
        for proc in procs:
            proc.wait(timeout=600)
    finally:
        for proc in procs:
            proc.kill()
    return [(proc.returncode, log.read_text()) for proc, log in zip(procs, logs)]


def slurm_env(process: int, processes: int, job_id: int) -> dict[str, str]:
    """What srun sets for task ``process`` of a one-node step (jax's SlurmCluster reads
    these), over the suite's environment less its device count."""
    return {**own_devices_env(), "SLURM_JOB_ID": str(job_id), "SLURM_STEP_NODELIST": "localhost",
            "SLURM_STEP_NUM_NODES": "1", "SLURM_NTASKS": str(processes),
            "SLURM_PROCID": str(process), "SLURM_LOCALID": str(process), "SLURM_NODEID": "0"}


def build_once(config, tmp_path) -> str:
    """Build the config's dataset in a process of its own, as ``launch/`` does on one host
    before all train. It starts no JAX backend: under JAX_PLATFORMS=tpu, on a machine
    without one, any backend use would fail it. Returns its output."""
    path = write_config_file(config, tmp_path)
    res = subprocess.run([sys.executable, "-m", "pose_vq.main", f"--config={path}",
                          "--mode=build_data"], env={**own_devices_env(), "JAX_PLATFORMS": "tpu"},
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def _launch(config, workdir, tmp_path):
    """Both processes of the run, as srun starts them: ``--distributed`` and the SLURM
    variables, jax finding its coordinator, process index and device from them."""
    path = write_config_file(config, tmp_path)
    port = _free_port(SLURM_PORTS, SLURM_PORTS + 4095)
    job_id = 7 * 4096 + port - SLURM_PORTS
    results = run_processes([(["-m", "pose_vq.main", f"--config={path}", f"--workdir={workdir}",
                               "--distributed"], slurm_env(i, 2, job_id), tmp_path)
                             for i in range(2)], tmp_path)
    for i, (returncode, output) in enumerate(results):
        assert returncode == 0, f"process {i} failed:\n{output[-4000:]}"
    return [output for _, output in results]


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
def test_two_slurm_processes_from_data_built_once_equal_one(synthetic_root, tmp_path):
    config = sharded_run_config(tmp_path / "tfds")
    config.data.manual_dir = str(synthetic_root)  # as launch/ leaves it: a build reused as is
    assert "is ready in" in build_once(config, tmp_path)
    steps = config.train.num_steps
    workdir = tmp_path / "multi"
    outputs = _launch(config, workdir, tmp_path)
    for i, output in enumerate(outputs):  # SLURM_PROCID's process, SLURM_LOCALID's GPU
        assert (f"JAX process {i} of 2, 1 local / 2 global devices (cpu; GPUs this process "
                f"may use: {i})") in output, output[-3000:]

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


def test_a_workdir_not_every_process_sees_is_refused_before_training(tmp_path):
    """Two hosts' local disks: each process in its own folder, given the same relative
    --workdir (and the coordinator flags instead of SLURM's variables). Both stop in one
    line before anything is read or trained."""
    config = sharded_run_config(tmp_path / "no_dataset")  # refused before it is looked for
    path = write_config_file(config, tmp_path)
    address = f"localhost:{_free_port()}"
    hosts = [tmp_path / f"host_{i}" for i in range(2)]
    for host in hosts:
        host.mkdir()
    results = run_processes([(["-m", "pose_vq.main", f"--config={path}", "--workdir=run",
                               f"--coordinator_address={address}", "--num_processes=2",
                               f"--process_id={i}"], own_devices_env(), hosts[i])
                             for i in range(2)], tmp_path)
    for returncode, output in results:
        assert returncode == 1, output[-3000:]
        [line] = [x for x in output.splitlines() if x.startswith("error:")]
        assert line.startswith("error: workdir run is not one folder for all 2 processes: "
                               "process(es) 1 cannot see what process 0 writes there"), line
    assert os.listdir(hosts[0] / "run") == [] and not (hosts[1] / "run").exists()  # no marker left
