"""Token export: a trained run's tokens written as a TFDS dataset, read back by name from
the files alone, equal the generator's own token choices and decode to the clips it
reconstructs (to float rounding), with the evaluation's metrics."""

import json

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.dataset_builders import adhoc_builder

from pose_vq import checkpointing, evaluate, sharding, tokenize
from pose_vq.benchmarks import precision
from pose_vq.data import pipeline, prepare
from pose_vq.state import create_state

pytestmark = pytest.mark.xdist_group("tiny_runs")  # one worker trains the fixture


@pytest.fixture(scope="module")
def run_dir(tiny_runs):
    return tiny_runs[1] / "vqgan"


@pytest.fixture(scope="module")
def tok(run_dir):
    """The run's default Tokenizer (EMA weights, every device), restored once."""
    return tokenize.Tokenizer.from_workdir(run_dir)


class _NoTensorFlow:
    def __getattr__(self, name):
        raise AssertionError(f"the array_record export touched TensorFlow (tf.{name})")


def test_export_read_back_decode_equals_reconstruction(tok, run_dir, tmp_path, monkeypatch):
    assert (tok.step, tok.weights) == (1, "ema")
    # TFDS's ad-hoc builder asks each split whether it is a tf.data.Dataset; the export's
    # builder does not, so it needs no TensorFlow install.
    monkeypatch.setattr(adhoc_builder, "tf", _NoTensorFlow())
    out = tokenize.export(tok, ["validation"], tmp_path, run_dir, batch_size=4)
    monkeypatch.undo()
    name = f"{tokenize.TOKENS_NAME}/{out.builder_config.name}"

    ds = tfds.data_source(name, data_dir=str(tmp_path))["validation"]  # files only
    meta = tfds.builder(name, data_dir=str(tmp_path)).info.metadata
    assert meta["checkpoint_step"] == 1 and meta["weights"] == "ema"
    assert meta["tokenizer_config"]["quantizer"]["num_codes"] == tok.models.spec.num_codes
    assert meta["token_grid"] == list(tok.models.spec.token_grid())

    source = pipeline.open_dataset(meta["source_data_dir"], meta["source_dataset"])
    clips = source.as_data_source(split="validation")
    to_model = pipeline.ToModelInputs(pipeline.dataset_mode(source))
    assert len(ds) == len(clips) > 4  # more than one (padded) batch
    rows = [ds[i] for i in range(len(ds))]
    for i, row in enumerate(rows):
        assert (row["index"], row["mode"]) == (i, b"3d")
        assert (row["sequence"], row["body_id"], row["start_frame"]) == (
            clips[i]["sequence"], clips[i]["body_id"], clips[i]["start_frame"])
    inputs = np.stack([to_model.map(clips[i])["inputs"] for i in range(len(ds))])

    # The oracle: the generator's own forward pass (another XLA program, so equal up to
    # float rounding; the tokens themselves are equal).
    variables = tok.variables
    recon, q = jax.jit(lambda v, x: tok.models.generator.apply(v, x, train=False))(
        variables, inputs)
    tokens = np.stack([r["tokens"] for r in rows])
    np.testing.assert_array_equal(tokens, np.asarray(q.indices))
    np.testing.assert_allclose(tok.decode(tokens), np.asarray(recon), rtol=0, atol=1e-5)
    assert len(np.unique(tokens)) > 1


def test_roundtrip_metrics_equal_evaluation(tok, run_dir, tmp_path):
    """--verify's numbers: the evaluation's EMA metrics, recomputed from exported tokens."""
    config = tok.config.copy_and_resolve_references()
    config.eval.max_examples = 0
    state = checkpointing.restore_generator(run_dir, tok.models, sharding.make_mesh())
    data_dir, name = prepare.prepare_dataset(config.data, run_dir)
    expected = evaluate.Evaluator(tok.models, sharding.make_mesh(), data_dir, name, config,
                                  tmp_path).run(state, 1)["ema"]
    out = tokenize.export(tok, ["validation"], tmp_path / "tokens", run_dir)
    found = tokenize.roundtrip_metrics(tok, out, "validation")
    for k in ("ssim", "psnr", "l1", "t_std"):
        assert found[k] == pytest.approx(expected[k], rel=1e-5, abs=1e-6), k


def test_ema_weights_come_with_the_ema_codebook(tok, run_dir):
    """The EMA weights are evaluated and exported with the same EMA of the codebook state,
    not with the codebook that tracked the raw encoder: after one step every float
    vq_stats leaf is the warm-up blend (decay min(ema_decay, 1/10)) of its initial and
    trained values, as the weights are."""
    config, models, mesh = tok.config, tok.models, sharding.make_mesh()
    initial = jax.device_get(create_state(models, mesh, config.seed))
    state = jax.device_get(checkpointing.restore_generator(run_dir, models, mesh))
    decay = min(config.train.ema_decay, 1 / 10)
    for name, (raw_name, ema_name) in {"weights": ("generator", "ema_generator"),
                                       "codebook": ("vq_stats", "ema_vq_stats")}.items():
        init, raw, ema = (jax.tree_util.tree_leaves(getattr(s, n)) for s, n in
                          ((initial, raw_name), (state, raw_name), (state, ema_name)))
        for a, b, e in zip(init, raw, ema):
            np.testing.assert_allclose(e, decay * a + (1 - decay) * b, rtol=1e-5, atol=1e-7,
                                       err_msg=name)
        assert any(not np.allclose(b, e) for b, e in zip(raw, ema)), name
    for weights, (params, stats) in {"ema": ("ema_generator", "ema_vq_stats"),
                                     "raw": ("generator", "vq_stats")}.items():
        variables = (tok if weights == "ema" else
                     tokenize.Tokenizer.from_workdir(run_dir, weights=weights)).variables
        for got, want in ((variables["params"], getattr(state, params)),
                          (variables["vq_stats"], getattr(state, stats))):
            for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(got)),
                            jax.tree_util.tree_leaves(want)):
                np.testing.assert_array_equal(a, b)


def test_bfloat16_tokenizer_stays_within_bfloat16_rounding_of_float32(run_dir):
    """python -m pose_vq.benchmark precision on the fixture's run: bf16 activations (the
    output conv, attention logits, norm statistics and codebook distances in float32)."""
    result = precision.run(run_dir, max_clips=8)
    assert result["clips"] == 8
    # bf16 keeps 8 significant bits (relative rounding 2**-9 per operation): over the
    # decoder's convolutions its clips stay within ~2.5 data levels (1/255) of float32's
    # on average (0.0054 measured), and few latents change their nearest code (97.7%
    # agree; 1 training step leaves many near-ties, a trained demo run agrees more:
    # BENCHMARKS.md).
    assert result["decode_mean_abs_diff"] < 0.01
    assert result["decode_max_abs_diff"] < 0.25
    assert result["token_agreement"] > 0.9
    assert abs(result["l1_bf16"] - result["l1_f32"]) < 0.01 * result["l1_f32"] + 1e-3


def test_decode_rejects_bad_tokens(tok, run_dir):
    grid = tok.models.spec.token_grid()
    with pytest.raises(ValueError, match="token ids"):
        tok.decode(np.full((1, *grid), tok.models.spec.num_codes))
    with pytest.raises(ValueError, match="integer token grids"):
        tok.decode(np.zeros((1, 2, 2), np.int32))
    with pytest.raises(FileNotFoundError, match="config.json"):
        tokenize.Tokenizer.from_workdir(run_dir / "checkpoints")


def test_a_residual_simvq_run_trains_evaluates_exports_decodes_and_probes(data_dir, tmp_path):
    """Past the quantizer, a kind with a trained code map and residual stages goes through
    the whole chain: a step under tensor sharding (its basis split over 'model'),
    per-stage codebook health, the export with its stage axis and (stages, K, D)
    codebook, decode equal to the generator's reconstruction, the probes' features the
    sum of the stages' codes."""
    from pose_vq import train
    from pose_vq.downstream import probe
    from tests.test_train import tiny_config

    config = tiny_config(data_dir, **{"loss.perceptual_weight": 0.0, "train.num_steps": 1,
                                      "train.log_every": 1, "eval.max_examples": 0,
                                      "eval.num_videos": 0, "sharding.strategy": "tensor"})
    config.quantizer.update(kind="simvq", stages=2, dead_code_threshold=0.0)
    config.cpu_devices, config.sharding.mesh = 0, {"data": 4, "model": 2}  # the 8 host devices
    train.train_and_evaluate(config, tmp_path / "run")
    results = json.loads((tmp_path / "run" / "eval_metrics.json").read_text())
    stage_usage = [results["ema"][f"codebook_usage_stage{s}"] for s in (0, 1)]
    assert results["ema"]["codebook_usage"] == pytest.approx(np.mean(stage_usage))

    tok = tokenize.Tokenizer.from_workdir(tmp_path / "run")
    out = tokenize.export(tok, ["validation"], tmp_path / "tokens", tmp_path / "run")
    export = probe.TokenExport.load(out.data_dir)
    assert export.metadata["stages"] == 2 and export.metadata["quantizer"] == "simvq"
    tokens = export.split("validation")["tokens"]
    assert tokens.shape[1:] == tok.models.spec.token_shape() == (4, 8, 8, 2)
    assert export.codebook.shape == (2, 64, 32)
    source = pipeline.open_dataset(export.metadata["source_data_dir"],
                                   export.metadata["source_dataset"])
    clips = source.as_data_source(split="validation")
    to_model = pipeline.ToModelInputs(pipeline.dataset_mode(source))
    inputs = np.stack([to_model.map(clips[i])["inputs"] for i in range(len(tokens))])
    recon, q = jax.jit(lambda v, x: tok.models.generator.apply(v, x, train=False))(
        tok.variables, inputs)
    np.testing.assert_array_equal(tokens, np.asarray(q.indices))
    np.testing.assert_allclose(tok.decode(tokens), np.asarray(recon), rtol=0, atol=1e-5)

    features = export.inputs("validation")
    got = np.asarray(features.features({"tokens": tokens[:2]}))
    cb = export.codebook
    want = cb[0][tokens[:2, ..., 0]] + cb[1][tokens[:2, ..., 1]]
    np.testing.assert_allclose(got, want.reshape(2, 4, -1, 32), rtol=1e-6)
