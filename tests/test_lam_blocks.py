"""A DiT student whose lambda token enters only its last blocks (`lam_blocks`): `Denoiser.components` evaluates N
components per row with the leading blocks run once, equal in value and gradient to the N repeated rows, at a
fraction of the FLOPs; the leading blocks are the teacher's, and the Di4C loss is unchanged by the shortcut."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax.losses import di4c_config, di4c_loss
from di4c_jax.models import build_denoiser, init_student_from_teacher, make_denoiser, model_config
from di4c_jax.processes import Masked

B, D, K, N = 3, 6, 7, 5


def _cfg(**overrides):
    return model_config("dit-tiny", num_states=K, num_positions=D, dropout=0.0, **overrides)


def _random_params(cfg, key):
    """Every parameter random (zero-initialised heads would make the comparisons trivial)."""
    _, params = build_denoiser(cfg, jax.random.key(0))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def _close_to_rounding(got, want):
    """float32 sums in another order: within 1e-4 of the leaf's scale."""
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * float(np.max(np.abs(want)) + 1e-6))


def _inputs():
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    return jax.random.randint(k1, (B, D), 0, K), jax.random.uniform(k2, (B,)), jax.random.uniform(k3, (B, N))


@pytest.mark.parametrize("depth, lam_blocks", [(3, 2), (3, 1)])  # (2, 1): the loss test below
def test_components_equal_repeated_rows_in_value_and_gradient(depth, lam_blocks):
    cfg = _cfg(depth=depth, lam_style="token", lam_zero_init=False, lam_blocks=lam_blocks)
    denoiser, params = make_denoiser(cfg), _random_params(cfg, jax.random.key(2))
    assert denoiser.components is not None
    x, t, lam = _inputs()
    process = Masked(vocab_size=K - 1)
    plain = denoiser.with_apply(denoiser.apply)  # drops `components`: N repeated rows through `apply`
    assert plain.components is None

    def loss(p, net):
        logp = net.component_logprobs_at(process, p, x, t, lam)
        return jnp.sum(jnp.exp(logp) * jnp.arange(K)), logp

    (want, want_logp), want_grad = jax.value_and_grad(loss, has_aux=True)(params, plain)
    (got, got_logp), got_grad = jax.value_and_grad(loss, has_aux=True)(params, denoiser)
    np.testing.assert_allclose(got_logp, want_logp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    jax.tree.map(_close_to_rounding, got_grad, want_grad)
    assert float(np.max(np.abs(np.diff(np.asarray(got_logp), axis=1)))) > 1e-2  # the components differ by lambda


def test_leading_blocks_are_the_teachers_and_the_shortcut_saves_flops():
    teacher_cfg = _cfg(depth=4)
    student_cfg = _cfg(depth=4, lam_style="token", lam_zero_init=False, lam_blocks=1)
    teacher_params = _random_params(teacher_cfg, jax.random.key(3))
    student_params = init_student_from_teacher(teacher_params, build_denoiser(student_cfg, jax.random.key(4))[1])
    blocks = student_params["blocks"]
    assert [("lam_gate" in blocks[i]) for i in sorted(blocks, key=int)] == [False, False, False, True]
    student = make_denoiser(student_cfg)
    x, t, lam = _inputs()
    big = jnp.tile(lam, (1, 8))  # N = 40 components per row

    def flops(fn):
        return jax.jit(fn).lower(student_params).compile().cost_analysis()["flops"]

    shortcut = flops(lambda p: student.components(p, x, t, big))
    repeated = flops(lambda p: student.apply(p, jnp.repeat(x, 40, 0), jnp.repeat(t, 40), big.reshape(-1)))
    assert shortcut < 0.5 * repeated, (shortcut, repeated)


def test_di4c_loss_is_unchanged_by_the_shortcut():
    process = Masked(vocab_size=K - 1)
    teacher_cfg = _cfg()
    student_cfg = _cfg(lam_style="token", lam_zero_init=False, lam_blocks=1)
    teacher, teacher_params = make_denoiser(teacher_cfg), _random_params(teacher_cfg, jax.random.key(5))
    student, student_params = make_denoiser(student_cfg), _random_params(student_cfg, jax.random.key(6))
    x0 = jax.random.randint(jax.random.key(7), (B, D), 0, K - 1)
    config = di4c_config("tauldr", num_lambda=N, num_composition=2, min_delta=0.02, max_delta=0.5,
                         student_dropout=False)

    def loss(p, net):
        return di4c_loss(jax.random.key(8), student=net, student_params=p, teacher=teacher,
                         teacher_params=teacher_params, process=process, x0=x0, config=config)[0]

    want, want_grad = jax.jit(jax.value_and_grad(lambda p: loss(p, student.with_apply(student.apply))))(
        student_params)
    got, got_grad = jax.jit(jax.value_and_grad(lambda p: loss(p, student)))(student_params)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    jax.tree.map(_close_to_rounding, got_grad, want_grad)


def test_default_student_is_unchanged_and_bad_lam_blocks_are_clear_errors():
    cfg = _cfg(lam_style="token", lam_zero_init=False)
    assert make_denoiser(cfg).components is None
    assert make_denoiser(_cfg(lam_style="token", lam_blocks=2)).components is None  # every block sees lambda
    for bad in (dict(lam_style="token", lam_blocks=0), dict(lam_style="token", lam_blocks=3),
                dict(lam_style="embed", lam_blocks=1), dict(lam_blocks=1)):
        with pytest.raises(ValueError, match="lam_blocks must be None or in \\[1, depth=2\\] with lam_style='token'"):
            make_denoiser(_cfg(**bad))
    student = make_denoiser(_cfg(lam_style="token", lam_blocks=1))
    x, t, lam = _inputs()
    params = _random_params(_cfg(lam_style="token", lam_blocks=1), jax.random.key(9))
    with pytest.raises(ValueError, match=r"lam must be float\[3, 5\]"):
        student.components(params, x, t, lam[:2])
    assert dataclasses.replace(student, apply=student.apply).components is not None  # only with_apply drops it
