"""The figure of :mod:`simlm.experiments.token_accuracy`: six panels from its ``results.json`` dict."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot(r: dict, out: Path) -> list:
    """Write ``token_accuracy.png`` under ``out``; returns its path in a list."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top, ft, sub = r["topic"], r["finetune"], r["substitution"]
    fig, ax = plt.subplots(2, 3, figsize=(15, 8.5))
    freq = np.asarray(top["frequency"])
    order = np.argsort(freq)
    a = ax[0, 0]
    a.plot(freq[order], np.asarray(top["bayes"]["apt"], float)[order], "k-o", ms=3, label="Bayes (ε = 0)")
    for g in top["rungs"]:
        lab = f"model, masked ε = {g['masked_eps']:.3f}"
        a.plot(freq[order], np.asarray(g["apt"], float)[order], "-o", ms=2, alpha=0.7, label=lab)
    a.set(xscale="log", xlabel="token frequency (exact marginal)", ylabel="APT(w)", title="APT against frequency (topic world)")
    a.legend(fontsize=7)
    a = ax[0, 1]
    for i, g in enumerate(top["rungs"]):
        for readout, style in (("probe", "-o"), ("lens", "--x")):
            rows = [row for row in g["rows"] if row["readout"] == readout]
            a.plot([row["block"] for row in rows], [row["mean_apt"] for row in rows], style, color=f"C{i}",
                   label=f"{readout}, ε = {g['masked_eps']:.3f}")
    a.axhline(top["bayes"]["mean_apt"], color="k", label="Bayes predictor")
    a.axhline(top["local"]["mean_apt"], color="grey", ls=":", label="token + position predictor (block 0)")
    a.set(xlabel="block (0 = embeddings)", ylabel="⟨APT⟩ (type-averaged)", title="order parameter along blocks")
    a.legend(fontsize=6)
    a = ax[0, 2]
    groups = r["groups_ladder"]
    for i, g in enumerate(groups["rungs"]):
        rows = [row for row in g["rows"] if row["readout"] == "probe"]
        a.plot([row["block"] for row in rows], [np.nan if row["ari"] is None else row["ari"] for row in rows], "-o",
               color=f"C{i}", label=f"probe, ε = {g['masked_eps']:.3f}")
    bayes_ari = [c["ari"] for c in groups["bayes"]["clusters"] if c["threshold"] == r["config"]["threshold"]]
    if bayes_ari and bayes_ari[0] is not None:
        a.axhline(bayes_ari[0], color="k", label="Bayes")
    a.set(xlabel="block", ylabel="ARI vs planted classes", title=f"confusion-cluster ARI, groups world (τ = {r['config']['threshold']})")
    a.legend(fontsize=7)
    a = ax[1, 0]
    a.scatter(ft["input_apt_model"], ft["confidence_model"], s=6, alpha=0.5, label=f"model (r = {ft['corr_model']:.2f})")
    a.scatter(ft["input_apt_bayes"], ft["confidence_bayes"], s=6, alpha=0.5, label=f"Bayes (r = {ft['corr_bayes']:.2f})")
    a.set(xlabel="mean APT of the input's tokens", ylabel="max-softmax confidence", title="confidence vs input APT")
    a.legend(fontsize=7)
    a = ax[1, 1]
    a.plot(range(len(ft["accuracy"])), ft["accuracy"], "-o", label="linear head on frozen block")
    a.axhline(ft["bayes_accuracy"], color="k", label="Bayes classifier")
    a.axhline(ft["majority"], color="grey", ls=":", label="majority")
    a.set(xlabel="block", ylabel="test accuracy", title="fine-tuning (topic at the middle position)")
    a.legend(fontsize=7)
    a = ax[1, 2]
    modes = list(sub)
    xs = np.arange(len(modes))
    a.bar(xs - 0.2, [sub[m]["tv_exact"] for m in modes], 0.4, label="TV change of exact P(y|x)")
    a.bar(xs + 0.2, [sub[m]["dconf_model"] for m in modes], 0.4, label="|Δ model confidence|")
    a.set_xticks(xs, modes)
    a.set(title="substitution test (20 % of tokens)")
    a.legend(fontsize=7)
    fig.tight_layout()
    path = Path(out) / "token_accuracy.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


__all__ = ["plot"]
