"""Teacher objectives: exact enumeration on tiny spaces (D = 2..3, K <= 4) against closed forms and limits."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from di4c_jax import Denoiser
from di4c_jax.eval.exact import all_states
from di4c_jax.eval.laws import ProductMixture
from di4c_jax.losses.teacher import TeacherLossConfig, resolve_objective, teacher_loss, x0_ce_loss
from di4c_jax.losses.teacher_ctmc import ctmc_elbo_at, ctmc_elbo_loss, forward_jump
from di4c_jax.losses.teacher_masked import mdlm_loss, mdlm_nelbo_terms, mdlm_weight
from di4c_jax.losses.times import sample_train_times
from di4c_jax.models.mlp import MLPDenoiser
from di4c_jax.processes import DiscreteGaussian, Masked, Uniform
from di4c_jax.processes.base import safe_log
from di4c_jax.processes.rates import reverse_rates

CTMC_PROCESSES = [Uniform(4), DiscreteGaussian(num_states=4)]


def state_code(x, k):
    """int[..., D] -> base-k index (first dimension most significant, as `all_states`)."""
    return jnp.sum(x * k ** jnp.arange(x.shape[-1] - 1, -1, -1), axis=-1)


def table_apply(params, x, t, lam, cond, *, rngs=None):
    """A fixed, t-dependent denoiser: logits = a[x] + t b[x], tables [K_x^D, D, K]."""
    a, b = params
    idx = state_code(x, round(a.shape[0] ** (1.0 / x.shape[1])))
    return a[idx] + t[:, None, None] * b[idx]


def table_denoiser(process, apply=table_apply):
    """A product Denoiser (no lambda) over `apply` on `process`'s states."""
    return Denoiser(apply, num_states=process.num_states)


def random_table(key, num_states, dims, num_logits):
    ka, kb = jax.random.split(key)
    shape = (num_states**dims, dims, num_logits)
    return jax.random.normal(ka, shape), jax.random.normal(kb, shape)


def make_oracle(process, law_probs, dims, vocab):
    """Bayes denoiser: logits = log p(x0^d | x_t) for x0 ~ law_probs (float[vocab^D]), by enumeration."""
    x0_all = jnp.asarray(all_states(dims, vocab))
    prior = jnp.asarray(law_probs, jnp.float32)

    def apply(params, x, t, lam, cond, *, rngs=None):
        q = process.transition(t)  # [B, K, K]
        lik = jnp.prod(jax.vmap(lambda qb, xb: qb[x0_all, xb[None, :]])(q, x), axis=-1)  # [B, S^D]
        post = prior * lik
        post = post / jnp.sum(post, axis=-1, keepdims=True)
        marg = jnp.einsum("bj,jdv->bdv", post, jax.nn.one_hot(x0_all, process.num_states))
        return safe_log(marg)

    return Denoiser(apply, num_states=process.num_states)


def gauss_legendre(a, b, n):
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return 0.5 * (b - a) * nodes + 0.5 * (b + a), 0.5 * (b - a) * weights


def entropy(p):
    p = np.asarray(p, np.float64)
    return float(-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)))


# ---------------------------------------------------------------- times, weights, dispatch, x0 CE

def test_antithetic_times_are_stratified_on_the_interval():
    t = np.asarray(sample_train_times(jax.random.key(0), 64, 0.2, antithetic=True))
    u = np.sort((t - 0.2) / 0.8)
    assert t.min() >= 0.2 and t.max() <= 1.0
    np.testing.assert_allclose(np.diff(u), 1.0 / 64, atol=1e-5)


@pytest.mark.parametrize("schedule,closed_form", [
    ("loglinear", lambda t: 1.0 / t), ("linear", lambda t: 1.0 / t),
    ("cosine", lambda t: 0.5 * np.pi * np.sin(0.5 * np.pi * t) / (1.0 - np.cos(0.5 * np.pi * t))),
    ("arccos", lambda t: 1.0 / (np.sqrt(1.0 - (1.0 - t) ** 2) * np.arccos(1.0 - t)))])
def test_mdlm_weight_matches_closed_form(schedule, closed_form):
    t = np.array([0.05, 0.3, 0.7, 0.95], np.float32)
    np.testing.assert_allclose(mdlm_weight(Masked(3, schedule=schedule), t), closed_form(t), rtol=2e-4)


def test_dispatch_and_bad_inputs():
    assert resolve_objective(Masked(3)) == "mdlm"
    assert resolve_objective(Uniform(3)) == "ctmc" and resolve_objective(DiscreteGaussian(4)) == "ctmc"
    assert resolve_objective(Masked(3), "x0_ce") == "x0_ce"
    with pytest.raises(ValueError, match="unknown teacher objective"):
        TeacherLossConfig(objective="elbo")
    params = random_table(jax.random.key(0), 4, 2, 4)
    x0 = jnp.zeros((2, 2), jnp.int32)
    net = table_denoiser(Uniform(4))
    with pytest.raises(TypeError, match="mdlm_loss needs an absorbing"):
        mdlm_loss(jax.random.key(0), denoiser=net, params=params, process=Uniform(4), x0=x0)
    with pytest.raises(TypeError, match="rate"):
        ctmc_elbo_loss(jax.random.key(0), denoiser=net, params=params, process=Masked(3), x0=x0)
    with pytest.raises(ValueError, match=r"int\[B, D\]"):
        teacher_loss(jax.random.key(0), denoiser=net, params=params, process=Uniform(4),
                     x0=jnp.zeros((4,), jnp.int32))


def test_x0_ce_of_a_flat_denoiser_is_d_log_k():
    flat = Denoiser(lambda p, x, t, lam, cond, *, rngs=None: jnp.zeros(x.shape + (5,)), num_states=5)
    loss, aux = x0_ce_loss(jax.random.key(1), denoiser=flat, params=None, process=Uniform(5),
                           x0=jnp.ones((7, 3), jnp.int32))
    np.testing.assert_allclose(loss, 3 * np.log(5), rtol=1e-6)
    np.testing.assert_allclose(aux["ce_per_token"], np.log(5), rtol=1e-6)


# ---------------------------------------------------------------- MDLM

def mdlm_exact(process, denoiser, params, law_probs, dims, t_nodes, t_weights):
    """int NELBO dt by quadrature, with exact expectations over x0 ~ law and x_t ~ q_t(.|x0)."""
    x0_all = jnp.asarray(all_states(dims, process.vocab_size))
    xt_all = jnp.asarray(all_states(dims, process.num_states))
    n0, nt = x0_all.shape[0], xt_all.shape[0]

    def integrand(t):
        tb = jnp.full((nt,), t, jnp.float32)
        logp = denoiser.logprobs(process, params, xt_all, tb)
        q = process.transition(tb[:1])[0]
        w = jnp.asarray(law_probs)[:, None] * jnp.prod(q[x0_all[:, None, :], xt_all[None, :, :]], axis=-1)
        x0_rep, xt_rep = jnp.repeat(x0_all, nt, 0), jnp.tile(xt_all, (n0, 1))
        nelbo, _, _ = mdlm_nelbo_terms(process, jnp.tile(logp, (n0, 1, 1)), x0_rep, xt_rep, jnp.full((n0 * nt,), t))
        return jnp.sum(w.reshape(-1) * nelbo)

    # lax.map, not vmap: a vmap over the 96 nodes gave every 18th node a ~4% larger value under jax 0.10.2 on CPU
    # (the same node alone, or in chunks of 12, is right); see the report.
    return float(np.sum(np.asarray(jax.jit(lambda ts: jax.lax.map(integrand, ts))(jnp.asarray(t_nodes, jnp.float32))) * t_weights))


def mdlm_discrete(process, denoiser, params, law_probs, dims, num_steps):
    """D3PM-style NELBO: sum over a uniform grid of E KL(q(x_s|x_t,x0) || p(x_s|x_t)) (prior term is 0)."""
    x0_all = jnp.asarray(all_states(dims, process.vocab_size))
    xt_all = jnp.asarray(all_states(dims, process.num_states))
    grid = jnp.linspace(0.0, 1.0, num_steps + 1)

    def step_kl(t, s):
        tb, sb = jnp.full((xt_all.shape[0],), t), jnp.full((xt_all.shape[0],), s)
        logp_x0 = denoiser.logprobs(process, params, xt_all, tb)
        model = process.reverse_step_logprobs(xt_all, logp_x0, tb, sb)  # [N, D, K]
        qt0, qs0, qts = process.transition(tb[:1])[0], process.transition(sb[:1])[0], process.transition(tb[:1], sb[:1])[0]
        post = qs0[x0_all[:, None, :], :] * qts.T[xt_all[None, :, :], :]  # [N0, N, D, K]: q(x_s|x0) q(x_t|x_s)
        norm = jnp.sum(post, -1, keepdims=True)
        post = jnp.where(norm > 0, post / jnp.where(norm > 0, norm, 1.0), 0.0)
        kl = jnp.sum(jnp.where(post > 0, post * (safe_log(post) - model[None]), 0.0), axis=(-1, -2))
        w = jnp.asarray(law_probs)[:, None] * jnp.prod(qt0[x0_all[:, None, :], xt_all[None, :, :]], axis=-1)
        return jnp.sum(w * kl)

    return float(jnp.sum(jax.jit(lambda ts, ss: jax.lax.map(lambda a: step_kl(*a), (ts, ss)))(grid[1:], grid[:-1])))


def test_mdlm_continuous_nelbo_is_the_limit_of_the_discrete_time_nelbo():
    process, dims = Masked(2, schedule="linear"), 2
    params = random_table(jax.random.key(3), process.num_states, dims, process.num_states)
    law = ProductMixture.random(jax.random.key(4), 2, dims, 2, 1.0).probs()
    net = table_denoiser(process)
    continuous = mdlm_exact(process, net, params, law, dims, *gauss_legendre(0.0, 1.0, 64))
    errors = [abs(mdlm_discrete(process, net, params, law, dims, n) - continuous) for n in (4, 32, 256)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 5e-3 * continuous, (errors, continuous)


# arccos: float32 arccos(1 - t) loses its relative precision as t -> 0, hence the looser tolerance.
@pytest.mark.parametrize("schedule,rtol", [("linear", 1e-5), ("cosine", 1e-5), ("arccos", 5e-4)])
def test_mdlm_oracle_nelbo_equals_data_entropy(schedule, rtol):
    """Any-order-AR identity: with the Bayes x0 marginals the continuous NELBO is exactly H(data), for every
    schedule (m(1) = 1 so there is no prior term); a non-oracle denoiser that ignores t gives a larger value."""
    process, dims, vocab = Masked(3, schedule=schedule), 3, 3
    law = ProductMixture.random(jax.random.key(5), 3, dims, vocab, 0.5).probs()
    oracle = make_oracle(process, law, dims, vocab)
    u, w = gauss_legendre(0.0, 1.0, 96)
    quad = u**2, 2 * u * w  # t = u^2 smooths arccos's m'(t) ~ 1/sqrt(t) singularity
    nelbo = mdlm_exact(process, oracle, None, law, dims, *quad)
    assert nelbo >= entropy(law) * (1.0 - rtol)
    np.testing.assert_allclose(nelbo, entropy(law), rtol=rtol)
    static = table_denoiser(process, lambda p, x, t, lam, cond, *, rngs=None: table_apply(p, x, 0.0 * t, lam, cond))
    params = random_table(jax.random.key(6), process.num_states, dims, process.num_states)
    other = mdlm_exact(process, static, params, law, dims, *quad)
    assert other > nelbo + 0.1
    np.testing.assert_allclose(other, mdlm_exact(Masked(3, schedule="linear"), static, params, law, dims, *quad),
                               rtol=1e-3)  # the continuous NELBO does not depend on the schedule


def test_mdlm_loss_is_an_unbiased_estimate_of_the_nelbo():
    process, dims, t_eps = Masked(2, schedule="loglinear"), 2, 0.05
    params = random_table(jax.random.key(7), process.num_states, dims, process.num_states)
    law = ProductMixture.random(jax.random.key(8), 2, dims, 2, 1.0)
    nodes, weights = gauss_legendre(t_eps, 1.0, 64)
    net = table_denoiser(process)
    exact = mdlm_exact(process, net, params, law.probs(), dims, nodes, weights) / (1.0 - t_eps)
    run = jax.jit(jax.vmap(lambda k: mdlm_loss(k, denoiser=net, params=params, process=process,
                                               x0=law.sample(k, 512), t_eps=t_eps)[0]))
    means = np.asarray(run(jax.random.split(jax.random.key(10), 200)))
    assert abs(means.mean() - exact) < 4 * means.std() / np.sqrt(means.size) + 1e-4, (means.mean(), exact)


# ---------------------------------------------------------------- CT-ELBO

@pytest.mark.parametrize("process", CTMC_PROCESSES, ids=["uniform", "gaussian"])
def test_oracle_reverse_rates_equal_the_true_reverse_rates(process):
    dims, k = 2, process.num_states
    law = ProductMixture.random(jax.random.key(11), 3, dims, k, 0.5).probs()
    x_all = jnp.asarray(all_states(dims, k))
    t = jnp.full((x_all.shape[0],), 0.3)
    logp = make_oracle(process, law, dims, k).logprobs(process, None, x_all, t)
    rates = np.asarray(reverse_rates(process, x_all, logp, t))
    q, rate = np.asarray(process.transition(t[:1])[0], np.float64), np.asarray(process.rate(t[:1])[0], np.float64)
    xs = np.asarray(x_all)
    p_t = law @ np.prod(q[xs[:, None, :], xs[None, :, :]], axis=-1)  # marginal of x_t: [K^D]
    expected = np.zeros_like(rates)
    for i, x in enumerate(xs):
        for d in range(dims):
            for y in range(k):
                if y != x[d]:
                    x_new = x.copy()
                    x_new[d] = y
                    expected[i, d, y] = rate[y, x[d]] * p_t[int(state_code(x_new, k))] / p_t[i]
    np.testing.assert_allclose(rates, expected, rtol=2e-4, atol=1e-6)


def ctmc_exact_naive(process, denoiser, params, x0, t):
    """E_{x_t, x~}[reg + sig] at fixed t for one x0 int[D], in the single-jump form (no Rao-Blackwellisation),
    by enumeration in float64: reg = sum Rhat(x_t -> .), sig = -sum_{x~} R(x_t -> x~) log r(x~, x_t)."""
    dims, k = x0.shape[0], process.num_states
    xs = all_states(dims, k)
    tb = jnp.full((xs.shape[0],), t)
    p = np.exp(np.asarray(denoiser.logprobs(process, params, jnp.asarray(xs), tb), np.float64))
    q, rate = np.asarray(process.transition(tb[:1])[0], np.float64), np.asarray(process.rate(tb[:1])[0], np.float64)
    ratio = np.einsum("ida,ay->idy", p / q.T[xs], q)  # r_d(x, y)
    total = 0.0
    for i, x in enumerate(xs):
        weight = np.prod(q[x0, x])
        for d in range(dims):
            for y in range(k):
                if y != x[d]:
                    x_new = x.copy()
                    x_new[d] = y
                    j = int(state_code(x_new, k))
                    total += weight * (rate[y, x[d]] * ratio[i, d, y] - rate[x[d], y] * np.log(ratio[j, d, x[d]]))
    return total


@pytest.mark.parametrize("process", CTMC_PROCESSES, ids=["uniform", "gaussian"])
def test_ctmc_estimator_mean_matches_enumeration_at_fixed_t(process):
    dims, t, n = 2, 0.2, 40000
    params = random_table(jax.random.key(12), process.num_states, dims, process.num_states)
    x0 = np.array([1, 3])
    net = table_denoiser(process)
    exact = ctmc_exact_naive(process, net, params, x0, t)
    terms, _ = jax.jit(lambda k: ctmc_elbo_at(k, denoiser=net, params=params, process=process,
                                              x0=jnp.tile(jnp.asarray(x0), (n, 1)), t=jnp.full((n,), t)))(
        jax.random.key(13))
    est = np.asarray(terms["reg"] + terms["sig"], np.float64)
    assert abs(est.mean() - exact) < 4 * est.std() / np.sqrt(n) + 1e-4 * abs(exact), (est.mean(), exact)


def test_forward_jump_changes_exactly_one_dimension_along_an_allowed_rate():
    process = Uniform(4)
    x = jax.random.randint(jax.random.key(14), (256, 5), 0, 4)
    x_new = forward_jump(jax.random.key(15), process.rate(jnp.full((256,), 0.5)), x)
    assert np.all(np.sum(np.asarray(x_new != x), axis=1) == 1)


def oracle_ctmc_nelbo(process, law, dims, t_min, num_nodes=512):
    """Exact NELBO of the Bayes denoiser: int_{t_min}^1 E_{x_t}[reg - Z + sig] dt + prior term (float64)."""
    k, xs = process.num_states, all_states(dims, process.num_states)
    nbr = np.array([[[int(state_code(np.where(np.arange(dims) == d, y, x), k)) for y in range(k)]
                     for d in range(dims)] for x in xs])  # [N, D, K]: x with dimension d set to y
    not_self = np.arange(k)[None, None, :] != xs[:, :, None]

    def marginal(t):
        q = np.asarray(process.transition(jnp.array([t]))[0], np.float64)
        return law @ np.prod(q[xs[:, None, :], xs[None, :, :]], axis=-1)

    nodes, weights = gauss_legendre(t_min, 1.0, num_nodes)
    integral = 0.0
    for t, w in zip(nodes, weights):
        p_t, rate = marginal(t), np.asarray(process.rate(jnp.array([t]))[0], np.float64)
        reg = np.sum(not_self * rate.T[xs] * p_t[nbr] / p_t[:, None, None], axis=(1, 2))
        sig = -np.sum(not_self * rate[xs] * np.log(p_t[:, None, None] / p_t[nbr]), axis=(1, 2))
        integral += w * np.sum(p_t * (reg + sig - np.sum(-np.diagonal(rate)[xs], axis=1)))
    log_ref = np.asarray(process.prior_logprobs(), np.float64)
    q1 = marginal(1.0)
    prior_term = -np.sum(q1 * np.sum(log_ref[xs], axis=1))
    return integral + prior_term, entropy(marginal(t_min)) + prior_term - entropy(q1)


@pytest.mark.parametrize("process", CTMC_PROCESSES, ids=["uniform", "gaussian"])
def test_ctmc_oracle_nelbo_bounds_the_entropy(process):
    """Exact: NELBO(oracle) = H(q_{t_min}) + KL(q_1 || p_ref) >= H(data); the Monte-Carlo aux['nelbo'] matches it."""
    dims, t_min = 2, 0.01
    law = ProductMixture.random(jax.random.key(16), 3, dims, process.num_states, 0.5)
    exact, identity = oracle_ctmc_nelbo(process, law.probs(), dims, t_min)
    np.testing.assert_allclose(exact, identity, rtol=1e-3)
    assert exact >= entropy(law.probs())
    oracle = make_oracle(process, law.probs(), dims, process.num_states)
    run = jax.jit(jax.vmap(lambda k: ctmc_elbo_loss(k, denoiser=oracle, params=None, process=process,
                                                    x0=law.sample(k, 512), min_time=t_min, dropout=False)[1]["nelbo"]))
    means = np.asarray(run(jax.random.split(jax.random.key(17), 60)))
    assert np.all(np.isfinite(means))
    assert abs(means.mean() - exact) < 4 * means.std() / np.sqrt(means.size) + 1e-3, (means.mean(), exact)


# ---------------------------------------------------------------- gradients, jit, training

def mlp_denoiser(process, dims):
    """(product Denoiser, params) of a small NNX MLP."""
    graphdef, params = nnx.split(MLPDenoiser(num_states=process.num_states, num_positions=dims, hidden=64,
                                             rngs=nnx.Rngs(0)))
    apply = lambda p, x, t, lam, cond, *, rngs=None: nnx.merge(graphdef, p)(x, t, lam, cond)  # noqa: E731
    return Denoiser(apply, num_states=process.num_states, num_positions=dims), params


@pytest.mark.parametrize("process,objective", [(Masked(3), "auto"), (Uniform(4), "auto"),
                                               (DiscreteGaussian(num_states=4), "auto"), (Masked(3), "x0_ce")])
def test_gradients_are_finite_under_jit(process, objective):
    net, params = mlp_denoiser(process, 3)
    x0 = jax.random.randint(jax.random.key(18), (16, 3), 0, 3)
    config = TeacherLossConfig(objective=objective, dropout=False)
    (loss, aux), grads = jax.jit(jax.value_and_grad(
        lambda p: teacher_loss(jax.random.key(19), denoiser=net, params=p, process=process, x0=x0, config=config),
        has_aux=True))(params)
    assert np.isfinite(loss) and all(np.isfinite(v) for v in aux.values())
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves) and any(np.any(g != 0) for g in leaves)


@pytest.mark.slow
@pytest.mark.parametrize("process", [Masked(3, schedule="linear"), Uniform(3)], ids=["mdlm", "ctmc"])
def test_training_a_tiny_mlp_lowers_the_nelbo(process):
    dims = 3
    law = ProductMixture.random(jax.random.key(20), 2, dims, 3, 0.3)
    net, params = mlp_denoiser(process, dims)
    config = TeacherLossConfig(dropout=False)
    opt = optax.adam(3e-3)

    def nelbo(p, key):
        return teacher_loss(key, denoiser=net, params=p, process=process, x0=law.sample(key, 4096),
                            config=config)[1]["nelbo"]

    def step(carry, key):
        p, state = carry
        grads = jax.grad(lambda q: teacher_loss(key, denoiser=net, params=q, process=process,
                                                x0=law.sample(key, 128), config=config)[0])(p)
        updates, state = opt.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), None

    before = nelbo(params, jax.random.key(21))
    train = jax.jit(lambda c, keys: jax.lax.scan(step, c, keys)[0])
    params, _ = train((params, opt.init(params)), jax.random.split(jax.random.key(22), 300))
    after = nelbo(params, jax.random.key(21))
    assert after < before - 0.5 * (before - entropy(law.probs())), (before, after, entropy(law.probs()))
