"""Exact conditional distribution matching (CDM), after Gao & Sun (arXiv 2512.12889).

Only the paper's abstract (Gao & Sun 2025) was available to us: the teacher's reverse conditional p_{0|t}(x0 | x_t) has a Markov
decomposition through intermediate times, and the student is matched to that conditional itself, for one-step and
few-step samplers. Everything below is OUR derivation from that principle, for x0-predicting teachers (the paper
recovers its kernels from marginal density ratios; here every one-step teacher kernel is the closed-form
p(x_s | x_r) = prod_d sum_{x0} q(x_s^d | x_r^d, x0^d) p^psi(x0^d | x_r), i.e. `process.reverse_step_logprobs`).

Matched interval (t_hi -> t_lo), fine grid s_i = t_hi + (t_lo - t_hi) i / n, i = 0..n:
  teacher conditional  P(x_lo | x_hi) = sum over paths of prod_{i<n} K^psi_i(x_{s_{i+1}} | x_{s_i})
  student kernel       p^theta(x_lo | x_hi) = E_lam prod_d sum_{x0} q(x_lo^d | x_hi^d, x0^d) p^theta(x0^d | x_hi, lam)
  objective            E_{x_hi} KL(P(. | x_hi) || p^theta(. | x_hi)) = E_{x_hi} CE(P, p^theta) - H(P)  (H: no theta)
At t_lo = 0 the kernels are the x0-predictions themselves (`reverse_step_logprobs(., s=0)` is the law of
`process.denoise(..., 'sample')`; for DiscreteGaussian up to its 1e-9 ratio_eps floor), so the one-step mode (t_hi = t ~ U[min_time, 1], t_lo = 0)
matches p^theta_{0|t} to the teacher's n-step ancestral law of x0 given x_t, and the few-step mode (interval j of
the student's coarse grid `process.default_time_grid(k)`, j ~ U{0..k-1}, x_hi ~ q(. | x0) forward from data)
matches each of the k coarse student steps to n teacher steps, interval by interval.

Estimator, per item, with M teacher chains x_lo^(m) and N student lambdas (product student: N = 1, lam = None):
  no control variate:  -(1/M) sum_m log pbar_N(x_lo^(m)),  pbar_N = (1/N) sum_n prod_d k_n^d  (mixture_log_likelihood)
  control variate:     -(1/M) sum_m [log pbar_N - sum_d log kbar^d](x_lo^(m)) - sum_{d,v} Pbar^d(v) log kbar^d(v)
where kbar^d = (1/N) sum_n k_n^d are the student kernel's marginals and Pbar^d = (1/M) sum_m K^psi_{n-1,d}(. |
x^(m)_{s_{n-1}}) are the teacher's LAST-step kernels averaged over the chains. The teacher chain's marginals P^d are
not available in closed form; Pbar^d is an unbiased (Rao-Blackwellised) estimate of them, since x_lo^d given
x_{s_{n-1}} is drawn from that last product kernel. The correction is linear in Pbar and its expectation equals that
of the subtracted term, so the control variate changes the variance, not the expectation. For a product student
the MC part is exactly 0 and the loss is sum_d CE(Pbar^d, k^d).
What is sampled: t (one-step) or the interval (few-step); x_hi ~ q(. | x0) (or a reference trajectory's state);
the M teacher chains (teacher lambdas per row per step for a mixture teacher); the N student lambdas. What is
exact: every per-step kernel, the student kernel's likelihood (sum over x0 per dimension, product over D, mixture
over the N drawn lambdas). Stop-gradient: teacher params, chain samples, Pbar, reference trajectories. Gradient
reaches the student only through its kernel at x_hi.
Bias: for fixed lambdas, E_chains[loss] = CE(P, pbar_N) = KL(P || pbar_N) + H(P) and its gradient is unbiased for
grad KL(P || pbar_N); pbar_N is an N-sample estimate of the lambda-mixture, and E_lam[-log pbar_N] >= -log E_lam
p (Jensen), so for a mixture student the estimator is biased by that Jensen gap (-> 0 as N grows). Exactly
unbiased for a product student. `jackknife` takes the bias of the log pbar_N (- log kbar) term from O(1/N) to
O(1/N^2) (`mixture_log_density_at`), as the Di4C recipes' field of the same name does; the control variate's
cross-entropy term keeps the plain marginals kbar, whose bias is one dimension's, not the joint's.
Cost per training example (network evaluations): student N (mixture) or 1, with gradient; teacher 1 + M (n - 1)
for a product teacher (the first step at x_hi is shared by the M chains), M n for a mixture teacher.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from di4c_jax.denoiser import Denoiser
from di4c_jax.losses.mixture import (component_grid, component_log_likelihood, mixture_log_likelihood,
                                     mixture_log_marginal)
from di4c_jax.losses.inputs import checked_batch
from di4c_jax.losses.reference import check_reference_settings, draw_reference_xt
from di4c_jax.processes.base import sample_categorical
from di4c_jax.processes.protocol import Process

sg = jax.lax.stop_gradient
CDM_MODES = ("one_step", "few_step")


@dataclasses.dataclass(frozen=True)
class CDMConfig:
    """Static (hashable) settings of `cdm_loss` (see the module docstring).

    mode: 'one_step' (t ~ U[min_time, 1] -> 0) or 'few_step' (a random interval of the k-step coarse grid).
    num_teacher_steps: n, teacher steps per matched interval.  num_samples: M, teacher chains per item.
    num_student_steps: k (few_step).  num_lambda: N (student lambdas; a product student uses N = 1).
    control_variate: see the module docstring.  student_dropout: pass `rngs` to the student.
    jackknife: the jackknife estimate of the student's N-sample log density (module docstring); needs
    num_lambda >= 2 and applies to mixture students only (a product student's estimate has no N-sample bias).
    start_fraction (one_step): the share of items whose t_hi is 1, the state every k-step sampler starts from
    (x_hi from the prior); the rest draw t_hi ~ U[min_time, 1].  time_exponent (one_step): t_hi = min_time +
    (1 - min_time) u^time_exponent, u ~ U[0, 1] (1: uniform; 2: more items at small t).
    reference_teacher / reference_student: the probability that an item's x_hi comes from the teacher's /
    the student's own trajectory from t = 1 (`reference_teacher_steps` / `reference_student_steps` ancestral
    steps, stop-gradient; `losses.reference`) instead of q(. | x0); the data gets the rest.
    A mixture teacher draws a fresh lam per row per step.
    """

    mode: str = "one_step"
    num_teacher_steps: int = 16
    num_samples: int = 4
    num_student_steps: int = 4
    num_lambda: int = 16
    control_variate: bool = True
    student_dropout: bool = True
    min_time: float = 1e-3
    jackknife: bool = False
    start_fraction: float = 0.0
    time_exponent: float = 1.0
    reference_teacher: float = 0.0
    reference_student: float = 0.0
    reference_teacher_steps: int = 8
    reference_student_steps: int = 2

    def __post_init__(self):
        if self.mode not in CDM_MODES:
            raise ValueError(f"unknown CDM mode {self.mode!r}; choose one of {CDM_MODES}")
        for name in ("num_teacher_steps", "num_samples", "num_student_steps", "num_lambda"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.min_time < 1.0:
            raise ValueError(f"min_time must lie in (0, 1), got {self.min_time}")
        if not 0.0 <= self.start_fraction <= 1.0:
            raise ValueError(f"start_fraction must lie in [0, 1], got {self.start_fraction}")
        if self.start_fraction and self.mode != "one_step":
            raise ValueError(f"start_fraction applies to the one_step mode only, got mode {self.mode!r} with "
                             f"start_fraction {self.start_fraction}")
        if not self.time_exponent > 0.0:
            raise ValueError(f"time_exponent must be > 0, got {self.time_exponent}")
        check_reference_settings(self)
        if self.jackknife and self.num_lambda < 2:
            raise ValueError(f"the jackknife leaves one of N lambdas out, so it needs num_lambda >= 2, got "
                             f"{self.num_lambda}")

    def teacher_step(self, key, process, x_t, logp, t, u) -> jax.Array:
        """One ancestral step x_t -> x_u int32[B, D] (the reference trajectories' step)."""
        return process.reverse_step(key, x_t, logp, t, u)


def teacher_chain(key: jax.Array, *, teacher: Denoiser, teacher_params: Any, process: Process, x_hi, t_hi, t_lo,
                  num_steps: int, num_samples: int, cond=None):
    """M independent n-step teacher chains from x_hi down to t_lo.

    Args:
      key: PRNG key.  teacher, teacher_params: the teacher (a mixture draws a fresh lam per row per step).
      process: the forward process.  x_hi: int[B, D] at t_hi float[B]; t_lo: float[B] (< t_hi).
      num_steps: n teacher steps on s_i = t_hi + (t_lo - t_hi) i/n.  num_samples: M chains.  cond: None or int[B].

    Returns:
      (x_lo int32[B, M, D], last_kernel float32[B, M, D, K]): the chain ends and, per chain, the log-probs of the
      last step's product kernel (at x_{s_{n-1}}), both stop-gradient. Step i draws from
      `process.reverse_step_logprobs(x, teacher log p(x0 | x, s_i), s_i, s_{i+1})`.
    """
    batch, m = x_hi.shape[0], num_samples
    teacher_params = sg(teacher_params)
    t_hi, t_lo = jnp.broadcast_to(t_hi, (batch,)), jnp.broadcast_to(t_lo, (batch,))
    t_hi_r, t_lo_r, cond_r = (None if a is None else jnp.repeat(a, m, axis=0) for a in (t_hi, t_lo, cond))

    def time(i, lo, hi):
        return jnp.where(i == num_steps, lo, hi + (lo - hi) * (i / num_steps))

    def kernel(x, i, lo, hi, c, lam):
        s_from, s_to = time(i, lo, hi), time(i + 1, lo, hi)
        logp = teacher.logprobs(process, teacher_params, x, s_from, lam, c)
        return process.reverse_step_logprobs(x, logp, s_from, s_to)

    k_first, k_lam, k_rest = jax.random.split(key, 3)
    x_rep = jnp.repeat(x_hi, m, axis=0)
    if teacher.mixture:
        first = kernel(x_rep, 0, t_lo_r, t_hi_r, cond_r, teacher.draw_lam(k_lam, batch * m))
    else:  # all M chains start with the same kernel at x_hi: one evaluation per item
        first = jnp.repeat(kernel(x_hi, 0, t_lo, t_hi, cond, None), m, axis=0)
    x = sample_categorical(k_first, first)

    def body(carry, inputs):
        x, _ = carry
        i, k = inputs
        k_lam_i, k_step = jax.random.split(k)
        logp_step = kernel(x, i, t_lo_r, t_hi_r, cond_r, teacher.draw_lam(k_lam_i, batch * m))
        return (sample_categorical(k_step, logp_step), logp_step), None

    steps = (jnp.arange(1, num_steps), jax.random.split(k_rest, num_steps - 1))
    (x, last), _ = jax.lax.scan(body, (x, first), steps)
    return sg(x.reshape(batch, m, -1)), sg(last.reshape(batch, m, *last.shape[1:]))


def student_kernel_logprobs(key: jax.Array, *, student: Denoiser, student_params: Any, process: Process, x_hi,
                            t_hi, t_lo, num_lambda: int, cond=None, rngs=None):
    """Per-component student kernel log p^theta_n(x_lo^d | x_hi) [B, N, D, K] (gradient flows).

    N = num_lambda fresh lambdas per item for a mixture student, N = 1 for a product student; one student
    evaluation per (item, component). A local-latent student (`Denoiser.local_latents`) gives N Z components, its Z
    latents enumerated per global lambda (`component_grid`). x_hi int[B, D], t_hi / t_lo float[B].
    """
    lam = component_grid(key, denoiser=student, batch=x_hi.shape[0], num=num_lambda)
    return student_kernel_logprobs_at(student=student, student_params=student_params, process=process, x_hi=x_hi,
                                      t_hi=t_hi, t_lo=t_lo, lam=lam, cond=cond, rngs=rngs)


def student_kernel_logprobs_at(*, student: Denoiser, student_params: Any, process: Process, x_hi, t_hi, t_lo, lam,
                               cond=None, rngs=None):
    """`student_kernel_logprobs` at given lambdas lam float32[B, N] (a product student ignores them): [B, N, D, K]
    ([B, N Z, D, K] for a local-latent student)."""
    logp_x0 = student.component_logprobs_at(process, student_params, x_hi, t_hi, lam, cond, rngs=rngs)
    n = logp_x0.shape[1]  # N, or N Z for a local-latent student
    rep = lambda a: jnp.repeat(a, n, axis=0)  # noqa: E731
    logp_x0 = logp_x0.reshape(-1, *logp_x0.shape[2:])
    kernel = process.reverse_step_logprobs(rep(x_hi), logp_x0, rep(t_hi), rep(t_lo))
    return kernel.reshape(x_hi.shape[0], n, *kernel.shape[1:])


def cdm_objective(*, student_kernel, x_lo, teacher_last_kernel, control_variate: bool = True,
                  jackknife: bool = False, student: Denoiser | None = None):
    """Per-item CDM estimator (module docstring).

    Args:
      student_kernel: [B, N, D, K] (gradient).  x_lo: int[B, M, D] teacher chain ends.
      teacher_last_kernel: [B, M, D, K] the teacher's last-step kernels (stop-gradient).
      control_variate: see the module docstring.  jackknife: the jackknife of the log pbar_N (- log kbar) term
        (N >= 2).  student: the student's Denoiser, whose density `component_log_likelihood` gives (a local-latent
        one: student_kernel [B, N Z, D, K], no jackknife); None: the N-sample mixture of `mixture_log_likelihood`.

    Returns:
      (per_item float32[B], nll float32[B]) where nll = -(1/M) sum_m log pbar_N(x_lo^(m)) is the plain MC
      cross-entropy (without the jackknife equal to per_item in expectation over the chains).
    """
    if student_kernel.ndim != 4 or teacher_last_kernel.shape[:3] != x_lo.shape:
        raise ValueError(f"need student_kernel [B, N, D, K], x_lo [B, M, D] and teacher_last_kernel [B, M, D, K]; "
                         f"got {student_kernel.shape}, {x_lo.shape}, {teacher_last_kernel.shape}")
    jackknife = jackknife and (student is None or student.local_latents is None)

    def density(control_variate: bool, jackknife: bool) -> jax.Array:
        if student is None:
            return mixture_log_likelihood(student_kernel, x_lo, control_variate, jackknife)
        return component_log_likelihood(student, student_kernel, x_lo, control_variate, jackknife)

    nll = -jnp.mean(density(False, False), axis=1)
    if not (control_variate or jackknife):
        return nll, nll
    per_item = -jnp.mean(density(control_variate, jackknife), axis=1)
    if control_variate:
        teacher_marginal = jnp.exp(sg(mixture_log_marginal(teacher_last_kernel)))
        per_item = per_item - jnp.sum(teacher_marginal * mixture_log_marginal(student_kernel), axis=(-2, -1))
    return per_item, nll


def cdm_conditional_loss(key: jax.Array, *, student: Denoiser, student_params: Any, teacher: Denoiser,
                         teacher_params: Any, process: Process, x_hi, t_hi, t_lo, config: CDMConfig, cond=None):
    """CDM estimator at a given state x_hi.

    Args:
      key: PRNG key.  student, student_params / teacher, teacher_params: Denoisers and params.
      process: the forward process.  x_hi: int[B, D] at t_hi float[B]; t_lo: float[B] (t_lo < t_hi).
      config: `CDMConfig`.  cond: None or int32[B].

    Returns:
      (per_item float32[B], aux {'nll': float32[B]}).
    """
    k_chain, k_lam, k_drop = jax.random.split(key, 3)
    x_lo, last = teacher_chain(k_chain, teacher=teacher, teacher_params=teacher_params, process=process, x_hi=x_hi,
                               t_hi=t_hi, t_lo=t_lo, num_steps=config.num_teacher_steps,
                               num_samples=config.num_samples, cond=cond)
    rngs = k_drop if config.student_dropout else None
    kernel = student_kernel_logprobs(k_lam, student=student, student_params=student_params, process=process,
                                     x_hi=x_hi, t_hi=t_hi, t_lo=t_lo, num_lambda=config.num_lambda, cond=cond,
                                     rngs=rngs)
    per_item, nll = cdm_objective(student_kernel=kernel, x_lo=x_lo, teacher_last_kernel=last,
                                  control_variate=config.control_variate,
                                  jackknife=config.jackknife and student.mixture,
                                  student=student)
    return per_item, dict(nll=nll)


def cdm_times(key, process, config: CDMConfig, batch: int):
    """(t_hi, t_lo) float32[B]: one_step t_hi = 1 with probability start_fraction, else min_time + (1 - min_time)
    u^time_exponent with u ~ U[0, 1], and t_lo = 0; few_step a uniform interval of the coarse grid."""
    if config.mode == "one_step":
        u = jax.random.uniform(key, (batch,))
        if config.time_exponent != 1.0:
            u = u ** config.time_exponent
        t_hi = config.min_time + (1.0 - config.min_time) * u
        if config.start_fraction:  # fold_in: the uniform draws, and so the default's, stay as they were
            at_start = jax.random.uniform(jax.random.fold_in(key, 1), (batch,)) < config.start_fraction
            t_hi = jnp.where(at_start, 1.0, t_hi)
        return t_hi, jnp.zeros((batch,), jnp.float32)
    grid = jnp.asarray(process.default_time_grid(config.num_student_steps), jnp.float32)
    j = jax.random.randint(key, (batch,), 0, config.num_student_steps)
    return grid[j], grid[j + 1]


def cdm_loss(key: jax.Array, *, student: Denoiser, student_params: Any, teacher: Denoiser, teacher_params: Any,
             process: Process, x0: jax.Array, config: CDMConfig, cond: jax.Array | None = None):
    """CDM loss on a data batch (module docstring). Works for every process.

    Draws (t_hi, t_lo) by `cdm_times`, x_hi ~ q(. | x0) at t_hi (or from a reference trajectory, `CDMConfig`),
    then `cdm_conditional_loss`; the loss is summed over D (nats per item) and averaged over the batch.

    Args:
      key: PRNG key.  student, student_params / teacher, teacher_params: Denoisers and params.
      process: the forward process.  x0: int[B, D].  config: `CDMConfig`.  cond: None or int32[B].

    Returns:
      (scalar loss, aux of batch means: loss, nll (plain MC cross-entropy), t_hi_mean).
    """
    x0 = checked_batch(process, x0, cond)
    batch = x0.shape[0]
    k_time, k_xt, k_rest = jax.random.split(key, 3)
    t_hi, t_lo = cdm_times(k_time, process, config, batch)
    x_hi = draw_reference_xt(k_xt, config=config, process=process, x0=x0, t=t_hi, teacher=teacher,
                             teacher_params=teacher_params, student=student, student_params=student_params,
                             cond=cond).x_t
    per_item, aux = cdm_conditional_loss(k_rest, student=student, student_params=student_params, teacher=teacher,
                                         teacher_params=teacher_params, process=process, x_hi=x_hi, t_hi=t_hi,
                                         t_lo=t_lo, config=config, cond=cond)
    loss = jnp.mean(per_item)
    return loss, dict(loss=loss, nll=jnp.mean(aux["nll"]), t_hi_mean=jnp.mean(t_hi))
