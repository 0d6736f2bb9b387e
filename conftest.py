"""Shared test set-up: 8 host devices for sharding tests, small synthetic datasets."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # sharding tests
# Test shapes are tiny: XLA's compile time dominates, not run time.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import pathlib  # noqa: E402

import pytest  # noqa: E402

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
    from data_builders.panoptic_heatmaps.__main__ import build

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
