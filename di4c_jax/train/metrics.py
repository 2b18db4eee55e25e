"""Scalar metrics to a JSONL file and TensorBoard event files (process 0 only; other processes write nothing)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import jax
import numpy as np


class MetricWriter:
    """`write_scalars(step, {name: value})` appends `{"step": step, name: value, ...}` to `<logdir>/metrics.jsonl`
    and adds the same scalars to a tensorboardX SummaryWriter in `logdir`. The JSONL file is appended to, so a
    resumed run continues it; `truncate_after(step)` first drops the lines of steps lost with a crash.
    """

    def __init__(self, logdir: str | os.PathLike, tensorboard: bool = True, filename: str = "metrics.jsonl"):
        self.logdir = Path(logdir)
        self.active = jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        if not self.active:
            return
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.logdir / filename, "a", encoding="utf-8", buffering=1)  # line-buffered: tail -f works
        if tensorboard:
            from tensorboardX import SummaryWriter  # imported lazily: only process 0 needs it
            self._tb = SummaryWriter(str(self.logdir))

    def truncate_after(self, step: int) -> None:
        """Drop the JSONL lines of steps > `step` (atomically rewritten; TensorBoard shows the newest value of a
        step anyway). A torn last line from a killed process is dropped too."""
        if not self.active:
            return
        path = Path(self._jsonl.name)
        self._jsonl.flush()
        keep, dropped = [], 0
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row_step = json.loads(line)["step"]
            except (json.JSONDecodeError, KeyError, TypeError):
                dropped += 1
                continue
            if row_step <= step:
                keep.append(line)
            else:
                dropped += 1
        if not dropped:
            return
        self._jsonl.close()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
        os.replace(tmp, path)
        self._jsonl = open(path, "a", encoding="utf-8", buffering=1)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.active:
            return
        values = {name: float(np.asarray(v)) for name, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        if self._tb is not None:
            for name, v in values.items():
                self._tb.add_scalar(name, v, int(step))

    def flush(self) -> None:
        if self._jsonl is not None:
            self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
