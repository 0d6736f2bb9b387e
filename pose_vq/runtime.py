"""Process-wide runtime set-up: the platform JAX will run on, XLA's flags and compile
options for it, the CPU host split into devices, and JAX's persistent compilation cache.
Nothing here starts a backend."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os

import jax
import ml_collections

LAYER_CONV_IMPLS = ("native", "folded", "winograd")  # layers.Conv3D's paths
# Where compiled programs are kept between processes when a config does not say (its
# ``compilation_cache_dir`` knob): per user, so one user's runs share it.
DEFAULT_COMPILATION_CACHE = "~/.cache/pose_vq/jax"

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


def enable_compilation_cache(directory: str | None = DEFAULT_COMPILATION_CACHE) -> str | None:
    """Keep compiled programs in JAX's persistent cache under ``directory`` ("" or None:
    off), so a restart, a resume or another command on the same shapes loads them instead
    of compiling (the paper's step compiled for 240 s on an H200 at every start). Every
    program is kept, however quick its compile (JAX's default skips those under 1 s: a
    restart would still compile them all). JAX's own environment variables
    (JAX_COMPILATION_CACHE_DIR, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS) win over both.
    Safe with several processes: JAX writes entries from process 0 only, and every process
    reads them. Returns the directory in use, or None."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return os.environ["JAX_COMPILATION_CACHE_DIR"] or None
    if not directory:
        return None
    path = os.path.expanduser(directory)
    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


class CompileCounter:
    """Counts, from JAX's own monitoring events, the programs this process compiled and
    how many of them came from the persistent cache (for the log line at a run's end and
    for tests). ``with CompileCounter() as c: ...``; or ``start()``/``stop()``."""

    REQUESTS = "/jax/compilation_cache/compile_requests_use_cache"
    HITS = "/jax/compilation_cache/cache_hits"

    def __init__(self) -> None:
        self.requests = self.hits = 0

    def _listen(self, event: str, **_: object) -> None:
        self.requests += event == self.REQUESTS
        self.hits += event == self.HITS

    def start(self) -> CompileCounter:
        jax.monitoring.register_event_listener(self._listen)
        return self

    def stop(self) -> None:
        jax.monitoring.unregister_event_listener(self._listen)

    def __enter__(self) -> CompileCounter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def summary(self) -> str:
        return (f"{self.requests} programs compiled through the persistent cache, "
                f"{self.hits} of them loaded from it")


def configure_jax(config: ml_collections.ConfigDict, platform: str | None = None) -> None:
    """Process-wide JAX settings a config asks for on ``platform`` (default:
    ``expected_platform()``); call before anything touches a backend.

    Everywhere: the persistent compilation cache (``compilation_cache_dir``). Only on CPU:
    ``cpu_devices`` splits the host into that many devices, with collectives that wait out a
    busy machine, and a CPU conv path sets XLA's CPU convolution flag.
    """
    enable_compilation_cache(config.get("compilation_cache_dir", DEFAULT_COMPILATION_CACHE))
    if (platform or expected_platform()) != "cpu":
        return
    if conv_impl_for(config.model.conv_impl, "cpu") != "native":
        enable_cpu_conv_flag()
    if config.cpu_devices:
        jax.config.update("jax_num_cpu_devices", config.cpu_devices)
        _add_xla_flag(f"--xla_cpu_collective_call_terminate_timeout_seconds={CPU_COLLECTIVE_TIMEOUT_S}")
