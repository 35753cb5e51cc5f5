"""What :mod:`simlm.experiments.token_accuracy` draws from its result dict (rebuilt from the sweep's rows):
the verdict on each of the paper's observations, the text summary and the six-panel figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import norm

from simlm.theory.block_readout import GAP_Z

#: a Spearman correlation counts as positive where its two-sided p-value is below this, the level of
#: :data:`~simlm.theory.block_readout.GAP_Z` standard errors (0.0455) that every rise and gap here must pass
SPEARMAN_P = float(2 * norm.sf(GAP_Z))


def _finite(value) -> bool:
    """Whether a number of the result is finite (NaN, e.g. a correlation of a constant input, and None are not)."""
    return value is not None and bool(np.isfinite(value))


def _no_rise(along: list, what: str = "value", se=None):
    """The verdict and its note where the readout ``along`` the blocks shows no rise — n/a with fewer than
    two blocks or a first or last ``what`` that is not finite (an undefined ARI is not an ARI of 0), or an
    undefined (or unrecorded) standard error; (iii) where the last block is not above the first by more than
    :data:`GAP_Z` × ``se``, the standard error of the rise (paired on the same test inputs; None where none
    is known, the ARI's: any rise counts) — else None."""
    if len(along) < 2 or not (_finite(along[0]) and _finite(along[-1])):
        return "n/a", f"; the first or last block's {what} is undefined"
    rise = along[-1] - along[0]
    if rise <= 0:  # no rise needs no error bar to say so
        return "(iii)", ""
    if se is not None and not _finite(se):
        return "n/a", f"; the standard error of the {what}'s rise is undefined or not recorded"
    if se is None or rise > GAP_Z * se:
        return None
    return "(iii)", f"; its rise {rise:.3g} is within {GAP_Z:g} standard errors ({se:.2g})"


def _rises_and_closes(first: list, last: list, bayes, n_rungs: int, rise_se=None, gap_se=None) -> tuple:
    """The verdict on "a readout rises along the blocks" and a note giving its reason ("" where none is
    due): ``last`` the readout along the blocks of the last rung (lowest ε), ``first`` that of the first
    rung, ``bayes`` the Bayes predictor's value.  :func:`_no_rise` (with ``rise_se``) where the last rung
    does not rise; (ii) where its last block is closer to Bayes than the first rung's, or at Bayes (a rise
    that reaches Bayes at every rung is a learning effect too; one that stays as far from Bayes, or drifts
    away, is not); n/a with one rung or a gap to Bayes that is not finite.  With ``gap_se`` = (first, last),
    the standard errors of each rung's last block − Bayes, "closer" means by more than :data:`GAP_Z` × their
    quadrature sum (conservative: the rungs' errors share the test set's) and "at Bayes" within GAP_Z × the
    last's; without (the ARI's), any narrowing counts and at Bayes is within 1e-9."""
    if (early := _no_rise(last, se=rise_se)) is not None:
        return early
    if n_rungs < 2:
        return "n/a", "; one rung: whether the gap closes as ε falls is not measured"
    if not (_finite(first[-1]) and _finite(bayes)):
        return "n/a", "; the gap to Bayes is undefined"
    gap_last, gap_first = abs(last[-1] - bayes), abs(first[-1] - bayes)
    if gap_se is None:
        return ("(ii)" if gap_last < gap_first or gap_last <= 1e-9 else "(iii)"), ""
    if not all(_finite(v) for v in gap_se):
        return "n/a", "; the standard error of the gap to Bayes is undefined or not recorded"
    noise = GAP_Z * float(np.hypot(*gap_se))
    if gap_first - gap_last > noise:
        return "(ii)", ""
    if gap_last <= GAP_Z * gap_se[1]:
        return "(ii)", f"; the last block is within {GAP_Z:g} standard errors ({gap_se[1]:.2g}) of Bayes"
    return "(iii)", (f"; the gap to Bayes {gap_first:.3g} → {gap_last:.3g} narrows by less than {GAP_Z:g} standard "
                     f"errors ({noise / GAP_Z:.2g})" if gap_last < gap_first else "")


def verdicts(r: dict) -> dict:
    """For each of the paper's observations: (i) already true of the Bayes predictor, (ii) a learning effect
    that closes toward Bayes as ε falls, (iii) not reproduced, or "n/a" where the run cannot decide (one rung
    cannot show a gap closing as ε falls; classes of one token leave nothing to substitute; a correlation
    that is NaN, undefined on a constant input; any number the verdict needs that is not finite) — decided
    from the numbers, with why.  The Bayes predictor has no blocks, so an observation along blocks is (ii)
    or (iii): (ii) where the last rung rises along the blocks and its last block is closer to Bayes than the
    first rung's or at Bayes, (iii) where it does not rise or does not close.  Fine-tuning reads the last
    rung's LM only, so a rise of its accuracy along blocks is n/a (whether its gap closes as ε falls is not
    measured), no rise (iii).  Rises, gaps and correlations are judged against their noise: a rise of ⟨APT⟩
    or of the fine-tuned accuracy counts above :data:`GAP_Z` standard errors of the paired difference, a
    Spearman ρ > 0 where its p-value is below :data:`SPEARMAN_P`; the cluster ARI has no error and is read
    as it is."""
    bz, top, ft, sub = r["block_zipf"]["masked"], r["topic"], r["finetune"], r["substitution"]
    rungs = top["rungs"]
    nan = float("nan")
    probe_rows = [[row for row in g["rows"] if row["readout"] == "probe"] for g in rungs]
    probe = [[row["mean_apt"] for row in rows] for rows in probe_rows]
    ari = [[row["ari"] for row in g["rows"] if row["readout"] == "probe"] for g in r["groups_ladder"]["rungs"]]
    # an ARI is over the kept tokens only (two kept tokens in two clusters read 1.0): their counts go beside it
    kept = [row.get("n_kept") for row in r["groups_ladder"]["rungs"][-1]["rows"] if row["readout"] == "probe"]
    n_tokens = len(r["groups_ladder"].get("token_class", ())) or "V"
    best = rungs[-1]
    out = {}
    rhos = (bz["spearman"], top["bayes"]["spearman"])
    ps = (bz.get("spearman_p", nan), top["bayes"].get("spearman_p", nan))
    out["apt_grows_with_frequency"] = (  # a ρ ≤ 0 needs no p-value to say it does not grow
        "n/a" if not all(_finite(v) for v in rhos) else "(iii)" if min(rhos) <= 0
        else "n/a" if not all(_finite(p) for p in ps) else "(i)" if max(ps) < SPEARMAN_P else "(iii)",
        f"Spearman(APT, frequency) of the Bayes predictor: block-zipf {bz['spearman']:.2f} (p {ps[0]:.2g}), "
        f"topic {top['bayes']['spearman']:.2f} (p {ps[1]:.2g}); trained (last) {best['spearman']:.2f}")
    out["apt_much_below_accuracy"] = (
        "n/a" if not (_finite(bz["mean_apt"]) and _finite(bz["accuracy"]))
        else "(i)" if bz["mean_apt"] < bz["accuracy"] / 2 and bz["n_predicted"] <= r["block_zipf"]["n_classes"] else "(iii)",
        f"Bayes on block-zipf (MASKs): ⟨APT⟩ {bz['mean_apt']:.3f} vs accuracy {bz['accuracy']:.3f}, "
        f"{bz['n_predicted']} distinct outputs for {r['block_zipf']['n_classes']} classes; "
        f"{100 * bz['within_class_errors']:.0f} % of its errors stay in the true block")
    # decided on the world with planted confusion groups; the emission-class world's ARI is reported beside it
    groups = [c["ari"] for c in r["groups"]["selected"]["clusters"]]
    classes = [c["ari"] for c in bz.get("clusters", [])]
    best = max((a for a in groups if a is not None and np.isfinite(a)), default=None)
    fmt = lambda aris: [None if a is None else round(a, 2) for a in aris]
    out["small_strong_match_clusters"] = (
        "n/a" if best is None else "(i)" if best >= 0.9 else "(iii)",
        f"Bayes cluster ARI against the planted groups at τ = {r['thresholds']}: {fmt(groups)} (groups world); "
        f"against the emission classes {fmt(classes)} (block-zipf)")
    verdict, note = _rises_and_closes(probe[0], probe[-1], top["bayes"]["mean_apt"], len(rungs),
                                      (probe_rows[-1] or [{}])[-1].get("rise_se", nan),
                                      tuple((rows or [{}])[-1].get("bayes_gap_se", nan)
                                            for rows in (probe_rows[0], probe_rows[-1])))
    out["order_parameter_rises_along_blocks"] = (
        verdict, f"probe ⟨APT⟩ along blocks (last rung) {np.round(probe[-1], 3).tolist()} vs Bayes "
                 f"{top['bayes']['mean_apt']:.3f} and the token + position predictor {top['local']['mean_apt']:.3f}"
                 + note)
    tau = r.get("config", {}).get("threshold", r["thresholds"][2])  # the τ of the probes' clusters
    at_tau = [c["ari"] for c, t in zip(r["groups_ladder"]["bayes"]["clusters"], r["thresholds"]) if t == tau]
    bayes_ari = at_tau[0] if at_tau else None
    verdict, note = _rises_and_closes(ari[0], ari[-1], bayes_ari, len(ari))
    if not at_tau and note.endswith("the gap to Bayes is undefined"):  # Bayes is cut at the swept τ only
        note = f"; the Bayes clusters were cut at τ ∈ {r['thresholds']} only, not at the probes' τ"
    out["clusters_sharpen_along_blocks"] = (
        verdict, f"groups world, probe cluster ARI along blocks (last rung) {fmt(ari[-1])} over {kept} kept tokens "
                 f"of {n_tokens}; Bayes ARI {bayes_ari} at τ = {tau}" + note)
    acc = ft["accuracy"]
    verdict, note = _no_rise(acc, "accuracy", ft.get("rise_se", nan)) or (
        "n/a", "; fine-tuned on the last rung only: whether the gap to Bayes closes as ε falls is not measured")
    out["finetuning_improves_along_blocks"] = (
        verdict, f"head accuracy along blocks {np.round(acc, 3).tolist()} vs Bayes {ft['bayes_accuracy']:.3f}" + note)
    out["confidence_independent_of_input_apt"] = (
        "n/a" if not _finite(ft["corr_bayes"]) else "(i)" if abs(ft["corr_bayes"]) < 0.2 else "(iii)",
        f"corr(confidence, mean input APT): Bayes {ft['corr_bayes']:.2f}, model {ft['corr_model']:.2f}")
    within = sub["within"]["tv_exact"]
    out["explanation_strong_match_substitution"] = (
        "n/a" if not np.isfinite(within) or not np.isfinite(sub["across"]["tv_exact"])
        else "(i)" if within < 1e-3 < sub["across"]["tv_exact"] else "(iii)",
        f"TV change of exact P(y|x): within {within:.2g}, across {sub['across']['tv_exact']:.2g}, "
        f"random {sub['random']['tv_exact']:.2g}; model |Δconfidence| within {sub['within']['dconf_model']:.3f}, "
        f"across {sub['across']['dconf_model']:.3f}"
        + ("; within a class the exact law does not move at all (TV ≤ 1e-12): a token's class is all the label "
           "reads of it in this world, true by construction, so only 'across' is evidence here"
           if np.isfinite(within) and within <= 1e-12 else ""))
    return out


def _ladder_lines(name: str, top: dict) -> list:
    lines = [f"{name} Bayes ⟨APT⟩ {top['bayes']['mean_apt']:.3f} accuracy {top['bayes']['accuracy']:.3f}; local "
             f"⟨APT⟩ {top['local']['mean_apt']:.3f} accuracy {top['local']['accuracy']:.3f}"]
    for g in top["rungs"]:
        which = f"rung {g['target']:g}" if g["target"] else "final model"  # target 0: the last step's model
        lines.append(f"  {which} (masked ε {g['masked_eps']:.3f}, corrupted ε {g['corrupted_eps']:.3f})")
        for readout in ("probe", "lens"):
            rows = [row for row in g["rows"] if row["readout"] == readout]
            lines.append(f"    {readout}: ⟨APT⟩ " + " ".join(f"{row['mean_apt']:.3f}" for row in rows)
                         + " | acc " + " ".join(f"{row['accuracy']:.3f}" for row in rows)
                         + " | gap closed " + " ".join(f"{row['gap_closed']:.2f}" for row in rows)
                         + " | ARI " + " ".join("-" if row["ari"] is None else f"{row['ari']:.2f}" for row in rows))
    for u in top.get("unreached") or []:  # no LM there: said, not dropped
        lines.append(f"  rung {u['target']:g} not reached in {u['steps']:.0f} steps (best masked ε "
                     f"{u['best_eps']:.3f})")
    return lines


def summary(r: dict) -> str:
    lines = []
    for name in ("block_zipf", "groups"):
        for where in ("selected", "masked"):
            s = r[name][where]
            lines.append(f"{name} [{where}] Bayes ⟨APT⟩ {s['mean_apt']:.3f} (RB {s['mean_apt_rb']:.3f}) accuracy "
                         f"{s['accuracy']:.3f} distinct outputs {s['n_predicted']} within-class errors "
                         f"{s['within_class_errors']:.2f} Spearman {s['spearman']:.2f}")
    for name in ("topic", "groups_ladder"):
        lines += _ladder_lines(name, r[name])
    ft = r["finetune"]
    lines.append(f"fine-tuning accuracy along blocks {np.round(ft['accuracy'], 3).tolist()} Bayes {ft['bayes_accuracy']:.3f} "
                 f"(its expected accuracy E max P(y|x) {ft['bayes_ceiling']:.3f}, majority {ft['majority']:.3f}); "
                 f"corr(conf, input APT) model {ft['corr_model']:.2f} Bayes {ft['corr_bayes']:.2f}")
    for mode, s in r["substitution"].items():
        left_out = s.get("n_impossible") or 0  # inputs the world cannot produce (results before 2026-12-06: none)
        lines.append(f"substitution {mode}: TV exact {s['tv_exact']:.3g} Δconf Bayes {s['dconf_bayes']:.3g} "
                     f"model {s['dconf_model']:.3g}"
                     + (f", {s['substituted']:.1%} of positions replaced" if "substituted" in s else "")
                     + (f" ({left_out:g} impossible inputs left out)" if left_out else ""))
    for k, (v, why) in r["verdicts"].items():
        lines.append(f"{v} {k}: {why}")
    return "\n".join(lines)


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


__all__ = ["plot", "summary", "verdicts"]
