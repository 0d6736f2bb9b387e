"""``precision``: a trained run's tokenizer in bfloat16 against float32, on clips of one
split: how many tokens agree, how far the bf16 decoder's clips are from the float32
decoder's on the same tokens, and both round trips' PSNR and L1 against the targets."""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np

from pose_vq import metrics
from pose_vq.benchmarks import harness


def run(workdir: str | pathlib.Path, split: str = "validation", max_clips: int = 64,
        batch_size: int = 8) -> dict[str, Any]:
    """bf16-vs-float32 figures of the run's EMA tokenizer on the first ``max_clips``
    clips of ``split`` (0: all)."""
    from pose_vq.data import pipeline, prepare  # noqa: PLC0415 (TFDS, grain: 1.2-1.4 s, here alone)
    from pose_vq.tokenize import Tokenizer  # noqa: PLC0415 (TFDS, orbax: here alone)

    f32 = Tokenizer.from_workdir(workdir, dtype="float32")
    bf16 = Tokenizer.from_workdir(workdir, dtype="bfloat16")
    data_dir, name = prepare.locate_dataset(f32.config.data, workdir)
    builder = pipeline.open_dataset(data_dir, name)
    source = pipeline.data_source(builder, split)
    to_model = pipeline.ToModelInputs(pipeline.dataset_mode(builder))
    n = min(len(source), max_clips or len(source))
    score = jax.jit(metrics.clip_metrics)
    sums = {"agree": 0.0, "tokens": 0.0, "decode_abs": 0.0, "values": 0.0}
    per_clip: dict[str, list[np.ndarray]] = {}
    decode_max = 0.0
    for start in range(0, n, batch_size):
        examples = [to_model.map(source[i]) for i in range(start, min(start + batch_size, n))]
        x = np.stack([e["inputs"] for e in examples])
        target = np.stack([e["targets"] for e in examples])
        tokens = {"f32": f32.encode(x), "bf16": bf16.encode(x)}
        sums["agree"] += float(np.sum(tokens["f32"] == tokens["bf16"]))
        sums["tokens"] += tokens["f32"].size
        recon = {"f32": f32.decode(tokens["f32"]), "bf16": bf16.decode(tokens["bf16"])}
        same_tokens = bf16.decode(tokens["f32"])  # the decoder's own bf16 error
        gap = np.abs(same_tokens - recon["f32"])
        decode_max = max(decode_max, float(gap.max()))
        sums["decode_abs"] += float(gap.sum())
        sums["values"] += gap.size
        for dtype, clips in recon.items():
            for k, v in score(target, clips).items():
                if k in ("psnr", "ssim", "l1"):
                    per_clip.setdefault(f"{k}_{dtype}", []).append(np.asarray(v))
    means = {k: float(np.mean(np.concatenate(v))) for k, v in per_clip.items()}
    return {"workdir": str(workdir), "split": split, "clips": n, "step": f32.step,
            "token_agreement": sums["agree"] / sums["tokens"],
            "decode_max_abs_diff": decode_max,
            "decode_mean_abs_diff": sums["decode_abs"] / sums["values"], **means}


def print_table(result: dict[str, Any]) -> None:
    print(f"# precision on {harness.machine()}: {result['workdir']} step {result['step']}, "
          f"{result['clips']} {result['split']} clips, EMA weights")
    print(f"token agreement bf16 vs float32: {100 * result['token_agreement']:.2f}%")
    print(f"bf16 decoder on the float32 tokens: max |diff| {result['decode_max_abs_diff']:.4f}, "
          f"mean {result['decode_mean_abs_diff']:.5f} (data levels are 1/255 = 0.0039)")
    print(f"{'':<8} {'psnr':>8} {'ssim':>7} {'l1':>8}")
    for dtype in ("f32", "bf16"):
        print(f"{dtype:<8} {result[f'psnr_{dtype}']:8.3f} {result[f'ssim_{dtype}']:7.4f} "
              f"{result[f'l1_{dtype}']:8.5f}")
