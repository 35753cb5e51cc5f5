"""Language models: the protocols, the exact world as the ε = 0 LM, transformers, analytic ε-optimal LMs
and softmax LMs over a finite set of contexts."""

from simlm.models.base import LanguageModel, MaskedLanguageModel, SoftmaxLanguageModel, WorldLM
from simlm.models.finite import SoftmaxContextLM, fit_cross_entropy, fit_cross_entropy_joint
from simlm.models.perturbed import PerturbedLM, perturbed_lm
from simlm.models.transformer import Transformer, TransformerConfig, TransformerLM, init_transformer

__all__ = ["LanguageModel", "MaskedLanguageModel", "SoftmaxLanguageModel", "WorldLM", "Transformer",
           "TransformerConfig", "TransformerLM", "init_transformer", "perturbed_lm", "PerturbedLM",
           "SoftmaxContextLM", "fit_cross_entropy", "fit_cross_entropy_joint"]
