"""python -m pose_vq.benchmark COMMAND: benchmarks that print one table of figures
measured in the same run (the commands live in pose_vq/benchmarks/, one module each).

    python -m pose_vq.benchmark render [--frames=64] [--size=128]
    python -m pose_vq.benchmark step --config=configs/3d_1024.py [--config.<knob>=...] \
        [--batch_sizes=1,2] [--compare=model.dtype=float32,bfloat16] [--compare=...]
    python -m pose_vq.benchmark encode --config=configs/3d_1024.py [--batch_sizes=1]
    python -m pose_vq.benchmark pipeline --config=configs/demo.py [--workdir=DIR]
    python -m pose_vq.benchmark conv --config=configs/3d_1024.py [--batch_sizes=1]
    python -m pose_vq.benchmark precision --workdir=RUN [--split=validation] [--max_clips=64]
"""

from __future__ import annotations

import json
import tempfile

from absl import app, flags
from ml_collections import config_flags

from pose_vq import config as config_lib
from pose_vq import errors, runtime
from pose_vq.benchmarks import conv, harness, model, pipeline, precision, render

FLAGS = flags.FLAGS
COMMANDS = ("render", "step", "encode", "pipeline", "conv", "precision")


@errors.one_line_failures
def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"usage: python -m pose_vq.benchmark {{{'|'.join(COMMANDS)}}} ...")
    what = argv[1]
    if what == "render":
        rows = render.run(FLAGS.frames, FLAGS.size, FLAGS.repeats, FLAGS.oracle_frames)
        harness.emit(rows, render.print_table, FLAGS.json)
        return
    if what == "precision":
        if not FLAGS.workdir:
            raise app.UsageError("precision needs --workdir, a training run's directory")
        from pose_vq import checkpointing  # noqa: PLC0415 (TFDS, grain: 1.2-1.4 s, precision alone)

        runtime.configure_jax(checkpointing.load_run_config(FLAGS.workdir))
        result = precision.run(FLAGS.workdir, FLAGS.split, FLAGS.max_clips)
        harness.emit([result], lambda rows: precision.print_table(rows[0]), FLAGS.json)
        return
    config = FLAGS.config
    if config is None:
        raise app.UsageError(f"{what} needs --config, e.g. --config=configs/demo.py")
    config_lib.validate(config)
    batch_sizes = [int(b) for b in FLAGS.batch_sizes] or [config.train.batch_size]
    if what in ("step", "encode"):
        try:
            rows = model.run_rows(what, config, batch_sizes, FLAGS.compare, FLAGS.steps)
        except model.CompareError as e:
            raise app.UsageError(str(e)) from None
        harness.emit(rows, model.print_table, FLAGS.json)
    elif what == "conv":
        runtime.enable_cpu_conv_flag()  # before any backend use, as configure_jax does
        rows = conv.run(config, batch_sizes[0] if FLAGS.batch_sizes else 1, FLAGS.steps)
        harness.emit(rows, conv.print_table, FLAGS.json)
    else:
        runtime.configure_jax(config)
        with tempfile.TemporaryDirectory() as tmp:
            result = pipeline.run(config, FLAGS.workdir or tmp, FLAGS.batches, FLAGS.steps)
        if FLAGS.json:
            print(json.dumps(result))
        else:
            pipeline.print_table(result)


def define_flags() -> None:
    """The command's flags (defined only when it runs, so importing this module never
    clashes with another command's flags)."""
    config_flags.DEFINE_config_file("config", None, "step/encode/pipeline/conv: configs/*.py[:arg].",
                                    lock_config=False)
    flags.DEFINE_list("batch_sizes", [], "step/encode: global batch sizes, one row each "
                      "(default: the config's train.batch_size); conv: the first (default 1).")
    flags.DEFINE_multi_string("compare", [], "step/encode: knob=v1,v2 (';' between values "
                              "that contain commas); rows for every combination.")
    flags.DEFINE_integer("steps", 3, "step/encode/pipeline/conv: timed calls after compilation.")
    flags.DEFINE_integer("batches", 20, "pipeline: timed loader batches.")
    flags.DEFINE_string("workdir", None, "pipeline: where the config builds its dataset "
                        "(default: a temporary directory); precision: the training run.")
    flags.DEFINE_string("split", "validation", "precision: the split whose clips are compared.")
    flags.DEFINE_integer("max_clips", 64, "precision: clips compared (0: the whole split).")
    flags.DEFINE_integer("frames", 64, "render: clip length.")
    flags.DEFINE_integer("size", 128, "render: heatmap side.")
    flags.DEFINE_integer("repeats", 10, "render: timed renders per mode.")
    flags.DEFINE_integer("oracle_frames", 1, "render: frames the slow oracle renders.")
    flags.DEFINE_bool("json", False, "One JSON object per row instead of the table.")
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
