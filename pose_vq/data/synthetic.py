"""Procedural stand-in for the CMU Panoptic Studio dataset.

Writes folders in Panoptic's exact on-disk layout (``calibration_<seq>.json`` and
``hdPose3d_stage1_coco19/body3DScene_%08d.json``, same keys, number precision and line
endings) from forward-kinematic human motion, so the Panoptic reader, the data builders
and demos run without the multi-gigabyte download; ``labels.json`` adds what Panoptic
lacks, each body's motion kind as an action label. World units are centimetres with y
pointing down (floor at y = 0), as in Panoptic.

    python -m pose_vq.data.synthetic --root=/tmp/panoptic_synth --frames=300 --people=3
"""

from __future__ import annotations

import json
import pathlib
import zlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from absl import app, flags

from pose_vq import errors
from pose_vq.data import panoptic
from pose_vq.data.skeleton import JOINT_INDEX, NUM_JOINTS

FPS = 29.97
POSE_DIR, SPLITS_FILE, LABELS_FILE = panoptic.POSE_DIR, panoptic.SPLITS_FILE, panoptic.LABELS_FILE
CAPTURE_CENTRE = np.array([0.0, -90.0, 0.0])  # cm: centre of the stage, ~1 m above the floor
HD_CAMERAS = 31
MOTION_KINDS = ("walk", "wave", "squat", "jumping_jacks", "idle_turn", "arm_circles", "reach")

_J = JOINT_INDEX
_DEG = np.pi / 180.0
Angles = dict[str, np.ndarray]  # joint angle (radians) or root offset (cm) name -> (frames,)


def _rot(axis: int, angle: np.ndarray | float) -> np.ndarray:
    """Right-handed rotations about axis 0/1/2 (x/y/z) for an array of angles -> (..., 3, 3)."""
    angle = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    out = np.zeros(angle.shape + (3, 3))
    out[..., axis, axis] = 1.0
    out[..., i, i], out[..., i, j], out[..., j, i], out[..., j, j] = c, -s, s, c
    return out


# ---------------------------------------------------------------------------------- cameras


def _look_at(centre: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    """OpenCV world->camera rotation: rows are camera x (right), y (down), z (forward)."""
    z = (target - centre) / np.linalg.norm(target - centre)
    down = np.array([0.0, 1.0, 0.0])  # world y points down, and so does image y
    y = down - z * (down @ z)
    y /= np.linalg.norm(y)
    return _rot(2, roll) @ np.stack([np.cross(y, z), y, z])


def _round(value: float, digits: int) -> float:
    """Round to the significant digits Panoptic writes, so memory and disk agree."""
    return float(f"{value:.{digits}g}")


def make_calibration(
    seed: int | Sequence[int] = 0, *, num_vga: int = 8, source: str = "synth_calib_norm"
) -> dict:
    """A Panoptic calibration: ``num_vga`` VGA distractors, then HD cameras 00_00..00_30.

    Cameras sit 270-320 cm from the capture centre at elevations from -2 to 50 degrees and
    look at it, like the real dome. Values are rounded to the precision written on disk,
    so the returned dict equals the parsed file.
    """
    rng = np.random.default_rng(seed)
    cameras = []
    az0 = rng.uniform(0.0, 2.0 * np.pi)
    for idx in range(num_vga + HD_CAMERAS):
        hd = idx >= num_vga  # VGA entries come first, as in the real files
        az = az0 + idx * np.pi * (3.0 - np.sqrt(5.0))  # golden angle: spread around the ring
        el, radius = rng.uniform(-2.0, 50.0) * _DEG, rng.uniform(270.0, 320.0)
        target = CAPTURE_CENTRE + rng.normal(0.0, 5.0, 3)
        centre = CAPTURE_CENTRE + radius * np.array(
            [np.cos(el) * np.sin(az), -np.sin(el), np.cos(el) * np.cos(az)])
        R = _look_at(centre, target, rng.normal(0.0, 2.0) * _DEG)
        if hd:  # most Panoptic HD lenses sit near f = 1396 px, a few are zoomed in further
            f = rng.normal(1396.0, 3.0) if rng.random() < 0.7 else rng.uniform(1400.0, 1650.0)
            w, h = 1920, 1080
            dist = [rng.uniform(-0.24, -0.18), rng.uniform(0.15, 0.22)]
        else:
            f, w, h = rng.uniform(740.0, 750.0), 640, 480
            dist = [rng.uniform(-0.34, -0.31), rng.uniform(0.04, 0.15)]
        dist += [*rng.normal(0.0, 5e-4, 2), rng.uniform(-0.06, 0.07)]  # p1, p2, k3
        K = [[f, 0.0, w / 2 + rng.normal(0.0, 10.0)],
             [0.0, f * (1.0 + rng.normal(0.0, 2e-3)), h / 2 + rng.normal(0.0, 10.0)],
             [0.0, 0.0, 1.0]]
        panel, node = (0, idx - num_vga) if hd else (idx + 1, int(rng.integers(1, 25)))
        cameras.append({
            "name": f"{panel:02d}_{node:02d}", "type": "hd" if hd else "vga",
            "resolution": [w, h], "panel": panel, "node": node,
            "K": [[_round(v, 6) for v in row] for row in K],
            "distCoef": [_round(v, 6) for v in dist],
            "R": [[_round(v, 10) for v in row] for row in R],
            "t": [[_round(v, 10)] for v in -R @ centre],
        })
    return {"calibDataSource": source, "cameras": cameras}


# ----------------------------------------------------------------------------------- motion


def _wave(t: np.ndarray, rng: np.random.Generator, freq: tuple[float, float],
          size: int | None = None) -> np.ndarray:
    """Sinusoid(s) with random frequency (Hz) and phase: smooth, cheap, never in lockstep."""
    return np.sin(2 * np.pi * rng.uniform(*freq, size) * t + rng.uniform(0, 2 * np.pi, size))


def _walk(t: np.ndarray, rng: np.random.Generator) -> Angles:
    """Pace back and forth on a line (compact enough to share the stage), turning at the ends."""
    reach = rng.uniform(25, 50)
    turn = 2 * np.pi * rng.uniform(0.08, 0.14) * t + rng.uniform(0, 2 * np.pi)
    gait = 2 * np.pi * rng.uniform(0.75, 0.95) * t + rng.uniform(0, 2 * np.pi)
    out = {"dz": reach * np.sin(turn), "lean": np.full_like(t, 4 * _DEG),
           "yaw": np.pi / 2 * (1 - np.tanh(4 * np.cos(turn)) / np.tanh(4)),  # face the way on
           "twist": 5 * _DEG * np.sin(gait)}
    pace = np.cos(turn) ** 2  # strides shrink to nothing where the walker stops to turn
    for s, off in (("r", 0.0), ("l", np.pi)):
        out[f"{s}_hip_flex"] = (5 + 22 * pace * np.sin(gait + off)) * _DEG
        out[f"{s}_knee"] = (6 + 50 * pace * np.maximum(0, np.cos(gait + off - 0.3)) ** 2) * _DEG
        out[f"{s}_sh_flex"] = -18 * _DEG * pace * np.sin(gait + off)  # arms swing against legs
        out[f"{s}_elbow"] = (20 + 10 * np.sin(gait + off)) * _DEG
    return out


def _wave_hand(t: np.ndarray, rng: np.random.Generator) -> Angles:
    """One arm out to the side, forearm up (humerus turned 90 degrees), waving at the elbow."""
    s = str(rng.choice(["r", "l"]))
    amp = 30 * (0.6 + 0.4 * _wave(t, rng, (0.1, 0.3)))
    return {f"{s}_sh_abd": np.full_like(t, rng.uniform(70, 100) * _DEG),
            f"{s}_sh_flex": np.full_like(t, 15 * _DEG), f"{s}_sh_twist": np.full_like(t, 90 * _DEG),
            f"{s}_elbow": (75 + amp * _wave(t, rng, (1.2, 2.2))) * _DEG,
            "head_yaw": np.full_like(t, (25 if s == "r" else -25) * _DEG)}


def _squat(t: np.ndarray, rng: np.random.Generator) -> Angles:
    """Knees ahead of the feet, torso and arms forward for balance."""
    depth = rng.uniform(60, 95) * _DEG * (0.5 - 0.5 * _wave(t, rng, (0.25, 0.4)))
    out = {"lean": 0.45 * depth}
    for s in "rl":
        out.update({f"{s}_hip_flex": depth, f"{s}_knee": 1.35 * depth + 3 * _DEG,
                    f"{s}_hip_abd": 0.15 * depth, f"{s}_sh_flex": 0.9 * depth})
    return out


def _jumping_jacks(t: np.ndarray, rng: np.random.Generator) -> Angles:
    """Arms and legs open and close together, with a hop on each transition."""
    phase = 2 * np.pi * rng.uniform(0.7, 1.0) * t + rng.uniform(0, 2 * np.pi)
    spread, hop = 0.5 - 0.5 * np.cos(phase), np.sin(phase) ** 2
    out = {"hop": rng.uniform(4, 10) * hop}
    for s in "rl":
        out.update({f"{s}_sh_abd": (12 + 150 * spread) * _DEG,
                    f"{s}_hip_abd": (3 + 14 * spread) * _DEG,
                    f"{s}_knee": (5 + 15 * hop) * _DEG, f"{s}_hip_flex": 3 * hop * _DEG})
    return out


def _idle_turn(t: np.ndarray, rng: np.random.Generator) -> Angles:
    """Standing, shifting weight and slowly turning to look around."""
    return {"yaw": rng.uniform(40, 120) * _DEG * _wave(t, rng, (0.05, 0.15)),
            "dx": 3 * _wave(t, rng, (0.2, 0.4)), "side": 3 * _DEG * _wave(t, rng, (0.2, 0.4)),
            "head_yaw": 20 * _DEG * _wave(t, rng, (0.1, 0.3))}


def _arm_circles(t: np.ndarray, rng: np.random.Generator) -> Angles:
    """Both arms held out sideways, tracing circles forwards or backwards."""
    direction = rng.choice([-1, 1])
    phase = direction * 2 * np.pi * rng.uniform(0.5, 1.0) * t + rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(20, 40) * _DEG
    return {f"{s}_{k}": v for s in "rl" for k, v in
            (("sh_abd", 90 * _DEG + amp * np.sin(phase)), ("sh_flex", amp * np.cos(phase)))}


def _reach(t: np.ndarray, rng: np.random.Generator) -> Angles:
    """Alternate arms reach forward and up, straightening the elbow, while slowly turning."""
    phase = 2 * np.pi * rng.uniform(0.3, 0.6) * t + rng.uniform(0, 2 * np.pi)
    out = {"yaw": 30 * _DEG * _wave(t, rng, (0.05, 0.1)),
           "lean": 8 * _DEG * (1 + np.sin(phase) ** 2)}
    for s, off in (("r", 0.0), ("l", np.pi)):
        ext = 0.5 - 0.5 * np.cos(phase + off)
        out.update({f"{s}_sh_flex": (10 + 120 * ext) * _DEG,
                    f"{s}_elbow": (5 + 80 * (1 - ext)) * _DEG})
    return out


_MOTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], Angles]] = dict(zip(
    MOTION_KINDS, (_walk, _wave_hand, _squat, _jumping_jacks, _idle_turn, _arm_circles, _reach)))


def _angles(kind: str, t: np.ndarray, rng: np.random.Generator) -> Angles:
    """All angles of one motion kind: unset joints rest, small smooth jitter keeps it alive."""
    out = {k: v + np.zeros_like(t) for k, v in _MOTIONS[kind](t, rng).items()}
    for k in ("yaw", "lean", "side", "twist", "hop", "dx", "dz",
              "head_yaw", "head_pitch", "head_roll"):
        out.setdefault(k, np.zeros_like(t))
    rest = {"sh_abd": 8, "sh_flex": 0, "sh_twist": 0, "elbow": 12, "hip_abd": 3, "hip_flex": 0,
            "knee": 4}  # degrees; abducted arms and hips keep limbs clear of the body
    for s in "rl":
        for k, deg in rest.items():
            out.setdefault(f"{s}_{k}", np.full_like(t, deg * _DEG))
    out["head_pitch"] += (6 + 5 * _wave(t, rng, (0.1, 0.4))) * _DEG
    for k in ("head_yaw", "head_roll", "twist", "side", "r_sh_flex", "l_sh_flex", "r_elbow",
              "l_elbow"):
        out[k] += 2 * _DEG * _wave(t, rng, (0.1, 0.5))
    return out


def _body(height: float) -> dict[str, float]:
    """Adult segment lengths (cm) as fractions of stature, so every bone is fixed per person."""
    fractions = {"torso": 0.28, "shoulder": 0.1, "hip": 0.06, "upper_arm": 0.17,
                 "forearm": 0.15, "thigh": 0.245, "shin": 0.245, "ankle": 0.045, "scale": 1 / 170}
    return {k: v * height for k, v in fractions.items()}


def _down(length: float) -> np.ndarray:
    """A bone of ``length`` hanging straight down in its parent's frame (y points down)."""
    return np.array([0.0, length, 0.0])


def _pose(a: Angles, body: dict[str, float]) -> np.ndarray:
    """Forward kinematics: angles -> (frames, 19, 3) joints around a pelvis above the origin.

    Body axes are x right, y down, z forward. Knees only flex backwards and elbows only
    forwards (before the humerus twist); the pelvis height puts the lower ankle on the floor.
    """
    pelvis = _rot(1, a["yaw"])
    torso = pelvis @ _rot(1, a["twist"]) @ _rot(0, -a["lean"]) @ _rot(2, a["side"])
    head = torso @ _rot(1, a["head_yaw"]) @ _rot(0, a["head_pitch"]) @ _rot(2, a["head_roll"])
    J = np.zeros((len(a["yaw"]), NUM_JOINTS, 3))
    J[:, _J["neck"]] = torso @ np.array([0.0, -body["torso"], 0.0])
    face = {"nose": (0, -16, 10), "l-eye": (-3.2, -19.5, 8), "r-eye": (3.2, -19.5, 8),
            "l-ear": (-7.5, -18, -1), "r-ear": (7.5, -18, -1)}  # cm for a 170 cm adult
    for name, offset in face.items():  # rigid in the head frame, which pivots at the neck
        J[:, _J[name]] = J[:, _J["neck"]] + head @ (body["scale"] * np.array(offset, float))
    for s, sgn in (("r", 1.0), ("l", -1.0)):  # mirrored: abduction and twist change sign
        collar = np.array([sgn * body["shoulder"], 2 * body["scale"], 0.0])  # 2 cm below neck
        shoulder = J[:, _J["neck"]] + torso @ collar
        arm = (torso @ _rot(2, -sgn * a[f"{s}_sh_abd"]) @ _rot(0, a[f"{s}_sh_flex"])
               @ _rot(1, sgn * a[f"{s}_sh_twist"]))
        elbow = shoulder + arm @ _down(body["upper_arm"])
        wrist = elbow + arm @ _rot(0, a[f"{s}_elbow"]) @ _down(body["forearm"])
        hip = pelvis @ np.array([sgn * body["hip"], 0.0, 0.0])
        thigh = pelvis @ _rot(2, -sgn * a[f"{s}_hip_abd"]) @ _rot(0, a[f"{s}_hip_flex"])
        knee = hip + thigh @ _down(body["thigh"])
        ankle = knee + thigh @ _rot(0, -a[f"{s}_knee"]) @ _down(body["shin"])
        for name, xyz in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist),
                          ("hip", hip), ("knee", knee), ("ankle", ankle)):
            J[:, _J[f"{s}-{name}"]] = xyz
    lowest = np.logaddexp(J[:, _J["l-ankle"], 1], J[:, _J["r-ankle"], 1])  # smooth max, ~1 cm
    J[..., 1] -= (lowest + body["ankle"] + a["hop"])[:, None]
    return J


def _place_on_stage(local: list[np.ndarray], present: np.ndarray, rng: np.random.Generator,
                    radius: float, min_sep: float) -> list[tuple[float, np.ndarray]]:
    """Rejection-sample each person's heading and spot so pelvis paths stay on stage and apart.

    ``local`` holds each person's (frames, 2) x/z path in their own frame; returns
    (heading, world path) per person. The whole layout restarts when someone finds no
    room, since one unlucky early spot can block everyone after it.
    """
    for _ in range(100):
        placed: list[tuple[float, np.ndarray]] = []
        for p, xz in enumerate(local):
            for _ in range(100):
                base, home = rng.uniform(0, 2 * np.pi), rng.uniform(-radius, radius, 2)
                c, s = np.cos(base), np.sin(base)
                path = home + xz @ np.array([[c, -s], [s, c]])  # the same turn as yaw `base`
                gaps = [np.linalg.norm(path - other, axis=-1)[present[:, p] & present[:, q]]
                        for q, (_, other) in enumerate(placed)]  # only while both are there
                if (np.linalg.norm(path, axis=-1) <= radius).all() and all(
                        (gap >= min_sep).all() for gap in gaps):
                    placed.append((base, path))
                    break
            else:
                break
        else:
            return placed
    raise ValueError(f"cannot fit {len(local)} people {min_sep} cm apart on a stage of "
                     f"radius {radius} cm; pass a larger stage_radius")


def generate_sequence(
    num_frames: int = 300,
    num_people: int = 3,
    *,
    seed: int | Sequence[int] = 0,
    missing_joint_prob: float = 0.01,
    late_entry_prob: float = 0.3,
    early_exit_prob: float = 0.3,
    stage_radius: float | None = None,
    min_separation: float = 70.0,
    motions: Sequence[str] = MOTION_KINDS,
    kinds: Sequence[str] | None = None,
) -> dict:
    """One sequence's motion as arrays, so tests can check it without parsing files.

    Returns ``poses`` (frames, people, 19, 4) of x, y, z, confidence (NaN where a person
    is absent, ``0, 0, 0, -1`` for a missing joint), ``present`` (frames, people) with one
    contiguous run per person, ``ids``, ``kinds`` (motion per person) and ``heights`` (cm).
    Pelvis paths stay ``min_separation`` apart and within ``stage_radius`` of the centre
    (default 85 cm, growing for more than 4 people) so most HD cameras see everyone whole.
    ``kinds`` gives each person's motion kind in order (``balanced_kinds``); without it
    each person draws one from ``motions``.
    """
    if kinds is not None and (len(kinds) != num_people or set(kinds) - set(MOTION_KINDS)):
        raise ValueError(f"kinds {list(kinds)}: expected {num_people} of {', '.join(MOTION_KINDS)}")
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames) / FPS
    present = np.zeros((num_frames, num_people), dtype=bool)
    drawn, angles = [], []
    for p in range(num_people):
        start, end, can_shorten = 0, num_frames, num_frames > 2  # the middle frame always stays
        if rng.random() < late_entry_prob and can_shorten:
            start = int(rng.integers(1, num_frames // 2 + 1))
        if rng.random() < early_exit_prob and can_shorten:
            end = int(rng.integers(num_frames // 2 + 1, num_frames))
        present[start:end, p] = True
        drawn.append(str(rng.choice(list(motions))) if kinds is None else kinds[p])
        angles.append(_angles(drawn[-1], t, rng))
    radius = stage_radius or 85.0 + 15.0 * max(0, num_people - 4)
    local = [np.stack([a["dx"], a["dz"]], axis=-1) for a in angles]
    layout = _place_on_stage(local, present, rng, radius, min_separation)
    heights = rng.uniform(150.0, 195.0, num_people)
    poses = np.full((num_frames, num_people, NUM_JOINTS, 4), np.nan)
    for p, (a, (base, path)) in enumerate(zip(angles, layout)):
        joints = _pose({**a, "yaw": a["yaw"] + base}, _body(heights[p]))
        joints[..., [0, 2]] += path[:, None, :]
        conf = (rng.uniform(0.35, 0.8, NUM_JOINTS)
                + 0.12 * _wave(t[:, None], rng, (0.05, 0.5), NUM_JOINTS)
                + 0.06 * _wave(t[:, None], rng, (0.3, 1.0), NUM_JOINTS))
        full = np.concatenate([joints, np.clip(conf, 0.2, 0.95)[..., None]], axis=-1)
        poses[present[:, p], p] = full[present[:, p]]
    missing = (rng.random(present.shape + (NUM_JOINTS,)) < missing_joint_prob) & present[..., None]
    poses[missing] = (0.0, 0.0, 0.0, -1.0)  # how Panoptic writes a joint it did not reconstruct
    return {"poses": poses, "present": present, "ids": np.arange(num_people), "kinds": drawn,
            "heights": heights}


# ---------------------------------------------------------------------------------- writing


def _calibration_text(calib: dict) -> str:
    """Serialise like Panoptic's calibration files: tab-indented, one matrix row a line."""
    def row(values, digits):
        return "[" + ",".join(f"{v:.{digits}g}" for v in values) + "]"

    def matrix(rows, digits):
        return "[\n" + ",\n".join("\t\t\t\t" + row(r, digits) for r in rows) + "\n\t\t\t]"

    cams = [f'\t\t{{\n\t\t\t"name": "{c["name"]}",\n\t\t\t"type": "{c["type"]}",\n'
            f'\t\t\t"resolution": {row(c["resolution"], 6)},\n\t\t\t"panel": {c["panel"]},\n'
            f'\t\t\t"node": {c["node"]},\n\t\t\t"K": {matrix(c["K"], 6)},\n'
            f'\t\t\t"distCoef": {row(c["distCoef"], 6)},\n\t\t\t"R": {matrix(c["R"], 10)},\n'
            f'\t\t\t"t": {matrix(c["t"], 10)}\n\t\t}}' for c in calib["cameras"]]
    return (f'{{\n\t"calibDataSource": "{calib["calibDataSource"]}",\n\t"cameras": [\n'
            + ",\n".join(cams) + "\n\t]\n}\n")


def _frame_text(univ_time: float, bodies: list[tuple[int, np.ndarray]]) -> str:
    """Serialise like Panoptic's body3DScene files: CRLF lines, 6 significant digits."""
    parts = [f'{{ "id": {pid},\r\n"joints19": ['
             + ", ".join(f"{v:.6g}" for v in joints.ravel()) + "]\r\n}" for pid, joints in bodies]
    return (f'{{ "version": 0.7, \r\n"univTime" :{univ_time:.8g},\r\n"fpsType" :"hd_29_97",\r\n'
            '"bodies" :\r\n[\r\n' + ",\r\n".join(parts) + ("\r\n" if parts else "") + "] }")


def balanced_kinds(splits: Mapping[str, Sequence[str]], num_people: int, seed: int = 0
                   ) -> dict[str, list[str]]:
    """Each sequence's motion kinds, person by person, so that every split of at least
    ``len(MOTION_KINDS)`` bodies has every kind: a split's bodies (its sequences in order,
    their people in order) take the kinds in rounds, each round every kind once in a fresh
    order drawn from ``default_rng([seed, crc32(split), 3])``. A held-out split whose
    bodies miss a kind could not score it, and drawing each body's kind leaves that to
    chance (the README's first probes run held out 5 of the 7)."""
    out = {}
    for split, names in splits.items():
        rng = np.random.default_rng([seed, zlib.crc32(split.encode()), 3])
        bodies = len(names) * num_people
        rounds = -(-bodies // len(MOTION_KINDS))
        order = [MOTION_KINDS[i] for _ in range(rounds) for i in rng.permutation(len(MOTION_KINDS))]
        for j, name in enumerate(names):
            out[name] = order[j * num_people:(j + 1) * num_people]
    return out


def write_synthetic_root(
    root: str | pathlib.Path,
    sequences: Sequence[str] = ("synth_000", "synth_001", "synth_002"),
    *,
    num_frames: int = 300,
    num_people: int = 3,
    seed: int = 0,
    frame_offset: int = 0,
    missing_joint_prob: float = 0.01,
    late_entry_prob: float = 0.3,
    early_exit_prob: float = 0.3,
    num_vga: int = 8,
    splits: Mapping[str, Sequence[str]] | None = None,
    balanced: bool = False,
) -> pathlib.Path:
    """Write every sequence in Panoptic's layout under ``root``, plus ``splits.json`` and
    ``labels.json`` (each body's motion kind, the action label Panoptic lacks).

    Each sequence draws from ``default_rng([seed, crc32(name), stream])``, so its content
    depends only on its name and the seed, and reruns are byte-identical. ``splits``
    defaults to the last sequence for validation and the rest for training, since no
    synthetic name is in the reference's split lists. ``labels.json`` keeps the entries of
    sequences written earlier into the same root. ``balanced`` assigns the motion kinds by
    ``balanced_kinds`` over ``splits`` (a sequence in none draws its own), so every split
    of at least 7 bodies has every kind; off, each body draws its kind. Returns ``root``.
    """
    root = pathlib.Path(root)
    labels = panoptic.read_labels(root)
    if splits is None:
        splits = ({"train": sequences[:-1], "validation": sequences[-1:]} if len(sequences) > 1
                  else {"train": sequences})
    assigned = balanced_kinds(splits, num_people, seed) if balanced else {}
    for name in sequences:
        seq_seed = [seed, zlib.crc32(name.encode())]  # + stream: 0 cameras, 1 motion, 2 clock
        pose_dir = root / name / POSE_DIR
        pose_dir.mkdir(parents=True, exist_ok=True)
        for stale in pose_dir.glob("body3DScene_*.json"):  # keep the frames of one run only
            stale.unlink()
        calib = make_calibration([*seq_seed, 0], num_vga=num_vga, source=f"{name}_calib_norm")
        (root / name / f"calibration_{name}.json").write_bytes(_calibration_text(calib).encode())
        seq = generate_sequence(num_frames, num_people, seed=[*seq_seed, 1],
                                missing_joint_prob=missing_joint_prob,
                                late_entry_prob=late_entry_prob, early_exit_prob=early_exit_prob,
                                kinds=assigned.get(name))
        labels[name] = dict(zip(map(int, seq["ids"]), seq["kinds"]))
        t0 = np.random.default_rng([*seq_seed, 2]).uniform(1e4, 9e4)  # ms, like univTime
        for i in range(num_frames):
            frame = frame_offset + i
            bodies = [(int(seq["ids"][p]), seq["poses"][i, p])
                      for p in np.flatnonzero(seq["present"][i])]
            text = _frame_text(t0 + frame * 1000.0 / FPS, bodies)
            (pose_dir / f"body3DScene_{frame:08d}.json").write_bytes(text.encode())
    splits_text = json.dumps({k: list(v) for k, v in splits.items()}, indent=2)
    (root / SPLITS_FILE).write_text(splits_text + "\n")
    labels_text = json.dumps({s: {str(b): k for b, k in sorted(labels[s].items())}
                              for s in sorted(labels)}, indent=2)
    (root / LABELS_FILE).write_text(labels_text + "\n")
    return root


FLAGS = flags.FLAGS


@errors.one_line_failures
def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    sequences = [s for s in FLAGS.sequences if s]
    splits = None
    if FLAGS.validation is not None:
        validation = [s for s in FLAGS.validation if s]
        splits = {"train": [s for s in sequences if s not in validation], "validation": validation}
    root = write_synthetic_root(FLAGS.root, sequences, num_frames=FLAGS.frames,
                                num_people=FLAGS.people, seed=FLAGS.seed,
                                frame_offset=FLAGS.frame_offset, splits=splits)
    print(f"wrote {', '.join(sequences)} to {root}")


def define_flags() -> None:
    """The command's flags (defined only when it runs, as every pose_vq command's are)."""
    flags.DEFINE_string("root", None, "Output folder (a Panoptic root).", required=True)
    flags.DEFINE_list("sequences", ["synth_000", "synth_001", "synth_002"], "Sequence names.")
    flags.DEFINE_list("validation", None, "Validation sequences (default: the last one); the "
                      "others are for training.")
    flags.DEFINE_integer("frames", 300, "Frames per sequence.")
    flags.DEFINE_integer("people", 3, "People per sequence.")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_integer("frame_offset", 0, "Number of the first frame file.")
    flags.DEFINE_alias("frame-offset", "frame_offset")  # the name it had before the absl flags
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
