"""Prompt tuning (Wei, Xie & Ma, NeurIPS 2021): learned prompt inputs before the masked position, a linear
head on the frozen masked LM's output there.

Exact model (an :class:`~simlm.worlds.HMM`).  k prompt positions z_1..z_k are placed before the masked
position 0, each with a learned nonnegative emission likelihood u_j ∈ R^K_{≥0} over hidden states
(u = softplus(raw) while training).  The chain starts at the first prompt position with π, so with a
prompt H_0 ~ πA^k, and

    P(H_0 | z, x) ∝ [((π ∘ u_1) A ∘ u_2) A ⋯ ∘ u_k] A ∘ β_0(x),     β_0(x)(h) = p(x_1:T | H_0 = h)

(β_0 from :func:`simlm.worlds.prompting.prepended_backward`).  Without a prompt P(H_0 | x) ∝ π ∘ β_0, so for k = 1

    P(H_0 | z, x) ∝ P(H_0 | x) ∘ r(u),     r(u) = Aᵀ(π_{−1} ∘ u) ⊘ π_0,

the paper's identity, with π_{−1} = π the law of the prompt position's state and π_0 = π the law of H_0
in the unprompted model (``world.prompt_reweighting``; the maths is in :mod:`simlm.worlds.prompting`).  A
prompt therefore reweights the
posterior coordinate-wise, which can make a label readable from P(H_0 | z, x) B even where B has rank
< K and a head on P(H_0 | x) B cannot.  The prompted masked-LM output is P(H_0 | z, x) B ``(V,)``.

Transformer (a :class:`~simlm.models.MaskedTransformerLM`: a ``TransformerLM`` with ``causal=False``).  k
continuous vectors ``(k, d)`` are prepended to the input embeddings of (MASK, x_1, …, x_T) (the ``prefix=``
argument of :class:`~simlm.models.Transformer`); the model is frozen; the prefix and a linear head on the
softmax output at MASK are trained jointly with Adam.

Both fits are :func:`~simlm.downstream.prompt_fit.fit_prompt` over their prompted law and a linear head.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from simlm.checks import as_key, check_positive_int
from simlm.downstream.heads import LinearHead, LinearLogits, check_l2, check_lr, standardise
from simlm.downstream.prompt_fit import (PromptedClassifier, check_fit_memory, check_masked_transformer,
                                         check_masked_transformer_tokens, check_prompt_data, check_prompt_fit,
                                         check_promptable, check_test_data, fit_chain_prompt, fit_prompt,
                                         minibatch_indices, objective)
from simlm.errors import ConfigError
from simlm.models.transformer import prepended_mask_inputs
from simlm.precision import mm
from simlm.worlds import hmm_core as core
from simlm.worlds import prompting
from simlm.worlds.hmm import HMM

# the prompt fits' linear head: W starts at N(0, 0.1²) (head tuning's at N(0, 0.01²))
_HEAD = LinearLogits(init_scale=0.1)


# ---- the exact prompted posterior ---------------------------------------------------------------

def _check_world(world) -> None:
    if not isinstance(world, HMM):
        raise ConfigError(f"world: exact prompt tuning needs an HMM, got {type(world).__name__}")


#: β_0 ``(n, K)`` and the per-step log-probs ``(n, T)`` of x_1:T (:func:`simlm.worlds.prompting.prepended_backward`)
_prepended_backward = core.batched(prompting.prepended_backward)


def _law_at_prepended_mask(initial, transition, emission, likelihoods, beta0):
    """The exact prompted law at the prepended masked position, P(H_0 | z, x) B ``(n, V)``, for the prompt
    likelihoods ``(k, K)``, from the backward messages ``beta0 (n, K)`` of x computed once before the fit."""
    return mm(prompting.reweight(prompting.fit_prompt_prior(initial, transition, likelihoods), beta0), emission)


@dataclass(frozen=True, eq=False)
class ExactPromptResult(PromptedClassifier):
    """Prompt tuning on the exact HMM: ``U (k, K)`` the prompt likelihoods, ``head`` a :class:`LinearHead`
    on the prompted law P(H_0 | z, x) B; accuracies (``test_accuracy`` NaN without test data), the
    training loss per step of the best restart and the final loss of every restart."""

    U: np.ndarray
    head: LinearHead
    train_accuracy: float
    test_accuracy: float
    losses: np.ndarray
    restart_losses: np.ndarray

    def features(self, world, tokens) -> jax.Array:
        return world.prompted_prepended_mask_probs(tokens, self.U)


def fit_exact_prompt(world, tokens, labels, *, k: int = 1, n_classes: int = 2, n_restarts: int = 4,
                     steps: int = 300, seed: int = 0, lr: float = 0.05, l2: float = 1e-4,
                     test=None) -> ExactPromptResult:
    """Jointly fit prompt likelihoods U = softplus(raw) ``(k, K)`` and a linear head on the prompted law
    P(H_0 | z, x) B of ``tokens (n, T)`` (x_1:T, as from :func:`~simlm.downstream.sample_task_data` for a
    ``"prepended"`` task) to ``labels (n,)``: Adam at ``lr``, ``steps`` full-batch steps, best of
    ``n_restarts`` by training loss (cross-entropy + (l2/2)‖W‖²).  ``test=(tokens, labels)`` is scored."""
    _check_world(world)
    prompting.check_prompt_length(k, "k")  # the cap named as k (check_promptable would name the prompt U)
    toks, y, k, C = check_prompt_data(tokens, labels, world.n_symbols, k, n_classes)
    test, l2 = check_test_data(test, world.n_symbols, C), check_l2(l2)
    K, V = world.n_states, world.n_symbols
    check_fit_memory(n_restarts, k * K + V * C, toks.shape[0] * (K + V), steps)
    lr = check_lr(lr)  # l2 is check_l2's: 0 or positive
    seed = check_positive_int("seed", seed, minimum=0)
    check_promptable(world.prompted_prepended_mask_probs, toks, k, K, test)  # before the fit, not when it is scored
    beta0, _ = _prepended_backward(*world.chain, jnp.asarray(toks))
    U, params, mean, sd, losses, final, _ = fit_chain_prompt(
        _law_at_prepended_mask, world.chain, beta0, jnp.asarray(y), jnp.float32(l2), jnp.float32(lr),
        as_key(seed, "seed"), head=_HEAD, k=k, n_classes=C,
        steps=check_positive_int("steps", steps), n_restarts=check_positive_int("n_restarts", n_restarts))
    check_prompt_fit(losses[0], final, "the exact prompt fit", U)  # losses[0]: the kept restart's start
    head = _HEAD.fitted(params, mean, sd, losses)
    result = ExactPromptResult(np.asarray(U), head, float("nan"), float("nan"), np.asarray(losses), np.asarray(final))
    return result.scored(world, result.features(world, toks), y, test)  # on the checked laws


# ---- prompt tuning on a masked transformer ------------------------------------------------------

@dataclass(frozen=True, eq=False)
class TransformerPromptResult(PromptedClassifier):
    """Prompt tuning on a frozen masked transformer: ``prefix (k, d)`` the continuous prompt, ``head`` a
    :class:`LinearHead` on the law at MASK, accuracies, and the training loss per step ``losses (steps,)``."""

    prefix: np.ndarray
    head: LinearHead
    train_accuracy: float
    test_accuracy: float
    losses: np.ndarray

    def features(self, lm, tokens) -> jax.Array:
        """The frozen model's law at MASK with this prefix, ``(n, V)``."""
        toks = check_masked_transformer_tokens(lm, tokens, self.prefix.shape[0])
        return _prefixed_prepended_mask_probs_jit(lm.graphdef, lm.state, jnp.asarray(self.prefix), toks)


def _prefixed_prepended_mask_probs(graphdef, state, prefix, tokens):
    """The frozen model's law at MASK in ``(prefix, MASK, x_1 … x_T)``, ``(n, V)``."""
    model = nnx.merge(graphdef, state)
    logits = model.logits_at(prepended_mask_inputs(tokens, model.config), jnp.zeros(tokens.shape[0], jnp.int32),
                             prefix=prefix)
    return jax.nn.softmax(logits, axis=-1)


_prefixed_prepended_mask_probs_jit = jax.jit(_prefixed_prepended_mask_probs, static_argnums=0)


@partial(jax.jit, static_argnames=("graphdef", "n_classes", "steps"))
def _fit_transformer(graphdef, state, tokens, labels, l2, lr, key, prefix0, n_classes, steps, batches=None):
    def features(prefix, idx=None):
        return _prefixed_prepended_mask_probs(graphdef, state, prefix, tokens if idx is None else tokens[idx])

    V = jax.eval_shape(features, prefix0).shape[-1]
    start = {"prompt": prefix0, "head": _HEAD.init(key, V, n_classes)}
    p, losses, final_loss, stats = fit_prompt(features, _HEAD, labels, start, l2=l2, lr=lr, steps=steps,
                                              batches=batches)
    # the objective on every training sequence at the start (a full batch's first loss) and at the end
    start_loss = losses[0] if stats is None else objective(features, _HEAD, labels, start, l2=l2, stats=stats)
    final = features(p["prompt"])
    mean, sd = standardise(final)[1:] if stats is None else stats
    return p, mean, sd, losses, final, (start_loss, final_loss)


def fit_transformer_prompt(lm, tokens, labels, *, k: int = 1, n_classes: int = 2, steps: int = 200,
                           seed: int = 0, lr: float = 0.01, l2: float = 1e-4, test=None,
                           batch_size: int | None = None) -> TransformerPromptResult:
    """Prompt tuning of a frozen :class:`~simlm.models.MaskedTransformerLM`: a prefix ``(k, d)`` (initialised
    N(0, 0.02²), like the token embeddings) before (MASK, x_1..x_T) and a linear head on the law at MASK,
    trained jointly with Adam at ``lr`` for ``steps`` steps on cross-entropy + (l2/2)‖W‖².  The
    network's parameters are never updated (``jax.jit`` over a pure function of (prefix, head) with
    ``nnx.merge`` of the frozen state).  ``test=(tokens, labels)`` is scored.  ``batch_size``: None (full
    batch), or minibatches of that many sequences (drawn without replacement within a step, by ``seed``;
    a batch of every sequence at most), as :func:`~simlm.downstream.fit_transformer_attention_prompt`."""
    check_masked_transformer(lm)
    toks, y, k, C = check_prompt_data(tokens, labels, lm.n_symbols, k, n_classes)
    toks = check_masked_transformer_tokens(lm, toks, k)
    test, l2 = check_test_data(test, lm.n_symbols, C), check_l2(l2)
    if test is not None:
        check_masked_transformer_tokens(lm, test[0], k)
    check_fit_memory(1, k * lm.config.d_model + lm.n_symbols * C, 0, steps)
    steps = check_positive_int("steps", steps)
    b = None if batch_size is None else min(check_positive_int("batch_size", batch_size), toks.shape[0])
    key_prefix, key_head = jax.random.split(as_key(check_positive_int("seed", seed, minimum=0), "seed"))
    prefix0 = 0.02 * jax.random.normal(key_prefix, (k, lm.config.d_model))
    batches = None if b is None else minibatch_indices(jax.random.fold_in(key_prefix, 1), toks.shape[0], b, steps)
    p, mean, sd, losses, train_features, (start_loss, final_loss) = _fit_transformer(
        lm.graphdef, lm.state, toks, jnp.asarray(y), jnp.float32(l2),
        jnp.float32(check_lr(lr)), key_head, prefix0, C, steps, batches)
    check_prompt_fit(start_loss, final_loss, "the transformer prompt fit")
    head = _HEAD.fitted(p["head"], mean, sd, losses)
    result = TransformerPromptResult(np.asarray(p["prompt"]), head, float("nan"), float("nan"), np.asarray(losses))
    return result.scored(lm, train_features, y, test)


__all__ = ["ExactPromptResult", "fit_exact_prompt", "TransformerPromptResult", "fit_transformer_prompt"]
