"""Mutual information I(x0^d; x_t^d) of a process: closed forms and the data processing inequality."""
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax.processes import DiscreteGaussian, Masked, Uniform
from di4c_jax.processes.information import mutual_information

TIMES = jnp.asarray([0.0, 0.1, 0.3, 0.5, 0.8, 1.0])


def entropy(p):
    p = np.asarray(p, np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def test_masked_closed_form():
    """A masked x_t either shows x0 (prob 1 - m_t) or nothing: I = (1 - m_t) H(x0)."""
    process = Masked(vocab_size=4, schedule="loglinear")
    p0 = np.array([[0.1, 0.2, 0.3, 0.4, 0.0], [0.7, 0.1, 0.1, 0.1, 0.0]])  # the mask (last) class unused
    got = np.asarray(mutual_information(process, TIMES, x0_probs=p0))
    want = (1.0 - np.asarray(process.mask_prob(TIMES)))[:, None] * entropy(p0)[None]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_uniform_closed_form():
    """Uniform x0, x_t = x0 with prob a else uniform: I = log K - H(x_t | x0)."""
    k = 6
    process = Uniform(num_states=k, schedule="linear")
    got = np.asarray(mutual_information(process, TIMES, x0_probs=jnp.full((k,), 1.0 / k)))[:, 0]
    a = np.asarray(process.keep_prob(TIMES), np.float64)
    stay, move = a + (1 - a) / k, (1 - a) / k
    h = -stay * np.log(stay) - np.where(move > 0, (k - 1) * move * np.log(np.where(move > 0, move, 1.0)), 0.0)
    np.testing.assert_allclose(got, np.log(k) - h, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("time_base", [0.2, 3.0])
def test_gaussian_is_entropy_at_zero_and_falls(time_base):
    """x0 -> x_s -> x_t is a Markov chain, so the information cannot grow with t; at t = 0 it is H(x0)."""
    process = DiscreteGaussian(num_states=17, rate_sigma=2.0, q_sigma=64.0, time_base=time_base)
    p0 = np.random.default_rng(0).dirichlet(np.ones(17), size=3)
    times = jnp.linspace(0.0, 1.0, 21)
    got = np.asarray(mutual_information(process, times, x0_probs=p0))
    np.testing.assert_allclose(got[0], entropy(p0), rtol=1e-4)
    assert np.all(np.diff(got, axis=0) <= 1e-4), got
    assert got[-1].max() < 1e-2


def test_gaussian_time_scale_of_the_digits_config():
    """CIFAR-10's time_base 3 on 17 levels leaves no information past t = 0.5; 0.2 keeps some until t = 0.75."""
    uniform = jnp.full((17,), 1.0 / 17)
    info = {tb: np.asarray(mutual_information(DiscreteGaussian(num_states=17, rate_sigma=2.0, q_sigma=64.0,
                                                                time_base=tb), jnp.asarray([0.5, 0.75]),
                                              x0_probs=uniform))[:, 0] for tb in (0.2, 3.0)}
    assert info[3.0][0] < 1e-4 and info[0.2][0] > 0.1 and info[0.2][1] > 5e-3


def test_bad_shape_names_the_states():
    with pytest.raises(ValueError, match="K = 5"):
        mutual_information(Masked(vocab_size=4), TIMES, x0_probs=jnp.ones((4,)) / 4)


def test_command_line_on_the_quickstart(capsys):
    """The quickstart's masked loglinear process keeps a share 1 - (1 - eps) t of the data's information."""
    from experiments import information

    status = information.main(["information", "--config", "experiments/configs/quickstart.py",
                               "--config.data.num_train=2000", "--times", "0.25,0.5,1"])
    assert status == 0
    rows = [line.split("|")[1:4] for line in capsys.readouterr().out.splitlines() if line.startswith("| 0.") or
            line.startswith("| 1 ")]
    shares = {float(t): float(share) for t, _, share in rows}
    assert shares == pytest.approx({t: 1 - (1 - 1e-3) * t for t in (0.25, 0.5, 1.0)}, rel=1e-3, abs=1e-5)


def test_command_line_rejects_times_outside_the_unit_interval(capsys):
    from experiments import information

    status = information.main(["information", "--config", "experiments/configs/quickstart.py",
                               "--config.data.num_train=2000", "--times", "0.5,1.5"])
    assert status == 2 and "[1.5]" in capsys.readouterr().err
