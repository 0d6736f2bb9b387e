"""Models compare by their config, and a program bound to equal Models is traced once per
process (state.bound): a run resumed or evaluated again in one process reuses its
programs, and a state is created from the trace of the init that gave its shapes."""

import jax
import jax.numpy as jnp

from pose_vq import sharding, state
from pose_vq.state import Models, bound
from tests import config_file


def test_models_of_equal_configs_are_equal_and_keep_their_own_config():
    config = config_file("demo.py")
    a, b = Models.create(config), Models.create(config)
    assert a is not b and a == b and hash(a) == hash(b)
    config.quantizer.num_codes = 128  # the caller's config changes later: a keeps its copy
    assert a.config.quantizer.num_codes == a.spec.num_codes == 256
    assert Models.create(config) != a


def test_a_program_bound_to_equal_models_is_traced_once():
    traces = []

    def program(models, x):
        traces.append(models.spec.num_codes)  # runs once per trace
        return x * models.spec.num_codes

    config = config_file("demo.py")
    x = jnp.ones(3)
    for _ in range(2):  # as two runs of one process: new Models and jit objects each time
        assert float(jax.jit(bound(program, Models.create(config)))(x)[0]) == 256
    assert traces == [256]
    config.quantizer.num_codes = 128
    assert float(jax.jit(bound(program, Models.create(config)))(x)[0]) == 128
    assert traces == [256, 128]


def test_bound_is_one_partial_for_equal_parts_named_as_its_function():
    def scaled(a, x, *, scale):
        return a * x * scale

    assert bound(scaled, 1, scale=3)(2) == 6
    assert bound(scaled, 1, scale=3) is bound(scaled, 1, scale=3)
    assert bound(scaled, 2, scale=3) is not bound(scaled, 1, scale=3)
    lowered = jax.jit(bound(scaled, 2, scale=3)).lower(jnp.ones(()))
    assert "jit_scaled" in lowered.as_text()  # jit(scaled) in logs, profiles and HLO


def test_a_state_is_created_from_the_init_its_shapes_traced(monkeypatch):
    """Shardings, restores and creation read one trace of the models' init: creating the
    state after asking for its shapes does not trace the init again."""
    traces = []

    def counted_init_state(models, seed, boxed=False):
        traces.append(boxed)
        return init_state(models, seed, boxed)

    init_state = state.init_state
    monkeypatch.setattr(state, "init_state", counted_init_state)
    models = Models.create(config_file("demo.py"))
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    abstract = state.abstract_state(models, mesh)
    created = jax.eval_shape(lambda: state.create_state(models, mesh, models.config.seed))
    assert traces == [True]
    assert created == jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                             abstract)
