"""The training objectives (simlm.train.objectives) against their formulas, position by position, in numpy:
cross-entropy, the Quad loss of Saunshi, Malladi & Arora and the masked-LM loss over exactly the chosen
positions (a factor or a denominator changed here moves every model a user trains, silently)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simlm.models import TransformerConfig, init_transformer
from simlm.models.transformer import causal_inputs
from simlm.train import objectives

CONFIG = TransformerConfig(n_symbols=5, d_model=8, n_layers=1, n_heads=2, max_len=8)


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
    """ℓ = −⟨f(s), φ_w⟩ + ½‖Φᵀ f(s)‖² at every position, averaged (the ½ sets the minimiser (ΦΦᵀ)⁻¹Φp*)."""
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
    # in expectation over w ~ p the loss is −⟨f, Φp⟩ + ½‖Φᵀf‖², least at f* = (ΦΦᵀ)⁻¹Φp, by ½‖Φᵀ(f − f*)‖²
    p = np.random.default_rng(0).dirichlet(np.ones(5))
    expected = lambda g: -g @ phi @ p + 0.5 * np.sum((g @ phi) ** 2)
    star = np.linalg.solve(phi @ phi.T, phi @ p)
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
        self.config, self.logits, self.inputs = CONFIG, jnp.asarray(logits), None

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
