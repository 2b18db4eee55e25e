"""Teacher training objectives and their dispatcher: MDLM NELBO (absorbing processes), tauLDR CT-ELBO (processes
with a generator) and a plain x0 cross-entropy usable with any process."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from di4c_jax.denoiser import Denoiser
from di4c_jax.losses.teacher_ctmc import ctmc_elbo_loss
from di4c_jax.losses.teacher_masked import mdlm_loss
from di4c_jax.losses.times import sample_train_times, token_nll
from di4c_jax.processes.base import check_tokens
from di4c_jax.processes.protocol import Process

OBJECTIVES = ("auto", "mdlm", "ctmc", "x0_ce")


@dataclasses.dataclass(frozen=True)
class TeacherLossConfig:
    """Static settings of `teacher_loss`.

    objective: 'auto' (absorbing processes -> 'mdlm', processes with a generator -> 'ctmc'), 'mdlm', 'ctmc' or
    'x0_ce'. t_eps: smallest training time of 'mdlm' (MDLM's sampling_eps). min_time: smallest time of 'ctmc' and
    'x0_ce' (tauLDR's 0.01). ce_weight: weight of the x0 cross-entropy added to the CT-ELBO (tauLDR's nll_weight).
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


def x0_ce_loss(key: jax.Array, *, denoiser: Denoiser, params: Any, process: Process, x0: jax.Array, cond=None,
               min_time: float = 0.01, antithetic: bool = True, dropout: bool = True):
    """E_{t ~ U[min_time, 1]} E_{x_t} [ sum_d -log p(x0^d | x_t) ], mean over B. Any process.

    Args: key; denoiser, params; process; x0 int[B, D]; cond None or int[B]; min_time; antithetic; dropout.
    Returns: (loss, aux) with aux {'ce_per_token': the loss / D}.
    """
    check_tokens(x0, process.num_states, "x0")
    k_t, k_x, k_drop = jax.random.split(key, 3)
    t = sample_train_times(k_t, x0.shape[0], min_time, antithetic)
    x_t = process.sample_xt(k_x, x0, t)
    logp = denoiser.logprobs(process, params, x_t, t, None, cond, rngs=k_drop if dropout else None)
    loss = jnp.mean(jnp.sum(token_nll(logp, x0), axis=-1))
    return loss, {"ce_per_token": loss / x0.shape[1]}


def resolve_objective(process, objective: str = "auto") -> str:
    """The objective 'auto' stands for with this process (its capabilities decide)."""
    if objective != "auto":
        return objective
    if process.absorbing:
        return "mdlm"
    if process.has_generator:
        return "ctmc"
    raise TypeError(f"no default teacher objective for {type(process).__name__}; set objective='x0_ce'")


def teacher_loss(key: jax.Array, *, denoiser: Denoiser, params: Any, process: Process, x0: jax.Array, cond=None,
                 config: TeacherLossConfig = TeacherLossConfig()):
    """The configured teacher objective.

    Args: key; denoiser, params (the product teacher being trained); process; x0 int[B, D]; cond None or int[B];
      config: `TeacherLossConfig`.
    Returns: (loss scalar, aux dict of scalars).
    """
    objective = resolve_objective(process, config.objective)
    common = dict(denoiser=denoiser, params=params, process=process, x0=x0, cond=cond,
                  antithetic=config.antithetic, dropout=config.dropout)
    if objective == "mdlm":
        return mdlm_loss(key, t_eps=config.t_eps, **common)
    if objective == "ctmc":
        return ctmc_elbo_loss(key, min_time=config.min_time, ce_weight=config.ce_weight,
                              ratio_eps=config.ratio_eps, **common)
    return x0_ce_loss(key, min_time=config.min_time, **common)
