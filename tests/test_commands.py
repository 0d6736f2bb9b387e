"""Every command has one shape (absl flags defined by ``define_flags()``, ``main(argv)``
wrapped by ``pose_vq.errors.one_line_failures``) and imports without defining a flag; a
failure the user can act on ends a command in one line, ``--verbose`` lets it through;
a full disk is recognised wherever it sits in an exception chain."""

import errno
import importlib
import json
import logging
import os
import subprocess
import sys
import types

import pytest
from absl import app, flags
from absl import logging as absl_logging

from pose_vq import errors
from pose_vq.data import prepare
from tests import ROOT, config_file, run_command


def command_modules() -> list[str]:
    """Every module under pose_vq/ and data_builders/ that runs as ``python -m``."""
    found = []
    for package in ("pose_vq", "data_builders"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if 'if __name__ == "__main__":' in path.read_text():
                found.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


def test_the_commands_are_found():
    found = command_modules()
    assert {"pose_vq.main", "pose_vq.data.synthetic", "pose_vq.benchmarks.device_summary",
            "pose_vq.downstream.lift", "data_builders.panoptic_heatmaps.__main__"} <= set(found)


IMPORT_ALL = """
import importlib, json, sys
from absl import flags

def ours():  # the flags absl has registered under a project module
    return {m: sorted(f.name for f in fl) for m, fl in flags.FLAGS.flags_by_module_dict().items()
            if m.split(".")[0] in ("pose_vq", "data_builders")}

for name in sys.argv[1:]:
    importlib.import_module(name)
at_import = ours()
importlib.import_module("pose_vq.data.synthetic").define_flags()  # what the check would see
print(json.dumps({"at_import": at_import, "after_define": ours()}))
"""


def test_commands_import_without_defining_a_flag():
    """All of them imported into one fresh process: no flag is defined by a project
    module (one defined at import would clash with the next command's); the libraries
    they import define their own (absl's logging, grain's, orbax's), which is theirs."""
    res = subprocess.run([sys.executable, "-c", IMPORT_ALL, *command_modules()],
                         capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    found = json.loads(res.stdout.strip().splitlines()[-1])
    assert found["at_import"] == {}
    assert {"root", "frames", "verbose"} <= set(found["after_define"]["pose_vq.data.synthetic"])


@pytest.mark.parametrize("name", command_modules())
def test_every_command_has_the_shape(name):
    """define_flags() defines its flags, --verbose among them, and they come off again;
    main is one_line_failures' wrapper of the module's own function."""
    module = importlib.import_module(name)
    assert callable(module.define_flags) and callable(module.main)
    wrapper = errors.one_line_failures(lambda argv: None)
    assert module.main.__code__ is wrapper.__code__, f"{name}.main is not wrapped"
    assert module.main.__wrapped__.__module__ == name
    before = set(flags.FLAGS)
    try:
        module.define_flags()
        assert "verbose" in set(flags.FLAGS) - before
    finally:
        for flag in set(flags.FLAGS) - before:
            delattr(flags.FLAGS, flag)


def fake_command(error: BaseException) -> types.SimpleNamespace:
    """A command whose main raises ``error``."""

    def main(argv):
        raise error

    return types.SimpleNamespace(__name__="fake", define_flags=errors.define_verbose_flag,
                                 main=errors.one_line_failures(main))


@pytest.mark.parametrize("error", [
    prepare.DatasetNotBuiltError("dataset d is not built in /x:\n  build it with `cmd`"),
    errors.ConfigError("model.channels=() must name at least one level"),
    PermissionError(errno.EACCES, "Permission denied", "/ro/checkpoints"),
])
def test_an_actionable_failure_is_one_line_and_verbose_lets_it_through(error, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_command(fake_command(error), [])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert err == "error: " + " ".join(str(error).split()) + "\n"  # the message, on one line
    with pytest.raises(type(error)):
        run_command(fake_command(error), ["--verbose"])


def test_other_failures_keep_their_traceback():
    """A bug (here a KeyError) is not the user's to fix: its traceback is kept."""
    with pytest.raises(KeyError):
        run_command(fake_command(KeyError("mode")), [])
    with pytest.raises(app.UsageError):  # absl prints usage errors its own way
        run_command(fake_command(app.UsageError("--workdir is required")), [])


TENSORSTORE_FULL = ("RESOURCE_EXHAUSTED: Error writing \"generator.kernel/0\" in OCDBT database "
                    "at local file \"/ckpt/2.orbax-checkpoint-tmp/\": Failed to write 507284 bytes "
                    "to file 16: No space left on device [os_error_code='28']")


def _raised_from(error: BaseException, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as c:
            raise error from c
    except BaseException as e:
        return e


def test_a_full_disk_is_found_anywhere_in_the_chain():
    enospc = OSError(errno.ENOSPC, "No space left on device")
    assert errors.is_no_space(enospc)
    assert errors.is_no_space(ValueError(TENSORSTORE_FULL))  # what orbax's threads raise
    assert errors.is_no_space(_raised_from(RuntimeError("commit failed"), enospc))
    assert errors.is_no_space(ExceptionGroup("3 commits failed", [
        ValueError("other"), _raised_from(RuntimeError("x"), ValueError(TENSORSTORE_FULL))]))
    assert not errors.is_no_space(OSError(errno.EACCES, "Permission denied"))
    assert not errors.is_no_space(_raised_from(RuntimeError("commit failed"), ValueError("shape")))


def test_full_disk_tracebacks_are_dropped_from_the_log_unless_verbose():
    """orbax's threads log a traceback per failed write; the command's line replaces them."""
    handler = absl_logging.get_absl_handler().python_handler

    def logged(error):
        record = logging.LogRecord("orbax", logging.ERROR, "/x/orbax/future.py", 1,
                                   "thread raised", None, (type(error), error, None))
        return bool(handler.filter(record))

    handler.removeFilter(errors._drop_full_disk_tracebacks)  # as no command had run
    try:
        with pytest.raises(errors.ConfigError):
            run_command(fake_command(errors.ConfigError("x")), ["--verbose"])
        assert logged(ValueError(TENSORSTORE_FULL))
        with pytest.raises(SystemExit):
            run_command(fake_command(errors.ConfigError("x")), [])
        assert not logged(ValueError(TENSORSTORE_FULL))
        assert logged(ValueError("shape mismatch")) and logged(OSError(errno.EACCES, "denied"))
    finally:
        handler.removeFilter(errors._drop_full_disk_tracebacks)


def test_evaluating_without_a_built_dataset_is_one_line(tmp_path, capsys, monkeypatch):
    """python -m pose_vq.main --mode=evaluate, in-process: the dataset is looked for
    before the checkpoint, and its absence is one line naming the build command."""
    from pose_vq import main as main_command

    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # restored afterwards
    data_dir = tmp_path / "nothing_here"
    with pytest.raises(SystemExit) as exit_:
        run_command(main_command, [f"--config={ROOT / 'configs' / 'demo.py'}",
                                   f"--workdir={tmp_path}", "--mode=evaluate",
                                   f"--config.data.data_dir={data_dir}", "--config.cpu_devices=0"])
    assert exit_.value.code == 1
    demo = config_file("demo.py")
    expected = prepare.build_command(demo.data, data_dir)  # the command, built independently
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"error: dataset {prepare.dataset_name(demo.data)} is not built in {data_dir}")
    assert f"`{expected}`" in err[0]
