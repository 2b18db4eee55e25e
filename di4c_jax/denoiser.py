"""`Denoiser`: a pure denoising function bundled with what its callers must know about it.

Params stay a separate argument, so jit, grad and sharding see plain pytrees; the Denoiser itself is a frozen,
hashable value that closes over nothing mutable and can be a static argument of `jax.jit`.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import jax
import jax.numpy as jnp

Params = Any
Apply = Callable[..., jax.Array]


def draw_lam(key: jax.Array, batch: int) -> jax.Array:
    """lam ~ U[0, 1] as float32[batch]: the one way a mixture component is drawn."""
    return jax.random.uniform(key, (batch,), jnp.float32)


def draw_lam_grid(key: jax.Array, batch: int, num: int) -> jax.Array:
    """num lambdas per row, float32[batch, num] (copy n of row b at [b, n], drawn b-major)."""
    return draw_lam(key, batch * num).reshape(batch, num)


@dataclasses.dataclass(frozen=True)
class Denoiser:
    """A denoiser `apply(params, x_t, t, lam, cond, *, rngs=None) -> logits float32[B, D, K]`.

    Attributes:
      apply: the pure function. x_t int32[B, D], t float32[B], lam float32[B] or None, cond int32[B] or None;
        `rngs` a PRNG key for dropout (None: deterministic). The logits become normalised log p(x0 | x_t) only
        through `process.x0_logprobs(logits, x_t)`.
      num_states: K, the number of classes of the logits (= states of x_t).
      num_positions: D, or None if any sequence length works.
      mixture: True if `apply` takes a lambda (one component of the mixture
        p(x0 | x_t) = E_{lam ~ U[0, 1]} prod_d p_d(x0_d | x_t, lam)); False for a product denoiser (lam=None).
      num_classes: class labels 0..num_classes-1 for conditioning (0: unconditional); the label `num_classes` is
        the null class of classifier-free guidance.
      config_json: the model config the network was built from, as JSON (set by `models.make_denoiser`; None for a
        hand-written function). It is what `interop.save_checkpoint` writes beside the weights.
      components: optional `components(params, x_t, t, lam, cond, *, rngs=None) -> logits float32[B, N, D, K]` at
        lam float32[B, N]: the same values as `apply` on rows repeated N times, computed more cheaply (a network
        whose first layers do not see lambda runs them once per row); None: `apply` on repeated rows. Dropout
        masks of the shared layers are shared by the N components.
    """

    apply: Apply
    num_states: int
    num_positions: int | None = None
    mixture: bool = False
    num_classes: int = 0
    config_json: str | None = None
    components: Apply | None = None

    @property
    def model_config(self) -> dict | None:
        """The model config as a dict (kind and constructor arguments), or None."""
        return None if self.config_json is None else json.loads(self.config_json)

    @property
    def null_class(self) -> int:
        """The dropped label of classifier-free guidance."""
        return self.num_classes

    def __call__(self, params: Params, x_t, t, lam=None, cond=None, *, rngs=None) -> jax.Array:
        return self.apply(params, x_t, t, lam, cond, rngs=rngs)

    def draw_lam(self, key: jax.Array, batch: int) -> jax.Array | None:
        """lam ~ U[0, 1] as float32[batch] for a mixture denoiser (one per row), None for a product denoiser."""
        return draw_lam(key, batch) if self.mixture else None

    def logprobs(self, process, params: Params, x_t, t, lam=None, cond=None, *, rngs=None) -> jax.Array:
        """Normalised log p(x0 | x_t, t, lam) [B, D, K]."""
        return process.x0_logprobs(self.apply(params, x_t, t, lam, cond, rngs=rngs), x_t)

    def component_logprobs(self, key: jax.Array, process, params: Params, x_t, t, *, num: int, cond=None,
                           rngs=None) -> jax.Array:
        """Log-probs of `num` mixture components per row, each at a fresh lam: [B, num, D, K].

        Rows are repeated b-major (row b's components are rows b*num .. b*num+num-1 of one batch of B*num).
        A product denoiser gives `num` copies of its one distribution.
        """
        lam = draw_lam_grid(key, x_t.shape[0], num)
        return self.component_logprobs_at(process, params, x_t, t, lam, cond, rngs=rngs)

    def component_logprobs_at(self, process, params: Params, x_t, t, lam, cond=None, *, rngs=None) -> jax.Array:
        """Log-probs of the components at lam float32[B, num] (component n of row b at lam[b, n]): [B, num, D, K],
        in one network call over B*num rows repeated b-major (or one `components` call). A product denoiser
        ignores lam (num copies)."""
        batch, num = lam.shape
        rep = lambda a: None if a is None else jnp.repeat(a, num, axis=0)  # noqa: E731
        if self.mixture and self.components is not None:
            logits = self.components(params, x_t, t, lam, cond, rngs=rngs)
            logp = process.x0_logprobs(logits.reshape(batch * num, *logits.shape[2:]), rep(x_t))
        else:
            logp = self.logprobs(process, params, rep(x_t), rep(t), lam.reshape(-1) if self.mixture else None,
                                 rep(cond), rngs=rngs)
        return logp.reshape(batch, num, *logp.shape[1:])

    def with_apply(self, apply: Apply) -> "Denoiser":
        """The same metadata around another function (e.g. a jitted or wrapped `apply`); `components` is dropped,
        since it would bypass the new function."""
        return dataclasses.replace(self, apply=apply, components=None)
