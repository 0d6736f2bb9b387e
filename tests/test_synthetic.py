"""The synthetic Panoptic writer: real-sample format, camera geometry, body plausibility."""

import collections
import json
import pathlib
import re
import zlib

import numpy as np
import pytest

from pose_vq.data import synthetic
from pose_vq.data.skeleton import JOINT_INDEX as J
from tests import run_command

SAMPLE = (pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "panoptic_sample"
          / "160906_band1")
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(),
                                  reason="../shared/data/panoptic_sample absent")

FRAMES, OFFSET = 60, 100
KW = {"num_frames": FRAMES, "num_people": 3, "seed": 7, "frame_offset": OFFSET,
      "missing_joint_prob": 0.02, "late_entry_prob": 0.5}
# Joint pairs on one rigid segment (or parent and child): their distance never changes.
RIGID = [("l-shoulder", "l-elbow"), ("l-elbow", "l-wrist"), ("r-shoulder", "r-elbow"),
         ("r-elbow", "r-wrist"), ("l-hip", "l-knee"), ("l-knee", "l-ankle"), ("r-hip", "r-knee"),
         ("r-knee", "r-ankle"), ("l-hip", "r-hip"), ("l-shoulder", "r-shoulder"),
         ("neck", "mid-hip"), ("neck", "nose"), ("l-eye", "r-eye"), ("l-ear", "nose"),
         ("r-eye", "r-ear")]
PLAUSIBLE_CM = {("l-shoulder", "l-elbow"): (22, 36), ("l-elbow", "l-wrist"): (20, 32),
                ("l-hip", "l-knee"): (33, 50), ("l-knee", "l-ankle"): (33, 50),
                ("l-hip", "r-hip"): (15, 28), ("l-shoulder", "r-shoulder"): (28, 42),
                ("neck", "mid-hip"): (38, 58)}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synthetic.write_synthetic_root(tmp_path_factory.mktemp("synth"), ["synth_a", "synth_b"],
                                          **KW)


@pytest.fixture(scope="module")
def motion():
    """Long tracks of every motion kind, straight from the generator."""
    return [synthetic.generate_sequence(300, 4, seed=s, missing_joint_prob=0.02) for s in range(4)]


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _frames(root, seq):
    paths = sorted((root / seq / synthetic.POSE_DIR).glob("*.json"))
    return [json.loads(p.read_text()) for p in paths]


def _valid_joints(poses):
    """(..., 19, 4) -> (..., 19, 3) with absent people and missing joints as NaN."""
    return np.where(poses[..., 3:] >= 0, poses[..., :3], np.nan)


def _dot(a, b):
    return np.einsum("...i,...i->...", a, b)


def _project(X, cam):
    """OpenCV pinhole with k1, k2, p1, p2, k3 distortion: (n, 3) world -> (n, 2) px, depth."""
    Xc = X @ np.array(cam["R"]).T + np.array(cam["t"]).ravel()
    x, y = Xc[:, 0] / Xc[:, 2], Xc[:, 1] / Xc[:, 2]
    k1, k2, p1, p2, k3 = cam["distCoef"]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    (fx, skew, cx), (_, fy, cy), _ = cam["K"]
    return np.stack([fx * xd + skew * yd + cx, fy * yd + cy], axis=-1), Xc[:, 2]


def _skeleton_text(text):
    """A file's text with every number replaced, to compare formatting alone."""
    return re.sub(r"-?\d+(\.\d+)?(e[-+]\d+)?", "N", text)


def test_same_seed_is_byte_identical_and_seed_or_name_changes_motion(root, tmp_path):
    assert _files(synthetic.write_synthetic_root(tmp_path / "a", ["synth_a", "synth_b"], **KW)) \
        == _files(root)
    other = synthetic.write_synthetic_root(tmp_path / "b", ["synth_a"], **{**KW, "seed": 8})
    for name in ("calibration_synth_a.json", f"{synthetic.POSE_DIR}/body3DScene_00000130.json"):
        assert (other / "synth_a" / name).read_bytes() != (root / "synth_a" / name).read_bytes()
    a, b = _frames(root, "synth_a")[-1]["bodies"], _frames(root, "synth_b")[-1]["bodies"]
    assert a[0]["joints19"] != b[0]["joints19"]


def test_layout_and_schema(root):
    splits = json.loads((root / "splits.json").read_text())
    assert splits == {"train": ["synth_a"], "validation": ["synth_b"]}
    for seq in ("synth_a", "synth_b"):
        names = sorted(p.name for p in (root / seq / synthetic.POSE_DIR).iterdir())
        assert names == [f"body3DScene_{OFFSET + i:08d}.json" for i in range(FRAMES)]
        calib = json.loads((root / seq / f"calibration_{seq}.json").read_text())
        assert list(calib) == ["calibDataSource", "cameras"]
        assert isinstance(calib["calibDataSource"], str)
        for cam in calib["cameras"]:
            assert list(cam) == ["name", "type", "resolution", "panel", "node", "K", "distCoef",
                                 "R", "t"]
            assert cam["name"] == f"{cam['panel']:02d}_{cam['node']:02d}"
            assert np.shape(cam["K"]) == (3, 3) and np.shape(cam["R"]) == (3, 3)
            assert np.shape(cam["t"]) == (3, 1) and len(cam["distCoef"]) == 5
            assert cam["K"][2] == [0, 0, 1] and cam["K"][1][0] == 0
        hd = [c for c in calib["cameras"] if c["type"] == "hd"]
        assert [c["name"] for c in hd] == [f"00_{n:02d}" for n in range(31)]
        assert all(c["resolution"] == [1920, 1080] for c in hd)
        vga = [c for c in calib["cameras"] if c["type"] != "hd"]  # a reader must filter these
        assert vga and all(c["type"] == "vga" and c["resolution"] == [640, 480] for c in vga)
        frames = _frames(root, seq)
        np.testing.assert_allclose(np.diff([f["univTime"] for f in frames]), 1000 / 29.97,
                                   atol=2e-3)  # ms, written with 8 significant digits
        for f in frames:
            assert list(f) == ["version", "univTime", "fpsType", "bodies"]
            assert f["version"] == 0.7 and f["fpsType"] == "hd_29_97"
            for body in f["bodies"]:
                assert list(body) == ["id", "joints19"] and isinstance(body["id"], int)
                assert len(body["joints19"]) == 76
                assert all(isinstance(v, (int, float)) for v in body["joints19"])


@needs_sample
def test_text_formatting_matches_real_sample(tmp_path):
    root = synthetic.write_synthetic_root(tmp_path, ["s"], num_frames=2, num_people=3,
                                          late_entry_prob=0, early_exit_prob=0)
    real = (SAMPLE / synthetic.POSE_DIR / "body3DScene_00000168.json").read_bytes().decode()
    ours = (root / "s" / synthetic.POSE_DIR / "body3DScene_00000000.json").read_bytes().decode()
    assert _skeleton_text(ours) == _skeleton_text(real)  # 3 bodies each; CRLF and spacing too

    real_calib = _skeleton_text((SAMPLE / "calibration_160906_band1.json").read_text())
    ours_calib = _skeleton_text((root / "s" / "calibration_s.json").read_text())
    head = real_calib[:real_calib.index("\t\t{")]
    assert ours_calib.startswith(head.replace('"N_calib_norm"', '"s_calib_norm"'))
    real_cameras = set(real_calib.split("\t\t{")[1:])
    assert set(ours_calib.split("\t\t{")[1:-1]) <= real_cameras  # the last one closes the file
    real_cam = json.loads((SAMPLE / "calibration_160906_band1.json").read_text())["cameras"][0]
    ours_cam = json.loads((root / "s" / "calibration_s.json").read_text())["cameras"][0]
    assert {k: type(v) for k, v in ours_cam.items()} == {k: type(v) for k, v in real_cam.items()}


def test_cameras_are_rotations_on_a_dome_looking_at_the_centre(root):
    calib = json.loads((root / "synth_a" / "calibration_synth_a.json").read_text())
    # the file holds exactly what make_calibration returns for the sequence's camera stream
    assert calib == synthetic.make_calibration([7, zlib.crc32(b"synth_a"), 0],
                                               source="synth_a_calib_norm")
    for cam in calib["cameras"]:
        R, t = np.array(cam["R"]), np.array(cam["t"]).ravel()
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        assert abs(np.linalg.det(R) - 1) < 1e-9
        centre = -R.T @ t
        to_stage = synthetic.CAPTURE_CENTRE - centre
        assert 250 <= np.linalg.norm(to_stage) <= 330 and centre[1] < -50  # above the floor
        assert R[2] @ to_stage / np.linalg.norm(to_stage) > np.cos(np.radians(5))
        (fx, _, cx), (_, fy, cy), _ = cam["K"]
        if cam["type"] == "hd":
            assert 1380 < fx < 1700 and abs(fy / fx - 1) < 0.01
            assert abs(cx - 960) < 50 and abs(cy - 540) < 50 and abs(cam["distCoef"][0]) < 0.25


def test_bones_rigid_plausible_and_knees_bend_one_way(motion):
    kinds = set()
    for seq in motion:
        kinds.update(seq["kinds"])
        for p in range(seq["poses"].shape[1]):
            joints = _valid_joints(seq["poses"][seq["present"][:, p], p])
            for a, b in RIGID:
                length = np.linalg.norm(joints[:, J[a]] - joints[:, J[b]], axis=-1)
                length = length[np.isfinite(length)]
                assert np.ptp(length) <= 1e-6 * length.mean(), (a, b)
                lo, hi = PLAUSIBLE_CM.get((a, b), (2, 60))
                assert lo <= length.mean() <= hi, (a, b, length.mean())
            right = joints[:, J["r-hip"]] - joints[:, J["l-hip"]]
            right /= np.linalg.norm(right, axis=-1, keepdims=True)
            for s in "lr":
                thigh = joints[:, J[f"{s}-knee"]] - joints[:, J[f"{s}-hip"]]
                shin = joints[:, J[f"{s}-ankle"]] - joints[:, J[f"{s}-knee"]]
                sine = _dot(np.cross(thigh, shin), right)
                sine /= np.linalg.norm(thigh, axis=-1) * np.linalg.norm(shin, axis=-1)
                assert np.nanmax(sine) < np.sin(np.radians(3))  # flexion has a negative sine
                cosine = _dot(thigh, shin) / np.linalg.norm(thigh, axis=-1) / np.linalg.norm(
                    shin, axis=-1)
                assert np.nanmin(cosine) > np.cos(np.radians(150))  # no impossible flexion
            feet = _dot(joints[:, J["r-ankle"]] - joints[:, J["l-ankle"]], right)
            assert np.nanmin(feet) > 0  # legs never cross
            assert np.nanmax(joints[..., 1]) < 0  # everything above the floor (y down)
            assert -200 < np.nanmin(joints[:, J["nose"], 1]) < -125  # head up where it belongs
    assert kinds == set(synthetic.MOTION_KINDS)


def test_head_and_confidence_are_consistent_and_smooth(motion):
    for seq in motion:
        poses = seq["poses"]
        joints = _valid_joints(poses)
        right = joints[..., J["r-shoulder"], :] - joints[..., J["l-shoulder"], :]
        forward = np.cross(right, [0.0, 1.0, 0.0])  # x right, y down -> z forward
        eyes = joints[..., J["r-eye"], :] - joints[..., J["l-eye"], :]
        ears = (joints[..., J["l-ear"], :] + joints[..., J["r-ear"], :]) / 2
        assert np.nanmin(_dot(eyes, right)) > 0
        assert np.nanmin(_dot(joints[..., J["nose"], :] - ears, forward)) > 0
        valid = poses[..., 3] >= 0
        both = valid[1:] & valid[:-1]
        assert np.linalg.norm(np.diff(joints, axis=0), axis=-1)[both].max() < 20  # cm per frame
        assert poses[..., 3][valid].min() >= 0.2 and poses[..., 3][valid].max() <= 0.95
        assert np.abs(np.diff(poses[..., 3], axis=0)[both]).max() < 0.05


def test_people_stay_apart(motion):
    for seq in motion:
        hips = _valid_joints(seq["poses"])[:, :, J["mid-hip"]][..., [0, 2]]
        for p in range(hips.shape[1]):
            for q in range(p):
                gap = np.linalg.norm(hips[:, p] - hips[:, q], axis=-1)
                assert np.isfinite(gap).any() and np.nanmin(gap) >= 70


def test_most_hd_cameras_see_each_person(root):
    for seq in ("synth_a", "synth_b"):
        calib = json.loads((root / seq / f"calibration_{seq}.json").read_text())
        hd = [c for c in calib["cameras"] if c["type"] == "hd"]
        tracks = {}
        for frame in _frames(root, seq):
            for body in frame["bodies"]:
                j = np.reshape(body["joints19"], (19, 4))
                tracks.setdefault(body["id"], []).append(j[j[:, 3] >= 0, :3])
        assert len(tracks) == 3
        for points in map(np.concatenate, tracks.values()):
            sees = []
            for cam in hd:
                uv, depth = _project(points, cam)
                assert (depth > 0).all()
                inside = (uv[:, 0] >= 0) & (uv[:, 0] < 1920) & (uv[:, 1] >= 0) & (uv[:, 1] < 1080)
                sees.append(inside.mean() >= 0.9)
            assert np.mean(sees) >= 0.75


def test_missing_joints_and_late_entries(tmp_path):
    seq = synthetic.generate_sequence(90, 3, seed=1, missing_joint_prob=0.05,
                                      late_entry_prob=1.0, early_exit_prob=0.0)
    first = seq["present"].argmax(axis=0)
    assert (first > 0).all() and (seq["present"].sum(axis=0) == 90 - first).all()
    missing = seq["poses"][..., 3] < 0
    assert 0.02 < missing[seq["present"]].mean() < 0.08
    assert (seq["poses"][missing] == [0.0, 0.0, 0.0, -1.0]).all()

    root = synthetic.write_synthetic_root(tmp_path, ["solo"], num_frames=40, num_people=1,
                                          missing_joint_prob=0.05, late_entry_prob=1.0,
                                          early_exit_prob=1.0)
    frames = _frames(root, "solo")
    counts = [len(f["bodies"]) for f in frames]
    assert counts[0] == 0 and counts[-1] == 0 and 0 < sum(counts) < 40  # empty files exist
    joints = np.array([b["joints19"] for f in frames for b in f["bodies"]]).reshape(-1, 4)
    gone = joints[:, 3] == -1
    assert gone.any() and (joints[gone, :3] == 0).all() and (joints[~gone, 3] >= 0.2).all()
    texts = [p.read_text() for p in (root / "solo" / synthetic.POSE_DIR).glob("*.json")]
    assert any("0, 0, 0, -1" in text for text in texts)


def test_cli_writes_root(tmp_path, capsys):
    """The argparse spelling it had (space-separated values, --frame-offset) still works."""
    run_command(synthetic, ["--root", str(tmp_path), "--sequences", "x,y", "--validation", "x",
                            "--frames", "3", "--people", "2", "--seed", "4", "--frame-offset", "9"])
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert splits == {"train": ["y"], "validation": ["x"]}
    assert (tmp_path / "y" / synthetic.POSE_DIR / "body3DScene_00000011.json").is_file()
    assert "x, y" in capsys.readouterr().out


def test_labels_are_the_generated_kinds_and_merge(root, tmp_path):
    """labels.json holds each body's motion kind as generate_sequence draws it; a later
    write into the same root keeps the sequences written before."""
    text = (root / synthetic.LABELS_FILE).read_text()
    expected = {name: {str(i): kind for i, kind in enumerate(synthetic.generate_sequence(
        FRAMES, 3, seed=[7, zlib.crc32(name.encode()), 1], missing_joint_prob=0.02,
        late_entry_prob=0.5, early_exit_prob=0.3)["kinds"])} for name in ("synth_a", "synth_b")}
    assert json.loads(text) == expected and text.endswith("}\n")
    synthetic.write_synthetic_root(tmp_path, ["y", "x"], num_frames=2, num_people=1, seed=1)
    first = json.loads((tmp_path / synthetic.LABELS_FILE).read_text())
    synthetic.write_synthetic_root(tmp_path, ["z", "x"], num_frames=2, num_people=2, seed=1)
    text = (tmp_path / synthetic.LABELS_FILE).read_text()
    labels = json.loads(text)
    assert list(labels) == ["x", "y", "z"] and labels["y"] == first["y"]
    assert list(labels["x"]) == ["0", "1"] and set(labels["z"]) == {"0", "1"}
    assert set(labels["x"].values()) <= set(synthetic.MOTION_KINDS)


def test_missing_joints_read_back_absent(root):
    """The generator's missing joints (written as Panoptic does, 0, 0, 0, -1) are absent to
    the reader, so a synthetic build draws and fits only the joints it generated."""
    from pose_vq.data import panoptic

    seq = synthetic.generate_sequence(FRAMES, 3, seed=[7, zlib.crc32(b"synth_a"), 1],
                                      missing_joint_prob=0.02, late_entry_prob=0.5,
                                      early_exit_prob=0.3)
    tracks = panoptic.read_tracks(root, "synth_a", ["00_00"])
    assert sum((~t.present).sum() for t in tracks) > 0
    for t in tracks:
        written = seq["poses"][t.frames - OFFSET, t.body_id]
        np.testing.assert_array_equal(t.present, written[..., 3] >= 0)


def test_balanced_kinds_give_every_split_every_kind(tmp_path):
    """Dealt per split in shuffled rounds, splits of 8 and 12 bodies (2 and 3 sequences of
    4 people) have every kind, no kind more than once above another; labels.json holds the
    kinds the motion was made from. Drawn (the default), this root's held-out split misses
    some. Off is the default call's root, byte for byte."""
    names = [f"s{i}" for i in range(5)]
    splits = {"train": names[:3], "validation": names[3:]}
    kw = {"num_frames": 3, "num_people": 4, "seed": 2, "splits": splits}
    root = synthetic.write_synthetic_root(tmp_path / "balanced", names, balanced=True, **kw)
    labels = json.loads((root / synthetic.LABELS_FILE).read_text())
    for split, seqs in splits.items():
        counts = collections.Counter(k for s in seqs for k in labels[s].values())
        assert set(counts) == set(synthetic.MOTION_KINDS), split
        assert max(counts.values()) - min(counts.values()) <= 1, split
    seq = synthetic.generate_sequence(3, 4, seed=[2, zlib.crc32(b"s4"), 1],
                                      kinds=list(labels["s4"].values()))
    frame = json.loads((root / "s4" / synthetic.POSE_DIR / "body3DScene_00000001.json").read_text())
    for body in frame["bodies"]:
        np.testing.assert_allclose(np.reshape(body["joints19"], (19, 4)),
                                   seq["poses"][1, body["id"]], rtol=1e-5, atol=1e-3)
    drawn = synthetic.write_synthetic_root(tmp_path / "drawn", names, **kw)
    drawn_labels = json.loads((drawn / synthetic.LABELS_FILE).read_text())
    assert len({k for s in splits["validation"] for k in drawn_labels[s].values()}) < 7
    off = synthetic.write_synthetic_root(tmp_path / "off", names, balanced=False, **kw)
    assert _files(off) == _files(drawn)
    with pytest.raises(ValueError, match="expected 4 of walk"):
        synthetic.generate_sequence(3, 4, kinds=["walk"] * 3)
