"""Grain pipeline: per-host shard -> seeded shuffle -> repeat -> per-host batches, as a checkpointable iterator.

The iterator is a `grain.DatasetIterator`: `it.get_state()` / `it.set_state(state)` capture and restore the exact
position, and Orbax saves it inside a Composite with `grain.checkpoint.CheckpointSave(it)` /
`grain.checkpoint.CheckpointRestore(it)`.
"""
from typing import Any

import grain
import jax

from di4c_jax.data.validate import check_integer_tokens, validate_tokens

DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)


def host_shard_indices(num_examples: int, process_index: int, process_count: int) -> slice:
    """The strided slice of example indices that host `process_index` reads.

    Every host gets exactly num_examples // process_count examples (the last num_examples % process_count are
    dropped) so that all hosts produce the same number of batches; the shards are disjoint.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must lie in [0, {process_count}), got {process_index}")
    per_host = num_examples // process_count
    return slice(process_index, per_host * process_count, process_count)


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

    b = global_batch_size // process_count. Each epoch is reshuffled (seed and epoch determine the order);
    num_epochs=None repeats forever; batches may span epoch boundaries and the final partial batch is dropped.
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
    batch_size = global_batch_size // process_count
    dataset = grain.MapDataset.source(source)
    dataset = dataset[host_shard_indices(len(dataset), process_index, process_count)]
    if len(dataset) < batch_size:
        raise ValueError(
            f"host shard has {len(dataset)} examples ({len(source)} in the source, {process_count} hosts), "
            f"fewer than the per-host batch size {batch_size}"
        )
    if shuffle:
        dataset = dataset.shuffle(seed=seed)
    dataset = dataset.repeat(num_epochs, reseed_each_epoch=True)
    return dataset.batch(batch_size, drop_remainder=True)


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
