"""A run's files: the config round trip, the generator-only restore against the whole
state's, and the errors that name what is missing."""

import numpy as np
import pytest

from configs import default
from pose_vq import checkpointing
from pose_vq.data import pipeline
from pose_vq.state import GeneratorState, Models, abstract_state
from tests.test_train import leaves

pytestmark = pytest.mark.xdist_group("tiny_runs")  # one worker trains the fixture


@pytest.fixture(scope="module")
def run_dir(tiny_runs):
    return tiny_runs[1] / "vqgan"


def test_generator_restore_equals_the_whole_states_fields(tiny_runs, run_dir):
    config = checkpointing.load_run_config(run_dir)
    assert config.to_dict() == tiny_runs[0].to_dict()  # config.json, read back
    models, mesh = Models.create(config), pipeline.data_mesh()
    whole = checkpointing.restore_state(checkpointing.checkpoint_manager(run_dir),
                                        abstract_state(models, mesh, config.seed))
    part = checkpointing.restore_generator(run_dir, models, mesh)
    assert isinstance(part, GeneratorState) and not hasattr(part, "generator_opt")
    for name in ("step", "generator", "vq_stats", "ema_generator", "ema_vq_stats"):
        for a, b in zip(leaves(getattr(whole, name)), leaves(getattr(part, name)), strict=True):
            np.testing.assert_array_equal(a, b)


def test_missing_checkpoints_and_config_are_named(tmp_path):
    models = Models.create(default.get_config())
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*train first"):
        checkpointing.restore_generator(tmp_path, models, pipeline.data_mesh())
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        checkpointing.load_run_config(tmp_path)
