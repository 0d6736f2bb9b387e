"""What exported tokens carry: small heads trained on frozen token grids.

    python -m pose_vq.downstream.probe --tokens=RUN/tokens/motion_tokens/3d_t16_s32/3.0.0 \\
        --task=action --workdir=runs/probe [--control_tokens=DIR] [--lifter=LIFT_DIR]

``--tokens`` is a ``motion_tokens`` export (pose_vq.tokenize) holding the train and
held-out splits; each token id is looked up in the export's own codebook. The same
``ProbeHead`` (pose_vq.downstream.probe_head) is trained on ``train`` and scored on
``validation`` (held-out sequences) for each input of one table:

- ``tokens``: the export;
- ``tokens, time-shuffled``: the same grids with their time steps permuted per clip, so
  what is left is what single steps carry (pose), not how they follow each other (motion);
- ``random tokenizer`` (``--control_tokens``): an export of the same data by the same
  model at initialisation (``python -m pose_vq.tokenize --weights=init``);
- ``DSTformer`` (``--lifter``, a pose_vq.downstream.lift workdir): the skeleton-side reference from
  ground-truth 2D of each clip's first camera: for ``pose`` the lifter's own 3D output
  (turned into the target's axes), for ``action``/``retrieval`` the same head on its
  (T, J, rep) features, and (``DSTformer features, time-shuffled``) on the features of
  the same 2D with its frames permuted per clip before lifting: what the order of exact
  skeletons adds on this data, the most that shuffling could take from tokens;
- ``chance``: the training mean pose / the most frequent class / a random ranking.

Tasks: ``pose`` predicts every frame's joints relative to the mid-hip in metres (for
tokens of 2D inputs in the first chosen camera's frame, for 3d tokens in world axes:
``in_target_frame``) and reports MPJPE and P-MPJPE in mm (on 3d tokens no lifting
comparison: their clips are drawn from the very joints the head predicts); ``action``
predicts the dataset's ``label``, top-1 and macro-F1, and writes each input's held-out
confusion matrix to ``<workdir>/action_confusion.json`` (``confusion_markdown`` reads it
out: per-class recall, the kinds that merge); ``retrieval`` ranks the training
clips by cosine similarity of the action head's pooled embedding to each held-out clip's
and reports recall@1 and @5 of a same-label clip.
Heads train in ``<workdir>/<input>/<head>`` and resume from there, as long as their input
comes from the same source (for tokens: the same tokenizer checkpoint, by step and config
digest, and dataset; else they train again); results go to ``<workdir>/<task>.csv`` and
``<task>.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tensorflow_datasets as tfds
from absl import app, flags, logging
from etils import epath

from pose_vq import checkpointing, errors, paths, runtime, tokenize
from pose_vq.data import camera, pipeline, skeleton
from pose_vq.downstream import fit, lift, pose3d
from pose_vq.downstream.probe_head import ProbeHead

TASKS = ("pose", "action", "retrieval")
TRAIN, HELD_OUT = "train", "validation"
METRICS = {"pose": ("mpjpe", "p_mpjpe"), "action": ("top1", "macro_f1"),
           "retrieval": ("recall@1", "recall@5")}
# The tables' rows changed (2: the time-shuffled DSTformer features): a chain finished
# under another version is run again, and only what it lacks is trained.
TABLES_VERSION = 2
CONFUSION_FILE = "action_confusion.json"  # {"classes": [name], "inputs": {input: counts}}


def default_config() -> ml_collections.ConfigDict:
    """The heads' size and training (the same for every input of a table)."""
    c = ml_collections.ConfigDict()
    c.width, c.place_width, c.depth, c.num_heads, c.dropout = 128, 8, 2, 4, 0.1
    c.train = fit.default_config()
    c.train.num_steps, c.train.learning_rate, c.train.log_every = 1500, 1e-3, 100
    c.train.checkpoint_every = 500
    return c


# ------------------------------------------------------------------------ inputs


@dataclasses.dataclass
class Inputs:
    """One probe input on one split: per-clip arrays and the frozen, jittable map from a
    batch of them to (B, steps, places, width) features."""

    name: str
    arrays: dict[str, np.ndarray]
    features: Callable[[dict[str, jax.Array]], jax.Array]
    frames_per_step: int
    source: dict[str, Any]  # what the features came from: a head trained on them is keyed by it


@dataclasses.dataclass
class TokenExport:
    """A motion_tokens export: its token grids per split, codebook and source dataset."""

    path: epath.Path
    builder: tfds.core.DatasetBuilder
    codebook: np.ndarray
    _splits: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, path: paths.PathLike) -> TokenExport:
        path = paths.as_path(path)
        codebook = path / tokenize.CODEBOOK_FILE
        if not codebook.exists():
            raise FileNotFoundError(f"{codebook} not found: is {path} a "
                                    "motion_tokens export (its version folder)?")
        with codebook.open("rb") as f:
            return cls(path, tfds.builder_from_directory(str(path)), np.load(f))

    @property
    def metadata(self) -> dict[str, Any]:
        return self.builder.info.metadata

    @property
    def key(self) -> dict[str, Any]:
        """The tokenizer and dataset the tokens came from (``tokenize.EXPORT_KEY``; None
        where an export predates a key)."""
        return {k: self.metadata.get(k) for k in tokenize.EXPORT_KEY}

    def split(self, split: str) -> dict[str, np.ndarray]:
        """A split's ``tokens`` and source ``index``, read once."""
        if split in self._splits:
            return self._splits[split]
        if split not in self.builder.info.splits:
            raise ValueError(f"{self.path} has no split {split!r} (it has "
                             f"{', '.join(self.builder.info.splits)}): export it first")
        rows = list(pipeline.data_source(self.builder, split))
        self._splits[split] = {"tokens": np.stack([r["tokens"] for r in rows]),
                               "index": np.array([r["index"] for r in rows])}
        return self._splits[split]

    def skeletons(self, split: str) -> dict[str, np.ndarray]:
        """The source examples' skeleton features, in the export's order."""
        meta = self.metadata
        skeletons = pipeline.read_skeletons(meta["source_data_dir"], meta["source_dataset"], split)
        return {k: v[self.split(split)["index"]] for k, v in skeletons.items()}

    def inputs(self, split: str, name: str = "tokens", shuffle_time: bool = False) -> Inputs:
        ids = self.split(split)["tokens"]
        if shuffle_time:
            ids = shuffled_in_time(ids)
        codebook = jnp.asarray(self.codebook)
        frames = self.metadata["tokenizer_config"]["data"]["frames"]
        t = ids.shape[1]
        return Inputs(name, {"tokens": ids},
                      lambda b: tokenize.embed(codebook, b["tokens"]).reshape(
                          b["tokens"].shape[:2] + (-1, codebook.shape[-1])),
                      frames // t, {"tokens": self.key, "shuffle_time": shuffle_time})


def shuffled_in_time(clips: np.ndarray) -> np.ndarray:
    """(N, T, ...) clips with their T steps permuted: one fixed permutation per clip, the
    same for every array of N clips of T steps (keypoints and their mask stay paired)."""
    rng = np.random.default_rng(0)
    return np.stack([clip[rng.permutation(len(clip))] for clip in clips])


def _first_camera(skeletons: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Lifting examples of each clip's first camera only."""
    return lift.lifting_examples({k: v[:, :1] if k.startswith(("joints2d", "camera_")) else v
                                  for k, v in skeletons.items()})


def lifter_inputs(lifter_dir: paths.PathLike, skeletons: dict[str, np.ndarray],
                  shuffle_time: bool = False) -> Inputs:
    """DSTformer's (T, J, rep) features from each clip's first camera's ground-truth 2D,
    computed once (the lifter is frozen) and held in memory; ``shuffle_time``: their
    2D frames permuted per clip before lifting, so no feature sees the clip's order."""
    model, variables, config = lift.restore(lifter_dir)
    first = _first_camera(skeletons)
    keypoints, present = first["keypoints"], first["present"]
    if shuffle_time:
        keypoints, present = shuffled_in_time(keypoints), shuffled_in_time(present)
    features = lift.predict(model, variables, keypoints, present, representation=True)
    source = {"lifter": checkpointing.config_digest(config)}
    if shuffle_time:  # (heads on the ordered features keep the key they were trained with)
        source["shuffle_time"] = True
    return Inputs("DSTformer features" + (", time-shuffled" if shuffle_time else ""),
                  {"features": features}, lambda b: b["features"], 1, source)


# ----------------------------------------------------------------------- targets


CAMERA_FRAME_MODES = ("c2d", "m2d", "m2d_3d")


def in_target_frame(joints: np.ndarray, skeletons: dict[str, np.ndarray], mode: str
                    ) -> np.ndarray:
    """World joints (N, T, J, 3) in the pose targets' frame for tokens of ``mode``.

    Tokens of 2D inputs (c2d, m2d, and m2d_3d, whose input is m2d) are drawn from the
    chosen cameras' images, and the cameras are chosen per window, so nothing in them says
    which way the world faces: their targets are in the first chosen camera's frame
    (x_cam = R X + t, the frame a lifter from that camera's 2D predicts). 3d tokens are
    drawn from the world volume's projections along its axes: theirs stay in world axes.
    ``joints`` and ``skeletons["camera_t"]`` share a unit."""
    if mode not in CAMERA_FRAME_MODES:
        return joints
    return camera.camera_frame(joints, skeletons["camera_R"][:, 0], skeletons["camera_t"][:, 0])


def pose_targets(skeletons: dict[str, np.ndarray], mode: str) -> dict[str, np.ndarray]:
    """Each frame's joints relative to the mid-hip, in metres, in ``in_target_frame``'s
    frame, and the weight of the joints that count."""
    joints = in_target_frame(skeletons["joints3d"].astype(np.float64), skeletons, mode)
    target, weight = lift.root_relative(joints / 100.0, skeletons["present"])
    return {"target": target.astype(np.float32), "weight": weight}


def action_targets(skeletons: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"label": skeletons["label"].astype(np.int32)}


# ------------------------------------------------------------------------- heads


def _head(task: str, c: ml_collections.ConfigDict, inputs: Inputs, num_classes: int) -> ProbeHead:
    outputs = inputs.frames_per_step * skeleton.NUM_JOINTS * 3 if task == "pose" else num_classes
    return ProbeHead(outputs, per_step=task == "pose", width=c.width, place_width=c.place_width,
                     depth=c.depth, num_heads=c.num_heads, dropout=c.dropout)


def _pose_out(out: jax.Array) -> jax.Array:
    """(B, steps, frames_per_step * J * 3) -> (B, T, J, 3)."""
    return out.reshape(out.shape[0], -1, skeleton.NUM_JOINTS, 3)


def train_head(task: str, inputs: Inputs, targets: dict[str, np.ndarray], workdir: epath.Path,
               c: ml_collections.ConfigDict, num_classes: int) -> tuple[ProbeHead, dict[str, Any]]:
    """Train (or resume, or reuse) the task's head on ``inputs`` in ``workdir``: reused
    only where it was trained from the same source (``Inputs.source``: for tokens, the same
    tokenizer checkpoint and dataset) with the same head config, else trained again."""
    head_task = "pose" if task == "pose" else "action"  # retrieval reuses the action head
    fit.claim(workdir / head_task, {"inputs": inputs.source, "head": fit.training_key(c)},
              {"head": fit.training_key(default_config())})
    head = _head(head_task, c, inputs, num_classes)
    arrays = {**inputs.arrays, **targets}
    sample = {k: jnp.asarray(v[:1]) for k, v in inputs.arrays.items()}
    variables = nn.unbox(head.init(jax.random.key(c.train.seed), inputs.features(sample)))

    def loss_fn(params, model_state, batch, key):
        out, _ = head.apply({"params": params}, inputs.features(batch), train=True,
                            rngs={"dropout": key})
        if head_task == "pose":
            loss = pose3d.mpjpe_loss(_pose_out(out), batch["target"], batch["weight"])
        else:
            loss = optax.softmax_cross_entropy_with_integer_labels(out, batch["label"]).mean()
        return loss, ({}, model_state)

    return head, fit.fit(workdir / head_task, c.train, variables, loss_fn, arrays)


def apply_head(head: ProbeHead, variables: dict[str, Any], inputs: Inputs,
               batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The head's outputs and pooled embeddings on every clip of ``inputs``."""
    run = jax.jit(lambda b: head.apply(variables, inputs.features(b)))
    return fit.apply_batched(run, inputs.arrays, batch_size)


# ----------------------------------------------------------------------- metrics


def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """F1 averaged over the classes that occur in either (scikit-learn's macro)."""
    scores = []
    for k in np.union1d(labels, predicted):
        tp = np.sum((predicted == k) & (labels == k))
        fp, fn = np.sum((predicted == k) & (labels != k)), np.sum((predicted != k) & (labels == k))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def action_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {"top1": float(np.mean(labels == predicted)), "macro_f1": macro_f1(labels, predicted)}


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts of clips: rows the true class, columns the
    predicted one (a row sums to the class's clips; off the diagonal, what it merges into)."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(predicted)), 1)
    return counts


def confusion_markdown(confusion: dict[str, Any], top: int = 5) -> str:
    """Per-class recall per input (the classes with held-out clips, their clip counts in
    the header) and each input's ``top`` most frequent confusions, "wave -> reach: 12 of
    40" (12 of the 40 wave clips predicted reach), from a ``CONFUSION_FILE``'s contents."""
    classes = confusion["classes"]
    counts = {name: np.asarray(m) for name, m in confusion["inputs"].items()}
    totals = next(iter(counts.values())).sum(axis=1)
    shown = np.flatnonzero(totals)
    lines = ["| recall | " + " | ".join(f"{classes[k]} ({totals[k]})" for k in shown) + " |",
             "|---" * (len(shown) + 1) + "|"]
    for name, m in counts.items():
        recall = np.diag(m) / np.maximum(m.sum(axis=1), 1)
        lines.append(f"| {name} | " + " | ".join(f"{recall[k]:.2f}" for k in shown) + " |")
    lines.append("")
    for name, m in counts.items():
        off = m * (1 - np.eye(len(m), dtype=m.dtype))
        pairs = [divmod(int(i), len(m)) for i in np.argsort(-off, axis=None, kind="stable")[:top]]
        merged = [f"{classes[t]} -> {classes[p]}: {m[t, p]} of {m[t].sum()}"
                  for t, p in pairs if off[t, p] > 0]
        lines.append(f"- {name}, most confused: " + ("; ".join(merged) or "none"))
    return "\n".join(lines)


def recall_at(query: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray,
              gallery_labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Share of queries with a same-label item among their k most cosine-similar."""
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    order = np.argsort(-(unit(query) @ unit(gallery).T), axis=1, kind="stable")
    hits = gallery_labels[order] == query_labels[:, None]
    return {f"recall@{k}": float(np.mean(hits[:, :k].any(axis=1))) for k in ks}


def chance_recall(query_labels: np.ndarray, gallery_labels: np.ndarray,
                  ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Expected recall@k of a uniformly random ranking of the gallery."""
    n = len(gallery_labels)
    same = np.array([np.sum(gallery_labels == q) for q in query_labels])
    out = {}
    for k in ks:
        miss = np.ones(len(same))
        for i in range(k):
            miss *= np.clip((n - same - i) / (n - i), 0.0, 1.0)
        out[f"recall@{k}"] = float(np.mean(1.0 - miss))
    return out


# -------------------------------------------------------------------------- tables


def classify(head: ProbeHead, variables: dict[str, Any], inputs: Inputs) -> np.ndarray:
    """The action head's predicted class of every clip of ``inputs``."""
    return apply_head(head, variables, inputs)[0].argmax(-1)


def evaluate(task: str, head: ProbeHead, variables: dict[str, Any], held_out: Inputs,
             targets: dict[str, np.ndarray], train: Inputs | None = None,
             train_targets: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    if task == "action":
        return action_metrics(targets["label"], classify(head, variables, held_out))
    out, pooled = apply_head(head, variables, held_out)
    if task == "pose":
        errors = pose3d.errors_mm(_pose_out(out), targets["target"], targets["weight"],
                                  lift.UNIT_MM)
        return {k: errors[k] for k in METRICS["pose"]}
    _, gallery = apply_head(head, variables, train)
    return recall_at(pooled, targets["label"], gallery, train_targets["label"])


def chance(task: str, targets: dict[str, np.ndarray], train_targets: dict[str, np.ndarray]
           ) -> dict[str, float]:
    if task == "pose":  # the training clips' mean pose, every frame
        w = train_targets["weight"][..., None]
        mean = (w * train_targets["target"]).sum((0, 1)) / np.maximum(w.sum((0, 1)), 1e-12)
        pred = np.broadcast_to(mean, targets["target"].shape)
        errors = pose3d.errors_mm(pred, targets["target"], targets["weight"], lift.UNIT_MM)
        return {k: errors[k] for k in METRICS["pose"]}
    if task == "action":
        majority = np.bincount(train_targets["label"]).argmax()
        return action_metrics(targets["label"], np.full_like(targets["label"], majority))
    return chance_recall(targets["label"], train_targets["label"])


def lifter_pose(lifter_dir: paths.PathLike, skeletons: dict[str, np.ndarray], mode: str
                ) -> np.ndarray:
    """The lifter's 3D from each clip's first camera's ground-truth 2D, in the pose
    targets' frame (``in_target_frame``: the camera's own, or world axes: rotated back by
    R^T, root-relative so the translation cancels)."""
    model, variables, _ = lift.restore(lifter_dir)
    first = _first_camera(skeletons)
    pred = lift.predict(model, variables, first["keypoints"], first["present"])
    if mode in CAMERA_FRAME_MODES:
        return pred
    return np.einsum("nji,ntkj->ntki", skeletons["camera_R"][:, 0], pred)


def run(task: str, tokens: paths.PathLike, workdir: paths.PathLike, *,
        control_tokens: paths.PathLike | None = None, lifter: paths.PathLike | None = None,
        config: ml_collections.ConfigDict | None = None) -> list[dict[str, Any]]:
    """One task's table: a row per input (module docstring); also written to
    ``<workdir>/<task>.csv`` and ``<task>.md`` (and, for ``action``, each input's held-out
    confusion matrix to ``<workdir>/CONFUSION_FILE``)."""
    if task not in TASKS:
        raise ValueError(f"task {task!r}: choose one of {TASKS}")
    c = config or default_config()
    workdir = paths.as_path(workdir)
    export = TokenExport.load(tokens)
    mode = export.metadata["mode"]
    skeletons = {s: export.skeletons(s) for s in (TRAIN, HELD_OUT)}
    make_targets = (lambda s: pose_targets(s, mode)) if task == "pose" else action_targets
    targets = {s: make_targets(skeletons[s]) for s in skeletons}
    classes = export_class_names(export)
    num_classes = len(classes)
    sources = [lambda s: export.inputs(s), lambda s: export.inputs(s, "tokens, time-shuffled", True)]
    if control_tokens:
        control = TokenExport.load(control_tokens)
        sources.append(lambda s: control.inputs(s, "random tokenizer"))
    if lifter and task != "pose":
        sources += [lambda s: lifter_inputs(lifter, skeletons[s]),
                    lambda s: lifter_inputs(lifter, skeletons[s], shuffle_time=True)]
    rows, confusion = [], {}
    for source in sources:
        train, held_out = source(TRAIN), source(HELD_OUT)
        slug = train.name.replace(", ", "_").replace(" ", "_")
        head, variables = train_head(task, train, targets[TRAIN], workdir / slug, c, num_classes)
        if task == "action":  # one pass over the held-out clips for both
            labels, predicted = targets[HELD_OUT]["label"], classify(head, variables, held_out)
            found = action_metrics(labels, predicted)
            confusion[train.name] = confusion_matrix(labels, predicted, num_classes).tolist()
        else:
            found = evaluate(task, head, variables, held_out, targets[HELD_OUT], train,
                             targets[TRAIN])
        rows.append({"task": task, "input": train.name, **found})
    if lifter and task == "pose":
        pred = lifter_pose(lifter, skeletons[HELD_OUT], mode)
        errors = pose3d.errors_mm(pred, targets[HELD_OUT]["target"], targets[HELD_OUT]["weight"],
                                  lift.UNIT_MM)
        rows.append({"task": task, "input": "DSTformer lifting (GT 2D)",
                     **{k: errors[k] for k in METRICS["pose"]}})
    rows.append({"task": task, "input": "chance" if task != "pose" else "mean pose",
                 **chance(task, targets[HELD_OUT], targets[TRAIN])})
    for row in rows:
        row["clips"] = len(targets[HELD_OUT]["weight" if task == "pose" else "label"])
    write_table(workdir, task, rows)
    if confusion and not jax.process_index():
        (workdir / CONFUSION_FILE).write_text(
            json.dumps({"classes": classes, "inputs": confusion}) + "\n")
    return rows


def export_class_names(export: TokenExport) -> list[str]:
    """The class names of the export's source dataset's ``label``, in index order."""
    meta = export.metadata
    source = pipeline.open_dataset(meta["source_data_dir"], meta["source_dataset"])
    return list(source.info.features["label"].names)


def export_num_classes(export: TokenExport) -> int:
    """The number of classes of the export's source dataset's ``label``."""
    return len(export_class_names(export))


def markdown(rows: list[dict[str, Any]], keys: tuple[str, ...] | None = None) -> str:
    """A table of rows of one task: ``keys`` (default: the task's metrics) and clips."""
    task = rows[0]["task"]
    keys = keys or METRICS[task]
    fmt = "{:.3f}" if task in ("action", "retrieval") else "{:.1f}"
    lines = [f"| {task} | " + " | ".join(keys) + " | clips |", "|---" * (len(keys) + 2) + "|"]
    lines += [f"| {r['input']} | " + " | ".join(fmt.format(r[k]) for k in keys)
              + f" | {r['clips']} |" for r in rows]
    return "\n".join(lines)


def write_table(workdir: epath.Path, task: str, rows: list[dict[str, Any]]) -> None:
    if jax.process_index():
        return
    workdir.mkdir(parents=True, exist_ok=True)
    table = io.StringIO(newline="")  # csv's line ends, written as they are (gs:// too)
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with (workdir / f"{task}.csv").open("w") as f:
        f.write(table.getvalue())
    (workdir / f"{task}.md").write_text(markdown(rows) + "\n")


FLAGS = flags.FLAGS


@errors.one_line_failures
def main(argv: list[str]) -> None:
    checkpointing.quiet_orbax_logs()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.tokens or not FLAGS.workdir:
        raise app.UsageError("--tokens and --workdir are required")
    runtime.enable_compilation_cache()  # JAX_COMPILATION_CACHE_DIR moves it, '' turns it off
    c = default_config()
    c.train.num_steps = FLAGS.steps or c.train.num_steps
    rows = run(FLAGS.task, FLAGS.tokens, FLAGS.workdir, control_tokens=FLAGS.control_tokens,
               lifter=FLAGS.lifter, config=c)
    print(markdown(rows))
    logging.info("%s", json.dumps(rows))


def define_flags() -> None:
    """The command's flags (defined only when it runs, so importing this module for its
    functions never clashes with another command's flags)."""
    flags.DEFINE_string("tokens", None, "A motion_tokens export's folder (train and validation).")
    flags.DEFINE_enum("task", "action", list(TASKS), "What the head predicts.")
    flags.DEFINE_string("workdir", None, "Where the heads train and the table is written.")
    flags.DEFINE_string("control_tokens", None, "Export of the same data by the model at "
                        "initialisation (pose_vq.tokenize --weights=init): the control row.")
    flags.DEFINE_string("lifter", None, "A pose_vq.downstream.lift workdir: the DSTformer reference row.")
    flags.DEFINE_integer("steps", None, "Training steps per head (default 1500).")
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
