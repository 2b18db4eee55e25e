"""Where a traced step spends its device time: a jax.profiler trace summed per XLA operation and per kind of work.

    python -m experiments.trace_summary TRACE_DIR_OR_XPLANE_PB [--hlo AFTER_OPTIMIZATIONS.txt] [--top 30]

Reads the `.xplane.pb` that `jax.profiler.trace(dir)` writes (with `jax.profiler.ProfileData`, no TensorBoard).
On a GPU the ops are the kernels of the device planes, named by the HLO instruction that launched them; kernels
replayed from a CUDA graph (XLA's command buffers) carry the command buffer's name, and are named by their kernel
instead (XLA names a fusion's kernel after the fusion, `loop_add_fusion_78` for `loop_add_fusion.78`; identical
fusions share one kernel). On CPU, the host events that carry an `hlo_op` stat (a while loop's event there
includes its body's). With `--hlo`, the optimised HLO text that `XLA_FLAGS="--xla_dump_to=DIR
--xla_dump_hlo_as_text"` writes, each op gets its JAX name stack (`op_name`) and shape, and the time is also summed
per kind of work (`KINDS`, matched on the op's and its fused computation's text; first match wins).
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys

# kind of work -> pattern in the op's HLO (its line and its fused computation); matmuls by their kernel's name
KINDS = (("categorical draw", r"_gumbel"),
         ("attention matmul", r"(?s)^matmul.*bh[qk]"),
         ("attention elementwise", r"bh[qk]"),
         ("matmul", r"^matmul"),
         ("objective over K", r"log_softmax|bndk|logsumexp"))
MATMUL_KERNELS = re.compile(r"gemm|nvjet|cutlass|cublas|sm90_|sm80_")


def find_xplane(path: str) -> str:
    """The newest .xplane.pb under `path` (a trace directory), or `path` itself when it is one."""
    if os.path.isfile(path):
        return path
    found = sorted(glob.glob(os.path.join(path, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    if not found:
        raise FileNotFoundError(f"no .xplane.pb under {path!r}: was it written by jax.profiler.trace?")
    return found[-1]


def _op_events(profile):
    """(op name, kernel or event name, duration ns) of every op run: device-plane events with an `hlo_op`
    stat if the trace has device planes, else host events with one."""
    device = [p for p in profile.planes if p.name.startswith("/device:")]
    for plane in device or profile.planes:
        for line in plane.lines:
            for event in line.events:
                op = dict(event.stats).get("hlo_op")
                if op is None:
                    continue
                op = str(op)
                if op.startswith("command_buffer"):
                    op = re.sub(r"_(\d+)$", r".\1", event.name)
                yield op, event.name, event.duration_ns


def read_hlo(path: str) -> dict:
    """{instruction name: (shape, op_name, text of the line and of the computation it calls)} of an HLO dump."""
    lines = open(path).read().splitlines()
    bodies, current = collections.defaultdict(list), None
    for line in lines:
        if line and not line[0].isspace():
            head = re.match(r"(?:ENTRY )?%?([\w.\-]+) ", line)
            current = head.group(1) if head else None
        elif current:
            bodies[current].append(line)
    out = {}
    for line in lines:
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\(?[a-z0-9]+\[[^\]]*\])", line)
        if m:
            op_name = re.search(r'op_name="([^"]*)"', line)
            calls = re.search(r"calls=%([\w.\-]+)", line)
            text = line + "\n".join(bodies.get(calls.group(1), ())) if calls else line
            out[m.group(1)] = (m.group(2), op_name.group(1) if op_name else "", text)
    return out


def kind_of(kernel: str, text: str) -> str:
    """The first of KINDS whose pattern matches ('matmul ' + text for a matmul kernel), else 'other'."""
    subject = ("matmul " if MATMUL_KERNELS.search(kernel) else "") + text
    return next((name for name, pattern in KINDS if re.search(pattern, subject)), "other")


def summarize(path: str, *, hlo: str | None = None, top: int = 30) -> dict:
    """Device time per XLA op of the trace at `path` (and per kind of work, given the HLO dump `hlo`).

    Returns:
      {'xplane': path, 'total_ms': summed op time, 'ops': the `top` ops by time, each {'name', 'ms', 'count',
       'share', 'kernel'; with `hlo`: 'shape', 'op_name'}, with `hlo` also 'by_kind': {kind: ms}}.
    """
    from jax.profiler import ProfileData

    path = find_xplane(path)
    instructions = read_hlo(hlo) if hlo else {}
    total_ns, count, kernel, by_kind = (collections.Counter(), collections.Counter(), {}, collections.Counter())
    for op, name, duration_ns in _op_events(ProfileData.from_file(path)):
        total_ns[op] += duration_ns
        count[op] += 1
        kernel.setdefault(op, name)
        if hlo:
            by_kind[kind_of(name, instructions[op][2] if op in instructions else "")] += duration_ns
    whole = sum(total_ns.values())
    ops = []
    for op, ns in total_ns.most_common(top):
        row = {"name": op, "ms": ns / 1e6, "count": count[op], "share": ns / whole if whole else 0.0,
               "kernel": kernel[op]}
        if op in instructions:
            row["shape"], row["op_name"] = instructions[op][:2]
        ops.append(row)
    out = {"xplane": path, "total_ms": whole / 1e6, "ops": ops}
    if hlo:
        out["by_kind"] = {k: v / 1e6 for k, v in by_kind.most_common()}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m experiments.trace_summary", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="a jax.profiler.trace directory or one .xplane.pb")
    parser.add_argument("--hlo", default=None, help="the step's optimised HLO text (an XLA dump's "
                                                     "*after_optimizations.txt) for op names and kinds of work")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        out = summarize(args.path, hlo=args.hlo, top=args.top)
    except FileNotFoundError as err:
        raise SystemExit(f"trace_summary: {err}") from None
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
