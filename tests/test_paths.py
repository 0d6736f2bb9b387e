"""Workdirs, data dirs and exports in a bucket: a ``gs://bucket/dir`` path stays that URI
through config, workdir creation, summaries, orbax's manager and a whole training run,
offline, against a fake bucket (a local folder behind fsspec's "gcs" filesystem, which
epath uses without TensorFlow, and behind TensorStore's kvstore, which orbax writes arrays
with). pathlib would write them to ``./gs:/bucket/...``: the tests run in an empty folder
and find it still empty."""

import importlib
import json
import os
import pathlib

import fsspec
import jax
import pytest
from etils.epath import backend as epath_backend
from etils.epath import gpath
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from orbax.checkpoint._src.path import gcs_utils

from pose_vq import checkpointing, errors, paths, sharding, summary, train
from pose_vq.data import prepare
from pose_vq.state import Models
from tests import config_file, read_events
from tests.test_train import tiny_config


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
    """A fake bucket store: ``gs://B/P`` is ``<root>/B/P``. Returns the root. The current
    folder is an empty one, where a mangled ``gs:/...`` path would land."""
    root = tmp_path / "gcs"
    root.mkdir()

    class FakeGCS(DirFileSystem):
        protocol = ("gs", "gcs")

        def __init__(self, *args, **kwargs):
            super().__init__(path=str(root), fs=LocalFileSystem(auto_mkdir=True))

    def kvstore(path):  # TensorStore's spec for an object under a bucket: a local file
        bucket, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
        return {"driver": "file", "path": str(root / bucket / key)}

    class Bucket:  # orbax asks the bucket whether it has hierarchical namespaces
        hierarchical_namespace_enabled = False

    # epath through fsspec, as without TensorFlow (its choice is cached once made)
    monkeypatch.setenv("EPATH_USE_TF", "false")
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    for protocol in FakeGCS.protocol:  # fsspec.filesystem("gcs") makes a FakeGCS
        monkeypatch.setitem(importlib.import_module("fsspec.registry")._registry, protocol,
                            FakeGCS)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()
    monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", kvstore)
    monkeypatch.setattr(gcs_utils, "get_bucket", lambda name: Bucket())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield root
    epath_backend.fsspec_backend._get_filesystem.cache_clear()
    assert not os.listdir(cwd), f"written beside the bucket: {os.listdir(cwd)}"


def test_a_bucket_path_stays_a_uri_and_a_local_one_is_expanded(tmp_path, monkeypatch):
    assert str(paths.as_path("gs://bucket/dir") / "checkpoints") == "gs://bucket/dir/checkpoints"
    assert str(paths.absolute("gs://bucket/dir")) == "gs://bucket/dir"
    assert str(pathlib.Path("gs://bucket/dir")) == "gs:/bucket/dir"  # what pathlib makes of it
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert os.fspath(paths.as_path("~/runs")) == str(tmp_path / "runs")
    assert os.fspath(paths.absolute("runs/a")) == str(tmp_path / "runs" / "a")
    assert paths.is_remote("gs://b") and not paths.is_remote("/gs/b") and not paths.is_remote("gs:b")


def test_a_bucket_without_a_gcs_client_is_one_line(monkeypatch):
    monkeypatch.setenv("EPATH_USE_TF", "false")

    def no_gcsfs(protocol):
        raise ImportError("Install gcsfs to access Google Storage")

    monkeypatch.setattr(fsspec, "get_filesystem_class", no_gcsfs)
    with pytest.raises(errors.ConfigError, match=r"gs://b/run: a gs:// path needs gcsfs"):
        paths.as_path("gs://b/run")
    assert str(paths.as_path("/tmp/run")) == "/tmp/run"  # a local path needs none


def test_config_workdir_summaries_and_manager_keep_a_bucket_path(fake_gcs):
    config = config_file("demo.py")
    config.data.data_dir = "gs://bucket/tfds"
    assert str(prepare.data_dir(config.data, "gs://bucket/run")) == "gs://bucket/tfds"
    with pytest.raises(prepare.DatasetNotBuiltError, match="--data_dir=gs://bucket/tfds "):
        prepare.locate_dataset(config.data, "gs://bucket/run")  # looked for in the bucket
    config.data.data_dir = ""
    assert str(prepare.data_dir(config.data, "gs://bucket/run")) == \
        "gs://bucket/run/tensorflow_datasets"

    checkpointing.write_run_config(config, "gs://bucket/run")
    assert json.loads((fake_gcs / "bucket" / "run" / "config.json").read_text())["seed"] == config.seed
    assert checkpointing.load_run_config("gs://bucket/run").to_dict() == config.to_dict()

    writer = summary.SummaryWriter("gs://bucket/run", enabled=True)
    writer.write_scalars(7, {"train/loss/l1": 0.5})
    writer.close()
    [(step, value)] = read_events(fake_gcs / "bucket" / "run")["train/loss/l1"][1]
    assert (step, float(value)) == (7, 0.5)

    manager = checkpointing.checkpoint_manager("gs://bucket/run")
    assert str(manager.directory) == "gs://bucket/run/checkpoints"
    assert manager.latest_step() is None
    assert (fake_gcs / "bucket" / "run" / "checkpoints").is_dir()

    with pytest.raises(errors.ConfigError, match="a Panoptic root is read from a local folder"):
        config.data.manual_dir = "gs://bucket/panoptic"
        prepare.prepare_dataset(config.data, "/tmp/unused")


@pytest.mark.xdist_group("tiny_runs")  # tiny_runs' FSDP step: its programs from the cache
def test_a_run_trains_into_a_bucket_and_restores_from_it(fake_gcs, data_dir):
    """One step with a checkpoint, the final evaluation and its summaries, all in
    ``gs://bucket/run``; the generator restores from there."""
    config = tiny_config(data_dir, **{"loss.perceptual_weight": 0.0, "train.num_steps": 1,
                                      "train.log_every": 1, "eval.max_examples": 0,
                                      "eval.num_videos": 0, "sharding.strategy": "fsdp"})
    train.train_and_evaluate(config, "gs://bucket/run")
    run = fake_gcs / "bucket" / "run"
    assert (run / "checkpoints" / "1").is_dir()
    assert json.loads((run / "eval_metrics.json").read_text())["step"] == 1
    assert {"train/loss/l1", "eval/ema/ssim"} <= set(read_events(run))
    models = Models.create(config)
    state = checkpointing.restore_generator("gs://bucket/run", models,
                                            sharding.make_mesh(devices=jax.devices()[:1]))
    assert int(state.step) == 1
