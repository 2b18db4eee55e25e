"""Training loop: exact resume (in-process and after kill -9), non-finite stop, metrics files."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _train_toy import data_iterator, init_params, loss_fn, make_data
from di4c_jax.parallel import make_mesh
from di4c_jax.train import (Checkpointer, MetricWriter, OptimConfig, abstract_state_of, create_train_state,
                            lr_schedule, make_optimizer, make_train_step, train)

CFG = OptimConfig(learning_rate=3e-3, warmup_steps=2, ema_decay=0.99)
TX = make_optimizer(CFG)
MESH = make_mesh(4, 2)
STATE0, SHARDINGS = create_train_state(init_params, TX, jax.random.key(0), MESH)
STEP = make_train_step(loss_fn, TX, ema_decay=CFG.ema_decay, lr_schedule=lr_schedule(CFG), mesh=MESH,
                       state_shardings=SHARDINGS)
TESTS = Path(__file__).parent


def _fresh_state():
    return jax.tree.map(jnp.copy, STATE0)  # the step donates its input: every run needs its own buffers


def _run(ckpt_dir, num_steps, writer=None, log_every=2):
    """Train from a fresh state (or the latest checkpoint); returns (final state, number of steps run)."""
    state = _fresh_state()
    calls = []

    def counting_step(*args):
        calls.append(1)
        return STEP(*args)

    x, y = make_data()
    it = data_iterator(x, y, batch_size=16, seed=1)
    ckpt = Checkpointer(ckpt_dir, max_to_keep=2, save_every=3) if ckpt_dir is not None else None
    try:
        return train(state, counting_step, it, num_steps, ckpt, writer, log_every=log_every, progress=False), len(calls)
    finally:
        if ckpt is not None:
            ckpt.close()


def _assert_bitwise_equal(a, b):
    jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), a, b)


def test_resume_continues_exactly(tmp_path):
    full, _ = _run(None, 8)
    _run(tmp_path, 5)  # stops after step 5 (checkpoints 3 and 5)
    resumed, steps_run = _run(tmp_path, 8)  # restores step 5 and the data position
    assert steps_run == 3 and int(resumed["step"]) == 8
    _assert_bitwise_equal(resumed, full)


def test_non_finite_loss_stops_naming_the_step_and_never_saves_it(tmp_path):
    x, y = make_data()
    x = x.copy()
    batch_size = 16
    bad_step = 7
    # unshuffled data so that the NaN row is in the batch of step 7
    x[(bad_step - 1) * batch_size] = np.nan
    it = iter(grain.MapDataset.range(len(x)).batch(batch_size).map(lambda i: {"x": x[i], "y": y[i]}))
    state = _fresh_state()
    with Checkpointer(tmp_path, save_every=5, async_=False) as ckpt:
        with pytest.raises(FloatingPointError, match=f"at step {bad_step}\\b"):
            train(state, STEP, it, 20, ckpt, log_every=10, progress=False)
        assert ckpt.all_steps() == [5]
        restored, step = ckpt.restore_latest(abstract_state_of(STATE0))
    assert step == 5 and all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(restored))


def test_metrics_jsonl_and_tensorboard(tmp_path):
    with MetricWriter(tmp_path) as writer:
        _run(None, 4, writer=writer, log_every=2)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    assert {"loss", "accuracy", "grad_norm", "lr", "examples_per_sec"} <= set(lines[0])
    assert lines[0]["lr"] == pytest.approx(CFG.learning_rate * 0.5 / 2)  # mean of warm-up lrs 0 and lr/2
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


def test_metrics_jsonl_lines_are_on_disk_while_training_runs(tmp_path):
    with MetricWriter(tmp_path) as writer:
        writer.write_scalars(1, {"loss": 0.5})
        assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "loss": 0.5}


def _worker(workdir, num_steps, out, sleep=0.0, devices=8, mesh="4x2"):
    env = {**os.environ, "PYTHONPATH": f"{TESTS.parent}{os.pathsep}{TESTS}", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "TRAIN_MESH": mesh}
    cmd = [sys.executable, str(TESTS / "_train_worker.py"), str(workdir), str(num_steps), "4", str(out), str(sleep)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_kill9_then_rerun_matches_uninterrupted_run_bitwise(tmp_path):
    num_steps = 20
    reference = _worker(tmp_path / "ref", num_steps, tmp_path / "ref.npz")
    victim = _worker(tmp_path / "run", num_steps, tmp_path / "run.npz", sleep=0.3)
    ckpt_dir = tmp_path / "run" / "ckpt"
    deadline = time.time() + 240
    while not (ckpt_dir / "8").is_dir() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.1)
    assert victim.poll() is None, "the run ended before it could be killed:\n" + victim.stdout.read()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "run.npz").exists()

    rerun = _worker(tmp_path / "run", num_steps, tmp_path / "run.npz")
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out
    start = int(out.split("start ")[1].split()[0])
    assert 8 <= start < num_steps, out
    ref_out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_out
    ref, run = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "run.npz")
    assert sorted(ref.files) == sorted(run.files) and len(ref.files) > 5
    for name in ref.files:
        np.testing.assert_array_equal(run[name], ref[name], err_msg=name)
    assert int(run["['step']"]) == num_steps


def test_resumed_metrics_hold_each_step_once(tmp_path, capsys):
    with MetricWriter(tmp_path / "logs", tensorboard=False) as writer:
        _run(tmp_path / "ckpt", 5, writer, log_every=1)          # checkpoints 3 and 5
    # a crash after step 5's metrics but before its checkpoint: the rerun restores step 3 and redoes 4 and 5
    Checkpointer(tmp_path / "ckpt", save_every=3)._manager.delete(5)
    with open(tmp_path / "logs" / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')                                # a line torn by the kill
    with MetricWriter(tmp_path / "logs", tensorboard=False) as writer:
        _, steps_run = _run(tmp_path / "ckpt", 8, writer, log_every=1)
    assert steps_run == 5
    assert f"resuming {tmp_path / 'ckpt'} at step 3 of 8" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def _run_until(ckpt_dir, num_steps, on_call):
    """Like `_run`, with `on_call(n, checkpointer)` before the n-th step (1-based)."""
    state, calls = _fresh_state(), []
    x, y = make_data()
    it = data_iterator(x, y, batch_size=16, seed=1)
    ckpt = Checkpointer(ckpt_dir, max_to_keep=5, save_every=3)

    def step(*args):
        calls.append(1)
        on_call(len(calls), ckpt)
        return STEP(*args)

    try:
        return train(state, step, it, num_steps, ckpt, log_every=2, progress=False)
    finally:
        ckpt.close()


@pytest.mark.skipif(__import__("threading").current_thread() is not __import__("threading").main_thread(),
                    reason="signal handlers need the main thread")
def test_sigterm_checkpoints_the_current_step_and_stops(tmp_path):
    from di4c_jax.train import Preempted

    def sigterm_at_5(n, _):
        if n == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Preempted, match=r"stopped by SIGTERM at step 5 of 8, checkpoint saved in .*ckpt"):
        _run_until(tmp_path / "ckpt", 8, sigterm_at_5)
    assert Checkpointer(tmp_path / "ckpt").all_steps() == [3, 5]    # 5 is not a periodic step
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL       # the handler is gone again
    full, _ = _run(None, 8)
    resumed, steps_run = _run(tmp_path / "ckpt", 8)
    assert steps_run == 3
    _assert_bitwise_equal(resumed, full)


def test_a_failed_save_names_the_step_and_keeps_the_previous_checkpoint(tmp_path):
    def disk_full_at_6(n, ckpt):
        if n == 6:
            def no_space(*args, **kwargs):
                raise OSError(28, "No space left on device")
            ckpt._manager.save = no_space

    with pytest.raises(OSError, match=r"saving step 6 into .*ckpt failed \(OSError: \[Errno 28\] No space left on "
                                      r"device\); the newest intact checkpoint is step 3"):
        _run_until(tmp_path / "ckpt", 8, disk_full_at_6)
    restored = Checkpointer(tmp_path / "ckpt").restore_latest(abstract_state_of(_fresh_state()))
    assert restored is not None and restored[1] == 3 and int(restored[0]["step"]) == 3


@pytest.mark.slow
def test_resume_on_half_the_devices_continues_the_same_data_order(tmp_path):
    """8 devices (4 data x 2 fsdp) to step 8, then 4 devices (2 x 2) to step 16: Orbax reshards the state, the
    iterator position is the global one, so the result matches 16 steps on 8 devices up to float reduction order."""
    runs = [_worker(tmp_path / "ref", 16, tmp_path / "ref.npz"), _worker(tmp_path / "run", 8, tmp_path / "half.npz")]
    for proc in runs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    resumed = _worker(tmp_path / "run", 16, tmp_path / "run.npz", devices=4, mesh="2x2")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and "start 8" in out, out
    ref, run = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "run.npz")
    assert sorted(ref.files) == sorted(run.files) and int(run["['step']"]) == 16
    for name in ref.files:
        np.testing.assert_allclose(run[name], ref[name], rtol=2e-4, atol=2e-5, err_msg=name)
    half = np.load(tmp_path / "half.npz")
    assert not np.allclose(half["['params']['w1']"], run["['params']['w1']"])  # it did train on after the resume
