"""Log-space helpers for the N-sample lambda mixture p(x) = (1/N) sum_n prod_d p_n^d(x_d).

`logp[B, N, D, K]` holds the normalised per-dimension log-probabilities of the N product components; impossible
classes carry the finite NEG_INF (-1e6), never -inf.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from di4c_jax.denoiser import Denoiser, draw_lam_grid, local_block_ids
from di4c_jax.losses.reduce import logsumexp_axis
from di4c_jax.processes.base import sample_categorical


def mixture_log_marginal(logp: jax.Array) -> jax.Array:
    """Per-dimension marginals of the mixture: log (1/N) sum_n p_n^d. [B, N, D, K] -> [B, D, K]."""
    return logsumexp_axis(logp, 1) - math.log(logp.shape[1])


def mixture_log_likelihood(logp: jax.Array, x: jax.Array, control_variate: bool = True,
                           jackknife: bool = False) -> jax.Array:
    """Log of the N-sample mixture density at M points per item. logp [B, N, D, K], x int[B, M, D] -> [B, M].

    F(x) = logsumexp_n sum_d logp[b, n, d, x_d] - log N. With `control_variate`, returns F(x) - G(x) where
    G(x) = sum_d log pbar^d(x_d) is the log-density of the product of the mixture marginals. F - G is summed as
    sum_d (g_nd - log pbar^d) inside the logsumexp: each summand is <= log N, so no cancellation between two sums of
    order -1e4 (same value as the reference's F - G, better float32 accuracy). With `jackknife` (N >= 2), the
    jackknife estimate N theta_N - (N - 1) mean_i theta_(-i) of the same quantity (`mixture_log_density_at`).
    The N values are gathered at the M points ([B, N, D, M]); nothing of size [B, M, N, D, K] is built.
    """
    if logp.ndim != 4:
        raise ValueError(f"logp must be [B, N, D, K], got shape {logp.shape}")
    if x.ndim != 3 or x.shape[0] != logp.shape[0] or x.shape[2] != logp.shape[2]:
        raise ValueError(f"x must be int[B, M, D] with B={logp.shape[0]}, D={logp.shape[2]}, got shape {x.shape}")
    return mixture_log_density_at(gather_points(logp, x), control_variate, jackknife)


def gather_points(logp: jax.Array, x: jax.Array) -> jax.Array:
    """The components' per-dimension log-probabilities at M points: logp [B, N, D, K], x int[B, M, D] ->
    [B, N, D, M] (a gather, never a one-hot)."""
    index = jnp.swapaxes(x, 1, 2)[:, None].astype(jnp.int32)  # [B, 1, D, M]
    return jnp.take_along_axis(logp, index, axis=-1)


def mixture_log_density_at(values: jax.Array, control_variate: bool = True, jackknife: bool = False) -> jax.Array:
    """`mixture_log_likelihood` from the gathered values [B, N, D, M] (`gather_points`) -> [B, M].

    The N-sample estimate theta_N (F, or F - G) is a log of means over the N lambdas, biased low by O(1/N) (by
    Jensen; the bias grows with the spread of the components at the point). `jackknife` returns
    N theta_N - (N - 1) mean_i theta_(-i), theta_(-i) the same estimate without component i (its F and, with the
    control variate, its marginals G), whose bias is O(1/N^2) (Quenouille's jackknife; Nowozin 2018 uses it for
    the log-mean-exp of importance-weighted bounds). It costs O(B N D M) arithmetic on top, no network call. Not a
    bound: it may exceed the true value. The O(1/N^2) holds once N samples the components' spread at the point;
    where one rare component carries most of the density there, the jackknife removes less and can overshoot.
    """
    num = values.shape[1]
    if jackknife and num < 2:
        raise ValueError(f"the jackknife leaves one of N components out, so it needs N >= 2, got N = {num}")
    log_marginal = jax.nn.logsumexp(values, axis=1, keepdims=True) - math.log(num) if control_variate else None
    sums = jnp.sum(values if log_marginal is None else values - log_marginal, axis=2)  # [B, N, M]
    estimate = jax.nn.logsumexp(sums, axis=1) - math.log(num)
    if not jackknife:
        return estimate
    # theta_(-i) = log mean_{n != i} exp(sums_n - c_i), c_i the change of G without component i (0 without the
    # control variate); computed from the full-sample sums, so the control variate's cancellation is kept.
    left_out = leave_one_out_logsumexp(sums, axis=1) - math.log(num - 1)  # [B, N, M]
    if log_marginal is not None:  # [B, 1, D, M]
        marginal_out = leave_one_out_logsumexp(values, axis=1) - math.log(num - 1)  # [B, N, D, M]
        left_out = left_out - jnp.sum(marginal_out - log_marginal, axis=2)
    return num * estimate - (num - 1) * jnp.mean(left_out, axis=1)


def local_mixture_log_likelihood(logp: jax.Array, x: jax.Array, *, num_latents: int, block: int,
                                 control_variate: bool = True) -> jax.Array:
    """Exact log-density, up to its N global lambdas, of a local-latent mixture at M points per item.
    logp [B, N Z, D, K] (component n Z + z: global lambda n, latent z at every position), x int[B, M, D] -> [B, M].

    The law of `Denoiser.local_latents`: a global lambda, an offset o ~ U{0..block-1} that splits the D positions
    into blocks (`local_block_ids`), one latent z ~ U{0..Z-1} per block, positions independent given them:
    F(x) = log (1/N) sum_n (1/block) sum_o prod_g (1/Z) sum_z prod_{d in g(o)} p_{nz}^d(x_d). The offsets and
    latents are enumerated, only the global lambda is sampled (N-sample bound as `mixture_log_likelihood`; exact
    for N = 1 without one). With `control_variate`, F(x) - sum_d log pbar^d(x_d), pbar^d the mean of all N Z
    components (the mixture's marginal at every offset), subtracted per position inside the blocks.
    """
    if logp.ndim != 4 or x.ndim != 3 or x.shape[0] != logp.shape[0] or x.shape[2] != logp.shape[2] \
            or logp.shape[1] % num_latents:
        raise ValueError(f"need logp [B, N Z, D, K] with Z = {num_latents} and x int[B, M, D] with the same B and D, "
                         f"got {logp.shape} and {x.shape}")
    values = gather_points(logp, x)  # [B, N Z, D, M]
    batch, num_components, num_positions, num_points = values.shape
    if control_variate:
        values = values - (jax.nn.logsumexp(values, axis=1, keepdims=True) - math.log(num_components))
    values = values.reshape(batch, -1, num_latents, num_positions, num_points)
    ids = local_block_ids(num_positions, block)  # [O, D]
    assign = jnp.asarray(ids[:, :, None] == np.arange(num_positions // block + 1), values.dtype)  # [O, D, G]
    per_block = jnp.einsum("bnzdm,odg->bnozgm", values, assign)
    per_block = jax.nn.logsumexp(per_block, axis=3) - math.log(num_latents)  # [B, N, O, G, M]
    per_offset = jnp.sum(per_block, axis=3)  # [B, N, O, M]
    return jax.nn.logsumexp(per_offset, axis=(1, 2)) - math.log(per_offset.shape[1] * block)


def component_grid(key: jax.Array, *, denoiser: Denoiser, batch: int, num: int) -> jax.Array:
    """The lambdas at which a loss evaluates a student's components, [B, N]: `num` fresh draws per row for a
    mixture (the global lambdas of a local-latent student, whose `component_logprobs_at` adds its Z latents), one
    (ignored) for a product and for a local-latent student without a global lambda."""
    if denoiser.local_latents is not None and not denoiser.local_latents[2]:
        return jnp.zeros((batch, 1), jnp.float32)  # no global lambda: the latents alone, every one enumerated
    return draw_lam_grid(key, batch, num if denoiser.mixture else 1)


def component_log_likelihood(denoiser: Denoiser, logp: jax.Array, x: jax.Array, control_variate: bool = True,
                             jackknife: bool = False) -> jax.Array:
    """The student's log-density at M points from its components at `component_grid`: logp [B, N, D, K], x
    int[B, M, D] -> [B, M]; `local_mixture_log_likelihood` (exact, no jackknife) for a local-latent student,
    else `mixture_log_likelihood`."""
    if denoiser.local_latents is not None:
        num_latents, block, _ = denoiser.local_latents
        return local_mixture_log_likelihood(logp, x, num_latents=num_latents, block=block,
                                            control_variate=control_variate)
    return mixture_log_likelihood(logp, x, control_variate, jackknife)


def leave_one_out_logsumexp(a: jax.Array, axis: int) -> jax.Array:
    """out[..., i, ...] = logsumexp of `a` over `axis` without entry i; same shape as `a` (size along axis >= 2).

    Stable when one entry dominates: every entry but the largest leaves lse + log1p(-exp(a_i - lse)) with
    exp(a_i - lse) <= 1/2; the largest's is a second logsumexp with it masked out. Finite gradients throughout."""
    axis = axis % a.ndim
    if a.shape[axis] < 2:
        raise ValueError(f"leaving one out needs at least 2 entries along axis {axis}, got shape {a.shape}")
    top = jnp.argmax(a, axis=axis, keepdims=True)
    is_top = jnp.arange(a.shape[axis]).reshape([-1 if d == axis else 1 for d in range(a.ndim)]) == top
    lse = jax.nn.logsumexp(a, axis=axis, keepdims=True)
    others = jnp.where(is_top, -jnp.inf, a)  # the largest entry's branch below is discarded; keep it finite
    drop_small = lse + jnp.log1p(-jnp.exp(others - lse))
    drop_top = jax.nn.logsumexp(others, axis=axis, keepdims=True)
    return jnp.where(is_top, drop_top, drop_small)


def kl_sum(logp: jax.Array, logq: jax.Array) -> jax.Array:
    """sum_{d,k} p (log p - log q) with p = exp(logp). [..., D, K] x [..., D, K] (broadcasting) -> [...].

    Finite NEG_INF entries give exp(NEG_INF) = 0 exactly, so impossible classes of p contribute 0.
    """
    return jnp.sum(jnp.exp(logp) * (logp - logq), axis=(-2, -1))


def sample_components(key: jax.Array, *, logp: jax.Array) -> jax.Array:
    """One joint draw per component: x[b, n, d] ~ p_n^d independently. [B, N, D, K] -> int32[B, N, D]."""
    return sample_categorical(key, logp)
