"""The training step and loop: device-count independence, exact resumption, the
generator gradient against a plain jax.grad oracle (no discriminator loss in it, a
stop-gradient adaptive weight), pre-emption, and non-finite losses stopping training with the last
good checkpoint kept."""

import contextlib
import functools
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_vq import checkpointing, sharding, train
from pose_vq import config as config_lib
from pose_vq import step as step_lib
from pose_vq.data import modes, pipeline, prepare
from pose_vq.models.lpips import perceptual_loss
from pose_vq.state import Models, abstract_state, create_state, generator_rate, state_shardings
from tests import config_file, read_events

ATTENTION = {"model.attention_resolutions": (8,)}  # at the 8 px level of the tiny model


def tiny_config(data_dir, **overrides):
    """The demo config shrunk to the 8-frame 16 px test dataset, with the paper's losses
    (LPIPS and a full-weight GAN, on from step 0)."""
    c = config_file("demo.py")
    c.data.update(frames=8, heatmap_size=16, stride=6, score_source="gaussian", sigma=0.75,
                  data_dir=str(data_dir), synthetic=False)
    # Native convs (half winograd's compile time; test_layers checks the impls equal) and no
    # attention (ATTENTION adds it back where a test is about every layer of the step).
    c.model.update(channels=(16, 32), spatial_downsamples=1, temporal_downsamples=1,
                   conv_impl="native", attention_resolutions=())
    c.quantizer.num_codes = 64
    c.discriminator.update(filters=8, num_layers=2)
    c.loss.update(disc_start=0, perceptual_planes=4, perceptual_weight=1.0, adversarial_weight=1.0,
                  gradient_weight=0.0)  # the paper's (the demo's gradient loss is not)
    c.train.update(batch_size=8, num_steps=4, log_every=2, checkpoint_every=2, eval_every=0)
    c.eval.update(batch_size=8, max_examples=8, num_videos=1)
    for knob, value in overrides.items():
        section, key = knob.split(".")
        c[section][key] = value
    return c


def sharded_run_config(data_dir):
    """The tiny config as test_multihost's two processes run it under FSDP (3 steps, a
    checkpoint at the end, no videos, each process on its own one CPU device). k-means
    init separates the codes (test_fsdp_and_tensor_parallel_steps_equal_1_device says
    why), at the paper's learning rate, without LPIPS (compile time). The sharded-step
    equality steps this config too, so it and the multi-host reference (one xdist
    worker) trace and compile their 1-device programs once."""
    config = tiny_config(data_dir, **{"quantizer.kmeans_init": True,
                                      "optimizer.learning_rate": 2.25e-5,
                                      "loss.perceptual_weight": 0.0,
                                      "sharding.strategy": "fsdp", "train.num_steps": 3,
                                      "train.checkpoint_every": 3, "eval.num_videos": 0})
    config.cpu_devices = 0
    return config


def first_batch(config, size=8):
    """The first ``size`` stored train examples as a step's batch (uint8 clips)."""
    builder = pipeline.open_dataset(str(config.data.data_dir), prepare.dataset_name(config.data))
    source = builder.as_data_source(split="train")
    fields = pipeline.ToBatchFields(pipeline.dataset_mode(builder))
    examples = [pipeline.model_fields(fields.map(source[i])) for i in range(size)]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


def run_steps(config, mesh, batch, steps=2, initial=None):
    """``steps`` steps on ``batch`` over ``mesh`` from a fresh state, or from ``initial``
    (host arrays) placed as ``config.sharding`` places a state."""
    models = Models.create(config)
    if initial is None:
        state = create_state(models, mesh, config.seed)
    else:
        state = jax.device_put(initial, state_shardings(models, mesh))
    step_fn = step_lib.make_train_step(models, mesh)
    perceptual = step_lib.load_perceptual(config, mesh)
    for _ in range(steps):
        state, _, finite = step_fn(state, pipeline.to_global(batch, mesh), perceptual)
        assert bool(finite)
    return state


# Tolerances of assert_states_close, from the differences measured on the tiny model's
# 928,177 state entries at learning rate 2.25e-5 (tensor parallel on 8 devices and FSDP,
# 2 steps; two processes, 3 steps). Largest: 2.49e-5, 1.19e-5 and 1.50e-5, each in an
# entry whose gradient is ~0, where Adam's g / (|g| + eps) turns rounding noise into a
# step of up to ~lr. Entries beyond 1e-6 + 1e-6 |a|: 185, 102 and 112 (1 in 5,000 at
# most), most of them the attention key biases, whose gradient is zero in exact
# arithmetic (the softmax over keys ignores a shift common to every key).
STATE_ATOL = 5e-5  # every entry: 2x the largest difference measured
STATE_NOISE = 1e-6  # every entry but a few: within this, absolute and relative
NOISY_FRACTION = 1 / 2_000  # those few: 2.5x the largest fraction measured


def assert_states_close(one, other):
    """Two train states' parameters, EMAs and codebook statistics equal to within float
    noise: every entry within STATE_ATOL (+ 1e-6 relative), all but NOISY_FRACTION of
    them within STATE_NOISE (test_fsdp_and_tensor_parallel_steps_equal_1_device's
    docstring says why a few may differ more)."""
    compared, noisy = 0, 0
    for name in ("generator", "vq_stats", "discriminator", "ema_generator", "ema_vq_stats"):
        flat_one = jax.tree_util.tree_leaves_with_path(jax.device_get(getattr(one, name)))
        flat_other = jax.tree_util.tree_leaves(jax.device_get(getattr(other, name)))
        for (path, a), b in zip(flat_one, flat_other):
            key = jax.tree_util.keystr(path)
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            np.testing.assert_allclose(b, a, atol=STATE_ATOL, rtol=1e-6, err_msg=f"{name}{key}")
            noisy += int(np.sum(np.abs(b - a) > STATE_NOISE * (1 + np.abs(a))))
            compared += a.size
    assert compared > 10_000, compared
    assert noisy <= compared * NOISY_FRACTION, f"{noisy} of {compared} entries beyond float noise"


def test_assert_states_close_fails_on_a_perturbed_state():
    """The comparison passes float noise and a few Adam-amplified entries and fails a
    state a few x its tolerance away, in one entry or in a thousandth of them."""
    rng = np.random.default_rng(0)
    names = ("generator", "vq_stats", "discriminator", "ema_generator", "ema_vq_stats")
    one = types.SimpleNamespace(**{n: {"w": rng.standard_normal(20_000)} for n in names})

    def moved(delta, where=names):
        """``one`` with ``delta(w)`` added to the fields ``where``, float noise elsewhere."""
        return types.SimpleNamespace(**{
            n: {"w": w + (delta(w) if n in where else 1e-7 * rng.standard_normal(w.shape))}
            for n in names for w in [getattr(one, n)["w"]]})

    def adam_noise(w):  # float noise, and 20 entries as far as Adam's noise may take them
        return 1e-7 * rng.standard_normal(w.shape) + 0.9 * STATE_ATOL * (np.arange(w.size) < 20)

    assert_states_close(one, moved(adam_noise, ["generator", "ema_generator"]))
    with pytest.raises(AssertionError, match="vq_stats"):
        assert_states_close(one, moved(lambda w: 3 * STATE_ATOL * (np.arange(w.size) == 7),
                                       ["vq_stats"]))
    with pytest.raises(AssertionError, match="beyond float noise"):
        assert_states_close(one, moved(
            lambda w: 3 * STATE_NOISE * (1 + np.abs(w)) * (np.arange(w.size) % 1000 == 0)))


def _shard_bytes(tree):
    """Bytes device 0 holds of a tree of arrays (its addressable shards' data)."""
    return sum(shard.data.nbytes for x in jax.tree_util.tree_leaves(tree)
               for shard in x.addressable_shards if shard.device == jax.devices()[0])


@pytest.mark.xdist_group("sharded_steps")  # one worker: its 1-device programs are test_multihost's
def test_fsdp_and_tensor_parallel_steps_equal_1_device(data_dir):
    """Two steps on a batch split over 8 devices, with parameters, Adam moments and EMAs
    sharded by FSDP (an eighth of the state on each device), and over a (4, 2) mesh with
    the widest axes also split over 'model', equal them on 1 device, to 1e-5.

    Adam amplifies float noise in near-zero gradient entries (g / (|g| + eps) turns
    rounding noise into steps of up to ~lr), so a few entries differ by more than the
    rest: assert_states_close's tolerances, measured here and on test_multihost's 3
    steps across processes, which it holds to the same bounds. At the
    default U(-1/K, 1/K) init every code is nearly equidistant from every latent, so
    nearest-code choices would be ties decided by rounding: k-means init separates the
    codes (sharded_run_config).
    """
    assert jax.device_count() == 8
    config = sharded_run_config(data_dir)
    batch = first_batch(config)
    one_device = sharding.make_mesh(devices=jax.devices()[:1])
    initial = jax.device_get(create_state(Models.create(config), one_device, config.seed))
    one = run_steps(config, one_device, batch, initial=initial)
    total = _shard_bytes(one)
    # Per device: an eighth of the state but for the few leaves no axis divides (FSDP),
    # or with biases, norms and codebook statistics split over 'model' alone (tensor).
    for strategy, mesh, bound in [("fsdp", sharding.make_mesh(), 1.001),
                                  ("tensor", sharding.make_mesh({"data": 4, "model": 2}), 1.1)]:
        config.sharding.strategy = strategy
        state = run_steps(config, mesh, batch, initial=initial)
        assert_states_close(one, state)
        assert total / 8 <= _shard_bytes(state) < total / 8 * bound, (
            strategy, _shard_bytes(state) / total)


def _generator_objective_oracle(models, perceptual, state, x, target, key):
    """jax.grad of the generator objective written out plainly, term by term: L1 + LPIPS +
    the L1 of the height and width differences + the target-weighted L1, the codebook terms, and the adaptive
    weight x the hinge generator loss, the weight a constant (stop-gradient): the ratio
    of the two losses' gradient norms at the decoder's last kernel. Returns (gradient,
    weight, gradient of the discriminator's hinge loss: what the reference's bug added)."""
    lc = models.config.loss
    k_vq, k_dropout, k_planes = jax.random.split(key, 3)

    def forward(params):
        (recon, q), _ = models.generator.apply(
            {"params": params, "vq_stats": state.vq_stats}, x, train=True,
            rngs={"vq": k_vq, "dropout": k_dropout}, mutable=["vq_stats", "intermediates"])
        return recon, q.losses["total"]

    def rec_loss(params):
        recon = forward(params)[0]
        per_clip = -(-lc.perceptual_planes // recon.shape[0])  # rounded up
        a, b = step_lib.sample_planes(recon, target, per_clip, k_planes)
        d = recon - target  # height and width differences, written as slices
        edges = (jnp.mean(jnp.abs(d[:, :, 1:] - d[:, :, :-1]))
                 + jnp.mean(jnp.abs(d[:, :, :, 1:] - d[:, :, :, :-1]))) / 2
        return (lc.l1_weight * jnp.mean(jnp.abs(recon - target))
                + lc.perceptual_weight * perceptual_loss(perceptual, a, b)
                + lc.gradient_weight * edges
                + lc.foreground_weight * jnp.mean(jnp.abs(recon - target) * target))

    disc = lambda clip: models.discriminator.apply(state.discriminator, clip)
    g_rec = jax.grad(rec_loss)(state.generator)
    g_q = jax.grad(lambda p: forward(p)[1])(state.generator)
    g_adv = jax.grad(lambda p: -jnp.mean(disc(forward(p)[0])))(state.generator)
    last = lambda g: g["decoder"]["conv_out"]["kernel"]
    weight = lc.adaptive_weight_scale * jnp.clip(
        jnp.linalg.norm(last(g_rec)) / (jnp.linalg.norm(last(g_adv)) + 1e-4),
        0, lc.adaptive_weight_max)
    oracle = jax.tree_util.tree_map(
        lambda r, q, a: r + q + lc.adversarial_weight * weight * a, g_rec, g_q, g_adv)
    hinge = lambda p: (jnp.mean(jax.nn.relu(1.0 - disc(target)))
                       + jnp.mean(jax.nn.relu(1.0 + disc(forward(p)[0])))) / 2
    return oracle, weight, jax.grad(hinge)(state.generator)


def _relative_error(grads, oracle):
    flat = lambda tree: np.concatenate([x.ravel() for x in leaves(tree)]).astype(np.float64)
    return float(np.linalg.norm(flat(grads) - flat(oracle)) / np.linalg.norm(flat(oracle)))


def test_generator_gradient_is_the_generator_objective_alone(data_dir):
    """step.generator_gradients (one VJP of the generator; the adaptive weight from the
    last conv's VJP) equals jax.grad of the plainly written objective to 1e-5 relative,
    and the tolerance is tight: the reference's leak (D's hinge loss differentiated into
    G) would move the gradient far outside it."""
    config = tiny_config(data_dir, **ATTENTION, **{"loss.gradient_weight": 1.0,  # every term
                                                   "loss.foreground_weight": 2.0})
    models = Models.create(config)
    state = create_state(models, sharding.make_mesh(devices=jax.devices()[:1]), 0)
    x, target = modes.model_clips(models.mode, first_batch(config, size=1))

    @jax.jit
    def both(perceptual, state, x, target, key):
        grads, _, aux = step_lib.generator_gradients(models, perceptual, state, x, target, key)
        return (grads, aux["scalars"]["gan_adaptive_weight"],
                *_generator_objective_oracle(models, perceptual, state, x, target, key))

    grads, found_weight, oracle, weight, leak = both(
        step_lib.load_perceptual(config), state, x, target, jax.random.key(7))
    np.testing.assert_allclose(found_weight, weight, rtol=1e-5)
    assert float(weight) > 0.01  # the adversarial term is really in the objective
    error = _relative_error(grads, oracle)
    assert error < 1e-5, error
    scale = max(np.abs(g).max() for g in leaves(oracle))
    for a, b in zip(leaves(oracle), leaves(grads)):  # and leaf by leaf, near-zero ones too
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * scale)
    leaked = jax.tree_util.tree_map(jnp.add, oracle, leak)
    assert _relative_error(grads, leaked) > 100 * 1e-5


def saved_iterator_state(workdir, step):
    files = list((pathlib.Path(workdir) / "checkpoints" / str(step) / "data").glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


@pytest.mark.xdist_group("tiny_runs")  # one worker: the fixture compiles this FSDP step
def test_preempted_run_saves_stops_and_resumes_bit_identical(data_dir, tmp_path,
                                                              monkeypatch):
    """A SIGTERM during step 2 of 3 (a pre-empted VM): the loop saves step 2 off the
    checkpoint interval and stops without evaluating; the rerun goes on from there to
    the straight run's state, bit for bit, and the same loader position (all under FSDP
    on 8 devices: the sharded state saves and resumes exactly). The three runs of one
    config in this process trace the step once (state.bound)."""
    config = tiny_config(data_dir, **{"loss.perceptual_weight": 0.0, "train.num_steps": 3,
                                      "train.checkpoint_every": 3,
                                      "sharding.strategy": "fsdp"})  # as tiny_runs
    traces = []

    @functools.wraps(step_lib.train_step)  # its name: the same program as tiny_runs' step
    def counted_step(*args, **kwargs):
        traces.append(1)
        return traced_step(*args, **kwargs)

    traced_step = step_lib.train_step
    monkeypatch.setattr(step_lib, "train_step", counted_step)
    straight = train.train_and_evaluate(config, tmp_path / "straight")

    next_batch = pipeline.GlobalBatches.__next__
    calls = {"n": 0}

    def preempted(self):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return next_batch(self)

    handler = signal.getsignal(signal.SIGTERM)
    with monkeypatch.context() as patch:
        patch.setattr(pipeline.GlobalBatches, "__next__", preempted)
        stopped = train.train_and_evaluate(config, tmp_path / "resumed")
    assert int(stopped.step) == 2
    assert checkpointing.checkpoint_manager(tmp_path / "resumed").all_steps() == [2]
    assert not (tmp_path / "resumed" / "eval_metrics.json").exists()
    assert signal.getsignal(signal.SIGTERM) == handler  # the loop's own handler is gone

    resumed = train.train_and_evaluate(config, tmp_path / "resumed")
    assert int(straight.step) == int(resumed.step) == 3
    for a, b in zip(leaves(straight), leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    assert (saved_iterator_state(tmp_path / "straight", 3)
            == saved_iterator_state(tmp_path / "resumed", 3))
    assert len(traces) == 1
    results = json.loads((tmp_path / "resumed" / "eval_metrics.json").read_text())
    assert results["step"] == 3 and results["split"] == "validation"
    assert set(results) >= {"raw", "ema", "zeros", "num_clips"}
    assert list((tmp_path / "resumed" / "videos").glob("step_0000003_clip0.gif"))
    # TensorBoard: the resumed run's curves go on where the stopped one's end.
    for run in ("straight", "resumed"):
        events = read_events(tmp_path / run)
        assert [s for s, _ in events["train/loss/l1"][1]] == [2, 3]
        assert [s for s, _ in events["eval/ema/psnr"][1]] == [3]
        assert float(events["eval/ema/psnr"][1][0][1]) == pytest.approx(
            json.loads((tmp_path / run / "eval_metrics.json").read_text())["ema"]["psnr"])
        assert events["eval/reconstruction_0"][0] == "images"
        assert events["_hparams_/session_start_info"][0] == "hparams"


@contextlib.contextmanager
def host_reads_trapped(monkeypatch):
    """Make ``train.device_only`` also fail any host read of a device value on the loop's
    thread, the CPU stand-in for JAX's transfer guard (which has nothing to guard on CPU,
    whose arrays are host memory): jax.Array's value, ``__array__`` and ``item``
    (bool, float, int, str, tolist, device_get) and numpy's asarray/array of one (numpy
    reads CPU arrays through the buffer protocol, below Python). Yields the number of
    steps entered."""
    from jax._src.array import ArrayImpl  # the class of every jax.Array

    inside, entered = threading.local(), []

    def refuse(what):
        if getattr(inside, "on", False):
            raise AssertionError(f"{what} read a device value between two boundaries")

    value = ArrayImpl._value
    monkeypatch.setattr(ArrayImpl, "_value", property(
        lambda self: (refuse("a jax.Array's value"), value.fget(self))[1]))
    for name in ("__array__", "item"):
        method = getattr(ArrayImpl, name)
        monkeypatch.setattr(ArrayImpl, name, lambda self, *a, _m=method, _n=name, **k: (
            refuse(_n), _m(self, *a, **k))[1])
    for name in ("asarray", "array"):
        function = getattr(np, name)
        monkeypatch.setattr(np, name, lambda x, *a, _f=function, _n=name, **k: (
            refuse(f"np.{_n}") if isinstance(x, jax.Array) else None, _f(x, *a, **k))[1])
    guard = train.device_only

    @contextlib.contextmanager
    def device_only():
        entered.append(True)
        inside.on = True
        try:
            with guard():
                yield
        finally:
            inside.on = False

    monkeypatch.setattr(train, "device_only", device_only)
    with device_only():  # the trap itself works
        x = jnp.ones(()) + 1
        for read in (float, bool, np.asarray, jax.device_get, lambda a: a.item()):
            with pytest.raises(AssertionError, match="between two boundaries"):
                read(x)
    entered.clear()
    yield entered


@pytest.mark.xdist_group("tiny_runs")  # one worker: the fixture compiles this FSDP step
def test_steps_never_read_back_and_a_nan_step_is_reported_at_the_next_boundary(
        data_dir, tmp_path, monkeypatch):
    """Between boundaries (log and checkpoint at steps 2 and 4) nothing on the loop's
    thread reads a device value (host_reads_trapped). Step 3's NaN batch leaves the state
    unchanged and is reported at step 4, naming the step and the term; the step-2
    checkpoint is kept."""
    config = tiny_config(data_dir, **{"loss.perceptual_weight": 0.0,
                                      "sharding.strategy": "fsdp"})  # tiny_runs' step
    assert (config.train.num_steps, config.train.log_every,
            config.train.checkpoint_every) == (4, 2, 2)
    next_batch = pipeline.GlobalBatches.__next__
    calls = {"n": 0}

    def poisoned(self):
        batch = next_batch(self)
        calls["n"] += 1
        if calls["n"] == 3:  # float, as uint8 holds no NaN
            batch["inputs"] = batch["inputs"] * jnp.nan
        return batch

    monkeypatch.setattr(pipeline.GlobalBatches, "__next__", poisoned)
    with host_reads_trapped(monkeypatch) as entered, pytest.raises(
            FloatingPointError, match=r"non-finite loss at step 3: .*loss/l1.*"
                                      r"last checkpoint \(step 2\)"):
        train.train_and_evaluate(config, tmp_path)
    assert len(entered) == 4
    manager = checkpointing.checkpoint_manager(tmp_path, 2)
    assert manager.all_steps() == [2]
    models = Models.create(config)
    mesh = sharding.make_mesh()
    state = checkpointing.restore_state(manager, abstract_state(models, mesh))
    assert int(state.step) == 2
    assert all(np.isfinite(x).all() for x in leaves(state.generator))


def test_hparams_are_flat_scalars():
    flat = train.hparams(config_file("demo.py"))
    assert flat["model.channels"] == "(16, 32)" and flat["quantizer.num_codes"] == 256
    assert all(isinstance(v, (int, float, str, bool)) for v in flat.values())


@pytest.mark.xdist_group("tiny_runs")  # one worker trains the fixture
def test_baselines_neither_run_nor_update_the_discriminator(tiny_runs):
    """The vqvae and dvae baselines (adversarial weight 0) leave the discriminator and its
    optimiser at their initial state; the VQ-GAN's one step moves them."""
    config, workdir, _ = tiny_runs
    one_device = sharding.make_mesh(devices=jax.devices()[:1])  # values, not layouts, compared

    def saved(variant):
        models = Models.create(config_lib.apply_variant(config, variant))
        manager = checkpointing.checkpoint_manager(workdir / variant, read_only=True)
        return checkpointing.restore_state(manager, abstract_state(models, one_device))

    initial = create_state(Models.create(config), sharding.make_mesh(),  # tiny_runs' program
                           config.seed).discriminator
    changed = lambda state: any(not np.array_equal(a, b) for a, b in
                                zip(leaves(initial), leaves(state.discriminator)))
    gan = saved("vqgan")
    assert changed(gan) and int(gan.discriminator_opt[0].count) == 1
    for variant in ("vqvae", "dvae"):
        state = saved(variant)
        assert int(state.step) == 1 and not changed(state), variant
        assert int(state.discriminator_opt[0].count) == 0, variant


def test_cosine_schedule_warms_the_generator_up_from_zero(data_dir):
    """optimizer.schedule=cosine: at step 0 the generator's rate is 0, so its weights stay
    where they started while the discriminator (constant rate) moves; the schedule's count
    is in the optimiser state (exact resume) and decays to final_factor x the rate. The
    constant schedule keeps the optimiser state of runs written before schedules."""
    config = tiny_config(data_dir, **{"optimizer.schedule": "cosine", "optimizer.warmup_steps": 2,
                                      "optimizer.final_factor": 0.1, "loss.perceptual_weight": 0.0})
    rate = generator_rate(config)
    lr, n = config.optimizer.learning_rate, config.train.num_steps
    expected = [lr * i / 2 for i in (0, 1)] + [
        lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (i - 2) / (n - 2)))) for i in range(2, n + 1)]
    np.testing.assert_allclose([float(rate(i)) for i in range(n + 1)], expected, rtol=1e-6)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    models = Models.create(config)
    initial = create_state(models, mesh, config.seed)
    state = run_steps(config, mesh, first_batch(config), steps=1)
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b)))
    assert same(initial.generator, state.generator)
    assert not same(initial.discriminator, state.discriminator)
    assert int(state.generator_opt[-1].count) == 1
    constant = create_state(Models.create(tiny_config(data_dir)), mesh, config.seed)
    assert not jax.tree_util.tree_leaves(constant.generator_opt[-1])  # optax's EmptyState
    with pytest.raises(config_lib.ConfigError, match="optimizer.schedule='step'"):
        config_lib.validate(tiny_config(data_dir, **{"optimizer.schedule": "step"}))


def test_a_second_process_loads_every_program_from_the_compilation_cache(data_dir, tmp_path):
    """Two processes train the same tiny config, one after the other, with the config's
    compilation cache in an empty directory (not the suite's): the second compiles
    nothing, loading every program the first wrote, and ends with the same state, bit for
    bit."""
    from tests import own_devices_env
    from tests.test_multihost import write_config_file

    config = tiny_config(data_dir, **{"train.num_steps": 2, "train.checkpoint_every": 2,
                                      "loss.perceptual_weight": 0.0})
    config.compilation_cache_dir = str(tmp_path / "cache")
    path = write_config_file(config, tmp_path)
    env = {k: v for k, v in own_devices_env().items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    counts = []
    for run in ("first", "second"):
        res = subprocess.run([sys.executable, "-m", "pose_vq.main", f"--config={path}",
                              f"--workdir={tmp_path / run}"], env=env, capture_output=True,
                             text=True, check=False)
        assert res.returncode == 0, res.stderr[-3000:]
        found = re.findall(r"(\d+) programs compiled through the persistent cache, (\d+) of "
                           r"them loaded from it", res.stderr)
        assert found, res.stderr[-3000:]
        counts.append(tuple(map(int, found[-1])))
    (first_requests, first_hits), (second_requests, second_hits) = counts
    assert first_requests >= 5 and first_hits == 0  # init, the step, the EMA, evaluation, ...
    assert second_requests == second_hits == first_requests

    models = Models.create(config)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    states = [checkpointing.restore_state(checkpointing.checkpoint_manager(tmp_path / run, 1),
                                          abstract_state(models, mesh))
              for run in ("first", "second")]
    leaves = [jax.tree_util.tree_leaves(s) for s in states]
    assert len(leaves[0]) == len(leaves[1])
    for a, b in zip(*leaves):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
