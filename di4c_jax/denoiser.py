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
import numpy as np

Params = Any
Apply = Callable[..., jax.Array]


def draw_lam(key: jax.Array, batch: int) -> jax.Array:
    """lam ~ U[0, 1] as float32[batch]: the one way a mixture component is drawn."""
    return jax.random.uniform(key, (batch,), jnp.float32)


def draw_lam_grid(key: jax.Array, batch: int, num: int) -> jax.Array:
    """num lambdas per row, float32[batch, num] (copy n of row b at [b, n], drawn b-major)."""
    return draw_lam(key, batch * num).reshape(batch, num)


def local_block_ids(num_positions: int, block: int) -> np.ndarray:
    """int32[block, D]: row o gives each position's block, (d + o) // block, under offset o (blocks of `block`
    consecutive positions, the first shortened by o; ceil-free count: D // block + 1 blocks cover every offset)."""
    return ((np.arange(num_positions)[None, :] + np.arange(block)[:, None]) // block).astype(np.int32)


def draw_local_lam(key: jax.Array, batch: int, *, num_positions: int, num_latents: int, block: int) -> jax.Array:
    """A local-latent student's lambda, float32[batch, 1 + D]: column 0 a global lam ~ U[0, 1] (`draw_lam`), then
    each position's latent id: an offset o ~ U{0..block-1} and one latent z_g ~ U{0..Z-1} per block, position d
    taking z of its block (`local_block_ids`)."""
    k_lam, k_off, k_z = jax.random.split(key, 3)
    offset = jax.random.randint(k_off, (batch,), 0, block)
    z = jax.random.randint(k_z, (batch, num_positions // block + 1), 0, num_latents)
    ids = jnp.take_along_axis(z, jnp.asarray(local_block_ids(num_positions, block))[offset], axis=1)
    return jnp.concatenate([draw_lam(k_lam, batch)[:, None], ids.astype(jnp.float32)], axis=1)


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
    local_latents: tuple[int, int, bool] | None = None

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
        """lam ~ U[0, 1] as float32[batch] for a mixture denoiser (one per row), None for a product denoiser; for
        a local-latent one float32[batch, 1 + D] (`draw_local_lam`)."""
        if self.local_latents is not None:
            num_latents, block, _ = self.local_latents
            return draw_local_lam(key, batch, num_positions=self.num_positions, num_latents=num_latents, block=block)
        return draw_lam(key, batch) if self.mixture else None

    def logprobs(self, process, params: Params, x_t, t, lam=None, cond=None, *, rngs=None) -> jax.Array:
        """Normalised log p(x0 | x_t, t, lam) [B, D, K]."""
        return process.x0_logprobs(self.apply(params, x_t, t, lam, cond, rngs=rngs), x_t)

    def component_logprobs_at(self, process, params: Params, x_t, t, lam, cond=None, *, rngs=None) -> jax.Array:
        """Log-probs of the components at lam float32[B, num] (component n of row b at lam[b, n]): [B, num, D, K],
        in one network call over B*num rows repeated b-major (or one `components` call). A product denoiser
        ignores lam (num copies); a local-latent one gives [B, num Z, D, K] (`local_latents`)."""
        batch, num = lam.shape
        if self.mixture and self.components is not None:
            logits = self.components(params, x_t, t, lam, cond, rngs=rngs)
            num = logits.shape[1]  # N Z for a local-latent denoiser
            logp = process.x0_logprobs(logits.reshape(batch * num, *logits.shape[2:]), jnp.repeat(x_t, num, axis=0))
            return logp.reshape(batch, num, *logp.shape[1:])
        rows = lam.reshape(-1) if self.mixture else None
        if self.local_latents is not None:  # rows (n, z): the global lam[b, n] with latent z at every position
            num_latents = self.local_latents[0]
            ids = jnp.broadcast_to(jnp.arange(num_latents, dtype=jnp.float32)[None, :, None],
                                   (batch * num, num_latents, x_t.shape[1]))
            rows = jnp.concatenate([jnp.broadcast_to(rows[:, None, None], ids.shape[:2] + (1,)), ids], axis=2)
            rows, num = rows.reshape(batch * num * num_latents, -1), num * num_latents
        rep = lambda a: None if a is None else jnp.repeat(a, num, axis=0)  # noqa: E731
        logp = self.logprobs(process, params, rep(x_t), rep(t), rows, rep(cond), rngs=rngs)
        return logp.reshape(batch, num, *logp.shape[1:])

    def with_apply(self, apply: Apply) -> "Denoiser":
        """The same metadata around another function (e.g. a jitted or wrapped `apply`); `components` is dropped,
        since it would bypass the new function."""
        return dataclasses.replace(self, apply=apply, components=None)
