"""Optional peer libraries for the benchmarks: imported if installed, without changing how simlm runs.

Importing dynamax sets ``jax_default_matmul_precision`` to ``"float32"`` for the whole process (its
``__init__`` calls ``jax.config.update``), which would change the precision of every matmul simlm compiles
afterwards (on a GPU/TPU: full float32 instead of the backend's default, e.g. TF32 on recent NVIDIA GPUs;
on a CPU the two give identical results and timings) and make functions compiled before the import
recompile inside timed calls.  :func:`import_peer` therefore restores the setting the process had before
the import and returns the precision the peer asked for; the benchmarks then run every timed call of
both sides under one explicit precision (:func:`pinned`, recorded in their JSON), so neither side's
number depends on import order.  simlm's exact products (the HMM laws, filters and posteriors) name
their precision per call — full float32 on every backend (:mod:`simlm.precision`) — so ``--precision``
sets dynamax's products and only those of simlm's that have no fixed precision; the default,
``float32``, is like for like.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable

import jax


def import_peer(name: str) -> tuple[object | None, str | None]:
    """``(module, the matmul precision it set or None)`` for an installed peer, ``(None, None)`` otherwise;
    jax's ``jax_default_matmul_precision`` is left as it was before the import."""
    if importlib.util.find_spec(name.split(".")[0]) is None:
        return None, None
    before = jax.config.jax_default_matmul_precision
    module = importlib.import_module(name)
    asked = jax.config.jax_default_matmul_precision
    jax.config.update("jax_default_matmul_precision", before)
    return module, (asked if asked != before else None)


def pinned(fn: Callable[[], object], precision: str | None) -> Callable[[], object]:
    """``fn`` run under ``jax.default_matmul_precision(precision)`` (``None``: the process's setting)."""
    if precision is None:
        return fn

    def run():
        with jax.default_matmul_precision(precision):
            return fn()

    return run


def add_precision_option(parser) -> None:
    """``--precision``: the matmul precision every timed call of both sides runs under (:func:`pinned`);
    ``args.precision`` is None for ``default`` (jax's own)."""
    parser.add_argument("--precision", default="float32", type=lambda text: None if text == "default" else text,
                        help="jax.default_matmul_precision for every timed call of both sides ('default' = jax's own)")


def precision_record(precision: str | None, peer_sets_on_import: str | None) -> dict:
    """The JSON record of the matmul precisions a benchmark ran under (``precision``: ``args.precision``)."""
    return {"simlm_exact_products": "highest (fixed per call, simlm.precision)",
            "pinned": precision or "default", "dynamax": precision or "default",
            "dynamax_sets_on_import": peer_sets_on_import}


def unavailable(name: str) -> str:
    return f"peer unavailable ({name} is not installed)"
