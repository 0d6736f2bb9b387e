"""Panoptic reader: camera math by hand, the real sample, windows, and bad input."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from pose_vq.data import camera, modes, panoptic, skeleton, synthetic

SAMPLE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "panoptic_sample"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/data/panoptic_sample absent")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("panoptic")
    return synthetic.write_synthetic_root(root, ["synth_a"], num_frames=40, num_people=2, seed=3,
                                          late_entry_prob=0.0, early_exit_prob=0.0)


def _camera(dist=(0.1, 0.01, 0.001, 0.002, 0.0001)):
    return camera.Camera(name="00_00", K=np.array([[1000.0, 0, 960], [0, 1000, 540], [0, 0, 1]]),
                           dist=np.array(dist), R=np.eye(3), t=np.array([0.0, 0, 100]),
                           resolution=(1920, 1080))


def test_projection_matches_hand_computation():
    # x_cam = (10, 20, 100) -> (0.1, 0.2); r2 = 0.05;
    # radial = 1 + 0.1*0.05 + 0.01*0.05^2 + 0.0001*0.05^3 = 1.0050250125
    # u' = 0.1*radial + 2*0.001*0.1*0.2 + 0.002*(0.05 + 2*0.01) = 0.10068250125
    # v' = 0.2*radial + 2*0.002*0.1*0.2 + 0.001*(0.05 + 2*0.04) = 0.2012150025
    uv, depth = camera.project_points(np.array([[10.0, 20.0, 0.0]]), _camera())
    np.testing.assert_allclose(uv[0], [1060.68250125, 741.2150025], rtol=1e-7)
    assert depth[0] == 100.0


def test_reference_axes_cancel_in_projection():
    rng = np.random.default_rng(0)
    pts = rng.normal(0, 50, size=(7, 3))
    cam = _camera()
    angle = 0.3
    cam = camera.Camera(**{**cam.__dict__, "R": np.array(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])})
    moved = camera.Camera(**{**cam.__dict__, "R": cam.R @ panoptic.REFERENCE_AXES})
    a, _ = camera.project_points(pts, cam)
    b, _ = camera.project_points(pts @ panoptic.REFERENCE_AXES, moved)
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
    # A joint that Panoptic did not reconstruct reads as confidence -1 and is absent,
    # whatever its coordinates; every frame of the sample has one.
    assert (tracks[0].confidence == -1).any()
    for t in tracks:
        np.testing.assert_array_equal(t.present, t.confidence > 0.1)
    assert np.any([~t.present for t in tracks], axis=(0, 2)).all()
    l_ankle = skeleton.JOINT_INDEX["l-ankle"]
    assert (~tracks[0].present[:, l_ankle]).sum() == 19
    stale = tracks[0].joints3d[list(tracks[0].frames).index(183), l_ankle]
    assert np.abs(stale).min() > 1  # not at the origin, still absent


@needs_sample
def test_real_sample_summary():
    summary = panoptic.ReadSummary()
    windows = list(modes.iter_mode_windows(SAMPLE, "160906_band1", modes.MODES["m2d"], length=8,
                                           stride=4, summary=summary))
    assert summary.as_dict() == {
        "files_found": 20, "files_read": 20, "empty_frames": 0, "bodies_read": 60,
        "bodies_kept": 60, "tracks": 3, "windows": 12, "windows_kept": 6, "dropped_joint_req": 6}
    assert len(windows) == 6 and not all(w.present.all() for w in windows)


@needs_sample
def test_real_sample_calibration_only_sequence():
    cams = panoptic.load_cameras(SAMPLE / "160422_ultimatum1" / "calibration_160422_ultimatum1.json",
                                 panoptic.EXO_CAMERAS)
    assert sorted(cams) == sorted(panoptic.EXO_CAMERAS)
    assert panoptic.available_sequences(SAMPLE) == ["160906_band1"]


def test_windows_choose_cameras_that_see_every_frame(synth_root):
    tracks = panoptic.read_tracks(synth_root, "synth_a", panoptic.EXO_CAMERAS)
    assert all(tuple(c.name for c in t.calibration) == t.cameras for t in tracks)
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
        assert tuple(c.name for c in w.calibration) == w.cameras  # each camera's own
        assert [t.calibration[i] for i in cols] == list(w.calibration)


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


def _set_body(path, body_id, change):
    """Rewrite one body of a pose file: change((19, 4) joints) -> joints (or raw values)."""
    frame = json.loads(path.read_text())
    body = next(b for b in frame["bodies"] if b["id"] == body_id)
    body["joints19"] = change(np.reshape(body["joints19"], (19, 4)).copy())
    if isinstance(body["joints19"], np.ndarray):
        body["joints19"] = body["joints19"].ravel().tolist()
    path.write_text(json.dumps(frame))


def _moved(j, k, values):
    """j with row(s) k set: x, y, z (or, for an index pair, the given entries)."""
    j[k if isinstance(k, tuple) else (k, slice(0, 3))] = values
    return j


@pytest.mark.parametrize("change, reason", [
    # One rule each: NaN or inf, confidence outside [-1, 1], beyond the studio (also for
    # an absent joint), collapsed to a point (or nothing present), bones outside human range.
    (lambda j: _moved(j, 5, [np.nan, 0, 0]), "non_finite"),
    (lambda j: _moved(j, 5, [np.inf, 0, 0]), "non_finite"),
    (lambda j: np.concatenate([j[:, :3], np.full((19, 1), 1.5)], 1), "bad_confidence"),
    (lambda j: _moved(j, (0, slice(None)), [*j[0, :3], -2.0]), "bad_confidence"),
    (lambda j: _moved(j, 5, [1200.0, 0, 0]), "out_of_volume"),
    (lambda j: np.concatenate([np.full((19, 3), -1e4), np.full((19, 1), -1.0)], 1),
     "out_of_volume"),
    (lambda j: _moved(j, slice(None), [10.0, -100.0, 20.0]), "degenerate"),
    (lambda j: _moved(j, slice(None), j[0, :3] + np.random.default_rng(0).uniform(0, 0.2, (19, 3))),
     "degenerate"),
    (lambda j: np.concatenate([j[:, :3], np.full((19, 1), -1.0)], 1), "degenerate"),
    (lambda j: _moved(j, skeleton.JOINT_INDEX["l-wrist"], j[4, :3] + [0, 0, 300]), "bone_length"),
    (lambda j: np.concatenate([j[:, :3] / 100, j[:, 3:]], 1), "bone_length"),  # metres, not cm
    (lambda j: ["x"] * 76, "malformed_body"),
    (lambda j: [10**400] * 76, "malformed_body"),
])
def test_implausible_body_is_skipped_and_counted_or_raises(copy_root, change, reason):
    bad = _pose_file(copy_root, 5)
    _set_body(bad, 0, change)
    summary = panoptic.ReadSummary()
    tracks = {t.body_id: t for t in panoptic.read_tracks(copy_root, "synth_a", panoptic.EXO_CAMERAS,
                                                         summary=summary)}
    assert dict(summary.skipped) == {reason: 1}
    frame = int(bad.stem.split("_")[1])
    assert frame not in tracks[0].frames and frame in tracks[1].frames
    for t in tracks.values():  # what is kept is finite, inside the studio, not collapsed
        assert np.isfinite(t.joints3d).all() and np.abs(t.joints3d).max() <= panoptic.MAX_COORD_CM
    with pytest.raises(panoptic.PanopticDataError, match=f"{bad.name}: body 0 "):
        panoptic.read_tracks(copy_root, "synth_a", panoptic.EXO_CAMERAS, on_error="raise")


def test_boolean_or_duplicate_id_is_skipped(copy_root):
    bad = _pose_file(copy_root, 5)
    frame = json.loads(bad.read_text())
    frame["bodies"][1]["id"] = True
    frame["bodies"].append(frame["bodies"][0])
    bad.write_text(json.dumps(frame))
    summary = panoptic.ReadSummary()
    panoptic.read_tracks(copy_root, "synth_a", panoptic.EXO_CAMERAS, summary=summary)
    assert dict(summary.skipped) == {"malformed_body": 1, "duplicate_id": 1}


@pytest.mark.parametrize("corrupt, message", [
    (lambda c: c.update(R=[[1, 0, 0], [0, 1, 0], [0, 0, -1]]), r"R is not a rotation \(det -1"),
    (lambda c: c.update(R=(2 * np.eye(3)).tolist()), "R is not a rotation"),
    (lambda c: c.update(R=[[1, 0.01, 0], [0, 1, 0], [0, 0, 1]]), "R is not a rotation"),
    (lambda c: c.update(R=np.zeros((3, 3)).tolist()), "R is not a rotation"),
    (lambda c: c.update(K=np.zeros((3, 3)).tolist()), "K is not an intrinsic matrix"),
    (lambda c: c["K"][0].__setitem__(0, -1400.0), "K is not an intrinsic matrix"),
    (lambda c: c["K"].__setitem__(2, [0, 0, 2]), "K is not an intrinsic matrix"),
    (lambda c: c["K"][1].__setitem__(2, 5000.0), "K is not an intrinsic matrix"),
    (lambda c: c.update(K=[[1400, 0], [0, 1400]]), r"K is not a \(3, 3\) array"),
    (lambda c: c["K"][0].__setitem__(0, float("nan")), "K has non-finite values"),
    (lambda c: c.update(t=[[0], [0], [5e4]]), "t puts the camera 500 m from the origin"),
    (lambda c: c.update(resolution=[1920]), r"resolution is not a \(2,\) array"),
    (lambda c: c.update(resolution=[0, 1080]), "resolution 0x1080 is not positive"),
    (lambda c: c.pop("distCoef"), "has no 'distCoef'"),
    (lambda c: c.update(type="vga"), r"HD camera\(s\) 00_01 not in the calibration"),
])
def test_broken_camera_is_an_error_naming_it(copy_root, corrupt, message):
    path = copy_root / "synth_a" / "calibration_synth_a.json"
    calib = json.loads(path.read_text())
    corrupt(next(c for c in calib["cameras"] if c["name"] == "00_01"))
    path.write_text(json.dumps(calib))
    with pytest.raises(panoptic.PanopticDataError,
                       match=f"calibration_synth_a.json: (camera 00_01.*)?{message}"):
        panoptic.read_tracks(copy_root, "synth_a", ["00_01", "00_02"])
    panoptic.read_tracks(copy_root, "synth_a", ["00_02"])  # the other cameras still read


@pytest.mark.parametrize("text", ["{", "[]", '{"cameras": 3}', "\x00\xff"])
def test_broken_calibration_file_is_an_error_naming_it(copy_root, text):
    path = copy_root / "synth_a" / "calibration_synth_a.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(panoptic.PanopticDataError, match="calibration_synth_a.json: "):
        panoptic.read_tracks(copy_root, "synth_a", ["00_01"])


def test_unreadable_pose_file_is_skipped(copy_root):
    bad = _pose_file(copy_root, 5)
    bad.unlink()
    bad.mkdir()  # a folder where a file should be: not readable as one
    summary = panoptic.ReadSummary()
    panoptic.read_tracks(copy_root, "synth_a", panoptic.EXO_CAMERAS, summary=summary)
    assert summary.skipped == {"malformed_file": 1} and summary.files_read == 39


def test_summary_counts_add_up(copy_root):
    """Frames, bodies and windows: every one read is kept or counted by reason."""
    _pose_file(copy_root, 3).unlink()  # frames 0-2 become a run too short for a window
    _pose_file(copy_root, 20).write_text("{")
    _set_body(_pose_file(copy_root, 30), 1, lambda j: _moved(j, 2, [2000.0, 0, 0]))

    def counts(mode, **kw):
        summary = panoptic.ReadSummary()
        windows = list(modes.iter_mode_windows(copy_root, "synth_a", modes.MODES[mode], length=8,
                                               stride=5, summary=summary, **kw))
        d = summary.as_dict()
        assert d["files_found"] == 39 == d["files_read"] + d["skipped_malformed_file"]
        assert d["bodies_read"] == d["bodies_kept"] + d["skipped_out_of_volume"] == 76
        dropped = {k: v for k, v in d.items() if k.startswith("dropped_")}
        assert d["windows"] == d["windows_kept"] + sum(dropped.values())
        assert d["windows_kept"] == len(windows) > 0 or kw
        return dropped

    assert counts("m2d")["dropped_gaps"] == 2  # both bodies: frames 0-2
    # No camera sees more than all of the joints: each window fails joint_req (3d: visibility).
    assert set(counts("m2d", joint_req=1.0)) == {"dropped_gaps", "dropped_joint_req"}
    assert set(counts("3d", joint_req=1.0)) == {"dropped_gaps", "dropped_visibility"}


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
    assert windows == [] and summary.dropped["length"] == 2 == summary.windows


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


@pytest.mark.parametrize("sequence, family", [
    ("160906_band1", "band"), ("170221_haggling_b1", "haggling"), ("160224_haggling1", "haggling"),
    ("171204_pose1", "pose"), ("160422_ultimatum1", "ultimatum"), ("synth_000", "synth"),
])
def test_sequence_family(sequence, family):
    assert panoptic.sequence_family(sequence) == family


def test_sequence_families_of_the_reference_splits():
    families = panoptic.SEQUENCE_FAMILIES
    assert families == tuple(sorted(set(families)))
    assert {"band", "haggling", "pose", "ultimatum", "office"} <= set(families)
    assert all(f.isalpha() for f in families)


def test_read_labels(tmp_path):
    assert panoptic.read_labels(tmp_path) == {}
    path = tmp_path / panoptic.LABELS_FILE
    path.write_text('{"s1": {"0": "walk", "12": "squat"}, "s2": {}}')
    assert panoptic.read_labels(tmp_path) == {"s1": {0: "walk", 12: "squat"}, "s2": {}}


@pytest.mark.parametrize("text, problem", [
    ("{", "malformed or truncated JSON"),
    ('["walk"]', "expected {sequence: {body id: label}}"),
    ('{"s": ["walk"]}', "expected {sequence: {body id: label}}"),
    ('{"s": {"a": "walk"}}', "s: body id 'a' is not an integer"),
    ('{"s": {"0": 3}}', "s body 0: label 3 is not a string"),
])
def test_malformed_labels_name_the_file(tmp_path, text, problem):
    (tmp_path / panoptic.LABELS_FILE).write_text(text)
    with pytest.raises(panoptic.PanopticDataError) as e:
        panoptic.read_labels(tmp_path)
    message = str(e.value)
    assert message.startswith(f"{tmp_path / panoptic.LABELS_FILE}: ") and problem in message
    assert "\n" not in message
