"""di4c-jax: few-step discrete diffusion by distillation through dimensional correlations (Di4C) in JAX.

Pure functional core: `di4c_jax.processes` (forward processes), `di4c_jax.losses` (Di4C, SDTT, CDM and teacher
objectives), `di4c_jax.sampling` (jitted few-step samplers); `Denoiser` is what they take for a network.
"""
from di4c_jax.denoiser import Denoiser, draw_lam

__version__ = "0.2.0"

__all__ = ["Denoiser", "draw_lam", "__version__"]
