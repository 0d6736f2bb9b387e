"""m2d_m2d: three exocentric cameras as channels, 1024 codes. Usage: m2d_1024.py[:f16|:f32]."""

from configs._variants import variant
from pose_vq.config import validate


def get_config(arg: str | None = None):
    return validate(variant("m2d", 1024, arg))
