"""The ``panoptic_heatmaps`` TFDS dataset (importing this registers the builder)."""

from data_builders.panoptic_heatmaps.panoptic_heatmaps_dataset_builder import (
    QUANTIZATION_LEVELS,
    Builder,
    PanopticHeatmapsConfig,
    check_file_format,
    make_config,
)
from pose_vq.data.modes import quantize

__all__ = ["Builder", "PanopticHeatmapsConfig", "QUANTIZATION_LEVELS", "check_file_format",
           "make_config", "quantize"]
