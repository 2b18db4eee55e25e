"""The GPU check (run by experiments/gpu_check.sh, at most 8 minutes on one H100 / H200): JSON out.

    python -m experiments.gpu_check --json gpu_check.json [--setting sdtt] [--budget-s 420]

1. Peak device memory (`memory_stats()['peak_bytes_in_use']`) of the step below at N = 16, then N = 64, batch 1,
   with the compiled estimates beside them (first, as the peak counter only grows).
2. bf16 step time and achieved MFU of the full Di4C step (sdtt recipe, DiT-small, D = 1024, K = 50258, N = 16,
   remat full) at the largest per-device batch that fits: the batch-1 compile's memory analysis gives the bytes
   per item, the largest power of two that fits 90% of the device's memory is compiled and run (halved on
   failure); MFU = analytic model FLOPs per step / measured step time / the device's bf16 peak.
3. Sampling throughput at 1, 2, 4, 8, 16 steps for the teacher and the student (random weights: speed does not
   depend on them), and the student's overhead per NFE, (student time - teacher time) / teacher time.
4. (`--parts profile`, not run by default) for each of `--chunks`: the step's time and MFU at `--batch` (default
   8), and the device time per XLA op of one traced step (experiments.trace_summary); `--trace-dir` keeps the
   traces. `--attention cudnn` runs the step parts with the DiT's fused attention kernel.
Each part records its own error instead of stopping the check; parts left when the time budget runs out are
skipped and say so. `--setting tiny` runs the same code at a CPU-test size.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from di4c_jax.models.dit import ATTENTIONS

# dense bf16 peak FLOP/s per device kind (vendor figures, no sparsity); others: the 790 TFLOP/s reference
PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
DEFAULT_PEAK = 790e12
PARTS = ("peak_memory", "step_mfu", "sampling", "profile")
DEFAULT_PARTS = PARTS[:3]


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m experiments.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="write the result object here")
    parser.add_argument("--setting", default="sdtt", choices=("sdtt", "tiny"))
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting new parts after this")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--sample-batch", type=int, default=64)
    parser.add_argument("--sample-steps", default="1,2,4,8,16", help="sampler step counts")
    parser.add_argument("--lambdas", default="16,64", help="N of the step (first) and of the peak-memory runs")
    parser.add_argument("--remat", default="full", choices=("none", "dots_saveable", "dots_with_no_batch_dims_saveable",
                                                            "full"), help="remat of the step (parts 1 and 2)")
    parser.add_argument("--batch", type=int, default=None,
                        help="per-device batch of part 2 (default: the largest power of two that fits)")
    parser.add_argument("--chunks", default="default",
                        help="lambdas per student call: the profile part runs each of this comma list, the others the "
                             "first ('default': sized from the accelerator's chunk budget)")
    parser.add_argument("--attention", default=None, choices=ATTENTIONS,
                        help="the DiT's attention in the step parts (default: the model's; 'cudnn': fused kernel)")
    parser.add_argument("--trace-dir", default=None, help="keep the profile part's traces here (default: a temp dir)")
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS), help=f"which of {','.join(PARTS)} to run")
    return parser.parse_args(argv)


def _peak_flops(device) -> float:
    return next((v for k, v in PEAKS.items() if k in device.device_kind), DEFAULT_PEAK)


def _timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls of fn() (which blocks), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _concrete(built, key):
    """Random-init state, teacher params and a batch of random tokens for a StepSetup."""
    import functools

    import jax

    from di4c_jax import parallel, train as engine
    from di4c_jax.models import init_params

    state, _ = engine.create_train_state(functools.partial(init_params, built.student_cfg), built.tx, key,
                                         built.mesh)
    frozen = jax.device_put(init_params(built.teacher_cfg, key), jax.tree.map(lambda a: a.sharding, built.frozen))
    vocab = built.process.num_states - 1
    x0 = jax.random.randint(key, built.batch["x0"].shape, 0, vocab)
    return state, {"x0": jax.device_put(x0, parallel.batch_sharding(built.mesh))}, frozen


_COMPILED: dict = {}


def _compiled(setting: str, num_lambda: int, per_device_batch: int, remat: str, chunk: int | None = None,
              attention: str | None = None):
    """(StepSetup, AOT-compiled step) of the bf16 step on one device, compiled once per shape, remat, chunk and
    attention."""
    from experiments import scale

    key = (setting, num_lambda, per_device_batch, remat, chunk, attention)
    if key not in _COMPILED:
        built = scale.build_step(setting, num_lambda=num_lambda, devices=1, dtype="bfloat16", remat=remat,
                                 per_device_batch=per_device_batch, chunk=chunk, attention=attention)
        _COMPILED[key] = built, built.step.jitted.lower(built.state, built.batch, built.frozen).compile()
    return _COMPILED[key]


def _compiled_bytes(compiled) -> int:
    mem = compiled.memory_analysis()
    return int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes)


def _run_steps(built, compiled, num_steps: int, trace_dir: str | None = None) -> float:
    """Median seconds per training step of the compiled step (the state is donated and carried); with
    `trace_dir`, one more step runs under jax.profiler.trace(trace_dir)."""
    import jax

    state, batch, frozen = _concrete(built, jax.random.key(0))
    times = []
    for i in range(num_steps + 1):
        start = time.perf_counter()
        state, metrics = compiled(state, batch, frozen)
        jax.block_until_ready(metrics)
        if i >= 1:  # the first call warms up
            times.append(time.perf_counter() - start)
    if trace_dir is not None:
        with jax.profiler.trace(trace_dir):
            state, metrics = compiled(state, batch, frozen)
            jax.block_until_ready(metrics)
    return sorted(times)[len(times) // 2]


def step_mfu(setting: str, num_steps: int, num_lambda: int, remat: str, batch: int | None = None,
             chunk: int | None = None, attention: str | None = None) -> dict:
    import jax

    from experiments import scale

    device = jax.devices()[0]
    capacity = (device.memory_stats() or {}).get("bytes_limit")
    batch1_temp = None
    if batch is None:
        _, one = _compiled(setting, num_lambda, 1, remat, chunk, attention)
        mem = one.memory_analysis()
        batch1_temp = int(mem.temp_size_in_bytes)
        fixed = mem.argument_size_in_bytes + mem.output_size_in_bytes
        fits = int((0.9 * capacity - fixed) // max(batch1_temp, 1)) if capacity else 1
        batch = 1 << (max(1, fits).bit_length() - 1)
    while True:
        built, compiled = _compiled(setting, num_lambda, batch, remat, chunk, attention)
        try:
            step_s = _run_steps(built, compiled, num_steps)
            break
        except Exception as err:  # noqa: BLE001  (out of memory: halve the batch)
            if batch == 1:
                raise
            print(f"batch {batch} failed ({type(err).__name__}); halving", flush=True)
            batch //= 2
    flops, _ = scale.model_flops(built)
    peak = _peak_flops(device)
    return {"num_lambda": num_lambda, "remat": remat, "chunk": built.config.chunk, "attention": attention,
            "per_device_batch": batch,
            "step_s": step_s,
            "flops_per_step": flops, "peak_flops": peak, "mfu": flops / step_s / peak, "bytes_limit": capacity,
            "compiled_bytes": _compiled_bytes(compiled), "batch1_temp_bytes": batch1_temp}


def peak_memory(setting: str, lambdas: list[int], remat: str, chunk: int | None = None,
                attention: str | None = None) -> dict:
    """Each N in increasing order (batch 1): the peak so far after each is that run's peak."""
    import jax

    out = {"remat": remat}
    for n in sorted(lambdas):
        built, compiled = _compiled(setting, n, 1, remat, chunk, attention)
        _run_steps(built, compiled, 1)
        stats = jax.devices()[0].memory_stats() or {}
        out[f"N{n}"] = {"compiled_bytes": _compiled_bytes(compiled),
                        "peak_bytes_in_use_so_far": stats.get("peak_bytes_in_use")}
    return out


def profile(setting: str, num_steps: int, num_lambda: int, remat: str, batch: int, chunks: list[int | None],
            trace_dir: str | None, deadline: float, save=lambda partial: None, attention: str | None = None) -> dict:
    """Per chunk: step time, MFU and the traced step's device time per XLA op (no batch halving: an error is
    recorded). Chunks left when `deadline` (perf_counter) has passed are skipped; `save(out)` after each chunk."""
    import tempfile

    import jax

    from experiments import scale, trace_summary

    out = {"per_device_batch": batch, "remat": remat, "num_lambda": num_lambda, "attention": attention}
    for chunk in chunks:
        name = f"chunk_{chunk or 'default'}"
        if time.perf_counter() > deadline:
            out[name] = {"skipped": "time budget spent"}
            continue
        t0 = time.perf_counter()
        try:
            built, compiled = _compiled(setting, num_lambda, batch, remat, chunk, attention)
            compile_s = time.perf_counter() - t0
            where = os.path.join(trace_dir, name) if trace_dir else tempfile.mkdtemp(prefix="gpu_check_trace")
            step_s = _run_steps(built, compiled, num_steps, trace_dir=where)
            flops, _ = scale.model_flops(built)
            peak = _peak_flops(jax.devices()[0])
            out[name] = {"chunk": built.config.chunk, "step_s": step_s, "compile_s": compile_s,
                         "flops_per_step": flops, "mfu": flops / step_s / peak,
                         "compiled_bytes": _compiled_bytes(compiled), "ops": trace_summary.summarize(where, top=25)}
        except Exception as err:  # noqa: BLE001  (one chunk failing, e.g. out of memory, must not lose the others)
            out[name] = {"error": f"{type(err).__name__}: {err}"[:2000]}
        _COMPILED.clear()  # free the executable before the next, larger one
        out[name]["wall_s"] = time.perf_counter() - t0
        save(out)
    return out


def sampling(setting: str, batch: int, step_counts: list[int]) -> dict:
    import jax

    from di4c_jax.models import init_params, make_denoiser
    from di4c_jax.sampling import make_analytic_sampler
    from experiments import scale

    built = scale.build_step(setting, devices=1, dtype="bfloat16")
    rows = {}
    for name, cfg in (("teacher", built.teacher_cfg), ("student", built.student_cfg)):
        denoiser, params = make_denoiser(cfg), init_params(cfg, jax.random.key(1))
        for steps in step_counts:
            sampler = make_analytic_sampler(process=built.process, denoiser=denoiser,
                                            shape=(batch, denoiser.num_positions), num_steps=steps)
            seconds = _timed(lambda: jax.block_until_ready(sampler(jax.random.key(2), params=params)), 3)
            rows.setdefault(str(steps), {})[name] = {"seconds": seconds, "samples_per_s": batch / seconds,
                                                     "nfe": sampler.nfe}
    for row in rows.values():
        row["student_overhead_per_nfe"] = row["student"]["seconds"] / row["teacher"]["seconds"] - 1
    return {"batch": batch, "steps": rows}


def main(argv=None) -> dict:
    args = parse(sys.argv[1:] if argv is None else argv)
    import jax

    start = time.perf_counter()

    def dump(obj):
        with open(args.json, "w") as f:
            json.dump(obj, f, indent=1)

    out = {"device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
           "jax": jax.__version__, "setting": args.setting}
    lambdas = [int(n) for n in args.lambdas.split(",")]
    if not all(c == "default" or (c.isdigit() and int(c) >= 1) for c in args.chunks.split(",")):
        raise SystemExit(f"gpu_check: --chunks takes 'default' or integers >= 1, comma-separated; got {args.chunks!r}")
    chunks = [None if c == "default" else int(c) for c in args.chunks.split(",")]
    attention = args.attention
    # peak_memory first: the device's peak counter only grows
    parts = (("peak_memory", lambda: peak_memory(args.setting, lambdas, args.remat, chunks[0], attention)),
             ("step_mfu", lambda: step_mfu(args.setting, args.steps, lambdas[0], args.remat, args.batch, chunks[0],
                                           attention)),
             ("sampling", lambda: sampling(args.setting, args.sample_batch,
                                           [int(n) for n in args.sample_steps.split(",")])),
             ("profile", lambda: profile(args.setting, args.steps, lambdas[0], args.remat, args.batch or 8, chunks,
                                         args.trace_dir, start + args.budget_s,
                                         save=lambda partial: dump(dict(out, profile=partial)), attention=attention)))
    chosen = args.parts.split(",")
    if unknown := sorted(set(chosen) - set(PARTS)):
        raise SystemExit(f"gpu_check: unknown --parts {unknown}; choose from {','.join(PARTS)}")
    for name, part in parts:
        if name not in chosen:
            continue
        if time.perf_counter() - start > args.budget_s:
            out[name] = {"skipped": f"time budget of {args.budget_s:.0f} s spent"}
            continue
        t0 = time.perf_counter()
        try:
            out[name] = part()
        except Exception as err:  # noqa: BLE001  (record and go on: one failing part must not lose the others)
            out[name] = {"error": f"{type(err).__name__}: {err}"[:2000]}
        out[name]["wall_s"] = time.perf_counter() - t0
        dump(out)  # after every part: a timeout still leaves what was measured
        print(f"{name}: {json.dumps(out[name])[:400]}", flush=True)
    out["wall_s"] = time.perf_counter() - start
    dump(out)
    return out


if __name__ == "__main__":
    main()
