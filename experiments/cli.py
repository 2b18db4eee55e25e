"""The command-line boundary shared by the runner, the benchmark and the report (`di4c-run`, `di4c-bench`,
`di4c-report`): an error raised on bad input ends the program with one line on stderr and exit status 2, not a
traceback; `--debug` on the command line shows the traceback instead.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from absl import app, flags

EXIT_BAD_INPUT = 2
# What the project raises on bad input (configs, flags, files, arrays). RuntimeError covers stage-order mistakes
# such as distilling from a teacher that stopped early; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, OSError, KeyError, RuntimeError, flags.Error, app.UsageError)
DEBUG_SPELLINGS = ("--debug", "-debug", "--debug=true", "--debug=True", "--debug=1")
HELP_SPELLINGS = ("-h", "--help", "-help", "--helpfull", "--helpshort")


def absl_help(argv: Sequence[str], doc: str, flag_values: flags.FlagValues, module) -> bool:
    """If argv asks for help: print the module's docstring and its flags, return True (absl's own --help shows
    the docstring of `__main__`, which for a console script is the generated wrapper, and exits 1)."""
    if not any(arg in HELP_SPELLINGS for arg in argv[1:]):
        return False
    print(doc.rstrip() + "\n\nflags:\n" + flag_values.module_help(module))
    return True


def last_override_wins(argv: Sequence[str], flag: str = "config") -> list[str]:
    """argv with every `--<flag>.<key>=value` override but the last of each key dropped.

    ml_collections' config flags append a repeated tuple override to the earlier one (`'--config.x=(4,8)'` then
    `'--config.x=()'` gives `(4, 8)`, not `()`), where a repeated scalar keeps the last; this makes the last one
    win for every type, so a row's flag added to a base command that sets the same key means what it says. Only the
    `=` spelling is rewritten; `--<flag>.<key> value` passes through as typed.
    """
    argv = list(argv)
    prefixes = (f"--{flag}.", f"-{flag}.")

    def key(arg: str) -> str | None:
        return arg.split("=", 1)[0].lstrip("-") if arg.startswith(prefixes) and "=" in arg else None

    last = {key(arg): i for i, arg in enumerate(argv) if key(arg) is not None}
    return [arg for i, arg in enumerate(argv) if key(arg) is None or last[key(arg)] == i]


def debug_requested(argv: Sequence[str]) -> bool:
    """Whether argv asks for tracebacks (read before the flags parse, so a parse error honours it too)."""
    return any(arg in DEBUG_SPELLINGS for arg in argv[1:])


def one_line(err: BaseException) -> str:
    """The error's message on one line; a KeyError's repr quotes drop, an empty message shows the type."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    if not text:
        return type(err).__name__
    if isinstance(err, (TypeError, RuntimeError, KeyError)):  # may be a bug rather than bad input
        return f"{text} ({type(err).__name__}; rerun with --debug for the traceback)"
    return text


def guarded(fn: Callable[[], int | None], argv: Sequence[str]) -> int:
    """Run `fn()`; its return value (None counts as 0) is the exit status, a USER_ERRORS exception prints
    `error: <one line>` to stderr and gives EXIT_BAD_INPUT (re-raised when argv has --debug); a SIGTERM stop
    (`train.Preempted`, its checkpoint written) prints where it stopped and gives 143."""
    from di4c_jax.train.preemption import EXIT_PREEMPTED, Preempted

    try:
        status = fn()
    except Preempted as stop:
        print(f"{stop}", file=sys.stderr, flush=True)
        return EXIT_PREEMPTED
    except USER_ERRORS as err:
        if debug_requested(argv):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    return int(status or 0)
