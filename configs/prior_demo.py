"""Generation at demo scale (python -m pose_vq.downstream.prior): a CPU-sized masked-token
prior over the demo tokenizer's export, its samples scored by a small motion classifier.

    python -m pose_vq.main --config=configs/demo.py:compact --workdir=runs/demo \\
        --config.data.synthetic_sequences=16 --config.data.synthetic_balanced_kinds=True
    python -m pose_vq.tokenize --workdir=runs/demo --split=train,validation
    python -m pose_vq.downstream.prior --config=configs/prior_demo.py --workdir=runs/prior \\
        --config.tokens=runs/demo/tokens/motion_tokens/<config>/1.0.0

Every knob and its default: ``pose_vq.downstream.prior.default_config``.
"""

import ml_collections

from pose_vq.downstream import prior


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = prior.default_config()
    c.cpu_devices = 2  # both cores of a small machine, data-parallel
    c.model.update(width=64, depth=3, num_heads=4, mlp_ratio=4.0)
    c.train.update(batch_size=16, num_steps=1000, log_every=25, checkpoint_every=500)
    return c
