"""pose_vq.data.download against a fake Panoptic server on 127.0.0.1 (no outside network)."""

import http.server
import io
import re
import tarfile
import threading

import pytest
from absl import flags

from pose_vq.data import download, panoptic, synthetic
from tests import run_command

SEQ = "seq_a"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (path -> bytes), honouring ``bytes=N-`` ranges when
    ``server.ranges``; ``server.cut[path] = n`` announces the whole length but sends only n
    bytes and closes (a dropped connection)."""

    timeout = 5  # a stuck client cannot hold the server

    def do_GET(self):
        body = self.server.files.get(self.path)
        self.server.requests.append((self.path, self.headers.get("Range")))
        if body is None:
            self.send_error(404)
            return
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(wanted.group(1)) if wanted and self.server.ranges else 0
        if start >= len(body) > 0:
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:self.server.cut.pop(self.path, None)])

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A synthetic sequence as Panoptic serves it: {url path: bytes}, and its root."""
    root = synthetic.write_synthetic_root(tmp_path_factory.mktemp("src"), [SEQ], num_frames=6,
                                          num_people=1, late_entry_prob=0, early_exit_prob=0)
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:  # as the server's: folder inside
        tar.add(root / SEQ / panoptic.POSE_DIR, arcname=panoptic.POSE_DIR)
    calib = panoptic.calibration_path(root, SEQ)
    return {f"/{SEQ}/{calib.name}": calib.read_bytes(),
            f"/{SEQ}/{download.ARCHIVE}": tar_bytes.getvalue()}, root


@pytest.fixture
def server(source):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.ranges, srv.cut = dict(source[0]), [], True, {}
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _expected(source):
    root = source[1]
    return {k: v for k, v in _tree(root).items() if k.startswith(SEQ)}


def test_complete_download_is_the_layout_the_reader_reads(server, source, tmp_path, capsys):
    run_command(download, [f"--root={tmp_path}", f"--sequences={SEQ}", f"--base_url={server.url}"])
    out = capsys.readouterr()
    assert out.out.strip() == f"{SEQ}: downloaded"
    assert download.ARCHIVE in out.err  # the progress bar
    assert _tree(tmp_path) == _expected(source)  # nothing else: no .part, archive, .partial
    tracks = panoptic.read_tracks(tmp_path, SEQ, ["00_01"])
    assert [len(t.frames) for t in tracks] == [6]
    # A complete sequence is skipped without a request.
    server.requests.clear()
    assert download.download_sequence(tmp_path, SEQ, server.url) is False
    assert server.requests == []


@pytest.mark.parametrize("ranges", [True, False])
def test_interrupted_download_is_resumed_or_redone(server, source, tmp_path, ranges):
    archive = f"/{SEQ}/{download.ARCHIVE}"
    server.ranges, server.cut[archive] = ranges, len(server.files[archive]) // 2
    with pytest.raises(download.DownloadError, match=f"^{SEQ}: .*got \\d+ of \\d+ bytes"):
        download.download_sequence(tmp_path, SEQ, server.url)
    folder, half = tmp_path / SEQ, len(server.files[archive]) // 2
    assert (folder / f"{download.ARCHIVE}.part").stat().st_size == half
    assert not (folder / panoptic.POSE_DIR).exists() and not download.is_complete(tmp_path, SEQ)
    server.requests.clear()
    assert download.download_sequence(tmp_path, SEQ, server.url) is True
    assert server.requests == [(archive, f"bytes={half}-")]  # the calibration was complete
    assert _tree(tmp_path) == _expected(source)


@pytest.mark.parametrize("damage", [
    lambda b: b[:len(b) // 2],  # cut inside a member
    lambda b: b[:1024],  # the folder's header, then a file's header without its data
    lambda b: b"<html>404 Not Found</html>",  # an error page served as the file
])
def test_truncated_or_non_tar_archive_is_an_error_naming_the_sequence(server, tmp_path, damage):
    archive = f"/{SEQ}/{download.ARCHIVE}"
    server.files[archive] = damage(server.files[archive])
    with pytest.raises(download.DownloadError, match=f"^{SEQ}: .*truncated or not a tar"):
        download.download_sequence(tmp_path, SEQ, server.url)
    assert sorted(p.name for p in (tmp_path / SEQ).iterdir()) == [f"calibration_{SEQ}.json"]


def test_archive_cut_at_a_member_boundary_is_caught(server, tmp_path):
    """tarfile reads such an archive without complaint; the missing end marker gives it away."""
    archive = f"/{SEQ}/{download.ARCHIVE}"
    whole = server.files[archive]
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        members = tar.getmembers()
    server.files[archive] = whole[:members[3].offset]  # three whole members, then nothing
    with pytest.raises(download.DownloadError, match="no end-of-archive marker"):
        download.download_sequence(tmp_path, SEQ, server.url)


def test_404_and_bad_calibration_are_errors_naming_the_sequence(server, tmp_path, capsys):
    server.files["/seq_b/calibration_seq_b.json"] = b'{"cameras": '
    with pytest.raises(SystemExit) as exit_:
        run_command(download, [f"--root={tmp_path}", f"--sequences=seq_gone,seq_b,{SEQ}",
                               f"--base_url={server.url}"])
    assert exit_.value.code == 1
    out = capsys.readouterr()
    errors = [line for line in out.err.splitlines() if line.startswith("error: ")]
    assert errors[0] == (f"error: seq_gone: {server.url}/seq_gone/calibration_seq_gone.json: "
                         "HTTP 404 Not Found")
    assert errors[1].startswith("error: seq_b: calibration_seq_b.json is not JSON")
    assert len(errors) == 2 and out.out.strip() == f"{SEQ}: downloaded"  # the others go on
    assert not (tmp_path / "seq_b" / "calibration_seq_b.json").exists()
    assert not list(tmp_path.rglob("*.part"))


def test_split_names_the_reference_lists(monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(download, "download_sequence", lambda root, s, url: asked.append(s))
    run_command(download, [f"--root={tmp_path}", "--split=validation"])
    assert asked == list(panoptic.VALIDATION_SEQUENCES)
    for neither_or_both in ([], [f"--sequences={SEQ}", "--split=train"]):  # exactly one of them
        with pytest.raises(flags.IllegalFlagValueError, match="sequences.*split"):
            run_command(download, [f"--root={tmp_path}", *neither_or_both])


def test_a_name_that_leaves_the_root_is_refused(tmp_path):
    with pytest.raises(download.DownloadError, match="not a Panoptic sequence name"):
        download.download_sequence(tmp_path, "../elsewhere", "http://127.0.0.1:9")
