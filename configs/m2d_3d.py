"""m2d_3d: multi-view 2D in, 3D projections out (lifting through tokens), 1024 codes; time
is halved one level fewer than space, as the reference. Usage: m2d_3d.py[:f16|:f32]."""

from pose_vq.config import validate
from pose_vq.defaults import paper_config


def get_config(arg: str | None = None):
    return validate(paper_config("m2d_3d", 1024, arg, temporal_offset=1, adversarial_weight=0.5,
                   disc_start=24000))
