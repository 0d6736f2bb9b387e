"""Generation from tokens: a class-conditional prior trained on a token export, and the
table that scores its samples.

    python -m pose_vq.downstream.prior --config=configs/prior_demo.py --workdir=runs/prior \\
        --config.tokens=runs/demo/tokens/motion_tokens/<config>/1.0.0

``--config.tokens`` is a ``motion_tokens`` export (pose_vq.tokenize) with ``train`` and
``validation`` splits. The prior (pose_vq.downstream.prior_model: a masked-token
transformer with MaskGIT's schedule, or with ``model.order=causal`` a GPT over the
flattened grid; classifier-free guidance on the source dataset's ``label``) trains on
``train`` in ``<workdir>/prior`` with the loop of pose_vq.downstream.fit (orbax
checkpoints, exact resume, each batch split over the data axis of a mesh of every
device; ``cpu_devices`` splits a CPU host). Then evaluation:

- a motion classifier (pose_vq.downstream.motion_classifier) is trained once on the
  ground-truth clips of the source dataset's ``train`` split, in
  ``<workdir>/classifier`` (kept and resumed; trained again only for another dataset or
  classifier config);
- four sets of clips, one per held-out (``validation``) clip: the ground truth; its
  exported tokens decoded by the tokenizer the export came from (the tokenizer's floor);
  samples of the prior conditioned on the clip's label, decoded; uniformly random token
  grids, decoded (a control). Each row: the classifier's top-1 against the labels, the
  Frechet distance of its features to the ground truth's, and the diversity (mean
  feature distance between clips of one label). ``eval.sweep`` adds sample rows at other
  decoding steps and guidance (a causal prior: guidance only);
- the prior's held-out negative log-likelihood in bits per token (``prior_model.nll_bits``:
  a masked prior's any-order bound, a causal prior's exact value), beside a unigram model
  of the training ids and the uniform log2 K.

Results go to ``<workdir>/generation.json`` and ``generation.md``; ``python -m
pose_vq.generate --workdir=<workdir>`` samples from the trained prior.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from pose_vq import checkpointing, errors, paths, runtime, sharding, tokenize
from pose_vq import config as config_lib
from pose_vq.data import pipeline
from pose_vq.downstream import fit, motion_classifier, prior_model
from pose_vq.downstream.probe import HELD_OUT, TRAIN, TokenExport

PRIOR_DIR, CLASSIFIER_DIR = "prior", "classifier"
RESULTS = "generation"  # <workdir>/generation.json and .md


def default_config() -> ml_collections.ConfigDict:
    """Every knob of the prior, its sampling and its evaluation."""
    c = ml_collections.ConfigDict()
    c.tokens = ""  # the motion_tokens export's version folder (required)
    c.cpu_devices = 0  # CPU hosts: split into N devices the batch is split over (0: one)
    c.model = ml_collections.ConfigDict({"width": 128, "depth": 4, "num_heads": 4,
                                         "mlp_ratio": 4.0, "dropout": 0.1, "attention": "axial"})
    # "masked" or "causal" (a GPT in raster order; ignores attention and sample.steps). On
    # the demo the causal samples' top-1 was 0.250 against 0.557, their Frechet distance
    # 161.6 against 211.6 (README "Generation")
    c.model.order = "masked"
    c.label_dropout = 0.1  # classifier-free guidance: labels replaced by the null class
    c.train = fit.default_config()
    c.train.update(batch_size=32, num_steps=3000, learning_rate=1e-3, lr_decay=1.0,
                   log_every=50, checkpoint_every=500)
    c.sample = ml_collections.ConfigDict({"steps": 8, "guidance": 2.0, "temperature": 1.0,
                                          "mask_temperature": 4.5, "batch_size": 32})
    c.classifier = ml_collections.ConfigDict({"widths": (16, 32, 64), "features": 64,
                                              "input_pool": 2})
    c.classifier.train = fit.default_config()  # class-balanced cross-entropy
    c.classifier.train.update(batch_size=16, num_steps=600, learning_rate=1e-3, lr_decay=1.0,
                              log_every=50, checkpoint_every=300)
    c.eval = ml_collections.ConfigDict({"seed": 0, "nll_draws": 4, "batch_size": 32,
                                        "sweep": ()})  # ("steps:guidance", ...) extra rows
    return c


# ------------------------------------------------------------------ export and model


def label_names(export: TokenExport) -> tuple[str, ...]:
    """The class names of the export's source dataset's ``label``."""
    meta = export.metadata
    source = pipeline.open_dataset(meta["source_data_dir"], meta["source_dataset"])
    return tuple(source.info.features["label"].names)


def labels(export: TokenExport, split: str) -> np.ndarray:
    return export.skeletons(split)["label"].astype(np.int32)


def make_model(config: ml_collections.ConfigDict, export: TokenExport) -> prior_model.TokenPrior:
    meta = export.metadata
    m = config.model
    return prior_model.TokenPrior(
        num_codes=int(meta["num_codes"]), stages=int(meta.get("stages", 1)),
        grid=tuple(int(g) for g in meta["token_grid"]), num_classes=len(label_names(export)),
        width=m.width, depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
        dropout=m.dropout, attention=m.attention, order=m.order)


def init_variables(model: prior_model.TokenPrior, seed: int) -> dict[str, Any]:
    """Plain (unboxed) initial variables: the loop replicates them whole."""
    ids = jnp.zeros((1, model.positions, model.stages), jnp.int32)
    return nn.unbox(jax.jit(model.init)(jax.random.key(seed), ids, jnp.ones(ids.shape[:2], bool),
                                        jnp.zeros((1,), jnp.int32)))


def _key(config: ml_collections.ConfigDict, *sections: str) -> dict[str, Any]:
    """``fit.training_key`` of the named sections (one of them ``train``)."""
    sub = ml_collections.ConfigDict({s: config[s] for s in sections})
    return fit.training_key(sub)


def make_loss(model: prior_model.TokenPrior, label_dropout: float) -> fit.LossFn:
    def loss_fn(params, model_state, batch, key):
        k_mask, k_label, k_drop = jax.random.split(key, 3)
        ids = model.to_sequence(batch["tokens"])
        if model.order == "causal":  # teacher forcing: every cell scored
            masked = jnp.ones(ids.shape[:2], bool)
        else:
            masked = prior_model.training_mask(k_mask, ids.shape[0], model.positions)
        drop = jax.random.bernoulli(k_label, label_dropout, batch["label"].shape)
        conditioning = jnp.where(drop, model.num_classes, batch["label"])
        logits = model.apply({"params": params}, ids, masked, conditioning, train=True,
                             rngs={"dropout": k_drop})
        loss, accuracy = prior_model.token_loss(logits, ids, masked)
        return loss, ({f"{model.order}_accuracy": accuracy}, model_state)

    return loss_fn


def train(config: ml_collections.ConfigDict, workdir: paths.PathLike,
          mesh: jax.sharding.Mesh | None = None
          ) -> tuple[prior_model.TokenPrior, dict[str, Any], TokenExport]:
    """Train (or resume) the prior on the export's ``train`` split in
    ``<workdir>/prior``: resumed only where it was trained from the same export and the
    same model and training config, else trained again."""
    if not config.tokens:
        raise ValueError("config.tokens is empty: pass --config.tokens=<a motion_tokens "
                         "export's version folder>")
    export = TokenExport.load(config.tokens)
    workdir = paths.as_path(workdir)
    fit.claim(workdir / PRIOR_DIR, {"tokens": export.key,
                                    "prior": _key(config, "model", "label_dropout", "train")},
              {"prior": _key(default_config(), "model", "label_dropout", "train")})
    model = make_model(config, export)
    arrays = {"tokens": export.split(TRAIN)["tokens"], "label": labels(export, TRAIN)}
    variables = fit.fit(workdir / PRIOR_DIR, config.train, init_variables(model, config.train.seed),
                        make_loss(model, config.label_dropout), arrays, mesh)
    return model, variables, export


def load_config(workdir: paths.PathLike) -> ml_collections.ConfigDict:
    """A prior's config (``<workdir>/config.json``) over today's defaults."""
    path = paths.as_path(workdir) / checkpointing.CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir} a prior's workdir "
                                "(python -m pose_vq.downstream.prior)?")
    config = default_config()
    config.update(json.loads(path.read_text()))
    return config


def configure_jax(config: ml_collections.ConfigDict, cpu_devices: int) -> None:
    """The JAX settings of the tokenizer the prior's tokens came from (its CPU conv
    path, the compilation cache) on ``cpu_devices`` CPU devices; before any backend use."""
    if not config.tokens:
        raise ValueError("config.tokens is empty: pass --config.tokens=<a motion_tokens "
                         "export's version folder>")
    tokenizer_config = config_lib.from_json(json.dumps(
        TokenExport.load(config.tokens).metadata["tokenizer_config"]))
    tokenizer_config.cpu_devices = cpu_devices
    runtime.configure_jax(tokenizer_config)


def restore(workdir: paths.PathLike) -> tuple[prior_model.TokenPrior, dict[str, Any],
                                              ml_collections.ConfigDict, TokenExport]:
    """A trained prior's (model, variables, config, export) from its workdir."""
    config = load_config(workdir)
    export = TokenExport.load(config.tokens)
    model = make_model(config, export)
    variables = fit.load_variables(paths.as_path(workdir) / PRIOR_DIR, config.train,
                                   init_variables(model, config.train.seed))
    return model, variables, config, export


def export_tokenizer(export: TokenExport) -> tokenize.Tokenizer:
    """The tokenizer (run, weights and checkpoint) the export's tokens came from."""
    meta = export.metadata
    return tokenize.Tokenizer.from_workdir(meta["workdir"], meta["weights"],
                                           int(meta["checkpoint_step"]))


# --------------------------------------------------------------------------- sampling


@functools.cache
def _sampler(model: prior_model.TokenPrior, steps: int):
    return jax.jit(functools.partial(prior_model.sample, model, steps=steps))


def sample_grids(model: prior_model.TokenPrior, variables: dict[str, Any], labels: np.ndarray,
                 seed: int, *, steps: int, guidance: float, temperature: float,
                 mask_temperature: float, batch_size: int,
                 mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
    """Token grids (len(labels), t, h, w[, S]) sampled for ``labels``, a fixed-size
    batch at a time (batch i draws with key fold_in(seed, i)); with ``mesh``, each batch
    split over its data axis (``batch_size`` a multiple of its size)."""
    run = _sampler(model, steps)
    key = jax.random.key(seed)
    place = jnp.asarray
    if mesh is not None:
        variables = jax.device_put(variables, sharding.replicated(mesh, variables))
        place = lambda x: jax.device_put(x, sharding.batch_sharding(mesh))
    out = []
    rows = ({"label": np.int32(label)} for label in labels)
    for i, (batch, n) in enumerate(pipeline.fixed_size_batches(rows, batch_size)):
        grids, _ = run(variables, jax.random.fold_in(key, i), place(batch["label"]),
                       guidance=guidance, temperature=temperature,
                       mask_temperature=mask_temperature)
        out.append(np.asarray(grids)[:n])
    return np.concatenate(out).astype(np.int32)


def decode(tokenizer: tokenize.Tokenizer, grids: np.ndarray, batch_size: int) -> np.ndarray:
    """Clips decoded from token grids, a fixed-size batch at a time."""
    return fit.apply_batched(lambda b: tokenizer.decode(b["tokens"]), {"tokens": grids},
                             batch_size)


# ------------------------------------------------------------------------- evaluation


def source_clips(export: TokenExport, split: str) -> np.ndarray:
    """The ground-truth clips (the tokenizer's targets, float32 in [0, 1]) of the
    export's examples of ``split``, in its order."""
    meta = export.metadata
    builder = pipeline.open_dataset(meta["source_data_dir"], meta["source_dataset"])
    transform = pipeline.ToModelInputs(pipeline.dataset_mode(builder))
    source = pipeline.data_source(builder, split)
    return np.stack([transform.map(source[int(i)])["targets"]
                     for i in export.split(split)["index"]])


def train_classifier(config: ml_collections.ConfigDict, workdir: paths.PathLike,
                     export: TokenExport, mesh: jax.sharding.Mesh | None = None
                     ) -> tuple[motion_classifier.MotionClassifier, dict[str, Any]]:
    """Train (or resume, or reuse) the motion classifier on the ground-truth clips of the
    source dataset's ``train`` split in ``<workdir>/classifier``."""
    meta = export.metadata
    workdir = paths.as_path(workdir) / CLASSIFIER_DIR
    fit.claim(workdir, {"clips": {k: meta[k] for k in ("source_data_dir", "source_dataset")},
                        "split": TRAIN, "classifier": fit.training_key(config.classifier)},
              {"classifier": fit.training_key(default_config().classifier)})
    cc = config.classifier
    num_classes = len(label_names(export))
    model = motion_classifier.MotionClassifier(
        num_classes, tuple(cc.widths), cc.features, cc.input_pool,
        runtime.conv_impl_for("auto", runtime.expected_platform()))
    clips, clip_labels = source_clips(export, TRAIN), labels(export, TRAIN)
    c = cc.train
    variables = nn.unbox(jax.jit(model.init)(jax.random.key(c.seed), jnp.asarray(clips[:1])))
    counts = np.bincount(clip_labels, minlength=num_classes)
    class_weights = jnp.asarray(1.0 / np.maximum(counts, 1), jnp.float32)

    def loss_fn(params, model_state, batch, key):
        logits, _ = model.apply({"params": params}, batch["clips"])
        loss = motion_classifier.balanced_cross_entropy(logits, batch["label"], class_weights)
        return loss, ({"accuracy": jnp.mean(logits.argmax(-1) == batch["label"])}, model_state)

    arrays = {"clips": clips, "label": clip_labels}
    return model, fit.fit(workdir, c, variables, loss_fn, arrays, mesh)


def unigram_bits(train: np.ndarray, held_out: np.ndarray, num_codes: int) -> float:
    """Held-out cross-entropy (bits per id) of each stage's id frequencies in training,
    add-one smoothed: what a model of no context reaches."""
    stages = 1 if train.ndim == 4 else train.shape[-1]
    train, held_out = train.reshape(len(train), -1, stages), held_out.reshape(len(held_out), -1, stages)
    bits = []
    for s in range(stages):
        p = (np.bincount(train[..., s].ravel(), minlength=num_codes) + 1.0)
        p /= p.sum()
        bits.append(-np.log2(p[held_out[..., s].ravel()]).mean())
    return float(np.mean(bits))


def held_out_bits(model: prior_model.TokenPrior, variables: dict[str, Any], grids: np.ndarray,
                  clip_labels: np.ndarray, seed: int, draws: int, batch_size: int) -> float:
    """The prior's mean NLL (``prior_model.nll_bits``: a masked prior's any-order bound,
    ``draws`` draws per clip; a causal prior's exact value, one pass) in bits per token
    over the held-out grids."""
    run = jax.jit(functools.partial(prior_model.nll_bits, model))
    key, total = jax.random.key(seed), 0.0
    draws = 1 if model.order == "causal" else draws
    for d in range(draws):
        bits = fit.apply_batched(
            lambda b, d=d: run(variables, jax.random.fold_in(key, d), b["tokens"], b["label"]),
            {"tokens": grids, "label": clip_labels}, batch_size)
        total += float(bits.mean())
    return total / draws


def _score(name: str, logits: np.ndarray, features: np.ndarray, clip_labels: np.ndarray,
           real_features: np.ndarray) -> dict[str, Any]:
    return {"clips": name, "top1": float(np.mean(logits.argmax(-1) == clip_labels)),
            "fd": motion_classifier.frechet_distance(real_features, features),
            "diversity": motion_classifier.diversity(features, clip_labels),
            "count": len(clip_labels)}


def parse_sweep(sweep: Any) -> list[tuple[int, float]]:
    """``eval.sweep`` entries "steps:guidance" -> [(steps, guidance)]."""
    out = []
    for entry in sweep:
        try:
            steps, guidance = str(entry).split(":")
            out.append((int(steps), float(guidance)))
        except ValueError:
            raise ValueError(f"eval.sweep entry {entry!r}: write steps:guidance, e.g. 4:2.0"
                             ) from None
    return out


def samples_name(model: prior_model.TokenPrior, steps: int, guidance: float) -> str:
    """A samples row's name: the order, the steps (a causal prior's: one per cell) and
    the guidance."""
    steps = model.positions if model.order == "causal" else steps
    return f"samples ({model.order}, {steps} step{'s' * (steps != 1)}, guidance {guidance:g})"


def evaluate(config: ml_collections.ConfigDict, workdir: paths.PathLike,
             model: prior_model.TokenPrior, variables: dict[str, Any], export: TokenExport,
             mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
    """The table (module docstring), also written to ``<workdir>/generation.json`` and
    ``.md``."""
    sweep = parse_sweep(config.eval.sweep)
    workdir = paths.as_path(workdir)
    start = time.perf_counter()
    classifier, classifier_vars = train_classifier(config, workdir, export, mesh)
    classifier_s = time.perf_counter() - start
    classify = jax.jit(lambda b: classifier.apply(classifier_vars, b["clips"]))
    held_out = export.split(HELD_OUT)["tokens"]
    clip_labels = labels(export, HELD_OUT)
    tokenizer = export_tokenizer(export)
    bs, s = config.eval.batch_size, config.sample
    seconds: dict[str, float] = {}

    def samples(steps: int, guidance: float) -> np.ndarray:
        """The samples (the prior's time alone in seconds["sampling: <row>"])."""
        t0 = time.perf_counter()
        grids = sample_grids(model, variables, clip_labels, config.eval.seed, steps=steps,
                             guidance=guidance, temperature=s.temperature,
                             mask_temperature=s.mask_temperature, batch_size=s.batch_size,
                             mesh=mesh)
        seconds[f"sampling: {samples_name(model, steps, guidance)}"] = time.perf_counter() - t0
        return grids

    rng = np.random.default_rng(config.eval.seed)
    sets = {"ground truth (held-out)": lambda: source_clips(export, HELD_OUT),
            "decoded real tokens": lambda: decode(tokenizer, held_out, bs),
            samples_name(model, s.steps, s.guidance):
                lambda: decode(tokenizer, samples(s.steps, s.guidance), bs),
            "uniformly random token grids":
                lambda: decode(tokenizer, rng.integers(0, model.num_codes, held_out.shape,
                                                       dtype=np.int32), bs)}
    for steps, guidance in sweep:  # (a repeat of a row's settings adds nothing; causal: of its guidance)
        sets.setdefault(samples_name(model, steps, guidance),
            lambda steps=steps, guidance=guidance: decode(tokenizer, samples(steps, guidance), bs))
    rows, real_features = [], None
    for name, make in sets.items():
        t0 = time.perf_counter()
        logits, features = fit.apply_batched(classify, {"clips": make()}, bs)
        seconds[name] = time.perf_counter() - t0
        real_features = features if real_features is None else real_features
        rows.append(_score(name, logits, features, clip_labels, real_features))
        logging.info("%s: %s", name, rows[-1])
    t0 = time.perf_counter()
    train_tokens = export.split(TRAIN)["tokens"]
    nll = {"prior": held_out_bits(model, variables, held_out, clip_labels, config.eval.seed,
                                  config.eval.nll_draws, bs),
           "unigram": unigram_bits(train_tokens, held_out, model.num_codes),
           "uniform": float(np.log2(model.num_codes))}
    seconds["nll"] = time.perf_counter() - t0
    seconds["classifier"] = classifier_s
    results = {"rows": rows, "nll_bits_per_token": nll,
               "prior_nll": prior_model.NLL_KIND[model.order], "order": model.order,
               "labels": list(label_names(export)),
               "held_out_labels": sorted({label_names(export)[i] for i in clip_labels}),
               "seconds": seconds, "sample": s.to_dict(), "tokens": str(export.path)}
    if jax.process_index() == 0:
        (workdir / f"{RESULTS}.json").write_text(json.dumps(results, indent=1) + "\n")
        (workdir / f"{RESULTS}.md").write_text(markdown(results) + "\n")
    return results


def markdown(results: dict[str, Any]) -> str:
    """The table: a row per set of clips, then the prior's held-out NLL."""
    lines = ["| clips | classifier top-1 | Frechet distance | diversity | count |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['clips']} | {r['top1']:.3f} | {r['fd']:.3f} | {r['diversity']:.3f} | "
              f"{r['count']} |" for r in results["rows"]]
    nll = results["nll_bits_per_token"]
    lines += ["", f"| held-out NLL (bits per token) | prior ({results['prior_nll']}) | unigram "
              "| uniform |",
              "|---|---|---|---|",
              f"| | {nll['prior']:.3f} | {nll['unigram']:.3f} | {nll['uniform']:.3f} |"]
    return "\n".join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: paths.PathLike
                       ) -> dict[str, Any]:
    """Train (or resume) the prior, then evaluate it (module docstring)."""
    workdir = paths.as_path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    checkpointing.write_run_config(config, workdir)
    mesh = sharding.make_mesh()
    start = time.perf_counter()
    model, variables, export = train(config, workdir, mesh)
    prior_s = time.perf_counter() - start
    results = evaluate(config, workdir, model, variables, export, mesh)
    results["seconds"]["prior"] = prior_s
    if jax.process_index() == 0:
        (workdir / f"{RESULTS}.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


FLAGS = flags.FLAGS


@errors.one_line_failures
def main(argv: list[str]) -> None:
    checkpointing.quiet_orbax_logs()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.config is None or not FLAGS.workdir:
        raise app.UsageError("--config and --workdir are required, e.g. --config="
                             "configs/prior_demo.py --workdir=runs/prior --config.tokens=EXPORT")
    config = FLAGS.config
    if not config.tokens:
        raise app.UsageError("--config.tokens=<a motion_tokens export's version folder> is required")
    configure_jax(config, config.cpu_devices)
    results = train_and_evaluate(config, FLAGS.workdir)
    print(markdown(results))


def define_flags() -> None:
    """The command's flags (defined only when it runs)."""
    config_flags.DEFINE_config_file("config", None, "Prior config (configs/prior_demo.py).")
    flags.DEFINE_string("workdir", None, "Directory for the prior, the classifier and the table.")
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
