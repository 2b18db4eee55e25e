"""Generic training loop: resume, periodic checkpoints, non-finite guard, metrics and a progress bar."""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np
from tqdm.auto import tqdm

from di4c_jax.train import preemption
from di4c_jax.train.checkpoint import Checkpointer
from di4c_jax.train.metrics import MetricWriter


def host_value(x: jax.Array) -> np.ndarray:
    """Value of a replicated (possibly multi-process) array, read from this process's first shard."""
    return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)


def abstract_state_of(state: Any) -> Any:
    """ShapeDtypeStructs with the shardings of a concrete state: the restore target that keeps its layout."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def _check_and_average(pending: list[tuple[int, dict]]) -> dict[str, float]:
    """Raise FloatingPointError at the first non-finite step; else the window mean of every scalar metric."""
    rows = [(step, {k: host_value(v) for k, v in m.items()}) for step, m in pending]
    for step, m in rows:
        if not bool(m["finite"]):
            raise FloatingPointError(
                f"non-finite loss {float(m['loss'])} (grad norm {float(m['grad_norm'])}) at step {step}; "
                "the state was left at the previous step and not saved")
    names = [k for k in rows[-1][1] if k != "finite"]
    return {k: float(np.mean([m[k] for _, m in rows])) for k in names}


def train(
    state: Any,
    step_fn: Callable[..., tuple[Any, dict]],
    data_iter: Iterator,
    num_steps: int,
    checkpointer: Checkpointer | None = None,
    writer: MetricWriter | None = None,
    log_every: int = 100,
    *,
    frozen: Any = None,
    to_global: Callable[[Any], Any] | None = None,
    progress: bool = True,
) -> Any:
    """Run `step_fn(state, batch, frozen)` until `state['step'] == num_steps`; return the final state.

    - Resume: with a `checkpointer`, the newest restorable checkpoint replaces `state` (same shardings) and
      repositions `data_iter` (a grain iterator), so rerunning the same call continues an interrupted run
      exactly; the final state equals that of an uninterrupted run.
    - `to_global(local_batch)` turns what the iterator yields into the step's input (e.g. `global_batch` with
      the batch sharding in a multi-process run).
    - Metrics are fetched every `log_every` steps, at every checkpoint step and at the end (not every step, so
      the host does not stall the device); a non-finite step raises FloatingPointError naming it before any
      later checkpoint is written. `writer` receives the window means; process 0 shows a tqdm bar.
    - The last step is always checkpointed, and pending async saves are waited for before returning.
    - SIGTERM (main thread): the current step is checkpointed and `preemption.Preempted` is raised.
    - After a resume the metrics of the lost steps (after the checkpoint) are dropped from `writer`'s JSONL, so
      every step appears once.
    """
    if checkpointer is not None:
        restored = checkpointer.restore_latest(abstract_state_of(state), data_iter)
        if restored is not None:
            state, _ = restored
    start = int(host_value(state["step"]))
    if start and checkpointer is not None and jax.process_index() == 0:
        print(f"resuming {checkpointer.directory} at step {start} of {num_steps}", flush=True)
    if writer is not None:
        writer.truncate_after(start)  # steps after the checkpoint were lost with the crash; they are redone
    if start > num_steps:
        raise ValueError(f"state is at step {start}, beyond num_steps={num_steps}")
    bar = tqdm(total=num_steps, initial=start, disable=not progress or jax.process_index() != 0,
               dynamic_ncols=True)
    pending: list[tuple[int, dict]] = []
    window_start, window_examples = time.perf_counter(), 0
    with preemption.sigterm_guard(), _closing(bar, writer, checkpointer):
        for step in range(start + 1, num_steps + 1):
            batch = next(data_iter)
            if to_global is not None:
                batch = to_global(batch)
            state, metrics = step_fn(state, batch, frozen)
            pending.append((step, metrics))
            window_examples += jax.tree.leaves(batch)[0].shape[0]
            save_now = checkpointer is not None and (checkpointer.should_save(step) or step == num_steps)
            if step % log_every == 0 or save_now or step == num_steps:
                scalars = _check_and_average(pending)
                elapsed = time.perf_counter() - window_start
                scalars["examples_per_sec"] = window_examples / max(elapsed, 1e-9)
                scalars["steps_per_sec"] = len(pending) / max(elapsed, 1e-9)
                pending, window_start, window_examples = [], time.perf_counter(), 0
                if writer is not None:
                    writer.write_scalars(step, scalars)
                bar.set_postfix(loss=f"{scalars['loss']:.4g}", ex_per_s=f"{scalars['examples_per_sec']:.1f}")
            if save_now:
                checkpointer.save(step, state, data_iter, force=step == num_steps)
            bar.update(1)
            if step < num_steps and _stop_requested(step, log_every):
                if pending:
                    _check_and_average(pending)  # never checkpoint a non-finite state
                if checkpointer is not None:
                    checkpointer.save(step, state, data_iter, force=True)
                saved = "" if checkpointer is None else f", checkpoint saved in {checkpointer.directory}"
                raise preemption.Preempted(f"at step {step} of {num_steps}{saved}")
    return state


def _stop_requested(step: int, log_every: int) -> bool:
    """A SIGTERM arrived (in one process: checked every step; across processes: agreed at every `log_every`-th
    step, so all processes stop at the same step)."""
    if jax.process_count() == 1:
        return preemption.requested()
    if step % log_every:
        return False
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray(preemption.requested(), np.int32))
    return bool(np.any(flags))


@contextlib.contextmanager
def _closing(bar, writer, checkpointer):
    try:
        yield
    finally:
        bar.close()
        if writer is not None:
            writer.flush()
        if checkpointer is not None:
            checkpointer.wait()
