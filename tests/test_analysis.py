"""The sweep and compare commands end to end at a tiny size: runs trained and evaluated,
the table, the plot and the paper's claims written, and finished runs not trained again."""

import csv
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pose_vq import analysis, evaluate, tokenize
from pose_vq import config as config_lib

pytestmark = pytest.mark.xdist_group("tiny_runs")  # one worker trains the fixture

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def config(tiny_runs):
    return tiny_runs[0]


def test_sweep_writes_csv_and_plot_for_2d_and_3d(tiny_runs, tmp_path):
    """The 3d run at the fixture's k is the fixture's vqgan run, copied in finished: it is
    read back, not trained again; the m2d run is trained."""
    config, workdir, results = tiny_runs
    k = config.quantizer.num_codes
    shutil.copytree(workdir / "vqgan", tmp_path / f"3d_k{k}")
    marker = tmp_path / f"3d_k{k}" / "eval_metrics.json"
    stamp = marker.stat().st_mtime_ns
    rows = analysis.sweep(config, tmp_path, ["m2d", "3d"], [k])
    assert marker.stat().st_mtime_ns == stamp
    with open(tmp_path / "sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["mode"], int(r["num_codes"])) for r in table] == [("m2d", k), ("3d", k)]
    for r in table:
        evaluated = json.loads((tmp_path / f"{r['mode']}_k{r['num_codes']}" /
                                "eval_metrics.json").read_text())
        assert float(r["ssim"]) == evaluated["ema"]["ssim"]
        assert float(r["codebook_perplexity"]) == evaluated["ema"]["codebook_perplexity"]
        assert float(r["zeros_l1"]) == evaluated["zeros"]["l1"]
    assert float(table[1]["ssim"]) == results["vqgan"]["ema"]["ssim"]
    with Image.open(tmp_path / "sweep.png") as image:
        assert image.size[0] > 600 and image.size[1] > 400

    kept = tmp_path / "runs" / f"3d_k{k}" / "eval_metrics.json"
    assert kept.read_text() == marker.read_text()

    # A run whose training finished but whose evaluation was lost (kept copy included) is
    # evaluated again.
    marker.unlink()
    kept.unlink()
    assert analysis.sweep(config, tmp_path, ["3d"], [k]) == [rows[1]]
    assert marker.exists()


def test_compare_variants_and_claims(tiny_runs, tmp_path):
    """compare's table holds each run's own eval_metrics.json values (EMA weights) and its
    claims the percentage changes those values give."""
    config, workdir, results = tiny_runs
    dvae = config_lib.apply_variant(config, "dvae")
    assert dvae.quantizer.kind == "gumbel" and dvae.loss.adversarial_weight == 0
    assert config_lib.apply_variant(config, "vqvae").loss.adversarial_weight == 0
    assert config.loss.adversarial_weight > 0
    assert list(results) == ["vqgan", "vqvae", "dvae"]
    text = analysis.compare(results, tmp_path, run_dirs={run: workdir / run for run in results})
    assert (tmp_path / "compare.md").read_text().strip() == text
    evaluated = {run: json.loads((workdir / run / "eval_metrics.json").read_text())["ema"]
                 for run in results}
    # The learning curves come from the runs' event files: one evaluation each, at step 1,
    # the values of eval_metrics.json (as float32); one evaluation is no plateau to report.
    with open(tmp_path / "compare_curves.csv") as f:
        curves = list(csv.DictReader(f))
    assert [(r["run"], int(r["step"])) for r in curves] == [(run, 1) for run in results]
    for r in curves:
        assert float(r["psnr"]) == pytest.approx(evaluated[r["run"]]["psnr"], rel=1e-6)
        assert float(r["ssim"]) == pytest.approx(evaluated[r["run"]]["ssim"], rel=1e-6)
    assert (tmp_path / "compare_curves.png").exists() and "end of training" not in text
    assert evaluated["dvae"]["ssim"] != evaluated["vqgan"]["ssim"]  # the claims compare something
    with open(tmp_path / "compare.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["run"] for r in table] == ["vqgan", "vqvae", "dvae"]
    for row in table:
        for key in analysis.COLUMNS:
            if key in analysis.KEYPOINT_COLUMNS:  # limb data: no keypoints, empty cells
                assert row[key] == "" and key not in evaluated[row["run"]], (row["run"], key)
                continue
            assert float(row[key]) == evaluated[row["run"]][key], (row["run"], key)
        cells = [f"{evaluated[row['run']][k]:.4f}"
                 for k in ("ssim", "psnr", "l1", "t_std", "tdiff_l1")]
        assert f"| {row['run']} | {' | '.join(cells)} |" in text
    # The tiny data draw random joint strengths: the reference row of exact poses at the
    # mean strength is the evaluation's own (test_evaluate checks its values).
    pose = evaluate.pose_reference(config_lib.validate(analysis.shared_data(config, workdir)),
                                   workdir)
    cells = [f"{pose[k]:.4f}" for k in ("ssim", "psnr", "l1", "t_std", "tdiff_l1")]
    assert f"| (exact poses, mean strengths) | {' | '.join(cells)} |" in text

    def claim(metric, new, old):
        """The claim's line recomputed: the values and their change in percent."""
        a, b = evaluated[new][metric], evaluated[old][metric]
        return f"{a:.4f} vs {b:.4f} ({100 * (a - b) / abs(b):+.1f}%"

    lines = text.splitlines()
    ssim = next(line for line in lines if line.startswith("- SSIM, VQ-GAN over dVAE: "))
    tstd = next(line for line in lines if line.startswith("- T-Std, VQ-GAN against VQ-VAE: "))
    assert claim("ssim", "vqgan", "dvae") in ssim and "paper: +9.31%" in ssim
    assert claim("t_std", "vqgan", "vqvae") in tstd and "paper: -37.1%" in tstd
    tdiff = next(line for line in lines if line.startswith("- Temporal-difference error"))
    assert claim("tdiff_l1", "vqgan", "vqvae") in tdiff
    zeros = json.loads((workdir / "vqgan" / "eval_metrics.json").read_text())["zeros"]
    assert f"| (all zeros) | {zeros['ssim']:.4f} | {zeros['psnr']:.4f} | {zeros['l1']:.4f} | " \
           f"{zeros['t_std']:.4f} | {zeros['tdiff_l1']:.4f} |" in text
    assert "kp_" not in text  # limb data: no keypoint columns

    # The command line, on already trained runs: the same SSIM claim, no T-Std one.
    done = subprocess.run(
        [sys.executable, "-m", "pose_vq.analysis", "compare", f"--workdir={tmp_path / 'cmp'}",
         f"--runs={workdir / 'vqgan'},{workdir / 'dvae'}"],
        capture_output=True, text=True, cwd=ROOT, check=True)
    assert ssim in done.stdout.splitlines() and "T-Std, VQ-GAN" not in done.stdout
    assert (tmp_path / "cmp" / "compare.md").read_text().strip() == done.stdout.strip()


def test_learning_curves_and_the_plateau_from_event_files(tmp_path):
    """Curves read back what the writer logged at each evaluation, the later value where a
    resumed run wrote a step again; the plateau is each variant's PSNR gain between its last
    two evaluations, its interval scipy's t over the seeds."""
    from scipy import stats as scipy_stats

    from pose_vq import summary

    psnrs = {"vqgan": [15.0, 18.0, 18.5], "vqgan_s1": [14.0, 17.5, 17.625],
             "vqvae": [15.0, 17.0, 18.0]}
    for run, values in psnrs.items():
        writer = summary.SummaryWriter(tmp_path / run, enabled=True)
        for step, value in zip((250, 500, 750), values):
            writer.write_scalars(step, {"eval/ema/psnr": value, "eval/ema/ssim": value / 64,
                                        "eval/raw/psnr": 0.0, "train/loss/l1": 1.0})
        writer.close()
    writer = summary.SummaryWriter(tmp_path / "vqvae", enabled=True)  # resumed: 750 again
    writer.write_scalars(750, {"eval/ema/psnr": 18.25, "eval/ema/ssim": 18.25 / 64})
    writer.close()
    curves = analysis.learning_curves({run: tmp_path / run for run in psnrs})
    assert [(r["run"], r["variant"], r["seed"], r["step"], r["psnr"], r["ssim"]) for r in curves] == [
        (run, run.split("_")[0], 1 if run.endswith("_s1") else 0, step, value, value / 64)
        for run, values in {**psnrs, "vqvae": [15.0, 17.0, 18.25]}.items()
        for step, value in zip((250, 500, 750), values)]  # exact: values a float32 holds
    gains = np.array([0.5, 0.125])
    mean, half = gains.mean(), scipy_stats.t.ppf(0.975, 1) * gains.std(ddof=1) / np.sqrt(2)
    assert analysis.plateau(curves) == [
        f"vqgan: held-out PSNR {mean:+.2f} dB from step 500 to 750, mean of 2 run(s) "
        f"(95% interval {mean - half:+.2f} to {mean + half:+.2f})",
        "vqvae: held-out PSNR +1.25 dB from step 500 to 750, mean of 1 run(s)"]
    with Image.open(analysis.plot_curves(tmp_path / "curves.png", curves,
                                         {"discriminator on": 450})) as image:
        assert image.size[0] > 600


def test_a_run_of_another_config_is_neither_reused_nor_resumed(tiny_runs, tmp_path):
    config, workdir, results = tiny_runs
    shutil.copytree(workdir / "vqgan", tmp_path / "run")
    with pytest.raises(SystemExit, match="run holds a run of another config"):
        analysis.run_all({"run": config_lib.apply_variant(config, "dvae")}, tmp_path)
    assert analysis.run_all({"run": config_lib.apply_variant(config, "vqgan")},
                            tmp_path) == {"run": results["vqgan"]}


def test_unknown_variant_is_a_clear_error(config):
    with pytest.raises(config_lib.ConfigError, match="variant 'gan'"):
        config_lib.apply_variant(config, "gan")


def _tiny_downstream(monkeypatch):
    """The lifters and probe heads of ``analysis.probes`` at the test datasets' size, and
    the pose table only (every table's heads are reused the same way, and each costs
    seconds of compilation)."""
    from pose_vq.downstream import lift, probe

    lift_config, probe_config = lift.default_config, probe.default_config

    def tiny_lift(options=""):
        c = lift_config(options)
        c.model.update(dim=16, depth=1, num_heads=2, rep_dim=16, width=32)
        c.train.update(batch_size=8, log_every=2, checkpoint_every=2)
        return c

    def tiny_probe():
        c = probe_config()
        c.update(width=16, depth=1)
        c.train.update(batch_size=4, log_every=1, checkpoint_every=2)
        return c

    monkeypatch.setattr(lift, "default_config", tiny_lift)
    monkeypatch.setattr(probe, "default_config", tiny_probe)
    monkeypatch.setattr(probe, "TASKS", ("pose",))


def _stamps(folder: pathlib.Path) -> dict[str, int]:
    """Modification times of what training or exporting writes under ``folder``: the
    checkpoints and the exported files (summaries and tables are rewritten by any run)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and ("checkpoints" in p.parts or "motion_tokens" in p.parts)}


def test_probes_reuse_only_what_the_same_tokenizer_made(tiny_runs, tmp_path, monkeypatch):
    """The chain on a tokenizer workdir, rerun as is (exports, lifters and heads reused:
    nothing exported or trained again, the same numbers), then with another tokenizer in
    that workdir (the dVAE run: another config): the exports and heads are made again and
    the token rows change; the lifters, keyed by their config and dataset, are reused."""
    from pose_vq.downstream import probe

    config, runs, _ = tiny_runs
    _tiny_downstream(monkeypatch)
    tokenizer, work = tmp_path / "tokenizer", tmp_path / "probes"
    shutil.copytree(runs / "vqgan", tokenizer)

    def chain():
        rows = analysis.probes(config, work, tokenizer_dir=str(tokenizer), probe_steps=2,
                               lift_steps=2)
        return {(r["task"], r["input"]): r for r in rows}

    def export():
        (path,) = {p.parent for p in (work / "tokens").rglob(tokenize.CODEBOOK_FILE)}
        found = probe.TokenExport.load(path)
        return found.key, found.split(probe.TRAIN)["tokens"]

    first, (key, grids) = chain(), export()
    stamps = _stamps(work)
    assert len([k for k in stamps if "checkpoints" in k]) > 0
    assert len([k for k in stamps if "motion_tokens" in k]) > 0
    assert chain() == first
    assert _stamps(work) == stamps

    shutil.rmtree(tokenizer)
    shutil.copytree(runs / "dvae", tokenizer)
    swapped, (new_key, new_grids) = chain(), export()
    assert new_key["config_digest"] != key["config_digest"]
    assert new_key["checkpoint_step"] == key["checkpoint_step"] == 1
    assert not np.array_equal(new_grids, grids)
    for row in ("tokens", "random tokenizer"):
        assert swapped["pose", row]["mpjpe"] != first["pose", row]["mpjpe"], row
    # What does not read tokens stays: the lifters were not trained again.
    for row in (("lifting", "dstformer from GT 2D"), ("lifting", "mlp from GT 2D"),
                ("pose", "DSTformer lifting (GT 2D)"), ("pose", "mean pose")):
        assert swapped[row] == first[row], row
    after = _stamps(work)
    lifters = {k for k in stamps if k.startswith("lift_")}
    assert lifters and {k: after[k] for k in lifters} == {k: stamps[k] for k in lifters}
    heads = {k for k in stamps if k.startswith("probes")}
    assert heads and all(after.get(k) != stamps[k] for k in heads)


def test_sweep_arms_set_each_quantizer_at_equal_vocabulary():
    base = config_lib.validate(config_lib.load_file(ROOT / "configs" / "demo.py"))
    at = lambda arm, k, seed=0: analysis.sweep_config(base, "m2d", arm, k, seed)
    assert (at("ema", 1024).quantizer.dead_code_threshold, at("ema", 1024).quantizer.kind) == (
        0.0, "ema")
    assert at("ema_restart", 1024).quantizer.dead_code_threshold == 1.0
    fsq = at("fsq", 1024).quantizer
    assert (fsq.kind, tuple(fsq.levels), fsq.num_codes) == ("fsq", (8, 5, 5, 5), 1000)
    assert at("fsq", 1000) is None and at("lfq", 1000) is None  # no grid, not 2^bits
    rvq = at("rvq4", 2**12).quantizer
    assert (rvq.kind, rvq.stages, rvq.num_codes, rvq.dead_code_threshold) == ("ema", 4, 8, 1.0)
    assert at("rvq4", 2**10) is None  # 10 bits do not split over 4 stages
    seeded = at("simvq", 256, seed=2)
    assert (seeded.seed, seeded.data.mode, seeded.quantizer.kind) == (base.seed + 2, "m2d", "simvq")
    assert analysis.run_name("3d", "config", 256, 0) == "3d_k256"
    assert analysis.run_name("3d", "fsq", 256, 1) == "3d_fsq_k256_s1"
    with pytest.raises(ValueError, match="sweep arm 'vq3'"):
        at("vq3", 256)


def test_sweep_summary_gives_seed_intervals_and_paired_margins():
    rows = [{"mode": "3d", "arm": arm, "vocabulary": 256, "seed": seed,
             **dict.fromkeys(analysis.SUMMARISED, 0.0), "psnr": psnr, "ssim": 0.5 + seed / 10}
            for arm, seed, psnr in [("ema_restart", 0, 20.0), ("ema_restart", 1, 21.0),
                                    ("fsq", 0, 21.0), ("fsq", 1, 23.0), ("fsq", 2, 30.0)]]
    summary = {r["arm"]: r for r in analysis.sweep_summary(rows)}
    assert summary["fsq"]["seeds"] == 3
    assert summary["fsq"]["psnr_mean"] == pytest.approx(74 / 3)
    # Paired on seeds 0 and 1 only: differences 1 and 2.
    assert summary["fsq"]["margin_psnr_mean"] == pytest.approx(1.5)
    half = 12.7062 * np.std([1.0, 2.0], ddof=1) / np.sqrt(2)  # t(0.975, 1 dof)
    assert summary["fsq"]["margin_psnr_ci_high"] == pytest.approx(1.5 + half, rel=1e-4)
    assert summary["fsq"]["margin_ssim_mean"] == pytest.approx(0.0)
    assert "margin_psnr_mean" not in summary["ema_restart"]


def test_close_arms_pick_the_contested_points_and_their_baseline():
    rows = [{"mode": mode, "arm": arm, "vocabulary": k, "seed": seed, "psnr": psnr}
            for mode, arm, k, seed, psnr in [
                ("3d", "ema_restart", 4096, 0, 22.6), ("3d", "fsq", 4096, 0, 23.55),
                ("3d", "simvq", 4096, 0, 23.49), ("3d", "lfq", 4096, 0, 20.0),
                ("3d", "fsq", 4096, 1, 10.0),  # a later seed never decides
                ("3d", "ema_restart", 128, 0, 21.0), ("3d", "fsq", 128, 0, 21.9),
                ("m2d", "ema_restart", 128, 0, 20.0), ("m2d", "fsq", 128, 0, 20.4)]]
    # 3d 4096: fsq and simvq within 0.5 dB, plus the baseline; 3d 128: 0.9 dB apart, no
    # contest; m2d 128: the baseline is itself close.
    assert sorted(analysis.close_arms(rows, 0.5)) == [
        ("3d", "ema_restart", 4096), ("3d", "fsq", 4096), ("3d", "simvq", 4096),
        ("m2d", "ema_restart", 128), ("m2d", "fsq", 128)]
    assert analysis.close_arms(rows, 0.01) == []


def test_sweep_with_close_db_runs_later_seeds_only_where_arms_are_close(monkeypatch, tmp_path):
    """Training is replaced by each arm's PSNR: the plan, not the runs, is under test."""
    base = config_lib.validate(config_lib.load_file(ROOT / "configs" / "demo.py"))
    arms = ["ema_restart", "fsq", "simvq", "lfq"]
    psnr_by_kind = {"ema": 22.0, "fsq": 23.5, "simvq": 23.3, "lfq": 20.0}  # seed 0; -1 dB a seed
    requested = []

    def fake_run_all(runs, workdir, report, kept):
        requested.append(sorted(runs))
        results = {name: {"ema": {"psnr": psnr_by_kind[c.quantizer.kind] - (c.seed - base.seed),
                                  "ssim": 0.8},
                          "zeros": {}, "step": 1, "split": "validation", "num_clips": 1}
                   for name, c in runs.items()}
        report(results)
        return results

    monkeypatch.setattr(analysis, "run_all", fake_run_all)
    rows = analysis.sweep(base, tmp_path, ["3d"], [4096], arms=arms, seeds=3, close_db=0.5)
    first = ["3d_ema_restart_k4096", "3d_fsq_k4096", "3d_lfq_k4096", "3d_simvq_k4096"]
    later = [f"3d_{arm}_k4096_s{seed}" for arm in ("ema_restart", "fsq", "simvq")
             for seed in (1, 2)]
    assert requested == [first, sorted(first + later)]
    assert len(rows) == 10
    with open(tmp_path / "sweep_summary.csv") as f:
        summary = {r["arm"]: r for r in csv.DictReader(f)}
    assert (summary["fsq"]["seeds"], summary["lfq"]["seeds"]) == ("3", "1")
    assert float(summary["fsq"]["margin_psnr_mean"]) == pytest.approx(1.5)

    # Later seeds already kept (another size's command ran them) are read back from the
    # start, so the tables written before the first new run hold them.
    (tmp_path / "runs" / "3d_fsq_k4096_s1").mkdir(parents=True)
    requested.clear()
    analysis.sweep(base, tmp_path, ["3d"], [4096], arms=arms, seeds=3, close_db=0.5)
    assert requested[0] == sorted(first + ["3d_fsq_k4096_s1"])


def test_compare_over_seeds_pairs_the_claims_by_seed():
    runs = {"vqgan": 0.60, "vqgan_s1": 0.66, "vqgan_s2": 0.63,
            "dvae": 0.50, "dvae_s1": 0.60, "dvae_s2": 0.45}
    rows = {name: {"ssim": v, "psnr": 20.0, "l1": 0.05, "t_std": 0.3, "tdiff_l1": None}
            for name, v in runs.items()}
    assert analysis.seed_of("vqgan_s12") == ("vqgan", 12)
    assert analysis.seed_of("ema_restart") == ("ema_restart", 0)
    table, lines = analysis.seed_summary(rows)
    by_variant = {r["variant"]: r for r in table}
    assert by_variant["vqgan"]["seeds"] == 3
    assert by_variant["vqgan"]["ssim_mean"] == pytest.approx(0.63)
    assert "tdiff_l1_mean" not in by_variant["vqgan"]  # None: not measured
    # Per seed: +20%, +10%, +40%: mean +23.3%, std 15.28, t(0.975, 2) = 4.3027.
    half = 4.302653 * np.std([20.0, 10.0, 40.0], ddof=1) / np.sqrt(3)
    [ssim_line] = lines
    assert ssim_line.startswith("ssim, vqgan against dvae: +23.3% over 3 paired seed(s)")
    assert f"{70 / 3 - half:+.1f}% to {70 / 3 + half:+.1f}%" in ssim_line
    assert "paper: +9.31%" in ssim_line


def test_a_study_reports_every_finished_run_before_it_trains_the_next(tmp_path, monkeypatch):
    """run_all's tables are written before each run it trains (so a study cut short has
    them for every finished run), not after every run it only reads back."""
    base = config_lib.validate(config_lib.load_file(ROOT / "configs" / "demo.py"))
    runs = dict.fromkeys(("a", "b", "c", "d"), base)

    def fake_training(config, run_dir):
        run_dir.mkdir(parents=True)
        (run_dir / "eval_metrics.json").write_text(json.dumps({"step": config.train.num_steps}))

    for done in ("a", "b"):
        fake_training(base, tmp_path / done)
    monkeypatch.setattr(analysis, "shared_data", lambda config, workdir: config)
    monkeypatch.setattr(analysis.train, "train_and_evaluate", fake_training)
    reports = []
    analysis.run_all(runs, tmp_path, report=lambda r: reports.append(list(r)))
    assert reports == [["a", "b"], ["a", "b", "c"], ["a", "b", "c", "d"]]

    # Finished runs after unfinished ones are in the first tables too, in the runs' order.
    for done in ("b", "d"):
        fake_training(base, tmp_path / "later" / done)
    reports.clear()
    analysis.run_all(runs, tmp_path / "later", report=lambda r: reports.append(list(r)))
    assert reports == [["b", "d"], ["a", "b", "d"], ["a", "b", "c", "d"]]


def test_a_study_resumes_from_its_kept_results_on_a_machine_without_its_workdir(
        tmp_path, monkeypatch):
    """Each finished run's eval_metrics.json and config (as given, not the workdir's data
    paths) are kept; a later call with another workdir trains only what is not kept, and a
    kept run of another config stops it."""
    base = config_lib.validate(config_lib.load_file(ROOT / "configs" / "demo.py"))
    runs = {"a": base, "b": config_lib.validate(config_lib.from_json(base.to_json_best_effort()))}
    runs["b"].seed = base.seed + 1
    trained = []

    def fake_training(config, run_dir):
        trained.append(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "eval_metrics.json").write_text(
            json.dumps({"step": config.train.num_steps, "seed": config.seed}))

    def workdir_data(config, workdir):
        c = config_lib.from_json(config.to_json_best_effort())
        c.data.data_dir = str(workdir / "data")
        return c

    monkeypatch.setattr(analysis, "shared_data", workdir_data)
    monkeypatch.setattr(analysis.train, "train_and_evaluate", fake_training)
    kept = tmp_path / "docs" / "runs"
    first = analysis.run_all({"a": runs["a"]}, tmp_path / "machine1", kept=kept)
    assert trained == [tmp_path / "machine1" / "a"]
    assert (kept / "a" / "eval_metrics.json").read_text() == (
        tmp_path / "machine1" / "a" / "eval_metrics.json").read_text()
    stored = json.loads((kept / "a" / "config.json").read_text())
    assert stored["data"]["data_dir"] == base.data.data_dir
    assert stored["seed"] == base.seed

    second = analysis.run_all(runs, tmp_path / "machine2", kept=kept)
    assert trained == [tmp_path / "machine1" / "a", tmp_path / "machine2" / "b"]
    assert second["a"] == first["a"] and second["b"]["seed"] == base.seed + 1
    assert (kept / "b" / "eval_metrics.json").exists()

    other = config_lib.validate(config_lib.from_json(base.to_json_best_effort()))
    other.seed = base.seed + 7
    with pytest.raises(SystemExit, match="another config"):
        analysis.run_all({"a": other}, tmp_path / "machine3", kept=kept)


def test_probes_stop_where_the_held_out_split_lacks_a_kind(tiny_runs, synthetic_root, tmp_path):
    """The suite's root holds out one sequence of 2 bodies: the kinds only its training
    bodies have (from labels.json) are named, with the knob that fixes it, before anything
    trains; several data seeds need a config that writes its synthetic root."""
    config, _, _ = tiny_runs
    labels = json.loads((synthetic_root / "labels.json").read_text())
    splits = json.loads((synthetic_root / "splits.json").read_text())
    kinds = {split: {k for s in seqs for k in labels[s].values()} for split, seqs in splits.items()}
    missing = kinds["train"] - kinds["validation"]
    assert missing
    with pytest.raises(config_lib.ConfigError) as e:
        analysis.probe_seeds(config, tmp_path)
    message = str(e.value)
    assert "\n" not in message and "data.synthetic_balanced_kinds=True" in message
    named = message.split("has no clip of ")[1].split(", which")[0].split(", ")
    assert set(named) == missing
    assert not (tmp_path / "tokenizer").exists()
    with pytest.raises(config_lib.ConfigError, match="--data_seeds=2 draws 2 synthetic roots"):
        analysis.probe_seeds(config, tmp_path, 2)


def _seed_rows(top1, mpjpe, clips):
    return [{"task": "lifting", "input": "dstformer from GT 2D", "mpjpe": mpjpe, "p_mpjpe": 50.0,
             "n_mpjpe": 60.0, "velocity_error": 4.0, "clips": 3 * clips},
            {"task": "action", "input": "tokens", "top1": top1, "macro_f1": top1 / 2,
             "clips": clips}]


def _t_half(x):
    """The 95% interval's half-width of the mean of ``x``, scipy's t quantile."""
    from scipy import stats as scipy_stats

    return scipy_stats.t.ppf(0.975, len(x) - 1) * np.std(x, ddof=1) / np.sqrt(len(x))


def test_probes_summary_over_two_seed_folders(tmp_path):
    """Each row's metrics over the seeds' probes.csv against numpy's mean and spread and
    scipy's t interval; the confusion matrices summed; empty cells left out."""
    values = {"top1": [0.5, 0.8], "mpjpe": [120.0, 100.0]}
    dirs = [tmp_path / "data_seed0", tmp_path / "data_seed1"]
    for i, d in enumerate(dirs):
        d.mkdir()
        analysis.write_csv(d / "probes.csv", _seed_rows(values["top1"][i], values["mpjpe"][i],
                                                        10 + i))
        counts = np.array([[3, 1], [2, 4 + i]])
        (d / analysis.CONFUSION_FILE).write_text(json.dumps(
            {"classes": ["walk", "wave"], "inputs": {"tokens": counts.tolist()}}))
    text = analysis.write_probes_summary(tmp_path, dirs)
    rows = {(r["task"], r["input"]): r for r in analysis.probes_summary(dirs)}
    tokens, lifting = rows["action", "tokens"], rows["lifting", "dstformer from GT 2D"]
    for row, key in ((tokens, "top1"), (lifting, "mpjpe")):
        x = np.array(values[key])
        half = _t_half(x)
        assert row[f"{key}_mean"] == pytest.approx(x.mean())
        assert row[f"{key}_std"] == pytest.approx(x.std(ddof=1))
        assert (row[f"{key}_ci_low"], row[f"{key}_ci_high"]) == pytest.approx(
            (x.mean() - half, x.mean() + half))
    assert (tokens["seeds"], tokens["clips"], lifting["clips"]) == (2, 21, 63)
    assert "mpjpe_mean" not in tokens and "top1_mean" not in lifting
    assert tokens["macro_f1_std"] == pytest.approx(np.std([0.25, 0.4], ddof=1))
    with open(tmp_path / "probes_summary.csv") as f:
        table = list(csv.DictReader(f))
    assert float(table[1]["top1_ci_high"]) == pytest.approx(tokens["top1_ci_high"])
    summed = json.loads((tmp_path / "probes_summary_confusion.json").read_text())
    assert summed["inputs"]["tokens"] == [[6, 2], [4, 9]]
    assert (tmp_path / "probes_summary.md").read_text().strip() == text
    low, high = 0.65 - _t_half(values["top1"]), 0.65 + _t_half(values["top1"])
    assert f"| tokens | 0.650 [{low:.3f}, {high:.3f}] | 0.325 [" in text
    assert "wave -> walk: 4 of 13" in text
    with Image.open(tmp_path / "probes_summary.png") as image:  # a panel per task
        assert image.size == (round(4.2 * 2 * 90), round(3.2 * 90))


def test_probe_contrasts_pair_the_seeds(tmp_path):
    """Each contrast is the per-seed difference (or ratio) of two action rows, its mean
    and scipy's t interval over the seeds; the per-kind recall gap of ordered over
    time-shuffled inputs is taken over the seeds whose held-out split has that kind."""
    top1 = {"tokens": [0.9, 0.8, 0.85], "tokens, time-shuffled": [0.7, 0.8, 0.6],
            "random tokenizer": [0.5, 0.6, 0.7], "DSTformer features": [0.9, 1.0, 0.85],
            "DSTformer features, time-shuffled": [0.9, 0.9, 0.85]}
    # classes walk, wave, squat: wave has no held-out clip in seed 2.
    ordered = [[[4, 0, 0], [1, 3, 0], [0, 0, 2]], [[2, 0, 0], [0, 2, 0], [1, 0, 1]],
               [[3, 1, 0], [0, 0, 0], [0, 0, 5]]]
    shuffled = [[[2, 2, 0], [2, 2, 0], [0, 0, 2]], [[2, 0, 0], [1, 1, 0], [1, 0, 1]],
                [[4, 0, 0], [0, 0, 0], [1, 0, 4]]]
    dirs = []
    for i in range(3):
        d = tmp_path / f"data_seed{i}"
        d.mkdir()
        analysis.write_csv(d / "probes.csv", [{"task": "action", "input": name, "top1": v[i],
                                               "macro_f1": 0.5, "clips": 10}
                                              for name, v in top1.items()])
        (d / analysis.CONFUSION_FILE).write_text(json.dumps(
            {"classes": ["walk", "wave", "squat"],
             "inputs": {"tokens": ordered[i], "tokens, time-shuffled": shuffled[i]}}))
        dirs.append(d)
    text = analysis.probe_contrasts(dirs)

    def interval(values, fmt):
        x = np.array(values)
        half = _t_half(x)
        return f"{fmt.format(x.mean())} [{fmt.format(x.mean() - half)}, {fmt.format(x.mean() + half)}]"

    t = {k: np.array(v) for k, v in top1.items()}
    assert (f"- trained over initialised tokenizer, action top-1 difference: "
            f"{interval(t['tokens'] - t['random tokenizer'], '{:+.3f}')} over 3 seed(s)") in text
    assert (f"- tokens against DSTformer features, action top-1 ratio: "
            f"{interval(t['tokens'] / t['DSTformer features'], '{:.2f}')} over 3 seed(s)") in text
    assert interval(t["DSTformer features"] - t["DSTformer features, time-shuffled"],
                    "{:+.3f}") in text
    o, s_ = np.array(ordered, float), np.array(shuffled, float)
    gaps = {k: [(o[i, k, k] - s_[i, k, k]) / o[i, k].sum() for i in range(3) if o[i, k].sum()]
            for k in range(3)}
    assert len(gaps[1]) == 2
    row = next(line for line in text.splitlines() if line.startswith("| tokens | "))
    assert row == "| tokens | " + " | ".join(interval(gaps[k], "{:+.2f}") for k in range(3)) + " |"
    assert "| recall, ordered minus time-shuffled | walk | wave | squat |" in text


def test_probe_seeds_run_each_seed_in_its_folder_once(tmp_path, monkeypatch):
    """Seed i's chain runs on data.synthetic_seed + i in data_seed<i>; a rerun skips the
    seeds done with the same config and runs them again when it changes, or when the
    tables gained a row since (probe.TABLES_VERSION)."""
    base = config_lib.validate(config_lib.load_file(ROOT / "configs" / "demo.py"))
    base.data.synthetic_seed = 5
    ran, checked = [], []

    def fake_chain(config, workdir, **kw):
        ran.append((workdir.name, config.data.synthetic_seed))
        i = config.data.synthetic_seed
        workdir.mkdir(parents=True, exist_ok=True)
        analysis.write_csv(workdir / "probes.csv", _seed_rows(0.1 * i, 10.0 * i, 4))
        (workdir / "probes.md").write_text("table\n")
        return []

    monkeypatch.setattr(analysis.prepare, "prepare_dataset",
                        lambda data, workdir: (str(workdir), f"seed{data.synthetic_seed}"))
    monkeypatch.setattr(analysis, "check_kinds", checked.append)
    monkeypatch.setattr(analysis, "probes", fake_chain)
    text = analysis.probe_seeds(base, tmp_path, 2, probe_steps=3)
    assert ran == [("data_seed0", 5), ("data_seed1", 6)]
    assert checked == [(str(tmp_path / "data_seed0"), "seed5"), (str(tmp_path / "data_seed1"), "seed6")]
    monkeypatch.setattr(analysis.probe, "TABLES_VERSION", analysis.probe.TABLES_VERSION + 1)
    analysis.probe_seeds(base, tmp_path, 2, probe_steps=3)
    assert ran[2:] == ran[:2]  # the tables gained a row: both seeds run again
    del ran[2:]
    assert text.startswith("Over 2 data seeds") and (tmp_path / "probes_summary.md").exists()
    assert analysis.probe_seeds(base, tmp_path, 3, probe_steps=3) and ran[2:] == [("data_seed2", 7)]
    analysis.probe_seeds(base, tmp_path, 2, probe_steps=4)
    assert ran[3:] == [("data_seed0", 5), ("data_seed1", 6)]
    assert analysis.probe_seeds(base, tmp_path / "one") == "table"  # one seed: in the workdir
    assert ran[-1] == ("one", 5)
