"""Shared test set-up: 8 host devices for sharding tests, small synthetic datasets."""

import os

# 8 host devices for the sharding tests. Test shapes are tiny: XLA's compile time
# dominates, not run time. So most optimisations are off, and fusions use XLA:CPU's
# elemental emitters: test_lpips.py and test_vqgan.py ran in 0.74x and 0.79x of their
# time with the newer fusion emitters (26.6 s vs 36.0 s, 46.7 s vs 58.9 s, one run each).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                                   "--xla_cpu_use_fusion_emitters=false")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import gc
import pathlib
import shutil
import tempfile

import pytest

# One compilation cache for the run, subprocesses included: the tests compile the same
# tiny programs many times (a run resumed twice, the Tokenizer after training, ...).
# A fresh directory per run, so no test depends on an earlier run's state.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _JIT_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="pose_vq_jit_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_collection_finish(session):
    """Python's collector leaves the imported libraries alone from here on: tracing makes
    objects by the million, and each full collection would walk jax, flax, TensorFlow."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def pytest_sessionfinish(session, exitstatus):
    """The process that made the cache removes it (xdist workers inherit and share it).
    Everything is frozen first: pytest's exit collects five times over every object the
    session made (6 s a worker), and what is left at exit is no test's business."""
    gc.freeze()
    if "_JIT_CACHE" in globals() and not hasattr(session.config, "workerinput"):
        shutil.rmtree(_JIT_CACHE, ignore_errors=True)


SAMPLE_ROOT = pathlib.Path(__file__).resolve().parent.parent / "shared" / "data" / "panoptic_sample"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> pathlib.Path:
    """Two train and one validation synthetic sequence, 40 frames, 2 people."""
    from pose_vq.data import synthetic

    root = tmp_path_factory.mktemp("synthetic_panoptic")
    return synthetic.write_synthetic_root(
        root, ["synth_000", "synth_001", "synth_002"], num_frames=40, num_people=2, seed=0,
        splits={"train": ["synth_000", "synth_001"], "validation": ["synth_002"]})


@pytest.fixture(scope="session")
def build_small(synthetic_root, tmp_path_factory):
    """build_small(mode, **kw) -> builder: a tiny dataset (8 frames, 16 px), cached."""
    from pose_vq.data.prepare import build

    data_dir = tmp_path_factory.mktemp("tfds")
    cache = {}

    def _build(mode, file_format="array_record", **kw):
        key = (mode, file_format, tuple(sorted(kw.items())))
        if key not in cache:
            kw = {"frames": 8, "heatmap_size": 16, "stride": 6, **kw}
            cache[key] = build(synthetic_root, data_dir / file_format, mode,
                               file_format=file_format, **kw)
        return cache[key]

    return _build


@pytest.fixture(scope="session")
def data_dir(build_small) -> pathlib.Path:
    """The TFDS data dir of build_small's 3d dataset (what tiny_config reads)."""
    builder = build_small("3d")  # .../<data_dir>/panoptic_heatmaps/<config>/<version>
    return pathlib.Path(builder.data_dir).parents[2]


@pytest.fixture(scope="session")
def tiny_runs(build_small, tmp_path_factory):
    """The paper's three variants of the tiny test config, trained 1 step on the 8 host
    devices under FSDP and evaluated (pose_vq.analysis.run_all): (base config, workdir,
    {variant: eval results})."""
    from pose_vq import analysis
    from pose_vq import config as config_lib
    from tests.test_train import tiny_config

    build_small("m2d")
    data_dir = pathlib.Path(build_small("3d").data_dir).parents[2]
    config = tiny_config(data_dir, **{"loss.perceptual_weight": 0.0, "train.num_steps": 1,
                                      "train.log_every": 1, "eval.max_examples": 0,
                                      "eval.num_videos": 0, "sharding.strategy": "fsdp"})
    workdir = tmp_path_factory.mktemp("runs")
    runs = {v: config_lib.apply_variant(config, v) for v in config_lib.VARIANTS}
    return config, workdir, analysis.run_all(runs, workdir)


@pytest.fixture(scope="session")
def tiny_lifter(build_small, tmp_path_factory):
    """A tiny DSTformer lifter trained 200 steps on the 3d test dataset and evaluated
    (pose_vq.downstream.lift): (data_dir, workdir, results)."""
    from pose_vq.downstream import lift
    from tests.test_lift import fixture_lift_config

    data_dir = pathlib.Path(build_small("3d").data_dir).parents[2]
    workdir = tmp_path_factory.mktemp("lifter")
    return data_dir, workdir, lift.train_and_evaluate(fixture_lift_config(data_dir), workdir)
