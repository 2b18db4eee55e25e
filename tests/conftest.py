"""Test configuration: 8 simulated CPU devices, one XLA compilation cache per test run and compilation without
backend optimisations (set before jax is imported), and the `slow` marker."""
import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same programs (every tiny runner test builds the same networks; the subprocess tests
# relaunch the same command): one persistent cache shared by the xdist workers and the processes they start
# compiles each once. Keyed by the program, flags and jax version, so a hit is the same executable; fresh per run.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"di4c-jax-tests-{_RUN}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Tests run tiny programs once, so compilation dominates: XLA's backend (LLVM) optimisations off cuts the --runslow
# suite by a third to a half on 2 CPU cores (figures under "Run the tests" in the README). No fast math either way,
# so results differ from an optimised build by float rounding at most; benchmarks and experiments compile optimised.
# JAX_DISABLE_MOST_OPTIMIZATIONS=0 in the environment runs the tests optimised.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
