"""Device mesh, sharding rules and global-batch assembly (jit + NamedSharding; no pmap).

The mesh has two axes: 'data' (pure data parallelism) and 'fsdp' (data parallelism whose members also split the
large parameter / optimiser leaves). The batch is split over both axes, so every device sees a distinct slice of
the global batch; FSDP leaves are gathered by XLA where the computation needs them.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)
# Leaves with fewer elements than this stay replicated: splitting biases / norms buys nothing and costs gathers.
DEFAULT_MIN_FSDP_SIZE = 2**12


def make_mesh(data: int | None = None, fsdp: int = 1, devices=None) -> Mesh:
    """A ('data', 'fsdp') mesh with Auto axis types (this JAX defaults to Explicit; we want GSPMD propagation).

    `data=None` takes all the devices left over after `fsdp`. `devices` defaults to `jax.devices()` (all
    processes' devices in a multi-host run).
    """
    devices = list(jax.devices() if devices is None else devices)
    if fsdp < 1 or len(devices) % fsdp:
        raise ValueError(f"fsdp={fsdp} must be >= 1 and divide the number of devices {len(devices)}")
    if data is None:
        data = len(devices) // fsdp
    if data * fsdp != len(devices):
        raise ValueError(f"mesh data={data} x fsdp={fsdp} needs {data * fsdp} devices, got {len(devices)}")
    return jax.make_mesh((data, fsdp), BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device of the mesh; other axes whole."""
    return NamedSharding(mesh, P(BATCH_AXES))


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int = DEFAULT_MIN_FSDP_SIZE) -> P:
    """PartitionSpec of one leaf: its largest dimension divisible by `fsdp_size` goes over 'fsdp'.

    Leaves smaller than `min_size` elements, or with no divisible dimension, are replicated.
    """
    if fsdp_size == 1 or math.prod(shape) < min_size:
        return P()
    divisible = [i for i, n in enumerate(shape) if n % fsdp_size == 0]
    if not divisible:
        return P()
    axis = max(divisible, key=lambda i: shape[i])  # first of the largest on ties
    return P(*([None] * axis + [FSDP_AXIS]))


def fsdp_shardings(mesh: Mesh, tree: Any, min_size: int = DEFAULT_MIN_FSDP_SIZE) -> Any:
    """NamedSharding per leaf of `tree` (arrays or ShapeDtypeStructs) following `fsdp_spec`.

    Used for params, EMA params and optimiser state alike: Adam moments have the parameters' shapes, so they get
    the parameters' shardings; scalars (step, counts) and the rng key data are replicated.
    """
    size = mesh.shape[FSDP_AXIS]
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(tuple(x.shape), size, min_size)), tree)


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying `shardings`: the target for a sharded Orbax restore or a sharded init."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def global_batch(local_batch: Any, sharding: NamedSharding) -> Any:
    """Assemble each process's slice of the batch (numpy pytree, leading axis = local batch) into global arrays.

    With P processes each holding `B / P` rows, the result has leading size B, sharded by `sharding`.
    Process p's rows land at positions [p * B/P, (p+1) * B/P) in process-index order.
    """
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
