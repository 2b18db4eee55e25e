"""A hidden Markov model as a synthetic language with exact likelihoods: sampler, forward algorithm, entropy rate.

Parameters are log-probabilities: log_init float[H], log_trans float[H, H] (rows = from state), log_emit float[H, V].
Generated sequences can then be scored exactly: NLL per token under the true law, to compare with the entropy rate.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from di4c_jax.processes.base import check_tokens, sample_categorical


def random_hmm(key, num_hidden: int, vocab_size: int, trans_sharpness: float = 2.0,
               emit_sharpness: float = 2.0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Random HMM with log-softmax of N(0, sharpness^2) logits -> (log_init [H], log_trans [H, H],
    log_emit [H, V]). Larger sharpness gives peaked rows: sticky, low-entropy, long-range correlated sequences."""
    ki, kt, ke = jax.random.split(key, 3)
    log_init = jax.nn.log_softmax(jax.random.normal(ki, (num_hidden,)))
    log_trans = jax.nn.log_softmax(trans_sharpness * jax.random.normal(kt, (num_hidden, num_hidden)), axis=-1)
    log_emit = jax.nn.log_softmax(emit_sharpness * jax.random.normal(ke, (num_hidden, vocab_size)), axis=-1)
    return log_init, log_trans, log_emit


def _check_params(log_init, log_trans, log_emit) -> tuple[int, int]:
    h, v = log_emit.shape[-2], log_emit.shape[-1]
    if log_init.shape != (h,) or log_trans.shape != (h, h) or log_emit.ndim != 2:
        raise ValueError(f"need log_init[H], log_trans[H, H], log_emit[H, V]; got {log_init.shape}, "
                         f"{log_trans.shape}, {log_emit.shape}")
    return h, v


def sample_hmm(key, num_samples: int, length: int, log_init, log_trans, log_emit) -> tuple[jax.Array, jax.Array]:
    """-> (tokens int32[n, L], hidden states int32[n, L])."""
    _check_params(log_init, log_trans, log_emit)
    k0, ks = jax.random.split(key)
    z0 = sample_categorical(k0, jnp.broadcast_to(log_init, (num_samples, log_init.shape[0])))

    def step(z, k):
        kx, kz = jax.random.split(k)
        x = sample_categorical(kx, log_emit[z])
        return sample_categorical(kz, log_trans[z]), (x, z)

    _, (x, z) = jax.lax.scan(step, z0, jax.random.split(ks, length))
    return x.T, z.T


def _forward(tokens, log_init, log_trans, log_emit) -> jax.Array:
    """The forward variables alpha_j(z) = log p(z_j = z, x_{1..j}) -> [L, n, H] (tokens int[n, L])."""
    alpha0 = log_init[None, :] + log_emit[:, tokens[:, 0]].T  # [n, H]

    def step(alpha, x):
        alpha = jax.nn.logsumexp(alpha[:, :, None] + log_trans[None], axis=1) + log_emit[:, x].T
        return alpha, alpha

    _, rest = jax.lax.scan(step, alpha0, tokens[:, 1:].T)
    return jnp.concatenate([alpha0[None], rest])


@jax.jit
def _prefix_log_likelihood(tokens, log_init, log_trans, log_emit):
    return jax.nn.logsumexp(_forward(tokens, log_init, log_trans, log_emit), axis=2).T


def hmm_prefix_log_likelihood(tokens, log_init, log_trans, log_emit) -> jax.Array:
    """int[n, L] -> float32[n, L]: log p(x_{1..j}) for every prefix length j (forward algorithm in log space)."""
    _, v = _check_params(log_init, log_trans, log_emit)
    check_tokens(tokens, v, "tokens")
    if not isinstance(tokens, jax.core.Tracer):
        t = np.asarray(tokens)
        if t.size and (t.min() < 0 or t.max() >= v):
            raise ValueError(f"tokens must lie in [0, {v}), got range [{t.min()}, {t.max()}]")
    return _prefix_log_likelihood(jnp.asarray(tokens, jnp.int32), log_init, log_trans, log_emit)


def hmm_log_likelihood(tokens, log_init, log_trans, log_emit) -> jax.Array:
    """int[n, L] -> float32[n]: exact log p(x_1..x_L), hidden paths summed out."""
    return hmm_prefix_log_likelihood(tokens, log_init, log_trans, log_emit)[:, -1]


def _masked_emissions(mask_id: int, log_init, log_trans, log_emit) -> jax.Array:
    """log_emit [H, V] with a mask column V of log-probability 0 in every hidden state: [H, V + 1] (the mask
    pattern of a masked process is independent of x0, so a masked token is summed out)."""
    _, v = _check_params(log_init, log_trans, log_emit)
    if mask_id != v:
        raise ValueError(f"mask_id must be the vocabulary size {v} (the masked process's mask), got {mask_id}")
    return jnp.concatenate([log_emit, jnp.zeros((log_emit.shape[0], 1), log_emit.dtype)], axis=1)


def hmm_masked_posterior_loglik(x0, x_t, mask_id: int, log_init, log_trans, log_emit) -> jax.Array:
    """log q(x0 | x_t) for a masked x_t of HMM text x0 -> float32[n]: log p(x0) - log p(the unmasked tokens),
    the masked positions summed out by giving the mask an emission probability of 1 in every hidden state (the
    mask pattern is independent of x0 under a masked process). x0, x_t: int[n, L]; mask_id: the mask token (V)."""
    log_emit_masked = _masked_emissions(mask_id, log_init, log_trans, log_emit)
    visible = _prefix_log_likelihood(jnp.asarray(x_t, jnp.int32), log_init, log_trans, log_emit_masked)[:, -1]
    return hmm_log_likelihood(x0, log_init, log_trans, log_emit) - visible


def hmm_masked_posterior_sample(key, x_t, mask_id: int, log_init, log_trans, log_emit, *, num: int = 1) -> jax.Array:
    """`num` independent draws x0 ~ q(x0 | x_t) per row of a masked x_t of HMM text -> int32[n, num, L]: forward
    filtering over the unmasked tokens (the mask emits with probability 1 in every hidden state, as
    `hmm_masked_posterior_loglik`), backward sampling of the hidden path, then the masked tokens from its emissions;
    unmasked tokens are kept. x_t: int[n, L] with mask_id = V."""
    log_emit_masked = _masked_emissions(mask_id, log_init, log_trans, log_emit)
    check_tokens(x_t, mask_id + 1, "x_t")
    return _posterior_sample(key, jnp.asarray(x_t, jnp.int32), log_init, log_trans, log_emit_masked, num)


@jax.jit(static_argnums=5)
def _posterior_sample(key, x_t, log_init, log_trans, log_emit_masked, num):
    n, length = x_t.shape
    alphas = _forward(x_t, log_init, log_trans, log_emit_masked)  # [L, n, H]: log p(z_j, x_{<=j})
    k_last, k_path, k_tokens = jax.random.split(key, 3)
    z_last = jax.random.categorical(k_last, alphas[-1][:, None, :], shape=(n, num))

    def backward(z_next, inputs):
        alpha, k = inputs
        z = jax.random.categorical(k, alpha[:, None, :] + log_trans.T[z_next])  # p(z_j | z_{j+1}, x_{<=j})
        return z, z

    _, path = jax.lax.scan(backward, z_last, (alphas[:-1][::-1], jax.random.split(k_path, length - 1)))
    z = jnp.moveaxis(jnp.concatenate([path[::-1], z_last[None]]), 0, -1)  # [n, num, L]
    tokens = jax.random.categorical(k_tokens, log_emit_masked[z][..., :-1])
    return jnp.where(x_t[:, None, :] == log_emit_masked.shape[1] - 1, tokens, x_t[:, None, :]).astype(jnp.int32)


def hmm_entropy_rate(key, log_init, log_trans, log_emit, num_samples: int = 256, length: int = 512,
                     burn_in: int = 64) -> tuple[float, float]:
    """Monte-Carlo entropy rate in nats/token -> (estimate, standard error).

    h ~ E[-log p(x_{B+1..L} | x_{1..B})] / (L - B): conditioning on a burn-in prefix removes the start-up
    transient, so the estimate converges to lim H(X_L | X_{<L}) rather than to the block entropy H(X_{1..L})/L.
    """
    if not 0 <= burn_in < length - 1:
        raise ValueError(f"need 0 <= burn_in < length - 1, got burn_in={burn_in}, length={length}")
    tokens, _ = sample_hmm(key, num_samples, length, log_init, log_trans, log_emit)
    prefix = np.asarray(hmm_prefix_log_likelihood(tokens, log_init, log_trans, log_emit), np.float64)
    tail = prefix[:, -1] - (prefix[:, burn_in - 1] if burn_in > 0 else 0.0)
    per_token = -tail / (length - burn_in)
    return float(per_token.mean()), float(per_token.std(ddof=1) / np.sqrt(num_samples))


def hmm_window_law(log_init, log_trans, log_emit, length: int, window: int) -> np.ndarray:
    """Exact law of `window` consecutive tokens at a uniformly random start position of a length-`length`
    sequence -> float64[V^window] (base-V index, first token most significant, as `empirical_law`).

    p(x_{i..i+w-1}) = sum_z pi_i(z_i) E(z_i, x_i) prod_j T(z_j, z_{j+1}) E(z_{j+1}, x_{j+1}), pi_i = pi_0 T^i,
    averaged over i = 0..L-w. Computed in float64 numpy (V^w entries; keep V^w <= ~1e6).
    """
    h, v = _check_params(log_init, log_trans, log_emit)
    if not 1 <= window <= length:
        raise ValueError(f"need 1 <= window <= length, got window={window}, length={length}")
    init, trans, emit = (np.exp(np.asarray(a, np.float64)) for a in (log_init, log_trans, log_emit))
    pi, start = init, np.zeros(h)
    for _ in range(length - window + 1):
        start += pi
        pi = pi @ trans
    start /= length - window + 1
    # law[z, x_1..x_j]: joint of the hidden state at the window's j-th token and the tokens so far.
    law = start[:, None] * emit  # [H, V]
    for _ in range(window - 1):
        law = np.einsum("zx,zy,yv->yxv", law.reshape(h, -1), trans, emit).reshape(h, -1)
    return law.sum(axis=0)


def window_tokens(tokens, window: int) -> np.ndarray:
    """int[n, L] -> int[n (L - w + 1), w]: every run of `window` consecutive tokens (pooled over positions)."""
    x = np.asarray(tokens)
    if x.ndim != 2 or not 1 <= window <= x.shape[1]:
        raise ValueError(f"need tokens int[n, L >= window], got shape {x.shape} and window {window}")
    return np.lib.stride_tricks.sliding_window_view(x, window, axis=1).reshape(-1, window)
