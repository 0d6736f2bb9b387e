"""TensorBoard summaries and the training progress line, without TensorFlow.

Event files are written with the tensorboard package's record framing and its scalar,
image and hparams plugins' protos, to a plain file (local, or in a bucket: pose_vq.paths;
with gcsfs a bucket's file appears when the writer closes): the events TensorBoard reads from
``tf.summary``, with no TensorFlow import (seconds at every process start) and no
TensorFlow install to train.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import logging
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer import record_writer
from tensorboard.util import tensor_util

from pose_vq import paths

_FILE_NUMBER = itertools.count()  # two writers of one process in one second: two files


class SummaryWriter:
    """One event file under ``logdir`` for scalars, images and hparams; scalars are also
    logged. Each call's events reach the file before it returns, so TensorBoard shows a
    running job's latest values. Only process 0 of a multi-host run writes the file
    (``enabled`` defaults to that); the others only log."""

    def __init__(self, logdir: paths.PathLike, *, enabled: bool | None = None):
        self._records = None
        if enabled is None:
            enabled = jax.process_index() == 0
        if enabled:
            logdir = paths.as_path(logdir)
            logdir.mkdir(parents=True, exist_ok=True)
            name = (f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}."
                    f"{os.getpid()}.{next(_FILE_NUMBER)}")
            self._records = record_writer.RecordWriter((logdir / name).open("wb"))
            self._write(event_pb2.Event(file_version="brain.Event:2"))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """``scalars``: tag -> a number (or a 0-d array)."""
        values = {tag: float(value) for tag, value in scalars.items()}
        logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in values.items()))
        for tag, value in values.items():
            self._write(event_pb2.Event(step=step, summary=scalar_summary.scalar_pb(tag, value)))
        self.flush()

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """``images``: tag -> uint8 (N, H, W, 3) RGB images, stored as PNG."""
        for tag, batch in images.items():
            batch = np.asarray(batch)
            if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
                raise ValueError(f"{tag}: images must be uint8 (N, H, W, 3); got "
                                 f"{batch.dtype} {batch.shape}")
            # The image plugin's tensor: width, height, then one PNG per image.
            content = [str(batch.shape[2]).encode(), str(batch.shape[1]).encode()]
            for image in batch:
                png = io.BytesIO()
                Image.fromarray(image).save(png, format="PNG")
                content.append(png.getvalue())
            summary = summary_pb2.Summary()
            summary.value.add(tag=tag, metadata=image_metadata.create_summary_metadata(
                display_name=tag, description=""),
                tensor=tensor_util.make_tensor_proto(np.array(content, dtype=object)))
            self._write(event_pb2.Event(step=step, summary=summary))
        self.flush()

    def write_hparams(self, hparams: Mapping[str, bool | int | float | str]) -> None:
        """The run's hyperparameters, for TensorBoard's HParams dashboard."""
        self._write(event_pb2.Event(summary=hparams_summary.hparams_pb(dict(hparams))))
        self.flush()

    def flush(self) -> None:
        if self._records is not None:
            self._records.flush()

    def close(self) -> None:
        if self._records is not None and not self._records.closed:
            self._records.close()

    def _write(self, event: event_pb2.Event) -> None:
        if self._records is not None:
            event.wall_time = time.time()
            self._records.write(event.SerializeToString())


def read_scalars(logdir: paths.PathLike, prefix: str = "") -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in ``logdir`` whose tag starts with ``prefix``:
    tag -> [(step, value)] in step order, read by TensorBoard's own event reader. Where a
    resumed run wrote a step twice, the later value stands."""
    from tensorboard.backend.event_processing import (  # noqa: PLC0415 (analysis only)
        plugin_event_accumulator,
    )

    # 0: keep every event (the reader's default samples 500 per tag); images are skipped.
    acc = plugin_event_accumulator.EventAccumulator(
        os.fspath(paths.as_path(logdir)), size_guidance={"tensors": 0, "images": 1})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        if not tag.startswith(prefix) or (acc.SummaryMetadata(tag).plugin_data.plugin_name
                                          != scalar_summary.metadata.PLUGIN_NAME):
            continue
        by_step = {e.step: float(tensor_util.make_ndarray(e.tensor_proto))
                   for e in sorted(acc.Tensors(tag), key=lambda e: e.wall_time)}
        out[tag] = sorted(by_step.items())
    return out


class Progress:
    """Every ``every_secs``: logs the steps/s since the last report, how far the run is
    and its ETA, and writes the steps/s as ``train/steps_per_sec``. The clock starts at
    the first call, so a loop that calls it once its first step has compiled reports
    steady-state rates."""

    def __init__(self, num_steps: int, writer: SummaryWriter, every_secs: float = 60.0):
        self.num_steps, self.every_secs = num_steps, every_secs
        self._writer = writer
        self._last: tuple[int, float] | None = None

    def __call__(self, step: int) -> None:
        now = time.monotonic()
        if self._last is None:
            self._last = (step, now)
            return
        last_step, last_time = self._last
        if now - last_time < self.every_secs or step == last_step:
            return
        rate = (step - last_step) / (now - last_time)
        eta = (self.num_steps - step) / rate
        logging.info("step %d of %d (%.0f%%): %.3g steps/s, ETA %s", step, self.num_steps,
                     100 * step / self.num_steps, rate, _duration(eta))
        self._writer.write_scalars(step, {"train/steps_per_sec": rate})
        self._last = (step, now)


def _duration(seconds: float) -> str:
    """3725 -> '1h02m05s'; 65 -> '1m05s'; 5 -> '5s'."""
    s = int(round(seconds))
    h, m = s // 3600, s // 60 % 60
    return f"{h}h{m:02d}m{s % 60:02d}s" if h else f"{m}m{s % 60:02d}s" if m else f"{s}s"
