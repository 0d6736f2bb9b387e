"""The grain loader: decoding, determinism, per-host shards, global arrays, resume; a
damaged shard named, with the command that rebuilds it."""

import os
import pathlib
import re
import shutil
import time

import jax
import numpy as np
import pytest

from pose_vq import config as config_lib
from pose_vq import defaults, sharding
from pose_vq.data import modes, pipeline
from pose_vq.visualize import __main__ as visualize_command
from tests import run_command


def _cfg(builder, **kw):
    return pipeline.LoaderConfig(data_dir=str(builder.data_dir_root),
                                 name=f"{builder.name}/{builder.builder_config.name}",
                                 **{"global_batch_size": 8, **kw})


def _stored(builder, batch):
    """The stored train examples of a batch's rows, found by their identity fields."""
    source = builder.as_data_source()["train"]
    by_key = {(e["sequence"], int(e["body_id"]), int(e["start_frame"])): e
              for e in (source[i] for i in range(len(source)))}
    return [by_key[(q, int(b), int(s))]
            for q, b, s in zip(batch["sequence"], batch["body_id"], batch["start_frame"])]


def _take(it, n):
    return [{k: np.asarray(v) for k, v in next(it).items()} for _ in range(n)]


def test_batches_are_global_sharded_uint8_clips(build_small):
    builder = build_small("m2d")
    mesh = sharding.make_mesh()
    assert mesh.size == 8
    batch = next(pipeline.GlobalBatches(_cfg(builder), mesh))
    x = batch["inputs"]
    assert isinstance(x, jax.Array) and x.shape == (8, 8, 16, 16, 3) and x.dtype == np.uint8
    assert x.sharding.spec == jax.sharding.PartitionSpec("data")
    assert len(x.addressable_shards) == 8 and x.addressable_shards[0].data.shape[0] == 1
    assert "targets" not in batch  # m2d reconstructs its input
    assert batch["body_id"].shape == (8,)
    np.testing.assert_array_equal(np.asarray(x), [e["heatmaps"] for e in _stored(builder, batch)])


def test_model_clips_decode_on_device_as_on_the_host(build_small):
    """modes.model_clips in a jitted program equals the host decoding (the float32 clips
    every earlier version fed the model), for a derived and a separate target."""
    for mode_name, batch_size in (("c2d", 2), ("m2d_3d", 2)):
        builder = build_small(mode_name)
        mode = pipeline.dataset_mode(builder)
        stored = next(iter(pipeline.make_loader(_cfg(builder, global_batch_size=batch_size))))
        assert stored["inputs"].dtype == np.uint8
        device = jax.jit(lambda b, mode=mode: modes.model_clips(mode, b))(
            pipeline.model_fields(stored))
        to_model = pipeline.ToModelInputs(mode)
        host = [to_model.map(e) for e in _stored(builder, stored)]
        for got, key in zip(device, ("inputs", "targets")):
            want = np.stack([h[key] for h in host])
            assert got.dtype == np.float32 and 0.0 <= float(got.min()) <= float(got.max()) <= 1.0
            np.testing.assert_array_equal(np.asarray(got), want)
        if mode_name == "c2d":
            assert device[0].shape[-1] == 17 and device[1].shape[-1] == 1
            np.testing.assert_array_equal(device[1][..., 0], device[0].max(-1))
        else:
            assert device[0].shape == device[1].shape
            assert not np.array_equal(device[0], device[1])


def test_deterministic_order_per_seed(build_small):
    cfg = _cfg(build_small("3d"), global_batch_size=2)
    a = _take(iter(pipeline.make_loader(cfg)), 4)
    b = _take(iter(pipeline.make_loader(cfg)), 4)
    c = _take(iter(pipeline.make_loader(pipeline.LoaderConfig(**{**cfg.__dict__, "seed": 1}))), 4)
    order = lambda bs: [tuple(x["start_frame"]) + tuple(x["body_id"]) for x in bs]
    assert order(a) == order(b) != order(c)


def test_restore_gives_the_exact_next_batch(build_small):
    """The saved position is that of the last batch returned, not of the prefetched
    ones (prefetch 2 keeps two more already read)."""
    cfg = _cfg(build_small("m2d"))
    mesh = sharding.make_mesh()
    it = pipeline.GlobalBatches(cfg, mesh, prefetch=2)
    _take(it, 3)  # past the end of the first epoch: the state covers epochs too
    assert len(it._ahead) == 2
    state = it.get_state()
    expected = _take(it, 3)
    resumed = pipeline.GlobalBatches(cfg, mesh, prefetch=0)
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


class _CountingSource:
    """A data source that records every index read from it."""

    def __init__(self, source):
        self.source, self.reads = source, []

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        self.reads.append(i)
        return self.source[i]


def _records_read_after_one_batch(builder, monkeypatch, read_ahead) -> int:
    """Records the loader's threads have read from its own data source, after it returned
    its first batch (2 clips), once they have read all that grain submits.

    grain submits reads from the consumer's thread, at most 2 * ``read_ahead`` records
    past the 2 consumed, and its threads run them when they get the CPU. So the count
    waits (up to 30 s) for that many, then half a second more for reads beyond them, were
    grain to make any: a slow machine delays the count but does not change it. Only this
    loader's source counts: a loader an earlier test left behind may still be reading
    from its own."""
    opened, sources = pipeline.open_dataset, []

    def open_counting(data_dir, name):
        built = opened(data_dir, name)
        as_source = built.as_data_source

        def counting_source(**kw):
            sources.append(_CountingSource(as_source(**kw)))
            return sources[-1]

        monkeypatch.setattr(built, "as_data_source", counting_source)
        return built

    monkeypatch.setattr(pipeline, "open_dataset", open_counting)
    it = iter(pipeline.make_loader(_cfg(builder, global_batch_size=2, read_ahead=read_ahead)))
    next(it)
    (reads,) = [s.reads for s in sources]
    deadline = time.monotonic() + 30
    while len(reads) < 2 + 2 * read_ahead and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    return len(reads)


def test_read_ahead_bounds_the_records_read_before_they_are_needed(build_small, monkeypatch):
    """``read_ahead`` batches of records beyond the batch returned, not grain's 500 (the
    sampler repeats the 12 stored clips forever, so nothing else stops the reads)."""
    builder = build_small("3d")
    assert _records_read_after_one_batch(builder, monkeypatch, read_ahead=1) == 2 + 2
    assert _records_read_after_one_batch(builder, monkeypatch, read_ahead=4) == 2 + 8
    config = defaults.get_config()
    config.data.read_ahead = 0
    with pytest.raises(config_lib.ConfigError, match="data.read_ahead=0"):
        config_lib.validate(config)


def test_bad_batch_sizes_are_reported(build_small):
    builder = build_small("3d")
    with pytest.raises(ValueError, match="fewer than one batch"):
        pipeline.make_loader(_cfg(builder, global_batch_size=10_000))



def test_fixed_size_batches_pad_the_last_and_compile_once():
    """10 rows in batches of 4: 4, 4 and 2 real rows, the last batch padded (zeros, or
    the given padding row); a jitted function compiles once and its outputs, trimmed to
    the real rows, are the rows' own."""
    rows = [{"x": np.full((3,), i, np.float32), "id": np.int32(i)} for i in range(10)]
    read = []
    traces = []

    def reading():
        for r in rows:
            read.append(r)
            yield r

    @jax.jit
    def f(batch):
        traces.append(batch["x"].shape)  # runs once per compilation
        return {"sum": batch["x"].sum(-1), "id": batch["id"] + 1}

    outs, sizes = [], []
    for batch, n in pipeline.fixed_size_batches(reading(), 4, padding={"id": -1}):
        assert len(read) == min(4 * (len(sizes) + 1), 10)  # rows are read as needed
        assert batch["x"].shape == (4, 3) and batch["id"].dtype == np.int32
        sizes.append(n)
        outs.append({k: np.asarray(v)[:n] for k, v in f(batch).items()})
    assert sizes == [4, 4, 2] and traces == [(4, 3)]
    np.testing.assert_array_equal(batch["x"][2:], 0)
    np.testing.assert_array_equal(batch["id"][2:], -1)
    np.testing.assert_array_equal(np.concatenate([o["sum"] for o in outs]), 3 * np.arange(10))
    np.testing.assert_array_equal(np.concatenate([o["id"] for o in outs]), np.arange(10) + 1)

    # A fixed number of batches: padding alone after the rows, in their shapes.
    padding = {"x": np.zeros(3, np.float32), "id": np.int32(-1)}
    out = list(pipeline.fixed_size_batches(rows[:3], 4, padding, num_batches=3))
    assert [n for _, n in out] == [3, 0, 0]
    assert all(b["x"].shape == (4, 3) and b["x"].dtype == np.float32 for b, _ in out)
    np.testing.assert_array_equal(out[2][0]["id"], -1)
    with pytest.raises(ValueError, match="padding row for every key"):
        list(pipeline.fixed_size_batches([], 4, num_batches=1))
    with pytest.raises(ValueError, match="more rows than 2 batches"):
        list(pipeline.fixed_size_batches(rows, 4, padding, num_batches=2))


def _damageable_copy(builder, root: pathlib.Path) -> pathlib.Path:
    """A copy of a built dataset's version folder under the data dir ``root``."""
    version = pathlib.Path(builder.data_dir)  # <data_dir>/panoptic_heatmaps/<config>/<version>
    copy = root / version.relative_to(version.parents[2])
    shutil.copytree(version, copy)
    return copy


def _shard(version: pathlib.Path, split: str) -> pathlib.Path:
    (path,) = version.glob(f"panoptic_heatmaps-{split}.array_record-*")
    return path


def test_a_truncated_shard_is_one_error_naming_it_and_the_rebuild(build_small, tmp_path, capsys):
    """A validation shard cut to half its size (what the issue saw end --mode=evaluate in a
    raw Riegeli traceback): the reader, the loader and a command name it in one line with
    the command that rebuilds the dataset; the intact train split is still read."""
    built = build_small("3d")
    version = _damageable_copy(built, tmp_path)
    name = f"panoptic_heatmaps/{version.parent.name}"
    shard = _shard(version, "validation")
    os.truncate(shard, shard.stat().st_size // 2)
    rebuild = (f"remove {version} and build it again: `python -m data_builders.panoptic_heatmaps "
               f"--manual_dir=PANOPTIC_ROOT --data_dir={tmp_path} --config=3d --frames=8 --size=16 "
               "--stride=6`")
    with pytest.raises(pipeline.ShardError) as raised:
        pipeline.read_skeletons(str(tmp_path), name, "validation")
    message = str(raised.value)
    assert message.startswith(f"shard {shard} ") and message.endswith(rebuild)
    assert "\n" not in message
    loader = pipeline.LoaderConfig(str(tmp_path), name, split="validation", global_batch_size=2)
    with pytest.raises(pipeline.ShardError, match=re.escape(f"shard {shard} ")):
        pipeline.make_loader(loader)
    train = pipeline.read_skeletons(str(tmp_path), name, "train")
    assert len(train["label"]) == built.info.splits["train"].num_examples

    with pytest.raises(SystemExit) as exit_:
        run_command(visualize_command, [f"--dataset={version}", "--split=validation",
                                        f"--output={tmp_path / 'clip.gif'}"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {message}"


def test_a_missing_or_corrupt_shard_is_named(build_small, tmp_path):
    """A shard whose footer is intact but whose records are damaged opens (its count
    agrees with the metadata) and fails on the record, naming the shard; a deleted shard
    is named when the split is opened."""
    version = _damageable_copy(build_small("3d"), tmp_path)
    builder = pipeline.open_dataset(str(tmp_path), f"panoptic_heatmaps/{version.parent.name}")
    shard = _shard(version, "validation")
    intact = shard.read_bytes()
    for offset in range(len(intact) // 4, len(intact) // 2, 4096):  # inside the record chunks
        damaged = bytearray(intact)
        damaged[offset:offset + 16] = bytes(b ^ 0xFF for b in damaged[offset:offset + 16])
        shard.write_bytes(bytes(damaged))
        try:  # a damaged chunk header already fails the opening check: damaged data is wanted
            source = pipeline.data_source(builder, "validation")
            break
        except pipeline.ShardError:
            continue
    else:
        pytest.fail("every damage tried broke a chunk header")
    with pytest.raises(pipeline.ShardError,
                       match=rf"^shard {re.escape(str(shard))} cannot be read at record \d+ "
                             r"\(Corrupted Riegeli/records file"):
        for i in range(len(source)):
            source[i]
    shard.unlink()
    with pytest.raises(pipeline.ShardError, match=rf"^shard {re.escape(str(shard))} is missing"):
        pipeline.data_source(builder, "validation")


def test_the_rebuild_hint_follows_what_wrote_the_dataset():
    """A panoptic_heatmaps build is rebuilt with its stored builder config (fields an
    older build lacks take the builder's defaults, which the command leaves out); a token
    export is exported again from its run."""
    built = {"mode": "m2d", "frames": 16, "heatmap_size": 32, "sigma": 1.0}
    assert pipeline._rebuild_hint({"config": built}, "/d/panoptic_heatmaps/m2d_x/3.0.0") == (
        "remove /d/panoptic_heatmaps/m2d_x/3.0.0 and build it again: `python -m "
        "data_builders.panoptic_heatmaps --manual_dir=PANOPTIC_ROOT --data_dir=/d "
        "--config=m2d --frames=16 --size=32 --sigma=1.0`")
    tokens = {"workdir": "/runs/demo", "mode": "3d", "checkpoint_step": 200}
    assert pipeline._rebuild_hint(tokens, "/t/motion_tokens/3d/1.0.0") == (
        "remove /t/motion_tokens/3d/1.0.0 and export it again (`python -m pose_vq.tokenize "
        "--workdir=/runs/demo` and the flags that wrote it)")
