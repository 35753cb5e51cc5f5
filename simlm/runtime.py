"""Keeping a long-lived process clear of the limit on its memory maps.

Every program XLA:CPU compiles stays mapped into the process while JAX's caches hold it: three maps (code,
read-only data, data) per kernel, 25–30 for a typical simlm program.  Linux allows one process
``vm.max_map_count`` maps (65530 by default); a process that compiles thousands of distinct programs — a
long in-process sweep over worlds of many shapes, a test session, a notebook sweeping ε — reaches it, and
then the next compile's ``mmap`` fails ("LLVM compilation error: Cannot allocate memory") and the process
dies with a segmentation fault inside XLA, taking the cell in flight with it.  :func:`release_compiled`
clears JAX's caches (every jitted function compiles again on its next call; a persistent compilation cache
turns that into a read) once the process holds more than a fraction of its maps; the sweep's jobs call it
before each (world, LM) pair and each training run.

Also :func:`cpu_description`, the CPU this process computes on, which a run's record names (a trained
number's last bits follow the instruction sets XLA:CPU emits for); and :func:`one_blas_thread`, which runs
the small float64 solvers of :mod:`simlm.theory` with BLAS on one thread."""

from __future__ import annotations

import functools
import platform
import threading

import jax

from simlm.errors import ConfigError

MAPS = "/proc/self/maps"
MAX_MAP_COUNT = "/proc/sys/vm/max_map_count"


def memory_maps() -> tuple[int, int] | None:
    """``(maps this process holds, vm.max_map_count)``, or None where Linux's ``/proc`` does not say."""
    try:
        with open(MAPS, "rb") as f:
            used = sum(1 for _ in f)
        with open(MAX_MAP_COUNT) as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return None
    return used, limit


def release_compiled(fraction: float = 0.5) -> bool:
    """Clear JAX's caches of compiled programs (:func:`jax.clear_caches`) if this process holds more than
    ``fraction`` of the memory maps it may hold; returns whether it did.  A no-op where ``/proc`` does not
    tell (not Linux).  ``fraction`` is in [0, 1]: 0 always clears, 1 never does."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise ConfigError(f"fraction: expected a number in [0, 1], got {fraction!r}")
    maps = memory_maps()
    if maps is None or maps[0] <= fraction * maps[1]:
        return False
    jax.clear_caches()
    return True


#: the instruction-set flags of /proc/cpuinfo that decide which kernels XLA:CPU emits
CPU_FEATURES = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "asimd", "sve")


def cpu_description(cpuinfo="/proc/cpuinfo") -> str:
    """The CPU's model name and its vector extensions among :data:`CPU_FEATURES` (from Linux's
    ``cpuinfo``; elsewhere :func:`platform.processor`), e.g. ``"AMD EPYC (avx avx2 fma avx512f)"``."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in info.splitlines() if ":" in line)}
    name = fields.get("model name") or fields.get("Hardware") or fields.get("CPU part") or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    have = [f for f in CPU_FEATURES if f in flags]
    return f"{name} ({' '.join(have)})" if have else name


_BLAS = {"controller": None, "limit": None, "depth": 0, "lock": threading.Lock()}


def one_blas_thread(fn):
    """``fn`` run with the BLAS numpy and scipy call limited to one thread (threadpoolctl), for solvers of
    many tiny problems: there OpenBLAS's threads cost more to wake than the work they share, once the cores
    are busy.  On a 2-core machine under load (≈ 3–5) scipy's L-BFGS-B took 2.6 ms an iteration with them;
    the natural-task experiment's quick run took 56 s, and 24–26 s with its convex solvers on one thread;
    two such runs at once 30.2 s against 25.5 s; alone on an idle machine no gain (22.0 s, 23.5 s)
    (2026-12-06).  The limit is the library's, so process-wide while any such call runs (other threads' BLAS
    calls meanwhile run on one thread too); it is set when the first of overlapping calls enters and the
    former setting comes back when the last one leaves, whatever their order across threads.  Without
    threadpoolctl (an environment that installed simlm with ``--no-deps``) ``fn`` runs as it is: slower,
    the same numbers to its solvers' tolerances."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with _BLAS["lock"]:
            if _BLAS["controller"] is None:
                try:
                    from threadpoolctl import ThreadpoolController  # scans the loaded libraries once (~ms)
                    _BLAS["controller"] = ThreadpoolController()
                except ImportError:
                    _BLAS["controller"] = False
            if _BLAS["controller"] and _BLAS["depth"] == 0:
                _BLAS["limit"] = _BLAS["controller"].limit(limits=1, user_api="blas")
            _BLAS["depth"] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with _BLAS["lock"]:
                _BLAS["depth"] -= 1
                if _BLAS["controller"] and _BLAS["depth"] == 0:
                    _BLAS["limit"].restore_original_limits()
    return run
