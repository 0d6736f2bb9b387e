"""The summary of ``launch/device_check.sh``: one JSON file from the logs of its stages.

    python -m pose_vq.benchmarks.device_summary devices
    python -m pose_vq.benchmarks.device_summary summarise --logs=DIR --workdir=DIR --out=FILE

``devices`` prints ``jax.devices()`` and a JSON line (jax version, platform, devices) for
the summary. ``summarise`` reads what the script leaves in ``--logs``: ``stages.tsv`` (one
line per stage: name, exit status or ``skipped``, seconds, command) and each stage's
``<name>.out`` / ``<name>.err`` (the ``step*`` stages' stdout holds the benchmark's JSON
rows); and the demo run's ``eval_metrics.json`` in ``--workdir``. It writes the summary (a
failed stage is kept with its status and its stderr's last line) and exits 1 when a stage
failed or was skipped, so the script's own exit status says so.

No JAX at import (only ``devices`` imports it): the summary is written even when JAX's
install is broken.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

from absl import app, flags

from pose_vq import errors

# The target for the largest bf16 batch that fits: model FLOP rate >= 40% of the
# bf16 matmul peak measured in the same process.
UTILISATION_TARGET = 0.40
TIMEOUT_RC = (124, 137)  # `timeout`: the stage ran past the budget (TERM, then KILL)

_PERF = re.compile(r"train/perf/examples_per_sec_per_device=([0-9.eE+-]+)")  # clu's log line


def read_stages(path: pathlib.Path) -> dict[str, dict[str, Any]]:
    """Each stage's status (ok | failed | timed out | skipped), exit code, seconds and
    command, in the order the script ran them."""
    stages: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return stages
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        name, rc, seconds, command = (line.split("\t", 3) + ["", "", ""])[:4]
        if rc == "skipped":
            status, code = "skipped", None
        else:
            code = int(rc)
            status = "ok" if code == 0 else "timed out" if code in TIMEOUT_RC else "failed"
        stages[name] = {"status": status, "rc": code, "seconds": float(seconds or 0),
                        "command": command}
    return stages


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among a command's output lines (log lines are skipped)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                rows.append(value)
    return rows


def row_dtype(row: dict[str, Any]) -> str | None:
    """A step row's activation dtype; a failed row has it only among its --compare knobs."""
    return row.get("dtype") or row.get("changed", {}).get("model.dtype")


def largest_fitting(rows: list[dict[str, Any]], dtype: str = "bfloat16") -> dict[str, Any] | None:
    """The successful ``dtype`` row of the largest batch, with the batches that failed
    above it; None when no row of that dtype ran."""
    ran = [r for r in rows if row_dtype(r) == dtype and "error" not in r]
    if not ran:
        return None
    best = max(ran, key=lambda r: r["batch"])
    failed = sorted({r["batch"] for r in rows
                     if row_dtype(r) == dtype and "error" in r and r["batch"] > best["batch"]})
    return {"batch": best["batch"], "utilisation": best["utilisation"],
            "meets_target": best["utilisation"] >= UTILISATION_TARGET,
            "target": UTILISATION_TARGET, "seconds": best["seconds"],
            "examples_per_sec_per_device": best["examples_per_sec_per_device"],
            "peak_tflops_per_device": best["peak_tflops_per_device"],
            "peak_gib": best["peak_gib"], "larger_batches_failed": failed,
            # Every batch tried fitted: a larger one may fit too.
            "all_tried_fitted": not failed}


def parse_tokenize(text: str) -> dict[str, Any]:
    """The JSON line of ``python -m pose_vq.tokenize --verify --json``: the export
    (dataset, clips per split, tokens per clip, weights, step) and per split the metrics
    of the clips decoded from the tokens beside eval_metrics.json's, with their largest
    difference (the export reproduces evaluation)."""
    out = (json_lines(text) or [{}])[-1]
    for split, decoded in out.get("roundtrip", {}).items():
        ref = out.get("eval_metrics", {}).get(split)
        if ref:
            out.setdefault("max_abs_difference", {})[split] = max(
                abs(decoded[k] - ref[k]) for k in decoded if k in ref)
    return out


def _read(path: pathlib.Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _last_error(logs: pathlib.Path, name: str) -> str | None:
    lines = [line for line in _read(logs / f"{name}.err").splitlines() if line.strip()]
    return lines[-1][:300] if lines else None


def summarise(logs: pathlib.Path, workdir: pathlib.Path) -> dict[str, Any]:
    """The device check's summary from its log directory and the demo's workdir."""
    stages = read_stages(logs / "stages.tsv")
    for name, stage in stages.items():
        if stage["status"] in ("failed", "timed out"):
            stage["error"] = _last_error(logs, name)
    env = (json_lines(_read(logs / "devices.out")) or [{}])[-1]
    rows = [{**r, "stage": name} for name in stages if name.startswith("step")  # step rows
            for r in json_lines(_read(logs / f"{name}.out"))]
    evaluated = workdir / "eval_metrics.json"
    perf = _PERF.findall(_read(logs / "demo.err"))
    demo = {"seconds": stages.get("demo", {}).get("seconds"),
            "status": stages.get("demo", {}).get("status", "not run"),
            "eval_metrics": json.loads(evaluated.read_text()) if evaluated.exists() else None,
            # the last logged training throughput (compilation excluded)
            "examples_per_sec_per_device": float(perf[-1]) if perf else None}
    tokens = {"status": stages.get("tokenize", {}).get("status", "not run"),
              **parse_tokenize(_read(logs / "tokenize.out"))}
    return {
        "ok": bool(stages) and all(s["status"] == "ok" for s in stages.values()),
        "jax": env.get("jax"), "platform": env.get("platform"), "devices": env.get("devices"),
        "step_rows": rows, "bf16_largest_fit": largest_fitting(rows),
        # pose_vq's step against the reference's on this device (benchmarks.reference rows)
        "reference_rows": json_lines(_read(logs / "reference.out")),
        "demo": demo, "tokens": tokens,
        "stage_seconds": {name: s["seconds"] for name, s in stages.items()},
        "stages": stages,
    }


def print_digest(summary: dict[str, Any]) -> None:
    """A few lines for the terminal; the JSON file has everything."""
    print(f"jax {summary['jax']} on {summary['devices']}")
    for r in summary["step_rows"]:
        what = f"step {row_dtype(r)} batch {r['batch']}:"
        if "error" in r:
            print(f"{what} failed: {r['error']}")
        else:
            print(f"{what} {r['seconds']:.3f} s, {100 * r['utilisation']:.1f}% of "
                  f"{r['peak_tflops_per_device']:.3g} TFLOP/s, peak {r['peak_gib']:.1f} GiB")
            if "trace_seconds" in r:  # rows since the compile split
                print(f"  compiled in {r['trace_seconds'] + r['lower_seconds']:.1f} s trace+lower, "
                      f"{r['compile_seconds']:.1f} s compile"
                      f"{' (from the persistent cache)' if r.get('compile_from_cache') else ''}")
    best = summary["bf16_largest_fit"]
    if best:
        print(f"largest bf16 batch that fits: {best['batch']}"
              f"{' (every batch tried fitted)' if best['all_tried_fitted'] else ''}, "
              f"{100 * best['utilisation']:.1f}% (target {100 * best['target']:.0f}%)")
    for r in summary.get("reference_rows", []):
        print(f"reference {r['what']} batch {r['batch']}: {r['reference_seconds']:.3f} s against "
              f"pose_vq's {r['pose_vq_seconds']:.3f} s, {r['ratio']:.2f}x")
    metrics = (summary["demo"]["eval_metrics"] or {}).get("ema", {})
    print(f"demo: {summary['demo']['status']}, {summary['demo']['seconds']} s, ema "
          + ", ".join(f"{k} {metrics[k]:.4f}" for k in ("ssim", "psnr", "l1") if k in metrics))
    print(f"tokens: {summary['tokens']['status']}, clips {summary['tokens'].get('clips')}")
    for name, s in summary["stages"].items():
        print(f"  {name:<14} {s['status']:<9} {s['seconds']:6.0f} s"
              + (f"  {s['error']}" if s.get("error") else ""))


def devices() -> dict[str, Any]:
    """Print ``jax.devices()``; return the versions and devices for the summary."""
    import jax  # noqa: PLC0415 (here only: the summary itself needs no JAX)

    found = jax.devices()
    print(found)
    return {"jax": jax.__version__, "platform": found[0].platform,
            "devices": [f"{d} ({d.device_kind})" for d in found]}


FLAGS = flags.FLAGS
COMMANDS = ("devices", "summarise")


@errors.one_line_failures
def main(argv: list[str]) -> int:
    """0, or 1 when a stage failed or was skipped (absl's app.run exits with it)."""
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError("usage: python -m pose_vq.benchmarks.device_summary "
                             f"{{{'|'.join(COMMANDS)}}} ...")
    if argv[1] == "devices":
        print(json.dumps(devices()))
        return 0
    if not FLAGS.logs or not FLAGS.workdir:
        raise app.UsageError("summarise needs --logs and --workdir")
    summary = summarise(pathlib.Path(FLAGS.logs), pathlib.Path(FLAGS.workdir))
    out = pathlib.Path(FLAGS.out)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print_digest(summary)
    print(f"wrote {out}")
    return 0 if summary["ok"] else 1


def define_flags() -> None:
    """The command's flags (defined only when it runs, as every pose_vq command's are)."""
    flags.DEFINE_string("logs", None, "summarise: the script's log directory (stages.tsv, "
                        "<stage>.out/.err).")
    flags.DEFINE_string("workdir", None, "summarise: the demo's workdir.")
    flags.DEFINE_string("out", "device_check.json", "summarise: the JSON summary to write.")
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
