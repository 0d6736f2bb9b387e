"""The reference harness against a fake checkout of the reference (tests/fake_reference):
its model built at the config's shapes, each mode's input and target, the stand-ins, the
command's rows, and its one-line failures. Skipped where torch is not installed."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

from pose_vq.benchmarks import reference
from tests import config_file, own_devices_env
from tests.test_multihost import write_config_file

FAKE = pathlib.Path(__file__).resolve().parent / "fake_reference"
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch is not installed")


def tiny(mode="3d"):
    c = config_file("demo.py")
    c.data.update(mode=mode, frames=8, heatmap_size=16)
    c.cpu_devices = 0  # one device: batch 1 is a row
    c.model.update(channels=(8, 16), latent_channels=16, spatial_downsamples=1,
                   temporal_downsamples=1, attention_resolutions=(), conv_impl="native")
    c.quantizer.num_codes = 32
    c.discriminator.num_layers = 2
    c.loss.gradient_weight = 0.0  # the reference has no such term (the command refuses it)
    return c


@pytest.fixture
def isolated_imports():
    """The harness puts the checkout on sys.path and stand-ins in sys.modules: undo both
    (real modules imported meanwhile, torch's among them, stay: an extension module
    cannot be imported twice in a process)."""
    before, path = set(sys.modules), list(sys.path)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("vqgan", "trainer", "lpips", *reference.OPTIONAL_MODULES):
            del sys.modules[name]
    sys.path[:] = path


def test_reference_kwargs_follow_the_config():
    assert reference.reference_kwargs(tiny("c2d")) == {
        "in_channels": 17, "out_channels": 1, "discriminator_channels": 1, "img_size": 16,
        "latent_channels": 16, "latent_size": 8, "intermediate_channels": [8, 16],
        "num_residual_blocks_encoder": 1, "num_residual_blocks_decoder": 1,
        "downsample_layers": 1, "upsample_layers": 1, "temporal_downsample_layers": 1,
        "temporal_upsample_layers": 1, "attention_resolution": [], "num_codebook_vectors": 32,
        "reduce_temporal": False}
    assert reference.reference_kwargs(tiny("m2d_3d"))["out_channels"] == 3


@needs_torch
@pytest.mark.parametrize("mode, x_channels, y_channels", [
    ("3d", 3, 3), ("m2d", 3, 3), ("c2d", 17, 1), ("m2d_3d", 3, 3)])
def test_each_mode_steps_on_its_input_and_target(isolated_imports, mode, x_channels, y_channels):
    config = tiny(mode)
    row = reference.measure_reference({
        "what": "step", "batch": 2, "steps": 1, "threads": 1, "reference": str(FAKE),
        "config": config.to_json_best_effort()})
    calls = sys.modules["trainer"].CALLS
    want = reference.REFERENCE_MODES[mode]
    assert calls[-1] == (*want, (2, x_channels, 8, 16, 16), (2, y_channels, 8, 16, 16))
    assert row["seconds"] > 0 and row["device"] == "cpu" and row["threads"] == 1
    assert "wandb" in row["stand_ins"] and "lpips (VGG16 of random weights)" in row["stand_ins"]
    received = sys.modules["vqgan"].VQGAN.__init__.__code__.co_varnames  # the same keywords
    assert set(reference.reference_kwargs(config)) <= set(received)


@needs_torch
def test_the_lpips_stand_in_is_vgg16s_trunk(isolated_imports):
    import torch

    lpips = reference._lpips_stand_in(torch).LPIPS(net="vgg")
    trunk = sum(p.numel() for p in lpips.stages.parameters())
    assert trunk == 14_714_688  # VGG16's 13 convolutions, as torchvision's vgg16().features
    assert not any(p.requires_grad for p in lpips.stages.parameters())
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    d = lpips(x, torch.rand(4, 3, 32, 32))
    assert d.shape == (4, 1, 1, 1)
    d.sum().backward()
    assert x.grad is not None  # the generator's gradient passes through


@needs_torch
def test_the_command_alternates_fresh_processes(tmp_path):
    path = write_config_file(tiny(), tmp_path)
    res = subprocess.run([sys.executable, "-m", "pose_vq.benchmarks.reference",
                          f"--reference={FAKE}", f"--config={path}", "--what=encode",
                          "--batch_sizes=1", "--rounds=2", "--steps=1", "--json"],
                         env=own_devices_env(), capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    row = json.loads(res.stdout.strip().splitlines()[-1])
    assert (row["what"], row["batch"], row["rounds"]) == ("encode", 1, 2)
    assert row["pose_vq_seconds"] > 0 and row["reference_seconds"] > 0
    assert row["ratio_min"] <= row["ratio"] <= row["ratio_max"]


def test_a_missing_checkout_or_torch_is_one_line(tmp_path, monkeypatch):
    res = subprocess.run([sys.executable, "-m", "pose_vq.benchmarks.reference",
                          f"--reference={tmp_path}", f"--config={write_config_file(tiny(), tmp_path)}"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 1
    if importlib.util.find_spec("torch") is None:
        assert res.stderr.strip().splitlines() == [
            "error: the reference needs PyTorch, which is not installed: pip install torch"]
    else:
        assert res.stderr.strip().splitlines() == [
            f"error: {tmp_path}: not a checkout of the reference (no vqgan/ and trainer/ "
            "packages): git clone TeCSAR-UNCC/Pose-Quantization"]
    gradient = tiny()
    gradient.loss.gradient_weight = 1.0  # a term the reference's step lacks: not comparable
    res = subprocess.run([sys.executable, "-m", "pose_vq.benchmarks.reference", f"--reference={FAKE}",
                          f"--config={write_config_file(gradient, tmp_path)}", "--what=step"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        "error: the reference's step has no gradient loss, so its time is not comparable: "
        "add --config.loss.gradient_weight=0"]
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(reference.ReferenceError, match="needs PyTorch, which is not installed"):
        reference.import_torch()
