"""Theories of pretrained LMs checked against exact worlds: one module per paper, each returning frozen
records with every number and whether the statement holds.

- :mod:`simlm.theory.head_prompt` — Wei, Xie & Ma (NeurIPS 2021): when head and prompt tuning on the
  masked LM's output recover posterior tasks 1[μᵀP(H_0|x) ≥ 0].
"""

from simlm.theory import head_prompt

__all__ = ["head_prompt"]
