"""The training objectives (simlm.train.objectives) against their formulas, position by position, in numpy:
cross-entropy, the Quad loss of Saunshi, Malladi & Arora and the masked-LM loss over exactly the chosen
positions (a factor or a denominator changed here moves every model a user trains, silently)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simlm.models import TransformerConfig, init_transformer
from simlm.models.transformer import causal_inputs, next_token_logprobs
from simlm.train import objectives

CONFIG = TransformerConfig(n_symbols=5, d_model=8, n_layers=1, n_heads=2, max_len=8)
MASKED = TransformerConfig(n_symbols=5, d_model=8, n_layers=1, n_heads=2, max_len=8, causal=False)


def _tokens(seed=0, n=3, T=6):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 5, (n, T)), jnp.int32)


def test_cross_entropy_is_the_mean_negative_log_likelihood_of_the_observed_tokens():
    model, x = init_transformer(CONFIG, 0), _tokens()
    logp = np.asarray(jax.nn.log_softmax(model(causal_inputs(x, CONFIG)), -1), np.float64)
    want = -np.mean(np.take_along_axis(logp, np.asarray(x)[..., None], -1))
    assert float(objectives.cross_entropy(model, x)) == pytest.approx(want, rel=1e-5)
    mask = np.zeros(x.shape, bool)
    mask[0, 2:] = mask[2, :3] = True  # only the counted positions, averaged over their number
    want = -np.take_along_axis(logp, np.asarray(x)[..., None], -1)[..., 0][mask].mean()
    assert float(objectives.cross_entropy(model, x, mask=jnp.asarray(mask))) == pytest.approx(want, rel=1e-5)


def test_the_quad_loss_is_minus_the_observed_score_plus_half_the_squared_scores():
    """ℓ = −⟨f(s), φ_w⟩ + ½‖Φᵀ f(s)‖² at every position, averaged (minimised where ΦΦᵀ f = Φp*)."""
    model, x = init_transformer(CONFIG, 1), _tokens(1)
    f = np.asarray(model.features(causal_inputs(x, CONFIG)), np.float64) * 7.0  # order-1 scores
    phi = np.asarray(model.unembedding, np.float64)

    class Scaled:  # the same model with its features scaled, so the quadratic term is not negligible
        config = model.config
        unembedding = model.unembedding

        @staticmethod
        def features(tokens):
            return 7.0 * model.features(tokens)

    scores = f @ phi
    per = -np.take_along_axis(scores, np.asarray(x)[..., None], -1)[..., 0] + 0.5 * (scores**2).sum(-1)
    assert np.abs(scores).max() > 0.5  # both terms matter
    assert float(objectives.quad(Scaled, x)) == pytest.approx(per.mean(), rel=1e-5)
    # in expectation over w ~ p the loss is −⟨f, Φp⟩ + ½‖Φᵀf‖², least at f* = (ΦΦᵀ)⁺Φp, by ½‖Φᵀ(f − f*)‖²
    p = np.random.default_rng(0).dirichlet(np.ones(5))
    expected = lambda g: -g @ phi @ p + 0.5 * np.sum((g @ phi) ** 2)
    # ΦΦᵀ is singular (d = 8 > V = 5): solve read an exact zero pivot in the optimised build (LinAlgError);
    # any solution of ΦΦᵀ f = Φp is a minimiser, and Φp lies in ΦΦᵀ's range
    star = np.linalg.pinv(phi @ phi.T) @ (phi @ p)
    g = f[0, 0]
    assert expected(g) - expected(star) == pytest.approx(0.5 * np.sum(((g - star) @ phi) ** 2), rel=1e-9)


def test_the_quad_excess_is_half_the_squared_distance_to_a_minimiser_in_and_out_of_jit():
    """mean_t ½‖Φᵀ(f − f*)‖² with f* any minimiser ((ΦΦᵀ)⁺Φp*: ΦΦᵀ is singular, d = 8 > V = 5), per sequence;
    called eagerly it was refused (the finite check wants (S, V) laws and got (n, T, V))."""
    model, x = init_transformer(CONFIG, 2), _tokens(2)
    p = np.random.default_rng(2).dirichlet(np.ones(5), size=(3, 6))
    f = np.asarray(model.features(causal_inputs(x, CONFIG)), np.float64)
    phi = np.asarray(model.unembedding, np.float64)
    star = p @ (np.linalg.pinv(phi @ phi.T) @ phi).T
    want = (0.5 * (((f - star) @ phi) ** 2).sum(-1)).mean(-1)
    np.testing.assert_allclose(objectives.quad_excess(model, x, jnp.asarray(p, jnp.float32)), want, rtol=1e-4)
    jitted = jax.jit(lambda x, p: objectives.quad_excess(model, x, p))
    np.testing.assert_allclose(jitted(x, jnp.asarray(p, jnp.float32)), want, rtol=1e-4)


class _Recorder:
    """A stand-in model: fixed logits per position, and the inputs it was called on."""

    def __init__(self, logits):
        self.config, self.logits, self.inputs = MASKED, jnp.asarray(logits), None

    def __call__(self, inputs):
        self.inputs = np.asarray(inputs)
        return self.logits


@pytest.mark.parametrize("rate", [0.3, 0.7])
def test_the_masked_lm_loss_averages_over_exactly_the_chosen_positions(rate):
    x = _tokens(2, n=4, T=8)
    logits = np.random.default_rng(3).normal(size=(4, 8, 5)) * 2
    nll = -np.take_along_axis(np.asarray(jax.nn.log_softmax(jnp.asarray(logits), -1), np.float64),
                              np.asarray(x)[..., None], -1)[..., 0]
    key = jax.random.PRNGKey(5)
    model = _Recorder(logits)
    loss = float(objectives.masked_lm(model, x, key, mask_rate=rate, corruption=(1.0, 0.0, 0.0)))
    chosen = model.inputs == CONFIG.mask_id  # every chosen input became MASK
    assert 0 < chosen.sum() < chosen.size
    # … and they are the positions the documented draw picks at this rate (a rate read as 1 − rate or
    # rate/2 passed the lines above)
    assert np.array_equal(chosen, np.asarray(jax.random.uniform(jax.random.split(key, 3)[0], x.shape) < rate))
    assert (model.inputs[~chosen] == np.asarray(x)[~chosen]).all()
    assert loss == pytest.approx(nll[chosen].mean(), rel=1e-5)
    # random replacement: the same positions are chosen (same key), and only they can change
    model = _Recorder(logits)
    loss = float(objectives.masked_lm(model, x, key, mask_rate=rate, corruption=(0.0, 1.0, 0.0)))
    assert loss == pytest.approx(nll[chosen].mean(), rel=1e-5)
    assert (model.inputs[~chosen] == np.asarray(x)[~chosen]).all()
    assert (model.inputs < CONFIG.n_symbols).all() and (model.inputs[chosen] != np.asarray(x)[chosen]).any()
    # a counted-positions mask restricts the chosen ones further
    mask = np.zeros(x.shape, bool)
    mask[:, :4] = True
    model = _Recorder(logits)
    loss = float(objectives.masked_lm(model, x, key, jnp.asarray(mask), mask_rate=rate, corruption=(1.0, 0.0, 0.0)))
    assert (model.inputs == CONFIG.mask_id).sum() == (chosen & mask).sum()
    assert loss == pytest.approx(nll[chosen & mask].mean(), rel=1e-5)


def test_positions_masked_out_add_nothing_even_with_the_models_pad_id():
    """Row 1 padded from position 3 with pad_id (beyond the vocabulary): the gather read NaN there and
    NaN·0 is NaN, so every objective was NaN; the loss is the one with any in-vocabulary padding."""
    x = np.asarray(_tokens(4, n=2, T=6))
    mask = np.ones(x.shape, bool)
    mask[1, 3:] = False
    padded = x.copy()
    padded[1, 3:] = CONFIG.pad_id
    causal, masked = init_transformer(CONFIG, 0), init_transformer(MASKED, 0)
    key = jax.random.PRNGKey(0)
    for name, model, args in (("cross-entropy", causal, ()), ("quad", causal, ()), ("masked-lm", masked, (key,))):
        fn = objectives.OBJECTIVES[name]
        want = float(fn(model, jnp.asarray(x), *(args or (None,)), mask=jnp.asarray(mask)))
        got = float(fn(model, jnp.asarray(padded), *(args or (None,)), mask=jnp.asarray(mask)))
        assert np.isfinite(got) and got == pytest.approx(want, rel=1e-6), name


def test_a_float_mask_and_a_model_of_the_other_kind_are_refused_naming_them():
    """A float mask's weights were read as counts (0.01 everywhere gave 1/100 of the mean); an int mask of 2
    zeroed the masked-LM loss; a bidirectional model's 'causal' law sees the token it predicts."""
    from simlm.errors import ConfigError
    from simlm.models.transformer import masked_token_logprobs

    x = _tokens(5)
    causal, masked = init_transformer(CONFIG, 0), init_transformer(MASKED, 0)
    with pytest.raises(ConfigError, match="^mask: expected booleans"):
        objectives.cross_entropy(causal, x, mask=jnp.full(x.shape, 0.01))
    key = jax.random.PRNGKey(1)
    twos = objectives.masked_lm(masked, x, key, jnp.full(x.shape, 2, jnp.int32), mask_rate=0.5)
    assert float(twos) == pytest.approx(float(objectives.masked_lm(masked, x, key, mask_rate=0.5)), rel=1e-6)
    for call in (lambda: next_token_logprobs(masked, x), lambda: objectives.cross_entropy(masked, x),
                 lambda: objectives.quad(masked, x), lambda: objectives.masked_lm(causal, x, key),
                 lambda: masked_token_logprobs(causal, x, jnp.arange(2))):
        with pytest.raises(ConfigError, match="^model: .* needs a"):
            call()


def test_a_batch_with_no_position_that_counts_is_refused_not_read_as_nan_or_zero():
    """Tokens of shape (n, 0) gave a cross-entropy and a Quad loss of NaN; a mask of all False gave 0.0, a
    loss of nothing read as a perfect one (a review, 2026-12-06).  Both name the argument; a mask that counts
    one position still gives that position's loss."""
    from simlm.errors import ConfigError, TokenError

    causal, masked = init_transformer(CONFIG, 0), init_transformer(MASKED, 0)
    key = jax.random.PRNGKey(0)
    x = _tokens(2)
    for fn, model in ((objectives.cross_entropy, causal), (objectives.quad, causal), (objectives.masked_lm, masked)):
        with pytest.raises(TokenError, match=r"^tokens: .*shape \(2, 0\)"):
            fn(model, jnp.zeros((2, 0), jnp.int32), key)
        with pytest.raises(ConfigError, match="^mask: no position counts"):
            fn(model, x, key, mask=jnp.zeros(x.shape, bool))
    one = np.zeros(x.shape, bool)
    one[0, 1] = True
    # a masked-LM draw that chooses no position: 0.0 as well, outside a trace (the review of the change)
    with pytest.raises(ConfigError, match="^mask_rate: the draw chose no position"):
        objectives.masked_lm(masked, x, key, mask_rate=1e-9)
    got = float(objectives.cross_entropy(causal, x, mask=jnp.asarray(one)))
    want = -float(next_token_logprobs(causal, x)[0, 1, int(x[0, 1])])
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name", ["cross-entropy", "quad", "masked-lm"])
def test_a_mask_not_of_the_tokens_shape_is_refused_under_jit_too(name):
    """A (T,) or (n, 1) mask broadcast over the positions but was counted once: the loss read n (or T) times
    its value (cross-entropy 4.76 for 1.59 with a (T,) mask over 3 rows) — refused, naming the shapes."""
    from simlm.errors import ShapeError

    x = _tokens(6)
    model = init_transformer(MASKED if name == "masked-lm" else CONFIG, 0)
    fn, key = objectives.OBJECTIVES[name], jax.random.PRNGKey(0)
    row = np.array([1, 1, 1, 0, 0, 0], bool)
    for mask in (row, np.ones((3, 1), bool), np.ones((1, 6), bool)):
        with pytest.raises(ShapeError, match=re.escape(f"mask: expected the tokens' shape (3, 6), got {mask.shape}")):
            fn(model, x, key, mask=jnp.asarray(mask))
        with pytest.raises(ShapeError, match="^mask: expected the tokens' shape"):
            jax.jit(lambda t, m: fn(model, t, key, mask=m))(x, jnp.asarray(mask))
    full = np.tile(row, (3, 1))  # the same positions as an (n, T) mask: the mean over its 9 positions
    assert np.isfinite(float(fn(model, x, key, mask=jnp.asarray(full))))


def test_a_random_replacement_is_uniform_over_every_symbol():
    """BERT's random replacement draws 'a uniformly random symbol' (docstring): over 64 × 64 chosen positions
    (mask_rate 1, corruption (0, 1, 0)) each of the V = 5 symbols appears about 1/5 of the time, the last one
    too, and never MASK.  Kills a draw over [0, V − 1) (the last symbol never drawn)."""
    n, T, V = 64, 64, MASKED.n_symbols
    x = jnp.zeros((n, T), jnp.int32)
    model = _Recorder(np.zeros((n, T, V)))
    objectives.masked_lm(model, x, jax.random.PRNGKey(0), mask_rate=1.0, corruption=(0.0, 1.0, 0.0))
    share = np.bincount(model.inputs.ravel(), minlength=V + 1) / model.inputs.size
    assert share[V:].sum() == 0  # no MASK, nothing beyond the symbols
    assert np.all(np.abs(share[:V] - 1 / V) < 0.03), share  # σ ≈ 0.006 per share
