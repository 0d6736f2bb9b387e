"""2D-to-3D lifting on the skeletons of a panoptic_heatmaps dataset, as MotionBERT trains it.

    python -m pose_vq.downstream.lift --config=configs/lift_dstformer.py --workdir=runs/lift
    python -m pose_vq.downstream.lift --config=configs/lift_dstformer.py:demo,mlp --workdir=runs/lift_mlp

Every (clip, camera) pair of the dataset is one example: the camera's 2D joints, scaled
as MotionBERT scales Human3.6M's (x / width * 2 - 1, y / width * 2 - height / width), go
in with a confidence; the joints in that camera's frame (x_cam = R X + t), relative to
the mid-hip and in metres, come out. Absent joints enter as zeros and count in no loss or
error; frames whose mid-hip is absent count in none either. Training corrupts the input
as MotionBERT's pre-training does (``corruption``) and flips left and right half of the
time; the loss is MotionBERT's (MPJPE + 0.5 N-MPJPE + 20 velocity error). Evaluation on
the held-out split reports MPJPE, N-MPJPE, P-MPJPE and the velocity error in millimetres
from clean ground-truth 2D, into ``<workdir>/eval_metrics.json`` and TensorBoard.

``model.kind`` picks DSTformer (pose_vq.downstream.dstformer) or the per-frame MLP baseline
(pose_vq.downstream.lifters); both train and evaluate the same way.
"""

from __future__ import annotations

import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from pose_vq import checkpointing, defaults, errors, paths, runtime, summary
from pose_vq.data import camera, pipeline, prepare, skeleton
from pose_vq.downstream import fit, pose3d
from pose_vq.downstream.dstformer import DSTformer, DSTformerSpec
from pose_vq.downstream.lifters import MLPLifter, MLPLifterSpec

ROOT = skeleton.JOINT_INDEX["mid-hip"]
UNIT_MM = 1000.0  # targets are in metres
EVAL_FILE = "eval_metrics.json"


def root_relative(joints: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Joints minus each frame's mid-hip, and the weight of the joints that count: present
    ones of frames whose mid-hip is present."""
    weight = present & present[..., ROOT:ROOT + 1]
    return joints - joints[..., ROOT:ROOT + 1, :], weight.astype(np.float32)


def lifting_examples(skeletons: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One example per (clip, camera): ``keypoints`` (N, T, J, 2) screen units, ``present``
    (N, T, J), ``target`` (N, T, J, 3) root-relative metres in the camera's frame,
    ``weight`` (N, T, J), and the ``clip`` and ``camera`` it came from."""
    num_clips, num_cameras = skeletons["joints2d"].shape[:2]
    cam = camera.camera_frame(skeletons["joints3d"][:, None], skeletons["camera_R"],
                       skeletons["camera_t"])  # (N, C, T, J, 3)
    present = np.broadcast_to(skeletons["present"][:, None], cam.shape[:-1])
    target, weight = root_relative(cam / 100.0, present)
    res = skeletons["camera_resolution"].astype(np.float64)[:, :, None, None, :]
    keypoints = camera.normalize_screen(skeletons["joints2d"].astype(np.float64), res)
    flat = lambda x, dtype: np.ascontiguousarray(x.reshape((-1,) + x.shape[2:]), dtype)
    return {"keypoints": flat(keypoints, np.float32), "present": flat(present, bool),
            "target": flat(target, np.float32), "weight": flat(weight, np.float32),
            "clip": np.repeat(np.arange(num_clips), num_cameras),
            "camera": np.tile(np.arange(num_cameras), num_clips)}


# ------------------------------------------------------------------------- config


def default_config(options: str = "") -> ml_collections.ConfigDict:
    """Lifting's knobs (MotionBERT's recipe) for the comma-separated ``options``: ``lite``
    (MotionBERT-Lite), ``demo`` (a CPU-sized DSTformer and training), ``mlp`` (the per-frame
    MLP baseline). ``data`` is the tokenizer defaults' data section: set it to the dataset
    whose skeletons are lifted."""
    options = {a for a in options.split(",") if a}
    unknown = options - {"lite", "demo", "mlp"}
    if unknown:
        raise ValueError(f"unknown lift_dstformer options {sorted(unknown)}: use lite, demo, mlp")
    c = ml_collections.ConfigDict()
    # The dataset whose skeletons are lifted: the same knobs as a tokenizer config's
    # data section, so both read (or build) the same panoptic_heatmaps dataset.
    c.data = defaults.get_config().data

    c.model = m = ml_collections.ConfigDict()
    m.kind = "mlp" if "mlp" in options else "dstformer"
    m.dim, m.depth, m.num_heads, m.mlp_ratio, m.rep_dim = 512, 5, 8, 2.0, 512  # released
    if "lite" in options:
        m.dim, m.mlp_ratio = 256, 4.0
    if "demo" in options:
        m.dim, m.depth, m.num_heads, m.mlp_ratio, m.rep_dim = 64, 2, 4, 2.0, 64
    m.width, m.blocks = 1024, 2  # the MLP baseline's (Martinez et al.)
    m.dropout = 0.5 if m.kind == "mlp" else 0.0

    # MotionBERT's pre-training corruption of 2D (its Augmenter2D; screen units). The
    # noise statistics are the means over joints of its fitted per-joint ones.
    c.corruption = n = ml_collections.ConfigDict()
    n.enabled = True
    n.keyframe_every = 9  # noise drawn at one frame in 9 (27 in MotionBERT's 243), interpolated
    n.gaussian_weight = 0.88  # chance a joint's error is Gaussian (else uniform)
    n.noise_std = 0.006
    n.uniform_range = 0.06
    n.jitter_std = 0.002  # independent per frame
    n.conf_a, n.conf_b = 0.028, 1.1  # confidence a / (d + a) + b d ...
    n.conf_shift_mean, n.conf_shift_std = -0.0046, 0.143  # ... + N(m, s), clipped to [0, 1]
    n.mask_ratio = 0.05  # joints dropped
    n.mask_frames = 0.1  # whole frames dropped
    c.augment = ml_collections.ConfigDict({"flip": True})

    c.loss = ml_collections.ConfigDict({"scale_weight": 0.5, "velocity_weight": 20.0})

    c.train = t = fit.default_config()
    t.split = "train"
    t.batch_size, t.learning_rate, t.num_steps = 32, 2e-4, 20000  # MotionBERT's pose3d lr
    if "demo" in options:
        t.learning_rate, t.num_steps, t.log_every, t.checkpoint_every = 1e-3, 800, 100, 400
    c.eval = ml_collections.ConfigDict({"split": "validation"})
    return c


# ----------------------------------------------------------------------- corruption


def _interpolate_frames(x: jax.Array, num_frames: int) -> jax.Array:
    """(B, K, ...) -> (B, num_frames, ...), linear in time with both ends kept."""
    k = x.shape[1]
    pos = jnp.linspace(0.0, k - 1.0, num_frames)
    lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, k - 1)
    hi = jnp.minimum(lo + 1, k - 1)
    frac = (pos - lo).reshape((1, num_frames) + (1,) * (x.ndim - 2))
    return x[:, lo] * (1.0 - frac) + x[:, hi] * frac


def corrupt(key: jax.Array, keypoints: jax.Array, present: jax.Array,
            c: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
    """MotionBERT's 2D corruption of clean keypoints (B, T, J, 2): a detector-like error
    drawn at one frame in ``keyframe_every`` (Gaussian with probability ``gaussian_weight``, else
    uniform over ``uniform_range``) and interpolated in time, plus a small per-frame
    jitter; a confidence that falls with the error's size (a / (d + a) + b d + N(m, s),
    clipped to [0, 1]); then joints (``mask_ratio``) and whole frames (``mask_frames``)
    dropped, each clip its own frames (MotionBERT drops the same frames across a batch).
    Returns (B, T, J, 3) inputs and the mask of the joints that enter."""
    b, t, j, _ = keypoints.shape
    keyframes = max(2, round(t / c.keyframe_every))
    ks = jax.random.split(key, 6)
    shape = (b, keyframes, j, 2)
    gaussian = c.noise_std * jax.random.normal(ks[0], shape)
    uniform = c.uniform_range * (jax.random.uniform(ks[1], shape) - 0.5)
    pick = jax.random.uniform(ks[2], (b, keyframes, j, 1)) < c.gaussian_weight
    delta = _interpolate_frames(jnp.where(pick, gaussian, uniform), t)
    delta = delta + c.jitter_std * jax.random.normal(ks[3], (b, t, j, 2))
    dist = jnp.linalg.norm(delta, axis=-1)
    conf = c.conf_a / (dist + c.conf_a) + c.conf_b * dist
    shift = c.conf_shift_mean + c.conf_shift_std * jax.random.normal(ks[4], dist.shape)
    conf = jnp.clip(conf + shift, 0.0, 1.0)
    keep_joint, keep_frame = jax.random.split(ks[5])
    mask = (present & (jax.random.uniform(keep_joint, (b, t, j)) >= c.mask_ratio)
            & (jax.random.uniform(keep_frame, (b, t, 1)) >= c.mask_frames))
    inputs = jnp.concatenate([keypoints + delta, conf[..., None]], axis=-1)
    return jnp.where(mask[..., None], inputs, 0.0), mask


def clean_inputs(keypoints: jax.Array, present: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Ground-truth 2D with confidence 1 where present, zeros where absent."""
    inputs = jnp.concatenate([keypoints, jnp.ones_like(keypoints[..., :1])], axis=-1)
    return jnp.where(present[..., None], inputs, 0.0), present


_FLIP = np.asarray(skeleton.flip_joint_permutation())


def flip(keypoints: jax.Array, target: jax.Array, present: jax.Array, weight: jax.Array,
         do: jax.Array) -> tuple[jax.Array, ...]:
    """Mirror the clips where ``do`` (B,) holds: x negated in 2D and 3D, left and right
    joints swapped (MotionBERT's flip augmentation)."""
    sign = jnp.asarray([-1.0, 1.0])

    def mirror(x, scale):
        flipped = x[:, :, _FLIP] if scale is None else x[:, :, _FLIP] * scale
        return jnp.where(do.reshape((-1,) + (1,) * (x.ndim - 1)), flipped, x)

    return (mirror(keypoints, sign), mirror(target, jnp.asarray([-1.0, 1.0, 1.0])),
            mirror(present, None), mirror(weight, None))


# ---------------------------------------------------------------------------- models


def make_model(config: ml_collections.ConfigDict) -> DSTformer | MLPLifter:
    m = config.model
    if m.kind == "dstformer":
        return DSTformer(DSTformerSpec(
            dim=m.dim, depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
            rep_dim=m.rep_dim, out_dim=3, num_joints=skeleton.NUM_JOINTS,
            max_frames=config.data.frames, dropout=m.dropout))
    if m.kind == "mlp":
        return MLPLifter(MLPLifterSpec(width=m.width, blocks=m.blocks, dropout=m.dropout))
    raise ValueError(f"model.kind={m.kind!r}: choose 'dstformer' or 'mlp'")


def init_variables(model, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The lifter's initial variables as plain arrays (the loop is single-device, so the
    parameters' logical axis names are dropped)."""
    x = jnp.zeros((1, config.data.frames, skeleton.NUM_JOINTS, 3))
    return nn.unbox(model.init(jax.random.key(config.train.seed), x,
                               jnp.ones(x.shape[:-1], bool)))


def make_loss(model, config: ml_collections.ConfigDict) -> fit.LossFn:
    c, lo = config.corruption, config.loss

    def loss_fn(params, model_state, batch, key):
        k_noise, k_flip, k_drop = jax.random.split(key, 3)
        keypoints, target, present, weight = batch["keypoints"], batch["target"], \
            batch["present"], batch["weight"]
        if config.augment.flip:
            do = jax.random.bernoulli(k_flip, 0.5, (keypoints.shape[0],))
            keypoints, target, present, weight = flip(keypoints, target, present, weight, do)
        if c.enabled:
            inputs, mask = corrupt(k_noise, keypoints, present, c)
        else:
            inputs, mask = clean_inputs(keypoints, present)
        pred, updates = model.apply({"params": params, **model_state}, inputs, mask, train=True,
                                    rngs={"dropout": k_drop}, mutable=list(model_state))
        total, terms = pose3d.lifting_loss(pred, target, weight, lo.scale_weight,
                                           lo.velocity_weight)
        return total, (terms, updates)

    return loss_fn


def predict(model, variables: dict[str, Any], keypoints: np.ndarray, present: np.ndarray,
            batch_size: int = 64, representation: bool = False) -> np.ndarray:
    """The model's output on clean ground-truth 2D, a fixed-size batch at a time."""
    kwargs = {"representation": True} if representation else {}
    run = jax.jit(lambda b: model.apply(variables, *clean_inputs(b["keypoints"], b["present"]),
                                        **kwargs))
    return fit.apply_batched(run, {"keypoints": keypoints, "present": present}, batch_size)


# ------------------------------------------------------------------------- the command


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: paths.PathLike
                       ) -> dict[str, Any]:
    """Train (or resume) the lifter in ``workdir`` and evaluate it on ``config.eval.split``;
    returns the evaluation, also written to ``<workdir>/eval_metrics.json``. A lifter
    depends on no tokenizer: its workdir is keyed by its config (``fit.training_key``; the
    data section names the dataset) and trained again when that changes."""
    workdir = paths.as_path(workdir)
    fit.claim(workdir, {"lifter": fit.training_key(config)},
              {"lifter": fit.training_key(default_config())})
    checkpointing.write_run_config(config, workdir)
    data_dir, name = prepare.prepare_dataset(config.data, workdir)
    train = lifting_examples(pipeline.read_skeletons(data_dir, name, config.train.split))
    model = make_model(config)
    arrays = {k: train[k] for k in ("keypoints", "present", "target", "weight")}
    variables = fit.fit(workdir, config.train, init_variables(model, config),
                        make_loss(model, config), arrays)
    held_out = lifting_examples(pipeline.read_skeletons(data_dir, name, config.eval.split))
    pred = predict(model, variables, held_out["keypoints"], held_out["present"])
    results = {"step": config.train.num_steps, "split": config.eval.split,
               "examples": len(pred), "dataset": name, "model": config.model.kind,
               **pose3d.errors_mm(pred, held_out["target"], held_out["weight"], UNIT_MM)}
    writer = summary.SummaryWriter(workdir)
    writer.write_scalars(config.train.num_steps, {f"eval/{k}": results[k] for k in
                                                  ("mpjpe", "n_mpjpe", "p_mpjpe", "velocity_error")})
    writer.close()
    (workdir / EVAL_FILE).write_text(json.dumps(results, indent=2) + "\n")
    logging.info("lifting %s: %s", workdir, results)
    return results


def restore(workdir: paths.PathLike) -> tuple[Any, dict[str, Any], ml_collections.ConfigDict]:
    """A trained lifter's (model, variables, config) from its workdir."""
    path = paths.as_path(workdir) / checkpointing.CONFIG_FILE
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    model = make_model(config)
    return model, fit.load_variables(workdir, config.train, init_variables(model, config)), config


FLAGS = flags.FLAGS


@errors.one_line_failures
def main(argv: list[str]) -> None:
    checkpointing.quiet_orbax_logs()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.config is None or not FLAGS.workdir:
        raise app.UsageError("--config and --workdir are required, e.g. "
                             "--config=configs/lift_dstformer.py --workdir=runs/lift")
    runtime.enable_compilation_cache()  # JAX_COMPILATION_CACHE_DIR moves it, '' turns it off
    results = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    print(json.dumps(results))


def define_flags() -> None:
    """The command's flags (defined only when it runs, so importing this module for its
    functions never clashes with another command's flags)."""
    config_flags.DEFINE_config_file("config", None, "Lifting config (configs/lift_dstformer.py[:arg]).")
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and results.")
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
