"""Evaluation of keypoint-heatmap data adds the keypoint-space error; limb data does not."""

import json
import pathlib

import pytest

from pose_vq import evaluate, metrics, sharding
from pose_vq.data import prepare
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
    return evaluate.Evaluator(models, mesh, config.data.data_dir,
                              prepare.dataset_name(config.data), config, tmp_path).run(state, 0)


def test_keypoint_data_reports_keypoint_error(build_small, tmp_path):
    results = _evaluate(build_small, tmp_path, kind="keypoint", score_source="ones")
    radius = metrics.keypoint_radius(0.75)
    for w in ("raw", "ema", "zeros", "target"):
        assert {"kp_error", "kp_missed", "kp_joints"} <= set(results[w])
    assert results["zeros"]["kp_missed"] == 1.0
    assert results["zeros"]["kp_error"] == pytest.approx(radius)
    # Soft-argmax on the true heatmaps: within rounding, plus the pull of neighbouring
    # joints (eyes, ears and nose share a few pixels at 16 px).
    assert results["target"]["kp_missed"] == 0.0
    assert results["target"]["kp_error"] < 1.0
    assert results["ema"]["kp_joints"] == results["target"]["kp_joints"] > 0
    assert json.loads((tmp_path / "eval_metrics.json").read_text())["target"] == results["target"]


def test_limb_data_reports_no_keypoint_error(build_small, tmp_path):
    results = _evaluate(build_small, tmp_path)
    assert "target" not in results and "kp_error" not in results["ema"]
