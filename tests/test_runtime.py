"""configure_jax and the platform helpers: CPU flags and CPU conv paths on CPU only."""

import os

import jax
import numpy as np
import pytest

from pose_vq import config as config_lib
from pose_vq import runtime
from tests import config_file


def test_configure_jax_adds_cpu_flags_once_and_keeps_the_users(monkeypatch):
    c = config_file("demo.py")
    c.cpu_devices = 0
    c.model.conv_impl = "auto"  # winograd on CPU: the conv flag
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    runtime.configure_jax(c, "cpu")
    runtime.configure_jax(c, "cpu")
    flags = os.environ["XLA_FLAGS"].split()
    assert flags == ["--xla_force_host_platform_device_count=8", runtime.CPU_CONV_FLAG]

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=x")
    runtime.configure_jax(c, "cpu")
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=x"

    monkeypatch.setenv("XLA_FLAGS", "")
    c.model.conv_impl = "native"
    runtime.configure_jax(c, "cpu")
    assert os.environ["XLA_FLAGS"] == ""


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_accelerators_get_no_cpu_flag_and_native_convs(monkeypatch, platform):
    c = config_file("demo.py")  # winograd and cpu_devices=2: CPU settings, all of them
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(jax.config, "update", lambda *a: pytest.fail(f"set {a}"))
    runtime.configure_jax(c, platform)
    assert os.environ["XLA_FLAGS"] == ""
    assert runtime.xla_compiler_options(platform) == {}
    for impl in config_lib.CONV_IMPLS:
        assert runtime.conv_impl_for(impl, platform) == "native"
    assert config_lib.generator_spec(c, platform).conv_impl == "native"


def test_cpu_conv_paths_and_options():
    assert runtime.conv_impl_for("auto", "cpu") == "winograd"
    assert [runtime.conv_impl_for(i, "cpu") for i in runtime.LAYER_CONV_IMPLS] == list(
        runtime.LAYER_CONV_IMPLS)
    assert runtime.xla_compiler_options("cpu") == runtime.CPU_REMAT_OPTIONS
    assert config_lib.generator_spec(config_file("demo.py")).conv_impl == "winograd"  # this host


def test_expected_platform_follows_jax_platforms():
    assert runtime.expected_platform("cuda,cpu") == "gpu"
    assert runtime.expected_platform("tpu") == "tpu"
    assert runtime.expected_platform("") == "cpu"  # no accelerator plugin installed here


def test_compile_counter_sees_the_persistent_cache():
    """On the suite's own cache (conftest points JAX_COMPILATION_CACHE_DIR at a fresh
    directory): a program new to the cache is a request without a hit; compiled again after
    the in-memory caches are cleared, it is a hit."""
    unique = float(np.random.default_rng().integers(1 << 30))  # a program no test compiled
    f = lambda x: jax.numpy.sin(x) * unique + x
    x = jax.numpy.ones(7)
    with runtime.CompileCounter() as first:
        jax.jit(f)(x).block_until_ready()
    jax.clear_caches()
    with runtime.CompileCounter() as second:
        jax.jit(f)(x).block_until_ready()
    assert (first.requests, first.hits) == (1, 0)
    assert (second.requests, second.hits) == (1, 1)
    assert second.summary() == ("1 programs compiled through the persistent cache, 1 of them "
                                "loaded from it")


def test_the_environment_variable_wins_over_the_knob(monkeypatch):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/somewhere/else")
    monkeypatch.setattr(jax.config, "update", lambda *a: pytest.fail(f"set {a}"))
    assert runtime.enable_compilation_cache("~/.cache/pose_vq/jax") == "/somewhere/else"
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    assert runtime.enable_compilation_cache("") is None  # off: nothing set
