"""Extending di4c-jax without touching the package: a toy objective and a toy forward process, defined and
registered here, run through the experiment runner on a tiny config."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax.losses import OBJECTIVES, Objective, kl_sum
from di4c_jax.processes import PROCESSES, Process, sample_categorical, safe_log
from di4c_jax.processes.base import as_batch_times, denoise_x0
from experiments.configs import quickstart
from experiments.run import run

pytestmark = pytest.mark.slow


@dataclasses.dataclass(frozen=True)
class Resample:
    """Toy process: each dimension keeps its value w.p. 1 - t, else is redrawn uniformly (generic matrix code)."""

    num_states: int

    default_final = "sample"
    absorbing = False
    has_generator = False

    def transition(self, t, s=None):
        t = jnp.atleast_1d(jnp.asarray(t, jnp.float32))
        keep = 1.0 - t if s is None else (1.0 - t) / (1.0 - jnp.broadcast_to(s, t.shape))
        eye = jnp.eye(self.num_states, dtype=jnp.float32)
        return keep[:, None, None] * eye + (1.0 - keep[:, None, None]) / self.num_states

    def sample_xt(self, key, x0, t):
        rows = jnp.take_along_axis(self.transition(as_batch_times(t, x0.shape[0])), x0[:, :, None], axis=1)
        return sample_categorical(key, safe_log(rows))

    def sample_prior(self, key, shape):
        return jax.random.randint(key, shape, 0, self.num_states, jnp.int32)

    def prior_logprobs(self):
        return jnp.full((self.num_states,), -np.log(self.num_states), jnp.float32)

    def x0_logprobs(self, logits, x_t):
        return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)

    def reverse_step_logprobs(self, x_t, logp_x0, t, s):
        batch = x_t.shape[0]
        t, s = as_batch_times(t, batch), as_batch_times(s, batch)
        at_xt = lambda q: jnp.take_along_axis(jnp.swapaxes(q, 1, 2), x_t[:, :, None], axis=1)  # noqa: E731
        w = jnp.exp(logp_x0) / at_xt(self.transition(t))                  # p(x0) / q_t(x_t | x0)
        mix = jnp.einsum("bdx,bxy->bdy", w, self.transition(s))           # sum_x0 w q_s(y | x0)
        return jax.nn.log_softmax(safe_log(mix * at_xt(jnp.swapaxes(self.transition(t, s), 1, 2))), axis=-1)

    def reverse_step(self, key, x_t, logp_x0, t, s):
        return sample_categorical(key, self.reverse_step_logprobs(x_t, logp_x0, t, s))

    def denoise(self, key, x_t, logp_x0, mode="sample"):
        return denoise_x0(key, logp_x0, mode)

    def default_time_grid(self, num_steps):
        return jnp.linspace(1.0, 0.0, num_steps + 1, dtype=jnp.float32)


@dataclasses.dataclass(frozen=True)
class MarginalKLConfig:
    min_time: float = 0.1


def marginal_kl_loss(key, *, student, student_params, teacher, teacher_params, process, x0, config, cond=None):
    """Toy objective: KL(teacher || one student component) at x_t, t ~ U[min_time, 1]."""
    k_t, k_x, k_lam = jax.random.split(key, 3)
    t = jax.random.uniform(k_t, (x0.shape[0],), minval=config.min_time)
    x_t = process.sample_xt(k_x, x0, t)
    target = jax.lax.stop_gradient(teacher.logprobs(process, teacher_params, x_t, t, None, cond))
    logp = student.logprobs(process, student_params, x_t, t, student.draw_lam(k_lam, x0.shape[0]), cond)
    loss = jnp.mean(kl_sum(target, logp))
    return loss, {"loss": loss, "toy_kl": loss}


@pytest.fixture
def registered():
    PROCESSES.register("resample", Resample)
    OBJECTIVES.register("marginal_kl", Objective(marginal_kl_loss,
                                                 lambda options, round_index: MarginalKLConfig(**options)))
    yield
    PROCESSES.unregister("resample")
    OBJECTIVES.unregister("marginal_kl")


def test_toy_process_and_objective_run_through_the_runner(registered, tmp_path):
    assert isinstance(Resample(3), Process)
    c = quickstart.get_config()
    c.progress = False
    c.data.update(num_train=1_000, num_eval=100)
    c.process = dict(kind="resample")
    c.model.overrides = dict(embed_dim=4, hidden=16, num_layers=1, time_dim=8, lam_dim=8)
    c.teacher.update(steps=6, batch_size=16, checkpoint_every=3, log_every=3, loss=dict(objective="x0_ce"))
    c.distill = dict(objective="marginal_kl", loss=dict(min_time=0.2), steps=4, batch_size=8, checkpoint_every=2,
                     log_every=2, optim=dict(learning_rate=1e-3))
    c.sample.update(teacher_steps=(2,), student_steps=(1, 2), hybrid=((2, 1),), num_samples=500, batch_size=500)
    results = run(c, tmp_path)
    assert {(r["model"], r["num_steps"]) for r in results["rows"]} == {
        ("teacher", 2), ("student", 1), ("student", 2), ("hybrid", 2)}
    assert all(0.0 <= r["tv"] <= 1.0 for r in results["rows"])
    logged = [json.loads(line) for line in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    assert logged and all("toy_kl" in row and "consis" not in row for row in logged if "loss" in row)
    tokens = np.load(tmp_path / "samples" / "student_2steps.npy")
    assert tokens.shape == (500, 6) and tokens.min() >= 0 and tokens.max() < 3


def test_unregistered_names_are_errors_that_list_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown process 'resample'.*registered: \['gaussian', 'masked'"):
        PROCESSES.get("resample")
    with pytest.raises(ValueError, match=r"unknown distillation objective 'marginal_kl'.*'cdm', 'di4c', 'sdtt'"):
        OBJECTIVES.get("marginal_kl")
