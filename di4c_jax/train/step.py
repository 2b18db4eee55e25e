"""One jitted, optionally sharded, training step, and adapters from the project's loss conventions.

The engine is generic over `loss_fn(key, params, batch, frozen) -> (loss: float32[], aux: dict of float32[])`:
`frozen` is a pytree of parameters that are read but never updated (the teacher), passed as a separate,
non-donated jit argument so that it is neither baked into the program as constants nor freed by donation.
`loss` must be the mean over the global batch; then the sharded step is the single-device step.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from di4c_jax.denoiser import Denoiser
from di4c_jax.losses.guidance import drop_labels
from di4c_jax.parallel.mesh import batch_sharding, replicated
from di4c_jax.train.state import ema_update

LossFn = Callable[[jax.Array, Any, Any, Any], tuple[jax.Array, dict]]


def distillation_loss_fn(loss, *, student: Denoiser, teacher: Denoiser, process, config) -> LossFn:
    """Adapt a distillation loss (`loss(key, *, student, student_params, teacher, teacher_params, process, x0,
    config, cond)`) to the engine: the batch is {'x0': int32[B, D], optional 'cond': int32[B]}, the teacher params
    are `frozen`."""
    def fn(key, params, batch, teacher_params):
        return loss(key, student=student, student_params=params, teacher=teacher, teacher_params=teacher_params,
                    process=process, x0=batch["x0"], config=config, cond=batch.get("cond"))
    return fn


def teacher_loss_fn(loss, *, denoiser: Denoiser, process, **loss_kwargs) -> LossFn:
    """Adapt a teacher loss (`loss(key, *, denoiser, params, process, x0, cond, **loss_kwargs)`); `frozen` is
    unused."""
    def fn(key, params, batch, frozen):
        del frozen
        return loss(key, denoiser=denoiser, params=params, process=process, x0=batch["x0"], cond=batch.get("cond"),
                    **loss_kwargs)
    return fn


def with_label_dropout(loss_fn: LossFn, *, null_class: int, rate: float) -> LossFn:
    """Feed `loss_fn` {'x0', 'cond'} from a batch {'x0', 'label'}: each label replaced by the null class w.p.
    `rate` (classifier-free guidance), from a key split off the step key."""
    def fn(key, params, batch, frozen):
        drop_key, key = jax.random.split(key)
        cond = drop_labels(drop_key, labels=batch["label"], null_class=null_class, rate=rate)
        return loss_fn(key, params, {"x0": batch["x0"], "cond": cond}, frozen)
    return fn


def make_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    ema_decay: float,
    lr_schedule: optax.Schedule | None = None,
    mesh: Mesh | None = None,
    state_shardings: Any = None,
    frozen_shardings: Any = None,
) -> Callable[..., tuple[dict, dict]]:
    """Build `train_step(state, batch, frozen=None) -> (state, metrics)`, one jax.jit; `state` is donated.

    Randomness: the step key is fold_in(rng, step), so a run is a function of (seed, data) and resumes exactly.
    With `mesh`, the batch is split over ('data', 'fsdp'), the state lives in `state_shardings` (e.g. from
    `create_train_state`), `frozen` in `frozen_shardings`, and metrics are replicated.
    metrics: {'loss', 'grad_norm', 'finite' (bool), 'lr' (if lr_schedule), **aux}. A non-finite loss or gradient
    leaves the state unchanged and reports finite=False; `train` then stops with an error naming the step.
    """
    def step(state, batch, frozen):
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        (loss, aux), grads = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)(
            key, state["params"], batch, frozen)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        count = state["step"] + 1
        new_state = {
            "step": count,
            "params": params,
            "ema_params": ema_update(state["ema_params"], params, count, ema_decay),
            "opt_state": opt_state,
            "rng": state["rng"],
        }
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
        metrics = {**aux, "loss": loss, "grad_norm": grad_norm, "finite": finite}
        if lr_schedule is not None:
            metrics["lr"] = lr_schedule(state["step"])
        return new_state, metrics

    if mesh is None:
        jitted = jax.jit(step, donate_argnums=0)
    else:
        jitted = jax.jit(
            step,
            in_shardings=(state_shardings, batch_sharding(mesh), frozen_shardings),
            out_shardings=(state_shardings, replicated(mesh)),
            donate_argnums=0,
        )

    def train_step(state, batch, frozen=None):
        return jitted(state, batch, frozen)

    train_step.jitted = jitted  # for ahead-of-time lowering: train_step.jitted.lower(state, batch, frozen)
    return train_step
