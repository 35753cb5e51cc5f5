"""Experiments: sweeps that compose the worlds, models, training and theory layers, with their results
stores, tables and plots.

- :mod:`simlm.experiments.head_prompt` — Wei, Xie & Ma (NeurIPS 2021): head and prompt tuning against
  the number of hidden states, and memory tasks with an attention head (``python -m
  simlm.experiments.head_prompt experiment1|experiment2``).
- :mod:`simlm.experiments.natural_tasks` — Saunshi, Malladi & Arora (ICLR 2021): natural-task transfer
  swept over ε and γ.
"""
