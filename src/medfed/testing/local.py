"""Run an algorithm in-process over several local tables: no hub, no nodes, same steps.

How it runs: :func:`run_locally` does what hub and nodes do together — parse and validate
the parameters against every table's schema, then round after round call the local step
on each table the algorithm's :meth:`~medfed.algorithms.base.Algorithm.participants`
names (all, unless it says otherwise), pass each output through the real disclosure
gate's output rules (:func:`medfed.node.gate.apply_gate`), send it through JSON as the
wire would, and call the aggregate step until it returns
:class:`~medfed.algorithms.base.Finished`. As at a node, a local step that refuses (a
:class:`~medfed.common.errors.MedfedError`) withholds that table's answer; ``withheld``
(a list) collects the refusals' texts for tests; ``services(i)`` gives table ``i``'s
local step its node services (``validation``: an in-process model scorer). The row-set
rules need a node's durable memory and are not applied here. Tests and algorithm
authors use it to check that a federated result equals the pooled one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from typing import Any

from medfed.algorithms.base import Finished, LocalContext, NodeOutput
from medfed.algorithms.registry import get_algorithm
from medfed.common.arrays import round_trip
from medfed.common.errors import BadRequest, MedfedError
from medfed.common.schemas import DatasetSchema
from medfed.node.gate import GatePolicy, apply_gate
from medfed.node.stores.tables import TableStore

__all__ = ["run_locally"]


def run_locally(
    algorithm_name: str,
    raw_params: dict[str, Any],
    stores: Sequence[TableStore],
    min_cell_count: int = 5,
    *,
    min_rows: int = 10,
    max_param_fraction: float = 1 / 3,
    min_residual_df: int = 10,
    max_rounds: int | None = None,
    withheld: list[str] | None = None,
    services: Callable[[int], object] | None = None,
) -> dict[str, Any]:
    """The algorithm's result (validated by its ``Result`` model) over ``stores``."""
    if not stores:
        raise BadRequest(f"{algorithm_name}: no datasets to run on")
    algorithm = get_algorithm(algorithm_name)
    params = algorithm.parse_params(raw_params)
    schemas = [
        DatasetSchema(dataset_id=i, node_id=i, name=store.name, columns=store.columns)
        for i, store in enumerate(stores)
    ]
    algorithm.validate(params, schemas)
    rules = algorithm.disclosure(params)
    policy = GatePolicy(min_cell_count=min_cell_count)
    state: dict[str, Any] = {}
    max_rounds = max_rounds or max(algorithm.max_rounds, 1)
    for round in range(max_rounds):
        outputs: list[NodeOutput] = []
        # as the hub: only the datasets the algorithm asks for get a run this round
        chosen = set(algorithm.participants(params, round, state, list(range(len(stores)))))
        for i, store in enumerate(stores):
            if i not in chosen:
                continue
            ctx = LocalContext(
                data=store,
                round=round,
                state=copy.deepcopy(state),
                min_cell_count=min_cell_count,
                min_rows=min_rows,
                max_param_fraction=max_param_fraction,
                min_residual_df=min_residual_df,
                services=None if services is None else services(i),
            )
            try:
                gated = apply_gate(algorithm.local(params, ctx), rules, policy)
            except MedfedError as exc:  # the node withholds; the reason stays in its log
                if withheld is not None:
                    withheld.append(exc.message)
                outputs.append(NodeOutput(node_id=i, dataset_id=i, status="suppressed"))
                continue
            payload = None if gated.payload is None else round_trip(gated.payload)
            outputs.append(
                NodeOutput(node_id=i, dataset_id=i, status=gated.status, payload=payload)
            )
        step = algorithm.aggregate(params, round, copy.deepcopy(state), outputs)
        if isinstance(step, Finished):
            return algorithm.Result.model_validate(step.result).model_dump()
        state = json.loads(json.dumps(step.state))
    raise RuntimeError(f"{algorithm_name}: no result after {max_rounds} rounds")
