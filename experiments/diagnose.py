"""Where does a distilled student depart from its teacher? Held-out x0 | x_t diagnostics per noise level.

    python -m experiments.diagnose --workdir runs/text_hmm [--round 1] [--times 0.2,0.5,0.8,0.95] \
        [--lambdas 16,256] [--num 256] [--denoise 200000]

For held-out data x0 and x_t ~ q(. | x0) at each t, with the student's mixture estimated from N lambdas (each N in
--lambdas, so an N-dependent gap exposes a student that games the finite-N estimator of the Di4C loss):
  teacher_loglik  log p_teacher(x0 | x_t), the teacher's product density (nats per sequence)
  student_loglik  F = log (1/N) sum_n prod_d p_n(x0_d | x_t): the student mixture's density of the data
  correlation     F - G, G the log product of the mixture's marginals: what the mixture adds over its marginals
  marginal_kl     sum_d KL(teacher marginal || mixture marginal): how far the student's marginals have moved
Higher student_loglik than teacher_loglik means the mixture captures correlations the product teacher cannot; a
growing marginal_kl with it means the student's marginals drift from the teacher's.

With --denoise M (M > 0): one-step denoising from the data's own x_t. M sequences x0 (drawn from the exact law
or the HMM when the experiment has one, else the held-out split), x_t ~ q(. | x0), one network evaluation x0' ~ p(. | x_t)
(one lambda per sequence for the student), and x0' scored by the experiment's evaluator (TV for the exact
benchmark, window TV for the HMM language, ...). At t = 1 this is the 1-step sampler; at t < 1 it is the error
of the last step of a multi-step sampler whose earlier steps were perfect, so it shows at which noise levels a
student is weak. Writes <workdir>/diagnose.json and diagnose.md.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_dict

from di4c_jax.eval import sample_hmm
from di4c_jax.sampling import draw_lam, x0_logprobs
from di4c_jax.losses.mixture import kl_sum, mixture_log_likelihood, mixture_log_marginal
from experiments import stages
from experiments.evaluation import SCORERS, source_array
from experiments.setup import build_setup

FLAGS = flags.FLAGS
COLUMNS = ("teacher_loglik", "student_loglik", "correlation", "marginal_kl")


def define_flags() -> None:
    """Command-line flags (defined only when run as a script, so the module stays importable)."""
    flags.DEFINE_string("workdir", None, "a distilled experiment's workdir (holds config.json)")
    flags.DEFINE_integer("round", 1, "which distillation round's student")
    flags.DEFINE_list("times", ["0.2", "0.5", "0.8", "0.95"], "noise levels t")
    flags.DEFINE_list("lambdas", ["16", "256"], "mixture sizes N")
    flags.DEFINE_integer("num", 256, "held-out sequences")
    flags.DEFINE_integer("denoise", 0, "sequences for the one-step denoising scores (0: skip them)")
    flags.mark_flags_as_required(["workdir"])


def diagnose_point(key, process, teacher, student, x0, t: float, num_lambda: int, cond=None) -> dict:
    """Batch means of COLUMNS at one noise level. teacher/student: (apply, params); x0 int[B, D]."""
    (t_apply, t_params), (s_apply, s_params) = teacher, student
    batch = x0.shape[0]
    k_xt, k_lam = jax.random.split(key)
    tt = jnp.full((batch,), t, jnp.float32)
    x_t = process.sample_xt(k_xt, x0, tt)
    teacher_logp = x0_logprobs(process, t_apply, t_params, x_t, tt, None, cond)  # [B, D, K]
    rep = lambda a: None if a is None else jnp.repeat(a, num_lambda, axis=0)  # noqa: E731
    lam = jax.random.uniform(k_lam, (batch * num_lambda,))
    logp = x0_logprobs(process, s_apply, s_params, rep(x_t), rep(tt), lam, rep(cond))
    logp = logp.reshape(batch, num_lambda, *logp.shape[1:])  # [B, N, D, K]
    points = x0[:, None, :]
    values = {
        "teacher_loglik": jnp.take_along_axis(teacher_logp, x0[..., None], axis=-1).sum(axis=(1, 2)),
        "student_loglik": mixture_log_likelihood(logp, points, control_variate=False)[:, 0],
        "correlation": mixture_log_likelihood(logp, points, control_variate=True)[:, 0],
        "marginal_kl": kl_sum(teacher_logp, mixture_log_marginal(logp)),
    }
    return {name: float(jnp.mean(v)) for name, v in values.items()}


def one_step_denoise(key, process, apply, params, x0, t: float, mixture: bool, cond=None) -> jax.Array:
    """x_t ~ q(. | x0) at time t, then one draw x0' ~ p(. | x_t) (lambda ~ U[0, 1] per row if mixture).

    x0 int32[B, D] -> x0' int32[B, D]."""
    batch = x0.shape[0]
    k_xt, k_lam, k_x0 = jax.random.split(key, 3)
    tt = jnp.full((batch,), t, jnp.float32)
    x_t = process.sample_xt(k_xt, x0, tt)
    lam = draw_lam(k_lam, batch, mixture)
    return process.denoise(k_x0, x_t, x0_logprobs(process, apply, params, x_t, tt, lam, cond))


def denoise_rows(setup, nets: dict, times: list[float], num: int, chunk: int = 8192) -> tuple[list[dict], int]:
    """(one row per t: the evaluator's scores of one-step denoised data for each network in `nets`, the number
    of sequences used: `num`, or the held-out split's size if smaller)."""
    scorer = SCORERS[setup.config.data.kind]
    if scorer is None:
        raise ValueError(f"data.kind {setup.config.data.kind!r} has no evaluator to score denoised samples")
    scorer = scorer(setup)
    if setup.law is not None:
        x0 = setup.law.sample(jax.random.key(1), num)
    elif setup.hmm is not None:
        x0 = sample_hmm(jax.random.key(1), num, setup.num_dims, *setup.hmm)[0]
    else:
        x0 = jnp.asarray(source_array(setup.eval_source)[0][:num])
    step = jax.jit(one_step_denoise, static_argnums=(1, 2, 6))
    rows = []
    for i, t in enumerate(times):
        row, key = {"t": t}, jax.random.fold_in(jax.random.key(2), i)  # same x_t for every network at this t
        for name, (apply, params, mixture) in nets.items():
            out = [step(jax.random.fold_in(key, j), setup.process, apply, params, x0[j:j + chunk], t, mixture)
                   for j in range(0, x0.shape[0], chunk)]
            scores = scorer(np.asarray(jnp.concatenate(out)))
            row.update({f"{name}_{metric}": value for metric, value in scores.items()})
        rows.append(row)
    return rows, int(x0.shape[0])


def run(workdir: Path, round_index: int, times: list[float], lambdas: list[int], num: int,
        denoise: int = 0) -> list[dict]:
    config = config_dict.ConfigDict(json.loads((workdir / "config.json").read_text()))
    setup = build_setup(config, workdir)
    if setup.conditional:
        raise ValueError("diagnose.py handles unconditional experiments; this one is class-conditional")
    if setup.eval_source is None:
        raise ValueError(f"{workdir} has no held-out split to diagnose on")
    x0 = jnp.asarray(source_array(setup.eval_source)[0][:num])
    t_apply, t_params, _ = stages.load_teacher(setup)
    s_apply, s_params, _ = stages.load_student(setup, round_index)
    apply_jit = lambda f: jax.jit(lambda p, x, t, lam, c: f(p, x, t, lam, c))  # noqa: E731
    teacher, student = (apply_jit(t_apply), t_params), (apply_jit(s_apply), s_params)
    rows = []
    for i, t in enumerate(times):
        for n in lambdas:
            key = jax.random.fold_in(jax.random.key(0), i)  # same x_t for every N at this t
            rows.append({"t": t, "num_lambda": n,
                         **diagnose_point(key, setup.process, teacher, student, x0, t, n)})
    meta = {"workdir": str(workdir), "student": stages.student_name(round_index), "num_sequences": int(x0.shape[0])}
    out = {"meta": meta, "rows": rows}
    if denoise:
        nets = {"teacher": (t_apply, t_params, False), "student": (s_apply, s_params, True)}
        out["denoise"], meta["denoise_sequences"] = denoise_rows(setup, nets, times, denoise)
    (workdir / "diagnose.json").write_text(json.dumps(out, indent=1))
    (workdir / "diagnose.md").write_text(markdown(meta, rows, out.get("denoise")))
    return rows


def markdown(meta: dict, rows: list[dict], denoise: list[dict] | None = None) -> str:
    lines = [f"{meta['student']} vs teacher on {meta['num_sequences']} held-out sequences (nats per sequence)\n",
             "| t | N | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (2 + len(COLUMNS))]
    lines += [f"| {r['t']:g} | {r['num_lambda']} | " + " | ".join(f"{r[c]:.3f}" for c in COLUMNS) + " |"
              for r in rows]
    if denoise:
        names = [k for k in denoise[0] if k != "t"]
        lines += ["", f"one-step denoising from the data's x_t ({meta['denoise_sequences']} sequences)\n",
                  "| t | " + " | ".join(names) + " |", "|" + "---|" * (1 + len(names))]
        lines += [f"| {r['t']:g} | " + " | ".join(f"{r[k]:.4g}" for k in names) + " |" for r in denoise]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    workdir = Path(FLAGS.workdir)
    run(workdir, FLAGS.round, [float(t) for t in FLAGS.times], [int(n) for n in FLAGS.lambdas], FLAGS.num,
        FLAGS.denoise)
    print((workdir / "diagnose.md").read_text())


if __name__ == "__main__":
    define_flags()
    app.run(main)
