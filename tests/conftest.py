import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings

# "ci" keeps the suite fast on 2 cores and the same on every run (derandomized: the examples are a fixed
# function of each test, so CI cannot fail on a draw no one has seen); "thorough" draws afresh each run and is
# for hunting counterexamples — a failure it finds becomes an @example:
#   HYPOTHESIS_PROFILE=thorough pytest tests/
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Most of the suite's time is XLA compiling the same small programs again: in the processes the tests start
# (sweep workers, Ray, notebook kernels, benchmark scripts, the sharding children) and wherever a function is
# jitted anew.  One persistent compilation cache per test session, in a fresh temporary directory (so no run
# sees another's programs) and inherited by every child through the environment, compiles each program once.
# Set before JAX is imported (it reads these variables then); a JAX_COMPILATION_CACHE_DIR you set wins.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="simlm-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["SIMLM_TESTS_XLA_CACHE"] = _XLA_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

    def pytest_unconfigure(config):
        shutil.rmtree(_XLA_CACHE, ignore_errors=True)

# Under pytest-xdist (the README's -n 2) each worker inherits the session's directory; it takes its own inside
# it, since jax writes an entry without a lock or an atomic rename and two workers compiling the same program
# could hand one a torn entry (and a warning, which the tests that refuse warnings would see).
if os.environ.get("PYTEST_XDIST_WORKER") and \
        os.environ.get("JAX_COMPILATION_CACHE_DIR") == os.environ.get("SIMLM_TESTS_XLA_CACHE"):
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.environ["SIMLM_TESTS_XLA_CACHE"],
                                                           os.environ["PYTEST_XDIST_WORKER"])
