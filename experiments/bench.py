"""Jitted sampling benchmark: quality vs NFE vs wall time for a trained teacher and student.

    python -m experiments.bench --workdir runs/quickstart [--steps 1,2,4,8,16,32,64] [--batch 8192] [--repeats 3]
    di4c-bench --workdir runs/quickstart ...      (the console script)

Per (model, steps): compile time (lower + compile, reported apart), then `repeats` timed calls with
jax.block_until_ready; wall time per call and per NFE, samples/s and tokens/s; the batch is split over all local
devices with a per-device sampler under jax.shard_map (each device folds its index into the key). The quality of
each point (the experiment's evaluator, e.g. TV to the exact law) is computed on the benchmarked samples.
The student's overhead per NFE over the teacher (its lambda input) is reported per step count.
Writes <workdir>/bench.json and bench.md; device kind and mesh are recorded.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags, logging
from jax.sharding import PartitionSpec as P

from di4c_jax import parallel, sampling
from experiments import evaluation, stages
from experiments.cli import absl_help, guarded
from experiments.setup import setup_from_workdir

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags (defined only when run as a script, so the module stays importable)."""
    flags.DEFINE_string("workdir", None, "a finished experiment's workdir (holds config.json)")
    flags.DEFINE_list("steps", ["1", "2", "4", "8", "16", "32", "64"], "step counts")
    flags.DEFINE_integer("batch", 8192, "global batch per call (split over local devices)")
    flags.DEFINE_integer("repeats", 3, "timed calls per point")
    flags.DEFINE_list("models", ["teacher", "student"], "networks to benchmark")
    flags.DEFINE_bool("debug", False, "on an error, show its traceback instead of one line")
    flags.mark_flags_as_required(["workdir"])


def sharded_sampler(setup, denoiser, num_steps: int, batch: int, mesh):
    """jit(shard_map(per-device analytic sampler)) -> fn(key, params) -> int32[batch, D] sharded over 'data'."""
    per_device = batch // mesh.size
    inner = sampling.make_analytic_sampler(process=setup.process, denoiser=denoiser,
                                           shape=(per_device, setup.num_dims), num_steps=num_steps)

    def local(key, params):
        index = jax.lax.axis_index(parallel.BATCH_AXES)
        return inner.sample(jax.random.fold_in(key, index), params, None, None)

    fn = jax.shard_map(local, mesh=mesh, in_specs=(P(), P()), out_specs=P(parallel.BATCH_AXES),
                       check_vma=False)
    return jax.jit(fn), inner.nfe


def bench_point(fn, params, repeats: int) -> dict:
    key = jax.random.key(0)
    start = time.perf_counter()
    compiled = fn.lower(key, params).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(key, params))  # warm-up
    times, out = [], None
    for i in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(jax.random.key(i + 1), params))
        times.append(time.perf_counter() - start)
    return {"compile_s": compile_s, "seconds": float(np.median(times)), "samples": np.asarray(out)}


def run(workdir: Path, steps: list[int], batch: int, repeats: int, models: list[str]) -> list[dict]:
    setup = setup_from_workdir(workdir)
    if setup.conditional:
        raise ValueError("bench.py benchmarks unconditional analytic samplers; this experiment is conditional")
    mesh = parallel.make_mesh()
    if batch % mesh.size:
        raise ValueError(f"--batch {batch} must be divisible by the {mesh.size} local devices")
    nets = stages.trained_networks(setup)
    unknown = [name for name in models if name not in nets]
    if unknown:
        raise ValueError(f"--models {unknown}: not trained in {workdir}; trained: {sorted(nets)}")
    scorer = evaluation.make_scorer(setup)
    rows = []
    for name in models:
        for n in steps:
            fn, nfe = sharded_sampler(setup, nets[name].denoiser, n, batch, mesh)
            point = bench_point(fn, nets[name].params, repeats)
            quality = scorer(point.pop("samples"))
            row = {"model": name, "num_steps": n, "nfe": nfe, **point,
                   "ms_per_nfe": 1e3 * point["seconds"] / nfe, "samples_per_s": batch / point["seconds"],
                   "tokens_per_s": batch * setup.num_dims / point["seconds"], **quality}
            rows.append(row)
            logging.warning("%s %d steps: %.4f s (compile %.2f s) %s", name, n, point["seconds"],
                            point["compile_s"], quality)
    teacher = {r["num_steps"]: r["ms_per_nfe"] for r in rows if r["model"] == "teacher"}
    for r in rows:
        if r["model"] != "teacher" and r["num_steps"] in teacher:
            r["overhead_vs_teacher_per_nfe"] = r["ms_per_nfe"] / teacher[r["num_steps"]] - 1.0
    meta = {"device_kind": jax.devices()[0].device_kind, "num_devices": mesh.size,
            "mesh": dict(mesh.shape), "batch": batch, "repeats": repeats, "jax": jax.__version__}
    (workdir / "bench.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (workdir / "bench.md").write_text(markdown(meta, rows))
    return rows


def markdown(meta: dict, rows: list[dict]) -> str:
    quality = [k for k in rows[0] if k not in {"model", "num_steps", "nfe", "compile_s", "seconds", "ms_per_nfe",
                                               "samples_per_s", "tokens_per_s", "overhead_vs_teacher_per_nfe"}]
    head = (f"device: {meta['device_kind']} x {meta['num_devices']} (mesh {meta['mesh']}), batch {meta['batch']}, "
            f"median of {meta['repeats']} calls, jax {meta['jax']}\n\n"
            "| model | NFE | compile s | s / call | ms / NFE | samples/s | tokens/s | student overhead / NFE | "
            + " | ".join(quality) + " |\n|" + "---|" * (8 + len(quality)))
    lines = [head]
    for r in rows:
        overhead = r.get("overhead_vs_teacher_per_nfe")
        lines.append(f"| {r['model']} | {r['nfe']} | {r['compile_s']:.2f} | {r['seconds']:.4f} | "
                     f"{r['ms_per_nfe']:.2f} | {r['samples_per_s']:.0f} | {r['tokens_per_s']:.0f} | "
                     + ("" if overhead is None else f"{100 * overhead:+.1f}%") + " | "
                     + " | ".join(f"{r[k]:.4g}" for k in quality) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    """The absl main: bad input (a workdir without a finished run, unknown models, ...) is one line `error: ...`
    and exit status 2 (experiments.cli; --debug shows the traceback)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")

    def bench() -> None:
        logging.set_verbosity(logging.WARNING)
        workdir = Path(FLAGS.workdir)
        steps = [int(s) for s in FLAGS.steps]
        rows = run(workdir, steps, FLAGS.batch, FLAGS.repeats, FLAGS.models)
        print(markdown(json.loads((workdir / "bench.json").read_text())["meta"], rows))

    return guarded(bench, sys.argv)


def cli() -> None:
    """The `di4c-bench` console script."""
    if "workdir" not in FLAGS:
        define_flags()
    if absl_help(sys.argv, __doc__, FLAGS, sys.modules[__name__]):
        sys.exit(0)
    app.run(main)


if __name__ == "__main__":
    cli()
