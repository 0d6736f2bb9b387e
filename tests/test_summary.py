"""TensorBoard summaries without TensorFlow: what pose_vq.summary writes is what
TensorBoard's own reader (its plugin event accumulator, as the dashboards use) reads back,
and the training modules import no TensorFlow."""

import io
import json
import logging as std_logging
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from PIL import Image

from pose_vq import summary
from tests import read_events


def test_tensorboard_reads_back_scalars_images_and_hparams(tmp_path):
    from tensorboard.backend.event_processing import plugin_event_accumulator
    from tensorboard.plugins.hparams import metadata as hparams_metadata

    images = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    writer = summary.SummaryWriter(tmp_path)
    writer.write_hparams({"model.channels": "(16, 32)", "train.batch_size": 8,
                          "optimizer.learning_rate": 2.25e-5, "data.synthetic": True})
    writer.write_scalars(3, {"train/loss/l1": np.float32(0.25), "eval/ema/psnr": 19})
    assert set(read_events(tmp_path)) >= {"train/loss/l1", "eval/ema/psnr"}  # a live run's
    writer.write_scalars(5, {"train/loss/l1": 0.125})
    writer.write_images(5, {"eval/reconstruction_0": images})
    writer.close()

    events = read_events(tmp_path)
    assert events["train/loss/l1"][0] == "scalars"
    assert [(s, float(v)) for s, v in events["train/loss/l1"][1]] == [(3, 0.25), (5, 0.125)]
    assert [(s, float(v)) for s, v in events["eval/ema/psnr"][1]] == [(3, 19.0)]
    plugin, [(step, content)] = events["eval/reconstruction_0"]
    assert (plugin, step, list(content[:2])) == ("images", 5, [b"7", b"5"])  # width, height
    for png, image in zip(content[2:], images, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), image)

    acc = plugin_event_accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    info = hparams_metadata.parse_session_start_info_plugin_data(
        acc.SummaryMetadata(hparams_metadata.SESSION_START_INFO_TAG).plugin_data.content)
    assert info.hparams["train.batch_size"].number_value == 8
    assert info.hparams["model.channels"].string_value == "(16, 32)"
    assert info.hparams["data.synthetic"].bool_value is True


def test_two_writers_write_two_files_and_a_disabled_one_only_logs(tmp_path, caplog):
    first, second = summary.SummaryWriter(tmp_path), summary.SummaryWriter(tmp_path)
    first.write_scalars(1, {"a": 1.0})
    second.write_scalars(2, {"b": 2.0})
    first.close(), second.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert set(read_events(tmp_path)) == {"a", "b"}

    other = tmp_path / "other_process"
    with caplog.at_level(std_logging.INFO):
        quiet = summary.SummaryWriter(other, enabled=False)
        quiet.write_scalars(7, {"train/loss": 0.5})
        quiet.close()
    assert not other.exists()
    assert "[7] train/loss=0.5" in caplog.text


def test_images_must_be_uint8_rgb_batches(tmp_path):
    writer = summary.SummaryWriter(tmp_path)
    with pytest.raises(ValueError, match="eval/x: images must be uint8 \\(N, H, W, 3\\)"):
        writer.write_images(0, {"eval/x": np.zeros((5, 7, 3), np.uint8)})


def test_progress_logs_rate_and_eta_once_per_interval(tmp_path, monkeypatch, caplog):
    clock = iter([100.0, 110.0, 130.0, 190.0, 200.0])
    monkeypatch.setattr(summary, "time", types.SimpleNamespace(
        monotonic=lambda: next(clock), time=time.time))
    writer = summary.SummaryWriter(tmp_path)
    progress = summary.Progress(1000, writer, every_secs=60)
    with caplog.at_level(std_logging.INFO):
        for step in (10, 20, 30, 70, 80):  # at 100 s, 110 s, 130 s, 190 s, 200 s
            progress(step)
    writer.close()
    # One report: 60 steps in 90 s since the first call (step 10 at 100 s).
    [(step, rate)] = read_events(tmp_path)["train/steps_per_sec"][1]
    assert (step, float(rate)) == (70, pytest.approx(60 / 90))
    assert "step 70 of 1000 (7%): 0.667 steps/s, ETA 23m15s" in caplog.text


def test_training_and_evaluation_import_no_tensorflow():
    """TensorFlow is needed only for tfds.load of tfrecord datasets, never to train."""
    modules = ["pose_vq.main", "pose_vq.train", "pose_vq.evaluate", "pose_vq.downstream.lift",
               "pose_vq.downstream.probe", "pose_vq.tokenize", "pose_vq.summary"]
    script = (f"import json, sys\nfor m in {modules!r}: __import__(m)\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == "
              "'tensorflow')))")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []
