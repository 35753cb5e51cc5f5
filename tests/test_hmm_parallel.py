"""The parallel-in-time (associative-scan) HMM passes equal the sequential scaled filter and brute force.

Float64 (``jax.enable_x64``) for the exactness properties, with zeros in π, A, B and arbitrary tokens
(impossible ones included, where the sequential filter's skip rule must be reproduced); float32 at a
long T for the numerics.  Shapes are fixed per test so each is one compile; hypothesis varies the values.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

import bruteforce as bf
from simlm.errors import ConfigError
from simlm.strategies import probability_vectors, stochastic_matrices
from simlm.worlds import hmm_core as core
from simlm.worlds import hmm_parallel

K, V, T = 3, 3, 5
EXACT = dict(rtol=1e-10, atol=1e-12)


@st.composite
def chains_and_tokens(draw, K=K, V=V, T=T, allow_zeros=True):
    pi = draw(probability_vectors(K, allow_zeros=allow_zeros))
    A = draw(stochastic_matrices(K, K, allow_zeros=allow_zeros))
    B = draw(stochastic_matrices(K, V, allow_zeros=allow_zeros))
    x = np.asarray(draw(st.lists(st.integers(0, V - 1), min_size=T, max_size=T)), np.int32)
    return pi, A, B, x


@functools.lru_cache(maxsize=None)
def _jitted(name, parallel):
    return jax.jit(functools.partial(getattr(core, name), parallel=parallel))


@functools.lru_cache(maxsize=None)
def _program(names, modes):
    """One jitted program returning ``core.<name>(*args, parallel=mode)`` for every name and mode, in that
    order (``backward`` reads the last three of (π, A, B, x)): one compile, where a program per function
    and mode costs several times as long to compile."""
    def run(*args):
        return [[getattr(core, name)(*(args[-3:] if name == "backward" else args), parallel=mode) for mode in modes]
                for name in names]
    return jax.jit(run)


def _modes(names, modes, *args):
    """``{(name, mode): core.<name>(*args, parallel=mode)}`` from one program, in float64, as numpy."""
    with jax.enable_x64(True):
        out = jax.tree.map(np.asarray, _program(tuple(names), tuple(modes))(*(jnp.asarray(a) for a in args)))
    return {(name, mode): out[i][j] for i, name in enumerate(names) for j, mode in enumerate(modes)}


def _both(name, *args):
    """``core.<name>`` sequential and parallel, in float64, as numpy."""
    out = _modes((name,), (False, True), *args)
    return [out[name, False], out[name, True]]


def _assert_same(a, b):
    for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.isneginf(u), np.isneginf(w))
        np.testing.assert_allclose(np.where(np.isneginf(u), 0, u), np.where(np.isneginf(w), 0, w), **EXACT)


@given(chains_and_tokens())
def test_parallel_forward_equals_sequential_including_impossible_tokens(case):
    seq, par = _both("forward", *case)
    _assert_same(seq, par)


@given(chains_and_tokens())
def test_parallel_backward_equals_sequential(case):
    pi, A, B, x = case
    seq, par = _both("backward", A, B, x)
    _assert_same(seq, par)


@given(chains_and_tokens())
def test_every_inference_function_agrees_between_the_two_passes(case):
    # masked laws go through forward and backward, the prepended law through backward and token_logprobs
    names = ("next_token_probs", "masked_token_probs", "prepended_mask_probs")
    out = _modes(names, (False, True), *case)
    for name in names:
        _assert_same(out[name, False], out[name, True])


@given(chains_and_tokens(allow_zeros=False))
def test_parallel_laws_equal_enumeration_over_hidden_paths(case):
    pi, A, B, x = case
    par = _modes(("next_token_probs", "masked_token_probs", "smoothed_posterior", "log_likelihood"), (True,), *case)
    np.testing.assert_allclose(par["next_token_probs", True][0], bf.next_token_law(pi, A, B, x), **EXACT)
    np.testing.assert_allclose(par["masked_token_probs", True][0], [bf.masked_law(pi, A, B, x, t) for t in range(T)],
                               **EXACT)
    np.testing.assert_allclose(par["smoothed_posterior", True][0], bf.smoothed_states(pi, A, B, x), **EXACT)
    np.testing.assert_allclose(par["log_likelihood", True], np.log(bf.sequence_prob(pi, A, B, x)), **EXACT)


@given(st.data())
def test_block_diagonal_transitions_agree_with_the_dense_chain(data):
    G, k = 2, 2
    pi = data.draw(probability_vectors(G * k))
    blocks = np.stack([data.draw(stochastic_matrices(k, k)) for _ in range(G)])
    B = data.draw(stochastic_matrices(G * k, V))
    x = np.asarray(data.draw(st.lists(st.integers(0, V - 1), min_size=T, max_size=T)), np.int32)
    dense = np.einsum("gh,gij->gihj", np.eye(G), blocks).reshape(G * k, G * k)
    with jax.enable_x64(True):  # masked laws: through the forward and the backward scans
        par = _jitted("masked_token_probs", True)(*(jnp.asarray(a) for a in (pi, blocks, B, x)))
        seq = _jitted("masked_token_probs", False)(*(jnp.asarray(a) for a in (pi, dense, B, x)))
    _assert_same(jax.tree.map(np.asarray, seq), jax.tree.map(np.asarray, par))


def test_a_skipped_token_leaves_the_law_unchanged_as_in_the_sequential_filter():
    # state 0 emits only symbol 0 and state 1 only symbol 1, and the chain stays put: after x_1 = 0 the
    # tokens 1 are impossible, so the filter skips them and keeps p = (1, 0)
    pi, A, B = np.array([0.5, 0.5]), np.eye(2), np.eye(2)
    x = np.array([0, 1, 0, 1, 1], np.int32)
    seq, par = _both("forward", pi, A, B, x)
    _assert_same(seq, par)
    np.testing.assert_array_equal(np.isneginf(par.token_logprobs), [False, True, False, True, True])
    np.testing.assert_allclose(par.predicted[1:], np.tile([1.0, 0.0], (4, 1)))


@functools.lru_cache(maxsize=None)
def _draws(n, length):
    """Both samplers in one program, over a batch of keys (as the trainer's batch draws every seed)."""
    def run(pi, A, B, keys):
        cums = [core.cumulative_rows(a) for a in (pi, A, B)]
        return [jax.vmap(lambda k: core.sample(*cums, k, n, length, parallel=p))(keys) for p in (False, True)]
    return jax.jit(run)


@given(chain=chains_and_tokens(K=4, V=3, T=1), seed=st.integers(0, 2**32 - 1))
def test_the_parallel_sampler_draws_the_sequential_tokens_and_states_bit_for_bit(chain, seed):
    pi, A, B, _ = chain
    args = [jnp.asarray(a, jnp.float32) for a in (pi, A, B)] + [jax.random.split(jax.random.PRNGKey(seed), 2)]
    for n, length in ((3, 70), (2, 1)):  # 70: the scan's odd-length path
        (tokens, states), (par_tokens, par_states) = _draws(n, length)(*args)
        assert tokens.shape == states.shape == (2, n, length)
        np.testing.assert_array_equal(par_states, states)
        np.testing.assert_array_equal(par_tokens, tokens)


def test_the_sampler_picks_the_parallel_chain_only_on_an_accelerator_where_it_fits():
    assert core.samples_in_parallel(None, 512, 16, 64) is (jax.default_backend() != "cpu")
    assert core.samples_in_parallel(None, 63, 16, 64) is False  # shorter than PARALLEL_MIN_LENGTH
    assert core.samples_in_parallel(None, 2048, 256, 1024) is False  # 1024·2048·257² bytes > 1 GiB
    assert core.samples_in_parallel(True, 1, 256, 1024) is True and core.samples_in_parallel(False, 512, 2, 1) is False
    cums = [core.cumulative_rows(jnp.full(shape, 0.5)) for shape in ((2,), (2, 2), (2, 2))]
    with pytest.raises(ConfigError, match="parallel: expected True, False or None"):
        core.sample(*cums, jax.random.PRNGKey(0), 1, 3, parallel="yes")


def test_long_sequences_agree_in_float32():
    rng = np.random.default_rng(0)
    K, V, T = 4, 8, 70  # not a power of two: the scan's odd-length path
    pi, A, B = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K) * 0.3, K), rng.dirichlet(np.ones(V) * 0.3, K)
    x = np.asarray(core.sample(*(core.cumulative_rows(jnp.asarray(a, jnp.float32)) for a in (pi, A, B)),
                               jax.random.PRNGKey(0), 1, T)[0][0])
    args = [jnp.asarray(a, jnp.float32) for a in (pi, A, B)] + [jnp.asarray(x)]
    [(seq, par)] = _program(("next_token_probs",), (False, True))(*args)  # both scans in one program
    np.testing.assert_allclose(par[0], seq[0], atol=2e-5)
    np.testing.assert_allclose(par[1], seq[1], atol=2e-4)
    assert abs(float(core.tree_sum(par[1]) - core.tree_sum(seq[1]))) < 1e-2  # of ~−140 nats


def test_float32_masked_laws_do_not_lose_precision_with_the_sequence_length():
    # the scans' ℓ = log p(x_s:u | h_s) is ~(u − s)·H nats; kept absolute, float32 rounds it to ~ε·(u − s)·H,
    # and with it the differences between states that β and the masked laws are made of: relative error
    # 1e-4 here (T = 8192), growing linearly in T.  Shifted to max 0 in compose, the scan keeps the
    # sequential filter's ~3e-7 at every T.
    rng = np.random.default_rng(1)
    K, V, T = 10, 5, 8192
    pi, A, B = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), K), rng.dirichlet(np.ones(V), K)
    x = rng.integers(0, V, T).astype(np.int32)
    with jax.enable_x64(True):
        exact = _jitted("masked_token_probs", False)(*(jnp.asarray(a) for a in (pi, A, B, x)))[0]
    scan = _jitted("masked_token_probs", True)(*(jnp.asarray(a, jnp.float32) for a in (pi, A, B)), jnp.asarray(x))[0]
    np.testing.assert_allclose(np.asarray(scan, np.float64), np.asarray(exact), rtol=1e-5)


def test_a_row_whose_reachable_states_are_all_unlikely_keeps_a_finite_log_likelihood():
    # row 0 reaches only state 0, whose segment log-likelihood is 2000 nats below state 1's; a global shift
    # would underflow row 0 to −inf, the per-row shift keeps it exact
    C = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])
    l2 = jnp.array([[-2000.0, 0.0]])
    _, l = hmm_parallel.compose((C, jnp.zeros((1, 2))), (C, l2))
    np.testing.assert_allclose(l, [[-2000.0, 0.0]])


def test_each_row_is_shifted_by_the_best_state_it_reaches():
    """A permutation C (row 0 reaches only state 1, row 1 only state 0), so the shift of row i is ℓ₂ at the
    column it reaches, not at its own index (with C = I above the two coincide): ℓ[i] = log Σ_j C[i, j]
    e^{ℓ₂[j]} = (0, −2000), and the composed C is C·C = I.  A shift taken over the rows' axis gave (∞, −∞)."""
    C = jnp.array([[[0.0, 1.0], [1.0, 0.0]]])
    Cc, l = hmm_parallel.compose((C, jnp.zeros((1, 2))), (C, jnp.array([[-2000.0, 0.0]])))
    np.testing.assert_allclose(l, [[0.0, -2000.0]])
    np.testing.assert_array_equal(Cc, [np.eye(2)])


def test_automatic_choice_is_sequential_on_cpu_and_bad_values_are_refused():
    long = core.PARALLEL_MIN_LENGTH * 4
    assert core.use_parallel(None, long) is (jax.default_backend() != "cpu")
    assert core.use_parallel(None, 1) is False
    assert core.use_parallel(True, 1) is True and core.use_parallel(False, long) is False
    for bad in (1, "yes", np.bool_(True)):
        with pytest.raises(ConfigError, match="parallel"):
            core.use_parallel(bad, 8)


def test_on_an_accelerator_the_automatic_choice_keeps_the_scan_within_its_memory_cap(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    long, cap = core.PARALLEL_MIN_LENGTH, core.PARALLEL_MAX_BYTES
    assert core.use_parallel(None, long, 16) is True
    assert core.use_parallel(None, long - 1, 16) is False
    K = 64
    n = cap // (long * K * K * 4)  # the most sequences whose scan fits: n·T·K²·4 bytes ≤ the cap
    assert core.use_parallel(None, long, K, n) is True and core.use_parallel(None, long, K, n + 1) is False
    # the worlds benchmark's accelerator sizes, B = 1024, T = 2048 at K = 256: 550 GB of scan (one: 0.5 GB)
    assert core.use_parallel(None, 2048, 256, 1024) is False and core.use_parallel(None, 2048, 256, 1) is True


def test_the_batched_entry_points_decide_for_the_whole_batch(monkeypatch):
    """Under vmap a core function sees one sequence; core.batched sees n and passes the choice down."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    calls = []
    scan = hmm_parallel.forward
    monkeypatch.setattr(hmm_parallel, "forward", lambda *a, **k: calls.append(a[3].shape) or scan(*a, **k))
    T = core.PARALLEL_MIN_LENGTH
    monkeypatch.setattr(core, "PARALLEL_MAX_BYTES", 2 * T * K * K * 4)  # room for two sequences' scan
    rng = np.random.default_rng(0)
    pi, A, B = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), K), rng.dirichlet(np.ones(V), K)
    x = jnp.asarray(rng.integers(0, V, (3, T)), jnp.int32)
    logprobs = core.batched(core.token_logprobs)  # a new jitted function: traced afresh here
    two, three = logprobs(pi, A, B, x[:2]), logprobs(pi, A, B, x)
    assert calls == [(T,)]  # the scan for n = 2 only; n = 3 ran the sequential filter
    np.testing.assert_allclose(two, three[:2], rtol=1e-5, atol=1e-6)


def test_a_sequence_of_no_tokens_is_a_shape_error_naming_tokens():
    """T = 0 given to the core functions directly (the worlds refuse it first) met the scans' argmax of an empty
    sequence (ValueError) or the next-token loop's index (IndexError) (a review, 2026-12-06); the sequential
    scans' empty answers stand (log p of no tokens is 0)."""
    from simlm.errors import ShapeError
    from simlm.worlds import HMM

    w = HMM.random(0, 3, 4)
    chain, empty = (w.initial, w.transition, w.emission), jnp.zeros((0,), jnp.int32)
    for parallel in (True, False):
        for fn in (core.next_token_probs, core.next_token_logprobs):
            with pytest.raises(ShapeError, match=r"^tokens: a sequence of no tokens"):
                fn(*chain, empty, parallel=parallel)
    with pytest.raises(ShapeError, match=r"^tokens: a sequence of no tokens"):
        core.forward(*chain, empty, parallel=True)
    assert float(core.log_likelihood(*chain, empty, parallel=False)) == 0.0


def test_the_parallel_read_out_keeps_a_state_whose_start_share_is_zero_while_the_tokens_favour_it():
    """π = 0 on the state that explains x best (ℓ = 0 there), π = 1 on a state 130 nats worse: the read-out's
    weights log π + ℓ are all far below 0 and must be shifted by their own max before e^·, not by ℓ's
    (unshifted, every law read 0 and log p(x) −inf, and no test saw it: a mutation review, 2026-12-07)."""
    pi, A = np.array([0.0, 1.0], np.float32), np.eye(2, dtype=np.float32)
    B = np.array([[0.999, 0.001], [0.001, 0.999]], np.float32)
    args = [jnp.asarray(a) for a in (pi, A, B)] + [jnp.zeros(20, jnp.int32)]
    (seq, seq_c), (par, par_c) = (core.next_token_probs(*args, parallel=p) for p in (False, True))
    np.testing.assert_allclose(par, seq, atol=1e-6)
    np.testing.assert_allclose(par_c, seq_c, rtol=1e-5)
    np.testing.assert_allclose(seq[-1], [0.001, 0.999], rtol=1e-5)  # the only state π allows


# ---- the associative scans at T = 1 (the read-out has no rows: the reshape comment in _weighted) ---------
def test_the_parallel_passes_of_a_single_token_equal_the_sequential_ones():
    import jax
    import jax.numpy as jnp
    from simlm.worlds import hmm_core as core

    pi, A, B = np.array([0.2, 0.8]), np.array([[0.9, 0.1], [0.3, 0.7]]), np.array([[0.6, 0.4], [0.1, 0.9]])
    with jax.enable_x64(True):
        args = [jnp.asarray(a) for a in (pi, A, B, np.array([1], np.int32))]
        for name in ("forward", "next_token_probs", "masked_token_probs", "prepended_mask_probs"):
            seq, par = (jax.tree.map(np.asarray, getattr(core, name)(*args, parallel=p)) for p in (False, True))
            for u, w in zip(jax.tree.leaves(seq), jax.tree.leaves(par)):
                np.testing.assert_allclose(w, u, rtol=1e-12, atol=1e-14, err_msg=name)
