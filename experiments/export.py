"""Export a trained network of a run (a distilled student, or the teacher) as a file the reference code loads, or
in our own format.

    python -m experiments.export --workdir RUN --family sdtt --out student.ckpt [--model student] [--weights ema]

`--family`: sdtt or mdlm (a Lightning .ckpt when --out ends in .ckpt, else a Hugging Face folder), maskgit (.pth),
tauldr (.pt), or di4c (our safetensors + config.json folder). The network must be of that family's architecture
(a run whose teacher was converted from that family). Bad input is one line `error: ...` and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.cli import guarded


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, type=Path, help="the run's workdir (holds config.json)")
    parser.add_argument("--family", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model", default="student", help="teacher, student (round 1) or student<r>")
    parser.add_argument("--weights", choices=("ema", "raw"), default="ema")
    parser.add_argument("--debug", action="store_true", help="on an error, show its traceback instead of one line")
    args = parser.parse_args(argv)

    from di4c_jax import interop
    from experiments import stages
    from experiments.setup import setup_from_workdir

    setup = setup_from_workdir(args.workdir)
    if args.model == "teacher":
        net = stages.load_teacher(setup, args.weights)
    elif args.model.startswith("student"):
        index = int(args.model[len("student"):] or 1)
        net = stages.load_student(setup, index, args.weights)
    else:
        raise ValueError(f"--model={args.model!r}: expected teacher, student or student<r>")
    if args.family == "di4c":
        path = interop.save_checkpoint(net.denoiser, net.params, args.out)
    else:
        path = interop.export_checkpoint(net.denoiser, net.params, args.out, args.family)
    print(f"{args.model} ({args.weights} weights) -> {path} ({args.family})")
    return 0


def cli() -> None:
    """The `di4c-export` console script."""
    sys.exit(guarded(main, sys.argv))


if __name__ == "__main__":
    cli()
