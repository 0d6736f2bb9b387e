"""Benchmarks that print one table of ratios measured in the same run.

    python -m pose_vq.benchmark render [--frames 64] [--size 128] [--json]

``render``: seconds per sample of each mode's heatmap rendering at the paper size, from
real reader windows of a synthetic Panoptic root, next to the slow oracle of the test
suite (timed on ``--oracle_frames`` frames and scaled to the clip; run from the
repository root so ``tests/`` is importable), with the peak memory of each mode, each
measured in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

RENDER_MODES = ("2d", "m2d", "c2d", "3d")  # 2d: one camera, max over limbs


def _windows(frames: int):
    """One 3d-mode reader window (its 2D views serve the 2D modes), from a synthetic root."""
    from pose_vq.data import modes, panoptic, synthetic

    with tempfile.TemporaryDirectory() as tmp:
        synthetic.write_synthetic_root(tmp, ["bench"], num_frames=frames + 8, num_people=1,
                                       late_entry_prob=0.0, early_exit_prob=0.0, seed=1,
                                       missing_joint_prob=0.0)
        summary = panoptic.ReadSummary()
        return next(modes.iter_mode_windows(tmp, "bench", modes.MODES["3d"], length=frames,
                                            stride=frames, summary=summary))


def _render_fn(mode: str, window, size: int):
    from pose_vq.data import heatmaps

    rng = np.random.default_rng(0)
    if mode == "3d":
        scores = heatmaps.gaussian_scores(rng, window.joints3d.shape[:2])
        return lambda: heatmaps.render_volume_projections(window.joints3d, scores, size)
    views = window.joints2d[:1] if mode in ("2d", "c2d") else window.joints2d
    scores = heatmaps.gaussian_scores(rng, views.shape[:3])
    return lambda: heatmaps.render_views(views, scores, size, per_limb=mode == "c2d")


def _oracle_seconds_per_sample(mode: str, window, size: int, oracle_frames: int) -> float | None:
    try:
        from tests import heatmap_oracle
    except ImportError:
        return None
    from pose_vq.data import heatmaps

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


def _measure_one(mode: str, frames: int, size: int, repeats: int, oracle_frames: int) -> dict:
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


def bench_render(args) -> list[dict]:
    rows = []
    for mode in RENDER_MODES:
        cmd = [sys.executable, "-m", "pose_vq.benchmark", "_render_one", mode,
               str(args.frames), str(args.size), str(args.repeats), str(args.oracle_frames)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode:
            raise RuntimeError(f"render benchmark for {mode} failed:\n{res.stderr[-2000:]}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return rows


def _print_table(rows: list[dict]) -> None:
    print(f"# render benchmark on {platform.node()}: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, numba threads {os.environ.get('NUMBA_NUM_THREADS', 'all')}")
    print(f"{'mode':>5} {'frames':>6} {'size':>5} {'ch':>3} {'s/sample':>10} {'oracle s':>10} "
          f"{'speed-up':>9} {'alloc MB':>9} {'rss MB':>7}")
    for r in rows:
        oracle = r["oracle_seconds_per_sample"]
        ratio = f"{oracle / r['seconds_per_sample']:9.0f}x" if oracle else f"{'n/a':>9}"
        print(f"{r['mode']:>5} {r['frames']:6d} {r['size']:5d} {r['channels']:3d} "
              f"{r['seconds_per_sample']:10.4f} {oracle or float('nan'):10.2f} {ratio} "
              f"{r['render_alloc_peak_mb']:9.1f} {r['peak_rss_mb']:7.0f}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_render_one":  # internal: one mode in a fresh process
        mode, frames, size, repeats, oracle_frames = argv[1], *map(int, argv[2:6])
        print(json.dumps(_measure_one(mode, frames, size, repeats, oracle_frames)))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("render", help="heatmap rendering per mode against the test oracle")
    r.add_argument("--frames", type=int, default=64)
    r.add_argument("--size", type=int, default=128)
    r.add_argument("--repeats", type=int, default=10)
    r.add_argument("--oracle_frames", type=int, default=1, help="frames the slow oracle renders")
    r.add_argument("--json", action="store_true", help="one JSON object per row")
    args = p.parse_args(argv)
    rows = bench_render(args)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        _print_table(rows)


if __name__ == "__main__":
    main()
