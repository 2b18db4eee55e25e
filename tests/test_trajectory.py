"""Trajectory matching against exact enumeration on tiny spaces (D = 2, K <= 4, k = 2 student steps)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from di4c_jax.eval.exact import all_states, state_index
from di4c_jax.losses import OBJECTIVES, TrajectoryConfig, forward_path, trajectory_loss
from di4c_jax.processes import Masked, Uniform
from loss_contract import assert_jits_once_deterministic_and_teacher_frozen, mlp_denoiser
from test_cdm import exact_chain_law, fixed_lambda_student, init_mlp, kernel_matrix, lookup_apply, product_net

D = 2
PROCESSES = {"masked": Masked(vocab_size=3), "uniform": Uniform(num_states=3)}


def state_matrix(per_dim):
    """[K^D, K^D] product over dimensions of one per-dimension matrix [K, K] (rows: from)."""
    idx = all_states(D, per_dim.shape[0])
    return np.prod([per_dim[idx[:, d]][:, idx[:, d]] for d in range(D)], axis=0)


def forward_matrix(process, t, s=None):
    """q_{t|s} over joint states, float64 [K^D, K^D]."""
    one = np.asarray(process.transition(jnp.float32(t), None if s is None else jnp.float32(s))[0], np.float64)
    return state_matrix(one)


def prior_law(process):
    return np.prod([np.exp(np.asarray(process.prior_logprobs(), np.float64))[all_states(D, process.num_states)[:, d]]
                    for d in range(D)], axis=0)


def lookup_kernel_matrix(process, component, s_from, s_to):
    """[K^D, K^D] kernel of a lookup component (free logits [D, K], the same at every state and t)."""
    states = jnp.asarray(all_states(D, process.num_states))
    t = jnp.full((states.shape[0],), s_from, jnp.float32)
    logp = process.x0_logprobs(jnp.broadcast_to(component, (states.shape[0], *component.shape)), states)
    klog = np.asarray(process.reverse_step_logprobs(states, logp, t, jnp.full_like(t, s_to)), np.float64)
    idx = all_states(D, process.num_states)
    return np.exp(sum(klog[:, d, idx[:, d]] for d in range(D)))


def expected_two_step_loss(process, teacher_params, n, kernels):
    """E[loss] by enumeration for k = 2: x1 ~ prior, x0 ~ the teacher's n-step chain from x1, x_{1/2} ~ q(. | x0),
    loss = -log (1/N) sum_c K0_c[x1, x_half] K1_c[x_half, x0]; kernels: per component (K0, K1) [K^D, K^D]."""
    states = all_states(D, process.num_states)
    q_half = forward_matrix(process, 0.5)  # [x0, x_half]
    total = 0.0
    for start, p_start in enumerate(prior_law(process)):
        if p_start == 0.0:
            continue
        law = exact_chain_law(process, teacher_params, states[start], 1.0, 0.0, n)
        for x0 in np.nonzero(law > 1e-12)[0]:
            for half in np.nonzero(q_half[x0] > 1e-12)[0]:
                density = np.mean([k0[start, half] * k1[half, x0] for k0, k1 in kernels])
                total += p_start * law[x0] * q_half[x0, half] * -np.log(density)
    return total


def monte_carlo_loss(config, process, student, student_params, teacher_params, batches=8, batch=1000):
    fn = jax.jit(lambda key: trajectory_loss(key, student=student, student_params=student_params,
                                             teacher=product_net(process.num_states), teacher_params=teacher_params,
                                             process=process, x0=jnp.zeros((batch, D), jnp.int32),
                                             config=config)[0])
    values = np.asarray([fn(jax.random.key(i)) for i in range(batches)], np.float64)
    return values.mean(), values.std(ddof=1) / np.sqrt(batches)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_forward_path_draws_the_forward_chain_outward_from_x0(name):
    process = PROCESSES[name]
    grid = jnp.asarray([1.0, 0.75, 0.4, 0.0], jnp.float32)  # k = 3: x_{0.4} ~ q(. | x0), x_{0.75} ~ q(. | x_{0.4})
    x0 = np.asarray([[0, 2]], np.int32)
    draws = 40_000
    path = jax.jit(lambda key: forward_path(key, process=process, x0=jnp.repeat(jnp.asarray(x0), draws, axis=0),
                                            grid=grid))(jax.random.key(0))
    assert path.shape == (draws, 2, D) and path.dtype == jnp.int32
    num = process.num_states ** D
    pair = state_index(np.asarray(path[:, 1]), process.num_states) * num + state_index(np.asarray(path[:, 0]),
                                                                                        process.num_states)
    observed = np.bincount(pair, minlength=num * num)
    start = state_index(x0, process.num_states)[0]
    exact = (forward_matrix(process, 0.4)[start][:, None] * forward_matrix(process, 0.75, 0.4)).reshape(-1)
    keep = exact > 0
    assert observed[~keep].sum() == 0
    assert stats.chisquare(observed[keep], draws * exact[keep] / exact[keep].sum()).pvalue > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_product_student_loss_is_the_two_step_path_cross_entropy(name):
    process = PROCESSES[name]
    k = process.num_states
    teacher_params, student_params = init_mlp(jax.random.key(1), k, D), init_mlp(jax.random.key(2), k, D)
    config = TrajectoryConfig(num_student_steps=2, num_teacher_steps=2, num_lambda=4)
    kernels = [(kernel_matrix(process, product_net(k), student_params, 1.0, 0.5, D),
                kernel_matrix(process, product_net(k), student_params, 0.5, 0.0, D))]
    exact = expected_two_step_loss(process, teacher_params, 2, kernels)
    mean, se = monte_carlo_loss(config, process, product_net(k), student_params, teacher_params)
    assert abs(mean - exact) < 4 * se + 1e-3, (mean, exact, se)


def test_one_lambda_is_shared_by_the_steps():
    """Components fixed by row (`fixed_lambda_student`): the loss is -log of the mean over components of the product
    over steps, which differs from the product over steps of per-step means (fresh lambdas) by many times the
    Monte Carlo error."""
    process = PROCESSES["masked"]
    k, num = process.num_states, 3
    components = 5.0 * jax.random.normal(jax.random.key(5), (num, D, k))
    teacher_params = init_mlp(jax.random.key(1), k, D)
    kernels = [(lookup_kernel_matrix(process, components[c], 1.0, 0.5),
                lookup_kernel_matrix(process, components[c], 0.5, 0.0)) for c in range(num)]
    shared = expected_two_step_loss(process, teacher_params, 2, kernels)
    fresh_k0, fresh_k1 = np.mean([a for a, _ in kernels], axis=0), np.mean([b for _, b in kernels], axis=0)
    fresh = expected_two_step_loss(process, teacher_params, 2, [(fresh_k0, fresh_k1)])
    config = TrajectoryConfig(num_student_steps=2, num_teacher_steps=2, num_lambda=num)
    mean, se = monte_carlo_loss(config, process, fixed_lambda_student(k, num), components, teacher_params)
    assert abs(mean - shared) < 4 * se + 1e-3, (mean, shared, se)
    assert abs(fresh - shared) > 6 * se, (fresh, shared, se)


def test_lookup_helper_matches_the_fixed_lambda_student():
    """The enumeration's component kernels are the student's: component c at lambda (c + 1/2) / N is params[c]."""
    params = jnp.arange(2 * D * 4, dtype=jnp.float32).reshape(2, D, 4)
    out = lookup_apply(params, jnp.zeros((2, D), jnp.int32), None, jnp.asarray([0.25, 0.75]), None)
    np.testing.assert_array_equal(out, params)


def test_jits_once_is_deterministic_and_leaves_the_teacher_frozen():
    process = PROCESSES["masked"]
    net = mlp_denoiser(process.num_states, mixture=True)
    student, teacher = init_mlp(jax.random.key(0), process.num_states, D), init_mlp(jax.random.key(1),
                                                                                    process.num_states, D)
    x0 = jnp.zeros((6, D), jnp.int32)
    config = TrajectoryConfig(num_student_steps=3, num_teacher_steps=4, num_lambda=4, jackknife=True)
    assert_jits_once_deterministic_and_teacher_frozen(
        lambda key, s, t: trajectory_loss(key, student=net, student_params=s, teacher=net, teacher_params=t,
                                          process=process, x0=x0, config=config)[0], student, teacher)


@pytest.mark.parametrize("options, message", [
    (dict(num_student_steps=0), "num_student_steps must be >= 1, got 0"),
    (dict(num_lambda=1, jackknife=True), "needs num_lambda >= 2, got 1"),
    (dict(num_samples=4), "has no field(s) ['num_samples']"),
])
def test_bad_settings_are_named(options, message):
    with pytest.raises(ValueError) as error:
        OBJECTIVES.get("trajectory").make_config(options, 1)
    assert message in str(error.value)
