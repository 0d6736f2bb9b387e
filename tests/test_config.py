"""Config checks: each knob's problem named in one message; experiment files load."""

import pytest

from pose_vq import config as config_lib
from pose_vq import runtime
from tests import config_file


def test_winograd_is_refused_in_bfloat16():
    """Winograd's F(4,3) transforms amplify bf16 rounding: refused, and auto picks folded."""
    c = config_file("demo.py")  # winograd
    c.model.dtype = "bfloat16"
    with pytest.raises(config_lib.ConfigError, match="model.conv_impl='winograd' needs"):
        config_lib.validate(c)
    c.model.conv_impl = "auto"
    config_lib.validate(c)
    assert runtime.conv_impl_for("auto", "cpu", "bfloat16") == "folded"
    assert config_lib.generator_spec(c, "cpu").conv_impl == "folded"
    assert config_lib.generator_spec(c, "gpu").conv_impl == "native"


def test_batch_check_names_the_mesh_size():
    c = config_file("demo.py")
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
    c = config_file("demo.py")  # cpu_devices=2
    section, key = knob.split(".")
    if isinstance(value, dict):
        c[section][key].update(value)
    else:
        c[section][key] = value
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(c)


def test_cpu_devices_must_split_the_batch_over_the_data_axis():
    c = config_file("demo.py")
    c.cpu_devices, c.train.batch_size, c.eval.batch_size = 8, 4, 4
    with pytest.raises(config_lib.ConfigError, match="train.batch_size=4 is not divisible by "
                                                     "the 8 devices of the data axis"):
        config_lib.validate(c)
    c.sharding.mesh.model = 2  # a (4, 2) mesh: 4 clips split over 4 data devices
    config_lib.validate(c)


def test_demo_arguments_pick_the_grid_and_the_variant():
    """demo.py's arguments: ``compact`` is the earlier 8 x 8 x 8 grid, combinable with one
    paper variant; two variants are refused."""
    grid = lambda arg: config_lib.generator_spec(config_file(f"demo.py{arg}")).token_grid()
    assert grid("") == (8, 16, 16) and grid(":compact") == grid(":compact,dvae") == (8, 8, 8)
    both = config_file("demo.py:compact,vqvae")
    assert both.loss.adversarial_weight == 0.0 and both.model.channels == (16, 32, 64)
    with pytest.raises(config_lib.ConfigError, match="at most one of"):
        config_file("demo.py:vqvae,dvae")
