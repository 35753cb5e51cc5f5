"""Where the sweep's jobs run.  A job is a module-level function of one JSON string returning a JSON string
(:func:`simlm.experiments.sweep.check_job`, :func:`~simlm.experiments.sweep.train_job`), so any engine can
carry it; results stream back as they finish.  Jobs write into the results directory themselves (training
checkpoints, a check's work files and, where the executor ``shares_filesystem`` with the caller, each
finished cell as it ends); the caller writes the rest.

- :class:`InProcess` — one after another, here (the default; what the tests compare the others against).
- :class:`ProcessPool` — ``concurrent.futures`` over ``workers`` fresh ("spawn") processes of this machine.
- :class:`RayExecutor` — Ray tasks, locally (``ray.init()``) or on a cluster (``address="auto"`` or
  ``"ray://host:10001"``), with no code change; Ray is the optional extra ``pip install "simlm[distributed]"``.

Every executor has ``map(fn, payloads)`` → an iterator of ``(payload, result)`` in completion order, and
``shares_filesystem``: whether its jobs see the caller's files (this machine's processes do; a Ray cluster
joined by address may not, so its jobs' cells are stored by the caller when each job returns).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import shutil
import socket
import tempfile
import threading
import time
import warnings

import jax

from simlm.checks import check_positive_int
from simlm.errors import ConfigError

EXECUTORS = ("inprocess", "process", "ray")


class InProcess:
    """Run each job in this process, in order."""

    shares_filesystem = True

    def map(self, fn, payloads):
        for p in payloads:
            yield p, fn(p)


class ProcessPool:
    """Run jobs in ``workers`` spawned processes (each imports simlm afresh: no state is shared).

    When the workers fill the cores this process may use (``workers ≥`` :func:`usable_cores`) each runs
    XLA's products on one thread (``--xla_cpu_multi_thread_eigen=false`` added to its ``XLA_FLAGS``) instead
    of every worker's thread pool competing for every core: the sweep's small models gain from it (a d = 32
    training step: 12 ms single-threaded against 14 ms on both cores of a 2-core CPU).  XLA still runs
    independent operations on a second thread, so each worker is also pinned to a core of its own (Linux;
    the pin comes after XLA's backend has started, so the compiled programs and the records are those of
    unpinned workers to the last bit) until the last jobs leave a core free, when every worker may use every
    core again (:func:`_pin`).  ``single_threaded`` forces the choice either way; an accelerator's work is unaffected.

    The workers of one :meth:`map` share a persistent XLA compilation cache, a temporary directory removed
    when it ends (unless ``JAX_COMPILATION_CACHE_DIR`` names one of your own, which they use instead): a
    program one worker has compiled — the training step every world's model runs, a filter that worlds of
    one shape bucket share — the others read back instead of compiling it again.  It is keyed by the
    program's text and the compiler's version and flags, so the records are the same to the last bit;
    Wei et al.'s experiment 1 on two cores: 431 → 400 s (780 → 720 s of cells).

    On a GPU every worker allocates the device's memory as it needs it (:func:`_share_accelerator`) instead
    of claiming 75 % of it at its first computation, which only the first worker could do.

    A worker that dies (a signal, out of memory) breaks the pool: its job and those running in the other
    workers are lost (:class:`WorkerLost`), and the jobs no worker had started yet run in a fresh pool (they
    were all lost with it)."""

    shares_filesystem = True

    def __init__(self, workers: int, *, single_threaded: bool | None = None):
        self.workers = check_positive_int("workers", workers)
        if single_threaded is not None and not isinstance(single_threaded, bool):
            raise ConfigError(f"single_threaded: expected None, True or False, got {single_threaded!r}")
        self.single_threaded = self.workers >= usable_cores() if single_threaded is None else single_threaded

    def map(self, fn, payloads):
        payloads = list(payloads)
        if not payloads:
            return
        with tempfile.TemporaryDirectory(prefix="simlm-xla-cache-") as cache:
            todo = list(range(len(payloads)))
            while todo:  # a pool broken by a dead worker takes every job with it: those not started go again
                todo = yield from self._round(fn, payloads, todo, cache)

    def _round(self, fn, payloads, todo: list[int], cache: str):
        """Run the jobs ``todo`` (indices into ``payloads``) in one pool, yielding ``(payload, result)`` as each
        ends; returns the jobs to run again: those a broken pool took before a worker had started them, when
        it had started some (a pool that breaks before any job starts, say a worker that cannot start, gives
        each its :class:`WorkerLost`, so this never loops)."""
        context = multiprocessing.get_context("spawn")
        cores = _cores() if self.single_threaded and len(todo) >= self.workers else None
        # [0, 1]: the next worker's slot, 1 once the workers are let out; then each worker's pid (0: not yet)
        pins = context.Array("q", [0, 0] + [0] * self.workers) if cores else None
        # a file per job a worker has taken (not a shared array: its memory is reused for the next pool's while
        # a worker of this one, let go by Ctrl-C or a consumer that stopped, may still be writing into it)
        started = tempfile.mkdtemp(prefix="started-", dir=cache)
        broken, again = [], []
        with cf.ProcessPoolExecutor(self.workers, mp_context=context, initializer=_worker_init,
                                    initargs=(self.single_threaded, os.getpid(), cache, cores, pins, started)) as pool:
            futures = {pool.submit(_job, fn, i, payloads[i]): i for i in todo}
            left = len(futures)
            try:
                for future in cf.as_completed(futures):
                    left -= 1
                    i = futures[future]
                    try:
                        result = future.result()
                    except cf.process.BrokenProcessPool as err:  # a worker died (a signal, out of memory): its
                        # job and the other workers' running ones are lost, the queued ones run in a new pool
                        broken.append((i, WorkerLost(str(err))))
                        pins = None  # nothing left to unpin (a dead worker may hold the lock)
                        continue
                    if pins is not None and left < self.workers:  # a core is free from now on: the last jobs take it
                        _unpin(pins, cores)
                        pins = None
                    yield payloads[i], result
            except BaseException:  # Ctrl-C, or the consumer stopped: start no queued job (those running finish)
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        taken = {int(name) for name in os.listdir(started)}
        retry = any(i in taken for i, _ in broken)
        for i, lost in broken:
            if retry and i not in taken:
                again.append(i)
            else:
                yield payloads[i], lost
        return again


def _job(fn, i: int, payload):
    """A pool's job ``i``: marked taken (a file named ``i`` in :data:`_STARTED`), then ``fn(payload)``."""
    if _STARTED is not None:
        open(os.path.join(_STARTED, str(i)), "w").close()
    return fn(payload)


_STARTED = None  # in a pool's worker: the pool's directory of the jobs its workers have taken (ProcessPool._round)


class WorkerLost(str):
    """What :meth:`ProcessPool.map` and :meth:`RayExecutor.map` yield for a job whose worker process died before
    returning (killed by a signal, out of memory, its node lost): the reason. The runner records the job's unfinished
    cells as failed, so that the tables are still written and a rerun computes them again."""


def _worker_init(single_threaded: bool, parent: int, cache: str, cores=None, pins=None, started=None) -> None:
    """A pool worker's initializer: single-threaded XLA if asked (XLA reads ``XLA_FLAGS`` when its CPU
    backend starts, at the first computation, which comes after this in a fresh worker), pinned to a core of
    its own where ``cores`` are given (:func:`_pin`), the pool's compilation ``cache``
    (:func:`_share_compiled`), and an exit when the sweep's process is gone.  A worker outlives a parent
    killed by a signal it does not share (SIGTERM to the sweep alone): it went on training into the run's
    work directory, where a rerun then collided with its half-written checkpoints.  ``started``: the pool's
    directory of the jobs its workers have taken (:func:`_job`)."""
    global _STARTED
    _STARTED = started
    if single_threaded:
        _single_threaded_xla()
    os.environ.update(_share_accelerator())
    if cores:
        _pin(cores, pins)
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # a cache of your own is kept (JAX read it on import)
        _share_compiled(cache)
    threading.Thread(target=_exit_without, args=(parent, cache), daemon=True, name="simlm-parent-watch").start()


def _cores() -> list[int] | None:
    """The cores this process may run on, to pin a pool's workers to, or None where that cannot be done (no
    ``sched_setaffinity``, e.g. macOS) or makes no sense (one core)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    return cores if len(cores) > 1 else None


def _pin(cores: list[int], pins) -> None:
    """Pin this worker's threads to one core of ``cores``, a core per worker in turn, once its XLA backend
    has started — so that XLA sizes its thread pool and compiles its programs as an unpinned worker does,
    and the records are the same to the last bit (pinned before it starts, a pool of one thread compiles
    reductions in another order).  A "single-threaded" worker still runs XLA's independent operations on a
    second thread: two workers on two cores each kept ~1.8 cores busy and slowed each other down (an
    experiment-2 ladder of 2,500 steps, two side by side: 112–114 s a ladder unpinned, 95–98 s pinned).
    Nothing is pinned once :func:`_unpin` has let the workers out (``pins[1]``), or on an accelerator.
    The backend starts before the lock is taken: a worker killed while it starts (seconds on a GPU) would
    otherwise leave the lock held, and the pool's parent waiting on it for ever."""
    if jax.default_backend() != "cpu":  # the backend starts here, before the pin
        return
    with pins.get_lock():
        if pins[1]:
            return
        slot = pins[0]
        pins[0] += 1
        pins[2 + slot % (len(pins) - 2)] = os.getpid()
        _set_affinity(os.getpid(), {cores[slot % len(cores)]})


_UNPIN_WAIT_S = 10.0  # how long _unpin waits for the pins' lock


def _unpin(pins, cores: list[int]) -> None:
    """Let every pinned worker run on all ``cores`` again (the pool's last jobs, with cores to spare).  The
    lock is waited for a few seconds at most: a worker killed while holding it must not stop the pool (the
    pids recorded are unpinned all the same; a worker still pinning itself then may stay pinned)."""
    lock, raw = pins.get_lock(), pins.get_obj()  # raw: indexing ``pins`` itself takes the lock again
    held = lock.acquire(timeout=_UNPIN_WAIT_S)
    try:
        raw[1] = 1
        for pid in raw[2:]:
            if pid:
                _set_affinity(pid, set(cores))
    finally:
        if held:
            lock.release()


def _set_affinity(pid: int, cores: set) -> None:
    """``cores`` for every thread of process ``pid`` (Linux's affinity is a thread's: a process's threads
    started before the call keep theirs); a process or thread that has exited is skipped."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        threads = [str(pid)]
    for tid in threads:
        try:
            os.sched_setaffinity(int(tid), cores)
        except OSError:
            pass


def _single_threaded_xla() -> None:
    flag = "--xla_cpu_multi_thread_eigen=false"
    flags = os.environ.get("XLA_FLAGS", "")
    if flag not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


#: the variables by which JAX is told how much of a GPU's memory to take, and how
ACCELERATOR_MEMORY = ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_ALLOCATOR")


def _share_accelerator() -> dict[str, str]:
    """The environment a job's process needs to share a GPU with other jobs' processes: JAX claims 75 % of
    the device's memory when its GPU backend starts, so a second process on the same GPU — a pool's
    second worker, the sweep's own process having claimed its share already — would run out of memory at
    once.  ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` makes each allocate what it uses.  Nothing when you set
    any of :data:`ACCELERATOR_MEMORY` yourself (yours are kept); nothing changes on a CPU."""
    if any(name in os.environ for name in ACCELERATOR_MEMORY):
        return {}
    return {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


def _share_compiled(directory: str) -> None:
    """Compile through the persistent cache in ``directory`` (before this process's first compile, when JAX
    opens its cache), storing every program (JAX's default keeps only those that took a second or more)."""
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    # JAX writes an entry in place: a worker reading one another is still writing fails to decompress it,
    # warns, and compiles the program itself — a second's work, not an error worth a line in a sweep's output
    warnings.filterwarnings("ignore", message="Error reading persistent compilation cache entry")


def _exit_without(parent: int, cache: str | None = None, every: float = 0.5) -> None:
    """Poll the parent's pid; leave (status 1, no cleanup: the job in flight is lost, as it would be with
    its parent) once this process has been handed to another — removing the pool's temporary compilation
    ``cache`` first, which a parent killed by a signal (SIGTERM from ``timeout`` or a scheduler) left behind."""
    while os.getppid() == parent:
        time.sleep(every)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
    os._exit(1)


class RayExecutor:
    """Run jobs as Ray tasks: ``address`` None starts a local Ray (``num_cpus`` of this machine), else joins
    that cluster.  Each task asks for ``num_cpus_per_job`` CPUs.  The local Ray started here shares this
    machine's files (``shares_filesystem``); a cluster joined by address, or one already started, is not
    assumed to."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, num_cpus_per_job: int = 1):
        try:
            import ray
        except ImportError:
            raise ConfigError('executor: "ray" needs Ray, the optional extra: pip install "simlm[distributed]"') from None
        self.ray = ray
        self.shares_filesystem = address is None and not ray.is_initialized()
        if not ray.is_initialized():
            if address is not None:
                check_ray_address(address)
            kwargs = {"num_cpus": num_cpus} if address is None and num_cpus else {}
            with warnings.catch_warnings():  # JAX's "os.fork() was called … deadlock" as ray.init starts its
                # processes: printed on every Ray run, and none has deadlocked (a review, 2026-12-07)
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
                ray.init(address=address, include_dashboard=False, log_to_driver=False, **kwargs)
        self.num_cpus_per_job = check_positive_int("num_cpus_per_job", num_cpus_per_job)

    def map(self, fn, payloads):
        # a task asks for CPUs, not a GPU, so the tasks on one GPU machine share its device (_share_accelerator)
        env = {"runtime_env": {"env_vars": shared}} if (shared := _share_accelerator()) else {}
        remote = self.ray.remote(num_cpus=self.num_cpus_per_job, **env)(fn)
        pending = {remote.remote(p): p for p in payloads}
        errors = self.ray.exceptions
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in done:
                payload = pending.pop(ref)
                try:
                    result = self.ray.get(ref)
                except errors.RayTaskError:  # the job itself raised: it reaches the caller, as a pool's job's does
                    raise
                except errors.RayError as err:  # its worker or node died (after Ray's retries), out of memory: this
                    result = WorkerLost(f"Ray: {type(err).__name__}: {err}")  # job is lost, not the sweep
                yield payload, result


def check_ray_address(address: str, *, timeout: float = 10.0) -> None:
    """Refuse a Ray address that nothing answers at, before ``ray.init`` would retry it for minutes:
    ``host:port`` (or ``ray://host:port``) must accept a TCP connection within ``timeout`` seconds.
    ``"auto"`` and ``"local"`` are Ray's own words and are left to Ray (which says at once when no
    cluster runs here)."""
    if not isinstance(address, str) or not address.strip():
        raise ConfigError(f"address: expected a Ray cluster's address (host:port, ray://host:port or auto), "
                          f"got {address!r}")
    if address in ("auto", "local"):
        return
    where = address.removeprefix("ray://")
    host, colon, port = where.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"address: expected host:port, ray://host:port or auto, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise ConfigError(f"address: no Ray cluster answers at {address!r} ({error}); start one there with "
                          f"`ray start --head`, or pass auto to join the one running on this machine") from None


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: ``taskset``, a container's cpuset), not the
    machine's count — a 2-core cpuset of a 64-core machine has 2."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def auto_workers() -> int:
    """``--workers auto``: one worker per usable CPU core (:func:`usable_cores`) when JAX computes on the CPU
    (a sweep's jobs are independent, and one process rarely keeps every core busy), 1 on an accelerator
    (whose memory one process already claims)."""
    return usable_cores() if jax.default_backend() == "cpu" else 1


def check_address(name: str, address: str | None) -> None:
    """``address`` is a Ray cluster's: refused with another executor."""
    if address is not None and name != "ray":
        raise ConfigError(f"address: a Ray cluster's address is used only with the ray executor, not {name!r} "
                          f"(got {address!r})")


def make_executor(name: str = "inprocess", *, workers: int = 1, address: str | None = None):
    """An executor by name (one of :data:`EXECUTORS`), as the command line chooses it.  ``address`` is a
    Ray cluster's and is refused with another executor; ``workers`` sizes the process pool and is not
    used by Ray (its tasks go wherever its cluster has CPUs)."""
    check_address(name, address)
    if name == "inprocess":
        return InProcess() if workers == 1 else ProcessPool(workers)
    if name == "process":
        return ProcessPool(workers)
    if name == "ray":
        return RayExecutor(address)
    raise ConfigError(f"executor: expected one of {EXECUTORS}, got {name!r}")


class _NoBar:
    def update(self, n=1):
        pass

    def reset(self, total=None):
        pass

    def set_description(self, desc=None):
        pass

    def close(self):
        pass


def progress_bar(total: int, *, initial: int = 0, enabled: bool = True, desc: str = "cells"):
    """One tqdm bar for the sweep's cells (done / total, with ETA), or a silent stand-in.  Bars opened
    while it is open (a training ladder's) take the next line below it."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="cell", position=0)


__all__ = ["EXECUTORS", "InProcess", "ProcessPool", "RayExecutor", "WorkerLost", "auto_workers", "check_ray_address",
           "make_executor", "progress_bar"]
