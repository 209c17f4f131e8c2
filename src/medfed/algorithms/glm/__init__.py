"""Generalized linear models fitted by federated IRLS: the ``glm`` algorithm.

Modules: :mod:`.families` (link, variance, deviance and log-likelihood of the gaussian,
binomial and poisson families), :mod:`.design` (parameters, schema checks, levels and the
design matrix), :mod:`.local` (the node's step and its gate rules), :mod:`.fit` (the
hub's linear algebra and final statistics), :mod:`.irls` (the algorithm and its rounds)
and :mod:`.results` (the typed result with its summary table and forest plot).

What leaves a node: round 0 sends row and level counts (gated), rounds 1.. send the
IRLS aggregates ``X'WX``, ``X'W r``, deviance, Pearson chi² and log-likelihood sums at the
broadcast coefficients. :mod:`.irls` spells it out; ``docs/algorithms/glm.md`` too.

Weights: ``weights`` are prior weights (statsmodels' ``var_weights``), ``freq_weights``
frequency weights (statsmodels' ``freq_weights``: a row of weight f counts as f rows, so
``n`` and the residual degrees of freedom come from the sum of the weights). The gate's row
rules (``MinRows``, cells, ``max_param_fraction``) count actual rows, not weighted ones.
"""
