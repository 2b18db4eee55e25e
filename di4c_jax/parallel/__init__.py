"""Mesh construction, sharding rules, global batch assembly, and joining the processes of a multi-host run."""
from di4c_jax.parallel.distributed import (Distributed, agree, barrier, detected_cluster, initialize_distributed,
                                           is_writer, to_host)
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
    "Distributed", "agree", "barrier", "detected_cluster", "initialize_distributed", "is_writer", "to_host",
    "BATCH_AXES", "DATA_AXIS", "FSDP_AXIS", "abstract_with_shardings", "batch_sharding", "fsdp_shardings",
    "fsdp_spec", "global_batch", "make_mesh", "replicated",
]
