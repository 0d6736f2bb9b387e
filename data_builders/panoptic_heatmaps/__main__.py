"""Build the panoptic_heatmaps dataset: python -m data_builders.panoptic_heatmaps --help.

A build that fails prints one line, the file and the problem, and exits with status 1
(``--verbose`` shows the whole traceback). A killed build leaves TFDS's ``incomplete.*``
folder behind; the next successful build of the same config removes it.
"""

from __future__ import annotations

import pathlib
import typing

from absl import app, flags

from pose_vq import errors
from pose_vq.data import modes, prepare

FLAGS = flags.FLAGS

OVERRIDES = ("stride", "score_source", "sigma", "kind", "joint_req", "on_error")


@errors.one_line_failures
def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    overrides = {k: FLAGS[k].value for k in OVERRIDES if FLAGS[k].value is not None}
    builder = prepare.build(FLAGS.manual_dir, FLAGS.data_dir, FLAGS.config,
                            frames=FLAGS.frames, heatmap_size=FLAGS.size,
                            file_format=FLAGS.file_format, num_shards=FLAGS.num_shards,
                            **overrides)
    print(f"built {builder.info.full_name} in {builder.data_dir}")
    for split, info in builder.info.splits.items():
        print(f"  {split}: {info.num_examples} examples, {info.num_shards} shard(s)")
    print(f"  read summary: {builder.info.metadata.get('read_summary')}")


def define_flags() -> None:
    """The command's flags (defined when it runs, as every pose_vq command's are)."""
    flags.DEFINE_string("manual_dir", None, "Panoptic (or synthetic) root folder.", required=True)
    flags.DEFINE_string("data_dir", str(pathlib.Path.home() / "tensorflow_datasets"),
                        "TFDS data dir to build into.")
    flags.DEFINE_enum("config", "m2d", sorted(modes.MODES), "Mode.")
    flags.DEFINE_integer("frames", None, "Clip length (default 48 for c2d, else 64).")
    flags.DEFINE_integer("size", None, "Heatmap side (default 128).")
    flags.DEFINE_integer("stride", None, "Frames between window starts (default 90).")
    flags.DEFINE_enum("file_format", "array_record", ["array_record", "tfrecord"],
                      "array_record (tfds.data_source, grain) or tfrecord (tfds.load).")
    flags.DEFINE_integer("num_shards", None, "Shards per split (default: by size).")
    flags.DEFINE_enum("score_source", None, list(typing.get_args(modes.ScoreSource)),
                      "Joint scores (default gaussian, the reference's).")
    flags.DEFINE_float("sigma", None, "Gaussian width in heatmap pixels (default 0.75).")
    flags.DEFINE_float("joint_req", None, "A camera sees a body when more than this fraction of "
                       "its joints is present and in the image (default 0.9).")
    flags.DEFINE_enum("kind", None, ["limb", "keypoint"],
                      "Limb (default) or keypoint heatmaps (keypoint: c2d and m2d).")
    flags.DEFINE_enum("on_error", None, ["skip", "raise"],
                      "A malformed or implausible frame file or body: skip and count it (default) "
                      "or stop the build naming the file.")
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
