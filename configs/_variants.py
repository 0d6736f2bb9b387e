"""Shared helper of the paper-variant configs: mode, vocabulary and compression."""

import ml_collections

from configs import default

COMPRESSION = {"f8": 3, "f16": 4, "f32": 5}


def variant(mode: str, num_codes: int, arg: str | None, *, frames: int = 64,
            temporal_offset: int = 0, adversarial_weight: float = 1.0,
            disc_start: int = 2000) -> ml_collections.ConfigDict:
    """The default config for ``mode`` at compression ``arg`` (f8, f16 or f32; default f8)."""
    arg = (arg or "f8").lower()
    if arg not in COMPRESSION:
        raise ValueError(f"compression {arg!r}: choose one of {', '.join(COMPRESSION)}")
    c = default.get_config()
    c.data.mode = mode
    c.data.frames = frames
    c.quantizer.num_codes = num_codes
    c.model.spatial_downsamples = COMPRESSION[arg]
    c.model.temporal_downsamples = COMPRESSION[arg] - temporal_offset
    c.loss.adversarial_weight = adversarial_weight
    c.loss.disc_start = disc_start
    return c
