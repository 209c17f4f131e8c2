"""The registry of algorithms by name: a plain dict of instances, no import magic.

The hub looks up a task's algorithm here when the task is created and when a round is
aggregated; the node looks it up to run the local step; the SDK to type the result. A new
algorithm is added by importing its class below and listing an instance.
"""

from __future__ import annotations

from typing import Any

from medfed.algorithms.base import Algorithm
from medfed.algorithms.stats.count import Count
from medfed.algorithms.stats.crosstab import Crosstab
from medfed.algorithms.stats.histogram import Histogram
from medfed.algorithms.stats.moments import Mean, Summary, Variance
from medfed.algorithms.stats.noop import Noop
from medfed.common.errors import BadRequest

__all__ = ["algorithm_names", "get_algorithm"]

_ALGORITHMS: dict[str, Algorithm[Any]] = {
    algorithm.name: algorithm
    for algorithm in (
        Count(),
        Mean(),
        Variance(),
        Summary(),
        Histogram(),
        Crosstab(),
        Noop(),
    )
}


def get_algorithm(name: str) -> Algorithm[Any]:
    """The algorithm called ``name``; :class:`BadRequest` names the known ones otherwise."""
    try:
        return _ALGORITHMS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_ALGORITHMS))
        raise BadRequest(f"unknown algorithm {name!r} (known: {known})") from None


def algorithm_names() -> list[str]:
    """Every registered name, sorted."""
    return sorted(_ALGORITHMS)


def _descriptives_and_tests() -> list[Algorithm[Any]]:
    """Quantiles, covariance/correlation, grouped summaries, Welch t-test, chi-square."""
    from medfed.algorithms.stats.covariance import Correlation, Covariance
    from medfed.algorithms.stats.grouped import GroupedSummary
    from medfed.algorithms.stats.quantiles import Quantiles
    from medfed.algorithms.stats.tests_chisq import ChiSquare
    from medfed.algorithms.stats.tests_ttest import TTest

    return [Quantiles(), Covariance(), Correlation(), GroupedSummary(), TTest(), ChiSquare()]


_ALGORITHMS.update({algorithm.name: algorithm for algorithm in _descriptives_and_tests()})


def _survival() -> list[Algorithm[Any]]:
    """Kaplan-Meier, log-rank test, Cox proportional hazards."""
    from medfed.algorithms.survival.cox import Cox
    from medfed.algorithms.survival.km import KaplanMeier
    from medfed.algorithms.survival.logrank import Logrank

    return [KaplanMeier(), Logrank(), Cox()]


_ALGORITHMS.update({algorithm.name: algorithm for algorithm in _survival()})


def _glm() -> list[Algorithm[Any]]:
    """Generalized linear models by federated IRLS."""
    from medfed.algorithms.glm.irls import GLM

    return [GLM()]


_ALGORITHMS.update({algorithm.name: algorithm for algorithm in _glm()})


def _learning() -> list[Algorithm[Any]]:
    """Federated training of approved plans."""
    from medfed.algorithms.learning.fedtrain import FedTrain

    return [FedTrain()]


_ALGORITHMS.update({algorithm.name: algorithm for algorithm in _learning()})


def _scripts() -> list[Algorithm[Any]]:
    """Researcher scripts, run in each node's sandbox with their outputs checked."""
    from medfed.algorithms.scripts.script import ScriptRun

    return [ScriptRun()]


_ALGORITHMS.update({algorithm.name: algorithm for algorithm in _scripts()})


def _validation() -> list[Algorithm[Any]]:
    """Validation of ONNX models on each site's patients (issue 17)."""
    from medfed.algorithms.validation.algorithm import Validation

    return [Validation()]


_ALGORITHMS.update({algorithm.name: algorithm for algorithm in _validation()})


def _cohorts() -> list[Algorithm[Any]]:
    """A saved cohort's counts and attrition at each OMOP node (issue 16)."""
    from medfed.algorithms.cohorts.counts import CohortCounts

    return [CohortCounts()]


_ALGORITHMS.update({algorithm.name: algorithm for algorithm in _cohorts()})
