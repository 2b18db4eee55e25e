"""Train state (a plain dict pytree), optimiser and EMA.

State layout: {'step': int32[], 'params': P, 'ema_params': P, 'opt_state': optax state, 'rng': uint32[2]}.
Parameters stay float32 here (master copy); low-precision compute is the model's business.
The rng is stored as raw key data (`jax.random.key_data`), which Orbax saves as a plain uint32 array.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from di4c_jax.parallel.mesh import fsdp_shardings, DEFAULT_MIN_FSDP_SIZE


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam(W) with global-norm clipping, linear warm-up then constant or cosine decay, and EMA.

    Defaults are the tauLDR Di4C values (sony/di4c:tauldr/train_distil.py): Adam 2e-4, no warm-up, clip 1.0, EMA 0.9999.
    The sdtt values (sony/di4c:sdtt/src/sdtt/configs/config.yaml) are lr 3e-5 and warmup_steps 2500.
    """

    learning_rate: float = 2e-4
    warmup_steps: int = 0
    schedule: str = "constant"  # 'constant' | 'cosine'
    decay_steps: int = 0  # cosine only: total steps (warm-up included) until `end_learning_rate`
    end_learning_rate: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0  # > 0 selects AdamW (decoupled decay)
    grad_clip: float | None = 1.0  # global L2 norm; None disables clipping
    ema_decay: float = 0.9999

    def __post_init__(self):
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.schedule == "cosine" and self.decay_steps <= self.warmup_steps:
            raise ValueError(f"cosine schedule needs decay_steps > warmup_steps, got {self.decay_steps}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")


def lr_schedule(cfg: OptimConfig) -> optax.Schedule:
    """Learning rate as a function of the number of updates already applied (0 for the first update).

    Warm-up is linear from 0 (lr * count / warmup_steps, as transformers' constant_schedule_with_warmup).
    """
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, cfg.learning_rate, cfg.warmup_steps, cfg.decay_steps, cfg.end_learning_rate)
    if cfg.warmup_steps == 0:  # optax's warmup_constant_schedule(.., 0) would stay at 0 forever
        return optax.constant_schedule(cfg.learning_rate)
    return optax.warmup_constant_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """clip_by_global_norm -> Adam (weight_decay == 0) or AdamW, with `lr_schedule(cfg)`."""
    schedule = lr_schedule(cfg)
    if cfg.weight_decay > 0:
        adam = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    else:
        adam = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    if cfg.grad_clip is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adam)


def ema_decay_at(count: jax.Array, decay: float) -> jax.Array:
    """Warm-up EMA decay min(decay, (1 + n) / (10 + n)); n = number of optimiser updates so far, from 1."""
    n = jnp.asarray(count, jnp.float32)
    return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


def ema_update(ema: Any, params: Any, count: jax.Array, decay: float) -> Any:
    """shadow <- shadow - (1 - d) (shadow - param), with d = ema_decay_at(count, decay)."""
    d = ema_decay_at(count, decay)
    return jax.tree.map(lambda e, p: e - (1.0 - d) * (e - p), ema, params)


def key_data(key: jax.Array) -> jax.Array:
    """uint32 key data of a new-style key (raw uint32 keys pass through)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return jnp.asarray(key, jnp.uint32)


def init_train_state(params: Any, tx: optax.GradientTransformation, key: jax.Array) -> dict:
    """Fresh state at step 0; EMA starts at the params. jit it with out_shardings to create it sharded."""
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "ema_params": jax.tree.map(jnp.copy, params),
        "opt_state": tx.init(params),
        "rng": key_data(key),
    }


def create_train_state(
    init_params: Callable[[jax.Array], Any],
    tx: optax.GradientTransformation,
    key: jax.Array,
    mesh: jax.sharding.Mesh | None = None,
    min_fsdp_size: int = DEFAULT_MIN_FSDP_SIZE,
) -> tuple[dict, Any]:
    """Initialise params and state directly in their final sharding: jit(init, out_shardings=...).

    `init_params(key) -> params`. Returns (state, shardings); shardings is None without a mesh.
    The parameter key and the training rng are independent splits of `key`.
    """
    def init(k):
        pkey, rkey = jax.random.split(k)
        return init_train_state(init_params(pkey), tx, rkey)

    if mesh is None:
        return jax.jit(init)(key), None
    shardings = fsdp_shardings(mesh, jax.eval_shape(init, key), min_fsdp_size)
    return jax.jit(init, out_shardings=shardings)(key), shardings
