"""Di4C with memory flat in N: the chunked t-side statistics (streamed logsumexp, recomputing custom VJP) give the
value and gradient of the unchunked loss, at chunk sizes that divide N and ones that do not."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax.losses import di4c_loss
from di4c_jax.losses.chunked import chunked_component_stats, component_stats, default_chunk
from test_di4c_loss import SHARE_OVERRIDES, net, setup


def _value_and_grad(preset, chunk, num_lambda=5, consis_coupling=0.0):
    process, config, student, teacher, x0, cond = setup(preset, **SHARE_OVERRIDES[preset])
    config = dataclasses.replace(config, num_lambda=num_lambda, chunk=chunk, student_dropout=False,
                                 consis_coupling=consis_coupling)

    def loss(params, key):
        return di4c_loss(key, student=net(process, True), student_params=params, teacher=net(process, False),
                         teacher_params=teacher, process=process, x0=x0, config=config, cond=cond)

    # threefry (JAX's default) keys: vmapped draws per composition copy then do not depend on the chunking (rbg
    # keys' bits depend on the vmap batch size)
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(student, jax.random.key(3))


@pytest.mark.parametrize("preset, consis_coupling", [("tauldr", 0.0), ("sdtt", 0.5), ("maskgit", 0.0)])
def test_chunked_loss_and_gradient_equal_the_unchunked_ones(preset, consis_coupling):
    """Every recipe (the chunking does not depend on it; sdtt also pairs the t-side lambdas with the composition
    copies, consis_coupling > 0, in both paths)."""
    (want, want_aux), want_grad = _value_and_grad(preset, chunk=None, consis_coupling=consis_coupling)
    for chunk in (1, 2, 3):  # 5 = 5 x 1 = 2 x 2 + 1 = 1 x 3 + 2; chunk None: N fits, one pass
        (got, got_aux), got_grad = _value_and_grad(preset, chunk=chunk, consis_coupling=consis_coupling)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        for name in want_aux:
            np.testing.assert_allclose(got_aux[name], want_aux[name], rtol=1e-5, atol=1e-6, err_msg=name)
        for g, w in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad)):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(want_grad)) > 0


def test_chunked_statistics_equal_the_materialised_ones_and_their_vjp():
    process, _, student, _, x0, cond = setup("sdtt")
    denoiser = net(process, True)
    batch, dims = x0.shape
    k_lam, k_pts, k_tau, k_ct = jax.random.split(jax.random.key(5), 4)
    num = 7
    lam = jax.random.uniform(k_lam, (batch, num))
    t = jnp.full((batch,), 0.6)
    x_t = process.sample_xt(jax.random.key(6), x0, t)
    points = jax.random.randint(k_pts, (batch, 3, dims), 0, process.num_states - 1)
    tau = jax.nn.softmax(jax.random.normal(k_tau, (batch, dims, process.num_states)), axis=-1)
    cot = jax.tree.map(lambda a: jax.random.normal(k_ct, a.shape), component_stats(
        jnp.zeros((batch, num, dims, process.num_states)), points, tau))

    def direct(params):
        rep = lambda a: jnp.repeat(a, num, axis=0)  # noqa: E731
        logp = denoiser.logprobs(process, params, rep(x_t), rep(t), lam.reshape(-1), rep(cond))
        return component_stats(logp.reshape(batch, num, dims, -1), points, tau)

    def chunked(params, chunk):
        return chunked_component_stats(params, student=denoiser, process=process, x_t=x_t, t=t, lam=lam, cond=cond,
                                       rngs=None, points=points, tau=tau, chunk=chunk)

    want, want_vjp = jax.vjp(direct, student)
    # No loss term weighs an impossible class (log-prob NEG_INF = -1e6, where float32 resolves only 1/16): keep the
    # cotangent off them, as every KL's is.
    cot = cot._replace(log_marginal=jnp.where(want.log_marginal > -1e5, cot.log_marginal, 0.0))
    for chunk in (1, 3, 7, 9):
        got, got_vjp = jax.vjp(lambda p: chunked(p, chunk), student)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        for g, w in zip(jax.tree.leaves(got_vjp(cot)), jax.tree.leaves(want_vjp(cot))):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_default_chunk_fits_the_budget():
    assert default_chunk(64, 6, 4, 64) == 64  # the quickstart: everything in one pass
    assert default_chunk(1, 1024, 50258, 64) == 1  # sdtt: one [1, 1, 1024, 50258] slab is 196 MiB
    assert default_chunk(2, 256, 1025, 32, budget_bytes=1 << 24) == 7
    # bench_step's shape (2 MiB per component): 4 MiB on CPU, 64 MiB on accelerators
    assert default_chunk(4, 128, 1024, 16, backend="cpu") == 2
    assert default_chunk(4, 128, 1024, 16, backend="gpu") == default_chunk(4, 128, 1024, 16, backend="tpu") == 16
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        chunked_component_stats({}, student=None, process=None, x_t=None, t=None, lam=jnp.zeros((1, 2)),
                                cond=None, rngs=None, points=None, tau=None, chunk=0)
