"""Shared pieces of the distillation-loss tests: a tiny MLP denoiser and the contract every loss keeps."""
import jax
import jax.numpy as jnp
import numpy as np

from di4c_jax import Denoiser


def mlp_apply(params, x, t, lam, cond, *, rngs=None):
    """Tiny MLP denoiser: token embeddings, t and lam -> one tanh layer -> logits [B, D, K]."""
    b = x.shape[0]
    lam = jnp.zeros((b,)) if lam is None else lam
    h = jnp.concatenate([params["emb"][x].reshape(b, -1), 4 * t[:, None], 4 * lam[:, None]], axis=-1)
    return (jnp.tanh(h @ params["w1"]) @ params["w2"]).reshape(b, x.shape[1], -1)


def mlp_denoiser(num_states, mixture=False):
    """`mlp_apply` as a Denoiser on `num_states` states: a lambda-mixture (mixture=True) or a product."""
    return Denoiser(mlp_apply, num_states=num_states, mixture=mixture)


def assert_jits_once_deterministic_and_teacher_frozen(loss, student, teacher):
    """`loss(key, student_params, teacher_params) -> scalar`: one trace for several keys, the same value for the
    same key and a different one for another key, exactly zero teacher gradient, a non-zero student gradient."""
    traces = []

    def counted(key, s, t):
        traces.append(1)
        return loss(key, s, t)

    grad_fn = jax.jit(jax.value_and_grad(counted, argnums=(1, 2)))
    v1, (gs, gt) = grad_fn(jax.random.key(3), student, teacher)
    v2, _ = grad_fn(jax.random.key(3), student, teacher)
    v3, _ = grad_fn(jax.random.key(4), student, teacher)
    assert len(traces) == 1
    assert np.isfinite(float(v1)) and float(v1) == float(v2) and float(v1) != float(v3)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(gt))
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(gs)) > 0
