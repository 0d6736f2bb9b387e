"""Grain loader over the built panoptic_heatmaps dataset -> global jax.Array batches.

Each process reads only its shard of the records (``jax.process_index()`` of
``jax.process_count()``), shuffles deterministically for the seed, batches
``global_batch_size / process_count`` examples and places them as global arrays sharded
along the ``data`` axis of a mesh, ``prefetch`` batches ahead of the one the step takes.
Clips stay the stored uint8 until the device (``modes.model_clips`` makes them float32
in [0, 1] inside the step). The iterator's state (``get_state``/``set_state``) restores
the exact next batch after a restart.

Every split is read through ``data_source``, which first checks the split's shard files
against the dataset's metadata and names a shard that is missing, truncated or fails to
read, and how to rebuild the dataset, in one ``ShardError``.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import grain.python as grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from jax.sharding import Mesh

from pose_vq import errors
from pose_vq import sharding as sharding_lib
from pose_vq.data import modes, prepare

# The skeleton window and camera features an example carries beside its heatmaps.
SKELETON_FEATURES = ("joints3d", "joints2d", "present", "camera_R", "camera_t",
                     "camera_resolution", "label")
# Device arrays (stored uint8 clips; modes without a separate target have no
# "targets"); everything else in a batch stays on the host as numpy.
MODEL_KEYS = ("inputs", "targets")


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
    data_dir: str  # the TFDS data dir the dataset was built into
    name: str  # e.g. "panoptic_heatmaps/3d" or "panoptic_heatmaps/3d_t16_s32"
    split: str = "train"
    global_batch_size: int = 8
    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = None  # None: repeat forever
    worker_count: int = 0  # grain worker processes (>0 needs absl.app.run around main)
    read_ahead: int = 4  # batches of records read ahead (each worker's, with workers)
    shard: tuple[int, int] | None = None  # (index, count) to read; None: this JAX process's


def training_loader_config(config: ml_collections.ConfigDict, data_dir: str, name: str
                           ) -> LoaderConfig:
    """The training batches of a run's config: what the train loop and the pipeline
    benchmark read."""
    return LoaderConfig(data_dir=data_dir, name=name, split="train",
                        global_batch_size=config.train.batch_size, seed=config.seed,
                        worker_count=config.data.worker_count,
                        read_ahead=config.data.read_ahead)


def open_dataset(data_dir: str, name: str) -> tfds.core.DatasetBuilder:
    """The built dataset, read from files alone (no builder code needed); its splits are
    read through ``data_source``."""
    return tfds.builder(name, data_dir=data_dir)


class ShardError(errors.ActionableError, RuntimeError):
    """A shard of a built dataset is missing, truncated or unreadable; the message names
    the file and how to rebuild the dataset."""


def _rebuild_hint(meta: dict[str, Any], version_dir: str) -> str:
    """How to write a dataset again, from its metadata: its build command (a
    panoptic_heatmaps dataset stores its builder config) or, for a token export, the
    command that exported it."""
    if "mode" in meta.get("config", {}):
        how = f"build it again: `{prepare.rebuild_command(meta['config'], version_dir)}`"
    elif "workdir" in meta:
        how = (f"export it again (`python -m pose_vq.tokenize --workdir={meta['workdir']}` and "
               "the flags that wrote it)")
    else:
        how = "write it again"
    return f"remove {version_dir} and {how}"


def _reader_problem(error: RuntimeError) -> str:
    """What array_record's reader says is wrong, without its offsets and hashes."""
    return errors.one_line(error).split(";")[0].split(" (")[0]


def check_shards(builder: tfds.core.DatasetBuilder, split: str) -> list[Any]:
    """The file instructions (shard file, records skipped and taken) of ``split`` (a name
    or a tfds slice), after checking that every shard exists and, in an array_record
    dataset, opens and holds the number of records the dataset's metadata says;
    ShardError naming the first that does not. Opening a shard reads its footer: 0.3 ms a
    shard of the demo dataset (BENCHMARKS.md)."""
    instructions = builder.info.splits[split].file_instructions
    for fi in instructions:
        path, expected = fi.filename, fi.examples_in_shard
        problem = None
        if not tfds.core.Path(path).exists():  # TFDS's path type: local or remote
            problem = "is missing"
        elif builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
            try:  # a damaged footer reads as 0 records, then fails on close
                reader = array_record_module.ArrayRecordReader(str(path))
                found = reader.num_records()
                reader.close()
            except RuntimeError as e:
                found, problem = None, f"cannot be read ({_reader_problem(e)})"
            if found is not None and found != expected:
                problem = f"holds {found} records where the dataset's metadata says {expected}"
        if problem:
            hint = _rebuild_hint(dict(builder.info.metadata or {}), builder.data_dir)
            raise ShardError(f"shard {path} {problem}: {hint}")
    return instructions


class _CheckedSource(Sequence):
    """A split's records (tfds's array_record data source), its shards checked when opened;
    a record that fails to read raises ShardError naming its shard."""

    def __init__(self, builder: tfds.core.DatasetBuilder, split: str, decoders: Any = None):
        self._shards = check_shards(builder, split)
        self._source = builder.as_data_source(split=split, decoders=decoders)
        self._ends = list(itertools.accumulate(fi.take for fi in self._shards))
        self._meta, self._version_dir = dict(builder.info.metadata or {}), builder.data_dir

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> Any:
        try:
            return self._source[index]
        except RuntimeError as e:  # riegeli's "Corrupted (or Invalid) Riegeli/records file"
            k = min(bisect.bisect_right(self._ends, index), len(self._shards) - 1)
            record = self._shards[k].skip + index - (self._ends[k - 1] if k else 0)
            raise ShardError(f"shard {self._shards[k].filename} cannot be read at record "
                             f"{record} ({_reader_problem(e)}): "
                             f"{_rebuild_hint(self._meta, self._version_dir)}") from e

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"checked {self._source!r}"


def data_source(builder: tfds.core.DatasetBuilder, split: str, decoders: Any = None
                ) -> Sequence:
    """The records of a split of a built dataset, as every reader takes them (the
    loader, evaluation, export, pictures): shards checked, failures naming the shard."""
    return _CheckedSource(builder, split, decoders)


def dataset_mode(builder: tfds.core.DatasetBuilder) -> modes.Mode:
    """The mode the dataset was built for, from its stored metadata."""
    mode = builder.info.metadata.get("config", {}).get("mode")
    if mode not in modes.MODES:
        raise ValueError(f"{builder.data_dir}: dataset metadata names no known mode ({mode!r})")
    return modes.MODES[mode]


def read_skeletons(data_dir: str, name: str, split: str) -> dict[str, np.ndarray]:
    """The skeleton features of every example of a split, stacked (no heatmap decoded)."""
    builder = open_dataset(data_dir, name)
    skip = {k: tfds.decode.SkipDecoding() for k in ("heatmaps", "target_heatmaps")
            if k in builder.info.features}
    rows = list(data_source(builder, split, decoders=skip))
    return {k: np.stack([r[k] for r in rows]) for k in SKELETON_FEATURES}


class ToBatchFields(grain.MapTransform):
    """A stored example -> what a training batch carries: the stored uint8 clips the model
    reads (``inputs``, and ``targets`` in modes with a separate target), made float on the
    devices by ``modes.model_clips``, and the example's identity."""

    def __init__(self, mode: modes.Mode):
        self.mode = mode

    def map(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
        clips = {"inputs": example["heatmaps"]}
        if self.mode.has_separate_target:
            clips["targets"] = example["target_heatmaps"]
        return {**clips, "sequence": np.bytes_(example["sequence"]),
                "body_id": np.int32(example["body_id"]),
                "start_frame": np.int32(example["start_frame"])}


class ToModelInputs(ToBatchFields):
    """A stored example with float32 ``inputs`` and ``targets`` in [0, 1], decoded on the
    host (evaluation, export and pictures read examples one by one)."""

    def map(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
        fields = super().map(example)
        fields["inputs"], fields["targets"] = modes.model_clips(self.mode, fields)
        return fields


def make_loader(cfg: LoaderConfig) -> grain.DataLoader:
    """A grain DataLoader yielding this process's numpy batches, its threads ``read_ahead``
    batches of records ahead. grain's default, 500 records, held 2.8 GB at the peak
    against 1.5 GB for 4 batches of the paper's clips, at a slower rate; on a dozen
    stored clips it spent 1.4 s of CPU on index shuffles (BENCHMARKS.md)."""
    index, process_count = cfg.shard or (jax.process_index(), jax.process_count())
    if cfg.global_batch_size % process_count:
        raise ValueError(f"global batch {cfg.global_batch_size} is not divisible by "
                         f"{process_count} processes")
    builder = open_dataset(cfg.data_dir, cfg.name)
    source = data_source(builder, cfg.split)
    shard = grain.ShardOptions(shard_index=index, shard_count=process_count, drop_remainder=True)
    per_host = cfg.global_batch_size // process_count
    if len(source) // process_count < per_host:
        raise ValueError(f"{cfg.name}:{cfg.split} has {len(source)} examples, fewer than one "
                         f"batch of {per_host} per process")
    sampler = grain.IndexSampler(len(source), shard_options=shard, shuffle=cfg.shuffle,
                                 num_epochs=cfg.num_epochs, seed=cfg.seed)
    return grain.DataLoader(
        data_source=source, sampler=sampler,
        operations=[ToBatchFields(dataset_mode(builder)),
                    grain.Batch(per_host, drop_remainder=True)],
        worker_count=cfg.worker_count,
        read_options=grain.ReadOptions(prefetch_buffer_size=cfg.read_ahead * per_host))


def fixed_size_batches(rows: Iterable[Mapping[str, Any]], size: int,
                       padding: Mapping[str, Any] | None = None, num_batches: int | None = None
                       ) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """``rows`` (dicts of arrays, read as needed) stacked ``size`` at a time, the last
    batch filled up with padding rows: a jitted function of the batches sees one shape
    and compiles once (evaluation, token export, the downstream models' predictions).

    Yields ``(batch, n)``: its first ``n`` rows are real, so their outputs are
    ``out[:n]``. A padding row holds ``padding[key]`` (a row, or a value broadcast to the
    first row's shape and dtype) where given, zeros like the first row's elsewhere. With
    ``num_batches``, batches of padding alone follow the rows up to that count (processes
    must run the same number of collectives); those need a padding row for every key,
    in the rows' shapes and dtypes.
    """
    padding = dict(padding or {})
    rows = iter(rows)
    for count in itertools.count():
        chunk = list(itertools.islice(rows, size))
        if count == num_batches or (num_batches is None and not chunk):
            if chunk:
                raise ValueError(f"more rows than {num_batches} batches of {size} hold")
            return
        if chunk:
            first = {k: np.asarray(v) for k, v in chunk[0].items()}
            fill = {k: (np.broadcast_to(np.asarray(padding[k], v.dtype), v.shape) if k in padding
                        else np.zeros_like(v)) for k, v in first.items()}
        elif padding:
            fill = {k: np.asarray(v) for k, v in padding.items()}
        else:
            raise ValueError("a batch of padding alone needs a padding row for every key")
        yield {k: np.stack([np.asarray(r[k]) for r in chunk] + [v] * (size - len(chunk)))
               for k, v in fill.items()}, len(chunk)


def model_fields(batch: dict[str, Any]) -> dict[str, Any]:
    """The fields of a batch the model reads (``MODEL_KEYS`` that the batch has)."""
    return {k: batch[k] for k in MODEL_KEYS if k in batch}


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, Any]:
    """Place this process's part of a batch as global arrays split over the mesh's data
    axis."""
    sharding = sharding_lib.batch_sharding(mesh)
    return {k: (jax.make_array_from_process_local_data(sharding, v) if k in MODEL_KEYS else v)
            for k, v in batch.items()}


class GlobalBatches:
    """Iterator of global batches with a checkpointable position, ``prefetch`` batches
    ahead on the devices: their host-to-device copies run while earlier steps compute.

    ``get_state()`` returns bytes describing the position after the last batch returned
    (not the prefetched ones); ``set_state`` on a fresh iterator over the same config
    resumes there exactly. grain's orbax handler saves and restores it as it does a grain
    iterator (``grain.checkpoint.CheckpointSave(batches)``).
    """

    def __init__(self, cfg: LoaderConfig, mesh: Mesh, prefetch: int = 2):
        self.mesh, self.prefetch = mesh, prefetch
        self._host = iter(make_loader(cfg))
        self._state = self._host.get_state()
        self._ahead: collections.deque[tuple[dict[str, Any], bytes]] = collections.deque()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        while len(self._ahead) <= self.prefetch:
            try:
                batch = to_global(next(self._host), self.mesh)
            except StopIteration:
                break
            self._ahead.append((batch, self._host.get_state()))
        if not self._ahead:
            raise StopIteration
        batch, self._state = self._ahead.popleft()
        return batch

    def get_state(self) -> bytes:
        return self._state

    def set_state(self, state: bytes) -> None:
        self._ahead.clear()
        self._host.set_state(state)
        self._state = state

    def start_prefetch(self) -> None:
        """Part of the iterator interface grain's checkpoint handler calls after a
        restore; batches are read on demand."""
