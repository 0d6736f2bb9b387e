"""Build the panoptic_heatmaps dataset: python -m data_builders.panoptic_heatmaps --help.

A build that fails prints one line, the file and the problem, and exits with status 1
(``--verbose`` shows the whole traceback). A killed build leaves TFDS's ``incomplete.*``
folder behind; the next successful build of the same config removes it.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import typing

import tensorflow_datasets as tfds

from data_builders.panoptic_heatmaps import Builder, check_file_format, make_config
from pose_vq.data import modes, panoptic


def build(manual_dir: str | pathlib.Path, data_dir: str | pathlib.Path, mode: str, *,
          frames: int | None = None, heatmap_size: int | None = None,
          file_format: str = "array_record", num_shards: int | None = None,
          **overrides) -> tfds.core.DatasetBuilder:
    """Build (or reuse, when already complete) one config; returns the builder.

    ``num_shards`` fixes the shard count per split (default: TFDS sizes shards itself).
    Afterwards no ``incomplete.*`` folder of this config's version is left (a killed
    build's TFDS temporary folder is never renamed nor removed by TFDS itself).
    """
    check_file_format(file_format)
    root = pathlib.Path(manual_dir)
    if not root.is_dir() or not any(root.iterdir()):  # TFDS would assert, over many lines
        raise panoptic.PanopticDataError(f"{root}: Panoptic root folder not found or empty")
    config = make_config(mode, frames, heatmap_size, **overrides)
    # A default-sized config is one of the class's own, which TFDS wants as that object.
    config = next((c for c in Builder.BUILDER_CONFIGS if vars(c) == vars(config)), config)
    builder = Builder(config=config, data_dir=str(data_dir), file_format=file_format)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir),
                                                     num_shards=num_shards))
    version_dir = pathlib.Path(builder.data_dir)
    for stale in version_dir.parent.glob(f"incomplete.*_{version_dir.name}"):
        shutil.rmtree(stale, ignore_errors=True)
    return builder


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manual_dir", required=True, help="Panoptic (or synthetic) root folder")
    p.add_argument("--data_dir", default=str(pathlib.Path.home() / "tensorflow_datasets"))
    p.add_argument("--config", default="m2d", choices=sorted(modes.MODES), help="mode")
    p.add_argument("--frames", type=int, help="clip length (default 48 for c2d, else 64)")
    p.add_argument("--size", type=int, help="heatmap side (default 128)")
    p.add_argument("--stride", type=int, help="frames between window starts (default 90)")
    p.add_argument("--file_format", default="array_record", choices=["array_record", "tfrecord"])
    p.add_argument("--num_shards", type=int, help="shards per split (default: by size)")
    p.add_argument("--score_source", choices=typing.get_args(modes.ScoreSource),
                   help="joint scores (default gaussian, the reference's)")
    p.add_argument("--sigma", type=float, help="Gaussian width in heatmap pixels (default 0.75)")
    p.add_argument("--joint_req", type=float,
                   help="a camera sees a body when more than this fraction of its joints is "
                        "present and in the image (default 0.9)")
    p.add_argument("--kind", choices=["limb", "keypoint"],
                   help="limb (default) or keypoint heatmaps (keypoint: c2d and m2d)")
    p.add_argument("--on_error", choices=["skip", "raise"],
                   help="a malformed or implausible frame file or body: skip and count it "
                        "(default) or stop the build naming the file")
    p.add_argument("--verbose", action="store_true", help="on failure, show the traceback")
    args = p.parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("stride", "score_source", "sigma", "kind",
                                               "joint_req", "on_error")
                 if getattr(args, k) is not None}
    try:
        builder = build(args.manual_dir, args.data_dir, args.config, frames=args.frames,
                        heatmap_size=args.size, file_format=args.file_format,
                        num_shards=args.num_shards, **overrides)
    except (panoptic.PanopticDataError, OSError, ValueError) as e:
        if args.verbose:
            raise
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        sys.exit(1)
    print(f"built {builder.info.full_name} in {builder.data_dir}")
    for split, info in builder.info.splits.items():
        print(f"  {split}: {info.num_examples} examples, {info.num_shards} shard(s)")
    print(f"  read summary: {builder.info.metadata.get('read_summary')}")


if __name__ == "__main__":
    main()
