"""Config checks with clear messages, and the model specs a config defines."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import typing

import jax
import ml_collections

from pose_vq import defaults, runtime, sharding
from pose_vq.data import modes
from pose_vq.errors import ConfigError  # defined below every layer: dataset builds raise it too
from pose_vq.models import quantizer
from pose_vq.models.vqgan import GeneratorSpec

QUANTIZER_KINDS = quantizer.KINDS
CONV_IMPLS = ("auto", *runtime.LAYER_CONV_IMPLS)  # model.conv_impl; see runtime.conv_impl_for
SCORE_SOURCES = typing.get_args(modes.ScoreSource)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Raise ConfigError naming the knob when the config cannot work; return it otherwise."""
    d, m, q = config.data, config.model, config.quantizer
    _check(d.mode in modes.MODES, f"data.mode={d.mode!r}: choose one of {sorted(modes.MODES)}")
    s, t = m.spatial_downsamples, m.temporal_downsamples
    _check(1 <= s <= len(m.channels), f"model.spatial_downsamples={s} must be in 1..{len(m.channels)} "
           f"(one per level of model.channels)")
    _check(0 <= t <= s, f"model.temporal_downsamples={t} must be in 0..spatial_downsamples={s}")
    _check(d.heatmap_size % 2**s == 0,
           f"data.heatmap_size={d.heatmap_size} is not divisible by 2**spatial_downsamples={2**s}")
    if m.reduce_temporal:
        _check(s == t == 3 and d.frames == 48,
               "model.reduce_temporal works only at F8 (3 spatial and temporal down-samplings) "
               f"with 48 frames; got {s}/{t} and data.frames={d.frames}")
    else:
        _check(d.frames % 2**t == 0,
               f"data.frames={d.frames} is not divisible by 2**temporal_downsamples={2**t}")
    for name, width in [("model.latent_channels", m.latent_channels),
                        *[(f"model.channels[{i}]", w) for i, w in enumerate(m.channels)]]:
        _check(width % m.norm_groups == 0,
               f"{name}={width} is not a multiple of model.norm_groups={m.norm_groups}")
    _check(m.conv_impl in CONV_IMPLS,
           f"model.conv_impl={m.conv_impl!r}: choose one of {CONV_IMPLS}")
    _check(0 <= m.remat_levels <= len(m.channels),
           f"model.remat_levels={m.remat_levels} must be in 0..{len(m.channels)} (levels of "
           "model.channels)")
    _check(m.dtype in ("float32", "bfloat16"),
           f"model.dtype={m.dtype!r}: choose 'float32' or 'bfloat16'")
    _check(not (m.conv_impl == "winograd" and m.dtype == "bfloat16"),
           "model.conv_impl='winograd' needs model.dtype='float32': its F(4,3) transforms "
           "amplify bfloat16's rounding; use 'auto' (folded on CPU in bfloat16) or 'folded'")
    o = config.optimizer
    _check(o.schedule in ("constant", "cosine"),
           f"optimizer.schedule={o.schedule!r}: choose 'constant' or 'cosine'")
    _check(0 <= o.warmup_steps < max(config.train.num_steps, 1) or o.schedule == "constant",
           f"optimizer.warmup_steps={o.warmup_steps} must be in 0..train.num_steps-1")
    _check(q.kind in QUANTIZER_KINDS, f"quantizer.kind={q.kind!r}: choose one of {QUANTIZER_KINDS}")
    _check(q.num_codes >= 2, f"quantizer.num_codes={q.num_codes} must be >= 2")
    for knob, on in [("dead_code_threshold", q.dead_code_threshold > 0), ("kmeans_init", q.kmeans_init)]:
        _check(q.kind == "ema" or not on,
               f"quantizer.{knob} needs quantizer.kind='ema' (a {q.kind} codebook "
               + ("lives in the params and is only changed by its optimiser)"
                  if q.kind in quantizer.TABLE_KINDS else "has no code table to edit)"))
    _check(q.kind in quantizer.TABLE_KINDS or not q.l2_normalize,
           f"quantizer.l2_normalize needs a code table (kind {', '.join(quantizer.TABLE_KINDS)}); "
           f"kind={q.kind!r} has none")
    if q.kind == "fsq":
        levels = tuple(q.levels)
        _check(len(levels) > 0 and min(levels) >= 2,
               f"quantizer.kind='fsq' needs quantizer.levels, values per channel >= 2 "
               f"(e.g. {quantizer.FSQ_LEVELS[10]} for 1000 codes); got {levels}")
        product = int(math.prod(levels))
        _check(product == q.num_codes,
               f"quantizer.levels={levels} give {product} codes but quantizer.num_codes="
               f"{q.num_codes}: set num_codes to their product")
    if q.kind == "lfq":
        _check(q.num_codes & (q.num_codes - 1) == 0,
               f"quantizer.kind='lfq' needs num_codes = 2^bits; got {q.num_codes}")
    _check(q.stages >= 1, f"quantizer.stages={q.stages} must be >= 1")
    _check(0.0 <= q.stage_dropout < 1.0,
           f"quantizer.stage_dropout={q.stage_dropout} must be in [0, 1)")
    n = config.discriminator.num_layers
    _check(min(d.frames, d.heatmap_size) >= 2 ** (n + 1),
           f"discriminator.num_layers={n} needs clips of at least {2 ** (n + 1)} frames and "
           f"pixels (its patch grid would be empty); got {d.frames} frames of {d.heatmap_size}px")
    tc, ec = config.train, config.eval
    for knob, value in [("train.batch_size", tc.batch_size), ("train.num_steps", tc.num_steps),
                        ("train.log_every", tc.log_every),
                        ("train.checkpoint_every", tc.checkpoint_every),
                        ("train.keep_checkpoints", tc.keep_checkpoints),
                        ("eval.batch_size", ec.batch_size)]:
        _check(value >= 1, f"{knob}={value} must be >= 1")
    _check(0.0 <= tc.ema_decay < 1.0, f"train.ema_decay={tc.ema_decay} must be in [0, 1)")
    _check(d.score_source in SCORE_SOURCES,
           f"data.score_source={d.score_source!r}: choose one of {SCORE_SOURCES}")
    _check(d.sigma > 0, f"data.sigma={d.sigma} must be > 0")
    _check(0 <= d.joint_req < 1, f"data.joint_req={d.joint_req} must be in [0, 1)")
    _check(d.kind in ("limb", "keypoint"), f"data.kind={d.kind!r}: choose 'limb' or 'keypoint'")
    _check(d.kind == "limb" or "3d" not in modes.clip_kinds(modes.MODES[d.mode]),
           f"data.kind='keypoint' needs a 2D mode (c2d, m2d): data.mode={d.mode!r} renders "
           "3D limbs only")
    _check(config.cpu_devices >= 0, f"cpu_devices={config.cpu_devices} must be >= 0")
    _validate_sharding(config.sharding)
    if config.cpu_devices:  # the data axis of the mesh these devices make
        try:
            data, _ = sharding.mesh_shape(config.sharding.mesh, config.cpu_devices)
        except ValueError as e:
            raise ConfigError(f"{e} (cpu_devices={config.cpu_devices})") from None
        for knob, value in [("train.batch_size", tc.batch_size),
                            ("eval.batch_size", ec.batch_size)]:
            _check(value % data == 0, f"{knob}={value} is not divisible by the {data} devices "
                   f"of the data axis (cpu_devices={config.cpu_devices})")
    _check(d.prefetch >= 0, f"data.prefetch={d.prefetch} must be >= 0")
    _check(d.read_ahead >= 1, f"data.read_ahead={d.read_ahead} must be >= 1")
    _check(d.synthetic_seed >= 0, f"data.synthetic_seed={d.synthetic_seed} must be >= 0")
    _check(config.loss.perceptual_planes >= 0,
           f"loss.perceptual_planes={config.loss.perceptual_planes} must be >= 0 (0: all planes)")
    _check(config.loss.perceptual_chunk >= 0,
           f"loss.perceptual_chunk={config.loss.perceptual_chunk} must be >= 0 (0: one pass)")
    return config


def _validate_sharding(sh: ml_collections.ConfigDict) -> None:
    _check(sh.strategy in sharding.STRATEGIES,
           f"sharding.strategy={sh.strategy!r}: choose one of {tuple(sharding.STRATEGIES)}")
    mesh = dict(sh.mesh)
    _check(set(mesh) == set(sharding.MESH_AXES),
           f"sharding.mesh={mesh}: give the size of each of {sharding.MESH_AXES}")
    _check(all(v == -1 or v >= 1 for v in mesh.values()) and list(mesh.values()).count(-1) <= 1,
           f"sharding.mesh={mesh}: sizes are >= 1, one of them may be -1 (the rest)")
    for rule in sh.rules:
        _check(len(rule) == 2 and rule[0] in sharding.LOGICAL_AXES
               and rule[1] in sharding.MESH_AXES,
               f"sharding.rules: {tuple(rule)} is not (logical axis, mesh axis); logical axes "
               f"are {tuple(sharding.LOGICAL_AXES)}, mesh axes {sharding.MESH_AXES}")


def check_batch_divisible(config: ml_collections.ConfigDict, data_size: int,
                          knobs: tuple[str, ...] = ("train.batch_size", "eval.batch_size")
                          ) -> None:
    """Raise ConfigError unless each global batch splits evenly over the ``data_size``
    devices of the mesh's data axis (across all processes)."""
    for knob in knobs:
        section, key = knob.split(".")
        value = config[section][key]
        _check(value % data_size == 0,
               f"{knob}={value} is not divisible by the {data_size} devices of the mesh's "
               f"data axis: use a multiple of {data_size}")


def load_file(path: str | pathlib.Path) -> ml_collections.ConfigDict:
    """The config of an experiment file as ``--config`` reads it: ``FILE.py[:ARG]`` ->
    ``get_config(ARG)`` (``get_config()`` without an argument). For code and tests that
    start from the repository's ``configs/`` files without absl's flag."""
    path, _, arg = str(path).partition(":")
    spec = importlib.util.spec_from_file_location(f"pose_vq_config_{pathlib.Path(path).stem}",
                                                  path)
    if spec is None or not pathlib.Path(path).is_file():
        raise ConfigError(f"{path}: config file not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def from_json(text: str) -> ml_collections.ConfigDict:
    """A config saved as JSON (``config.to_json_best_effort()``), laid over today's
    defaults so knobs added since it was written keep their default values."""
    config = defaults.get_config()
    config.update(json.loads(text))
    return validate(config)


def generator_spec(config: ml_collections.ConfigDict, platform: str | None = None
                   ) -> GeneratorSpec:
    """The generator a (validated) config describes, its convolutions as they run on
    ``platform`` (default: JAX's backend); channels follow the data mode."""
    validate(config)
    mode = modes.MODES[config.data.mode]
    m, q = config.model, config.quantizer
    extra = {"kind": q.kind, "beta": q.beta, "ema_decay": q.ema_decay,
             "ema_epsilon": q.ema_epsilon, "l2_normalize": q.l2_normalize,
             "kmeans_init": q.kmeans_init, "dead_code_threshold": q.dead_code_threshold,
             "kl_weight": q.kl_weight, "levels": tuple(q.levels), "stages": q.stages,
             "stage_dropout": q.stage_dropout, "entropy_weight": q.entropy_weight,
             "entropy_temperature": q.entropy_temperature,
             "entropy_diversity": q.entropy_diversity,
             "entropy_anneal_factor": q.entropy_anneal_factor,
             "entropy_anneal_steps": q.entropy_anneal_steps}
    return GeneratorSpec(
        in_channels=modes.channels(mode.input_kind, config.data.kind),
        out_channels=modes.channels(mode.target_kind, config.data.kind),
        image_size=config.data.heatmap_size, frames=config.data.frames,
        channels=tuple(m.channels), latent_channels=m.latent_channels,
        encoder_blocks=m.encoder_blocks, decoder_blocks=m.decoder_blocks,
        attention_resolutions=tuple(m.attention_resolutions),
        spatial_downsamples=m.spatial_downsamples, temporal_downsamples=m.temporal_downsamples,
        reduce_temporal=m.reduce_temporal, dropout=m.dropout, norm_groups=m.norm_groups,
        num_codes=q.num_codes, quantizer=tuple(sorted(extra.items())), dtype=m.dtype,
        conv_impl=runtime.conv_impl_for(m.conv_impl, platform or jax.default_backend(), m.dtype),
        remat_levels=m.remat_levels)


# The paper's comparisons: its model and the two systems it is measured against.
VARIANTS = {
    "vqgan": "the paper's model: codebook + discriminator (the config as given)",
    "vqvae": "ablation without the discriminator (adversarial weight 0): the paper's "
             "non-adversarial VQ-VAE, for the temporal-instability claim",
    "dvae": "Gumbel-softmax dVAE baseline, no discriminator: the paper's SSIM baseline",
}


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
    """A copy of ``config`` turned into one of ``VARIANTS``; everything else is unchanged.

    The dVAE anneals its temperature over the run's own length, so a short run ends at the
    final temperature as a long one does.
    """
    _check(variant in VARIANTS, f"variant {variant!r}: choose one of {sorted(VARIANTS)}")
    c = ml_collections.ConfigDict(config.to_dict())
    if variant in ("vqvae", "dvae"):
        c.loss.adversarial_weight = 0.0
    if variant == "dvae":
        c.quantizer.kind, c.quantizer.levels = "gumbel", ()
        c.quantizer.dead_code_threshold = 0.0
        c.quantizer.kmeans_init = False
        c.quantizer.temperature_anneal_steps = c.train.num_steps
    return validate(c)
