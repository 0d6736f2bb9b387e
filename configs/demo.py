"""The built-in demo: a CPU-sized 3d model (16 frames of 32x32, 256 codes) trained on a
synthetic Panoptic root that it writes and builds into the workdir on first use.

    python -m pose_vq.main --config=configs/demo.py --workdir=runs/demo
"""

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
    c.loss.perceptual_planes = 4  # LPIPS on 4 random planes per step, not all 384 (CPU cost)
    c.optimizer.learning_rate = 1e-3
    c.data.data_dir = ""  # <workdir>/tensorflow_datasets
    c.data.synthetic = True
    c.data.stride = 8
    c.train.batch_size = 4
    c.train.num_steps = 300
    c.train.log_every = 25
    c.train.checkpoint_every = 100
    c.train.eval_every = 0  # evaluate once, at the end
    c.train.ema_decay = 0.99
    return validate(c)
