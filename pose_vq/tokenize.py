"""Token export and decoding with a trained checkpoint.

    python -m pose_vq.tokenize --workdir=runs/demo --split=validation [--verify]

encodes a split of the run's heatmap dataset with the latest checkpoint of ``--workdir``
(EMA generator weights by default) and writes a TFDS dataset of token grids,
``<output_dir>/motion_tokens/<source config>/1.0.0`` (default output_dir
``<workdir>/tokens``). Each example holds ``tokens`` (int32, the token grid t x h x w,
with a trailing stage axis for a residual quantizer),
the source example's ``sequence``, ``body_id``, ``start_frame``, its ``index`` in the
source split, and the ``mode``; the dataset's metadata holds the tokenizer's whole config,
its checkpoint step, weights and config digest with the source dataset (``export_key``:
what an export is reused by) and the vocabulary size. Read it back
from any project with ``tfds.data_source("motion_tokens/<config>", data_dir=...)``; the
token ids' codes (what the decoder's input receives, for every quantizer kind) are
``codebook.npy`` in the same folder; ``embed(codebook, tokens)`` looks them up.
``--dataset``/``--data_dir`` encode another build of the same mode and clip shape
(e.g. real Panoptic sequences with a tokenizer trained on synthetic ones);
``--weights=init`` encodes with the run's model as initialised, the probes' control.

Decoding is one call: ``Tokenizer.from_workdir(workdir).decode(tokens)`` returns the
clips the model reconstructs from those tokens, the same arrays evaluation scores.
``--verify`` decodes the exported tokens and prints their metrics beside the run's
``eval_metrics.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags
from tensorflow_datasets.core.dataset_builders import adhoc_builder

from data_builders.panoptic_heatmaps import check_file_format
from pose_vq import checkpointing, errors, metrics, paths, runtime, sharding
from pose_vq import config as config_lib
from pose_vq.data import pipeline, prepare
from pose_vq.state import Models, bound, generator_variables, init_state

TOKENS_NAME = "motion_tokens"
TOKENS_VERSION = "1.0.0"
WEIGHTS = ("ema", "raw", "init")  # init: the run's model as initialised (a control)
CODEBOOK_FILE = "codebook.npy"  # (num_codes, code width) beside an export's files
#                                 ((stages, num_codes, code width) with residual stages)
# What tells one export's tokens from another's: the tokenizer (its checkpoint step, weight
# set and config digest) and the dataset it encoded.
EXPORT_KEY = ("checkpoint_step", "weights", "config_digest", "source_dataset", "source_data_dir")


@dataclasses.dataclass
class Tokenizer:
    """A trained generator's encoder and decoder, with the weights of one checkpoint."""

    config: ml_collections.ConfigDict
    models: Models
    variables: dict[str, Any]  # {"params": ..., "vq_stats": ...}
    step: int
    weights: str

    @classmethod
    def from_workdir(cls, workdir: str | pathlib.Path, weights: str = "ema",
                     step: int | None = None, dtype: str | None = None,
                     mesh: jax.sharding.Mesh | None = None) -> Tokenizer:
        """The checkpoint at ``step`` (default: the latest) of a training workdir, with
        the weights and codebook of one set (``ema``: both EMAs; ``init``: the run's
        model at initialisation from its seed, no checkpoint read, step 0: the
        random-tokenizer control of the probes); ``dtype`` overrides the run's
        activation dtype (parameters stay float32). The weights are restored onto
        ``mesh`` (default: every device on the data axis) under the run's sharding rules,
        whatever mesh the run was trained on."""
        if weights not in WEIGHTS:
            raise ValueError(f"weights={weights!r}: choose one of {WEIGHTS}")
        config = checkpointing.load_run_config(workdir)
        if dtype is not None:
            config.model.dtype = dtype
            if dtype != "float32" and config.model.conv_impl == "winograd":
                config.model.conv_impl = "auto"  # an execution choice; winograd is float32's
            config_lib.validate(config)
        models = Models.create(config)
        if weights == "init":
            state = jax.jit(bound(init_state, models, config.seed))()
            return cls(config, models, generator_variables(state, "raw"), 0, weights)
        mesh = sharding.make_mesh() if mesh is None else mesh
        state = checkpointing.restore_generator(workdir, models, mesh, step)
        return cls(config, models, generator_variables(state, weights), int(state.step),
                   weights)

    @functools.cached_property
    def _encode(self):
        return jax.jit(bound(_apply, self.models, "encode"))

    @functools.cached_property
    def _decode(self):
        return jax.jit(bound(_apply, self.models, "decode_indices"))

    def encode(self, clips: Any) -> np.ndarray:
        """Clips (B, T, H, W, C_in) in [0, 1] -> int32 token grids (B, t, h, w[, stages])."""
        return np.asarray(self._encode(self.variables, jnp.asarray(clips, jnp.float32)))

    def codebook(self) -> np.ndarray:
        """(num_codes, code width) float32: each token id's code, as the decoder's input
        receives it (fsq/lfq: the code's channel values; simvq: a row of W C); with
        residual stages (stages, num_codes, code width), a clip's code at a position
        being the sum over stages (``embed``)."""
        return np.asarray(self.models.generator.apply(
            self.variables, method=lambda m: m.quantizer.table()), np.float32)

    def decode(self, tokens: Any) -> np.ndarray:
        """Token grids (B, t, h, w[, stages]) -> float32 clips (B, T, H, W, C_out), as
        reconstructed."""
        tokens = np.asarray(tokens)
        shape = self.models.spec.token_shape()
        if tokens.shape[1:] != shape or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"expected integer token grids (B, {', '.join(map(str, shape))}); "
                             f"got {tokens.dtype} {tokens.shape}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.models.spec.num_codes):
            raise ValueError(f"token ids must be in [0, {self.models.spec.num_codes}); got "
                             f"[{tokens.min()}, {tokens.max()}]")
        return np.asarray(self._decode(self.variables, jnp.asarray(tokens, jnp.int32)))


def embed(codebook: Any, tokens: Any) -> Any:
    """Codes (..., D) of token ids (...) with an export's ``codebook`` (numpy or jax): a
    row of a (K, D) codebook; with residual stages, ids (..., stages) and a (stages, K,
    D) codebook, the sum of the stages' codes (what the decoder's input receives)."""
    if codebook.ndim == 2:
        return codebook[tokens]
    return sum(codebook[s][tokens[..., s]] for s in range(codebook.shape[0]))


def export_key(tokenizer: Tokenizer, data_dir: str | pathlib.Path, name: str) -> dict[str, Any]:
    """``EXPORT_KEY``'s values for ``tokenizer``'s export of dataset ``name`` in ``data_dir``:
    stored in the export's metadata; an export is reused only where they are equal."""
    return dict(zip(EXPORT_KEY, (tokenizer.step, tokenizer.weights,
                                 checkpointing.config_digest(tokenizer.config), name,
                                 str(data_dir))))


def _apply(models: Models, method: str, variables: dict[str, Any], x: jax.Array) -> jax.Array:
    return models.generator.apply(variables, x, method=method)


def _split_examples(tokenizer: Tokenizer, source: Sequence[dict[str, Any]],
                    transform: pipeline.ToModelInputs, batch_size: int
                    ) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, example) pairs of a split's token grids, encoded a fixed-size batch at a
    time (one compilation for the whole split)."""
    mode = tokenizer.config.data.mode

    def row(i: int) -> dict[str, Any]:
        e = source[i]
        sequence = e["sequence"].decode() if isinstance(e["sequence"], bytes) else str(e["sequence"])
        return {"inputs": transform.map(e)["inputs"], "index": np.int64(i),
                "sequence": np.str_(sequence), "body_id": np.int32(e["body_id"]),
                "start_frame": np.int32(e["start_frame"])}

    for batch, n in pipeline.fixed_size_batches(map(row, range(len(source))), batch_size):
        tokens = tokenizer.encode(batch["inputs"])[:n]
        for j, t in enumerate(tokens):
            i = int(batch["index"][j])
            yield f"{i:08d}", {"tokens": t.astype(np.int32), "sequence": str(batch["sequence"][j]),
                               "body_id": int(batch["body_id"][j]),
                               "start_frame": int(batch["start_frame"][j]), "index": i,
                               "mode": mode}


class TokenBuilder(adhoc_builder.AdhocBuilder, skip_registration=True):
    """An ad-hoc TFDS builder that also stores dataset-level metadata (token exports, and
    the generated samples of pose_vq.generate)."""

    def __init__(self, *, metadata: dict[str, Any],
                 split_datasets: dict[str, Iterable[tuple[str, dict[str, Any]]]], **kwargs: Any):
        self._metadata, self._splits = metadata, split_datasets
        super().__init__(split_datasets=split_datasets, **kwargs)

    def _split_generators(self, dl_manager: Any
                          ) -> dict[str, Iterable[tuple[str, dict[str, Any]]]]:
        """The splits' (key, example) iterators as they are: the base class first asks
        whether each is a ``tf.data.Dataset``, which imports TensorFlow."""
        return dict(self._splits)

    def _info(self) -> tfds.core.DatasetInfo:
        info = super()._info()
        info._metadata = tfds.core.MetadataDict(self._metadata)
        return info


def export(tokenizer: Tokenizer, splits: Sequence[str], output_dir: str | pathlib.Path,
           workdir: str | pathlib.Path, batch_size: int = 8,
           file_format: str = "array_record", source: tuple[str, str] | None = None
           ) -> tfds.core.DatasetBuilder:
    """Encode ``splits`` of the tokenizer's dataset (or of ``source``, (data_dir, name)
    of another panoptic_heatmaps build with the same mode and clip shape) into a
    ``motion_tokens`` TFDS dataset (array_record: ``tfds.data_source``; tfrecord:
    ``tfds.load``), with the codebook beside it (``CODEBOOK_FILE``)."""
    check_file_format(file_format)
    data_dir, name = source or prepare.locate_dataset(tokenizer.config.data, workdir)
    builder = pipeline.open_dataset(data_dir, name)
    mode = pipeline.dataset_mode(builder)
    clip = tuple(builder.info.features["heatmaps"].shape)
    if mode.name != tokenizer.config.data.mode or clip != tokenizer.models.input_shape(1)[1:]:
        raise ValueError(f"{data_dir}/{name} holds {mode.name} clips of shape {clip}; the "
                         f"tokenizer reads {tokenizer.config.data.mode} clips of shape "
                         f"{tokenizer.models.input_shape(1)[1:]}")
    transform = pipeline.ToModelInputs(mode)
    missing = [s for s in splits if s not in builder.info.splits]
    if missing:
        raise ValueError(f"{name} has no split {', '.join(missing)} "
                         f"(it has {', '.join(builder.info.splits)})")
    grid = tokenizer.models.spec.token_grid()
    features = tfds.features.FeaturesDict({
        "tokens": tfds.features.Tensor(shape=tokenizer.models.spec.token_shape(), dtype=np.int32),
        "sequence": tfds.features.Text(),
        "body_id": np.int32,
        "start_frame": np.int32,
        "index": np.int64,
        "mode": tfds.features.Text(),
    })
    metadata = {"tokenizer_config": json.loads(tokenizer.config.to_json_best_effort()),
                **export_key(tokenizer, data_dir, name),
                "num_codes": tokenizer.models.spec.num_codes, "token_grid": list(grid),
                "stages": tokenizer.models.spec.stages,
                "quantizer": tokenizer.models.spec.quantizer_kind,
                "mode": tokenizer.config.data.mode,
                "workdir": str(paths.absolute(workdir))}
    split_examples = {s: _split_examples(tokenizer, pipeline.data_source(builder, s),
                                         transform, batch_size) for s in splits}
    out = TokenBuilder(
        name=TOKENS_NAME, version=TOKENS_VERSION, config=name.split("/", 1)[1],
        features=features, split_datasets=split_examples, metadata=metadata,
        data_dir=str(output_dir), file_format=file_format, disable_shuffling=True,
        description="pose_vq token grids of a panoptic_heatmaps dataset.")
    if out.is_prepared():
        raise FileExistsError(f"{out.data_dir} already holds an export: delete it or pass "
                              "another --output_dir")
    out.download_and_prepare()
    if jax.process_index() == 0:
        with (paths.as_path(out.data_dir) / CODEBOOK_FILE).open("wb") as f:  # gs:// too
            np.save(f, tokenizer.codebook())
    return out


def roundtrip_metrics(tokenizer: Tokenizer, tokens_builder: tfds.core.DatasetBuilder,
                      split: str, batch_size: int = 8) -> dict[str, float]:
    """Metrics of the clips decoded from exported tokens against the source targets,
    averaged over the split as evaluation averages them."""
    meta = tokens_builder.info.metadata
    source = pipeline.open_dataset(meta["source_data_dir"], meta["source_dataset"])
    transform = pipeline.ToModelInputs(pipeline.dataset_mode(source))
    targets_source = pipeline.data_source(source, split)
    tokens_source = pipeline.data_source(tokens_builder, split)
    score = jax.jit(metrics.clip_metrics)

    def row(i: int) -> dict[str, np.ndarray]:
        tokens = tokens_source[i]
        return {"tokens": tokens["tokens"],
                "targets": transform.map(targets_source[int(tokens["index"])])["targets"]}

    sums: dict[str, float] = {}
    for batch, n in pipeline.fixed_size_batches(map(row, range(len(tokens_source))), batch_size):
        recon = tokenizer.decode(batch["tokens"])
        for k, v in score(batch["targets"], recon).items():
            sums[k] = sums.get(k, 0.0) + float(np.sum(np.asarray(v)[:n]))
    return {k: v / len(tokens_source) for k, v in sums.items()}


FLAGS = flags.FLAGS


@errors.one_line_failures
def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    workdir = paths.as_path(FLAGS.workdir)
    config = checkpointing.load_run_config(workdir)
    runtime.configure_jax(config)  # before any JAX backend use
    tokenizer = Tokenizer.from_workdir(workdir, FLAGS.weights, FLAGS.step)
    output_dir = paths.as_path(FLAGS.output_dir or workdir / "tokens")
    source = (FLAGS.data_dir, FLAGS.dataset) if FLAGS.dataset else None
    builder = export(tokenizer, FLAGS.split, output_dir, workdir, FLAGS.batch_size,
                     FLAGS.file_format, source)
    counts = {s: builder.info.splits[s].num_examples for s in FLAGS.split}
    tokens_per_clip = math.prod(tokenizer.models.spec.token_shape())
    print(f"wrote {builder.info.full_name} to {builder.data_dir}: {counts} clips of "
          f"{tokens_per_clip} tokens ({tokenizer.weights} weights, step {tokenizer.step})")
    summary: dict[str, Any] = {"dataset": builder.info.full_name, "data_dir": str(builder.data_dir),
                               "clips": counts, "tokens_per_clip": tokens_per_clip,
                               "weights": tokenizer.weights, "step": tokenizer.step}
    if FLAGS.verify and FLAGS.file_format == "array_record":
        evaluated = workdir / "eval_metrics.json"
        previous = json.loads(evaluated.read_text()) if evaluated.exists() else {}
        for split in FLAGS.split:
            found = roundtrip_metrics(tokenizer, builder, split, FLAGS.batch_size)
            summary.setdefault("roundtrip", {})[split] = found
            print(f"{split} decoded from tokens: " + ", ".join(
                f"{k} {found[k]:.6f}" for k in ("ssim", "psnr", "l1", "t_std")))
            if (previous.get("split"), previous.get("step"), previous.get("num_clips")) == (
                    split, tokenizer.step, builder.info.splits[split].num_examples):
                ref = previous[tokenizer.weights]
                summary.setdefault("eval_metrics", {})[split] = ref
                print(f"{split} eval_metrics.json:   " + ", ".join(
                    f"{k} {ref[k]:.6f}" for k in ("ssim", "psnr", "l1", "t_std")))
    if FLAGS.json:
        print(json.dumps(summary))


def define_flags() -> None:
    """The command's flags (defined only when it runs, so importing this module never
    clashes with another command's flags)."""
    flags.DEFINE_string("workdir", None, "Training workdir (config.json and checkpoints/).")
    flags.DEFINE_list("split", ["validation"], "Split(s) of the run's dataset to encode.")
    flags.DEFINE_enum("weights", "ema", list(WEIGHTS), "Generator weights to encode with.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    flags.DEFINE_string("output_dir", None, "TFDS data dir to write into (default <workdir>/tokens).")
    flags.DEFINE_integer("batch_size", 8, "Clips encoded per call.")
    flags.DEFINE_string("dataset", None, "Encode this panoptic_heatmaps dataset (e.g. "
                        "panoptic_heatmaps/3d_t16_s32, built with the run's mode and clip shape) "
                        "instead of the run's own; with --data_dir.")
    flags.DEFINE_string("data_dir", None, "TFDS data dir of --dataset.")
    flags.DEFINE_enum("file_format", "array_record", ["array_record", "tfrecord"],
                      "array_record for tfds.data_source / grain, tfrecord for tfds.load.")
    flags.DEFINE_bool("verify", False, "Decode the exported tokens and print their metrics next "
                      "to the run's eval_metrics.json.")
    flags.DEFINE_bool("json", False, "Also print one JSON line: the export and, with --verify, "
                      "the round-trip metrics beside eval_metrics.json's.")
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
