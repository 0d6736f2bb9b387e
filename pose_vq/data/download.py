"""Download CMU Panoptic sequences, only the files pose_vq reads, into the builder's layout.

    python -m pose_vq.data.download --root=DIR --sequences=160906_band1,171204_pose1
    python -m pose_vq.data.download --root=DIR --split=train     # the reference's lists

For each sequence: ``calibration_<seq>.json`` and the ``hdPose3d_stage1_coco19.tar``
archive, from the Panoptic web server (where panoptic-toolbox's ``scripts/getData.sh``
takes them), giving ``DIR/<seq>/calibration_<seq>.json`` and
``DIR/<seq>/hdPose3d_stage1_coco19/body3DScene_*.json``. Files arrive as ``*.part`` and
are renamed only once their size matches the server's; a rerun resumes a partial one with
an HTTP Range request (or redoes it where the server ignores ranges). The archive must be
a whole tar holding pose files; it is unpacked into a temporary folder renamed when done,
then deleted. A sequence whose calibration and pose folder exist is skipped, so reruns
only fetch what is missing. Each failing sequence prints one line and the exit status is 1.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.request

from absl import app, flags
from tqdm import tqdm

from pose_vq import errors
from pose_vq.data import panoptic

BASE_URL = "http://domedb.perception.cs.cmu.edu/webdata/dataset"
ARCHIVE = f"{panoptic.POSE_DIR}.tar"
TIMEOUT_S = 60  # per connection attempt and per read: a stalled server is an error
_CHUNK = 1 << 16
_SEQUENCE = re.compile(r"[\w-]+")  # also keeps a name from reaching outside the root


class DownloadError(errors.ActionableError, RuntimeError):
    """A file could not be fetched or is not what it should be; the message names it."""


def fetch(url: str, dest: pathlib.Path, desc: str) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial one.

    ``dest`` appears only when the whole body arrived (its size is the one the server
    announced); an interrupted transfer leaves the ``.part`` for the next call to extend.
    """
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the partial file is no prefix the server can extend
            part.unlink()
            return fetch(url, dest, desc)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (http.client.HTTPException, OSError, ValueError) as e:  # URLError is an OSError
        raise DownloadError(f"{url}: {getattr(e, 'reason', e)}") from None
    with response:
        if response.status == 206:  # the rest, after the ``have`` bytes of the .part
            content_range = response.headers.get("Content-Range", "")
            resumed = re.fullmatch(rf"bytes {have}-\d+/(\d+)", content_range)
            if not resumed:
                part.unlink()
                raise DownloadError(f"{url}: asked for bytes {have}- and got "
                                    f"{content_range!r}; rerun to download it again")
            total = int(resumed.group(1))
        else:  # a whole body (the server ignored the range, or there was none)
            have, length = 0, response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        with open(part, "ab" if have else "wb") as f, tqdm(
                total=total, initial=have, desc=desc, unit="B", unit_scale=True,
                unit_divisor=1024) as bar:
            try:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            except (http.client.HTTPException, OSError) as e:
                raise DownloadError(f"{url}: connection lost after {f.tell()} bytes ({e}); "
                                    "rerun to resume") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: got {size} of {total} bytes; rerun to resume")
    part.replace(dest)


def unpack_poses(archive: pathlib.Path, pose_dir: pathlib.Path) -> None:
    """Extract the ``body3DScene_*.json`` files of an uncompressed tar into ``pose_dir``.

    They go to a temporary folder that is renamed only when the whole archive was read,
    so a broken archive never leaves a pose folder behind.
    """
    tmp = pose_dir.with_name(pose_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    count = 0
    try:
        with tarfile.open(archive, "r:") as tar:
            for member in tar:
                name = pathlib.PurePosixPath(member.name).name
                if member.isfile() and panoptic.POSE_FILE.fullmatch(name):
                    (tmp / name).write_bytes(tar.extractfile(member).read())
                    count += 1
            # tarfile stops quietly at a header cut short; a whole archive ends with two
            # zero blocks after the last member.
            if archive.stat().st_size - tar.offset < 2 * tarfile.BLOCKSIZE:
                raise tarfile.ReadError("no end-of-archive marker")
    except (tarfile.TarError, EOFError) as e:
        shutil.rmtree(tmp)
        raise DownloadError(f"{archive.name} is truncated or not a tar archive ({e})") from None
    if not count:
        shutil.rmtree(tmp)
        raise DownloadError(f"{archive.name} holds no body3DScene_*.json file")
    tmp.rename(pose_dir)


def _check_calibration(path: pathlib.Path) -> None:
    try:
        calib = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DownloadError(f"{path.name} is not JSON ({e})") from None
    if not isinstance(calib, dict) or not isinstance(calib.get("cameras"), list):
        raise DownloadError(f"{path.name} has no 'cameras' list")


def is_complete(root: str | pathlib.Path, sequence: str) -> bool:
    """Whether a sequence has what the builder reads (both appear only when complete)."""
    return (panoptic.calibration_path(root, sequence).is_file()
            and (pathlib.Path(root) / sequence / panoptic.POSE_DIR).is_dir())


def download_sequence(root: str | pathlib.Path, sequence: str, base_url: str = BASE_URL) -> bool:
    """Fetch what is missing of one sequence; False when it was already complete.

    Raises DownloadError naming the sequence; a file that fails its check is deleted so
    that nothing is left looking complete.
    """
    if not _SEQUENCE.fullmatch(sequence):
        raise DownloadError(f"{sequence!r}: not a Panoptic sequence name")
    if is_complete(root, sequence):
        return False
    folder = pathlib.Path(root) / sequence
    folder.mkdir(parents=True, exist_ok=True)
    url = f"{base_url.rstrip('/')}/{sequence}"
    calibration = panoptic.calibration_path(root, sequence)
    archive = folder / ARCHIVE
    try:
        if not calibration.is_file():
            fetch(f"{url}/{calibration.name}", calibration, f"{sequence} calibration")
            try:
                _check_calibration(calibration)
            except DownloadError:
                calibration.unlink()
                raise
        if not (folder / panoptic.POSE_DIR).is_dir():
            fetch(f"{url}/{ARCHIVE}", archive, f"{sequence} {ARCHIVE}")
            try:
                unpack_poses(archive, folder / panoptic.POSE_DIR)
            finally:
                archive.unlink()
    except DownloadError as e:
        raise DownloadError(f"{sequence}: {e}") from None
    return True


FLAGS = flags.FLAGS


@errors.one_line_failures
def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    sequences = ([s for s in FLAGS.sequences if s] if FLAGS.sequences is not None else
                 list(panoptic.TRAIN_SEQUENCES if FLAGS.split == "train"
                      else panoptic.VALIDATION_SEQUENCES))
    failed = 0
    for sequence in sequences:
        try:
            fetched = download_sequence(FLAGS.root, sequence, FLAGS.base_url)
        except DownloadError as e:  # one line each; the other sequences still come
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"{sequence}: {'downloaded' if fetched else 'already complete'}")
    if failed:
        sys.exit(1)


def define_flags() -> None:
    """The command's flags (defined only when it runs, as every pose_vq command's are)."""
    flags.DEFINE_string("root", None, "Panoptic root to download into.", required=True)
    flags.DEFINE_list("sequences", None, "Comma-separated sequence names.")
    flags.DEFINE_enum("split", None, ["train", "validation"],
                      "The reference's train or validation sequence list.")
    flags.mark_flags_as_mutual_exclusive(["sequences", "split"], required=True)
    flags.DEFINE_string("base_url", BASE_URL, "Where the sequences' folders are.")
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
