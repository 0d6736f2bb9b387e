"""pose_vq entry point: python -m pose_vq.main --config=configs/3d_1024.py --workdir=DIR.

Thin on purpose: flags, config validation, multi-process set-up, dispatch to
``train.train_and_evaluate`` (--mode=train), ``evaluate.evaluate`` (--mode=evaluate), a
model summary (--mode=describe) or the dataset build alone (--mode=build_data: one process
that starts no JAX backend, so it runs alone on one host of a TPU slice, whose backend
would wait for every host, before all hosts train). ``--workdir`` may be a bucket
(``gs://...``, pose_vq.paths); a multi-process run refuses one that is not the same folder
for every process.
``--config.<knob>=value`` overrides any knob of the config file; a variant takes its
compression after a colon (``configs/3d_1024.py:f16``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags, logging
from clu import parameter_overview
from flax import traverse_util
from ml_collections import config_flags

from pose_vq import checkpointing, errors, evaluate, paths, runtime, train
from pose_vq import config as config_lib
from pose_vq.data import prepare
from pose_vq.state import Models

FLAGS = flags.FLAGS


def _count(tree: Any) -> int:
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


def abstract_variables(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Shapes of the generator's and discriminator's variables, without allocating them."""
    models = Models.create(config)
    state = nn.unbox(models.boxed_state_shapes)
    generator = {"params": state.generator, "vq_stats": state.vq_stats}
    clip = jax.ShapeDtypeStruct(models.input_shape(1), jnp.float32)
    tokens = jax.eval_shape(lambda v, x: models.generator.apply(v, x, method="encode"),
                            generator, clip)
    return {"spec": models.spec, "generator": generator, "discriminator": state.discriminator,
            "tokens": tokens}


def describe(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Print parameter tables and shapes; return the summary printed as the last line."""
    v = abstract_variables(config)
    spec = v["spec"]
    print("Generator parameters:")
    print(parameter_overview.get_parameter_overview(v["generator"]["params"], include_stats=False))
    # EMA codebooks (one per residual stage) live in vq_stats, trained without gradients.
    codebooks = [leaf for path, leaf in traverse_util.flatten_dict(
        v["generator"].get("vq_stats", {})).items() if path[-1] == "embedding"]
    for codebook in codebooks:
        print(f"EMA codebook (vq_stats, trained without gradients): {tuple(codebook.shape)}")
    print("Discriminator parameters:")
    print(parameter_overview.get_parameter_overview(v["discriminator"]["params"],
                                                    include_stats=False))
    generator_params = _count(v["generator"]["params"]) + sum(map(_count, codebooks))
    shape = tuple(int(n) for n in v["tokens"].shape[1:])
    assert shape == spec.token_shape(), (shape, spec.token_shape())
    grid = spec.token_grid()
    summary = {
        "mode": config.data.mode,
        "input_shape": [spec.frames, spec.image_size, spec.image_size, spec.in_channels],
        "target_shape": [spec.frames, spec.image_size, spec.image_size, spec.out_channels],
        "token_grid": list(grid),
        "stages": spec.stages,
        "tokens_per_clip": math.prod(shape),
        "num_codes": spec.num_codes,
        "quantizer": spec.quantizer_kind,
        "generator_params": generator_params,
        "discriminator_params": _count(v["discriminator"]["params"]),
        "dataset": prepare.dataset_name(config.data),
    }
    stages = f" x {spec.stages} stages" if spec.stages > 1 else ""
    print(f"input clip {summary['input_shape']} -> token grid {grid}{stages} "
          f"({summary['tokens_per_clip']} {spec.quantizer_kind} tokens of {spec.num_codes}) "
          f"-> {summary['target_shape']}")
    print(json.dumps(summary))
    return summary


@errors.one_line_failures
def main(argv: list[str]) -> None:
    checkpointing.quiet_orbax_logs()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = FLAGS.config
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/3d_1024.py")
    config_lib.validate(config)
    if FLAGS.mode == "describe":
        describe(config)
        return
    if FLAGS.mode == "build_data":  # e.g. once, before a multi-process run
        data_dir, name = prepare.prepare_dataset(config.data, FLAGS.workdir or ".")
        print(f"{name} is ready in {data_dir}")
        return
    if not FLAGS.workdir:
        raise app.UsageError(f"--workdir is required for --mode={FLAGS.mode}")
    runtime.configure_jax(config)  # before any JAX backend use
    if FLAGS.distributed or FLAGS.coordinator_address:
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                                   FLAGS.process_id)
    logging.info("JAX process %d of %d, %d local / %d global devices (%s; GPUs this process "
                 "may use: %s)", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count(), jax.devices()[0].platform,
                 jax.config.read("jax_cuda_visible_devices"))
    paths.require_shared(FLAGS.workdir)  # every process's checkpoints in one folder
    if FLAGS.mode == "train":
        train.train_and_evaluate(config, FLAGS.workdir)
    else:
        evaluate.evaluate(config, FLAGS.workdir)


def define_flags() -> None:
    """The command's flags (defined when it runs, so importing this module for its
    functions never clashes with another command's flags)."""
    config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and results: "
                        "local, or gs://BUCKET/... (one every process of a run reaches).")
    flags.DEFINE_enum("mode", "train", ["train", "evaluate", "describe", "build_data"],
                      "What to do (build_data: build the config's dataset from data.manual_dir "
                      "or data.synthetic into data.data_dir, then stop).")
    flags.DEFINE_bool("distributed", False,
                      "Call jax.distributed.initialize() (multi-process runs: TPU pods, SLURM, or "
                      "the coordinator flags below).")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (implies --distributed).")
    flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
    flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
