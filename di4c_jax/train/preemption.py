"""SIGTERM as a request to stop cleanly: the training loop saves a checkpoint at the next step and raises
`Preempted`; the command line prints where it stopped and exits with 128 + SIGTERM (143).

Schedulers (Slurm, Kubernetes, TPU maintenance events) send SIGTERM some seconds before they kill a job; without a
handler Python dies at once and loses every step since the last periodic checkpoint.
"""
from __future__ import annotations

import contextlib
import signal
import threading

EXIT_PREEMPTED = 128 + signal.SIGTERM

_requested = threading.Event()


class Preempted(Exception):
    """Work stopped on SIGTERM at a safe point; `where` says which (e.g. the step and its checkpoint)."""

    def __init__(self, where: str):
        self.where = where
        super().__init__(f"stopped by SIGTERM {where}; rerun the same command to resume")


def requested() -> bool:
    """Whether a SIGTERM arrived inside a `sigterm_guard`."""
    return _requested.is_set()


@contextlib.contextmanager
def sigterm_guard():
    """Within the block, SIGTERM sets `requested()` instead of killing the process (main thread only; elsewhere,
    and for nested guards, the handler in place is kept)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is _handler:   # nested: the outer guard owns the handler and the flag
        yield
        return
    _requested.clear()
    signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _handler(signum, frame) -> None:
    _requested.set()
