"""python -m pose_vq.visualize: a GIF of one clip of a dataset, of a checkpoint's
reconstruction of it, or of the clip decoded from an exported token dataset (README,
"Tokens"):

    python -m pose_vq.visualize --workdir=runs/demo --split=validation --index=3 --skeleton
    python -m pose_vq.visualize --dataset=DATA_DIR/panoptic_heatmaps/3d/3.0.0 --index=0
    python -m pose_vq.visualize --tokens=runs/demo/tokens/motion_tokens/<config>/1.0.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags

from pose_vq import errors, paths, runtime, tokenize
from pose_vq.data import modes, pipeline, prepare
from pose_vq.visualize import clip_frames, comparison_frames, draw_skeleton, write_gif


def _source_example(builder: Any, split: str, index: int) -> dict[str, Any]:
    source = pipeline.data_source(builder, split)
    if not 0 <= index < len(source):
        raise app.UsageError(f"{builder.info.full_name}:{split} has {len(source)} examples; "
                             f"--index={index} is out of range")
    return source[index]


def _clips(flags_: Any) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any], Any, str]:
    """(target, reconstruction or None, source example, mode, default output name)."""
    if flags_.tokens:
        tokens = tfds.builder_from_directory(flags_.tokens)
        meta = tokens.info.metadata
        row = _source_example(tokens, flags_.split, flags_.index)
        tokenizer = tokenize.Tokenizer.from_workdir(flags_.workdir or meta["workdir"],
                                                    meta["weights"], meta["checkpoint_step"])
        recon = tokenizer.decode(row["tokens"][None])[0]
        builder = pipeline.open_dataset(meta["source_data_dir"], meta["source_dataset"])
        example = _source_example(builder, flags_.split, int(row["index"]))
        name = f"tokens_{flags_.split}_{flags_.index}.gif"
    elif flags_.dataset:
        builder = tfds.builder_from_directory(flags_.dataset)
        example, recon = _source_example(builder, flags_.split, flags_.index), None
        name = f"{builder.builder_config.name}_{flags_.split}_{flags_.index}.gif"
    elif flags_.workdir:
        tokenizer = tokenize.Tokenizer.from_workdir(flags_.workdir, flags_.weights)
        data_dir, dataset = prepare.locate_dataset(tokenizer.config.data, flags_.workdir)
        builder = pipeline.open_dataset(data_dir, dataset)
        example = _source_example(builder, flags_.split, flags_.index)
        inputs = pipeline.ToModelInputs(pipeline.dataset_mode(builder)).map(example)["inputs"]
        recon = tokenizer.decode(tokenizer.encode(inputs[None]))[0]
        name = f"step_{tokenizer.step:07d}_{flags_.split}_{flags_.index}.gif"
    else:
        raise app.UsageError("give --workdir (a run's reconstruction), --dataset (a dataset "
                             "clip) or --tokens (an exported token dataset)")
    mode = pipeline.dataset_mode(builder)
    target = pipeline.ToModelInputs(mode).map(example)["targets"]
    return target, recon, example, mode, name


@errors.one_line_failures
def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    runtime.enable_compilation_cache()  # JAX_COMPILATION_CACHE_DIR moves it, '' turns it off
    f = flags.FLAGS
    target, recon, example, mode, name = _clips(f)
    size = target.shape[1]
    if recon is None:
        frames, rows = clip_frames(target, f.scale), 1
    else:
        frames, rows = comparison_frames(target, recon, f.scale), 3
    if f.skeleton:
        points = modes.joint_pixels(mode, np.asarray(example["joints2d"]),
                                    np.asarray(example["joints3d"]), size,
                                    example.get("present"))
        frames = draw_skeleton(frames, points, rows=rows, size=size, scale=f.scale)
    out = paths.as_path(f.output or paths.as_path(f.workdir or ".") / "videos" / name)
    write_gif(out, frames, fps=f.fps)
    print(f"wrote {out}: {frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]} "
          f"({'truth / reconstruction / |error| rows' if rows == 3 else 'the clip'}, "
          f"{target.shape[-1]} channel(s) left to right)")


def define_flags() -> None:
    """The command's flags (defined only when it runs)."""
    flags.DEFINE_string("workdir", None, "A training workdir: show its (EMA) reconstruction "
                        "of a clip of its dataset (with --tokens: the run that decodes).")
    flags.DEFINE_string("dataset", None, "A built dataset's version directory, e.g. "
                        "DATA_DIR/panoptic_heatmaps/3d/3.0.0: show one of its clips.")
    flags.DEFINE_string("tokens", None, "An exported token dataset's version directory "
                        "(python -m pose_vq.tokenize prints it): show a decoded clip.")
    flags.DEFINE_string("split", "validation", "Split to take the clip from.")
    flags.DEFINE_integer("index", 0, "Index of the clip in the split.")
    flags.DEFINE_enum("weights", "ema", ["ema", "raw"], "Generator weights (--workdir).")
    flags.DEFINE_bool("skeleton", False, "Overlay the stored skeleton on every panel.")
    flags.DEFINE_integer("scale", 4, "Pixels per heatmap pixel.")
    flags.DEFINE_float("fps", 10, "Frames per second.")
    flags.DEFINE_string("output", None, "GIF path (default: <workdir or .>/videos/<name>.gif).")
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
