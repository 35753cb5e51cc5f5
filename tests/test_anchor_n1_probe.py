"""N1's probe_error is a probe on the LM's representation f* (the task coordinate t removed; a mutation review,
2026-12-07).  A probe on the augmented world's features (t included) reads the task perfectly: error 0.0 where
the LM's probe errs 0.46, 0.44, 0.51 (128 states, d = 3, seeds 0–2, n_label = 64) — and no test read N1's
probe_error (only its weighted-vs-replicated equality, which a wrong input keeps).  N1 also passed ``n_label``
on unread: a probe fitted on 64 labels whatever was asked passed every test."""

from __future__ import annotations

import pytest

from simlm.theory.anchor_constructions import n1_construction
from simlm.theory.anchors import anchor_contexts, probe_error
from simlm.worlds import LogLinearWorld


@pytest.mark.parametrize("seed, n_label", [(0, 64), (1, 16), (2, 40)])
def test_n1s_probe_cannot_read_a_random_half_of_many_states_from_few_dimensions(seed, n_label):
    ctx = anchor_contexts(LogLinearWorld.random(seed, n_states=128, n_symbols=6, dim=3))
    n1 = n1_construction(ctx, seed, n_label=n_label)
    assert n1.probe_error == probe_error(ctx.features, n1.labels, ctx.weights, n_label=n_label, seed=seed)
    assert n1.probe_error >= 0.3  # module docstring: a random π-half of many states is not linearly separable
