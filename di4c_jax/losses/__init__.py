"""Distillation losses. Interface: docs/design.md."""
from di4c_jax.losses.config import Di4CConfig, di4c_config
from di4c_jax.losses.di4c import di4c_loss, di4c_objective
from di4c_jax.losses.mixture import kl_sum, mixture_log_likelihood, mixture_log_marginal, sample_components

__all__ = [
    "Di4CConfig", "di4c_config", "di4c_loss", "di4c_objective", "kl_sum", "mixture_log_likelihood",
    "mixture_log_marginal", "sample_components",
]
