"""Token probes: metrics against brute force and simulation, and a tiny end-to-end table."""

import json
import pathlib

import numpy as np
import pytest

from pose_vq import checkpointing, tokenize
from pose_vq.data import prepare, skeleton, synthetic
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


def test_confusion_matrix_counts_by_hand_and_reads_out_per_class():
    """Counts against a double loop over the clips (rows true, columns predicted; a row
    sums to its class's clips), then the markdown's recall and most confused pairs, worked
    out by hand."""
    labels = np.array([1, 1, 1, 1, 0, 0, 3, 3, 3, 1])
    predicted = np.array([1, 2, 2, 1, 0, 1, 3, 2, 3, 2])
    found = probe.confusion_matrix(labels, predicted, 4)
    loops = np.zeros((4, 4), int)
    for t in range(4):
        for p in range(4):
            loops[t, p] = sum(1 for a, b in zip(labels, predicted) if a == t and b == p)
    np.testing.assert_array_equal(found, loops)
    np.testing.assert_array_equal(found.sum(axis=1), np.bincount(labels, minlength=4))
    assert found[1, 2] == 3 and found[2].sum() == 0  # wave clips called squat; no squat clip
    names = ["walk", "wave", "squat", "reach"]
    text = probe.confusion_markdown({"classes": names, "inputs": {
        "tokens": found.tolist(), "perfect": np.diag([2, 5, 0, 3]).tolist()}}, top=2)
    lines = text.splitlines()
    assert lines[0] == "| recall | walk (2) | wave (5) | reach (3) |"  # squat: no clip
    assert lines[2] == "| tokens | 0.50 | 0.40 | 0.67 |"
    assert lines[3] == "| perfect | 1.00 | 1.00 | 1.00 |"
    assert "- tokens, most confused: wave -> squat: 3 of 5; walk -> wave: 1 of 2" in lines
    assert "- perfect, most confused: none" in lines


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


# Enough bodies that the held-out ones' motion kinds are all among the training ones (the
# suite's 3-sequence root holds out 2 bodies of kinds it never trains on, so no head could
# beat chance there): 16 sequences of 3 people, the last 4 held out (12 bodies, 56 clips,
# all 7 kinds, the most frequent on 11 clips), built and exported in about 8 s.
PROBE_SEQUENCES = [f"synth_{i:03d}" for i in range(16)]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    """A 3d dataset of ``PROBE_SEQUENCES`` exported (train and validation) by a tiny
    tokenizer at initialisation: its tokens keep coarse layout, which the heads read."""
    base = tmp_path_factory.mktemp("probe_data")
    root = synthetic.write_synthetic_root(
        base / "synthetic", PROBE_SEQUENCES, num_frames=40, num_people=3, seed=1,
        splits={"train": PROBE_SEQUENCES[:12], "validation": PROBE_SEQUENCES[12:]})
    prepare.build(root, base / "tfds", "3d", frames=8, heatmap_size=16, stride=6)
    run = base / "tokenizer"
    run.mkdir()
    checkpointing.write_run_config(tiny_config(base / "tfds"), run)
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


def _head_config():
    """Heads that learn the action labels at this size: 300 steps of width 64 (2 steps
    of width 16 left every head at chance)."""
    c = probe.default_config()
    c.update(width=64, depth=1)
    c.train.update(batch_size=8, num_steps=300, log_every=100, checkpoint_every=300)
    return c


def test_time_shuffling_permutes_each_clips_steps_alike_for_every_array():
    """Each clip's steps are a permutation of its own, not the identity for most clips, and
    two arrays of the same clips (keypoints and their mask) get the same permutations."""
    steps = np.arange(6 * 16).reshape(6, 16)
    keypoints = np.stack([steps, -steps], axis=-1)
    shuffled, mask = probe.shuffled_in_time(keypoints), probe.shuffled_in_time(steps)
    for clip in range(6):
        np.testing.assert_array_equal(np.sort(mask[clip]), steps[clip])
        np.testing.assert_array_equal(shuffled[clip, :, 0], mask[clip])
        np.testing.assert_array_equal(shuffled[clip, :, 1], -mask[clip])
    assert sum((mask[c] != steps[c]).any() for c in range(6)) == 6
    assert len({tuple(m - m.min()) for m in mask}) == 6  # a permutation drawn per clip


def test_probe_tables_and_what_labels_teach(tokens, tiny_lifter, tmp_path):
    """Every table's rows are written; a head learns from the true labels what it cannot
    from shuffled ones.

    Shuffling the training labels over the clips leaves a head nothing to learn but how
    often each label occurs, so on held-out clips it is right about as often as
    sum_k p_train(k) p_held_out(k) = 0.14 here; 0.25 (the most frequent held-out class's
    share is 0.20) leaves room for the draw of one permutation on 12 held-out bodies. The
    true labels' head must beat that by 0.15 and reach 0.35 (measured: 0.46 against
    0.13). A pose head on shuffled targets can only learn the common pose, so it lands
    within 10% of the mean-pose row (measured: +3%). At this size the true-label pose head
    is no better than the mean pose (204 mm against 204 mm; the demo-scale table in the
    README is where it is): its row is only checked to be there."""
    _, lifter, _ = tiny_lifter
    c = _head_config()
    export = probe.TokenExport.load(tokens)
    held_out = len(export.split(probe.HELD_OUT)["tokens"])
    tables = {}
    for task in probe.TASKS:  # retrieval reuses the action heads
        # No --control_tokens: that row is another export through the same code.
        rows = probe.run(task, tokens, tmp_path, lifter=lifter, config=c)
        assert [r["input"] for r in rows] == [
            "tokens", "tokens, time-shuffled",
            *(["DSTformer lifting (GT 2D)"] if task == "pose" else
              ["DSTformer features", "DSTformer features, time-shuffled"]),
            "mean pose" if task == "pose" else "chance"]
        for row in rows:
            assert all(np.isfinite(row[k]) for k in probe.METRICS[task])
            assert row["clips"] == held_out
        assert (tmp_path / f"{task}.csv").exists()
        assert (tmp_path / f"{task}.md").read_text().startswith(f"| {task} | ")
        tables[task] = {r["input"]: r for r in rows}
    # Each action input's held-out confusion: its rows count the held-out clips of each
    # class, its diagonal the row's top-1.
    confusion = json.loads((tmp_path / probe.CONFUSION_FILE).read_text())
    held_out_labels = probe.action_targets(export.skeletons(probe.HELD_OUT))["label"]
    assert confusion["classes"][:len(synthetic.MOTION_KINDS)] == list(synthetic.MOTION_KINDS)
    assert list(confusion["inputs"]) == [r for r in tables["action"] if r != "chance"]
    for name, counts in confusion["inputs"].items():
        counts = np.array(counts)
        assert counts.shape == (len(confusion["classes"]),) * 2
        np.testing.assert_array_equal(
            counts.sum(axis=1), np.bincount(held_out_labels, minlength=len(counts)))
        assert np.trace(counts) / held_out == pytest.approx(tables["action"][name]["top1"])

    skeletons = {s: export.skeletons(s) for s in (probe.TRAIN, probe.HELD_OUT)}
    labels = {s: probe.action_targets(skeletons[s]) for s in skeletons}
    poses = {s: probe.pose_targets(skeletons[s], "3d") for s in skeletons}
    assert set(labels[probe.HELD_OUT]["label"]) <= set(labels[probe.TRAIN]["label"])
    order = np.random.default_rng(0).permutation(len(labels[probe.TRAIN]["label"]))
    shuffled = {}
    for task, targets in (("action", labels), ("pose", poses)):
        head, variables = probe.train_head(
            task, export.inputs(probe.TRAIN), {k: v[order] for k, v in targets[probe.TRAIN].items()},
            tmp_path / "shuffled_labels", c, probe.export_num_classes(export))
        shuffled[task] = probe.evaluate(task, head, variables, export.inputs(probe.HELD_OUT),
                                        targets[probe.HELD_OUT])
    true_top1 = tables["action"]["tokens"]["top1"]
    assert shuffled["action"]["top1"] <= 0.25
    assert true_top1 >= max(0.35, shuffled["action"]["top1"] + 0.15)
    mean_pose = tables["pose"]["mean pose"]["mpjpe"]
    assert abs(shuffled["pose"]["mpjpe"] / mean_pose - 1.0) <= 0.10
