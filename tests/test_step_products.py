"""The train step's matrix products: every projection is one (rows, d) @ (d, f) product, and one seed is run
without a batch axis (``Linear``, ``rows_product``, ``over_seeds``).  XLA:CPU runs the weight gradient of a
product over ``(n, T, d)`` — contracted over two axes — and a product with a size-1 batch axis at about 70 % of
the rate of the flattened product (``benchmarks/minimal_step.py``); these tests hold the step's layout, and
that the layout changes no value beyond float rounding."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from simlm.models.transformer import Linear, TransformerConfig, init_transformer, rows_product
from simlm.train.trainer import TrainConfig, Training, over_seeds
from simlm.worlds import HMM

DOT = re.compile(r"stablehlo\.dot_general .*?(?:batching_dims = \[([\d, ]*)\] x \[[\d, ]*\], )?"
                 r"contracting_dims = \[([\d, ]*)\] x \[[\d, ]*\].*?: \(tensor<([\dx]+)x\w+>")


def step_products(seeds, objective):
    """(contracted axes, batch axis sizes) of every product in the lowered train step."""
    world = HMM.random(0, n_states=4, n_symbols=5)
    model = TransformerConfig(n_symbols=5, d_model=8, n_layers=1, n_heads=2, d_ff=16, max_len=8,
                              causal=objective != "masked-lm")
    run = Training(world, model, TrainConfig(objective=objective, seeds=seeds, batch_size=4, seq_len=8,
                                             max_steps=10))
    text = run._step.lower(run.init_state(), run.batch(0)).as_text()
    found = []
    for batching, contracting, shape in DOT.findall(text):
        dims = [int(s) for s in shape.split("x")]
        batch = [dims[int(a)] for a in batching.split(",")] if batching else []
        found.append((len(contracting.split(",")), batch))
    assert found and len(found) == len(re.findall(r"stablehlo\.dot(?:_general)?\b", text)), "products unread"
    return found


@pytest.mark.parametrize("objective", ["cross-entropy", "masked-lm"])
def test_every_product_of_the_step_contracts_one_axis(objective):
    for seeds in [(0,), (0, 1)]:
        assert all(contracted == 1 for contracted, _ in step_products(seeds, objective)), seeds


@pytest.mark.parametrize("objective", ["cross-entropy", "masked-lm"])
def test_one_seed_runs_without_a_batch_axis(objective):
    one = step_products((0,), objective)
    assert not any(1 in batch for _, batch in one)
    projections = [b for _, b in one if not b]  # the attention's products are batched over rows and heads
    assert len(projections) >= 15  # 5 products (qkv, out, up, down, output) × forward, two gradients
    seed_batched = [batch for _, batch in step_products((0, 1), objective) if len(batch) == 1]
    assert len(seed_batched) >= 15 and all(batch == [2] for batch in seed_batched)


def test_one_seed_is_evaluated_without_a_batch_axis():
    world = HMM.random(0, n_states=4, n_symbols=5)
    model = TransformerConfig(n_symbols=5, d_model=8, n_layers=1, n_heads=2, d_ff=16, max_len=8)
    run = Training(world, model, TrainConfig(seeds=(0,), batch_size=4, seq_len=8, max_steps=10))
    text = run._evaluate.lower(run.init_state().params, run.eval_tokens, run.eval_ref).as_text()
    shapes = [shape for _, _, shape in DOT.findall(text)]
    assert shapes and not any(s.startswith("1x") for s in shapes)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(7, 16), (3, 5, 16), (2, 3, 4, 16), (0, 5, 16), (3, 0, 16)])
def test_linear_is_nnx_linear(shape, dtype):
    ours = Linear(16, 12, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0))
    theirs = nnx.Linear(16, 12, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), shape)
    a, b = np.asarray(ours(x), np.float32), np.asarray(theirs(x), np.float32)
    assert a.shape == b.shape == (*shape[:-1], 12)
    np.testing.assert_allclose(a, b, rtol=1e-6 if dtype == "float32" else 1e-2, atol=1e-6)
    assert jax.tree.structure(nnx.state(ours)) == jax.tree.structure(nnx.state(theirs))  # checkpoints the same


def test_the_network_keeps_its_parameter_names():  # checkpoints written before Linear restore into it
    model = init_transformer(TransformerConfig(n_symbols=5, d_model=8, n_layers=1, n_heads=2, max_len=8), 0)
    paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))}
    for layer in ["['attn']['qkv']", "['attn']['out']", "['up']", "['down']"]:
        for param in ["kernel", "bias"]:
            assert f"['blocks'][0]{layer}['{param}'].value" in paths
    assert "['output']['kernel'].value" in paths and len(paths) == 17


def test_rows_product_is_the_batched_product():
    x = jax.random.normal(jax.random.key(0), (3, 5, 8))
    w = jax.random.normal(jax.random.key(1), (8, 6))
    np.testing.assert_allclose(rows_product(x, w), jnp.einsum("ntd,df->ntf", x, w), rtol=1e-6, atol=1e-6)
    assert rows_product(x[0, 0], w).shape == (6,)


def test_over_seeds_is_vmap():
    def f(p, x):
        return {"sum": (p["w"] * x).sum(), "row": p["w"] @ x}, p["b"] + 1

    params = {"w": jnp.arange(6.0).reshape(1, 2, 3), "b": jnp.ones((1, 4))}
    x = jnp.arange(3.0)
    for n in (1, 2):
        p = jax.tree.map(lambda v: jnp.concatenate([v] * n), params)
        got, want = over_seeds(f, n, in_axes=(0, None))(p, x), jax.vmap(f, in_axes=(0, None))(p, x)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert g.shape == w.shape and g.shape[0] == n
            np.testing.assert_allclose(g, w, rtol=1e-6)
