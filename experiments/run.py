"""Experiment runner.

    python -m experiments.run --config experiments/configs/quickstart.py --workdir runs/quickstart \
        [--config.distill.steps=2000 ...] [--stage all|train_teacher|distill|sample|evaluate]
    di4c-run --data=tokens.npy --workdir runs/mine        # your own data (the quickstart config by default)

`--data` replaces the config's data: PATH.npy (int tokens [num, D]), tfds:NAME[:split] or a folder of text files
(`--tokenizer char|byte`); a seeded held-out split (data.holdout, default 10%) is scored by the generic evaluator
(experiments/data_arg.py, experiments/evaluation.py).

The config is resolved once into a typed `experiments.spec.Experiment` (an unknown key is an error); then the stages
run in order: train_teacher -> distill (rounds 1..distill.rounds) -> sample -> evaluate, each handing the next its
result (trained networks, sample files). Every stage resumes: rerunning the same command continues from the last
checkpoint, skips finished stages and sample files that exist; `--stage` runs one stage on what the earlier ones
left. The resolved config is saved as <workdir>/config.json and every command line is appended to
<workdir>/command.txt (its first line created the run; the report quotes that one). The evaluate stage prints the
results table and writes results.json, results.md and results.png (the main metric, e.g. TV, against NFE).

Bad input (a config value, a flag, a file, a teacher_workdir without a teacher, a checkpoint of another network)
ends the run before it writes anything into the workdir, with one line `error: ...` on stderr and exit status 2;
`--debug` shows the traceback instead. The `di4c-run` console script runs `main`.

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
from typing import Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from experiments.cli import absl_help, guarded, last_override_wins

STAGES = ("train_teacher", "distill", "sample", "evaluate", "all")
FLAGS = flags.FLAGS
DEFAULT_CONFIG = str(Path(__file__).parent / "configs" / "quickstart.py")


def define_flags(flag_values: flags.FlagValues = FLAGS, argv: Sequence[str] | None = None) -> None:
    """Command-line flags (defined only when run as a script, so the module stays importable).

    `--config.a.b=value` may also set a key the config file does not write (e.g. a Di4C recipe field such as
    `--config.distill.loss.reference_student=0.5`, value parsed as a Python literal): `experiments.spec.resolve`
    rejects any key that no stage reads, so a typo still fails before training. argv: the command line the config
    overrides are read from (default sys.argv).
    """
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "experiment config file (get_config()); default: "
                                    "the quickstart", lock_config=False, accept_new_attributes=True,
                                    flag_values=flag_values, sys_argv=None if argv is None else list(argv))
    flags.DEFINE_string("workdir", None, "output directory (created; rerun to resume)", flag_values=flag_values)
    flags.DEFINE_enum("stage", "all", STAGES, "which stage to run", flag_values=flag_values)
    flags.DEFINE_string("coordinator_address", None, "multi-process run: host:port of process 0",
                        flag_values=flag_values)
    flags.DEFINE_integer("num_processes", None, "multi-process run: number of processes", flag_values=flag_values)
    flags.DEFINE_integer("process_id", None, "multi-process run: this process's index", flag_values=flag_values)
    flags.DEFINE_string("data", None, "your own data in place of the config's: PATH.npy (int tokens [num, D]), "
                        "tfds:NAME[:split], or a folder of text files (see experiments/data_arg.py)",
                        flag_values=flag_values)
    flags.DEFINE_string("tokenizer", None, "--data FOLDER: 'char' (a vocabulary of the folder's characters; the "
                        "default), 'byte', or 'bpe:PATH/tokenizer.json' (a Hugging Face BPE such as GPT-2's; each "
                        "file is a document, packed into MDLM's wrapped blocks)", flag_values=flag_values)
    flags.DEFINE_bool("debug", False, "on an error, show its traceback instead of one line", flag_values=flag_values)
    flags.mark_flags_as_required(["workdir"], flag_values=flag_values)


def _log(msg: str) -> None:
    import jax

    if jax.process_index() == 0:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(config, workdir: str | Path, stage: str = "all", command: Sequence[str] | None = None) -> dict | None:
    """Run `stage` (default: all) of the experiment `config` in `workdir`; the evaluate stage returns the results.

    Every check (the config, the workdir, a shared teacher, the mesh, the data, existing checkpoints) runs before
    anything is written into the workdir. command: the command-line arguments recorded in command.txt (default
    sys.argv[1:])."""
    from di4c_jax import parallel
    from experiments import checks
    from experiments.setup import build_setup
    from experiments.spec import resolve

    exp = resolve(config)
    workdir = Path(workdir)
    checks.workdir_usable(workdir)
    checks.shared_teacher(exp)
    checks.mesh_fits(exp)
    setup = build_setup(exp, workdir)
    checks.checkpoints_fit(setup)
    workdir.mkdir(parents=True, exist_ok=True)
    if parallel.is_writer():
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=1))
        with open(workdir / "command.txt", "a") as f:  # every invocation; the first one created the workdir
            args = sys.argv[1:] if command is None else command
            f.write("python -m experiments.run " + shlex.join(args) + "\n")
    _log(f"{exp.name or workdir.name}: {setup.info.name} data, D={setup.num_dims}, "
         f"{type(setup.process).__name__} process with K={setup.process.num_states} states")
    if setup.data_note:
        _log(setup.data_note)
    from di4c_jax.train import sigterm_guard

    with sigterm_guard():  # SIGTERM: the training step or sample file in progress is finished, then a clean stop
        return _run_stages(setup, stage, workdir, exp)


def _run_stages(setup, stage: str, workdir: Path, exp) -> dict | None:
    from di4c_jax import parallel
    from experiments import evaluation, stages

    wanted = lambda name: stage in (name, "all")  # noqa: E731
    if wanted("train_teacher"):
        _log("stage train_teacher" + (f" (shared: {exp.teacher_workdir})" if exp.teacher_workdir else ""))
        stages.train_teacher(setup, log=_log)
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
            from experiments.report import plot

            metric = plot(results, workdir / "results.png")
            if metric:
                print(f"plot ({metric} against NFE): {workdir / 'results.png'}", flush=True)
        return results
    return None


def _run_flags(flag_values: flags.FlagValues, argv: Sequence[str]) -> int:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save/restore at INFO
    import jax

    from di4c_jax.parallel import initialize_distributed

    try:
        joined = initialize_distributed(coordinator_address=flag_values.coordinator_address,
                                        num_processes=flag_values.num_processes, process_id=flag_values.process_id)
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    if joined.process_count > 1:
        _log(f"{joined.process_count} processes ({joined.mode}), {jax.device_count()} devices")
    config = flag_values.config
    if flag_values.data is not None:
        use_data_flag(config, flag_values)
    elif flag_values.tokenizer is not None:
        raise app.UsageError(f"--tokenizer={flag_values.tokenizer} applies to --data=FOLDER, and there is no --data")
    run(config, flag_values.workdir, flag_values.stage, command=argv[1:])
    return 0


def use_data_flag(config, flag_values: flags.FlagValues) -> None:
    """config.data becomes the section `--data` stands for, plus the `--config.data.*` options of the command line;
    the experiment's name says whose data and which config ('tokens.npy (quickstart config)')."""
    from experiments import data_arg

    overrides = config_flags.get_override_values(flag_values["config"])
    section = data_arg.data_section(flag_values.data, flag_values.tokenizer)
    section.update({key[len("data."):]: value for key, value in overrides.items() if key.startswith("data.")})
    config.data = section
    if "name" not in overrides:
        stem = Path(config_flags.get_config_filename(flag_values["config"]).split(":", 1)[0]).stem
        config.name = f"{data_arg.label(section)} ({stem} config)"


def _config_file_exists(argv: Sequence[str]) -> None:
    """--config FILE[:ARGS] names a file (checked here: config_flags' own message is a paragraph)."""
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith(("--config=", "-config=")) or arg in ("--config", "-config") and i + 1 < len(argv):
            value = arg.split("=", 1)[1] if "=" in arg else argv[i + 1]
            path = Path(value.split(":", 1)[0])
            if not path.is_file():
                raise FileNotFoundError(f"--config {value}: no such file {str(path)!r}; expected an experiment "
                                        f"config, a .py file with get_config() (e.g. "
                                        f"experiments/configs/quickstart.py)")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (argv[0] is the program name; default sys.argv): parse, run, return the exit status
    (0; 2 on bad input, with one line `error: ...` on stderr). Each call parses into fresh flags, so it can run
    in-process (tests) as often as wanted."""
    argv = list(sys.argv if argv is None else argv)
    flag_values = flags.FlagValues()

    def parse_and_run() -> int:
        _config_file_exists(argv)
        parsed = last_override_wins(argv)  # a repeated --config.key=value: the last wins (tuples included)
        define_flags(flag_values, parsed)  # loads the config file: its errors are bad input too
        if absl_help(argv, __doc__, flag_values, sys.modules[__name__]):
            return 0
        rest = flag_values(parsed)
        if len(rest) > 1:
            raise app.UsageError(f"unexpected arguments: {rest[1:]}")
        return _run_flags(flag_values, argv)

    return guarded(parse_and_run, argv)


def cli() -> None:
    """The `di4c-run` console script."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
