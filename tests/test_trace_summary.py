"""experiments.trace_summary: per-op device time of a real (CPU) trace, the GPU naming rules (command buffers named
by their kernels) on a stand-in profile, the HLO attribution and kinds of work, and a clear error for no trace."""
import dataclasses

import jax
import jax.numpy as jnp
import pytest

from experiments import trace_summary


def test_a_cpu_trace_sums_each_op_over_its_runs(tmp_path):
    f = jax.jit(lambda a: jnp.tanh(a @ a).sum())
    a = jnp.ones((64, 64))
    f(a).block_until_ready()
    with jax.profiler.trace(str(tmp_path)):
        for _ in range(3):
            f(a).block_until_ready()
    out = trace_summary.summarize(str(tmp_path))
    assert out["total_ms"] > 0 and out["xplane"].endswith(".xplane.pb")
    assert sum(op["ms"] for op in out["ops"]) == pytest.approx(out["total_ms"])
    assert {op["count"] for op in out["ops"]} == {3}, out["ops"]


@dataclasses.dataclass
class _Event:
    name: str
    duration_ns: int
    stats: list


@dataclasses.dataclass
class _Line:
    name: str
    events: list


@dataclasses.dataclass
class _Plane:
    name: str
    lines: list


@dataclasses.dataclass
class _Profile:
    planes: list


def test_device_kernels_in_command_buffers_are_named_by_their_kernel():
    events = [_Event("loop_add_fusion_78", 5, [("hlo_op", "command_buffer_3")]),
              _Event("gemm_fusion_dot_4", 7, [("hlo_op", "gemm_fusion_dot.4")]),
              _Event("memcpy", 1, [])]
    host = _Plane("/host:CPU", [_Line("python", [_Event("x", 100, [("hlo_op", "host_op")])])])
    profile = _Profile([host, _Plane("/device:GPU:0", [_Line("Stream #14", events)])])
    assert list(trace_summary._op_events(profile)) == [("loop_add_fusion.78", "loop_add_fusion_78", 5),
                                                       ("gemm_fusion_dot.4", "gemm_fusion_dot_4", 7)]


HLO = """HloModule jit_step

%fused_draw (p: f32[8]) -> s32[8] {
  %g = f32[8]{0} log(%p), metadata={op_name="jit(step)/vmap(jit(_gumbel))/log"}
}

%fused_scores (p: bf16[2,3]) -> f32[2,3] {
  %d = f32[2,3]{1,0} dot(%p, %p), metadata={op_name="jit(step)/bhqd,bhkd->bhqk/dot_general"}
}

ENTRY %main (a: f32[8]) -> f32[8] {
  %draw_fusion.1 = s32[8]{0} fusion(%a), kind=kInput, calls=%fused_draw, metadata={op_name="jit(step)/reduce"}
  %gemm_fusion.2 = f32[2,3]{1,0} fusion(%a), kind=kCustom, calls=%fused_scores
  %loop_add.3 = f32[8]{0} add(%a, %a), metadata={op_name="jit(step)/add"}
}
"""


def test_hlo_attribution_and_kinds_of_work(tmp_path):
    (tmp_path / "step.txt").write_text(HLO)
    hlo = trace_summary.read_hlo(str(tmp_path / "step.txt"))
    assert hlo["draw_fusion.1"][:2] == ("s32[8]", "jit(step)/reduce") and hlo["loop_add.3"][1] == "jit(step)/add"
    kinds = {op: trace_summary.kind_of(kernel, hlo[op][2]) for op, kernel in
             (("draw_fusion.1", "draw_fusion_1"), ("gemm_fusion.2", "gemm_fusion_2"), ("loop_add.3", "loop_add_3"))}
    assert kinds == {"draw_fusion.1": "categorical draw", "gemm_fusion.2": "attention matmul", "loop_add.3": "other"}
    assert trace_summary.kind_of("nvjet_sm90_tss_256x64", "") == "matmul"


def test_no_trace_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no .xplane.pb under"):
        trace_summary.main([str(tmp_path)])
