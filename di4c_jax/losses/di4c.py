"""The Di4C distillation loss (Hayakawa et al. 2025): data, distillation and consistency terms for a lambda-mixture
student, with the control variate of the reference implementations.

`di4c_objective` is the deterministic part (the Di4C loss with every random input given), differentiated only
through the student's t-side log-probabilities; `di4c_loss` draws everything it needs (times by its recipe, x_t,
lambdas, teacher steps, composition samples) and calls it.

aux keys (every recipe; batch means):
  loss      the scalar minimised, = distil + data + consis (to float32 rounding)
  distil    the distillation term's share of `loss`: w_distil KL(teacher marginals || each student component) at
            the item's x_t (sdtt, maskgit), or the same KL on tauldr's separate small-time batch (weight 1)
  data      the data term's share: time_coeff (-(F - G)(x0)) + KL(teacher marginals || mixture marginals)
            (time_coeff 0 where x_t came from a reference trajectory, not from x0: `losses.reference`)
  consis    the consistency term's share: w_consis (-mean_m (F - G)(x_hat_m) + KL(composition || mixture marginals)),
            with the recipe's consis_coupling a: w_consis ((1 - a) (that) + a consis_comp)
  consis_comp   -mean_m log p_m(x_hat_m): each composition sample under the t-side component of the lambda that
            drew it (computed when a > 0, else 0; a cross-entropy, so it does not go to 0)
  data_cor, data_ind, consis_cor, consis_ind   the unweighted correlation (-(F - G), or -F without the control
            variate) and marginal-KL parts of the data and consistency terms (0 for the KLs without control variate)
F is the log mixture density, G the log product of its marginals; KLs are summed over D and K.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from di4c_jax.denoiser import Denoiser, draw_lam, draw_lam_grid
from di4c_jax.losses.chunked import (ComponentStats, chunked_component_stats, component_stats, default_chunk,
                                     like_batch, scan_chunks)
from di4c_jax.losses.inputs import checked_batch, reject_local_latents
from di4c_jax.losses.mixture import kl_sum, mixture_log_density_at, mixture_log_marginal
from di4c_jax.losses.recipes import Di4CRecipe
from di4c_jax.losses.reference import draw_reference_xt
from di4c_jax.losses.reduce import logsumexp_axis
from di4c_jax.processes.base import sample_categorical
from di4c_jax.processes.protocol import Process

sg = jax.lax.stop_gradient


def di4c_objective(*, logp_t, x0, logp_teacher_t, logp_u, x_hat, time_coeff, w_distil, w_consis,
                   control_variate: bool = True, consis_coupling: float = 0.0, jackknife: bool = False):
    """Di4C loss from precomputed log-probabilities.

    Args:
      logp_t: [B, N, D, K] student components at (x_t, t): the only input that carries gradient.
      x0: int[B, D], the data point that produced x_t.
      logp_teacher_t: [B, D, K] teacher x0 marginals at (x_t, t).
      logp_u: [B, M, D, K] student components at the M teacher-stepped x_u (composition components).
      x_hat: int[B, M, D], one draw of each composition component.
      time_coeff, w_consis: float32[B].  w_distil: float32[B], or None for no same-x_t distillation term.
      control_variate: subtract G (the product of the mixture marginals) and add the marginal KLs back.
      consis_coupling: the share a in [0, 1] of the consistency term taken per component; with a > 0, logp_t[:, m]
        (m < M <= N) must be the student at the lambda that drew x_hat[:, m] (`Di4CRecipe.consis_coupling`).
      jackknife: the jackknife estimate of F (- G) at x0 and the x_hat (`losses.mixture.mixture_log_density_at`).

    Returns:
      (scalar loss, aux): aux as in the module docstring (tauldr's `distil` is added by `di4c_loss`).
    """
    _check_objective_shapes(logp_t, x0, logp_teacher_t, logp_u, x_hat)
    stats = component_stats(logp_t, _points(x0, x_hat), jnp.exp(sg(logp_teacher_t)))
    return objective_from_stats(stats, logp_teacher_t=logp_teacher_t, log_marginal_u=mixture_log_marginal(logp_u),
                                time_coeff=time_coeff, w_distil=w_distil, w_consis=w_consis,
                                control_variate=control_variate, consis_coupling=consis_coupling, jackknife=jackknife)


def _points(x0, x_hat):
    """x0 and the composition samples as one [B, 1 + M, D] set of points."""
    return jnp.concatenate([x0[:, None, :].astype(jnp.int32), x_hat.astype(jnp.int32)], axis=1)


def objective_from_stats(stats: ComponentStats, *, logp_teacher_t, log_marginal_u, time_coeff, w_distil, w_consis,
                         control_variate: bool = True, consis_coupling: float = 0.0, jackknife: bool = False):
    """`di4c_objective` from the student's component statistics (`losses.chunked`), values gathered at the points
    [x0, x_hat_1..M]. log_marginal_u: [B, D, K] the composition components' marginals (stop-gradient)."""
    batch, num = stats.cross.shape
    num_hat = stats.values.shape[-1] - 1
    if not 0.0 <= consis_coupling <= 1.0:
        raise ValueError(f"consis_coupling must be in [0, 1], got {consis_coupling}")
    if consis_coupling > 0 and num_hat > num:
        raise ValueError(f"consis_coupling > 0 pairs composition sample m with component m: needs M <= N, got "
                         f"M = {num_hat} > N = {num}")
    weights = (("time_coeff", time_coeff), ("w_consis", w_consis)) + (
        () if w_distil is None else (("w_distil", w_distil),))
    for name, w in weights:
        if jnp.shape(w) != (batch,):
            raise ValueError(f"{name} must be float[B={batch}], got shape {jnp.shape(w)}")
    logp_teacher_t, log_marginal_u = sg(logp_teacher_t), sg(log_marginal_u)
    log_marginal = stats.log_marginal

    density = mixture_log_density_at(stats.values, control_variate, jackknife)  # [B, 1 + M]
    data_cor, consis_cor = -density[:, 0], -jnp.mean(density[:, 1:], axis=1)
    if control_variate:
        data_ind = kl_sum(logp_teacher_t, log_marginal)
        consis_ind = kl_sum(log_marginal_u, log_marginal)
    else:
        data_ind = consis_ind = jnp.zeros((batch,), log_marginal.dtype)
    if w_distil is None:
        distil = jnp.zeros((batch,), log_marginal.dtype)
    else:  # mean_n KL(teacher || component n) = sum tau log tau - mean_n sum tau log p_n
        neg_entropy = jnp.sum(jnp.exp(logp_teacher_t) * logp_teacher_t, axis=(1, 2))
        distil = w_distil * (neg_entropy - jnp.mean(stats.cross, axis=1))

    data = time_coeff * data_cor + data_ind
    consis = consis_cor + consis_ind
    if consis_coupling > 0:  # component m at the sample it drew: values[b, m, :, 1 + m]
        own = jnp.diagonal(stats.values[:, :num_hat, :, 1:], axis1=1, axis2=3)  # [B, D, M]
        consis_comp = -jnp.mean(jnp.sum(own, axis=1), axis=1)
        consis = (1.0 - consis_coupling) * consis + consis_coupling * consis_comp
    else:
        consis_comp = jnp.zeros((batch,), log_marginal.dtype)
    consis = w_consis * consis
    terms = dict(data=data, data_cor=data_cor, data_ind=data_ind, distil=distil, consis=consis,
                 consis_cor=consis_cor, consis_ind=consis_ind, consis_comp=consis_comp, loss=distil + data + consis)
    aux = {name: jnp.mean(v) for name, v in terms.items()}
    return aux["loss"], aux


def _check_objective_shapes(logp_t, x0, logp_teacher_t, logp_u, x_hat):
    if logp_t.ndim != 4:
        raise ValueError(f"logp_t must be [B, N, D, K], got shape {logp_t.shape}")
    batch, _, dims, classes = logp_t.shape
    expected = dict(x0=((batch, dims), x0.shape), logp_teacher_t=((batch, dims, classes), logp_teacher_t.shape))
    for name, (want, got) in expected.items():
        if tuple(got) != want:
            raise ValueError(f"{name} must have shape {want} (from logp_t {logp_t.shape}), got {tuple(got)}")
    if logp_u.ndim != 4 or (logp_u.shape[0], *logp_u.shape[2:]) != (batch, dims, classes):
        raise ValueError(f"logp_u must be [B={batch}, M, D={dims}, K={classes}], got {logp_u.shape}")
    if x_hat.shape != logp_u.shape[:3]:
        raise ValueError(f"x_hat must be int[B, M, D] = {logp_u.shape[:3]}, got {x_hat.shape}")
    return batch


def _repeat(x, n):
    """[B, ...] -> [B * n, ...], b-major (torch repeat_interleave); None stays None."""
    return None if x is None else jnp.repeat(x, n, axis=0)


def _composition(keys, *, teacher: Denoiser, teacher_params, student: Denoiser, student_params, process, x_t, t, u,
                 cond, config: Di4CRecipe, chunk: int):
    """Everything the consistency term needs from the teacher steps, `chunk` of the M composition copies at a time.

    keys: (k_teacher, k_lam_u, k_hat). Returns, all stop-gradient: the teacher's x0 marginals at (x_t, t) [B, D, K],
    the M teacher steps t -> u x_u int32[B, M, D], one draw x_hat int32[B, M, D] of each composition component
    (the student at (x_u_m, u) with its own lambda), and the composition components' marginals [B, D, K]. A mixture
    teacher (di4c^2) estimates its marginals from M fresh lambdas, and teacher step m uses component m. Copy m's
    randomness is its own (keys split per copy), so with JAX's default threefry keys the draws do not depend on
    `chunk` (rbg keys' bits depend on the vmap batch size).
    """
    k_teacher, k_lam_u, k_hat = keys
    batch, dims = x_t.shape
    m, classes = config.num_samples_composition, process.num_states
    k_lam, k_step = jax.random.split(k_teacher)
    step_keys, hat_keys = jax.random.split(k_step, m), jax.random.split(k_hat, m)
    lam_teacher, lam_u = draw_lam_grid(k_lam, batch, m), draw_lam_grid(k_lam_u, batch, m)
    teacher_params, student_params = sg(teacher_params), sg(student_params)
    product_marginal = None if teacher.mixture else teacher.logprobs(process, teacher_params, x_t, t, None, cond)

    def copies(idx):
        """(teacher logsumexp or None, composition logsumexp [B, D, K], x_u [B, m_c, D], x_hat [B, m_c, D])."""
        m_c = idx.shape[0]
        step = lambda k, logp: config.teacher_step(k, process, x_t, logp, t, u)  # noqa: E731
        if teacher.mixture:
            comp = teacher.logprobs(process, teacher_params, _repeat(x_t, m_c), _repeat(t, m_c),
                                    lam_teacher[:, idx].reshape(-1), _repeat(cond, m_c))
            comp = comp.reshape(batch, m_c, dims, classes)
            lse_teacher = logsumexp_axis(comp, 1)
            x_u = jax.vmap(step, in_axes=(0, 1), out_axes=1)(step_keys[idx], comp)
        else:
            lse_teacher = None
            x_u = jax.vmap(step, in_axes=(0, None), out_axes=1)(step_keys[idx], product_marginal)
        logp_u = student.logprobs(process, student_params, x_u.reshape(batch * m_c, dims), _repeat(u, m_c),
                                  lam_u[:, idx].reshape(-1) if student.mixture else None, _repeat(cond, m_c))
        logp_u = logp_u.reshape(batch, m_c, dims, classes)
        x_hat = jax.vmap(sample_categorical, in_axes=(0, 1), out_axes=1)(hat_keys[idx], logp_u)
        return lse_teacher, logsumexp_axis(logp_u, 1), x_u, x_hat

    chunk = min(chunk, m)
    full, rest = divmod(m, chunk)

    def chunk_copies(c):
        lse_teacher, lse_u, x_u, x_hat = copies(c * chunk + jnp.arange(chunk))
        return (lse_teacher, lse_u), (x_u, x_hat)

    def combine(acc, new):
        return tuple(None if a is None else jnp.logaddexp(a, b) for a, b in zip(acc, new))

    empty = like_batch(x_t, (batch, dims, classes), -jnp.inf)
    init = (None if product_marginal is not None else empty, empty)
    (lse_teacher, lse_u), (x_u, x_hat) = scan_chunks(chunk_copies, full, combine, init)
    x_u, x_hat = (jnp.moveaxis(a, 0, 1).reshape(batch, full * chunk, dims) for a in (x_u, x_hat))
    if rest:
        lse_teacher_r, lse_u_r, x_u_r, x_hat_r = copies(full * chunk + jnp.arange(rest))
        lse_teacher = lse_teacher if lse_teacher_r is None else jnp.logaddexp(lse_teacher, lse_teacher_r)
        lse_u = jnp.logaddexp(lse_u, lse_u_r)
        x_u, x_hat = jnp.concatenate([x_u, x_u_r], axis=1), jnp.concatenate([x_hat, x_hat_r], axis=1)
    marginal = product_marginal if product_marginal is not None else lse_teacher - math.log(m)
    return sg(marginal), sg(x_u), sg(x_hat), sg(lse_u - math.log(m))


def _small_time_distillation(key, student: Denoiser, student_params, teacher: Denoiser, teacher_params, process,
                             x0, cond, config, chunk: int | None = None):
    """tauldr: per (b, j), j < config.num_samples_small_time, an independent x_t' ~ q(. | x0) at
    t' = min_time + Bern(1/2) U width and a fresh lambda; returns mean_j KL(teacher || student component j),
    float32[B]. A mixture teacher (di4c^2) is evaluated at the same lambda as the student component, so the term
    upper-bounds KL(teacher mixture || student mixture) (joint convexity of the KL), as the per-component KL does for
    a product teacher. With `chunk` below the copy count the copies go through the networks `chunk` at a time under
    `jax.checkpoint` (memory flat in the copies; the draws are made up front, so only dropout masks depend on the
    chunking)."""
    batch, n = x0.shape[0], config.num_samples_small_time
    k_coin, k_u, k_x, k_lam, k_drop = jax.random.split(key, 5)
    coin = jax.random.bernoulli(k_coin, 0.5, (batch * n,))
    t_small = config.min_time + coin * jax.random.uniform(k_u, (batch * n,)) * config.small_time_width
    x_small = process.sample_xt(k_x, _repeat(x0, n), t_small)
    lam = draw_lam(k_lam, batch * n)
    rngs = k_drop if config.student_dropout else None

    def kl(params, x, t_rows, lam_rows, cond_rows, drop_key):
        teacher_logp = teacher.logprobs(process, sg(teacher_params), x, t_rows,
                                        lam_rows if teacher.mixture else None, cond_rows)
        student_logp = student.logprobs(process, params, x, t_rows, lam_rows if student.mixture else None,
                                        cond_rows, rngs=drop_key)
        return kl_sum(sg(teacher_logp), student_logp)

    if chunk is None or chunk >= n:
        return jnp.mean(kl(student_params, x_small, t_small, lam, _repeat(cond, n), rngs).reshape(batch, n), axis=1)

    by_copy = lambda a: jnp.swapaxes(a.reshape(batch, n, *a.shape[1:]), 0, 1)  # [B * N, ...] -> [N, B, ...]
    copies = (by_copy(x_small), by_copy(t_small), by_copy(lam))

    @jax.checkpoint
    def chunk_kl(params, x_c, t_c, lam_c, c):
        flat = lambda a: jnp.swapaxes(a, 0, 1).reshape(-1, *a.shape[2:])  # [n_c, B, ...] -> [B * n_c, ...]
        n_c = x_c.shape[0]
        drop_key = None if rngs is None else jax.random.fold_in(rngs, c)
        out = kl(params, flat(x_c), flat(t_c), flat(lam_c), _repeat(cond, n_c), drop_key)
        return jnp.sum(out.reshape(batch, n_c), axis=1)

    full, rest = divmod(n, chunk)
    take = lambda lo, hi: [a[lo:hi] for a in copies]  # noqa: E731
    split = lambda a: a[:full * chunk].reshape(full, chunk, *a.shape[1:])  # noqa: E731

    split_copies = [split(a) for a in copies]
    total, _ = scan_chunks(lambda c: (chunk_kl(student_params, *(a[c] for a in split_copies), c), None), full,
                           jnp.add, like_batch(x0, (batch,), 0.0))
    if rest:
        total = total + chunk_kl(student_params, *take(full * chunk, n), full)
    return total / n


def di4c_loss(key: jax.Array, *, student: Denoiser, student_params: Any, teacher: Denoiser, teacher_params: Any,
              process: Process, x0: jax.Array, config: Di4CRecipe, cond: jax.Array | None = None):
    """One Di4C loss evaluation on a data batch.

    Draws per-sample times (by the recipe), x_t ~ r_t (the data's q(. | x0), or with the recipe's reference
    weights the teacher's or the student's own trajectory: `losses.reference`), M teacher steps t -> u, the
    student's u-side pass (stop-gradient params, rngs=None) with one lambda and one composition sample x_hat per
    copy, and the student's t-side pass with N lambdas (gradient; rngs=key when config.student_dropout), then calls
    `di4c_objective` (tauldr adds its small-time distillation batch). Gradient reaches only `student_params`.

    Args:
      key: PRNG key.
      student, student_params: the mixture student (`Denoiser` with mixture=True) and its parameters.
      teacher, teacher_params: the frozen teacher (a product, or a mixture for di4c^2) and its parameters.
      process: the forward process.
      x0: int[B, D] data.
      config: a recipe (`TauLDRRecipe`, `SDTTRecipe`, `MaskGITRecipe`; `di4c_config(name, ...)`).
      cond: None or int32[B] labels (apply label dropout for classifier-free guidance before calling).

    Returns:
      (scalar loss, aux dict of batch means; keys in the module docstring). An item whose x_t comes from a
      reference trajectory has time_coeff 0 (x0 is not its source, so its data correlation term is dropped);
      its teacher-marginal KL (data_ind), distillation and consistency terms hold at any x_t and stay.
      tauldr's small-time distillation batch is always drawn from the data.
    """
    reject_local_latents("di4c", student=student, teacher=teacher)
    x0 = checked_batch(process, x0, cond)
    config.check_process(process)
    batch, m, n = x0.shape[0], config.num_samples_composition, config.num_lambda
    k_time, k_xt, k_teacher, k_lam_u, k_hat, k_lam_t, k_drop, k_small = jax.random.split(key, 8)

    times = config.draw_times(k_time, batch)
    t, u = times.t, times.u
    x_t, from_data = draw_reference_xt(k_xt, config=config, process=process, x0=x0, t=t, teacher=teacher,
                                       teacher_params=teacher_params, student=student,
                                       student_params=student_params, cond=cond)
    time_coeff = jnp.where(from_data, times.time_coeff, 0.0)  # x0 is not a trajectory item's source
    chunk = config.chunk or default_chunk(batch, x0.shape[1], process.num_states, max(n, m))
    logp_teacher_t, _, x_hat, log_marginal_u = _composition(
        (k_teacher, k_lam_u, k_hat), teacher=teacher, teacher_params=teacher_params, student=student,
        student_params=student_params, process=process, x_t=x_t, t=t, u=u, cond=cond, config=config, chunk=chunk)

    rngs = k_drop if config.student_dropout else None
    points, tau = _points(x0, x_hat), jnp.exp(logp_teacher_t)
    coupled = config.consis_coupling > 0
    if coupled and not student.mixture:
        raise ValueError("consis_coupling > 0 pairs lambdas of a mixture student; this student is a product "
                         "(mixture=False)")
    lam_t = draw_lam_grid(k_lam_t, batch, n)
    if coupled:  # component m < M at the lambda of composition copy m
        lam_t = lam_t.at[:, :m].set(draw_lam_grid(k_lam_u, batch, m))
    if chunk >= n or not student.mixture:
        logp_t = student.component_logprobs_at(process, student_params, x_t, t, lam_t, cond, rngs=rngs)
        stats = component_stats(logp_t, points, tau)
    else:
        stats = chunked_component_stats(student_params, student=student, process=process, x_t=x_t, t=t, lam=lam_t,
                                        cond=cond, rngs=rngs, points=points, tau=tau, chunk=chunk)
    loss, aux = objective_from_stats(stats, logp_teacher_t=logp_teacher_t, log_marginal_u=log_marginal_u,
                                     time_coeff=time_coeff, w_distil=times.w_distil, w_consis=times.w_consis,
                                     control_variate=config.control_variate, consis_coupling=config.consis_coupling,
                                     jackknife=config.jackknife)
    if config.small_time_distillation:
        distil = jnp.mean(_small_time_distillation(k_small, student, student_params, teacher, teacher_params,
                                                   process, x0, cond, config, chunk=chunk))
        aux = {**aux, "distil": distil, "loss": aux["loss"] + distil}
        loss = aux["loss"]
    return loss, aux
