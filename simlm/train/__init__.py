"""Training LMs to a controlled ε, measured exactly against the world's optimal LM."""

from simlm.train.checkpoint import load_lm
from simlm.metrics.epsilon import divergence_report, exact_epsilon, exact_masked_epsilon, exact_prepended_epsilon
from simlm.train.trainer import (Batch, LadderRecord, TrainConfig, Training, TrainResult, TrainState,
                                 masked_eval_positions, seed_mesh, train)

__all__ = ["train", "TrainConfig", "TrainResult", "LadderRecord", "Training", "TrainState", "Batch", "seed_mesh",
           "masked_eval_positions", "load_lm", "exact_epsilon", "exact_masked_epsilon", "exact_prepended_epsilon",
           "divergence_report"]
