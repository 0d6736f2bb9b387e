"""The CPU speed targets' models: the reference's full training step (VQ-GAN, LPIPS on
every plane, discriminator, adaptive weight) on 3-channel 3d clips with 1024 codes, at two
sizes, on pose_vq's CPU path. Usage: cpu_targets.py:small | cpu_targets.py:medium.

    small:  16 frames of 32x32, channels 32-32-64-64-128, latent 128
    medium: 32 frames of 64x64, channels 64-64-128-128-256 (the paper's widths)

Both keep the paper's F8 topology (3 down-samplings in space and time, attention at the
16x16 level). ``python -m pose_vq.benchmark step --config=configs/cpu_targets.py:small
--batch_sizes=1,2`` times them; BENCHMARKS.md has the reference's figures beside ours.
"""

from pose_vq.config import validate
from pose_vq.defaults import paper_config

SIZES = {"small": (16, 32, (32, 32, 64, 64, 128), 128),
         "medium": (32, 64, (64, 64, 128, 128, 256), 256)}


def get_config(arg: str | None = None):
    if arg not in SIZES:
        raise ValueError(f"cpu_targets.py:{arg}: choose one of {', '.join(SIZES)}")
    frames, size, channels, latent = SIZES[arg]
    c = paper_config("3d", 1024, "f8,paper", frames=frames)  # the paper's quantizer
    c.data.heatmap_size = size
    c.model.channels = channels
    c.model.latent_channels = latent
    c.model.conv_impl = "winograd"
    c.loss.disc_start = 0  # the adversarial terms on, as in the step being compared
    return validate(c)
