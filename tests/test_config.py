"""configure_jax's XLA flags: added once, and merged into a user's own pass list."""

from configs import demo
from pose_vq import config as config_lib


def test_configure_jax_adds_flags_once_and_keeps_the_users(monkeypatch):
    c = demo.get_config()
    c.cpu_devices = 0
    c.model.conv_impl = "folded"
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    config_lib.configure_jax(c)
    config_lib.configure_jax(c)
    flags = config_lib.os.environ["XLA_FLAGS"].split()
    assert flags == ["--xla_force_host_platform_device_count=8", config_lib.CPU_REMAT_FLAG,
                     config_lib.CPU_CONV_FLAG]

    monkeypatch.setenv("XLA_FLAGS", "--xla_disable_hlo_passes=foo --xla_cpu_experimental_ynn_fusion_type=x")
    config_lib.configure_jax(c)
    assert config_lib.os.environ["XLA_FLAGS"].split() == [
        "--xla_disable_hlo_passes=foo,cse_barrier_expander",
        "--xla_cpu_experimental_ynn_fusion_type=x"]  # the user's choice stands
