"""Ablation of 3d_1024 without the discriminator (the paper's non-adversarial VQ-VAE).
Usage: 3d_vqvae.py[:f16|:f32]."""

from pose_vq.config import apply_variant
from pose_vq.defaults import paper_config


def get_config(arg: str | None = None):
    return apply_variant(paper_config("3d", 1024, arg), "vqvae")
