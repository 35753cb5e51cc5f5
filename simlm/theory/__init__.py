"""Theories of pretrained LMs checked against exact worlds: one module per paper, each returning frozen
records with every number and whether the statement holds.

- :mod:`simlm.theory.natural_tasks` — Saunshi, Malladi & Arora (ICLR 2021): natural tasks and the
  O(√ε) transfer bounds for p_f, Φp_f and Quad features; :mod:`simlm.theory.log_partition` — its
  quadratic log-partition view.
- :mod:`simlm.theory.head_prompt` — Wei, Xie & Ma (NeurIPS 2021): when head and prompt tuning on the
  masked LM's output recover posterior tasks 1[μᵀP(H_0|x) ≥ 0]; :mod:`simlm.theory.head_prompt_margins` — the
  soft-zero range of its prompt condition and label margins.
"""

from simlm.theory import head_prompt, head_prompt_margins, log_partition, natural_tasks
from simlm.theory.natural_tasks import NaturalTask, NaturalTaskCheck, check_natural_task, natural_task, random_natural_task

__all__ = ["head_prompt", "head_prompt_margins", "log_partition", "natural_tasks", "NaturalTask", "NaturalTaskCheck", "check_natural_task",
           "natural_task", "random_natural_task"]
