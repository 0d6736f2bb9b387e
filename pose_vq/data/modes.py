"""The paper's input/target modes: which cameras a window uses and what is rendered.

========  ===============================  ===========================  ==========
mode      cameras                          heatmaps (T, H, W, C)        target
========  ===============================  ===========================  ==========
c2d       1 of the egocentric list         17 limb channels, 1 camera   max over C
m2d       3 of the exocentric list         max over limbs, C = camera   heatmaps
3d        3 exocentric (2D kept as meta)   3 volume max-projections     heatmaps
m2d_3d    3 of the exocentric list         as m2d                       as 3d
========  ===============================  ===========================  ==========

3D windows need every frame seen by at least 4 of the listed cameras (the reference's
reliability test). ``m2d_3d`` rotates each window about the vertical axis so the first
frame faces the same way (the reference straightens only when both 2D and 3D are drawn).
Absent joints (``Window.present`` false) are NaN to the renderer: never drawn, in no limb,
outside every fit (the scale-and-centre box and the straightening).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

from pose_vq.data import heatmaps, panoptic, skeleton

ScoreSource = Literal["gaussian", "ones", "confidence"]


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    cameras: tuple[str, ...]  # candidate HD cameras
    num_cameras: int  # cameras chosen per window
    min_cameras_3d: int  # each frame seen by this many candidates (0: no requirement)
    input_kind: Literal["c2d", "m2d", "3d"]
    target_kind: Literal["c2d_max", "m2d", "3d"]
    straighten: bool

    @property
    def has_separate_target(self) -> bool:
        """Whether the target must be rendered and stored beside the input."""
        return self.target_kind == "3d" and self.input_kind != "3d"


MODES: dict[str, Mode] = {
    "c2d": Mode("c2d", panoptic.EGO_CAMERAS, 1, 0, "c2d", "c2d_max", False),
    "m2d": Mode("m2d", panoptic.EXO_CAMERAS, 3, 0, "m2d", "m2d", False),
    "3d": Mode("3d", panoptic.EXO_CAMERAS, 3, 4, "3d", "3d", False),
    "m2d_3d": Mode("m2d_3d", panoptic.EXO_CAMERAS, 3, 4, "m2d", "3d", True),
}


def clip_kinds(mode: Mode) -> set[str]:
    """The kinds of clip a mode renders (its input and, when separate, its target)."""
    return {mode.input_kind, mode.target_kind}


def channels(clip_kind: str, kind: Literal["limb", "keypoint"] = "limb") -> int:
    """Channels of a clip of the given kind (c2d: one per limb or joint)."""
    per_item = skeleton.NUM_LIMBS if kind == "limb" else skeleton.NUM_JOINTS
    return {"c2d": per_item, "c2d_max": 1, "m2d": 3, "3d": 3}[clip_kind]


def _scores(source: ScoreSource, confidence: np.ndarray, shape: tuple[int, ...],
            rng: np.random.Generator) -> np.ndarray:
    if source == "gaussian":
        return heatmaps.gaussian_scores(rng, shape)
    if source == "ones":
        return np.ones(shape)
    if source == "confidence":
        return np.broadcast_to(np.clip(confidence, 0.0, 1.0), shape)
    raise ValueError(f"unknown score source {source!r}")


def absent_as_nan(points: np.ndarray, present: np.ndarray | None) -> np.ndarray:
    """(..., T, J, D) points with the joints that ``present`` (T, J) marks absent set to NaN,
    the renderer's and the fit's marker for "not there"; ``present=None`` keeps all."""
    points = np.asarray(points, np.float64)
    return points if present is None else np.where(np.asarray(present)[..., None], points, np.nan)


def render_clips(
    mode: Mode, window: panoptic.Window, *, size: int, sigma: float = 0.75,
    kind: Literal["limb", "keypoint"] = "limb", score_source: ScoreSource = "gaussian",
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Render a window as float32 clips in [0, 1]: ``heatmaps`` and, where the mode's
    target differs from its input, ``target_heatmaps``."""
    out = {}
    kinds = [("heatmaps", mode.input_kind)]
    if mode.has_separate_target:
        kinds.append(("target_heatmaps", mode.target_kind))
    for key, clip_kind in kinds:
        if clip_kind == "3d":
            joints = absent_as_nan(window.joints3d, window.present)
            if mode.straighten:
                joints = panoptic.straighten_by_initial_frame(joints)
            scores = _scores(score_source, window.confidence, joints.shape[:2], rng)
            out[key] = heatmaps.render_volume_projections(joints, scores, size, sigma=sigma)
        else:
            views = window.joints2d[:1] if clip_kind == "c2d" else window.joints2d
            views = absent_as_nan(views, window.present)
            scores = _scores(score_source, window.confidence, views.shape[:3], rng)
            out[key] = heatmaps.render_views(views, scores, size, sigma=sigma, kind=kind,
                                             per_limb=clip_kind == "c2d")
    return out


def joint_pixels(mode: Mode, joints2d: np.ndarray, joints3d: np.ndarray, size: int,
                 present: np.ndarray | None = None) -> np.ndarray:
    """Where the renderer put each joint in each channel of the mode's *target* clip.

    ``joints2d`` (cameras, T, J, 2) camera pixels, ``joints3d`` (T, J, 3) and ``present``
    (T, J) as stored; returns float32 (C_target, T, J, 2) heatmap pixels as (x = column,
    y = row), with the renderer's fitting (and clipping, for 3D) applied, NaN for absent
    joints. For skeleton overlays and the keypoint error. ``present=None`` (datasets
    before 2.0.0, drawn with every joint) places every joint.
    """
    joints2d, joints3d = absent_as_nan(joints2d, present), absent_as_nan(joints3d, present)
    if mode.target_kind == "3d":
        joints = joints3d
        if mode.straighten:
            joints = panoptic.straighten_by_initial_frame(joints)
        v = np.clip(heatmaps.scale_and_center(joints[None], size)[0], 0, size - 1)
        # Volume [x, y, z]; plane 0 drops x (rows y, cols z), 1 drops y (rows x, cols z),
        # 2 drops z (rows x, cols y).
        planes = [v[..., [2, 1]], v[..., [2, 0]], v[..., [1, 0]]]
        return np.stack(planes).astype(np.float32)
    views = joints2d[:1] if mode.target_kind == "c2d_max" else joints2d
    return heatmaps.scale_and_center(views, size).astype(np.float32)


def target_from_input(mode: Mode, clip: Any) -> Any:
    """The model's target for modes whose target is derived from the input clip (numpy
    or jax arrays)."""
    if mode.target_kind == "c2d_max":
        return clip.max(axis=-1, keepdims=True)
    if mode.has_separate_target:
        raise ValueError(f"mode {mode.name} stores its target as 'target_heatmaps'")
    return clip


# Heatmaps are stored as uint8 levels 0..QUANTIZATION_LEVELS of [0, 1].
QUANTIZATION_LEVELS = 255


def quantize(clip: np.ndarray) -> np.ndarray:
    """[0, 1] float heatmaps -> the stored uint8 levels (max abs error 1/510)."""
    return np.round(np.clip(clip, 0.0, 1.0) * QUANTIZATION_LEVELS).astype(np.uint8)


def model_clips(mode: Mode, batch: dict[str, Any]) -> tuple[Any, Any]:
    """float32 ``inputs`` and ``targets`` in [0, 1] from a batch of stored uint8 clips
    (``targets`` only in modes with a separate target): numpy on a host, or jax arrays
    inside a jitted step, so clips travel to the devices at a quarter of float32's bytes."""
    scale = np.float32(1.0 / QUANTIZATION_LEVELS)
    inputs = batch["inputs"].astype(np.float32) * scale
    if mode.has_separate_target:
        return inputs, batch["targets"].astype(np.float32) * scale
    return inputs, target_from_input(mode, inputs)


def iter_mode_windows(
    root: str | pathlib.Path, sequence: str, mode: Mode, *, length: int, stride: int, frame_interval: int = 1,
    joint_req: float = 0.9, seed: int = 0, on_error: panoptic.ErrorPolicy = "skip",
    summary: panoptic.ReadSummary,
) -> Iterator[panoptic.Window]:
    """Every window of a sequence usable by ``mode``; ``summary`` counts what was skipped
    and dropped, and why."""
    for track in panoptic.read_tracks(root, sequence, mode.cameras, joint_req=joint_req,
                                      on_error=on_error, summary=summary):
        yield from panoptic.iter_windows(
            track, length=length, stride=stride, frame_interval=frame_interval,
            num_cameras=mode.num_cameras, min_cameras_3d=mode.min_cameras_3d, seed=seed,
            summary=summary)
