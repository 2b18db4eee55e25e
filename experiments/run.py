"""Experiment runner.

    python -m experiments.run --config experiments/configs/quickstart.py --workdir runs/quickstart \
        [--config.distill.steps=2000 ...] [--stage all|train_teacher|distill|sample|evaluate]

The config is resolved once into a typed `experiments.spec.Experiment` (an unknown key is an error); then the stages
run in order: train_teacher -> distill (rounds 1..distill.rounds) -> sample -> evaluate, each handing the next its
result (trained networks, sample files). Every stage resumes: rerunning the same command continues from the last
checkpoint, skips finished stages and sample files that exist; `--stage` runs one stage on what the earlier ones
left. The resolved config is saved as <workdir>/config.json and every command line is appended to
<workdir>/command.txt (its first line created the run; the report quotes that one).

Multi-host: start the same command on every host (or GPU) with a shared workdir. The processes join through
`di4c_jax.parallel.initialize_distributed`: explicitly with --coordinator_address host:port --num_processes P
--process_id i (or $JAX_COORDINATOR_ADDRESS, $DI4C_NUM_PROCESSES, $DI4C_PROCESS_ID), or by themselves under Slurm,
Open MPI or a multi-host TPU slice. Each process reads its rows of every global batch (the batches are those of a
1-process run), all of them write their checkpoint shards, and process 0 alone writes configs, metrics, samples
and results.
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

STAGES = ("train_teacher", "distill", "sample", "evaluate", "all")
FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Command-line flags (defined only when run as a script, so the module stays importable).

    `--config.a.b=value` may also set a key the config file does not write (e.g. a Di4C recipe field such as
    `--config.distill.loss.reference_student=0.5`, value parsed as a Python literal): `experiments.spec.resolve`
    rejects any key that no stage reads, so a typo still fails before training.
    """
    config_flags.DEFINE_config_file("config", None, "experiment config file (get_config())", lock_config=False,
                                    accept_new_attributes=True, flag_values=flag_values)
    flags.DEFINE_string("workdir", None, "output directory (created; rerun to resume)", flag_values=flag_values)
    flags.DEFINE_enum("stage", "all", STAGES, "which stage to run", flag_values=flag_values)
    flags.DEFINE_string("coordinator_address", None, "multi-process run: host:port of process 0",
                        flag_values=flag_values)
    flags.DEFINE_integer("num_processes", None, "multi-process run: number of processes", flag_values=flag_values)
    flags.DEFINE_integer("process_id", None, "multi-process run: this process's index", flag_values=flag_values)
    flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)


def _log(msg: str) -> None:
    import jax

    if jax.process_index() == 0:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(config, workdir: str | Path, stage: str = "all") -> dict | None:
    from di4c_jax import parallel
    from experiments import evaluation, stages
    from experiments.setup import build_setup
    from experiments.spec import resolve

    exp = resolve(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if parallel.is_writer():
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=1))
        with open(workdir / "command.txt", "a") as f:  # every invocation; the first one created the workdir
            f.write("python -m experiments.run " + shlex.join(sys.argv[1:]) + "\n")
    setup = build_setup(exp, workdir)
    _log(f"{exp.name or workdir.name}: {setup.info.name} data, D={setup.num_dims}, "
         f"{type(setup.process).__name__} process with K={setup.process.num_states} states")
    wanted = lambda name: stage in (name, "all")  # noqa: E731
    if wanted("train_teacher"):
        _log("stage train_teacher" + (f" (shared: {exp.teacher_workdir})" if exp.teacher_workdir else ""))
        stages.train_teacher(setup)
    if wanted("distill"):
        stages.distill(setup, log=_log)
    if wanted("sample"):
        _log("stage sample")
        stages.sample(setup, stages.trained_networks(setup))
    if wanted("evaluate"):
        _log("stage evaluate")
        results = evaluation.evaluate(setup)
        if parallel.is_writer():
            print(evaluation.markdown_table(results), flush=True)
        return results
    return None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save/restore at INFO
    import jax

    from di4c_jax.parallel import initialize_distributed

    try:
        joined = initialize_distributed(coordinator_address=FLAGS.coordinator_address,
                                        num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    if joined.process_count > 1:
        _log(f"{joined.process_count} processes ({joined.mode}), {jax.device_count()} devices")
    run(FLAGS.config, FLAGS.workdir, FLAGS.stage)


if __name__ == "__main__":
    define_flags()
    app.run(main)
