"""Helpers the test modules share."""

import os
import re


def own_devices_env() -> dict[str, str]:
    """The environment of a subprocess that makes its own CPU devices (one, or a
    config's ``cpu_devices``): the suite's XLA flags without its device count."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                   os.environ.get("XLA_FLAGS", ""))
    return {**os.environ, "XLA_FLAGS": flags.strip()}
