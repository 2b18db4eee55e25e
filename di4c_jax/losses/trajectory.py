"""Trajectory matching: the student's whole k-step sampler, one lambda per trajectory, fitted to the teacher's law.

A mixture student sampled with one lambda per trajectory (`share_lam=True`) on the grid 1 = t_0 > ... > t_k = 0
(`process.default_time_grid(k)`) draws x0 from
  p^theta_k(x0 | x_{t_0}) = E_lam sum_{x_{t_1} .. x_{t_{k-1}}} prod_{i<k} K^theta_i(x_{t_{i+1}} | x_{t_i}, lam),
K^theta_i the product kernel `process.reverse_step_logprobs` of its x0-prediction at (x_{t_i}, t_i, lam) (at
t_k = 0 that prediction itself). The one-step objectives (Di4C, CDM) never ask a component to agree with itself
across t, which that sampler relies on; this loss trains the sampler itself. The target x0 is the end of the
teacher's n-step chain (`cdm.teacher_chain`) from a prior draw x_{t_0} (all masks on a masked process); the
intermediate states are proposed by the forward process given x0 (x_{t_{k-1}} ~ q(. | x0), then
x_{t_j} ~ q(. | x_{t_{j+1}}) down to j = 1). Importance sampling with that proposal and Jensen's inequality give
  -log p^theta_k(x0 | x_{t_0}) <= E_path[-log E_lam prod_{i<k} K^theta_i(x_{t_{i+1}} | x_{t_i}, lam)] + C(x0),
C free of theta, so the expected loss bounds E KL(teacher(. | x_{t_0}) || p^theta_k(. | x_{t_0})) up to a constant:
the k-step analogue of the D3PM / MDLM ELBO, with lambda a latent shared by the k steps. On a masked process the
kernels' stay / unmask factors do not depend on theta, so the loss is -log E_lam of the product, over the steps, of
the student's x0-probabilities of the tokens that unmask at that step. E_lam is estimated by N lambdas per item,
each shared by the k steps: exp(-loss) is an unbiased estimate of the path density, the loss biased high by Jensen
(-> 0 as N grows; `jackknife` as in `cdm_loss`). Since the whole sequence is one component, that bias is large:
the log-mean-exp of N sums of k D terms credits little more than the best of the N lambdas per item. Measured
worse than CDM one-step on the HMM and the masked exact benchmark (README section 2).
Cost per item: k N student evaluations (with gradient) and n teacher evaluations (one chain).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from di4c_jax.denoiser import Denoiser
from di4c_jax.losses.cdm import student_kernel_logprobs_at, teacher_chain
from di4c_jax.losses.inputs import checked_batch, reject_local_latents
from di4c_jax.losses.mixture import component_grid, gather_points, mixture_log_density_at
from di4c_jax.processes.base import as_batch_times, sample_categorical
from di4c_jax.processes.protocol import Process


@dataclasses.dataclass(frozen=True)
class TrajectoryConfig:
    """Static (hashable) settings of `trajectory_loss` (module docstring).

    num_student_steps: k, the student sampler's steps (grid `process.default_time_grid(k)`).
    num_teacher_steps: n, the teacher chain's steps from t = 1 to 0 that draws the target x0.
    num_lambda: N lambdas per item, each shared by the k steps (a product student uses 1).
    jackknife: the jackknife of the N-sample log density (`mixture_log_density_at`; N >= 2, mixture students).
    student_dropout: pass `rngs` to the student.
    """

    num_student_steps: int = 4
    num_teacher_steps: int = 32
    num_lambda: int = 16
    jackknife: bool = False
    student_dropout: bool = False

    def __post_init__(self):
        for name in ("num_student_steps", "num_teacher_steps", "num_lambda"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.jackknife and self.num_lambda < 2:
            raise ValueError(f"the jackknife leaves one of N lambdas out, so it needs num_lambda >= 2, got "
                             f"{self.num_lambda}")


def forward_path(key: jax.Array, *, process: Process, x0: jax.Array, grid: jax.Array) -> jax.Array:
    """The intermediate states of a k-step grid, drawn as one forward Markov chain outward from x0.

    Args:
      key: PRNG key.  process: the forward process.  x0: int[B, D].
      grid: float32[k + 1] decreasing from t_0 to t_k = 0 (x0's own time).

    Returns:
      int32[B, k - 1, D]: [:, j - 1] = x_{t_j} for j = 1 .. k - 1, with x_{t_{k-1}} ~ q(. | x0) and
      x_{t_j} ~ q(. | x_{t_{j+1}}) (empty for k = 1).
    """
    batch, k = x0.shape[0], grid.shape[0] - 1
    if k == 1:
        return jnp.zeros((batch, 0, x0.shape[1]), jnp.int32)
    keys = jax.random.split(key, k)
    x = process.sample_xt(keys[k - 1], x0, as_batch_times(grid[k - 1], batch)).astype(jnp.int32)
    states = [x]
    for j in range(k - 2, 0, -1):
        rows = process.transition(as_batch_times(grid[j], batch), as_batch_times(grid[j + 1], batch))  # [B, K, K]
        step = jnp.take_along_axis(rows, x[:, :, None], axis=1)  # [B, D, K]: the rows of the current states
        x = sample_categorical(keys[j], jnp.log(step))
        states.append(x)
    return jnp.stack(states[::-1], axis=1)


def path_component_logprobs(*, student: Denoiser, student_params: Any, process: Process, path, x0, grid, lam,
                            cond=None, rngs=None) -> jax.Array:
    """Each component's log-probability of each step of the path: float32[B, N, k D] (steps along the last axis).

    path int[B, k, D] (x_{t_0} .. x_{t_{k-1}}), x0 int[B, D], grid float32[k + 1], lam float32[B, N] (the same
    N lambdas at every step).
    """
    batch, k = lam.shape[0], path.shape[1]
    targets = jnp.concatenate([path[:, 1:], x0[:, None]], axis=1)  # x_{t_{i+1}}: [B, k, D]
    per_step = []
    for i in range(k):
        kernel = student_kernel_logprobs_at(student=student, student_params=student_params, process=process,
                                            x_hi=path[:, i], t_hi=as_batch_times(grid[i], batch),
                                            t_lo=as_batch_times(grid[i + 1], batch), lam=lam, cond=cond,
                                            rngs=None if rngs is None else jax.random.fold_in(rngs, i))
        per_step.append(gather_points(kernel, targets[:, i:i + 1])[..., 0])  # [B, N, D]
    return jnp.concatenate(per_step, axis=-1)


def trajectory_loss(key: jax.Array, *, student: Denoiser, student_params: Any, teacher: Denoiser,
                    teacher_params: Any, process: Process, x0: jax.Array, config: TrajectoryConfig,
                    cond: jax.Array | None = None):
    """The trajectory-matching loss on a batch (module docstring). Works for every process.

    Args:
      key: PRNG key.  student, student_params / teacher, teacher_params: Denoisers and params (teacher params are
        stop-gradient).  process: the forward process.
      x0: int[B, D] data; only its shape (and `cond`) are used: the targets are the teacher's draws from t = 1.
      config: `TrajectoryConfig`.  cond: None or int32[B].

    Returns:
      (loss: scalar, nats per item, averaged over the batch; aux {'nll': the plain N-sample estimate float32[],
      'nll_per_dim': float32[]}).
    """
    reject_local_latents("trajectory", student=student, teacher=teacher)
    x0 = checked_batch(process, x0, cond)
    batch = x0.shape[0]
    k_prior, k_chain, k_path, k_lam, k_drop = jax.random.split(key, 5)
    x_start = process.sample_prior(k_prior, x0.shape)
    ones, zeros = jnp.ones((batch,), jnp.float32), jnp.zeros((batch,), jnp.float32)
    target, _ = teacher_chain(k_chain, teacher=teacher, teacher_params=teacher_params, process=process,
                              x_hi=x_start, t_hi=ones, t_lo=zeros, num_steps=config.num_teacher_steps,
                              num_samples=1, cond=cond)
    target = target[:, 0]
    grid = jnp.asarray(process.default_time_grid(config.num_student_steps), jnp.float32)
    path = jnp.concatenate([x_start[:, None],
                            forward_path(k_path, process=process, x0=target, grid=grid)], axis=1)
    lam = component_grid(k_lam, denoiser=student, batch=batch, num=config.num_lambda)
    values = path_component_logprobs(student=student, student_params=student_params, process=process, path=path,
                                     x0=target, grid=grid, lam=lam, cond=cond,
                                     rngs=k_drop if config.student_dropout else None)[..., None]  # [B, N, k D, 1]
    nll = -mixture_log_density_at(values, control_variate=False)[:, 0]
    per_item = nll
    if config.jackknife and student.mixture:
        per_item = -mixture_log_density_at(values, control_variate=False, jackknife=True)[:, 0]
    return jnp.mean(per_item), dict(nll=jnp.mean(nll), nll_per_dim=jnp.mean(nll) / x0.shape[1])
