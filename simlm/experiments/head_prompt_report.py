"""Summary, text table and figure of the head/prompt reproductions (:mod:`simlm.experiments.head_prompt`):
pure functions of the tidy records and of the JSON payload, so a stored run can be re-reported without
recomputing anything."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np


GROUP = ("world", "kind", "n_states", "n_slots", "n_cells", "method", "lm", "level")


def summarise(records: list[dict]) -> list[dict]:
    """One row per (world, method, level): mean and s.d. of the test accuracy over seeds, mean ε and
    ceiling, and the conditions (means over the seeds' tasks)."""
    groups = {}
    for r in records:
        groups.setdefault(tuple(r.get(k) for k in GROUP), []).append(r)
    rows = []
    for key, g in groups.items():
        acc = np.array([r["test_accuracy"] for r in g])
        row = {**dict(zip(GROUP, key)), "n_seeds": len(g), "accuracy": float(acc.mean()),
               "accuracy_sd": float(acc.std(ddof=1)) if len(g) > 1 else None}  # one seed: no s.d. (not 0)
        for k in ("epsilon", "epsilon_readout", "bayes_ceiling", "majority", "emission_rank", "emission_sigma_min",
                  "head_residual", "prompt_feasible", "support_full_rank", "memory_sigma_min", "share_without_margin",
                  "test_seen_in_train", "accuracy_with_margin", "emission_margin", "head_margin", "support_margin",
                  "prompt_exact", "prompt_delta_min", "memory_margin"):
            # a NaN (e.g. no input with a margin in a seed) is dropped, as its null in the stored JSON is
            vals = [float(r[k]) for r in g if r.get(k) is not None and float(r[k]) == float(r[k])]
            row[k] = float(np.mean(vals)) if vals else None
            if k == "accuracy_with_margin":  # over the seeds with an input with a margin, of the n_seeds (a review)
                row["n_seeds_with_margin"] = len(vals)
        rows.append(row)
    rows.sort(key=lambda r: (r["n_states"], r["kind"], r["world"], _level_order(r["level"]), r["method"]))
    return rows


def _level_order(level: str) -> tuple:
    """oracle; the analytic LMs ("eps=t") from the largest t down; the trained rungs ("eps<=t") likewise;
    then the final trained LM."""
    if level == "oracle":
        return (0, 0.0)
    if level == "final":
        return (3, 0.0)
    if level.startswith("eps<="):
        return (2, -float(level.removeprefix("eps<=")))
    return (1, -float(level.removeprefix("eps=")))


def table(summary: list[dict]) -> str:
    """The summary as a fixed-width text table (``-`` where a number does not apply); ``n`` is the number of
    seeds a row averages (a rung reached by one seed has no s.d.: ``-``, where it read 0.000, as if seeds
    agreed), ``n|m`` the number of them ``acc|m`` averages (the seeds with test inputs whose label has a
    margin), ``seen`` the share of the test inputs that occur in the training set."""
    cols = [("world", "world", 12, "s"), ("|H|", "n_states", 3, "d"), ("method", "method", 14, "s"),
            ("lm", "lm", 8, "s"), ("level", "level", 9, "s"), ("ε", "epsilon", 7, ".3g"), ("ε read", "epsilon_readout", 7, ".3g"),
            ("acc", "accuracy", 6, ".3f"), ("±sd", "accuracy_sd", 5, ".3f"), ("n", "n_seeds", 2, "d"), ("acc|m", "accuracy_with_margin", 6, ".3f"),
            ("n|m", "n_seeds_with_margin", 3, "d"),
            ("no m", "share_without_margin", 5, ".3f"), ("seen", "test_seen_in_train", 5, ".3f"),
            ("ceil", "bayes_ceiling", 5, ".3f"),
            ("major", "majority", 5, ".3f"), ("rank", "emission_rank", 4, ".0f"),
            ("σmin", "emission_sigma_min", 8, ".2g"), ("resid", "head_residual", 6, ".3f"),
            ("feas", "prompt_feasible", 4, ".2f"), ("δmin", "prompt_delta_min", 7, ".2g")]
    align = lambda f: "<" if f == "s" else ">"
    head = " ".join(f"{h:{align(f)}{w}}" for h, _, w, f in cols)
    lines = [head, "-" * len(head)]
    for r in summary:
        lines.append(" ".join(f"{'-':>{w}}" if r.get(k) is None else f"{r[k]:{align(f)}{w}{f}}" for _, k, w, f in cols))
    return "\n".join(lines)


def _curve(ax, summary, select, label, seeds: int, **style):
    """One curve of accuracy against |H|, ± the s.d. over seeds; a point averaging fewer than all ``seeds``
    (a rung some seeds did not reach) says how many it averages, as the table's ``n`` does."""
    rows = sorted((r for r in summary if select(r)), key=lambda r: r["n_states"])
    if rows:
        line = ax.errorbar([r["n_states"] for r in rows], [r["accuracy"] for r in rows],
                           yerr=[np.nan if r["accuracy_sd"] is None else r["accuracy_sd"] for r in rows],  # one seed
                           label=label, capsize=2, **style)
        for r in rows:
            if r["n_seeds"] < seeds:
                ax.annotate(f"n={r['n_seeds']}", (r["n_states"], r["accuracy"]), xytext=(3, -9), fontsize=6,
                            textcoords="offset points", color=line.lines[0].get_color())


def plot(payload: dict, path: Path) -> Path:
    """Accuracy against the number of hidden states: oracle and final trained LM, the trained rungs and
    analytic LMs at each ε, and (experiment 1) the conditions; a vertical line at |X|."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, exp = payload["summary"], payload["experiment"]
    V = payload["config"]["n_symbols"]
    targets = payload["config"]["targets"]  # one colour per ε: trained rung "eps<=t", analytic LM "eps=t"
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    a, b, c = axes
    seeds = len(payload["config"]["seeds"])
    curve = partial(_curve, seeds=seeds)
    if exp == "experiment1":
        sel = lambda m, lv: lambda r: r["method"] == m and r["level"] == lv
        curve(a, summary, sel("head", "oracle"), "oracle head", color="C0", marker="o")
        curve(a, summary, sel("prompt", "oracle"), "oracle prompt", color="C1", marker="s")
        curve(a, summary, sel("head", "final"), "trained head (final)", color="C0", marker="o", ls="--")
        curve(a, summary, sel("prompt", "final"), "trained prompt (final)", color="C1", marker="s", ls="--")
        for i, t in enumerate(targets):
            curve(b, summary, sel("head", f"eps<={t:g}"), f"trained head ε≤{t:g}", color=f"C{i + 2}", marker="o")
            curve(b, summary, sel("prompt", f"eps<={t:g}"), f"trained prompt ε≤{t:g}", color=f"C{i + 2}",
                   marker="s", ls="--")
            curve(b, summary, sel("head", f"eps={t:g}"), f"analytic head ε={t:g}", color=f"C{i + 2}",
                   marker="x", ls=":")
        oracle = sorted((r for r in summary if r["method"] == "head" and r["level"] == "oracle"),
                        key=lambda r: r["n_states"])
        x = [r["n_states"] for r in oracle]
        c.semilogy(x, [max(r["emission_sigma_min"], 1e-17) for r in oracle], "o-", label="σ_min(B) (0 drawn at 1e-17)")
        c.semilogy(x, [max(r["head_residual"], 1e-17) for r in oracle], "s-", label="‖μ−Πμ‖/‖μ‖ (distance of μ from col B)")
        c.semilogy(x, [r["emission_rank"] / r["n_states"] for r in oracle], "^-", label="rank B / |H|")
        c.set(title="conditions (mean over tasks)", xlabel="|H|")
        first = oracle
    else:
        sel = lambda w, m, lv, n=(None, 1): lambda r: (r["kind"] == w and r["method"] == m and r["level"] == lv
                                                      and r.get("n_cells") in n)
        more = sorted({r.get("n_cells") for r in summary if (r.get("n_cells") or 1) > 1})
        for ax, lv in ((a, "oracle"), (b, "final")):
            for j, N in enumerate(more):  # memory worlds with N > 1 cells, beside the one-cell curves
                curve(ax, summary, sel("memory", "attention_head", lv, (N,)), f"memory N={N}: attention head",
                       color=f"C{6 + j}", marker="D")
            curve(ax, summary, sel("memory", "attention_head", lv), "memory: attention head", color="C2", marker="o")
            curve(ax, summary, sel("memory", "attention_prompt", lv), "memory: attention prompt", color="C3",
                   marker="^", ls="--")
            curve(ax, summary, sel("memory", "head", lv), "memory: linear head", color="C2", marker="o", ls=":")
            curve(ax, summary, sel("hmm", "head", lv), "vanilla: linear head", color="C0", marker="s")
            curve(ax, summary, sel("hmm", "prompt", lv), "vanilla: prompt", color="C1", marker="s", ls="--")
        for i, t in enumerate(targets):
            curve(c, summary, sel("memory", "attention_head", f"eps<={t:g}"), f"memory attention, trained ε≤{t:g}",
                   color=f"C{i + 2}", marker="o")
            curve(c, summary, sel("hmm", "head", f"eps<={t:g}"), f"vanilla head, trained ε≤{t:g}",
                   color=f"C{i + 2}", marker="s", ls="--")
            curve(c, summary, sel("memory", "attention_head", f"eps={t:g}"), f"memory attention, analytic ε={t:g}",
                   color=f"C{i + 2}", marker="x", ls=":")
        # one ceiling line per kind: a memory world has as many hidden states as its vanilla twin, and its own
        # ceiling (one line through both zigzagged between them at every |H|)
        first = [r for r in summary if r["level"] == "oracle"
                 and r["method"] == ("attention_head" if r["kind"] == "memory" else "head")]
    kinds = sorted({r.get("kind") for r in first}, key=str)
    titles = {"experiment1": ("oracle (ε = 0) and trained LM (final)", "trained and analytic LMs at each ε"),
              "experiment2": ("oracle (ε = 0)", "trained LM (final)")}[exp]
    for ax, title in zip((a, b), titles):
        for kind, ls in zip(kinds, (":", (0, (1, 4)))):
            ceil = sorted({(r["n_states"], r["bayes_ceiling"]) for r in first
                           if r.get("kind") == kind and r["bayes_ceiling"] is not None})
            label = "Bayes ceiling" if len(kinds) == 1 else f"Bayes ceiling ({'vanilla' if kind == 'hmm' else kind})"
            ax.plot([k for k, _ in ceil], [v for _, v in ceil], color="grey", ls=ls, label=label)
        ax.set(title=title, xlabel="hidden states |H|", ylabel="test accuracy", ylim=(0.4, 1.02))
    if exp == "experiment2":
        c.set(title="trained and analytic LMs at each ε", xlabel="hidden states |H| = Q·M", ylabel="test accuracy",
              ylim=(0.4, 1.02))
    for ax in axes:
        ax.axvline(V, color="k", lw=0.8, ls="-.", label=f"|X| = {V}")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, lw=0.3)
    fig.suptitle(f"Wei, Xie & Ma (2021) {exp}: |X| = {V}, T' = {payload['config']['visible_length']} of "
                 f"T = {payload['config']['label_length']}, seeds {payload['config']['seeds']}"
                 + (" (n=k: a point averaging k of them)" if any(r["n_seeds"] < seeds for r in summary) else ""))
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


