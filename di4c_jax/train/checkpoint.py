"""Checkpoint facade over the Orbax V0 CheckpointManager (args= API, policies, async saves).

A checkpoint step directory holds three items: 'state' (StandardSave of the train-state pytree), 'data' (the
grain iterator position, when an iterator is given) and 'meta' (a small JSON). Orbax writes each step into a
temporary directory and renames it when complete, so a crash mid-save leaves the previous steps intact and the
half-written one invisible. A complete-looking step that fails to restore (truncated or deleted files) is
reported with a warning, moved aside to `corrupt.<step>.<time>` and the next older step is used.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

log = logging.getLogger(__name__)


class Checkpointer:
    """Save every `save_every` steps, keep the `max_to_keep` latest, restore the latest restorable one."""

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3, save_every: int = 1000,
                 async_: bool = True, meta: dict | None = None):
        if save_every < 1 or max_to_keep < 1:
            raise ValueError(f"save_every ({save_every}) and max_to_keep ({max_to_keep}) must be >= 1")
        self.directory = Path(directory).absolute()
        self.save_every = save_every
        self._meta = dict(meta or {})
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=async_,
            save_decision_policy=policies.FixedIntervalPolicy(save_every),
            preservation_policy=policies.LatestN(max_to_keep),
            cleanup_tmp_directories=True,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def should_save(self, step: int) -> bool:
        return step % self.save_every == 0

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_iter: Any = None, force: bool = False,
             meta: dict | None = None) -> bool:
        """Save `state` (and the iterator position) at `step` if due (or `force`); returns whether it saved.

        With async saving this returns once the arrays are copied off the devices; the write continues in the
        background (call `wait()` before reading the files). Saving a step that exists is a no-op.
        """
        if step in self._manager.all_steps():
            return False
        items = {
            "state": ocp.args.StandardSave(state),
            "meta": ocp.args.JsonSave({"step": int(step), "time": time.time(), **self._meta, **(meta or {})}),
        }
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        try:
            return self._manager.save(step, args=ocp.args.Composite(**items), force=force)
        except OSError as err:
            raise self._save_failed(step, err) from err

    def restore_latest(self, abstract_state: Any, data_iter: Any = None) -> tuple[Any, int] | None:
        """Restore the newest restorable step into `abstract_state`'s shardings; None if there is no checkpoint.

        `abstract_state`: pytree of jax.ShapeDtypeStruct with `sharding` set (any mesh: Orbax reshards).
        `data_iter`: a grain iterator whose position is set to the checkpoint's (in place).
        Raises RuntimeError if checkpoints exist but none restores (e.g. a changed state structure), rather than
        silently starting over.
        """
        self.wait()
        failed: list[tuple[int, Exception]] = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if data_iter is not None:
                items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as err:  # noqa: BLE001 - any read error means this step is unusable
                log.warning("checkpoint step %d in %s cannot be restored (%s: %s); trying the previous step",
                            step, self.directory, type(err).__name__, str(err).splitlines()[0][:300])
                failed.append((step, err))
                continue
            self._quarantine([s for s, _ in failed])
            return restored.state, step
        if failed:
            raise RuntimeError(f"no checkpoint in {self.directory} could be restored "
                               f"(steps {[s for s, _ in failed]})") from failed[0][1]
        return None

    def _quarantine(self, steps: list[int]) -> None:
        """Move unrestorable steps newer than the restored one aside, so training can save those steps again."""
        if not steps:
            return
        if jax.process_index() == 0:
            for step in steps:
                (self.directory / str(step)).rename(self.directory / f"corrupt.{step}.{time.time_ns()}")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("di4c_checkpoint_quarantine")
        self._manager.reload()

    def wait(self) -> None:
        """Block until pending async saves are on disk."""
        try:
            self._manager.wait_until_finished()
        except OSError as err:
            raise self._save_failed(None, err) from err

    def _save_failed(self, step: int | None, err: OSError) -> OSError:
        """The error of a failed save (disk full, permissions), naming the step and the newest intact one: Orbax
        renames a step into place only once complete, so the earlier steps stay restorable."""
        intact = [s for s in self.all_steps() if s != step]
        kept = f"the newest intact checkpoint is step {intact[-1]}" if intact else "no earlier checkpoint exists"
        what = f"step {step}" if step is not None else "a checkpoint"
        return OSError(f"saving {what} into {self.directory} failed ({type(err).__name__}: {err}); {kept}; free "
                       f"space or fix the directory and rerun the same command to resume")

    def close(self) -> None:
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def path_shapes(tree: Any) -> dict[str, tuple]:
    """{'a/b/c': shape} of a pytree of arrays or shape structs (dict keys and sequence indices alike as text, so a
    restored tree, its Orbax metadata and `jax.eval_shape` output compare equal)."""
    def name(entry) -> str:
        return str(getattr(entry, "key", getattr(entry, "idx", getattr(entry, "name", entry))))

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(name(e) for e in path): tuple(leaf.shape) for path, leaf in leaves}


def latest_shapes(directory: str | os.PathLike, item: str = "params") -> tuple[int, dict[str, tuple]] | None:
    """(step, `path_shapes`) of the `item` subtree ('params', 'ema_params', ...) of the newest step under
    `directory`, read from Orbax's metadata without restoring any array; None if there is no step."""
    from etils import epath

    root = Path(directory).absolute()  # Orbax refuses relative checkpoint paths
    steps = sorted(int(p.name) for p in root.glob("*") if p.name.isdigit() and (p / "state").is_dir()) \
        if root.is_dir() else []
    if not steps:
        return None
    metadata = ocp.StandardCheckpointHandler().metadata(epath.Path(root / str(steps[-1]) / "state"))
    tree = getattr(metadata, "tree", metadata)
    if item not in tree:
        raise ValueError(f"checkpoint {root / str(steps[-1])} holds no {item!r} (keys {sorted(tree)})")
    return steps[-1], path_shapes(tree[item])
