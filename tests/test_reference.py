"""Reference distributions r_t of the Di4C loss and of CDM (losses.reference): exact laws of the drawn x_t on tiny
spaces, the losses under jit and grad with trajectory items, the fields' validation, the consistency time weighting,
and the runner's command line reaching the new fields."""
import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

from di4c_jax.losses import CDMConfig, cdm_conditional_loss, cdm_loss, di4c_config, di4c_loss
from di4c_jax.losses.cdm import cdm_times
from di4c_jax.losses.reference import draw_reference_xt
from di4c_jax.processes import DiscreteGaussian, Masked, Uniform
from sampling_oracle import (
    all_states, data_values, exact_trajectory_law, forward_marginal_law, oracle_denoiser, random_law, regimes,
    table_mixture, tv,
)
from test_di4c_loss import net, rbg_key, setup

DIMS, NUM_DRAWS = 2, 200_000
TIMES = (0.3, 0.7)  # even items end at 0.3, odd ones at 0.7: each item runs its own grid
TINY = {"masked": (Masked(vocab_size=2), "sdtt"), "uniform": (Uniform(num_states=2), "tauldr")}


def grid(t, num_steps):
    """The item grid s_i = 1 - (1 - t) i / S (float32 as the trajectory computes it), s_S = t."""
    i = np.arange(num_steps + 1, dtype=np.float32)
    return np.where(i == num_steps, np.float32(t), 1.0 - (1.0 - np.float32(t)) * (i / np.float32(num_steps)))


def tiny_problem(name):
    """(process, recipe name, data law p0, x0 int32[NUM_DRAWS, D] ~ p0, t float32[NUM_DRAWS], product teacher of
    another law, mixture table)."""
    process, recipe = TINY[name]
    p0 = random_law(0, process, DIMS)
    data = all_states(data_values(process), DIMS)
    x0 = jnp.asarray(data[np.random.default_rng(1).choice(len(data), size=NUM_DRAWS, p=p0)])
    t = jnp.asarray(np.resize(np.float32(TIMES), NUM_DRAWS))
    teacher = oracle_denoiser(process, random_law(5, process, DIMS), DIMS)  # not p0's posterior: a distinct law
    return process, recipe, p0, x0, t, teacher, table_mixture(process, 2, DIMS)


def draw(process, config, x0, t, teacher, teacher_params, student, student_params, seed=3):
    fn = jax.jit(lambda key, tp, sp: draw_reference_xt(key, config=config, process=process, x0=x0, t=t,
                                                       teacher=teacher, teacher_params=tp, student=student,
                                                       student_params=sp))
    return fn(jax.random.key(seed), teacher_params, student_params)


def monte_carlo_tolerance(law, n):
    """4 standard errors: 4 * 0.5 sum_x sd(p_hat(x)), sd = sqrt(p (1 - p) / n); 0.5 sum_x sd bounds E[TV] of n
    draws from above (E|p_hat - p| <= sd)."""
    return 4 * 0.5 * np.sqrt(law * (1 - law) / n).sum()


def assert_law(samples, law, num_states):
    """Empirical law of int[n, D] samples within the Monte-Carlo tolerance of `law`, no draw on a 0-probability
    state."""
    x = np.asarray(samples)
    index = (x * num_states ** np.arange(x.shape[1] - 1, -1, -1)).sum(axis=1)
    counts = np.bincount(index, minlength=len(law))
    assert counts[law < 1e-12].sum() == 0, "a draw hit a state of probability 0"
    assert tv(counts / len(x), law) < monte_carlo_tolerance(law, len(x)), (counts / len(x), law)


def exact_laws(process, p0, teacher, mixture, config):
    """Per end time: the exact laws of x_t under the teacher's / the mixture student's trajectory and the data."""
    student, student_params = mixture
    teacher_fn = [lambda xs, s: teacher.logprobs(process, None, xs, s)]
    return {t: dict(teacher=exact_trajectory_law(process, teacher_fn, DIMS, grid(t, config.reference_teacher_steps)),
                    student=exact_trajectory_law(process, regimes(process, student, student_params), DIMS,
                                                 grid(t, config.reference_student_steps)),
                    data=forward_marginal_law(process, p0, DIMS, t)) for t in TIMES}


# ---------------------------------------------------------------- exact laws of the drawn x_t
@pytest.mark.parametrize("name", ["masked", "uniform"])
@pytest.mark.parametrize("source", ["teacher", "student", "mixture_teacher"])
def test_trajectory_draws_follow_the_exact_chain_law(name, source):
    """reference_teacher = 1 (a product teacher, or the lambda-table as a di4c^2 mixture teacher) or
    reference_student = 1 (the lambda-table student, a fresh lambda per step): the x_t of each end time follow the
    exact law of the S-step chain of `process.reverse_step` kernels from the prior (the mixture's kernel averaged
    over its two lambda regimes), and differ from the data's q_t by far more than the tolerance."""
    process, recipe, p0, x0, t, teacher, (table, table_params) = tiny_problem(name)
    fields = dict(reference_student=1.0) if source == "student" else dict(reference_teacher=1.0)
    config = di4c_config(recipe, reference_teacher_steps=3, reference_student_steps=2, **fields)
    teacher_pair = (table, table_params) if source == "mixture_teacher" else (teacher, None)
    x_t, from_data = draw(process, config, x0, t, *teacher_pair, table, table_params)
    assert x_t.dtype == jnp.int32 and not np.asarray(from_data).any()
    if source == "teacher":
        components, steps = [lambda xs, s: teacher.logprobs(process, None, xs, s)], config.reference_teacher_steps
    else:
        components = regimes(process, table, table_params)
        steps = config.reference_student_steps if source == "student" else config.reference_teacher_steps
    for i, t_end in enumerate(TIMES):
        law = exact_trajectory_law(process, components, DIMS, grid(t_end, steps))
        assert_law(x_t[i::2], law, process.num_states)
        assert tv(law, forward_marginal_law(process, p0, DIMS, t_end)) > 3 * monte_carlo_tolerance(law, NUM_DRAWS // 2)


@pytest.mark.parametrize("name", ["masked", "uniform"])
def test_default_draw_is_the_data_draw_and_follows_q_t(name):
    """Reference weights 0: x_t is `process.sample_xt(key, x0, t)` bit for bit (the same key), every item is a data
    item, and its law is q_t = sum_x0 p0(x0) q(x_t | x0)."""
    process, recipe, p0, x0, t, teacher, (table, table_params) = tiny_problem(name)
    x_t, from_data = draw(process, di4c_config(recipe), x0, t, teacher, None, table, table_params)
    np.testing.assert_array_equal(x_t, jax.jit(process.sample_xt)(jax.random.key(3), x0, t))
    assert np.asarray(from_data).all()
    for i, t_end in enumerate(TIMES):
        assert_law(x_t[i::2], forward_marginal_law(process, p0, DIMS, t_end), process.num_states)


@pytest.mark.parametrize("weights", [(0.5, 0.0), (0.3, 0.3)])
def test_mixed_sources_follow_the_mixture_of_the_exact_laws(weights):
    """reference_teacher / reference_student = weights, data the rest: the source frequencies are the weights, the
    data items follow q_t, and all items together follow the weighted mixture of the three exact laws."""
    process, recipe, p0, x0, t, teacher, (table, table_params) = tiny_problem("masked")
    w_teacher, w_student = weights
    config = di4c_config(recipe, reference_teacher=w_teacher, reference_student=w_student,
                         reference_teacher_steps=3, reference_student_steps=2)
    x_t, from_data = draw(process, config, x0, t, teacher, None, table, table_params)
    from_data = np.asarray(from_data)
    w_data = 1 - w_teacher - w_student
    assert abs(from_data.mean() - w_data) < 4 * np.sqrt(w_data * (1 - w_data) / NUM_DRAWS)
    laws = exact_laws(process, p0, teacher, (table, table_params), config)
    for i, t_end in enumerate(TIMES):
        items, law = np.asarray(x_t)[i::2], laws[t_end]
        assert_law(items, w_teacher * law["teacher"] + w_student * law["student"] + w_data * law["data"],
                   process.num_states)
        assert_law(items[from_data[i::2]], law["data"], process.num_states)


@pytest.mark.parametrize("name,process", [
    ("masked linear", Masked(3, schedule="linear")), ("masked cosine", Masked(3, schedule="cosine")),
    ("masked arccos", Masked(3, schedule="arccos")), ("masked loglinear", Masked(3)),
    ("uniform cosine", Uniform(3, schedule="cosine")), ("uniform linear", Uniform(3)),
    ("gaussian", DiscreteGaussian(num_states=6))])
def test_trajectory_start_is_the_t1_marginal(name, process):
    """A trajectory starts at x_1 ~ `process.sample_prior` (its law `prior_logprobs`, tests/test_registry.py): the
    t = 1 marginal q(x_1 | x0) of every x0 where the schedule ends at noise exactly (masked linear / cosine /
    arccos, uniform cosine), within the schedule's eps = 1e-3 where it stops short (masked loglinear, uniform
    linear), and within 1e-3 for the discrete Gaussian (its t = 1 transition is near its stationary law)."""
    prior = np.exp(np.asarray(process.prior_logprobs(), np.float64))
    rows = np.asarray(process.transition(jnp.float32(1.0))[0], np.float64)  # [x0, x_1]
    exact = name in ("masked linear", "masked cosine", "masked arccos", "uniform cosine")
    np.testing.assert_allclose(rows, np.broadcast_to(prior, rows.shape), atol=1e-6 if exact else 1e-3)


# ---------------------------------------------------------------- the loss with trajectory items
@pytest.mark.parametrize("preset", ["tauldr", "sdtt", "maskgit"])
def test_loss_jits_and_differentiates_with_reference_trajectories(preset):
    """reference_teacher = reference_student = 0.3 in every recipe (tauldr on the discrete Gaussian, sdtt and
    maskgit on masked processes, as tests/test_di4c_loss.py): value_and_grad under jit is finite, the student's
    gradient is non-zero, the teacher's is zero, and the value depends on the key."""
    process, config, student, teacher, x0, cond = setup(preset, reference_teacher=0.3, reference_student=0.3,
                                                        reference_teacher_steps=3)

    def loss_fn(sp, tp, key):
        return di4c_loss(key, student=net(process, True), student_params=sp, teacher=net(process, False),
                         teacher_params=tp, process=process, x0=x0, config=config, cond=cond)

    step = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))
    (loss, aux), (g_student, g_teacher) = step(student, teacher, rbg_key(0))
    assert np.isfinite(float(loss)) and all(np.isfinite(float(v)) for v in aux.values())
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(g_student))
    assert np.abs(np.asarray(g_student["out"])).max() > 1e-4
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(g_teacher))
    assert float(step(student, teacher, rbg_key(1))[0][0]) != float(loss)


def test_trajectory_items_drop_only_the_data_correlation_term():
    """All items from the teacher's trajectory: time_coeff is 0 for every item, so the data share is the teacher
    marginal KL alone (data == data_ind); with the data's x_t it is not."""
    process, config, student, teacher, x0, cond = setup("sdtt")

    def aux_at(config):
        return jax.jit(lambda key: di4c_loss(key, student=net(process, True), student_params=student,
                                             teacher=net(process, False), teacher_params=teacher, process=process,
                                             x0=x0, config=config, cond=cond)[1])(rbg_key(0))

    on_trajectory = aux_at(di4c_config("sdtt", num_lambda=4, num_composition=3, reference_teacher=1.0,
                                       reference_teacher_steps=2))
    # Equal up to float32 rounding: XLA may sum the (zero-weighted) correlation term in a different order.
    np.testing.assert_allclose(float(on_trajectory["data"]), float(on_trajectory["data_ind"]), rtol=1e-6, atol=0)
    on_data = aux_at(config)
    assert abs(float(on_data["data"]) - float(on_data["data_ind"])) > 1e-4 * abs(float(on_data["data_ind"]))


def test_default_loss_equals_the_loss_with_reference_fields_zero():
    process, config, student, teacher, x0, cond = setup("sdtt")
    explicit = di4c_config("sdtt", num_lambda=4, num_composition=3, reference_teacher=0.0, reference_student=0.0,
                           consis_weighting="uniform")

    def loss_at(config):
        return float(jax.jit(lambda key: di4c_loss(
            key, student=net(process, True), student_params=student, teacher=net(process, False),
            teacher_params=teacher, process=process, x0=x0, config=config, cond=cond)[0])(rbg_key(0)))

    assert loss_at(config) == loss_at(explicit)


def test_drawn_xt_depends_on_a_network_only_when_its_trajectory_is_used():
    """Changing the teacher's params changes the drawn x_t only when reference_teacher > 0; the student's only
    when reference_student > 0."""
    process, _, student, teacher, x0, cond = setup("sdtt")
    t = jnp.linspace(0.2, 0.9, x0.shape[0] * 8)
    x0 = jnp.tile(x0, (8, 1))
    other_teacher, other_student = dict(teacher, out=-teacher["out"]), dict(student, out=-student["out"])

    def draws(**fields):
        config = di4c_config("sdtt", **fields)
        fn = jax.jit(lambda tp, sp: draw_reference_xt(rbg_key(4), config=config, process=process, x0=x0, t=t,
                                                      teacher=net(process, False), teacher_params=tp,
                                                      student=net(process, True), student_params=sp).x_t)
        base = np.asarray(fn(teacher, student))
        return base, np.asarray(fn(other_teacher, student)), np.asarray(fn(teacher, other_student))

    base, new_teacher, new_student = draws(reference_student=0.5)
    assert np.array_equal(base, new_teacher) and not np.array_equal(base, new_student)
    base, new_teacher, new_student = draws(reference_teacher=0.5)
    assert not np.array_equal(base, new_teacher) and np.array_equal(base, new_student)


# ---------------------------------------------------------------- CDM
def test_cdm_config_draws_the_x_t_a_di4c_recipe_with_the_same_fields_draws():
    """CDMConfig's ancestral `teacher_step` is the analytic step of the sdtt recipe, so with the same reference
    fields and key both draw the same x_t bit for bit (the laws are then the ones the exact tests above check)."""
    process, _, student, teacher, x0, _ = setup("sdtt")
    t = jnp.linspace(0.2, 0.9, x0.shape[0] * 8)
    x0 = jnp.tile(x0, (8, 1))
    fields = dict(reference_teacher=0.3, reference_student=0.4, reference_teacher_steps=3, reference_student_steps=2)

    def x_t(config):
        return np.asarray(draw_reference_xt(rbg_key(4), config=config, process=process, x0=x0, t=t,
                                            teacher=net(process, False), teacher_params=teacher,
                                            student=net(process, True), student_params=student).x_t)

    from_cdm = x_t(CDMConfig(**fields))
    np.testing.assert_array_equal(from_cdm, x_t(di4c_config("sdtt", **fields)))
    assert not np.array_equal(from_cdm, x_t(CDMConfig()))


@pytest.mark.parametrize("fields", [dict(reference_student=1.0), dict(reference_teacher=1.0),
                                    dict(reference_teacher=0.5, reference_student=0.5, reference_student_steps=3)])
def test_cdm_loss_is_the_conditional_loss_at_the_reference_x_t(fields):
    """cdm_loss with reference fields = cdm_conditional_loss at the x_hi `draw_reference_xt` gives for the same
    keys (the time draw and the chains unchanged), under jit; the student's gradient is finite and non-zero."""
    process, _, student, teacher, x0, cond = setup("sdtt")
    config = CDMConfig(num_lambda=4, num_teacher_steps=3, num_samples=2, **fields)
    nets = dict(student=net(process, True), teacher=net(process, False), process=process)

    def loss(sp, key, config=config):
        return cdm_loss(key, **nets, student_params=sp, teacher_params=teacher, x0=x0, config=config, cond=cond)[0]

    def by_hand(key):
        k_time, k_xt, k_rest = jax.random.split(key, 3)
        t_hi, t_lo = cdm_times(k_time, process, config, x0.shape[0])
        x_hi = draw_reference_xt(k_xt, config=config, process=process, x0=x0, t=t_hi, teacher=nets["teacher"],
                                 teacher_params=teacher, student=nets["student"], student_params=student,
                                 cond=cond).x_t
        per_item, _ = cdm_conditional_loss(k_rest, **nets, student_params=student, teacher_params=teacher,
                                           x_hi=x_hi, t_hi=t_hi, t_lo=t_lo, config=config, cond=cond)
        return jnp.mean(per_item)

    value, grad = jax.jit(jax.value_and_grad(loss))(student, rbg_key(0))
    np.testing.assert_allclose(float(value), float(jax.jit(by_hand)(rbg_key(0))), rtol=1e-6)
    data_only = dataclasses.replace(config, reference_teacher=0.0, reference_student=0.0)
    assert float(value) != float(jax.jit(lambda k: loss(student, k, data_only))(rbg_key(0)))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grad))
    assert np.abs(np.asarray(grad["out"])).max() > 1e-4


@pytest.mark.parametrize("fields,message", [
    (dict(reference_student=1.5), r"reference_student must be in \[0, 1\], got 1.5"),
    (dict(reference_teacher=0.6, reference_student=0.5), r"reference_teacher \+ reference_student must be <= 1"),
    (dict(reference_student_steps=0), r"reference_student_steps must be >= 1, got 0"),
    (dict(time_exponent=0.0), r"time_exponent must be > 0, got 0.0")])
def test_cdm_reference_and_time_fields_are_validated(fields, message):
    with pytest.raises(ValueError, match=message):
        CDMConfig(**fields)


# ---------------------------------------------------------------- recipe fields
@pytest.mark.parametrize("fields,message", [
    (dict(reference_teacher=-0.1), r"reference_teacher must be in \[0, 1\], got -0.1"),
    (dict(reference_student=1.5), r"reference_student must be in \[0, 1\], got 1.5"),
    (dict(reference_teacher=0.6, reference_student=0.5), r"reference_teacher \+ reference_student must be <= 1, "
                                                          r"got 0.6 \+ 0.5"),
    (dict(reference_teacher_steps=0), r"reference_teacher_steps must be >= 1, got 0"),
    (dict(reference_student_steps=-2), r"reference_student_steps must be >= 1, got -2"),
    (dict(consis_weighting="early"), r"consis_weighting must be one of .*got 'early'"),
    (dict(consis_scale=-1.0), r"consis_scale must be >= 0, got -1.0"),
    (dict(consis_scale=float("nan")), r"consis_scale must be >= 0, got nan")])
@pytest.mark.parametrize("preset", ["tauldr", "sdtt", "maskgit"])
def test_reference_and_weighting_fields_are_validated(preset, fields, message):
    with pytest.raises(ValueError, match=message):
        di4c_config(preset, **fields)


def test_reference_weights_may_sum_to_one():
    config = di4c_config("sdtt", reference_teacher=0.7, reference_student=0.3)
    assert (config.reference_teacher, config.reference_student) == (0.7, 0.3)


@pytest.mark.parametrize("preset", ["tauldr", "sdtt", "maskgit"])
@pytest.mark.parametrize("weighting,weight", [("linear", lambda t: 2 * t), ("late", lambda t: 3 * t**2)])
def test_consis_weighting_multiplies_w_consis_by_its_function_of_t(preset, weighting, weight):
    """draw_times' w_consis = the recipe's own w_consis (the 'uniform' draw, same key) times w(t); the other
    fields are unchanged; w has mean 1 under t ~ U[0, 1]."""
    batch = 4096
    uniform = jax.jit(lambda k: di4c_config(preset).draw_times(k, batch))(rbg_key(0))
    weighted = jax.jit(lambda k: di4c_config(preset, consis_weighting=weighting).draw_times(k, batch))(rbg_key(0))
    t = np.asarray(uniform.t)
    np.testing.assert_allclose(weighted.w_consis, np.asarray(uniform.w_consis) * weight(t), rtol=1e-6)
    for field in ("t", "u", "time_coeff", "w_distil"):
        a, b = getattr(uniform, field), getattr(weighted, field)
        assert (a is None and b is None) or np.array_equal(a, b)
    grid_mean = np.mean(weight((np.arange(100_000) + 0.5) / 100_000))
    assert abs(grid_mean - 1) < 1e-6
    scaled = jax.jit(lambda k: di4c_config(preset, consis_weighting=weighting, consis_scale=0.25).draw_times(
        k, batch))(rbg_key(0))
    np.testing.assert_allclose(scaled.w_consis, 0.25 * np.asarray(weighted.w_consis), rtol=1e-6)


# ---------------------------------------------------------------- the runner's command line
def test_runner_command_line_sets_recipe_fields_the_config_does_not_write(monkeypatch):
    """`--config.distill.loss.reference_student=0.5` (a key quickstart.py does not write) reaches the resolved
    recipe; a misspelt one fails in `resolve`, naming it."""
    from experiments.run import define_flags
    from experiments.spec import resolve

    def parse(*overrides):
        argv = ["run", "--config=experiments/configs/quickstart.py:di4c", "--workdir=/tmp/unused", *overrides]
        monkeypatch.setattr(sys, "argv", argv)  # config_flags finds the override flags in sys.argv
        flag_values = flags.FlagValues()
        define_flags(flag_values)
        flag_values(argv)
        return flag_values.config

    config = parse("--config.distill.loss.reference_student=0.5", "--config.distill.loss.reference_teacher=0.25",
                   "--config.distill.loss.reference_student_steps=4", "--config.distill.loss.consis_weighting=late")
    recipe = resolve(config).distill.config(1)
    assert (recipe.name, recipe.reference_student, recipe.reference_teacher) == ("tauldr", 0.5, 0.25)
    assert (recipe.reference_student_steps, recipe.consis_weighting) == (4, "late")
    with pytest.raises(ValueError, match="'reference_studnet'"):
        resolve(parse("--config.distill.loss.reference_studnet=0.5"))
