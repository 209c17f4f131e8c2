"""Counts a node puts in its catalogue entries: gated, rounded and sticky across registrations.

How it runs: every count a registration sends — a table dataset's rows, an OMOP dataset's
persons and per-table rows, a data-quality check's failing and inspected rows — goes
through :func:`registered_count`. Under ``min_cell_count`` it is withheld (None); otherwise
it is :func:`~medfed.node.stores.optout.sticky_count` (the one rounding rule: rounded to
``rounding``, and the previous registered value kept while the count is within one
rounding step of it) against the value this node last registered under the same ``key``.
The memory is the opt-out register's (:meth:`~medfed.node.stores.optout.OptOutRegister.
previous_count` / ``remember_count``, in the node's data dir), so a one-person change —
an opt-out — moves no registered count, across restarts too. Without a memory (tests,
one-off summaries) the count is only gated and rounded.
"""

from __future__ import annotations

from typing import Protocol

from medfed.node.stores.optout import sticky_count

__all__ = ["CountMemory", "registered_count"]


class CountMemory(Protocol):
    """Where a node keeps the counts it last registered (the opt-out register)."""

    def previous_count(self, dataset: str) -> int | None: ...

    def remember_count(self, dataset: str, count: int | None) -> None: ...


def registered_count(
    n: int,
    *,
    key: str,
    memory: CountMemory | None,
    min_cell_count: int,
    rounding: int,
) -> int | None:
    """The count to register for ``key`` (see the module docstring); None: withheld."""
    if n < min_cell_count:
        return None
    previous = memory.previous_count(key) if memory is not None else None
    count = sticky_count(n, previous, max(rounding, 1))
    if memory is not None and count is not None and count != previous:
        memory.remember_count(key, count)
    return count
