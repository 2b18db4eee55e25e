"""Mesh construction, sharding rules and global batch assembly."""
from di4c_jax.parallel.mesh import (
    BATCH_AXES,
    DATA_AXIS,
    FSDP_AXIS,
    abstract_with_shardings,
    batch_sharding,
    fsdp_shardings,
    fsdp_spec,
    global_batch,
    make_mesh,
    replicated,
)

__all__ = [
    "BATCH_AXES", "DATA_AXIS", "FSDP_AXIS", "abstract_with_shardings", "batch_sharding", "fsdp_shardings",
    "fsdp_spec", "global_batch", "make_mesh", "replicated",
]
