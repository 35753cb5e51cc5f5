"""The authors' experiment-1 protocol next to simlm's, with exact features (simlm.experiments.head_prompt_protocol)."""

import dataclasses

import numpy as np
import pytest

from simlm.errors import ConfigError
from simlm.experiments import head_prompt_protocol as hpp
from simlm.worlds import HMM


def test_the_authors_protocol_is_what_their_scripts_run():
    a = hpp.AUTHORS
    assert (a.worlds_per_size, a.nnz, a.label, a.label_length, a.visible_length, a.n_train, a.n_test, a.sampling) == \
        (20, 6, "authors", 128, 79, 5000, 1000, "start")
    assert all(set(change) <= {f.name for f in dataclasses.fields(hpp.Protocol)} for change in hpp.FACTORS.values())


def test_oracle_head_under_the_authors_label_reports_margin_strata():
    tiny = dict(label_length=10, visible_length=6, n_train=64, n_test=64, tasks_per_world=1)
    (r,) = hpp.run_protocol(hpp.Protocol(label="authors", nnz=6, **tiny), sizes=(4,))
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
