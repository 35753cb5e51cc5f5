"""Downstream adaptation (Wei, Xie & Ma, NeurIPS 2021): tasks whose labels are functions of exact
posteriors, heads on a frozen LM's predicted distribution, and prompt tuning (with a linear head on the
law at a prepended mask, or with an attention head over every position for memory tasks), all fitted by
one routine over "a prompted law" and "a head" (:mod:`simlm.downstream.prompt_fit`)."""

from simlm.downstream.heads import (AttentionHead, AttentionLogits, HeadLogits, LinearHead, LinearLogits,
                                    fit_attention_head, fit_linear_head)
from simlm.downstream.head_tuning import HeadTuningResult, attention_features, head_tuning, task_features
from simlm.downstream.prompt_fit import fit_prompt
from simlm.downstream.prompts import (ExactPromptResult, TransformerPromptResult, fit_exact_prompt,
                                      fit_transformer_prompt)
from simlm.downstream.attention_prompts import (ExactAttentionPromptResult, TransformerAttentionPromptResult,
                                                fit_exact_attention_prompt, fit_transformer_attention_prompt)
from simlm.downstream.tasks import (POSITIONS, MemoryTask, PosteriorTask, bayes_ceiling, bayes_ceiling_bracket,
                                    data_chain, make_memory_task, make_posterior_task, sample_continuations,
                                    sample_task_data, sparse_direction, sparse_label_matrix)

__all__ = ["POSITIONS", "PosteriorTask", "MemoryTask", "sparse_label_matrix", "sparse_direction",
           "make_posterior_task", "make_memory_task", "sample_task_data", "data_chain",
           "sample_continuations", "bayes_ceiling", "bayes_ceiling_bracket", "task_features", "attention_features",
           "HeadLogits", "LinearLogits", "AttentionLogits", "LinearHead", "fit_linear_head", "AttentionHead",
           "fit_attention_head",
           "HeadTuningResult", "head_tuning", "fit_prompt", "ExactPromptResult", "fit_exact_prompt",
           "TransformerPromptResult", "fit_transformer_prompt", "ExactAttentionPromptResult",
           "fit_exact_attention_prompt", "TransformerAttentionPromptResult", "fit_transformer_attention_prompt"]
