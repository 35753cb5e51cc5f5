"""A fuzz of the public surface: every argument of every public entry point replaced, one at a time, by each
value of a pool of hostile inputs (None, strings, bools, negative / zero / fractional / huge numbers,
NaN, ±inf, complex numbers, empty, ragged and wrongly shaped arrays, arbitrary objects).

An input passes when the call either raises a typed simlm error (a :class:`~simlm.errors.SimlmError`, so a
``ValueError``) or returns a result with no NaN in it.  Anything else — a raw ``TypeError`` /
``AttributeError`` / ``KeyError`` / JAX error, or a NaN handed back as an answer — is a failure, listed by
case.  The counts are printed (``pytest -s``) for the release note."""

from __future__ import annotations

import math

import numpy as np

from simlm.errors import SimlmError

BAD = {"None": None, "str": "bogus", "bool": True, "neg": -1, "zero": 0, "frac": 1.5, "nan": math.nan,
       "inf": math.inf, "-inf": -math.inf, "huge": 10**12, "complex": 1 + 2j, "empty": [], "ragged": [[1, 2], [3]],
       "matrix": np.ones((2, 2, 2)), "object": object()}


def _surface():
    """(name, function, args, kwargs) for every public entry point, with valid arguments."""
    from simlm.downstream import (fit_linear_head, make_posterior_task, sample_task_data, task_features)
    from simlm.experiments.sweep import parse_config
    from simlm.metrics import divergence_report, exact_epsilon, exact_masked_epsilon, observed_logprobs
    from simlm.models import TransformerConfig, WorldLM, perturbed_lm
    from simlm.models.perturbed import epsilon_of_scale, perturbation_params, solve_scale
    from simlm.theory.head_prompt import emission_rank, head_realisability, prompt_feasibility
    from simlm.theory.natural_tasks import check_natural_task, random_natural_task
    from simlm.train import TrainConfig
    from simlm.worlds import HMM, LogLinearWorld, MemoryHMM, enumerate_contexts

    hmm = HMM.random(0, 3, 4)
    mem = MemoryHMM.random(0, 1, 2, 2, 4)
    ll = LogLinearWorld.random(0, 3, 4, 2)
    x = np.asarray(hmm.sample(0, 4, 5))
    lm = WorldLM(hmm)
    task = make_posterior_task(hmm, 0)
    feats = np.asarray(task_features(lm, x, task))
    contexts = enumerate_contexts(hmm, 1)
    ntask = random_natural_task(contexts, 0)
    pi, A, B = (np.asarray(a, np.float64) for a in (hmm.initial, hmm.transition, hmm.emission))
    config = {"worlds": [{"name": "h", "kind": "hmm", "options": {"n_states": 3, "n_symbols": 3}}],
              "checks": {"simlm/epsilon": {}}}
    return [
        ("HMM", HMM, (pi, A, B), {"atol": 1e-6}),
        ("HMM.random", HMM.random, (0, 3, 4), {"family": "dirichlet"}),
        ("MemoryHMM.random", MemoryHMM.random, (0, 1, 2, 2, 4), {}),
        ("LogLinearWorld.random", LogLinearWorld.random, (0, 3, 4, 2), {"geometry": "anchor"}),
        ("sample", hmm.sample, (0, 2, 3), {}),
        ("memory.sample", mem.sample, (0, 2, 3), {}),
        ("loglinear.sample", ll.sample, (0, 2, 3), {}),
        ("log_likelihood", hmm.log_likelihood, (x,), {}),
        ("next_token_probs", hmm.next_token_probs, (x,), {}),
        ("masked_token_probs", hmm.masked_token_probs, (x, [1]), {}),
        ("prepended_mask_probs", hmm.prepended_mask_probs, (x,), {}),
        ("state_posterior", hmm.state_posterior, (x,), {"smoothed": True}),
        ("memory_posterior", mem.memory_posterior, (np.asarray(mem.sample(0, 2, 4)),), {}),
        ("loglinear.true_representation", ll.true_representation, (np.asarray(ll.sample(0, 2, 3)),), {}),
        ("entropy_rate", hmm.entropy_rate, (0, 2, 4), {}),
        ("cross_entropy", hmm.cross_entropy, (x,), {}),
        ("prompt_reweighting", hmm.prompt_reweighting, (np.ones(3),), {}),
        ("prompted_state_posterior", hmm.prompted_state_posterior, (x, np.ones(3)), {}),
        ("enumerate_contexts", enumerate_contexts, (hmm, 1), {}),
        ("exact_epsilon", exact_epsilon, (hmm, lm, x), {}),
        ("exact_masked_epsilon", exact_masked_epsilon, (hmm, lm, x), {}),
        ("divergence_report", divergence_report, (hmm, lm, x), {"masked": False}),
        ("observed_logprobs", observed_logprobs, (np.asarray(hmm.next_token_logprobs(x)), x), {}),
        ("perturbed_lm", perturbed_lm, (hmm, 0.05, "logit-noise", 0), {"n_eval": 4, "eval_length": 4}),
        ("perturbation_params", perturbation_params, ("rare-words", 4, 0, hmm.next_token_logprobs(x)), {"colder": False}),
        ("epsilon_of_scale", epsilon_of_scale, ("uniform-mixture", hmm.next_token_logprobs(x), 0.5, {}),
         {"weights": np.full(x.shape, 1 / x.size)}),
        ("solve_scale", solve_scale, (lambda s: s * s, 0.25), {"upper": 10.0, "accept": 1e-6}),
        ("WorldLM.next_token_logprobs", lm.next_token_logprobs, (x,), {}),
        ("TransformerConfig", TransformerConfig, (), {"n_symbols": 4, "d_model": 8, "n_heads": 2, "max_len": 8}),
        ("TrainConfig", TrainConfig, (), {"targets": (0.1,), "batch_size": 4, "max_steps": 10}),
        ("make_posterior_task", make_posterior_task, (hmm, 0), {}),
        ("sample_task_data", sample_task_data, (hmm, task, 0, 4, 5), {}),
        ("task_features", task_features, (lm, x, task), {}),
        ("fit_linear_head", fit_linear_head, (feats, np.array([0, 1, 0, 1])), {"steps": 5}),
        ("emission_rank", emission_rank, (hmm,), {"tol": 1e-10}),
        ("head_realisability", head_realisability, (hmm, np.array([1.0, -1.0, 0.0])), {}),
        ("prompt_feasibility", prompt_feasibility, (hmm, np.array([1.0, -1.0, 0.0])), {"k": 1}),
        ("random_natural_task", random_natural_task, (contexts, 0), {"noise": "sign"}),
        ("check_natural_task", check_natural_task, (contexts, lm, ntask), {"atol": 1e-7}),
        ("parse_config", lambda raw: parse_config(raw), (config,), {}),
    ]


def _cases():
    cases = []
    for name, fn, args, kwargs in _surface():
        for i in range(len(args)):
            for label, value in BAD.items():
                cases.append((f"{name}[arg{i}={label}]", fn, args[:i] + (value,) + args[i + 1:], kwargs))
        for key in kwargs:
            for label, value in BAD.items():
                cases.append((f"{name}[{key}={label}]", fn, args, {**kwargs, key: value}))
    return cases


def _has_nan(out) -> bool:
    if isinstance(out, (tuple, list)):
        return any(_has_nan(o) for o in out)
    try:
        arr = np.asarray(out)
    except Exception:  # an object (a world, an LM, a result record): its numbers are checked elsewhere
        return False
    return arr.dtype.kind in "fc" and bool(np.isnan(arr).any())


def test_every_hostile_input_gets_a_typed_error_or_a_finite_answer():
    cases = _cases()
    raw, silent, typed, answered = [], [], 0, 0
    for label, fn, args, kwargs in cases:
        try:
            out = fn(*args, **kwargs)
        except SimlmError:
            typed += 1
            continue
        except Exception as err:  # noqa: BLE001 — the point is to catch every untyped error
            raw.append(f"{label}: {type(err).__name__}: {str(err)[:120]}")
            continue
        if _has_nan(out):
            silent.append(f"{label}: returned NaN")
        else:
            answered += 1
    print(f"\nfuzz: {len(cases)} hostile inputs over {len(_surface())} entry points — {typed} typed errors, "
          f"{answered} finite answers, {len(raw)} raw errors, {len(silent)} silent NaNs")
    assert len(cases) >= 300
    assert not raw and not silent, "\n".join(raw + silent)
