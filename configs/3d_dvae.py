"""The paper's dVAE baseline at the 3d_1024 shape: Gumbel-softmax over 1024 codes, no
discriminator. Usage: 3d_dvae.py[:f16|:f32]."""

from pose_vq.config import apply_variant
from pose_vq.defaults import paper_config


def get_config(arg: str | None = None):
    return apply_variant(paper_config("3d", 1024, arg), "dvae")
