"""``validation``: a model's discrimination and calibration on every node's own patients.

Rounds: round 0 each node scores its test rows (in its sandbox) and answers counts and
sums (:mod:`.local`) plus the federated GLM's round-0 answer for ``y ~ logit(score)``;
the hub pools the counts (:mod:`.pooling`) and starts the GLM. Rounds 1.. are the GLM's
own IRLS rounds (the same local and aggregate steps as ``glm``, on the nodes that
answered round 0); when the GLM finishes, the result joins the pooled statistics with
the calibration intercept and slope and the weak recalibration they define.

Per site: each dataset's own statistics are computed the same way from its answer alone
and kept in the result only where the site shares them (private studies: always; shared
studies: the site steward's ``share_site``); the others appear as ``shared: false``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from medfed.algorithms.base import (
    Algorithm,
    Finished,
    Grid,
    HubContext,
    LocalContext,
    MinRows,
    NextRound,
    NodeOutput,
    Rule,
)
from medfed.algorithms.glm.irls import GLM
from medfed.algorithms.validation.local import glm_params, local_step
from medfed.algorithms.validation.params import ValidationParams, validate_params
from medfed.algorithms.validation.pooling import GroupCounts, group_summary
from medfed.algorithms.validation.results import ValidationResult
from medfed.common.errors import BadRequest
from medfed.common.schemas import DatasetSchema

__all__ = ["Validation"]


def _groups(
    params: ValidationParams, outputs: Sequence[NodeOutput]
) -> tuple[dict[str, dict[str, GroupCounts]], dict[int, GroupCounts]]:
    pooled: dict[str, dict[str, GroupCounts]] = {}
    sites: dict[int, GroupCounts] = {}
    for out in outputs:
        payload = out.payload or {}
        shape = payload["vlayout"]
        sums = payload["vsums"]
        for name, levels in payload["vcounts"].items():
            for level, counts in levels.items():
                group = pooled.setdefault(name, {}).setdefault(level, GroupCounts(params.grid))
                group.add(shape, counts, sums[name][level])
        site = GroupCounts(params.grid)
        site.add(shape, payload["vcounts"]["overall"][""], sums["overall"][""])
        sites[out.dataset_id] = site
    return pooled, sites


def pooled_statistics(params: ValidationParams, outputs: Sequence[NodeOutput]) -> dict[str, Any]:
    """Everything but the recalibration, from the round-0 answers."""
    answered = [o for o in outputs if o.status == "ok" and o.payload]
    if not answered:
        raise BadRequest("validation: no site contributed (withheld, small or no consent)")
    pooled, sites = _groups(params, answered)
    thresholds = params.threshold_index
    overall = group_summary(pooled["overall"][""], thresholds)
    subgroups: dict[str, Any] = {}
    for group in params.subgroups:
        levels = pooled.get(group.name, {})
        reporting = [o.dataset_id for o in answered if group.name in (o.payload or {})["vcounts"]]
        subgroups[group.name] = {
            "sites_reporting": sorted(reporting),
            "sites_withheld": len(answered) - len(reporting),
            "levels": {
                level: group_summary(counts, thresholds) for level, counts in sorted(levels.items())
            },
        }
    site_rows = []
    for out in outputs:
        payload = out.payload or {}
        shared = bool(payload.get("vlayout", {}).get("share_site"))
        row: dict[str, Any] = {
            "dataset_id": out.dataset_id,
            "node_id": out.node_id,
            "status": out.status if out.payload else "withheld",
            "shared": shared,
            "summary": None,
        }
        if shared and out.dataset_id in sites:
            row["summary"] = group_summary(sites[out.dataset_id], thresholds)
        site_rows.append(row)
    return {
        "overall": overall,
        "subgroups": subgroups,
        "sites": site_rows,
        "contributing": sorted(o.dataset_id for o in answered),
    }


class Validation(Algorithm[ValidationParams]):
    name = "validation"
    summary = "Validate an ONNX model on each site's patients: discrimination, calibration"
    Params = ValidationParams
    Result = ValidationResult
    max_rounds: ClassVar[int] = 1003

    def validate(self, params: ValidationParams, schemas: Sequence[DatasetSchema]) -> None:
        validate_params(params, schemas)

    def disclosure(self, params: ValidationParams) -> list[Rule]:
        glm = GLM().disclosure(glm_params(params))
        return [*glm, MinRows("rows"), Grid("vcounts")]

    def participants(
        self,
        params: ValidationParams,
        round: int,
        state: dict[str, Any],
        dataset_ids: Sequence[int],
    ) -> list[int]:
        return GLM().participants(glm_params(params), round, state.get("glm", {}), dataset_ids)

    def local(self, params: ValidationParams, ctx: LocalContext) -> dict[str, Any]:
        return local_step(params, ctx)

    #: the pooled round-0 statistics wait for the GLM in a hub blob (see :meth:`aggregate_in`)
    uses_hub_context: ClassVar[bool] = True

    def aggregate_in(
        self,
        params: ValidationParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
        hub: HubContext,
    ) -> Finished | NextRound:
        """On the hub: the round-0 statistics are kept in a blob that nodes cannot fetch
        (the task's state is broadcast to every node with its runs; pooled results of the
        other sites must not travel with it), only its hash in the state."""

        def keep(stats: dict[str, Any]) -> dict[str, Any]:
            data = json.dumps(stats, sort_keys=True).encode()
            return {"stats_blob": hub.blobs.write(data, kind="validation")}

        def fetch(ref: dict[str, Any]) -> dict[str, Any]:
            loaded: dict[str, Any] = json.loads(hub.blobs.read(str(ref["stats_blob"])))
            return loaded

        return self._aggregate(params, round, state, outputs, keep, fetch)

    def aggregate(
        self,
        params: ValidationParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
    ) -> Finished | NextRound:
        """In process (no nodes to broadcast to): the statistics ride in the state."""
        return self._aggregate(
            params, round, state, outputs, lambda stats: {"stats": stats}, lambda ref: ref["stats"]
        )

    def _aggregate(
        self,
        params: ValidationParams,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
        keep: Callable[[dict[str, Any]], dict[str, Any]],
        fetch: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> Finished | NextRound:
        glm = GLM()
        if round == 0:
            stats = pooled_statistics(params, outputs)
            kept = keep(stats)
        else:
            kept = {k: v for k, v in state.items() if k != "glm"}
            stats = fetch(kept)
        step = glm.aggregate(glm_params(params), round, state.get("glm", {}), outputs)
        if isinstance(step, NextRound):
            return NextRound({"glm": step.state, **kept})
        fit = step.result
        coef = {c["name"]: c for c in fit["coefficients"]}
        intercept, slope = coef["Intercept"], coef["logit_score"]
        result = {
            **stats,
            "model_sha256": params.model.sha256,
            "study_id": params.study_id,
            "mode": params.mode,
            "calibration_intercept": intercept,
            "calibration_slope": slope,
            "recalibration": {
                "intercept": intercept["estimate"],
                "slope": slope["estimate"],
                "formula": "p' = 1 / (1 + exp(-(a + b * logit(p))))",
                "clip": 1e-7,
            },
        }
        return Finished(result)
