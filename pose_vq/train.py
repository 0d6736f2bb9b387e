"""Training: one jitted generator + discriminator step on a ('data',) mesh, CLU summaries,
orbax checkpoints that include the data iterator, and periodic evaluation.

The step follows the reference's losses (L1 + LPIPS + codebook + adaptive-weighted hinge
GAN, discriminator hinge loss) with its bug fixed: the discriminator is trained on
stop-gradient reconstructions, so its loss never reaches the generator. The generator is
differentiated once: one VJP of the generator, pulled back from the sum of the loss
gradients with respect to the reconstruction. The adaptive weight needs the gradient of
each loss on the decoder's last kernel, which only re-runs that one convolution.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import signal
import time
from typing import Any

import flax
import flax.struct
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers, metrics, periodic_actions
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pose_vq import config as config_lib
from pose_vq import evaluate, losses
from pose_vq.data import pipeline
from pose_vq.models import layers
from pose_vq.models.discriminator import PatchDiscriminator
from pose_vq.models.lpips import load_lpips_params, perceptual_loss
from pose_vq.models.quantizer import gumbel_temperature
from pose_vq.models.vqgan import VQGAN, GeneratorSpec

Params = Any
CONFIG_FILE = "config.json"  # the run's config, in its workdir


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint holds besides the data iterator."""

    step: jax.Array  # optimiser steps taken
    rng: jax.Array  # base PRNG key (uint32 key data); step keys are fold_in(rng, step)
    generator: Params
    vq_stats: Params  # the codebook's EMA state and usage ("vq_stats" collection)
    discriminator: Params
    generator_opt: optax.OptState
    discriminator_opt: optax.OptState
    ema_generator: Params  # EMA of the generator weights, for evaluation and export
    lecam: jax.Array  # EMA anchors of the mean real and fake logits (LeCam)


@dataclasses.dataclass(frozen=True)
class Models:
    """The modules, optimisers and constants one config defines (nothing trainable)."""

    config: ml_collections.ConfigDict
    spec: GeneratorSpec
    generator: VQGAN
    discriminator: PatchDiscriminator
    generator_tx: optax.GradientTransformation
    discriminator_tx: optax.GradientTransformation
    lpips_params: Params | None  # None when the perceptual weight is 0

    @classmethod
    def create(cls, config: ml_collections.ConfigDict) -> "Models":
        spec = config_lib.generator_spec(config)
        d, o = config.discriminator, config.optimizer
        tx = lambda: optax.adam(o.learning_rate, b1=o.b1, b2=o.b2)
        return cls(config=config, spec=spec, generator=VQGAN(spec),
                   discriminator=PatchDiscriminator(d.filters, d.num_layers, d.norm_groups,
                                                    config.model.dtype, config.model.conv_impl),
                   generator_tx=tx(), discriminator_tx=tx(),
                   lpips_params=load_lpips_params() if config.loss.perceptual_weight else None)

    def input_shape(self, batch: int) -> tuple[int, ...]:
        s = self.spec
        return (batch, s.frames, s.image_size, s.image_size, s.in_channels)

    def target_shape(self, batch: int) -> tuple[int, ...]:
        return self.input_shape(batch)[:-1] + (self.spec.out_channels,)


def init_state(models: Models, seed: int) -> TrainState:
    """A fresh state (call under jit with out_shardings to create it sharded)."""
    key = jax.random.PRNGKey(seed)
    k_gen, k_vq, k_disc, k_train = jax.random.split(key, 4)
    clip = jnp.zeros(models.input_shape(1), jnp.float32)
    variables = models.generator.init({"params": k_gen, "vq": k_vq, "dropout": k_vq}, clip,
                                      train=False)
    generator = variables["params"]
    discriminator = models.discriminator.init(k_disc, jnp.zeros(models.target_shape(1)))
    return TrainState(
        step=jnp.zeros((), jnp.int32), rng=k_train, generator=generator,
        vq_stats=variables["vq_stats"], discriminator=discriminator,
        generator_opt=models.generator_tx.init(generator),
        discriminator_opt=models.discriminator_tx.init(discriminator),
        ema_generator=jax.tree_util.tree_map(jnp.copy, generator),
        lecam=jnp.zeros((2,), jnp.float32))


def _global_norm(tree: Any) -> jax.Array:
    return optax.tree.norm(jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), tree))


def _sample_planes(x: jax.Array, y: jax.Array, num: int, key: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
    """The same ``num`` random (clip, frame, channel) planes of two clips, as clips
    (num, 1, H, W, 1) for perceptual_loss; all planes when ``num`` is 0 or too large."""
    b, t, h, w, c = x.shape
    if not num or num >= b * t * c:
        return x, y
    pick = jax.random.permutation(key, b * t * c)[:num]
    planes = lambda a: jnp.moveaxis(a, -1, 2).reshape(b * t * c, h, w)[pick][:, None, :, :, None]
    return planes(x), planes(y)


def generator_gradients(models: Models, state: TrainState, x: jax.Array, target: jax.Array,
                        key: jax.Array) -> tuple[Params, jax.Array, dict[str, Any]]:
    """Gradient of the generator objective (reconstruction + quantizer + adaptive-weighted
    adversarial term) w.r.t. the generator params; also the reconstruction and the terms.

    The objective's gradient is one VJP of the generator at the summed loss gradients with
    respect to its output, so the generator runs forward and backward once.
    """
    config, lc = models.config, models.config.loss
    k_vq, k_dropout, k_planes = jax.random.split(key, 3)
    q_cfg = config.quantizer
    temperature = (gumbel_temperature(state.step, q_cfg.temperature_start, q_cfg.temperature_end,
                                      q_cfg.temperature_anneal_steps)
                   if q_cfg.kind == "gumbel" else None)

    def generator_forward(params):
        (recon, q), updates = models.generator.apply(
            {"params": params, "vq_stats": state.vq_stats}, x, train=True,
            temperature=temperature, rngs={"vq": k_vq, "dropout": k_dropout},
            mutable=["vq_stats", "intermediates"])
        return (recon, q.losses["total"]), (q, updates)

    (recon, q_total), pullback, (q, updates) = jax.vjp(generator_forward, state.generator,
                                                       has_aux=True)

    def reconstruction_loss(r):
        terms = {"l1": losses.l1(r, target), "perceptual": jnp.zeros((), jnp.float32)}
        if models.lpips_params is not None:
            a, b = _sample_planes(r, target, lc.perceptual_planes, k_planes)
            terms["perceptual"] = perceptual_loss(models.lpips_params, a, b,
                                                  dtype=jnp.dtype(config.model.dtype),
                                                  chunk_size=lc.perceptual_chunk or None)
        return lc.l1_weight * terms["l1"] + lc.perceptual_weight * terms["perceptual"], terms

    def adversarial_loss(r):
        logits = models.discriminator.apply(state.discriminator, r)
        return losses.generator_adversarial_loss(logits), logits

    (rec_loss, rec_terms), g_rec = jax.value_and_grad(reconstruction_loss, has_aux=True)(recon)
    (adv_loss, fake_logits), g_adv = jax.value_and_grad(adversarial_loss, has_aux=True)(recon)
    disc_factor = losses.discriminator_factor(state.step, lc.disc_start, lc.adversarial_weight)
    if lc.adaptive_weight:
        # d loss / d kernel of the last conv = VJP of that conv at d loss / d recon.
        hidden = updates["intermediates"]["decoder"]["conv_out_input"][0]
        conv_out = layers.conv3d(models.spec.out_channels, dtype=jnp.dtype(models.spec.dtype),
                                 impl=models.spec.conv_impl)
        last = state.generator["decoder"]["conv_out"]
        run_last = lambda k: conv_out.apply({"params": {**last, "kernel": k}}, hidden
                                            ).astype(jnp.float32)
        adaptive = losses.adaptive_weight(
            lambda k: jnp.vdot(g_rec, run_last(k)), lambda k: jnp.vdot(g_adv, run_last(k)),
            last["kernel"], max_weight=lc.adaptive_weight_max, scale=lc.adaptive_weight_scale)
    else:
        adaptive = jnp.ones((), jnp.float32)
    adv_scale = disc_factor * adaptive
    (grads,) = pullback((g_rec + adv_scale * g_adv, jnp.ones_like(q_total)))
    aux = {"vq_stats": updates["vq_stats"], "disc_factor": disc_factor, "scalars": {
        "loss_generator_total": rec_loss + q_total + adv_scale * adv_loss,
        "loss_reconstruction": rec_loss, "loss_l1": rec_terms["l1"],
        "loss_perceptual": rec_terms["perceptual"],
        **{f"loss_quantizer_{k}": v for k, v in q.losses.items()},
        "loss_generator_adversarial": adv_loss,
        "gan_adaptive_weight": adaptive, "gan_adversarial_scale": adv_scale,
        "gan_logits_fake": jnp.mean(fake_logits),
        **{f"codebook_{k}": v for k, v in q.health.items()},
        **({"codebook_temperature": temperature} if temperature is not None else {}),
    }}
    return grads, recon, aux


def train_step(models: Models, state: TrainState, batch: dict[str, jax.Array]
               ) -> tuple[TrainState, metrics.Collection, jax.Array]:
    """One generator update, then one discriminator update. Returns the new state, this
    step's metrics and whether every loss was finite; a non-finite step leaves the state
    unchanged."""
    config, lc = models.config, models.config.loss
    x, target = batch["inputs"], batch["targets"]
    g_params, recon, aux = generator_gradients(models, state, x, target,
                                               jax.random.fold_in(state.rng, state.step))
    disc_factor = aux["disc_factor"]
    g_updates, generator_opt = models.generator_tx.update(g_params, state.generator_opt,
                                                          state.generator)
    generator = optax.apply_updates(state.generator, g_updates)

    # Discriminator on stop-gradient reconstructions: its loss cannot reach the generator.
    fake = jax.lax.stop_gradient(recon)

    def discriminator_loss(params):
        disc = lambda clip: models.discriminator.apply(params, clip)
        real_logits, fake_logits = disc(target), disc(fake)
        terms = {"hinge": losses.hinge_discriminator_loss(real_logits, fake_logits),
                 "lecam": jnp.zeros((), jnp.float32), "r1": jnp.zeros((), jnp.float32)}
        if lc.lecam_weight:
            terms["lecam"] = losses.lecam_regularizer(real_logits, fake_logits, *state.lecam)
        if lc.r1_weight:
            terms["r1"] = losses.r1_penalty(disc, target)
        total = disc_factor * (terms["hinge"] + lc.lecam_weight * terms["lecam"]
                               + lc.r1_weight * terms["r1"])
        return total, (terms, real_logits, fake_logits)

    (disc_total, (disc_terms, real_logits, d_fake_logits)), d_grads = jax.value_and_grad(
        discriminator_loss, has_aux=True)(state.discriminator)
    d_updates, discriminator_opt = models.discriminator_tx.update(
        d_grads, state.discriminator_opt, state.discriminator)
    discriminator = optax.apply_updates(state.discriminator, d_updates)
    lecam = jnp.stack([losses.update_lecam_ema(state.lecam[0], real_logits, lc.lecam_decay),
                       losses.update_lecam_ema(state.lecam[1], d_fake_logits, lc.lecam_decay)])

    # EMA of the generator weights, with the usual warm-up so early evaluations are useful.
    decay = jnp.minimum(config.train.ema_decay, (1.0 + state.step) / (10.0 + state.step))
    ema_generator = jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p,
                                           state.ema_generator, generator)

    scalars = {
        **aux["scalars"], "loss_discriminator_total": disc_total,
        **{f"loss_discriminator_{k}": v for k, v in disc_terms.items()},
        "gan_logits_real": jnp.mean(real_logits),
        "norm_generator_grad": _global_norm(g_params), "norm_discriminator_grad": _global_norm(d_grads),
        "norm_generator_param": _global_norm(generator),
        "norm_discriminator_param": _global_norm(discriminator),
    }
    scalars = {k: jnp.asarray(v, jnp.float32) for k, v in scalars.items()}
    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in scalars.values()]))
    collection = train_metrics_collection(tuple(sorted(scalars))).single_from_model_output(
        **scalars)
    new_state = state.replace(
        step=state.step + 1, generator=generator, vq_stats=aux["vq_stats"],
        discriminator=discriminator, generator_opt=generator_opt,
        discriminator_opt=discriminator_opt, ema_generator=ema_generator, lecam=lecam)
    # A non-finite step changes nothing, so the state stays the last good one.
    new_state = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new_state, state)
    return new_state, collection, finite


@functools.cache
def train_metrics_collection(names: tuple[str, ...]) -> type[metrics.Collection]:
    """A CLU Collection averaging each named scalar over the steps between summaries
    (cached, so every step's collection has the same type and they merge)."""
    return metrics.Collection.create(**{n: metrics.Average.from_output(n) for n in names})


def summary_name(name: str) -> str:
    """``loss_l1`` -> ``loss/l1``: the group before the first underscore is a TensorBoard
    section."""
    return name.replace("_", "/", 1)


def replicated(mesh: Mesh, tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda _: NamedSharding(mesh, PartitionSpec()), tree)


def create_state(models: Models, mesh: Mesh, seed: int) -> TrainState:
    """A fresh state, created directly in its (replicated) sharding on the mesh."""
    abstract = jax.eval_shape(functools.partial(init_state, models, seed))
    return jax.jit(functools.partial(init_state, models, seed),
                   out_shardings=replicated(mesh, abstract))()


def abstract_state(models: Models, mesh: Mesh, seed: int) -> TrainState:
    """Shapes, dtypes and (replicated) shardings of a state: what a restore needs."""
    abstract = jax.eval_shape(functools.partial(init_state, models, seed))
    return jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
        replicated(mesh, abstract))


def make_train_step(models: Models, mesh: Mesh, state: TrainState):
    """The jitted, state-donating step with the batch split over the mesh's data axis."""
    state_sharding = replicated(mesh, state)
    data = NamedSharding(mesh, PartitionSpec("data"))
    return jax.jit(functools.partial(train_step, models),
                   in_shardings=(state_sharding, {"inputs": data, "targets": data}),
                   out_shardings=(state_sharding, NamedSharding(mesh, PartitionSpec()),
                                  NamedSharding(mesh, PartitionSpec())),
                   donate_argnums=(0,))


def checkpoint_manager(workdir: str | pathlib.Path, keep: int) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        pathlib.Path(workdir).absolute() / "checkpoints",
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()})


def restore_state(manager: ocp.CheckpointManager, abstract: TrainState,
                  batches: pipeline.GlobalBatches | None = None, step: int | None = None
                  ) -> TrainState:
    """The state at ``step`` (default: the latest); also positions ``batches`` there."""
    step = manager.latest_step() if step is None else step
    items = {"state": ocp.args.StandardRestore(abstract)}
    if batches is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(batches.host_iterator)
    return manager.restore(step, args=ocp.args.Composite(**items))["state"]


class _Preemption:
    """SIGTERM sets a flag; the loop saves and stops at the next step."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        logging.warning("SIGTERM: saving a checkpoint and stopping after this step")
        self.requested = True

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:  # agree across processes (jax.distributed's notifier)
            from jax.experimental import multihost_utils  # noqa: PLC0415
            return multihost_utils.reached_preemption_sync_point(step) or self.requested
        return self.requested


def _non_finite_message(step: int, values: dict[str, Any], last_saved: int | None) -> str:
    bad = sorted(summary_name(k) for k, v in values.items() if not np.isfinite(v))
    kept = (f"the last checkpoint (step {last_saved}) is intact" if last_saved is not None
            else "no checkpoint was written")
    return (f"non-finite loss at step {step}: {', '.join(bad) or 'unknown term'}; "
            f"training stopped, {kept}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path
                       ) -> TrainState:
    """Train ``config.train.num_steps`` steps in ``workdir``, resuming from its latest
    checkpoint; evaluate periodically and at the end. Returns the final state."""
    config_lib.validate(config)
    workdir = pathlib.Path(workdir)
    tc = config.train
    mesh = pipeline.data_mesh()
    if tc.batch_size % mesh.size:
        raise ValueError(f"train.batch_size={tc.batch_size} is not divisible by the "
                         f"{mesh.size} devices")
    data_dir, name = pipeline.prepare_dataset(config.data, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:  # what tokenize and visualize rebuild the model from
        (workdir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2) + "\n")
    models = Models.create(config)
    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    batches = pipeline.GlobalBatches(pipeline.LoaderConfig(
        data_dir=data_dir, name=name, split="train", global_batch_size=tc.batch_size,
        seed=config.seed, worker_count=config.data.worker_count), mesh)

    manager = checkpoint_manager(workdir, tc.keep_checkpoints)
    if manager.latest_step() is not None:
        state = restore_state(manager, abstract_state(models, mesh, config.seed), batches)
        logging.info("restored step %d from %s", int(state.step), manager.directory)
    else:
        state = create_state(models, mesh, config.seed)
        writer.write_hparams(_flatten(config.to_dict()))
    start = int(state.step)
    step_fn = make_train_step(models, mesh, state)
    evaluator = evaluate.Evaluator(models, mesh, data_dir, name, config, workdir)

    report = periodic_actions.ReportProgress(num_train_steps=tc.num_steps, writer=writer)
    preemption = _Preemption()
    collection, window_start, window_steps = None, None, 0
    last_saved = manager.latest_step()
    pending = None  # (step, metrics) of the previous step, checked one step late
    try:
        for step in range(start + 1, tc.num_steps + 1):
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                batch = next(batches)
                state, update, finite = step_fn(state, {k: batch[k] for k in pipeline.MODEL_KEYS})
            if pending is not None:
                _check_finite(*pending, last_saved)
            pending = (step, update, finite)
            if step == start + 1:  # compilation: excluded from the throughput
                jax.block_until_ready(finite)
                window_start, window_steps = time.perf_counter(), 0
            else:
                window_steps += 1
            collection = update if collection is None else collection.merge(update)
            report(step)
            final = step == tc.num_steps or preemption.reached(step)
            if step % tc.log_every == 0 or final:
                _check_finite(*pending, last_saved)
                scalars = collection.compute()
                if window_steps:
                    elapsed = time.perf_counter() - window_start
                    scalars["perf_examples_per_sec_per_device"] = (
                        window_steps * tc.batch_size / elapsed / jax.device_count())
                    window_start, window_steps = time.perf_counter(), 0
                writer.write_scalars(step, {f"train/{summary_name(k)}": v
                                            for k, v in scalars.items()})
                collection = None
            if step % tc.checkpoint_every == 0 or final:
                _check_finite(*pending, last_saved)
                _save(manager, step, state, batches)
                last_saved = step
            if (tc.eval_every and step % tc.eval_every == 0) or step == tc.num_steps:
                manager.wait_until_finished()  # no checkpoint writes beside the evaluation
                evaluator.run(state, step, writer)
            if final:
                break
        if pending is not None:
            _check_finite(*pending, last_saved)
        if start >= tc.num_steps:  # e.g. the final evaluation was interrupted: redo it
            logging.info("already at step %d of %d: evaluating", start, tc.num_steps)
            evaluator.run(state, start, writer)
    finally:
        preemption.restore()
        manager.wait_until_finished()
        writer.flush()
    return state


def _check_finite(step: int, step_metrics: metrics.Collection, finite: jax.Array,
                  last_saved: int | None) -> None:
    if not bool(finite):
        raise FloatingPointError(_non_finite_message(step, step_metrics.compute(), last_saved))


def _save(manager: ocp.CheckpointManager, step: int, state: TrainState,
          batches: pipeline.GlobalBatches) -> None:
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(batches.host_iterator)), force=True)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
