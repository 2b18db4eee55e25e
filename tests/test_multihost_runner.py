"""The real runner (`python -m experiments.run`) as 2 local processes (127.0.0.1) on a tiny quickstart config: it
finishes every stage, process 0 alone writes the shared files, and the teacher it trains equals a 1-process run
with the same global batches on as many devices."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from di4c_jax.parallel import detected_cluster, initialize_distributed

ROOT = Path(__file__).parent.parent
TINY = ["--config.model.overrides.embed_dim=4", "--config.model.overrides.hidden=16",
        "--config.model.overrides.num_layers=1", "--config.model.overrides.time_dim=8",
        "--config.model.overrides.lam_dim=8",
        "--config.teacher.steps=8", "--config.teacher.batch_size=32", "--config.teacher.checkpoint_every=4",
        "--config.teacher.log_every=4",
        "--config.distill.steps=2", "--config.distill.batch_size=8", "--config.distill.checkpoint_every=2",
        "--config.distill.log_every=2",
        "--config.sample.teacher_steps=(1,)", "--config.sample.student_steps=(1,)", "--config.sample.hybrid=()",
        "--config.sample.num_samples=512", "--config.sample.batch_size=256"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runner(workdir, devices, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    cmd = [sys.executable, "-m", "experiments.run", "--config", str(ROOT / "experiments/configs/quickstart.py"),
           "--workdir", str(workdir), *TINY, *extra]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs, timeout=900):
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err[-4000:]
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs


def _teacher_params(workdir):
    from experiments import stages
    from experiments.setup import setup_from_workdir

    return jax.tree.map(np.asarray, stages.load_teacher(setup_from_workdir(workdir), weights="raw").params)


@pytest.mark.slow
def test_two_process_runner_matches_one_process(tmp_path):
    port = _free_port()
    multi, single = tmp_path / "multi", tmp_path / "single"
    procs = [_runner(multi, 1, "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2",
                     "--process_id", str(i)) for i in range(2)]
    procs.append(_runner(single, 2))
    outs = _finish(procs)
    assert "| teacher" in outs[0] and "| teacher" not in outs[1]  # the results table: printed by process 0 only
    assert "2 processes (explicit), 2 devices" in outs[0]

    results = json.loads((multi / "results.json").read_text())
    assert {(r["model"], r["num_steps"]) for r in results["rows"]} == {("teacher", 1), ("student", 1)}
    assert len((multi / "command.txt").read_text().splitlines()) == 1  # written once, not once per process
    assert len((multi / "teacher" / "metrics.jsonl").read_text().splitlines()) == 2  # steps 4 and 8, once each

    got, want = _teacher_params(multi), _teacher_params(single)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)
    assert not np.array_equal(jax.tree.leaves(want)[0], 0)
    # and the samples agree too: same params, same keys
    np.testing.assert_array_equal(np.load(multi / "samples" / "student_1steps.npy"),
                                  np.load(single / "samples" / "student_1steps.npy"))


def test_partial_explicit_settings_are_an_error_naming_what_is_missing(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "DI4C_NUM_PROCESSES", "DI4C_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=r"missing \['process_id'\]"):
        initialize_distributed(coordinator_address="127.0.0.1:1234", num_processes=2)
    with pytest.raises(ValueError, match="process_id must lie in"):
        initialize_distributed(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=2)
    with pytest.raises(ValueError, match="host:port"):
        initialize_distributed(coordinator_address="127.0.0.1", num_processes=2, process_id=0)
    monkeypatch.setenv("DI4C_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="DI4C_NUM_PROCESSES must be an integer, got 'two'"):
        initialize_distributed()
    monkeypatch.delenv("DI4C_NUM_PROCESSES")
    assert initialize_distributed().mode == "none"  # nothing set, no launcher: one process
    assert initialize_distributed(coordinator_address="127.0.0.1:1", num_processes=1, process_id=0).mode == "none"


def test_launchers_are_detected_from_their_environment():
    assert detected_cluster({}) is None
    assert detected_cluster({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) == "slurm"
    assert detected_cluster({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None  # a single-task job
    assert detected_cluster({"OMPI_COMM_WORLD_SIZE": "2"}) == "openmpi"
    assert detected_cluster({"TPU_WORKER_HOSTNAMES": "a,b"}) == "tpu"
    assert detected_cluster({"TPU_WORKER_HOSTNAMES": "a"}) is None
