"""The jitted training step: one generator update, then one discriminator update.

The step follows the reference's losses (L1 + LPIPS + codebook + adaptive-weighted hinge
GAN, discriminator hinge loss) with its bug fixed: the discriminator is trained on
stop-gradient reconstructions, so its loss never reaches the generator. The generator is
differentiated once: one VJP of the generator, pulled back from the sum of the loss
gradients with respect to the reconstruction. The adaptive weight needs the gradient of
each loss on the decoder's last kernel, which only re-runs that one convolution.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from clu import metrics
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pose_vq import losses
from pose_vq.models import layers
from pose_vq.models.lpips import load_lpips_params, perceptual_loss
from pose_vq.models.quantizer import gumbel_temperature
from pose_vq.state import Models, Params, TrainState, replicated


def load_perceptual(config: ml_collections.ConfigDict, mesh: Mesh | None = None
                    ) -> Params | None:
    """The LPIPS weights the step takes (replicated on ``mesh`` when given), or None when
    the perceptual weight is 0. An argument of the step rather than constants in it: XLA
    compiled LPIPS's gradient in 6.5 s instead of 13 s without 60 MB of folded
    constants."""
    if not config.loss.perceptual_weight:
        return None
    params = load_lpips_params()
    return params if mesh is None else jax.device_put(params, replicated(mesh, params))


def _global_norm(tree: Any) -> jax.Array:
    return optax.tree.norm(jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), tree))


def sample_planes(x: jax.Array, y: jax.Array, num: int, key: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
    """The same ``num`` random (clip, frame, channel) planes of two clips, as clips
    (num, 1, H, W, 1) for perceptual_loss; all planes when ``num`` is 0 or too large."""
    b, t, h, w, c = x.shape
    if not num or num >= b * t * c:
        return x, y
    pick = jax.random.permutation(key, b * t * c)[:num]
    planes = lambda a: jnp.moveaxis(a, -1, 2).reshape(b * t * c, h, w)[pick][:, None, :, :, None]
    return planes(x), planes(y)


def generator_gradients(models: Models, perceptual: Params | None, state: TrainState,
                        x: jax.Array, target: jax.Array, key: jax.Array
                        ) -> tuple[Params, jax.Array, dict[str, Any]]:
    """Gradient of the generator objective (reconstruction + quantizer + adaptive-weighted
    adversarial term) w.r.t. the generator params; also the reconstruction and the terms.

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
            temperature=temperature, rngs={"vq": k_vq, "dropout": k_dropout},
            mutable=["vq_stats", "intermediates"])
        return (recon, q.losses["total"]), (q, updates)

    (recon, q_total), pullback, (q, updates) = jax.vjp(generator_forward, state.generator,
                                                       has_aux=True)

    def reconstruction_loss(r):
        terms = {"l1": losses.l1(r, target), "perceptual": jnp.zeros((), jnp.float32)}
        if perceptual is not None:
            a, b = sample_planes(r, target, lc.perceptual_planes, k_planes)
            terms["perceptual"] = perceptual_loss(perceptual, a, b,
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


def train_step(models: Models, state: TrainState, batch: dict[str, jax.Array],
               perceptual: Params | None) -> tuple[TrainState, metrics.Collection, jax.Array]:
    """One generator update, then one discriminator update (``perceptual``: the LPIPS
    weights or None). Returns the new state, this step's metrics and whether every loss
    was finite; a non-finite step leaves the state unchanged."""
    config, lc = models.config, models.config.loss
    x, target = batch["inputs"], batch["targets"]
    g_params, recon, aux = generator_gradients(models, perceptual, state, x, target,
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
    ema_generator = optax.incremental_update(generator, state.ema_generator, 1.0 - decay)

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


def make_train_step(models: Models, mesh: Mesh, state: TrainState):
    """The jitted, state-donating ``step(state, batch, perceptual)``: the batch split over
    the mesh's data axis, the state and the LPIPS weights (``load_perceptual``)
    replicated."""
    state_sharding = replicated(mesh, state)
    data = NamedSharding(mesh, PartitionSpec("data"))
    return jax.jit(functools.partial(train_step, models),
                   in_shardings=(state_sharding, {"inputs": data, "targets": data},
                                 NamedSharding(mesh, PartitionSpec())),
                   out_shardings=(state_sharding, NamedSharding(mesh, PartitionSpec()),
                                  NamedSharding(mesh, PartitionSpec())),
                   donate_argnums=(0,))
