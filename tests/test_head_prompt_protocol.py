"""The authors' experiment-1 protocol next to simlm's, with exact features (simlm.experiments.head_prompt_protocol)."""

import dataclasses
import itertools

import numpy as np
import pytest

from simlm.downstream.tasks import PosteriorTask
from simlm.errors import ConfigError
from simlm.experiments import head_prompt_protocol as hpp
from simlm.worlds import HMM


def test_the_authors_protocol_is_what_their_scripts_run():
    a = hpp.AUTHORS
    assert (a.worlds_per_size, a.nnz, a.label, a.label_length, a.visible_length, a.n_train, a.n_test, a.sampling) == \
        (20, 6, "authors", 128, 79, 5000, 1000, "start")
    assert all(set(change) <= {f.name for f in dataclasses.fields(hpp.Protocol)} for change in hpp.FACTORS.values())


def test_oracle_head_under_the_authors_label_reports_margin_strata(monkeypatch):
    """… and reads the visible tokens x_1:T' only (on the whole x_1:T its features moved by up to 0.009 and
    every other test passed)."""
    lengths, read = [], HMM.prepended_mask_probs
    monkeypatch.setattr(HMM, "prepended_mask_probs", lambda self, x: lengths.append(np.shape(x)[-1]) or read(self, x))
    tiny = dict(label_length=10, visible_length=6, n_train=64, n_test=64, tasks_per_world=1)
    (r,) = hpp.run_protocol(hpp.Protocol(label="authors", nnz=6, **tiny), sizes=(4,))
    assert lengths and set(lengths) == {6}
    assert 0.5 <= r["majority"] <= 1 and 0 <= r["accuracy"] <= 1 and 0 <= r["share_without_margin"] <= 1
    assert r["nnz"] <= 6 and r["accuracy_with_margin"] >= 0.9  # |H| = 4 ≤ |X|: exact features suffice
    (row,) = [s for s in hpp.summary([{**r, "protocol": "p"}]) if s["n_states"] == 4]
    assert row["n"] == 1 and row["accuracy"] == r["accuracy"]


def test_sampling_sets_the_law_of_the_first_visible_state():
    # a noisy two-state flip chain that starts in state 0, each state mostly emitting its own symbol:
    # P(x_1 = 0) is 0.86 from the chain's start (H_1 ~ π, the authors') and 0.21 after a dropped x_0
    # (H_1 ~ πA, the state after simlm's H_0); 200 sequences each
    flip = HMM(np.array([0.95, 0.05]), np.array([[0.1, 0.9], [0.9, 0.1]]), np.array([[0.9, 0.1], [0.1, 0.9]]))
    tiny = dict(label_length=4, visible_length=2, n_train=100, n_test=100)
    share = {s: np.mean(hpp.task_data(flip, 0, hpp.Protocol(sampling=s, **tiny)).x[:, 0] == 0)
             for s in ("start", "prepended")}
    assert share["start"] > 0.75 and share["prepended"] < 0.32, share


@pytest.mark.parametrize("change, name", [({"label": "bayesian"}, "label"), ({"sampling": "stream"}, "sampling"), ({"visible_length": 30}, "visible_length"),
                                          ({"nnz": 0}, "nnz")])
def test_bad_protocols_are_named(change, name):
    with pytest.raises(ConfigError, match=f"^{name}"):
        hpp.Protocol(**change)


def test_every_world_of_a_size_gets_its_own_task():
    """The authors draw μ per world (downstream_seed = the world's seed): 3 worlds, 3 different μ and
    data, each record naming the world seed it was built with."""
    tiny = dict(label_length=10, visible_length=6, n_train=16, n_test=16, tasks_per_world=1, worlds_per_size=3)
    p = hpp.Protocol(nnz=6, **tiny)
    records = hpp.run_protocol(p, sizes=(8,))
    assert [r["world_seed"] for r in records] == [1, 2, 3]
    assert len({r["task_seed"] for r in records}) == 3
    mus = [tuple(hpp.task_data(hpp.world(8, r["world_seed"]), r["task_seed"], p).task.mu) for r in records]
    assert len(set(mus)) == 3


def test_summary_spreads_over_the_records_of_a_protocol_and_size():
    """Two tasks of one (protocol, |H|): the mean, the sample s.d. (ddof = 1) and the worst accuracy."""
    records = [{"protocol": "p", "n_states": 4, "accuracy": a, "accuracy_with_margin": a, "share_without_margin": 0.0,
                "majority": 0.5} for a in (0.8, 1.0)]
    (row,) = hpp.summary(records)
    assert row["n"] == 2 and row["accuracy"] == pytest.approx(0.9)
    assert row["accuracy_sd"] == pytest.approx(np.sqrt(0.02))  # ddof = 1: not 0.1
    assert row["accuracy_min"] == 0.8


def test_summary_means_skip_a_task_without_margin_inputs():
    """A task none of whose test inputs has a margin reports accuracy_with_margin NaN (margin_accuracy); the
    per-size mean is over the tasks that have one."""
    records = [{"protocol": "p", "n_states": 4, "accuracy": 0.9, "accuracy_with_margin": m, "share_without_margin": s,
                "majority": 0.5} for m, s in ((float("nan"), 1.0), (1.0, 0.5))]
    (row,) = hpp.summary(records)
    assert row["accuracy_with_margin"] == 1.0 and row["share_without_margin"] == pytest.approx(0.75)


def test_simlm_protocol_uses_world_seed_0_and_the_authors_seeds_1_to_20(monkeypatch):
    """One world per |H| is simlm's experiment-1 world (head_prompt.Config().world_seed = 0); 20 worlds are
    the authors' seeds 1..20.  The world builder and the head are stubbed: only the seeds are read."""
    built = []
    monkeypatch.setattr(hpp, "world", lambda K, seed: built.append((K, seed)) or seed)
    monkeypatch.setattr(hpp, "oracle_head", lambda hmm, t, protocol: {"hmm": hmm})
    records = hpp.run_protocol(hpp.SIMLM, sizes=(4,))
    assert built == [(4, 0)]
    assert [(r["world_seed"], r["task_seed"], r["hmm"]) for r in records] == [(0, 0, 0), (0, 1, 0), (0, 2, 0)]
    built.clear()
    records = hpp.run_protocol(hpp.AUTHORS, sizes=(4,))
    assert built == [(4, s) for s in range(1, 21)] and [r["world_seed"] for r in records] == list(range(1, 21))


def test_the_authors_label_reads_the_transition_times_the_first_states_posterior(monkeypatch):
    """The authors' label weighs A P(H_1 | x_1:T), (A P)_k = Σ_j A[k, j] P(H_1 = j | x) (hmmlearn's
    ``transmat_ @ p_h1`` in their generate_data.py), and labels 1[μᵀ(A P) ≥ 0].  Checked on an asymmetric
    two-state chain against P(H_1 | x_1:3) by brute force over the 8 hidden paths."""
    pi, A = np.array([0.6, 0.4]), np.array([[0.9, 0.1], [0.3, 0.7]])
    B = np.array([[0.8, 0.2], [0.25, 0.75]])
    mu = np.array([1.0, -1.0])
    monkeypatch.setattr(hpp, "make_posterior_task", lambda hmm, seed, nnz: PosteriorTask(mu=mu))
    p = hpp.Protocol(label="authors", sampling="start", label_length=3, visible_length=2, n_train=16, n_test=16)
    data = hpp.task_data(HMM(pi, A, B), 0, p)
    first = np.zeros((len(data.x), 2))
    for i, x in enumerate(data.x):
        for h in itertools.product(range(2), repeat=3):
            first[i, h[0]] += (pi[h[0]] * np.prod([A[a, b] for a, b in zip(h, h[1:])])
                               * np.prod([B[s, t] for s, t in zip(h, x)]))
    first /= first.sum(axis=1, keepdims=True)
    expected = np.einsum("kj,nj->nk", A, first)
    np.testing.assert_allclose(data.post, expected, rtol=1e-5)
    np.testing.assert_array_equal(data.y, (expected @ mu >= 0).astype(int))
    assert len(set(data.y)) == 2


def test_the_summaries_read_a_stored_null_as_the_nan_it_was_and_agree_before_and_after_json():
    """A seed without an input of margin has accuracy_with_margin NaN, null in the stored JSON: the protocol's
    summary crashed on the null (None == None passed its NaN filter), and the experiments' summarise gave NaN
    in memory and the other seeds' mean from the JSON."""
    import json

    from simlm.experiments.head_prompt_report import summarise
    from simlm.jsonio import jsonable

    rows = [{"protocol": "authors", "n_states": 4, "accuracy": a, "accuracy_with_margin": m,
             "share_without_margin": 0.1, "majority": 0.5} for a, m in ((0.8, float("nan")), (0.9, 0.7))]
    stored = json.loads(json.dumps(jsonable(rows)))
    assert stored[0]["accuracy_with_margin"] is None
    assert hpp.summary(rows)[0]["accuracy_with_margin"] == hpp.summary(stored)[0]["accuracy_with_margin"] == 0.7
    records = [{"world": "w", "kind": "hmm", "n_states": 4, "method": "head", "level": "oracle", "test_accuracy": a,
                "accuracy_with_margin": m} for a, m in ((0.8, float("nan")), (0.9, 0.7))]
    stored = json.loads(json.dumps(jsonable(records)))
    assert summarise(records)[0]["accuracy_with_margin"] == summarise(stored)[0]["accuracy_with_margin"] == 0.7


def test_a_flag_is_taken_only_as_spelt():
    """``--train`` was read as ``--trained`` by argparse's prefixes, but the study is chosen by the literal
    flag: the exact-feature study ran."""
    assert hpp.main(["--train", "--quick"]) == 2


def test_the_protocol_summary_gives_the_mean_majority_of_its_own_records():
    """``majority`` is the mean of its protocol's records' majorities (no test read it: computed from the
    accuracies, it passed)."""
    records = [{"protocol": "p", "n_states": 4, "accuracy": a, "accuracy_with_margin": a, "share_without_margin": 0.0,
                "majority": m} for a, m in ((0.8, 0.5), (1.0, 0.7))]
    records.append({**records[0], "protocol": "q", "majority": 0.9})
    rows = {r["protocol"]: r for r in hpp.summary(records)}
    assert rows["p"]["majority"] == pytest.approx(0.6) and rows["q"]["majority"] == 0.9
