"""Two localhost processes (jax.distributed, 2 CPU devices each) train together and match a one-process run."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from _two_process_worker import build, eval_loss
from di4c_jax.parallel import make_mesh
from di4c_jax.train import train

TESTS = Path(__file__).parent
NUM_STEPS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_training_agrees_with_single_process(tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{TESTS.parent}{os.pathsep}{TESTS}", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [subprocess.Popen([sys.executable, str(TESTS / "_two_process_worker.py"), str(i), str(port),
                               str(tmp_path), str(NUM_STEPS)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-3000:]
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [o["process"] for o in outputs] == [0, 1]
    assert outputs[0]["loss"] == outputs[1]["loss"]
    assert outputs[0]["param_sum"] == outputs[1]["param_sum"]
    assert outputs[0]["steps"] == [3, 6]
    assert (tmp_path / "logs" / "metrics.jsonl").exists()  # written by process 0 only, once per log step
    assert len((tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()) == 2

    # the same global batches on 4 devices of this one process give the same result
    mesh = make_mesh(2, 2, devices=jax.devices()[:4])
    state, step, it = build(mesh, 0, 1)
    state = train(state, step, it, NUM_STEPS, progress=False)
    assert eval_loss(mesh, state["params"], 0, 1) == pytest.approx(outputs[0]["loss"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 1], ids=["coordinator killed", "worker killed"])
def test_when_one_process_dies_the_other_ends_with_an_error_in_bounded_time(victim):
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": f"{TESTS.parent}{os.pathsep}{TESTS}", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    port, heartbeat = _free_port(), 10
    procs = [subprocess.Popen([sys.executable, "-u", str(TESTS / "_stall_worker.py"), str(i), str(port),
                               str(heartbeat)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    survivor = procs[1 - victim]
    for line in survivor.stdout:  # the processes have joined once it prints this
        if line.strip() == "training":
            break
    time.sleep(2.0)
    procs[victim].send_signal(signal.SIGKILL)
    killed_at = time.time()
    out, _ = survivor.communicate(timeout=heartbeat + 60)
    waited = time.time() - killed_at
    procs[victim].wait()
    assert survivor.returncode != 0 and waited < heartbeat + 30, (survivor.returncode, waited)
    assert "another task died" in out, out[-2000:]
