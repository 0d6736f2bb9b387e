"""The jitted training step: one generator update, then one discriminator update.

The step follows the reference's losses (L1 + LPIPS + codebook + adaptive-weighted hinge
GAN, discriminator hinge loss) with its bug fixed: the discriminator is trained on
stop-gradient reconstructions, so its loss never reaches the generator. The generator is
differentiated once: one VJP of the generator, pulled back from the sum of the loss
gradients with respect to the reconstruction. The adaptive weight needs the gradient of
each loss on the decoder's last kernel, which only re-runs that one convolution. Without
a GAN (adversarial weight 0: the vqvae and dvae baselines) the discriminator, whose loss
would be 0 at every step, is neither run nor updated.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from clu import metrics
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pose_vq import losses, runtime, sharding
from pose_vq.data import modes
from pose_vq.models import layers
from pose_vq.models.lpips import load_lpips_params, perceptual_loss
from pose_vq.models.quantizer import gumbel_temperature
from pose_vq.state import Models, Params, TrainState, bound, state_shardings


def load_perceptual(config: ml_collections.ConfigDict, mesh: Mesh | None = None
                    ) -> Params | None:
    """The LPIPS weights the step takes (replicated on ``mesh`` when given), or None when
    the perceptual weight is 0. An argument of the step rather than constants in it: XLA
    compiled LPIPS's gradient in 6.5 s instead of 13 s without 60 MB of folded
    constants."""
    if not config.loss.perceptual_weight:
        return None
    params = load_lpips_params()
    return params if mesh is None else jax.device_put(params, sharding.replicated(mesh, params))


def _global_norm(tree: Any) -> jax.Array:
    return optax.tree.norm(jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), tree))


def sample_planes(x: jax.Array, y: jax.Array, per_clip: int, key: jax.Array,
                  first_clip: jax.Array | int = 0) -> tuple[jax.Array, jax.Array]:
    """The same ``per_clip`` random (frame, channel) planes of each clip of two clips, as
    clips (B * per_clip, 1, H, W, 1) for perceptual_loss; all planes when ``per_clip`` is
    0 or too large. Clip i draws from fold_in(key, first_clip + i), its index in the
    global batch, so the choice does not depend on how the batch is split."""
    b, t, h, w, c = x.shape
    if not per_clip or per_clip >= t * c:
        return x, y
    clip_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(first_clip + jnp.arange(b))
    pick = jax.vmap(lambda k: jax.random.permutation(k, t * c)[:per_clip])(clip_keys)

    def planes(a):
        flat = jnp.moveaxis(a, -1, 2).reshape(b, t * c, h, w)
        chosen = jnp.take_along_axis(flat, pick[:, :, None, None], axis=1)
        return chosen.reshape(b * per_clip, 1, h, w, 1)

    return planes(x), planes(y)


def perceptual_term(models: Models, perceptual: Params, recon: jax.Array, target: jax.Array,
                    key: jax.Array, mesh: Mesh | None = None) -> jax.Array:
    """LPIPS of the step: the mean over ``loss.perceptual_planes`` planes per step (drawn
    evenly from the clips, rounded up to a whole number per clip; 0: all), chunked by
    ``loss.perceptual_chunk`` planes per device. On a mesh each device samples and runs
    its own clips (shard_map; the LPIPS weights replicated) and only the scalar mean is
    all-reduced: no clip or plane crosses devices."""
    lc = models.config.loss
    per_clip = -(-lc.perceptual_planes // recon.shape[0])

    def local(params, r, t, key):
        first = jax.lax.axis_index(sharding.DATA) * r.shape[0] if mesh is not None else 0
        a, b = sample_planes(r, t, per_clip, key, first)
        loss = perceptual_loss(params, a, b, dtype=jnp.dtype(models.config.model.dtype),
                               chunk_size=lc.perceptual_chunk or None)
        return jax.lax.pmean(loss, sharding.DATA) if mesh is not None else loss

    if mesh is None:
        return local(perceptual, recon, target, key)
    clips = PartitionSpec(sharding.DATA)  # whole across 'model': each of its devices repeats
    return jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(), clips, clips,
                                                     PartitionSpec()),
                         out_specs=PartitionSpec())(perceptual, recon, target, key)


def generator_gradients(models: Models, perceptual: Params | None, state: TrainState,
                        x: jax.Array, target: jax.Array, key: jax.Array,
                        mesh: Mesh | None = None) -> tuple[Params, jax.Array, dict[str, Any]]:
    """Gradient of the generator objective (reconstruction + quantizer + adaptive-weighted
    adversarial term) w.r.t. the generator params; also the reconstruction and the terms
    (``mesh``: the data-parallel mesh LPIPS runs on, shard by shard).

    The objective's gradient is one VJP of the generator at the summed loss gradients with
    respect to its output, so the generator runs forward and backward once.
    """
    config, lc = models.config, models.config.loss
    k_vq, k_dropout, k_planes = jax.random.split(key, 3)
    q_cfg = config.quantizer
    temperature = (gumbel_temperature(q_cfg.temperature_start, q_cfg.temperature_end,
                                      q_cfg.temperature_anneal_steps)(state.step)
                   if q_cfg.kind == "gumbel" else None)

    def generator_forward(params):
        (recon, q), updates = models.generator.apply(
            {"params": params, "vq_stats": state.vq_stats}, x, train=True,
            temperature=temperature, step=state.step, rngs={"vq": k_vq, "dropout": k_dropout},
            mutable=["vq_stats", "intermediates"])
        return (recon, q.losses["total"]), (q, updates)

    (recon, q_total), pullback, (q, updates) = jax.vjp(generator_forward, state.generator,
                                                       has_aux=True)

    def reconstruction_loss(r):
        terms = {"l1": losses.l1(r, target), "perceptual": jnp.zeros((), jnp.float32)}
        if perceptual is not None:
            terms["perceptual"] = perceptual_term(models, perceptual, r, target, k_planes,
                                                  mesh)
        total = lc.l1_weight * terms["l1"] + lc.perceptual_weight * terms["perceptual"]
        if lc.gradient_weight:
            terms["gradient_l1"] = losses.gradient_l1(r, target)
            total = total + lc.gradient_weight * terms["gradient_l1"]
        if lc.foreground_weight:
            terms["foreground_l1"] = losses.foreground_l1(r, target)
            total = total + lc.foreground_weight * terms["foreground_l1"]
        return total, terms

    def adversarial_loss(r):
        logits = models.discriminator.apply(state.discriminator, r)
        return losses.generator_adversarial_loss(logits), logits

    (rec_loss, rec_terms), g_rec = jax.value_and_grad(reconstruction_loss, has_aux=True)(recon)
    disc_factor = losses.discriminator_factor(state.step, lc.disc_start, lc.adversarial_weight)
    # The objective's gradient w.r.t. the reconstruction; without a GAN (the vqvae and
    # dvae baselines) the discriminator is not run at all.
    g_recon, adv_term, gan = g_rec, 0.0, {}
    if lc.adversarial_weight:
        (adv_loss, fake_logits), g_adv = jax.value_and_grad(adversarial_loss, has_aux=True)(recon)
        adaptive = (_adaptive_weight(models, state, updates, g_rec, g_adv) if lc.adaptive_weight
                    else jnp.ones((), jnp.float32))
        adv_scale = disc_factor * adaptive
        g_recon, adv_term = g_rec + adv_scale * g_adv, adv_scale * adv_loss
        gan = {"loss_generator_adversarial": adv_loss, "gan_adaptive_weight": adaptive,
               "gan_adversarial_scale": adv_scale, "gan_logits_fake": jnp.mean(fake_logits)}
    (grads,) = pullback((g_recon, jnp.ones_like(q_total)))
    aux = {"vq_stats": updates["vq_stats"], "disc_factor": disc_factor, "scalars": {
        "loss_generator_total": rec_loss + q_total + adv_term,
        "loss_reconstruction": rec_loss, "loss_l1": rec_terms["l1"],
        "loss_perceptual": rec_terms["perceptual"],
        **{f"loss_{k}": rec_terms[k] for k in ("gradient_l1", "foreground_l1") if k in rec_terms},
        **{f"loss_quantizer_{k}": v for k, v in q.losses.items()}, "q_loss": q.q_loss, **gan,
        **{f"codebook_{k}": v for k, v in q.health.items()},
        **({"codebook_temperature": temperature} if temperature is not None else {}),
    }}
    return grads, recon, aux


def _adaptive_weight(models: Models, state: TrainState, updates: Params, g_rec: jax.Array,
                     g_adv: jax.Array) -> jax.Array:
    """The adaptive GAN weight from each loss's gradient on the decoder's last kernel:
    d loss / d kernel is the VJP of that one conv at d loss / d recon."""
    lc = models.config.loss
    hidden = updates["intermediates"]["decoder"]["conv_out_input"][0]
    conv_out = layers.conv3d(models.spec.out_channels, impl=models.spec.conv_impl)  # float32
    last = state.generator["decoder"]["conv_out"]
    run_last = lambda k: conv_out.apply({"params": {**last, "kernel": k}}, hidden)
    return losses.adaptive_weight(
        lambda k: jnp.vdot(g_rec, run_last(k)), lambda k: jnp.vdot(g_adv, run_last(k)),
        last["kernel"], max_weight=lc.adaptive_weight_max, scale=lc.adaptive_weight_scale)


def train_step(models: Models, state: TrainState, batch: dict[str, jax.Array],
               perceptual: Params | None, mesh: Mesh | None = None
               ) -> tuple[TrainState, metrics.Collection, jax.Array]:
    """One generator update, then one discriminator update if the config has a GAN, on a
    batch of stored uint8 clips (``pipeline.model_fields``; ``perceptual``: the LPIPS
    weights or None). Returns the new state, this step's metrics and whether every loss
    was finite; a non-finite step leaves the state unchanged."""
    config, lc = models.config, models.config.loss
    x, target = modes.model_clips(models.mode, batch)
    g_params, recon, aux = generator_gradients(models, perceptual, state, x, target,
                                               jax.random.fold_in(state.rng, state.step), mesh)
    g_updates, generator_opt = models.generator_tx.update(g_params, state.generator_opt,
                                                          state.generator)
    generator = optax.apply_updates(state.generator, g_updates)

    # Discriminator on stop-gradient reconstructions: its loss cannot reach the generator.
    # Without a GAN its loss is 0 at every step: it is neither run nor updated.
    discriminator, discriminator_opt, lecam, d_scalars = (
        _discriminator_update(models, state, target, jax.lax.stop_gradient(recon),
                              aux["disc_factor"])
        if lc.adversarial_weight else
        (state.discriminator, state.discriminator_opt, state.lecam, {}))

    # EMA of the generator weights and, with them, of the codebook state (the EMA encoder
    # is evaluated and exported with it), with the usual warm-up so early evaluations are
    # useful. Non-float statistics (the k-means flag) are taken as they are.
    decay = jnp.minimum(config.train.ema_decay, (1.0 + state.step) / (10.0 + state.step))
    ema_generator = optax.incremental_update(generator, state.ema_generator, 1.0 - decay)
    ema_vq_stats = jax.tree_util.tree_map(
        lambda new, old: (optax.incremental_update(new, old, 1.0 - decay)
                          if jnp.issubdtype(new.dtype, jnp.floating) else new),
        aux["vq_stats"], state.ema_vq_stats)

    scalars = {**aux["scalars"], **d_scalars, "norm_generator_grad": _global_norm(g_params),
               "norm_generator_param": _global_norm(generator)}
    scalars = {k: jnp.asarray(v, jnp.float32) for k, v in scalars.items()}
    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in scalars.values()]))
    collection = train_metrics_collection(tuple(sorted(scalars))).single_from_model_output(
        **scalars)
    new_state = state.replace(
        step=state.step + 1, generator=generator, vq_stats=aux["vq_stats"],
        discriminator=discriminator, generator_opt=generator_opt,
        discriminator_opt=discriminator_opt, ema_generator=ema_generator,
        ema_vq_stats=ema_vq_stats, lecam=lecam)
    # A non-finite step changes nothing, so the state stays the last good one.
    new_state = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new_state, state)
    return new_state, collection, finite


def _discriminator_update(models: Models, state: TrainState, target: jax.Array,
                          fake: jax.Array, disc_factor: jax.Array
                          ) -> tuple[Params, optax.OptState, jax.Array, dict[str, jax.Array]]:
    """One discriminator step on real ``target`` and (stop-gradient) ``fake`` clips: its
    new params, optimiser state, LeCam anchors and scalars."""
    lc = models.config.loss

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

    (total, (terms, real_logits, fake_logits)), grads = jax.value_and_grad(
        discriminator_loss, has_aux=True)(state.discriminator)
    updates, opt = models.discriminator_tx.update(grads, state.discriminator_opt,
                                                  state.discriminator)
    params = optax.apply_updates(state.discriminator, updates)
    lecam = jnp.stack([losses.update_lecam_ema(state.lecam[0], real_logits, lc.lecam_decay),
                       losses.update_lecam_ema(state.lecam[1], fake_logits, lc.lecam_decay)])
    scalars = {"loss_discriminator_total": total,
               **{f"loss_discriminator_{k}": v for k, v in terms.items()},
               "gan_logits_real": jnp.mean(real_logits),
               "norm_discriminator_grad": _global_norm(grads),
               "norm_discriminator_param": _global_norm(params)}
    return params, opt, lecam, scalars


@flax.struct.dataclass
class StepLog:
    """What the loop keeps on device between two log points: each scalar's running mean
    and the first step whose scalars were not all finite (0: none yet) with which of them
    were not. The loop reads it only at a boundary, so steps never wait on the host."""

    metrics: metrics.Collection
    first_bad_step: jax.Array  # int32
    bad_terms: dict[str, jax.Array]  # bool per scalar, at first_bad_step

    @classmethod
    def empty(cls, like: metrics.Collection) -> StepLog:
        """A log of no steps, for metrics like ``like`` (under jit: on its devices)."""
        return cls(metrics=type(like).empty(), first_bad_step=jnp.zeros((), jnp.int32),
                   bad_terms={k: jnp.zeros((), bool) for k in type(like).__annotations__})

    def add(self, update: metrics.Collection, finite: jax.Array, step: jax.Array
            ) -> StepLog:
        """This log with one more step's metrics (jit it: one dispatch per step)."""
        first = (self.first_bad_step == 0) & ~finite
        return StepLog(
            metrics=self.metrics.merge(update),
            first_bad_step=jnp.where(first, jnp.asarray(step, jnp.int32), self.first_bad_step),
            bad_terms={k: jnp.where(first, ~jnp.isfinite(v), self.bad_terms[k])
                       for k, v in update.compute().items()})


@functools.cache
def train_metrics_collection(names: tuple[str, ...]) -> type[metrics.Collection]:
    """A CLU Collection averaging each named scalar over the steps between summaries
    (cached, so every step's collection has the same type and they merge)."""
    return metrics.Collection.create(**{n: metrics.Average.from_output(n) for n in names})


def make_train_step(models: Models, mesh: Mesh):
    """The jitted, state-donating ``step(state, batch, perceptual)``: the batch split over
    the mesh's data axis, the state in its sharding (``state.state_shardings``: replicated,
    FSDP or tensor-parallel by ``config.sharding``), the LPIPS weights
    (``load_perceptual``) replicated."""
    state_sharding = state_shardings(models, mesh)
    whole = NamedSharding(mesh, PartitionSpec())
    options = runtime.xla_compiler_options(mesh.devices.flat[0].platform)
    return jax.jit(bound(train_step, models, mesh=mesh), compiler_options=options,
                   in_shardings=(state_sharding, sharding.batch_sharding(mesh), whole),
                   out_shardings=(state_sharding, whole, whole), donate_argnums=(0,))
