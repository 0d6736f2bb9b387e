"""The panoptic_heatmaps builder on synthetic and real Panoptic files."""

import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import file_utils

from data_builders.panoptic_heatmaps import QUANTIZATION_LEVELS, Builder, make_config
from data_builders.panoptic_heatmaps import __main__ as build_command
from data_builders.panoptic_heatmaps import (
    panoptic_heatmaps_dataset_builder as builder_lib,
)
from pose_vq.data import modes, panoptic, skeleton, synthetic
from pose_vq.data.prepare import build
from tests import run_command

SAMPLE = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "panoptic_sample"


@pytest.mark.parametrize("mode", sorted(modes.MODES))
def test_every_mode_builds_with_its_windows(build_small, mode):
    builder = build_small(mode)
    ds = builder.as_data_source()
    assert set(ds) == {"train", "validation"}
    ex = ds["train"][0]
    m = modes.MODES[mode]
    assert ex["heatmaps"].shape == (8, 16, 16, modes.channels(m.input_kind))
    assert ex["heatmaps"].dtype == np.uint8 and ex["heatmaps"].max() > 100
    assert ("target_heatmaps" in ex) == m.has_separate_target
    assert ex["joints3d"].shape == (8, skeleton.NUM_JOINTS, 3)
    assert ex["joints2d"].shape == (m.num_cameras, 8, skeleton.NUM_JOINTS, 2)
    assert len(ex["cameras"]) == m.num_cameras
    np.testing.assert_array_equal(ex["frames"], ex["start_frame"] + np.arange(8))
    summary = builder.info.metadata["read_summary"]
    assert summary["train"]["sequences"] == 2 and summary["train"]["examples"] == len(ds["train"])


def test_stored_example_matches_reader_and_renderer(build_small, synthetic_root):
    """An example is exactly its window re-read and re-rendered, up to quantisation."""
    builder = build_small("m2d")
    cfg = builder.builder_config
    ex = builder.as_data_source()["validation"][0]
    seq, body, start = ex["sequence"].decode(), int(ex["body_id"]), int(ex["start_frame"])
    tracks = panoptic.read_tracks(synthetic_root, seq, modes.MODES["m2d"].cameras)
    track = next(t for t in tracks if t.body_id == body)
    windows = panoptic.iter_windows(track, length=8, stride=cfg.stride, num_cameras=3,
                                    seed=cfg.seed)
    window = next(w for w in windows if w.start_frame == start)
    assert [c.decode() for c in ex["cameras"]] == list(window.cameras)
    np.testing.assert_array_equal(ex["joints3d"], window.joints3d)
    np.testing.assert_array_equal(ex["joints2d"], window.joints2d)
    np.testing.assert_array_equal(ex["present"], window.present)
    key = f"{seq}/{body:04d}/{start:08d}"
    rng = np.random.default_rng([cfg.seed, zlib.crc32(key.encode())])
    clip = modes.render_clips(modes.MODES["m2d"], window, size=16, rng=rng)["heatmaps"]
    stored = ex["heatmaps"] / QUANTIZATION_LEVELS
    assert np.abs(stored - clip).max() <= 0.5 / QUANTIZATION_LEVELS + 1e-7


def _project(points, K, R, t, dist):
    """Pinhole camera with OpenCV's radial (k1, k2, k3) and tangential (p1, p2) distortion,
    written out here so the stored calibration is checked against the model, not the
    reader's projection."""
    cam = points @ R.T + t
    x, y = cam[..., 0] / cam[..., 2], cam[..., 1] / cam[..., 2]
    k1, k2, p1, p2, k3 = dist
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return (np.stack([xd, yd, np.ones_like(xd)], axis=-1) @ K.T)[..., :2]


def test_labels_and_cameras_read_back_with_data_source(build_small, synthetic_root):
    """Every example's label is its body's generated motion kind; the stored calibration
    reprojects joints3d onto the stored joints2d of each chosen camera."""
    builder = build_small("m2d")
    name = f"{builder.name}/{builder.builder_config.name}"
    sources = tfds.data_source(name, data_dir=builder.data_dir_root, download=False)
    labels = json.loads((synthetic_root / panoptic.LABELS_FILE).read_text())
    assert {k for body in labels.values() for k in body.values()} <= set(synthetic.MOTION_KINDS)
    int2str = builder.info.features["label"].int2str
    seen = set()
    for split, ds in sources.items():
        assert ds.dataset_info.features["label"].names == list(builder_lib.LABELS)
        for ex in ds:
            seq, body = ex["sequence"].decode(), int(ex["body_id"])
            assert int2str(ex["label"]) == labels[seq][str(body)], (split, seq, body)
            seen.add(seq)
            assert ex["camera_K"].shape == ex["camera_R"].shape == (3, 3, 3)
            assert ex["camera_t"].shape == (3, 3) and ex["camera_dist"].shape == (3, 5)
            assert ex["camera_K"].dtype == np.float32 and ex["camera_resolution"].dtype == np.int32
            np.testing.assert_array_equal(ex["camera_resolution"], [[1920, 1080]] * 3)
            for c in range(3):
                uv = _project(ex["joints3d"].astype(np.float64), *(
                    ex[f"camera_{k}"][c].astype(np.float64) for k in ("K", "R", "t", "dist")))
                np.testing.assert_allclose(uv, ex["joints2d"][c], atol=1e-2)
    assert seen == set(labels)


def test_label_falls_back_to_family_then_other(tmp_path):
    names = builder_lib.LABELS
    assert names[-1] == "other" and len(set(names)) == len(names)  # ClassLabel names are unique
    labels = {"160906_band1": {1: "squat"}}
    assert builder_lib.example_label(labels, "160906_band1", 1) == "squat"
    assert builder_lib.example_label(labels, "160906_band1", 0) == "band"
    assert builder_lib.example_label({}, "171204_pose1", 0) == "pose"
    assert builder_lib.example_label({}, "synth_000", 0) == "other"
    (tmp_path / panoptic.LABELS_FILE).write_text('{"s": {"0": "juggle"}}')
    with pytest.raises(panoptic.PanopticDataError, match="labels.json: s body 0: label 'juggle'"):
        builder_lib.read_class_labels(tmp_path)


def test_other_process_reads_with_data_source_and_tfds_load(build_small):
    """Another project needs only the data dir: array_record via data_source, tfrecord via
    tfds.load (TensorFlow, the [tf] extra)."""
    ar = build_small("3d")
    script = textwrap.dedent(f"""
        import json, tensorflow_datasets as tfds
        out = {{}}
        ds = tfds.data_source("{ar.name}/{ar.builder_config.name}", data_dir="{ar.data_dir_root}")
        out["data_source"] = [len(ds["train"]), list(ds["train"][0]["heatmaps"].shape)]
    """)
    with_tf = importlib.util.find_spec("tensorflow") is not None
    if with_tf:
        tfr = build_small("3d", file_format="tfrecord")
        script += textwrap.dedent(f"""
            d = tfds.load("{tfr.name}/{tfr.builder_config.name}",
                          data_dir="{tfr.data_dir_root}", split="train")
            out["tfds_load"] = [len(list(d)), list(next(iter(d.as_numpy_iterator()))["heatmaps"].shape)]
        """)
    script += "print(json.dumps(out))\n"
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd="/", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    n = len(ar.as_data_source()["train"])
    assert out["data_source"] == [n, [8, 16, 16, 3]]
    if not with_tf:
        pytest.skip("TensorFlow not installed: tfds.load not exercised (pip install -e '.[tf]')")
    assert out["tfds_load"] == [n, [8, 16, 16, 3]]


def test_tfrecord_without_tensorflow_fails_before_any_work(synthetic_root, tmp_path,
                                                           monkeypatch):
    """TFDS writes tfrecord through TensorFlow, an extra: without it the build and the
    token export stop at once with the fix, not after rendering every split."""
    from pose_vq import tokenize

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow" else real(name, *a))
    with pytest.raises(ValueError, match=r"tfrecord is written with TensorFlow, which is not "
                                         r"installed: pip install -e '\.\[tf\]'"):
        build(synthetic_root, tmp_path / "tfds", "3d", file_format="tfrecord")
    assert not (tmp_path / "tfds").exists()
    with pytest.raises(ValueError, match="tfrecord is written with TensorFlow"):
        tokenize.export(None, ["validation"], tmp_path / "tokens", tmp_path,
                        file_format="tfrecord")
    with pytest.raises(ValueError, match="file_format 'parquet': expected array_record or"):
        build(synthetic_root, tmp_path / "tfds", "3d", file_format="parquet")


def test_interrupted_build_reruns_cleanly(synthetic_root, tmp_path, monkeypatch):
    """A build killed mid-way leaves only a temporary folder; the re-run is complete and
    identical to an uninterrupted build."""
    calls = {"n": 0}
    real = modes.render_clips

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(modes, "render_clips", failing)
    with pytest.raises(KeyboardInterrupt):
        build(synthetic_root, tmp_path / "a", "3d", frames=8, heatmap_size=16, stride=6)
    monkeypatch.setattr(modes, "render_clips", real)
    # A killed build (no Python cleanup) leaves its TFDS temporary folder behind.
    config_dir = tmp_path / "a" / "panoptic_heatmaps" / make_config("3d", 8, 16, stride=6).name
    assert not list(config_dir.glob("incomplete.*"))
    killed = pathlib.Path(file_utils._get_incomplete_dir(str(config_dir / str(Builder.VERSION))))
    killed.mkdir(parents=True)
    (killed / "panoptic_heatmaps-train.array_record-00000-of-00001").write_bytes(b"partial")
    again = build(synthetic_root, tmp_path / "a", "3d", frames=8, heatmap_size=16, stride=6)
    assert [p.name for p in config_dir.iterdir()] == [str(Builder.VERSION)]
    clean = build(synthetic_root, tmp_path / "b", "3d", frames=8, heatmap_size=16, stride=6)
    for split in ("train", "validation"):
        a, b = again.as_data_source()[split], clean.as_data_source()[split]
        assert len(a) == len(b) > 0
        keys = lambda ds: sorted((e["sequence"], int(e["body_id"]), int(e["start_frame"])) for e in ds)
        assert keys(a) == keys(b)


def test_bad_file_stops_build_with_its_name_when_raising(synthetic_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(synthetic_root, root)
    bad = sorted((root / "synth_001" / panoptic.POSE_DIR).glob("*.json"))[4]
    bad.write_text('{"bodies": [{"id": 0, "joints19": [1, 2')
    with pytest.raises(panoptic.PanopticDataError, match=bad.name):
        build(root, tmp_path / "d1", "m2d", frames=8, heatmap_size=16, stride=6, on_error="raise")
    skipped = build(root, tmp_path / "d2", "m2d", frames=8, heatmap_size=16, stride=6)
    assert skipped.info.metadata["read_summary"]["train"]["skipped_malformed_file"] == 1


def test_cli_failure_is_one_line_naming_the_file(synthetic_root, tmp_path, capsys):
    """--on_error=raise stops at the first bad body: status 1 and one line naming the file
    and the problem, no traceback; --verbose lets the exception through."""
    root = tmp_path / "root"
    shutil.copytree(synthetic_root, root)
    bad = sorted((root / "synth_000" / panoptic.POSE_DIR).glob("*.json"))[2]
    frame = json.loads(bad.read_text())
    frame["bodies"][0]["joints19"][0] = 9e9
    bad.write_text(json.dumps(frame))
    argv = [f"--manual_dir={root}", f"--data_dir={tmp_path / 'd'}", "--config=m2d", "--frames=8",
            "--size=16", "--stride=6", "--on_error=raise"]
    with pytest.raises(SystemExit) as exit_:
        run_command(build_command, argv)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: {bad}: body {frame['bodies'][0]['id']} has a coordinate of 9e+09 cm, beyond "
        "the 10 m studio volume")
    with pytest.raises(panoptic.PanopticDataError, match=bad.name):
        run_command(build_command, argv + ["--verbose"])
    with pytest.raises(SystemExit):
        run_command(build_command, [f"--manual_dir={tmp_path / 'nowhere'}", f"--data_dir={tmp_path / 'd'}"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'nowhere'}: Panoptic root folder not found or empty")
    assert not list((tmp_path / "d").rglob("incomplete.*"))


def test_sharded_build_is_read_whole(synthetic_root, tmp_path):
    builder = build(synthetic_root, tmp_path, "3d", frames=8, heatmap_size=16, stride=6, num_shards=3)
    assert builder.info.splits["train"].num_shards == 3
    one = build(synthetic_root, tmp_path / "one", "3d", frames=8, heatmap_size=16, stride=6)
    assert len(builder.as_data_source()["train"]) == len(one.as_data_source()["train"])


def test_config_validation():
    with pytest.raises(ValueError, match="unknown mode"):
        make_config("4d")
    assert make_config("3d").name == "3d" and make_config("c2d").frames == 48
    assert make_config("3d", 16, 32).name == "3d_t16_s32"
    # on_error decides whether a build stops, not what it holds: the same dataset.
    assert make_config("3d", 16, 32, on_error="raise").name == "3d_t16_s32"
    assert make_config("3d", 16, 32, joint_req=0.7).name == "3d_t16_s32_joint_req0.7"
    with pytest.raises(ValueError, match="joint_req"):
        make_config("3d", joint_req=1.0)


def test_cli_joint_req_names_and_builds_the_dataset(synthetic_root, tmp_path, capsys):
    run_command(build_command, [f"--manual_dir={synthetic_root}", f"--data_dir={tmp_path}", "--config=m2d",
          "--frames=8", "--size=16", "--stride=6", "--joint_req=0.5"])
    assert "panoptic_heatmaps/m2d_t8_s16_joint_req0.5_stride6" in capsys.readouterr().out
    built = tfds.builder("panoptic_heatmaps/m2d_t8_s16_joint_req0.5_stride6", data_dir=tmp_path)
    assert built.info.metadata["config"]["joint_req"] == 0.5


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/data/panoptic_sample absent")
def test_builds_from_real_panoptic_sample(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(SAMPLE, root)
    (root / "splits.json").write_text(json.dumps({"train": ["160906_band1"]}))
    builder = build(root, tmp_path / "data", "3d", frames=8, heatmap_size=32, stride=4)
    ds = builder.as_data_source()["train"]
    assert len(ds) >= 3
    ex = ds[0]
    assert ex["sequence"] == b"160906_band1" and 168 <= ex["start_frame"] <= 180
    assert ex["heatmaps"].shape == (8, 32, 32, 3) and ex["heatmaps"].max() > 200
    # No labels.json: the sequence family is the label.
    band = builder.info.features["label"].str2int("band")
    assert all(ds[i]["label"] == band for i in range(len(ds)))
    calib = json.loads((root / "160906_band1" / "calibration_160906_band1.json").read_text())
    hd = {c["name"]: c for c in calib["cameras"] if c["type"] == "hd"}
    for i in range(len(ds)):
        ex = ds[i]
        for c, name in enumerate(n.decode() for n in ex["cameras"]):
            for key, stored in (("K", "K"), ("R", "R"), ("t", "t"), ("dist", "distCoef"),
                                ("resolution", "resolution")):
                want = np.asarray(hd[name][stored]).reshape(ex[f"camera_{key}"][c].shape)
                np.testing.assert_allclose(ex[f"camera_{key}"][c], want, rtol=1e-6)
        assert ex["camera_K"].shape == (3, 3, 3) and ex["camera_t"].shape == (3, 3)
        assert ex["camera_dist"].shape == (3, 5) and ex["camera_resolution"].shape == (3, 2)
    # Unreconstructed joints are stored as read, marked absent.
    assert not all(ds[i]["present"].all() for i in range(len(ds)))
    assert builder.info.metadata["read_summary"]["train"] == {
        "files_found": 20, "files_read": 20, "empty_frames": 0, "bodies_read": 60,
        "bodies_kept": 60, "tracks": 3, "windows": 12, "windows_kept": len(ds),
        "dropped_visibility": 12 - len(ds), "sequences": 1, "examples": len(ds)}
    # The untouched sample (reference split lists) builds its train split too.
    assert set(build(SAMPLE, tmp_path / "data2", "m2d", frames=8, heatmap_size=32,
                     stride=4).info.splits) == {"train"}
