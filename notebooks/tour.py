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
# # A tour of simlm: a world, its exact laws, an LM at a controlled ε, one check
#
# simlm builds synthetic worlds whose optimal language model is known exactly, produces LMs at a
# controlled excess cross-entropy ε, and checks papers' claims against the exact ground truth.
# Set `QUICK = True` (or the environment variable `SIMLM_QUICK=1`, as the test suite does) for a fast run.

# %%
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np

QUICK = os.environ.get("SIMLM_QUICK", "0") == "1"

# %% [markdown]
# ## A world and its exact laws
# A hidden Markov model; every conditional law of its optimal LM is computed exactly by forward–backward.

# %%
from simlm.worlds import HMM

world = HMM.random(0, n_states=4, n_symbols=6, family="permutation-mixture", transition_temp=0.1, emission_temp=0.1)
x = np.asarray(world.sample(0, n_sequences=4, length=12))
laws = np.asarray(world.next_token_probs(x))  # (4, 12, 6): p*(x_t = · | x_<t)
print("tokens:", x[0])
print("entropy rate (nats/token): %.4f ± %.4f" % world.entropy_rate(1, n_sequences=16, length=256))
plt.imshow(laws[0].T, aspect="auto", cmap="viridis")
plt.xlabel("position t"); plt.ylabel("token"); plt.title("p*(x_t = · | x_<t)"); plt.colorbar(); plt.show()

# %% [markdown]
# ## LMs at a controlled ε
# An analytic LM is the exact law perturbed, with the scale solved so that its exact ε hits a target; a
# transformer is trained down an ε ladder and checkpointed at each rung it reaches.

# %%
from simlm.metrics import exact_epsilon
from simlm.models import TransformerConfig, perturbed_lm
from simlm.train import TrainConfig, train

held_out = world.sample(99, n_sequences=32, length=12)
analytic = perturbed_lm(world, 0.05, "logit-noise", seed=0, tokens=held_out)
print("analytic LM: target 0.05, exact ε = %.5f on held_out (the tokens its scale was solved on)"
      % exact_epsilon(world, analytic, held_out)[0])
print("              on fresh sequences: %.5f ± %.5f" % exact_epsilon(world, analytic, world.sample(7, 256, 12)))

result = train(world, TransformerConfig(n_symbols=6, d_model=16, n_layers=1, n_heads=2, max_len=13),
               TrainConfig(targets=(0.5, 0.2), batch_size=32, seq_len=12, max_steps=100 if QUICK else 600,
                           learning_rate=1e-2, warmup_steps=10, eval_every=25),
               run_dir=tempfile.mkdtemp(prefix="simlm-tour-"), progress=False)
for r in result.records:
    print(f"rung ε ≤ {r.target}: reached={r.reached}, ε = {r.epsilon}, step {r.step}")

# %% [markdown]
# ## One check
# Saunshi, Malladi & Arora's transfer bound on a natural task, exactly on the world's enumerated contexts.

# %%
from simlm.theory.natural_tasks import check_natural_task, random_natural_task
from simlm.worlds import enumerate_contexts

contexts = enumerate_contexts(world, 2)
task = random_natural_task(contexts, 0, noise="logistic")
check = check_natural_task(contexts, analytic, task)
for b in check.bounds:
    i = b.index
    print(f"{b.name}: loss (a) {b.loss_natural[i]:.4f} ≤ bound {b.bound[i]:.4f} (τ = {b.tau[i]:.4f}) → holds {b.holds}")
assert check.holds
