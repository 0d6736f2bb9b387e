"""The models a config defines and the train state they are trained in.

``Models`` holds what one config fixes and nothing trainable (modules, optimisers, shapes);
``TrainState`` holds everything a checkpoint stores besides the data iterator. States are
created directly in their sharding on the mesh (``jit(init, out_shardings=...)``, the
shardings from the modules' logical axis names and ``config.sharding``'s rules), so no
host ever holds a full unsharded copy first.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from pose_vq import config as config_lib
from pose_vq import sharding
from pose_vq.data import modes
from pose_vq.models.discriminator import PatchDiscriminator
from pose_vq.models.vqgan import VQGAN, GeneratorSpec

Params = Any


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
    ema_vq_stats: Params  # the same EMA of vq_stats: the codebook of ema_generator
    lecam: jax.Array  # EMA anchors of the mean real and fake logits (LeCam)


@flax.struct.dataclass
class GeneratorState:
    """The fields of a TrainState that encoding, decoding and evaluation need (both read
    the same attributes): a generator-only restore reads these and never the optimiser
    states or the discriminator."""

    step: jax.Array
    generator: Params
    vq_stats: Params
    ema_generator: Params
    ema_vq_stats: Params


WEIGHT_SETS = ("raw", "ema")


def generator_variables(state: TrainState | GeneratorState, weights: str) -> dict[str, Params]:
    """The generator's variables in one weight set: ``raw`` (the optimiser's weights and
    the codebook trained with them) or ``ema`` (the EMAs of both, which belong together:
    the EMA encoder's outputs drift away from the raw codebook)."""
    if weights == "raw":
        return {"params": state.generator, "vq_stats": state.vq_stats}
    if weights == "ema":
        return {"params": state.ema_generator, "vq_stats": state.ema_vq_stats}
    raise ValueError(f"weights={weights!r}: choose one of {WEIGHT_SETS}")


GENERATOR_FIELDS = tuple(f.name for f in dataclasses.fields(GeneratorState))


@functools.lru_cache(maxsize=64)
def bound(function: Callable[..., Any], *args: Any, **kwargs: Any) -> functools.partial:
    """``functools.partial(function, *args, **kwargs)`` for jax.jit, the same object for
    equal (hashable) arguments: Models, seeds, meshes. jit's caches hold a function's
    traced and compiled programs only while that function object lives, so a run
    created, resumed or evaluated again in this process (or a Tokenizer reopened)
    reuses them instead of tracing and compiling again."""
    return functools.partial(function, *args, **kwargs)


def generator_rate(config: ml_collections.ConfigDict) -> float | optax.Schedule:
    """The generator's learning rate (``optimizer.schedule``): a constant keeps the
    optimiser state of runs written before schedules existed."""
    o = config.optimizer
    if o.schedule == "constant":
        return o.learning_rate
    if o.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, o.learning_rate, o.warmup_steps, max(config.train.num_steps, o.warmup_steps + 1),
            end_value=o.final_factor * o.learning_rate)
    raise ValueError(f"optimizer.schedule={o.schedule!r}: choose 'constant' or 'cosine'")


@dataclasses.dataclass(frozen=True, eq=False)
class Models:
    """The modules and optimisers one config defines (nothing trainable, no weights).

    Models of equal configs are equal (and hash alike): the programs that take them as a
    static part (``bound``) are traced and compiled once per process, however often a
    run is created, resumed, evaluated or reopened there."""

    config: ml_collections.ConfigDict  # a copy: the caller's config may change later
    spec: GeneratorSpec
    generator: VQGAN
    discriminator: PatchDiscriminator
    generator_tx: optax.GradientTransformation
    discriminator_tx: optax.GradientTransformation
    key: tuple[str, GeneratorSpec]  # what equality compares: the config (JSON) and spec

    @classmethod
    def create(cls, config: ml_collections.ConfigDict) -> Models:
        config = config.copy_and_resolve_references()
        spec = config_lib.generator_spec(config)
        d, o = config.discriminator, config.optimizer
        return cls(config=config, spec=spec, generator=VQGAN(spec),
                   discriminator=PatchDiscriminator(d.filters, d.num_layers, d.norm_groups,
                                                    config.model.dtype, spec.conv_impl),
                   generator_tx=optax.adam(generator_rate(config), b1=o.b1, b2=o.b2),
                   discriminator_tx=optax.adam(o.learning_rate, b1=o.b1, b2=o.b2),
                   key=(config.to_json_best_effort(sort_keys=True), spec))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Models) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def mode(self) -> modes.Mode:
        """The data mode: what the clips hold and how a target derives from them."""
        return modes.MODES[self.config.data.mode]

    def input_shape(self, batch: int) -> tuple[int, ...]:
        s = self.spec
        return (batch, s.frames, s.image_size, s.image_size, s.in_channels)

    def target_shape(self, batch: int) -> tuple[int, ...]:
        return self.input_shape(batch)[:-1] + (self.spec.out_channels,)

    @functools.cached_property
    def boxed_state_shapes(self) -> TrainState:
        """The state's shapes and dtypes in flax's logical-axis boxes: what shardings and
        restores read. Traced once per config in a process (tracing init costs seconds
        at paper scale, and a run asks for it when it creates, steps, restores and
        evaluates)."""
        return _boxed_init(self, self.config.seed).eval_shape()


def init_state(models: Models, seed: int, boxed: bool = False) -> TrainState:
    """A fresh state (call under jit with out_shardings to create it sharded). ``boxed``
    keeps flax's logical-axis boxes around the parameters, their optimiser states and
    EMAs: what ``state_shardings`` reads, under ``eval_shape``."""
    key = jax.random.PRNGKey(seed)
    k_gen, k_vq, k_disc, k_train = jax.random.split(key, 4)
    clip = jnp.zeros(models.input_shape(1), jnp.float32)
    variables = models.generator.init({"params": k_gen, "vq": k_vq, "dropout": k_vq}, clip,
                                      train=False)
    discriminator = models.discriminator.init(k_disc, jnp.zeros(models.target_shape(1)))
    if not boxed:
        variables, discriminator = nn.unbox(variables), nn.unbox(discriminator)
    generator = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32), rng=k_train, generator=generator,
        vq_stats=variables["vq_stats"], discriminator=discriminator,
        generator_opt=models.generator_tx.init(generator),
        discriminator_opt=models.discriminator_tx.init(discriminator),
        ema_generator=jax.tree_util.tree_map(jnp.copy, generator),
        ema_vq_stats=jax.tree_util.tree_map(jnp.copy, variables["vq_stats"]),
        lecam=jnp.zeros((2,), jnp.float32))


def state_shardings(models: Models, mesh: Mesh) -> TrainState:
    """Each leaf's sharding on ``mesh`` under the config's rules (``pose_vq.sharding``):
    a parameter's optimiser states and EMA are sharded as the parameter is."""
    return sharding.tree_shardings(models.boxed_state_shapes, mesh,
                                   sharding.rules_for(models.config))


def _boxed_init(models: Models, seed: int) -> Callable[[], TrainState]:
    """The jitted boxed ``init_state``: one trace per config and seed, which the state's
    shapes (``Models.boxed_state_shapes``) and its creation (``create_state``) share."""
    return jax.jit(bound(init_state, models, seed, True))


def _unboxed_init_state(models: Models, seed: int) -> TrainState:
    return nn.unbox(_boxed_init(models, seed)())


def create_state(models: Models, mesh: Mesh, seed: int) -> TrainState:
    """A fresh state, created directly in its sharding on the mesh."""
    init = bound(_unboxed_init_state, models, seed)
    return jax.jit(init, out_shardings=state_shardings(models, mesh))()


def abstract_state(models: Models, mesh: Mesh) -> TrainState:
    """Shapes, dtypes and shardings of a state on ``mesh``: what a restore needs (onto any
    mesh: orbax reshards what another mesh wrote)."""
    abstract = nn.unbox(models.boxed_state_shapes)
    return jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
        state_shardings(models, mesh))


def abstract_generator_state(models: Models, mesh: Mesh) -> dict[str, Any]:
    """The GeneratorState fields of ``abstract_state``: what a generator-only restore
    reads."""
    state = abstract_state(models, mesh)
    return {name: getattr(state, name) for name in GENERATOR_FIELDS}
