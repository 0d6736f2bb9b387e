"""Preparing a config's dataset: its name, locating a build without building, building
only where a command creates data and only in one process."""

import pathlib

import pytest

from pose_vq import defaults
from pose_vq.data import prepare, synthetic


def _tiny_data(builder):
    """The data section that names ``build_small``'s dataset (8 frames, 16 px, stride 6)."""
    data = defaults.get_config().data
    data.update(mode="3d", frames=8, heatmap_size=16, stride=6,
                data_dir=str(pathlib.Path(builder.data_dir).parents[2]))
    return data


def test_dataset_name_spells_only_non_default_build_knobs():
    data = defaults.get_config().data
    assert prepare.dataset_name(data) == "panoptic_heatmaps/3d"
    data.stride, data.score_source = 8, "ones"
    assert prepare.dataset_name(data) == "panoptic_heatmaps/3d_t64_s128_score_sourceones_stride8"
    data.stride, data.score_source, data.sigma = 90, "gaussian", 0.75  # the defaults, spelled out
    assert prepare.dataset_name(data) == "panoptic_heatmaps/3d"


def test_readers_locate_a_build_and_name_the_command_when_there_is_none(build_small, tmp_path):
    data = _tiny_data(build_small("3d"))
    assert prepare.locate_dataset(data, tmp_path) == (data.data_dir, "panoptic_heatmaps/3d_t8_s16_stride6")
    data.data_dir = str(tmp_path / "empty")
    data.synthetic = True  # a reader never builds, whatever the config allows
    with pytest.raises(prepare.DatasetNotBuiltError) as e:
        prepare.locate_dataset(data, tmp_path)
    message = str(e.value)
    assert "\n" not in message
    assert (f"python -m data_builders.panoptic_heatmaps --manual_dir=PANOPTIC_ROOT "
            f"--data_dir={tmp_path / 'empty'} --config=3d --frames=8 --size=16 --stride=6") in message
    assert not (tmp_path / "empty").exists() and not (tmp_path / prepare.SYNTHETIC_ROOT).exists()


def test_a_built_dataset_serves_any_number_of_processes(build_small, tmp_path, monkeypatch):
    """A multi-process run reuses a complete build even with data.manual_dir set; only a
    missing one stops it (building is one process's job)."""
    data = _tiny_data(build_small("3d"))
    data.manual_dir = str(tmp_path / "panoptic")  # as a launch script leaves it set
    monkeypatch.setattr(prepare, "_single_process", lambda: False)
    assert prepare.prepare_dataset(data, tmp_path)[1] == "panoptic_heatmaps/3d_t8_s16_stride6"
    data.data_dir = str(tmp_path / "empty")
    with pytest.raises(prepare.DatasetNotBuiltError, match="build it once, in one process"):
        prepare.prepare_dataset(data, tmp_path)


def test_an_incomplete_build_is_not_a_build(build_small, tmp_path):
    """Only the version folder TFDS renames when done counts, not a killed build's."""
    builder = build_small("3d")
    data = _tiny_data(builder)
    name = prepare.dataset_name(data)
    assert prepare.is_built(data.data_dir, name)
    (tmp_path / name / "incomplete.abc_3.0.0").mkdir(parents=True)
    assert not prepare.is_built(tmp_path, name)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_synthetic_seed_or_dealt_kinds_make_their_own_root_and_dataset(tmp_path):
    """Seed 0 with drawn kinds keeps today's folder, name and data (the generator's default
    call); a seed writes other poses into its own folder and names its own dataset, and so
    do dealt kinds; a built dataset is found under that name by a config that only reads
    it (synthetic off, as analysis.shared_data leaves it)."""
    data = defaults.get_config().data
    data.update(mode="3d", frames=8, heatmap_size=16, stride=6, data_dir="", synthetic=True,
                synthetic_sequences=4, synthetic_frames=20, synthetic_people=2)
    names = [f"synth_{i:03d}" for i in range(4)]
    assert prepare.dataset_name(data) == "panoptic_heatmaps/3d_t8_s16_stride6"
    today = prepare._synthetic_root(data, tmp_path)
    assert today == tmp_path / prepare.SYNTHETIC_ROOT
    reference = synthetic.write_synthetic_root(
        tmp_path / "reference", names, num_frames=20, num_people=2,
        splits={"train": names[:3], "validation": names[3:]})
    assert _files(today) == _files(reference)

    data.synthetic_seed = 3
    assert prepare.dataset_name(data) == "panoptic_heatmaps/3d_t8_s16_stride6_seed3"
    seeded = prepare._synthetic_root(data, tmp_path)
    assert seeded == tmp_path / f"{prepare.SYNTHETIC_ROOT}_seed3"
    frame = f"synth_000/{synthetic.POSE_DIR}/body3DScene_00000010.json"
    assert (seeded / frame).read_bytes() != (today / frame).read_bytes()
    data.synthetic_balanced_kinds = True
    assert prepare.dataset_name(data) == "panoptic_heatmaps/3d_t8_s16_stride6_seed3_balanced"
    data.synthetic_seed = 0
    assert prepare.synthetic_tag(data) == "balanced"
    data.update(frames=64, heatmap_size=128, stride=0)  # the builder's own sizes
    assert prepare.dataset_name(data) == "panoptic_heatmaps/3d_balanced"

    data.update(frames=8, heatmap_size=16, stride=6, synthetic_seed=1)
    built = prepare.prepare_dataset(data, tmp_path)
    assert built == (str(tmp_path / "tensorflow_datasets"),
                     "panoptic_heatmaps/3d_t8_s16_stride6_seed1_balanced")
    assert (tmp_path / f"{prepare.SYNTHETIC_ROOT}_seed1_balanced" / "labels.json").is_file()
    data.update(synthetic=False, data_dir=built[0])
    assert prepare.locate_dataset(data, tmp_path / "elsewhere") == built
    data.synthetic_seed = 2
    with pytest.raises(prepare.DatasetNotBuiltError, match="seed2_balanced is not built"):
        prepare.locate_dataset(data, tmp_path)
