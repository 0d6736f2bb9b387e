"""Preparing a config's dataset: its TFDS name, a synthetic Panoptic root when asked for,
and the build.

Commands that create data (training, lifting, the analyses, ``--mode=build_data`` and
``python -m data_builders.panoptic_heatmaps``) call ``prepare_dataset``; commands that only
read (evaluation, token export, pictures, the precision benchmark) call ``locate_dataset``,
which never builds and names the build command when the dataset is missing. The loader
(``pose_vq.data.pipeline``) only reads, and names ``rebuild_command`` when a shard is
damaged. A data_dir may be a bucket (``gs://...``, pose_vq.paths); the Panoptic root a
build reads from is a local folder.
"""

from __future__ import annotations

import contextlib
import pathlib
import shlex
from typing import Any

import jax
import ml_collections
import tensorflow_datasets as tfds
from etils import epath

from data_builders.panoptic_heatmaps import (
    Builder,
    PanopticHeatmapsConfig,
    check_file_format,
    make_config,
)
from pose_vq import errors, paths
from pose_vq.data import panoptic, synthetic

SYNTHETIC_ROOT = "synthetic_panoptic"  # under the workdir, for data.synthetic


class DatasetNotBuiltError(errors.ActionableError, FileNotFoundError):
    """A reader found no complete build of its dataset; the message says how to build it."""


def build_overrides(data: ml_collections.ConfigDict) -> dict[str, Any]:
    """The builder-config fields the data section sets away from the builder's defaults
    (defaults are left out, so the dataset's name stays the short one)."""
    defaults = PanopticHeatmapsConfig(name="defaults")
    overrides = {"stride": data.stride or defaults.stride, "score_source": data.score_source,
                 "sigma": data.sigma, "kind": data.kind, "joint_req": data.joint_req}
    return {k: v for k, v in overrides.items() if v != getattr(defaults, k)}


def synthetic_tag(data: ml_collections.ConfigDict) -> str:
    """What a synthetic root was written with beyond its size: ``seed<k>`` for a non-zero
    ``synthetic_seed``, ``balanced`` for ``synthetic_balanced_kinds``, joined by ``_``; ""
    for the seed-0 root of drawn kinds (so existing names stay). It ends the root's folder
    and the dataset's name, so roots of two seeds never share a folder or a build. It
    follows the knobs alone, not ``data.synthetic``: a config that reads the built dataset
    (``analysis.shared_data``) must name it as the one that built it."""
    parts = [f"seed{data.synthetic_seed}"] if data.synthetic_seed else []
    return "_".join(parts + ["balanced"] * bool(data.synthetic_balanced_kinds))


def dataset_name(data: ml_collections.ConfigDict) -> str:
    """The TFDS name (``panoptic_heatmaps/<config>``) a config's ``data`` section reads."""
    config = make_config(data.mode, data.frames, data.heatmap_size, synthetic_tag(data),
                         **build_overrides(data))
    return f"{data.tfds_name}/{config.name}"


def data_dir(data: ml_collections.ConfigDict, workdir: paths.PathLike) -> epath.Path:
    """``data.data_dir``, or ``<workdir>/tensorflow_datasets`` when it is empty."""
    if data.data_dir:
        return paths.as_path(data.data_dir)
    return paths.as_path(workdir) / "tensorflow_datasets"


def is_built(data_dir: paths.PathLike, name: str) -> bool:
    """Whether a complete build of ``name`` at the builder's version is in ``data_dir``
    (TFDS writes dataset_info.json into the version folder it renames when done)."""
    return (paths.as_path(data_dir) / name / str(Builder.VERSION) / "dataset_info.json").is_file()


def build_command(data: ml_collections.ConfigDict, data_dir: paths.PathLike) -> str:
    """The shell command that builds a config's dataset into ``data_dir``."""
    args = {"manual_dir": "PANOPTIC_ROOT", "data_dir": str(data_dir), "config": data.mode,
            "frames": data.frames, "size": data.heatmap_size, **build_overrides(data)}
    return "python -m data_builders.panoptic_heatmaps " + " ".join(
        f"--{k}={shlex.quote(str(v))}" for k, v in args.items())


def rebuild_command(built: dict[str, Any], version_dir: paths.PathLike) -> str:
    """``build_command`` of the dataset in ``version_dir`` (``<data_dir>/<name>/<version>``)
    from the builder config its metadata stores (``built``; a field it lacks, from an
    older build, has the builder's default): what a damaged dataset is rebuilt with."""
    defaults = PanopticHeatmapsConfig(name="defaults")
    data = ml_collections.ConfigDict({k: built.get(k, getattr(defaults, k)) for k in (
        "mode", "frames", "heatmap_size", "stride", "score_source", "sigma", "kind",
        "joint_req")})
    return build_command(data, paths.as_path(version_dir).parents[2])


def locate_dataset(data: ml_collections.ConfigDict, workdir: paths.PathLike
                   ) -> tuple[str, str]:
    """(data_dir, name) of the config's built dataset; DatasetNotBuiltError, in one line
    naming the build command, when it is not built. Never builds."""
    root, name = data_dir(data, workdir), dataset_name(data)
    if not is_built(root, name):
        raise DatasetNotBuiltError(
            f"dataset {name} is not built in {root}: build it with `{build_command(data, root)}` "
            "(or train with --config.data.manual_dir=PANOPTIC_ROOT or "
            "--config.data.synthetic=True, which build it first)")
    return str(root), name


def _local_folder(path: paths.PathLike, what: str) -> pathlib.Path:
    """``path`` as a local folder: Panoptic roots are read and written with local files."""
    if paths.is_remote(path):
        raise errors.ConfigError(
            f"{what} {path} is in a bucket, but a Panoptic root is read from a local folder: "
            "copy it to local disk first (gcloud storage rsync -r ...), or give the build a "
            "local workdir (--mode=build_data --workdir=DIR)")
    return pathlib.Path(path).expanduser()


def _synthetic_root(data: ml_collections.ConfigDict, workdir: epath.Path) -> pathlib.Path:
    """The workdir's synthetic Panoptic root, written once (its labels file comes last);
    ``synthetic_panoptic[_<synthetic_tag>]``."""
    tag = synthetic_tag(data)
    root = (_local_folder(workdir, "the workdir of a data.synthetic build")
            / (f"{SYNTHETIC_ROOT}_{tag}" if tag else SYNTHETIC_ROOT))
    if not (root / panoptic.LABELS_FILE).exists():
        n = data.synthetic_sequences
        names = [f"synth_{i:03d}" for i in range(n)]
        num_val = max(1, n // 4)
        synthetic.write_synthetic_root(
            root, names, num_frames=data.synthetic_frames, num_people=data.synthetic_people,
            seed=data.synthetic_seed, balanced=data.synthetic_balanced_kinds,
            splits={"train": names[:-num_val], "validation": names[-num_val:]})
    return root


def _single_process() -> bool:
    """True unless this is one process of several (jax.distributed was initialised with
    more than one); asking starts no backend otherwise."""
    return not jax.distributed.is_initialized() or jax.process_count() == 1


def prepare_dataset(data: ml_collections.ConfigDict, workdir: paths.PathLike
                    ) -> tuple[str, str]:
    """(data_dir, name) of the config's dataset, built first when it is missing and
    ``data.manual_dir`` or ``data.synthetic`` says from what.

    A complete build is reused as is, in any number of processes. With ``data.synthetic``
    and no manual_dir, a synthetic Panoptic root is written once under
    ``<workdir>/synthetic_panoptic``. Building is one process's job: a multi-process run
    whose dataset is missing stops, naming the command that builds it once.
    """
    workdir = paths.as_path(workdir)
    root, name = data_dir(data, workdir), dataset_name(data)
    if is_built(root, name):
        return str(root), name
    if not (data.manual_dir or data.synthetic):
        return locate_dataset(data, workdir)  # raises, naming the build command
    if not _single_process():
        raise DatasetNotBuiltError(
            f"dataset {name} is not built in {root}: build it once, in one process, before a "
            f"multi-process run (`python -m pose_vq.main --mode=build_data` with this config, "
            f"or `{build_command(data, root)}`)")
    manual_dir = (_local_folder(data.manual_dir, "data.manual_dir") if data.manual_dir
                  else _synthetic_root(data, workdir))
    build(manual_dir, root, data.mode, frames=data.frames, heatmap_size=data.heatmap_size,
          tag=synthetic_tag(data), **build_overrides(data))
    return str(root), name


def build(manual_dir: str | pathlib.Path, data_dir: paths.PathLike, mode: str, *,
          frames: int | None = None, heatmap_size: int | None = None,
          file_format: str = "array_record", num_shards: int | None = None, tag: str = "",
          **overrides: Any) -> tfds.core.DatasetBuilder:
    """Build (or reuse, when already complete) one config of the TFDS builder; returns it.
    ``tag`` ends the config's name (``make_config``; ``synthetic_tag``).

    ``num_shards`` fixes the shard count per split (default: TFDS sizes shards itself).
    Afterwards no ``incomplete.*`` folder of this config's version is left (a killed
    build's TFDS temporary folder is never renamed nor removed by TFDS itself).
    """
    check_file_format(file_format)
    root = pathlib.Path(manual_dir)
    if not root.is_dir() or not any(root.iterdir()):  # TFDS would assert, over many lines
        raise panoptic.PanopticDataError(f"{root}: Panoptic root folder not found or empty")
    config = make_config(mode, frames, heatmap_size, tag, **overrides)
    # A default-sized config is one of the class's own, which TFDS wants as that object.
    config = next((c for c in Builder.BUILDER_CONFIGS if vars(c) == vars(config)), config)
    builder = Builder(config=config, data_dir=str(data_dir), file_format=file_format)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir),
                                                     num_shards=num_shards))
    version_dir = paths.as_path(builder.data_dir)
    for stale in version_dir.parent.glob(f"incomplete.*_{version_dir.name}"):
        with contextlib.suppress(OSError):
            stale.rmtree()
    return builder
