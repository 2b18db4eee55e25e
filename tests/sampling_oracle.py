"""Test helpers for the samplers: exact Bayes denoisers and exact laws on tiny state spaces (K^D states)."""
from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from di4c_jax import Denoiser
from di4c_jax.processes import DiscreteGaussian, Masked, Uniform, safe_log


def all_states(num_values: int, dims: int) -> np.ndarray:
    """int32[num_values**dims, dims], row j = base-num_values digits of j (first dimension most significant)."""
    return np.array(list(itertools.product(range(num_values), repeat=dims)), np.int32)


def state_index(x: np.ndarray, num_values: int) -> np.ndarray:
    """Inverse of all_states: int[N, D] -> int[N]."""
    x = np.asarray(x, np.int64)
    return (x * num_values ** np.arange(x.shape[1] - 1, -1, -1)).sum(axis=1)


def data_values(process) -> int:
    return process.vocab_size if isinstance(process, Masked) else process.num_states


def random_law(seed: int, process, dims: int) -> np.ndarray:
    """A correlated data law p0 over data_values^dims (float64, positive)."""
    rng = np.random.default_rng(seed)
    return rng.dirichlet(0.7 * np.ones(data_values(process) ** dims))


def oracle_denoiser(process, p0: np.ndarray, dims: int) -> Denoiser:
    """The product Denoiser whose apply(params, x_t, t, lam, cond) -> logits [B, D, K] = log p(x0_d | x_t) of p0
    under the process, by Bayes (params are ignored)."""
    x0_all = jnp.asarray(all_states(data_values(process), dims))  # [J, D]
    log_p0 = jnp.asarray(np.log(p0), jnp.float32)
    onehot = jax.nn.one_hot(x0_all, process.num_states, dtype=jnp.float32)  # [J, D, K]

    def apply(params, x_t, t, lam, cond, *, rngs=None):
        del params, lam, cond, rngs
        log_q = safe_log(process.transition(t))  # [B, x0, x_t]
        log_q_at_xt = jnp.take_along_axis(jnp.swapaxes(log_q, 1, 2), x_t[:, :, None], axis=1)  # [B, D, x0]
        lik = jnp.einsum("bdk,jdk->bj", log_q_at_xt, onehot)  # sum_d log q_t(x_t^d | x0_j^d)
        post = jax.nn.softmax(log_p0 + lik, axis=-1)
        return safe_log(jnp.einsum("bj,jdk->bdk", post, onehot))

    return Denoiser(apply, num_states=process.num_states, num_positions=dims)


def prior_law(process, dims: int) -> np.ndarray:
    """Law of process.sample_prior over the K^D states (float64)."""
    k = process.num_states
    states = all_states(k, dims)
    if isinstance(process, Masked):
        return np.all(states == process.mask_id, axis=1).astype(np.float64)
    if isinstance(process, Uniform):
        return np.full(len(states), 1.0 / len(states))
    assert isinstance(process, DiscreteGaussian)
    return np.prod(process.stationary[states], axis=1)


def _row_probs(logp: jax.Array, states: np.ndarray) -> np.ndarray:
    """logp [M, D, K] -> P[a, b] = prod_d exp(logp[a, d, states[b, d]])."""
    logp = np.asarray(logp, np.float64)
    dims = states.shape[1]
    return np.exp(sum(logp[:, d, :][:, states[:, d]] for d in range(dims)))


@functools.lru_cache(maxsize=None)
def _step_logprobs_fn(process, denoiser: Denoiser, dims: int):
    """Jitted (t, s) -> (x0 log-probs, reverse-kernel log-probs) at every one of the K^D states (cached so that
    several chain lengths share one compilation)."""
    xs = jnp.asarray(all_states(process.num_states, dims))
    m = xs.shape[0]

    @jax.jit
    def step_logprobs(t, s):
        t, s = jnp.full((m,), t, jnp.float32), jnp.full((m,), s, jnp.float32)
        logp = denoiser.logprobs(process, None, xs, t)
        return logp, process.reverse_step_logprobs(xs, logp, t, s)

    return step_logprobs


def exact_chain_law(process, denoiser: Denoiser, dims: int, num_steps: int, final: str | None = None,
                    grid=None) -> np.ndarray:
    """Exact output law (over K^D states) of the n-step sampler with the product `denoiser`, by enumeration
    with the process's reverse_step_logprobs (the design.md grid, or `grid`, and final rule)."""
    assert not denoiser.mixture, "the enumeration is for product denoisers"
    k = process.num_states
    states = all_states(k, dims)
    grid = np.asarray(process.default_time_grid(num_steps) if grid is None else grid)
    final = process.default_final if final is None else final
    law = prior_law(process, dims)
    m = len(states)
    step_logprobs = _step_logprobs_fn(process, denoiser, dims)
    for i in range(num_steps):
        logp, step_logp = step_logprobs(grid[i], grid[i + 1])
        if i < num_steps - 1:
            kernel = _row_probs(step_logp, states)
        elif final == "sample":
            if isinstance(process, Masked):  # denoise: mask class excluded, unmasked positions copied (SUBS does it)
                logp = jax.nn.log_softmax(logp.at[..., process.mask_id].set(-1e6), axis=-1)
            kernel = _row_probs(logp, states)
        else:
            kernel = np.zeros((m, m))
            kernel[np.arange(m), state_index(np.asarray(jnp.argmax(logp, -1)), k)] = 1.0
        law = law @ kernel
    return law


def exact_trajectory_law(process, component_logprobs, dims: int, grid) -> np.ndarray:
    """Exact law (over K^D states) of the reverse_step chain from the prior along `grid` (float[S + 1], decreasing,
    no final denoise). Each step's kernel is the mean over `component_logprobs`, functions (x int32[M, D],
    t float32[M]) -> log p(x0 | x_t) [M, D, K], of the product kernel `process.reverse_step_logprobs`: one function
    for a product denoiser, the equally likely lambda regimes of a mixture with a fresh lambda per step."""
    states = all_states(process.num_states, dims)
    xs, m = jnp.asarray(states), len(states)
    law = prior_law(process, dims)
    for s_from, s_to in zip(grid[:-1], grid[1:]):
        t_from, t_to = jnp.full((m,), s_from, jnp.float32), jnp.full((m,), s_to, jnp.float32)
        kernels = [_row_probs(process.reverse_step_logprobs(xs, fn(xs, t_from), t_from, t_to), states)
                   for fn in component_logprobs]
        law = law @ np.mean(kernels, axis=0)
    return law


def table_mixture(process, seed: int, dims: int):
    """A mixture Denoiser with two lambda regimes (lam < 1/2, lam >= 1/2), each a table of random logits per x_t
    state, and its params float32[2, K^D, D, K]. One regime per step with probability 1/2 each."""
    k = process.num_states
    params = jnp.asarray(2.0 * np.random.default_rng(seed).normal(size=(2, k**dims, dims, k)), jnp.float32)
    powers = k ** jnp.arange(dims - 1, -1, -1)

    def apply(params, x_t, t, lam, cond, *, rngs=None):
        return params[(lam >= 0.5).astype(jnp.int32), x_t @ powers]

    return Denoiser(apply, num_states=k, num_positions=dims, mixture=True), params


def regimes(process, denoiser, params):
    """The x0 log-prob functions of the table's two lambda regimes (for exact_trajectory_law)."""
    return [lambda xs, s, lam=lam: denoiser.logprobs(process, params, xs, s, jnp.full(s.shape, lam))
            for lam in (0.25, 0.75)]


def forward_marginal_law(process, p0: np.ndarray, dims: int, t: float) -> np.ndarray:
    """q_t = sum_x0 p0(x0) prod_d q_t(x_t^d | x0^d) over the K^D states (float64), p0 over data_values^D."""
    q = np.asarray(process.transition(jnp.float32(t))[0], np.float64)
    return embed_data_law(process, p0, dims) @ functools.reduce(np.kron, [q] * dims)


def embed_data_law(process, p0: np.ndarray, dims: int) -> np.ndarray:
    """p0 over data_values^D as a law over the K^D states (zero on states holding the mask id)."""
    k = process.num_states
    out = np.zeros(k**dims)
    out[state_index(all_states(data_values(process), dims), k)] = p0
    return out


def empirical_law(samples: jax.Array, num_values: int) -> np.ndarray:
    x = np.asarray(samples)
    return np.bincount(state_index(x, num_values), minlength=num_values ** x.shape[1]) / len(x)


def tv(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())


def assert_matches_law(samples: jax.Array, law: np.ndarray, num_values: int, p_min: float = 1e-3) -> None:
    """Samples drawn from `law`: no sample on a zero-probability state, a chi-square goodness-of-fit p-value
    above p_min (cells with expected count < 5 pooled), and TV below 3x its expected value bound
    0.5 sum_x sqrt(p(x)/N)."""
    n = len(samples)
    counts = np.bincount(state_index(np.asarray(samples), num_values), minlength=len(law)).astype(np.float64)
    assert counts[law < 1e-12].sum() == 0, "sampler hit states of probability 0"
    expected = law * n
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    exp = exp[keep] * obs.sum() / exp[keep].sum()
    p_value = scipy.stats.chisquare(obs[keep], exp).pvalue
    assert p_value > p_min, f"chi-square p-value {p_value:.2e}"
    assert tv(counts / n, law) < 3 * 0.5 * np.sqrt(law / n).sum()
