"""Token export: a trained run's tokens written as a TFDS dataset, read back by name from
the files alone, equal the generator's own token choices and decode to the clips it
reconstructs (to float rounding), with the evaluation's metrics."""

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from pose_vq import checkpointing, evaluate, tokenize
from pose_vq.data import pipeline

pytestmark = pytest.mark.xdist_group("tiny_runs")  # one worker trains the fixture


@pytest.fixture(scope="module")
def run_dir(tiny_runs):
    return tiny_runs[1] / "vqgan"


def test_export_read_back_decode_equals_reconstruction(run_dir, tmp_path):
    tok = tokenize.Tokenizer.from_workdir(run_dir)
    assert (tok.step, tok.weights) == (1, "ema")
    out = tokenize.export(tok, ["validation"], tmp_path, run_dir, batch_size=4)
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


def test_roundtrip_metrics_equal_evaluation(run_dir, tmp_path):
    """--verify's numbers: the evaluation's EMA metrics, recomputed from exported tokens."""
    tok = tokenize.Tokenizer.from_workdir(run_dir)
    config = tok.config
    config.eval.max_examples = 0
    state = checkpointing.restore_generator(run_dir, tok.models, pipeline.data_mesh())
    data_dir, name = pipeline.prepare_dataset(config.data, run_dir)
    expected = evaluate.Evaluator(tok.models, pipeline.data_mesh(), data_dir, name, config,
                                  tmp_path).run(state, 1)["ema"]
    out = tokenize.export(tok, ["validation"], tmp_path / "tokens", run_dir)
    found = tokenize.roundtrip_metrics(tok, out, "validation")
    for k in ("ssim", "psnr", "l1", "t_std"):
        assert found[k] == pytest.approx(expected[k], rel=1e-5, abs=1e-6), k


def test_decode_rejects_bad_tokens(run_dir):
    tok = tokenize.Tokenizer.from_workdir(run_dir)
    grid = tok.models.spec.token_grid()
    with pytest.raises(ValueError, match="token ids"):
        tok.decode(np.full((1, *grid), tok.models.spec.num_codes))
    with pytest.raises(ValueError, match="integer token grids"):
        tok.decode(np.zeros((1, 2, 2), np.int32))
    with pytest.raises(FileNotFoundError, match="config.json"):
        tokenize.Tokenizer.from_workdir(run_dir / "checkpoints")
