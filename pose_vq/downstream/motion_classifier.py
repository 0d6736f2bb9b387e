"""The judge of generated motion: a small 3D CNN trained once on ground-truth heatmap
clips to tell their ``label``, whose pooled features give a Frechet distance and a
diversity between sets of clips (as ACTOR and T2M-GPT score motion with a recognition
model's features).

The CNN: the clip averaged over ``input_pool`` x ``input_pool`` pixels, then per level a
3x3x3 convolution, GroupNorm and GELU, with 2x2x2 average pooling between levels; the
last level's map flattened (where things are matters: a raised arm and a squat differ in
place more than in texture) and mapped to ``features`` values through a GELU, the
clip's embedding, and a linear map of it to the logits. Its convolutions are the
tokenizer's ``Conv3D`` (CPU paths included, ``pose_vq.runtime.conv_impl_for``).
One-off runs on the demo's held-out clips (top-1 on ground truth / on the clips decoded
from their tokens): global average pooling in place of the flattened map, 0.49 / 0.15
(300 steps); the full 32 px input, 0.71 / 0.32 at twice the step time; pooled to 16 px,
0.63 / 0.45 (600 steps, class-balanced; README's run of the same: 0.73 / 0.44, so one
training draw moves these by several points).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pose_vq.models.layers import conv3d


class MotionClassifier(nn.Module):
    num_classes: int
    widths: tuple[int, ...] = (16, 32, 64)
    features: int = 64
    input_pool: int = 2
    conv_impl: str = "native"

    @nn.compact
    def __call__(self, clips: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Clips (B, T, H, W, C) in [0, 1] -> (logits (B, classes), features (B, features))."""
        p = self.input_pool
        x = nn.avg_pool(clips, (1, p, p), strides=(1, p, p)) if p > 1 else clips
        for i, width in enumerate(self.widths):
            if i:
                x = nn.avg_pool(x, (2, 2, 2), strides=(2, 2, 2))
            x = conv3d(width, impl=self.conv_impl, name=f"conv_{i}")(x)
            x = nn.gelu(nn.GroupNorm(num_groups=min(8, width), name=f"norm_{i}")(x))
        features = nn.gelu(nn.Dense(self.features, name="embed")(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes, name="logits")(features), features


def balanced_cross_entropy(logits: jax.Array, labels: jax.Array, class_weights: jax.Array
                           ) -> jax.Array:
    """Cross-entropy with each example weighted by its class's weight (e.g. 1 / its
    count in training), normalised by the batch's total weight: the demo's training
    split holds 219 squats and 15 waves."""
    weights = class_weights[labels]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return (ce * weights).sum() / jnp.maximum(weights.sum(), 1e-12)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets a (N, D) and b (M, D):
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), in float64. The trace of the
    square root is the sum of the square roots of the eigenvalues of S_a^(1/2) S_b
    S_a^(1/2) (symmetric, with the same eigenvalues as S_a S_b), so no general matrix
    square root is taken."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two feature sets (N >= 2, D) of one width; got {a.shape}, {b.shape}")
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    vals, vecs = np.linalg.eigh(cov_a)
    root_a = (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(middle, 0.0, None)).sum()
    mean = np.sum((a.mean(0) - b.mean(0)) ** 2)
    # Never below 0 but by rounding (a set against itself: -1e-5 at the demo's 64 features).
    return max(0.0, float(mean + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root))


def diversity(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean Euclidean distance between two clips of one label, over every pair within
    each label with at least two clips, averaged over those labels."""
    features = np.asarray(features, np.float64)
    means = []
    for label in np.unique(labels):
        f = features[labels == label]
        if len(f) < 2:
            continue
        d = np.sqrt(np.maximum(((f[:, None] - f[None]) ** 2).sum(-1), 0.0))
        means.append(d[np.triu_indices(len(f), 1)].mean())
    if not means:
        raise ValueError("diversity needs a label with at least two clips")
    return float(np.mean(means))
