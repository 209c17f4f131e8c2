"""Survival analysis: Kaplan-Meier (``km``), the log-rank test (``logrank``) and Cox
proportional hazards (``cox``), each equal to lifelines on the pooled rows.

What leaves a node in each round and the risk-set rule that coarsens event-time tails
are described in ``times``, ``event_table`` and ``cox_local``, and in
``docs/algorithms/survival.md``.
"""
