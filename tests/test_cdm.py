"""CDM against exact enumeration of the teacher's chain law on tiny spaces (D <= 3, K <= 4)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from di4c_jax import Denoiser
from di4c_jax.eval.exact import all_states, empirical_law, state_index
from di4c_jax.losses.cdm import (CDMConfig, cdm_conditional_loss, cdm_loss, cdm_objective, cdm_times,
                                 student_kernel_logprobs, teacher_chain)
from di4c_jax.losses.mixture import mixture_log_likelihood
from di4c_jax.processes import DiscreteGaussian, Masked, Uniform
from di4c_jax.sampling import make_analytic_sampler
from loss_contract import assert_jits_once_deterministic_and_teacher_frozen, mlp_denoiser

MASKED = Masked(vocab_size=3)  # K = 4, mask id 3
D = 3


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def init_mlp(key, num_states, dims=D, hidden=16, scale=1.5):
    k1, k2, k3 = jax.random.split(key, 3)
    return dict(emb=scale * jax.random.normal(k1, (num_states, 4)),
                w1=jax.random.normal(k2, (dims * 4 + 2, hidden)) / 2,
                w2=scale * jax.random.normal(k3, (hidden, dims * num_states)) / 2)


def lookup_apply(params, x, t, lam, cond, *, rngs=None):
    """Free-logit student: component floor(lam * N) of params [N, D, K] (lam=None: component 0)."""
    idx = jnp.zeros((x.shape[0],), jnp.int32) if lam is None else jnp.floor(lam * params.shape[0]).astype(jnp.int32)
    return params[idx]


def fixed_lambda_student(num_states, num_lambda):
    """Mixture Denoiser over `lookup_apply` at the fixed lambdas (n + 1/2) / N: row r of a batch (rows repeated
    b-major, N per item, as `Denoiser.component_logprobs` does) gets lambda ((r mod N) + 1/2) / N whatever lambda it
    is given, so component n of every item is params[n]."""
    def apply(params, x, t, lam, cond, *, rngs=None):
        fixed = (jnp.arange(x.shape[0]) % num_lambda + 0.5) / num_lambda
        return lookup_apply(params, x, t, fixed, cond)
    return Denoiser(apply, num_states=num_states, mixture=True)


def product_net(num_states):
    return mlp_denoiser(num_states, mixture=False)


def fine_grid(t_hi, t_lo, n):
    return [jnp.float32(t_hi + (t_lo - t_hi) * i / n) if i < n else jnp.float32(t_lo) for i in range(n + 1)]


@functools.partial(jax.jit, static_argnums=(0, 1, 5))
def kernel_logprobs_all(process, denoiser, params, s_from, s_to, dims):
    """Per-dimension kernel log-probs [K^D, D, K] of a product denoiser from every state."""
    states = jnp.asarray(all_states(dims, process.num_states))
    t = jnp.full((states.shape[0],), s_from)
    logp = denoiser.logprobs(process, params, states, t)
    return process.reverse_step_logprobs(states, logp, t, jnp.full_like(t, s_to))


def kernel_matrix(process, denoiser, params, s_from, s_to, dims):
    """[K^D, K^D] one-step product kernel of a product denoiser, rows = from-state (float64)."""
    klog = np.asarray(kernel_logprobs_all(process, denoiser, params, s_from, s_to, dims), np.float64)
    idx = all_states(dims, process.num_states)
    return np.exp(sum(klog[:, d, idx[:, d]] for d in range(dims)))  # [from, to]


def exact_chain_law(process, params, x_hi, t_hi, t_lo, n):
    """Law of the n-step teacher chain from the single state x_hi, float64[K^D] (product kernels multiplied)."""
    dims = len(x_hi)
    law = np.zeros(process.num_states ** dims)
    law[state_index(np.asarray([x_hi]), process.num_states)[0]] = 1.0
    grid = fine_grid(t_hi, t_lo, n)
    for i in range(n):
        law = law @ kernel_matrix(process, product_net(process.num_states), params, grid[i], grid[i + 1], dims)
    return law


def exact_cross_entropy(law, student_kernel, num_states):
    """CE(law, pbar_N) = KL + H, pbar_N(x) = mean_n prod_d k_n^d(x_d); student_kernel [1, N, D, K] (jnp, traced)."""
    dims = student_kernel.shape[2]
    states = all_states(dims, num_states)
    logs = sum(student_kernel[0][:, d, states[:, d]] for d in range(dims))  # [N, S]
    log_pbar = jax.nn.logsumexp(logs, axis=0) - jnp.log(student_kernel.shape[1])
    support = law > 0
    return -jnp.sum(jnp.asarray(law[support]) * log_pbar[support])


CASES = [  # process, x_hi, t_hi, t_lo, n
    (MASKED, [3, 3, 1], 0.8, 0.0, 3),
    (MASKED, [3, 3, 3], 0.7, 0.2, 2),
    (Uniform(num_states=3), [0, 2, 1], 0.6, 0.0, 3),
    (Uniform(num_states=3), [2, 2, 0], 0.9, 0.3, 2),
]
SLOW = pytest.mark.slow


def cases(default):
    """CASES as pytest params, those not in `default` marked slow (each new shape/process costs a compile)."""
    return [pytest.param(*c, marks=() if i in default else SLOW) for i, c in enumerate(CASES)]


@pytest.mark.parametrize("process, x_hi, t_hi, t_lo, n", cases(default=(0, 3)))
def test_teacher_chain_law_matches_enumeration(process, x_hi, t_hi, t_lo, n):
    params = init_mlp(jax.random.key(0), process.num_states)
    m = 40000
    chain = jax.jit(lambda k, p, x, hi, lo: teacher_chain(k, teacher=product_net(process.num_states), teacher_params=p,
                                                          process=process, x_hi=x, t_hi=hi, t_lo=lo, num_steps=n,
                                                          num_samples=m))
    x_lo, last = chain(jax.random.key(1), params, jnp.asarray([x_hi], jnp.int32), jnp.array([t_hi]),
                       jnp.array([t_lo]))
    assert x_lo.shape == (1, m, D) and x_lo.dtype == jnp.int32 and last.shape == (1, m, D, process.num_states)
    law = exact_chain_law(process, params, x_hi, t_hi, t_lo, n)
    emp = empirical_law(np.asarray(x_lo[0]), process.num_states)
    assert np.all(emp[law == 0] == 0), "chain reached a state of probability 0"
    support = law > 0
    chi2 = stats.chisquare(m * emp[support], m * law[support] / law[support].sum())
    assert chi2.pvalue > 1e-3, (chi2, 0.5 * np.abs(emp - law).sum())
    # last-step kernels, averaged over chains, estimate the chain marginals (Rao-Blackwellised)
    pbar = np.exp(np.asarray(last[0], np.float64)).mean(0)
    states = all_states(D, process.num_states)
    marginals = np.stack([[law[states[:, d] == v].sum() for v in range(process.num_states)] for d in range(D)])
    np.testing.assert_allclose(pbar, marginals, atol=0.01)


@pytest.mark.parametrize("process", [MASKED, Uniform(num_states=4), DiscreteGaussian(4, rate_sigma=2.0, q_sigma=4.0)])
def test_kernel_at_time_zero_is_the_x0_law(process):
    """reverse_step_logprobs(., s=0) is the law of denoise(..., 'sample'), so t_lo = 0 matches p(x0 | x_hi)."""
    x = jnp.asarray([[process.num_states - 1, 0, 1]], jnp.int32)

    @jax.jit
    def kernel_and_draws(key):
        logp = process.x0_logprobs(jax.random.normal(jax.random.key(0), (1, 3, process.num_states)), x)
        k = process.reverse_step_logprobs(x, logp, jnp.array([0.5]), jnp.array([0.0]))
        return k, jax.vmap(lambda kk: process.denoise(kk, x, logp, "sample"))(jax.random.split(key, 20000))

    k, draws = kernel_and_draws(jax.random.key(1))
    freq = np.stack([np.bincount(np.asarray(draws[:, 0, d]), minlength=process.num_states) / 20000 for d in range(3)])
    np.testing.assert_allclose(freq, np.exp(np.asarray(k[0])), atol=0.015)


def mc_stats(values):
    v = np.asarray(values, np.float64)
    return v.mean(axis=0), v.std(axis=0, ddof=1) / np.sqrt(v.shape[0])


@pytest.mark.parametrize("process, x_hi, t_hi, t_lo, n", cases(default=(0, 1))[:3])
@pytest.mark.parametrize("control_variate", [True, False])
def test_product_loss_expectation_is_kl_plus_entropy(process, x_hi, t_hi, t_lo, n, control_variate):
    """E[cdm_conditional_loss] over the chains = KL(P || p_theta) + H(P), product student, fixed x_hi."""
    teacher = init_mlp(jax.random.key(0), process.num_states)
    student = init_mlp(jax.random.key(5), process.num_states)
    law = exact_chain_law(process, teacher, x_hi, t_hi, t_lo, n)
    rows = 3000
    x_rep = jnp.asarray([x_hi] * rows, jnp.int32)
    t_hi_r, t_lo_r = jnp.full((rows,), t_hi), jnp.full((rows,), t_lo)
    config = CDMConfig(num_teacher_steps=n, num_samples=2, control_variate=control_variate, student_dropout=False)
    net = product_net(process.num_states)
    per_item, aux = jax.jit(lambda k: cdm_conditional_loss(
        k, student=net, student_params=student, teacher=net, teacher_params=teacher, process=process, x_hi=x_rep,
        t_hi=t_hi_r, t_lo=t_lo_r, config=config))(jax.random.key(2))
    ce = float(jax.jit(lambda s: exact_cross_entropy(law, student_kernel_logprobs(
        jax.random.key(0), student=net, student_params=s, process=process, x_hi=x_rep[:1], t_hi=t_hi_r[:1],
        t_lo=t_lo_r[:1], num_lambda=config.num_lambda), process.num_states))(student))
    entropy = -np.sum(law[law > 0] * np.log(law[law > 0]))
    assert ce > entropy  # KL > 0 for a student unrelated to the teacher
    mean, se = mc_stats(per_item)
    assert abs(mean - ce) < 4 * se + 1e-4, (mean, se, ce)
    nll_mean, nll_se = mc_stats(aux["nll"])
    assert abs(nll_mean - ce) < 4 * nll_se + 1e-4
    if control_variate:
        assert se < nll_se  # the Rao-Blackwellised marginals reduce the variance


@pytest.mark.parametrize("control_variate", [True, False])
def test_mixture_objective_expectation_and_gradient_with_fixed_lambdas(control_variate):
    """Mixture student with N lambdas fixed: E[loss] = CE(P, pbar_N) and E[grad] = grad CE (w.r.t. logits)."""
    process, x_hi, t_hi, t_lo, n = CASES[0]
    teacher = init_mlp(jax.random.key(0), process.num_states)
    law = exact_chain_law(process, teacher, x_hi, t_hi, t_lo, n)
    num_lam, rows = 3, 4000
    theta = 1.5 * jax.random.normal(jax.random.key(7), (num_lam, D, process.num_states))
    x_one = jnp.asarray([x_hi], jnp.int32)
    ones = jnp.ones((1,))

    student = fixed_lambda_student(process.num_states, num_lam)

    def kernel(th):
        k = student_kernel_logprobs(jax.random.key(0), student=student, student_params=th, process=process,
                                    x_hi=x_one, t_hi=t_hi * ones, t_lo=t_lo * ones, num_lambda=num_lam)
        assert k.shape == (1, num_lam, D, process.num_states)
        return k

    x_lo, last = jax.jit(lambda k: teacher_chain(
        k, teacher=product_net(process.num_states), teacher_params=teacher, process=process,
        x_hi=jnp.repeat(x_one, rows, 0), t_hi=jnp.full((rows,), t_hi), t_lo=jnp.full((rows,), t_lo), num_steps=n,
        num_samples=2))(jax.random.key(3))
    groups = 50
    x_lo, last = (a.reshape(groups, rows // groups, *a.shape[1:]) for a in (x_lo, last))

    def group_loss(th, x_g, last_g):
        k = jnp.broadcast_to(kernel(th), (x_g.shape[0], *kernel(th).shape[1:]))
        return jnp.mean(cdm_objective(student_kernel=k, x_lo=x_g, teacher_last_kernel=last_g,
                                      control_variate=control_variate)[0])

    exact, exact_grad = jax.jit(jax.value_and_grad(
        lambda th: exact_cross_entropy(law, kernel(th), process.num_states)))(theta)
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(group_loss), in_axes=(None, 0, 0)))(theta, x_lo, last)
    mean, se = mc_stats(values)
    assert abs(mean - float(exact)) < 4 * se + 1e-4, (mean, se, exact)
    exact_grad = np.asarray(exact_grad)
    g_mean, g_se = mc_stats(np.asarray(grads).reshape(groups, -1))
    assert np.abs(exact_grad).max() > 0.05
    np.testing.assert_array_less(np.abs(g_mean - exact_grad.reshape(-1)), 4.5 * g_se + 2e-3)


def test_product_gradient_unbiased_through_loss():
    """Free-logit product student through cdm_conditional_loss: MC mean of grads = exact grad of CE."""
    process, x_hi, t_hi, t_lo, n = CASES[1]
    teacher = init_mlp(jax.random.key(0), process.num_states)
    law = exact_chain_law(process, teacher, x_hi, t_hi, t_lo, n)
    theta = jax.random.normal(jax.random.key(8), (1, D, process.num_states))
    groups, rows = 50, 60  # 50 independent replicates (own keys) of a 60-row loss
    x_rep = jnp.asarray([x_hi] * rows, jnp.int32)
    t_hi_r, t_lo_r = jnp.full((rows,), t_hi), jnp.full((rows,), t_lo)
    config = CDMConfig(num_teacher_steps=n, num_samples=1, student_dropout=False)
    student = Denoiser(lookup_apply, num_states=process.num_states)  # a product: lam=None, component 0

    def group_loss(th, key):
        return jnp.mean(cdm_conditional_loss(key, student=student, student_params=th,
                                             teacher=product_net(process.num_states), teacher_params=teacher,
                                             process=process, x_hi=x_rep, t_hi=t_hi_r, t_lo=t_lo_r,
                                             config=config)[0])

    def exact_ce(th):
        k = student_kernel_logprobs(jax.random.key(0), student=student, student_params=th, process=process,
                                    x_hi=x_rep[:1], t_hi=t_hi_r[:1], t_lo=t_lo_r[:1], num_lambda=config.num_lambda)
        return exact_cross_entropy(law, k, process.num_states)

    exact_grad = np.asarray(jax.jit(jax.grad(exact_ce))(theta)).reshape(-1)
    grads = jax.jit(jax.vmap(jax.grad(group_loss), in_axes=(None, 0)))(theta, jax.random.split(jax.random.key(4),
                                                                                              groups))
    g_mean, g_se = mc_stats(np.asarray(grads).reshape(groups, -1))
    assert np.abs(exact_grad).max() > 0.05
    np.testing.assert_array_less(np.abs(g_mean - exact_grad), 4.5 * g_se + 2e-3)


MODES = [(False, dict(mode="one_step")),
         (True, dict(mode="few_step", num_student_steps=3, num_lambda=4))]  # True: mixture student and teacher


@pytest.mark.parametrize("mixture, overrides", MODES)
def test_loss_jits_once_deterministic_and_teacher_gets_no_gradient(mixture, overrides):
    teacher = init_mlp(jax.random.key(0), MASKED.num_states)
    student = init_mlp(jax.random.key(1), MASKED.num_states)
    config = CDMConfig(num_teacher_steps=4, num_samples=3, **overrides)
    x0 = jax.random.randint(jax.random.key(2), (5, D), 0, 3)
    net = mlp_denoiser(MASKED.num_states, mixture=mixture)
    assert_jits_once_deterministic_and_teacher_frozen(
        lambda key, s, t: cdm_loss(key, student=net, student_params=s, teacher=net, teacher_params=t, process=MASKED,
                                   x0=x0, config=config)[0], student, teacher)


def test_few_step_times_are_consecutive_coarse_grid_points():
    process = DiscreteGaussian(4, rate_sigma=2.0, q_sigma=4.0)
    config = CDMConfig(mode="few_step", num_student_steps=4)
    t_hi, t_lo = jax.jit(lambda k: cdm_times(k, process, config, 400))(jax.random.key(0))
    grid = np.asarray(process.default_time_grid(4))
    pairs = {(float(a), float(b)) for a, b in zip(np.asarray(t_hi), np.asarray(t_lo))}
    assert pairs == {(float(grid[j]), float(grid[j + 1])) for j in range(4)}
    t_hi, t_lo = jax.jit(lambda k: cdm_times(k, process, CDMConfig(min_time=0.05), 400))(jax.random.key(0))
    assert float(t_hi.min()) >= 0.05 and float(t_hi.max()) <= 1.0 and float(jnp.abs(t_lo).max()) == 0.0


def test_start_fraction_and_time_exponent_draw_the_times_they_state():
    process = DiscreteGaussian(4, rate_sigma=2.0, q_sigma=4.0)
    draw = jax.jit(lambda k, c: cdm_times(k, process, c, 20_000), static_argnums=1)
    uniform, _ = draw(jax.random.key(3), CDMConfig(min_time=0.05))
    t_hi, t_lo = draw(jax.random.key(3), CDMConfig(min_time=0.05, start_fraction=0.3))
    at_start = np.asarray(t_hi) == 1.0
    assert abs(at_start.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 20_000)
    # the other items keep the default's draw, so start_fraction = 0 leaves earlier runs' times as they were
    np.testing.assert_array_equal(np.asarray(t_hi)[~at_start], np.asarray(uniform)[~at_start])
    assert float(jnp.abs(t_lo).max()) == 0.0
    assert draw(jax.random.key(3), CDMConfig(min_time=0.05, start_fraction=1.0))[0].min() == 1.0
    # time_exponent a: t = min_time + (1 - min_time) u^a, so P(u^a <= 1/4) = 4^(-1/a); a = 2: half the items
    u = (np.asarray(draw(jax.random.key(3), CDMConfig(min_time=0.05, time_exponent=2.0))[0]) - 0.05) / 0.95
    assert abs((u <= 0.25).mean() - 0.5) < 4 * np.sqrt(0.25 / 20_000)
    np.testing.assert_allclose(u, ((np.asarray(uniform) - 0.05) / 0.95) ** 2, atol=1e-5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="mode"):
        CDMConfig(mode="two_step")
    with pytest.raises(ValueError, match="start_fraction must lie in"):
        CDMConfig(start_fraction=1.5)
    with pytest.raises(ValueError, match="one_step mode only"):
        CDMConfig(mode="few_step", start_fraction=0.2)
    with pytest.raises(ValueError, match="num_samples"):
        CDMConfig(num_samples=0)
    params = init_mlp(jax.random.key(0), MASKED.num_states)
    net = product_net(MASKED.num_states)
    nets = dict(student=net, student_params=params, teacher=net, teacher_params=params, process=MASKED)
    with pytest.raises(ValueError, match="x0 must be int"):
        cdm_loss(jax.random.key(0), **nets, x0=jnp.zeros((3,), jnp.int32), config=CDMConfig())
    with pytest.raises(ValueError, match="outside"):
        cdm_loss(jax.random.key(0), **nets, x0=np.full((2, D), 7), config=CDMConfig())


@pytest.mark.parametrize("control_variate", [True, False])
def test_jackknife_is_the_leave_one_out_combination_of_the_n_sample_term(control_variate):
    """cdm_objective(jackknife=True) = N r_N - (N - 1) mean_i r_(-i) + CE: r the N-sample term (component i
    deleted for r_(-i)), CE the control variate's cross-entropy with the full sample's marginals (0 without it)."""
    b, n, m, k = 3, 5, 4, MASKED.num_states
    keys = jax.random.split(jax.random.key(11), 3)
    kernel = jax.nn.log_softmax(2.0 * jax.random.normal(keys[0], (b, n, D, k)))
    last = jax.nn.log_softmax(jax.random.normal(keys[1], (b, m, D, k)))
    x_lo = jax.random.randint(keys[2], (b, m, D), 0, k)

    def n_sample_term(kern):
        return -np.mean(np.asarray(mixture_log_likelihood(kern, x_lo, control_variate), np.float64), axis=1)

    plain, nll = cdm_objective(student_kernel=kernel, x_lo=x_lo, teacher_last_kernel=last,
                               control_variate=control_variate)
    jack, jack_nll = cdm_objective(student_kernel=kernel, x_lo=x_lo, teacher_last_kernel=last,
                                   control_variate=control_variate, jackknife=True)
    cross_entropy = np.asarray(plain, np.float64) - n_sample_term(kernel)
    left_out = np.mean([n_sample_term(jnp.delete(kernel, i, axis=1)) for i in range(n)], axis=0)
    expected = n * n_sample_term(kernel) - (n - 1) * left_out + cross_entropy
    np.testing.assert_allclose(jack, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(jack_nll, nll)  # the diagnostic stays the plain MC cross-entropy
    assert np.abs(np.asarray(jack) - np.asarray(plain)).max() > 1e-3  # it does change the estimate


def test_jackknife_needs_two_lambdas_and_leaves_a_product_student_alone():
    with pytest.raises(ValueError, match="num_lambda >= 2, got 1"):
        CDMConfig(num_lambda=1, jackknife=True)
    process, x_hi, t_hi, t_lo, n = CASES[1]
    params = init_mlp(jax.random.key(0), process.num_states)
    x = jnp.asarray([x_hi] * 4, jnp.int32)
    times = dict(t_hi=jnp.full((4,), t_hi), t_lo=jnp.full((4,), t_lo))
    for mixture in (False, True):
        net = mlp_denoiser(process.num_states, mixture=mixture)
        losses = [cdm_conditional_loss(jax.random.key(5), student=net, student_params=params, teacher=product_net(
            process.num_states), teacher_params=params, process=process, x_hi=x, **times, config=CDMConfig(
                num_teacher_steps=n, num_lambda=4, student_dropout=False, jackknife=jackknife))[0]
                  for jackknife in (False, True)]
        assert np.isfinite(np.asarray(losses)).all()
        # a product student's N = 1 estimate has no N-sample bias: the field leaves it bit-equal
        assert (np.asarray(losses[0]) == np.asarray(losses[1])).all() == (not mixture)


def test_ancestral_sampler_draws_the_chain_cdm_one_step_matches_from_all_mask():
    """The analytic sampler on the default grid with final='sample' is the n-step chain from x_1 (all mask) to 0,
    the law CDM one-step matches at t = 1 (what `digits_maskgit.py:<size>,ancestral` samples)."""
    n, m = 3, 40000
    params = init_mlp(jax.random.key(0), MASKED.num_states)
    sampler = make_analytic_sampler(process=MASKED, denoiser=product_net(MASKED.num_states), shape=(m, D),
                                    num_steps=n, final="sample")
    samples = np.asarray(sampler(jax.random.key(2), params=params))
    law = exact_chain_law(MASKED, params, [MASKED.mask_id] * D, 1.0, 0.0, n)
    emp = empirical_law(samples, MASKED.num_states)
    assert np.all(emp[law == 0] == 0), "the sampler reached a state of probability 0 (e.g. a mask left)"
    support = law > 0
    chi2 = stats.chisquare(m * emp[support], m * law[support] / law[support].sum())
    assert chi2.pvalue > 1e-3, (chi2, 0.5 * np.abs(emp - law).sum())
