"""di4c_jax.train.distill_rounds: what each round trains from, with a recording stand-in for the training loop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax import Denoiser
from di4c_jax.losses import SDTTConfig
from di4c_jax.processes import Masked
from di4c_jax.train import distill_rounds


def _apply(params, x, t, lam, cond, *, rngs=None):
    return jnp.broadcast_to(params["w"], (*x.shape, 4))


TEACHER = Denoiser(_apply, num_states=4, mixture=False)
STUDENT = Denoiser(_apply, num_states=4, mixture=True)


def state(value):
    return {"params": {"w": jnp.full((4,), value)}, "ema_params": {"w": jnp.full((4,), value + 0.5)}}


def test_each_round_distils_the_previous_network_and_starts_from_it():
    seen = []

    def train_round(rnd):
        seen.append(rnd)
        init = rnd.init_params(jax.random.key(0))
        return state(float(init["w"][0]) + 10.0)  # "training" adds 10 to the starting weights

    states = distill_rounds(train_round, objective="sdtt", options=dict(dt=1 / 64), num_rounds=3,
                            process=Masked(vocab_size=3), teacher=TEACHER, teacher_state=state(1.0),
                            student=STUDENT, student_init=lambda key: {"w": jnp.zeros((4,)), "lam": jnp.ones(2)})
    assert [r.index for r in seen] == [1, 2, 3]
    assert seen[0].teacher is TEACHER and seen[1].teacher is STUDENT and seen[2].teacher is STUDENT
    # distilled: the previous network's EMA weights; started from: its raw weights (the references' choice)
    assert [float(r.teacher_params["w"][0]) for r in seen] == [1.5, 11.5, 21.5]
    assert [float(s["params"]["w"][0]) for s in states] == [11.0, 21.0, 31.0]
    np.testing.assert_allclose([r.config.dt for r in seen], [1 / 64, 2 / 64, 4 / 64])  # SDTT doubles its step
    assert all(isinstance(r.config, SDTTConfig) for r in seen)
    assert float(seen[0].init_params(jax.random.key(0))["lam"][0]) == 1.0  # new student leaves keep their init


def test_weights_choice_and_errors():
    seen = []
    distill_rounds(lambda rnd: seen.append(rnd) or state(0.0), objective="sdtt", options={}, num_rounds=1,
                   process=Masked(vocab_size=3), teacher=TEACHER, teacher_state=state(1.0), student=STUDENT,
                   student_init=lambda key: {"w": jnp.zeros((4,))}, teacher_weights="raw", init_from="ema")
    assert float(seen[0].teacher_params["w"][0]) == 1.0
    assert float(seen[0].init_params(jax.random.key(0))["w"][0]) == 1.5
    with pytest.raises(ValueError, match="init_from must be one of"):
        distill_rounds(lambda rnd: None, objective="sdtt", options={}, num_rounds=1, process=Masked(vocab_size=3),
                       teacher=TEACHER, teacher_state=state(1.0), student=STUDENT, student_init=None,
                       init_from="best")
    with pytest.raises(ValueError, match="unknown distillation objective 'sdt'"):
        distill_rounds(lambda rnd: None, objective="sdt", options={}, num_rounds=1, process=Masked(vocab_size=3),
                       teacher=TEACHER, teacher_state=state(1.0), student=STUDENT, student_init=None)
