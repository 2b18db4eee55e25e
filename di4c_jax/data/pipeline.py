"""Grain pipeline: seeded global shuffle -> repeat -> this host's rows of each global batch -> batches, as a
checkpointable iterator.

The iterator is a `grain.DatasetIterator`: `it.get_state()` / `it.set_state(state)` capture and restore the exact
position, and Orbax saves it inside a Composite with `grain.checkpoint.CheckpointSave(it)` /
`grain.checkpoint.CheckpointRestore(it)`.
"""
from typing import Any

import grain
import jax

from di4c_jax.data.validate import check_integer_tokens, validate_tokens

DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)


class HostRows(grain.MapDataset):
    """Host `process_index`'s rows of every global batch of `parent`: its element j is the parent's element
    (j // b) * B + process_index * b + j % b (B = global_batch_size, b = B // process_count).

    So the global batch, assembled in process order (`parallel.global_batch`), is the same whatever the number of
    processes: a run on 2 hosts sees the batches of a run on 1. Each host reads only its own rows.
    """

    _MUTATES_ELEMENT_SPEC = False

    def __init__(self, parent: grain.MapDataset, *, global_batch_size: int, process_index: int,
                 process_count: int):
        super().__init__(parent)
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index must lie in [0, {process_count}), got {process_index}")
        self._local = global_batch_size // process_count
        self._global, self._offset = global_batch_size, process_index * self._local
        self._length = len(parent) // global_batch_size * self._local

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return grain.MapDataset.range(len(self))[index].map(self.__getitem__)
        batch, row = divmod(index, self._local)
        return self._parent[batch * self._global + self._offset + row]

    def __str__(self) -> str:
        return f"HostRows(rows {self._offset}..{self._offset + self._local - 1} of each {self._global})"


def make_dataset(
    source: Any,
    *,
    global_batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.MapDataset:
    """This host's batched `grain.MapDataset` of {'x0': int32[b, D], 'label': int32[b] (if the source has it)}.

    b = global_batch_size // process_count. The order is global: every host shuffles the whole source with the same
    seed (each epoch reshuffled; seed and epoch determine the order) and reads its b rows of each global batch
    (`HostRows`), so the global batches do not depend on the number of processes. num_epochs=None repeats
    forever; batches may span epoch boundaries and the final partial batch is dropped.
    process_index / process_count default to jax.process_index() / jax.process_count().
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size ({global_batch_size}) must be a positive multiple of process_count ({process_count})"
        )
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be None or >= 1, got {num_epochs}")
    dataset = grain.MapDataset.source(source)
    if len(dataset) < global_batch_size:
        raise ValueError(f"the source has {len(dataset)} examples, fewer than the global batch size "
                         f"{global_batch_size}")
    if shuffle:
        dataset = dataset.shuffle(seed=seed)
    dataset = dataset.repeat(num_epochs, reseed_each_epoch=True)
    dataset = HostRows(dataset, global_batch_size=global_batch_size, process_index=process_index,
                       process_count=process_count)
    return dataset.batch(global_batch_size // process_count, drop_remainder=True)


def make_iterator(
    source: Any,
    *,
    global_batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    num_states: int | None = None,
    read_options: grain.ReadOptions = DEFAULT_READ_OPTIONS,
) -> grain.DatasetIterator:
    """Checkpointable iterator over this host's batches; see `make_dataset` for the arguments.

    num_states: when given, the first batch is checked first: 'x0' must be int[b, D] with ids in [0, num_states)
      (ValueError naming the offending position and value otherwise).
    read_options: reader threads and prefetch buffer (counted in batches); defaults to DEFAULT_READ_OPTIONS
      (grain's own default, 500 prefetched batches, holds gigabytes for image batches).
    """
    dataset = make_dataset(
        source,
        global_batch_size=global_batch_size,
        seed=seed,
        shuffle=shuffle,
        num_epochs=num_epochs,
        process_index=process_index,
        process_count=process_count,
    )
    if num_states is not None:
        first = check_integer_tokens(dataset[0]["x0"], ndim=2, what="first batch x0")
        validate_tokens(first, num_states, what="first batch x0")
    return iter(dataset.to_iter_dataset(read_options))
