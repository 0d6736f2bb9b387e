"""``conv``: one 3x3x3 convolution (width to width) at each level of the config's encoder,
as each ``model.conv_impl`` computes it, forward and forward + backward, with the largest
difference from the native result; one process, with the CPU paths' XLA flag set."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pose_vq import config as config_lib
from pose_vq import runtime
from pose_vq.benchmarks import harness
from pose_vq.models import layers


def run(config: ml_collections.ConfigDict, batch: int, repeats: int) -> list[dict]:
    """Seconds per call of a level's 3x3x3 conv under every conv_impl (same parameters)."""
    spec = config_lib.generator_spec(config)
    frames, side, rows = spec.frames, spec.image_size, []
    for n, level in enumerate(spec.encoder_levels()):
        width = level["width"]
        x = jnp.asarray(np.random.default_rng(n).random((batch, frames, side, side, width),
                                                        np.float32))
        gflop = 2 * batch * frames * side * side * 27 * width * width / 1e9
        native = None
        for impl in runtime.LAYER_CONV_IMPLS:
            conv = layers.conv3d(width, impl=impl)
            params = conv.init(jax.random.key(0), x)  # the same for every impl
            forward = jax.jit(conv.apply)
            grads = jax.jit(jax.grad(lambda p, x, conv=conv: jnp.sum(conv.apply(p, x) ** 2),
                                     argnums=(0, 1)))
            y = forward(params, x)
            native = y if native is None else native
            rows.append({"level": n, "shape": [batch, frames, side, side, width], "impl": impl,
                         "forward_s": harness.time_calls(
                             lambda: forward(params, x), repeats),  # noqa: B023 (timed in this iteration)
                         "forward_backward_s": harness.time_calls(
                             lambda: grads(params, x), repeats),  # noqa: B023 (timed in this iteration)
                         "gflop": gflop, "max_abs_diff": float(jnp.max(jnp.abs(y - native)))})
        if level["down"]:
            kernel, stride = level["down"]
            frames, side = (frames + 1 - kernel) // stride + 1, side // 2
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"# conv benchmark on {harness.machine()}: one 3x3x3 conv per encoder level")
    print(f"{'level':>5} {'shape':<22} {'impl':<9} {'fwd s':>8} {'fwd+bwd s':>10} "
          f"{'GFLOP':>7} {'fwd GF/s':>9} {'vs folded':>10} {'max |diff|':>10}")
    folded = {r["level"]: r for r in rows if r["impl"] == "folded"}
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        ref = folded[r["level"]]
        print(f"{r['level']:5d} {shape:<22} {r['impl']:<9} {r['forward_s']:8.3f} "
              f"{r['forward_backward_s']:10.3f} {r['gflop']:7.1f} "
              f"{r['gflop'] / r['forward_s']:9.0f} "
              f"{ref['forward_backward_s'] / r['forward_backward_s']:9.2f}x "
              f"{r['max_abs_diff']:10.1e}")
    print("GFLOP: a direct 3x3x3 convolution's multiply-adds x 2 (Winograd does fewer, so its "
          "GF/s is an equivalent rate); vs folded: forward+backward speed relative to the folded "
          "conv; max |diff|: largest difference from the native output")
