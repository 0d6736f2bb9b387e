"""Where parameters live on a (data, model) device mesh.

Every module names the axes of its parameters (flax ``with_logical_partitioning``), from
the vocabulary below. A strategy's rules map those logical names onto the mesh's axes
(``config.sharding``):

* ``replicated``: a full copy of every parameter and optimiser state on every device;
  the batch split over ``data``.
* ``fsdp``: each parameter, its optimiser states and its EMA split over ``data`` along
  its first named axis that the axis size divides (XLA's partitioner inserts the
  gathers of weights and the reductions of gradients the step then needs).
* ``tensor``: output widths (convolutions' output channels, codebook entries, MLP
  hidden widths) split over ``model``, input widths over ``data`` (FSDP over the rest
  of the mesh); the batch is split over ``data`` and each of its shards is computed by
  the ``model`` devices together.

A name maps to a mesh axis only where that axis has more than one device and divides
the parameter's dimension evenly; otherwise the dimension stays whole. So one
checkpoint's parameters take the same rules onto any mesh shape, and narrow leaves
(the 3 output channels of the decoder's last conv) stay replicated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA, MODEL = "data", "model"
MESH_AXES = (DATA, MODEL)

# The logical axis names parameters carry (None: an axis no rule shards, e.g. conv taps).
LOGICAL_AXES = {
    "channels_in": "a convolution's or linear map's input channels",
    "channels_out": "a convolution's output channels (and its bias)",
    "norm": "a normalisation's per-channel scale and offset",
    "codes": "codebook entries (K)",
    "code_dim": "a code's width (D)",
    "embed": "a transformer's token width",
    "mlp": "a transformer's widened width (MLP hidden, query-key-value)",
    "heads": "attention heads",
    "head_dim": "an attention head's width",
    "joints": "skeleton joints (position embeddings)",
    "frames": "clip frames (position embeddings)",
    "outputs": "a head's outputs (3D coordinates, class logits)",
}

# Rules: (logical name, mesh axis) pairs in priority order; a dimension takes the first
# rule for its name whose mesh axis is free in that parameter and divides its size.
STRATEGIES: dict[str, tuple[tuple[str, str], ...]] = {
    "replicated": (),
    "fsdp": tuple((name, DATA) for name in ("channels_in", "channels_out", "norm", "codes",
                                            "code_dim", "embed", "mlp", "heads", "head_dim")),
    "tensor": tuple((name, MODEL) for name in ("channels_out", "norm", "codes", "mlp", "heads"))
    + tuple((name, DATA) for name in ("channels_in", "code_dim", "embed", "head_dim")),
}


def logical(init: Any, *names: str | None) -> Any:
    """``init`` whose parameter carries ``names``, one per axis (``LOGICAL_AXES``)."""
    return nn.with_logical_partitioning(init, names)


def rules_for(config: Any) -> tuple[tuple[str, str], ...]:
    """The rules of ``config.sharding``: its explicit ``rules`` or else its strategy's."""
    s = config.sharding
    return tuple(tuple(r) for r in s.rules) if s.rules else STRATEGIES[s.strategy]


def mesh_shape(shape: Mapping[str, int] | None, num_devices: int) -> tuple[int, int]:
    """(data, model) sizes of a mesh over ``num_devices`` devices; ``shape`` gives each
    axis's size (-1: the devices left; default data=-1, model=1)."""
    sizes = {DATA: -1, MODEL: 1, **(shape or {})}
    unknown = set(sizes) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"sharding.mesh: unknown axes {sorted(unknown)}; the mesh's axes are "
                         f"{MESH_AXES}")
    fixed = int(np.prod([v for v in sizes.values() if v != -1]))
    dims = tuple(num_devices // fixed if sizes[a] == -1 else sizes[a] for a in MESH_AXES)
    if list(sizes.values()).count(-1) > 1 or int(np.prod(dims)) != num_devices:
        raise ValueError(f"sharding.mesh {dict(sizes)} does not fit {num_devices} devices")
    return dims


def make_mesh(shape: Mapping[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, model) mesh over ``devices`` (default: every device of every process), of
    ``mesh_shape(shape, ...)``. Devices fill it in ``jax.devices()`` order, so each
    process's devices are one block of the data axis, as ``pipeline.to_global`` wants."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices).reshape(mesh_shape(shape, len(devices))), MESH_AXES)


def data_size(mesh: Mesh) -> int:
    """How many ways the batch is split: the size of the mesh's data axis."""
    return mesh.shape[DATA]


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays whose leading (batch) axis is split over ``data``, whole across ``model``."""
    return NamedSharding(mesh, PartitionSpec(DATA))


def replicated(mesh: Mesh, tree: Any) -> Any:
    """A full copy of every leaf on every device of the mesh."""
    return jax.tree_util.tree_map(lambda _: NamedSharding(mesh, PartitionSpec()), tree)


def partition_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                   rules: Sequence[tuple[str, str]]) -> PartitionSpec:
    """The mesh axes of one parameter: each dimension's first rule whose mesh axis has more
    than one device, is not used by an earlier dimension and divides its size."""
    used, spec = set(), []
    for name, size in zip(names, shape):
        axis = next((a for n, a in rules if n == name and a not in used
                     and mesh.shape[a] > 1 and size % mesh.shape[a] == 0), None)
        used.add(axis)  # (None included: harmless, no rule names it)
        spec.append(axis)
    while spec and spec[-1] is None:
        spec.pop()
    return PartitionSpec(*spec)


def tree_shardings(boxed: Any, mesh: Mesh, rules: Sequence[tuple[str, str]]) -> Any:
    """NamedShardings for a tree whose leaves may be logically partitioned (an
    ``eval_shape`` of an init that keeps flax's boxes): the tree's unboxed structure,
    unnamed leaves replicated."""
    named = lambda leaf: isinstance(leaf, nn.LogicallyPartitioned)

    def one(leaf):
        if named(leaf):
            return NamedSharding(mesh, partition_spec(leaf.names, leaf.value.shape, mesh, rules))
        return NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(one, boxed, is_leaf=named)


def bytes_per_device(tree: Any) -> int:
    """Bytes of a tree of arrays (or sharded ShapeDtypeStructs) held by one device: each
    leaf's shard on the first device of its sharding."""
    total = 0
    for leaf in jax.tree_util.tree_leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape)
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    return total
