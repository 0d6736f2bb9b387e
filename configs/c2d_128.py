"""c2d_2d: one egocentric camera, 17 limb channels in, one combined channel out, 128 codes,
48 frames. Usage: c2d_128.py[:f16|:f32]. The reference's 48-frame F8 model strides time by
4 (``model.reduce_temporal``); here F8 uses it by default as the reference config does."""

from pose_vq.config import validate
from pose_vq.defaults import paper_config


def get_config(arg: str | None = None):
    c = paper_config("c2d", 128, arg, frames=48, adversarial_weight=0.5, disc_start=24000)
    c.model.reduce_temporal = c.model.spatial_downsamples == 3
    c.model.temporal_downsamples = min(c.model.temporal_downsamples, 4)  # 48 = 3 * 16
    return validate(c)
