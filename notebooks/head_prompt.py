# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Head and prompt tuning (Wei, Xie & Ma, NeurIPS 2021)
#
# Head tuning reads a linear head off the masked LM's law at a prepended mask; the paper shows it recovers
# every posterior task when the emission matrix has rank |H| (non-degeneracy), and that prompt tuning needs
# less.  The sweep measures head accuracy against ε for LMs calibrated at exactly that law; then one world
# where rank B < |H| shows prompt tuning recovering a task head tuning cannot.  `QUICK` / `SIMLM_QUICK=1`.

# %%
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from simlm.experiments.sweep import parse_config, run_sweep

QUICK = os.environ.get("SIMLM_QUICK", "0") == "1"
sizes = [4, 8] if QUICK else [4, 8, 10, 15]
worlds = [{"name": f"H={k}", "kind": "hmm", "seed": 0,
           "options": {"n_states": k, "n_symbols": 6, "family": "permutation-mixture", "transition_temp": 0.05,
                       "emission_temp": 0.05}} for k in sizes]
config = parse_config({
    "name": "head-tuning", "data": {"n_sequences": 16, "length": 10}, "worlds": worlds,
    "lms": {"oracle": True, "analytic": {"kinds": ["logit-noise"], "eps": [0.1] if QUICK else [0.3, 0.1, 0.03],
                                         "laws": ["prepended-mask"]}},
    "checks": {"wei/head-tuning": {"n_train": 96 if QUICK else 512, "n_test": 96 if QUICK else 512, "length": 10}},
})
result = run_sweep(config, tempfile.mkdtemp(prefix="simlm-wei-"), progress=False)
rows = pd.DataFrame(result["rows"])
rows[["world", "lm", "eps", "quantity", "measured", "bound", "holds"]]

# %%
acc = rows[rows.quantity == "head_accuracy"]
for lm, g in acc.groupby("lm"):
    plt.plot([int(w.split("=")[1]) for w in g.world], g.measured, "o-", label=lm)
plt.axvline(6, color="grey", ls=":", label="|H| = |X| (rank B ≤ |X|)")
plt.xlabel("|H|"); plt.ylabel("head accuracy (test)"); plt.legend(); plt.show()

# %% [markdown]
# ## Prompt tuning where head tuning fails
# K = 4 states, V = 3 symbols: state 3 emits like state 0 (rank B = 3), so the masked law reads
# P(H_0 | x) only through (p_0 + p_3, p_1, p_2); and A's rows make p_1 = p_2 = ¼ for every input
# ((A_0 + A_3)/2 = A_1 = A_2), so the masked law is the same for every input and a head can only guess.
# (Rank B < |H| alone does not do it: with other rows 1 and 2 of A the masked law varies with x.)
# A one-token prompt reveals the label: the fitted prompt printed
# below sits almost entirely on state 3, which never moves to state 1 (A[3, 1] = 0), so it reweights
# P(H_0 | x) by r ≈ [0.35, 0.06, 0.35, 1] in full mode (a prompt wholly on state 3 would give [1/3, 0, 1/3, 1])
# — it all but removes state 1.

# %%
from simlm.downstream import PosteriorTask, fit_exact_prompt, fit_linear_head, sample_task_data, task_features
from simlm.models import WorldLM
from simlm.worlds import HMM

A = np.array([[0.2, 0.6, 0.2, 0.0], [0.2, 0.3, 0.2, 0.3], [0.2, 0.3, 0.2, 0.3], [0.2, 0.0, 0.2, 0.6]])
B = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
world, task = HMM(np.full(4, 0.25), A, B), PosteriorTask(mu=[1.0, -1.36, 0.0, 0.0])
n = 128 if QUICK else 512
(x, y), (xt, yt) = sample_task_data(world, task, 1, n, 6), sample_task_data(world, task, 2, n, 6)
head = fit_linear_head(task_features(WorldLM(world), x, task), y)
prompt = fit_exact_prompt(world, x, y, k=1, steps=150 if QUICK else 300, test=(xt, yt))
print(f"head tuning: {head.accuracy(task_features(WorldLM(world), xt, task), yt):.3f}; "
      f"prompt tuning: {prompt.test_accuracy:.3f}; majority {max(yt.mean(), 1 - yt.mean()):.3f}")
print("the fitted prompt's likelihoods U =", np.round(np.asarray(prompt.U), 3))
print("the prompt reweights P(H_0 | x) by r =", np.round(np.asarray(world.prompt_reweighting(prompt.U)), 3))
assert prompt.test_accuracy > head.accuracy(task_features(WorldLM(world), xt, task), yt)

# %% [markdown]
# ## Conditions with margins, and worlds where they hold exactly
# Every condition reports a signed margin to its tolerance (> 0 where it holds).  The prompt condition reads
# the transition graph at a soft-zero threshold δ; `feasibility_range` gives every δ at which it holds.  In
# the experiments' permutation-mixture worlds no transition is exactly 0, so the condition only holds from
# some δ_min > 0 on; a `family="sparse"` world has exact zeros, and there the theorem applies as stated:
# the constructive prompt confines P(H_0 | z, x) to supp μ and, with its head, labels every input whose
# label has a margin.

# %%
from simlm.theory import head_prompt as wei
from simlm.theory.head_prompt_margins import feasibility_range, label_margins

mixture = HMM.random(0, 8, 10, family="permutation-mixture", transition_temp=0.01, emission_temp=0.01)
mu8 = np.array([1.0, -1.0, 0, 0, 0, 0, 0, 0])
fr = feasibility_range(mixture, mu8)
print(f"permutation mixture: exact {fr.exact}, feasible for δ in {[(f'{a:.2g}', f'{b:.2g}') for a, b in fr.intervals]}")
for seed in range(50):  # the first sparse draw where the prompt condition holds with exact zeros
    sparse = HMM.random(seed, 5, 4, family="sparse", out_degree=2)
    mu5 = np.array([1.0, -0.7, 0, 0, 0])
    pf, sr = wei.prompt_feasibility(sparse, mu5, tol=0.0), wei.support_rank(sparse, mu5)
    if pf.feasible and sr.full_row_rank:
        break
else:
    raise RuntimeError("no sparse world among seeds 0–49 meets the prompt condition with exact zeros")
x5 = np.asarray(sparse.sample(3, 256, 5))[:, 1:]
margins = label_margins(mu5, wei.state_posterior0(sparse, x5))
keep = margins.margins >= margins.threshold
check = wei.verify_prompt(sparse, mu5, pf.prompt, wei.prompt_head(sparse, mu5, pf.prompt), x5[keep])
print(f"sparse world (seed {seed}): prompt exact, B_S margin {sr.margin:.3f}, head residual "
      f"{wei.head_realisability(sparse, mu5).residual:.3f}; {1 - margins.share_without_margin:.3f} of inputs have a "
      f"margin and the prompt + head get {check.fraction_correct:.3f} of them (off-support mass {check.max_off_support_mass:g})")
assert check.fraction_correct == 1.0 and check.max_off_support_mass == 0.0
