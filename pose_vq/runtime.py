"""Process-wide runtime set-up: the platform JAX will run on, XLA's flags and compile
options for it, and the CPU host split into devices. Nothing here starts a backend."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os

import jax
import ml_collections

LAYER_CONV_IMPLS = ("native", "folded", "winograd")  # layers.Conv3D's paths

# In-process collectives of CPU devices abort after 40 s when one device's thread has not
# arrived; on a busy machine (another job on the same cores) a demo run's evaluation did.
CPU_COLLECTIVE_TIMEOUT_S = 3600
# XLA CPU's YNNPACK kernels for single convolutions and dots were 1.2-8x slower than the
# fallback's on the model's shapes (BENCHMARKS.md); the CPU path turns them off.
CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-individual_dot"
# XLA CPU's pipeline expands optimisation barriers before CSE, which then merges the
# recomputation of jax.checkpoint (model.remat_levels, loss.perceptual_chunk) back into
# the forward pass: remat saved no memory on CPU (BENCHMARKS.md). Skipping that pass keeps
# the barriers, as GPU and TPU do (they need the pass: it lowers the barriers), so it is a
# compile option of the CPU programs (xla_compiler_options), not a process-wide flag.
CPU_REMAT_OPTIONS = {"xla_disable_hlo_passes": "cse_barrier_expander"}


def expected_platform(platforms: str | None = None) -> str:
    """The platform JAX will run on, decided without starting a backend (XLA reads
    XLA_FLAGS once, when the first backend starts): the first of ``jax_platforms`` when
    set, else tpu or gpu when its plugin is installed, else cpu. A plugin on a machine
    without its chip makes this say tpu or gpu while JAX falls back to the CPU: the CPU
    flags are then left out, which costs CPU speed, never correctness. ``platforms``
    stands in for ``jax_platforms`` (tests)."""
    platforms = platforms if platforms is not None else jax.config.jax_platforms
    if platforms:
        first = platforms.split(",")[0].strip().lower()
        return "gpu" if first in ("cuda", "rocm") else first
    if importlib.util.find_spec("libtpu"):
        return "tpu"
    plugins = [e.name for e in importlib.metadata.entry_points(group="jax_plugins")]
    return "gpu" if any("cuda" in n or "rocm" in n for n in plugins) else "cpu"


def conv_impl_for(impl: str, platform: str, dtype: str = "float32") -> str:
    """The convolution path ``model.conv_impl`` means on ``platform``: ``auto`` is
    winograd on CPU (folded in bfloat16, whose rounding winograd's transforms amplify)
    and native elsewhere; the CPU paths (folded, winograd) are native off the CPU. Every
    path has the same parameters, so a checkpoint runs under any of them."""
    if platform != "cpu":
        return "native"
    if impl == "auto":
        return "winograd" if dtype == "float32" else "folded"
    return impl


def xla_compiler_options(platform: str) -> dict[str, str]:
    """Compile options of a program that runs on ``platform`` (jit's compiler_options)."""
    return dict(CPU_REMAT_OPTIONS) if platform == "cpu" else {}


def _add_xla_flag(flag: str) -> None:
    """Add ``flag`` to XLA_FLAGS unless the user set that flag (their value stands)."""
    key = flag.split("=", 1)[0]
    flags = os.environ.get("XLA_FLAGS", "").split()
    if not any(f.startswith(key + "=") for f in flags):
        os.environ["XLA_FLAGS"] = " ".join([*flags, flag])


def enable_cpu_conv_flag() -> None:
    """Set XLA's CPU convolution flag, as the CPU conv paths (folded, winograd) want it."""
    _add_xla_flag(CPU_CONV_FLAG)


def configure_jax(config: ml_collections.ConfigDict, platform: str | None = None) -> None:
    """Process-wide JAX settings a config asks for on ``platform`` (default:
    ``expected_platform()``); call before anything touches a backend.

    Only on CPU: ``cpu_devices`` splits the host into that many devices, with collectives
    that wait out a busy machine, and a CPU conv path sets XLA's CPU convolution flag.
    Elsewhere nothing is set.
    """
    if (platform or expected_platform()) != "cpu":
        return
    if conv_impl_for(config.model.conv_impl, "cpu") != "native":
        enable_cpu_conv_flag()
    if config.cpu_devices:
        jax.config.update("jax_num_cpu_devices", config.cpu_devices)
        _add_xla_flag(f"--xla_cpu_collective_call_terminate_timeout_seconds={CPU_COLLECTIVE_TIMEOUT_S}")
