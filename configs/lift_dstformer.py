"""2D-to-3D lifting (python -m pose_vq.lift): MotionBERT's DSTformer on a panoptic_heatmaps
dataset's skeletons, with MotionBERT's corruption, loss and optimiser.

    python -m pose_vq.lift --config=configs/lift_dstformer.py --workdir=runs/lift

The argument is a comma-separated list of:
- ``lite``: MotionBERT-Lite (width 256, MLP ratio 4) instead of the released size;
- ``demo``: the demo's dataset (configs/demo.py, built under the workdir when missing)
  and a CPU-sized DSTformer (width 64, depth 2);
- ``mlp``: the per-frame MLP baseline (Martinez et al.) in place of DSTformer, trained
  the same way.
"""

import ml_collections

from configs import default, demo
from pose_vq import fit


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = {a for a in (arg or "").split(",") if a}
    unknown = options - {"lite", "demo", "mlp"}
    if unknown:
        raise ValueError(f"unknown lift_dstformer options {sorted(unknown)}: use lite, demo, mlp")
    c = ml_collections.ConfigDict()
    # The dataset whose skeletons are lifted: the same knobs as a tokenizer config's
    # data section, so both read (or build) the same panoptic_heatmaps dataset.
    c.data = (demo if "demo" in options else default).get_config().data

    c.model = m = ml_collections.ConfigDict()
    m.kind = "mlp" if "mlp" in options else "dstformer"
    m.dim, m.depth, m.num_heads, m.mlp_ratio, m.rep_dim = 512, 5, 8, 2.0, 512  # released
    if "lite" in options:
        m.dim, m.mlp_ratio = 256, 4.0
    if "demo" in options:
        m.dim, m.depth, m.num_heads, m.mlp_ratio, m.rep_dim = 64, 2, 4, 2.0, 64
    m.width, m.blocks = 1024, 2  # the MLP baseline's (Martinez et al.)
    m.dropout = 0.5 if m.kind == "mlp" else 0.0

    # MotionBERT's pre-training corruption of 2D (its Augmenter2D; screen units). The
    # noise statistics are the means over joints of its fitted per-joint ones.
    c.corruption = n = ml_collections.ConfigDict()
    n.enabled = True
    n.keyframe_every = 9  # noise drawn at one frame in 9 (27 in MotionBERT's 243), interpolated
    n.gaussian_weight = 0.88  # chance a joint's error is Gaussian (else uniform)
    n.noise_std = 0.006
    n.uniform_range = 0.06
    n.jitter_std = 0.002  # independent per frame
    n.conf_a, n.conf_b = 0.028, 1.1  # confidence a / (d + a) + b d ...
    n.conf_shift_mean, n.conf_shift_std = -0.0046, 0.143  # ... + N(m, s), clipped to [0, 1]
    n.mask_ratio = 0.05  # joints dropped
    n.mask_frames = 0.1  # whole frames dropped
    c.augment = ml_collections.ConfigDict({"flip": True})

    c.loss = ml_collections.ConfigDict({"scale_weight": 0.5, "velocity_weight": 20.0})

    c.train = t = fit.default_config()
    t.split = "train"
    t.batch_size, t.learning_rate, t.num_steps = 32, 2e-4, 20000  # MotionBERT's pose3d lr
    if "demo" in options:
        t.learning_rate, t.num_steps, t.log_every, t.checkpoint_every = 1e-3, 800, 100, 400
    c.eval = ml_collections.ConfigDict({"split": "validation"})
    return c
