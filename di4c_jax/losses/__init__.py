"""Losses: the importable, pure functional API (docs/design.md).

Distillation objectives share one calling convention,
`loss(key, student_apply, student_params, teacher_apply, teacher_params, process, x0, config, cond=None)`:
`di4c_loss` (Di4C), `sdtt_loss` (SDTT), `cdm_loss` (exact conditional distribution matching).
Teacher objectives: `teacher_loss(key, apply, params, process, x0, cond=None, config=TeacherLossConfig())`.
"""
from di4c_jax.losses.cdm import CDM_MODES, CDMConfig, cdm_conditional_loss, cdm_loss, cdm_objective, teacher_chain
from di4c_jax.losses.config import Di4CConfig, di4c_config
from di4c_jax.losses.di4c import di4c_loss, di4c_objective
from di4c_jax.losses.mixture import kl_sum, mixture_log_likelihood, mixture_log_marginal, sample_components
from di4c_jax.losses.sdtt import SDTT_MODES, SDTTConfig, sdtt_loss, sdtt_round_dt, token_divergence
from di4c_jax.losses.teacher import TeacherLossConfig, teacher_loss, x0_ce_loss
from di4c_jax.losses.teacher_ctmc import ctmc_elbo_loss, reverse_rates
from di4c_jax.losses.teacher_masked import mdlm_loss

__all__ = [
    "Di4CConfig", "di4c_config", "di4c_loss", "di4c_objective", "kl_sum", "mixture_log_likelihood",
    "mixture_log_marginal", "sample_components",
    "SDTTConfig", "SDTT_MODES", "sdtt_loss", "sdtt_round_dt", "token_divergence",
    "CDMConfig", "CDM_MODES", "cdm_loss", "cdm_conditional_loss", "cdm_objective", "teacher_chain",
    "TeacherLossConfig", "teacher_loss", "mdlm_loss", "ctmc_elbo_loss", "x0_ce_loss", "reverse_rates",
]
