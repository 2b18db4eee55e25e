"""The sharded train step is the single-device step; FSDP really shards; non-finite steps leave the state alone."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from _train_toy import CLASSES, init_params, loss_fn, make_data
from di4c_jax.parallel import batch_sharding, make_mesh, replicated
from di4c_jax.train import OptimConfig, create_train_state, lr_schedule, make_optimizer, make_train_step

CFG = OptimConfig(learning_rate=1e-2, warmup_steps=2, grad_clip=1.0, ema_decay=0.99)


def _batch(n=32):
    x, y = make_data()
    return {"x": jnp.asarray(x[:n]), "y": jnp.asarray(y[:n])}


def _run(mesh, steps=3, frozen=None):
    tx = make_optimizer(CFG)
    state, shardings = create_train_state(init_params, tx, jax.random.key(0), mesh)
    frozen_sh = None if mesh is None or frozen is None else jax.tree.map(lambda _: replicated(mesh), frozen)
    step = make_train_step(loss_fn, tx, ema_decay=CFG.ema_decay, lr_schedule=lr_schedule(CFG), mesh=mesh,
                           state_shardings=shardings, frozen_shardings=frozen_sh)
    batch = _batch()
    if mesh is not None:
        batch = jax.device_put(batch, batch_sharding(mesh))
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch, frozen)
        losses.append(float(metrics["loss"]))
    return state, losses


@pytest.fixture(scope="module")
def single_device():
    return _run(None)


@pytest.mark.parametrize("data,fsdp", [(8, 1), (4, 2)])
def test_sharded_step_equals_single_device(single_device, data, fsdp):
    ref_state, ref_losses = single_device
    state, losses = _run(make_mesh(data, fsdp))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6, atol=1e-6)
    assert int(state["step"]) == 3
    for name in ("params", "ema_params", "opt_state"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
                     state[name], ref_state[name])
    # the loss moved: the comparison is not between two untouched initialisations
    assert losses[-1] < losses[0]


def test_fsdp_placement_is_sharded():
    mesh = make_mesh(4, 2)
    tx = make_optimizer(CFG)
    state, _ = create_train_state(init_params, tx, jax.random.key(0), mesh)
    w1 = state["params"]["w1"]  # [64, 128]: largest divisible dim (128) over 'fsdp'
    assert w1.sharding.spec == P(None, "fsdp")
    assert {s.data.shape for s in w1.addressable_shards} == {(64, 64)}
    mu_w1 = state["opt_state"][1][0].mu["w1"]  # Adam moment follows its parameter
    assert mu_w1.sharding.spec == P(None, "fsdp")
    assert {s.data.shape for s in mu_w1.addressable_shards} == {(64, 64)}
    b2 = state["params"]["b2"]  # small leaf: replicated
    assert b2.sharding.spec == P() and {s.data.shape for s in b2.addressable_shards} == {(CLASSES,)}
    # the updated state keeps the layout (out_shardings) and the donated input is consumed
    step = make_train_step(loss_fn, tx, ema_decay=0.99, mesh=mesh,
                           state_shardings=jax.tree.map(lambda x: x.sharding, state))
    new_state, _ = step(state, jax.device_put(_batch(), batch_sharding(mesh)))
    assert new_state["ema_params"]["w1"].sharding.spec == P(None, "fsdp")
    assert w1.is_deleted()


def test_frozen_argument_is_used_and_not_donated(single_device):
    frozen = {"bias": jnp.linspace(-1.0, 1.0, CLASSES)}
    _, with_bias = _run(make_mesh(8, 1), steps=1, frozen=frozen)
    assert with_bias[0] != pytest.approx(single_device[1][0])
    assert not frozen["bias"].is_deleted()


def test_step_key_is_folded_with_step():
    """Same batch, consecutive steps: the noise differs, so a fixed-params loss would differ too."""
    tx = make_optimizer(OptimConfig(learning_rate=0.0))
    state, _ = create_train_state(init_params, tx, jax.random.key(1))
    step = make_train_step(loss_fn, tx, ema_decay=0.99)
    state, m1 = step(state, _batch())
    _, m2 = step(state, _batch())
    assert float(m1["loss"]) != float(m2["loss"])


def test_non_finite_loss_keeps_state_and_reports():
    tx = make_optimizer(CFG)
    state, _ = create_train_state(init_params, tx, jax.random.key(0))
    before = jax.tree.map(np.asarray, state)

    def nan_loss(key, params, batch, frozen):
        loss, aux = loss_fn(key, params, batch, frozen)
        return loss * jnp.nan, aux

    step = make_train_step(nan_loss, tx, ema_decay=0.99)
    after, metrics = step(state, _batch())
    assert not bool(metrics["finite"]) and np.isnan(float(metrics["loss"]))
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, after), before)
