"""Input checks shared by the distillation losses (trace-time: shapes always, token values for numpy input)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from di4c_jax.processes.base import check_tokens


def checked_batch(process, x0, cond) -> jax.Array:
    """x0 int[B, D] as int32 after checking its shape, its ids (when x0 is a concrete numpy array: no device sync
    otherwise) and that `cond` is None or int[B]."""
    check_tokens(x0, process.num_states, "x0")
    if cond is not None and jnp.shape(cond) != (x0.shape[0],):
        raise ValueError(f"cond must be None or int[B={x0.shape[0]}], got shape {jnp.shape(cond)}")
    return jnp.asarray(x0, jnp.int32)


def reject_local_latents(objective: str, **denoisers) -> None:
    """Raise if a denoiser has local latents (`Denoiser.local_latents`): objectives whose estimators draw N global
    lambdas and average their components would mistake such a mixture for another law; the cdm objective and the
    samplers take them."""
    for name, denoiser in denoisers.items():
        if denoiser.local_latents is not None:
            raise ValueError(f"the {objective} objective does not take a local-latent {name} (local_latents="
                             f"{denoiser.local_latents}); distill it with the cdm objective")
