"""tauLDR continuous-time ELBO (Campbell et al. 2022, Prop. 3) for factorised CTMCs with a generator `process.rate`
(DiscreteGaussian and Uniform), plus the reference's 0.001 x0 cross-entropy (tauLDR `GenericAux`).

Notation, per dimension (the process factorises): q[x0, x] = q_{t|0}(x|x0) (`process.transition(t)`),
R[x, y] = forward rate x -> y (`process.rate(t)`), z(x) = -R[x, x], Z(x) = sum_d z(x^d).

Reverse rate of the x0-parameterised model (paper eq. 9; `di4c_jax.processes.rates`, shared with tau-leaping): for a state x
and a new value y != x^d in dimension d,
    Rhat_d(x -> y) = R[y, x^d] * r_d(x, y),   r_d(x, y) = sum_a p(x0^d = a | x) q[a, y] / q[a, x^d].

Path-space derivation (ours, matching Prop. 3 with its constant made explicit). Girsanov for CTMCs gives, with
Q(.|x0) the forward path law on [t_min, 1] and P the model's reverse path law started from the prior p_ref,
    NELBO(x0) = E[-log p_ref(x_1)] + int_{t_min}^1 E_{x_t} [ sum_{d,y} Rhat_d(x_t -> y) - Z(x_t)
                 + E_{x~ ~ j(.|x_t)} Z(x_t) (log R(x_t -> x~) - log Rhat(x~ -> x_t)) ] dt,
where j is one forward jump (dimension d w.p. z(x_t^d)/Z(x_t), then y w.p. R[x_t^d, y]/z(x_t^d)). Since
Rhat(x~ -> x_t) = R(x_t -> x~) r(x~, x_t), the log R terms cancel: the integrand is reg - Z(x_t) + sig with
    reg = sum_{d, y != x_t^d} Rhat_d(x_t -> y)            (network at x_t),
    sig = -E_{x~} Z(x_t) log r(x~, x_t)                   (network at x~: the one extra pass).
`sig` is Rao-Blackwellised exactly as GenericAux does: given x~ (marginal rho(x~) = sum_x q(x|x0) R(x->x~)/Z(x)),
the pre-jump state x differs from x~ in one dimension d, taking value s, with weight
w_{d,s} = R[s, x~^d] q[x0^d, s] / q[x0^d, x~^d], and Z(x) = Z(x~) - z(x~^d) + z(s), so
    sig = -sum_{d,s} w_{d,s} log r_d(x~, s) / sum_{d,s} w_{d,s} / Z_{d,s}(x~)
has the same expectation as the single-sample form. The reference drops the (1 - t_min) factor of the time
integral, the prior term and -Z(x_t) (all free of theta); `loss` follows it, `aux['nelbo']` restores them and is an
upper bound on -log p(x_{t_min}) (so on average >= H(q_{t_min})). The reference's ratio_eps (1e-9) is added to every
q[., x] denominator and inside log r. Memory: [B, D, K] per tensor, no [B, D, K, K].
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from di4c_jax.denoiser import Denoiser
from di4c_jax.losses.times import sample_train_times, token_nll
from di4c_jax.processes.base import check_tokens, safe_log, sample_categorical
from di4c_jax.processes.protocol import Process, require
from di4c_jax.processes.rates import log_posterior_ratio, reverse_rates
from di4c_jax.processes.rates import rows as _rows


def _exit_rates(rate: jax.Array) -> jax.Array:
    """z(x) = -R[x, x] as [B, K]."""
    return -jnp.diagonal(rate, axis1=1, axis2=2)


def forward_jump(key: jax.Array, rate: jax.Array, x: jax.Array) -> jax.Array:
    """One forward CTMC jump from x int[B, D] under R [B, K, K]: dimension d w.p. z(x^d) / Z(x), then the new value
    y w.p. R[x^d, y] / z(x^d). Returns int32[B, D] differing from x in exactly one dimension per row."""
    k_dim, k_val = jax.random.split(key)
    out = jnp.where(jax.nn.one_hot(x, rate.shape[-1], dtype=bool), 0.0, _rows(rate, x))  # [B, D, K]
    dim = sample_categorical(k_dim, safe_log(jnp.sum(out, axis=-1)))  # [B]
    new_val = sample_categorical(k_val, safe_log(jnp.take_along_axis(out, dim[:, None, None], axis=1)[:, 0]))
    return x.at[jnp.arange(x.shape[0]), dim].set(new_val)


def ctmc_elbo_terms(process, logp_xt, logp_xtilde, x0, x_t, x_tilde, t, ratio_eps: float = 1e-9) -> dict:
    """The per-row CT-ELBO integrand at time t: {'reg', 'sig', 'neg_exit'} each float32[B] (see module docstring;
    the integrand is reg + sig + neg_exit, with neg_exit = -Z(x_t) free of theta).
    logp_xt / logp_xtilde: [B, D, K] normalised log p(x0|.) at x_t / x~; x0, x_t, x_tilde: int[B, D]; t: [B]."""
    qt0, rate = process.transition(t), process.rate(t)
    exit_rates = _exit_rates(rate)  # [B, K]
    reg = jnp.sum(reverse_rates(process, x_t, logp_xt, t, ratio_eps), axis=(1, 2))

    not_tilde = ~jax.nn.one_hot(x_tilde, process.num_states, dtype=bool)
    q_from_x0 = _rows(qt0, x0)  # q[x0^d, s]
    q_x0_tilde = jnp.take_along_axis(q_from_x0, x_tilde[..., None], axis=-1)  # q[x0^d, x~^d]: [B, D, 1]
    weight = jnp.where(not_tilde, _rows(jnp.swapaxes(rate, 1, 2), x_tilde) * q_from_x0 / (q_x0_tilde + ratio_eps), 0.0)
    z_tilde = jnp.take_along_axis(exit_rates, x_tilde, axis=1)  # [B, D]
    z_pre = jnp.sum(z_tilde, axis=1)[:, None, None] - z_tilde[..., None] + exit_rates[:, None, :]  # Z(x): [B, D, K]
    log_r = jnp.logaddexp(log_posterior_ratio(logp_xtilde, x_tilde, qt0, ratio_eps), jnp.log(ratio_eps))
    sig = -jnp.sum(weight * log_r, axis=(1, 2)) / jnp.sum(weight / z_pre, axis=(1, 2))

    neg_exit = -jnp.sum(jnp.take_along_axis(exit_rates, x_t, axis=1), axis=1)
    return {"reg": reg, "sig": sig, "neg_exit": neg_exit}


def prior_cross_entropy(process, x0: jax.Array) -> jax.Array:
    """E_{x_1 ~ q_{1|0}(.|x0)} [-log p_ref(x_1)] as float32[B] (the theta-free prior term of the NELBO)."""
    q1 = _rows(process.transition(jnp.ones((x0.shape[0],), jnp.float32)), x0)
    return -jnp.sum(q1 * process.prior_logprobs(), axis=(1, 2))


def ctmc_elbo_at(key, *, denoiser: Denoiser, params: Any, process: Process, x0, t, cond=None, ratio_eps: float = 1e-9,
                 dropout: bool = True):
    """Draw x_t ~ q_t(.|x0) and one forward jump x~, evaluate the denoiser at both, and return
    (ctmc_elbo_terms dict, token_nll [B, D] = -log p(x0^d | x_t)). x0 int[B, D], t float32[B]."""
    k_x, k_jump, k_drop_t, k_drop_j = jax.random.split(key, 4)
    x_t = process.sample_xt(k_x, x0, t)
    x_tilde = forward_jump(k_jump, process.rate(t), x_t)
    logp_t = denoiser.logprobs(process, params, x_t, t, None, cond, rngs=k_drop_t if dropout else None)
    logp_j = denoiser.logprobs(process, params, x_tilde, t, None, cond, rngs=k_drop_j if dropout else None)
    terms = ctmc_elbo_terms(process, logp_t, logp_j, x0, x_t, x_tilde, t, ratio_eps)
    return terms, token_nll(logp_t, x0)


def ctmc_elbo_loss(key, *, denoiser: Denoiser, params: Any, process: Process, x0, cond=None, min_time: float = 0.01,
                   ce_weight: float = 0.001, ratio_eps: float = 1e-9, antithetic: bool = True, dropout: bool = True):
    """tauLDR GenericAux: mean_B(reg + sig) + ce_weight * mean_{B,D}(-log p(x0^d | x_t)), t ~ U[min_time, 1].

    Args:
      key: PRNG key.
      denoiser, params: the (product) denoiser being trained; two passes (x_t and x~).
      process: a process with a generator (`has_generator`: DiscreteGaussian, Uniform).
      x0: int[B, D].  cond: None or int[B].
      min_time, ce_weight, ratio_eps: tauLDR's settings.  antithetic: stratified times.  dropout: train mode.

    Returns:
      (loss, aux) with aux 'reg', 'sig' (batch means), 'ce' (per-token x0 cross-entropy at x_t), 'nelbo' (the full
      bound with the theta-free terms: (1 - min_time)(reg + sig - Z(x_t)) + prior term, per sequence, nats) and
      'nelbo_per_token'.
    """
    require(process, "has_generator", "ctmc_elbo_loss")
    check_tokens(x0, process.num_states, "x0")
    k_t, k_rest = jax.random.split(key)
    t = sample_train_times(k_t, x0.shape[0], min_time, antithetic)
    terms, nll = ctmc_elbo_at(k_rest, denoiser=denoiser, params=params, process=process, x0=x0, t=t, cond=cond,
                              ratio_eps=ratio_eps, dropout=dropout)
    ce = jnp.mean(nll)
    loss = jnp.mean(terms["reg"] + terms["sig"]) + ce_weight * ce
    integrand = jax.lax.stop_gradient(terms["reg"] + terms["sig"] + terms["neg_exit"])
    nelbo = jnp.mean((1.0 - min_time) * integrand + prior_cross_entropy(process, x0))
    aux = {"reg": jnp.mean(terms["reg"]), "sig": jnp.mean(terms["sig"]), "ce": ce, "nelbo": nelbo,
           "nelbo_per_token": nelbo / x0.shape[1]}
    return loss, aux
