"""Convert a released checkpoint into a teacher workdir that the runner distils directly.

    python -m experiments.convert --family sdtt --checkpoint PATH --out WORKDIR [--weights ema|raw]
        [--set num_heads=16 ...] [--trust-pickle]
    python -m experiments.run --config experiments/configs/<config>.py --workdir RUN \\
        --config.teacher_workdir=WORKDIR

Families: mdlm (HF folder), sdtt (HF revision folder or Lightning .ckpt, Di4C's di4c2 students included),
maskgit (.pth), tauldr (.pt), di4c (our own export). `--weights` picks EMA or raw weights (default: what the
reference evaluates with); `--set` gives sizes the file does not record, named as in our model configs.
The converted teacher lands in WORKDIR/teacher/released/ (written atomically); bad input is one line `error: ...`
and exit status 2.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from experiments.cli import guarded

WEIGHTS = {"reference": None, "ema": True, "raw": False}


def parse_setting(text: str) -> tuple[str, object]:
    """'num_heads=16' -> ('num_heads', 16); values are Python literals (ints, tuples), else strings."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise ValueError(f"--set {text!r}: expected NAME=VALUE, e.g. num_heads=16")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", required=True)
    parser.add_argument("--checkpoint", required=True, type=Path, help="the released file or folder")
    parser.add_argument("--out", required=True, type=Path, help="the teacher workdir to write")
    parser.add_argument("--weights", choices=sorted(WEIGHTS), default="reference",
                        help="EMA or raw weights; 'reference': what the reference code evaluates with")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a size the file does not record (num_heads, num_classes, num_states, ...)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="torch.load(weights_only=False): only for files you trust (Lightning hyper_parameters)")
    parser.add_argument("--overwrite", action="store_true", help="replace a teacher converted into --out before")
    parser.add_argument("--debug", action="store_true", help="on an error, show its traceback instead of one line")
    args = parser.parse_args(argv)

    from di4c_jax import interop
    from experiments.released import write_released

    hparams = dict(parse_setting(s) for s in args.set)
    denoiser, params = interop.load_checkpoint(args.checkpoint, args.family, ema=WEIGHTS[args.weights],
                                               weights_only=not args.trust_pickle, **hparams)
    source = {"family": args.family, "checkpoint": str(args.checkpoint.absolute()), "weights": args.weights,
              "settings": hparams}
    path = write_released(denoiser, params, args.out / "teacher", source, overwrite=args.overwrite)
    cfg = denoiser.model_config
    print(f"{args.family} teacher ({cfg['kind']}, K={denoiser.num_states}, D={denoiser.num_positions}, "
          f"{'mixture' if denoiser.mixture else 'product'}) -> {path}\n"
          f"distil it: python -m experiments.run --config <config> --workdir <run> "
          f"--config.teacher_workdir={args.out}")
    return 0


def cli() -> None:
    """The `di4c-convert` console script."""
    sys.exit(guarded(main, sys.argv))


if __name__ == "__main__":
    cli()
