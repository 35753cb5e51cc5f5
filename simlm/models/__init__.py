"""Language models: the protocols (what a model can do, checked statically), the exact world as the ε = 0 LM,
causal and masked transformers, analytic ε-optimal LMs and softmax LMs over a finite set of contexts."""

from simlm.models.base import (LanguageModel, MaskedLanguageModel, NoSuchLawError, SoftmaxLanguageModel,
                               SoftmaxWorldLM, WorldLM)
from simlm.models.finite import SoftmaxContextLM, fit_cross_entropy, fit_cross_entropy_joint
from simlm.models.perturbed import PerturbedLM, perturbed_lm
from simlm.models.transformer import (CausalTransformerLM, MaskedTransformerLM, Transformer, TransformerConfig,
                                      TransformerLM, init_transformer)

__all__ = ["LanguageModel", "MaskedLanguageModel", "SoftmaxLanguageModel", "NoSuchLawError", "WorldLM",
           "SoftmaxWorldLM", "Transformer", "TransformerConfig", "TransformerLM", "CausalTransformerLM",
           "MaskedTransformerLM", "init_transformer", "perturbed_lm", "PerturbedLM", "SoftmaxContextLM",
           "fit_cross_entropy", "fit_cross_entropy_joint"]
