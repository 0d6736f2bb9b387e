"""Sample motion from a trained prior (python -m pose_vq.downstream.prior):

    python -m pose_vq.generate --workdir=runs/prior --label=wave --num=8 \\
        [--seed=0 --guidance=2 --temperature=1 --steps=8 --output_dir=DIR]

draws ``--num`` token grids conditioned on ``--label`` (a class name of the export's
source dataset, e.g. a synthetic motion kind: walk, wave, squat, ...), decodes them with
the tokenizer the export came from (its run, weights and checkpoint, from the export's
metadata) and writes, under ``--output_dir`` (default
``<workdir>/samples/<label>_seed<seed>``):

- ``<label>_<i>.gif``: each decoded clip, its channels side by side (a 3d clip's three
  planes, max over x, y and z; an m2d clip's three cameras);
- ``tokens/motion_tokens/<config>/1.0.0``: the grids as a TFDS dataset, split
  ``samples``, with the export's features (``sequence`` names the draw, ``index`` the
  sample; ``body_id`` -1, ``start_frame`` 0) plus ``label``, and the export's metadata
  (so ``Tokenizer.from_workdir(metadata["workdir"])`` decodes them) with the draw's
  settings under ``generated``; ``codebook.npy`` beside it. Read it with
  ``tfds.data_source("motion_tokens/<config>", data_dir=<output_dir>/tokens)``.
Unset sampling flags take the prior config's ``sample`` section; a causal prior
(``model.order=causal``) decodes one cell a step and ignores ``--steps``.
"""

from __future__ import annotations

import shutil
from typing import Any

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags

from pose_vq import checkpointing, errors, paths, tokenize
from pose_vq.downstream import prior
from pose_vq.visualize import clip_frames, write_gif

SPLIT = "samples"


def generate(workdir: paths.PathLike, label: str, num: int, *, seed: int = 0,
             guidance: float | None = None, temperature: float | None = None,
             steps: int | None = None, output_dir: paths.PathLike | None = None,
             scale: int = 4) -> dict[str, Any]:
    """Sample, decode and write (module docstring); returns what was written."""
    model, variables, config, export = prior.restore(workdir)
    names = prior.label_names(export)
    if label not in names:
        raise ValueError(f"--label={label!r} is no class of {export.metadata['source_dataset']}: "
                         f"choose one of {', '.join(names)}")
    if num < 1:
        raise ValueError(f"--num={num}: sample at least one clip")
    settings = {"steps": config.sample.steps if steps is None else steps,
                "guidance": config.sample.guidance if guidance is None else guidance,
                "temperature": config.sample.temperature if temperature is None else temperature,
                "mask_temperature": config.sample.mask_temperature}
    out = paths.as_path(output_dir or paths.as_path(workdir) / "samples" / f"{label}_seed{seed}")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: delete it or pass another --output_dir")
    label_id = names.index(label)
    grids = prior.sample_grids(model, variables, np.full((num,), label_id, np.int32), seed,
                               batch_size=min(num, config.sample.batch_size), **settings)
    clips = prior.decode(prior.export_tokenizer(export), grids, min(num, 8))
    gifs = [write_gif(out / f"{label}_{i}.gif", clip_frames(clip, scale)) for i, clip in
            enumerate(clips)]
    meta = export.metadata
    features = export.builder.info.features
    sample_features = tfds.features.FeaturesDict(
        {**dict(features.items()),
         "label": tfds.features.ClassLabel(names=list(names))})
    examples = [(f"{i:08d}", {"tokens": g, "sequence": f"sample_{label}_seed{seed}",
                              "body_id": -1, "start_frame": 0, "index": i, "mode": meta["mode"],
                              "label": label_id}) for i, g in enumerate(grids)]
    generated = {"prior_workdir": str(paths.absolute(workdir)), "label": label, "num": num,
                 "seed": seed, "order": config.model.order, **settings,
                 "export": str(export.path)}
    builder = tokenize.TokenBuilder(
        name=tokenize.TOKENS_NAME, version=tokenize.TOKENS_VERSION,
        config=export.builder.builder_config.name, features=sample_features,
        split_datasets={SPLIT: examples}, metadata={**meta, "generated": generated},
        data_dir=str(out / "tokens"), file_format="array_record", disable_shuffling=True,
        description="Token grids sampled by a pose_vq prior.")
    builder.download_and_prepare()
    if jax.process_index() == 0:
        with (export.path / tokenize.CODEBOOK_FILE).open("rb") as src, \
                (paths.as_path(builder.data_dir) / tokenize.CODEBOOK_FILE).open("wb") as dst:
            shutil.copyfileobj(src, dst)
    return {"gifs": [str(g) for g in gifs], "tokens": str(builder.data_dir),
            "dataset": builder.info.full_name, "split": SPLIT, **generated}


FLAGS = flags.FLAGS


@errors.one_line_failures
def main(argv: list[str]) -> None:
    checkpointing.quiet_orbax_logs()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir or not FLAGS.label:
        raise app.UsageError("--workdir (a prior's) and --label are required")
    prior.configure_jax(prior.load_config(FLAGS.workdir), cpu_devices=0)  # one device
    found = generate(FLAGS.workdir, FLAGS.label, FLAGS.num, seed=FLAGS.seed,
                     guidance=FLAGS.guidance, temperature=FLAGS.temperature, steps=FLAGS.steps,
                     output_dir=FLAGS.output_dir, scale=FLAGS.scale)
    print(f"wrote {len(found['gifs'])} GIFs to {paths.as_path(found['gifs'][0]).parent} and "
          f"{found['dataset']} (split {SPLIT}) to {found['tokens']}")


def define_flags() -> None:
    """The command's flags (defined only when it runs)."""
    flags.DEFINE_string("workdir", None, "A prior's workdir (python -m pose_vq.downstream.prior).")
    flags.DEFINE_string("label", None, "The class to sample, e.g. wave.")
    flags.DEFINE_integer("num", 8, "Clips to sample.")
    flags.DEFINE_integer("seed", 0, "Sampling seed.")
    flags.DEFINE_float("guidance", None, "Classifier-free guidance g (cond + g (cond - uncond); "
                       "default: the prior config's).")
    flags.DEFINE_float("temperature", None, "Sampling temperature (default: the config's).")
    flags.DEFINE_integer("steps", None, "Decoding steps of a masked prior (default: the "
                         "config's; a causal prior takes one per cell).")
    flags.DEFINE_string("output_dir", None, "Where to write (default <workdir>/samples/"
                        "<label>_seed<seed>).")
    flags.DEFINE_integer("scale", 4, "GIF pixels per heatmap pixel.")
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
