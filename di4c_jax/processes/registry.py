"""The process registry: `PROCESSES.get(name)` is a process class; `build_process` makes one for a dataset."""
from __future__ import annotations

from di4c_jax.registry import Registry, dataclass_from_options

PROCESSES: Registry[type] = Registry("process")


def build_process(kind: str, num_data_states: int, **options):
    """The registered process `kind` for data with `num_data_states` values per dimension.

    The data's state count fills the class's `data_states_field` (default `num_states`; `vocab_size` for Masked,
    which adds the mask state); `options` are its other fields, and an unknown one is an error naming it.
    """
    cls = PROCESSES.get(kind)
    field = getattr(cls, "data_states_field", "num_states")
    if field in options:
        raise ValueError(f"process {kind!r}: {field} comes from the data ({num_data_states}); do not set it")
    return dataclass_from_options(cls, {field: num_data_states, **options}, f"process {kind!r}")
