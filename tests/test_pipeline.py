"""The grain loader: decoding, determinism, per-host shards, global arrays, resume."""

import jax
import numpy as np
import pytest

from pose_vq.data import pipeline


def _cfg(builder, **kw):
    return pipeline.LoaderConfig(data_dir=str(builder.data_dir_root), name=f"{builder.name}/{builder.builder_config.name}",
                                 **{"global_batch_size": 8, **kw})


def _take(it, n):
    return [{k: np.asarray(v) for k, v in next(it).items()} for _ in range(n)]


def test_batches_are_global_sharded_float_clips(build_small):
    builder = build_small("m2d")
    mesh = pipeline.data_mesh()
    assert mesh.size == 8
    batch = next(pipeline.GlobalBatches(_cfg(builder), mesh))
    x = batch["inputs"]
    assert isinstance(x, jax.Array) and x.shape == (8, 8, 16, 16, 3) and x.dtype == np.float32
    assert x.sharding.spec == jax.sharding.PartitionSpec("data")
    assert len(x.addressable_shards) == 8 and x.addressable_shards[0].data.shape[0] == 1
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    np.testing.assert_array_equal(batch["targets"], x)  # m2d reconstructs its input
    assert batch["body_id"].shape == (8,)


def test_targets_per_mode(build_small):
    c2d = next(iter(pipeline.make_loader(_cfg(build_small("c2d"), global_batch_size=2))))
    assert c2d["inputs"].shape[-1] == 17 and c2d["targets"].shape[-1] == 1
    np.testing.assert_array_equal(c2d["targets"][..., 0], c2d["inputs"].max(-1))
    lift = next(iter(pipeline.make_loader(_cfg(build_small("m2d_3d"), global_batch_size=2))))
    assert lift["inputs"].shape == lift["targets"].shape
    assert not np.array_equal(lift["inputs"], lift["targets"])


def test_deterministic_order_per_seed(build_small):
    cfg = _cfg(build_small("3d"), global_batch_size=2)
    a = _take(iter(pipeline.make_loader(cfg)), 4)
    b = _take(iter(pipeline.make_loader(cfg)), 4)
    c = _take(iter(pipeline.make_loader(pipeline.LoaderConfig(**{**cfg.__dict__, "seed": 1}))), 4)
    order = lambda bs: [tuple(x["start_frame"]) + tuple(x["body_id"]) for x in bs]
    assert order(a) == order(b) != order(c)


def test_restore_gives_the_exact_next_batch(build_small):
    cfg = _cfg(build_small("m2d"))
    mesh = pipeline.data_mesh()
    it = pipeline.GlobalBatches(cfg, mesh)
    _take(it, 3)  # past the end of the first epoch: the state covers epochs too
    state = it.get_state()
    expected = _take(it, 3)
    resumed = pipeline.GlobalBatches(cfg, mesh)
    resumed.set_state(state)
    for got, want in zip(_take(resumed, 3), expected):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_each_process_reads_its_own_shard(build_small, monkeypatch):
    cfg = _cfg(build_small("3d"), global_batch_size=2, num_epochs=1, shuffle=False)
    n = len(build_small("3d").as_data_source()["train"])
    seen = []
    for index in range(2):
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        monkeypatch.setattr(jax, "process_index", lambda i=index: i)
        keys = {(q, int(b), int(s)) for batch in pipeline.make_loader(cfg)
                for q, b, s in zip(batch["sequence"], batch["body_id"], batch["start_frame"])}
        seen.append(keys)
    assert not seen[0] & seen[1]
    assert len(seen[0]) + len(seen[1]) == 2 * (n // 2)


def test_bad_batch_sizes_are_reported(build_small):
    builder = build_small("3d")
    with pytest.raises(ValueError, match="fewer than one batch"):
        pipeline.make_loader(_cfg(builder, global_batch_size=10_000))


def test_dataset_name_spells_only_non_default_build_knobs():
    from configs import default
    data = default.get_config().data
    assert pipeline.dataset_name(data) == "panoptic_heatmaps/3d"
    data.stride, data.score_source = 8, "ones"
    assert pipeline.dataset_name(data) == "panoptic_heatmaps/3d_t64_s128_score_sourceones_stride8"
    data.stride, data.score_source, data.sigma = 90, "gaussian", 0.75  # the defaults, spelled out
    assert pipeline.dataset_name(data) == "panoptic_heatmaps/3d"
