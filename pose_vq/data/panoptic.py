"""CMU Panoptic Studio reader: calibration, 3D poses, tracks, windows, labels.

Reads ``<root>/<seq>/calibration_<seq>.json`` and
``<root>/<seq>/hdPose3d_stage1_coco19/body3DScene_<frame>.json`` exactly as the
dataset ships them. Poses are in centimetres, world y pointing down. Every problem
with a file is reported with the file's path; recoverable problems (a malformed frame
file, a body with bad values) are skipped and counted when ``on_error="skip"``.

A joint is *present* when its confidence exceeds ``conf_threshold`` (0.1). Panoptic
writes the joints it did not reconstruct with confidence -1, usually at (0, 0, 0) and
sometimes at a stale position: they are absent whatever their coordinates, and tracks and
windows carry a ``present`` mask beside the raw values. Input that no studio can produce
(coordinates beyond ``MAX_COORD_CM``, a body collapsed to a point, bones far outside human
range, confidences outside [-1, 1]) is skipped and counted; a camera whose R is not a
rotation or whose K is not an intrinsic matrix stops the read.

Windows follow the reference implementation's definition of a usable frame (a camera
sees a body when more than ``joint_req`` of its joints are present and project inside
the image) but are cut from *consecutive* frames of one body only; the reference
concatenated frames across gaps and across bodies.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import pathlib
import re
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np

from pose_vq import errors
from pose_vq.data import skeleton
from pose_vq.data.camera import Camera, project_points

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


def sequence_family(sequence: str) -> str:
    """The kind of capture a Panoptic sequence name spells ("160906_band1" -> "band"): its
    letters after the date, so sequences of one activity share a label."""
    m = re.match(r"(?:\d{6}_)?([A-Za-z]+)", sequence)
    return m.group(1) if m else ""


# The families of the reference's sequences: the activity labels real Panoptic data gets.
SEQUENCE_FAMILIES: tuple[str, ...] = tuple(sorted(
    {sequence_family(s) for s in TRAIN_SEQUENCES + VALIDATION_SEQUENCES}))

# HD camera nodes (panel 0) the reference treats as egocentric-like and exocentric.
EGO_CAMERAS: tuple[str, ...] = tuple(f"00_{n:02d}" for n in (0, 3, 5, 8, 9, 14, 15, 23, 24, 25))
EXO_CAMERAS: tuple[str, ...] = tuple(f"00_{n:02d}" for n in (1, 2, 4, 6, 7, 10, 13, 17, 19, 28))

# The reference rotates poses by this matrix (row vectors: (x, y, z) -> (x, z, -y), z up)
# and the camera rotations by R @ M; the two cancel in projection, so projecting the
# raw Panoptic coordinates with the raw calibration is the same camera model.
REFERENCE_AXES = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

POSE_DIR = "hdPose3d_stage1_coco19"
POSE_FILE = re.compile(r"body3DScene_(\d+)\.json$")
ErrorPolicy = Literal["skip", "raise"]

# Plausibility limits of what a capture studio can produce (centimetres).
MAX_COORD_CM = 1000.0  # every coordinate, and every camera centre, within 10 m of the origin
DEGENERATE_CM = 0.5  # a body whose present joints all lie within 5 mm of their mean
MAX_BONE_CM = 150.0  # no rendered limb is longer (real extremes: about 80 cm)
MIN_LONGEST_BONE_CM = 5.0  # a body whose longest limb is shorter is not human-sized
ROTATION_TOLERANCE = 1e-3  # |det R - 1| and max |R R^T - I|


class PanopticDataError(errors.ActionableError, ValueError):
    """A Panoptic file is missing or malformed; the message names the file."""


@dataclasses.dataclass
class ReadSummary:
    """What a read found, skipped and dropped, and why, so a build can report it.

    The counts add up: ``files_found = files_read + skipped_malformed_file``;
    ``bodies_read = bodies_kept +`` the other ``skipped_*`` (bodies); ``windows =
    windows_kept + dropped_*``, where ``windows`` counts every window start of a gap-free
    run plus one per track (``dropped_length``) or gap-free run (``dropped_gaps``) too
    short to hold a window.
    """

    files_found: int = 0
    files_read: int = 0
    empty_frames: int = 0
    bodies_read: int = 0
    bodies_kept: int = 0
    tracks: int = 0
    windows: int = 0
    windows_kept: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def skip(self, reason: str, policy: ErrorPolicy, message: str) -> None:
        if policy == "raise":
            raise PanopticDataError(message)
        self.skipped[reason] += 1

    def drop(self, reason: str) -> None:
        self.windows += 1
        self.dropped[reason] += 1

    def as_dict(self) -> dict[str, int]:
        counts = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("skipped", "dropped")}
        return {**counts, **{f"skipped_{k}": v for k, v in sorted(self.skipped.items())},
                **{f"dropped_{k}": v for k, v in sorted(self.dropped.items())}}


@dataclasses.dataclass
class Track:
    """All consecutive-or-not frames of one body in one sequence, seen by ``cameras``."""

    sequence: str
    body_id: int
    cameras: tuple[str, ...]
    calibration: tuple[Camera, ...]  # of ``cameras``, in their order
    frames: np.ndarray  # (N,) int frame numbers, increasing
    joints3d: np.ndarray  # (N, 19, 3) float32 cm, Panoptic world axes
    confidence: np.ndarray  # (N, 19) float32, -1 where the joint was not reconstructed
    present: np.ndarray  # (N, 19) bool: confidence > the reader's threshold
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
    present: np.ndarray  # (T, 19) bool; absent joints keep their raw values above
    cameras: tuple[str, ...]  # the C cameras chosen for this window
    calibration: tuple[Camera, ...]  # of ``cameras``, in their order
    joints2d: np.ndarray  # (C, T, 19, 2)


# --------------------------------------------------------------------------- files


def _load_json(path: pathlib.Path) -> object:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise PanopticDataError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise PanopticDataError(f"{path}: malformed or truncated JSON ({e})") from None
    except OSError as e:
        raise PanopticDataError(f"{path}: cannot be read ({e.strerror or e})") from None


def _matrix(value: object, shape: tuple[int, ...], what: str, path: pathlib.Path) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(shape)
    except (TypeError, ValueError):
        raise PanopticDataError(f"{path}: camera {what} is not a {shape} array") from None
    if not np.all(np.isfinite(arr)):
        raise PanopticDataError(f"{path}: camera {what} has non-finite values")
    return arr


def _camera_problem(cam: Camera) -> str | None:
    """Why a camera cannot be a calibrated studio camera (None when it can)."""
    R, K = cam.R, cam.K
    det, orth = np.linalg.det(R), np.abs(R @ R.T - np.eye(3)).max()
    if abs(det - 1) > ROTATION_TOLERANCE or orth > ROTATION_TOLERANCE:
        return f"R is not a rotation (det {det:.4g}, max |R R^T - I| {orth:.2g})"
    w, h = cam.resolution
    if min(w, h) < 1:
        return f"resolution {w}x{h} is not positive"
    if (K[0, 0] <= 0 or K[1, 1] <= 0 or np.abs(K[[1, 2, 2], [0, 0, 1]]).max() > 1e-9
            or abs(K[2, 2] - 1) > 1e-9 or not (0 <= K[0, 2] <= w and 0 <= K[1, 2] <= h)):
        return ("K is not an intrinsic matrix (positive focal lengths, principal point in "
                f"the {w}x{h} image, last row 0 0 1): {K.tolist()}")
    centre = np.linalg.norm(R.T @ cam.t)
    if centre > MAX_COORD_CM:
        return (f"t puts the camera {centre / 100:.3g} m from the origin "
                f"(limit {MAX_COORD_CM / 100:g} m)")
    return None


def calibration_path(root: str | pathlib.Path, sequence: str) -> pathlib.Path:
    return pathlib.Path(root) / sequence / f"calibration_{sequence}.json"


def load_cameras(path: str | pathlib.Path, names: Sequence[str] | None = None) -> dict[str, Camera]:
    """HD cameras of a calibration file, by name ("00_07"); all of ``names`` must exist.

    Every camera returned was checked: R a rotation, K an intrinsic matrix, the camera
    within the studio; one that is not stops the read (its projections would be garbage).
    """
    path = pathlib.Path(path)
    calib = _load_json(path)
    if not isinstance(calib, dict) or not isinstance(calib.get("cameras"), list):
        raise PanopticDataError(f"{path}: no 'cameras' list")
    cameras = {}
    for entry in calib["cameras"]:
        if not isinstance(entry, dict) or entry.get("type") != "hd":
            continue
        name = entry.get("name")
        if not isinstance(name, str):
            raise PanopticDataError(f"{path}: an HD camera has no name")
        if names is not None and name not in names:
            continue
        try:
            res = _matrix(entry.get("resolution", (1920, 1080)), (2,), f"{name} resolution", path)
            cam = Camera(
                name=name,
                K=_matrix(entry["K"], (3, 3), f"{name} K", path),
                dist=_matrix(entry["distCoef"], (5,), f"{name} distCoef", path),
                R=_matrix(entry["R"], (3, 3), f"{name} R", path),
                t=_matrix(entry["t"], (3,), f"{name} t", path),
                resolution=(int(res[0]), int(res[1])),
            )
        except KeyError as e:
            raise PanopticDataError(f"{path}: camera {name} has no {e.args[0]!r}") from None
        problem = _camera_problem(cam)
        if problem:
            raise PanopticDataError(f"{path}: camera {name}: {problem}")
        cameras[name] = cam
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
        m = POSE_FILE.search(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def _body_problem(joints: np.ndarray, conf_threshold: float = 0.1) -> tuple[str, str] | None:
    """(reason, message) when a (19, 4) body cannot be a person in the studio, else None.

    Coordinates and confidences are checked on every joint (absent ones are stored as
    read); the shape checks use the present joints only.
    """
    if not np.all(np.isfinite(joints)):
        return "non_finite", "has NaN or infinite values"
    conf = joints[:, 3]
    if np.abs(conf).max() > 1:
        return "bad_confidence", f"has confidence {conf[np.abs(conf).argmax()]:.4g} outside [-1, 1]"
    xyz = joints[:, :3]
    if np.abs(xyz).max() > MAX_COORD_CM:
        return ("out_of_volume", f"has a coordinate of {xyz.flat[np.abs(xyz).argmax()]:.4g} cm, "
                f"beyond the {MAX_COORD_CM / 100:g} m studio volume")
    present = conf > conf_threshold
    points = xyz[present]
    if not len(points):
        return "degenerate", "has no present joint"
    if np.linalg.norm(points - points.mean(axis=0), axis=-1).max() < DEGENERATE_CM:
        return ("degenerate", f"is degenerate: its {len(points)} present joints lie within "
                f"{DEGENERATE_CM * 10:g} mm of one point")
    limbs = [(a, b) for a, b in skeleton.LIMBS if present[a] and present[b]]
    if limbs:
        length = np.array([np.linalg.norm(xyz[a] - xyz[b]) for a, b in limbs])
        if length.max() > MAX_BONE_CM or length.max() < MIN_LONGEST_BONE_CM:
            a, b = limbs[int(length.argmax())]
            return ("bone_length", f"has a {skeleton.JOINT_NAMES[a]}-{skeleton.JOINT_NAMES[b]} "
                    f"bone of {length.max():.4g} cm as its longest (human range: "
                    f"{MIN_LONGEST_BONE_CM:g} to {MAX_BONE_CM:g} cm)")
    return None


def read_bodies(
    path: pathlib.Path, summary: ReadSummary, on_error: ErrorPolicy = "skip",
    conf_threshold: float = 0.1,
) -> dict[int, np.ndarray]:
    """Bodies of one pose file as {id: (19, 4) x, y, z, confidence}; bad bodies skipped."""
    summary.files_found += 1
    try:
        data = _load_json(path)
    except PanopticDataError as e:
        summary.skip("malformed_file", on_error, str(e))
        return {}
    bodies = data.get("bodies") if isinstance(data, dict) else None
    if not isinstance(bodies, list):
        summary.skip("malformed_file", on_error, f"{path}: no 'bodies' list")
        return {}
    summary.files_read += 1
    summary.bodies_read += len(bodies)
    if not bodies:
        summary.empty_frames += 1
    out = {}
    for body in bodies:
        values = body.get("joints19") if isinstance(body, dict) else None
        body_id = body.get("id") if isinstance(body, dict) else None
        if type(body_id) is not int or not isinstance(values, list):
            summary.skip("malformed_body", on_error, f"{path}: body without integer 'id' or 'joints19'")
            continue
        if len(values) != skeleton.NUM_JOINTS * 4:
            summary.skip("wrong_joint_count", on_error,
                         f"{path}: body {body_id} has {len(values)} joint values, expected "
                         f"{skeleton.NUM_JOINTS * 4}")
            continue
        try:
            joints = np.asarray(values, dtype=np.float64).reshape(skeleton.NUM_JOINTS, 4)
        except (TypeError, ValueError, OverflowError):
            summary.skip("malformed_body", on_error, f"{path}: body {body_id} has non-numeric joints")
            continue
        problem = _body_problem(joints, conf_threshold)
        if problem:
            summary.skip(problem[0], on_error, f"{path}: body {body_id} {problem[1]}")
            continue
        if body_id in out:
            summary.skip("duplicate_id", on_error, f"{path}: body id {body_id} appears twice")
            continue
        out[body_id] = joints
    summary.bodies_kept += len(out)
    return out


# ---------------------------------------------------------------------- geometry


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
    """Rotate a (T, J, 3) window about the vertical (y) axis so that the shoulder line
    (left to right shoulder) of the first frame showing both shoulders points along +x.

    Absent joints are NaN here and take no part; a window that never shows both
    shoulders is returned unrotated.
    """
    ls, rs = skeleton.JOINT_INDEX["l-shoulder"], skeleton.JOINT_INDEX["r-shoulder"]
    shoulders = joints3d[:, [ls, rs]]
    both = np.flatnonzero(np.isfinite(shoulders).all(axis=(1, 2)))
    if not len(both):
        return joints3d
    v = shoulders[both[0], 1] - shoulders[both[0], 0]
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
    """Every body of a sequence as a track, with its projections into ``cameras`` (whose
    calibration the track carries).

    A joint is present when its confidence exceeds ``conf_threshold``; absent joints keep
    their raw values (and projections) but are marked in ``Track.present``.
    """
    summary = summary if summary is not None else ReadSummary()
    cams = load_cameras(calibration_path(root, sequence), cameras)
    per_body: dict[int, list[tuple[int, np.ndarray]]] = collections.defaultdict(list)
    for frame, path in pose_files(root, sequence):
        for body_id, joints in read_bodies(path, summary, on_error, conf_threshold).items():
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
            sequence=sequence, body_id=body_id, cameras=tuple(cameras),
            calibration=tuple(cams[name] for name in cameras), frames=frames,
            joints3d=xyz.astype(np.float32), confidence=conf.astype(np.float32),
            present=conf > conf_threshold,
            joints2d=np.stack(proj, axis=1).astype(np.float32), camera_ok=np.stack(ok, axis=1),
        ))
    summary.tracks += len(tracks)
    return tracks


def _runs(frames: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges of the gap-free runs of consecutive frame numbers."""
    cuts = [0, *(np.flatnonzero(np.diff(frames) != 1) + 1), len(frames)]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def window_starts(frames: np.ndarray, length: int, stride: int, frame_interval: int = 1) -> list[int]:
    """Indices into ``frames`` where a window of ``length`` frames, ``frame_interval``
    apart and with no missing frame in between, starts; consecutive starts ``stride`` apart
    within each gap-free run."""
    span = (length - 1) * frame_interval + 1
    return [i for a, b in _runs(frames) for i in range(a, b - span + 1, stride)]


def _choose_cameras(ok: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray | None:
    candidates = np.flatnonzero(ok)
    if len(candidates) < count:
        return None
    return np.sort(rng.choice(candidates, size=count, replace=False))


def iter_windows(
    track: Track, *, length: int, stride: int, frame_interval: int = 1,
    num_cameras: int = 1, min_cameras_3d: int = 0, seed: int = 0,
    summary: ReadSummary | None = None,
) -> Iterator[Window]:
    """Windows of one track whose every frame is seen well by the chosen cameras.

    ``num_cameras`` cameras are drawn (reproducibly from ``seed``, the sequence, the body
    and the start) among those that see all frames of the window. ``min_cameras_3d``
    additionally requires each frame to be seen by that many cameras of the track, the
    reference's test that a 3D pose is reliable (it uses 4). Every window not yielded is
    counted in ``summary`` by reason: ``length`` (the track is shorter than a window),
    ``gaps`` (a gap-free run of it is), ``visibility`` (a frame seen by fewer than
    ``min_cameras_3d`` cameras), ``joint_req`` (fewer than ``num_cameras`` cameras see
    more than ``joint_req`` of the joints in every frame).
    """
    summary = summary if summary is not None else ReadSummary()
    span = (length - 1) * frame_interval + 1
    if len(track.frames) < span:
        summary.drop("length")
        return
    for a, b in _runs(track.frames):
        if b - a < span:
            summary.drop("gaps")
    for i in window_starts(track.frames, length, stride, frame_interval):
        idx = np.arange(i, i + length * frame_interval, frame_interval)
        ok = track.camera_ok[idx]
        if min_cameras_3d and ok.sum(axis=1).min() < min_cameras_3d:
            summary.drop("visibility")
            continue
        key = [seed, track.body_id, int(track.frames[i])] + list(track.sequence.encode())
        chosen = _choose_cameras(ok.all(axis=0), num_cameras, np.random.default_rng(key))
        if chosen is None:
            summary.drop("joint_req")
            continue
        summary.windows += 1
        summary.windows_kept += 1
        yield Window(
            sequence=track.sequence, body_id=track.body_id, start_frame=int(track.frames[i]),
            frames=track.frames[idx], joints3d=track.joints3d[idx],
            confidence=track.confidence[idx], present=track.present[idx],
            cameras=tuple(track.cameras[c] for c in chosen),
            calibration=tuple(track.calibration[c] for c in chosen),
            joints2d=np.transpose(track.joints2d[idx][:, chosen], (1, 0, 2, 3)),
        )


def available_sequences(root: str | pathlib.Path, wanted: Sequence[str] | None = None) -> list[str]:
    """Sequences under ``root`` that have a pose folder, restricted to ``wanted`` if given."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise PanopticDataError(f"{root}: Panoptic root folder not found")
    present = sorted(p.name for p in root.iterdir() if (p / POSE_DIR).is_dir())
    return [s for s in present if wanted is None or s in wanted]


SPLITS_FILE = "splits.json"  # {split: [sequence, ...]}, read by split_sequences
LABELS_FILE = "labels.json"  # {sequence: {body id: label}}, read by read_labels


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


def read_labels(root: str | pathlib.Path) -> dict[str, dict[int, str]]:
    """``<root>/labels.json`` as {sequence: {body id: label}}; {} when there is none.

    The synthetic generator writes one (each body's motion kind); real Panoptic has none.
    """
    path = pathlib.Path(root) / LABELS_FILE
    if not path.exists():
        return {}
    data = _load_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise PanopticDataError(f"{path}: expected {{sequence: {{body id: label}}}}")
    labels = {}
    for sequence, bodies in data.items():
        for body_id, label in bodies.items():
            if not re.fullmatch(r"-?\d+", body_id):
                raise PanopticDataError(
                    f"{path}: {sequence}: body id {body_id!r} is not an integer")
            if not isinstance(label, str):
                raise PanopticDataError(f"{path}: {sequence} body {body_id}: label {label!r} "
                                        "is not a string")
        labels[sequence] = {int(b): label for b, label in bodies.items()}
    return labels
