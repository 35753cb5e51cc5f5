"""(A mutation review, 2026-12-08.)  The numbers the anchors experiment writes and draws, by hand or by a float64
brute force: ``constructions`` (each world fit's six numbers and N1/N2's five: a field read from its neighbour —
constant_mse from mse, full_r2 from r2, the control's ε for N2's own — passed every test, which compared r2, mse and
max_residual only), the worst bound row's numbers in ``summarise``, what ``figure`` plots (every mutant of it
passed: the quick run's test only asked for a non-empty file), the command's wiring of summary, errors and
``--figure``, and :func:`~simlm.experiments.checks_anchors.block_fits` (no test called it) on a tiny transformer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import logsumexp

from simlm.experiments import anchors
from simlm.experiments.registry import row
from simlm.theory.anchor_constructions import n1_construction, n2_construction
from simlm.theory.anchors import anchor_contexts, bulk_mask, world_anchor_fit


def _brute_fit(logits, features, bulk, weights):
    """Weighted least squares of log Z_B (and of log Z) on (f, 1) by numpy in float64: (mse, r2, max |residual|,
    constant_mse, full_r2), the definitions of :class:`~simlm.theory.anchors.AnchorFit`.  The features are centred
    and scaled to unit spread and directions below 1e-5 of the largest dropped, as the fit documents: the worlds'
    "constant-norm" features lie on the hyperplane ⟨m, z⟩ = ‖m‖² up to float32 rounding (a direction of relative
    spread 3e-8 in the quick anchor world), and fitting that rounding lowered the mse by 2.6 %."""
    fc = features - weights @ features
    scaled, sw = fc / np.sqrt(weights @ fc**2), np.sqrt(weights)
    out = []
    for y in (logsumexp(np.where(bulk, logits, -np.inf), axis=1), logsumexp(logits, axis=1)):
        yc = y - weights @ y
        res = yc - scaled @ np.linalg.lstsq(scaled * sw[:, None], yc * sw, rcond=1e-5)[0]
        mse, var = weights @ res**2, weights @ yc**2
        out.append((mse, 1 - mse / var, np.abs(res).max(), var))
    (mse, r2, top, var), (_, full_r2, _, _) = out
    return mse, r2, top, var, full_r2


@pytest.fixture(scope="module")
def quick():
    """The quick config's constructions, and each of its two worlds' contexts and bulk (the config's top_k = 4)."""
    raw = anchors.sweep_config(quick=True)
    worlds = {}
    for w in raw["worlds"][:2]:
        world = anchors.build_world(w)
        ctx = anchor_contexts(world)
        worlds[w["name"]] = (world, ctx, bulk_mask(ctx.logp, top_k=4))
    return anchors.constructions(raw), worlds


def test_the_constructions_world_fits_are_the_least_squares_fits_of_both_geometries(quick):
    out, worlds = quick
    assert set(out) == {"fit:anchor", "fit:unstructured", "N1", "N2"}
    for name, (_, ctx, bulk) in worlds.items():
        got = out[f"fit:{name}"]
        mse, r2, top, var, full_r2 = _brute_fit(ctx.logits, ctx.features, bulk, ctx.weights)
        assert got["mse"] == pytest.approx(mse, rel=1e-9, abs=1e-14), name
        assert got["r2"] == pytest.approx(r2, abs=1e-9) and got["max_residual"] == pytest.approx(top, rel=1e-7)
        assert got["constant_mse"] == pytest.approx(var, rel=1e-9)
        assert got["full_r2"] == pytest.approx(full_r2, abs=1e-9)
        assert got["constant_mse"] > got["mse"] and got["full_r2"] != pytest.approx(got["r2"], abs=1e-6), name
        assert got["angle"] == world_anchor_fit(ctx, bulk).angle  # None for the unstructured world
    assert out["fit:anchor"]["angle"] is not None and out["fit:unstructured"]["angle"] is None


def test_the_constructions_n1_and_n2_are_those_of_the_anchor_world(quick):
    """N1 at seed 0 and N2 on the world's fit, bulk and carriers, each of their five numbers from its own field
    (N2's ε ~ e^{−M} and its control's ε of frequent words differ by orders of magnitude)."""
    out, worlds = quick
    world, ctx, bulk = worlds["anchor"]
    fields = ("eps", "head_error", "probe_error", "world_head_error", "control_eps")
    for c in (n1_construction(ctx, 0), n2_construction(ctx, world_anchor_fit(ctx, bulk), bulk, world.carrier_ids)):
        assert out[c.name] == {k: getattr(c, k) for k in fields}, c.name
    assert out["N2"]["control_eps"] > 100 * out["N2"]["eps"] > 0
    assert out["N2"]["head_error"] != out["N2"]["world_head_error"]


def test_the_summarys_worst_row_carries_its_measured_value_and_bound():
    shared = {"world": "anchor", "lm_seed": 0}
    rows = [{**shared, "lm": "logit-noise@0.1", "eps": 0.1, **row("anchored:head_error", 0.1, 0.4, maximum=1.0)},
            {**shared, "lm": "temperature@0.1", "eps": 0.1, **row("anchored:head_error", 0.3, 0.5, maximum=1.0)}]
    worst = anchors.summarise(rows)["bound@markov"]["worst"]
    assert worst == {"world": "anchor", "lm": "temperature@0.1", "lm_seed": 0, "quantity": "anchored:head_error",
                     "measured": 0.3, "bound": 0.5}


def _figure_rows():
    """Anchor-world logit-noise rows at ε 0.1 then 0.01 (an error of 0 at 0.01) with both forms of the bound, an
    unstructured temperature row, the trained ladder's rows on the small world, and latent readouts (no bound)."""
    def r(world, lm, eps, quantity, measured, bound=None):
        return {"world": world, "lm": lm, "lm_seed": 0, "eps": eps,
                **row(quantity, measured, bound, **({} if bound is None else {"maximum": 1.0}))}

    return [r("anchor", "logit-noise@0.1", 0.1, "anchored:head_error", 0.2, 0.6),
            r("anchor", "logit-noise@0.01", 0.01, "anchored:head_error", 0.0, 0.3),
            r("anchor", "logit-noise@0.1", 0.1, "anchored:head_error@per-context", 0.2, 0.5),
            r("anchor", "logit-noise@0.01", 0.01, "anchored:head_error@per-context", 0.0, 0.25),
            r("anchor", "temperature@0.1", 0.1, "anchored:head_error", 0.15, 0.7),
            r("unstructured", "temperature@0.1", 0.1, "anchored:head_error", 0.4, 0.9),
            r("small", "trained@0.1", 0.08, "anchored:head_error", 0.05),
            r("small", "trained@0.1", 0.08, "latent:readout_error", 0.3),
            r("anchor", "logit-noise@0.1", 0.1, "latent:readout_error", 0.25),
            r("anchor", "logit-noise@0.01", 0.01, "latent:readout_error", 0.02)]


@pytest.fixture()
def drawn(tmp_path, monkeypatch):
    """``figure`` of :func:`_figure_rows`, its figure kept open: {panel title: {label: (x, y)}} and the legend."""
    import matplotlib.pyplot as plt

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    path = anchors.figure(_figure_rows(), tmp_path / "a.png")
    assert path.stat().st_size > 0 and len(kept) == 1
    fig = kept[0]
    panels = {ax.get_title(): {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
                               for line in ax.get_lines()} for ax in fig.axes}
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    yield panels, legend
    monkeypatch.undo()  # the real close again
    plt.close(fig)


def test_the_figure_draws_each_curve_sorted_by_eps_with_a_zero_error_at_1e_4(drawn):
    panels, _ = drawn
    assert list(panels) == list(anchors.TASK_QUANTITIES)
    anchored = panels["anchored"]
    assert anchored["logit-noise (anchor)"] == ([0.01, 0.1], [1e-4, 0.2])
    assert anchored["temperature (anchor)"] == ([0.1], [0.15])
    assert anchored["temperature (unstructured)"] == ([0.1], [0.4])
    assert anchored["trained (small)"] == ([0.08], [0.05])
    assert panels["latent"]["trained (small)"] == ([0.08], [0.3])
    assert panels["latent"]["logit-noise (anchor)"] == ([0.01, 0.1], [0.02, 0.25])


def test_the_figure_draws_both_bounds_of_the_anchor_worlds_logit_noise_lms_only_where_they_exist(drawn):
    panels, legend = drawn
    anchored = panels["anchored"]
    assert anchored["bound markov (logit-noise, anchor)"] == ([0.01, 0.1], [0.3, 0.6])
    assert anchored["bound per-context (logit-noise, anchor)"] == ([0.01, 0.1], [0.25, 0.5])
    assert not any(label.startswith("bound") for label in panels["latent"])  # a readout has no bound: no entry
    # one legend for every panel's lines: the bounds drawn on the first panel are in it
    assert {"bound markov (logit-noise, anchor)", "trained (small)", "temperature (unstructured)"} <= set(legend)
    e, ref = anchored["0.3√ε"]
    np.testing.assert_allclose(ref, 0.3 * np.sqrt(e), rtol=1e-12)


def test_the_command_writes_the_summary_of_the_sweeps_rows_and_its_figure_where_asked(tmp_path, monkeypatch):
    """The sweep replaced by one that hands its ``after`` the rows and errors: anchors.json is the constructions of
    the quick config, the summary of those rows and their errors, and the figure goes to ``--figure``."""
    rows, errors = _figure_rows(), [{"cell": "x", "error": "boom"}]
    seen = {}

    def sweep(config, out, *, progress, log, after):
        seen["worlds"] = [w.name if hasattr(w, "name") else w["name"] for w in config.worlds]
        after({"rows": rows, "errors": errors})

    monkeypatch.setattr(anchors, "run_sweep", sweep)
    monkeypatch.setattr(anchors, "constructions", lambda raw: {"worlds": [w["name"] for w in raw["worlds"]]})
    png = tmp_path / "fig" / "f.png"
    summary = anchors.command(["--quick", "--out", str(tmp_path / "out"), "--figure", str(png)])
    assert seen["worlds"] == ["anchor", "unstructured"]
    want = {"constructions": {"worlds": ["anchor", "unstructured"]}, **anchors.summarise(rows), "errors": errors}
    assert summary == want
    assert json.loads((tmp_path / "out" / "anchors.json").read_text()) == json.loads(json.dumps(want))
    assert png.stat().st_size > 0 and not (tmp_path / "out" / "anchors.png").exists()


# ---- block_fits: each block of a causal transformer read through its output layer ------------------------

@pytest.fixture(scope="module")
def tiny_transformer():
    """A 2-block causal transformer (d_model 8), untrained, on 6 × 5 tokens of a small anchor world."""
    from simlm.models.transformer import TransformerConfig, TransformerLM, init_transformer
    from simlm.worlds import LogLinearWorld

    world = LogLinearWorld.random(0, n_states=8, n_symbols=6, dim=3, n_carriers=2, carrier_gap=8.0)
    tokens = np.asarray(world.sample(0, 6, 5))
    config = TransformerConfig(n_symbols=6, d_model=8, n_layers=2, n_heads=2, max_len=8)
    lm = TransformerLM(init_transformer(config, 0))
    ctx = anchor_contexts(world, tokens)
    return world, tokens, lm, ctx, bulk_mask(ctx.logp, top_k=2)


def test_block_fits_fit_each_blocks_final_layer_norm_through_the_unembedding(tiny_transformer):
    """Features LayerNorm_final(h_ℓ) (numpy, float64: (h − mean)/√(var + ε)·scale + bias) for the embeddings and each
    block, logits features·Φ, and the anchor fit by least squares: L + 1 fits in the order of the blocks, the last
    on the LM's own features (reading h_ℓ without the norm, or one block off, gives other numbers).  The features
    lie on a hyperplane (LayerNorm's output less its bias sums to 0 over scale), so the design (f, 1) has a null
    direction, exact here in float64 and dropped by numpy's cut-off, at float32 rounding there and dropped by the
    fit's: the fitted values agree to float32 rounding."""
    from simlm.experiments.checks_anchors import block_fits

    _, tokens, lm, ctx, bulk = tiny_transformer
    fits = block_fits(lm, tokens, bulk, ctx.weights)
    norm = lm.model.final_norm
    scale, bias = np.asarray(norm.scale[...], np.float64), np.asarray(norm.bias[...], np.float64)
    phi = np.asarray(lm.unembedding, np.float64)
    hidden = [np.asarray(h, np.float64).reshape(-1, phi.shape[0]) for h in lm.hidden_states(tokens)]
    assert len(fits) == len(hidden) == 3
    r2s = []
    for h, fit in zip(hidden, fits):
        f = (h - h.mean(1, keepdims=True)) / np.sqrt(h.var(1, keepdims=True) + norm.epsilon) * scale + bias
        mse, r2, top, var, _ = _brute_fit(f @ phi, f, bulk, ctx.weights)
        assert fit.mse == pytest.approx(mse, rel=1e-4) and fit.constant_mse == pytest.approx(var, rel=1e-5)
        assert fit.r2 == pytest.approx(r2, abs=1e-5) and fit.max_residual == pytest.approx(top, rel=1e-3)
        r2s.append(r2)
    assert min(abs(a - b) for a, b in zip(r2s, r2s[1:])) > 1e-3  # the blocks' fits tell apart
    own = np.asarray(lm.features(tokens), np.float64).reshape(-1, phi.shape[0])
    np.testing.assert_allclose(f, own, atol=1e-5)  # the last block's features are the LM's own, to float32 rounding
