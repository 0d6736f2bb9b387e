"""The paper's analyses, one command each: a vocabulary sweep, a comparison of runs, and
what the tokens are worth downstream.

    python -m pose_vq.analysis sweep --config=configs/demo.py --workdir=runs/sweep \\
        --modes=m2d,3d --num_codes=128,1024,4096,16384 --kinds=ema,ema_restart,fsq,lfq,simvq \\
        --seeds=2 --close_db=0.5 --output_dir=docs/sweep
    python -m pose_vq.analysis compare --config=configs/demo.py --workdir=runs/baselines \\
        --variants=vqgan,vqvae,dvae
    python -m pose_vq.analysis compare --runs=runs/a,runs/b --workdir=runs/ab
    python -m pose_vq.analysis probes --config=configs/demo.py --workdir=runs/probes \\
        --data_seeds=3

``sweep`` trains and evaluates the config once per (mode, quantizer arm, vocabulary size,
seed) in ``<workdir>/<mode>_<arm>_k<K>[_s<seed>]`` (``ARMS``: the config's own quantizer,
ema with and without restart, learned, simvq, fsq, lfq, residual stages at equal bits;
with ``--close_db`` seeds after the first only where arms are that close in PSNR)
and writes ``sweep.csv`` (a row per run), ``sweep_summary.csv`` (mean, spread and 95%
interval over seeds; the paired margin over ema with restart) and ``sweep.png`` (PSNR,
SSIM, codebook usage, perplexity, L1, tdiff_l1 against the vocabulary, a row per mode, a
line per arm): the paper's "2D needs 128 codes, 3D needs 1024", and which quantizer keeps
a large vocabulary alive. ``compare`` trains the config as each of
``pose_vq.config.VARIANTS`` (or reads already trained ``--runs``) and writes
``compare.csv`` and ``compare.md``: one row per run and the paper's two claims, SSIM over
the dVAE and T-Std against the non-adversarial VQ-VAE, as measured here, and each run's
held-out PSNR and SSIM at every evaluation (``compare_curves.csv``, ``compare_curves.png``,
read from its TensorBoard events) with what each variant still gained at its end; with
``--seeds=N`` each variant runs at N seeds (``<variant>_s<seed>``) and the claims become
relative changes paired by seed with their 95% intervals (``compare_summary.csv``). ``probes`` runs
the downstream chain: it trains the tokenizer (or takes ``--tokenizer=RUN``), exports
tokens of the trained model and of the model at initialisation, trains the DSTformer and
per-frame MLP lifters (``pose_vq.downstream.lift.default_config`` with ``--lift_options``, default
``demo``), runs the pose, action and retrieval probes (pose_vq.downstream.probe) and scores
the pose head and both lifters on the real sample (``--real``, a Panoptic root) as a
sim-to-real check; it writes ``probes.csv``, ``probes.md`` and ``probes_confusion.json``
(the action heads' held-out confusion matrices; probes.md reads them out per class). Its
synthetic data deal the motion kinds per split (``--balanced_kinds``,
``data.synthetic_balanced_kinds``) and it stops when the held-out split lacks a kind the
training split has. With ``--data_seeds=N`` the chain runs once per data seed (roots
written with ``data.synthetic_seed`` + 0..N-1) in ``<workdir>/data_seed<i>``, and
``probes_summary.csv``/``.md`` hold each row's mean, spread and 95% interval over the
seeds, the confusion matrices summed (``probes_summary_confusion.json``).

Runs share one dataset (built once under the workdir when the config builds its own).
A run whose ``eval_metrics.json`` is at its last step is not trained again, and an
interrupted run resumes from its checkpoint, so rerunning a command only does what is left;
a run of another config in its folder stops the command. ``sweep`` also keeps each
finished run's eval_metrics.json and config under ``<output_dir>/runs/<run>`` and reads
them back from there: commit the output dir and the sweep goes on from a fresh clone on
another machine, training only what it lacks. ``probes`` reuses a token export
or a probe head only where it came from the same tokenizer checkpoint (step and config
digest, ``pose_vq.tokenize.export_key``) and a lifter only where its config (its dataset
included) is the same; otherwise it removes it and makes it again.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from pose_vq import (
    checkpointing,
    errors,
    evaluate,
    paths,
    runtime,
    stats,
    summary,
    tokenize,
    train,
)
from pose_vq import config as config_lib
from pose_vq.data import pipeline, prepare
from pose_vq.downstream import lift, pose3d, probe
from pose_vq.models import quantizer

FLAGS = flags.FLAGS

# tdiff_l1: heatmap intensity per frame; kp_*: keypoint data only (empty otherwise),
# kp_error in px, kp_vel_* in px/frame, kp_acc_* in px/frame^2 (pose_vq.metrics).
KEYPOINT_COLUMNS = ("kp_error", "kp_missed", "kp_vel_error", "kp_vel_target", "kp_vel_still",
                    "kp_acc_error", "kp_acc_target", "kp_acc_still")
COLUMNS = ("ssim", "psnr", "l1", "t_std", "tdiff_l1", "ssim_tstd", "psnr_tstd", "l1_tstd",
           "q_loss", "codebook_usage", "codebook_perplexity", *KEYPOINT_COLUMNS)
PLOTTED = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("codebook_usage", "codebook usage"),
           ("codebook_perplexity", "token perplexity"), ("l1", "L1"),
           ("tdiff_l1", "temporal-difference error"))


def _finished(run_dir: epath.Path, config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """The run's final evaluation, or None when it has not reached the config's last step.
    A run of another config in ``run_dir`` is an error: it is neither reused nor resumed."""
    stored = run_dir / checkpointing.CONFIG_FILE
    # The stored config over today's defaults: knobs added since the run was made take
    # their defaults, so a study resumed after the code grew a knob keeps its runs.
    if stored.exists() and (checkpointing.config_digest(checkpointing.load_run_config(run_dir))
                            != checkpointing.config_digest(config)):
        raise SystemExit(f"{run_dir} holds a run of another config ({stored} differs from "
                         "the one asked for): delete it or choose another --workdir")
    path = run_dir / "eval_metrics.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    return results if results.get("step") == config.train.num_steps else None


def shared_data(config: ml_collections.ConfigDict, workdir: epath.Path
                ) -> ml_collections.ConfigDict:
    """A copy of ``config`` that reads its dataset from under ``workdir`` (built there
    once, synthetic root included, when the config builds its own)."""
    c = ml_collections.ConfigDict(config.to_dict())
    data_dir, _ = prepare.prepare_dataset(c.data, workdir)
    c.data.data_dir, c.data.manual_dir, c.data.synthetic = data_dir, "", False
    return c


def run_all(runs: dict[str, ml_collections.ConfigDict], workdir: epath.Path,
            report: Callable[[dict[str, dict[str, Any]]], Any] | None = None,
            kept: epath.Path | None = None) -> dict[str, dict[str, Any]]:
    """Train and evaluate each config in ``workdir/<name>`` unless already done there (with
    the same config: a run of another config there stops the command). ``report`` is
    called with the results so far before each run it trains and at the end, so a long
    study's tables always hold every finished run.

    With ``kept``, each finished run's ``eval_metrics.json`` and config (as given, before
    the shared dataset's paths are set, so it names the run on any machine) are copied to
    ``kept/<name>``, and a run found finished there is not trained again: a study whose
    tables are committed (e.g. under docs/) resumes on a machine that lacks its workdir."""

    def finished(name: str, config: ml_collections.ConfigDict) -> dict[str, Any] | None:
        done = _finished(kept / name, config) if kept is not None else None
        if done is None:
            done = _finished(workdir / name, shared_data(config, workdir))
        if done is not None and kept is not None and jax.process_index() == 0:
            keep(name, config)
        return done

    def keep(name: str, config: ml_collections.ConfigDict) -> None:
        if (kept / name / "eval_metrics.json").exists():
            return
        (kept / name).mkdir(parents=True, exist_ok=True)
        checkpointing.write_run_config(config, kept / name)
        (kept / name / "eval_metrics.json").write_text(
            (workdir / name / "eval_metrics.json").read_text())

    # Every finished run first, so the tables before the first training hold them all.
    results = {name: done for name, config in runs.items()
               if (done := finished(name, config)) is not None}
    logging.info("%d of %d runs finished already, not trained again: %s", len(results),
                 len(runs), ", ".join(results))

    def in_order() -> dict[str, dict[str, Any]]:
        return {name: results[name] for name in runs if name in results}

    reported = 0
    for name, config in runs.items():
        if name in results:
            continue
        if report is not None and len(results) > reported:
            report(in_order())
            reported = len(results)
        run_dir = workdir / name
        logging.info("run %s: training in %s", name, run_dir)
        shared = shared_data(config, workdir)
        train.train_and_evaluate(shared, run_dir)
        done = _finished(run_dir, shared)
        if done is None:  # stopped early (preemption): rerun the command to go on
            raise SystemExit(f"run {name} stopped before step {config.train.num_steps}; "
                             "rerun the same command to resume it")
        if kept is not None and jax.process_index() == 0:
            keep(name, config)
        results[name] = done
    results = in_order()
    if report is not None and results:
        report(results)
    return results


def _row(results: dict[str, Any], weights: str) -> dict[str, Any]:
    row = {k: results[weights].get(k) for k in COLUMNS}
    row.update({f"zeros_{k}": results["zeros"].get(k)
                for k in ("ssim", "psnr", "l1", "tdiff_l1")})
    row.update(step=results["step"], split=results["split"], num_clips=results["num_clips"])
    return row


def write_csv(path: epath.Path, rows: Sequence[dict[str, Any]]) -> epath.Path:
    text = io.StringIO(newline="")  # built in memory: a bucket's files take no newline=
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(text.getvalue())
    return path


# The sweep's arms: the config's quantizer as given, or one of the quantizer's named
# settings at each vocabulary K (``pose_vq.models.quantizer.ARMS``).
ARMS = {"config": "the config's quantizer as given", **quantizer.ARMS}
SUMMARISED = ("psnr", "ssim", "l1", "t_std", "tdiff_l1", "codebook_usage", "codebook_perplexity")


def sweep_config(config: ml_collections.ConfigDict, mode: str, arm: str, vocabulary: int,
                 seed: int) -> ml_collections.ConfigDict | None:
    """``config`` at one point of the sweep, or None where the arm has no such vocabulary
    (no FSQ grid, bits that do not split evenly over the stages)."""
    if arm not in ARMS:
        raise ValueError(f"sweep arm {arm!r}: choose from {', '.join(ARMS)}")
    knobs = {"num_codes": vocabulary} if arm == "config" else quantizer.arm_settings(
        arm, vocabulary)
    if knobs is None:
        return None
    c = ml_collections.ConfigDict(config.to_dict())
    c.data.mode, c.seed = mode, config.seed + seed
    c.quantizer.update(knobs)
    return config_lib.validate(c)


def run_name(mode: str, arm: str, vocabulary: int, seed: int) -> str:
    """A sweep run's folder: ``<mode>_k<K>`` for the config's own quantizer at seed 0
    (where earlier sweeps left them), ``<mode>_<arm>_k<K>[_s<seed>]`` otherwise."""
    arm_part = "" if arm == "config" else f"_{arm}"
    seed_part = f"_s{seed}" if seed else ""
    return f"{mode}{arm_part}_k{vocabulary}{seed_part}"


def sweep(config: ml_collections.ConfigDict, workdir: epath.Path, modes: Sequence[str],
          sizes: Sequence[int], weights: str = "ema", arms: Sequence[str] = ("config",),
          seeds: int = 1, output_dir: epath.Path | None = None, close_db: float | None = None,
          baseline: str = "ema_restart") -> list[dict[str, Any]]:
    """Train ``config`` at each (mode, arm, vocabulary size, seed) in ``workdir``; write
    sweep.csv (a row per run), sweep_summary.csv (per mode, arm and size: mean, spread and
    95% interval over seeds, and the paired margin over ``baseline`` where it ran) and
    sweep.png into ``output_dir`` (default ``workdir``), and each run's eval_metrics.json
    and config into ``output_dir/runs/<run>``. Finished runs are read back, from there too,
    so a sweep whose output_dir is committed goes on where it stopped on another machine.

    With ``close_db``, seeds after the first run only where they decide something: at a
    (mode, size) whose first-seed PSNRs put two or more arms within ``close_db`` dB of the
    best, for those arms and ``baseline``."""
    runs: dict[str, ml_collections.ConfigDict] = {}
    points: dict[str, tuple[str, str, int, int]] = {}

    def add(mode: str, arm: str, k: int, seed: int) -> None:
        c = sweep_config(config, mode, arm, k, seed)
        if c is None:
            logging.info("sweep: %s has no vocabulary of %d codes; skipped", arm, k)
            return
        name = run_name(mode, arm, k, seed)
        runs[name], points[name] = c, (mode, arm, k, seed)

    # Seed by seed, then size by size: a sweep cut short has whole vocabularies, every arm
    # in every mode.
    kept = paths.as_path(output_dir or workdir) / "runs"
    for seed in range(seeds):
        for k in sizes:
            for mode in modes:
                for arm in arms:
                    # With close_db, a later seed is planned once the first seeds are in,
                    # but one already kept is read back from the start: whole tables.
                    if (seed == 0 or close_db is None
                            or (kept / run_name(mode, arm, int(k), seed)).exists()):
                        add(mode, arm, int(k), seed)
    rows: list[dict[str, Any]] = []

    def tables(results: dict[str, dict[str, Any]]) -> None:
        rows.clear()
        for name, r in results.items():
            mode, arm, k, seed = points[name]
            q = runs[name].quantizer
            rows.append({"mode": mode, "arm": arm, "vocabulary": k, "seed": seed,
                         "kind": q.kind, "num_codes": q.num_codes, "stages": q.stages,
                         "bits": round(q.stages * math.log2(q.num_codes), 2),
                         **_row(r, weights)})
        if jax.process_index() == 0:
            out = paths.as_path(output_dir or workdir)
            out.mkdir(parents=True, exist_ok=True)
            write_csv(out / "sweep.csv", rows)
            write_csv(out / "sweep_summary.csv", sweep_summary(rows, baseline))
            plot_sweep(out / "sweep.png", rows)
            logging.info("wrote %s, %s and %s (%d of %d runs)", out / "sweep.csv",
                         out / "sweep_summary.csv", out / "sweep.png", len(rows), len(runs))

    run_all(runs, workdir, report=tables, kept=kept)
    if close_db is not None and seeds > 1:
        contested = close_arms(rows, close_db, baseline)
        for seed in range(1, seeds):
            for mode, arm, k in contested:
                add(mode, arm, k, seed)
        logging.info("sweep: %d (mode, arm, size) points within %.2f dB of their best get "
                     "seeds 1..%d", len(contested), close_db, seeds - 1)
        run_all(runs, workdir, report=tables, kept=kept)
    return rows


def close_arms(rows: Sequence[dict[str, Any]], close_db: float, baseline: str = "ema_restart"
               ) -> list[tuple[str, str, int]]:
    """The (mode, arm, vocabulary) points whose seed-0 PSNR is within ``close_db`` of the
    best arm's at the same mode and vocabulary, where at least two arms are, and
    ``baseline`` there (the margins are paired by seed)."""
    by_point: dict[tuple[str, int], dict[str, float]] = {}
    for r in rows:
        if r["seed"] == 0 and r.get("psnr") is not None:
            by_point.setdefault((r["mode"], r["vocabulary"]), {})[r["arm"]] = r["psnr"]
    out = []
    for (mode, k), psnr in by_point.items():
        best = max(psnr.values())
        close = [arm for arm, v in psnr.items() if best - v <= close_db]
        if len(close) < 2:
            continue
        if baseline in psnr and baseline not in close:
            close.append(baseline)
        out += [(mode, arm, k) for arm in close]
    return out


def sweep_summary(rows: Sequence[dict[str, Any]], baseline: str = "ema_restart"
                  ) -> list[dict[str, Any]]:
    """Per (mode, arm, vocabulary): each SUMMARISED metric's mean, std and 95% interval
    over seeds, and PSNR's and SSIM's paired difference from ``baseline`` at the same
    seeds (``margin_*``)."""
    groups: dict[tuple, dict[int, dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["mode"], r["arm"], r["vocabulary"]), {})[r["seed"]] = r
    out = []
    for (mode, arm, k), by_seed in groups.items():
        row: dict[str, Any] = {"mode": mode, "arm": arm, "vocabulary": k, "seeds": len(by_seed)}
        for key in SUMMARISED:
            values = [r[key] for r in by_seed.values() if r.get(key) is not None]
            if not values:  # a metric added since these runs were evaluated
                continue
            s = stats.summary(values)
            row.update({f"{key}_{part}": s[part] for part in ("mean", "std", "ci_low", "ci_high")})
        base = groups.get((mode, baseline, k))
        if base and arm != baseline and set(base) & set(by_seed):
            for key in ("psnr", "ssim"):
                d = stats.paired_difference({s: r[key] for s, r in by_seed.items()},
                                            {s: r[key] for s, r in base.items()})
                row.update({f"margin_{key}_{part}": d[part]
                            for part in ("mean", "ci_low", "ci_high")})
        out.append(row)
    return out


def _save_png(fig: Any, path: epath.Path) -> epath.Path:
    """Writes a figure through epath (local or cloud paths alike) and frees it."""
    from matplotlib import pyplot as plt  # noqa: PLC0415 (loaded already by the plot)

    with path.open("wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    return path


def plot_sweep(path: epath.Path, rows: Sequence[dict[str, Any]]) -> epath.Path:
    """A row of panels per mode (PSNR, SSIM, codebook usage, token perplexity, L1 and the
    temporal-difference error against the vocabulary, log scale), a line per arm with the spread over seeds as
    error bars; the all-zeros prediction dashed."""
    import matplotlib  # noqa: PLC0415 (pyplot takes 0.9-1.1 s to import: the sweep's plot alone)
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415 (0.9-1.1 s: the sweep's plot alone)

    modes = list(dict.fromkeys(r["mode"] for r in rows))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    fig, axes = plt.subplots(len(modes), len(PLOTTED), figsize=(3.2 * len(PLOTTED),
                             2.9 * len(modes)), constrained_layout=True, squeeze=False)
    for row_axes, mode in zip(axes, modes):
        mine = [r for r in rows if r["mode"] == mode]
        for ax, (key, label) in zip(row_axes, PLOTTED):
            for i, arm in enumerate(arms):
                sizes = sorted({r["vocabulary"] for r in mine if r["arm"] == arm})
                if not sizes:
                    continue
                values = [[r[key] for r in mine if r["arm"] == arm and r["vocabulary"] == k
                           and r.get(key) is not None] for k in sizes]
                sizes = [k for k, v in zip(sizes, values) if v]
                values = [v for v in values if v]
                ax.errorbar(sizes, [np.mean(v) for v in values],
                            yerr=[np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values],
                            fmt="o-", color=f"C{i}", ms=3, capsize=2, label=arm)
            if mine[0].get(f"zeros_{key}") is not None:
                ax.axhline(mine[0][f"zeros_{key}"], color="k", ls="--", lw=0.8, label="all zeros")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("vocabulary size")
            ax.set_title(f"{mode}: {label}")
            ax.grid(alpha=0.3)
        row_axes[0].legend(fontsize=7)
    return _save_png(fig, path)


def _change(new: float, old: float) -> str:
    return f"{100 * (new - old) / abs(old):+.1f}%" if old else "n/a"


def claims(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The paper's two headline comparisons, where the runs to make them are present."""
    out = []
    if "vqgan" in rows and "dvae" in rows:
        out.append(f"SSIM, VQ-GAN over dVAE: {rows['vqgan']['ssim']:.4f} vs "
                   f"{rows['dvae']['ssim']:.4f} ({_change(rows['vqgan']['ssim'], rows['dvae']['ssim'])}; "
                   "paper: +9.31%)")
    if "vqgan" in rows and "vqvae" in rows:
        out.append(f"T-Std, VQ-GAN against VQ-VAE: {rows['vqgan']['t_std']:.4f} vs "
                   f"{rows['vqvae']['t_std']:.4f} "
                   f"({_change(rows['vqgan']['t_std'], rows['vqvae']['t_std'])}; paper: -37.1%)")
        for key, what in (("tdiff_l1", "Temporal-difference error (intensity/frame)"),
                          ("kp_vel_error", "Joint velocity error (px/frame)")):
            new, old = rows["vqgan"].get(key), rows["vqvae"].get(key)
            if new is not None and old is not None:
                out.append(f"{what}, VQ-GAN against VQ-VAE: {new:.4f} vs {old:.4f} "
                           f"({_change(new, old)}; the same claim in units, not in the paper)")
    return out


# The paper's claims as paired comparisons: (metric, the model, what it is compared with,
# the paper's relative change in percent).
CLAIMS = (("ssim", "vqgan", "dvae", 9.31), ("t_std", "vqgan", "vqvae", -37.1),
          ("tdiff_l1", "vqgan", "vqvae", None), ("kp_vel_error", "vqgan", "vqvae", None))


def seed_of(name: str) -> tuple[str, int]:
    """(variant, seed) of a compare run's folder name: ``<variant>`` or ``<variant>_s<seed>``."""
    variant, _, seed = name.rpartition("_s")
    return (variant, int(seed)) if variant and seed.isdigit() else (name, 0)


def seed_summary(rows: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Over the seeds of each variant: every compared metric's mean, std and 95% interval
    (one row per variant), and each of CLAIMS as the relative change paired by seed, with
    its 95% interval (one line per claim whose runs are present)."""
    groups: dict[str, dict[int, dict[str, Any]]] = {}
    for name, row in rows.items():
        variant, seed = seed_of(name)
        groups.setdefault(variant, {})[seed] = row
    table = []
    for variant, by_seed in groups.items():
        row: dict[str, Any] = {"variant": variant, "seeds": len(by_seed)}
        for key in ("ssim", "psnr", "l1", "t_std", "tdiff_l1", "kp_vel_error"):
            values = [r[key] for r in by_seed.values() if r.get(key) is not None]
            if values:
                found = stats.summary(values)
                row.update({f"{key}_{p}": found[p] for p in ("mean", "std", "ci_low", "ci_high")})
        table.append(row)
    lines = []
    for key, new, old, paper in CLAIMS:
        a, b = groups.get(new, {}), groups.get(old, {})
        change = {seed: 100 * (a[seed][key] - b[seed][key]) / abs(b[seed][key])
                  for seed in set(a) & set(b)
                  if a[seed].get(key) is not None and b[seed].get(key) not in (None, 0)}
        if not change:
            continue
        d = stats.summary(list(change.values()))
        interval = ("" if d["n"] < 2 else
                    f", 95% interval {d['ci_low']:+.1f}% to {d['ci_high']:+.1f}%")
        lines.append(f"{key}, {new} against {old}: {d['mean']:+.1f}% over {d['n']} paired "
                     f"seed(s){interval} (paper: "
                     + (f"{paper:+.2f}%)" if paper is not None else "not reported)"))
    return table, lines


def learning_curves(run_dirs: dict[str, epath.Path], weights: str = "ema"
                    ) -> list[dict[str, Any]]:
    """Held-out PSNR and SSIM at every evaluation of each run, read from its TensorBoard
    events: rows of run, variant, seed, step, psnr, ssim."""
    rows = []
    for name, run_dir in run_dirs.items():
        variant, seed = seed_of(name)
        found = summary.read_scalars(run_dir, f"eval/{weights}/")
        psnr = dict(found.get(f"eval/{weights}/psnr", []))
        ssim = dict(found.get(f"eval/{weights}/ssim", []))
        rows += [{"run": name, "variant": variant, "seed": seed, "step": step,
                  "psnr": psnr[step], "ssim": ssim.get(step)} for step in sorted(psnr)]
    return rows


def plateau(curves: Sequence[dict[str, Any]]) -> list[str]:
    """Per variant, how much held-out PSNR its runs still gained between their last two
    evaluations (mean and 95% interval over seeds): near zero where training has plateaued."""
    gains: dict[str, list[float]] = {}
    span: dict[str, tuple[int, int]] = {}
    for run in dict.fromkeys(r["run"] for r in curves):
        points = [r for r in curves if r["run"] == run]
        if len(points) >= 2:
            gains.setdefault(points[-1]["variant"], []).append(points[-1]["psnr"] - points[-2]["psnr"])
            span[points[-1]["variant"]] = (points[-2]["step"], points[-1]["step"])
    lines = []
    for variant, values in gains.items():
        s = stats.summary(values)
        interval = "" if s["n"] < 2 else f" (95% interval {s['ci_low']:+.2f} to {s['ci_high']:+.2f})"
        lines.append(f"{variant}: held-out PSNR {s['mean']:+.2f} dB from step {span[variant][0]} "
                     f"to {span[variant][1]}, mean of {s['n']} run(s){interval}")
    return lines


def plot_curves(path: epath.Path, curves: Sequence[dict[str, Any]],
                marks: dict[str, int] | None = None,
                zeros: dict[str, float] | None = None) -> epath.Path:
    """Held-out PSNR and SSIM over training steps, a line per run, coloured by variant;
    ``marks`` (label -> step) drawn as dotted verticals, e.g. where the GAN starts, and
    the all-zeros prediction's ``zeros["psnr"]`` and ``["ssim"]`` as dashed levels."""
    import matplotlib  # noqa: PLC0415 (pyplot takes 0.9-1.1 s to import: the plot alone)
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415 (0.9-1.1 s: the plot alone)

    variants = list(dict.fromkeys(r["variant"] for r in curves))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for ax, (key, label) in zip(axes, (("psnr", "held-out PSNR (dB)"), ("ssim", "held-out SSIM"))):
        labelled = set()
        for run in dict.fromkeys(r["run"] for r in curves):
            points = [r for r in curves if r["run"] == run and r.get(key) is not None]
            if not points:
                continue
            variant = points[0]["variant"]
            ax.plot([r["step"] for r in points], [r[key] for r in points], "o-", ms=3,
                    color=f"C{variants.index(variant)}", alpha=0.8,
                    label=None if variant in labelled else variant)
            labelled.add(variant)
        for j, (what, step) in enumerate((marks or {}).items()):
            ax.axvline(step, color="k", ls=":", lw=0.8, label=what if j == 0 else None)
        if zeros and key in zeros:
            ax.axhline(zeros[key], color="0.5", ls="--", lw=0.8, label="all zeros")
        ax.set_xlabel("training step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save_png(fig, path)


def markdown_table(rows: dict[str, dict[str, Any]], keys: Sequence[str]) -> str:
    lines = ["| run | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, row in rows.items():
        cells = [f"{row[k]:.4f}" if isinstance(row.get(k), float) else str(row.get(k, "-"))
                 for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(results: dict[str, dict[str, Any]], workdir: epath.Path,
            weights: str = "ema", run_dirs: dict[str, epath.Path] | None = None) -> str:
    """Write compare.csv and compare.md for evaluated runs; return the markdown. With
    ``run_dirs`` (name -> workdir) also their learning curves: compare_curves.csv and .png,
    and how much each variant still gained at its end (the plateau)."""
    rows = {name: _row(r, weights) for name, r in results.items()}
    keypoints = tuple(k for k in KEYPOINT_COLUMNS if any(r[k] is not None for r in rows.values()))
    keys = ("ssim", "psnr", "l1", "t_std", "tdiff_l1", *keypoints, "codebook_usage",
            "codebook_perplexity", "step")
    # The all-zeros prediction of the first run's split: the floor every run must clear;
    # on keypoint data the target heatmaps' own keypoint errors: the estimator's floor.
    first = next(iter(results.values()))
    zeros = {k: first["zeros"][k] for k in ("ssim", "psnr", "l1", "t_std", "tdiff_l1",
                                            *keypoints) if k in first["zeros"]}
    floors = {"(all zeros)": zeros}
    if keypoints and "target" in first:
        floors["(target heatmaps)"] = first["target"]
    # On data with random joint strengths, each pose exact but every strength its mean:
    # the share of the error, and of the temporal error, that is the strengths' noise
    # (left out where the runs' dataset is not on this machine).
    pose = None
    if run_dirs:
        first_dir = next(iter(run_dirs.values()))
        run_config = checkpointing.load_run_config(first_dir)
        if prepare.is_built(prepare.data_dir(run_config.data, first_dir),
                            prepare.dataset_name(run_config.data)):
            pose = evaluate.pose_reference(run_config, first_dir)
    if pose is not None:
        floors["(exact poses, mean strengths)"] = pose
    text = markdown_table({**rows, **floors}, keys)
    found = claims(rows)
    if found:
        text += "\n\n" + "\n".join(f"- {line}" for line in found)
    summary, paired = seed_summary(rows)
    several = any(r["seeds"] > 1 for r in summary)
    if several:
        text += ("\n\nOver seeds (mean and 95% interval; claims paired by seed):\n\n"
                 + markdown_table({r["variant"]: {k: f"{r[f'{k}_mean']:.4f} "
                                                  f"[{r[f'{k}_ci_low']:.4f}, {r[f'{k}_ci_high']:.4f}]"
                                                  for k in ("ssim", "psnr", "t_std", "tdiff_l1")
                                                  if f"{k}_mean" in r} | {"seeds": r["seeds"]}
                                   for r in summary}, ("ssim", "psnr", "t_std", "tdiff_l1", "seeds"))
                 + "\n\n" + "\n".join(f"- {line}" for line in paired))
    curves = learning_curves(run_dirs, weights) if run_dirs else []
    if any(r["step"] != curves[0]["step"] for r in curves):
        text += ("\n\nThe end of training (compare_curves.png):\n\n"
                 + "\n".join(f"- {line}" for line in plateau(curves)))
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        write_csv(workdir / "compare.csv", [{"run": n, **r} for n, r in rows.items()])
        if several:
            write_csv(workdir / "compare_summary.csv", summary)
        (workdir / "compare.md").write_text(text + "\n")
        if curves:
            write_csv(workdir / "compare_curves.csv", curves)
            starts = [loss.disc_start for loss in (checkpointing.load_run_config(d).loss
                                                   for d in run_dirs.values())
                      if loss.adversarial_weight > 0]
            marks = {"discriminator on": int(starts[0])} if starts else {}
            plot_curves(workdir / "compare_curves.png", curves, marks, zeros)
    return text


def _export_once(tokenizer: Any, out_dir: epath.Path, workdir: epath.Path,
                 source: tuple[str, str], splits: Sequence[str]) -> epath.Path:
    """The version folder of ``source``'s export under ``out_dir``, exported unless done
    by this tokenizer (``tokenize.export_key``: checkpoint step, weights, config digest)
    from this dataset; an export by another is removed and made again."""

    exports = paths.as_path(out_dir) / tokenize.TOKENS_NAME / source[1].split("/", 1)[1]
    done = sorted(exports.glob(f"*/{tokenize.CODEBOOK_FILE}"))
    if done:
        if probe.TokenExport.load(done[0].parent).key == tokenize.export_key(tokenizer, *source):
            return done[0].parent
        logging.info("%s holds tokens of another tokenizer or dataset: exporting again", exports)
        if jax.process_index() == 0:
            exports.rmtree()
    builder = tokenize.export(tokenizer, splits, out_dir, workdir, source=source)
    return paths.as_path(builder.data_dir)


def probes(config: ml_collections.ConfigDict, workdir: epath.Path, *,
           tokenizer_dir: str | None = None, lift_options: str = "demo",
           real_root: str | pathlib.Path | None = None,
           probe_steps: int | None = None, lift_steps: int | None = None) -> list[dict[str, Any]]:
    """The downstream chain (module docstring); every stage is skipped when its results
    are already in ``workdir`` and came from the same tokenizer (exports, heads) or config
    (lifters). Returns the rows of probes.csv."""
    data_config = shared_data(config, workdir)
    source = prepare.prepare_dataset(data_config.data, workdir)
    if tokenizer_dir is None:
        run_all({"tokenizer": data_config}, workdir)
        tokenizer_dir = str(workdir / "tokenizer")
    trained = tokenize.Tokenizer.from_workdir(tokenizer_dir)
    splits = (probe.TRAIN, probe.HELD_OUT)
    tokens = _export_once(trained, workdir / "tokens", workdir, source, splits)
    control = _export_once(tokenize.Tokenizer.from_workdir(tokenizer_dir, "init"),
                           workdir / "tokens_init", workdir, source, splits)
    rows: list[dict[str, Any]] = []
    lifters = {}
    for kind in ("dstformer", "mlp"):
        c = lift.default_config(",".join(filter(None, [lift_options, kind == "mlp" and "mlp"])))
        c.data = data_config.data
        c.train.num_steps = lift_steps or c.train.num_steps
        lifters[kind] = workdir / f"lift_{kind}"
        found = lift.train_and_evaluate(c, lifters[kind])
        rows.append({"task": "lifting", "input": f"{kind} from GT 2D",
                     **{k: found[k] for k in ("mpjpe", "p_mpjpe", "n_mpjpe", "velocity_error")},
                     "clips": found["examples"]})
    probe_config = probe.default_config()
    probe_config.train.num_steps = probe_steps or probe_config.train.num_steps
    for task in probe.TASKS:
        rows += probe.run(task, tokens, workdir / "probes", control_tokens=control,
                          lifter=lifters["dstformer"], config=probe_config)
    if real_root and pathlib.Path(real_root).is_dir():
        rows += _sim_to_real(data_config, workdir, pathlib.Path(real_root), trained, tokens,
                             lifters, probe_config)
    if jax.process_index() == 0:
        write_csv(workdir / "probes.csv", rows)
        text = probes_markdown(rows)
        confusion = workdir / "probes" / probe.CONFUSION_FILE
        if "action" in probe.TASKS and confusion.exists():
            (workdir / CONFUSION_FILE).write_text(confusion.read_text())
            text += "\n\n" + probe.confusion_markdown(json.loads(confusion.read_text()))
        (workdir / "probes.md").write_text(text + "\n")
    return rows


def _sim_to_real(data_config: ml_collections.ConfigDict, workdir: epath.Path,
                 real_root: pathlib.Path, trained: Any, tokens: epath.Path,
                 lifters: dict[str, epath.Path], probe_config: ml_collections.ConfigDict
                 ) -> list[dict[str, Any]]:
    """The synthetic-trained pose head and lifters on real Panoptic windows: every split
    of ``real_root``, rendered as the tokenizer's data but with joint_req 0.7 (real frames
    miss a joint or two, so 0.9 leaves no window)."""
    real = ml_collections.ConfigDict(data_config.to_dict())
    real.data.manual_dir, real.data.synthetic, real.data.data_dir = str(real_root), False, ""
    real.data.synthetic_seed, real.data.synthetic_balanced_kinds = 0, False  # not synthetic
    real.data.joint_req = 0.7
    source = prepare.prepare_dataset(real.data, workdir / "real")
    split = next(iter(pipeline.open_dataset(*source).info.splits))
    real_tokens = probe.TokenExport.load(_export_once(trained, workdir / "real" / "tokens",
                                                      workdir, source, [split]))
    synthetic = probe.TokenExport.load(tokens)
    skeletons = real_tokens.skeletons(split)
    mode = real_tokens.metadata["mode"]
    targets = probe.pose_targets(skeletons, mode)
    head, variables = probe.train_head("pose", synthetic.inputs(probe.TRAIN),
                                       probe.pose_targets(synthetic.skeletons(probe.TRAIN), mode),
                                       workdir / "probes" / "tokens", probe_config,
                                       probe.export_num_classes(synthetic))
    rows = [{"task": "sim-to-real", "input": "pose probe on tokens",
             **probe.evaluate("pose", head, variables, real_tokens.inputs(split), targets),
             "clips": len(targets["weight"])}]
    examples = lift.lifting_examples(skeletons)
    for kind, lifter_dir in lifters.items():
        model, lifter_vars, _ = lift.restore(lifter_dir)
        pred = lift.predict(model, lifter_vars, examples["keypoints"], examples["present"])
        errors = pose3d.errors_mm(pred, examples["target"], examples["weight"], lift.UNIT_MM)
        rows.append({"task": "sim-to-real", "input": f"{kind} lifting from GT 2D",
                     **{k: errors[k] for k in ("mpjpe", "p_mpjpe")}, "clips": len(pred)})
    return rows


# The columns of each table of probes.md, and the files of the chain and its summary.
PROBE_COLUMNS = {**probe.METRICS, "lifting": ("mpjpe", "p_mpjpe", "n_mpjpe", "velocity_error"),
                 "sim-to-real": ("mpjpe", "p_mpjpe")}
CONFUSION_FILE = "probes_confusion.json"  # the action heads' held-out confusion matrices
PROBES_KEY_FILE = "probes_key.json"  # what a finished chain ran with: a seed done is skipped
SUMMARY_FILES = ("probes_summary.csv", "probes_summary.md", "probes_summary_confusion.json",
                 "probes_summary.png")


def probes_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """One table per task, columns as each task reports."""
    tasks = dict.fromkeys(r["task"] for r in rows)
    return "\n\n".join(probe.markdown([r for r in rows if r["task"] == t], PROBE_COLUMNS[t])
                       for t in tasks)


def missing_kinds(source: tuple[str, str]) -> list[str]:
    """The label names of clips in the training split of dataset ``source`` (data_dir,
    name) that no held-out clip has."""
    names = pipeline.open_dataset(*source).info.features["label"].names
    found = {split: set(pipeline.read_skeletons(*source, split)["label"].tolist())
             for split in (probe.TRAIN, probe.HELD_OUT)}
    return [names[k] for k in sorted(found[probe.TRAIN] - found[probe.HELD_OUT])]


def check_kinds(source: tuple[str, str]) -> None:
    """Stop, in one line, where the held-out split lacks a kind the training split has: no
    head could be scored on it, and the action rows would rest on the kinds left."""
    missing = missing_kinds(source)
    if missing:
        raise errors.ConfigError(
            f"{source[0]}/{source[1]}: the held-out split ({probe.HELD_OUT}) has no clip of "
            f"{', '.join(missing)}, which the {probe.TRAIN} split has: deal the synthetic "
            "motion kinds per split (--balanced_kinds, data.synthetic_balanced_kinds=True) or "
            "hold out more bodies (--synthetic_sequences, --synthetic_people)")


def probe_seeds(config: ml_collections.ConfigDict, workdir: epath.Path, data_seeds: int = 1, *,
                tokenizer_dir: str | None = None, lift_options: str = "demo",
                real_root: str | pathlib.Path | None = None, probe_steps: int | None = None,
                lift_steps: int | None = None) -> str:
    """``probes`` once per data seed, each on the root of ``data.synthetic_seed`` + i in
    ``<workdir>/data_seed<i>`` (one seed: in ``workdir`` itself), after ``check_kinds``;
    with several, ``write_probes_summary``. A seed whose chain finished with the same
    config and options (``PROBES_KEY_FILE``; not with ``tokenizer_dir``, which may have
    trained on since) is skipped. Returns the markdown written last: probes.md, or the
    summary's."""
    if data_seeds < 1:
        raise errors.ConfigError(f"--data_seeds={data_seeds} must be >= 1")
    if data_seeds > 1 and (config.data.manual_dir or not config.data.synthetic):
        raise errors.ConfigError(
            f"--data_seeds={data_seeds} draws {data_seeds} synthetic roots, but the config "
            "reads its data (data.manual_dir or data.synthetic=False): set "
            "--config.data.synthetic=True and no manual_dir")
    seed_dirs = []
    for i in range(data_seeds):
        c = ml_collections.ConfigDict(config.to_dict())
        c.data.synthetic_seed = config.data.synthetic_seed + i
        seed_dir = workdir / f"data_seed{i}" if data_seeds > 1 else workdir
        seed_dirs.append(seed_dir)
        key = {"config": checkpointing.config_digest(c), "tables": probe.TABLES_VERSION,
               "lift_options": lift_options,
               "probe_steps": probe_steps, "lift_steps": lift_steps,
               "real": str(real_root) if real_root else None}
        done = seed_dir / PROBES_KEY_FILE
        if (tokenizer_dir is None and done.exists() and json.loads(done.read_text()) == key
                and (seed_dir / "probes.csv").exists() and (seed_dir / "probes.md").exists()):
            logging.info("probes: %s done with this config, not run again", seed_dir)
            continue
        check_kinds(prepare.prepare_dataset(c.data, seed_dir))
        probes(c, seed_dir, tokenizer_dir=tokenizer_dir, lift_options=lift_options,
               real_root=real_root, probe_steps=probe_steps, lift_steps=lift_steps)
        if jax.process_index() == 0:
            done.write_text(json.dumps(key) + "\n")
    if data_seeds == 1:
        return (workdir / "probes.md").read_text().strip()
    return write_probes_summary(workdir, seed_dirs)


def probes_summary(seed_dirs: Sequence[epath.Path]) -> list[dict[str, Any]]:
    """Per (task, input) row of the seeds' probes.csv (in the order first met): the seeds
    that have it, each metric's mean, std and 95% t-interval over them (``stats.summary``;
    a metric a row leaves empty is left out) and its held-out clips summed over them."""
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for seed_dir in seed_dirs:
        path = paths.as_path(seed_dir) / "probes.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run that seed's chain first")
        for r in csv.DictReader(io.StringIO(path.read_text())):
            groups.setdefault((r["task"], r["input"]), []).append(r)
    out = []
    for (task, name), found in groups.items():
        row: dict[str, Any] = {"task": task, "input": name, "seeds": len(found),
                               "clips": sum(int(float(r["clips"])) for r in found)}
        for key in dict.fromkeys(k for r in found for k in r if k not in row):
            values = [float(r[key]) for r in found if r.get(key) not in (None, "")]
            if not values:
                continue
            s = stats.summary(values)
            row.update({f"{key}_{part}": s[part] for part in ("mean", "std", "ci_low", "ci_high")})
        out.append(row)
    return out


def summed_confusion(found: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The confusion matrices of several chains (``CONFUSION_FILE`` contents) summed per
    input: the held-out clips of every seed in one matrix."""
    classes = found[0]["classes"]
    if any(f["classes"] != classes for f in found):
        raise ValueError("the seeds' confusion matrices are over different classes")
    inputs: dict[str, np.ndarray] = {}
    for f in found:
        for name, counts in f["inputs"].items():
            inputs[name] = inputs.get(name, 0) + np.asarray(counts, np.int64)
    return {"classes": classes, "inputs": {k: v.tolist() for k, v in inputs.items()}}


def _mean_and_interval(row: dict[str, Any], key: str, fmt: str) -> str:
    """``mean [low, high]`` of a summary row's metric (the mean alone from one seed)."""
    if f"{key}_mean" not in row:
        return "-"
    mean, low, high = (row[f"{key}_{part}"] for part in ("mean", "ci_low", "ci_high"))
    return fmt.format(mean) + ("" if math.isnan(low) else
                               f" [{fmt.format(low)}, {fmt.format(high)}]")


def summary_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """One table per task: each metric's mean over the seeds and its 95% interval."""
    tables = []
    for task in dict.fromkeys(r["task"] for r in rows):
        keys = PROBE_COLUMNS[task]
        fmt = "{:.3f}" if task in ("action", "retrieval") else "{:.1f}"
        lines = [f"| {task} | " + " | ".join(keys) + " | seeds | clips (all seeds) |",
                 "|---" * (len(keys) + 3) + "|"]
        lines += [f"| {r['input']} | " + " | ".join(_mean_and_interval(r, k, fmt) for k in keys)
                  + f" | {r['seeds']} | {r['clips']} |" for r in rows if r["task"] == task]
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


# The action probe's contrasts, each paired by data seed: (what, input, compared input,
# "difference" or "ratio"); the targets for tokens are beside them in the text.
CONTRASTS = (("trained over initialised tokenizer", "tokens", "random tokenizer", "difference"),
             ("tokens against DSTformer features", "tokens", "DSTformer features", "ratio"),
             ("tokens, ordered over time-shuffled", "tokens", "tokens, time-shuffled",
              "difference"),
             ("DSTformer features, ordered over time-shuffled", "DSTformer features",
              "DSTformer features, time-shuffled", "difference"))
ORDER_PAIRS = (("tokens", "tokens, time-shuffled"),
               ("DSTformer features", "DSTformer features, time-shuffled"))


def _interval(s: dict[str, float], fmt: str) -> str:
    return fmt.format(s["mean"]) + ("" if math.isnan(s["ci_low"]) else
                                    f" [{fmt.format(s['ci_low'])}, {fmt.format(s['ci_high'])}]")


def probe_contrasts(seed_dirs: Sequence[epath.Path]) -> str:
    """The action probe's CONTRASTS in top-1 and, per motion kind, the recall that
    time-shuffling takes (ORDER_PAIRS), each paired by seed with its 95% interval: what
    the tokens add over an untrained tokenizer, how near they come to skeleton features,
    and whether the order of their steps matters. Empty where no seed has the rows."""
    top1, confusions = [], []
    for seed_dir in map(paths.as_path, seed_dirs):
        rows = csv.DictReader(io.StringIO((seed_dir / "probes.csv").read_text()))
        top1.append({r["input"]: float(r["top1"]) for r in rows if r["task"] == "action"})
        if (seed_dir / CONFUSION_FILE).exists():
            confusions.append(json.loads((seed_dir / CONFUSION_FILE).read_text()))
    lines = []
    for what, a, b, kind in CONTRASTS:
        pairs = [(t[a], t[b]) for t in top1 if a in t and b in t]
        if pairs:
            values = [x - y if kind == "difference" else x / y for x, y in pairs]
            fmt = "{:+.3f}" if kind == "difference" else "{:.2f}"
            lines.append(f"- {what}, action top-1 {kind}: "
                         f"{_interval(stats.summary(values), fmt)} over {len(values)} seed(s)")
    table = []
    for a, b in ORDER_PAIRS:
        found = [{k: np.asarray(v) for k, v in c["inputs"].items()} for c in confusions
                 if a in c["inputs"] and b in c["inputs"]]
        if not found:
            continue
        classes = confusions[0]["classes"]
        kinds = [k for k in range(len(classes)) if any(m[a][k].sum() for m in found)]
        if not table:
            table = ["| recall, ordered minus time-shuffled | "
                     + " | ".join(classes[k] for k in kinds) + " |",
                     "|---" * (len(kinds) + 1) + "|"]
        cells = []
        for k in kinds:  # the seeds whose held-out split has clips of kind k
            gaps = [(m[a][k, k] - m[b][k, k]) / m[a][k].sum() for m in found if m[a][k].sum()]
            cells.append(_interval(stats.summary(gaps), "{:+.2f}"))
        table.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + ("\n\n" + "\n".join(table) if table else "")


def plot_probes(path: epath.Path, seed_dirs: Sequence[epath.Path],
                rows: Sequence[dict[str, Any]]) -> epath.Path:
    """A panel per task (its first metric): each input's mean over the seeds with its 95%
    interval as a bar, and every seed's value as a dot, so a reader sees the spread that
    the interval summarises."""
    import matplotlib  # noqa: PLC0415 (pyplot takes 0.9-1.1 s to import: the plot alone)
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415 (0.9-1.1 s: the plot alone)

    per_seed: dict[tuple[str, str], list[dict[str, str]]] = {}
    for seed_dir in map(paths.as_path, seed_dirs):
        for r in csv.DictReader(io.StringIO((seed_dir / "probes.csv").read_text())):
            per_seed.setdefault((r["task"], r["input"]), []).append(r)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.2),
                             constrained_layout=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        key = PROBE_COLUMNS[task][0]
        mine = [r for r in rows if r["task"] == task and f"{key}_mean" in r]
        for y, r in enumerate(mine):
            low, high = r[f"{key}_ci_low"], r[f"{key}_ci_high"]
            if not math.isnan(low):
                ax.plot([low, high], [y, y], color="C0", lw=4, alpha=0.35, solid_capstyle="butt")
            ax.plot(r[f"{key}_mean"], y, "|", color="C0", ms=12, mew=2)
            seeds = [float(s[key]) for s in per_seed[task, r["input"]] if s.get(key)]
            ax.plot(seeds, [y] * len(seeds), "o", color="k", ms=3)
        ax.set_yticks(range(len(mine)), [r["input"] for r in mine], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(key)
        ax.set_title(task)
        ax.grid(alpha=0.3, axis="x")
    return _save_png(fig, path)


def write_probes_summary(workdir: epath.Path, seed_dirs: Sequence[epath.Path]) -> str:
    """``SUMMARY_FILES`` in ``workdir``: ``probes_summary`` as CSV and markdown (mean and
    95% interval per metric), the seeds' confusion matrices summed (read out per class in
    the markdown) and ``plot_probes``. Returns the markdown."""
    rows = probes_summary(seed_dirs)
    text = (f"Over {len(seed_dirs)} data seeds (mean [95% interval]):\n\n"
            + summary_markdown(rows))
    found = [json.loads((paths.as_path(d) / CONFUSION_FILE).read_text()) for d in seed_dirs
             if (paths.as_path(d) / CONFUSION_FILE).exists()]
    confusion = summed_confusion(found) if found else None
    contrasts = probe_contrasts(seed_dirs)
    if contrasts:
        text += "\n\nAction, paired by seed (mean [95% interval]):\n\n" + contrasts
    if confusion:
        text += (f"\n\nAction, held-out clips of {len(found)} seeds summed:\n\n"
                 + probe.confusion_markdown(confusion))
    if jax.process_index() == 0:
        csv_file, md_file, json_file, png_file = SUMMARY_FILES
        write_csv(workdir / csv_file, rows)
        (workdir / md_file).write_text(text + "\n")
        if confusion:
            (workdir / json_file).write_text(json.dumps(confusion) + "\n")
        plot_probes(workdir / png_file, seed_dirs, rows)
    return text


def _read_runs(dirs: Sequence[str]) -> dict[str, dict[str, Any]]:
    results = {}
    for d in dirs:
        path = paths.as_path(d) / "eval_metrics.json"
        if not path.exists():
            raise app.UsageError(f"{path} not found: train and evaluate that run first")
        results[paths.as_path(d).name] = json.loads(path.read_text())
    return results


@errors.one_line_failures
def main(argv: list[str]) -> None:
    checkpointing.quiet_orbax_logs()
    if len(argv) != 2 or argv[1] not in ("sweep", "compare", "probes"):
        raise app.UsageError("usage: python -m pose_vq.analysis {sweep|compare|probes} "
                             "--workdir=DIR ...")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    workdir = paths.as_path(FLAGS.workdir)
    config = FLAGS.config
    if config is None and not (argv[1] == "compare" and FLAGS.runs):
        raise app.UsageError("--config is required, e.g. --config=configs/demo.py")
    if config is not None:
        config_lib.validate(config)
        runtime.configure_jax(config)  # before any JAX backend use
    if argv[1] == "sweep":
        try:
            sizes = [int(k) for k in FLAGS.num_codes]
        except ValueError:
            raise app.UsageError(f"--num_codes must be integers: {FLAGS.num_codes}") from None
        unknown = sorted(set(FLAGS.kinds) - set(ARMS))
        if unknown:
            raise app.UsageError(f"--kinds: unknown {', '.join(unknown)}; choose from "
                                 f"{', '.join(ARMS)}")
        rows = sweep(config, workdir, FLAGS.modes, sizes, FLAGS.weights, FLAGS.kinds,
                     FLAGS.seeds, paths.as_path(FLAGS.output_dir) if FLAGS.output_dir else None,
                     FLAGS.close_db)
        print(markdown_table({f"{r['mode']} {r['arm']} K={r['vocabulary']} seed {r['seed']}": r
                              for r in rows},
                             ("ssim", "psnr", "l1", "t_std", "codebook_usage",
                              "codebook_perplexity")))
        return
    if argv[1] == "probes":
        c = ml_collections.ConfigDict(config.to_dict())
        c.data.synthetic_sequences = FLAGS.synthetic_sequences or c.data.synthetic_sequences
        c.data.synthetic_people = FLAGS.synthetic_people or c.data.synthetic_people
        # Only a root written here has its kinds dealt: a real one's data are its own.
        c.data.synthetic_balanced_kinds = (FLAGS.balanced_kinds and c.data.synthetic
                                           and not c.data.manual_dir)
        print(probe_seeds(config_lib.validate(c), workdir, FLAGS.data_seeds,
                          tokenizer_dir=FLAGS.tokenizer, lift_options=FLAGS.lift_options,
                          real_root=FLAGS.real or None, probe_steps=FLAGS.probe_steps,
                          lift_steps=FLAGS.lift_steps))
        return
    if FLAGS.runs:
        results = _read_runs(FLAGS.runs)
        run_dirs = {paths.as_path(d).name: paths.as_path(d) for d in FLAGS.runs}
    else:
        runs = {}
        for seed in range(FLAGS.seeds):  # seed by seed: a study cut short has whole seeds
            for v in FLAGS.variants:
                c = config_lib.apply_variant(config, v)
                c.seed = config.seed + seed
                runs[f"{v}_s{seed}" if seed else v] = c
        run_dirs = {name: workdir / name for name in runs}
        results = run_all(runs, workdir, report=lambda r: compare(
            r, workdir, FLAGS.weights, {n: run_dirs[n] for n in r}))
    print(compare(results, workdir, FLAGS.weights, run_dirs))


def define_flags() -> None:
    """The command's flags (defined only when it runs, so importing this module for its
    functions never clashes with another command's flags)."""
    config_flags.DEFINE_config_file("config", None, "Base config (configs/*.py[:arg]).",
                                    lock_config=False)
    flags.DEFINE_string("workdir", None, "Directory for the runs, the table and the plot.")
    flags.DEFINE_list("modes", ["m2d", "3d"], "sweep: data modes, one line each in the plot.")
    flags.DEFINE_list("num_codes", ["64", "128", "256", "512", "1024", "2048"],
                      "sweep: vocabulary sizes.")
    flags.DEFINE_list("kinds", ["config"], "sweep: quantizer arms (analysis.ARMS: config, ema, "
                      "ema_restart, learned, simvq, fsq, lfq, rvq2, rvq4).")
    flags.DEFINE_integer("seeds", 1, "sweep, compare: training seeds per point or variant "
                         "(config.seed + 0..N-1; runs <name>_s<seed> beyond the first).")
    flags.DEFINE_float("close_db", None, "sweep: run seeds after the first only for the arms "
                       "within this many dB of their vocabulary's best (and ema_restart).")
    flags.DEFINE_string("output_dir", None, "sweep: where the CSVs and plot go (default "
                        "--workdir), e.g. docs/.")
    flags.DEFINE_list("variants", list(config_lib.VARIANTS), "compare: variants of --config to "
                      "train (pose_vq.config.VARIANTS).")
    flags.DEFINE_list("runs", [], "compare: trained workdirs to compare instead of --variants.")
    flags.DEFINE_enum("weights", "ema", ["ema", "raw"], "Which generator weights' metrics to report.")
    flags.DEFINE_string("tokenizer", None, "probes: a trained tokenizer workdir to use instead of "
                        "training --config (its mode and clip shape must be the config's).")
    flags.DEFINE_integer("synthetic_sequences", 16, "probes: synthetic sequences (a quarter "
                         "held out); the demo's 8 hold out 4 bodies, too few for 7 classes.")
    flags.DEFINE_integer("synthetic_people", 3, "probes: people per synthetic sequence.")
    flags.DEFINE_bool("balanced_kinds", True, "probes: deal the synthetic bodies' motion kinds "
                      "per split so every split of >= 7 bodies has every kind "
                      "(data.synthetic_balanced_kinds; --nobalanced_kinds: each body draws its "
                      "own, as the README's first table's data did).")
    flags.DEFINE_integer("data_seeds", 1, "probes: run the chain on N synthetic roots "
                         "(data.synthetic_seed + 0..N-1) in <workdir>/data_seed<i> and write "
                         "probes_summary.csv/.md (mean, spread, 95% interval over them); "
                         "1: the chain in --workdir itself.")
    flags.DEFINE_string("lift_options", "demo", "probes: lifting's options (lift.default_config) for "
                        "both lifters (the MLP baseline adds 'mlp').")
    flags.DEFINE_string("real", None, "probes: a real Panoptic root (e.g. a download of "
                        "160906_band1) for the sim-to-real rows; none without it.")
    flags.DEFINE_integer("probe_steps", None, "probes: training steps per probe head.")
    flags.DEFINE_integer("lift_steps", None, "probes: training steps per lifter.")
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
