"""Bad input to the theory layer (natural tasks, the log-partition view, head/prompt conditions): every case
raises a typed simlm error whose message names the argument, before any number is computed — never a raw
numpy/scipy error, never a silent NaN or a result computed from a wrong input."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simlm.errors import ConfigError, DistributionError, ShapeError, SimlmError, TokenError
from simlm.models.finite import SoftmaxContextLM
from simlm.theory import head_prompt as hp
from simlm.theory import log_partition as lp
from simlm.theory import natural_tasks as nt
from simlm.worlds import HMM, LogLinearWorld, MemoryHMM
from simlm.worlds.contexts import enumerate_contexts

WORLD = LogLinearWorld.random(0, 3, 4, 3)
C = enumerate_contexts(WORLD, 2)
S, V = C.next_token_probs.shape
P = C.next_token_probs
PHI = np.asarray(WORLD.word_embeddings, np.float64)
TASK = nt.random_natural_task(C, 0)
LM = SoftmaxContextLM(np.random.default_rng(0).standard_normal((S, PHI.shape[0])), PHI)
OTHER = enumerate_contexts(LogLinearWorld.random(1, 3, 4, 3), 2)  # same V and L, other laws
HMM3 = HMM.random(0, 3, 4)
MU = np.array([1.0, -1.0, 0.0])
TOKENS = np.asarray(HMM3.sample(0, 8, 5))


def check(**kw):
    return nt.check_natural_task(C, kw.pop("lm", P), kw.pop("task", TASK), **kw)


CASES = [
    # check_natural_task: the cases first
    ("atol=nan", lambda: check(atol=float("nan")), ConfigError, "atol"),
    ("atol<0", lambda: check(atol=-1e-3), ConfigError, "atol"),
    ("atol=str", lambda: check(atol="abc"), ConfigError, "atol"),
    ("atol=bool", lambda: check(atol=True), ConfigError, "atol"),
    ("world=list", lambda: nt.check_natural_task([1, 2, 3], P, TASK), ConfigError, "world_or_contexts"),
    ("world=None", lambda: nt.check_natural_task(None, P, TASK), ConfigError, "world_or_contexts"),
    ("B_grid=[]", lambda: check(B_grid=[]), ConfigError, "B_grid"),
    ("B_grid 2-d", lambda: check(B_grid=[[1.0, 2.0]]), ConfigError, "B_grid"),
    ("B_grid str", lambda: check(B_grid=["a"]), ConfigError, "B_grid"),
    ("B_grid bool", lambda: check(B_grid=True), ConfigError, "B_grid"),
    ("B_grid<0", lambda: check(B_grid=[1.0, -1.0]), ConfigError, "B_grid"),
    ("B_grid complex", lambda: check(B_grid=[1 + 1j]), ConfigError, "B_grid"),
    ("B2_grid nan", lambda: check(lm=LM, B2_grid=[float("nan")]), ConfigError, "B2_grid"),
    ("Phi NaN", lambda: check(Phi=np.full_like(PHI, np.nan), features=LM.theta), ConfigError, "Phi"),
    ("Phi complex", lambda: check(Phi=PHI + 1j, features=LM.theta), ConfigError, "Phi"),
    ("Phi str", lambda: check(Phi="abc", features=LM.theta), ConfigError, "Phi"),
    ("Phi shape", lambda: check(Phi=PHI[:, :2], features=LM.theta), ShapeError, "Phi"),
    ("Phi ≠ lm.phi", lambda: check(lm=LM, Phi=PHI + 1), ConfigError, "Phi"),
    ("features NaN", lambda: check(Phi=PHI, features=np.full_like(LM.theta, np.nan)), ConfigError, "features"),
    ("features shape", lambda: check(Phi=PHI, features=LM.theta[:2]), ShapeError, "features"),
    ("forms=str", lambda: check(forms="abc"), ConfigError, "forms"),
    ("forms unknown", lambda: check(forms={"bogus": nt.bound_any_lm}), ConfigError, "forms"),
    ("forms not callable", lambda: check(forms={"any-lm": 3}), ConfigError, "forms"),
    ("forms → NaN", lambda: check(forms={"any-lm": lambda *a: float("nan")}), ConfigError, "forms"),
    ("forms → str", lambda: check(forms={"any-lm": lambda *a: "x"}), ConfigError, "forms"),
    ("tau_cache=list", lambda: check(tau_cache=[]), ConfigError, "tau_cache"),
    ("l2<0", lambda: check(l2=-1.0), ConfigError, "l2"),
    ("lm=None", lambda: check(lm=None), ConfigError, "lm"),
    ("lm laws NaN", lambda: check(lm=np.full_like(P, np.nan)), DistributionError, "lm"),
    ("lm laws ×2", lambda: check(lm=2 * P), DistributionError, "lm"),
    ("lm laws complex", lambda: check(lm=P + 0j), DistributionError, "lm"),
    ("lm laws shape", lambda: check(lm=P[:3]), ShapeError, "lm"),
    ("lm wrong size", lambda: check(lm=SoftmaxContextLM(np.zeros((2, PHI.shape[0])), PHI)), ShapeError, "lm"),
    ("task=None", lambda: check(task=None), ConfigError, "task"),
    ("task of other contexts", lambda: nt.check_natural_task(OTHER, P, TASK), ConfigError, "task"),
    ("task of a MemoryHMM's contexts", lambda: nt.check_natural_task(MemoryHMM.random(0, 1, 2, 2, 4), P, TASK),
     ConfigError, "task"),
    # natural_task, random_natural_task
    ("contexts=None", lambda: nt.natural_task(None, np.ones(V), 0.0), ConfigError, "contexts"),
    ("v str", lambda: nt.natural_task(C, "abcd", 0.0), ConfigError, r"\bv\b"),
    ("v complex", lambda: nt.natural_task(C, np.ones(V) + 1j, 0.0), ConfigError, r"\bv\b"),
    ("v NaN", lambda: nt.natural_task(C, np.full(V, np.nan), 0.0), ConfigError, r"\bv\b"),
    ("v shape", lambda: nt.natural_task(C, np.ones(V + 1), 0.0), ShapeError, r"\bv\b"),
    ("b None", lambda: nt.natural_task(C, np.ones(V), None), ConfigError, r"\bb\b"),
    ("b complex", lambda: nt.natural_task(C, np.ones(V), 1j), ConfigError, r"\bb\b"),
    ("b bool", lambda: nt.natural_task(C, np.ones(V), True), ConfigError, r"\bb\b"),
    ("b empty", lambda: nt.natural_task(C, np.ones(V), np.zeros(0)), ConfigError, r"\bb\b"),
    ("noise list", lambda: nt.natural_task(C, np.ones(V), 0.0, noise=["sign"]), ConfigError, "noise"),
    ("noise empty array", lambda: nt.natural_task(C, np.ones(V), 0.0, noise=np.zeros(0)), ConfigError, "noise"),
    ("prompt empty", lambda: nt.natural_task(C, np.ones(V), 0.0, prompt=()), TokenError, "prompt"),
    ("prompt float", lambda: nt.natural_task(C, np.ones(V), 0.0, prompt=[0.5]), TokenError, "prompt"),
    ("prompt id ≥ V", lambda: nt.natural_task(C, np.ones(V), 0.0, prompt=[V]), TokenError, "prompt"),
    ("prompt too long", lambda: nt.natural_task(C, np.ones(V), 0.0, prompt=(0, 0, 0, 0)), ConfigError, "prompt"),
    ("weights complex", lambda: nt.natural_task(C, np.ones(V), 0.0, weights=np.ones(S) + 1j), ConfigError, "weights"),
    ("weights str", lambda: nt.natural_task(C, np.ones(V), 0.0, weights="abc"), ConfigError, "weights"),
    ("weights < 0", lambda: nt.natural_task(C, np.ones(V), 0.0, weights=-np.ones(S)), ConfigError, "weights"),
    ("seed < 0", lambda: nt.random_natural_task(C, -1), ConfigError, "seed"),
    ("scale nan", lambda: nt.random_natural_task(C, 0, scale=float("nan")), ConfigError, "scale"),
    # ε, KL, γ, τ, the bound forms
    ("lm_epsilon contexts", lambda: nt.lm_epsilon(None, P), ConfigError, "contexts"),
    ("lm_epsilon laws None", lambda: nt.lm_epsilon(C, None), SimlmError, "laws"),
    ("lm_epsilon laws ×2", lambda: nt.lm_epsilon(C, 2 * P), DistributionError, "laws"),
    ("lm_epsilon laws + .5", lambda: nt.lm_epsilon(C, P + 0.5), DistributionError, "laws"),
    ("lm_epsilon laws < 0", lambda: nt.lm_epsilon(C, P - 0.5), DistributionError, "laws"),
    ("lm_epsilon laws NaN", lambda: nt.lm_epsilon(C, np.full_like(P, np.nan)), DistributionError, "laws"),
    ("lm_epsilon one law", lambda: nt.lm_epsilon(C, P[0]), ShapeError, "laws"),
    ("softmax_excess theta", lambda: nt.softmax_excess("abc", PHI, P), ConfigError, "theta"),
    ("softmax_excess shapes", lambda: nt.softmax_excess(LM.theta[:2], PHI, P), ShapeError, "theta"),
    ("quad_epsilon f", lambda: nt.quad_epsilon(C, None, PHI), ConfigError, r"\bf\b"),
    ("quad_epsilon f shape", lambda: nt.quad_epsilon(C, LM.theta[:2], PHI), ShapeError, r"\bf\b"),
    ("quad_epsilon phi", lambda: nt.quad_epsilon(C, LM.theta, 3.0), ShapeError, "phi"),
    ("gamma p_T None", lambda: nt.gamma(TASK.weights, None), SimlmError, "p_T"),
    ("gamma p_T huge", lambda: nt.gamma(TASK.weights, 10**12), SimlmError, "p_T"),
    ("gamma p_T shape", lambda: nt.gamma(TASK.weights, TASK.weights[:3] / TASK.weights[:3].sum()), ShapeError,
     "p_T"),
    ("gamma_phi delta", lambda: nt.gamma_phi(TASK.weights, TASK.weights, np.ones(3)), ShapeError, "delta"),
    ("tau norm", lambda: nt.tau(C, TASK, norm=np.zeros(0)), ConfigError, "norm"),
    ("tau Phi", lambda: nt.tau(C, TASK, Phi={"a": 1}), ConfigError, "Phi"),
    ("tau B_grid", lambda: nt.tau(C, TASK, B_grid=[]), ConfigError, "B_grid"),
    ("bound tau nan", lambda: nt.bound_any_lm(float("nan"), 1.0, 0.1, 0.5), ConfigError, "tau"),
    ("bound tau complex", lambda: nt.bound_any_lm(1j, 1.0, 0.1, 0.5), ConfigError, "tau"),
    ("bound B < 0", lambda: nt.bound_any_lm(0.1, -1.0, 0.1, 0.5), ConfigError, r"\bB\b"),
    ("bound B None", lambda: nt.bound_quad(0.1, None, 0.1, 0.5), ConfigError, r"\bB\b"),
    ("bound eps < 0", lambda: nt.bound_any_lm(0.1, 1.0, -0.1, 0.5), ConfigError, "eps"),
    ("bound eps str", lambda: nt.bound_any_lm(0.1, 1.0, "x", 0.5), ConfigError, "eps"),
    ("bound gamma nan", lambda: nt.bound_softmax(0.1, 1.0, 0.1, float("nan")), ConfigError, "gamma"),
    ("bound ε = γ = ∞", lambda: nt.bound_softmax(0.1, 1.0, math.inf, math.inf), ConfigError, "eps, gamma"),
    # the log-partition view
    ("fit theta NaN", lambda: lp.log_partition_fit(np.full_like(LM.theta, np.nan), PHI), ConfigError, "theta"),
    ("fit theta complex", lambda: lp.log_partition_fit(LM.theta + 1j, PHI), ConfigError, "theta"),
    ("fit phi NaN", lambda: lp.log_partition_fit(LM.theta, np.full_like(PHI, np.nan)), ConfigError, "phi"),
    ("fit theta empty", lambda: lp.log_partition_fit(np.zeros((0, PHI.shape[0])), PHI), ShapeError, "theta"),
    ("fit theta overflows", lambda: lp.log_partition_fit(np.asarray(LM.theta, np.float64) * 1e200, PHI), ConfigError, "theta"),
    # a design of n × (d(d+1)/2 + d + 1) float64 (1.4 TB here) was a raw MemoryError from numpy
    ("fit design too large", lambda: lp.log_partition_fit(np.broadcast_to(np.zeros(4096), (20000, 4096)),
                                                          np.zeros((4096, 3))),
     ConfigError, "theta: this request needs"),
    ("probes task None", lambda: lp.compare_probes(C, None, LM.theta, PHI), ConfigError, "task"),
    ("probes task other", lambda: lp.compare_probes(OTHER, TASK, LM.theta, PHI), ConfigError, "task"),
    ("probes f str", lambda: lp.compare_probes(C, TASK, "abc", PHI), ConfigError, r"\bf\b"),
    ("probes f overflows", lambda: lp.compare_probes(C, TASK, np.asarray(LM.theta, np.float64) * 1e39, PHI),
     ConfigError, r"^f: the logits"),
    ("probes f rows", lambda: lp.compare_probes(C, TASK, np.vstack([LM.theta, LM.theta[:1]]), PHI), ShapeError,
     r"^f, phi: expected a row of f per context"),
    ("probes f width", lambda: lp.compare_probes(C, TASK, np.ones((S, PHI.shape[0] + 1)), PHI), ShapeError,
     r"^f: has d = "),
    ("embeddings dim huge", lambda: lp.random_embeddings(0, 10**12, 4), ConfigError, "dim"),
    ("embeddings clusters huge", lambda: lp.random_embeddings(0, 3, 4, "clustered", n_clusters=10**12), ConfigError,
     "n_clusters"),
    ("embeddings geometry", lambda: lp.random_embeddings(0, 3, 4, np.zeros(0)), ConfigError, "geometry"),
    # head/prompt conditions
    ("mu complex", lambda: hp.head_realisability(HMM3, MU + 1j), ConfigError, "mu"),
    ("mu str", lambda: hp.support_rank(HMM3, np.array(["a", "b", "c"])), ConfigError, "mu"),
    ("mu NaN", lambda: hp.prompt_feasibility(HMM3, np.full(3, np.nan)), ConfigError, "mu"),
    ("mu shape", lambda: hp.head_realisability(HMM3, np.ones(4)), ShapeError, "mu"),
    ("world None", lambda: hp.emission_rank(None), ConfigError, "world"),
    ("memory_rank of an HMM", lambda: hp.memory_rank(HMM3), ConfigError, "world"),
    ("k = 0", lambda: hp.prompt_feasibility(HMM3, MU, k=0), ConfigError, r"\bk\b"),
    ("b NaN", lambda: hp.verify_head(HMM3, MU, np.full(4, np.nan), TOKENS), ConfigError, r"\bb\b"),
    ("b complex", lambda: hp.verify_head(HMM3, MU, np.ones(4) + 1j, TOKENS), ConfigError, r"\bb\b"),
    ("b str", lambda: hp.verify_head(HMM3, MU, "abcd", TOKENS), ConfigError, r"\bb\b"),
    ("certificate features shape", lambda: hp.failure_certificate(HMM3, MU, TOKENS, features=lambda t: np.zeros((3, 2))),
     ShapeError, "features"),
    ("certificate features NaN", lambda: hp.failure_certificate(
        HMM3, MU, TOKENS, features=lambda t: np.full((len(t), 2), np.nan)), ConfigError, "features"),
    ("certificate labels shape", lambda: hp.failure_certificate(HMM3, np.ones(3, bool), TOKENS), ShapeError,
     "mu_or_labels"),
    # 0/1 integers of length K = 3 would be read as μ = (1, 0, 1): every input labelled 1, no pair found
    ("certificate integer labels", lambda: hp.failure_certificate(HMM3, np.array([1, 0, 1]), TOKENS), ConfigError,
     "mu_or_labels"),
    # as floats too (a review, 2026-12-06: read silently as μ = (1, 0, 1) when n = K)
    ("certificate float labels", lambda: hp.failure_certificate(HMM3, np.array([1., 0., 1.]), TOKENS), ConfigError,
     "mu_or_labels"),
    ("mu bool", lambda: hp.verify_head(HMM3, np.array([True, False, True]), np.ones(4), TOKENS), ConfigError, "mu"),
]


@pytest.mark.parametrize("label, call, error, name", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_typed_error_naming_the_argument(label, call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_a_bad_prompt_is_named_before_any_posterior_is_computed(monkeypatch):
    """verify_prompt computed (and compiled) P(H_0 | x) before it read U: a bad U was named seconds later, and
    behind an impossible input it was blamed on the tokens (a review, 2026-12-06)."""
    def never(*args):
        raise AssertionError("a posterior was computed before U was checked")
    monkeypatch.setattr(hp, "state_posterior0", never)
    monkeypatch.setattr(hp, "_posterior_where_defined", never)
    with pytest.raises(ShapeError, match="^U: "):
        hp.verify_prompt(HMM3, MU, np.ones(4), np.zeros(4), TOKENS)


def test_the_counted_rank_and_its_margin_agree_at_the_threshold():
    """σ_i > tol·σ_max and σ_min/σ_max − tol > 0 rounded apart at tol = σ_min/σ_max (9346 of 200k draws):
    full_row_rank True beside a margin of 0.0 (a review, 2026-12-06).  Both now divide by σ_max."""
    rng = np.random.default_rng(0)
    for _ in range(20000):
        s = np.sort(rng.random(3))[::-1]
        for tol in (s[-1] / s[0], np.nextafter(s[-1] / s[0], 0), np.nextafter(s[-1] / s[0], 1)):
            assert hp._counted(s, tol).all() == (hp._rank_margin(s, tol) > 0)


def test_check_natural_task_with_atol_nan_no_longer_reports_every_bound_violated():
    """The issue's silent wrong result: NaN tolerance made `holds` False everywhere."""
    with pytest.raises(ConfigError, match="atol: expected a finite"):
        check(atol=float("nan"))
    assert check(atol=1e-7).holds and check(atol=0.0).atol == 0.0


def test_unreachable_calibration_does_not_hide_behind_a_clamp():
    """ε of laws that do not normalise is an error naming the row, not the clamped KL 0."""
    with pytest.raises(DistributionError, match=r"laws row 0 sums to 2"):
        nt.lm_epsilon(C, 2 * P)
    assert nt.lm_epsilon(C, P) == pytest.approx(0.0, abs=1e-12)


def _hostile():
    return st.one_of(st.none(), st.text(max_size=3), st.booleans(), st.complex_numbers(allow_nan=False),
                     st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10), st.lists(st.floats(), max_size=2))


@given(tau=_hostile(), B=_hostile(), eps=_hostile(), gamma=_hostile())
def test_a_bound_form_returns_a_real_number_or_names_the_bad_argument(tau, B, eps, gamma):
    """τ finite, B finite ≥ 0, ε and γ in [0, ∞] (not both ∞) give a real bound ≥ τ; anything else raises
    a ConfigError naming one of the four arguments."""
    def real(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    valid = (real(tau) and math.isfinite(tau) and real(B) and math.isfinite(B) and B >= 0 and real(eps) and eps >= 0
             and real(gamma) and gamma >= 0 and not (math.isinf(eps) and math.isinf(gamma)))
    for form in (nt.bound_any_lm, nt.bound_softmax, nt.bound_quad):
        if valid:
            value = form(tau, B, eps, gamma)
            assert not math.isnan(value) and value >= tau
        else:
            with pytest.raises(ConfigError, match=r"^(tau|B|eps|gamma|eps, gamma):"):
                form(tau, B, eps, gamma)


@given(v=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=V, max_size=V),
       b=st.floats(allow_nan=True, allow_infinity=True))
def test_natural_task_accepts_finite_margins_and_names_v_or_b_otherwise(v, b):
    if all(map(math.isfinite, v)) and math.isfinite(b):
        task = nt.natural_task(C, v, b)
        assert np.all((task.label_probs == 0) | (task.label_probs == 1))
    else:
        with pytest.raises(ConfigError, match=r"^(v|b):"):
            nt.natural_task(C, v, b)


def test_the_certificates_features_are_checked_before_the_posterior_is_computed(monkeypatch):
    """``features="bogus"`` was refused after the compiled forward–backward (six compiles) had run."""
    monkeypatch.setattr(hp, "state_posterior0", lambda *a: pytest.fail("the posterior ran before the check"))
    with pytest.raises(ConfigError, match="features: expected 'masked' or a callable"):
        hp.failure_certificate(HMM3, MU, TOKENS, features="bogus")
