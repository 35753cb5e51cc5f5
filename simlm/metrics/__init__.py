"""Exact measurements of a language model against the world's optimal one: ε (KL), total variation and
cross-entropies, with standard errors over sequences.  Every layer above the worlds uses them."""

from simlm.metrics.epsilon import (DivergenceReport, divergence_report, exact_epsilon, exact_masked_epsilon,
                                   exact_prepended_epsilon, kl_per_sequence, observed_logprobs, tv_per_sequence)

__all__ = ["kl_per_sequence", "tv_per_sequence", "observed_logprobs", "exact_epsilon", "exact_masked_epsilon",
           "exact_prepended_epsilon", "DivergenceReport", "divergence_report"]
