"""Few-step samplers (design.md, Samplers): analytic/ancestral with mixture students and teacher hybrids,
MaskGIT confidence decoding, and tau-leaping. Each `make_*_sampler` returns a jitted `Sampler` whose `nfe` is
the exact number of network evaluations."""
from di4c_jax.sampling.analytic import Sampler, analytic_sample, draw_lam, make_analytic_sampler, x0_logprobs
from di4c_jax.sampling.maskgit import (
    cfg_weights, confidence_step, gumbel_temperatures, make_maskgit_sampler, maskgit_sample, maskgit_schedule,
)
from di4c_jax.sampling.tau_leaping import (
    make_tau_leaping_sampler, reverse_rates, tau_leap, tau_leaping_grid, tau_leaping_sample,
)

__all__ = [
    "Sampler", "analytic_sample", "make_analytic_sampler", "draw_lam", "x0_logprobs",
    "maskgit_schedule", "cfg_weights", "gumbel_temperatures", "confidence_step", "maskgit_sample",
    "make_maskgit_sampler",
    "tau_leaping_grid", "reverse_rates", "tau_leap", "tau_leaping_sample", "make_tau_leaping_sampler",
]
