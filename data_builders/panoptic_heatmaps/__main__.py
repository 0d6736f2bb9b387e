"""Build the panoptic_heatmaps dataset: python -m data_builders.panoptic_heatmaps --help."""

from __future__ import annotations

import argparse
import pathlib
import typing

import tensorflow_datasets as tfds

from data_builders.panoptic_heatmaps import Builder, make_config
from pose_vq.data import modes


def build(manual_dir: str | pathlib.Path, data_dir: str | pathlib.Path, mode: str, *,
          frames: int | None = None, heatmap_size: int | None = None,
          file_format: str = "array_record", num_shards: int | None = None,
          **overrides) -> tfds.core.DatasetBuilder:
    """Build (or reuse, when already complete) one config; returns the builder.

    ``num_shards`` fixes the shard count per split (default: TFDS sizes shards itself).
    """
    builder = Builder(config=make_config(mode, frames, heatmap_size, **overrides),
                      data_dir=str(data_dir), file_format=file_format)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir),
                                                     num_shards=num_shards))
    return builder


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
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
    p.add_argument("--kind", choices=["limb", "keypoint"],
                   help="limb (default) or keypoint heatmaps (keypoint: c2d and m2d)")
    args = p.parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("stride", "score_source", "sigma", "kind")
                 if getattr(args, k) is not None}
    builder = build(args.manual_dir, args.data_dir, args.config, frames=args.frames,
                    heatmap_size=args.size, file_format=args.file_format,
                    num_shards=args.num_shards, **overrides)
    print(f"built {builder.info.full_name} in {builder.data_dir}")
    for split, info in builder.info.splits.items():
        print(f"  {split}: {info.num_examples} examples, {info.num_shards} shard(s)")
    print(f"  read summary: {builder.info.metadata.get('read_summary')}")


if __name__ == "__main__":
    main()
