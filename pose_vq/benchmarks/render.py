"""``render``: seconds per sample of each mode's heatmap rendering at the paper size, from
real reader windows of a synthetic Panoptic root, next to the slow oracle of the test
suite (timed on ``oracle_frames`` frames and scaled to the clip; run from the repository
root so ``tests/`` is importable), with the peak memory of each mode. Each mode runs in
a fresh process (``python -m pose_vq.benchmarks.render MODE ...``), for clean peaks."""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
import tracemalloc

import numpy as np
from absl import app

from pose_vq import errors
from pose_vq.benchmarks import harness
from pose_vq.data import heatmaps, modes, panoptic, synthetic

RENDER_MODES = ("2d", "m2d", "c2d", "3d")  # 2d: one camera, max over limbs


def _windows(frames: int):
    """One 3d-mode reader window (its 2D views serve the 2D modes), from a synthetic root."""
    with tempfile.TemporaryDirectory() as tmp:
        synthetic.write_synthetic_root(tmp, ["bench"], num_frames=frames + 8, num_people=1,
                                       late_entry_prob=0.0, early_exit_prob=0.0, seed=1,
                                       missing_joint_prob=0.0)
        summary = panoptic.ReadSummary()
        return next(modes.iter_mode_windows(tmp, "bench", modes.MODES["3d"], length=frames,
                                            stride=frames, summary=summary))


def _render_fn(mode: str, window, size: int):
    rng = np.random.default_rng(0)
    if mode == "3d":
        scores = heatmaps.gaussian_scores(rng, window.joints3d.shape[:2])
        return lambda: heatmaps.render_volume_projections(window.joints3d, scores, size)
    views = window.joints2d[:1] if mode in ("2d", "c2d") else window.joints2d
    scores = heatmaps.gaussian_scores(rng, views.shape[:3])
    return lambda: heatmaps.render_views(views, scores, size, per_limb=mode == "c2d")


def _oracle_seconds_per_sample(mode: str, window, size: int, oracle_frames: int) -> float | None:
    try:
        from tests import heatmap_oracle  # noqa: PLC0415 (in a clone only, not installed)
    except ImportError:
        return None
    frames = window.joints3d.shape[0]
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    if mode == "3d":
        pts = heatmaps.scale_and_center(window.joints3d[None], size)[0][:oracle_frames]
        heatmap_oracle.oracle_3d(pts, heatmaps.gaussian_scores(rng, pts.shape[:2]), 0.75, size)
    else:
        cams = 1 if mode in ("2d", "c2d") else window.joints2d.shape[0]
        for view in heatmaps.scale_and_center(window.joints2d[:cams], size):
            pts = view[:oracle_frames]
            heatmap_oracle.oracle_2d(pts, heatmaps.gaussian_scores(rng, pts.shape[:2]), 0.75,
                                     size, combine=mode != "c2d")
    return (time.perf_counter() - start) * frames / oracle_frames


def measure_mode(mode: str, frames: int, size: int, repeats: int, oracle_frames: int) -> dict:
    window = _windows(frames)
    render = _render_fn(mode, window, size)
    render()  # compile (numba caches) and warm up
    start = time.perf_counter()
    for _ in range(repeats):
        out = render()
    seconds = (time.perf_counter() - start) / repeats
    tracemalloc.start()
    render()
    _, peak_alloc = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the oracle
    return {
        "mode": mode, "frames": frames, "size": size, "channels": int(out.shape[-1]),
        "seconds_per_sample": seconds,
        "oracle_seconds_per_sample": _oracle_seconds_per_sample(mode, window, size, oracle_frames),
        "render_alloc_peak_mb": peak_alloc / 2**20,
        "peak_rss_mb": peak_rss_mb,
    }


def run(frames: int, size: int, repeats: int, oracle_frames: int) -> list[dict]:
    """Each mode measured in a fresh process (clean peak memory)."""
    return [harness.run_fresh("pose_vq.benchmarks.render", mode, str(frames), str(size),
                              str(repeats), str(oracle_frames)) for mode in RENDER_MODES]


def print_table(rows: list[dict]) -> None:
    print(f"# render benchmark on {harness.machine()}, numba threads "
          f"{os.environ.get('NUMBA_NUM_THREADS', 'all')}")
    print(f"{'mode':>5} {'frames':>6} {'size':>5} {'ch':>3} {'s/sample':>10} {'oracle s':>10} "
          f"{'speed-up':>9} {'alloc MB':>9} {'rss MB':>7}")
    for r in rows:
        oracle = r["oracle_seconds_per_sample"]
        ratio = f"{oracle / r['seconds_per_sample']:9.0f}x" if oracle else f"{'n/a':>9}"
        print(f"{r['mode']:>5} {r['frames']:6d} {r['size']:5d} {r['channels']:3d} "
              f"{r['seconds_per_sample']:10.4f} {oracle or float('nan'):10.2f} {ratio} "
              f"{r['render_alloc_peak_mb']:9.1f} {r['peak_rss_mb']:7.0f}")


@errors.one_line_failures
def main(argv: list[str]) -> None:
    """One mode, in the fresh process ``run`` starts: ``MODE FRAMES SIZE REPEATS
    ORACLE_FRAMES``."""
    if len(argv) != 6 or argv[1] not in RENDER_MODES:
        raise app.UsageError("usage: python -m pose_vq.benchmarks.render MODE FRAMES SIZE "
                             "REPEATS ORACLE_FRAMES")
    print(json.dumps(measure_mode(argv[1], *map(int, argv[2:]))))


def define_flags() -> None:
    """The mode process's flags: ``--verbose`` (the measurement's are arguments)."""
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
