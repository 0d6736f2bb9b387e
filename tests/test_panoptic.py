"""Panoptic reader: camera math by hand, the real sample, windows, and bad input."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from pose_vq.data import modes, panoptic, skeleton, synthetic

SAMPLE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "panoptic_sample"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/data/panoptic_sample absent")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("panoptic")
    return synthetic.write_synthetic_root(root, ["synth_a"], num_frames=40, num_people=2, seed=3,
                                          late_entry_prob=0.0, early_exit_prob=0.0)


def _camera(dist=(0.1, 0.01, 0.001, 0.002, 0.0001)):
    return panoptic.Camera(name="00_00", K=np.array([[1000.0, 0, 960], [0, 1000, 540], [0, 0, 1]]),
                           dist=np.array(dist), R=np.eye(3), t=np.array([0.0, 0, 100]),
                           resolution=(1920, 1080))


def test_projection_matches_hand_computation():
    # x_cam = (10, 20, 100) -> (0.1, 0.2); r2 = 0.05;
    # radial = 1 + 0.1*0.05 + 0.01*0.05^2 + 0.0001*0.05^3 = 1.0050250125
    # u' = 0.1*radial + 2*0.001*0.1*0.2 + 0.002*(0.05 + 2*0.01) = 0.10068250125
    # v' = 0.2*radial + 2*0.002*0.1*0.2 + 0.001*(0.05 + 2*0.04) = 0.2012150025
    uv, depth = panoptic.project_points(np.array([[10.0, 20.0, 0.0]]), _camera())
    np.testing.assert_allclose(uv[0], [1060.68250125, 741.2150025], rtol=1e-7)
    assert depth[0] == 100.0


def test_reference_axes_cancel_in_projection():
    rng = np.random.default_rng(0)
    pts = rng.normal(0, 50, size=(7, 3))
    cam = _camera()
    angle = 0.3
    cam = panoptic.Camera(**{**cam.__dict__, "R": np.array(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])})
    moved = panoptic.Camera(**{**cam.__dict__, "R": cam.R @ panoptic.REFERENCE_AXES})
    a, _ = panoptic.project_points(pts, cam)
    b, _ = panoptic.project_points(pts @ panoptic.REFERENCE_AXES, moved)
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_visibility_rules():
    uv = np.array([[10.0, 10.0], [-1.0, 5.0], [100.0, 1079.5], [5.0, 5.0], [5.0, 5.0]])
    depth = np.array([1.0, 1.0, 1.0, -1.0, 1.0])
    conf = np.array([0.5, 0.5, 0.5, 0.5, 0.05])
    vis = panoptic.joint_visibility(uv, depth, conf, (1920, 1080))
    assert vis.tolist() == [True, False, False, False, False]


def test_straighten_aligns_first_shoulders_with_x():
    rng = np.random.default_rng(1)
    joints = rng.normal(0, 40, size=(5, skeleton.NUM_JOINTS, 3))
    out = panoptic.straighten_by_initial_frame(joints)
    ls, rs = skeleton.JOINT_INDEX["l-shoulder"], skeleton.JOINT_INDEX["r-shoulder"]
    v = out[0, rs] - out[0, ls]
    assert abs(v[2]) < 1e-9 and v[0] > 0
    np.testing.assert_allclose(out[..., 1], joints[..., 1])  # vertical axis untouched
    np.testing.assert_allclose(np.linalg.norm(out[3, 4] - out[2, 7]),
                               np.linalg.norm(joints[3, 4] - joints[2, 7]))


def test_window_starts_respect_gaps_and_stride():
    frames = np.array(list(range(0, 10)) + list(range(11, 21)))
    assert panoptic.window_starts(frames, 5, 3) == [0, 3, 10, 13]
    assert panoptic.window_starts(frames, 3, 4, frame_interval=2) == [0, 4, 10, 14]
    assert panoptic.window_starts(frames[:3], 5, 1) == []


@needs_sample
def test_real_sample_tracks():
    tracks = panoptic.read_tracks(SAMPLE, "160906_band1", [f"00_{n:02d}" for n in range(31)])
    assert [t.body_id for t in tracks] == [0, 1, 2]
    for t in tracks:
        assert t.frames.tolist() == list(range(168, 188))
        assert t.joints2d.shape == (20, 31, 19, 2) and t.camera_ok.shape == (20, 31)
        assert t.camera_ok.any()
        # Cameras that see a body put its confident joints inside the image.
        f, c = np.argwhere(t.camera_ok)[0]
        good = t.confidence[f] > 0.1
        uv = t.joints2d[f, c][good]
        assert np.all((uv >= 0) & (uv < [1920, 1080]))
    # A joint that Panoptic did not reconstruct reads as confidence -1.
    assert (tracks[0].confidence == -1).any()


@needs_sample
def test_real_sample_calibration_only_sequence():
    cams = panoptic.load_cameras(SAMPLE / "160422_ultimatum1" / "calibration_160422_ultimatum1.json",
                                 panoptic.EXO_CAMERAS)
    assert sorted(cams) == sorted(panoptic.EXO_CAMERAS)
    assert panoptic.available_sequences(SAMPLE) == ["160906_band1"]


def test_windows_choose_cameras_that_see_every_frame(synth_root):
    tracks = panoptic.read_tracks(synth_root, "synth_a", panoptic.EXO_CAMERAS)
    windows = [w for t in tracks for w in panoptic.iter_windows(t, length=8, stride=5, num_cameras=3,
                                                                 min_cameras_3d=4)]
    assert windows
    again = [w for t in tracks for w in panoptic.iter_windows(t, length=8, stride=5, num_cameras=3,
                                                               min_cameras_3d=4)]
    assert [w.cameras for w in windows] == [w.cameras for w in again]
    track = {t.body_id: t for t in tracks}
    for w in windows:
        t = track[w.body_id]
        idx = np.searchsorted(t.frames, w.frames)
        cols = [t.cameras.index(c) for c in w.cameras]
        assert t.camera_ok[np.ix_(idx, cols)].all()
        assert w.joints2d.shape == (3, 8, 19, 2)
        np.testing.assert_array_equal(w.joints2d[1], t.joints2d[idx, cols[1]])


# ----------------------------------------------------------------------- bad input


@pytest.fixture
def copy_root(synth_root, tmp_path):
    dst = tmp_path / "root"
    shutil.copytree(synth_root, dst)
    return dst


def _pose_file(root, i):
    return sorted((root / "synth_a" / panoptic.POSE_DIR).glob("*.json"))[i]


@pytest.mark.parametrize("corrupt, reason", [
    (lambda p: p.write_text(p.read_text()[:100]), "malformed_file"),
    (lambda p: p.write_text(json.dumps({"bodies": [{"id": 0, "joints19": [1.0] * 75}]})),
     "wrong_joint_count"),
    (lambda p: p.write_text(json.dumps({"bodies": [{"id": 0, "joints19": [float("nan")] * 76}]})),
     "non_finite"),
    (lambda p: p.write_text(p.read_text().replace('"bodies"', '"corpses"')), "malformed_file"),
])
def test_bad_frame_is_skipped_and_counted_or_raises(copy_root, corrupt, reason):
    bad = _pose_file(copy_root, 5)
    corrupt(bad)
    summary = panoptic.ReadSummary()
    tracks = panoptic.read_tracks(copy_root, "synth_a", panoptic.EXO_CAMERAS, summary=summary)
    assert summary.skipped[reason] == 1
    frame = int(bad.stem.split('_')[1])
    assert tracks and all(frame not in t.frames for t in tracks)
    with pytest.raises(panoptic.PanopticDataError, match=bad.name):
        panoptic.read_tracks(copy_root, "synth_a", panoptic.EXO_CAMERAS, on_error="raise")


def test_empty_frame_counted_and_breaks_windows(copy_root):
    _pose_file(copy_root, 10).write_text(json.dumps({"version": 0.7, "bodies": []}))
    summary = panoptic.ReadSummary()
    tracks = panoptic.read_tracks(copy_root, "synth_a", panoptic.EXO_CAMERAS, summary=summary)
    assert summary.empty_frames == 1
    for t in tracks:
        starts = panoptic.window_starts(t.frames, 8, 1)
        assert all(not (t.frames[s] <= t.frames[0] + 10 < t.frames[s] + 8) for s in starts)


def test_missing_calibration_or_camera_names_the_file(copy_root):
    calib = copy_root / "synth_a" / "calibration_synth_a.json"
    with pytest.raises(panoptic.PanopticDataError, match="00_99"):
        panoptic.read_tracks(copy_root, "synth_a", ["00_01", "00_99"])
    calib.unlink()
    with pytest.raises(panoptic.PanopticDataError, match="calibration_synth_a.json: file not found"):
        panoptic.read_tracks(copy_root, "synth_a", ["00_01"])


def test_sequence_shorter_than_window_is_counted(synth_root):
    summary = panoptic.ReadSummary()
    windows = list(modes.iter_mode_windows(synth_root, "synth_a", modes.MODES["m2d"], length=64,
                                           stride=10, summary=summary))
    assert windows == [] and summary.skipped["track_shorter_than_window"] == 2


def test_split_sequences(copy_root):
    (copy_root / "synth_b").mkdir()
    (copy_root / panoptic.SPLITS_FILE).write_text(json.dumps(
        {"train": ["synth_a", "synth_x"], "validation": ["synth_b"]}))
    assert panoptic.split_sequences(copy_root) == {"train": ["synth_a"]}
    (copy_root / panoptic.SPLITS_FILE).write_text("{\"train\": 3}")
    with pytest.raises(panoptic.PanopticDataError, match="splits.json"):
        panoptic.split_sequences(copy_root)
    (copy_root / panoptic.SPLITS_FILE).unlink()
    with pytest.raises(panoptic.PanopticDataError, match="none of the split sequences"):
        panoptic.split_sequences(copy_root)
