"""pose_vq entry point: python -m pose_vq.main --config=configs/3d_1024.py --mode=describe.

Thin on purpose: flags, config validation, dispatch. ``--config.<knob>=value`` overrides
any knob of the config file; a variant takes its compression after a colon
(``configs/3d_1024.py:f16``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags
from clu import parameter_overview
from ml_collections import config_flags

from data_builders.panoptic_heatmaps import make_config
from pose_vq import config as config_lib
from pose_vq.models.discriminator import PatchDiscriminator
from pose_vq.models.vqgan import VQGAN

config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and results.")
flags.DEFINE_enum("mode", "describe", ["describe"], "What to do.")
FLAGS = flags.FLAGS


def _count(tree: Any) -> int:
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


def abstract_variables(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Shapes of the generator's and discriminator's variables, without allocating them."""
    spec = config_lib.generator_spec(config)
    clip = jnp.zeros((1, spec.frames, spec.image_size, spec.image_size, spec.in_channels))
    target = jnp.zeros(clip.shape[:-1] + (spec.out_channels,))
    key = jax.random.key(0)
    generator = jax.eval_shape(lambda: VQGAN(spec).init(
        {"params": key, "vq": key, "dropout": key}, clip, train=False))
    disc = PatchDiscriminator(config.discriminator.filters, config.discriminator.num_layers,
                              config.discriminator.norm_groups, config.model.dtype,
                              config.model.conv_impl)
    discriminator = jax.eval_shape(lambda: disc.init(key, target))
    tokens = jax.eval_shape(lambda v: VQGAN(spec).apply(v, clip, method=VQGAN.encode), generator)
    return {"spec": spec, "generator": generator, "discriminator": discriminator,
            "tokens": tokens}


def describe(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Print parameter tables and shapes; return the summary printed as the last line."""
    v = abstract_variables(config)
    spec = v["spec"]
    print("Generator parameters:")
    print(parameter_overview.get_parameter_overview(v["generator"]["params"], include_stats=False))
    codebook = v["generator"].get("vq_stats", {}).get("quantizer", {}).get("embedding")
    if codebook is not None:
        print(f"EMA codebook (vq_stats, trained without gradients): {tuple(codebook.shape)}")
    print("Discriminator parameters:")
    print(parameter_overview.get_parameter_overview(v["discriminator"]["params"],
                                                    include_stats=False))
    generator_params = _count(v["generator"]["params"]) + (_count(codebook) if codebook is not None else 0)
    grid = tuple(int(n) for n in v["tokens"].shape[1:])
    assert grid == spec.token_grid(), (grid, spec.token_grid())
    summary = {
        "mode": config.data.mode,
        "input_shape": [spec.frames, spec.image_size, spec.image_size, spec.in_channels],
        "target_shape": [spec.frames, spec.image_size, spec.image_size, spec.out_channels],
        "token_grid": list(grid),
        "tokens_per_clip": math.prod(grid),
        "num_codes": spec.num_codes,
        "generator_params": generator_params,
        "discriminator_params": _count(v["discriminator"]["params"]),
        "dataset": f"{config.data.tfds_name}/"
                   f"{make_config(config.data.mode, spec.frames, spec.image_size).name}",
    }
    print(f"input clip {summary['input_shape']} -> token grid {grid} "
          f"({summary['tokens_per_clip']} tokens of {spec.num_codes}) -> {summary['target_shape']}")
    print(json.dumps(summary))
    return summary


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = FLAGS.config
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/3d_1024.py")
    try:
        config_lib.validate(config)
    except config_lib.ConfigError as e:
        raise app.UsageError(f"invalid config: {e}") from None
    if FLAGS.mode == "describe":
        describe(config)


if __name__ == "__main__":
    app.run(main)
