"""The guard on a process's memory maps: compiled programs hold maps until JAX's caches are cleared, the guard
clears them past its fraction of vm.max_map_count and not before, and a sweep whose jobs release everything
between (world, LM) pairs gives the same rows."""

import math
import sys

import jax
import jax.numpy as jnp
import pytest

from simlm import runtime
from simlm.cli import main
from simlm.errors import ConfigError
from test_sweep import TINY, table, write_config

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")


def _compile(n: int):
    """``n`` programs of one jitted function (one per shape), still held by JAX's caches."""
    @jax.jit
    def f(x):
        return jnp.cumsum(jnp.tanh(x @ x.T), axis=0).sum()

    for k in range(2, n + 2):
        f(jnp.ones((k, 3))).block_until_ready()
    return f


@linux
def test_memory_maps_are_this_process_s_and_the_kernel_s_limit():
    used, limit = runtime.memory_maps()
    with open("/proc/sys/vm/max_map_count") as f:
        assert limit == int(f.read())
    assert 0 < used < limit


@linux
def test_compiled_programs_hold_maps_until_released():
    runtime.release_compiled(0.0)
    before = runtime.memory_maps()[0]
    f = _compile(20)
    held = runtime.memory_maps()[0]
    assert f._cache_size() == 20 and held > before + 20  # several maps a program
    assert runtime.release_compiled(0.0) is True
    assert f._cache_size() == 0 and runtime.memory_maps()[0] < held - 20


@linux
def test_release_waits_for_its_fraction_of_the_limit():
    f = _compile(3)
    used, limit = runtime.memory_maps()
    assert runtime.release_compiled(1.0) is False  # a process cannot hold more than its limit
    assert runtime.release_compiled(min(1.0, 1.5 * used / limit)) is False and f._cache_size() == 3
    assert runtime.release_compiled(0.5 * used / limit) is True and f._cache_size() == 0


def test_without_proc_nothing_is_cleared(monkeypatch):
    monkeypatch.setattr(runtime, "MAPS", "/nonexistent/maps")
    f = _compile(2)
    assert runtime.memory_maps() is None
    assert runtime.release_compiled(0.0) is False and f._cache_size() == 2


@pytest.mark.parametrize("fraction", [-0.1, 1.5, math.nan, True, "0.5", None])
def test_a_fraction_outside_the_unit_interval_is_named(fraction):
    with pytest.raises(ConfigError, match="fraction"):
        runtime.release_compiled(fraction)


def test_a_sweep_that_releases_before_every_job_gives_the_same_rows(monkeypatch, tmp_path):
    calls = []

    def always(fraction=0.5):
        calls.append(fraction)
        return runtime.release_compiled(0.0)

    raw = {**TINY, "lms": {"oracle": True, "analytic": {"kinds": ["temperature"], "eps": [0.02]}}}  # two jobs
    config = write_config(tmp_path / "tiny.json", raw)
    monkeypatch.setattr("simlm.experiments.sweep.release_compiled", always)
    assert main(["sweep", str(config), "--out", str(tmp_path / "released"), "--quiet"]) == 0
    monkeypatch.undo()
    assert main(["sweep", str(config), "--out", str(tmp_path / "kept"), "--quiet"]) == 0
    rows = table(tmp_path / "released")
    assert len(calls) == 2 and len(rows) > 10
    assert rows == table(tmp_path / "kept")


def test_one_blas_thread_limits_blas_during_the_call_and_restores_it_after():
    """The small convex solvers run with BLAS on one thread (scipy's L-BFGS-B steps took 2.6 ms each with
    OpenBLAS's threads on two busy cores); the process's own setting comes back when they return."""
    from threadpoolctl import threadpool_info

    from simlm.runtime import one_blas_thread
    from simlm.theory import _convex

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    assert before  # numpy's BLAS is loaded
    assert one_blas_thread(blas_threads)() == [1] * len(before)
    assert blas_threads() == before
    for solver in (_convex.constrained_logistic, _convex.ridge_logistic):
        assert solver.__wrapped__  # decorated, its signature and docstring kept


def test_overlapping_calls_in_two_threads_restore_blas_when_the_last_one_leaves():
    """The limit is process-wide: A enters, B enters, A leaves first — B still holds the limit, and the former
    setting comes back when B leaves (restoring at each exit in turn left the process on one thread).  (What
    OpenBLAS reports inside another thread depends on which thread set it first, so the counts are read in
    this one.)"""
    import threading
    import time

    from threadpoolctl import threadpool_info

    from simlm import runtime
    from simlm.runtime import one_blas_thread

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before, seen = blas_threads(), {}
    a_in, b_in = threading.Event(), threading.Event()

    @one_blas_thread
    def first():
        a_in.set()
        b_in.wait(10)

    @one_blas_thread
    def second():
        b_in.set()
        time.sleep(0.2)
        seen["depth"] = runtime._BLAS["depth"]

    a = threading.Thread(target=first)
    a.start()
    a_in.wait(10)
    b = threading.Thread(target=second)
    b.start()
    a.join()
    b.join()
    assert seen["depth"] == 1 and runtime._BLAS["depth"] == 0 and blas_threads() == before


def test_without_threadpoolctl_the_solver_runs_as_it_is(monkeypatch):
    """The GPU machine installs simlm with --no-deps; where threadpoolctl is missing the solvers still run."""
    import sys

    from simlm import runtime

    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import threadpoolctl → ImportError
    monkeypatch.setitem(runtime._BLAS, "controller", None)
    assert runtime.one_blas_thread(lambda x: x + 1)(1) == 2
    assert runtime._BLAS["controller"] is False and runtime._BLAS["depth"] == 0


def test_release_compiled_by_default_clears_past_half_the_map_limit(monkeypatch):
    """The default fraction is one half: 50 of 100 maps keeps the caches, 51 clears them once (every test
    passed the fraction or stubbed the function: a default that never clears passed)."""
    cleared = []
    monkeypatch.setattr(runtime.jax, "clear_caches", lambda: cleared.append(1))
    monkeypatch.setattr(runtime, "memory_maps", lambda: (50, 100))
    assert runtime.release_compiled() is False and not cleared
    monkeypatch.setattr(runtime, "memory_maps", lambda: (51, 100))
    assert runtime.release_compiled() is True and cleared == [1]

