"""2D-to-3D lifting (python -m pose_vq.downstream.lift): MotionBERT's DSTformer on a
panoptic_heatmaps dataset's skeletons, with MotionBERT's corruption, loss and optimiser.

    python -m pose_vq.downstream.lift --config=configs/lift_dstformer.py --workdir=runs/lift

The argument is a comma-separated list of:
- ``lite``: MotionBERT-Lite (width 256, MLP ratio 4) instead of the released size;
- ``demo``: the demo's dataset (demo.py beside this file, built under the workdir when
  missing) and a CPU-sized DSTformer (width 64, depth 2);
- ``mlp``: the per-frame MLP baseline (Martinez et al.) in place of DSTformer, trained
  the same way.
Every knob and its default: ``pose_vq.downstream.lift.default_config``.
"""

import pathlib

import ml_collections

from pose_vq import config as config_lib
from pose_vq.downstream import lift


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = lift.default_config(arg or "")
    if "demo" in (arg or "").split(","):  # the dataset the demo tokenizer trains on
        c.data = config_lib.load_file(pathlib.Path(__file__).with_name("demo.py")).data
    return c
