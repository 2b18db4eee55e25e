"""experiments.gpu_check runs end to end at the CPU-test size (on a GPU it runs at the sdtt size), writing every
part's figures, with the analytic FLOPs and the student's per-NFE overhead computed from its own timings."""
import json

import pytest

from experiments import gpu_check


@pytest.mark.slow
def test_gpu_check_runs_every_part_at_the_tiny_size(tmp_path):
    out = gpu_check.main(["--json", str(tmp_path / "check.json"), "--setting", "tiny", "--steps", "1",
                          "--sample-batch", "4", "--lambdas", "2", "--sample-steps", "4"])
    assert json.loads((tmp_path / "check.json").read_text()) == json.loads(json.dumps(out))
    assert all("error" not in out[part] for part in ("peak_memory", "step_mfu", "sampling")), out
    step = out["step_mfu"]
    assert step["per_device_batch"] == 1 and step["step_s"] > 0  # CPU reports no memory limit: batch 1
    assert step["mfu"] == pytest.approx(step["flops_per_step"] / step["step_s"] / step["peak_flops"])
    assert out["peak_memory"]["N2"]["compiled_bytes"] > 0
    row = out["sampling"]["steps"]["4"]
    assert row["teacher"]["nfe"] == row["student"]["nfe"] == 4
    assert row["student_overhead_per_nfe"] == pytest.approx(
        row["student"]["seconds"] / row["teacher"]["seconds"] - 1)


def test_budget_skips_the_parts_left(tmp_path):
    out = gpu_check.main(["--json", str(tmp_path / "check.json"), "--setting", "tiny", "--budget-s", "-1"])
    assert all("skipped" in out[part] for part in ("peak_memory", "step_mfu", "sampling"))


def test_parts_remat_batch_and_chunks_choose_what_runs(tmp_path):
    out = gpu_check.main(["--json", str(tmp_path / "check.json"), "--setting", "tiny", "--steps", "1",
                          "--lambdas", "2", "--parts", "step_mfu,profile", "--remat", "none", "--batch", "2",
                          "--trace-dir", str(tmp_path / "traces"), "--attention", "xla"])
    assert "peak_memory" not in out and "sampling" not in out
    assert out["step_mfu"]["remat"] == "none" and out["step_mfu"]["per_device_batch"] == 2, out
    assert out["step_mfu"]["attention"] == out["profile"]["attention"] == "xla"
    profiled = out["profile"]["chunk_default"]  # the same compiled step as step_mfu's (tiny: chunk = N = 2)
    assert profiled["chunk"] == out["step_mfu"]["chunk"] == 2 and profiled["step_s"] > 0, out
    assert profiled["ops"]["total_ms"] > 0 and profiled["ops"]["ops"][0]["count"] >= 1
    assert profiled["ops"]["xplane"].startswith(str(tmp_path / "traces" / "chunk_default"))
    assert json.loads((tmp_path / "check.json").read_text())["profile"] == json.loads(json.dumps(out["profile"]))
    with pytest.raises(SystemExit, match="--chunks takes 'default' or integers >= 1.*'0,x'"):
        gpu_check.main(["--json", str(tmp_path / "x.json"), "--chunks", "0,x"])
    with pytest.raises(SystemExit, match="unknown --parts"):
        gpu_check.main(["--json", str(tmp_path / "x.json"), "--parts", "step"])
