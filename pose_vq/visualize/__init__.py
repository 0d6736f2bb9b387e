"""Images and GIFs that put reconstructed heatmap clips next to their targets.

Clips are float arrays (T, H, W, C) with values nominally in [0, 1]; C is 1 (a 2D heatmap)
or 3 (the max-projection planes of a 3D volume, or three camera views). Layouts are built
in float space with NaN marking separator pixels, then colorized once: heat values map
through an inferno-like colormap and NaN maps to a neutral grey that the colormap never
produces, so panel borders cannot be mistaken for heat.

A comparison frame stacks three rows, top to bottom: ground truth, reconstruction and
absolute error; each row shows the channels left to right.

Pure numpy and PIL (and etils.epath, so that a GIF may go to a bucket): evaluation imports
it for its summaries. The command that draws a
dataset's, a checkpoint's or a token dataset's clip is ``python -m pose_vq.visualize``
(``__main__.py`` beside this file).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from etils import epath
from PIL import Image, ImageDraw

from pose_vq.data import skeleton

# Evenly spaced anchors of matplotlib's "inferno" (its 10-colour sampling). Luminance is
# linear in RGB, so it rises monotonically along the interpolated map as it does here.
_ANCHORS = np.array([
    (0, 0, 4), (27, 12, 66), (75, 12, 107), (120, 28, 109), (165, 44, 96),
    (207, 68, 70), (237, 105, 37), (251, 154, 6), (247, 208, 60), (252, 255, 164),
], dtype=np.float64)
_STOPS = np.linspace(0.0, 1.0, len(_ANCHORS))
SEPARATOR_RGB = (128, 128, 128)  # neutral grey: every inferno colour is strongly tinted
FRAME_GAP = 2  # summary_image: wider than the 1-pixel channel and row gaps, to tell frames apart
SKELETON_RGB = (0, 220, 255)  # cyan: far from every inferno colour


def colorize(x: np.ndarray) -> np.ndarray:
    """Values (clipped to [0, 1]) -> uint8 RGB (..., 3); NaN -> SEPARATOR_RGB.

    A perceptual map with monotone luminance keeps faint heat readable and orders values
    the same way in colour and in grey-scale. Luminance rises strictly over 256 levels;
    on finer ramps uint8 rounding can dip it by one step of one channel.
    """
    x = np.asarray(x, dtype=np.float64)
    separator = np.isnan(x)
    v = np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0)
    rgb = np.stack([np.interp(v, _STOPS, _ANCHORS[:, i]) for i in range(3)], axis=-1)
    rgb[separator] = SEPARATOR_RGB
    return np.rint(rgb).astype(np.uint8)


def _join(parts: Sequence[np.ndarray], axis: int, gap: int) -> np.ndarray:
    """Concatenate float parts along axis with `gap`-wide NaN (separator) slabs between."""
    shape = list(parts[0].shape)
    shape[axis] = gap
    separator = np.full(shape, np.nan, dtype=np.float32)
    pieces = [piece for part in parts for piece in (separator, part)][1:]
    return np.concatenate(pieces, axis=axis)


def _check_clip(clip: np.ndarray, name: str) -> None:
    if clip.ndim != 4:
        raise ValueError(f"{name} must be a (T, H, W, C) clip; got shape {clip.shape}")


def channels_side_by_side(clip: np.ndarray, gap: int = 1) -> np.ndarray:
    """(T, H, W, C) -> float32 (T, H, C*W + (C-1)*gap): channels left to right.

    Gap columns are NaN so that colorize draws them as separators, not as heat.
    """
    clip = np.asarray(clip, dtype=np.float32)
    _check_clip(clip, "clip")
    return _join([clip[..., c] for c in range(clip.shape[-1])], axis=-1, gap=gap)


def _checked_pair(target: np.ndarray, recon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both clips as float32, after checking that they are clips of one shape."""
    target = np.asarray(target, dtype=np.float32)
    recon = np.asarray(recon, dtype=np.float32)
    _check_clip(target, "target")
    if recon.shape != target.shape:
        raise ValueError(f"target and recon shapes differ: {target.shape} vs {recon.shape}")
    return target, recon


def _comparison_grid(target: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Float (T, 3H + 2, C*W + C - 1): truth, reconstruction, |error| rows, NaN separators."""
    target, recon = (np.clip(clip, 0, 1) for clip in _checked_pair(target, recon))
    rows = [channels_side_by_side(row) for row in (target, recon, np.abs(target - recon))]
    return _join(rows, axis=1, gap=1)


def _upscale(image: np.ndarray, scale: int, axes: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upscaling, so each heatmap pixel stays a crisp block."""
    if scale < 1:
        raise ValueError(f"scale must be a positive integer; got {scale}")
    for axis in axes:
        image = np.repeat(image, scale, axis=axis)
    return image


def comparison_frames(target: np.ndarray, recon: np.ndarray, scale: int = 1) -> np.ndarray:
    """Two (T, H, W, C) clips -> uint8 RGB (T, (3H + 2)*scale, (C*W + C - 1)*scale, 3).

    Rows, top to bottom: ground truth, reconstruction, |target - recon|; all clipped to
    [0, 1] so one colour means one value across rows. Raises ValueError on shape mismatch.
    """
    return _upscale(colorize(_comparison_grid(target, recon)), scale, axes=(1, 2))


def summary_image(target: np.ndarray, recon: np.ndarray, num_frames: int = 8,
                  scale: int = 1) -> np.ndarray:
    """One uint8 RGB still (H', W', 3) for TensorBoard: comparison frames left to right.

    `num_frames` frames are picked evenly over the clip (all of them if it is shorter) and
    separated by FRAME_GAP grey columns, so a still shows how the error evolves in time.
    """
    target, recon = _checked_pair(target, recon)
    t = target.shape[0]
    index = np.rint(np.linspace(0, t - 1, min(num_frames, t))).astype(int)
    grid = _comparison_grid(target[index], recon[index])
    return _upscale(colorize(_join(list(grid), axis=1, gap=FRAME_GAP)), scale, axes=(0, 1))


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: float = 10) -> epath.Path:
    """uint8 (T, H, W, 3) frames -> a looping animated GIF at `path` (parents created; a
    local path or a bucket's, pose_vq.paths).

    Each frame replaces the previous one (disposal 2, no transparency). GIF has no way to
    keep identical consecutive frames apart, and Pillow merges them into one frame shown
    for their summed duration: playback timing is kept, but `n_frames` can be below T.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3); got {frames.dtype} {frames.shape}")
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first, *rest = [Image.fromarray(frame) for frame in frames]
    with path.open("wb") as f:
        first.save(f, format="GIF", save_all=True, append_images=rest,
                   duration=round(1000 / fps), loop=0, disposal=2)
    return path


def clip_gif(path: str | os.PathLike, target: np.ndarray, recon: np.ndarray, fps: float = 10,
             scale: int = 4) -> epath.Path:
    """Write the comparison frames of a clip as a looping GIF; return its path."""
    return write_gif(path, comparison_frames(target, recon, scale=scale), fps=fps)


def clip_frames(clip: np.ndarray, scale: int = 1) -> np.ndarray:
    """One (T, H, W, C) clip -> uint8 RGB (T, H*scale, (C*W + C - 1)*scale, 3), channels
    left to right (a 3d clip's three planes side by side)."""
    return _upscale(colorize(channels_side_by_side(np.clip(clip, 0, 1))), scale, axes=(1, 2))


def draw_skeleton(frames: np.ndarray, points: np.ndarray, *, rows: int, size: int,
                  scale: int) -> np.ndarray:
    """Draw limbs over frames laid out by clip_frames / comparison_frames.

    ``points`` (C, T, J, 2) are (x, y) heatmap pixels per channel (``modes.joint_pixels``);
    each of the ``rows`` rows of ``size``-pixel panels gets the same skeleton. Non-finite
    joints (absent ones: ``joint_pixels`` makes them NaN) and their limbs are left out.
    Returns a new uint8 array.
    """
    frames = np.array(frames, copy=True)
    num_channels, t = points.shape[:2]
    if t != frames.shape[0]:
        raise ValueError(f"points cover {t} frames, the clip has {frames.shape[0]}")
    step = (size + 1) * scale  # panel pitch: size pixels and a 1-pixel separator
    radius = max(1, scale // 2)
    for f in range(t):
        image = Image.fromarray(frames[f])
        draw = ImageDraw.Draw(image)
        for row in range(rows):
            for c in range(num_channels):
                xy = (points[c, f] + 0.5) * scale + np.array([c * step, row * step])
                ok = np.all(np.isfinite(xy), axis=-1)
                for a, b in skeleton.LIMBS:
                    if ok[a] and ok[b]:
                        draw.line([tuple(xy[a]), tuple(xy[b])], fill=SKELETON_RGB, width=1)
                for x, y in xy[ok]:
                    draw.ellipse([x - radius, y - radius, x + radius, y + radius],
                                 outline=SKELETON_RGB)
        frames[f] = np.asarray(image)
    return frames
