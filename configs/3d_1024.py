"""3d_3d: 3D limb volumes as three max-projections, 1024 codes. Usage: 3d_1024.py[:f16|:f32]."""

from pose_vq.config import validate
from pose_vq.defaults import paper_config


def get_config(arg: str | None = None):
    return validate(paper_config("3d", 1024, arg))
