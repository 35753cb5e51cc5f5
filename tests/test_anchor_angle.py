"""anchor_fit's angle against a float64 brute force (a mutation review, 2026-12-07).

The angle (degrees) is between v0 and the planted anchor after projecting both on the span of the centred
features.  Brute force: that span is the row space of fc = f − π·f (numpy SVD with a plain rank cut); the
projection of v0 on it is the minimum-norm weighted least-squares coefficient of log Z_B on fc (unique:
the fitted values are), and the planted anchor's is P p.  Before this test, the angle in radians
(≈0.13 instead of 7.6), no projection at all, the projection on the whole of R^d, and a projection basis
left in the scaled units all passed every test: the only checks were 0 ≤ angle < 90, a median ≤ 12 and
a largest ≤ 30 over seeds, and equality with another anchor_fit call."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlm.theory.anchors import anchor_fit


def _lse(z, mask):
    z = np.where(mask, z, -np.inf)
    t = z.max(1, keepdims=True)
    return (t + np.log(np.exp(z - t).sum(1, keepdims=True)))[:, 0]


def _brute_angle(z, f, bulk, w, p):
    y = _lse(z, bulk)
    fc = f - w @ f
    yc = y - w @ y
    sw = np.sqrt(w)[:, None]
    U, s, Vt = np.linalg.svd(sw * fc, full_matrices=False)
    keep = s > 1e-10 * s.max()
    basis = Vt[keep].T  # (d, r): orthonormal basis of the row space of fc
    a = basis.T @ np.linalg.lstsq(sw * fc, sw[:, 0] * yc, rcond=1e-10)[0]
    b = basis.T @ p
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


@settings(deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 3), st.booleans())
def test_the_angle_is_that_of_the_projections_on_the_span_of_the_centred_features(seed, rank, scaled):
    rng = np.random.default_rng(seed)
    n, d, V = 9, 3, 6
    g = rng.normal(size=(n, rank))
    f = g @ rng.normal(size=(rank, d)) + rng.normal(size=d)  # rank < d: a direction in which f does not vary
    if scaled:  # columns of very different units: the projection basis must be back in f's units
        f = f * np.array([1e-3, 1.0, 30.0])
    planted = rng.normal(size=d)
    z = f @ (rng.normal(size=(d, V)) + planted[:, None]) + 0.3 * rng.normal(size=(n, V))
    bulk = rng.random((n, V)) < 0.6
    bulk[:, 0] = True
    w = rng.dirichlet(np.ones(n)) + 0.02
    w /= w.sum()
    fit = anchor_fit(z, f, bulk, w, planted=planted)
    want = _brute_angle(z, f, bulk, w, planted)
    assert fit.angle is not None
    # compare cosines (arccos near 0° magnifies rounding) and the angles themselves to 1e-6 degrees away from 0
    assert abs(math.cos(math.radians(fit.angle)) - math.cos(math.radians(want))) < 1e-9, (fit.angle, want)
    assert abs(fit.angle - want) < 1e-4 * max(1.0, want), (fit.angle, want)


def _plane_world(seed=3):
    rng = np.random.default_rng(seed)
    n, d, V = 8, 3, 5
    A = rng.normal(size=(2, d))
    normal = np.cross(A[0], A[1])
    f = rng.normal(size=(n, 2)) @ A + 0.7  # f varies in a plane that is no coordinate plane
    z = f @ rng.normal(size=(d, V)) + 0.3 * rng.normal(size=(n, V))
    bulk = np.ones((n, V), bool)
    bulk[:, 0] = False
    return rng, f, z, bulk, normal / np.linalg.norm(normal)


def test_a_planted_anchor_normal_to_the_span_of_the_features_has_no_angle():
    """Its projection is rounding (~1e-17), not a direction: None.  Counting any non-zero projection read
    72.2° here (seed 3)."""
    _, f, z, bulk, normal = _plane_world()
    assert anchor_fit(z, f, bulk, planted=normal).angle is None
    assert anchor_fit(z, f, bulk, planted=normal + 1e-3 * f[1]).angle is not None  # a real component counts


def test_a_context_of_weight_0_does_not_move_the_angle():
    """A weight-0 row varying along the plane's normal is invisible to the fit; the span it is projected on
    must not grow by it (unweighted SVD: 159.32° → 163.67°, seed 3)."""
    rng, f, z, bulk, normal = _plane_world()
    p = rng.normal(size=3)
    n, V = z.shape
    w = np.full(n, 1.0 / n)
    want = anchor_fit(z, f, bulk, w, planted=p).angle
    got = anchor_fit(np.vstack([z, rng.normal(size=(1, V))]), np.vstack([f, f[0] + 5 * normal]),
                     np.vstack([bulk, bulk[:1]]), np.append(w, 0.0), planted=p).angle
    assert got == pytest.approx(want, abs=1e-6)
    assert want == pytest.approx(_brute_angle(z, f, bulk, w, p), abs=1e-6)
