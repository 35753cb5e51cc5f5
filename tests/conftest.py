import os
import shutil
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
# command's `--junitxml` report, fixtures included) in a fresh-clone CI run on 2 cores, idle, 2026-12-04; a
# module not listed is queued after these, in collection order.  Stale numbers cost time, never a result.
MODULE_SECONDS = {
    "test_notebooks.py": 84, "test_sweep.py": 64, "test_train.py": 59, "test_natural_tasks.py": 48,
    "test_experiments_head_prompt.py": 48, "test_experiments_natural_tasks.py": 44, "test_hmm_review.py": 43,
    "test_prompts_review.py": 42, "test_run_dir_corruption.py": 39, "test_natural_adversaries.py": 38,
    "test_transformer.py": 36, "test_benchmarks_train_quick.py": 34, "test_heads.py": 33,
    "test_hmm_log_space.py": 32, "test_head_prompt_trained.py": 30, "test_prompts.py": 30, "test_memory.py": 28,
    "test_attention_prompts.py": 27, "test_readme.py": 23, "test_hmm_parallel.py": 22,
    "test_downstream_tasks.py": 21, "test_sharding.py": 20, "test_precision.py": 19, "test_anchors.py": 17,
    "test_token_accuracy.py": 17, "test_head_prompt.py": 17, "test_benchmarks_speed_quick.py": 15,
    "test_experiments_corruption.py": 14, "test_finite.py": 13, "test_perturbed.py": 13, "test_hmm_numerics.py": 11,
    "test_runtime.py": 11, "test_loglinear.py": 10, "test_fuzz_public_api.py": 10, "test_benchmarks_quick.py": 9,
    "test_head_prompt_review.py": 9, "test_head_prompt_protocol.py": 9, "test_anchor_weights.py": 8,
    "test_strategies.py": 8,
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
