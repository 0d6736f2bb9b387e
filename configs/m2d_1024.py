"""m2d_m2d: three exocentric cameras as channels, 1024 codes. Usage: m2d_1024.py[:f16|:f32]."""

from pose_vq.config import validate
from pose_vq.defaults import paper_config


def get_config(arg: str | None = None):
    return validate(paper_config("m2d", 1024, arg))
