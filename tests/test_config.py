"""configure_jax and the platform helpers: CPU flags and CPU conv paths on CPU only."""

import pytest

from configs import demo
from pose_vq import config as config_lib


def test_configure_jax_adds_cpu_flags_once_and_keeps_the_users(monkeypatch):
    c = demo.get_config()
    c.cpu_devices = 0
    c.model.conv_impl = "auto"  # winograd on CPU: the conv flag
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    config_lib.configure_jax(c, "cpu")
    config_lib.configure_jax(c, "cpu")
    flags = config_lib.os.environ["XLA_FLAGS"].split()
    assert flags == ["--xla_force_host_platform_device_count=8", config_lib.CPU_CONV_FLAG]

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=x")
    config_lib.configure_jax(c, "cpu")
    assert config_lib.os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=x"

    monkeypatch.setenv("XLA_FLAGS", "")
    c.model.conv_impl = "native"
    config_lib.configure_jax(c, "cpu")
    assert config_lib.os.environ["XLA_FLAGS"] == ""


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_accelerators_get_no_cpu_flag_and_native_convs(monkeypatch, platform):
    c = demo.get_config()  # winograd and cpu_devices=2: CPU settings, all of them
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(config_lib.jax.config, "update", lambda *a: pytest.fail(f"set {a}"))
    config_lib.configure_jax(c, platform)
    assert config_lib.os.environ["XLA_FLAGS"] == ""
    assert config_lib.xla_compiler_options(platform) == {}
    for impl in config_lib.CONV_IMPLS:
        assert config_lib.conv_impl_for(impl, platform) == "native"
    assert config_lib.generator_spec(c, platform).conv_impl == "native"


def test_cpu_conv_paths_and_options():
    assert config_lib.conv_impl_for("auto", "cpu") == "winograd"
    assert [config_lib.conv_impl_for(i, "cpu") for i in config_lib.LAYER_CONV_IMPLS] == list(
        config_lib.LAYER_CONV_IMPLS)
    assert config_lib.xla_compiler_options("cpu") == config_lib.CPU_REMAT_OPTIONS
    assert config_lib.generator_spec(demo.get_config()).conv_impl == "winograd"  # this host


def test_winograd_is_refused_in_bfloat16():
    """Winograd's F(4,3) transforms amplify bf16 rounding: refused, and auto picks folded."""
    c = demo.get_config()  # winograd
    c.model.dtype = "bfloat16"
    with pytest.raises(config_lib.ConfigError, match="model.conv_impl='winograd' needs"):
        config_lib.validate(c)
    c.model.conv_impl = "auto"
    config_lib.validate(c)
    assert config_lib.conv_impl_for("auto", "cpu", "bfloat16") == "folded"
    assert config_lib.generator_spec(c, "cpu").conv_impl == "folded"
    assert config_lib.generator_spec(c, "gpu").conv_impl == "native"


def test_batch_check_names_the_mesh_size():
    c = demo.get_config()
    c.train.batch_size = c.eval.batch_size = 64
    config_lib.validate(c)
    config_lib.check_batch_divisible(c, 64)  # a 64-device mesh, one clip per device
    c.train.batch_size = 48
    with pytest.raises(config_lib.ConfigError,
                       match="train.batch_size=48 is not divisible by the 64 devices of the "
                             "mesh's data axis"):
        config_lib.check_batch_divisible(c, 64)


@pytest.mark.parametrize("knob, value, message", [
    ("sharding.strategy", "zero3", "sharding.strategy='zero3': choose one of"),
    ("sharding.mesh", {"data": -1, "model": -1}, "one of them may be -1"),
    ("sharding.mesh", {"data": -1, "model": 3}, r"does not fit 2 devices \(cpu_devices=2\)"),
    ("sharding.rules", (("codes", "pipeline"),), r"\('codes', 'pipeline'\) is not"),
    ("sharding.rules", (("width", "data"),), r"\('width', 'data'\) is not"),
])
def test_sharding_knobs_are_checked(knob, value, message):
    c = demo.get_config()  # cpu_devices=2
    section, key = knob.split(".")
    if isinstance(value, dict):
        c[section][key].update(value)
    else:
        c[section][key] = value
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(c)


def test_cpu_devices_must_split_the_batch_over_the_data_axis():
    c = demo.get_config()
    c.cpu_devices, c.train.batch_size, c.eval.batch_size = 8, 4, 4
    with pytest.raises(config_lib.ConfigError, match="train.batch_size=4 is not divisible by "
                                                     "the 8 devices of the data axis"):
        config_lib.validate(c)
    c.sharding.mesh.model = 2  # a (4, 2) mesh: 4 clips split over 4 data devices
    config_lib.validate(c)


def test_expected_platform_follows_jax_platforms():
    assert config_lib.expected_platform("cuda,cpu") == "gpu"
    assert config_lib.expected_platform("tpu") == "tpu"
    assert config_lib.expected_platform("") == "cpu"  # no accelerator plugin installed here
