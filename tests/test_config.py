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


def test_expected_platform_follows_jax_platforms():
    assert config_lib.expected_platform("cuda,cpu") == "gpu"
    assert config_lib.expected_platform("tpu") == "tpu"
    assert config_lib.expected_platform("") == "cpu"  # no accelerator plugin installed here
