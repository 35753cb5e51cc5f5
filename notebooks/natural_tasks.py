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
# # Natural tasks (Saunshi, Malladi & Arora, ICLR 2021): transfer bounds against ε
#
# A sweep of analytic LMs at exact ε on a log-linear world and an HMM, with the natural-task check at
# every ε: the loss of the task's classifier moved to the LM's features against τ + B√(2ε/γ).
# `QUICK` (or `SIMLM_QUICK=1`) runs a tiny grid.

# %%
import os
import tempfile

import matplotlib.pyplot as plt
import pandas as pd

from simlm.experiments.report import bound_summary
from simlm.experiments.sweep import parse_config, run_sweep

QUICK = os.environ.get("SIMLM_QUICK", "0") == "1"
eps = [0.1, 0.01] if QUICK else [0.3, 0.1, 0.03, 0.01, 0.003, 0.001]
config = parse_config({
    "name": "natural-tasks",
    "data": {"n_sequences": 16 if QUICK else 64, "length": 8},
    "worlds": [{"name": "loglinear", "kind": "loglinear", "seed": 0, "options": {"n_states": 4, "n_symbols": 5, "dim": 3}},
               {"name": "hmm", "kind": "hmm", "seed": 0, "options": {"n_states": 3, "n_symbols": 5}}],
    "lms": {"oracle": True, "analytic": {"kinds": ["logit-noise"] if QUICK else ["logit-noise", "rare-words"], "eps": eps}},
    "checks": {"saunshi/natural-task": {"max_length": 1 if QUICK else 2}},
})
out = tempfile.mkdtemp(prefix="simlm-natural-")
result = run_sweep(config, out, progress=False)
rows = pd.DataFrame(result["rows"])
rows[["world", "lm", "eps", "quantity", "measured", "bound", "holds", "trivial", "slack_used"]].head(12)

# %% [markdown]
# The share of the slack each bound's worst LM uses, and how many rows could not have failed:

# %%
pd.DataFrame(bound_summary(result["rows"]))

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, world in zip(axes, ["loglinear", "hmm"]):
    r = rows[(rows.world == world) & (rows.quantity == "any-lm:loss_natural") & (rows.eps > 0)]
    ax.plot(r.eps, r.measured - r.tau, "o", label="measured excess (a) − τ")
    ax.plot(r.eps, r.bound - r.tau, "s", mfc="none", label="slack B√(2ε/γ)")
    ax.set(xscale="log", yscale="symlog", xlabel="ε (nats)", title=world)
    ax.legend()
plt.tight_layout()
plt.show()
assert rows.holds.dropna().all()
