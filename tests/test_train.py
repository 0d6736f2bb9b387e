"""The training step and loop: device-count independence, exact resumption, the
generator gradient against a plain jax.grad oracle (no discriminator loss in it), and
non-finite losses stopping training with the last good checkpoint kept."""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from pose_vq import losses, train
from pose_vq.data import pipeline
from pose_vq.models.lpips import perceptual_loss


def tiny_config(data_dir, **overrides):
    """The demo config shrunk to the 8-frame 16 px test dataset, with the paper's losses
    (LPIPS and a full-weight GAN, on from step 0)."""
    c = demo.get_config()
    c.data.update(frames=8, heatmap_size=16, stride=6, score_source="gaussian", sigma=0.75,
                  data_dir=str(data_dir), synthetic=False)
    c.model.update(channels=(16, 32), spatial_downsamples=1, temporal_downsamples=1)
    c.quantizer.num_codes = 64
    c.discriminator.update(filters=8, num_layers=2)
    c.loss.update(disc_start=0, perceptual_planes=4, perceptual_weight=1.0, adversarial_weight=1.0)
    c.train.update(batch_size=8, num_steps=4, log_every=2, checkpoint_every=2, eval_every=0)
    c.eval.update(batch_size=8, max_examples=8, num_videos=1)
    for knob, value in overrides.items():
        section, key = knob.split(".")
        c[section][key] = value
    return c


@pytest.fixture(scope="module")
def data_dir(build_small):
    builder = build_small("3d")  # .../<data_dir>/panoptic_heatmaps/<config>/<version>
    return pathlib.Path(builder.data_dir).parents[2]


def first_batch(config, size=8):
    builder = pipeline.open_dataset(str(config.data.data_dir), pipeline.dataset_name(config.data))
    source = builder.as_data_source(split="train")
    to_model = pipeline.ToModelInputs(pipeline.dataset_mode(builder))
    examples = [to_model.map(source[i]) for i in range(size)]
    return {k: np.stack([e[k] for e in examples]) for k in pipeline.MODEL_KEYS}


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


def run_steps(config, devices, batch, steps=2):
    mesh = pipeline.data_mesh(devices)
    models = train.Models.create(config)
    state = train.create_state(models, mesh, config.seed)
    step_fn = train.make_train_step(models, mesh, state)
    for _ in range(steps):
        state, _, finite = step_fn(state, pipeline.to_global(batch, mesh))
        assert bool(finite)
    return state


def assert_states_close(one, other, learning_rate, steps):
    """Two train states equal to 1e-5, save for the float-noise amplifiers of
    test_step_on_8_devices_equals_1_device's docstring."""
    compared, outside, lr_bound = 0, 0, 2 * learning_rate * steps
    for name in ("generator", "vq_stats", "discriminator", "ema_generator"):
        flat_one = jax.tree_util.tree_leaves_with_path(jax.device_get(getattr(one, name)))
        flat_other = jax.tree_util.tree_leaves(jax.device_get(getattr(other, name)))
        for (path, a), b in zip(flat_one, flat_other):
            key = jax.tree_util.keystr(path)
            if "NonLocalBlock" in key and "['k']['bias']" in key:
                continue
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            np.testing.assert_allclose(b, a, atol=lr_bound, rtol=1e-5, err_msg=f"{name}{key}")
            outside += int(np.sum(np.abs(b - a) > 1e-5 + 1e-5 * np.abs(a)))
            compared += a.size
    assert compared > 10_000 and outside <= compared * steps / 10_000, (outside, compared)


def test_step_on_8_devices_equals_1_device(data_dir):
    """Two steps on a batch split over 8 devices equal them on 1 device, to 1e-5.

    Two exceptions, both float-noise amplifiers rather than sharding effects: at the
    default U(-1/K, 1/K) init every code is nearly equidistant from every latent, so
    nearest-code choices are ties decided by rounding (k-means init here separates the
    codes); and the attention key bias has an exactly zero gradient (softmax ignores a
    shift shared by all keys), which Adam's g / (|g| + eps) turns from rounding noise
    into +-lr steps, so those leaves are not compared. Adam does the same, rarely, to
    other near-zero gradient entries: those may differ by at most 2 * lr per step, and
    at most 1 in 10,000 entries per step may do so (flips add up over the steps; none
    here, 1.5 in 10,000 after test_multihost's 3 steps across processes).
    """
    assert jax.device_count() == 8
    config = tiny_config(data_dir, **{"quantizer.kmeans_init": True,
                                      "optimizer.learning_rate": 2.25e-5,  # the paper's
                                      "loss.perceptual_weight": 0.0})  # compile time
    batch = first_batch(config)
    one = run_steps(config, jax.devices()[:1], batch)
    eight = run_steps(config, jax.devices(), batch)
    assert_states_close(one, eight, 2.25e-5, steps=2)


def saved_iterator_state(workdir, step):
    files = list((pathlib.Path(workdir) / "checkpoints" / str(step) / "data").glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_resume_is_bit_identical(data_dir, tmp_path):
    config = tiny_config(data_dir, **{"loss.perceptual_weight": 0.0})
    straight = train.train_and_evaluate(config, tmp_path / "straight")
    config.train.num_steps = 2
    train.train_and_evaluate(config, tmp_path / "resumed")
    config.train.num_steps = 4
    resumed = train.train_and_evaluate(config, tmp_path / "resumed")
    assert int(straight.step) == int(resumed.step) == 4
    for a, b in zip(leaves(straight), leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    assert (saved_iterator_state(tmp_path / "straight", 4)
            == saved_iterator_state(tmp_path / "resumed", 4))
    results = json.loads((tmp_path / "resumed" / "eval_metrics.json").read_text())
    assert results["step"] == 4 and results["split"] == "validation"
    assert set(results) >= {"raw", "ema", "zeros", "num_clips"}
    assert list((tmp_path / "resumed" / "videos").glob("step_0000004_clip0.gif"))


def test_nan_batch_stops_training_and_keeps_the_last_checkpoint(data_dir, tmp_path,
                                                                monkeypatch):
    config = tiny_config(data_dir, **{"loss.perceptual_weight": 0.0, "train.num_steps": 6})
    next_batch = pipeline.GlobalBatches.__next__
    calls = {"n": 0}

    def poisoned(self):
        batch = next_batch(self)
        calls["n"] += 1
        if calls["n"] == 3:  # the batch of step 3
            batch["inputs"] = batch["inputs"] * jnp.nan
        return batch

    monkeypatch.setattr(pipeline.GlobalBatches, "__next__", poisoned)
    with pytest.raises(FloatingPointError,
                       match=r"non-finite loss at step 3: .*loss/l1.*last checkpoint \(step 2\)"):
        train.train_and_evaluate(config, tmp_path)
    manager = train.checkpoint_manager(tmp_path, 3)
    assert manager.all_steps() == [2]
    models = train.Models.create(config)
    mesh = pipeline.data_mesh()
    state = train.restore_state(manager, train.abstract_state(models, mesh, config.seed))
    assert int(state.step) == 2
    assert all(np.isfinite(x).all() for x in leaves(state.generator))
