"""Evaluation over a whole split: SSIM / PSNR / L1 / T-Std and the temporal-difference
error ``tdiff_l1`` per clip (pose_vq.metrics), the quantizer loss (``q_loss``, the paper's;
``loss_quantizer_total``, the training term), codebook usage and perplexity, for the raw
and the EMA generator weights, next to the same metrics for an all-zeros prediction
(heatmaps are mostly background, so an empty output already scores a high SSIM).
Keypoint-heatmap datasets add the keypoint-space error (``metrics.keypoint_errors``) and
the joints' velocity and acceleration errors (``metrics.keypoint_motion_errors``, px/frame
and px/frame^2, with the target's and still joints' over the same joints) for each
prediction and for the target itself (the soft-argmax's floor for the position error);
the all-zeros prediction misses every joint, so it has the position error but no
trajectory to score. Results go to the metric writer and to
``<workdir>/eval_metrics.json``; the first clips are written as comparison GIFs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from pose_vq import checkpointing, metrics, paths, sharding, summary, visualize
from pose_vq import config as config_lib
from pose_vq.data import heatmaps, modes, panoptic, pipeline, prepare, skeleton
from pose_vq.state import (
    WEIGHT_SETS,
    GeneratorState,
    Models,
    TrainState,
    bound,
    generator_variables,
)


def _masked_sums(targets: jax.Array, pred: jax.Array, mask: jax.Array,
                 points: jax.Array | None, radius: int, motion: bool = True
                 ) -> dict[str, jax.Array]:
    """Masked sums over a batch of the per-clip metrics (and, with points, the keypoint
    errors and, with ``motion``, the joints' velocity and acceleration errors)."""
    per_clip = metrics.clip_metrics(targets, pred)
    if points is not None:
        per_clip.update(metrics.keypoint_errors(targets, pred, points, radius))
        if motion:
            per_clip.update(metrics.keypoint_motion_errors(targets, pred, points, radius))
    return {k: jnp.sum(v * mask) for k, v in per_clip.items()}


def _eval_batch(models: Models, radius: int, variables: Any, inputs: jax.Array,
                targets: jax.Array, mask: jax.Array, points: jax.Array | None
                ) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    """Masked sums of the per-clip metrics, the batch's token histogram, and the
    reconstructions. Clips are run one by one (vmap), so the quantizer's numbers are per
    clip: ``q_loss``, the paper's, and ``loss_quantizer_total``, the training term."""

    def one(clip):
        recon, q = models.generator.apply(variables, clip[None], train=False)
        return recon[0], q.indices[0], {"q_loss": q.q_loss,
                                        "loss_quantizer_total": q.losses["total"]}

    recon, indices, quantizer = jax.vmap(one)(inputs)
    sums = {**_masked_sums(targets, recon, mask, points, radius),
            **{k: jnp.sum(v * mask) for k, v in quantizer.items()}}
    # (stages, K): one histogram per residual stage (one row without stages).
    stages = models.spec.stages
    ids = indices.reshape(indices.shape[0], -1, stages)
    weights = jnp.broadcast_to(mask[:, None, None], ids.shape)
    histogram = jnp.zeros((stages, models.spec.num_codes), jnp.float32).at[
        jnp.broadcast_to(jnp.arange(stages), ids.shape).ravel(), ids.ravel()].add(weights.ravel())
    return sums, histogram, recon


def _reference_batch(radius: int, targets: jax.Array, mask: jax.Array,
                     points: jax.Array | None) -> dict[str, dict[str, jax.Array]]:
    """The all-zeros prediction's sums (no velocity or acceleration errors: it misses
    every joint) and, for keypoint data, the target's own keypoint errors (what soft-argmax
    reaches on perfect heatmaps)."""
    out = {"zeros": _masked_sums(targets, jnp.zeros_like(targets), mask, points, radius,
                                 motion=False)}
    if points is not None:
        kp = {**metrics.keypoint_errors(targets, targets, points, radius),
              **metrics.keypoint_motion_errors(targets, targets, points, radius)}
        out["target"] = {k: jnp.sum(v * mask) for k, v in kp.items()}
    return out


def _finish(sums: dict[str, float], num_clips: int) -> dict[str, float]:
    """Split means: per-clip metrics over clips, keypoint errors over present joints, the
    velocity (acceleration) errors and their two references over the counted joint pairs
    (triples): NaN where none counted, since no joint was found in consecutive frames."""
    out = {k: v / num_clips for k, v in sums.items() if not k.startswith("kp_")}
    if "kp_count" in sums:
        count = max(sums["kp_count"], 1.0)
        out.update(kp_error=sums["kp_error_sum"] / count, kp_missed=sums["kp_missed_sum"] / count,
                   kp_joints=sums["kp_count"])
    for kind, count in (("vel", "kp_vel_pairs"), ("acc", "kp_acc_triples")):
        if count in sums:
            n = sums[count]
            for name, total in (("error", ""), ("target", "_target"), ("still", "_still")):
                out[f"kp_{kind}_{name}"] = sums[f"kp_{kind}{total}_sum"] / n if n else math.nan
            out[count] = n
    return out


def codebook_stats(histogram: np.ndarray) -> dict[str, float]:
    """Fraction of codes used and perplexity of the token distribution of a split, from
    its (stages, K) histogram: the mean over stages, and each stage's with residual
    stages (``codebook_usage_stage<i>``)."""
    rows = []
    for h in np.atleast_2d(histogram):
        p = h / max(h.sum(), 1.0)
        nz = p[p > 0]
        rows.append({"codebook_usage": float(np.mean(h > 0)),
                     "codebook_perplexity": float(np.exp(-np.sum(nz * np.log(nz))))})
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    if len(rows) > 1:
        out.update({f"{k}_stage{i}": v for i, r in enumerate(rows) for k, v in r.items()})
    return out


class Evaluator:
    """Evaluates train states on one split; each process reads only its share of it."""

    def __init__(self, models: Models, mesh: Mesh, data_dir: str, name: str,
                 config: ml_collections.ConfigDict, workdir: paths.PathLike):
        ec = config.eval
        self.models, self.mesh, self.workdir = models, mesh, paths.as_path(workdir)
        self.split, self.num_videos = ec.split, ec.num_videos
        builder = pipeline.open_dataset(data_dir, name)
        self.source = pipeline.data_source(builder, ec.split)
        self.mode = pipeline.dataset_mode(builder)
        self.transform = pipeline.ToModelInputs(self.mode)
        built = builder.info.metadata.get("config", {})
        self.keypoints = built.get("kind") == "keypoint"
        radius = metrics.keypoint_radius(built.get("sigma", 0.75))
        self.num_clips = min(len(self.source), ec.max_examples or len(self.source))
        if not self.num_clips:
            raise ValueError(f"{name}:{ec.split} has no examples to evaluate")
        pc = jax.process_count()
        config_lib.check_batch_divisible(config, sharding.data_size(mesh), ("eval.batch_size",))
        self.per_host = ec.batch_size // pc
        self.indices = list(range(jax.process_index(), self.num_clips, pc))
        # Every process runs the same number of batches (collectives must match).
        self.num_batches = math.ceil(math.ceil(self.num_clips / pc) / self.per_host)
        self._sharding = sharding.batch_sharding(mesh)
        self._eval = jax.jit(bound(_eval_batch, models, radius))
        self._reference = jax.jit(bound(_reference_batch, radius))

    def batches(self) -> Iterator[dict[str, jax.Array | None]]:
        """Global batches with a ``mask`` that is 0 on padding clips and, for keypoint
        data, the stored joints in target pixels (``points``; NaN on padding)."""
        frames, _, _, channels = target = self.models.target_shape(1)[1:]
        padding = {"inputs": np.zeros(self.models.input_shape(1)[1:], np.float32),
                   "targets": np.zeros(target, np.float32)}
        if self.keypoints:
            padding["points"] = np.full((channels, frames, skeleton.NUM_JOINTS, 2), np.nan,
                                        np.float32)
        rows = map(self._example, self.indices)
        for host, n in pipeline.fixed_size_batches(rows, self.per_host, padding, self.num_batches):
            host["mask"] = (np.arange(self.per_host) < n).astype(np.float32)
            yield {"points": None, **{k: jax.make_array_from_process_local_data(self._sharding, v)
                                      for k, v in host.items()}}

    def _example(self, index: int) -> dict[str, np.ndarray]:
        """One stored clip as the model reads it (and its joints in target pixels)."""
        stored = self.source[index]
        example = self.transform.map(stored)
        row = {k: np.asarray(example[k], np.float32) for k in ("inputs", "targets")}
        if self.keypoints:
            size = self.models.target_shape(1)[2]
            row["points"] = modes.joint_pixels(self.mode, stored["joints2d"], stored["joints3d"],
                                               size, stored.get("present"))
        return row

    def run(self, state: TrainState | GeneratorState, step: int,
            writer: summary.SummaryWriter | None = None) -> dict[str, Any]:
        """Evaluate both weight sets; write summaries, GIFs and eval_metrics.json."""
        sums = dict.fromkeys((*WEIGHT_SETS, "zeros", "target"))
        histograms = dict.fromkeys(WEIGHT_SETS)
        first = None
        # Accumulated on the host in float64, one batch at a time: fewer multi-device
        # programs in flight (two CPU devices have deadlocked in an all-reduce of eager
        # adds queued behind the evaluation) and no float32 drift over a long split.
        def add(total, batch_sums):
            batch_sums = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64),
                                                jax.device_get(batch_sums))
            return batch_sums if total is None else jax.tree_util.tree_map(np.add, total, batch_sums)

        for i, batch in enumerate(self.batches()):
            for w in WEIGHT_SETS:
                s, h, recon = self._eval(generator_variables(state, w), batch["inputs"],
                                         batch["targets"], batch["mask"], batch["points"])
                sums[w], histograms[w] = add(sums[w], s), add(histograms[w], h)
                if i == 0 and w == "ema":
                    first = (batch["targets"], recon)
            for w, s in self._reference(batch["targets"], batch["mask"], batch["points"]).items():
                sums[w] = add(sums[w], s)
        results: dict[str, Any] = {"step": int(step), "split": self.split,
                                   "num_clips": self.num_clips}
        sums = {w: s for w, s in sums.items() if s is not None}
        for w, s in sums.items():
            results[w] = _finish({k: float(v) for k, v in s.items()}, self.num_clips)
            if w in histograms:
                results[w].update(codebook_stats(histograms[w]))
        if jax.process_index() == 0:
            path = self.workdir / "eval_metrics.json"
            path.write_text(json.dumps(results, indent=2) + "\n")
            logging.info("step %d %s: %s", step, self.split, _headline(results))
        if writer is not None:
            writer.write_scalars(step, {f"eval/{w}/{k}": v for w in sums
                                        for k, v in results[w].items()})
            self._write_videos(step, *first, writer)
        return results

    def _write_videos(self, step: int, targets: jax.Array, recon: jax.Array,
                      writer: summary.SummaryWriter) -> None:
        n = min(self.num_videos, self.num_clips, self.per_host)
        if not n:
            return
        # Process-local rows of the first batch: process 0 holds the split's first clips.
        targets = np.concatenate([np.asarray(s.data) for s in targets.addressable_shards])
        recon = np.concatenate([np.asarray(s.data) for s in recon.addressable_shards])
        images = {}
        for i in range(n):
            images[f"eval/reconstruction_{i}"] = visualize.summary_image(targets[i], recon[i],
                                                                         scale=2)[None]
            if jax.process_index() == 0:
                visualize.clip_gif(self.workdir / "videos" / f"step_{step:07d}_clip{i}.gif",
                                   targets[i], recon[i])
        writer.write_images(step, images)


def pose_reference(config: ml_collections.ConfigDict, workdir: paths.PathLike,
                   chunk: int = 32) -> dict[str, float] | None:
    """The evaluation split's targets scored against themselves drawn again from their own
    skeletons with every joint at the mean random score; None unless the data were built
    with ``score_source="gaussian"``. That is what a reconstruction with every pose exact
    but none of the per-frame random joint strengths scores: the share of the error, and
    of the frame-to-frame change (``tdiff_l1``), that is the strengths' noise."""
    builder = pipeline.open_dataset(str(prepare.data_dir(config.data, workdir)),
                                    prepare.dataset_name(config.data))
    built = builder.info.metadata.get("config", {})
    if built.get("score_source") != "gaussian":
        return None
    mode = pipeline.dataset_mode(builder)
    source = pipeline.data_source(builder, config.eval.split)
    num_clips = min(len(source), config.eval.max_examples or len(source))
    transform = pipeline.ToModelInputs(mode)
    sums: dict[str, float] = {}
    for start in range(0, num_clips, chunk):
        targets, poses = [], []
        for index in range(start, min(start + chunk, num_clips)):
            stored = source[index]
            window = panoptic.Window(
                sequence=_text(stored["sequence"]), body_id=int(stored["body_id"]),
                start_frame=int(stored["start_frame"]), frames=stored["frames"],
                joints3d=stored["joints3d"], confidence=stored["confidence"],
                present=stored["present"], cameras=tuple(map(_text, stored["cameras"])),
                calibration=(), joints2d=stored["joints2d"])
            drawn = modes.render_clips(mode, window, size=built["heatmap_size"],
                                       sigma=built["sigma"], kind=built["kind"],
                                       score_source="ones", rng=np.random.default_rng(0))
            redrawn = {k: modes.quantize(v * heatmaps.GAUSSIAN_SCORE_MEAN)
                       for k, v in drawn.items()}
            targets.append(transform.map(stored)["targets"])
            poses.append(transform.map({**stored, **redrawn})["targets"])
        per_clip = metrics.clip_metrics(np.stack(targets), np.stack(poses))
        for k, v in per_clip.items():
            sums[k] = sums.get(k, 0.0) + float(np.sum(np.asarray(v, np.float64)))
    return {k: v / num_clips for k, v in sums.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _headline(results: dict[str, Any]) -> str:
    keys = ("ssim", "psnr", "l1", "t_std", "tdiff_l1", "kp_error", "kp_vel_error")
    return "; ".join(f"{w}: " + ", ".join(f"{k} {results[w][k]:.4f}" for k in keys
                                          if k in results[w])
                     for w in ("raw", "ema", "zeros"))


def evaluate(config: ml_collections.ConfigDict, workdir: paths.PathLike) -> dict[str, Any]:
    """Evaluate the latest checkpoint in ``workdir`` on ``config.eval.split`` (its
    generator alone is read)."""
    workdir = paths.as_path(workdir)
    data_dir, name = prepare.locate_dataset(config.data, workdir)  # before reading a checkpoint
    mesh = sharding.make_mesh(config.sharding.mesh)
    models = Models.create(config)
    state = checkpointing.restore_generator(workdir, models, mesh)
    writer = summary.SummaryWriter(workdir)
    results = Evaluator(models, mesh, data_dir, name, config, workdir).run(
        state, int(state.step), writer)
    writer.close()
    return results
