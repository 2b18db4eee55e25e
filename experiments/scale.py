"""Ahead-of-time memory and FLOP tables of the full Di4C training step at the paper's three settings.

    python -m experiments.scale --setting sdtt --num-lambda 64 --devices 8 --json out.json [--chunk C] [--fsdp F]
        [--dtype bfloat16] [--remat full]

Compiles the whole step (teacher pass and steps, student u-side pass, t-side pass, objective, gradient, Adam
update, EMA) from `jax.ShapeDtypeStruct`s on a simulated mesh of `--devices` CPU devices (data x fsdp, fsdp =
devices by default), allocating nothing of the real size, and reports per device: argument, output and temp bytes
(`memory_analysis`), the compiled FLOPs (`cost_analysis`), the analytic model FLOPs and the step time they imply
at 45% of 790 TFLOP/s (an H200's bf16 peak). The global batch is the setting's per-device batch times the devices.

Settings (the reference per-device batch and N):
  tauldr   CIFAR-10 tauLDR U-Net ('unet-cifar10'), D = 3072, K = 256, 8 images, N = 16, tauldr recipe
  maskgit  ImageNet-256 VQ tokens, MaskGIT-size DiT stand-in ('maskgit'), D = 256, K = 1025, 2 items, N = 32
  sdtt     OpenWebText, sdtt DiT-small ('dit-small'), D = 1024, K = 50258, 1 item, N = 16 (or 64)
`--dtype bfloat16` runs the networks' matmuls in bf16 (float32 parameters, logits and losses); `--remat` is the
per-block rematerialisation policy (models/remat.py).
JSON (one object): setting, num_lambda, devices, mesh, chunk, compute_dtype, remat, per_device_bytes
(argument + output + temp),
argument_bytes, output_bytes, temp_bytes, flops_per_step (per device), xla_flops, forward_flops_per_item,
implied_step_s, compile_s. flops_per_step is the analytic count (network passes x forward FLOPs); xla_flops is XLA's
own count, which counts each loop body (the lambda chunks, a remat DiT's blocks) once.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any

SETTINGS = {
    "tauldr": dict(model="unet-cifar10", batch=8, num_lambda=16, recipe="tauldr", classes=0, overrides={}),
    "maskgit": dict(model="maskgit", batch=2, num_lambda=32, recipe="maskgit", classes=1000, overrides={}),
    "sdtt": dict(model="dit-small", batch=1, num_lambda=16, recipe="sdtt", classes=0, overrides={}),
    # a CPU-test size of the sdtt setting (not a paper setting)
    "tiny": dict(model="dit-tiny", batch=2, num_lambda=4, recipe="sdtt", classes=0,
                 overrides=dict(num_states=65, num_positions=32)),
}
PEAK_FLOPS, MFU = 790e12, 0.45


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m experiments.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), required=True)
    parser.add_argument("--num-lambda", type=int, default=None, help="N (default: the setting's reference N)")
    parser.add_argument("--devices", type=int, default=8, help="simulated devices (1, 8, 64, ...)")
    parser.add_argument("--fsdp", type=int, default=None, help="fsdp axis size (default: all devices)")
    parser.add_argument("--chunk", type=int, default=None, help="lambdas per student call (default: from shapes)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="matmul dtype")
    parser.add_argument("--remat", default="none", help="per-block remat policy: none | dots_saveable | full | ...")
    parser.add_argument("--json", default=None, help="write the result object here")
    args = parser.parse_args(argv)
    if args.devices < 1 or (args.fsdp is not None and (args.fsdp < 1 or args.devices % args.fsdp)):
        parser.error(f"--devices must be >= 1 and a multiple of --fsdp; got {args.devices}, {args.fsdp}")
    return args


def _process(setting: str, num_states: int):
    from di4c_jax.processes import DiscreteGaussian, Masked

    if setting == "tauldr":
        return DiscreteGaussian(num_states=num_states)
    if setting == "maskgit":
        return Masked(vocab_size=num_states - 1, schedule="arccos", subs=False)
    return Masked(vocab_size=num_states - 1)


@dataclasses.dataclass(frozen=True)
class StepSetup:
    """One setting's training step and the abstract (sharded) arguments it is compiled for."""

    setting: str
    mesh: Any
    step: Any                 # engine.make_train_step(...): step.jitted(state, batch, frozen)
    tx: Any
    state: Any                # ShapeDtypeStructs with shardings
    frozen: Any               # the teacher's params, likewise
    batch: dict               # {'x0': int32[B, D] (, 'cond': int32[B])}
    teacher_cfg: Any
    student_cfg: Any
    process: Any
    config: Any               # the recipe
    per_device_batch: int

    @property
    def global_batch(self) -> int:
        return self.batch["x0"].shape[0]


def build_step(setting: str, *, num_lambda: int | None = None, devices: int | None = None, fsdp: int | None = None,
               chunk: int | None = None, dtype: str = "float32", remat: str = "none",
               per_device_batch: int | None = None, attention: str | None = None) -> StepSetup:
    """The full Di4C training step of `setting` on the first `devices` devices (data x fsdp mesh); `attention`
    sets the DiT's attention implementation (models.dit.ATTENTIONS; default: the model's)."""
    import jax
    import jax.numpy as jnp

    from di4c_jax import parallel, train as engine
    from di4c_jax.losses import di4c_config, di4c_loss
    from di4c_jax.losses.chunked import default_chunk
    from di4c_jax.models import abstract_params, make_denoiser, model_config

    spec = SETTINGS[setting]
    devices = devices or jax.device_count()
    mesh = parallel.make_mesh(fsdp=fsdp or devices, devices=jax.devices()[:devices])
    overrides = dict(spec["overrides"], dropout=0.0, remat=remat,
                     compute_dtype=None if dtype == "float32" else dtype)
    if attention is not None:
        overrides["attention"] = attention
    teacher_cfg = model_config(spec["model"], **overrides)
    student_cfg = model_config(spec["model"], **overrides, lam_style=_lam_style(setting))
    teacher, student = make_denoiser(teacher_cfg), make_denoiser(student_cfg)
    process = _process(setting, teacher.num_states)
    config = di4c_config(spec["recipe"], num_lambda=num_lambda or spec["num_lambda"], chunk=chunk)
    per_device_batch = per_device_batch or spec["batch"]
    global_batch = per_device_batch * devices
    if chunk is None:  # the accelerators' default, not that of the CPU this compiles on
        chunk = default_chunk(global_batch, teacher.num_positions, process.num_states,
                              max(config.num_lambda, config.num_samples_composition), backend="gpu")
        config = dataclasses.replace(config, chunk=chunk)

    def loss_fn(key, params, batch, teacher_params):
        return di4c_loss(key, student=student, student_params=params, teacher=teacher,
                         teacher_params=teacher_params, process=process, x0=batch["x0"], config=config,
                         cond=batch.get("cond"))

    tx = engine.make_optimizer(engine.OptimConfig(learning_rate=3e-5))
    shapes = jax.eval_shape(lambda k: engine.init_train_state(abstract_zeros(student_cfg), tx, k), jax.random.key(0))
    state_sh = parallel.fsdp_shardings(mesh, shapes)
    frozen = abstract_params(teacher_cfg)
    frozen_sh = parallel.fsdp_shardings(mesh, frozen)
    step = engine.make_train_step(loss_fn, tx, ema_decay=0.9999, mesh=mesh, state_shardings=state_sh,
                                  frozen_shardings=frozen_sh)
    batch = {"x0": jax.ShapeDtypeStruct((global_batch, teacher.num_positions), jnp.int32)}
    if spec["classes"]:
        batch["cond"] = jax.ShapeDtypeStruct((global_batch,), jnp.int32)
    return StepSetup(setting, mesh, step, tx, parallel.abstract_with_shardings(shapes, state_sh),
                     parallel.abstract_with_shardings(frozen, frozen_sh), batch, teacher_cfg, student_cfg, process,
                     config, per_device_batch)


def model_flops(built: StepSetup) -> tuple[float, float]:
    """(analytic FLOPs of one step per device, FLOPs of one student forward pass on one item).

    Per item: the teacher at x_t (a mixture teacher: M) plus tauldr's N small-time passes, the student's M u-side
    passes, and its N gradient passes (3 forwards each; + tauldr's N small-time ones), one more forward each when
    chunked (recomputed in the backward pass), and one more with full remat (the blocks recomputed). Counted on
    the unrolled networks (remat 'none'): XLA's cost analysis counts a rolled scan's body once.
    """
    from di4c_jax.models import abstract_params, make_denoiser

    config, spec = built.config, SETTINGS[built.setting]
    n, m = config.num_lambda, config.num_samples_composition
    dims = built.batch["x0"].shape[1]
    chunk = built.config.chunk
    unrolled = [cfg.copy_and_resolve_references() for cfg in (built.teacher_cfg, built.student_cfg)]
    remat = unrolled[1].remat
    for cfg in unrolled:
        cfg.remat = "none"
    f_teacher, f_student = (_forward_flops(make_denoiser(cfg), abstract_params(cfg), dims, spec["classes"])
                            for cfg in unrolled)
    grad_passes = n * (2 if config.small_time_distillation else 1)
    per_item = (f_teacher * (1 + (n if config.small_time_distillation else 0)) + f_student * m
                + f_student * grad_passes * (3 + (chunk < n) + (remat == "full")))
    return per_item * built.per_device_batch, f_student


def measure(setting: str, *, num_lambda: int | None = None, devices: int | None = None, fsdp: int | None = None,
            chunk: int | None = None, dtype: str = "float32", remat: str = "none") -> dict:
    """Compile the step for `setting` on the current devices and return the result object (see module doc)."""
    from di4c_jax.models import param_count

    built = build_step(setting, num_lambda=num_lambda, devices=devices, fsdp=fsdp, chunk=chunk, dtype=dtype,
                       remat=remat)
    start = time.perf_counter()
    compiled = built.step.jitted.lower(built.state, built.batch, built.frozen).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    config = built.config
    n, m = config.num_lambda, config.num_samples_composition
    flops_per_step, f_student = model_flops(built)
    out = {
        "setting": setting, "num_lambda": n, "num_composition": m, "devices": built.mesh.size,
        "mesh": {name: int(size) for name, size in built.mesh.shape.items()},
        "per_device_batch": built.per_device_batch,
        "chunk": built.config.chunk,
        "compute_dtype": dtype, "remat": remat, "params": param_count(built.student_cfg),
        "forward_flops_per_item": f_student,
        "argument_bytes": int(memory.argument_size_in_bytes), "output_bytes": int(memory.output_size_in_bytes),
        "temp_bytes": int(memory.temp_size_in_bytes),
        "flops_per_step": float(flops_per_step),
        "xla_flops": float(cost["flops"]) if "flops" in cost else float("nan"),
        "compile_s": compile_s,
    }
    out["per_device_bytes"] = out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"]
    out["implied_step_s"] = out["flops_per_step"] / (MFU * PEAK_FLOPS)
    return out


def _lam_style(setting: str) -> str:
    return "embed" if setting == "tauldr" else "token"


def _forward_flops(denoiser, params, dims: int, classes: int) -> float:
    """XLA's FLOP count of one network forward pass on one item (no loop inside, so it counts everything)."""
    import jax
    import jax.numpy as jnp

    item = lambda dtype: jax.ShapeDtypeStruct((1,), dtype)  # noqa: E731
    args = (params, jax.ShapeDtypeStruct((1, dims), jnp.int32), item(jnp.float32),
            item(jnp.float32) if denoiser.mixture else None, item(jnp.int32) if classes else None)
    compiled = jax.jit(lambda p, x, t, lam, cond: denoiser.apply(p, x, t, lam, cond)).lower(*args).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def abstract_zeros(model_cfg):
    """A params tree of zeros-to-be (only shapes matter inside eval_shape)."""
    import jax
    import jax.numpy as jnp

    from di4c_jax.models import abstract_params

    return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), abstract_params(model_cfg))


def main(argv=None) -> dict:
    args = parse(sys.argv[1:] if argv is None else argv)
    flags = os.environ.setdefault("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:  # must happen before jax is imported
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    out = measure(args.setting, num_lambda=args.num_lambda, devices=args.devices, fsdp=args.fsdp,
                  chunk=args.chunk, dtype=args.dtype, remat=args.remat)
    text = json.dumps(out, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    gib = 2 ** 30
    print(f"{out['setting']} N={out['num_lambda']} {out['compute_dtype']} remat={out['remat']} on {out['devices']} "
          f"devices {out['mesh']}: per device "
          f"{out['per_device_bytes'] / gib:.2f} GiB (temp {out['temp_bytes'] / gib:.2f} GiB), "
          f"{out['flops_per_step'] / 1e12:.2f} TFLOP per step, "
          f"implied step {out['implied_step_s'] * 1e3:.1f} ms at {MFU:.0%} of {PEAK_FLOPS / 1e12:.0f} TFLOP/s "
          f"(compile {out['compile_s']:.0f} s)")
    return out


if __name__ == "__main__":
    main()
