"""The sweep and compare commands end to end at a tiny size: runs trained and evaluated,
the table, the plot and the paper's claims written, and finished runs not trained again."""

import csv
import json
import pathlib
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from pose_vq import analysis
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

    # A run whose training finished but whose evaluation was lost is evaluated again.
    marker.unlink()
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
    text = analysis.compare(results, tmp_path)
    assert (tmp_path / "compare.md").read_text().strip() == text
    evaluated = {run: json.loads((workdir / run / "eval_metrics.json").read_text())["ema"]
                 for run in results}
    assert evaluated["dvae"]["ssim"] != evaluated["vqgan"]["ssim"]  # the claims compare something
    with open(tmp_path / "compare.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["run"] for r in table] == ["vqgan", "vqvae", "dvae"]
    for row in table:
        for key in analysis.COLUMNS:
            assert float(row[key]) == evaluated[row["run"]][key], (row["run"], key)
        cells = [f"{evaluated[row['run']][k]:.4f}" for k in ("ssim", "psnr", "l1", "t_std")]
        assert f"| {row['run']} | {' | '.join(cells)} |" in text

    def claim(metric, new, old):
        """The claim's line recomputed: the values and their change in percent."""
        a, b = evaluated[new][metric], evaluated[old][metric]
        return f"{a:.4f} vs {b:.4f} ({100 * (a - b) / abs(b):+.1f}%"

    lines = text.splitlines()
    ssim = next(line for line in lines if line.startswith("- SSIM, VQ-GAN over dVAE: "))
    tstd = next(line for line in lines if line.startswith("- T-Std, VQ-GAN against VQ-VAE: "))
    assert claim("ssim", "vqgan", "dvae") in ssim and "paper: +9.31%" in ssim
    assert claim("t_std", "vqgan", "vqvae") in tstd and "paper: -37.1%" in tstd

    # The command line, on already trained runs: the same SSIM claim, no T-Std one.
    done = subprocess.run(
        [sys.executable, "-m", "pose_vq.analysis", "compare", f"--workdir={tmp_path / 'cmp'}",
         f"--runs={workdir / 'vqgan'},{workdir / 'dvae'}"],
        capture_output=True, text=True, cwd=ROOT, check=True)
    assert ssim in done.stdout.splitlines() and "T-Std, VQ-GAN" not in done.stdout
    assert (tmp_path / "cmp" / "compare.md").read_text().strip() == done.stdout.strip()


def test_unknown_variant_is_a_clear_error(config):
    with pytest.raises(config_lib.ConfigError, match="variant 'gan'"):
        config_lib.apply_variant(config, "gan")
