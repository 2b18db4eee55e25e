"""Forward processes (pure functions of key, arrays and times). Interface: docs/design.md."""
from di4c_jax.processes.base import NEG_INF, safe_log, sample_categorical
from di4c_jax.processes.gaussian import DiscreteGaussian, build_gaussian_rate
from di4c_jax.processes.masked import Masked
from di4c_jax.processes.uniform import Uniform

Process = Masked | Uniform | DiscreteGaussian

__all__ = [
    "NEG_INF", "safe_log", "sample_categorical", "Masked", "Uniform", "DiscreteGaussian",
    "build_gaussian_rate", "Process",
]
