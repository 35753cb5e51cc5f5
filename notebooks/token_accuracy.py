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
# # Accuracy per token (Tzach et al. 2025) against the Bayes-optimal masked predictor
#
# The paper reads a BERT through the accuracy of its masked-token predictions per token type (APT), their
# average ⟨APT⟩ along the blocks, and clusters in the token confusion matrix.  In an HMM world each of these
# has an exact Bayes-optimal value (`simlm.theory.corrupted_channel`: forward–backward with BERT's
# 80/10/10 corruption as a noisy channel).  `SIMLM_QUICK=1` runs tiny sizes; the full experiment is
# `python -m simlm.experiments.token_accuracy` (see `docs/token_accuracy.md`).

# %%
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from simlm.experiments.token_accuracy import Config, frequencies, train_lms
from simlm.models.transformer import TransformerConfig, TransformerLM, init_transformer
from simlm.theory.block_readout import order_parameter, substitution_test
from simlm.theory.corrupted_channel import Corruption, bayes_corrupted_probs, corrupt
from simlm.theory.token_accuracy import apt_by_frequency, confusion_clusters, token_accuracy, within_class_errors
from simlm.worlds.topic import block_zipf_hmm, confusion_groups_hmm, topic_of_state, topic_syntax_hmm

QUICK = os.environ.get("SIMLM_QUICK", "0") == "1"
N, T = (48, 12) if QUICK else (1024, 32)

# %% [markdown]
# ## APT of the Bayes predictor: frequency and small clusters at ε = 0
# Eight states, each emitting from its own block of 30 Zipf-weighted tokens.  At a MASK the Bayes law is
# Σ_c P(c | context) z_c, so its argmax is always the top token of some block.

# %%
zipf = block_zipf_hmm(0)
x = np.asarray(zipf.hmm.sample(1, N, T))
y, sel = corrupt(2, x, Corruption(), zipf.hmm.n_symbols)
bayes = bayes_corrupted_probs(zipf.hmm, y)
masked = sel & (y == zipf.hmm.n_symbols)
r = token_accuracy(bayes, x, masked, bayes)
profile = apt_by_frequency(r, frequencies(zipf.hmm, T))
print(f"⟨APT⟩ {r.mean_apt:.3f} ± {r.mean_apt_se:.3f} (Rao–Blackwell {r.mean_apt_rb:.3f}); token accuracy "
      f"{r.accuracy:.3f}; distinct outputs {r.n_predicted}; errors inside the true block "
      f"{within_class_errors(r.confusion, zipf.token_class):.0%}; Spearman(APT, frequency) {profile.spearman:.2f}")
plt.plot(range(len(profile.mean_apt)), profile.mean_apt, "o-")
plt.xlabel("frequency bin (rare → frequent)")
plt.ylabel("mean APT (Bayes)")
plt.show()

# %% [markdown]
# ## The paper's cluster pipeline on planted confusion groups
# Diagonal-max filter, rows divided by the diagonal, components at threshold τ (the paper's τ is unknown,
# so it is swept); ARI and NMI against the planted groups.

# %%
groups = confusion_groups_hmm(0)
x = np.asarray(groups.hmm.sample(1, N, T))
y, sel = corrupt(2, x, Corruption(), groups.hmm.n_symbols)
g = token_accuracy(bayes_corrupted_probs(groups.hmm, y), x, sel)
pd.DataFrame([{"τ": tau, "kept rows": c.n_kept, "clusters": len(c.sizes), "ARI": c.ari, "NMI": c.nmi}
              for tau in (0.02, 0.05, 0.1, 0.3, 0.5)
              for c in [confusion_clusters(g.confusion, tau, groups.token_class)]])

# %% [markdown]
# ## The paper's explanation as a causal test
# Replace 20 % of the tokens within their class, across classes or at random, and measure how much the exact
# posterior of the label "topic at the middle position" moves.  Tokens of a class have proportional emission
# columns, so a within-class substitution cannot move it at all.

# %%
topic = topic_syntax_hmm(0, 3, 3, 3, switch=0.03, topic_rate=0.5, exponent=1.5, concentration=0.1)
labels = topic_of_state(3, 3)
xt = np.asarray(topic.hmm.sample(3, N, 16))
sub = substitution_test(topic.hmm, lambda t: np.zeros(len(t)), xt, topic.token_class, labels, 8)
pd.DataFrame(sub.as_dict()).T[["tv_exact", "dconf_bayes"]]

# %% [markdown]
# ## ⟨APT⟩ along the blocks of a masked transformer
# A 4-block model trained down to masked ε ≈ 0.1 (in quick mode: untrained, read by the lens only, to keep
# the test fast), read out per block by the logit lens and a fresh probe, against the Bayes predictor's
# ⟨APT⟩ and that of a predictor that sees only the corrupted token and its position — reference points, not
# ceilings: the Bayes decision maximises token accuracy, not the type-averaged ⟨APT⟩.

# %%
if QUICK:
    lm = TransformerLM(init_transformer(TransformerConfig(n_symbols=int(topic.hmm.n_symbols), d_model=8, n_layers=4,
                                                          n_heads=2, max_len=17, causal=False), 0))
else:
    config = Config(targets=(0.1,), max_steps=2500)
    lms, unreached = train_lms(topic.hmm, config, tempfile.mkdtemp(prefix="simlm-tzach-"))
    lm = lms[-1][-1]  # (target, masked ε, its s.e., lm) of the lowest rung: the final model if 0.1 was not reached
    print("not reached:", unreached or "none")
x_tr, x_te = (np.asarray(topic.hmm.sample(s, 48 if QUICK else 512, 16)) for s in (10, 11))
op = order_parameter(lm, topic.hmm, x_tr, x_te, classes=topic.token_class,
                     readouts=("lens",) if QUICK else ("probe", "lens"))
rows = pd.DataFrame([vars(row) for row in op.rows])
for readout, style in (("probe", "o-"), ("lens", "x--")):
    sub_rows = rows[rows.readout == readout]
    if sub_rows.empty:  # quick mode reads the lens only: no legend entry without a line
        continue
    plt.plot(sub_rows.block, sub_rows.mean_apt, style, label=readout)
plt.axhline(op.bayes.mean_apt, color="k", label="Bayes")
plt.axhline(op.local.mean_apt, color="grey", ls=":", label="token + position only")
plt.xlabel("block")
plt.ylabel("⟨APT⟩")
plt.legend()
plt.show()
rows
