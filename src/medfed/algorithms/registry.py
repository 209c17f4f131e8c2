"""The registry of algorithms by name: each name with the module and class that hold it.

The hub looks up a task's algorithm here when the task is created and when a round is
aggregated; the node looks it up to run the local step; the SDK to type the result. A
module is imported the first time its algorithm is asked for, and the instance is kept:
a hub, node or CLI process pays the import of scipy, pandas or onnxruntime only for the
algorithms it runs (importing every algorithm took about 1 s of each process's start).
A new algorithm is added by listing its name, module and class below;
``tests/unit/test_registry.py`` checks that every entry imports and carries its name, and
that :data:`HUB_CONTEXT` lists exactly those with ``uses_hub_context``.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from medfed.algorithms.base import Algorithm
from medfed.common.errors import BadRequest

__all__ = ["HUB_CONTEXT", "algorithm_names", "get_algorithm"]

#: name -> (module, class)
_WHERE: dict[str, tuple[str, str]] = {
    "count": ("medfed.algorithms.stats.count", "Count"),
    "mean": ("medfed.algorithms.stats.moments", "Mean"),
    "variance": ("medfed.algorithms.stats.moments", "Variance"),
    "summary": ("medfed.algorithms.stats.moments", "Summary"),
    "histogram": ("medfed.algorithms.stats.histogram", "Histogram"),
    "crosstab": ("medfed.algorithms.stats.crosstab", "Crosstab"),
    "noop": ("medfed.algorithms.stats.noop", "Noop"),
    # quantiles, covariance/correlation, grouped summaries, Welch t-test, chi-square
    "quantiles": ("medfed.algorithms.stats.quantiles", "Quantiles"),
    "covariance": ("medfed.algorithms.stats.covariance", "Covariance"),
    "correlation": ("medfed.algorithms.stats.covariance", "Correlation"),
    "grouped_summary": ("medfed.algorithms.stats.grouped", "GroupedSummary"),
    "ttest": ("medfed.algorithms.stats.tests_ttest", "TTest"),
    "chisq": ("medfed.algorithms.stats.tests_chisq", "ChiSquare"),
    # Kaplan-Meier, log-rank test, Cox proportional hazards
    "km": ("medfed.algorithms.survival.km", "KaplanMeier"),
    "logrank": ("medfed.algorithms.survival.logrank", "Logrank"),
    "cox": ("medfed.algorithms.survival.cox", "Cox"),
    # generalized linear models by federated IRLS
    "glm": ("medfed.algorithms.glm.irls", "GLM"),
    # federated training of approved plans
    "fl.train": ("medfed.algorithms.learning.fedtrain", "FedTrain"),
    # researcher scripts, run in each node's sandbox with their outputs checked
    "script.run": ("medfed.algorithms.scripts.script", "ScriptRun"),
    # validation of ONNX models on each site's patients (issue 17)
    "validation": ("medfed.algorithms.validation.algorithm", "Validation"),
    # a saved cohort's counts and attrition at each OMOP node (issue 16)
    "cohort_counts": ("medfed.algorithms.cohorts.counts", "CohortCounts"),
}

#: the algorithms whose aggregate step uses the hub's context (blobs, privacy budget):
#: outside the query budget; named here so that counting a project's tasks loads none
HUB_CONTEXT = frozenset({"fl.train", "validation"})

_LOADED: dict[str, Algorithm[Any]] = {}
_lock = threading.Lock()


def get_algorithm(name: str) -> Algorithm[Any]:
    """The algorithm called ``name``; :class:`BadRequest` names the known ones otherwise."""
    try:
        return _LOADED[name]
    except (KeyError, TypeError):
        pass
    try:
        module, cls = _WHERE[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_WHERE))
        raise BadRequest(f"unknown algorithm {name!r} (known: {known})") from None
    with _lock:
        if name not in _LOADED:
            algorithm: Algorithm[Any] = getattr(importlib.import_module(module), cls)()
            _LOADED[name] = algorithm
        return _LOADED[name]


def algorithm_names() -> list[str]:
    """Every registered name, sorted."""
    return sorted(_WHERE)
