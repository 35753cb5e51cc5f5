"""Every matrix product in simlm's exact quantities is compiled at full float32 precision.

On a GPU jax's default computes a float32 product in TF32 (~1e-3 relative error) and on a TPU in bfloat16
passes; a CPU ignores the setting, so the exactness tests alone cannot catch a product that lost its
``precision=HIGHEST`` — it would only be a silent wrong number on an accelerator.  These tests read the
programs XLA is actually given: jax dumps every module it compiles (``jax_dump_ir_to``), and each
``dot_general`` in the modules compiled while an exact quantity is computed must say ``HIGHEST``, with the
process's default set to TF32 as on a GPU.  Caches are cleared first so that every program is lowered
again (the persistent cache still saves the compile).
"""

from __future__ import annotations

import contextlib
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simlm.downstream.tasks import PosteriorTask
from simlm.models import finite
from simlm.models.perturbed import perturbed_lm
from simlm.theory.corrupted_channel import bayes_corrupted_probs
from simlm.worlds import hmm_core as core
from simlm.worlds.hmm import HMM
from simlm.worlds.loglinear import LogLinearWorld
from simlm.worlds.memory import MemoryHMM

_DOT = re.compile(r"dot_general\b[^\n]*contracting_dims[^\n]*")


class Products(list):
    """The ``dot_general`` lines of the modules compiled inside :func:`compiled_products`."""

    def reduced(self) -> list[str]:
        return [line for line in self if "precision = [HIGHEST, HIGHEST]" not in line]


@contextlib.contextmanager
def compiled_products(tmp_path: pathlib.Path):
    dump = tmp_path / "ir"
    dump.mkdir()
    jax.clear_caches()
    products = Products()
    jax.config.update("jax_dump_ir_to", str(dump))
    try:
        # a GPU's default, whatever the process set (dynamax sets "float32" for everyone when imported)
        with jax.default_matmul_precision("tensorfloat32"):
            yield products
    finally:
        jax.config.update("jax_dump_ir_to", "")
    for path in sorted(dump.glob("*.mlir")):
        products += _DOT.findall(path.read_text())


def assert_all_exact(products: Products, at_least: int):
    assert len(products) >= at_least, f"only {len(products)} products compiled: the test no longer sees the code"
    reduced = products.reduced()
    assert not reduced, "products at reduced precision:\n" + "\n".join(reduced[:5])


def test_the_check_sees_a_default_precision_product(tmp_path):
    """Negative control: a plain ``a @ b`` is flagged (so the checks below can fail)."""
    a = jnp.arange(6.0).reshape(2, 3)
    with compiled_products(tmp_path) as products:
        jax.jit(lambda x: x @ x.T)(a).block_until_ready()
    assert len(products) == 1 and products.reduced() == products


@pytest.mark.parametrize("n_states, n_symbols", [(3, 5), (6, 4)])  # K < V and K ≥ V take different loops
def test_hmm_laws_and_posteriors_are_exact(tmp_path, n_states, n_symbols):
    world = HMM.random(0, n_states, n_symbols)
    x = world.sample(jax.random.key(1), 2, 7)
    prompt = np.full((2, n_states), 0.5)
    with compiled_products(tmp_path) as products:
        world.log_likelihood(x)
        world.next_token_probs(x)
        world.masked_token_probs(x)
        world.prepended_mask_probs(x)
        world.state_posterior(x)
        world.state_posterior(x, smoothed=False)
        world.prompted_state_posterior(x, prompt)
        world.prompted_masked_token_probs(x, prompt)
        PosteriorTask(mu=np.linspace(-1.0, 1.0, n_states), position="next").labels(world, x)
    assert_all_exact(products, at_least=10)


@pytest.mark.parametrize("n_states, n_symbols", [(3, 5), (6, 4)])
def test_parallel_filter_and_smoother_are_exact(tmp_path, n_states, n_symbols):
    world = HMM.random(2, n_states, n_symbols)
    x = world.sample(jax.random.key(3), 1, 9)[0]
    chain = world.chain
    fns = (core.next_token_probs, core.smoothed_posterior, core.masked_token_probs, core.prepended_mask_probs)
    with compiled_products(tmp_path) as products:  # one program for the four (each compile costs more than its size)
        jax.block_until_ready(jax.jit(lambda *args: [fn(*args, parallel=True) for fn in fns])(*chain, x))
    assert_all_exact(products, at_least=8)


def test_block_diagonal_memory_chain_is_exact(tmp_path):
    world = MemoryHMM.random(0, 2, 2, 2, 5)
    x = world.sample(jax.random.key(4), 2, 6)
    with compiled_products(tmp_path) as products:
        world.next_token_probs(x)
        world.masked_token_probs(x)
        world.prepended_mask_probs(x)
        world.log_likelihood(x)
    assert_all_exact(products, at_least=3)


def test_loglinear_world_is_exact(tmp_path):
    world = LogLinearWorld.random(0, n_states=4, n_symbols=6, dim=3)
    x = world.sample(jax.random.key(5), 2, 5)
    with compiled_products(tmp_path) as products:
        world.next_token_probs(x)
        world.log_likelihood(x)
        world.prepended_mask_probs(x)
    assert_all_exact(products, at_least=1)


def test_finite_lm_family_and_objectives_are_exact(tmp_path):
    rng = np.random.default_rng(0)
    p_star = rng.dirichlet(np.ones(5), size=4)
    phi = rng.normal(size=(3, 5))
    f = rng.normal(size=(4, 3))
    with compiled_products(tmp_path) as products:
        lm = finite.fit_cross_entropy(p_star, phi, steps=3)
        lm.conditional_mean_features()
        finite.log_partition(lm.theta, jnp.asarray(phi, jnp.float32))
        finite.fit_cross_entropy_joint(p_star, 2, steps=3)
        finite.quad_excess(f, p_star, phi)
        jax.grad(lambda g: finite.quad_loss(g, p_star, phi).sum())(jnp.asarray(f, jnp.float32))
    assert_all_exact(products, at_least=8)


def test_corrupted_channel_posterior_is_exact(tmp_path):
    world = HMM.random(6, 3, 5)
    y = np.asarray(world.sample(jax.random.key(7), 2, 6))
    with compiled_products(tmp_path) as products:
        bayes_corrupted_probs(world, y, (0.2, 1.0, 0.0, 0.0))
    assert_all_exact(products, at_least=1)


def test_the_logit_noise_lm_is_the_same_lm_on_every_backend(tmp_path):
    """An analytic LM at exact ε is defined by its computation: its noise direction is a full-float32 product."""
    world = HMM.random(8, 3, 5)
    with compiled_products(tmp_path) as products:
        perturbed_lm(world, 0.05, "logit-noise", seed=0, n_eval=4, eval_length=6)
    assert_all_exact(products, at_least=1)
