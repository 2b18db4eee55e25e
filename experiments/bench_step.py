"""The full Di4C training step and the Di4C objective alone: JAX (this library) vs a PyTorch reference, timed on the
same machine in the same run.

    python -m experiments.bench_step --part all --repeats 5 --json /tmp/bench_step.json
    [--hidden 256 --depth 4 --num_heads 4 --num_positions 128 --num_states 1024 --batch 4 --num_lambda 16 --chunk C]
    [--threads T] [--literal_teacher]

Parts (the shape flags override either part's defaults where it has that dimension):
  step       one sdtt-recipe training step on a masked process (K - 1 data tokens + the mask token, SUBS, log-linear
             schedule): a DiT teacher (hidden 256, 4 blocks, 4 heads, D = 128, K = 1024) and its mixture student
             (the lambda token), B = 4, N = 16. JAX: `di4c_loss` through the engine (`distillation_loss_fn`,
             `make_train_step`, `create_train_state`, `make_optimizer`), i.e. teacher pass and ancestral steps, the
             student's u-side (no gradient) and t-side (gradient, dropout) passes, objective, gradient, clipped
             Adam(W) update (lr 3e-5, 2500 warm-up steps, weight decay 0 as in the sdtt config) and EMA.
             PyTorch: `experiments.torch_reference.ReferenceStep`.
  objective  value and gradient of the Di4C objective with respect to the student's t-side log-probs, every other
             input given, at the MaskGIT per-device shape B = 2, N = 32, D = 256, K = 1025 (item 0 in the
             consistency branch, item 1 in the distillation branch, so every term is live). JAX: `di4c_objective`
             under `jax.jit(jax.value_and_grad)`; PyTorch: `torch_reference.reference_objective` + autograd.

Method: JAX is compiled first (lower + compile, reported as compile_s) and called once, PyTorch is called once (both
warm-ups excluded); then `--repeats` timed calls of each, alternating JAX and PyTorch so that both see the same
background load, JAX's under `jax.block_until_ready`. PyTorch runs in this process with `torch.set_num_threads` equal
to the cores JAX's CPU client sizes its pool by (the process's CPU affinity; `--threads T` pins the process to T
cores first). Median and min per call; ratio = PyTorch median / JAX median; the 1-minute load average before and
after is recorded, since on a shared machine other work inflates both sides (PyTorch's OpenMP threads much more).
Both run float32 on the CPU (JAX is pinned to the CPU platform here), under MALLOC_ENV (glibc keeps freed memory
instead of unmapping it, which PyTorch's timings depend on; `--keep_malloc` measures without).

Identical on both sides: shapes; the network (the torch DiT mirrors di4c_jax/models/dit.py op for op and has the
same parameter count, printed); the network passes per step (teacher once on the B rows of x_t, student u-side on
B N rows without gradient, student t-side on B N rows with gradient and dropout 0.1); N lambda copies and M = N
composition samples; the objective's terms; clipping at 1.0, Adam(W), the warm-up schedule and the EMA warm-up decay.
Not identical: the random numbers (different generators, so values differ); the time draw (PyTorch: one t per batch
and a Python branch between the distillation and consistency terms, as the reference; JAX: a t per item and 0/1
weights, every term computed); the reference runs its product teacher on all B N repeated rows too (N - 1
redundant passes), which the PyTorch side only does with --literal_teacher; the reference's second mask-rate snap
and its second log_softmax of the SUBS outputs are left out (no FLOP effect / idempotent); the reference trains in
bf16 autocast on GPUs, here both are float32; JAX evaluates F - G inside one logsumexp (same value to rounding).
Parameters are fresh on both sides (zero-initialised output layers: both networks start at uniform predictions); the
work per step does not depend on their values.

JSON (--json): {"threads", "repeats", "versions", "xla_flags", "malloc_env", "load_average_1min", "device", "rows": [{"setting",
"shapes", "jax_ms", "jax_ms_min", "torch_ms", "torch_ms_min", "ratio", "compile_s", "loss", ...}]}; step rows add
"params" (both sides' counts), "chunk" (resolved) and "literal_teacher".
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import sys
import time

import jax
import jaxlib
import numpy as np
from absl import app, flags

from di4c_jax import train as engine
from di4c_jax.losses import di4c_config, di4c_loss, di4c_objective
from di4c_jax.losses.chunked import default_chunk
from di4c_jax.models import build_denoiser, init_params, make_denoiser, model_config, param_count
from di4c_jax.processes import build_process

FLAGS = flags.FLAGS
PARTS = ("step", "objective")
# glibc returns every freed block above the mmap threshold to the OS, so each [B N, D, K] tensor PyTorch allocates
# page-faults afresh: its objective took 160-1000 ms on the same machine depending on the allocator's history.
# bench_step re-executes itself with these set (both sides run under them) unless --keep_malloc.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 32),
              "MALLOC_TOP_PAD_": str(1 << 30)}


@dataclasses.dataclass(frozen=True)
class StepShape:
    hidden: int = 256
    depth: int = 4
    num_heads: int = 4
    num_positions: int = 128
    num_states: int = 1024
    batch: int = 4
    num_lambda: int = 16


@dataclasses.dataclass(frozen=True)
class ObjectiveShape:
    batch: int = 2
    num_lambda: int = 32
    num_positions: int = 256
    num_states: int = 1025


OPTIM = engine.OptimConfig(learning_rate=3e-5, warmup_steps=2500, weight_decay=0.0, grad_clip=1.0,
                           ema_decay=0.9999)  # sony/di4c:sdtt/src/sdtt/configs/config.yaml


def define_flags() -> None:
    """Command-line flags (defined only when run as a script, so the module stays importable)."""
    flags.DEFINE_enum("part", "all", PARTS + ("all",), "what to benchmark")
    flags.DEFINE_integer("repeats", 5, "timed calls per implementation (after the warm-up call)")
    flags.DEFINE_string("json", None, "write the results here")
    for name in ("hidden", "depth", "num_heads", "num_positions", "num_states", "batch", "num_lambda"):
        flags.DEFINE_integer(name, None, f"override {name} (default: each part's own)")
    flags.DEFINE_integer("chunk", None, "the recipe's chunk (lambdas per student call; default: from the shapes)")
    flags.DEFINE_bool("literal_teacher", False, "PyTorch also runs the teacher on the B N repeated rows")
    flags.DEFINE_integer("threads", None, "pin the process to this many cores (default: all it may use)")
    flags.DEFINE_bool("keep_malloc", False, "do not re-execute with MALLOC_ENV (glibc keeps freed memory)")


def compare(jax_call, torch_call, repeats: int) -> dict:
    """Median and min ms of `repeats` calls of each (both already warmed up), alternating JAX and PyTorch so that
    both see the same background load; each fn() must block until its result is ready."""
    times = {"jax": [], "torch": []}
    for _ in range(repeats):
        for name, fn in (("jax", jax_call), ("torch", torch_call)):
            start = time.perf_counter()
            fn()
            times[name].append(1e3 * (time.perf_counter() - start))
    out = {}
    for name, ts in times.items():
        out[f"{name}_ms"], out[f"{name}_ms_min"] = statistics.median(ts), min(ts)
    out["ratio"] = out["torch_ms"] / out["jax_ms"]
    return out


def model_configs(shape: StepShape):
    """(teacher, student) configs: the sdtt DiT-small ('dit-small': cond 128, dropout 0.1, no time conditioning)
    at `shape`'s size; the student adds the lambda token."""
    size = dict(hidden=shape.hidden, depth=shape.depth, num_heads=shape.num_heads, num_states=shape.num_states,
                num_positions=shape.num_positions)
    return model_config("dit-small", **size), model_config("dit-small", **size, lam_style="token")


def bench_step(shape: StepShape, repeats: int, *, chunk: int | None = None, literal_teacher: bool = False) -> dict:
    """Time one full training step, JAX engine vs `torch_reference.ReferenceStep`."""
    import torch

    from experiments import torch_reference as ref

    teacher_cfg, student_cfg = model_configs(shape)
    process = build_process("masked", shape.num_states - 1)  # K - 1 data tokens + the mask token
    k_teacher, k_state, k_data = jax.random.split(jax.random.key(0), 3)
    teacher, teacher_params = build_denoiser(teacher_cfg, k_teacher)
    student = make_denoiser(student_cfg)
    config = di4c_config("sdtt", num_lambda=shape.num_lambda, chunk=chunk)
    tx = engine.make_optimizer(OPTIM)
    loss_fn = engine.distillation_loss_fn(di4c_loss, student=student, teacher=teacher, process=process, config=config)
    step = engine.make_train_step(loss_fn, tx, ema_decay=OPTIM.ema_decay, lr_schedule=engine.lr_schedule(OPTIM))
    state, _ = engine.create_train_state(lambda k: init_params(student_cfg, k), tx, k_state)
    batch = {"x0": jax.random.randint(k_data, (shape.batch, shape.num_positions), 0, process.mask_id)}

    start = time.perf_counter()
    compiled = step.jitted.lower(state, batch, teacher_params).compile()
    compile_s = time.perf_counter() - start
    holder = {"state": state}

    def jax_call():
        holder["state"], metrics = compiled(holder["state"], batch, teacher_params)
        jax.block_until_ready((holder["state"], metrics))
        return metrics

    jax_loss = float(jax_call()["loss"])

    t_teacher, t_student = ref.DiT.from_config(teacher_cfg), ref.DiT.from_config(student_cfg)
    torch_step = ref.ReferenceStep(t_student, t_teacher, num_lambda=shape.num_lambda, mask_id=process.mask_id,
                                   lr=OPTIM.learning_rate, warmup_steps=OPTIM.warmup_steps,
                                   weight_decay=OPTIM.weight_decay, grad_clip=OPTIM.grad_clip,
                                   ema_decay=OPTIM.ema_decay, literal_teacher=literal_teacher)
    x0 = torch.from_numpy(np.asarray(batch["x0"]).astype(np.int64))
    torch_loss = torch_step(x0)
    timing = compare(jax_call, lambda: torch_step(x0), repeats)
    torch_count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    counts = {"jax_student": param_count(student_cfg), "torch_student": torch_count(t_student),
              "jax_teacher": param_count(teacher_cfg), "torch_teacher": torch_count(t_teacher)}
    n = shape.num_lambda
    return dict(setting="step", shapes=dataclasses.asdict(shape), **timing, compile_s=compile_s, params=counts,
                chunk=min(n, config.chunk or default_chunk(shape.batch, shape.num_positions, shape.num_states, n)),
                literal_teacher=literal_teacher,
                loss={"jax": jax_loss, "torch": torch_loss})


def objective_inputs(shape: ObjectiveShape, seed: int = 0) -> dict:
    """numpy inputs of the objective: logp_t, logp_u [B, N, D, K], x0 [B, D], logp_teacher_t [B, D, K],
    x_hat [B, N, D] (one draw per u-side component), time_coeff / w_distil / w_consis [B] (odd items distil)."""
    rng = np.random.default_rng(seed)
    b, n, d, k = shape.batch, shape.num_lambda, shape.num_positions, shape.num_states

    def log_softmax(shape_):
        x = rng.normal(size=shape_).astype(np.float32) * 2.0
        x = x - x.max(-1, keepdims=True)
        return (x - np.log(np.exp(x).sum(-1, keepdims=True))).astype(np.float32)

    logp_u = log_softmax((b, n, d, k))
    distil = np.arange(b) % 2 == 1
    return dict(logp_t=log_softmax((b, n, d, k)), x0=rng.integers(0, k, (b, d)).astype(np.int32),
                logp_teacher_t=log_softmax((b, d, k)), logp_u=logp_u,
                x_hat=np.argmax(logp_u + rng.gumbel(size=logp_u.shape).astype(np.float32), -1).astype(np.int32),
                time_coeff=rng.uniform(0.0, 0.1, b).astype(np.float32),
                w_distil=(20.0 * distil).astype(np.float32), w_consis=(~distil).astype(np.float32))


@jax.jit
def jax_objective(inputs: dict):
    """(loss, d loss / d logp_t [B, N, D, K]) of `di4c_objective` on `objective_inputs`."""
    rest = {k: v for k, v in inputs.items() if k != "logp_t"}
    return jax.value_and_grad(lambda lt: di4c_objective(logp_t=lt, **rest)[0])(inputs["logp_t"])


def torch_objective(inputs: dict):
    """`fn() -> (loss, d loss / d logp_t)` for `reference_objective` on torch copies of `inputs` (rows b N + k)."""
    import torch

    from experiments import torch_reference as ref

    t = {k: torch.from_numpy(np.asarray(v).astype(np.int64 if v.dtype.kind == "i" else np.float32))
         for k, v in inputs.items()}
    b, n, d, k = inputs["logp_t"].shape
    leaf = t["logp_t"].reshape(b * n, d, k).requires_grad_()

    def fn():
        leaf.grad = None
        loss = ref.reference_objective(leaf, t["x0"], t["logp_teacher_t"], t["logp_u"].reshape(b * n, d, k),
                                       t["x_hat"], t["time_coeff"], t["w_distil"], t["w_consis"])
        loss.backward()
        return loss.detach(), leaf.grad.view(b, n, d, k)

    return fn


def bench_objective(shape: ObjectiveShape, repeats: int) -> dict:
    """Time the objective's value and gradient, `di4c_objective` vs `reference_objective`."""
    inputs = objective_inputs(shape)
    device_inputs = jax.device_put(inputs)
    start = time.perf_counter()
    compiled = jax_objective.lower(device_inputs).compile()
    compile_s = time.perf_counter() - start
    jax_call = lambda: jax.block_until_ready(compiled(device_inputs))  # noqa: E731
    jax_loss, _ = jax_call()
    torch_call = torch_objective(inputs)
    torch_loss, _ = torch_call()
    timing = compare(jax_call, torch_call, repeats)
    return dict(setting="objective", shapes=dataclasses.asdict(shape), **timing, compile_s=compile_s,
                loss={"jax": float(jax_loss), "torch": float(torch_loss)})


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"CPU, {meta['threads']} threads (JAX's CPU client and torch.set_num_threads), float32; "
             f"median (min) of {meta['repeats']} calls; jax {meta['versions']['jax']}, torch "
             f"{meta['versions']['torch']}; 1-min load average {meta['load_average_1min']['before']:.2f} before, "
             f"{meta['load_average_1min']['after']:.2f} after", "",
             "| part | shapes | JAX ms | PyTorch ms | PyTorch / JAX | JAX compile s |", "|---|---|---|---|---|---|"]
    for r in rows:
        shapes = " ".join(f"{k}={v}" for k, v in r["shapes"].items())
        lines.append(f"| {r['setting']} | {shapes} | {r['jax_ms']:.1f} ({r['jax_ms_min']:.1f}) | "
                     f"{r['torch_ms']:.1f} ({r['torch_ms_min']:.1f}) | {r['ratio']:.2f}x | {r['compile_s']:.1f} |")
    return "\n".join(lines) + "\n"


def _shape(cls, overrides: dict):
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in overrides.items() if k in fields and v is not None})


def run(parts, repeats: int, overrides: dict, *, chunk=None, literal_teacher=False) -> dict:
    """Benchmark `parts`; JAX's CPU client sizes its thread pool by the process's CPU affinity (set it first)."""
    import torch

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads)
    rows, load_before = [], os.getloadavg()[0]
    if "step" in parts:
        shape = _shape(StepShape, overrides)
        if overrides.get("num_heads") is None and overrides.get("hidden") is not None:
            shape = dataclasses.replace(shape, num_heads=max(1, shape.hidden // 64))  # head dim 64
        rows.append(bench_step(shape, repeats, chunk=chunk, literal_teacher=literal_teacher))
        print(f"params: JAX student {rows[-1]['params']['jax_student']:,} / PyTorch "
              f"{rows[-1]['params']['torch_student']:,}; teacher {rows[-1]['params']['jax_teacher']:,} / "
              f"{rows[-1]['params']['torch_teacher']:,}", flush=True)
    if "objective" in parts:
        rows.append(bench_objective(_shape(ObjectiveShape, overrides), repeats))
    versions = {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "torch": torch.__version__,
                "numpy": np.__version__, "python": platform.python_version()}
    return {"threads": threads, "repeats": repeats, "versions": versions, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "malloc_env": {k: os.environ.get(k) for k in MALLOC_ENV},
            "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
            "device": f"{jax.devices()[0].device_kind} ({platform.processor() or platform.machine()})", "rows": rows}


def main(argv):
    del argv
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("bench_step needs PyTorch for the reference side: pip install torch")
    if not FLAGS.keep_malloc and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-m", "experiments.bench_step", *sys.argv[1:]],
                  {**os.environ, **MALLOC_ENV})
    # Before any JAX computation: the same device as PyTorch, and the CPU client's thread pool follows the affinity.
    jax.config.update("jax_platforms", "cpu")
    if FLAGS.threads:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:FLAGS.threads])
    overrides = {name: getattr(FLAGS, name) for name in ("hidden", "depth", "num_heads", "num_positions",
                                                          "num_states", "batch", "num_lambda")}
    parts = PARTS if FLAGS.part == "all" else (FLAGS.part,)
    out = run(parts, FLAGS.repeats, overrides, chunk=FLAGS.chunk, literal_teacher=FLAGS.literal_teacher)
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(out, f, indent=1)
    print(markdown(out, out["rows"]))


if __name__ == "__main__":
    define_flags()
    app.run(main)
