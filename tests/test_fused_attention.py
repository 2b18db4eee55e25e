"""The DiT's attention through jax.nn.dot_product_attention (`attention='xla'`; 'cudnn' is the same call with the
fused GPU kernel) equals the heads-major einsum attention in values and gradients, for the teacher and for lambda
token students with learned, fixed-at-1 and zero gates; a zero-gate student is still bitwise its teacher."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax.models import build_denoiser, init_student_from_teacher, make_denoiser, model_config

B, D, K = 2, 6, 7


def _cfg(attention, **overrides):
    return model_config("dit-tiny", num_states=K, num_positions=D, dropout=0.0, attention=attention, **overrides)


def _random_params(overrides, key):
    """Every parameter random (zero-initialised heads and gates would make the comparison trivial)."""
    _, params = build_denoiser(_cfg("einsum", **overrides), jax.random.key(0))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def _inputs():
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    return (jax.random.randint(k1, (B, D), 0, K), jax.random.uniform(k2, (B,)), jax.random.uniform(k3, (B,)))


@pytest.mark.parametrize("overrides", [dict(), dict(lam_style="token", lam_zero_init=False),
                                       dict(lam_style="token", lam_token_gate=False)],
                         ids=["teacher", "gated-student", "gate-fixed-at-1"])
def test_xla_attention_equals_einsum_attention(overrides):
    params = _random_params(overrides, jax.random.key(2))
    x, t, lam = _inputs()
    lam = lam if overrides else None

    def loss_and_logits(attention):
        apply = make_denoiser(_cfg(attention, **overrides)).apply

        def loss(p):
            logits = apply(p, x, t, lam, None)
            return jnp.sum(jnp.sin(logits)), logits

        (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return logits, grads

    (ours, ours_grads), (want, want_grads) = loss_and_logits("xla"), loss_and_logits("einsum")
    assert float(jnp.std(want)) > 0.1
    np.testing.assert_allclose(ours, want, rtol=2e-5, atol=2e-5)
    for a, b in zip(jax.tree.leaves(ours_grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5)


def test_zero_gate_student_is_bitwise_its_teacher_with_xla_attention():
    teacher = _random_params(dict(), jax.random.key(3))
    _, fresh = build_denoiser(_cfg("xla", lam_style="token"), jax.random.key(4))  # gates start at 0
    student = init_student_from_teacher(teacher, fresh)  # its own lambda projection and zero gates
    x, t, lam = _inputs()
    with jax.disable_jit():
        want = make_denoiser(_cfg("xla")).apply(teacher, x, t, None, None)
        ours = make_denoiser(_cfg("xla", lam_style="token")).apply(student, x, t, lam, None)
    np.testing.assert_array_equal(ours, want)


def test_unknown_attention_is_a_clear_error():
    with pytest.raises(ValueError, match="attention must be one of .*got 'flash'"):
        build_denoiser(_cfg("flash"), jax.random.key(0))
