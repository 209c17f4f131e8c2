"""``noop``: does nothing, for dispatch benchmarks (hub → node → hub round trips).

``seconds`` (0 to 60, default 0) makes the local step wait that long: fault tests use it to
hold a run claimed while they kill a node or the hub.

What leaves a node per round (one round): ``{}``. No gate rules apply — there is nothing
to gate. The result is the number of nodes that answered.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from medfed.algorithms.base import Algorithm, Finished, LocalContext, NextRound, NodeOutput

__all__ = ["Noop", "NoopParams", "NoopResult"]


class NoopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(default=0.0, ge=0.0, le=60.0)


class NoopResult(BaseModel):
    nodes: int


class Noop(Algorithm[NoopParams]):
    name = "noop"
    summary = "Does nothing (dispatch benchmarks)"
    Params = NoopParams
    Result = NoopResult

    def local(self, params: NoopParams, ctx: LocalContext) -> dict[str, Any]:
        if params.seconds:
            time.sleep(params.seconds)
        return {}

    def aggregate(
        self, params: NoopParams, round: int, state: dict[str, Any], outputs: Sequence[NodeOutput]
    ) -> Finished | NextRound:
        return Finished(NoopResult(nodes=len(outputs)).model_dump())
