"""Token probes: metrics against brute force and simulation, and a tiny end-to-end table."""

import pathlib

import numpy as np
import pytest

from pose_vq import checkpointing, tokenize
from pose_vq.data import pipeline, skeleton
from pose_vq.downstream import probe
from tests.test_train import tiny_config

pytestmark = pytest.mark.xdist_group("downstream")  # one worker trains the tiny lifter


def test_recall_at_k_equals_a_brute_force_count():
    rng = np.random.default_rng(0)
    query, gallery = rng.normal(size=(20, 6)), rng.normal(size=(30, 6))
    ql, gl = rng.integers(0, 4, 20), rng.integers(0, 4, 30)
    found = probe.recall_at(query, ql, gallery, gl)
    for k in (1, 5):
        hits = 0
        for q, label in zip(query, ql):
            cos = [q @ g / np.linalg.norm(q) / np.linalg.norm(g) for g in gallery]
            hits += label in gl[np.argsort(cos)[::-1][:k]]
        assert found[f"recall@{k}"] == pytest.approx(hits / 20)


def test_chance_recall_matches_random_rankings():
    rng = np.random.default_rng(1)
    ql, gl = rng.integers(0, 5, 40), rng.integers(0, 5, 25)
    expected = probe.chance_recall(ql, gl)
    draws = np.stack([rng.permutation(25) for _ in range(4000)])
    for k in (1, 5):
        simulated = np.mean([(gl[draws[:, :k]] == q).any(axis=1).mean() for q in ql])
        assert expected[f"recall@{k}"] == pytest.approx(simulated, abs=0.01)


def test_macro_f1_by_hand():
    labels = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 0])
    # class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 2 fp 1 fn 0 -> 0.8; class 2: 0
    assert probe.macro_f1(labels, predicted) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert probe.action_metrics(labels, predicted)["top1"] == pytest.approx(0.6)


def test_pose_targets_frame_by_hand():
    """2D-input modes: the first chosen camera's frame, a rotation by 90 degrees about the
    vertical written out by hand; 3d: world axes. Root-relative metres either way."""
    rng = np.random.default_rng(0)
    joints = rng.normal(0.0, 50.0, (2, 3, skeleton.NUM_JOINTS, 3)).astype(np.float32)
    present = np.ones(joints.shape[:3], bool)
    present[0, 1, 4] = False
    quarter = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # about y
    camera_R = np.stack([np.stack([quarter, np.eye(3)])] * 2)  # (clips, cameras, 3, 3)
    camera_t = rng.normal(0.0, 100.0, (2, 2, 3))
    skeletons = {"joints3d": joints, "present": present, "camera_R": camera_R,
                 "camera_t": camera_t}
    root = skeleton.JOINT_INDEX["mid-hip"]
    x, y, z = joints[..., 0], joints[..., 1], joints[..., 2]
    turned = np.stack([z, y, -x], axis=-1)  # quarter @ (x, y, z); t cancels at the root
    for mode, expected in (("m2d", turned), ("m2d_3d", turned), ("c2d", turned),
                           ("3d", joints)):
        found = probe.pose_targets(skeletons, mode)
        np.testing.assert_allclose(found["target"],
                                   (expected - expected[..., root:root + 1, :]) / 100.0,
                                   rtol=1e-5, atol=1e-6, err_msg=mode)
        assert found["weight"][0, 1, 4] == 0 and found["weight"].sum() == present.size - 1


@pytest.fixture(scope="module")
def tokens(build_small, tmp_path_factory):
    """The 3d test dataset's train and validation splits exported by a tiny tokenizer at
    initialisation (no training needed for the table's mechanics)."""
    data_dir = pathlib.Path(build_small("3d").data_dir).parents[2]
    run = tmp_path_factory.mktemp("tokenizer")
    checkpointing.write_run_config(tiny_config(data_dir), run)
    tokenizer = tokenize.Tokenizer.from_workdir(run, "init")
    assert tokenizer.step == 0
    return pathlib.Path(tokenize.export(tokenizer, [probe.TRAIN, probe.HELD_OUT], run / "tokens",
                                        run).data_dir)


def test_export_keeps_the_codebook_its_tokens_index(tokens):
    export = probe.TokenExport.load(tokens)
    assert export.codebook.shape == (64, tiny_config("").model.latent_channels)
    grids = export.split(probe.TRAIN)["tokens"]
    features = export.inputs(probe.TRAIN).features({"tokens": grids[:2]})
    np.testing.assert_array_equal(np.asarray(features)[0, 0, 0], export.codebook[grids[0, 0, 0, 0]])
    shuffled = export.inputs(probe.TRAIN, shuffle_time=True).arrays["tokens"]
    np.testing.assert_array_equal(np.sort(shuffled, axis=1), np.sort(grids, axis=1))


def test_probe_tables_have_every_row_and_are_written(tokens, tiny_lifter, tmp_path):
    _, lifter, _ = tiny_lifter
    c = probe.default_config()
    c.update(width=16, depth=1)
    c.train.update(batch_size=4, num_steps=2, log_every=1, checkpoint_every=2)
    held_out = pipeline.open_dataset(*_source(tokens)).info.splits[probe.HELD_OUT].num_examples
    for task in probe.TASKS:  # retrieval reuses the action heads
        # No --control_tokens: that row is another export through the same code.
        rows = probe.run(task, tokens, tmp_path, lifter=lifter, config=c)
        assert [r["input"] for r in rows] == [
            "tokens", "tokens, time-shuffled",
            "DSTformer lifting (GT 2D)" if task == "pose" else "DSTformer features",
            "mean pose" if task == "pose" else "chance"]
        for row in rows:
            assert all(np.isfinite(row[k]) for k in probe.METRICS[task])
            assert row["clips"] == held_out
        assert (tmp_path / f"{task}.csv").exists()
        assert (tmp_path / f"{task}.md").read_text().startswith(f"| {task} | ")


def _source(tokens_dir):
    meta = probe.TokenExport.load(tokens_dir).metadata
    return meta["source_data_dir"], meta["source_dataset"]
