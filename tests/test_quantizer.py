"""Tests of the quantizers: straight-through gradient, EMA maths, losses and the paper's
q_loss, dead-code restart, sharded updates, k-means init, the Gumbel baseline, a short fit,
bf16; FSQ, LFQ, SimVQ and residual stages against numpy and brute force."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pose_vq import defaults
from pose_vq.models.quantizer import VectorQuantizer, gumbel_temperature, lfq_entropies, make_quantizer
from tests import config_file, xla_optimizations


# Jitted helpers: one compile per configuration is far cheaper on CPU than compiling
# every primitive of an op-by-op apply.
@functools.partial(jax.jit, static_argnames=("model", "train"))
def _init(model, key, z, train=False):
    return nn.unbox(model.init(key, z, train=train))


@functools.partial(jax.jit, static_argnames=("model",))
def _eval(model, variables, z):
    return model.apply(variables, z, train=False)


@functools.partial(jax.jit, static_argnames=("model",))
def _train(model, variables, z, key, temperature=None):
    """One training call: (output, new variables)."""
    out, stats = model.apply(variables, z, train=True, temperature=temperature,
                             rngs={"vq": key}, mutable=["vq_stats"])
    return out, {**variables, **stats}


def _normal(seed, shape):
    """Test data from numpy: jax.random.normal compiles per shape, seconds each on CPU."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _nearest(x, codes):
    d = ((x[:, None, :] - codes[None, :, :]) ** 2).sum(-1)
    return d.argmin(1)


@pytest.mark.parametrize("kind", ["ema", "learned"])
def test_straight_through_gradient_is_identity(kind):
    model = VectorQuantizer(32, 8, kind=kind)
    z = _normal(0, (2, 3, 4, 4, 8))
    c = _normal(1, z.shape)
    variables = _init(model, jax.random.key(2), z, train=False)

    def f(z):
        out, _ = _train(model, variables, z, jax.random.key(3))
        return jnp.sum(out.quantized * c)

    np.testing.assert_array_equal(np.asarray(jax.grad(f)(z)), np.asarray(c))
    out = _eval(model, variables, z)
    assert out.quantized.shape == z.shape and out.indices.shape == z.shape[:-1]
    assert out.indices.dtype == jnp.int32


def test_ema_update_matches_numpy():
    k, d, decay, eps = 16, 4, 0.9, 1e-3
    model = VectorQuantizer(k, d, ema_decay=decay, ema_epsilon=eps)
    z = _normal(0, (4, 5, 3, d))
    variables = _init(model, jax.random.key(1), z, train=False)
    out, new = _train(model, variables, z, jax.random.key(2))

    # Independent numpy version of one EMA step.
    s = jax.tree.map(np.asarray, variables["vq_stats"])
    x = np.asarray(z, np.float64).reshape(-1, d)
    emb = s["embedding"].astype(np.float64)
    idx = _nearest(x, emb)
    counts = np.bincount(idx, minlength=k).astype(np.float64)
    sums = np.zeros((k, d))
    np.add.at(sums, idx, x)
    size = decay * s["cluster_size"] + (1 - decay) * counts
    embed_sum = decay * s["embed_sum"] + (1 - decay) * sums
    n = size.sum()
    smoothed = (size + eps) / (n + k * eps) * n
    ns = new["vq_stats"]
    np.testing.assert_array_equal(np.asarray(out.indices).ravel(), idx)
    np.testing.assert_allclose(ns["cluster_size"], size, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ns["embed_sum"], embed_sum, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ns["embedding"], embed_sum / smoothed[:, None], rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(ns["usage"], decay * s["usage"] + (1 - decay) * counts,
                               rtol=1e-5)
    # The output used the codebook from before the update.
    np.testing.assert_allclose(np.asarray(out.quantized).reshape(-1, d), emb[idx], atol=1e-6)


def test_ema_commitment_loss():
    model = VectorQuantizer(16, 4, beta=0.4)
    z = _normal(0, (8, 6, 4))
    variables = _init(model, jax.random.key(1), z, train=False)
    out = _eval(model, variables, z)
    x = np.asarray(z).reshape(-1, 4)
    emb = np.asarray(variables["vq_stats"]["embedding"])
    e = emb[_nearest(x, emb)]
    np.testing.assert_allclose(out.losses["commitment"], 0.4 * np.mean((x - e) ** 2), rtol=1e-5)
    np.testing.assert_allclose(out.losses["total"], out.losses["commitment"])
    assert set(out.losses) == {"commitment", "total"}


# A hand-made batch: 4 latents, 3 codes. Nearest codes 0, 2, 1, 0 at squared distances
# 0.01, 0.85, 1.25, 1.09: the mean over the 8 entries is 3.2 / 8 = 0.4.
HAND_Z = np.array([[0.1, 0.0], [0.9, 1.2], [2.0, 0.5], [-1.0, 0.3]], np.float32)
HAND_CODES = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)


def _hand_variables(model):
    """``model``'s variables with HAND_CODES as its codebook; for gumbel, logits
    z.e - |e|^2 / 2, whose argmax is the nearest code."""
    variables = _init(model, jax.random.key(0), jnp.asarray(HAND_Z))
    codes = jnp.asarray(HAND_CODES)
    if model.kind == "ema":
        return {"vq_stats": {**variables["vq_stats"], "embedding": codes}}
    params = {**variables["params"], "embedding": codes}
    if model.kind == "gumbel":
        params["to_logits"] = {"kernel": codes.T, "bias": -0.5 * jnp.sum(codes**2, axis=-1)}
    return {**variables, "params": params}


@pytest.mark.parametrize("kind", ["ema", "learned", "gumbel"])
def test_q_loss_is_the_papers_for_every_kind(kind):
    """q_loss = (1 + beta) * mean((z - e)^2) to the codes the decoder receives, whatever
    the kind trains on: ema's training total is beta * MSE (1/5 of it at beta 0.25)."""
    beta = 0.4
    model = VectorQuantizer(3, 2, kind=kind, beta=beta)
    z = jnp.asarray(HAND_Z)
    variables = _hand_variables(model)
    e = HAND_CODES[_nearest(HAND_Z, HAND_CODES)]
    want = (1 + beta) * np.mean((HAND_Z.astype(np.float64) - e) ** 2)
    assert want == pytest.approx(1.4 * 0.4)

    out = _eval(model, variables, z)
    np.testing.assert_array_equal(out.indices, [0, 2, 1, 0])
    np.testing.assert_allclose(out.q_loss, want, rtol=1e-6)
    training_total = {"ema": beta * 0.4, "learned": (1 + beta) * 0.4}
    if kind in training_total:
        np.testing.assert_allclose(out.losses["total"], training_total[kind], rtol=1e-6)
        # Training: the same codes (the EMA update comes after the lookup).
        trained, _ = _train(model, variables, z, jax.random.key(1))
        np.testing.assert_allclose(trained.q_loss, want, rtol=1e-6)
    else:
        # Gumbel training decodes a soft mixture of codes: q_loss is measured to it.
        trained, _ = _train(model, variables, z, jax.random.key(1), temperature=0.7)
        mixture = np.asarray(trained.quantized, np.float64)
        assert np.abs(mixture - e).max() > 1e-3  # not the hard codes
        np.testing.assert_allclose(trained.q_loss, (1 + beta) * np.mean((HAND_Z - mixture) ** 2),
                                   rtol=1e-5)
    # A report, not a loss: no gradient reaches z through it.
    grad = jax.grad(lambda z: _eval(model, variables, z).q_loss)(z)
    np.testing.assert_array_equal(grad, np.zeros_like(HAND_Z))


def test_learned_losses_route_gradients_with_beta_on_commitment():
    beta, k, d = 0.3, 8, 4
    model = VectorQuantizer(k, d, kind="learned", beta=beta)
    z = _normal(0, (10, 6, d)) * 0.05
    variables = _init(model, jax.random.key(1), z, train=False)

    def total(params, z):
        return _eval(model, {**variables, "params": params}, z).losses["total"]

    g_emb, g_z = jax.grad(total, argnums=(0, 1))(variables["params"], z)
    x = np.asarray(z, np.float64).reshape(-1, d)
    emb = np.asarray(variables["params"]["embedding"], np.float64)
    idx = _nearest(x, emb)
    size = x.size
    # codebook = mean((sg(z) - e)^2), unweighted: gradient to the codes only.
    want_emb = np.zeros((k, d))
    np.add.at(want_emb, idx, 2 * (emb[idx] - x) / size)
    # commitment = beta * mean((z - sg(e))^2): gradient to z only.
    want_z = beta * 2 * (x - emb[idx]) / size
    np.testing.assert_allclose(g_emb["embedding"], want_emb, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(np.asarray(g_z).reshape(-1, d), want_z, rtol=1e-4, atol=1e-8)
    out = _eval(model, variables, z)
    np.testing.assert_allclose(out.losses["codebook"], np.mean((x - emb[idx]) ** 2), rtol=1e-5)
    np.testing.assert_allclose(out.losses["commitment"],
                               beta * np.mean((x - emb[idx]) ** 2), rtol=1e-5)


def test_param_codebooks_reject_restart_and_kmeans():
    z = jnp.zeros((4, 8))
    for kw in ({"dead_code_threshold": 1.0}, {"kmeans_init": True}):
        with pytest.raises(ValueError, match="kind='ema'"):
            VectorQuantizer(8, 8, kind="learned", **kw).init(jax.random.key(0), z, train=False)


def test_dead_code_restart_revives_codes():
    k, d = 64, 8
    model = VectorQuantizer(k, d, dead_code_threshold=1.0)
    sample = lambda seed: _normal(seed, (512, d))
    variables = _init(model, jax.random.key(0), sample(1), train=False)
    # 4 codes inside the data, 60 far away from all of it.
    emb = jnp.concatenate([0.1 * _normal(2, (4, d)), 50.0 + _normal(3, (k - 4, d))])
    variables = {"vq_stats": {**variables["vq_stats"], "embedding": emb, "embed_sum": emb}}
    step = functools.partial(_train, model)
    before = _eval(model, variables, sample(4)).health
    assert before["unique_fraction"] <= 4 / k
    health = []
    for i in range(6):
        out, variables = step(variables, sample(10 + i), jax.random.key(100 + i))
        health.append(jax.tree.map(float, out.health))
    assert health[0]["dead_fraction"] >= (k - 4) / k  # the far codes needed a restart
    assert health[-1]["dead_fraction"] <= 0.02
    after = _eval(model, variables, _normal(5, (4096, d)))
    assert after.health["unique_fraction"] >= 0.95
    assert after.health["dead_fraction"] == 0.0


@pytest.mark.parametrize("kw", [{"dead_code_threshold": 2.0}, {"kmeans_init": True}])
def test_sharded_update_gives_identical_codebook(kw):
    devices = jax.devices()
    assert len(devices) >= 8, "conftest should give 8 host devices"
    mesh = Mesh(np.array(devices[:8]), ("data",))
    model = VectorQuantizer(32, 8, **kw)
    z = _normal(0, (16, 4, 4, 4, 8))  # 1024 vectors
    variables = _init(model, jax.random.key(1), z, train=False)
    key = jax.random.key(2)

    def update(v, z, key):
        out, new = _train(model, v, z, key)
        return new["vq_stats"], out.indices

    single = jax.jit(update)(variables, z, key)[0]
    replicated, by_batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    sharded_step = jax.jit(update, in_shardings=(replicated, by_batch, replicated),
                           out_shardings=(replicated, by_batch))
    stats, _ = sharded_step(jax.device_put(variables, replicated),
                            jax.device_put(z, by_batch), key)
    for name in ("embedding", "cluster_size", "embed_sum", "usage"):
        shards = [np.asarray(s.data) for s in stats[name].addressable_shards]
        assert len(shards) == 8
        for s in shards[1:]:
            np.testing.assert_array_equal(s, shards[0])
        np.testing.assert_allclose(shards[0], np.asarray(single[name]), atol=1e-5, rtol=1e-5)


def test_kmeans_init_once():
    k, d = 24, 4
    centres = np.array([[4.0, 0, 0, 0], [0, -4.0, 0, 0], [0, 0, 4.0, 4.0]], np.float32)
    labels = np.random.default_rng(0).integers(0, 3, 1024)
    z = jnp.asarray(centres[labels]) + 0.05 * _normal(1, (1024, d))
    model = VectorQuantizer(k, d, kmeans_init=True, kmeans_iters=10)
    variables = _init(model, jax.random.key(2), jnp.zeros_like(z), train=True)
    assert not bool(variables["vq_stats"]["initialized"])  # init never updates state
    step = functools.partial(_train, model)
    out, variables = step(variables, z, jax.random.key(3))
    stats = variables["vq_stats"]
    assert bool(stats["initialized"])
    gap = np.sqrt(((np.asarray(stats["embedding"])[:, None] - centres[None]) ** 2).sum(-1))
    assert gap.min(1).max() < 0.2  # every code sits at a cluster centre ...
    assert gap.min(0).max() < 0.2  # ... and every centre has a code
    assert float(out.losses["commitment"]) < 0.25 * 0.01
    # A second call must keep the stored codebook (sentinel codes far from the data).
    far = stats["embedding"] + 100.0
    variables = {"vq_stats": {**stats, "embedding": far, "embed_sum": far * stats[
        "cluster_size"][:, None]}}
    out, variables = step(variables, z, jax.random.key(4))
    q = np.asarray(out.quantized)
    assert np.abs(q - np.asarray(z)).min() > 50.0
    assert bool(variables["vq_stats"]["initialized"])


def test_gumbel():
    k, d = 16, 8
    model = VectorQuantizer(k, d, kind="gumbel")
    z = _normal(0, (2, 3, 4, 4, d))
    variables = _init(model, jax.random.key(1), z, train=True)  # init needs no "vq" rng
    out, _ = _train(model, variables, z, jax.random.key(2), temperature=0.7)
    assert out.quantized.shape == z.shape and out.indices.shape == z.shape[:-1]
    assert set(out.losses) == {"commitment", "kl", "total"}
    assert float(out.losses["kl"]) > 0.0
    # The soft mixture is a convex combination of codes; with a tiny temperature it is
    # (almost) the chosen code.
    cold, _ = _train(model, variables, z, jax.random.key(2), temperature=1e-4)
    codes = np.asarray(variables["params"]["embedding"])
    np.testing.assert_allclose(cold.quantized, codes[np.asarray(cold.indices)], atol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        _train(model, variables, z, jax.random.key(2))
    # Eval: hard argmax of the 1x1 projection.
    p = variables["params"]["to_logits"]
    logits = np.asarray(z).reshape(-1, d) @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
    ev = _eval(model, variables, z)
    np.testing.assert_array_equal(np.asarray(ev.indices).ravel(), logits.argmax(-1))
    np.testing.assert_allclose(ev.quantized, codes[np.asarray(ev.indices)], atol=1e-6)
    # Uniform logits: KL to the uniform prior vanishes.
    flat = jax.tree.map(jnp.zeros_like, p)
    ev = _eval(model, {**variables, "params": {**variables["params"], "to_logits": flat}}, z)
    assert abs(float(ev.losses["kl"])) < 1e-6
    # Temperature schedule: from start, monotone non-increasing, clipped at end.
    t = np.asarray(gumbel_temperature(1.0, 1 / 16, anneal_steps=2000)(jnp.arange(0, 3000, 10)))
    assert t[0] == pytest.approx(1.0) and t[-1] == pytest.approx(1 / 16)
    assert np.all(np.diff(t) <= 0) and t.min() >= 1 / 16 - 1e-7
    assert float(gumbel_temperature(1.0, 1 / 16, 2000)(1000)) == pytest.approx(0.25, rel=1e-5)


def _mixture(n, seed, d=16, components=64):
    """n draws from a fixed continuous distribution: 64 Gaussians (sigma 0.3) around
    fixed N(0, 1) centres."""
    centres = np.random.default_rng(0).standard_normal((components, d))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, components, n)] + 0.3 * rng.standard_normal((n, d))
    return jnp.asarray(x, jnp.float32)


def test_short_fit_uses_the_codebook_with_restart_only():
    """300 steps on a 64-component mixture: the EMA codebook with the demo config's
    dead-code restart ends using >= 90% of its 256 codes; the defaults' EMA codebook
    (restart off) and the paper's learned codebook (Adam) keep under half in use
    (measured 1.000, 0.227 and 0.238): restart, not the EMA, keeps the codes in use."""
    restart = config_file("demo.py").quantizer.dead_code_threshold
    assert restart > 0 and defaults.get_config().quantizer.dead_code_threshold == 0
    k, d, batch, steps = 256, 16, 2048, 300
    batches = _mixture(steps * batch, seed=1, d=d).reshape(steps, batch, d)
    keys = jax.random.split(jax.random.key(1), steps)
    probe = _mixture(16384, seed=2, d=d)

    def ema_usage(threshold):
        ema = VectorQuantizer(k, d, dead_code_threshold=threshold)

        @jax.jit
        def fit_ema(variables):
            def step(v, xs):
                _, v = _train(ema, v, *xs)
                return v, None
            return jax.lax.scan(step, variables, (batches, keys))[0]

        with xla_optimizations():  # 300 steps per fit: 2 of them took 9.2 s, unoptimised 13.8 s
            variables = fit_ema(_init(ema, jax.random.key(0), probe[:batch]))
        return float(_eval(ema, variables, probe).health["unique_fraction"])

    learned = VectorQuantizer(k, d, kind="learned")
    opt = optax.adam(1e-3)

    @jax.jit
    def fit_learned(variables):
        def loss(params, stats, z, key):
            out, new = learned.apply({"params": params, "vq_stats": stats}, z, train=True,
                                     rngs={"vq": key}, mutable=["vq_stats"])
            return out.losses["total"], new["vq_stats"]

        def step(carry, xs):
            params, stats, opt_state = carry
            grads, stats = jax.grad(loss, has_aux=True)(params, stats, *xs)
            updates, opt_state = opt.update(grads, opt_state)
            return (optax.apply_updates(params, updates), stats, opt_state), None

        carry = (variables["params"], variables["vq_stats"], opt.init(variables["params"]))
        params, stats, _ = jax.lax.scan(step, carry, (batches, keys))[0]
        return {"params": params, "vq_stats": stats}

    with xla_optimizations():
        lv = fit_learned(_init(learned, jax.random.key(0), probe[:batch]))
    learned_usage = float(_eval(learned, lv, probe).health["unique_fraction"])
    usage = {"ema+restart": ema_usage(restart), "ema": ema_usage(0.0), "learned": learned_usage}
    print(f"\ncodebook usage after {steps} steps (K={k}, D={d}, batch {batch}, 16384-vector "
          "probe): " + ", ".join(f"{name} {u:.3f}" for name, u in usage.items()))
    assert usage["ema+restart"] >= 0.9
    assert usage["ema"] < 0.5 and usage["learned"] < 0.5


@pytest.mark.parametrize("kind", ["ema", "learned", "gumbel"])
def test_bfloat16_input(kind):
    model = VectorQuantizer(32, 8, kind=kind, dtype=jnp.bfloat16)
    z = _normal(0, (2, 2, 4, 4, 8)).astype(jnp.bfloat16)
    variables = _init(model, jax.random.key(1), z, train=False)
    out, new = _train(model, variables, z, jax.random.key(2), temperature=0.5)
    ev = _eval(model, new, z)
    for o in (out, ev):
        assert o.quantized.dtype == jnp.bfloat16 and o.quantized.shape == z.shape
        for leaf in jax.tree.leaves((o.quantized, o.losses, o.health)):
            assert np.all(np.isfinite(np.asarray(leaf, np.float32)))
    for leaf in jax.tree.leaves(new["vq_stats"]):
        assert np.all(np.isfinite(np.asarray(leaf, np.float32)))
    looked_up = model.apply(new, ev.indices, method=VectorQuantizer.lookup)
    assert looked_up.dtype == jnp.bfloat16 and looked_up.shape == z.shape


# ---- the kinds beyond the paper's: fsq, lfq, simvq, residual stages ----------------------


def _fsq_numpy_codes(levels):
    """Every code of an FSQ grid in index order (channel 0 the least significant digit),
    as the quantizer scales them: (digit - L // 2) / (L // 2)."""
    digits = np.stack(np.meshgrid(*[np.arange(n) for n in levels], indexing="ij"), -1)
    digits = digits.transpose(*reversed(range(len(levels))), len(levels)).reshape(-1, len(levels))
    half = np.array(levels) // 2
    return (digits - half) / half, digits


@pytest.mark.parametrize("levels", [(3, 4, 5), (8, 6, 5)])
def test_fsq_code_and_index_agree_with_numpy_over_every_combination(levels):
    k = int(np.prod(levels))
    model = make_quantizer("fsq", k, len(levels), levels=levels)
    codes, digits = _fsq_numpy_codes(levels)
    radix = np.cumprod((1,) + levels[:-1])
    np.testing.assert_array_equal(digits @ radix, np.arange(k))  # the numpy order is the index
    # Latents that the bound maps exactly onto each code: invert tanh in numpy.
    lv = np.array(levels, np.float64)
    half = (lv - 1) * (1 + 1e-3) / 2
    offset = np.where(lv % 2 == 0, 0.5, 0.0)
    z = np.arctanh((codes * (lv // 2) + offset) / half) - np.arctanh(offset / half)
    variables = _init(model, jax.random.key(0), jnp.asarray(z, jnp.float32))
    out = _eval(model, variables, jnp.asarray(z, jnp.float32))
    np.testing.assert_array_equal(out.indices, np.arange(k))
    np.testing.assert_allclose(out.quantized, codes, atol=1e-6)
    table = model.apply(variables, method=lambda m: m.table())
    np.testing.assert_allclose(table, codes, atol=1e-7)
    assert set(variables["vq_stats"]) == {"usage"} and "params" not in variables


def test_lfq_bits_index_and_entropies_agree_with_numpy():
    bits, temp = 5, 0.3  # odd: the batch entropy's two halves differ in size
    k = 2**bits
    z = np.array([[0.3, -0.2, 0.9, -1.1, 0.05], [-0.4, 0.6, -0.1, 0.2, -0.7],
                  [1.2, 0.4, -0.3, -0.5, 0.8], [-0.9, -0.6, 0.7, 0.1, 0.3]], np.float32)
    model = make_quantizer("lfq", k, bits, entropy_temperature=temp, entropy_weight=0.5,
                           entropy_diversity=0.7, beta=0.25)
    variables = _init(model, jax.random.key(0), jnp.asarray(z))
    out = _eval(model, variables, jnp.asarray(z))
    np.testing.assert_array_equal(out.indices, ((z > 0) * 2 ** np.arange(bits)).sum(-1))
    codes = np.array([[1.0 if (i >> b) & 1 else -1.0 for b in range(bits)] for i in range(k)])
    np.testing.assert_array_equal(model.apply(variables, method=lambda m: m.table()), codes)
    np.testing.assert_array_equal(out.quantized, np.where(z > 0, 1.0, -1.0))
    # Brute force over all 2^5 codes: softmax of -||z - c||^2 / T per sample.
    logits = -((z[:, None, :].astype(np.float64) - codes[None]) ** 2).sum(-1) / temp
    q = np.exp(logits - logits.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    h = lambda p: -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), -1)
    sample, batch = h(q).mean(), h(q.mean(0))
    got = lfq_entropies(jnp.asarray(z), temp)
    np.testing.assert_allclose(got, (sample, batch), rtol=1e-5)
    np.testing.assert_allclose(out.losses["entropy"], 0.5 * (sample - 0.7 * batch), rtol=1e-5)
    np.testing.assert_allclose(out.losses["commitment"],
                               0.25 * np.mean((z - np.where(z > 0, 1, -1)) ** 2), rtol=1e-6)
    # The penalty's weight: 3x at step 0, falling linearly to 1x at step 2000.
    scale = lambda s: float(model.apply(variables, s, method=lambda m, s: m.entropy_scale(s)))
    assert [scale(s) for s in (0, 1000, 2000, 5000)] == pytest.approx([1.5, 1.0, 0.5, 0.5])


def test_simvq_picks_the_nearest_row_of_the_projected_basis_and_trains_only_the_map():
    k, d = 64, 8
    model = make_quantizer("simvq", k, d)
    z = _normal(0, (300, d))
    variables = _init(model, jax.random.key(1), z)
    params = jax.tree.map(np.asarray, variables["params"])
    assert set(params) == {"basis", "projection"}
    # Another map than the initial identity, so that W C differs from C.
    params["projection"] = np.asarray(_normal(2, (d, d))) * 0.5 + np.eye(d, dtype=np.float32)
    variables = {**variables, "params": params}
    codes = params["basis"].astype(np.float64) @ params["projection"]
    out = _eval(model, variables, z)
    np.testing.assert_array_equal(out.indices, _nearest(np.asarray(z, np.float64), codes))
    np.testing.assert_allclose(out.quantized, codes[out.indices], rtol=1e-5, atol=1e-6)

    grads = jax.grad(lambda p: _eval(model, {**variables, "params": p}, z).losses["total"])(
        params)
    np.testing.assert_array_equal(grads["basis"], 0.0)  # frozen
    assert np.abs(grads["projection"]).max() > 0


def test_residual_output_is_the_sum_of_its_stages_and_the_residual_shrinks():
    """Three EMA stages with restart fitted to a 64-component mixture: the output is the
    sum of each stage's code of its ids (numpy), and the residual's norm falls stage by
    stage."""
    k, d, stages = 16, 4, 3
    model = make_quantizer("ema", k, d, stages=stages, dead_code_threshold=1.0, ema_decay=0.9)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((64, d)) * 2

    def batch(seed):
        r = np.random.default_rng(seed)
        x = centres[r.integers(0, 64, 512)] + 0.05 * r.standard_normal((512, d))
        return jnp.asarray(x, jnp.float32)

    variables = _init(model, jax.random.key(0), batch(0))
    for step in range(60):
        _, variables = _train(model, variables, batch(step), jax.random.key(step))
    x = batch(1000)
    out = _eval(model, variables, x)
    assert out.indices.shape == (512, stages)
    tables = np.asarray(model.apply(variables, method=lambda m: m.table()))
    assert tables.shape == (stages, k, d)
    per_stage = [tables[s][np.asarray(out.indices)[:, s]] for s in range(stages)]
    np.testing.assert_allclose(out.quantized, sum(per_stage), rtol=1e-5, atol=1e-5)
    looked_up = model.apply(variables, out.indices, method=lambda m, i: m.lookup(i))
    np.testing.assert_array_equal(looked_up, out.quantized)
    residual = np.asarray(x, np.float64)
    norms = [np.linalg.norm(residual)]
    for s in range(stages):
        residual = residual - per_stage[s]
        norms.append(np.linalg.norm(residual))
    assert all(a > 1.2 * b for a, b in zip(norms, norms[1:])), norms
    assert {"stage0_perplexity", "stage2_dead_fraction", "perplexity"} <= set(out.health)


def test_residual_stage_dropout_keeps_a_prefix_of_the_stages():
    k, d, stages = 8, 2, 4
    model = make_quantizer("learned", k, d, stages=stages, stage_dropout=0.999)
    z = _normal(0, (32, d))
    variables = _init(model, jax.random.key(0), z)
    tables = np.asarray(model.apply(variables, method=lambda m: m.table()))
    kept = set()
    for seed in range(12):
        out, _ = _train(model, variables, z, jax.random.key(seed))
        ids = np.asarray(out.indices)
        partial = [sum(tables[s][ids[:, s]] for s in range(n)) for n in range(1, stages + 1)]
        n = next(n for n in range(stages) if np.allclose(out.quantized, partial[n], atol=1e-5))
        kept.add(n + 1)
    assert len(kept) > 1 and kept <= set(range(1, stages + 1))


STRAIGHT_THROUGH = [("ema", {}), ("learned", {}), ("simvq", {}), ("lfq", {}),
                    ("fsq", {"levels": (8, 5, 5, 5, 5, 3, 3, 3)}),
                    ("ema", {"stages": 3})]


@pytest.mark.parametrize("kind, kw", STRAIGHT_THROUGH)
def test_straight_through_gradient_passes_the_rounding_for_every_kind(kind, kw):
    """d out / d z is the identity, except that fsq's gradient is its tanh bound's (the
    rounding passes it unchanged): numpy's derivative of that bound."""
    d = 8
    k = int(np.prod(kw["levels"])) if "levels" in kw else 256
    model = make_quantizer(kind, k, d, **kw)
    z = _normal(0, (2, 3, 4, d))
    c = _normal(1, z.shape)
    variables = _init(model, jax.random.key(2), z)

    def f(z):
        out, _ = _train(model, variables, z, jax.random.key(3))
        return jnp.sum(out.quantized * c)

    want = np.asarray(c, np.float64)
    if kind == "fsq":
        lv = np.array(kw["levels"], np.float64)
        half = (lv - 1) * (1 + 1e-3) / 2
        shift = np.arctanh(np.where(lv % 2 == 0, 0.5, 0.0) / half)
        want = want * (1 - np.tanh(np.asarray(z, np.float64) + shift) ** 2) * half / (lv // 2)
    np.testing.assert_allclose(jax.grad(f)(z), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind, kw", [("simvq", {}), ("lfq", {}), ("fsq", {"levels": (4, 4, 4)}),
                                      ("ema", {"stages": 2, "dead_code_threshold": 1.0})])
def test_new_kinds_in_bfloat16_and_sharded_equal_one_device(kind, kw):
    """bf16 latents (maths in float32, finite everywhere) and a training call with the
    batch split over 8 devices giving the statistics of one device."""
    d = 3 if kind == "fsq" else 6
    k = 64
    model = make_quantizer(kind, k, d, dtype=jnp.bfloat16, **kw)
    z = _normal(0, (16, 4, 4, d)).astype(jnp.bfloat16)
    variables = _init(model, jax.random.key(1), z)

    def update(v, z, key):
        out, new = _train(model, v, z, key)
        return new["vq_stats"], out.indices, out.losses["total"], out.quantized

    key = jax.random.key(2)
    stats, ids, total, quantized = jax.jit(update)(variables, z, key)
    assert quantized.dtype == jnp.bfloat16
    for leaf in jax.tree.leaves((stats, total, quantized)):
        assert np.all(np.isfinite(np.asarray(leaf, np.float32)))
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    replicated, by_batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    sharded = jax.jit(update, in_shardings=(replicated, by_batch, replicated),
                      out_shardings=(replicated, by_batch, replicated, by_batch))
    s_stats, s_ids, s_total, _ = sharded(jax.device_put(variables, replicated),
                                         jax.device_put(z, by_batch), key)
    np.testing.assert_array_equal(s_ids, ids)
    np.testing.assert_allclose(s_total, total, rtol=1e-4)
    for a, b in zip(jax.tree.leaves(s_stats), jax.tree.leaves(stats)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
