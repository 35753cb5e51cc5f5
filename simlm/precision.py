"""The precision of exact products: true float32 (float64 under x64) on every backend.

jax's default lets an accelerator compute a float32 matrix product in reduced precision — TF32 on recent
NVIDIA GPUs (a 10-bit mantissa, ~1e-3 relative error a product) and bfloat16 passes on a TPU.  For a neural
network that is a fine trade; for simlm's exact quantities (the worlds' next-token laws, posteriors and
log-likelihoods, the finite LM families of the theory checks) it would be a silent wrong number on the
very machines the benchmarks are meant for.  Every product in them runs at :data:`EXACT`, either named
per call (:func:`mm`, ``precision=EXACT``) or for a whole function's trace (:func:`exact`).  On a CPU
nothing changes: its float32 products are already exact-precision.

The learned models (:mod:`simlm.models.transformer`, the downstream heads) keep jax's default: their
numbers are whatever they compute, and a user can pin them with ``jax.default_matmul_precision``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

#: ``jax.lax.Precision.HIGHEST``: no TF32, no bfloat16 passes.
EXACT = jax.lax.Precision.HIGHEST


def mm(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` at :data:`EXACT` precision."""
    return jnp.matmul(a, b, precision=EXACT)


def in_float64(fn, *args):
    """``fn(*args)`` under 64-bit JAX, its floating arguments in float64 (the others as they are, converted
    inside the context): a float32 computation run again in float64, whose outputs are float64 arrays."""
    with jax.enable_x64(True):
        return fn(*(a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a
                    for a in map(jnp.asarray, args)))


def exact(fn):
    """``fn`` with every product it traces (``@``, ``jnp.matmul``, ``jnp.einsum``, their gradients) at
    :data:`EXACT` precision: it runs under ``jax.default_matmul_precision("highest")``, which jax reads
    when a product is traced, so this holds inside an outer ``jax.jit``/``vmap``/``grad`` as well."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped
