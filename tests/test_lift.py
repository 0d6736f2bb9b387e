"""2D-to-3D lifting: the examples cut from a built dataset, MotionBERT's corruption, the
flip, and a tiny run that resumes exactly."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lift_dstformer
from pose_vq.data import camera, pipeline, prepare, skeleton
from pose_vq.downstream import fit, lift

pytestmark = pytest.mark.xdist_group("downstream")  # one worker trains the tiny lifter


def tiny_lift_config(data_dir, kind="dstformer", **train):
    c = lift_dstformer.get_config("demo" + (",mlp" if kind == "mlp" else ""))
    c.data.update(frames=8, heatmap_size=16, stride=6, score_source="gaussian", sigma=0.75,
                  data_dir=str(data_dir), synthetic=False)
    c.model.update(dim=16, depth=1, num_heads=2, rep_dim=16, width=32)
    c.train.update({"batch_size": 8, "num_steps": 4, "log_every": 2, "checkpoint_every": 2, **train})
    return c


def fixture_lift_config(data_dir):
    """The suite's tiny DSTformer (conftest ``tiny_lifter``): 200 steps, enough to beat the
    mean pose on the held-out split (after 4 it still predicts every joint at the root)."""
    return tiny_lift_config(data_dir, num_steps=200, log_every=100, checkpoint_every=200)


def _mean_pose_mpjpe(train, held_out):
    """MPJPE (mm) of the training targets' mean pose on every held-out frame: per clip,
    then over clips, as the evaluation averages."""
    w = train["weight"][..., None]
    mean = (w * train["target"]).sum((0, 1)) / w.sum((0, 1))
    error = np.linalg.norm(held_out["target"] - mean, axis=-1) * 1000.0
    per_clip = (error * held_out["weight"]).sum((1, 2)) / held_out["weight"].sum((1, 2))
    return float(per_clip.mean())


@pytest.fixture(scope="module")
def examples(data_dir):
    c = tiny_lift_config(data_dir)
    name = prepare.dataset_name(c.data)
    skeletons = pipeline.read_skeletons(str(data_dir), name, "train")
    return skeletons, lift.lifting_examples(skeletons)


def test_examples_are_root_relative_camera_frame_metres(examples):
    skeletons, ex = examples
    n, c = skeletons["joints2d"].shape[:2]
    assert ex["keypoints"].shape == (n * c, 8, skeleton.NUM_JOINTS, 2)
    assert ex["target"].shape == (n * c, 8, skeleton.NUM_JOINTS, 3)
    np.testing.assert_array_equal(ex["target"][:, :, lift.ROOT], 0.0)
    # A rotation and a shift keep every bone's length: camera-frame bones are world bones.
    i = 4  # clip 1, camera 1
    clip, cam = ex["clip"][i], ex["camera"][i]
    assert (clip, cam) == divmod(i, c)
    world = skeletons["joints3d"][clip] / 100.0
    a, b = np.array(skeleton.LIMBS).T
    np.testing.assert_allclose(np.linalg.norm(ex["target"][i][:, a] - ex["target"][i][:, b], axis=-1),
                               np.linalg.norm(world[:, a] - world[:, b], axis=-1), atol=1e-5)
    # Camera z (depth) of the root is where the camera's R, t put it: about 3 m away.
    root = skeletons["camera_R"][clip, cam] @ world[0, lift.ROOT] + skeletons["camera_t"][clip, cam] / 100
    assert 2.0 < root[2] < 4.5
    w = ex["weight"] > 0
    assert w.mean() > 0.9 and not w[~ex["present"]].any()


def test_screen_normalisation_spans_minus_one_to_one_across_the_width():
    res = np.array([1920.0, 1080.0])
    uv = np.array([[0.0, 0.0], [1920.0, 1080.0], [960.0, 540.0]])
    np.testing.assert_allclose(camera.normalize_screen(uv, res),
                               [[-1.0, -0.5625], [1.0, 0.5625], [0.0, 0.0]])


def test_corruption_follows_its_rates_and_never_shows_absent_joints():
    c = lift_dstformer.get_config("demo").corruption
    rng = np.random.default_rng(0)
    clean = jnp.asarray(rng.uniform(-0.5, 0.5, (64, 54, skeleton.NUM_JOINTS, 2)), jnp.float32)
    present = jnp.asarray(rng.random(clean.shape[:-1]) > 0.1)
    inputs, mask = lift.corrupt(jax.random.key(0), clean, present, c)
    mask, inputs = np.asarray(mask), np.asarray(inputs)
    assert not mask[~np.asarray(present)].any()
    np.testing.assert_array_equal(inputs[~mask], 0.0)
    dropped = 1.0 - mask[np.asarray(present)].mean()  # 1 - 0.95 * 0.9 of the present joints
    assert dropped == pytest.approx(1 - 0.95 * 0.9, abs=0.02)
    error = np.linalg.norm(inputs[..., :2] - np.asarray(clean), axis=-1)[mask]
    conf = inputs[..., 2][mask]
    assert 0.003 < np.median(error) < 0.02  # the noise's scale, screen units
    assert conf.min() >= 0.0 and conf.max() <= 1.0
    assert np.corrcoef(error, conf)[0, 1] < -0.3  # larger errors, lower confidence
    # Drawn at key frames and interpolated: neighbouring frames' errors nearly agree.
    delta = inputs[..., :2] - np.asarray(clean)
    both = mask[:, 1:] & mask[:, :-1]
    step = np.linalg.norm(np.diff(delta, axis=1), axis=-1)[both]
    assert np.median(step) < 0.6 * np.median(error)


def test_flip_mirrors_and_swaps_sides_and_twice_is_identity():
    rng = np.random.default_rng(1)
    kp = jnp.asarray(rng.normal(size=(2, 3, skeleton.NUM_JOINTS, 2)), jnp.float32)
    tg = jnp.asarray(rng.normal(size=(2, 3, skeleton.NUM_JOINTS, 3)), jnp.float32)
    pr = jnp.asarray(rng.random((2, 3, skeleton.NUM_JOINTS)) > 0.5)
    w = pr.astype(jnp.float32)
    do = jnp.array([True, False])
    once = lift.flip(kp, tg, pr, w, do)
    left, right = skeleton.JOINT_INDEX["l-wrist"], skeleton.JOINT_INDEX["r-wrist"]
    np.testing.assert_allclose(once[0][0, :, left, 0], -kp[0, :, right, 0])
    np.testing.assert_allclose(once[1][0, :, right, 1:], tg[0, :, left, 1:])
    np.testing.assert_array_equal(once[0][1], kp[1])
    for a, b in zip(lift.flip(*once, do), (kp, tg, pr, w)):
        np.testing.assert_array_equal(a, b)


def test_fit_resumes_exactly_where_it_stopped(tmp_path):
    """Batches are a function of the step: 2 steps, a restart, 2 more equal 4 straight."""
    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(size=(24, 3)).astype(np.float32)}
    arrays["y"] = arrays["x"] @ np.array([1.0, -2.0, 0.5], np.float32)

    def loss_fn(params, model_state, batch, key):
        noise = 0.01 * jax.random.normal(key, batch["y"].shape)
        return jnp.mean((batch["x"] @ params["w"] - batch["y"] + noise) ** 2), ({}, model_state)

    def config(steps):
        c = fit.default_config()
        c.update(batch_size=8, num_steps=steps, log_every=1, checkpoint_every=2)
        return c

    init = {"params": {"w": jnp.zeros(3)}}
    straight = fit.fit(tmp_path / "straight", config(4), init, loss_fn, arrays)
    fit.fit(tmp_path / "resumed", config(2), init, loss_fn, arrays)
    resumed = fit.fit(tmp_path / "resumed", config(4), init, loss_fn, arrays)
    np.testing.assert_array_equal(straight["params"]["w"], resumed["params"]["w"])
    assert not np.array_equal(straight["params"]["w"], np.zeros(3))
    loaded = fit.load_variables(tmp_path / "straight", config(4), init)
    np.testing.assert_array_equal(loaded["params"]["w"], straight["params"]["w"])


def test_claim_keeps_a_workdir_of_the_same_source_only(tmp_path):
    work = tmp_path / "head"
    assert not fit.claim(work, {"inputs": "a", "steps": (1, 2)})
    (work / "checkpoints").mkdir()
    assert not fit.claim(work, {"inputs": "a", "steps": [1, 2]})  # as JSON reads it back
    assert (work / "checkpoints").is_dir()
    assert fit.claim(work, {"inputs": "b", "steps": [1, 2]})
    assert sorted(p.name for p in work.iterdir()) == [fit.SOURCE_FILE]
    assert json.loads((work / fit.SOURCE_FILE).read_text())["inputs"] == "b"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "checkpoints").mkdir()  # trained before sources were recorded
    assert fit.claim(tmp_path / "old", {"inputs": "a"})


def test_lifters_train_evaluate_and_restore(tiny_lifter, examples, tmp_path):
    """The fixture's DSTformer beats the training mean pose on the held-out clips (the
    best constant guess, computed here with numpy; measured 209 against 221 mm); the MLP,
    4 steps, is only checked to evaluate."""
    data_dir, workdir, results = tiny_lifter
    mlp = lift.train_and_evaluate(tiny_lift_config(data_dir, "mlp"), tmp_path / "mlp")
    for found in (results, mlp):
        assert found["split"] == "validation" and found["examples"] > 0
        assert all(np.isfinite(found[k]) for k in ("mpjpe", "n_mpjpe", "p_mpjpe", "velocity_error"))
    name = prepare.dataset_name(tiny_lift_config(data_dir).data)
    held_out = lift.lifting_examples(pipeline.read_skeletons(str(data_dir), name, "validation"))
    assert results["examples"] == len(held_out["target"])
    assert results["mpjpe"] < 0.98 * _mean_pose_mpjpe(examples[1], held_out)
    assert mlp["model"] == "mlp" and "batch_stats" in lift.restore(tmp_path / "mlp")[1]
    assert json.loads((workdir / lift.EVAL_FILE).read_text())["mpjpe"] == results["mpjpe"]
    # A finished run is not trained again: rerunning it gives the same evaluation.
    assert lift.train_and_evaluate(fixture_lift_config(data_dir), workdir) == results
    model, variables, _ = lift.restore(workdir)
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(
        lift.init_variables(model, tiny_lift_config(data_dir)))
