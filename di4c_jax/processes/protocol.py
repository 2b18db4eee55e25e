"""`Process`: the interface every forward process implements, with its capabilities made explicit.

Code that needs more than the shared interface asks a capability flag (`process.absorbing`,
`process.has_generator`) through `require`, never `hasattr` or `isinstance`.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax


@runtime_checkable
class Process(Protocol):
    """A factorised forward CTMC on K states per dimension; t = 0 is data, t = 1 is noise.

    Shapes: x0 / x_t int32[B, D], t and s float32[B] (scalars broadcast), log-probabilities float32[B, D, K]
    normalised over K (impossible classes at the finite NEG_INF).

    Capabilities:
      absorbing: there is a mask state `mask_id` with `mask_prob(t)` (masked diffusion: MDLM ELBO, SDTT, MaskGIT
        confidence steps).
      has_generator: the generator `rate(t) -> [B, K, K]` exists (CTMC ELBO, tau-leaping).
    """

    num_states: int
    default_final: str
    absorbing: bool
    has_generator: bool

    def sample_xt(self, key: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
        """x_t ~ q_{t|0}(. | x0): int32[B, D]."""

    def sample_prior(self, key: jax.Array, shape) -> jax.Array:
        """x_1 ~ the prior: int32[shape]."""

    def prior_logprobs(self) -> jax.Array:
        """log p_ref(x_1^d) of one dimension: float32[K]."""

    def transition(self, t: jax.Array, s: jax.Array | None = None) -> jax.Array:
        """q_{t|s} as float32[B, K, K] (rows: from state; s=None means s=0)."""

    def x0_logprobs(self, logits: jax.Array, x_t: jax.Array) -> jax.Array:
        """Normalised log p(x0 | x_t) [B, D, K] from raw denoiser logits [B, D, K]."""

    def reverse_step_logprobs(self, x_t, logp_x0, t, s) -> jax.Array:
        """log sum_{x0} q(x_s | x_t, x0) p(x0 | x_t) per dimension: [B, D, K]."""

    def reverse_step(self, key, x_t, logp_x0, t, s) -> jax.Array:
        """A draw of that product kernel: int32[B, D]."""

    def denoise(self, key, x_t, logp_x0, mode: str = "sample") -> jax.Array:
        """Final x0 from x_t ('sample' or 'argmax'): int32[B, D]."""

    def default_time_grid(self, num_steps: int) -> jax.Array:
        """Decreasing grid of num_steps + 1 times from 1: float32[num_steps + 1]."""


CAPABILITIES = {
    "absorbing": "an absorbing (masked) process with a mask state",
    "has_generator": "a process with a generator rate(t)",
}


def require(process, capability: str, who: str) -> None:
    """Raise a TypeError naming `who` and the process unless `process` has `capability` (see CAPABILITIES)."""
    if not getattr(process, capability, False):
        raise TypeError(f"{who} needs {CAPABILITIES[capability]}; {type(process).__name__} is not one")
