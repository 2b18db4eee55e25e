"""Forward processes: pure functions of (key, arrays, times) behind the `Process` protocol (docs/design.md).

A new process is one file: a frozen dataclass implementing `Process`, registered with `@PROCESSES.register(name)`.
"""
from di4c_jax.processes.base import NEG_INF, safe_log, sample_categorical
from di4c_jax.processes.confidence import confidence_step
from di4c_jax.processes.gaussian import DiscreteGaussian, build_gaussian_rate
from di4c_jax.processes.masked import Masked
from di4c_jax.processes.protocol import CAPABILITIES, Process, require
from di4c_jax.processes.registry import PROCESSES, build_process
from di4c_jax.processes.uniform import Uniform

__all__ = [
    "NEG_INF", "safe_log", "sample_categorical", "Masked", "Uniform", "DiscreteGaussian",
    "build_gaussian_rate", "Process", "CAPABILITIES", "require", "PROCESSES", "build_process", "confidence_step",
]
