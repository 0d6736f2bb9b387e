"""launch/device_check.sh: its documented commands (DRY_RUN=1), and the JSON summary that
pose_vq.benchmarks.device_summary writes from a run's logs (hand-written here: no GPU,
no training)."""

import json
import os
import pathlib
import subprocess
import sys

from pose_vq.benchmarks import device_summary
from tests import run_command

ROOT = pathlib.Path(__file__).resolve().parent.parent


def dry_run(**env: str) -> str:
    return subprocess.run(["bash", str(ROOT / "launch" / "device_check.sh")],
                          env={**os.environ, "DRY_RUN": "1", "OUT": "/tmp/dc", **env},
                          capture_output=True, text=True, check=True).stdout


def test_dry_run_prints_the_documented_commands():
    out = dry_run()
    assert ".venv/bin/pip install -q -e .\\[cuda12\\]" in out
    assert ("pose_vq.benchmark step --config=configs/3d_1024.py:f8\\,paper --batch_sizes=8 "
            "--compare=model.dtype=float32\\,bfloat16 --json") in out
    assert ("pose_vq.main --config=configs/demo.py --workdir=/tmp/dc/demo "
            "--config.train.num_steps=200 --config.model.conv_impl=native") in out
    assert "pose_vq.tokenize --workdir=/tmp/dc/demo --split=validation --verify --json" in out
    for batch in (16, 32):
        assert f"--batch_sizes={batch} --compare=model.dtype=bfloat16 --json" in out
    assert out.strip().splitlines()[-1].startswith(
        ".venv/bin/python -m pose_vq.benchmarks.device_summary summarise --logs=/tmp/dc/logs")
    # The settings change the commands; INSTALL=0 leaves the venv alone.
    out = dry_run(INSTALL="0", BF16_BATCHES="64", DEMO_STEPS="5", EXTRA_STEP="--steps=1")
    assert "pip install" not in out and "--batch_sizes=16" not in out
    assert "--batch_sizes=64 --compare=model.dtype=bfloat16 --json --steps=1" in out
    assert "--config.train.num_steps=5 " in out


def row(dtype: str, batch: int, utilisation: float, **extra) -> dict:
    """A step row as pose_vq.benchmarks.model.measure_row returns it (figures made up)."""
    return {"what": "step", "batch": batch, "devices": 1, "platform": "gpu",
            "device_kind": "NVIDIA H200", "dtype": dtype, "seconds": 0.05 * batch,
            "examples_per_sec_per_device": 20.0, "gflops": 1000.0 * batch,
            "flops_lower_bound": False, "tflops_per_sec": 400 * utilisation,
            "peak_tflops_per_device": 400.0, "utilisation": utilisation,
            "xla_gib_per_device": 2.0 * batch, "peak_gib": 2.5 * batch,
            "compile_seconds": 40.0, "changed": {"model.dtype": dtype}, **extra}


OOM = {"what": "step", "batch": 32, "changed": {"model.dtype": "bfloat16"},
       "error": "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory"}
TOKENIZE_OUT = """\
wrote motion_tokens/3d_t16_s32/1.0.0 to /tmp/dc/demo/tokens/motion_tokens/3d_t16_s32/1.0.0: \
{'validation': 94} clips of 512 tokens (ema weights, step 200)
validation decoded from tokens: ssim 0.512000, psnr 21.250000, l1 0.031000, t_std 0.010000
validation eval_metrics.json:   ssim 0.512001, psnr 21.250000, l1 0.031000, t_std 0.010000
{"dataset": "motion_tokens/3d_t16_s32/1.0.0", "data_dir": "/tmp/dc/demo/tokens", \
"clips": {"validation": 94}, "tokens_per_clip": 512, "weights": "ema", "step": 200, \
"roundtrip": {"validation": {"ssim": 0.512, "psnr": 21.25, "l1": 0.031, "t_std": 0.01}}, \
"eval_metrics": {"validation": {"ssim": 0.512001, "psnr": 21.25, "l1": 0.031, "t_std": 0.01}}}
"""


STAGES = [("install", 0, 95), ("devices", 0, 6), ("step", 0, 120), ("demo", 0, 70),
          ("tokenize", 0, 25), ("step_bf16_16", 0, 75), ("step_bf16_32", 0, 50)]


def write_logs(tmp_path: pathlib.Path, stages: list = STAGES
               ) -> tuple[pathlib.Path, pathlib.Path]:
    """The files a run leaves: stages.tsv, each stage's .out/.err, eval_metrics.json."""
    logs, workdir = tmp_path / "logs", tmp_path / "demo"
    logs.mkdir()
    workdir.mkdir()
    (logs / "stages.tsv").write_text("".join(f"{n}\t{rc}\t{s}\t.venv/bin/python -m {n}\n"
                                             for n, rc, s in stages))
    (logs / "devices.out").write_text("[CudaDevice(id=0)]\n" + json.dumps(
        {"jax": "0.10.2", "platform": "gpu", "devices": ["cuda:0 (NVIDIA H200)"]}) + "\n")
    (logs / "step.out").write_text(
        "not a row\n" + json.dumps(row("float32", 8, 0.2)) + "\n"
        + json.dumps(row("bfloat16", 8, 0.3)) + "\n")
    (logs / "step_bf16_16.out").write_text(json.dumps(row("bfloat16", 16, 0.42)) + "\n")
    (logs / "step_bf16_32.out").write_text(json.dumps(OOM) + "\n")
    (logs / "demo.err").write_text(
        "I1202 train.py] [175] train/perf/examples_per_sec_per_device=150.5\n"
        "I1202 train.py] [200] train/loss/l1=0.03, train/perf/examples_per_sec_per_device=161.25\n")
    (logs / "tokenize.out").write_text(TOKENIZE_OUT)
    (workdir / "eval_metrics.json").write_text(json.dumps(
        {"step": 200, "split": "validation", "num_clips": 94,
         "ema": {"ssim": 0.512001, "psnr": 21.25, "l1": 0.031}}))
    return logs, workdir


def test_summary_names_the_largest_bf16_batch_that_fits_and_keeps_failed_rows(tmp_path):
    logs, workdir = write_logs(tmp_path)
    out = tmp_path / "device_check.json"
    assert run_command(device_summary, ["summarise", f"--logs={logs}", f"--workdir={workdir}",
                                        f"--out={out}"]) == 0
    summary = json.loads(out.read_text())
    assert summary["ok"] and summary["jax"] == "0.10.2"
    assert summary["devices"] == ["cuda:0 (NVIDIA H200)"]
    assert [(r["dtype"] if "dtype" in r else r["changed"]["model.dtype"], r["batch"])
            for r in summary["step_rows"]] == [
        ("float32", 8), ("bfloat16", 8), ("bfloat16", 16), ("bfloat16", 32)]
    assert summary["step_rows"][-1]["error"] == OOM["error"]  # the OOM row is kept
    assert summary["step_rows"][-1]["stage"] == "step_bf16_32"
    best = summary["bf16_largest_fit"]
    assert (best["batch"], best["utilisation"], best["meets_target"]) == (16, 0.42, True)
    assert best["larger_batches_failed"] == [32] and not best["all_tried_fitted"]
    assert summary["demo"] == {
        "seconds": 70.0, "status": "ok", "examples_per_sec_per_device": 161.25,
        "eval_metrics": json.loads((workdir / "eval_metrics.json").read_text())}
    tokens = summary["tokens"]
    assert tokens["status"] == "ok" and tokens["clips"] == {"validation": 94}
    assert (tokens["tokens_per_clip"], tokens["weights"], tokens["step"]) == (512, "ema", 200)
    assert tokens["roundtrip"]["validation"]["psnr"] == 21.25
    assert tokens["eval_metrics"]["validation"]["ssim"] == 0.512001
    assert abs(tokens["max_abs_difference"]["validation"] - 1e-6) < 1e-9
    assert summary["stage_seconds"] == {"install": 95.0, "devices": 6.0, "step": 120.0,
                                        "demo": 70.0, "tokenize": 25.0,
                                        "step_bf16_16": 75.0, "step_bf16_32": 50.0}


def test_a_failed_or_skipped_stage_is_recorded_and_fails_the_summary(tmp_path):
    stages = [*STAGES[:3], ("demo", 1, 30), ("tokenize", 124, 200), ("step_bf16_16", 0, 75),
              ("step_bf16_32", "skipped", 0)]
    logs, workdir = write_logs(tmp_path, stages)
    (workdir / "eval_metrics.json").unlink()
    (logs / "tokenize.out").write_text("")
    (logs / "demo.err").write_text("Traceback ...\nFloatingPointError: non-finite loss at step 3\n")
    (logs / "step_bf16_16.out").write_text(json.dumps({**OOM, "batch": 16}) + "\n")
    (logs / "step_bf16_32.out").unlink()  # skipped: never ran
    out = tmp_path / "summary.json"
    assert run_command(device_summary, ["summarise", f"--logs={logs}", f"--workdir={workdir}",
                                        f"--out={out}"]) == 1
    summary = json.loads(out.read_text())
    stages = summary["stages"]
    assert not summary["ok"]
    assert stages["demo"]["status"] == "failed" and stages["demo"]["rc"] == 1
    assert stages["demo"]["error"] == "FloatingPointError: non-finite loss at step 3"
    assert stages["tokenize"]["status"] == "timed out"
    assert stages["step_bf16_32"] == {"status": "skipped", "rc": None, "seconds": 0.0,
                                      "command": ".venv/bin/python -m step_bf16_32"}
    assert summary["demo"]["eval_metrics"] is None and summary["tokens"] == {"status": "timed out"}
    best = summary["bf16_largest_fit"]  # 16 did not fit: batch 8, from the first stage
    assert (best["batch"], best["larger_batches_failed"], best["meets_target"]) == (8, [16], False)


def test_largest_fitting_ignores_other_dtypes_and_says_when_every_batch_fitted():
    rows = [row("bfloat16", 8, 0.3), row("float32", 64, 0.5), row("bfloat16", 16, 0.35)]
    best = device_summary.largest_fitting(rows)
    assert (best["batch"], best["all_tried_fitted"]) == (16, True)
    assert device_summary.largest_fitting([OOM, row("float32", 8, 0.2)]) is None


REFERENCE_ROW = {"what": "step", "batch": 8, "pose_vq_seconds": 0.5, "reference_seconds": 2.0,
                 "ratio": 4.0}
FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for .venv/bin/python: a row per benchmark call, batch 16 out of memory, the
# demo's training failing; the summary is written by the real one.
case "$*" in
  *device_summary\\ devices*) echo '{"jax": "0.10.2", "platform": "gpu", "devices": ["cuda:0"]}' ;;
  *device_summary\\ summarise*) exec %s "$@" ;;
  *--batch_sizes=16*) echo '%s' ;;
  *pose_vq.benchmarks.reference*) echo '%s' ;;
  *pose_vq.benchmark*) echo '%s' ;;
  *pose_vq.main*) echo "FloatingPointError: non-finite loss at step 3" >&2; exit 3 ;;
esac
"""


def test_the_script_goes_on_past_a_failed_stage_and_stops_at_the_first_batch_too_big(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON % (sys.executable, json.dumps({**OOM, "batch": 16}),
                                   json.dumps(REFERENCE_ROW), json.dumps(row("bfloat16", 8, 0.3))))
    fake.chmod(0o755)
    out, summary_path = tmp_path / "out", tmp_path / "summary.json"
    env = {**os.environ, "INSTALL": "0", "PY": str(fake), "OUT": str(out),
           "SUMMARY": str(summary_path), "BF16_BATCHES": "16,32", "REFERENCE": str(tmp_path)}
    env.pop("DRY_RUN", None)
    res = subprocess.run(["bash", str(ROOT / "launch" / "device_check.sh")], env=env,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 1, res.stdout + res.stderr  # the demo failed
    summary = json.loads(summary_path.read_text())
    assert list(summary["stages"]) == ["devices", "step", "step_cached", "reference", "demo",
                                       "tokenize", "step_bf16_16"]
    assert summary["reference_rows"] == [REFERENCE_ROW]
    assert summary["stages"]["demo"]["status"] == "failed"
    assert summary["stages"]["demo"]["error"] == "FloatingPointError: non-finite loss at step 3"
    assert summary["stages"]["tokenize"]["status"] == "ok"  # ran after the failure
    assert summary["step_rows"][-1]["error"].startswith("jaxlib")
    assert summary["bf16_largest_fit"]["batch"] == 8
    assert (out / "logs" / "demo.err").exists() and summary["jax"] == "0.10.2"
