"""Teacher training objectives and their dispatcher: MDLM NELBO (Masked), tauLDR CT-ELBO (DiscreteGaussian,
Uniform) and a plain x0 cross-entropy usable with any process."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from di4c_jax.losses.teacher_ctmc import ctmc_elbo_loss
from di4c_jax.losses.teacher_masked import mdlm_loss, sample_train_times, token_nll
from di4c_jax.processes.base import check_tokens
from di4c_jax.processes.masked import Masked

OBJECTIVES = ("auto", "mdlm", "ctmc", "x0_ce")


@dataclasses.dataclass(frozen=True)
class TeacherLossConfig:
    """Static settings of `teacher_loss`.

    objective: 'auto' (Masked -> 'mdlm', processes with a generator `rate` -> 'ctmc'), 'mdlm', 'ctmc' or 'x0_ce'.
    t_eps: smallest training time of 'mdlm' (MDLM's sampling_eps). min_time: smallest time of 'ctmc' and 'x0_ce'
    (tauLDR's 0.01). ce_weight: weight of the x0 cross-entropy added to the CT-ELBO (tauLDR's nll_weight).
    ratio_eps: tauLDR's eps_ratio. antithetic: stratified times over the batch. dropout: pass PRNG keys as `rngs`.
    """

    objective: str = "auto"
    t_eps: float = 1e-3
    min_time: float = 0.01
    ce_weight: float = 0.001
    ratio_eps: float = 1e-9
    antithetic: bool = True
    dropout: bool = True

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown teacher objective {self.objective!r}; choose one of {OBJECTIVES}")
        for name in ("t_eps", "min_time"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)}")


def x0_ce_loss(key: jax.Array, apply: Callable, params: Any, process, x0: jax.Array, cond=None, *,
               min_time: float = 0.01, antithetic: bool = True, dropout: bool = True):
    """E_{t ~ U[min_time, 1]} E_{x_t} [ sum_d -log p(x0^d | x_t) ], mean over B. Any process; x0: int[B, D].
    aux: {'ce_per_token': the loss / D}."""
    check_tokens(x0, process.num_states, "x0")
    k_t, k_x, k_drop = jax.random.split(key, 3)
    t = sample_train_times(k_t, x0.shape[0], min_time, antithetic)
    x_t = process.sample_xt(k_x, x0, t)
    logits = apply(params, x_t, t, None, cond, rngs=k_drop if dropout else None)
    loss = jnp.mean(jnp.sum(token_nll(process.x0_logprobs(logits, x_t), x0), axis=-1))
    return loss, {"ce_per_token": loss / x0.shape[1]}


def resolve_objective(process, objective: str = "auto") -> str:
    """The objective 'auto' stands for with this process."""
    if objective != "auto":
        return objective
    if isinstance(process, Masked):
        return "mdlm"
    if hasattr(process, "rate"):
        return "ctmc"
    raise TypeError(f"no default teacher objective for {type(process).__name__}; set objective='x0_ce'")


def teacher_loss(key: jax.Array, apply: Callable, params: Any, process, x0: jax.Array, cond=None, *,
                 config: TeacherLossConfig = TeacherLossConfig()):
    """(loss scalar, aux dict) of the configured teacher objective; x0: int[B, D], cond: None or int[B]."""
    objective = resolve_objective(process, config.objective)
    if objective == "mdlm":
        return mdlm_loss(key, apply, params, process, x0, cond, t_eps=config.t_eps, antithetic=config.antithetic,
                         dropout=config.dropout)
    if objective == "ctmc":
        return ctmc_elbo_loss(key, apply, params, process, x0, cond, min_time=config.min_time,
                              ce_weight=config.ce_weight, ratio_eps=config.ratio_eps,
                              antithetic=config.antithetic, dropout=config.dropout)
    return x0_ce_loss(key, apply, params, process, x0, cond, min_time=config.min_time,
                      antithetic=config.antithetic, dropout=config.dropout)
