"""One optax loop for every small fit in simlm (heads, prompts, finite-context LMs)."""

from __future__ import annotations

import jax
import optax


def minimise(loss, params, optimizer: optax.GradientTransformation, steps: int):
    """Run ``steps`` updates of ``optimizer`` on ``loss(params)`` inside one ``lax.scan``.

    Returns ``(params, losses)`` with ``losses (steps,)`` the loss before each update.  Pure and
    jit-able (call it inside ``jax.jit``; ``steps`` must be static)."""
    value_and_grad = jax.value_and_grad(loss)

    def step(carry, _):
        p, state = carry
        value, grad = value_and_grad(p)
        updates, state = optimizer.update(grad, state, p)
        return (optax.apply_updates(p, updates), state), value

    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
    return params, losses
