"""di4c_loss runs unchanged under jit with a sharded batch, inside jax.shard_map and inside jax.pmap (8 simulated
CPU devices) and gives the single-device value and gradients.

shard_map / pmap reference: device i computes di4c_loss(fold_in(key, i), x0 shard i); the global objective is the
mean over shards of those losses, computed here by a Python loop of jitted calls on one device.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from di4c_jax.losses import di4c_config, di4c_loss
from di4c_jax.models.registry import build_denoiser, model_config
from di4c_jax.parallel import BATCH_AXES, batch_sharding, make_mesh, replicated
from di4c_jax.processes import Masked

DEVICES, PER_DEVICE, D, VOCAB, NUM_LAMBDA = 8, 2, 6, 4, 4
PROCESS = Masked(vocab_size=VOCAB)
TOL = dict(rtol=2e-5, atol=2e-6)
# LLVM optimisation level 0 cuts the CPU compile time ~3x; the SPMD partitioning under test is unaffected.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


@pytest.fixture(scope="module")
def setup():
    assert jax.device_count() == DEVICES, "tests/conftest.py must force 8 host devices before jax is imported"
    k_teacher, k_student, k_data = jax.random.split(jax.random.key(0), 3)
    size = dict(num_states=PROCESS.num_states, num_positions=D)
    teacher, teacher_params = build_denoiser(model_config("mlp-tiny", **size), k_teacher)
    student, student_params = build_denoiser(model_config("mlp-tiny", lam_style="embed", **size), k_student)
    assert student.mixture and not teacher.mixture
    x0 = jax.random.randint(k_data, (DEVICES * PER_DEVICE, D), 0, VOCAB, jnp.int32)
    return dict(student=student, teacher=teacher, student_params=student_params, teacher_params=teacher_params,
                x0=x0)


def _loss_fn(s, config):
    """(key, student_params, x0 [B, D]) -> (loss, aux): di4c_loss with everything else closed over."""
    return lambda key, params, x0: di4c_loss(key, student=s["student"], student_params=params, teacher=s["teacher"],
                                             teacher_params=s["teacher_params"], process=PROCESS, x0=x0,
                                             config=config)


def _value_and_grad(s, config):
    """(params, key, x0) -> ((loss, aux), grads) of di4c_loss with respect to the student params."""
    return jax.value_and_grad(lambda params, key, x0: _loss_fn(s, config)(key, params, x0), has_aux=True)


def _per_shard_mean_reference(s, config, key):
    """mean_i of di4c_loss(fold_in(key, i), x0 shard i) and of its gradients, one device, Python loop."""
    vg = jit(_value_and_grad(s, config))
    shards = s["x0"].reshape(DEVICES, PER_DEVICE, D)
    outs = [vg(s["student_params"], jax.random.fold_in(key, i), shards[i]) for i in range(DEVICES)]
    losses = np.array([float(loss) for (loss, _), _ in outs])
    grads = jax.tree.map(lambda *g: np.mean(np.stack(g), axis=0), *[g for _, g in outs])
    return losses, grads


def _assert_tree_close(got, want):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL), got, want)


def _assert_nontrivial(grads):
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 1e-4


CONFIGS = {
    "sdtt": di4c_config("sdtt", num_lambda=NUM_LAMBDA),
    "tauldr": di4c_config("tauldr", num_lambda=NUM_LAMBDA),
    # memory-flat chunks of 3 lambdas (a remainder chunk too): the scans and the custom VJP under jit and shard_map
    "tauldr_chunked": di4c_config("tauldr", num_lambda=NUM_LAMBDA, chunk=3),
}


@pytest.fixture(scope="module", params=["sdtt", pytest.param("tauldr", marks=pytest.mark.slow),
                                        pytest.param("tauldr_chunked", marks=pytest.mark.slow)])
def config(request):
    return CONFIGS[request.param]


@pytest.fixture(scope="module")
def reference(setup, config):
    return _per_shard_mean_reference(setup, config, jax.random.key(1))


def test_jit_with_sharded_batch_equals_single_device(setup, config):
    """Same key, same global batch: the jitted loss with x0 split over 8 devices is the one-device loss."""
    vg = jit(_value_and_grad(setup, config))
    key = jax.random.key(1)
    (loss_1, aux_1), grads_1 = vg(setup["student_params"], key, setup["x0"])

    mesh = make_mesh(DEVICES, 1)
    x0 = jax.device_put(setup["x0"], batch_sharding(mesh))
    params = jax.device_put(setup["student_params"], replicated(mesh))
    assert len(x0.addressable_shards) == DEVICES and x0.addressable_shards[0].data.shape == (PER_DEVICE, D)
    (loss_8, aux_8), grads_8 = vg(params, key, x0)

    np.testing.assert_allclose(float(loss_8), float(loss_1), **TOL)
    _assert_tree_close(aux_8, aux_1)
    _assert_tree_close(grads_8, grads_1)
    _assert_nontrivial(grads_1)
    (loss_other, _), _ = vg(setup["student_params"], jax.random.key(2), setup["x0"])
    assert abs(float(loss_other) - float(loss_1)) > 1e-6  # the key matters: equal losses are not an accident


def _shard_map_step(setup, config, mesh, check_vma):
    """Per-device value_and_grad under shard_map with the two pmean placements each check_vma mode needs.

    check_vma=False (the classic pmap-style loop): grad of the local loss, then pmean of loss and grads.
    check_vma=True: the params are replicated (invariant), so the transpose of their implicit pvary already
    psums the local gradients; the loop differentiates pmean(local loss) instead of pmean-ing the gradients.
    """
    loss_fn = _loss_fn(setup, config)

    def local(key, params, x0):
        key = jax.random.fold_in(key, jax.lax.axis_index(BATCH_AXES))
        if check_vma:
            def global_loss(p):
                loss, _ = loss_fn(key, p, x0)
                return jax.lax.pmean(loss, BATCH_AXES), loss
            (mean, loss), grads = jax.value_and_grad(global_loss, has_aux=True)(params)
            return mean, grads, loss[None]
        (loss, _), grads = jax.value_and_grad(lambda p: loss_fn(key, p, x0), has_aux=True)(params)
        return jax.lax.pmean(loss, BATCH_AXES), jax.lax.pmean(grads, BATCH_AXES), loss[None]

    return jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(BATCH_AXES)),
                             out_specs=(P(), P(), P(BATCH_AXES)), check_vma=check_vma))


@pytest.mark.parametrize("check_vma", [False, True])
def test_shard_map_equals_mean_over_shards(setup, config, reference, check_vma):
    ref_losses, ref_grads = reference
    mesh = make_mesh(DEVICES, 1)
    x0 = jax.device_put(setup["x0"], NamedSharding(mesh, P(BATCH_AXES)))
    step = _shard_map_step(setup, config, mesh, check_vma)
    loss, grads, local_losses = step(jax.random.key(1), setup["student_params"], x0)

    np.testing.assert_allclose(np.asarray(local_losses), ref_losses, **TOL)  # device i used fold_in(key, i)
    np.testing.assert_allclose(float(loss), ref_losses.mean(), **TOL)
    _assert_tree_close(grads, ref_grads)
    _assert_nontrivial(ref_grads)
    assert np.ptp(ref_losses) > 1e-6  # distinct shard losses: the per-device keys and shards really differ


def test_pmap_equals_mean_over_shards(setup, config, reference):
    ref_losses, ref_grads = reference
    loss_fn = _loss_fn(setup, config)

    # A user's pmap loop, unchanged. The outer jit only carries the compile options: this JAX implements pmap as
    # jit(shard_map(check_vma=False)), so jit-of-pmap lowers to the same program.
    @jit
    @functools.partial(jax.pmap, axis_name="batch", in_axes=(None, None, 0))
    def step(key, params, x0):
        key = jax.random.fold_in(key, jax.lax.axis_index("batch"))
        (loss, _), grads = jax.value_and_grad(lambda p: loss_fn(key, p, x0), has_aux=True)(params)
        return loss, jax.lax.pmean(loss, "batch"), jax.lax.pmean(grads, "batch")

    local_losses, loss, grads = step(jax.random.key(1), setup["student_params"],
                                     setup["x0"].reshape(DEVICES, PER_DEVICE, D))
    np.testing.assert_allclose(np.asarray(local_losses), ref_losses, **TOL)
    np.testing.assert_allclose(np.asarray(loss), np.full(DEVICES, ref_losses.mean()), **TOL)
    for i in range(DEVICES):  # every replica holds the same mean gradient
        _assert_tree_close(jax.tree.map(lambda g: g[i], grads), ref_grads)
