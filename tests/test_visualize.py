"""Tests of the comparison images and GIFs: colormap, layout, frame choice, GIF files."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from pose_vq import visualize

pytestmark = pytest.mark.xdist_group("tiny_runs")  # one worker trains the fixture


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])


def _moving_clip(t: int, h: int = 6, w: int = 5, c: int = 1) -> np.ndarray:
    """A clip whose bright pixel moves every frame, so no two frames are identical."""
    clip = np.zeros((t, h, w, c), np.float32)
    for i in range(t):
        clip[i, i % h, (i // h) % w] = 1.0
    return clip


def test_colorize_endpoints_dtype_and_monotone_luminance():
    rgb = visualize.colorize(np.linspace(0, 1, 256))  # the 8-bit resolution of the map
    assert rgb.dtype == np.uint8 and rgb.shape == (256, 3)
    assert tuple(rgb[0]) == (0, 0, 4) and tuple(rgb[-1]) == (252, 255, 164)
    assert np.all(np.diff(_luminance(rgb)) > 0) and _luminance(rgb[-1]) > 200
    # Out-of-range values clip; NaN is the separator colour; leading shape is kept.
    out = visualize.colorize(np.array([[-1.0, 2.0, np.nan]]))
    assert out.shape == (1, 3, 3)
    np.testing.assert_array_equal(out[0], [rgb[0], rgb[-1], visualize.SEPARATOR_RGB])


def test_channels_side_by_side_places_channels_with_nan_gaps():
    clip = np.stack([np.full((2, 3, 4), c, np.float32) for c in (0.1, 0.2, 0.3)], axis=-1)
    out = visualize.channels_side_by_side(clip, gap=2)
    assert out.shape == (2, 3, 3 * 4 + 2 * 2)
    np.testing.assert_allclose(out[..., [0, 6, 12]], np.broadcast_to([0.1, 0.2, 0.3], (2, 3, 3)))
    assert np.isnan(out[..., [4, 5, 10, 11]]).all() and not np.isnan(out[..., :4]).any()


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("scale", [1, 3])
def test_comparison_frames_layout(c, scale):
    t, h, w = 2, 6, 5
    target = np.zeros((t, h, w, c), np.float32)
    target[1, 2, 3, c - 1] = 1.0  # bright pixel: frame 1, last channel
    frames = visualize.comparison_frames(target, target, scale=scale)
    assert frames.dtype == np.uint8
    assert frames.shape == (t, (3 * h + 2) * scale, (c * w + c - 1) * scale, 3)

    zero, one = visualize.colorize(np.array([0.0, 1.0]))
    y, x = 2 * scale, ((c - 1) * (w + 1) + 3) * scale  # top row, last channel's column 3
    assert (frames[1, y:y + scale, x:x + scale] == one).all()
    assert (frames[1, :h * scale] == one).all(-1).sum() == scale**2  # nowhere else in the top row
    error_row = frames[:, (2 * h + 2) * scale:]
    channel_columns = np.ones(c * w + c - 1, bool)
    channel_columns[w::w + 1] = False  # the separator columns
    error = error_row[:, :, np.repeat(channel_columns, scale)]
    assert (error == zero).all()
    separators = frames[:, h * scale:(h + 1) * scale]  # the line between the first two rows
    assert (separators == visualize.SEPARATOR_RGB).all()


def test_comparison_frames_error_row_shows_the_difference():
    target = np.zeros((1, 2, 2, 1), np.float32)
    recon = target.copy()
    recon[0, 0, 0, 0] = 0.75
    frames = visualize.comparison_frames(target, recon)
    np.testing.assert_array_equal(frames[0, 2 * 2 + 2, 0], visualize.colorize(np.float64(0.75)))


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="shapes differ"):
        visualize.comparison_frames(np.zeros((2, 4, 4, 1)), np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="shapes differ"):
        visualize.summary_image(np.zeros((5, 4, 4, 1)), np.zeros((4, 4, 4, 1)))


@pytest.mark.parametrize("t, shown", [(3, 3), (20, 8)])
def test_summary_image_shape(t, shown):
    h, w, c, scale = 6, 5, 3, 2
    clip = _moving_clip(t, h, w, c)
    image = visualize.summary_image(clip, clip, num_frames=8, scale=scale)
    frame_w = c * w + c - 1
    assert image.dtype == np.uint8
    assert image.shape == ((3 * h + 2) * scale,
                           (shown * frame_w + (shown - 1) * visualize.FRAME_GAP) * scale, 3)


def test_summary_image_picks_frames_evenly_including_ends():
    clip = np.zeros((9, 1, 1, 1), np.float32)
    clip[[0, 4, 8]] = 1.0
    image = visualize.summary_image(clip, clip, num_frames=3)
    _, one = visualize.colorize(np.array([0.0, 1.0]))
    assert (image[0, ::1 + visualize.FRAME_GAP] == one).all()


def _read_gif(path):
    with Image.open(path) as gif:
        info = dict(gif.info)
        return gif.n_frames, gif.size, info


def test_write_gif_frames_size_and_loop(tmp_path):
    frames = visualize.comparison_frames(_moving_clip(5), _moving_clip(5) * 0.5)
    path = visualize.write_gif(tmp_path / "new" / "dir" / "clip.gif", frames, fps=20)
    n_frames, size, info = _read_gif(path)
    assert n_frames == 5 and size == (frames.shape[2], frames.shape[1])
    assert info["loop"] == 0 and info["duration"] == 50


def test_clip_gif(tmp_path):
    t, h, w, c, scale = 4, 6, 5, 3, 4
    clip = _moving_clip(t, h, w, c)
    path = visualize.clip_gif(str(tmp_path / "clip.gif"), clip, np.zeros_like(clip), scale=scale)
    n_frames, size, info = _read_gif(path)
    assert n_frames == t and info["loop"] == 0
    assert size == ((c * w + c - 1) * scale, (3 * h + 2) * scale)
    with Image.open(path) as gif:  # frames decode as drawn, not blended with the previous one
        gif.seek(t - 1)
        last = np.asarray(gif.convert("RGB"))
    np.testing.assert_array_equal(last, visualize.comparison_frames(clip, np.zeros_like(clip),
                                                                    scale=scale)[-1])


def test_draw_skeleton_marks_joints_in_every_panel():
    size, scale, c, t = 8, 3, 2, 2
    frames = visualize.comparison_frames(np.zeros((t, size, size, c)), np.zeros((t, size, size, c)),
                                         scale=scale)
    points = np.full((c, t, 19, 2), np.nan, np.float32)
    points[0, :, 1] = (2, 5)  # channel 0: the nose alone (its limbs' other ends are NaN)
    points[1, :, 3], points[1, :, 4] = (1, 1), (6, 1)  # channel 1: the l-shoulder - l-elbow limb
    out = visualize.draw_skeleton(frames, points, rows=3, size=size, scale=scale)
    cyan = np.all(out == visualize.SKELETON_RGB, axis=-1)
    pitch = (size + 1) * scale
    for row in range(3):
        y0 = row * pitch
        # A dot around the centre of heatmap pixel (x=2, y=5) of channel 0 ...
        assert cyan[0, y0 + 5 * scale:y0 + 6 * scale + 2, 2 * scale - 1:3 * scale + 2].any()
        assert not cyan[0, y0:y0 + size * scale, 4 * scale:size * scale].any()
        # ... and in channel 1 a line along row y=1 from x=1 to x=6.
        line = cyan[1, y0 + scale + scale // 2, pitch:pitch + size * scale]
        assert line[int(1.5 * scale):int(6.5 * scale)].all()
    assert not cyan[:, :, size * scale:pitch].any()  # nothing in the separator column
    assert not np.any(np.all(frames == visualize.SKELETON_RGB, axis=-1))  # input untouched


def test_visualize_command_writes_gif_of_clip_size(tiny_runs, tmp_path):
    import subprocess
    import sys

    run = tiny_runs[1] / "vqgan"
    out = tmp_path / "clip.gif"
    subprocess.run([sys.executable, "-m", "pose_vq.visualize", f"--workdir={run}", "--index=1",
                    "--scale=2", "--skeleton", f"--output={out}"], check=True,
                   capture_output=True, cwd=pathlib.Path(__file__).resolve().parent.parent)
    config = tiny_runs[0]
    t, s = config.data.frames, config.data.heatmap_size
    with Image.open(out) as gif:
        assert gif.size == ((3 * s + 2) * 2, (3 * s + 2) * 2)  # 3 planes x 3 rows
        assert gif.n_frames == t
        gif.seek(t - 1)
        assert np.all(np.asarray(gif.convert("RGB")) == visualize.SKELETON_RGB, axis=-1).any()
