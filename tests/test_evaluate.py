"""Evaluation of keypoint-heatmap data adds the keypoint-space errors (position,
velocity, acceleration); limb data does not. Both report the temporal-difference error."""

import json
import math
import pathlib

import numpy as np
import pytest

from pose_vq import evaluate, metrics, sharding
from pose_vq.data import heatmaps, pipeline, prepare
from pose_vq.state import Models, create_state
from tests.test_train import tiny_config


def _evaluate(build_small, tmp_path, **data):
    builder = build_small("m2d", **data)
    config = tiny_config(pathlib.Path(builder.data_dir).parents[2], **{
        "data.mode": "m2d", "loss.perceptual_weight": 0.0, "eval.num_videos": 0,
        "eval.max_examples": 0, **{f"data.{k}": v for k, v in data.items()}})
    mesh = sharding.make_mesh()
    models = Models.create(config)
    state = create_state(models, mesh, config.seed)
    evaluator = evaluate.Evaluator(models, mesh, config.data.data_dir,
                                   prepare.dataset_name(config.data), config, tmp_path)
    return evaluator.run(state, 0), evaluator


def _still_error(evaluator):
    """The split's mean over clips of the targets' mean absolute frame-to-frame change:
    what a still prediction scores as ``tdiff_l1``, from the batches in numpy."""
    per_clip = [np.abs(np.diff(np.asarray(b["targets"], np.float64), axis=1)).mean(axis=(1, 2, 3, 4))
                for b in evaluator.batches()]
    masks = [np.asarray(b["mask"]) for b in evaluator.batches()]
    return float(np.sum(np.concatenate(per_clip) * np.concatenate(masks)) / evaluator.num_clips)


def test_keypoint_data_reports_keypoint_error(build_small, tmp_path):
    results, evaluator = _evaluate(build_small, tmp_path, kind="keypoint", score_source="ones")
    radius = metrics.keypoint_radius(0.75)
    for w in ("raw", "ema", "zeros", "target"):
        assert {"kp_error", "kp_missed", "kp_joints"} <= set(results[w])
    motion = {f"kp_{kind}_{name}" for kind in ("vel", "acc")
              for name in ("error", "target", "still")} | {"kp_vel_pairs", "kp_acc_triples"}
    for w in ("raw", "ema", "target"):
        assert motion <= set(results[w]), w
    # An empty prediction misses every joint: no trajectory, so no motion errors.
    assert not motion & set(results["zeros"])
    # The target decodes its joints at the pixels the renderer rounded them to, so even
    # perfect heatmaps jitter against the stored joints by a fraction of a pixel.
    target = results["target"]
    assert target["kp_vel_pairs"] > target["kp_acc_triples"] > 0
    assert 0 < target["kp_vel_error"] < 1.5 and 0 < target["kp_acc_error"] < 3.0
    assert (target["kp_vel_target"], target["kp_acc_target"]) == pytest.approx(
        (target["kp_vel_error"], target["kp_acc_error"]))
    assert target["kp_vel_still"] > 0  # the synthetic people move
    # An untrained model finds no joint, or a few: NaN where no pair was found, never a
    # flattering 0.
    for w in ("raw", "ema"):
        assert results[w]["kp_vel_pairs"] > 0 or math.isnan(results[w]["kp_vel_error"]), w
    assert results["zeros"]["tdiff_l1"] == pytest.approx(_still_error(evaluator), rel=1e-5)
    assert results["zeros"]["kp_missed"] == 1.0
    assert results["zeros"]["kp_error"] == pytest.approx(radius)
    # Soft-argmax on the true heatmaps: within rounding, plus the pull of neighbouring
    # joints (eyes, ears and nose share a few pixels at 16 px).
    assert results["target"]["kp_missed"] == 0.0
    assert results["target"]["kp_error"] < 1.0
    assert results["ema"]["kp_joints"] == results["target"]["kp_joints"] > 0
    assert json.loads((tmp_path / "eval_metrics.json").read_text())["target"] == results["target"]


def test_limb_data_reports_no_keypoint_error(build_small, tmp_path):
    results, evaluator = _evaluate(build_small, tmp_path)
    assert "target" not in results and "kp_error" not in results["ema"]
    assert "kp_vel_error" not in results["ema"]
    assert results["zeros"]["tdiff_l1"] == pytest.approx(_still_error(evaluator), rel=1e-5)
    assert results["ema"]["tdiff_l1"] > 0


def test_the_pose_reference_draws_each_skeleton_at_the_mean_strength(build_small, data_dir,
                                                                     tmp_path):
    """Oracle: the same windows built again with every joint strength 1 (the builder's own
    renders of another dataset), scaled to the mean strength in numpy."""
    config = tiny_config(data_dir, **{"eval.max_examples": 0})  # the gaussian-score 3d build
    ones = build_small("3d", score_source="ones")
    assert pathlib.Path(ones.data_dir).parents[2] == data_dir
    pose = evaluate.pose_reference(config, tmp_path)

    def clips(name):
        builder = pipeline.open_dataset(str(data_dir), name)
        return np.stack([r["heatmaps"] for r in pipeline.data_source(builder, config.eval.split)]
                        ).astype(np.float64) / 255
    target = clips(prepare.dataset_name(config.data))
    config.data.score_source = "ones"
    drawn = clips(prepare.dataset_name(config.data)) * heatmaps.GAUSSIAN_SCORE_MEAN
    assert target.shape == drawn.shape and len(target) > 1
    expected = {k: float(np.mean(v)) for k, v in metrics.clip_metrics(target, drawn).items()}
    assert np.abs(target - drawn).max() > 0.05  # the strengths' noise is there to measure
    assert pose["l1"] == pytest.approx(expected["l1"], rel=0.02)  # uint8 rounding apart
    assert pose["tdiff_l1"] == pytest.approx(expected["tdiff_l1"], rel=0.02)
    assert pose["psnr"] == pytest.approx(expected["psnr"], abs=0.05)
    assert pose["ssim"] == pytest.approx(expected["ssim"], abs=2e-3)
    assert evaluate.pose_reference(config, tmp_path) is None  # every strength 1: no noise
