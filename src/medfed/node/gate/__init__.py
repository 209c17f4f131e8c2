"""The node's disclosure gate: output rules (:mod:`.rules`) and row-set rules (:mod:`.rowsets`)."""

from medfed.node.gate.rowsets import Decision, RecordingData, RowSetMemory
from medfed.node.gate.rules import GatePolicy, GateResult, apply_gate, plain

__all__ = [
    "Decision",
    "GatePolicy",
    "GateResult",
    "RecordingData",
    "RowSetMemory",
    "apply_gate",
    "plain",
]
