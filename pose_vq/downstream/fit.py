"""The training loop of the downstream models (lifters, probe heads, the token prior):
small models on in-memory arrays, in one process, on one device or (``mesh``) with the
state replicated and each batch split over the mesh's data axis.

AdamW with MotionBERT's schedule (the learning rate times ``lr_decay`` after every
epoch), scalars every ``log_every`` steps (TensorBoard in the workdir), orbax
checkpoints every ``checkpoint_every`` steps and at the end. The batches are a pure
function of the seed and the step (a fresh permutation of the examples per epoch), so a
run resumed from its last checkpoint takes exactly the batches it would have taken.
Whoever reuses a workdir first ``claim``s it for what the model learns from, so a
checkpoint trained on other inputs is never resumed or reused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging

from pose_vq import checkpointing, paths, sharding, summary
from pose_vq.data import pipeline

# loss_fn(params, model_state, batch, key) -> (loss, (terms, new model_state))
LossFn = Callable[[Any, Any, dict[str, jax.Array], jax.Array],
                  tuple[jax.Array, tuple[dict[str, jax.Array], Any]]]


SOURCE_FILE = "source.json"
RUN_LENGTH = ("num_steps", "log_every", "checkpoint_every")  # not in a training key


@flax.struct.dataclass
class FitState:
    step: jax.Array
    params: Any
    model_state: Any  # e.g. {"batch_stats": ...}; {} for models without
    opt_state: Any


def default_config() -> ml_collections.ConfigDict:
    """The loop's knobs (a config's ``train`` section), with MotionBERT's optimiser."""
    c = ml_collections.ConfigDict()
    c.batch_size = 32
    c.num_steps = 2000
    c.learning_rate = 5e-4
    c.weight_decay = 0.01
    c.lr_decay = 0.99  # per epoch
    c.log_every = 100
    c.checkpoint_every = 500
    c.seed = 0
    return c


def training_key(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A model's config (a ``train`` section inside) as a key of what it trains into, less
    ``RUN_LENGTH``: a longer run resumes a shorter one's checkpoints."""
    key = json.loads(config.to_json_best_effort())
    key["train"] = {k: v for k, v in key["train"].items() if k not in RUN_LENGTH}
    return key


def _with_defaults(recorded: Any, defaults: Any) -> Any:
    """``recorded`` with the keys it lacks (at any depth) taken from ``defaults``."""
    if not (isinstance(recorded, dict) and isinstance(defaults, dict)):
        return recorded
    return {**defaults, **{k: _with_defaults(v, defaults.get(k)) for k, v in recorded.items()}}


def claim(workdir: paths.PathLike, source: dict[str, Any],
          defaults: dict[str, Any] | None = None) -> bool:
    """Keep what ``workdir`` holds only if it was trained from ``source`` (JSON: what the
    model learns from and how); else empty it, so nothing of another source is resumed,
    reused or mixed in. A knob added since the record was written counts as its value
    in ``defaults`` (the same structure, today's defaults), so finished work survives an
    upgrade that adds knobs. Records ``source``; returns whether anything was removed."""
    workdir = paths.as_path(workdir)
    path = workdir / SOURCE_FILE
    source = json.loads(json.dumps(source))
    defaults = json.loads(json.dumps(defaults or {}))
    stale = workdir.is_dir() and any(workdir.iterdir()) and (
        not path.exists()
        or _with_defaults(json.loads(path.read_text()), defaults) != source)
    if jax.process_index() == 0:
        if stale:
            logging.info("%s was trained from another source: training again", workdir)
            workdir.rmtree()
        if not path.exists():
            workdir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(source, indent=1, sort_keys=True) + "\n")
    return stale


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    if num_examples < batch_size:
        raise ValueError(f"{num_examples} training examples, fewer than one batch of "
                         f"{batch_size}")
    return num_examples // batch_size


def batch_indices(step: int, num_examples: int, batch_size: int, seed: int) -> np.ndarray:
    """The examples of ``step``'s batch: its slice of its epoch's permutation."""
    per_epoch = steps_per_epoch(num_examples, batch_size)
    epoch, i = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return order[i * batch_size:(i + 1) * batch_size]


def optimizer(c: ml_collections.ConfigDict, num_examples: int) -> optax.GradientTransformation:
    schedule = optax.exponential_decay(c.learning_rate, steps_per_epoch(num_examples, c.batch_size),
                                       c.lr_decay, staircase=True)
    return optax.adamw(schedule, weight_decay=c.weight_decay)


def _initial_state(tx: optax.GradientTransformation, variables: dict[str, Any]) -> FitState:
    params = variables["params"]
    return FitState(jnp.zeros((), jnp.int32), params,
                    {k: v for k, v in variables.items() if k != "params"}, tx.init(params))


def _manager(workdir: paths.PathLike) -> ocp.CheckpointManager:
    """The last two checkpoints; a write that fails for lack of space is one line
    (checkpointing.CheckpointManager)."""
    return checkpointing.CheckpointManager(paths.absolute(workdir) / "checkpoints",
                                           options=ocp.CheckpointManagerOptions(max_to_keep=2))


def _restore_latest(manager: ocp.CheckpointManager, state: FitState) -> FitState:
    if manager.latest_step() is None:
        return state
    return manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(state))


def load_variables(workdir: paths.PathLike, c: ml_collections.ConfigDict,
                   variables: dict[str, Any]) -> dict[str, Any]:
    """The variables of ``workdir``'s last checkpoint (``variables`` gives their
    structure, e.g. a fresh init)."""
    manager = _manager(workdir)
    if manager.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}: train first")
    state = _restore_latest(manager, _initial_state(optimizer(c, c.batch_size), variables))
    return {"params": state.params, **state.model_state}


def apply_batched(fn: Callable[[dict[str, np.ndarray]], Any], arrays: dict[str, np.ndarray],
                  batch_size: int = 64) -> Any:
    """``fn`` (jitted) over ``arrays`` (equal first axes) in batches of one size, the last
    padded (``pipeline.fixed_size_batches``: one compilation), its outputs (a pytree of
    arrays) trimmed to the real rows and concatenated."""
    n = len(next(iter(arrays.values())))
    rows = ({k: v[i] for k, v in arrays.items()} for i in range(n))
    outs = [jax.tree_util.tree_map(lambda x, real=real: np.asarray(x)[:real], fn(batch))
            for batch, real in pipeline.fixed_size_batches(rows, batch_size)]
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *outs)


def fit(workdir: paths.PathLike, c: ml_collections.ConfigDict, variables: dict[str, Any],
        loss_fn: LossFn, arrays: dict[str, np.ndarray],
        mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
    """Train ``variables`` ({"params": ..., other collections}) on ``arrays`` (equal
    first axes) for ``c.num_steps`` steps, resuming from ``workdir``'s last checkpoint;
    returns the trained variables. With ``mesh`` (one process), the state is replicated
    on its devices and each batch split over its data axis (XLA reduces the gradients)."""
    n = len(next(iter(arrays.values())))
    tx = optimizer(c, n)
    manager = _manager(workdir)
    state = _initial_state(tx, variables)
    place = lambda batch: {k: jnp.asarray(v) for k, v in batch.items()}
    if mesh is not None:
        if c.batch_size % sharding.data_size(mesh):
            raise ValueError(f"batch_size {c.batch_size} is not divisible by the mesh's "
                             f"{sharding.data_size(mesh)} data devices")
        state = jax.device_put(state, sharding.replicated(mesh, state))
        place = lambda batch: jax.device_put(batch, sharding.batch_sharding(mesh))
    state = _restore_latest(manager, state)
    if int(state.step):
        logging.info("resumed %s at step %d", workdir, int(state.step))

    @jax.jit
    def train_step(state: FitState, batch: dict[str, jax.Array], key: jax.Array):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (terms, model_state)), grads = grad_fn(state.params, state.model_state, batch, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = FitState(state.step + 1, optax.apply_updates(state.params, updates), model_state,
                       opt_state)
        return new, {"loss": loss, **terms}

    writer = summary.SummaryWriter(workdir)
    root_key = jax.random.key(c.seed)
    pending: list[dict[str, jax.Array]] = []
    for step in range(int(state.step), c.num_steps):
        idx = batch_indices(step, n, c.batch_size, c.seed)
        batch = place({k: v[idx] for k, v in arrays.items()})
        state, terms = train_step(state, batch, jax.random.fold_in(root_key, step))
        pending.append(terms)
        done = step + 1
        if done % c.log_every == 0 or done == c.num_steps:
            means = {f"train/{k}": float(np.mean([float(t[k]) for t in pending]))
                     for k in pending[0]}
            if not np.isfinite(means["train/loss"]):
                raise FloatingPointError(f"{workdir}: non-finite loss by step {done}: {means}")
            writer.write_scalars(done, means)
            pending = []
        if done % c.checkpoint_every == 0 or done == c.num_steps:
            manager.save(done, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
    writer.close()
    return {"params": state.params, **state.model_state}
