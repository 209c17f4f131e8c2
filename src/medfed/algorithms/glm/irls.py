"""``glm``: a generalized linear model fitted by federated IRLS, equal to statsmodels' GLM.

Rounds:

- **Round 0 — levels.** Each node sends its row count, the level counts of categorical
  covariates, binomial outcome counts and five sums (:func:`.local.round0`); a node with
  a rare level or outcome class withholds (the gate's ``Grid`` rule). The hub agrees the
  sorted levels over the contributing nodes (first = reference), checks the outcome, and
  broadcasts the levels, the pooled mean of the outcome (statsmodels' starting means) and
  the null model's intercept. Only the nodes that contributed to round 0 get the later
  rounds (:meth:`GLM.participants`).
- **Rounds 1, 2, … — IRLS.** Each node sends ``X'WX``, the score, deviance, Pearson chi²,
  log-likelihood and boundary counts at the broadcast coefficients (round 1: statsmodels'
  starting means), and the same for the intercept-only null model (:func:`.local.irls_sums`).
  The hub pools them and takes a Newton (Fisher scoring) step, exactly statsmodels' IRLS
  step, until the deviance (divided by the scale for gaussian) changes by at most ``tol``
  from one iteration to the next — statsmodels' own rule, with one addition: a change
  within ``ULPS`` units in the last place of the deviance also counts as converged
  (:func:`_settled`), because an absolute ``tol`` is finer than float64 can resolve once
  the deviance is in the tens of millions (50,000,000 rows never converged; on data of
  usual size the floor is far below ``tol`` and nothing changes) — then reports the coefficients
  of the last step with standard errors from the ``X'WX`` of that step's weights, which
  the nodes send again as ``xtwx_prev``. The null model (statsmodels' ``null_deviance``)
  is fitted alongside when there is an offset; without one it is the weighted mean of the
  outcome, known after round 0.

What leaves a node in each round is listed in :mod:`.local`. What the hub broadcasts (the
state every node receives): ``levels``, ``ybar``, ``beta`` and ``beta_prev``, the null
model's intercept, and the hub's bookkeeping under ``hub`` (pooled ``n`` and ``Σ log w``,
the last scaled deviances, the null deviance, iteration counts, the ids of the datasets
that answered round 0) — never a pooled ``X'WX``. Gate rules: at the node,
``gate: min_rows`` and ``gate: max_param_fraction`` refuse the run; the gate applies
``MinRows("rows")`` and ``Grid`` to ``levels``, ``outcome_counts`` (a binomial class of
1..k-1 rows) and ``boundary``, and the row-set memory checks the complete cases and level
cells. A node that withholds in round 0 does not contribute: the fit is exact over the
others. One that contributed to round 0 and withholds later fails the fit (without saying
which) — it would not be exact.

Frequency weights (``freq_weights``, statsmodels' ``freq_weights``): each row counts as
that many observations. ``n`` (statsmodels' ``model.wnobs``; its ``results.nobs`` counts
rows), the residual degrees of freedom ``n - p``, the gaussian scale (Pearson chi² over
``n - p``), the log-likelihood and AIC come from the sum of the weights; the IRLS sums are
weighted by frequency times prior weight, so the fit equals statsmodels' and the fit on
the expanded rows. The row-count rules do not: the node's refusals and the gate count
actual rows (rows of weight 0 are left out first), and so do the hub's "no more rows than
parameters" check and the gate's rare-level (``Grid``) rule.

Errors (:class:`~medfed.common.errors.BadRequest`, the task fails with the message): no
convergence within ``max_iter`` iterations, perfect separation, a singular design (naming
the columns), an outcome with one class or all zeros, no more rows than parameters; at
the node, a frequency weight that is null, negative, fractional or infinite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from medfed.algorithms.base import (
    Algorithm,
    Finished,
    Grid,
    LocalContext,
    MinRows,
    NextRound,
    NodeOutput,
    Rule,
)
from medfed.algorithms.glm import fit
from medfed.algorithms.glm.design import (
    MAX_ITER,
    Design,
    GLMParams,
    agreed_levels,
    validate_params,
)
from medfed.algorithms.glm.families import FAMILIES, Family
from medfed.algorithms.glm.local import irls_sums, round0
from medfed.algorithms.glm.results import GLMResult
from medfed.common.errors import BadRequest
from medfed.common.schemas import DatasetSchema

__all__ = ["GLM"]


def _answers(outputs: Sequence[NodeOutput], expected: list[int] | None) -> list[dict[str, Any]]:
    """The contributing answers' payloads.

    In round 0 a node that withheld its answer simply does not contribute (the fit is the
    exact pooled fit over the others). In later rounds every node of round 0 must answer:
    one that withholds part-way fails the fit, without saying which.
    """
    answered = [o for o in outputs if o.status == "ok" and o.payload is not None]
    if not answered:
        raise BadRequest("glm: no node contributed to the fit")
    got = sorted(o.dataset_id for o in answered)
    if expected is not None and got != expected:
        raise BadRequest(
            "glm: a node that contributed to round 0 withheld a later round (for example "
            "when fitted means reach 0 or 1 there: separation); a GLM without it would not "
            "be exact"
        )
    return [o.payload for o in answered if o.payload is not None]


def _levels(params: GLMParams, payloads: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """The agreed levels of each categorical covariate (nodes with a rare one withheld)."""
    out: dict[str, list[str]] = {}
    for column in params.covariates:
        if not any(column in p["kinds"] for p in payloads):
            continue
        reported = [p["levels"].get(column, {}) for p in payloads]
        kinds = {p["kinds"][column] for p in payloads if column in p["kinds"]}
        levels = agreed_levels(column, reported, kinds)
        if len(levels) < 2:
            raise BadRequest(
                f"glm: categorical column '{column}' has a single level in the selected rows"
            )
        out[column] = levels
    return out


def _start(
    params: GLMParams, family: Family, payloads: Sequence[dict[str, Any]], datasets: list[int]
) -> NextRound:
    """Round 0's aggregate: agree levels, check the outcome, broadcast the start."""
    rows = sum(int(p["rows"]) for p in payloads)
    if rows == 0:
        raise BadRequest("glm: no rows match (after leaving out rows with nulls)")
    levels = _levels(params, payloads)
    design = Design(params.intercept, params.covariates, levels)
    if rows <= design.size:
        raise BadRequest(f"glm: {rows} rows for {design.size} parameters; need more rows")
    sums = {key: sum(float(p["sums"][key]) for p in payloads) for key in ("y", "w", "wy", "log_w")}
    # observations: the sum of the frequency weights (the row count without them)
    n = round(sum(float(p["sums"].get("nobs", p["rows"])) for p in payloads))
    if params.family == "binomial":
        classes = [p["outcome_counts"] for p in payloads]
        if any(sum(int(pair[i]) for pair in classes) == 0 for i in (0, 1)):
            raise BadRequest(f"glm: binomial outcome '{params.outcome}' has a single class")
    if params.family == "poisson" and sums["y"] <= 0:
        raise BadRequest(f"glm: poisson outcome '{params.outcome}' is 0 in every row")
    ybar = sums["y"] / rows  # statsmodels starts from the plain mean over the rows
    mean = ybar if params.offset is not None else sums["wy"] / sums["w"]
    null_beta = float(family.link_fn(np.asarray([mean]))[0])
    hub = {
        "n": n,
        "log_w": sums["log_w"],
        "datasets": datasets,
        "iterations": 0,
        "sdev": None,
        "null_sdev": None,
        "null_iterations": 0,
        "null_fixed": params.offset is None,
        "null_deviance": None,
        "main_done": False,
    }
    state = {
        "levels": levels,
        "ybar": ybar,
        "beta": None,
        "beta_prev": None,
        "has_prev": False,
        "null_beta": null_beta,
        "hub": hub,
    }
    return NextRound(state)


#: changes of the deviance within this many units in its last place count as none
ULPS = 64


def _settled(value: float, previous: float | None, tol: float) -> bool:
    """statsmodels' test ``|value - previous| <= tol``, or a change at float64's noise."""
    if previous is None:
        return False
    floor = ULPS * float(np.spacing(max(abs(value), abs(previous))))
    return abs(value - previous) <= max(tol, floor)


def _scaled_deviance(family: Family, deviance: float, pearson: float, df: int) -> float:
    """statsmodels' convergence quantity: the deviance over the scale estimate."""
    if not family.estimates_scale:
        return deviance
    return deviance / (pearson / df) if pearson > 0 and df > 0 else 0.0


class GLM(Algorithm[GLMParams]):
    name = "glm"
    summary = "Generalized linear model (gaussian, binomial, poisson) by federated IRLS"
    Params = GLMParams
    Result = GLMResult
    max_rounds: ClassVar[int] = MAX_ITER + 3
    requires_every_dataset = True

    def validate(self, params: GLMParams, schemas: Sequence[DatasetSchema]) -> None:
        validate_params(params, schemas)

    def disclosure(self, params: GLMParams) -> list[Rule]:
        return [MinRows("rows"), Grid("levels"), Grid("outcome_counts"), Grid("boundary")]

    def participants(
        self, params: GLMParams, round: int, state: dict[str, Any], dataset_ids: Sequence[int]
    ) -> list[int]:
        """Round 0: every dataset; later rounds: only those that contributed to round 0.

        A node that withheld round 0 (a rare level or outcome class, too few rows) gets no
        later round: its IRLS sums (``X'WX`` over its rare level's rows) would otherwise
        leave it although it withheld, and its answer would fail the fit.
        """
        if round == 0 or "hub" not in state:
            return list(dataset_ids)
        contributed = set(state["hub"]["datasets"])
        return [d for d in dataset_ids if d in contributed]

    def local(self, params: GLMParams, ctx: LocalContext) -> dict[str, Any]:
        return round0(params, ctx) if ctx.round == 0 else irls_sums(params, ctx)

    def aggregate(
        self, params: GLMParams, round: int, state: dict[str, Any], outputs: Sequence[NodeOutput]
    ) -> Finished | NextRound:
        family = FAMILIES[params.family]
        if round == 0:
            payloads = _answers(outputs, None)
            contributing = sorted(o.dataset_id for o in outputs if o.status == "ok" and o.payload)
            return _start(params, family, payloads, contributing)
        payloads = _answers(outputs, state["hub"]["datasets"])
        return self._iterate(params, family, round, state, payloads)

    def _iterate(
        self,
        params: GLMParams,
        family: Family,
        round: int,
        state: dict[str, Any],
        payloads: list[dict[str, Any]],
    ) -> Finished | NextRound:
        hub = dict(state["hub"])
        design = Design(params.intercept, params.covariates, state["levels"])
        names = design.names()
        n, p = int(hub["n"]), design.size
        h = fit.pooled(payloads, "xtwx")
        score = fit.pooled(payloads, "score")
        deviance = float(fit.pooled(payloads, "deviance"))
        pearson = float(fit.pooled(payloads, "pearson"))
        if round == 1:
            fit.check_singular(h, names)
        sdev = _scaled_deviance(family, deviance, pearson, n - p)
        main_done = bool(hub["main_done"]) or _settled(sdev, hub["sdev"], params.tol)
        if state["null_beta"] is not None:
            null_dev = float(fit.pooled(payloads, "null", "deviance"))
            null_pearson = float(fit.pooled(payloads, "null", "pearson"))
            null_sdev = _scaled_deviance(family, null_dev, null_pearson, n - 1)
            if hub["null_fixed"] or _settled(null_sdev, hub["null_sdev"], params.tol):
                hub["null_deviance"] = null_dev
        boundary = fit.pooled_count(payloads, "boundary")
        if main_done:
            x2 = fit.pooled(payloads, "x2")
            self._check_separation(family, h, score, x2, n, boundary, names, int(hub["iterations"]))
        if main_done and hub["null_deviance"] is not None:
            return Finished(
                self._result(params, family, design, state, hub, payloads, deviance, pearson)
            )
        if not main_done and int(hub["iterations"]) >= params.max_iter:
            hint = ""
            if boundary is None or boundary > 0:
                hint = "; fitted means reached the boundary (perfect separation?)"
            raise BadRequest(
                f"glm: IRLS did not converge within max_iter={params.max_iter} iterations{hint}"
            )
        new_state: dict[str, Any] = {**state}
        if not main_done:
            beta = np.zeros(p) if state["beta"] is None else np.asarray(state["beta"])
            step = fit.solve(h, score, int(hub["iterations"]) + 1)
            new_state["beta_prev"] = state["beta"]
            new_state["beta"] = (beta + step).tolist()
            new_state["has_prev"] = True
            hub["iterations"] = int(hub["iterations"]) + 1
        hub["main_done"] = main_done
        hub["sdev"] = sdev
        if hub["null_deviance"] is not None:
            new_state["null_beta"] = None
        elif state["null_beta"] is not None:
            if int(hub["null_iterations"]) >= params.max_iter:
                raise BadRequest(
                    f"glm: the null model did not converge within max_iter={params.max_iter}"
                )
            h0 = float(fit.pooled(payloads, "null", "xtwx"))
            u0 = float(fit.pooled(payloads, "null", "score"))
            new_state["null_beta"] = float(state["null_beta"]) + u0 / h0
            hub["null_sdev"] = null_sdev
            hub["null_iterations"] = int(hub["null_iterations"]) + 1
        new_state["hub"] = hub
        return NextRound(new_state)

    @staticmethod
    def _check_separation(
        family: Family,
        h: np.ndarray[Any, Any],
        score: np.ndarray[Any, Any],
        x2: np.ndarray[Any, Any],
        n: int,
        boundary: int | None,
        names: Sequence[str],
        iteration: int,
    ) -> None:
        if family.estimates_scale:
            return
        what = (
            "probabilities numerically 0 or 1"
            if family.name == "binomial"
            else "means numerically 0"
        )
        step = fit.solve(h, score, iteration + 1)
        j = fit.diverging(step, x2, n)
        if j is not None:
            raise BadRequest(
                f"glm: perfect separation: the coefficient of '{names[j]}' keeps growing and "
                f"fitted {what} occur; the maximum-likelihood estimate does not exist "
                "(leave out or merge the covariate or levels that separate the outcome)"
            )
        if boundary is None or boundary > 0:
            raise BadRequest(
                f"glm: perfect separation: fitted {what} occur at some rows; the "
                "maximum-likelihood estimate does not exist"
            )

    @staticmethod
    def _result(
        params: GLMParams,
        family: Family,
        design: Design,
        state: dict[str, Any],
        hub: dict[str, Any],
        payloads: list[dict[str, Any]],
        deviance: float,
        pearson: float,
    ) -> dict[str, Any]:
        n, p = int(hub["n"]), design.size
        df_resid = n - p
        scale = pearson / df_resid if family.estimates_scale else 1.0
        h_last = fit.pooled(payloads, "xtwx_prev")
        beta = np.asarray(state["beta"], dtype=np.float64)
        names = design.names()
        coefficients = fit.coefficients(names, beta, h_last, scale, int(hub["iterations"]))
        llf = fit.loglik(
            family, float(fit.pooled(payloads, "loglik")), deviance, n, float(hub["log_w"])
        )
        result = {
            "outcome": params.outcome,
            "family": family.name,
            "link": family.link,
            "coefficients": coefficients,
            "reference_levels": {
                c: levels[0]
                for c, levels in state["levels"].items()
                if any(name.startswith(f"{c}[T.") for name in names)
            },
            "n": n,
            "df_model": p - 1,
            "df_resid": df_resid,
            "scale": scale,
            "deviance": deviance,
            "null_deviance": float(hub["null_deviance"]),
            "pearson_chi2": pearson,
            "log_likelihood": llf,
            "aic": -2.0 * llf + 2.0 * p,
            "iterations": int(hub["iterations"]),
            "converged": True,
            "datasets": len(payloads),
        }
        values = [result[k] for k in ("deviance", "null_deviance", "log_likelihood", "scale")]
        if not np.isfinite(np.asarray(values, dtype=np.float64)).all():
            raise BadRequest("glm: the fit produced a non-finite statistic")
        return result
