"""The shared argument checks of simlm.checks: what each accepts, and that a refusal names the argument."""

from __future__ import annotations

import math

import numpy as np
import pytest

import simlm.experiments.checks as builtin_checks
from bruteforce import sequence_prob
from simlm.checks import (as_tuple, check_distributions, check_memory, check_non_negative, check_positive_int,
                          check_stochastic, mean_and_sem)
from simlm.errors import ConfigError, DistributionError, ShapeError
from simlm.experiments.registry import Cell
from simlm.theory.head_prompt import chain64
from simlm.worlds import HMM
from simlm.worlds.contexts import enumerate_contexts


@pytest.mark.parametrize("value", [0, 0.0, 2, 1e300, np.float32(0.5), np.int64(3), math.inf])
def test_check_non_negative_takes_numbers_from_zero_to_infinity(value):
    assert check_non_negative("eps", value) == float(value)


@pytest.mark.parametrize("value", [-1e-300, math.nan, -math.inf, True, "1", 1j, None, [1.0]])
def test_check_non_negative_refuses_the_rest_and_names_the_argument(value):
    with pytest.raises(ConfigError, match=r"^gamma: expected a number ≥ 0 \(\+inf allowed\)"):
        check_non_negative("gamma", value)


def test_check_non_negative_finite_is_zero_or_a_positive_finite_number():
    assert check_non_negative("l2", 0, finite=True) == 0.0
    assert check_non_negative("l2", 1e-4, finite=True) == 1e-4
    for bad in (math.inf, -1.0, math.nan, False):
        with pytest.raises(ConfigError, match=r"^l2: expected a finite number ≥ 0"):
            check_non_negative("l2", bad, finite=True)


def test_check_distributions_returns_float64_rows_within_the_tolerance():
    rows = check_distributions("laws", [[0.25, 0.75], [1.0, 1e-6]])
    assert rows.dtype == np.float64 and rows.shape == (2, 2)
    with pytest.raises(DistributionError, match=r"^laws row 1 sums to 1\.001"):
        check_distributions("laws", [[0.5, 0.5], [1.0, 1e-3]])


@pytest.mark.parametrize("check, atol, kw", [(check_distributions, 1e-5, {}), (check_stochastic, 1e-6, {}),
                                             (check_distributions, 1e-3, {"atol": 1e-3}),
                                             (check_stochastic, 1e-8, {"atol": 1e-8})])
def test_a_row_is_refused_exactly_when_its_sum_is_off_by_more_than_atol(check, atol, kw):
    """|Σ p − 1| ≤ atol passes (at 1 + atol/2) and more is refused (at 1 + 5·atol), naming the argument, at
    the defaults (1e-5 and 1e-6) and at a given atol: a refusal only past 10·atol let 1.00005 through
    check_distributions' default 1e-5."""
    ok = check("p", [[0.25, 0.75 + 0.5 * atol]], **kw)
    assert ok.sum() == pytest.approx(1 + 0.5 * atol, abs=1e-15)
    with pytest.raises(DistributionError, match=rf"^p row 0 sums to .*, expected 1 within {atol:g}$"):
        check("p", [[0.25, 0.75 + 5 * atol]], **kw)


@pytest.mark.parametrize("value, error", [([[0.5, 0.5], [1.0]], ShapeError), ([[0.5, np.nan]], DistributionError),
                                          ([[1.5, -0.5]], DistributionError), ([[0.5j, 0.5]], DistributionError),
                                          (5.0, ShapeError), ([[True, False]], DistributionError),
                                          (np.array([[True, False]]), DistributionError)])
def test_check_distributions_names_the_argument(value, error):
    with pytest.raises(error, match="^p_T"):
        check_distributions("p_T", value)


def test_check_positive_int_has_an_optional_maximum():
    assert check_positive_int("seed", 2**63 - 1, minimum=0, maximum=2**63 - 1) == 2**63 - 1
    with pytest.raises(ConfigError, match=r"^seed: expected an integer ≤ 7, got 8"):
        check_positive_int("seed", 8, minimum=0, maximum=7)
    with pytest.raises(ConfigError, match=r"^seed: expected an integer ≥ 0"):
        check_positive_int("seed", -1, minimum=0, maximum=7)


def test_as_tuple_makes_one_value_or_a_flat_list_a_tuple():
    assert as_tuple("targets", 0.1) == (0.1,)
    assert as_tuple("targets", [0.3, 0.1]) == (0.3, 0.1)
    assert as_tuple("targets", np.array([1, 2])) == (1, 2)
    assert as_tuple("worlds", "hmm", single=(str,)) == ("hmm",)
    for bad in ("hmm", True, None, {"a": 1}, np.ones((2, 2))):
        with pytest.raises(ConfigError, match="^targets: expected one value or a list of them"):
            as_tuple("targets", bad)


def test_a_check_module_imported_anew_registers_again_but_two_functions_under_one_name_are_refused():
    from simlm.errors import ConfigError
    from simlm.experiments.registry import _REGISTRY, register

    def run(cell):
        return []

    try:
        register("test/reimported", paper="p", description="d")(run)
        register("test/reimported", paper="p", description="d")(run)  # a reload: the same function again

        def other(cell):
            return []

        with pytest.raises(ConfigError, match="'test/reimported' is registered twice"):
            register("test/reimported", paper="p", description="d")(other)
    finally:
        _REGISTRY.pop("test/reimported", None)


def test_mean_and_sem_is_the_mean_and_the_sample_standard_deviation_over_root_n():
    """ddof = 1, as documented: [0, 1] has sample variance ½ and standard error √(½/2) = ½ (ddof = 0: 0.354)."""
    assert mean_and_sem([0, 1]) == pytest.approx((0.5, 0.5), abs=1e-15)
    values = [1.0, 2.0, 4.0, 7.0]  # mean 3.5, Σ(x − mean)² = 21, sample variance 21/3 = 7
    assert mean_and_sem(np.array(values)) == pytest.approx((3.5, math.sqrt(7 / 4)), rel=1e-15)
    with pytest.raises(ConfigError, match="^losses: a standard error over sequences needs at least 2"):
        mean_and_sem([1.0], name="losses")


def test_mean_and_sem_refuses_anything_but_one_value_per_sequence():
    """An (n, T) array was flattened into n·T "sequences" (a standard error per token); a ragged or complex
    one raised numpy's raw error.  NaN is the caller's to judge (the trainer reports divergence)."""
    for bad, words in [(np.ones((2, 3)), r"one value per sequence, shape \(n,\), got shape \(2, 3\)"),
                       ([[1, 2], [3]], "one real value"), ([1 + 1j, 2], "one real value")]:
        with pytest.raises(ConfigError, match=f"^eps: expected {words}"):
            mean_and_sem(bad, name="eps")
    assert math.isnan(mean_and_sem([1.0, math.nan])[0])


@pytest.mark.parametrize("bad, words", [
    (["0.5", "0.5"], "got dtype <U3"), ([[0.5, "a"], [0.5, 0.5]], "got dtype <U32"),
    (np.array([0.5, "0.5"], dtype=object), "holding strings"),
    ([[True, False], [False, True]], "got booleans"), ([True, 0.0], "got booleans"),
    ([[0.5, 0.5], [0.0, True]], "got booleans"),
    (np.array([1, 0], dtype=object) == 1, "got booleans"), ([0.5, 0.5j], "complex"),
])
def test_check_stochastic_refuses_what_a_cast_to_float_would_read_silently(bad, words):
    """Strings parsed as numbers and booleans read as probability 1 were laws to every caller but the worlds
    (which refused them themselves): context_kl took [['0.5', '0.5'], ['1', '0']] for p*."""
    with pytest.raises(DistributionError, match=f"^p: .*{words}"):
        check_stochastic("p", bad)


@pytest.mark.parametrize("atol", [math.nan, -1.0, math.inf, True])
def test_check_stochastic_refuses_a_tolerance_that_is_not_a_finite_number_at_least_zero(atol):
    """atol = NaN passed every row (a comparison with NaN is False); atol = −1 refused every row."""
    with pytest.raises(ConfigError, match="^atol: expected a finite number ≥ 0"):
        check_stochastic("p", [0.5, 0.6], atol=atol)


@pytest.mark.parametrize("value", [10**400, np.array(True), np.bool_(True), True])
def test_the_scalar_checks_name_the_argument_for_a_huge_int_or_a_boolean_array(value):
    """10**400 raised a raw OverflowError; a 0-d bool array passed as 1.0."""
    with pytest.raises(ConfigError, match="^x: expected"):
        check_non_negative("x", value)


def test_check_memory_refuses_exactly_the_requests_above_the_limit():
    """3 elements of 4 bytes need 12 B: refused under a limit of 10 or 11 B, stating the size and the limit;
    a request exactly at the limit (12 B) or under it passes."""
    for limit in (10, 11):
        refusal = rf"^x: this request needs 12 B \(three floats\), over the limit of {limit} B"
        with pytest.raises(ConfigError, match=refusal):
            check_memory("x", 3, itemsize=4, limit=limit, what="three floats")
    for limit in (12, 13, 10**6):
        assert check_memory("x", 3, itemsize=4, limit=limit) is None


class _EnumeratedHMM:
    """An HMM's likelihood by enumerating its hidden paths (tests/bruteforce.py): all that enumerating a world's
    contexts needs (``n_symbols`` and ``log_likelihood``), without compiling the world's JAX programs."""

    def __init__(self, hmm):
        self.chain = chain64(hmm)
        self.n_symbols = self.chain[2].shape[1]

    def log_likelihood(self, seqs):
        return np.log([sequence_prob(*self.chain, list(s)) for s in np.asarray(seqs)])


def test_each_natural_task_row_is_at_the_radius_that_minimises_its_bound(monkeypatch):
    """saunshi/natural-task reports each bound's losses at B*, the radius of its grid that minimises the bound
    (the bound's ``index``): a row's ``B`` is that bound's ``B_grid[index]`` and its bound the grid's minimum.
    At a small ε (an LM 1 % of the way to uniform) B* is past the grid's first radius for every bound."""
    world = _EnumeratedHMM(HMM.random(0, 3, 4))
    contexts = enumerate_contexts(world, 1)
    laws = 0.99 * contexts.next_token_probs + 0.01 / world.n_symbols  # the LM's laws, one row per context
    results = []

    def spy(*args, **kwargs):
        results.append(check_natural_task(*args, **kwargs))
        return results[-1]

    check_natural_task = builtin_checks.check_natural_task
    monkeypatch.setattr(builtin_checks, "check_natural_task", spy)
    options = {"max_length": 1, "noise": "logistic", "task_seed": 0, "adversary": "none"}
    rows = builtin_checks.natural_task_check(Cell(world, {}, laws, {}, None, options, 0))
    [result] = results
    assert {b.name for b in result.bounds} == {"any-lm", "well-specified"}
    assert sorted(r["quantity"] for r in rows) == sorted(f"{b.name}:{q}" for b in result.bounds
                                                        for q in ("loss_natural", "loss_best", "worst_B"))
    for b in result.bounds:
        assert b.index > 0 and b.bound[b.index] == np.min(b.bound), b.name
        [worst] = [r for r in rows if r["quantity"] == f"{b.name}:worst_B"]
        j = b.worst_index(result.atol)
        assert worst["B"] == b.B_grid[j] and worst["bound"] == b.bound[j] and worst["measured"] == b.loss_natural[j]
        for q, loss in (("loss_natural", b.loss_natural), ("loss_best", b.loss_best)):
            [r] = [r for r in rows if r["quantity"] == f"{b.name}:{q}"]
            assert r["B"] == b.B_grid[b.index] and r["bound"] == b.bound[b.index], r["quantity"]
            assert r["measured"] == loss[b.index] and r["tau"] == b.tau[b.index], r["quantity"]


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64])
def test_seed_key_refuses_a_seed_outside_its_range(seed):
    """−1 gave 2**32 − 1's key; 2**64 raised a raw OverflowError (its callers check first; this is the last
    line)."""
    from simlm.checks import seed_key
    with pytest.raises(ConfigError, match=r"^seed: expected a seed in \[0, 2\*\*63\)"):
        seed_key(seed)


def test_append_cell_refuses_a_key_that_is_not_a_string(tmp_path):
    """A line written with the key 5 was dropped as corrupt (with a warning) the next time the store was read."""
    from simlm.experiments.store import append_cell
    with pytest.raises(ConfigError, match="^key: expected the cell's key as a string"):
        append_cell(tmp_path / "cells.jsonl", 5, [])
    assert not (tmp_path / "cells.jsonl").exists()


def test_a_natural_task_bound_wrong_at_a_radius_other_than_b_star_is_a_violated_row(monkeypatch):
    """The bound holds at every B of its grid; the rows at B* see one radius.  A bound form correct up to B = 1
    and a constant 0.717 beyond it (a bug at large radii) puts B* at B = 2, where the rows hold, and fails at
    B = 16, where (a) is 2.38: the ``worst_B`` row there must be violated.  On the right form that row holds at
    the radius of the grid's largest share of the slack."""
    import simlm.theory.natural_tasks as nt
    from simlm.models import perturbed_lm

    world = HMM.random(0, n_states=2, n_symbols=3)
    x = np.asarray(world.sample(5, n_sequences=8, length=4))
    lm = perturbed_lm(world, 0.05, "logit-noise", seed=0, tokens=x)
    options = {"max_length": 1, "noise": "logistic", "task_seed": 0, "adversary": "none"}
    cell = Cell(world, {"name": "w", "kind": "hmm"}, lm, {"source": "analytic", "laws": ["next-token"]}, x, options, 0)
    right = {r["quantity"]: r for r in builtin_checks.natural_task_check(cell)}
    b = nt.check_natural_task(enumerate_contexts(world, 1), lm,
                              nt.random_natural_task(enumerate_contexts(world, 1), 0, noise="logistic")).bound("any-lm")
    share = (b.loss_natural - b.tau) / (b.bound - b.tau)
    assert right["any-lm:worst_B"]["holds"] and right["any-lm:worst_B"]["B"] == b.B_grid[np.argmax(share)]
    assert right["any-lm:worst_B"]["slack_used"] == pytest.approx(share.max(), rel=1e-12)

    form = nt.DEFAULT_FORMS["any-lm"]
    monkeypatch.setitem(nt.DEFAULT_FORMS, "any-lm", lambda t, B, e, g: form(t, B, e, g) if B <= 1 else 0.717)
    rows = {r["quantity"]: r for r in builtin_checks.natural_task_check(cell)}
    assert rows["any-lm:loss_natural"]["holds"] and rows["any-lm:loss_best"]["holds"]  # at B* = 2
    worst = rows["any-lm:worst_B"]
    assert worst["B"] > rows["any-lm:loss_natural"]["B"] and not worst["holds"] and not worst["trivial"]
    assert worst["measured"] > worst["bound"] == 0.717 and worst["loss"] == "loss_natural"


def test_a_worst_radius_row_is_trivial_only_if_no_radius_of_its_grid_can_fail():
    """The ``worst_B`` row judges the bound at every B of its grid, so its ``trivial`` is the bound's (≥ the
    ceiling of (a) at every B), not that of its own radius.  The demo's case (a review, 2026-12-06): on its
    log-linear world the aligned adversary at ε = 0.45911 comes nearest the any-lm bound at B = 0.25, where the
    bound (0.854) is above the most any LM's (a) can be (0.814), and the row read trivial; at B = 8 the bound is
    7.785 and an LM's (a) can reach 7.921."""
    from simlm.experiments.checks import worst_radius_row
    from simlm.experiments.sweep import build_world
    from simlm.theory.adversarial import adversarial_laws
    from simlm.theory.natural_tasks import check_natural_task, random_natural_task

    world = build_world({"kind": "loglinear", "name": "loglinear", "seed": 0,
                         "options": {"dim": 3, "geometry": "anchor", "n_states": 4, "n_symbols": 6}})
    contexts = enumerate_contexts(world, 2)
    task = random_natural_task(contexts, 0, noise="logistic")
    cache: dict = {}
    laws = adversarial_laws(contexts, task, 0.45911, method="aligned", cache=cache)
    result = check_natural_task(contexts, laws, task, tau_cache=cache)
    b = result.bound("any-lm")
    j = b.worst_index(result.atol)
    assert b.bound[j] >= b.loss_ceiling[j] and not b.trivial  # trivial at its radius, not at every one
    # … an LM that puts each context's mass on its word of the largest loss reaches the ceiling where B is 8
    k = int(np.flatnonzero(b.B_grid == 8.0)[0])
    assert b.bound[k] < b.loss_ceiling[k] - 0.1
    worst = worst_radius_row("any-lm:worst_B", b, result.atol)
    assert worst["B"] == b.B_grid[j] and worst["holds"] and worst["trivial"] is False
    for b in result.bounds:  # every bound: the row is trivial exactly when it holds and the bound is
        worst = worst_radius_row("q", b, result.atol)
        assert worst["trivial"] == (worst["holds"] and b.trivial), b.name


def test_a_rows_trivial_flag_forgives_the_rounding_its_verdict_forgives():
    """A bound equal to the quantity's maximum but summed in another order read 1 ulp below it: the row held
    (within atol) yet read non-trivial (the natural-task rows of a V = 1 world; a review, 2026-12-06)."""
    from simlm.experiments.registry import row

    top = 0.6931471805599453
    assert row("q", top, top - 1e-16, maximum=top, atol=1e-7)["trivial"] is True
    assert row("q", top, top - 1e-16, maximum=top)["trivial"] is False  # atol 0 judges exactly
    assert row("q", top, top - 1e-6, maximum=top, atol=1e-7)["trivial"] is False  # beyond the rounding


def test_the_pinsker_row_holds_where_pinsker_is_tight_to_the_last_digit():
    """Laws ½ ± δ make Pinsker tight to second order: at δ = 1e-6 the float64 TV read 1 + 3e-11 times √(ε/2),
    a 'violated' theorem (a review, 2026-12-06).  The verdict forgives TV's float64 rounding (1e-14)."""
    from simlm.models import WorldLM

    def coin(p0):
        return HMM(np.array([0.5, 0.5]), np.full((2, 2), 0.5), np.array([[p0, 1 - p0]] * 2))

    world = coin(0.5)
    tokens = np.asarray(world.sample(0, 4, 5))
    for delta in (3e-7, 1e-6, 1.08e-6, 1e-3):
        cell = Cell(world, {"name": "w", "kind": "hmm"}, WorldLM(coin(0.5 + delta)),
                    {"laws": ["next-token"], "source": "x"}, tokens, {}, 0)
        (eps, tv) = builtin_checks.epsilon_check(cell)
        assert tv["holds"] and tv["trivial"], (delta, tv["measured"] / tv["bound"] - 1)
        assert tv["slack_used"] == pytest.approx(1.0, abs=1e-6 if delta < 1e-5 else 1e-3)
        assert tv["atol"] == builtin_checks.TV_ROUNDING


def test_natural_task_rows_keep_the_share_of_an_lm_whose_eps_is_below_the_loss_tolerance():
    """An LM at ε = 5e-8, below the loss tolerance atol = 1e-7 (another unit), has a real slack of 3e-4 ≫ atol
    and keeps its share (0.0024); only the oracle's rows, whose ε is float rounding of 0, have none (a first
    fix keyed that on ε ≤ atol; a review, 2026-12-06)."""
    import simlm.theory.natural_tasks as nt
    from simlm.theory.adversarial import adversarial_laws

    world = HMM.random(0, n_states=2, n_symbols=3)
    C = enumerate_contexts(world, 1)
    task = nt.random_natural_task(C, 0, noise="logistic")
    result = nt.check_natural_task(C, adversarial_laws(C, task, 5e-8, B=1.0), task)
    rows = builtin_checks._natural_rows("", result.bounds, result.eps, result.atol)
    b = result.bound("any-lm")
    assert b.eps < result.atol < b.bound[b.index] - b.tau[b.index]
    shares = [r["slack_used"] for r in rows if r["quantity"].startswith("any-lm:")]
    assert all(s is not None for s in shares)


def test_the_oracles_natural_task_rows_have_no_share_of_the_slack():
    """The oracle's ε is float rounding of 0, so its bounds' slack B√(2ε/γ) is rounding too: every row of an
    oracle cell has slack_used None (the oracle's worst_B row read a share 0.033 of float noise without the
    rule, and became the bound's worst LM wherever the other rows were trivial)."""
    from simlm.models import WorldLM

    world = HMM.random(0, n_states=2, n_symbols=3)
    options = {"max_length": 1, "noise": "logistic", "task_seed": 0, "adversary": "aligned"}
    rows = builtin_checks.natural_task_check(Cell(world, {}, WorldLM(world), {}, None, options, 0))
    assert rows and all(r.get("holds") is not None for r in rows)
    assert [r["quantity"] for r in rows if r.get("slack_used") is not None] == []


def test_the_head_prompt_checks_rows_carry_the_contexts_shares(monkeypatch):
    """Each wei/head-prompt row carries the Bayes ceiling, majority rate, margin share and the share of test
    inputs seen in training of its task's context (the experiment and the check are stubbed: no fit runs)."""
    from simlm.experiments import head_prompt as hp
    from simlm.models import WorldLM

    shared = {"bayes_ceiling": 0.9, "bayes_ceiling_se": 0.01, "bayes_ceiling_lower": 0.85,
              "bayes_ceiling_lower_se": 0.02, "majority": 0.6, "share_without_margin": 0.1, "test_seen_in_train": 0.7,
              "emission_rank": 2}
    monkeypatch.setattr(hp, "task_context", lambda world, kind, seed, config: {"shared": shared})
    monkeypatch.setattr(hp, "evaluate", lambda *a, **k: [{"method": "head", "test_accuracy": 0.8,
                                                          "train_accuracy": 0.85}])
    world = HMM.random(0, n_states=2, n_symbols=3)
    cell = Cell(world, {"kind": "hmm"}, WorldLM(world), {"source": "oracle"}, None, {}, 0)
    (r,) = builtin_checks.head_prompt_check(cell)
    assert r["quantity"] == "head:test_accuracy" and r["measured"] == 0.8
    columns = [k for k in shared if k != "emission_rank"]  # the context's conditions are not the check's columns
    assert [r[k] for k in columns] == [shared[k] for k in columns]



def test_the_worst_case_well_specified_row_is_built_at_that_bounds_own_radius():
    """The well-specified row is reported at its own B* (4 here), the any-LM bound's adversary was built at
    another: it used 0.645 of a slack an adversary built at B = 4 uses 0.842 of (a review, 2026-12-07).  The
    sweep check's row is now that adversary's, at least its share; the default adversary is the search."""
    from simlm.models import perturbed_lm
    from simlm.theory import natural_tasks as nt
    from simlm.theory.adversarial import adversarial_laws, well_specified_radius

    world = HMM.random(0, n_states=2, n_symbols=3)
    x = np.asarray(world.sample(5, n_sequences=8, length=4))
    lm = perturbed_lm(world, 0.003, "logit-noise", seed=0, tokens=x)
    from simlm.experiments.registry import get_check
    options = {**get_check("saunshi/natural-task").defaults, "max_length": 1}
    assert options["adversary"] == "search"
    check = builtin_checks.natural_task_check
    cell = Cell(world, {"name": "w", "kind": "hmm"}, lm, {"source": "analytic", "laws": ["next-token"]}, x, options, 0)
    rows = {r["quantity"]: r for r in check(cell)}
    ws = rows["worst-case:well-specified:loss_natural"]
    contexts = enumerate_contexts(world, 1)
    task = nt.random_natural_task(contexts, 0, noise="logistic")
    B = well_specified_radius(contexts, task, ws["eps"])
    own = nt.check_natural_task(contexts, adversarial_laws(contexts, task, ws["eps"], method="search", B=B),
                                task).bound("well-specified")
    assert ws["B"] == B == 4.0 and ws["lm"] == f"adversarial-search-ws@{ws['eps']:.6g}"
    assert ws["slack_used"] >= own.slack_used - 1e-9 > 0.8


@pytest.mark.parametrize("norm, phi", [("1", True), ("Inf", True), (2, True), ("2", False)])
def test_critical_epsilon_refuses_the_norms_tau_refuses(norm, phi):
    """Any norm but "inf" was read as the 2-norm ("1", 2, "Inf"), and "2" without Φ as the box."""
    from simlm.theory import natural_tasks as nt
    ctx = enumerate_contexts(HMM.random(0, 3, 4), 1)
    task = nt.random_natural_task(ctx, 0)
    Phi = np.random.default_rng(0).normal(size=(2, 4)) if phi else None
    with pytest.raises(ConfigError, match="^norm:"):
        nt.critical_epsilon(ctx, task, Phi=Phi, norm=norm)
