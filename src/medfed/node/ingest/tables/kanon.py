"""k-anonymity over declared quasi-identifiers: measure, suppress small groups, or refuse.

How it runs: rows are grouped by the exact output values of the quasi-identifiers (a null
is a value of its own, so rows with a missing age form their own group). A frame is
k-anonymous when every group has at least ``k`` rows — "more than 10 per group" is
``k = 11``. :func:`enforce` either drops every row of every smaller group
(``on_violation = "suppress"``; dropping whole groups leaves the other groups' sizes as
they were, so the result is k-anonymous in one pass) or raises
:class:`~medfed.common.errors.Refused` (``"refuse"``). Reports hold counts, never values.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from pydantic import BaseModel

from medfed.common.errors import BadRequest, Refused
from medfed.node.ingest.tables.strategy import KAnonymity

__all__ = ["KAnonymityReport", "achieved_k", "enforce", "group_sizes", "verify"]


class KAnonymityReport(BaseModel):
    """The check's outcome: groups before, what was suppressed, and ``k`` after."""

    quasi_identifiers: list[str]
    k: int
    on_violation: str
    groups_in: int
    groups_out: int
    suppressed_groups: int
    suppressed_rows: int
    smallest_group_in: int | None
    achieved_k: int | None  # the smallest group of the output; None when it has no rows


def group_sizes(frame: pd.DataFrame, quasi_identifiers: Sequence[str]) -> pd.Series:
    """Rows per distinct combination of the quasi-identifiers (nulls form their own group)."""
    missing = [q for q in quasi_identifiers if q not in frame.columns]
    if missing:
        raise BadRequest(f"k-anonymity: quasi-identifiers not in the table: {', '.join(missing)}")
    if not len(quasi_identifiers):
        raise BadRequest("k-anonymity: name at least one quasi-identifier")
    return frame.groupby(list(quasi_identifiers), dropna=False, sort=False).size()


def _row_group_size(frame: pd.DataFrame, quasi_identifiers: Sequence[str]) -> pd.Series:
    codes = frame.groupby(list(quasi_identifiers), dropna=False, sort=False).ngroup()
    return codes.map(codes.value_counts()).astype("int64")


def achieved_k(frame: pd.DataFrame, quasi_identifiers: Sequence[str]) -> int | None:
    """The size of the smallest group (the ``k`` the frame achieves); None for no rows."""
    sizes = group_sizes(frame, quasi_identifiers)
    return int(sizes.min()) if len(sizes) else None


def enforce(frame: pd.DataFrame, check: KAnonymity) -> tuple[pd.DataFrame, KAnonymityReport]:
    """Apply the check: the k-anonymous frame and the report, or Refused."""
    qis = list(check.quasi_identifiers)
    sizes = group_sizes(frame, qis)
    small = sizes[sizes < check.k]
    if len(small) and check.on_violation == "refuse":
        raise Refused(
            f"k-anonymity: {len(small)} of {len(sizes)} groups over ({', '.join(qis)}) have "
            f"fewer than k={check.k} rows ({int(small.sum())} rows); the strategy says refuse"
        )
    if len(frame):
        keep = (_row_group_size(frame, qis) >= check.k).to_numpy()
        out = frame.loc[keep].reset_index(drop=True)
    else:
        out = frame.reset_index(drop=True)
    report = KAnonymityReport(
        quasi_identifiers=qis,
        k=check.k,
        on_violation=check.on_violation,
        groups_in=len(sizes),
        groups_out=len(sizes) - len(small),
        suppressed_groups=len(small),
        suppressed_rows=int(small.sum()),
        smallest_group_in=int(sizes.min()) if len(sizes) else None,
        achieved_k=achieved_k(out, qis),
    )
    if len(out):
        verify(out, check)
    return out, report


def verify(frame: pd.DataFrame, check: KAnonymity) -> int:
    """Recompute the group sizes of a frame about to be released: its k, or Refused.

    Independent of :func:`enforce` (it reads only the frame), so a release step can call it
    on exactly the rows it writes. An empty frame is refused: there is nothing to release.
    """
    k = achieved_k(frame, check.quasi_identifiers)
    if k is None:
        raise Refused("k-anonymity: verification failed: no rows to release")
    if k < check.k:
        raise Refused(
            f"k-anonymity: verification failed: a group over "
            f"({', '.join(check.quasi_identifiers)}) has {k} rows, fewer than k={check.k}"
        )
    return k
