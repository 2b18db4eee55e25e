"""di4c_objective (exact expectation identities, control variate, gradients) and di4c_loss (jit, presets)."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax import Denoiser
from di4c_jax.losses import SDTTRecipe, di4c_config, di4c_loss, di4c_objective, sample_components
from di4c_jax.losses.di4c import _composition
from di4c_jax.processes import DiscreteGaussian, Masked

N, M, D, K = 3, 2, 3, 3
jit_objective = jax.jit(di4c_objective, static_argnames="control_variate")  # keyword-only arguments


def log_softmax_np(logits):
    logits = logits - logits.max(-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def all_states(dims, classes):
    return np.array(list(itertools.product(range(classes), repeat=dims)))  # [K^D, D]


def joint_of_mixture(logp):
    """[C, D, K] product components -> uniform mixture probabilities over all K^D states (float64)."""
    states = all_states(logp.shape[1], logp.shape[2])
    comp = np.exp(logp[:, np.arange(logp.shape[1]), states].sum(-1))  # [C, K^D]
    return comp.mean(0)


def marginals(joint, dims, classes):
    states = all_states(dims, classes)
    return np.stack([np.bincount(states[:, d], weights=joint, minlength=classes) for d in range(dims)])


def entropy(p):
    p = p[p > 0]
    return -(p * np.log(p)).sum()


def total_correlation(joint, dims, classes):
    return sum(entropy(m) for m in marginals(joint, dims, classes)) - entropy(joint)


def kl(p, q):
    return (p[p > 0] * (np.log(p[p > 0]) - np.log(q[p > 0]))).sum()


def objective_at(logp_t, x0, logp_teacher, logp_u, x_hat, time_coeff=1.0, w_distil=0.0, w_consis=1.0, cv=True):
    one = lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (logp_t.shape[0],))
    return jit_objective(logp_t=jnp.asarray(logp_t, jnp.float32), x0=jnp.asarray(x0),
                         logp_teacher_t=jnp.asarray(logp_teacher, jnp.float32), logp_u=jnp.asarray(logp_u, jnp.float32),
                         x_hat=jnp.asarray(x_hat), time_coeff=one(time_coeff), w_distil=one(w_distil),
                         w_consis=one(w_consis), control_variate=cv)


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    logp_t = log_softmax_np(1.5 * rng.normal(size=(1, N, D, K)))
    logp_u = log_softmax_np(3.0 * rng.normal(size=(1, M, D, K)))
    joint_q = rng.dirichlet(0.5 * np.ones(K**D))  # an arbitrary correlated "true posterior" for the data term
    return logp_t, logp_u, joint_q


@pytest.mark.parametrize("cv", [True, False])
def test_expected_consistency_is_kl_minus_total_correlation(toy, cv):
    """E_{x_hat}[consis] = KL(P || M) - TC(P) with the control variate, KL(P || M) + H(P) without; exact sums over
    all K^D states (x_hat_m ~ component m, and consis is linear in the per-copy evaluations)."""
    logp_t, logp_u, _ = toy
    states = all_states(D, K)
    consis_at = jax.jit(jax.vmap(lambda x: objective_at(logp_t, states[0][None], logp_t[:, 0], logp_u,
                                                jnp.broadcast_to(x, (1, M, D)), cv=cv)[1]["consis"]))
    p, mix = joint_of_mixture(logp_u[0]), joint_of_mixture(logp_t[0])
    expected = float(np.sum(p * np.asarray(consis_at(jnp.asarray(states)), np.float64)))
    want = kl(p, mix) - total_correlation(p, D, K) if cv else kl(p, mix) + entropy(p)
    np.testing.assert_allclose(expected, want, rtol=1e-5, atol=1e-5)
    assert total_correlation(p, D, K) > 0.02  # the identity is not trivially KL = KL


@pytest.mark.parametrize("cv", [True, False])
def test_expected_data_term_is_kl_minus_total_correlation(toy, cv):
    """x0 ~ q (the true posterior) and teacher marginals = q's marginals: E[data] = KL(q || M) - TC(q) with the
    control variate (time_coeff = 1), KL(q || M) + H(q) without."""
    logp_t, logp_u, joint_q = toy
    states = all_states(D, K)
    logq_marg = np.log(marginals(joint_q, D, K))[None]
    x_hat = np.zeros((1, M, D), np.int32)
    data_at = jax.jit(jax.vmap(lambda x: objective_at(logp_t, x[None], logq_marg, logp_u, x_hat, cv=cv)[1]["data"]))
    expected = float(np.sum(joint_q * np.asarray(data_at(jnp.asarray(states)), np.float64)))
    mix = joint_of_mixture(logp_t[0])
    want = kl(joint_q, mix) - total_correlation(joint_q, D, K) if cv else kl(joint_q, mix) + entropy(joint_q)
    np.testing.assert_allclose(expected, want, rtol=1e-5, atol=1e-5)


def test_control_variate_lowers_variance():
    """Weakly correlated P (components = one product perturbed by 0.3-scale logits): without the control variate
    the estimate carries the O(D) variance of sum_d log pbar^d(x_d); with it only the correlation residual is left.
    Measured ratio on this setup for seeds 0-4: 0.0015-0.0063; asserted < 0.05 (8x margin)."""
    rng = np.random.default_rng(1)
    dims, classes, n, m, draws = 8, 4, 4, 4, 2000
    base = rng.normal(size=(1, 1, dims, classes))
    logp_t = log_softmax_np(base + 0.3 * rng.normal(size=(1, n, dims, classes)))
    logp_u = log_softmax_np(base + 0.3 * rng.normal(size=(1, m, dims, classes)))
    x_hat = jax.jit(jax.vmap(lambda k: sample_components(k, logp=jnp.asarray(logp_u, jnp.float32))))(
        jax.random.split(jax.random.key(0), draws))
    consis = lambda cv: jax.jit(jax.vmap(lambda xh: objective_at(logp_t, xh[:, 0], logp_t[:, 0], logp_u, xh,
                                                                 cv=cv)[1]["consis"]))(x_hat)
    with_cv, without_cv = np.asarray(consis(True)), np.asarray(consis(False))
    ratio = with_cv.var() / without_cv.var()
    assert ratio < 0.05, ratio
    # both estimate their own exact expectation (checked above); here also: the CV estimate is unbiased for it
    p, mix = joint_of_mixture(logp_u[0]), joint_of_mixture(logp_t[0])
    exact = kl(p, mix) - total_correlation(p, dims, classes)
    assert abs(with_cv.mean() - exact) < 4 * with_cv.std() / np.sqrt(draws)


def test_single_product_component_reduces_to_product_kls():
    """N = M = 1: F - G = 0 for every x, so every term is a product KL, whatever x0 and x_hat are. aux['distil'] is
    the distillation term's weighted share of the loss (w_distil = 0.5 times the teacher KL)."""
    rng = np.random.default_rng(2)
    logp_t, logp_u, logp_teacher = (log_softmax_np(rng.normal(size=(2, 1, D, K))) for _ in range(3))
    x0, x_hat = rng.integers(0, K, size=(2, D)), rng.integers(0, K, size=(2, 1, D))
    loss, aux = objective_at(logp_t, x0, logp_teacher[:, 0], logp_u, x_hat, time_coeff=0.7, w_distil=0.5)
    pkl = lambda a, b: (np.exp(a) * (a - b)).sum((-2, -1))
    kl_teacher, kl_comp = pkl(logp_teacher[:, 0], logp_t[:, 0]), pkl(logp_u[:, 0], logp_t[:, 0])
    np.testing.assert_allclose(aux["data_cor"], 0.0, atol=1e-5)
    np.testing.assert_allclose(aux["consis_cor"], 0.0, atol=1e-5)
    np.testing.assert_allclose(aux["distil"], 0.5 * kl_teacher.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss, (1.5 * kl_teacher + kl_comp).mean(), rtol=1e-5)


def random_objective_inputs(rng, batch):
    """(logp_t [B, N, D, K], logp_u [B, M, D, K], logp_teacher [B, D, K], x0 int[B, D], x_hat int[B, M, D])."""
    logp_t = log_softmax_np(1.5 * rng.normal(size=(batch, N, D, K)))
    logp_u = log_softmax_np(1.5 * rng.normal(size=(batch, M, D, K)))
    logp_teacher = log_softmax_np(rng.normal(size=(batch, D, K)))
    return logp_t, logp_u, logp_teacher, rng.integers(0, K, size=(batch, D)), rng.integers(0, K, size=(batch, M, D))


def test_aux_terms_are_weighted_shares_that_sum_to_the_loss():
    """distil = mean_B(w_distil KL), consis = mean_B(w_consis (consis_cor + consis_ind)), data = mean_B(time_coeff
    data_cor + data_ind) and loss = distil + data + consis, with per-item weights (each item's unweighted terms come
    from the same objective at unit weights on that item alone); w_distil=None gives distil = 0."""
    batch = 3
    logp_t, logp_u, logp_teacher, x0, x_hat = random_objective_inputs(np.random.default_rng(3), batch)
    time_coeff, w_distil, w_consis = np.array([0.2, 0.7, 1.0]), np.array([0.0, 2.0, 0.5]), np.array([1.0, 0.0, 0.3])
    _, aux = objective_at(logp_t, x0, logp_teacher, logp_u, x_hat, time_coeff, w_distil, w_consis)
    items = [objective_at(logp_t[i:i + 1], x0[i:i + 1], logp_teacher[i:i + 1], logp_u[i:i + 1], x_hat[i:i + 1],
                          w_distil=1.0)[1] for i in range(batch)]
    per = {k: np.array([float(a[k]) for a in items]) for k in ("distil", "data_cor", "data_ind", "consis")}
    np.testing.assert_allclose(aux["distil"], np.mean(w_distil * per["distil"]), rtol=1e-5)
    np.testing.assert_allclose(aux["consis"], np.mean(w_consis * per["consis"]), rtol=1e-5)
    np.testing.assert_allclose(aux["data"], np.mean(time_coeff * per["data_cor"] + per["data_ind"]), rtol=1e-5)
    np.testing.assert_allclose(aux["data_cor"], per["data_cor"].mean(), rtol=1e-5)  # unweighted batch means
    np.testing.assert_allclose(aux["loss"], aux["distil"] + aux["data"] + aux["consis"], rtol=1e-6)
    one = lambda v: jnp.full((batch,), v, jnp.float32)
    _, aux_none = jax.jit(di4c_objective)(logp_t=jnp.asarray(logp_t, jnp.float32), x0=jnp.asarray(x0),
                                          logp_teacher_t=jnp.asarray(logp_teacher, jnp.float32),
                                          logp_u=jnp.asarray(logp_u, jnp.float32), x_hat=jnp.asarray(x_hat),
                                          time_coeff=one(0.5), w_distil=None, w_consis=one(1.0))
    assert float(aux_none["distil"]) == 0.0
    np.testing.assert_allclose(aux_none["loss"], aux_none["data"] + aux_none["consis"], rtol=1e-6)


def test_objective_gradients_only_through_student_t_side(toy):
    logp_t, logp_u, joint_q = toy
    teacher = np.log(marginals(joint_q, D, K))[None]
    args = [jnp.asarray(a, jnp.float32) for a in (logp_t, teacher, logp_u)]
    x0, x_hat = jnp.zeros((1, D), jnp.int32), jnp.ones((1, M, D), jnp.int32)
    w = jnp.ones((1,))

    def loss(lt, lteach, lu):
        return di4c_objective(logp_t=lt, x0=x0, logp_teacher_t=lteach, logp_u=lu, x_hat=x_hat, time_coeff=w,
                              w_distil=w, w_consis=w)[0]

    g_t, g_teacher, g_u = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args)
    assert np.all(np.asarray(g_teacher) == 0) and np.all(np.asarray(g_u) == 0)
    assert np.abs(np.asarray(g_t)).max() > 1e-3


def test_objective_shape_errors(toy):
    logp_t, logp_u, _ = toy
    x_hat = np.zeros((1, M, D), np.int32)
    with pytest.raises(ValueError, match="x0 must have shape"):
        objective_at(logp_t, np.zeros((1, D + 1), np.int32), logp_t[:, 0], logp_u, x_hat)
    with pytest.raises(ValueError, match="x_hat must be"):
        objective_at(logp_t, np.zeros((1, D), np.int32), logp_t[:, 0], logp_u, x_hat[:, :1])


# ---------------------------------------------------------------- di4c_loss with a tiny denoiser and real processes
HIDDEN, BATCH, DIMS, NUM_CLASSES = 8, 4, 6, 3
rbg_key = functools.partial(jax.random.key, impl="rbg")  # compiles ~2x faster on CPU than the default threefry
PROCESSES = {"tauldr": DiscreteGaussian(num_states=8), "sdtt": Masked(vocab_size=5),
             "maskgit": Masked(vocab_size=5, schedule="arccos", subs=False)}


def init_denoiser(key, num_states):
    shapes = dict(emb=(num_states, HIDDEN), t_w=(HIDDEN,), lam_w=(HIDDEN,), cond=(NUM_CLASSES + 1, HIDDEN),
                  out=(HIDDEN, num_states))
    keys = jax.random.split(key, len(shapes))
    return {name: jax.random.normal(k, s) for k, (name, s) in zip(keys, shapes.items())} | {"probe": jnp.zeros(())}


def denoiser_apply(params, x, t, lam, cond, *, rngs=None):
    """Embedding of x_t plus time, lambda and class features, one cross-position mixing, dropout when rngs given.
    `probe` only acts in deterministic passes (rngs=None): with student_dropout that is the u-side target pass."""
    h = params["emb"][x] + t[:, None, None] * params["t_w"]
    if lam is not None:
        h = h + lam[:, None, None] * params["lam_w"]
    if cond is not None:
        h = h + params["cond"][cond][:, None]
    h = jnp.tanh(h + jnp.mean(h, axis=1, keepdims=True))
    if rngs is not None:
        h = h * jax.random.bernoulli(rngs, 0.9, h.shape) / 0.9
    logits = h @ params["out"]
    if rngs is None and lam is not None:
        logits = logits + params["probe"] * lam[:, None, None] * jnp.arange(logits.shape[-1])
    return logits


def net(process, mixture, apply=denoiser_apply):
    """`apply` as a Denoiser on `process`'s states: a lambda-mixture (mixture=True) or a product."""
    return Denoiser(apply, num_states=process.num_states, mixture=mixture, num_classes=NUM_CLASSES)


def setup(preset, **overrides):
    """(process, recipe, student params, teacher params, x0, cond); the student Denoiser is net(process, True)."""
    process = PROCESSES[preset]
    config = di4c_config(preset, num_lambda=4, num_composition=3, **overrides)
    k_s, k_t, k_x, k_c = jax.random.split(jax.random.key(1), 4)
    student, teacher = init_denoiser(k_s, process.num_states), init_denoiser(k_t, process.num_states)
    vocab = process.num_states - 1 if process.absorbing else process.num_states
    x0 = jax.random.randint(k_x, (BATCH, DIMS), 0, vocab)
    cond = jax.random.randint(k_c, (BATCH,), 0, NUM_CLASSES)
    return process, config, student, teacher, x0, cond


slow = pytest.mark.slow


@pytest.mark.parametrize("preset, overrides, teacher_mixture, with_grad, key_impl", [
    ("tauldr", {}, False, True, "rbg"), ("sdtt", {}, False, False, "rbg"), ("maskgit", {}, False, False, "rbg"),
    pytest.param("sdtt", {}, False, True, "threefry2x32", marks=slow),
    pytest.param("maskgit", {}, False, True, "threefry2x32", marks=slow),
    pytest.param("sdtt", {"control_variate": False}, True, True, "rbg", marks=slow),
    pytest.param("maskgit", {"student_dropout": False}, True, True, "rbg", marks=slow)])
def test_jit_compiles_once_deterministic_and_gradients(preset, overrides, teacher_mixture, with_grad, key_impl):
    """One jitted loss (with_grad: value_and_grad) per preset, process, config and denoisers closed over: traced
    once for several keys and parameter values, deterministic per key; zero teacher gradient and no gradient from
    the u-side target pass. (Each compile takes seconds on CPU, so two presets check gradients only with --runslow;
    tauldr, which has the extra small-time distillation pass, always does. The default runs use 'rbg' keys, which
    compile about 2x faster on CPU than threefry; the loss is agnostic to the key implementation.)"""
    process, config, student, teacher, x0, cond = setup(preset, **overrides)
    student_net, teacher_net = net(process, True), net(process, teacher_mixture)
    traces = []

    def loss_fn(sp, tp, key):
        traces.append(1)
        return di4c_loss(key, student=student_net, student_params=sp, teacher=teacher_net, teacher_params=tp,
                         process=process, x0=x0, config=config, cond=cond)

    if with_grad:
        step = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))
    else:
        step = jax.jit(lambda sp, tp, key: (loss_fn(sp, tp, key), None))
    k0, k1 = jax.random.key(0, impl=key_impl), jax.random.key(1, impl=key_impl)
    (l0, aux0), grads = step(student, teacher, k0)
    (l1, _), _ = step(student, teacher, k1)
    (l0b, aux0b), _ = step(student, teacher, k0)
    assert np.isfinite(float(l0)) and float(l0) == float(l0b) and float(l0) != float(l1)
    assert set(aux0) == {"data", "data_cor", "data_ind", "distil", "consis", "consis_cor", "consis_ind", "consis_comp",
                         "loss"}
    assert all(float(aux0[k]) == float(aux0b[k]) for k in aux0) and float(aux0["loss"]) == float(l0)
    # the teacher (through its marginals in data_ind; an sdtt step of 1/1024 rarely changes x_u) and, with student
    # dropout, the u-side-only `probe` change the value
    if config.control_variate:
        assert float(step(student, dict(teacher, out=2.0 * teacher["out"]), k0)[0][0]) != float(l0)
    if config.student_dropout:
        assert float(step(dict(student, probe=jnp.full((), 5.0, jnp.float32)), teacher, k0)[0][0]) != float(l0)
    assert len(traces) == 1
    if with_grad:
        g_student, g_teacher = grads
        assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(g_teacher))
        assert np.isfinite(np.asarray(g_student["out"])).all() and np.abs(np.asarray(g_student["out"])).max() > 1e-4
        if config.student_dropout:  # `probe` acts only in the pass with rngs=None: the u-side target pass
            assert float(g_student["probe"]) == 0.0


# sdtt / maskgit overrides that put about half of the batch in the distillation region, so that both weighted
# shares are non-zero in the draws below (with the reference distil_time 0.02 the SUBS copy distributions make the
# sdtt KL 0 on a 6-token sequence, and r_delta 0.05 rarely puts a maskgit item there)
SHARE_OVERRIDES = {"tauldr": {}, "sdtt": {"distil_prob": 0.5, "distil_time": 0.5}, "maskgit": {"r_delta": 0.5}}


@pytest.mark.parametrize("preset", ["tauldr", "sdtt", "maskgit"])
def test_loss_is_the_sum_of_the_distil_data_and_consis_shares(preset):
    """Every recipe: aux['loss'] = aux['distil'] + aux['data'] + aux['consis'], each term's weighted share of the
    loss (tauldr: distil is the small-time batch's KL, weight 1)."""
    process, config, student, teacher, x0, cond = setup(preset, **SHARE_OVERRIDES[preset])
    loss_fn = jax.jit(lambda key: di4c_loss(key, student=net(process, True), student_params=student,
                                            teacher=net(process, False), teacher_params=teacher, process=process,
                                            x0=x0, config=config, cond=cond))
    shares = []
    for seed in range(4):
        loss, aux = loss_fn(rbg_key(seed))
        assert float(loss) == float(aux["loss"])
        total = aux["distil"] + aux["data"] + aux["consis"]
        # the weighted shares (not unweighted means), to float32 rounding (a mean of sums vs a sum of means)
        np.testing.assert_allclose(aux["loss"], total, rtol=1e-6)
        shares.append((float(aux["distil"]), float(aux["consis"])))
    assert max(d for d, _ in shares) > 0 and max(c for _, c in shares) > 0  # both weighted shares were exercised


def test_mixture_teacher_marginal_reduces_to_product_when_lambda_is_ignored():
    process, config, _, teacher, x0, cond = setup("sdtt")
    t, u = jnp.full((BATCH,), 0.5), jnp.full((BATCH,), 0.5 - 1 / 1024)
    x_t = process.sample_xt(rbg_key(2), x0, t)
    ignore_lam = lambda p, x, t, lam, c, *, rngs=None: denoiser_apply(p, x, t, None, c)
    mixture_teacher = net(process, True, ignore_lam)
    mix_marg, x_u, _, _ = jax.jit(lambda k: composition(k, mixture_teacher, teacher, process, x_t, t, u, cond,
                                                        config))(rbg_key(3))
    prod_marg = process.x0_logprobs(ignore_lam(teacher, x_t, t, None, cond), x_t)
    np.testing.assert_allclose(mix_marg, prod_marg, atol=1e-5)
    assert x_u.shape == (BATCH, 3, DIMS)


def test_maskgit_teacher_step_reveals_scheduled_count():
    process, config, _, teacher, _, _ = setup("maskgit")
    dims, batch = 64, 8
    x0 = jax.random.randint(rbg_key(4), (batch, dims), 0, 5)
    r = jnp.linspace(0.0, 0.97, batch)
    t, u = 1.0 - r, 1.0 - jnp.minimum(r + config.r_delta, 1.0)
    x_t = process.sample_xt(rbg_key(5), x0, t)
    _, x_u, _, _ = jax.jit(lambda k: composition(k, net(process, False), teacher, process, x_t, t, u, None,
                                                 config))(rbg_key(6))
    n_masked = np.asarray(x_t == process.mask_id).sum(1)
    gamma_next = (2 / np.pi) * np.arccos(np.minimum(np.asarray(r) + 0.05, 1.0))
    reveal = np.clip(np.trunc((1 - gamma_next) * dims - (dims - n_masked)), 0, n_masked)
    still_masked = np.asarray(x_u == process.mask_id).sum(2)  # [B, M]
    np.testing.assert_array_equal(still_masked, np.broadcast_to((n_masked - reveal)[:, None], still_masked.shape))
    unmasked = np.asarray(x_t != process.mask_id)[:, None]
    assert np.all(np.where(unmasked, np.asarray(x_u) == np.asarray(x_t)[:, None], True))
    assert reveal.sum() > 0


def composition(key, teacher, teacher_params, process, x_t, t, u, cond, config, chunk=2):
    """The loss's teacher steps and composition samples (student: a fresh mixture at the teacher's params)."""
    return _composition(jax.random.split(key, 3), teacher=teacher, teacher_params=teacher_params,
                        student=net(process, True), student_params=teacher_params, process=process, x_t=x_t, t=t,
                        u=u, cond=cond, config=config, chunk=chunk)


def test_bad_inputs_raise_clear_errors():
    process, config, student, teacher, x0, cond = setup("sdtt")
    kw = dict(student=net(process, True), student_params=student, teacher=net(process, False), teacher_params=teacher)
    call = lambda x, c=None: di4c_loss(jax.random.key(0), **kw, process=process, x0=x, config=config, cond=c)
    with pytest.raises(ValueError, match="x0 must be int"):
        call(x0[0])
    with pytest.raises(ValueError, match="outside"):
        call(np.full((BATCH, DIMS), process.num_states, np.int32))
    with pytest.raises(ValueError, match="cond must be"):
        call(x0, cond[:2])
    with pytest.raises(TypeError, match="maskgit.*absorbing"):
        di4c_loss(jax.random.key(0), **kw, process=PROCESSES["tauldr"], x0=x0, config=di4c_config("maskgit"))
    with pytest.raises(ValueError, match="unknown Di4C recipe"):
        di4c_config("cifar")
    with pytest.raises(ValueError, match="num_lambdas"):
        di4c_config("sdtt", num_lambdas=8)
    assert di4c_config("maskgit").num_samples_composition == 32 and isinstance(hash(di4c_config("sdtt")), int)
    assert SDTTRecipe(num_lambda=8, num_composition=2).num_samples_composition == 2

