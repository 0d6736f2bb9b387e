"""CPU-sized 3d model for the built-in demo and tests: 16 frames of 32x32, 256 codes."""

from configs import default
from pose_vq.config import validate


def get_config(arg: str | None = None):
    c = default.get_config()
    c.data.frames = 16
    c.data.heatmap_size = 32
    c.model.channels = (16, 32, 64)
    c.model.latent_channels = 32
    c.model.encoder_blocks = 1
    c.model.decoder_blocks = 1
    c.model.attention_resolutions = (8,)
    c.model.spatial_downsamples = 2
    c.model.temporal_downsamples = 2
    c.model.norm_groups = 8
    c.model.conv_impl = "folded"  # CPU-sized model: XLA's native 3D conv is slow on CPU
    c.quantizer.num_codes = 256
    c.quantizer.dead_code_threshold = 1.0
    c.discriminator.filters = 16
    c.discriminator.norm_groups = 8
    c.loss.disc_start = 200
    c.optimizer.learning_rate = 3e-4
    return validate(c)
