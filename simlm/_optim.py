"""One optax loop for every small fit in simlm (heads, prompts, finite-context LMs)."""

from __future__ import annotations

import jax
import optax


def minimise(loss, params, optimizer: optax.GradientTransformation, steps: int, *, xs=None):
    """Run ``steps`` updates of ``optimizer`` on ``loss(params)`` inside one ``lax.scan``; with ``xs`` (a
    pytree of arrays with leading axis ``steps``, e.g. minibatch indices) step i minimises
    ``loss(params, xs[i])``.

    Returns ``(params, losses)`` with ``losses (steps,)`` the loss before each update.  Pure and
    jit-able (call it inside ``jax.jit``; ``steps`` must be static)."""
    value_and_grad = jax.value_and_grad(loss if xs is not None else lambda p, _: loss(p))

    def step(carry, x):
        p, state = carry
        value, grad = value_and_grad(p, x)
        updates, state = optimizer.update(grad, state, p)
        return (optax.apply_updates(p, updates), state), value

    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), xs, length=steps)
    return params, losses
