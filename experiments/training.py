"""Run the engine (sharded jitted step, Orbax checkpoints, metrics) for one training stage of an experiment."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from di4c_jax import data as data_lib
from di4c_jax import parallel, train as engine
from experiments.spec import Experiment, TrainSpec


def _abstract_state(init_params, tx, key, mesh):
    shapes = jax.eval_shape(lambda k: engine.init_train_state(init_params(k), tx, k), key)
    shardings = parallel.fsdp_shardings(mesh, shapes)
    return parallel.abstract_with_shardings(shapes, shardings)


def run_stage(stage_dir: Path, exp: Experiment, spec: TrainSpec, *, init_params: Callable[[jax.Array], Any],
              loss_fn, source, frozen: Any = None, null_class: int | None = None, num_states: int | None = None,
              seed_offset: int = 0) -> dict:
    """Train until `spec.steps` (resuming from `stage_dir/checkpoints` if present); returns the state.

    loss_fn(key, params, batch {'x0'[, 'cond']}, frozen) -> (loss, aux). With `null_class` (class-conditional
    data) the batch's labels become `cond` after classifier-free-guidance label dropout at `spec.label_drop`.
    `frozen` (the teacher) is placed with the same FSDP rules as the params, a separate non-donated argument.
    """
    mesh = parallel.make_mesh(fsdp=exp.fsdp)
    tx = engine.make_optimizer(spec.optim)
    key = jax.random.key(exp.seed + 1000 * seed_offset)
    state, shardings = engine.create_train_state(init_params, tx, key, mesh)
    frozen_sh = None
    if frozen is not None:
        frozen_sh = parallel.fsdp_shardings(mesh, frozen)
        frozen = jax.device_put(frozen, frozen_sh)
    conditional = null_class is not None
    if conditional:
        loss_fn = engine.with_label_dropout(loss_fn, null_class=null_class, rate=spec.label_drop)
    step_fn = engine.make_train_step(loss_fn, tx, ema_decay=spec.optim.ema_decay,
                                     lr_schedule=engine.lr_schedule(spec.optim), mesh=mesh, state_shardings=shardings,
                                     frozen_shardings=frozen_sh)
    data_iter = data_lib.make_iterator(source, global_batch_size=spec.batch_size,
                                       seed=exp.seed + 1000 * seed_offset + 1, num_states=num_states)
    sharding = parallel.batch_sharding(mesh)
    keep = ("x0", "label") if conditional else ("x0",)

    def to_global(batch):
        return parallel.global_batch({k: np.asarray(batch[k]) for k in keep}, sharding)

    stage_dir.mkdir(parents=True, exist_ok=True)
    checkpointer = engine.Checkpointer(stage_dir / "checkpoints", max_to_keep=spec.keep,
                                       save_every=spec.checkpoint_every)
    with engine.MetricWriter(stage_dir) as writer:
        state = engine.train(state, step_fn, data_iter, spec.steps, checkpointer, writer, spec.log_every,
                             frozen=frozen, to_global=to_global, progress=exp.progress)
    checkpointer.close()
    return state


def load_stage(stage_dir: Path, exp: Experiment, spec: TrainSpec, init_params: Callable[[jax.Array], Any]) -> dict:
    """The final train state of a finished stage (raises if the stage has not been trained)."""
    ckpt_dir = stage_dir / "checkpoints"
    if not ckpt_dir.exists():
        raise FileNotFoundError(f"no checkpoints in {ckpt_dir}: run the stage that trains it first")
    mesh = parallel.make_mesh(fsdp=exp.fsdp)
    abstract = _abstract_state(init_params, engine.make_optimizer(spec.optim), jax.random.key(0), mesh)
    checkpointer = engine.Checkpointer(ckpt_dir, save_every=spec.checkpoint_every)
    restored = checkpointer.restore_latest(abstract)
    checkpointer.close()
    if restored is None:
        raise FileNotFoundError(f"no restorable checkpoint in {ckpt_dir}")
    state, step = restored
    if step < spec.steps:
        raise RuntimeError(f"{stage_dir.name} stopped at step {step} < {spec.steps}: rerun its stage")
    return state
