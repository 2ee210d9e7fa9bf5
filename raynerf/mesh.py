"""The device mesh, shared by training, rendering and evaluation.

One 1-D mesh over every device of every process, with the ray batch sharded along
its ``data`` axis and everything else (parameters, optimiser state) replicated. A
batch may run as several passes (micro-batches) inside one compiled call; this module
decides how many and splits and joins them without moving data between devices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

# Rays per device in each pass when the CPU picks the passes. One pass over a large
# batch streams every layer's activations through memory; passes this small keep them
# in the caches (docs/benchmarks.md has the paired timings).
CPU_MICRO_BATCH_RAYS = 32


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process). The devices
    may be abstract ones (a TPU topology compiled for without being present)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices, dtype=object).reshape(-1), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows of a batch split evenly over the mesh's devices."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def global_batch(
    mesh: Mesh, local_batch: Mapping[str, np.ndarray], fields: Sequence[str] | None = None
) -> dict[str, jax.Array]:
    """This process's rows of each of ``fields`` (default: every key; [local_rows, k]
    numpy arrays) -> global arrays [global_rows, k] sharded along the batch."""
    sharding = batch_sharding(mesh)
    return {
        name: jax.make_array_from_process_local_data(sharding, local_batch[name])
        for name in (local_batch if fields is None else fields)
    }


def split_micro_batches(tree, num_micro: int, mesh: Mesh):
    """[batch, ...] arrays -> [num_micro, batch / num_micro, ...]. Micro-batch ``m``
    takes rows ``m, m + num_micro, ...``, so every device holds an equal share of each
    micro-batch and no data moves between devices."""

    def split(x):
        x = x.reshape((x.shape[0] // num_micro, num_micro) + x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(None, DATA_AXIS)))

    return jax.tree.map(split, tree)


def join_micro_batches(tree, mesh: Mesh):
    """The inverse of :func:`split_micro_batches`: [num_micro, rows, ...] ->
    [num_micro * rows, ...] in the original row order, sharded along the batch."""

    def join(x):
        x = x.swapaxes(0, 1)
        x = x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])
        return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))

    return jax.tree.map(join, tree)


def pass_rays(mesh: Mesh) -> int:
    """The fewest rays per device a pass should hold when the devices choose the passes:
    :data:`CPU_MICRO_BATCH_RAYS` on the CPU; 0 (the whole share in one pass) on GPU and TPU."""
    return CPU_MICRO_BATCH_RAYS if mesh.devices.flat[0].platform == "cpu" else 0


def micro_batches(passes: int | Literal["auto"], batch_size: int, mesh: Mesh) -> int:
    """How many micro-batches (passes) ``batch_size`` rays run as on ``mesh``.

    An int is taken as given. ``"auto"`` lets the devices decide: on GPU and TPU one
    pass; on the CPU passes of about :func:`pass_rays` rays per device: the largest
    divisor of each device's share that leaves at least that many.
    """
    if passes != "auto":
        return int(passes)
    least = pass_rays(mesh)
    if not least:
        return 1
    share = batch_size // mesh.devices.size
    most = max(1, share // least)
    return max(m for m in range(1, most + 1) if share % m == 0)
