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
# a short module of each other.  Seconds per module from `pytest --durations=0` on 2 cores (idle, 2026-12-02);
# a module not listed is queued after these, in collection order.  Stale numbers cost time, never a result.
MODULE_SECONDS = {
    "test_train.py": 140, "test_hmm_review.py": 137, "test_experiments_head_prompt.py": 128,
    "test_notebooks.py": 122, "test_prompts_review.py": 96, "test_sweep.py": 81, "test_hmm_log_space.py": 77,
    "test_prompts.py": 65, "test_transformer.py": 64, "test_head_prompt_trained.py": 63, "test_readme.py": 63,
    "test_precision.py": 62, "test_run_dir_corruption.py": 60, "test_heads.py": 60,
    "test_benchmarks_train_quick.py": 59, "test_memory.py": 56, "test_head_prompt.py": 53,
    "test_natural_tasks.py": 47, "test_experiments_natural_tasks.py": 47, "test_hmm_parallel.py": 44,
    "test_downstream_tasks.py": 40, "test_sharding.py": 39, "test_token_accuracy.py": 36,
    "test_attention_prompts.py": 35, "test_natural_adversaries.py": 33, "test_anchors.py": 30,
    "test_perturbed.py": 28, "test_finite.py": 21, "test_hmm_numerics.py": 20, "test_benchmarks_quick.py": 18,
    "test_token_accuracy_review.py": 18, "test_head_prompt_protocol.py": 18, "test_loglinear.py": 17,
    "test_masked_epsilon_batched.py": 16,
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
