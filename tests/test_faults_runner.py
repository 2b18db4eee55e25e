"""Faults at the runner level: kill -9 at points spread over every stage (teacher, both distillation rounds,
sampling, evaluation), then the same command resumes; SIGTERM stops cleanly with a checkpoint."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from _tiny_cli import TINY, TINY_DATA

ROOT = Path(__file__).parent.parent
LONGER = ["--config.teacher.steps=24", "--config.teacher.checkpoint_every=4", "--config.distill.steps=12",
          "--config.distill.checkpoint_every=3", "--config.distill.rounds=2", "--config.sample.teacher_steps=(2,4)"]
# (stage line printed by the runner, seconds after it) at which the run is killed: 10 points over every stage. On an
# idle 2-core machine with the suite's compilation cache the whole run takes ~19 s, and a relaunch's teacher stage
# 5-8 s and each round 1-4 s, so the delays stay inside those (longer ones let the stage finish first).
KILL_POINTS = [("stage train_teacher", 1.0), ("stage train_teacher", 2.5), ("stage train_teacher", 4.0),
               ("round 1", 0.5), ("round 1", 1.5), ("round 2", 0.5), ("round 2", 1.5),
               ("stage sample", 0.3), ("stage sample", 1.0), ("stage evaluate", 0.3)]


def _start(workdir):
    # the relaunches share the test run's compilation cache (conftest), so each compiles from it
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    tiny = [arg for arg in TINY if not arg.startswith("--config.sample.teacher_steps")]  # LONGER sets it
    cmd = [sys.executable, "-m", "experiments.run", f"--workdir={workdir}", *tiny, *TINY_DATA, *LONGER]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run_to_end(workdir):
    proc = _start(workdir)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def _kill_at(workdir, marker, delay):
    """Start the command; SIGKILL it `delay` s after a line containing `marker`. Returns whether it was killed
    (False: it finished or passed that stage first)."""
    proc, seen = _start(workdir), threading.Event()
    lines = []

    def read():
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.time() + 300
    while not seen.is_set() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if seen.is_set():
        time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join(timeout=10)
    return killed


def _params(stage_dir):
    steps = sorted(int(p.name) for p in (stage_dir / "checkpoints").iterdir() if p.name.isdigit())
    return ocp.PyTreeCheckpointer().restore(stage_dir / "checkpoints" / str(steps[-1]) / "state")["params"]


def _metric_steps(stage_dir):
    return [json.loads(line)["step"] for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_kill9_at_ten_points_over_every_stage_then_resume_matches_uninterrupted(tmp_path):
    reference, victim = tmp_path / "reference", tmp_path / "victim"
    _run_to_end(reference)
    killed = sum(_kill_at(victim, marker, delay) for marker, delay in KILL_POINTS)
    assert killed >= 8, f"only {killed} of {len(KILL_POINTS)} kills landed before the run ended"
    out = _run_to_end(victim)
    assert "resuming" in out or "stage evaluate" in out
    for stage in ("teacher", "student", "student2"):
        ref, run = _params(reference / stage), _params(victim / stage)
        flat_ref, flat_run = ocp.tree.to_flat_dict(ref), ocp.tree.to_flat_dict(run)
        assert flat_ref.keys() == flat_run.keys()
        for key in flat_ref:
            np.testing.assert_array_equal(flat_run[key], flat_ref[key], err_msg=f"{stage} {key}")
        steps = _metric_steps(victim / stage)
        assert steps == sorted(set(steps)), f"{stage}: repeated metrics steps {steps}"
        assert steps == _metric_steps(reference / stage)
    for path in sorted((reference / "samples").glob("*.npy")):
        np.testing.assert_array_equal(np.load(victim / "samples" / path.name), np.load(path), err_msg=path.name)
    ref_rows = json.loads((reference / "results.json").read_text())["rows"]
    run_rows = json.loads((victim / "results.json").read_text())["rows"]
    assert [{k: v for k, v in r.items() if "seconds" not in k and "per_sec" not in k} for r in run_rows] == \
        [{k: v for k, v in r.items() if "seconds" not in k and "per_sec" not in k} for r in ref_rows]


@pytest.mark.slow
def test_sigterm_stops_the_runner_cleanly_with_a_checkpoint(tmp_path):
    proc, lines = _start(tmp_path / "run"), []
    for line in proc.stdout:
        lines.append(line)
        if "round 1" in line:  # as round 1 starts: it stops after the first step it runs (rounds take ~3 s)
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, out
    assert "stopped by SIGTERM at step" in out and "rerun the same command to resume" in out
    assert "Traceback" not in out
    # the round it stopped in checkpointed that step; resuming from it is the kill -9 test's business
    stopped = int(out.split("stopped by SIGTERM at step ")[1].split()[0])
    ckpt_dir = Path(out.split("checkpoint saved in ")[1].split(";")[0])
    assert ckpt_dir.parent.name in ("student", "student2"), out
    saved = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
    assert saved[-1] == stopped, out
