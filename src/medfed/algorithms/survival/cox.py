"""``cox``: Cox proportional hazards by federated Newton-Raphson on the exact likelihood.

Rounds: round 0 agrees the design and the global event times; each later round is one
Newton-Raphson evaluation at the broadcast ``beta``. What leaves a node in each round,
and the gate rules, are in :mod:`medfed.algorithms.survival.cox_local`: in round 0
pooled-moment pieces (``n``, ``Σx``, ``Σ(x - mean)²``) of numeric covariates, level counts
of categorical ones, and the distinct event times with event counts per stratum; in
every Newton round, per stratum and agreed event time, the number at risk, the number of
events, and the sums ``Σ w``, ``Σ w x``, ``Σ w x x'`` over the node's risk set (and over
its tied events where the pooled events at that time number two or more, for Efron),
plus ``Σ x`` over its events. Gate: ``MinRows("rows")``, ``Cells("at_risk")``,
``Cells("levels")``; the node refuses with fewer than ``min_rows`` rows, a stratum or a
categorical level under ``min_cell_count`` rows, or more parameters than
``max_param_fraction`` of its rows; the risk-set rule of
:mod:`medfed.algorithms.survival.times` coarsens each stratum's tail.

The hub (:mod:`medfed.algorithms.survival.cox_math`) assembles the pooled log partial
likelihood, gradient and Hessian exactly and takes Newton steps, halving a step that
lowers the likelihood. It stops when the largest step on the scaled covariates is under
``tol``; the reported coefficients include that last step, standard errors come from the
inverse of the negative Hessian. A Hessian that is not clearly positive definite fails
the task as a singular design (collinear covariates, or a covariate that separates the
events); so does no convergence within ``max_iter`` evaluations, a coefficient beyond
25 per standard deviation of its covariate (a hazard ratio of e^25: monotone likelihood),
or a coefficient whose information fell below 1e-8 of its value at ``beta = 0`` (the
likelihood has gone flat: monotone likelihood, caught even when rounding makes the step
look converged).

When a node coarsened, one more round evaluates the converged ``beta`` and the nodes add
the unweighted risk-set sums; the result then carries ranges for the uncoarsened fit's
coefficients, z and p values (:mod:`medfed.algorithms.survival.cox_bounds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, Field

from medfed.algorithms.base import (
    Algorithm,
    Cells,
    Finished,
    LocalContext,
    MinRows,
    NextRound,
    NodeOutput,
    Rule,
)
from medfed.algorithms.stats._common import check_where, require_column
from medfed.algorithms.survival import cox_local
from medfed.algorithms.survival.cox_bounds import cox_bound, with_bound
from medfed.algorithms.survival.cox_math import assemble, set_up
from medfed.algorithms.survival.results import CoxResult
from medfed.algorithms.survival.times import (
    SurvivalParams,
    check_nodes,
    check_survival_columns,
    first_round_datasets,
)
from medfed.common.errors import BadRequest
from medfed.common.schemas import DatasetSchema

__all__ = ["Cox", "CoxParams"]

Floats = NDArray[np.float64]

MAX_HALVINGS = 30
MAX_SCALED_COEF = 25.0  # |beta| per standard deviation of a covariate: e^25 is no fit
FLAT = 1e-8  # information of a coefficient, relative to its value at beta = 0: diverging


class CoxParams(SurvivalParams):
    covariates: list[str] = Field(min_length=1, max_length=100)
    categorical: list[str] = Field(default_factory=list, max_length=100)
    strata: str | None = Field(default=None, min_length=1)
    ties: Literal["efron", "breslow"] = "efron"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    max_iter: int = Field(default=50, ge=1, le=98)
    tol: float = Field(default=1e-9, gt=0, le=1e-3)


class Cox(Algorithm[CoxParams]):
    name = "cox"
    summary = "Cox proportional hazards (Efron or Breslow ties, strata), exact pooled fit"
    Params = CoxParams
    Result: ClassVar[type[BaseModel]] = CoxResult
    max_rounds = 101  # round 0, up to 98 Newton rounds, the bound's round
    requires_every_dataset = True

    def validate(self, params: CoxParams, schemas: Sequence[DatasetSchema]) -> None:
        check_survival_columns(self.name, params, schemas)
        special = {params.duration, params.event} | ({params.strata} if params.strata else set())
        if len(set(params.covariates)) != len(params.covariates):
            raise BadRequest("cox: a covariate is named twice")
        for column in params.covariates:
            if column in special:
                raise BadRequest(f"cox: '{column}' is the duration, event or strata column")
            require_column(self.name, schemas, column)
            for schema in schemas:
                found = schema.column(column)
                if found and not found.type.numeric and column not in params.categorical:
                    raise BadRequest(
                        f"cox: covariate '{column}' is {found.type}; list it in categorical"
                    )
        for column in params.categorical:
            if column not in params.covariates:
                raise BadRequest(f"cox: categorical '{column}' is not one of the covariates")
        if params.strata:
            require_column(self.name, schemas, params.strata)
        check_where(self.name, params, schemas)

    def disclosure(self, params: CoxParams) -> list[Rule]:
        return [MinRows("rows"), Cells("at_risk"), Cells("levels")]

    def local(self, params: CoxParams, ctx: LocalContext) -> dict[str, Any]:
        return cox_local.scan(params, ctx)

    def aggregate(
        self,
        params: CoxParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
    ) -> Finished | NextRound:
        if round == 0:
            payloads = [o.payload for o in outputs if o.status == "ok" and o.payload]
            if not payloads:
                raise BadRequest("cox: no node gave an unsuppressed answer")
            agreed = set_up(params.covariates, params.categorical, params.ties, payloads)
            if agreed["events"] == 0:
                raise BadRequest("cox: no events at any node, nothing to fit")
            return NextRound(
                agreed
                | {
                    "datasets": first_round_datasets(outputs),
                    "coarsened": any(bool(p.get("coarsened")) for p in payloads),
                    "suppressed": len(outputs) - len(payloads),
                    "beta": [0.0] * len(agreed["columns"]),
                    "iteration": 0,
                    "halvings": 0,
                    "best": None,
                    "ll0": None,
                }
            )
        payloads = check_nodes(self.name, state, outputs)
        ll, grad, hess = assemble(payloads, state)
        beta = np.asarray(state["beta"], dtype=np.float64)
        if state.get("final"):  # coarsened: the converged fit again, with its bound
            information = -(hess + hess.T) / 2
            bound = cox_bound(payloads, state, grad)
            result = _result(
                params, state, beta, information, ll, float(state["ll0"]), state["iteration"]
            )
            return Finished(with_bound(result, bound, np.asarray(state["scale"])))
        iteration = int(state["iteration"]) + 1
        ll0 = ll if state["ll0"] is None else float(state["ll0"])
        best = state["best"]
        if not np.isfinite(ll) or (
            best is not None and ll < best["ll"] - 1e-10 * (1 + abs(best["ll"]))
        ):
            if best is None or state["halvings"] >= MAX_HALVINGS:
                raise BadRequest("cox: the likelihood could not be increased; the fit diverged")
            self._check_budget(params, iteration)
            middle = (np.asarray(best["beta"]) + beta) / 2
            return NextRound(
                state
                | {
                    "beta": middle.tolist(),
                    "iteration": iteration,
                    "halvings": state["halvings"] + 1,
                    "ll0": ll0,
                }
            )
        information = -(hess + hess.T) / 2
        info0 = state.get("info0") or np.diag(information).tolist()
        _check_flat(information, info0, state["columns"])
        delta = _newton_step(information, grad, state["columns"])
        if float(np.max(np.abs(delta), initial=0.0)) < params.tol:
            if state["coarsened"]:  # one more evaluation at the fit, for the bound
                return NextRound(
                    state
                    | {"beta": (beta + delta).tolist(), "iteration": iteration, "ll0": ll0}
                    | {"final": True, "info0": info0}
                )
            return Finished(_result(params, state, beta + delta, information, ll, ll0, iteration))
        self._check_budget(params, iteration, float(np.max(np.abs(delta))))
        if float(np.max(np.abs(beta + delta))) > MAX_SCALED_COEF:
            names = [n for n, b in zip(state["columns"], beta + delta, strict=True) if abs(b) > 10]
            raise BadRequest(
                "cox: did not converge: the coefficients of "
                f"{', '.join(names)} are diverging (over {MAX_SCALED_COEF:g} per standard "
                "deviation); a covariate separates the events (monotone likelihood)"
            )
        return NextRound(
            state
            | {
                "beta": (beta + delta).tolist(),
                "best": {"beta": beta.tolist(), "ll": ll},
                "iteration": iteration,
                "halvings": 0,
                "ll0": ll0,
                "info0": info0,
            }
        )

    def _check_budget(self, params: CoxParams, iteration: int, step: float | None = None) -> None:
        if iteration >= params.max_iter:
            size = "" if step is None else f" (last step {step:.3g} on the scaled covariates)"
            raise BadRequest(
                f"cox: Newton-Raphson did not converge in {params.max_iter} iterations{size}; "
                "a coefficient may be diverging (a covariate that separates the events), or "
                "raise max_iter"
            )


def _check_flat(information: Floats, info0: Sequence[float], names: Sequence[str]) -> None:
    """A coefficient whose information fell under ``FLAT`` times its value at ``beta = 0``
    lies where the likelihood has gone flat: it diverges (monotone likelihood). Caught
    here because such a fit can also meet the step rule by rounding (gradient and
    information both ~1e-13)."""
    flat = np.diag(information) < FLAT * np.asarray(info0, dtype=np.float64)
    if flat.any():
        raise BadRequest(
            "cox: did not converge: the likelihood is flat in the coefficients of "
            f"{', '.join(n for n, f in zip(names, flat, strict=True) if f)}; a covariate "
            "separates the events (monotone likelihood)"
        )


def _newton_step(information: Floats, grad: Floats, names: Sequence[str]) -> Floats:
    """Solve ``information @ delta = grad``; a singular information matrix is a BadRequest."""
    if not np.all(np.isfinite(information)):
        raise BadRequest("cox: the Hessian is not finite; the fit diverged")
    values, vectors = np.linalg.eigh(information)
    if values[0] <= 1e-10 * max(values[-1], 1e-300):
        weak = [n for n, v in zip(names, vectors[:, 0], strict=True) if abs(v) > 0.3]
        raise BadRequest(
            "cox: singular design: the information matrix is not invertible; these "
            "covariates are collinear, do not vary within strata, or separate the events "
            f"(monotone likelihood): {', '.join(weak)}"
        )
    return np.asarray(np.linalg.solve(information, grad), dtype=np.float64)


def _result(
    params: CoxParams,
    state: dict[str, Any],
    beta: Floats,
    information: Floats,
    ll: float,
    ll0: float,
    iteration: int,
) -> dict[str, Any]:
    from scipy import stats  # scipy.stats costs ~1 s to import: loaded where it is used

    scale = np.asarray(state["scale"], dtype=np.float64)
    coef = beta / scale
    cov = np.linalg.inv(information)
    se = np.sqrt(np.diag(cov)) / scale
    z = coef / se
    q = float(stats.norm.ppf(1 - params.alpha / 2))
    lr = max(2 * (ll - ll0), 0.0)
    result = {
        "covariates": state["columns"],
        "coef": coef.tolist(),
        "se": se.tolist(),
        "z": z.tolist(),
        "p": stats.chi2.sf(z**2, 1).tolist(),
        "hazard_ratio": np.exp(coef).tolist(),
        "hr_lower": np.exp(coef - q * se).tolist(),
        "hr_upper": np.exp(coef + q * se).tolist(),
        "alpha": params.alpha,
        "log_likelihood": ll,
        "log_likelihood_null": ll0,
        "lr_statistic": lr,
        "lr_df": len(coef),
        "lr_p_value": float(stats.chi2.sf(lr, len(coef))),
        "rows": state["rows"],
        "events": state["events"],
        "iterations": iteration,
        "ties": params.ties,
        "strata": list(state["times"]) if params.strata else None,
        "coarsened": state["coarsened"],
        "suppressed_nodes": state["suppressed"],
    }
    return CoxResult.model_validate(result).model_dump()
