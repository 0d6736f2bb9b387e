"""TFDS builder: CMU Panoptic skeletons -> heatmap clips with the windows they came from.

Build (array_record, no TensorFlow needed; a progress bar per split):

    python -m data_builders.panoptic_heatmaps --manual_dir=PANOPTIC_ROOT --config=3d \
        --data_dir=~/tensorflow_datasets

Read back from any project, given only the data dir:

    tfds.data_source("panoptic_heatmaps/3d", data_dir=...)      # array_record
    tfds.load("panoptic_heatmaps/3d", data_dir=...)             # tfrecord build, TensorFlow

Heatmaps are stored as uint8 (value * 255, rounded; max abs error 1/510 ~ 0.002) in
zlib-compressed tensors, beside the skeleton window they were drawn from: raw joints and
confidences, and ``present`` (T, 19), the joints the renderer used (absent ones were not
drawn and took no part in the fit).

Each example also carries its ``label``, a ClassLabel over ``LABELS``: the body's motion
kind from ``<manual_dir>/labels.json`` when listed there (the synthetic generator writes
one), else the Panoptic sequence family ("160906_band1" -> "band") when it is a known one,
else "other"; and the calibration of its C chosen cameras, in ``cameras`` order:
``camera_K`` (C, 3, 3), ``camera_R`` (C, 3, 3), ``camera_t`` (C, 3) cm, ``camera_dist``
(C, 5) k1, k2, p1, p2, k3 (OpenCV's model, as Panoptic writes it) and
``camera_resolution`` (C, 2) width, height. A camera maps world points (``joints3d``) to
its frame by x_cam = R @ X + t, so 3D can be expressed in any chosen camera's frame;
distorting x_cam[:2] / x_cam[2] and applying K gives ``joints2d``.

TFDS writes into a temporary folder and renames it when the build completes, so an
interrupted build leaves nothing half-written behind and a re-run starts clean.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import zlib

import numpy as np
import tensorflow_datasets as tfds

from pose_vq import errors
from pose_vq.data import camera, modes, panoptic, skeleton, synthetic

QUANTIZATION_LEVELS = modes.QUANTIZATION_LEVELS
# Class names of ``label``: synthetic motion kinds, then real sequence families.
LABELS = (*synthetic.MOTION_KINDS, *panoptic.SEQUENCE_FAMILIES, "other")
# ``camera_<name>`` per chosen camera: (name, shape after C, dtype).
CAMERA_FEATURES = (("K", (3, 3), np.float32), ("R", (3, 3), np.float32), ("t", (3,), np.float32),
                   ("dist", (5,), np.float32), ("resolution", (2,), np.int32))


@dataclasses.dataclass(eq=False)
class PanopticHeatmapsConfig(tfds.core.BuilderConfig):
    """One dataset variant: the mode and every rendering/windowing choice."""

    mode: str = "m2d"  # c2d | m2d | 3d | m2d_3d (pose_vq.data.modes.MODES)
    frames: int = 64  # clip length T
    heatmap_size: int = 128  # H = W (and the 3D volume side)
    stride: int = 90  # frames between window starts (the reference's stride)
    frame_interval: int = 1  # take every n-th frame
    sigma: float = 0.75  # Gaussian width in heatmap pixels
    kind: str = "limb"  # limb | keypoint
    score_source: str = "gaussian"  # gaussian N(0.65, 0.16) | ones | confidence
    joint_req: float = 0.9  # a camera sees a body when > this fraction of joints is visible
    #                         (real Panoptic frames often miss a joint or two)
    seed: int = 0  # camera choice and random scores, per example from (seed, key)
    on_error: str = "skip"  # skip | raise: a malformed or implausible frame file or body

    def __post_init__(self):
        if self.mode not in modes.MODES:
            raise errors.ConfigError(f"unknown mode {self.mode!r}; choose from {sorted(modes.MODES)}")
        if self.kind not in ("limb", "keypoint") or self.on_error not in ("skip", "raise"):
            raise errors.ConfigError(f"bad kind {self.kind!r} or on_error {self.on_error!r}")
        if self.kind == "keypoint" and "3d" in modes.clip_kinds(modes.MODES[self.mode]):
            raise errors.ConfigError(f"mode {self.mode} renders 3D limbs only; kind='keypoint' "
                                     "needs a 2D mode (c2d, m2d)")
        if min(self.frames, self.heatmap_size, self.stride, self.frame_interval) < 1:
            raise errors.ConfigError("frames, heatmap_size, stride and frame_interval must be >= 1")
        if not 0 <= self.joint_req < 1:  # no camera sees more than all of the joints
            raise errors.ConfigError(f"joint_req={self.joint_req} must be in [0, 1)")


def check_file_format(file_format: str) -> None:
    """Fail before any work when TFDS could not finish writing ``file_format``: tfrecord
    files are written through TensorFlow, which pose_vq does not install by default."""
    if file_format not in ("array_record", "tfrecord"):
        raise errors.ConfigError(f"file_format {file_format!r}: expected array_record or tfrecord")
    if file_format == "tfrecord" and importlib.util.find_spec("tensorflow") is None:
        raise errors.ConfigError("file_format tfrecord is written with TensorFlow, which is not "
                                 "installed: pip install -e '.[tf]', or use array_record")


def make_config(mode: str, frames: int | None = None, heatmap_size: int | None = None,
                tag: str = "", **overrides) -> PanopticHeatmapsConfig:
    """A named config for a mode; non-default sizes get their own name, e.g. 3d_t16_s32.

    ``on_error`` is left out of the name: it changes whether a build stops, not what it holds.
    ``tag`` ends the name: what the source root was written with where that is no knob of
    the build (a synthetic root's seed, ``pose_vq.data.prepare.synthetic_tag``).
    """
    frames = frames or (48 if mode == "c2d" else 64)
    heatmap_size = heatmap_size or 128
    named = {k: v for k, v in overrides.items() if k != "on_error"}
    default = frames == (48 if mode == "c2d" else 64) and heatmap_size == 128 and not named
    name = mode if default else f"{mode}_t{frames}_s{heatmap_size}" + "".join(
        f"_{k}{v}" for k, v in sorted(named.items()))
    name += f"_{tag}" if tag else ""
    return PanopticHeatmapsConfig(
        name=name, mode=mode, frames=frames, heatmap_size=heatmap_size,
        description=f"{mode} heatmaps, {frames} frames, {heatmap_size}px", **overrides)


class Builder(tfds.core.GeneratorBasedBuilder):
    """Heatmap clips of CMU Panoptic Studio motion, one config per input/target mode."""

    VERSION = tfds.core.Version("3.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: c2d, m2d, 3d and m2d_3d modes.",
        "2.0.0": "Unreconstructed joints (confidence <= 0.1) are absent: not drawn, in no "
                 "limb and outside the fit; new `present` (T, 19) mask. Implausible bodies "
                 "(beyond 10 m, degenerate, bones outside human range, confidence outside "
                 "[-1, 1]) are skipped; the read summary counts every dropped window.",
        "3.0.0": "New `label` (ClassLabel): the body's motion kind from the root's "
                 "labels.json, else the sequence family, else other. New calibration of "
                 "the chosen cameras: `camera_K`, `camera_R`, `camera_t`, `camera_dist` "
                 "(distortion) and `camera_resolution`.",
    }
    BUILDER_CONFIGS = [make_config(m) for m in modes.MODES]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Point --manual_dir at a CMU Panoptic root: one folder per sequence holding
    calibration_<seq>.json and hdPose3d_stage1_coco19/body3DScene_*.json (the
    panoptic-toolbox download scripts produce this layout), or at a synthetic root
    written by `python -m pose_vq.data.synthetic --root=DIR`.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        mode = modes.MODES[cfg.mode]
        t, s = cfg.frames, cfg.heatmap_size

        def clip(kind):
            return tfds.features.Tensor(shape=(t, s, s, modes.channels(kind, cfg.kind)),
                                        dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB)

        features = {
            "heatmaps": clip(mode.input_kind),
            "joints3d": tfds.features.Tensor(shape=(t, skeleton.NUM_JOINTS, 3), dtype=np.float32),
            "joints2d": tfds.features.Tensor(
                shape=(mode.num_cameras, t, skeleton.NUM_JOINTS, 2), dtype=np.float32),
            "confidence": tfds.features.Tensor(shape=(t, skeleton.NUM_JOINTS), dtype=np.float32),
            "present": tfds.features.Tensor(shape=(t, skeleton.NUM_JOINTS), dtype=np.bool_),
            "frames": tfds.features.Tensor(shape=(t,), dtype=np.int32),
            "cameras": tfds.features.Sequence(tfds.features.Text(), length=mode.num_cameras),
            "sequence": tfds.features.Text(),
            "body_id": np.int32,
            "start_frame": np.int32,
            "label": tfds.features.ClassLabel(names=LABELS),
            **{f"camera_{k}": tfds.features.Tensor(shape=(mode.num_cameras, *shape), dtype=dtype)
               for k, shape, dtype in CAMERA_FEATURES},
        }
        if mode.has_separate_target:
            features["target_heatmaps"] = clip(mode.target_kind)
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(features),
            homepage="http://domedb.perception.cs.cmu.edu/",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = dl_manager.manual_dir
        splits = panoptic.split_sequences(root)
        cfg = self.builder_config
        self.info.metadata["config"] = {
            f.name: getattr(cfg, f.name) for f in dataclasses.fields(PanopticHeatmapsConfig)
            if f.name in PanopticHeatmapsConfig.__annotations__}
        self.info.metadata["read_summary"] = {}
        labels = read_class_labels(root)
        return {split: self._generate_examples(root, split, seqs, labels)
                for split, seqs in splits.items()}

    def _generate_examples(self, root, split: str, sequences: list[str],
                           labels: dict[str, dict[int, str]]):
        cfg = self.builder_config
        mode = modes.MODES[cfg.mode]
        summary = panoptic.ReadSummary()
        for sequence in sequences:
            for window in modes.iter_mode_windows(
                    root, sequence, mode, length=cfg.frames, stride=cfg.stride,
                    frame_interval=cfg.frame_interval, joint_req=cfg.joint_req,
                    seed=cfg.seed, on_error=cfg.on_error, summary=summary):
                key = f"{window.sequence}/{window.body_id:04d}/{window.start_frame:08d}"
                rng = np.random.default_rng([cfg.seed, zlib.crc32(key.encode())])
                clips = modes.render_clips(mode, window, size=cfg.heatmap_size, sigma=cfg.sigma,
                                           kind=cfg.kind, score_source=cfg.score_source, rng=rng)
                yield key, {
                    **{k: modes.quantize(v) for k, v in clips.items()},
                    "joints3d": window.joints3d,
                    "joints2d": window.joints2d,
                    "confidence": window.confidence,
                    "present": window.present,
                    "frames": window.frames.astype(np.int32),
                    "cameras": list(window.cameras),
                    "sequence": window.sequence,
                    "body_id": window.body_id,
                    "start_frame": window.start_frame,
                    "label": example_label(labels, window.sequence, window.body_id),
                    **camera_arrays(window.calibration),
                }
        report = {**summary.as_dict(), "sequences": len(sequences),
                  "examples": summary.windows_kept}
        self.info.metadata["read_summary"][split] = report
        logging.info("panoptic_heatmaps %s: %s", split, report)
        if summary.windows_kept == 0:
            raise panoptic.PanopticDataError(
                f"{root}: split {split!r} produced no window of {cfg.frames} frames "
                f"(sequences {', '.join(sequences)}; {report})")


def camera_arrays(calibration: tuple[camera.Camera, ...]) -> dict[str, np.ndarray]:
    """The ``camera_*`` features of a window's chosen cameras, stacked in their order."""
    return {f"camera_{k}": np.stack([np.asarray(getattr(c, k)) for c in calibration]).astype(dtype)
            for k, _, dtype in CAMERA_FEATURES}


def read_class_labels(root) -> dict[str, dict[int, str]]:
    """``panoptic.read_labels``, every label checked against ``LABELS`` (naming the file)."""
    labels = panoptic.read_labels(root)
    for sequence, bodies in labels.items():
        for body_id, label in bodies.items():
            if label not in LABELS:
                raise panoptic.PanopticDataError(
                    f"{root}/{panoptic.LABELS_FILE}: {sequence} body {body_id}: label "
                    f"{label!r} is not one of {', '.join(LABELS)}")
    return labels


def example_label(labels: dict[str, dict[int, str]], sequence: str, body_id: int) -> str:
    """The body's label from labels.json, else its sequence's family if known, else other."""
    if body_id in labels.get(sequence, {}):
        return labels[sequence][body_id]
    family = panoptic.sequence_family(sequence)
    return family if family in LABELS else "other"
