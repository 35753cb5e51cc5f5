import os
import shutil
import subprocess
import sys
import tempfile

import pytest
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

# For the same reason the suite compiles with JAX's `jax_disable_most_optimizations` (XLA's backend
# optimisation level 0, no expensive LLVM passes): its programs are tiny and run for milliseconds, so the
# optimiser costs more than it saves — the suite takes 30 % less time (2026-12-03, 2 cores: 709 s against
# 1007 s).  The programs compute the same operations, but a reduction may sum in another order (and, unlike
# an optimised build, in an order that depends on XLA's thread count): numbers can differ from the optimised
# build's in their last bits (ε after a 40-step training run: 2e-8 relative).  Inherited by every child
# process.  A value you set wins: JAX_DISABLE_MOST_OPTIMIZATIONS=0 compiles as users' programs are compiled,
# and the suite passes both ways.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

# For the same reason again, XLA:CPU generates the suite's fused kernels with its older emitters: its newer
# fusion emitters (jaxlib's default) take far longer to compile small programs — test_heads.py and
# test_transformer.py took 91 s with them, 56 s without (2 cores, 2026-12-07), and test_hmm_review.py 52 s
# against 28 s.  The same operations, compiled by other code: numbers can differ in their last bits, as above.
# XLA ends the process at a flag it does not know, and a later jaxlib may drop this one, so a child process
# tries it first (~1 s, once per run: pytest-xdist's workers and every child inherit the result).  Not added
# where you compile as users' programs are compiled (JAX_DISABLE_MOST_OPTIMIZATIONS=0) or set it yourself;
# SIMLM_TESTS_USER_XLA_FLAGS keeps your XLA_FLAGS, for the tests that compile as users do.
SUITE_XLA_FLAG = "--xla_cpu_use_fusion_emitters=false"


def _xla_accepts(flags):
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    try:
        return subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env,
                              capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


if "SIMLM_TESTS_USER_XLA_FLAGS" not in os.environ:  # the main process, before pytest-xdist starts its workers
    os.environ["SIMLM_TESTS_USER_XLA_FLAGS"] = _user_flags = os.environ.get("XLA_FLAGS", "")
    _suite_flags = f"{_user_flags} {SUITE_XLA_FLAG}".strip()
    if (os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] != "0" and "xla_cpu_use_fusion_emitters" not in _user_flags
            and _xla_accepts(_suite_flags)):
        os.environ["XLA_FLAGS"] = _suite_flags

# Under pytest-xdist (the README's -n 2) each worker inherits the session's directory; it takes its own inside
# it, since jax writes an entry without a lock or an atomic rename and two workers compiling the same program
# could hand one a torn entry (and a warning, which the tests that refuse warnings would see).
if os.environ.get("PYTEST_XDIST_WORKER") and \
        os.environ.get("JAX_COMPILATION_CACHE_DIR") == os.environ.get("SIMLM_TESTS_XLA_CACHE"):
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.environ["SIMLM_TESTS_XLA_CACHE"],
                                                           os.environ["PYTEST_XDIST_WORKER"])

import jax  # noqa: E402  (after the cache settings above, which JAX reads when imported)

# The README's `-n 2 --dist loadfile` hands each worker a whole module at a time, and by default xdist queues
# the modules by their number of tests, which puts the modules of a few long tests (the quick experiment
# runs, the notebooks, the benchmark smoke tests) last: one worker then runs them alone while the other has
# finished.  Queued by their time instead, longest first (the greedy schedule), the two workers end within
# a short module of each other.  Seconds per module ≥ 8 s (the sum of its tests' times in the README's test
# command's `--junitxml` report, fixtures included) on 2 cores, idle, 2026-12-07, with torch installed (so
# the peer benchmarks ran too); a module not listed is queued after these, in collection order.  Stale
# numbers cost time, never a result.
MODULE_SECONDS = {
    "test_benchmarks_train_quick.py": 74, "test_sweep.py": 55, "test_notebooks.py": 53, "test_train.py": 46,
    "test_experiments_natural_tasks.py": 46, "test_natural_tasks.py": 37, "test_hmm_review.py": 35,
    "test_experiments_head_prompt.py": 35, "test_heads.py": 33, "test_transformer.py": 32, "test_prompts_review.py": 30,
    "test_hmm_possible.py": 29, "test_run_dir_corruption.py": 29, "test_natural_adversaries.py": 28,
    "test_hmm_log_space.py": 23, "test_attention_prompts.py": 22, "test_sweep_failures.py": 19, "test_memory.py": 19,
    "test_prompts.py": 19, "test_benchmarks_speed_quick.py": 18, "test_hmm_sampling.py": 16,
    "test_head_prompt_trained.py": 16, "test_downstream_tasks.py": 15, "test_hmm_parallel.py": 15,
    "test_hmm_numerics.py": 13, "test_strategies.py": 13, "test_readme.py": 13, "test_precision.py": 13,
    "test_token_accuracy.py": 13, "test_sharding.py": 13, "test_sweep_store.py": 12, "test_anchor_weights.py": 12,
    "test_anchors.py": 12, "test_anchor_adversary.py": 10, "test_perturbed.py": 10,
    "test_experiments_corruption.py": 10, "test_transformer_review.py": 9, "test_head_prompt.py": 9,
    "test_token_accuracy_review.py": 9, "test_runtime.py": 8,
}


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order below
        config.option.loadscopereorder = False
    # A worker that crashes ends the run at once, naming the test it crashed in.  Left to replace it, xdist's
    # loadfile scheduler can wait forever for work it has already handed out (pytest-xdist issue #1378):
    # seen on CI on 2026-12-03, where one segfault became a 90-minute timeout.
    if hasattr(config.option, "maxworkerrestart") and config.option.maxworkerrestart is None:
        config.option.maxworkerrestart = "0"


@pytest.fixture(autouse=True, scope="module")
def _compiled_programs_released():
    """Every module starts with JAX's caches empty.  Each compiled program stays mapped into the process
    while they hold it (25–30 memory maps for a typical one), and a worker that runs module after module
    ends at Linux's vm.max_map_count (65530): the next compile's mmap fails and XLA segfaults.  Seen on CI
    on 2026-12-03 at 82 % of the run; a passing run's busier worker peaked at 58,148 maps.  Released per
    module, the programs a module shares with the next are read back from the session's persistent cache
    (above) rather than compiled again."""
    yield
    jax.clear_caches()


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(sorted(MODULE_SECONDS, key=MODULE_SECONDS.get, reverse=True))}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a module's own order is kept
