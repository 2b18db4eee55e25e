"""Optimiser chain, learning-rate schedules and EMA against closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax.train import (OptimConfig, ema_decay_at, ema_update, init_train_state, key_data, lr_schedule,
                            make_optimizer)


def test_constant_schedule_with_warmup_matches_transformers():
    sched = lr_schedule(OptimConfig(learning_rate=1.0, warmup_steps=4))
    np.testing.assert_allclose([float(sched(i)) for i in range(6)], [0, 0.25, 0.5, 0.75, 1, 1])
    no_warmup = lr_schedule(OptimConfig(learning_rate=0.5))
    assert [float(no_warmup(i)) for i in (0, 10**6)] == [0.5, 0.5]


def test_cosine_schedule_endpoints():
    sched = lr_schedule(OptimConfig(learning_rate=1.0, warmup_steps=2, schedule="cosine", decay_steps=10,
                                    end_learning_rate=0.1))
    assert float(sched(0)) == 0.0 and float(sched(2)) == pytest.approx(1.0)
    assert float(sched(6)) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-5)
    assert float(sched(10)) == pytest.approx(0.1)


@pytest.mark.parametrize("kwargs", [dict(schedule="linear"), dict(schedule="cosine", decay_steps=0),
                                    dict(warmup_steps=-1)])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        OptimConfig(**kwargs)


def test_ema_warmup_decay_closed_form():
    assert float(ema_decay_at(1, 0.9999)) == pytest.approx(2 / 11)
    assert float(ema_decay_at(10**6, 0.9999)) == pytest.approx(0.9999)
    ema = ema_update({"w": jnp.array(1.0)}, {"w": jnp.array(0.0)}, 1, 0.9999)
    assert float(ema["w"]) == pytest.approx(2 / 11)  # shadow - (1 - d)(shadow - param)


def test_adam_with_clipping_matches_hand_computation():
    """Two updates of clip(1.0) -> Adam, in numpy (torch.optim.Adam convention: eps outside the sqrt)."""
    cfg = OptimConfig(learning_rate=0.1, grad_clip=1.0, b1=0.9, b2=0.999, eps=1e-8)
    tx = make_optimizer(cfg)
    params = {"w": jnp.array([1.0, -2.0])}
    grads = [np.array([3.0, 4.0]), np.array([0.1, -0.2])]  # the first has norm 5 -> scaled to norm 1
    state = tx.init(params)
    p, m, v = np.array([1.0, -2.0]), np.zeros(2), np.zeros(2)
    for t, g in enumerate(grads, start=1):
        updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = jax.tree.map(lambda a, u: a + u, params, updates)
        g = g / max(1.0, np.linalg.norm(g))
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2
        p = p - 0.1 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(np.asarray(params["w"]), p, rtol=1e-5)


def test_adamw_decays_weights():
    tx = make_optimizer(OptimConfig(learning_rate=0.1, weight_decay=0.5, grad_clip=None))
    params = {"w": jnp.array([2.0])}
    updates, _ = tx.update({"w": jnp.array([0.0])}, tx.init(params), params)
    assert float(updates["w"][0]) == pytest.approx(-0.1 * 0.5 * 2.0)


def test_init_state_layout_and_key_forms():
    tx = make_optimizer(OptimConfig())
    params = {"w": jnp.ones((2, 3))}
    state = init_train_state(params, tx, jax.random.key(7))
    assert set(state) == {"step", "params", "ema_params", "opt_state", "rng"}
    assert state["step"].dtype == jnp.int32 and int(state["step"]) == 0
    assert state["rng"].dtype == jnp.uint32 and state["rng"].shape == (2,)
    np.testing.assert_array_equal(state["rng"], key_data(jax.random.PRNGKey(7)))
    np.testing.assert_array_equal(state["ema_params"]["w"], params["w"])
