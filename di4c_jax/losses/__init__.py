"""Losses: the importable, pure functional API (docs/design.md).

Distillation objectives share one calling convention,
`loss(key, *, student, student_params, teacher, teacher_params, process, x0, config, cond=None) -> (loss, aux)`
with `student` / `teacher` `di4c_jax.Denoiser`s: `di4c_loss` (Di4C, with the recipes `TauLDRRecipe`,
`SDTTRecipe`, `MaskGITRecipe` made by `di4c_config`, and `draw_reference_xt` for its x_t ~ r_t), `sdtt_loss`
(SDTT), `cdm_loss` (exact conditional distribution matching), `trajectory_loss` (the whole k-step sampler with
one lambda per trajectory); `OBJECTIVES` names them for the runner. Teacher
objectives: `teacher_loss(key, *, denoiser, params, process, x0, cond=None, config=TeacherLossConfig())`.
`drop_labels` applies classifier-free-guidance label dropout before a loss.
"""
from di4c_jax.losses.cdm import CDM_MODES, CDMConfig, cdm_conditional_loss, cdm_loss, cdm_objective, teacher_chain
from di4c_jax.losses.di4c import di4c_loss, di4c_objective
from di4c_jax.losses.guidance import drop_labels
from di4c_jax.losses.mixture import (component_grid, component_log_likelihood, kl_sum, local_mixture_log_likelihood,
                                     mixture_log_likelihood, mixture_log_marginal, sample_components)
from di4c_jax.losses.objectives import OBJECTIVES, Objective
from di4c_jax.losses.recipes import RECIPES, Di4CRecipe, MaskGITRecipe, SDTTRecipe, TauLDRRecipe, di4c_config
from di4c_jax.losses.reference import draw_reference_xt
from di4c_jax.losses.sdtt import SDTT_MODES, SDTTConfig, sdtt_loss, sdtt_round_dt, token_divergence
from di4c_jax.losses.teacher import TeacherLossConfig, teacher_loss, x0_ce_loss
from di4c_jax.losses.teacher_ctmc import ctmc_elbo_loss
from di4c_jax.losses.teacher_masked import mdlm_loss
from di4c_jax.losses.trajectory import TrajectoryConfig, forward_path, trajectory_loss

__all__ = [
    "di4c_loss", "di4c_objective", "di4c_config", "Di4CRecipe", "TauLDRRecipe", "SDTTRecipe", "MaskGITRecipe",
    "RECIPES", "draw_reference_xt", "kl_sum", "mixture_log_likelihood", "mixture_log_marginal",
    "sample_components", "local_mixture_log_likelihood", "component_grid", "component_log_likelihood",
    "SDTTConfig", "SDTT_MODES", "sdtt_loss", "sdtt_round_dt", "token_divergence",
    "CDMConfig", "CDM_MODES", "cdm_loss", "cdm_conditional_loss", "cdm_objective", "teacher_chain",
    "TeacherLossConfig", "teacher_loss", "mdlm_loss", "ctmc_elbo_loss", "x0_ce_loss",
    "TrajectoryConfig", "trajectory_loss", "forward_path",
    "OBJECTIVES", "Objective", "drop_labels",
]
