"""The paper's analyses, one command each: a vocabulary sweep, a comparison of runs, and
what the tokens are worth downstream.

    python -m pose_vq.analysis sweep --config=configs/demo.py --workdir=runs/sweep \\
        --modes=m2d,3d --num_codes=64,128,256,512,1024
    python -m pose_vq.analysis compare --config=configs/demo.py --workdir=runs/baselines \\
        --variants=vqgan,vqvae,dvae
    python -m pose_vq.analysis compare --runs=runs/a,runs/b --workdir=runs/ab
    python -m pose_vq.analysis probes --config=configs/demo.py --workdir=runs/probes

``sweep`` trains and evaluates the config once per (mode, vocabulary size) in
``<workdir>/<mode>_k<K>`` and writes ``sweep.csv`` and ``sweep.png`` (SSIM, PSNR, L1,
T-Std, codebook usage and perplexity against the vocabulary, one line per mode: the
paper's "2D needs 128 codes, 3D needs 1024"). ``compare`` trains the config as each of
``pose_vq.config.VARIANTS`` (or reads already trained ``--runs``) and writes
``compare.csv`` and ``compare.md``: one row per run and the paper's two claims, SSIM over
the dVAE and T-Std against the non-adversarial VQ-VAE, as measured here. ``probes`` runs
the downstream chain: it trains the tokenizer (or takes ``--tokenizer=RUN``), exports
tokens of the trained model and of the model at initialisation, trains the DSTformer and
per-frame MLP lifters (``pose_vq.downstream.lift.default_config`` with ``--lift_options``, default
``demo``), runs the pose, action and retrieval probes (pose_vq.downstream.probe) and scores
the pose head and both lifters on the real sample (``--real``, a Panoptic root) as a
sim-to-real check; it writes ``probes.csv`` and ``probes.md``.

Runs share one dataset (built once under the workdir when the config builds its own).
A run whose ``eval_metrics.json`` is at its last step is not trained again, and an
interrupted run resumes from its checkpoint, so rerunning a command only does what is left;
a run of another config in its folder stops the command. ``probes`` reuses a token export
or a probe head only where it came from the same tokenizer checkpoint (step and config
digest, ``pose_vq.tokenize.export_key``) and a lifter only where its config (its dataset
included) is the same; otherwise it removes it and makes it again.
"""

from __future__ import annotations

import csv
import json
import pathlib
import shutil
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from pose_vq import checkpointing, errors, runtime, tokenize, train
from pose_vq import config as config_lib
from pose_vq.data import pipeline, prepare
from pose_vq.downstream import lift, pose3d, probe

FLAGS = flags.FLAGS

# tdiff_l1: heatmap intensity per frame; kp_*: keypoint data only (empty otherwise),
# kp_error in px, kp_vel_* in px/frame, kp_acc_* in px/frame^2 (pose_vq.metrics).
KEYPOINT_COLUMNS = ("kp_error", "kp_missed", "kp_vel_error", "kp_vel_target", "kp_vel_still",
                    "kp_acc_error", "kp_acc_target", "kp_acc_still")
COLUMNS = ("ssim", "psnr", "l1", "t_std", "tdiff_l1", "ssim_tstd", "psnr_tstd", "l1_tstd",
           "q_loss", "codebook_usage", "codebook_perplexity", *KEYPOINT_COLUMNS)
PLOTTED = (("ssim", "SSIM"), ("psnr", "PSNR (dB)"), ("l1", "L1"), ("t_std", "T-Std"),
           ("codebook_usage", "codebook usage"), ("codebook_perplexity", "token perplexity"))


def _finished(run_dir: pathlib.Path, config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """The run's final evaluation, or None when it has not reached the config's last step.
    A run of another config in ``run_dir`` is an error: it is neither reused nor resumed."""
    stored = run_dir / checkpointing.CONFIG_FILE
    if stored.exists() and (checkpointing.config_digest(json.loads(stored.read_text()))
                            != checkpointing.config_digest(config)):
        raise SystemExit(f"{run_dir} holds a run of another config ({stored} differs from "
                         "the one asked for): delete it or choose another --workdir")
    path = run_dir / "eval_metrics.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    return results if results.get("step") == config.train.num_steps else None


def shared_data(config: ml_collections.ConfigDict, workdir: pathlib.Path
                ) -> ml_collections.ConfigDict:
    """A copy of ``config`` that reads its dataset from under ``workdir`` (built there
    once, synthetic root included, when the config builds its own)."""
    c = ml_collections.ConfigDict(config.to_dict())
    data_dir, _ = prepare.prepare_dataset(c.data, workdir)
    c.data.data_dir, c.data.manual_dir, c.data.synthetic = data_dir, "", False
    return c


def run_all(runs: dict[str, ml_collections.ConfigDict], workdir: pathlib.Path
            ) -> dict[str, dict[str, Any]]:
    """Train and evaluate each config in ``workdir/<name>`` unless already done there (with
    the same config: a run of another config there stops the command)."""
    results = {}
    for name, config in runs.items():
        run_dir = workdir / name
        config = shared_data(config, workdir)
        done = _finished(run_dir, config)
        if done is None:
            logging.info("run %s: training in %s", name, run_dir)
            train.train_and_evaluate(config, run_dir)
            done = _finished(run_dir, config)
            if done is None:  # stopped early (preemption): rerun the command to go on
                raise SystemExit(f"run {name} stopped before step {config.train.num_steps}; "
                                 "rerun the same command to resume it")
        else:
            logging.info("run %s: done (step %d), not trained again", name, done["step"])
        results[name] = done
    return results


def _row(results: dict[str, Any], weights: str) -> dict[str, Any]:
    row = {k: results[weights].get(k) for k in COLUMNS}
    row.update({f"zeros_{k}": results["zeros"][k] for k in ("ssim", "psnr", "l1")})
    row.update(step=results["step"], split=results["split"], num_clips=results["num_clips"])
    return row


def write_csv(path: pathlib.Path, rows: Sequence[dict[str, Any]]) -> pathlib.Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_sweep(path: pathlib.Path, rows: Sequence[dict[str, Any]]) -> pathlib.Path:
    """One panel per metric against the vocabulary (log scale), one line per mode; the
    all-zeros prediction's SSIM / PSNR / L1 dashed in the mode's colour."""
    import matplotlib  # noqa: PLC0415 (pyplot takes 0.9-1.1 s to import: the sweep's plot alone)
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415 (0.9-1.1 s: the sweep's plot alone)

    modes = list(dict.fromkeys(r["mode"] for r in rows))
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), constrained_layout=True)
    for ax, (key, label) in zip(axes.ravel(), PLOTTED):
        for i, mode in enumerate(modes):
            mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["num_codes"])
            sizes = [r["num_codes"] for r in mine]
            ax.plot(sizes, [r[key] for r in mine], "o-", color=f"C{i}", label=mode)
            if f"zeros_{key}" in mine[0]:
                ax.axhline(mine[0][f"zeros_{key}"], color=f"C{i}", ls="--", lw=0.8,
                           label=f"{mode}: all-zeros")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("vocabulary size")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def sweep(config: ml_collections.ConfigDict, workdir: pathlib.Path, modes: Sequence[str],
          sizes: Sequence[int], weights: str = "ema") -> list[dict[str, Any]]:
    """Train ``config`` at each (mode, vocabulary size); write sweep.csv and sweep.png."""
    runs = {}
    for mode in modes:
        for k in sizes:
            c = ml_collections.ConfigDict(config.to_dict())
            c.data.mode, c.quantizer.num_codes = mode, int(k)
            runs[f"{mode}_k{k}"] = config_lib.validate(c)
    results = run_all(runs, workdir)
    rows = [{"mode": runs[n].data.mode, "num_codes": runs[n].quantizer.num_codes,
             **_row(r, weights)} for n, r in results.items()]
    if jax.process_index() == 0:
        write_csv(workdir / "sweep.csv", rows)
        plot_sweep(workdir / "sweep.png", rows)
        logging.info("wrote %s and %s", workdir / "sweep.csv", workdir / "sweep.png")
    return rows


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


def markdown_table(rows: dict[str, dict[str, Any]], keys: Sequence[str]) -> str:
    lines = ["| run | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, row in rows.items():
        cells = [f"{row[k]:.4f}" if isinstance(row.get(k), float) else str(row.get(k, "-"))
                 for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(results: dict[str, dict[str, Any]], workdir: pathlib.Path,
            weights: str = "ema") -> str:
    """Write compare.csv and compare.md for evaluated runs; return the markdown."""
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
    text = markdown_table({**rows, **floors}, keys)
    found = claims(rows)
    if found:
        text += "\n\n" + "\n".join(f"- {line}" for line in found)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        write_csv(workdir / "compare.csv", [{"run": n, **r} for n, r in rows.items()])
        (workdir / "compare.md").write_text(text + "\n")
    return text


def _export_once(tokenizer: Any, out_dir: pathlib.Path, workdir: pathlib.Path,
                 source: tuple[str, str], splits: Sequence[str]) -> pathlib.Path:
    """The version folder of ``source``'s export under ``out_dir``, exported unless done
    by this tokenizer (``tokenize.export_key``: checkpoint step, weights, config digest)
    from this dataset; an export by another is removed and made again."""

    exports = out_dir / tokenize.TOKENS_NAME / source[1].split("/", 1)[1]
    done = sorted(exports.glob(f"*/{tokenize.CODEBOOK_FILE}"))
    if done:
        if probe.TokenExport.load(done[0].parent).key == tokenize.export_key(tokenizer, *source):
            return done[0].parent
        logging.info("%s holds tokens of another tokenizer or dataset: exporting again", exports)
        if jax.process_index() == 0:
            shutil.rmtree(exports)
    builder = tokenize.export(tokenizer, splits, out_dir, workdir, source=source)
    return pathlib.Path(builder.data_dir)


def probes(config: ml_collections.ConfigDict, workdir: pathlib.Path, *,
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
        (workdir / "probes.md").write_text(probes_markdown(rows) + "\n")
    return rows


def _sim_to_real(data_config: ml_collections.ConfigDict, workdir: pathlib.Path,
                 real_root: pathlib.Path, trained: Any, tokens: pathlib.Path,
                 lifters: dict[str, pathlib.Path], probe_config: ml_collections.ConfigDict
                 ) -> list[dict[str, Any]]:
    """The synthetic-trained pose head and lifters on real Panoptic windows: every split
    of ``real_root``, rendered as the tokenizer's data but with joint_req 0.7 (real frames
    miss a joint or two, so 0.9 leaves no window)."""
    real = ml_collections.ConfigDict(data_config.to_dict())
    real.data.manual_dir, real.data.synthetic, real.data.data_dir = str(real_root), False, ""
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


def probes_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """One table per task, columns as each task reports."""
    columns = {**probe.METRICS, "lifting": ("mpjpe", "p_mpjpe", "n_mpjpe", "velocity_error"),
               "sim-to-real": ("mpjpe", "p_mpjpe")}
    tasks = dict.fromkeys(r["task"] for r in rows)
    return "\n\n".join(probe.markdown([r for r in rows if r["task"] == t], columns[t])
                       for t in tasks)


def _read_runs(dirs: Sequence[str]) -> dict[str, dict[str, Any]]:
    results = {}
    for d in dirs:
        path = pathlib.Path(d) / "eval_metrics.json"
        if not path.exists():
            raise app.UsageError(f"{path} not found: train and evaluate that run first")
        results[pathlib.Path(d).name] = json.loads(path.read_text())
    return results


@errors.one_line_failures
def main(argv: list[str]) -> None:
    checkpointing.quiet_orbax_logs()
    if len(argv) != 2 or argv[1] not in ("sweep", "compare", "probes"):
        raise app.UsageError("usage: python -m pose_vq.analysis {sweep|compare|probes} "
                             "--workdir=DIR ...")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    workdir = pathlib.Path(FLAGS.workdir)
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
        rows = sweep(config, workdir, FLAGS.modes, sizes, FLAGS.weights)
        print(markdown_table({f"{r['mode']} K={r['num_codes']}": r for r in rows},
                             ("ssim", "psnr", "l1", "t_std", "codebook_usage",
                              "codebook_perplexity")))
        return
    if argv[1] == "probes":
        c = ml_collections.ConfigDict(config.to_dict())
        c.data.synthetic_sequences = FLAGS.synthetic_sequences or c.data.synthetic_sequences
        c.data.synthetic_people = FLAGS.synthetic_people or c.data.synthetic_people
        rows = probes(config_lib.validate(c), workdir, tokenizer_dir=FLAGS.tokenizer,
                      lift_options=FLAGS.lift_options, real_root=FLAGS.real or None,
                      probe_steps=FLAGS.probe_steps, lift_steps=FLAGS.lift_steps)
        print(probes_markdown(rows))
        return
    if FLAGS.runs:
        results = _read_runs(FLAGS.runs)
    else:
        runs = {v: config_lib.apply_variant(config, v) for v in FLAGS.variants}
        results = run_all(runs, workdir)
    print(compare(results, workdir, FLAGS.weights))


def define_flags() -> None:
    """The command's flags (defined only when it runs, so importing this module for its
    functions never clashes with another command's flags)."""
    config_flags.DEFINE_config_file("config", None, "Base config (configs/*.py[:arg]).",
                                    lock_config=False)
    flags.DEFINE_string("workdir", None, "Directory for the runs, the table and the plot.")
    flags.DEFINE_list("modes", ["m2d", "3d"], "sweep: data modes, one line each in the plot.")
    flags.DEFINE_list("num_codes", ["64", "128", "256", "512", "1024", "2048"],
                      "sweep: vocabulary sizes.")
    flags.DEFINE_list("variants", list(config_lib.VARIANTS), "compare: variants of --config to "
                      "train (pose_vq.config.VARIANTS).")
    flags.DEFINE_list("runs", [], "compare: trained workdirs to compare instead of --variants.")
    flags.DEFINE_enum("weights", "ema", ["ema", "raw"], "Which generator weights' metrics to report.")
    flags.DEFINE_string("tokenizer", None, "probes: a trained tokenizer workdir to use instead of "
                        "training --config (its mode and clip shape must be the config's).")
    flags.DEFINE_integer("synthetic_sequences", 16, "probes: synthetic sequences (a quarter "
                         "held out); the demo's 8 hold out 4 bodies, too few for 7 classes.")
    flags.DEFINE_integer("synthetic_people", 3, "probes: people per synthetic sequence.")
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
