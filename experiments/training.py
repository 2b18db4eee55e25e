"""Run the engine (sharded jitted step, Orbax checkpoints, metrics) for one training stage of an experiment."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from di4c_jax import data as data_lib
from di4c_jax import parallel, train as engine


def optim_config(cfg) -> engine.OptimConfig:
    return engine.OptimConfig(**{k: v for k, v in cfg.to_dict().items()})


def _with_labels(loss_fn, conditional: bool, null_class: int, label_drop: float):
    """Feed {'x0', 'cond'} to `loss_fn`; class labels are replaced by the null class w.p. `label_drop` (CFG)."""
    def fn(key, params, batch, frozen):
        inputs = {"x0": batch["x0"]}
        if conditional:
            drop_key, key = jax.random.split(key)
            drop = jax.random.bernoulli(drop_key, label_drop, batch["label"].shape)
            inputs["cond"] = jnp.where(drop, null_class, batch["label"]).astype(jnp.int32)
        return loss_fn(key, params, inputs, frozen)
    return fn


def _mesh(config):
    return parallel.make_mesh(fsdp=config.mesh.get("fsdp", 1))


def _abstract_state(init_params, tx, key, mesh):
    shapes = jax.eval_shape(lambda k: engine.init_train_state(init_params(k), tx, k), key)
    shardings = parallel.fsdp_shardings(mesh, shapes)
    return parallel.abstract_with_shardings(shapes, shardings)


def run_stage(stage_dir: Path, config, stage_cfg, *, init_params: Callable[[jax.Array], Any], loss_fn,
              source, frozen: Any = None, conditional: bool = False, null_class: int = 0,
              num_states: int | None = None, seed_offset: int = 0) -> dict:
    """Train until `stage_cfg.steps` (resuming from `stage_dir/checkpoints` if present); returns the state.

    loss_fn(key, params, batch {'x0'[, 'cond']}, frozen) -> (loss, aux). `frozen` (the teacher) is placed with the
    same FSDP rules as the params and passed as a separate non-donated argument.
    """
    mesh = _mesh(config)
    opt = optim_config(stage_cfg.optim)
    tx = engine.make_optimizer(opt)
    key = jax.random.key(config.seed + 1000 * seed_offset)
    state, shardings = engine.create_train_state(init_params, tx, key, mesh)
    frozen_sh = None
    if frozen is not None:
        frozen_sh = parallel.fsdp_shardings(mesh, frozen)
        frozen = jax.device_put(frozen, frozen_sh)
    step_fn = engine.make_train_step(
        _with_labels(loss_fn, conditional, null_class, stage_cfg.get("label_drop", 0.1)), tx,
        ema_decay=opt.ema_decay, lr_schedule=engine.lr_schedule(opt), mesh=mesh, state_shardings=shardings,
        frozen_shardings=frozen_sh)
    data_iter = data_lib.make_iterator(source, global_batch_size=stage_cfg.batch_size,
                                       seed=config.seed + 1000 * seed_offset + 1,
                                       num_states=num_states)
    sharding = parallel.batch_sharding(mesh)
    keep = ("x0", "label") if conditional else ("x0",)

    def to_global(batch):
        return parallel.global_batch({k: np.asarray(batch[k]) for k in keep}, sharding)

    stage_dir.mkdir(parents=True, exist_ok=True)
    checkpointer = engine.Checkpointer(stage_dir / "checkpoints", max_to_keep=stage_cfg.get("keep", 2),
                                       save_every=stage_cfg.checkpoint_every)
    with engine.MetricWriter(stage_dir) as writer:
        state = engine.train(state, step_fn, data_iter, stage_cfg.steps, checkpointer, writer,
                             stage_cfg.log_every, frozen=frozen, to_global=to_global,
                             progress=config.get("progress", True))
    checkpointer.close()
    return state


def load_stage(stage_dir: Path, config, stage_cfg, init_params: Callable[[jax.Array], Any]) -> dict:
    """The final train state of a finished stage (raises if the stage has not been trained)."""
    ckpt_dir = stage_dir / "checkpoints"
    if not ckpt_dir.exists():
        raise FileNotFoundError(f"no checkpoints in {ckpt_dir}: run the stage that trains it first")
    mesh = _mesh(config)
    tx = engine.make_optimizer(optim_config(stage_cfg.optim))
    abstract = _abstract_state(init_params, tx, jax.random.key(0), mesh)
    checkpointer = engine.Checkpointer(ckpt_dir, save_every=stage_cfg.checkpoint_every)
    restored = checkpointer.restore_latest(abstract)
    checkpointer.close()
    if restored is None:
        raise FileNotFoundError(f"no restorable checkpoint in {ckpt_dir}")
    state, step = restored
    if step < stage_cfg.steps:
        raise RuntimeError(f"{stage_dir.name} stopped at step {step} < {stage_cfg.steps}: rerun its stage")
    return state
