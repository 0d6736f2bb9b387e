"""Where runs, datasets and exports live: a local folder or a bucket (``gs://bucket/dir``),
as one path type, ``etils.epath.Path`` (the type orbax and TFDS take too).

pathlib reads ``gs://b/run`` as the local folder ``gs:/b/run``, so every workdir, data_dir
and export path goes through ``as_path``. A multi-process run also checks, before it
trains, that its workdir is one folder for every process (``require_shared``): orbax
writes each checkpoint from all processes into one directory, and a path that is local
to each host (a TPU slice's workers, a cluster's nodes) would split it.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import time

import fsspec
import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from pose_vq import errors

PathLike = str | os.PathLike
REMOTE_PREFIXES = ("gs://", "s3://", "az://", "hf://")  # epath's URI schemes
# How long a process looks for process 0's marker before it says it cannot see it: the
# name is new, so the first look already asks the filesystem (NFS caches no answer for it
# yet; GCS reads after writes); the rest is slack for a slow shared filesystem.
SHARED_CHECK_SECONDS = 2.0


class WorkdirNotSharedError(errors.ActionableError, OSError):
    """Some processes of a run cannot see what process 0 writes into the workdir."""


def is_remote(path: PathLike) -> bool:
    """Whether ``path`` is a URI (``gs://...``): a bucket, not a local folder."""
    return os.fspath(path).startswith(REMOTE_PREFIXES)


def as_path(path: PathLike) -> epath.Path:
    """``path`` as the one path type: a URI kept as written, a local path with ``~``
    expanded. A ``gs://`` path needs a GCS client library (gcsfs, or TensorFlow's gfile
    when TensorFlow is installed); without one this says so in one line."""
    if is_remote(path):
        _check_gcs_client(os.fspath(path))
        return epath.Path(path)
    return epath.Path(path).expanduser()


def absolute(path: PathLike) -> epath.Path:
    """``as_path``, made absolute when local (a URI already is: pathlib's ``absolute``
    would prefix it with the current folder)."""
    p = as_path(path)
    return p if is_remote(p) else p.absolute()


def _check_gcs_client(path: str) -> None:
    """epath reads gs:// through TensorFlow's gfile when TensorFlow is installed, else
    through fsspec's "gcs" filesystem (gcsfs)."""
    if not path.startswith("gs://"):
        return
    if (os.environ.get("EPATH_USE_TF", "").lower() not in ("false", "no", "f", "0")
            and importlib.util.find_spec("tensorflow") is not None):
        return
    try:
        fsspec.get_filesystem_class("gcs")
    except ImportError as e:
        raise errors.ConfigError(f"{path}: a gs:// path needs gcsfs (pip install -e '.[gcs]', "
                                 "included in '.[tpu]')") from e


def require_shared(workdir: PathLike, timeout_s: float = SHARED_CHECK_SECONDS) -> None:
    """Refuse, in every process alike, a multi-process run whose ``workdir`` is not one
    folder for all of them (e.g. a local path on a multi-host TPU slice): process 0 writes
    a marker with a fresh random name into it, and every process looks for it. Nothing
    happens in a single process. Every process takes part (collectives), so call it in all
    of them, after ``jax.distributed.initialize``."""
    if jax.process_count() == 1:
        return
    workdir = as_path(workdir)
    # Process 0's random token, the same in every process: names the marker of this start.
    token = multihost_utils.broadcast_one_to_all(
        np.frombuffer(secrets.token_bytes(8), dtype=np.uint32))
    marker = workdir / f".shared_check_{''.join(f'{int(t):08x}' for t in token)}"
    unwritable = None  # process 0's error, raised after every process has had its say
    if jax.process_index() == 0:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(workdir))
        except OSError as e:
            unwritable = e
    multihost_utils.sync_global_devices("pose_vq: shared workdir marker written")
    deadline = time.monotonic() + timeout_s
    while not (seen := marker.exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    seen_by = np.asarray(multihost_utils.process_allgather(
        np.array([int(seen)], dtype=np.int32))).reshape(-1)
    if unwritable is not None:
        raise unwritable
    if not seen_by[0]:
        raise WorkdirNotSharedError(f"workdir {workdir}: process 0 could not write there")
    if jax.process_index() == 0:
        marker.unlink()
    blind = [i for i, s in enumerate(seen_by) if not s]
    if blind:
        raise WorkdirNotSharedError(
            f"workdir {workdir} is not one folder for all {jax.process_count()} processes: "
            f"process(es) {', '.join(map(str, blind))} cannot see what process 0 writes there; "
            "use a folder every host reaches (gs://BUCKET/... on a TPU slice, the cluster's "
            "shared filesystem under SLURM)")
