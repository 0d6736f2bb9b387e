"""CMU Panoptic Studio reader: calibration, 3D poses, projection, tracks and windows.

Reads ``<root>/<seq>/calibration_<seq>.json`` and
``<root>/<seq>/hdPose3d_stage1_coco19/body3DScene_<frame>.json`` exactly as the
dataset ships them. Poses are in centimetres, world y pointing down. Every problem
with a file is reported with the file's path; recoverable problems (a malformed frame
file, a body with bad values) are skipped and counted when ``on_error="skip"``.

Windows follow the reference implementation's definition of a usable frame (a camera
sees a body when more than ``joint_req`` of its joints have confidence > 0.1 and
project inside the image) but are cut from *consecutive* frames of one body only; the
reference concatenated frames across gaps and across bodies.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import pathlib
import re
from typing import Iterator, Literal, Sequence

import numpy as np

from pose_vq.data import skeleton

# The reference's train/validation split of Panoptic sequences.
TRAIN_SEQUENCES: tuple[str, ...] = (
    "160224_haggling1", "160226_haggling1", "170221_haggling_b1", "170221_haggling_b3",
    "170221_haggling_m1", "170221_haggling_m2", "170221_haggling_m3", "170224_haggling_a2",
    "170224_haggling_a3", "170224_haggling_b1", "170224_haggling_b2", "170224_haggling_b3",
    "170228_haggling_a1", "170228_haggling_a2", "170228_haggling_b1", "170228_haggling_b2",
    "170228_haggling_b3", "170404_haggling_a1", "170404_haggling_a3", "170404_haggling_b1",
    "170404_haggling_b2", "170404_haggling_b3", "170407_haggling_a2", "170407_haggling_a3",
    "170407_haggling_b1", "170407_haggling_b2", "160422_ultimatum1", "160906_band1",
    "160906_band2", "160906_ian2", "160906_ian3", "160906_ian5", "160906_pizza1",
    "161029_flute1", "161029_piano1", "161029_piano2", "161029_piano4", "170307_dance5",
    "170407_office2", "171026_cello3", "171026_pose1", "171026_pose3", "171204_pose1",
    "171204_pose2", "171204_pose3", "171204_pose4", "171204_pose6",
)
VALIDATION_SEQUENCES: tuple[str, ...] = (
    "170407_haggling_b3", "170407_haggling_a1", "170404_haggling_a2", "170228_haggling_a3",
    "170224_haggling_a1", "170221_haggling_b2", "160422_haggling1", "160906_band3",
    "160906_ian1", "161029_piano3", "170915_office1", "171026_pose2", "171204_pose5",
)
# HD camera nodes (panel 0) the reference treats as egocentric-like and exocentric.
EGO_CAMERAS: tuple[str, ...] = tuple(f"00_{n:02d}" for n in (0, 3, 5, 8, 9, 14, 15, 23, 24, 25))
EXO_CAMERAS: tuple[str, ...] = tuple(f"00_{n:02d}" for n in (1, 2, 4, 6, 7, 10, 13, 17, 19, 28))

# The reference rotates poses by this matrix (row vectors: (x, y, z) -> (x, z, -y), z up)
# and the camera rotations by R @ M; the two cancel in projection, so projecting the
# raw Panoptic coordinates with the raw calibration is the same camera model.
REFERENCE_AXES = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

POSE_DIR = "hdPose3d_stage1_coco19"
_POSE_FILE = re.compile(r"body3DScene_(\d+)\.json$")
ErrorPolicy = Literal["skip", "raise"]


class PanopticDataError(ValueError):
    """A Panoptic file is missing or malformed; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Camera:
    """One calibrated camera: x_cam = R @ X + t, then OpenCV distortion and K."""

    name: str
    K: np.ndarray  # (3, 3)
    dist: np.ndarray  # (5,) k1, k2, p1, p2, k3
    R: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,) centimetres
    resolution: tuple[int, int]  # (width, height)


@dataclasses.dataclass
class ReadSummary:
    """Counts of what a read skipped and why, so a build can report it."""

    files_read: int = 0
    empty_frames: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def skip(self, reason: str, policy: ErrorPolicy, message: str) -> None:
        if policy == "raise":
            raise PanopticDataError(message)
        self.skipped[reason] += 1

    def merge(self, other: "ReadSummary") -> None:
        self.files_read += other.files_read
        self.empty_frames += other.empty_frames
        self.skipped.update(other.skipped)

    def as_dict(self) -> dict[str, int]:
        return {"files_read": self.files_read, "empty_frames": self.empty_frames,
                **{f"skipped_{k}": v for k, v in sorted(self.skipped.items())}}


@dataclasses.dataclass
class Track:
    """All consecutive-or-not frames of one body in one sequence, seen by ``cameras``."""

    sequence: str
    body_id: int
    cameras: tuple[str, ...]
    frames: np.ndarray  # (N,) int frame numbers, increasing
    joints3d: np.ndarray  # (N, 19, 3) float32 cm, Panoptic world axes
    confidence: np.ndarray  # (N, 19) float32, -1 where the joint was not reconstructed
    joints2d: np.ndarray  # (N, C, 19, 2) float32 pixels per camera
    camera_ok: np.ndarray  # (N, C) bool: the camera sees this body well enough


@dataclasses.dataclass(frozen=True)
class Window:
    """``T`` frames of one body cut from a track: what one dataset example holds."""

    sequence: str
    body_id: int
    start_frame: int
    frames: np.ndarray  # (T,)
    joints3d: np.ndarray  # (T, 19, 3)
    confidence: np.ndarray  # (T, 19)
    cameras: tuple[str, ...]  # the C cameras chosen for this window
    joints2d: np.ndarray  # (C, T, 19, 2)


# --------------------------------------------------------------------------- files


def _load_json(path: pathlib.Path) -> object:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise PanopticDataError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PanopticDataError(f"{path}: malformed or truncated JSON ({e})") from None


def _matrix(value: object, shape: tuple[int, ...], what: str, path: pathlib.Path) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(shape)
    except (TypeError, ValueError):
        raise PanopticDataError(f"{path}: camera {what} is not a {shape} array") from None
    if not np.all(np.isfinite(arr)):
        raise PanopticDataError(f"{path}: camera {what} has non-finite values")
    return arr


def calibration_path(root: str | pathlib.Path, sequence: str) -> pathlib.Path:
    return pathlib.Path(root) / sequence / f"calibration_{sequence}.json"


def load_cameras(path: str | pathlib.Path, names: Sequence[str] | None = None) -> dict[str, Camera]:
    """HD cameras of a calibration file, by name ("00_07"); all of ``names`` must exist."""
    path = pathlib.Path(path)
    calib = _load_json(path)
    if not isinstance(calib, dict) or not isinstance(calib.get("cameras"), list):
        raise PanopticDataError(f"{path}: no 'cameras' list")
    cameras = {}
    for entry in calib["cameras"]:
        if not isinstance(entry, dict) or entry.get("type") != "hd":
            continue
        name = entry.get("name") or f"{entry.get('panel', 0):02d}_{entry.get('node', 0):02d}"
        if names is not None and name not in names:
            continue
        try:
            res = tuple(int(v) for v in entry.get("resolution", (1920, 1080)))
            cameras[name] = Camera(
                name=name,
                K=_matrix(entry["K"], (3, 3), f"{name} K", path),
                dist=_matrix(entry["distCoef"], (5,), f"{name} distCoef", path),
                R=_matrix(entry["R"], (3, 3), f"{name} R", path),
                t=_matrix(entry["t"], (3,), f"{name} t", path),
                resolution=(res[0], res[1]),
            )
        except KeyError as e:
            raise PanopticDataError(f"{path}: camera {name} has no {e.args[0]!r}") from None
    missing = [n for n in (names or ()) if n not in cameras]
    if missing:
        raise PanopticDataError(f"{path}: HD camera(s) {', '.join(missing)} not in the calibration")
    return cameras


def pose_files(root: str | pathlib.Path, sequence: str) -> list[tuple[int, pathlib.Path]]:
    """(frame number, path) of every pose file of a sequence, in frame order."""
    folder = pathlib.Path(root) / sequence / POSE_DIR
    if not folder.is_dir():
        raise PanopticDataError(f"{folder}: pose folder not found")
    found = []
    for p in folder.iterdir():
        m = _POSE_FILE.search(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def read_bodies(
    path: pathlib.Path, summary: ReadSummary, on_error: ErrorPolicy = "skip"
) -> dict[int, np.ndarray]:
    """Bodies of one pose file as {id: (19, 4) x, y, z, confidence}; bad bodies skipped."""
    try:
        data = _load_json(path)
    except PanopticDataError as e:
        summary.skip("malformed_file", on_error, str(e))
        return {}
    summary.files_read += 1
    bodies = data.get("bodies") if isinstance(data, dict) else None
    if not isinstance(bodies, list):
        summary.skip("malformed_file", on_error, f"{path}: no 'bodies' list")
        return {}
    if not bodies:
        summary.empty_frames += 1
    out = {}
    for body in bodies:
        values = body.get("joints19") if isinstance(body, dict) else None
        body_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(body_id, int) or not isinstance(values, list):
            summary.skip("malformed_body", on_error, f"{path}: body without integer 'id' or 'joints19'")
            continue
        if len(values) != skeleton.NUM_JOINTS * 4:
            summary.skip("wrong_joint_count", on_error,
                         f"{path}: body {body_id} has {len(values)} joint values, expected "
                         f"{skeleton.NUM_JOINTS * 4}")
            continue
        try:
            joints = np.asarray(values, dtype=np.float64).reshape(skeleton.NUM_JOINTS, 4)
        except (TypeError, ValueError):
            summary.skip("malformed_body", on_error, f"{path}: body {body_id} has non-numeric joints")
            continue
        if not np.all(np.isfinite(joints)):
            summary.skip("non_finite", on_error, f"{path}: body {body_id} has NaN or infinite values")
            continue
        if body_id in out:
            summary.skip("duplicate_id", on_error, f"{path}: body id {body_id} appears twice")
            continue
        out[body_id] = joints
    return out


# ---------------------------------------------------------------------- geometry


def project_points(points: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Project (..., 3) world points to (..., 2) pixels; also returns camera depth (...)."""
    x = points @ camera.R.T + camera.t
    depth = x[..., 2]
    xy = x[..., :2] / (depth[..., None] + 1e-5)
    k1, k2, p1, p2, k3 = camera.dist
    u, v = xy[..., 0], xy[..., 1]
    r2 = u * u + v * v
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    ud = u * radial + 2 * p1 * u * v + p2 * (r2 + 2 * u * u)
    vd = v * radial + 2 * p2 * u * v + p1 * (r2 + 2 * v * v)
    K = camera.K
    px = K[0, 0] * ud + K[0, 1] * vd + K[0, 2]
    py = K[1, 1] * vd + K[1, 2]
    return np.stack([px, py], axis=-1), depth


def joint_visibility(
    joints2d: np.ndarray, depth: np.ndarray, confidence: np.ndarray,
    resolution: tuple[int, int], conf_threshold: float = 0.1,
) -> np.ndarray:
    """Joints reconstructed with confidence > threshold, in front of and inside the image."""
    w, h = resolution
    inside = ((joints2d[..., 0] >= 0) & (joints2d[..., 0] <= w - 1)
              & (joints2d[..., 1] >= 0) & (joints2d[..., 1] <= h - 1))
    return (confidence > conf_threshold) & inside & (depth > 0)


def straighten_by_initial_frame(joints3d: np.ndarray) -> np.ndarray:
    """Rotate a (T, J, 3) window about the vertical (y) axis so that the first frame's
    shoulder line (left to right shoulder) points along +x."""
    v = joints3d[0, skeleton.JOINT_INDEX["r-shoulder"]] - joints3d[0, skeleton.JOINT_INDEX["l-shoulder"]]
    angle = math.atan2(v[2], v[0])
    c, s = math.cos(angle), math.sin(angle)
    # Row-vector rotation by -angle about y: z' = -x sin + z cos, x' = x cos + z sin.
    rot = np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]], dtype=joints3d.dtype)
    return joints3d @ rot


# ------------------------------------------------------------------ tracks/windows


def read_tracks(
    root: str | pathlib.Path, sequence: str, cameras: Sequence[str], *,
    joint_req: float = 0.9, conf_threshold: float = 0.1, on_error: ErrorPolicy = "skip",
    summary: ReadSummary | None = None,
) -> list[Track]:
    """Every body of a sequence as a track, with its projections into ``cameras``."""
    summary = summary if summary is not None else ReadSummary()
    cams = load_cameras(calibration_path(root, sequence), cameras)
    per_body: dict[int, list[tuple[int, np.ndarray]]] = collections.defaultdict(list)
    for frame, path in pose_files(root, sequence):
        for body_id, joints in read_bodies(path, summary, on_error).items():
            per_body[body_id].append((frame, joints))
    tracks = []
    for body_id in sorted(per_body):
        frames = np.array([f for f, _ in per_body[body_id]], dtype=np.int64)
        joints = np.stack([j for _, j in per_body[body_id]])
        xyz, conf = joints[..., :3], joints[..., 3]
        proj, ok = [], []
        for name in cameras:
            cam = cams[name]
            uv, depth = project_points(xyz, cam)
            visible = joint_visibility(uv, depth, conf, cam.resolution, conf_threshold)
            proj.append(uv)
            ok.append(visible.mean(axis=-1) > joint_req)
        tracks.append(Track(
            sequence=sequence, body_id=body_id, cameras=tuple(cameras), frames=frames,
            joints3d=xyz.astype(np.float32), confidence=conf.astype(np.float32),
            joints2d=np.stack(proj, axis=1).astype(np.float32), camera_ok=np.stack(ok, axis=1),
        ))
    return tracks


def window_starts(frames: np.ndarray, length: int, stride: int, frame_interval: int = 1) -> list[int]:
    """Indices into ``frames`` where a window of ``length`` frames, ``frame_interval``
    apart and with no missing frame in between, starts; consecutive starts ``stride`` apart
    within each gap-free run."""
    span = (length - 1) * frame_interval + 1
    starts = []
    run_start = 0
    for i in range(1, len(frames) + 1):
        if i == len(frames) or frames[i] != frames[i - 1] + 1:
            starts.extend(range(run_start, i - span + 1, stride))
            run_start = i
    return starts


def _choose_cameras(ok: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray | None:
    candidates = np.flatnonzero(ok)
    if len(candidates) < count:
        return None
    return np.sort(rng.choice(candidates, size=count, replace=False))


def iter_windows(
    track: Track, *, length: int, stride: int, frame_interval: int = 1,
    num_cameras: int = 1, min_cameras_3d: int = 0, seed: int = 0,
) -> Iterator[Window]:
    """Windows of one track whose every frame is seen well by the chosen cameras.

    ``num_cameras`` cameras are drawn (reproducibly from ``seed``, the sequence, the body
    and the start) among those that see all frames of the window. ``min_cameras_3d``
    additionally requires each frame to be seen by that many cameras of the track, the
    reference's test that a 3D pose is reliable (it uses 4).
    """
    for i in window_starts(track.frames, length, stride, frame_interval):
        idx = np.arange(i, i + length * frame_interval, frame_interval)
        ok = track.camera_ok[idx]
        if min_cameras_3d and ok.sum(axis=1).min() < min_cameras_3d:
            continue
        key = [seed, track.body_id, int(track.frames[i])] + list(track.sequence.encode())
        chosen = _choose_cameras(ok.all(axis=0), num_cameras, np.random.default_rng(key))
        if chosen is None:
            continue
        yield Window(
            sequence=track.sequence, body_id=track.body_id, start_frame=int(track.frames[i]),
            frames=track.frames[idx], joints3d=track.joints3d[idx],
            confidence=track.confidence[idx],
            cameras=tuple(track.cameras[c] for c in chosen),
            joints2d=np.transpose(track.joints2d[idx][:, chosen], (1, 0, 2, 3)),
        )


def available_sequences(root: str | pathlib.Path, wanted: Sequence[str] | None = None) -> list[str]:
    """Sequences under ``root`` that have a pose folder, restricted to ``wanted`` if given."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise PanopticDataError(f"{root}: Panoptic root folder not found")
    present = sorted(p.name for p in root.iterdir() if (p / POSE_DIR).is_dir())
    return [s for s in present if wanted is None or s in wanted]


SPLITS_FILE = "splits.json"


def split_sequences(root: str | pathlib.Path) -> dict[str, list[str]]:
    """Sequences of each split present under ``root``.

    ``<root>/splits.json`` ({"train": [...], "validation": [...]}) overrides the
    reference's lists (the synthetic generator writes one). Splits none of whose
    sequences are present are left out.
    """
    root = pathlib.Path(root)
    listed: dict[str, Sequence[str]] = {"train": TRAIN_SEQUENCES, "validation": VALIDATION_SEQUENCES}
    if (root / SPLITS_FILE).exists():
        listed = _load_json(root / SPLITS_FILE)
        if not isinstance(listed, dict) or not all(
                isinstance(v, list) and all(isinstance(s, str) for s in v) for v in listed.values()):
            raise PanopticDataError(f"{root / SPLITS_FILE}: expected {{split: [sequence, ...]}}")
    present = available_sequences(root)
    splits = {split: [s for s in seqs if s in present] for split, seqs in listed.items()}
    splits = {k: v for k, v in splits.items() if v}
    if not splits:
        raise PanopticDataError(
            f"{root}: none of the split sequences has a {POSE_DIR} folder here "
            f"(found: {', '.join(present) or 'nothing'})")
    return splits
