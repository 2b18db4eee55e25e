"""Experiment runner.

    python -m experiments.run --config experiments/configs/quickstart.py --workdir runs/quickstart \
        [--config.distill.steps=2000 ...] [--stage all|train_teacher|distill|sample|evaluate]

The config is resolved once into a typed `experiments.spec.Experiment` (an unknown key is an error); then the stages
run in order: train_teacher -> distill (rounds 1..distill.rounds) -> sample -> evaluate, each handing the next its
result (trained networks, sample files). Every stage resumes: rerunning the same command continues from the last
checkpoint, skips finished stages and sample files that exist; `--stage` runs one stage on what the earlier ones
left. The resolved config is saved as <workdir>/config.json and every command line is appended to
<workdir>/command.txt (its first line created the run; the report quotes that one).
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


def define_flags() -> None:
    """Command-line flags (defined only when run as a script, so the module stays importable)."""
    config_flags.DEFINE_config_file("config", None, "experiment config file (get_config())", lock_config=True)
    flags.DEFINE_string("workdir", None, "output directory (created; rerun to resume)")
    flags.DEFINE_enum("stage", "all", STAGES, "which stage to run")
    flags.mark_flags_as_required(["config", "workdir"])


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(config, workdir: str | Path, stage: str = "all") -> dict | None:
    from experiments import evaluation, stages
    from experiments.setup import build_setup
    from experiments.spec import resolve

    exp = resolve(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
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
        print(evaluation.markdown_table(results), flush=True)
        return results
    return None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save/restore at INFO
    run(FLAGS.config, FLAGS.workdir, FLAGS.stage)


if __name__ == "__main__":
    define_flags()
    app.run(main)
