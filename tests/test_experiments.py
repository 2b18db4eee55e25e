"""End to end: the experiment runner (teacher -> Di4C student -> samples -> exact evaluation), its resume, the
sampling benchmark and the report, on a tiny version of the quickstart."""
import json

import numpy as np
import pytest

from experiments import bench, diagnose, report
from experiments.configs import compare, quickstart
from experiments.run import run
from experiments.spec import resolve

pytestmark = pytest.mark.slow


def tiny_config():
    c = quickstart.get_config()
    c.progress = False
    c.data.num_train, c.data.num_eval = 2_000, 200
    c.model.overrides = dict(embed_dim=4, hidden=16, num_layers=1, time_dim=8, lam_dim=8)
    c.teacher.update(steps=20, batch_size=32, checkpoint_every=10, log_every=10)
    c.distill.update(steps=6, batch_size=8, checkpoint_every=3, log_every=3)
    c.distill.loss.num_lambda = 4
    c.sample.update(teacher_steps=(1, 2), student_steps=(1,), hybrid=((2, 1),), num_samples=4_000, batch_size=2_000)
    return c


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("quick")
    run(tiny_config(), path)
    return path


def test_runner_writes_results_for_every_model_and_step_count(workdir):
    results = json.loads((workdir / "results.json").read_text())
    got = {(r["model"], r["num_steps"], r["nfe"], r["teacher_nfe"]) for r in results["rows"]}
    assert got == {("teacher", 1, 1, 0), ("teacher", 2, 2, 0), ("student", 1, 1, 0), ("hybrid", 2, 2, 1)}
    for r in results["rows"]:
        assert 0.0 <= r["tv"] <= 1.0 and r["tv_noise_floor"] > 0 and np.isfinite(r["kl"])
        tokens = np.load(workdir / "samples" / f"{r['model']}_{r['num_steps']}steps.npy")
        assert tokens.shape == (4_000, 6) and tokens.dtype == np.int32 and tokens.max() < 3
    assert (workdir / "config.json").exists() and (workdir / "results.md").exists()
    assert (workdir / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the TV-vs-NFE plot
    assert (workdir / "teacher" / "metrics.jsonl").read_text().strip()


def test_rerun_resumes_without_retraining_or_resampling(workdir):
    sample = workdir / "samples" / "student_1steps.npy"
    before = sample.stat().st_mtime_ns, sorted(p.name for p in (workdir / "student" / "checkpoints").iterdir())
    run(tiny_config(), workdir)
    after = sample.stat().st_mtime_ns, sorted(p.name for p in (workdir / "student" / "checkpoints").iterdir())
    assert before == after


def test_longer_run_resumes_from_the_last_checkpoint(workdir, tmp_path):
    config = tiny_config()
    config.teacher_workdir = str(workdir)  # reuse the trained teacher; train a fresh student further
    config.distill.steps = 9
    run(config, tmp_path, stage="distill")
    steps = sorted(int(p.name) for p in (tmp_path / "student" / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 9 and not (tmp_path / "teacher").exists()


def test_bench_reports_speed_quality_and_overhead(workdir):
    rows = bench.run(workdir, steps=[1, 2], batch=16, repeats=1, models=["teacher", "student"])
    assert {(r["model"], r["nfe"]) for r in rows} == {("teacher", 1), ("teacher", 2), ("student", 1), ("student", 2)}
    for r in rows:
        assert r["compile_s"] > 0 and r["seconds"] > 0 and 0 <= r["tv"] <= 1
    assert all("overhead_vs_teacher_per_nfe" in r for r in rows if r["model"] == "student")
    meta = json.loads((workdir / "bench.json").read_text())["meta"]
    assert meta["num_devices"] == 8 and "student overhead" in (workdir / "bench.md").read_text()


def test_diagnose_writes_a_row_per_time_and_mixture_size(workdir):
    rows = diagnose.run(workdir, 1, times=[0.5, 1.0], lambdas=[2, 4], num=50, denoise=3_000)
    assert [(r["t"], r["num_lambda"]) for r in rows] == [(0.5, 2), (0.5, 4), (1.0, 2), (1.0, 4)]
    for r in rows:
        assert r["teacher_loglik"] < 0 and r["marginal_kl"] >= -1e-6 and np.isfinite(r["correlation"])
        assert r["teacher_loglik"] < r["exact_loglik"] < 0  # the exact law's posterior is the ceiling
    assert "| 1 | 4 |" in (workdir / "diagnose.md").read_text()
    denoised = json.loads((workdir / "diagnose.json").read_text())["denoise"]
    assert [r["t"] for r in denoised] == [0.5, 1.0]
    for r in denoised:
        assert 0.0 <= r["student_tv"] <= 1.0 and 0.0 <= r["teacher_tv"] <= 1.0
    assert "one-step denoising" in (workdir / "diagnose.md").read_text()


def test_report_regenerates_tables_and_plots(workdir, tmp_path):
    report.main([str(workdir), "--out", str(tmp_path)])
    text = (tmp_path / "results.md").read_text()
    assert "| teacher | 2 |" in text and "command:" in text
    assert list(tmp_path.glob("*.png"))


def test_multi_round_sdtt_doubles_the_step_and_samples_the_first_and_last_round(workdir, tmp_path):
    config = compare.get_config("sdtt")
    tiny = tiny_config()
    for field in ("data", "model", "teacher", "sample"):
        setattr(config, field, tiny[field])
    config.progress, config.teacher_workdir = False, str(workdir)
    config.distill.update(steps=2, batch_size=8, checkpoint_every=2, log_every=1, rounds=3)
    config.sample.update(teacher_steps=(), hybrid=())
    dts = [resolve(config).distill.config(r).dt for r in (1, 2, 3)]
    np.testing.assert_allclose(dts, [1 / 64, 2 / 64, 4 / 64])
    results = run(config, tmp_path)
    assert all((tmp_path / name / "checkpoints").exists() for name in ("student", "student2", "student3"))
    assert {r["model"] for r in results["rows"]} == {"student", "student3"}
    report.main(["--compare", str(workdir), str(tmp_path), "--out", str(tmp_path / "out"), "--name", "sdtt"])
    lines = (tmp_path / "out" / "sdtt.md").read_text().splitlines()
    seconds = {line.split("|")[1].strip(): float(line.split("|")[-2]) for line in lines if "sdtt: student" in line}
    assert seconds["sdtt: student3"] > seconds["sdtt: student"] > 0  # a later round counts every round before it
