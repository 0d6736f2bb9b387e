"""Generator and discriminator: paper shapes and sizes, round trips, fixes, dtypes."""

import dataclasses
import json
import math
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_vq import config as config_lib
from pose_vq import main as main_lib
from pose_vq import runtime
from pose_vq.models import layers
from pose_vq.models.discriminator import PatchDiscriminator
from pose_vq.models.vqgan import VQGAN
from tests import config_file

VARIANTS = ["3d_1024", "m2d_1024", "c2d_128", "m2d_3d"]


def load(name, arg=None):
    """A config with native convolutions: the shapes, counts and functions checked here do
    not depend on the conv path (test_layers checks the paths equal), and native traces
    fastest."""
    config = config_file(f"{name}.py" + (f":{arg}" if arg else ""))
    config.model.conv_impl = "native"
    return config


def _apply(spec):
    """Jitted model application (op-by-op execution is slow on CPU)."""
    return jax.jit(VQGAN(spec).apply, static_argnames="method")


def _init(spec, batch=1, seed=0):
    x = jax.random.uniform(jax.random.key(seed),
                           (batch, spec.frames, spec.image_size, spec.image_size, spec.in_channels))
    k = jax.random.key(1)
    return x, jax.jit(lambda x: VQGAN(spec).init({"params": k, "vq": k}, x, train=False))(x)


def test_reference_parameter_counts():
    """The reference's 3D F8 1024-code model (``:paper``, its quantizer): 50,245,571
    generator (encoder, decoder, codebook, quant convs) and 11,056,961 discriminator
    parameters."""
    v = main_lib.abstract_variables(load("3d_1024", "paper"))
    params = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(v["generator"]["params"]))
    codebook = v["generator"]["vq_stats"]["quantizer"]["embedding"]
    assert params + math.prod(codebook.shape) == 50_245_571
    disc = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(v["discriminator"]["params"]))
    assert disc == 11_056_961


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("compression", ["f8", "f16", "f32"])
def test_paper_configs_shapes_at_reduced_size(name, compression):
    config = load(name, compression)
    config.data.heatmap_size = 32  # reduced spatial size; F32 still divides it
    spec = config_lib.generator_spec(config)
    clip = jax.ShapeDtypeStruct((2, spec.frames, 32, 32, spec.in_channels), jnp.float32)
    k = jax.random.key(0)  # one trace: the forward pass that init runs anyway
    (recon, q), _ = jax.eval_shape(
        lambda x: VQGAN(spec).init_with_output({"params": k, "vq": k}, x, train=False), clip)
    assert recon.shape == (2, spec.frames, 32, 32, spec.out_channels)
    assert q.indices.shape == (2, *spec.token_grid())
    s = spec.spatial_downsamples
    assert spec.token_grid()[1:] == (32 >> s, 32 >> s)
    expected_in = {"c2d": 17}.get(config.data.mode, 3)
    assert (spec.in_channels, spec.out_channels) == (expected_in, 1 if name == "c2d_128" else 3)


def test_token_grids_of_the_paper():
    grid = lambda n, a=None: config_lib.generator_spec(load(n, a)).token_grid()
    assert grid("3d_1024") == (8, 16, 16) and grid("3d_1024", "f16") == (4, 8, 8)
    assert grid("3d_1024", "f32") == (2, 4, 4)
    assert grid("c2d_128") == (1, 16, 16)  # 48 frames, time strided 4, 4, 4
    assert grid("m2d_3d") == (16, 16, 16)  # time halved one level fewer


def test_paper_configs_take_the_measured_quantizer_and_paper_the_papers():
    q = load("3d_1024").quantizer
    assert (q.kind, tuple(q.levels), q.num_codes) == ("fsq", (8, 5, 5, 5), 1000)
    q = load("m2d_1024").quantizer
    assert (q.kind, q.num_codes, q.dead_code_threshold) == ("ema", 1024, 1.0)
    q = load("c2d_128").quantizer
    assert (q.kind, q.num_codes, q.kmeans_init) == ("simvq", 128, False)
    for name, arg in (("3d_1024", "paper"), ("c2d_128", "f16,paper"), ("m2d_3d", "PAPER,f32")):
        config = load(name, arg)
        q = config.quantizer
        assert (q.kind, q.num_codes, q.dead_code_threshold, q.stages) == (
            "ema", 128 if name == "c2d_128" else 1024, 0.0, 1)
    assert load("m2d_3d", "PAPER,f32").model.spatial_downsamples == 5
    vqvae, dvae = load("3d_vqvae").quantizer, load("3d_dvae").quantizer
    assert vqvae.kind == "fsq" and (dvae.kind, tuple(dvae.levels)) == ("gumbel", ())
    with pytest.raises(ValueError, match="'f8,f16': one compression at most"):
        load("3d_1024", "f8,f16")


def demo_native():
    """The demo model with native convolutions (see load)."""
    return load("demo")


def test_forward_encode_decode_round_trip():
    config = demo_native()
    spec = config_lib.generator_spec(config)
    x, variables = _init(spec, batch=2)
    apply = _apply(spec)
    recon, q = apply(variables, x)
    tokens = apply(variables, x, method=VQGAN.encode)
    np.testing.assert_array_equal(tokens, q.indices)
    decoded = apply(variables, tokens, method=VQGAN.decode_indices)
    # Equal up to the straight-through estimator's float rounding, z + (e - z) vs e.
    np.testing.assert_allclose(decoded, recon, atol=1e-4)
    m = config.model
    grid = (config.data.frames // 2**m.temporal_downsamples,
            *(config.data.heatmap_size // 2**m.spatial_downsamples,) * 2)
    assert tokens.dtype == jnp.int32 and tokens.shape == (2, *grid) == (2, 8, 16, 16)


def test_batch_elements_are_independent():
    """GroupNorm everywhere: an example's output does not depend on its batch mates."""
    spec = config_lib.generator_spec(demo_native())
    x, variables = _init(spec, batch=2)
    apply = _apply(spec)
    both, _ = apply(variables, x)
    one, _ = apply(variables, x[:1])
    np.testing.assert_allclose(both[:1], one, atol=1e-4)  # float32 summation-order noise
    disc = PatchDiscriminator(16, 3, 8)
    dv = jax.jit(disc.init)(jax.random.key(0), x)
    disc_apply = jax.jit(disc.apply)
    logits = disc_apply(dv, x)
    np.testing.assert_allclose(logits[:1], disc_apply(dv, x[:1]), atol=1e-4)
    assert logits.shape == (2, 2, 4, 4, 1)


def test_attention_residual_adds_the_input():
    """With its output projection zeroed, the block is the identity (the reference
    returned the normalised input instead)."""
    x = jax.random.normal(jax.random.key(0), (1, 2, 4, 4, 8)) * 3 + 1
    block = layers.NonLocalBlock()
    v = block.init(jax.random.key(1), x)
    v = jax.tree_util.tree_map_with_path(
        lambda p, a: jnp.zeros_like(a) if "proj_out" in jax.tree_util.keystr(p) else a, v)
    np.testing.assert_allclose(block.apply(v, x), x, atol=1e-6)


def test_down_and_up_sampling_shapes():
    x = jnp.ones((1, 8, 16, 16, 4))
    for kernel, stride, t in [(3, 2, 4), (2, 1, 8), (3, 4, 2)]:
        y, _ = layers.Downsample(kernel, stride).init_with_output(jax.random.key(0), x)
        assert y.shape == (1, t, 8, 8, 4)
    up = layers.Upsample(3)
    y, _ = up.init_with_output(jax.random.key(0), x)
    assert y.shape == (1, 24, 32, 32, 4)


def test_bf16_forward_is_finite_with_float32_params():
    config = demo_native()
    config.model.dtype = "bfloat16"
    spec = config_lib.generator_spec(config)
    x, variables = _init(spec)
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(variables["params"]))
    recon, q = _apply(spec)(variables, x)
    assert recon.dtype == jnp.float32 and bool(jnp.isfinite(recon).all())
    assert bool(jnp.isfinite(q.losses["total"]))


def test_remat_changes_neither_parameters_nor_gradients():
    """Rematerialised levels keep the parameter tree (checkpoints load either way) and
    give the same loss gradient; remat keeps fewer bytes live in the compiled backward."""
    # The demo's model as it was at 8-32-64: at 16-32-64 (`demo.py:compact`), remat of every
    # level compiled to more temporaries than none (40.6 MB against 37.3 MB, XLA CPU,
    # 2026-12-07), so remat's saving depends on the model and is measured per model.
    demo = load("demo", "compact")
    demo.model.channels = (8, 32, 64)
    spec = dataclasses.replace(config_lib.generator_spec(demo), conv_impl="folded")
    x, variables = _init(spec)  # folded: compiles faster than winograd

    def loss_of(levels):
        s = dataclasses.replace(spec, remat_levels=levels)
        remat_vars = jax.eval_shape(lambda: VQGAN(s).init(
            {"params": jax.random.key(1), "vq": jax.random.key(1)}, x))
        assert (jax.tree_util.tree_structure(remat_vars["params"])
                == jax.tree_util.tree_structure(variables["params"]))

        def loss(params):
            recon, q = VQGAN(s).apply({**variables, "params": params}, x, train=False)
            return jnp.mean(jnp.abs(recon - x)) + q.losses["total"]
        return loss

    loss_of(1)  # the full-resolution level alone: the same tree
    # 3: every level, attention ones too; compiled as configure_jax has every process compile.
    plain, every = (jax.jit(jax.grad(loss_of(n))).lower(variables["params"]).compile(
        runtime.xla_compiler_options("cpu")) for n in (0, 3))
    for a, b in zip(jax.tree_util.tree_leaves(plain(variables["params"])),
                    jax.tree_util.tree_leaves(every(variables["params"]))):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    temp = lambda compiled: compiled.memory_analysis().temp_size_in_bytes
    assert temp(every) < temp(plain)


def test_rematerialised_blocks_keep_only_their_inputs():
    """Six rematerialised ResBlocks keep about one activation each for the backward pass,
    not all of their internals. XLA CPU does so only with configure_jax's option, which
    keeps remat's optimisation barriers; without it the recomputation is merged back."""
    x = jnp.ones((1, 8, 32, 32, 16))

    class Chain(nn.Module):
        remat: bool

        @nn.compact
        def __call__(self, h):
            for _ in range(6):
                h = layers.ResBlock(16, norm_groups=8, remat=self.remat)(h)
            return h

    def temp(remat):
        chain = Chain(remat)
        grad = jax.jit(jax.grad(lambda v: jnp.sum(chain.apply(v, x) ** 2)))
        compiled = grad.lower(chain.init(jax.random.key(0), x)).compile(
            runtime.xla_compiler_options("cpu"))
        return compiled.memory_analysis().temp_size_in_bytes
    assert temp(True) < 0.5 * temp(False)


@pytest.mark.parametrize("knob, value, message", [
    ("data.frames", 60, "data.frames=60 is not divisible"),
    ("data.mode", "4d", "data.mode='4d'"),
    ("data.heatmap_size", 100, "data.heatmap_size=100"),
    ("model.temporal_downsamples", 4, "temporal_downsamples=4 must be in 0..spatial"),
    ("model.reduce_temporal", True, "reduce_temporal works only at F8"),
    ("model.norm_groups", 24, "not a multiple of model.norm_groups=24"),
    ("quantizer.kind", "vq2", "quantizer.kind='vq2': choose one of"),
    ("quantizer.kind", "fsq", "quantizer.kind='fsq' needs quantizer.levels"),
    ("quantizer.stages", 0, "quantizer.stages=0 must be >= 1"),
    ("data.score_source", "random", "data.score_source='random'"),
    ("data.sigma", 0.0, "data.sigma=0.0 must be > 0"),
    ("model.remat_levels", 6, "model.remat_levels=6 must be in 0..5"),
    ("model.dtype", "float16", "model.dtype='float16'"),
])
def test_config_validation_names_the_knob(knob, value, message):
    config = load("3d_1024", "paper")  # an EMA codebook: no FSQ levels
    section, key = knob.split(".")
    config[section][key] = value
    with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(")):
        config_lib.validate(config)


@pytest.mark.parametrize("knobs, message", [
    ({"kind": "fsq", "levels": (8, 5, 5, 5)}, r"give 1000 codes but quantizer.num_codes=1024"),
    ({"kind": "lfq", "num_codes": 1000}, "needs num_codes = 2\\^bits"),
    ({"kind": "fsq", "levels": (1000,), "num_codes": 1000, "dead_code_threshold": 1.0},
     "dead_code_threshold needs quantizer.kind='ema'"),
    ({"kind": "lfq", "l2_normalize": True}, "l2_normalize needs a code table"),
    ({"stage_dropout": 1.0, "stages": 2}, r"stage_dropout=1.0 must be in \[0, 1\)"),
])
def test_quantizer_knobs_are_checked(knobs, message):
    config = load("3d_1024", "paper")  # an EMA codebook of 1024 codes
    config.quantizer.update(knobs)
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)


# Every quantizer kind, at the tiny test shapes: (quantizer knobs, code width the
# encoder's quant conv emits).
# (learned: a table like ema's and simvq's; lfq alone: as in its two stages)
EVERY_KIND = [({"kind": "ema"}, 32), ({"kind": "gumbel"}, 32), ({"kind": "simvq"}, 32),
              ({"kind": "fsq", "levels": (4, 4, 4)}, 3), ({"kind": "lfq", "stages": 2}, 6),
              ({"kind": "ema", "stages": 3}, 32)]


@pytest.mark.parametrize("knobs, width", EVERY_KIND,
                         ids=[f"{k['kind']}{k.get('stages', '')}" for k, _ in EVERY_KIND])
def test_every_kind_decodes_its_tokens_to_the_evaluated_reconstruction(knobs, width):
    """decode(encode(x)) is evaluation's reconstruction for every kind and stage count
    (the same codes reach the decoder: equal to float rounding), with the kind's latent
    width and token shape."""
    config = demo_native()
    config.data.update(frames=4, heatmap_size=8)
    config.discriminator.num_layers = 1
    config.model.update(channels=(8, 8), spatial_downsamples=1, temporal_downsamples=1,
                        attention_resolutions=())
    config.quantizer.update(num_codes=64, dead_code_threshold=0.0)
    config.quantizer.update(knobs)
    spec = config_lib.generator_spec(config)
    assert spec.code_dim == width
    x, variables = _init(spec, batch=2)
    model = VQGAN(spec)

    @jax.jit  # one program: a compile per kind is the test's cost
    def evaluate_and_round_trip(variables, x):
        recon, q = model.apply(variables, x)
        tokens = model.apply(variables, x, method=VQGAN.encode)
        return recon, q, tokens, model.apply(variables, tokens, method=VQGAN.decode_indices)

    recon, q, tokens, decoded = evaluate_and_round_trip(variables, x)
    assert tokens.shape == (2, *spec.token_shape()) == q.indices.shape
    assert tokens.shape[-1] == knobs.get("stages", 4)  # (t, h, w) = (2, 4, 4) or stages last
    np.testing.assert_array_equal(tokens, q.indices)
    assert tokens.min() >= 0 and tokens.max() < 64
    np.testing.assert_allclose(decoded, recon, atol=1e-5)


def test_checkpoints_written_before_the_new_quantizers_restore():
    """The train state's layout (every leaf's path, shape and dtype) of the kinds that
    existed before fsq/lfq/simvq/stages is the one recorded then in
    tests/checkpoint_layout.json (made at commit 3e25502 from the demo config), so their
    checkpoints restore."""
    import functools
    import hashlib

    from pose_vq import state as state_lib

    recorded = json.loads((pathlib.Path(__file__).parent / "checkpoint_layout.json").read_text())
    for name, knobs in {"ema": {}, "ema_kmeans": {"kmeans_init": True},
                        "learned": {"kind": "learned", "dead_code_threshold": 0.0},
                        "gumbel": {"kind": "gumbel", "dead_code_threshold": 0.0}}.items():
        config = config_file("demo.py:compact")  # the demo's grid when the layout was recorded
        config.model.channels = (8, 32, 64)  # ... and its width
        config.quantizer.update(knobs)
        models = state_lib.Models.create(config)
        shapes = jax.eval_shape(functools.partial(state_lib.init_state, models, 0))
        lines = sorted(f"{jax.tree_util.keystr(p)} {tuple(x.shape)} {x.dtype}"
                       for p, x in jax.tree_util.tree_flatten_with_path(shapes)[0])
        assert [line for line in lines if "quantizer" in line] == recorded[name]["quantizer"]
        assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == recorded[name]["sha256"]


def test_variant_rejects_unknown_compression():
    with pytest.raises(ValueError, match="'f64' is neither a compression"):
        load("3d_1024", "f64")


def test_describe_cli_prints_json_last():
    res = subprocess.run([sys.executable, "-m", "pose_vq.main", "--config=configs/3d_1024.py:f16",
                          "--mode=describe"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["token_grid"] == [4, 8, 8] and summary["discriminator_params"] == 11_056_961
    assert summary["generator_params"] > 4e7
    assert "Total:" in res.stdout


def test_cpu_devices_must_divide_the_batches():
    config = load("demo")
    config.cpu_devices = 3
    with pytest.raises(config_lib.ConfigError,
                       match=r"train.batch_size=4 is not divisible by the 3 devices of the data "
                             r"axis \(cpu_devices=3\)"):
        config_lib.validate(config)


def test_describe_counts_a_residual_quantizers_tokens_and_codebooks(capsys):
    config = demo_native()
    config.quantizer.update(num_codes=64, stages=3)  # EMA with restart, three codebooks
    summary = main_lib.describe(config)
    assert (summary["token_grid"], summary["stages"], summary["tokens_per_clip"]) == (
        [8, 16, 16], 3, 8 * 16 * 16 * 3)
    assert capsys.readouterr().out.count("EMA codebook (vq_stats") == 3
    single = main_lib.describe(demo_native())
    assert single["generator_params"] - summary["generator_params"] == 256 * 32 - 3 * 64 * 32
