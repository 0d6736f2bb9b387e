"""Ablation of 3d_1024 without the discriminator (the paper's non-adversarial VQ-VAE).
Usage: 3d_vqvae.py[:f16|:f32]."""

from configs._variants import variant
from pose_vq.config import apply_variant


def get_config(arg: str | None = None):
    return apply_variant(variant("3d", 1024, arg), "vqvae")
