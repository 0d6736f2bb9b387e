"""The token prior and generation: the masking schedules against their formulas, guidance
against separate conditional and unconditional calls, the sampler on every quantizer
kind's vocabulary, the any-order NLL of a uniform model, the causal order's masking, cached
decoding and exact NLL against teacher-forced calls, numpy and a sum over every grid, the
Frechet distance against scipy, exact resume of training, and generate's outputs read
back."""

import math
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from pose_vq import checkpointing, generate, sharding, tokenize
from pose_vq import config as config_lib
from pose_vq.downstream import fit, motion_classifier, prior, prior_model
from pose_vq.downstream.probe import HELD_OUT, TRAIN
from pose_vq.models import quantizer
from tests import run_command
from tests.test_train import tiny_config

pytestmark = pytest.mark.xdist_group("downstream")


def tiny_prior(num_codes=16, stages=1, grid=(2, 3, 3), num_classes=3, attention="axial",
               order="masked", depth=1):
    return prior_model.TokenPrior(num_codes, stages, grid, num_classes, width=16, depth=depth,
                                  num_heads=2, mlp_ratio=2.0, attention=attention, order=order)


def test_training_masks_follow_the_cosine_schedule():
    """ceil(cos(pi/2 r) n) cells masked, r ~ U[0, 1): P(count <= c) = 1 - 2/pi arccos(c/n)
    for 0 < c < n; counts are exact per row."""
    n, rows = 32, 4000
    masked = np.asarray(prior_model.training_mask(jax.random.key(0), rows, n))
    counts = masked.sum(1)
    assert counts.min() >= 1 and counts.max() <= n
    for c in (4, 12, 20, 28):
        expected = 1.0 - 2.0 / math.pi * math.acos(c / n)
        assert np.mean(counts <= c) == pytest.approx(expected, abs=0.03)
    exact = prior_model.mask_with_counts(jax.random.key(1), jnp.array([0, 3, 7]), 7)
    assert np.asarray(exact).sum(1).tolist() == [0, 3, 7]


def test_decoding_counts_by_hand():
    # floor(512 cos(pi/2 k/8)), k = 1..7: 502.2, 473.0, 425.7, 362.0, 284.4, 195.9, 99.9
    assert prior_model.decoding_counts(512, 8).tolist() == [502, 473, 425, 362, 284, 195, 99, 0]
    # More steps than cells: one cell a step until none is left.
    assert prior_model.decoding_counts(3, 6).tolist() == [2, 1, 0, 0, 0, 0]
    assert prior_model.decoding_counts(5, 1).tolist() == [0]


@pytest.mark.parametrize(("order", "attention"),
                         [("masked", "axial"), ("masked", "full"), ("causal", "full")])
def test_guidance_scales_the_difference_from_the_unconditional_logits(order, attention):
    model = tiny_prior(attention=attention, order=order)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, 16, (4, 18, 1)), jnp.int32)
    masked = jnp.asarray(rng.random((4, 18)) < 0.5)
    labels = jnp.asarray([0, 1, 2, 1], jnp.int32)
    variables = prior.init_variables(model, 0)
    apply = jax.jit(model.apply)  # (un-jitted, every op would compile on its own)
    guided = jax.jit(lambda g: prior_model.guided_logits(model, variables, ids, masked, labels, g))
    cond = apply(variables, ids, masked, labels)
    uncond = apply(variables, ids, masked, jnp.full((4,), 3, jnp.int32))
    assert float(jnp.abs(cond - uncond).max()) > 1e-3  # the label matters at all
    np.testing.assert_allclose(guided(0.0), cond, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(guided(1.5) - uncond, 2.5 * (cond - uncond), rtol=1e-4, atol=1e-5)
    if order == "masked":  # A masked cell's own id is hidden: changing it changes nothing.
        other = jnp.where(masked[..., None], (ids + 1) % 16, ids)
        np.testing.assert_allclose(apply(variables, other, masked, labels), cond, atol=1e-6)


def _vocabularies():
    """{(num_codes, token shape): kinds} of the tiny tokenizer for every quantizer kind,
    and one with residual stages."""
    found = {}
    for kind, stages in [(k, 1) for k in quantizer.KINDS] + [("simvq", 2)]:
        c = tiny_config("")
        c.quantizer.update(kind=kind, stages=stages, dead_code_threshold=0.0)
        if kind == "fsq":
            c.quantizer.update(levels=(8, 6, 5), num_codes=240)
        spec = config_lib.generator_spec(config_lib.validate(c))
        found.setdefault((spec.num_codes, spec.token_shape()), []).append(f"{kind} x{stages}")
    return found


@pytest.mark.parametrize("order", ["masked", "causal"])
def test_the_sampler_returns_valid_ids_for_every_quantizer_kind(order):
    """Grids in the export's shape with ids < K, each cell fixed once, as many at each
    step as ``decoding_counts`` says (causal: cell i at step i) (kinds with one
    vocabulary and grid share a run)."""
    vocabularies, steps = _vocabularies(), 4
    assert len(vocabularies) == 3  # 64 codes, fsq's 240, and 64 in 2 stages
    for (num_codes, shape), kinds in vocabularies.items():
        stages = shape[3] if len(shape) == 4 else 1
        model = tiny_prior(num_codes, stages, shape[:3], num_classes=3, order=order)
        grids, decided = jax.jit(lambda v, k, lab, model=model: prior_model.sample(
            model, v, k, lab, steps=steps))(prior.init_variables(model, 0), jax.random.key(1),
                                            jnp.array([0, 2, 1]))
        assert grids.shape == (3, *shape) and grids.dtype == jnp.int32, kinds
        assert int(grids.min()) >= 0 and int(grids.max()) < num_codes, kinds
        if order == "causal":
            raster = np.arange(model.positions).reshape(shape[:3])
            assert all(np.array_equal(row, raster) for row in np.asarray(decided))
            continue
        left = np.concatenate([[model.positions],
                               prior_model.decoding_counts(model.positions, steps)])
        for row in np.asarray(decided):
            assert [np.sum(row == i) for i in range(steps)] == (left[:-1] - left[1:]).tolist()


def test_a_uniform_model_has_log2_k_bits_per_token():
    """With zero output heads every id has probability 1/K: the bound is log2 K for any
    draw of masked cells."""
    model = tiny_prior(num_codes=16, stages=2)
    variables = prior.init_variables(model, 0)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.zeros_like(x) if "head_" in jax.tree_util.keystr(path) else x,
        variables["params"])
    grids = jnp.asarray(np.random.default_rng(0).integers(0, 16, (3, 2, 3, 3, 2)), jnp.int32)
    bits = jax.jit(lambda p: prior_model.nll_bits(model, {"params": p}, jax.random.key(0), grids,
                                                  jnp.array([0, 1, 2])))(params)
    np.testing.assert_allclose(bits, np.full(3, 4.0), rtol=1e-6)
    # The unigram control by hand: 4 codes, a training grid of ids 0 (18 cells): p(0) =
    # 19/22 after add-one smoothing.
    train = np.zeros((1, 2, 3, 3), np.int32)
    assert prior.unigram_bits(train, train, 4) == pytest.approx(-math.log2(19 / 22))


def test_causal_logits_see_only_the_label_and_the_cells_before():
    """Changing the ids at and after position i leaves the logits of positions <= i as
    they were and changes the later ones; position 0's depend on the label alone."""
    model = tiny_prior(stages=2, order="causal", depth=2)
    n = model.positions
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, 16, (2, n, 2)), jnp.int32)
    labels = jnp.asarray([0, 2], jnp.int32)
    variables = prior.init_variables(model, 0)
    apply = jax.jit(lambda ids, labels: model.apply(variables, ids, None, labels))
    logits = apply(ids, labels)
    for i in (0, 7, n - 2):
        other = ids.at[:, i:].set(jnp.asarray(rng.integers(0, 16, (2, n - i, 2)), jnp.int32))
        changed = apply(other, labels)
        np.testing.assert_allclose(changed[:, :i + 1], logits[:, :i + 1], atol=1e-6)
        later = jnp.abs(changed[:, i + 1:] - logits[:, i + 1:]).max(axis=(0, 2, 3))
        assert float(later.min()) > 1e-6  # every later position saw the change
    relabelled = apply(ids, jnp.asarray([1, 3], jnp.int32))
    assert float(jnp.abs(relabelled[:, 0] - logits[:, 0]).max()) > 1e-4


def test_causal_sampling_decodes_as_teacher_forcing_does():
    """Cached decoding, a position a call, gives the teacher-forced logits; at temperature
    0 the sampler picks the argmax of the guided teacher-forced logits of its own grid."""
    model = tiny_prior(stages=2, order="causal", depth=2)
    n, labels = model.positions, jnp.asarray([0, 1, 3], jnp.int32)
    variables = prior.init_variables(model, 0)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 16, (3, n, 2)), jnp.int32)
    forced = jax.jit(lambda ids: model.apply(variables, ids, None, labels))(ids)
    stepper = model.clone(decode=True)
    cache = stepper.init(jax.random.key(0), ids, None, labels)["cache"]
    step = jax.jit(lambda cache, previous: stepper.apply({**variables, "cache": cache}, previous,
                                                         None, labels, mutable=["cache"]))
    previous, stepped = jnp.full((3, 1, 2), 16, jnp.int32), []
    for i in range(n):
        logits, updated = step(cache, previous)
        cache = updated["cache"]
        stepped.append(logits[:, 0])
        previous = ids[:, i:i + 1]
    np.testing.assert_allclose(jnp.stack(stepped, 1), forced, rtol=1e-4, atol=1e-5)
    grids, _ = jax.jit(lambda k: prior_model.sample(model, variables, k, labels, guidance=1.5,
                                                    temperature=0.0))(jax.random.key(2))
    seq = model.to_sequence(grids)
    guided = prior_model.guided_logits(model, variables, seq, None, labels, 1.5)
    np.testing.assert_array_equal(seq, np.asarray(guided).argmax(-1))


def test_causal_nll_is_exact():
    """``nll_bits`` of a causal prior: a numpy sum of log-softmax over one teacher-forced
    call; and 2^-(bits N S) summed over every grid of a tiny vocabulary is 1 (a
    normalised distribution, so the value is exact, not a bound)."""
    model = tiny_prior(num_codes=3, stages=2, grid=(1, 1, 3), order="causal", depth=2)
    variables = prior.init_variables(model, 0)
    n, s, k = model.positions, model.stages, model.num_codes
    every = np.array(np.meshgrid(*[np.arange(k)] * (n * s), indexing="ij")).reshape(n * s, -1).T
    grids = jnp.asarray(every.reshape(-1, 1, 1, n, s), jnp.int32)  # all 729 grids
    labels = jnp.full((len(every),), 1, jnp.int32)
    bits = np.asarray(jax.jit(lambda g: prior_model.nll_bits(
        model, variables, jax.random.key(0), g, labels))(grids), np.float64)
    assert np.exp2(-bits * n * s).sum() == pytest.approx(1.0, rel=1e-4)
    logits = np.asarray(model.apply(variables, model.to_sequence(grids[:5]), None, labels[:5]),
                        np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ids = every[:5].reshape(5, n, s)
    expected = -np.take_along_axis(logp, ids[..., None], -1).sum((1, 2, 3)) / (n * s * math.log(2))
    np.testing.assert_allclose(bits[:5], expected, rtol=1e-5)


def test_frechet_distance_and_the_classifier_loss_against_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    b = 0.5 + rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    oracle = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb)
              - 2.0 * np.trace(scipy.linalg.sqrtm(ca @ cb)).real)
    assert motion_classifier.frechet_distance(a, b) == pytest.approx(oracle, rel=1e-6)
    assert motion_classifier.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Class-balanced cross-entropy against a numpy weighted mean.
    logits = rng.normal(size=(5, 3))
    labels = np.array([0, 0, 0, 1, 2])
    weights = np.array([1 / 3, 1.0, 1.0])
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ce = -logp[np.arange(5), labels]
    expected = (ce * weights[labels]).sum() / weights[labels].sum()
    found = motion_classifier.balanced_cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                                                     jnp.asarray(weights))
    assert float(found) == pytest.approx(expected, rel=1e-5)
    # Diversity by hand: label 0's one pair is 5 apart; label 1 has one clip and no pair.
    features = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 10.0]])
    assert motion_classifier.diversity(features, np.array([0, 0, 1])) == pytest.approx(5.0)


# ---------------------------------------------------------------- trained on an export


@pytest.fixture(scope="module")
def export_dir(build_small, tmp_path_factory):
    """The suite's small 3d dataset exported (train and validation) by the tiny tokenizer
    at initialisation."""
    data_dir = pathlib.Path(build_small("3d").data_dir).parents[2]
    run = tmp_path_factory.mktemp("prior_tokenizer")
    checkpointing.write_run_config(tiny_config(data_dir), run)
    tokenizer = tokenize.Tokenizer.from_workdir(run, "init")
    return pathlib.Path(tokenize.export(tokenizer, [TRAIN, HELD_OUT], run / "tokens", run).data_dir)


def tiny_prior_config(tokens, num_steps=1, order="masked"):
    c = prior.default_config()
    c.tokens = str(tokens)
    c.model.update(width=16, depth=1, num_heads=2, mlp_ratio=2.0, order=order)
    c.train.update(batch_size=8, num_steps=num_steps, log_every=1, checkpoint_every=1)
    c.sample.update(steps=2, batch_size=8)  # evaluation splits it over the 8 devices
    return c


@pytest.fixture(scope="module", params=prior_model.ORDERS)
def one_step(export_dir, tmp_path_factory, request):
    """A tiny prior's workdir after one training step, the batch split over the suite's
    8 devices, of each order."""
    workdir = tmp_path_factory.mktemp(f"prior_{request.param}")
    config = tiny_prior_config(export_dir, order=request.param)
    checkpointing.write_run_config(config, workdir)
    mesh = sharding.make_mesh()
    assert sharding.data_size(mesh) == 8
    prior.train(config, workdir, mesh)
    return workdir


def test_one_step_trains_and_resumes_exactly(export_dir, one_step, tmp_path):
    """Two steps in one go equal one step, then a resumed second, bit for bit."""
    mesh = sharding.make_mesh()
    shutil.copytree(one_step, tmp_path / "resumed")
    once, config = prior.restore(one_step)[1:3]
    two = tiny_prior_config(export_dir, 2, config.model.order)
    _, resumed, _ = prior.train(two, tmp_path / "resumed", mesh)
    _, straight, _ = prior.train(two, tmp_path / "straight", mesh)
    changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                                     once["params"], resumed["params"])
    assert any(jax.tree_util.tree_leaves(changed))  # the second step did something
    jax.tree_util.tree_map(np.testing.assert_array_equal, resumed["params"], straight["params"])
    steps = sorted(int(p.name) for p in (tmp_path / "resumed" / prior.PRIOR_DIR / "checkpoints")
                   .iterdir() if p.name.isdigit())
    assert steps == [1, 2]
    c = tiny_prior_config(export_dir, 1)
    c.train.batch_size = 4
    with pytest.raises(ValueError, match="not divisible"):
        prior.train(c, tmp_path / "odd", mesh)


def test_generate_writes_gifs_and_a_token_dataset_that_decodes(export_dir, one_step, tmp_path):
    import tensorflow_datasets as tfds

    out = tmp_path / "samples"
    run_command(generate, [f"--workdir={one_step}", "--label=wave", "--num=3", "--seed=1",
                           "--guidance=1.0", "--steps=2", f"--output_dir={out}"])
    assert sorted(p.name for p in out.glob("*.gif")) == ["wave_0.gif", "wave_1.gif", "wave_2.gif"]
    export = prior.TokenExport.load(export_dir)
    name = f"{tokenize.TOKENS_NAME}/{export.builder.info.config_name}"
    source = tfds.data_source(name, data_dir=str(out / "tokens"))[generate.SPLIT]
    rows = [source[i] for i in range(len(source))]
    assert len(rows) == 3 and [int(r["index"]) for r in rows] == [0, 1, 2]
    wave = prior.label_names(export).index("wave")
    assert {int(r["label"]) for r in rows} == {wave}
    grids = np.stack([r["tokens"] for r in rows])
    assert grids.shape[1:] == tuple(export.metadata["token_grid"])
    samples = tfds.builder_from_directory(str(out / "tokens" / name / tokenize.TOKENS_VERSION))
    meta = samples.info.metadata
    assert meta["generated"]["label"] == "wave" and meta["generated"]["guidance"] == 1.0
    tokenizer = tokenize.Tokenizer.from_workdir(meta["workdir"], meta["weights"])
    clips = tokenizer.decode(grids)
    assert clips.shape[0] == 3 and np.all(np.isfinite(clips))
    with pytest.raises(ValueError, match="no class"):
        generate.generate(one_step, "moonwalk", 1, output_dir=tmp_path / "x")


def test_evaluation_table_end_to_end(export_dir, one_step, tmp_path):
    """Every row of the table is there and finite, the ground truth's Frechet distance to
    itself is 0, and the NLL rows are in order of knowledge (uniform is log2 K)."""
    order = prior.load_config(one_step).model.order
    config = tiny_prior_config(export_dir, order=order)
    config.classifier.widths = (4, 8)
    config.classifier.train.update(batch_size=8, num_steps=1, log_every=1, checkpoint_every=1)
    config.eval.update(nll_draws=1, batch_size=8, sweep=("2:0.0",))  # one compiled sampler
    shutil.copytree(one_step, tmp_path, dirs_exist_ok=True)
    results = prior.train_and_evaluate(config, tmp_path)
    rows = {r["clips"]: r for r in results["rows"]}
    grid = prior.TokenExport.load(export_dir).metadata["token_grid"]
    steps = 2 if order == "masked" else math.prod(grid)  # causal: a cell a step
    assert list(rows) == ["ground truth (held-out)", "decoded real tokens",
                          f"samples ({order}, {steps} steps, guidance 2)",
                          "uniformly random token grids",
                          f"samples ({order}, {steps} steps, guidance 0)"]
    assert rows["ground truth (held-out)"]["fd"] == pytest.approx(0.0, abs=1e-6)
    for row in rows.values():
        assert all(np.isfinite(row[k]) for k in ("top1", "fd", "diversity"))
    nll = results["nll_bits_per_token"]
    assert nll["uniform"] == pytest.approx(math.log2(64)) and np.isfinite(nll["prior"])
    table = (tmp_path / "generation.md").read_text()
    assert table.startswith("| clips |")
    assert ("prior (exact)" if order == "causal" else "prior (any-order bound)") in table
    assert (tmp_path / prior.CLASSIFIER_DIR / "checkpoints").is_dir()



def test_claim_keeps_work_across_an_added_knob_at_its_default(tmp_path):
    """A record written before a knob existed still claims its workdir when the knob has
    its default value; any other value, or a changed old knob, empties it."""
    run = tmp_path / "run"
    trained = run / "checkpoint"
    assert not fit.claim(run, {"model": {"width": 64}})  # an empty workdir: recorded
    trained.write_text("weights")
    defaults = {"model": {"width": 128, "order": "masked"}}
    assert not fit.claim(run, {"model": {"width": 64, "order": "masked"}}, defaults)
    assert trained.exists()
    assert fit.claim(run, {"model": {"width": 64, "order": "causal"}}, defaults)
    assert not trained.exists()  # another order: emptied, its own record written
    trained.write_text("weights")
    assert not fit.claim(run, {"model": {"width": 64, "order": "causal"}}, defaults)
    assert fit.claim(run, {"model": {"width": 32, "order": "causal"}}, defaults)  # old knob
