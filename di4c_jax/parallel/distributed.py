"""Joining the processes of a multi-host run (`jax.distributed.initialize`), from flags or the environment.

One process per host (or per GPU) runs the same program; after `initialize_distributed` every process sees all
devices (`jax.devices()`), its own (`jax.local_devices()`), and its index (`jax.process_index()`). Who starts the
processes decides how they find each other:

  explicit     coordinator address, process count and process id given (flags, or the environment variables
               JAX_COORDINATOR_ADDRESS, DI4C_NUM_PROCESSES, DI4C_PROCESS_ID)
  cluster      a launcher JAX recognises, seen from its environment variables: Slurm (srun with more than one
               task), Open MPI (mpirun -n > 1), a multi-host Cloud TPU slice; `jax.distributed.initialize()`
               then reads the rest itself
  none         otherwise: a single process, nothing to initialise

When a process dies (killed, out of memory, a lost host), the others stop sending it work only once JAX's
coordination service misses its heartbeats for `heartbeat_timeout_s` (or it was process 0, which hosts the
service): they then end with "Terminating process because the JAX distributed service detected fatal errors ...
another task died" and a non-zero status instead of waiting forever in a collective. Rerun the same command on all
hosts to resume from the last checkpoint.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

ENV_NUM_PROCESSES, ENV_PROCESS_ID, ENV_COORDINATOR = "DI4C_NUM_PROCESSES", "DI4C_PROCESS_ID", "JAX_COORDINATOR_ADDRESS"
ENV_HEARTBEAT = "DI4C_HEARTBEAT_TIMEOUT_S"


@dataclasses.dataclass(frozen=True)
class Distributed:
    """How this process joined: mode 'explicit' | 'cluster' | 'none', and the resulting process index / count."""

    mode: str
    process_index: int
    process_count: int


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def detected_cluster(environ=os.environ) -> str | None:
    """The multi-process launcher named by the environment ('slurm', 'openmpi', 'tpu'), or None."""
    if int(environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in environ:
        return "slurm"
    if int(environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return "openmpi"
    if "," in environ.get("TPU_WORKER_HOSTNAMES", ""):
        return "tpu"
    return None


def initialize_distributed(*, coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, timeout_s: int = 300,
                           heartbeat_timeout_s: int | None = None) -> Distributed:
    """Join the other processes of this run, if there are any (see the module doc for the three modes).

    Args:
      coordinator_address: 'host:port' of process 0 (default: $JAX_COORDINATOR_ADDRESS).
      num_processes: the number of processes (default: $DI4C_NUM_PROCESSES).
      process_id: this process's index in [0, num_processes) (default: $DI4C_PROCESS_ID).
      timeout_s: how long to wait for the other processes.
      heartbeat_timeout_s: how long a silent process counts as alive (default: $DI4C_HEARTBEAT_TIMEOUT_S, else
        JAX's 100 s); the bound on how long the others wait after one dies.
    Returns:
      a `Distributed` record. Raises ValueError when only some of the three explicit settings are given or they
      are inconsistent, naming them.
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _int_env(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _int_env(ENV_PROCESS_ID)
    heartbeat = heartbeat_timeout_s if heartbeat_timeout_s is not None else _int_env(ENV_HEARTBEAT)
    extra = {} if heartbeat is None else {"heartbeat_timeout_seconds": heartbeat}
    if heartbeat is not None and heartbeat < 1:
        raise ValueError(f"heartbeat_timeout_s must be >= 1 second, got {heartbeat}")
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    if any(v is not None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise ValueError(f"a multi-process run needs coordinator_address, num_processes and process_id; "
                             f"missing {missing} (given: { {k: v for k, v in given.items() if v is not None} })")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(f"process_id must lie in [0, num_processes); got process_id={process_id}, "
                             f"num_processes={num_processes}")
        if ":" not in coordinator_address:
            raise ValueError(f"coordinator_address must be 'host:port', got {coordinator_address!r}")
        if num_processes == 1:
            return Distributed("none", 0, 1)
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout_s, **extra)
        return Distributed("explicit", jax.process_index(), jax.process_count())
    if detected_cluster() is not None:
        jax.distributed.initialize(initialization_timeout=timeout_s, **extra)
        return Distributed("cluster", jax.process_index(), jax.process_count())
    return Distributed("none", 0, 1)


def is_writer() -> bool:
    """True on the one process that writes shared files (configs, metrics, samples, reports): process 0."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (a no-op in a single-process run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree(values: np.ndarray) -> np.ndarray:
    """Process 0's `values` on every process (decisions taken from shared files, such as what is left to do,
    must be the same everywhere before anyone writes); the array itself in a single-process run."""
    if jax.process_count() == 1:
        return np.asarray(values)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(values)))


def to_host(x) -> np.ndarray:
    """The whole value of `x` as a numpy array on this process, also when its shards live on other processes."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
