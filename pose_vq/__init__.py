"""pose_vq: a JAX/Flax VQ-GAN motion tokenizer for spatio-temporal heatmaps."""

__version__ = "0.1.0"
