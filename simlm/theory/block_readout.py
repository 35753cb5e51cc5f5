"""The order parameter ⟨APT⟩ along a masked transformer's blocks, and fine-tuning per block — Tzach et al. (2025).

The paper (as summarised; full text unavailable) reports ⟨APT⟩ rising from ≈ 0.037 at the embedding layer
to 0.31 at block 6 of BERT-6, strong-match clusters sharpening along the blocks, and fine-tuning accuracy
rising along the blocks.  Its per-block readout is not stated, so both usual ones are computed here:

- ``probe``: a fresh MLM head (multinomial logistic regression, :func:`simlm.downstream.fit_linear_head`)
  trained on the frozen, final-LayerNorm'd hidden state LN(h_k) at the selected positions of a training set
  — an early-stopped probe: ``probe_steps`` Adam steps at lr 0.05, not the convex optimum;
- ``lens``: the model's own output layer applied to block k, softmax(Φᵀ LN(h_k)) (the "logit lens"); at
  k = L it is the model's law (in float32 to rounding: within 1.2e-7 of ``masked_token_logprobs``'s, about an
  ulp; under bfloat16 products the lens multiplies by a float32 Φ where the model's output layer used
  bfloat16, a difference of ~2⁻⁸ of a logit that can flip near-ties).

Block k = 0 is the embedding layer; it sees only the corrupted token and its position, so its accuracy is at
most that of :func:`~simlm.theory.corrupted_channel.local_bayes_probs`.  (Bayes decisions maximise accuracy,
not the type-averaged ⟨APT⟩: a readout's ⟨APT⟩ may exceed the Bayes predictor's — derived, and seen.)  Every block is scored against the exact Bayes
posterior P(x_t | y, s_t = 1) on the same corrupted test inputs: ⟨APT⟩, token accuracy, ε_k = mean KL(p_B ‖
p_k) over selected positions (nats, from the readout's log-probabilities: its float32 probabilities underflow
to 0 past a ~87-nat logit gap), the fraction of the Bayes gap closed (acc_k − acc_local) / (acc_Bayes − acc_local)
(NaN where that gap is not above two standard errors of the paired per-position difference), and the ARI of
the confusion clusters against the planted classes.

Fine-tuning (:func:`finetune_along_blocks`): a sequence label y read from the hidden path (the topic at a
fixed position of a :func:`~simlm.worlds.topic.topic_syntax_hmm`), its exact Bayes classifier P(y | x) from
the smoothed state posterior, and a linear head on the mean-pooled LN(h_k) of clean inputs for each block
(``steps`` Adam steps at lr 0.05, like the probe).
The paper states that the classifier's confidence is independent of the input's mean APT; here both the
model's and the Bayes classifier's correlations are measured.  :func:`substitution_test` is the paper's
explanation ("tokens are replaced primarily by strong-match tokens") as a causal test.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from simlm.checks import as_array, as_rng, check_positive_int, check_real_array, check_tokens
from simlm.downstream import fit_linear_head
from simlm.errors import ConfigError, ShapeError
from simlm.theory.corrupted_channel import (Corruption, bayes_corrupted_probs, chain_law64, check_chain_world,
                                            corrupt, local_bayes_probs)
from simlm.theory.token_accuracy import (TIE_RTOL, TokenAccuracy, confusion_clusters, hits, mean_apt_difference,
                                        token_accuracy)
from simlm.worlds.base import check_flag, check_number
from simlm.worlds.hmm import smoothed_posterior


@partial(jax.jit, static_argnums=0)
def _normed_hidden(graphdef, state, inputs):
    model = nnx.merge(graphdef, state)
    _, hidden = model(inputs, return_hidden=True)
    return jnp.stack([model.final_norm(h) for h in hidden])


def _masked_lm(lm, n_symbols: int | None = None):
    """``lm`` if it is a bidirectional (``causal=False``) TransformerLM — over ``n_symbols`` symbols when
    given — else a ConfigError naming ``lm``: a causal block reads position t from x_≤t only, and a causal
    model never sees MASK in training, so its blocks are no masked predictor's."""
    if not all(hasattr(lm, a) for a in ("graphdef", "state", "unembedding", "config")):
        raise ConfigError(f"lm: expected a TransformerLM, got {type(lm).__name__}")
    if getattr(lm.config, "causal", True):
        raise ConfigError("lm: expected a masked (bidirectional, causal=False) TransformerLM, got a causal one")
    if n_symbols is not None and lm.config.n_symbols != n_symbols:
        raise ConfigError(f"lm: a model of {lm.config.n_symbols} symbols for a world of {n_symbols} (MASK is id "
                          f"{n_symbols} in the corrupted inputs)")
    return lm


def block_features(lm, inputs) -> np.ndarray:
    """LN(h_k) for k = 0..L (embedding, then each block's output) of a masked transformer LM (``graphdef``,
    ``state`` as :class:`~simlm.models.transformer.TransformerLM` holds them) on raw input ids ``(n, T)``
    (symbols and MASK; no other special id), ``(L + 1, n, T, d)`` float32 — LN is the model's final
    LayerNorm."""
    lm = _masked_lm(lm)
    ids, _ = check_tokens(inputs, lm.config.mask_id + 1, "inputs")  # ids 0..V−1, and V = MASK
    return np.asarray(_normed_hidden(lm.graphdef, lm.state, jnp.asarray(ids)))


def logit_lens(lm, features, *, log: bool = False) -> np.ndarray:
    """softmax(Φᵀ LN(h_k)) for features ``(..., d)`` from :func:`block_features`: laws ``(..., V)``; with ``log``
    their log_softmax, finite where the float32 softmax rounds to 0 (a logit gap past ~87 nats), which ε needs."""
    phi = jnp.asarray(lm.unembedding)
    if not isinstance(features, jax.core.Tracer):  # validated on the host (the product computes on the input)
        f = check_real_array("features", features, error=ShapeError)
        if f.ndim < 1 or f.shape[-1] != phi.shape[0]:
            raise ShapeError(f"features: expected (..., {phi.shape[0]}) readouts of this LM's width d, got {f.shape}")
    logits = jnp.asarray(features) @ phi
    law = jax.nn.log_softmax if check_flag("log", log) else jax.nn.softmax
    return np.asarray(law(logits, axis=-1))


@dataclasses.dataclass(frozen=True)
class BlockRow:
    """One readout of one block: ⟨APT⟩ (type-averaged), token accuracy, ε = KL(p_B ‖ p_k) (nats per selected
    position), the fraction of the Bayes gap closed (acc_k − acc_local) / (acc_Bayes − acc_local) — NaN
    unless that gap is above 0 and above :data:`GAP_Z` standard errors of the paired per-position
    difference — and the cluster ARI/NMI vs planted classes.  ``rise_se`` and ``bayes_gap_se`` are the
    standard errors of ⟨APT⟩ − block 0's ⟨APT⟩ (the same readout; 0 at block 0) and of ⟨APT⟩ − the Bayes
    ⟨APT⟩, paired on the same test sequences (:func:`~simlm.theory.token_accuracy.mean_apt_difference`):
    what a rise along the blocks or a gap to Bayes must exceed to be more than the test set's noise."""

    block: int
    readout: str  # "probe" | "lens"
    mean_apt: float
    mean_apt_se: float
    rise_se: float
    bayes_gap_se: float
    mean_apt_rb: float  # the Rao–Blackwell ⟨APT⟩, the lower-variance estimate to compare with Bayes's
    accuracy: float
    epsilon: float
    gap_closed: float
    ari: float | None
    nmi: float | None
    n_kept: int


@dataclasses.dataclass(frozen=True)
class OrderParameter:
    """Per-block rows, the Bayes predictor's and the local (token + position) predictor's accuracies on
    the same test inputs, and the final model's own."""

    rows: tuple
    bayes: TokenAccuracy
    local: TokenAccuracy
    final: TokenAccuracy

    def series(self, readout: str, field: str) -> np.ndarray:
        return np.array([getattr(r, field) for r in self.rows if r.readout == readout], dtype=float)


#: the Bayes gap acc_Bayes − acc_local counts as resolved above this many standard errors of it
GAP_Z = 2.0


def _resolved_gap(bayes_hit, local_hit) -> float:
    """acc_Bayes − acc_local over the selected positions, from the two predictors' hits ``(m,)`` there (1 where
    right, 0 where wrong, 1/|tie| where a tie holds the true token: :func:`hits`) — or NaN where that gap is
    not resolved: not above 0, or not above :data:`GAP_Z` standard errors of the mean of the paired
    differences d_i = hit_Bayes,i − hit_local,i (sd(d) / √m, ddof 1; positions treated as independent, as
    APT's binomial errors are; one position resolves nothing).  A gap of one position in 76 (1/76 against
    2 · 0.013) is not resolved: divided by it, (acc_k − acc_local) read −13 to −24."""
    d = np.asarray(bayes_hit, np.float64) - np.asarray(local_hit, np.float64)
    gap = float(d.mean())
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return gap if gap > 0 and gap > GAP_Z * se else float("nan")


def order_parameter(lm, world, train_tokens, test_tokens, *, corruption=Corruption(), seed: int = 0,
                    classes=None, threshold: float = 0.1, probe_steps: int = 300, readouts=("probe", "lens"),
                    ) -> OrderParameter:
    """⟨APT⟩ and the rest along the blocks of a masked transformer ``lm`` on an HMM-backed ``world``; the
    probes fit on ``train_tokens (n, T)`` corrupted with ``seed``, every score on ``test_tokens`` corrupted
    with ``seed + 1``.  A row's ``gap_closed`` is (acc_k − acc_local) / (acc_Bayes − acc_local), NaN where
    the Bayes gap is not resolved on these test positions (not above :data:`GAP_Z` standard errors: a gap
    of a position or two would blow the ratio up)."""
    V = int(check_chain_world(world).n_symbols)
    if isinstance(readouts, str) or not isinstance(readouts, (tuple, list)) or not readouts \
            or any(r not in ("probe", "lens") for r in readouts) or len(set(readouts)) != len(readouts):
        raise ConfigError(f"readouts: expected some of ('probe', 'lens'), each once, got {readouts!r}")
    probe_steps = check_positive_int("probe_steps", probe_steps)
    seed = check_positive_int("seed", seed, minimum=0)
    _masked_lm(lm, V)
    confusion_clusters(np.eye(V), threshold, classes)  # checks threshold and classes before anything compiles
    x_tr, _ = check_tokens(train_tokens, V, "train_tokens")
    x_te, _ = check_tokens(test_tokens, V, "test_tokens")
    y_tr, s_tr = corrupt(seed, x_tr, corruption, V)
    y_te, s_te = corrupt(seed + 1, x_te, corruption, V)
    for name, sel in (("train_tokens", s_tr), ("test_tokens", s_te)):
        if not sel.any():
            raise ShapeError(f"{name}: the corruption selected no position of these {sel.size} tokens; give more")
    bayes = bayes_corrupted_probs(world, y_te, corruption)  # float64, as the local law: exact laws, ties as ties
    b_acc = token_accuracy(bayes, x_te, s_te, bayes, tie_rtol=TIE_RTOL)
    local = local_bayes_probs(world, y_te, corruption)
    l_acc = token_accuracy(local, x_te, s_te, bayes, tie_rtol=TIE_RTOL)
    f_te = block_features(lm, y_te)
    f_tr = block_features(lm, y_tr) if "probe" in readouts else None
    truth = x_te[s_te]
    bayes_hit = hits(bayes[s_te], truth, TIE_RTOL)
    resolved = _resolved_gap(bayes_hit, hits(local[s_te], truth, TIE_RTOL))
    gap = b_acc.accuracy - l_acc.accuracy if np.isfinite(resolved) else float("nan")
    rows, final, block0 = [], None, {}
    for k in range(f_te.shape[0]):
        for readout in readouts:
            # the laws for the argmax, their logs for ε (a float32 softmax underflows to 0 where the log is finite)
            if readout == "lens":
                probs, logp = logit_lens(lm, f_te[k]), logit_lens(lm, f_te[k], log=True)
            else:
                head = fit_linear_head(f_tr[k][s_tr], x_tr[s_tr], n_classes=V, method="adam", steps=probe_steps,
                                       lr=0.05)
                probs = np.full(f_te.shape[1:3] + (V,), 1.0 / V, np.float32)
                logp = np.full(f_te.shape[1:3] + (V,), -np.log(V), np.float32)
                logits = head.logits(f_te[k][s_te])
                probs[s_te] = np.asarray(jax.nn.softmax(logits, axis=-1))
                logp[s_te] = np.asarray(jax.nn.log_softmax(logits, axis=-1))
            acc = token_accuracy(probs, x_te, s_te, bayes, log_probs=logp)
            if readout == "lens" and k == f_te.shape[0] - 1:
                final = acc
            cl = confusion_clusters(acc.confusion, threshold, classes)  # ARI/NMI None when no row is kept
            hit = hits(probs[s_te], truth)  # as token_accuracy scored them: exact ties split
            first = block0.setdefault(readout, hit)
            rise_se = 0.0 if k == 0 else mean_apt_difference(x_te, s_te, hit, first)[1]
            gap_se = mean_apt_difference(x_te, s_te, hit, bayes_hit)[1]
            rows.append(BlockRow(k, readout, acc.mean_apt, acc.mean_apt_se, rise_se, gap_se, acc.mean_apt_rb,
                                 acc.accuracy, acc.epsilon,
                                 (acc.accuracy - l_acc.accuracy) / gap,  # NaN where the gap is not resolved
                                 cl.ari, cl.nmi, cl.n_kept))
    if final is None:
        final = token_accuracy(logit_lens(lm, f_te[-1]), x_te, s_te, bayes,
                               log_probs=logit_lens(lm, f_te[-1], log=True))
    return OrderParameter(tuple(rows), b_acc, l_acc, final)


# ---- fine-tuning per block and the confidence of the classifier ---------------------------------------

def _state_labels(state_label, n_states: int) -> np.ndarray:
    """One integer label ≥ 0 per hidden state, ``(n_states,)`` int, or a typed error naming ``state_label``
    (1.7 is refused, not truncated to 1)."""
    lab = as_array("state_label", state_label)
    if lab.shape != (n_states,) or lab.dtype.kind not in "biuf" or not np.all(np.isfinite(lab)) \
            or not np.all(lab == np.round(lab)) or lab.min() < 0:
        raise ShapeError(f"state_label: expected one integer label ≥ 0 per state, shape ({n_states},), got "
                         f"{lab.dtype} {lab.shape}")
    return lab.astype(int)


def _position(position, length: int) -> int:
    return check_positive_int("position", position, minimum=0, maximum=length - 1)


def label_posterior(world, tokens, state_label, position: int, *, impossible: str = "raise"):
    """Exact P(y | x) ``(n, C)`` for the label y = ``state_label[h_position]`` (e.g. the topic of the state
    at ``position``) of an HMM ``world`` (its hidden states are its chain's: a MemoryHMM is refused, its
    ``joint_hmm()`` is one): the smoothed posterior P(h_position | x_1:T) summed over the states of each
    label.  An impossible sequence raises, or with ``impossible="keep"`` the answer is ``(P(y | x),
    possible (n,) bool)`` (:func:`~simlm.theory.corrupted_channel.chain_law64`)."""
    lab = _state_labels(state_label, int(check_chain_world(world, states=True).n_states))
    toks, _ = check_tokens(tokens, int(world.n_symbols))
    position = _position(position, toks.shape[1])
    law = chain_law64(smoothed_posterior, world, toks, impossible=impossible)  # float64: a Bayes decision's law
    by_label = np.eye(lab.max() + 1)[lab]
    if impossible == "keep":
        return law[0][:, position] @ by_label, law[1]
    return law[:, position] @ by_label


@dataclasses.dataclass(frozen=True)
class FineTuning:
    """Heads on frozen blocks: ``accuracy (L + 1,)`` on test inputs, the Bayes classifier's accuracy and its
    ceiling E max_y P(y | x); the Pearson correlation of each input's max-softmax confidence with its mean
    token APT for the last block's head (``corr_model``, with the model's APT) and for the Bayes classifier
    (``corr_bayes``, with the Bayes APT); the per-input arrays behind them.  ``majority`` is the test labels'
    majority rate (the share of their most common label, as experiment 2's tables report it), not the test
    accuracy of the training set's majority class.  ``rise_se`` is the standard error of the last block's
    accuracy − block 0's on the same test inputs (sd of the paired per-input differences / √n)."""

    accuracy: np.ndarray
    bayes_accuracy: float
    bayes_ceiling: float
    majority: float
    corr_model: float
    corr_bayes: float
    confidence_model: np.ndarray
    confidence_bayes: np.ndarray
    input_apt_model: np.ndarray
    input_apt_bayes: np.ndarray
    head: object  # the last block's LinearHead
    rise_se: float = float("nan")

    def confidence(self, lm, tokens) -> np.ndarray:
        """max_y of the last block's head on ``tokens (n, T)`` through ``lm``: ``(n,)``."""
        return np.asarray(jax.nn.softmax(self.head.logits(_pooled(lm, tokens)[-1]), axis=-1)).max(-1)


def _pooled(lm, tokens) -> np.ndarray:
    return block_features(lm, tokens).mean(axis=2)  # (L + 1, n, d)


def _apt_table(name: str, apt, size: int | None = None) -> np.ndarray:
    """An APT table ``(V,)`` (``(size,)`` when given) as float64, NaN (a type never seen) read as 0; entries
    in [0, 1] or NaN, else a typed error naming ``name``."""
    table = as_array(name, apt)
    if table.ndim != 1 or table.dtype.kind not in "biuf" or not table.size or size not in (None, table.size):
        raise ShapeError(f"{name}: expected one APT per token type, shape ({size if size is not None else 'V'},), "
                         f"got {table.dtype} {table.shape}")
    table = table.astype(np.float64)
    bad = ~(np.isnan(table) | ((table >= 0) & (table <= 1)))  # ±inf and values outside [0, 1]
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"{name}: entry {i} is {table[i]}, expected an APT in [0, 1] (or NaN for a type never seen)")
    return np.nan_to_num(table, nan=0.0)


def input_apt(apt, tokens) -> np.ndarray:
    """The mean APT(x_t) over the tokens of each input ``(n,)`` (types never seen, NaN in ``apt (V,)``,
    count as APT 0; an APT outside [0, 1] is refused)."""
    table = _apt_table("apt", apt)
    x, _ = check_tokens(tokens, table.size)
    return table[x].mean(axis=1)


def _pearson(a, b) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 and np.std(b) > 0 else float("nan")


def _sampled(name: str, value, n_symbols: int, n_states: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens (n, T), states (n, T))`` as an HMM's ``sample(..., return_states=True)`` gives them, checked:
    a typed error naming ``name`` otherwise."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ConfigError(f"{name}: expected a pair (tokens (n, T), states (n, T)) as world.sample(..., "
                          f"return_states=True) gives, got {type(value).__name__}")
    x, _ = check_tokens(value[0], n_symbols, f"{name}[0]")
    h, _ = check_tokens(value[1], n_states, f"{name}[1]")
    if x.shape != h.shape:
        raise ShapeError(f"{name}: tokens {x.shape} and states {h.shape} must have one state per token")
    return x, h


def finetune_along_blocks(lm, world, train, test, state_label, position: int, *, apt_model, apt_bayes,
                          steps: int = 400) -> FineTuning:
    """``train``/``test`` = (tokens (n, T), states (n, T)) sampled from an HMM ``world`` with their hidden
    paths; the label is ``state_label[states[:, position]]``.  ``apt_model``/``apt_bayes`` ``(V,)`` are the
    APT tables of the pretrained model and of the Bayes predictor."""
    lab = _state_labels(state_label, int(check_chain_world(world, states=True).n_states))
    if np.unique(lab).size < 2:  # [2, 2] passed a max < 1 test and fitted a one-label "classifier"
        raise ConfigError("state_label: every state has the same label; there is nothing to classify")
    V = int(world.n_symbols)
    _masked_lm(lm, V)
    (x_tr, h_tr), (x_te, h_te) = _sampled("train", train, V, lab.size), _sampled("test", test, V, lab.size)
    for name, table in (("apt_model", apt_model), ("apt_bayes", apt_bayes)):
        _apt_table(name, table, V)
    steps = check_positive_int("steps", steps)
    position = _position(position, min(h_tr.shape[1], h_te.shape[1]))
    y_tr, y_te = lab[h_tr[:, position]], lab[h_te[:, position]]
    C = int(lab.max()) + 1
    f_tr, f_te = _pooled(lm, x_tr), _pooled(lm, x_te)
    right, conf, head = [], None, None
    for k in range(f_tr.shape[0]):
        head = fit_linear_head(f_tr[k], y_tr, n_classes=C, method="adam", steps=steps, lr=0.05)
        right.append(head.predict(f_te[k]) == y_te)
        conf = np.asarray(jax.nn.softmax(head.logits(f_te[k]), axis=-1)).max(-1)
    post = label_posterior(world, x_te, lab, position)
    a_m, a_b = input_apt(apt_model, x_te), input_apt(apt_bayes, x_te)
    d = right[-1].astype(np.float64) - right[0]
    rise_se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return FineTuning(np.mean(right, axis=1), float(hits(post, y_te, TIE_RTOL).mean()), float(post.max(1).mean()),
                      float(np.bincount(y_te, minlength=C).max() / len(y_te)), _pearson(conf, a_m),
                      _pearson(post.max(1), a_b), conf, post.max(1), a_m, a_b, head, rise_se)


# ---- the paper's explanation as a causal test ---------------------------------------------------------

def substitute(tokens, token_class, mode: str, fraction: float, seed: int) -> np.ndarray:
    """Replace a ``fraction`` of positions of ``tokens (n, T)`` by a uniformly drawn other token ``mode`` =
    ``"within"`` its class, ``"across"`` (of another class) or ``"random"`` (any other token).  A drawn
    position whose token has no such other token (e.g. "within" a class of one) keeps its token."""
    rng = as_rng(seed)
    x, c, fraction = _substitution_args(tokens, token_class, fraction)
    V = len(c)
    if not isinstance(mode, str) or mode not in ("within", "across", "random"):
        raise ConfigError(f"mode: expected 'within', 'across' or 'random', got {mode!r}")
    where = rng.random(x.shape) < fraction
    for i, t in zip(*np.nonzero(where)):
        w = x[i, t]
        ok = np.arange(V) != w
        if mode == "within":
            ok &= c == c[w]
        elif mode == "across":
            ok &= c != c[w]
        if ok.any():
            x[i, t] = rng.choice(np.flatnonzero(ok))
    return x


def _substitution_args(tokens, token_class, fraction) -> tuple[np.ndarray, np.ndarray, float]:
    """``(tokens, token_class, fraction)`` of :func:`substitute`, checked: a typed error naming the argument."""
    c = as_array("token_class", token_class)
    if c.ndim != 1 or c.dtype.kind not in "iu" or not c.size:
        raise ShapeError(f"token_class: expected integer classes of shape (V,), got {c.dtype} {c.shape}")
    x, _ = check_tokens(tokens, np.iinfo(np.int32).max)
    if x.size and x.max() >= len(c):
        raise ShapeError(f"token_class: {len(c)} classes, one per token id, but tokens hold id {int(x.max())}")
    return x, c, check_number("fraction", fraction, minimum=0.0, maximum=1.0)


class SubstitutionEffect(NamedTuple):
    """Mean changes under one kind of substitution: TV of the exact P(y | x), |Δ| of the Bayes confidence
    max_y P(y | x), |Δ| of the model's confidence — over every input whose substitute the world can produce,
    an input the draw left unchanged counting a change of 0; ``substituted`` is the share of their token
    positions the draw replaced (below ``fraction`` where a drawn token has no other token to become, as
    "within" a class of one: compare modes at their ``substituted`` rates).  ``n_impossible`` inputs became
    impossible under the world (a word its hidden state cannot emit, e.g. another topic's under a topic that
    never switches): they have no posterior and are left out of every mean (NaN where no input is left)."""

    tv_exact: float
    dconf_bayes: float
    dconf_model: float
    n_impossible: int = 0
    substituted: float = float("nan")


class SubstitutionTest(NamedTuple):
    within: SubstitutionEffect
    across: SubstitutionEffect
    random: SubstitutionEffect

    def as_dict(self) -> dict:
        return {mode: effect._asdict() for mode, effect in self._asdict().items()}


def _confidences(lm_confidence, tokens, n: int) -> np.ndarray:
    """``lm_confidence(tokens)`` as float64 ``(n,)``, real and finite, else a ShapeError naming it (a
    ``(1,)`` or ``(n, 1)`` answer would broadcast against ``(n,)``)."""
    out = as_array("lm_confidence", lm_confidence(tokens))
    if out.shape != (n,) or out.dtype.kind not in "biuf" or not np.all(np.isfinite(out)):
        raise ShapeError(f"lm_confidence: expected finite confidences of shape ({n},), got {out.dtype} {out.shape}")
    return out.astype(np.float64)


def substitution_test(world, lm_confidence, tokens, token_class, state_label, position: int, *,
                      fraction: float = 0.2, seed: int = 0) -> SubstitutionTest:
    """For each mode of :func:`substitute` (``fraction`` of the positions of ``tokens (n, T)``), the mean
    changes of :class:`SubstitutionEffect`, with ``lm_confidence(tokens) -> (n,)`` a classifier's max-softmax.
    A mode that substituted no position at all (classes of one token for "within", one class for "across",
    ``fraction`` 0) tested nothing: its effects are NaN, not a change of 0."""
    seed = check_positive_int("seed", seed, minimum=0)
    if not callable(lm_confidence):
        raise ConfigError(f"lm_confidence: expected a function tokens (n, T) -> (n,), got "
                          f"{type(lm_confidence).__name__}")
    V = int(check_chain_world(world).n_symbols)
    toks, c, fraction = _substitution_args(tokens, token_class, fraction)  # before any compiled work
    if c.shape != (V,):
        raise ShapeError(f"token_class: expected one class per token type, shape ({V},), got {c.shape}")
    base = label_posterior(world, toks, state_label, position)
    conf0 = _confidences(lm_confidence, toks, len(base))
    effects = []
    for i, mode in enumerate(SubstitutionTest._fields):
        x = substitute(toks, c, mode, fraction, seed + i)
        if np.array_equal(x, toks):
            effects.append(SubstitutionEffect(float("nan"), float("nan"), float("nan"), 0, 0.0))
            continue
        # a substituted input the world cannot produce has no posterior (it raised a TokenError naming the
        # caller's tokens, a review 2026-12-06): left out of the means and counted
        post, possible = label_posterior(world, x, state_label, position, impossible="keep")
        dconf = np.abs(_confidences(lm_confidence, x, len(base)) - conf0)
        mean = lambda v: float(v[possible].mean()) if possible.any() else float("nan")  # noqa: E731
        effects.append(SubstitutionEffect(mean(0.5 * np.abs(post - base).sum(1)),
                                          mean(np.abs(post.max(1) - base.max(1))), mean(dconf),
                                          int((~possible).sum()), mean((x != toks).mean(1))))
    return SubstitutionTest(*effects)


__all__ = ["block_features", "logit_lens", "BlockRow", "OrderParameter", "order_parameter", "label_posterior",
           "FineTuning", "input_apt", "finetune_along_blocks", "substitute", "SubstitutionEffect",
           "SubstitutionTest", "substitution_test"]
