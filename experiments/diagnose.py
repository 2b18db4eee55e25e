"""Where does a distilled student depart from its teacher? Held-out x0 | x_t diagnostics per noise level.

    python -m experiments.diagnose --workdir runs/text_hmm [--round 1] [--times 0.2,0.5,0.8,0.95] \
        [--lambdas 16,256] [--num 256] [--denoise 200000]

For held-out data x0 and x_t ~ q(. | x0) at each t, with the student's mixture estimated from N lambdas (each N in
--lambdas, so an N-dependent gap exposes a student that games the finite-N estimator of the Di4C loss):
  teacher_loglik  log p_teacher(x0 | x_t), the teacher's product density (nats per sequence)
  student_loglik  F = log (1/N) sum_n prod_d p_n(x0_d | x_t): the student mixture's density of the data
  correlation     F - G, G the log product of the mixture's marginals: what the mixture adds over its marginals
  marginal_kl     sum_d KL(teacher marginal || mixture marginal): how far the student's marginals have moved
  exact_loglik    log q(x0 | x_t) under the true law (the exact benchmark by enumeration, the HMM language by the
                  forward algorithm): the ceiling of both logliks in expectation (its mean is -H(x0 | x_t))
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
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from di4c_jax.eval import diagnose_point, one_step_denoise, sample_hmm
from di4c_jax.eval.diagnostics import exact_posterior_loglik
from di4c_jax.eval.exact import all_states
from di4c_jax.eval.hmm import hmm_masked_posterior_loglik
from experiments import stages
from experiments.evaluation import make_scorer, source_array
from experiments.setup import setup_from_workdir

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags (defined only when run as a script, so the module stays importable)."""
    flags.DEFINE_string("workdir", None, "a distilled experiment's workdir (holds config.json)")
    flags.DEFINE_integer("round", 1, "which distillation round's student")
    flags.DEFINE_list("times", ["0.2", "0.5", "0.8", "0.95"], "noise levels t")
    flags.DEFINE_list("lambdas", ["16", "256"], "mixture sizes N")
    flags.DEFINE_integer("num", 256, "held-out sequences")
    flags.DEFINE_integer("denoise", 0, "sequences for the one-step denoising scores (0: skip them)")
    flags.mark_flags_as_required(["workdir"])


def denoise_rows(setup, nets: dict, times: list[float], num: int, chunk: int = 8192) -> tuple[list[dict], int]:
    """(one row per t: the evaluator's scores of one-step denoised data for each network in `nets`, the number
    of sequences used: `num`, or the held-out split's size if smaller)."""
    scorer = make_scorer(setup)
    if setup.law is not None:
        x0 = setup.law.sample(jax.random.key(1), num)
    elif setup.hmm is not None:
        x0 = sample_hmm(jax.random.key(1), num, setup.num_dims, *setup.hmm)[0]
    else:
        x0 = jnp.asarray(source_array(setup.eval_source)[0][:num])
    rows = []
    for i, t in enumerate(times):
        row, key = {"t": t}, jax.random.fold_in(jax.random.key(2), i)  # same x_t for every network at this t
        for name, net in nets.items():
            step = jax.jit(partial(one_step_denoise, process=setup.process, denoiser=net.denoiser, t=t))
            out = [step(jax.random.fold_in(key, j), params=net.params, x0=x0[j:j + chunk])
                   for j in range(0, x0.shape[0], chunk)]
            scores = scorer(np.asarray(jnp.concatenate(out)))
            row.update({f"{name}_{metric}": value for metric, value in scores.items()})
        rows.append(row)
    return rows, int(x0.shape[0])


def exact_posterior(setup):
    """(x0, x_t, t) -> log q(x0 | x_t) [B] under the experiment's true law, or None where there is none: the exact
    benchmark by enumeration, the HMM language (masked process) by the forward algorithm."""
    if setup.law is not None:
        probs = setup.law.probs()
        keep = probs > 0
        states = jnp.asarray(all_states(setup.num_dims, setup.info.vocab_size)[keep])
        log_probs = jnp.log(jnp.asarray(probs[keep]))
        return partial(exact_posterior_loglik, setup.process, states=states, log_probs=log_probs)
    if setup.hmm is not None and setup.process.absorbing:
        return lambda x0, x_t, t: hmm_masked_posterior_loglik(x0, x_t, setup.process.mask_id, *setup.hmm)
    return None


def run(workdir: Path, round_index: int, times: list[float], lambdas: list[int], num: int,
        denoise: int = 0) -> list[dict]:
    setup = setup_from_workdir(workdir)
    if setup.conditional:
        raise ValueError("diagnose.py handles unconditional experiments; this one is class-conditional")
    if setup.eval_source is None:
        raise ValueError(f"{workdir} has no held-out split to diagnose on")
    x0 = jnp.asarray(source_array(setup.eval_source)[0][:num])
    teacher, student = stages.load_teacher(setup), stages.load_student(setup, round_index)
    jitted = lambda net: net.denoiser.with_apply(jax.jit(net.denoiser.apply))  # noqa: E731
    exact = exact_posterior(setup)
    rows = []
    for i, t in enumerate(times):
        for n in lambdas:
            key = jax.random.fold_in(jax.random.key(0), i)  # same x_t for every N at this t
            rows.append({"t": t, "num_lambda": n,
                         **diagnose_point(key, process=setup.process, teacher=jitted(teacher),
                                          teacher_params=teacher.params, student=jitted(student),
                                          student_params=student.params, x0=x0, t=t, num_lambda=n,
                                          exact_posterior=exact)})
    meta = {"workdir": str(workdir), "student": stages.student_name(round_index), "num_sequences": int(x0.shape[0])}
    out = {"meta": meta, "rows": rows}
    if denoise:
        nets = {"teacher": teacher, "student": student}
        out["denoise"], meta["denoise_sequences"] = denoise_rows(setup, nets, times, denoise)
    (workdir / "diagnose.json").write_text(json.dumps(out, indent=1))
    (workdir / "diagnose.md").write_text(markdown(meta, rows, out.get("denoise")))
    return rows


def markdown(meta: dict, rows: list[dict], denoise: list[dict] | None = None) -> str:
    columns = [c for c in rows[0] if c not in ("t", "num_lambda")]
    lines = [f"{meta['student']} vs teacher on {meta['num_sequences']} held-out sequences (nats per sequence)\n",
             "| t | N | " + " | ".join(columns) + " |", "|" + "---|" * (2 + len(columns))]
    lines += [f"| {r['t']:g} | {r['num_lambda']} | " + " | ".join(f"{r[c]:.3f}" for c in columns) + " |"
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
