"""Automatic output checking of researcher scripts' outputs (ACRO's rule set).

How it runs: the node's script executor (:mod:`medfed.node.executors.scripts`) reads the
outputs a script wrote in its sandbox and calls :func:`check_output` once per declared
output with the node's :class:`CheckPolicy`. Each output has a declared kind, and the
verdict is one of:

* ``pass`` — the output may leave as it is (the cleaned copy in :attr:`Verdict.data`);
* ``fail`` — the output is withheld whole; :attr:`Verdict.rule` names the rule
  (``threshold``, ``dominance``, ``residual-df``, ``shape``), never the cell or value;
* ``review`` — the rules cannot classify it: it waits in the node's airlock
  (:mod:`medfed.node.airlock`) for the steward.

The rules, per kind (the objects are built by ``medfed_script``,
:mod:`medfed.algorithms.scripts.api`):

* ``table`` ``{"dims", "aggfunc", "cells": [{"key", "count", "value"?, "magnitude"?}]}``:
  the threshold rule is the gate's whole-grid rule (:class:`~medfed.algorithms.base.Grid`
  through :func:`~medfed.node.gate.rules.apply_gate`: a count of 1..k-1 withholds the
  table; zero cells pass, as DataSHIELD's ``nfilter.tab``); a magnitude table (``aggfunc``
  other than ``count``) needs each cell's ``magnitude`` (total, two largest absolute
  contributions) and passes the gate's (n, k)-dominance and p % rules
  (:mod:`medfed.node.gate.dominance`); a magnitude table without that evidence is
  ``review``.
* ``figure`` ``{"counts", …}`` (the data behind a plot: a histogram's bins and counts):
  as a frequency table — the whole-grid threshold rule over ``counts``.
* ``regression`` ``{"coef", "se"?, "n", "df_resid"}``: ``n`` ≥ k and ``df_resid`` ≥ the
  node's ``min_residual_df`` (ACRO's residual degrees of freedom), and ``df_resid`` no
  more than ``n`` minus the number of coefficients.
* ``value`` (anything else): always ``review``.

An object that does not have its kind's shape is ``fail`` with rule ``shape``: a script
that writes something odd gets nothing out. Nothing here reads the data; the checks see
only what the script declared, as ACRO's do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from medfed.algorithms.base import Grid
from medfed.node.gate.dominance import DominancePolicy, Magnitude, dominated
from medfed.node.gate.rules import GatePolicy, apply_gate, plain

__all__ = ["KINDS", "CheckPolicy", "Verdict", "check_output"]

Kind = Literal["table", "regression", "figure", "value"]
KINDS: tuple[str, ...] = ("table", "regression", "figure", "value")


@dataclass(frozen=True)
class CheckPolicy:
    """The node's disclosure settings the checks use (``[policy]`` in ``node.toml``)."""

    min_cell_count: int = 5
    min_residual_df: int = 10
    dominance: DominancePolicy = field(default_factory=DominancePolicy)


@dataclass(frozen=True)
class Verdict:
    status: Literal["pass", "fail", "review"]
    #: the rule that decided (``fail``/``review``); names no cell and no value
    rule: str | None = None
    #: the output as plain JSON data (what leaves when it passes or is released)
    data: Any = None


class _Shape(ValueError):
    """The object does not have its kind's shape."""


def check_output(kind: str, obj: Any, policy: CheckPolicy) -> Verdict:
    """The verdict on one output of declared ``kind`` (see the module docstring)."""
    try:
        data = plain(obj)
    except ValueError:
        return Verdict("fail", "shape")
    try:
        if kind == "table":
            return _table(data, policy)
        if kind == "figure":
            return _figure(data, policy)
        if kind == "regression":
            return _regression(data, policy)
    except (_Shape, ValueError):
        return Verdict("fail", "shape")
    if kind == "value":
        return Verdict("review", "unclassifiable", data)
    return Verdict("fail", "shape")


def _number(value: Any, *, low: float = -math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise _Shape("not a number in range")
    return float(value)


def _threshold(counts: Any, policy: CheckPolicy) -> bool:
    """Whether the gate's whole-grid rule passes ``counts`` (raises on a bad count)."""
    gated = apply_gate({"counts": counts}, [Grid("counts")], GatePolicy(policy.min_cell_count))
    return gated.status == "ok"


def _table(data: Any, policy: CheckPolicy) -> Verdict:
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise _Shape("a table needs a list of cells")
    aggfunc = data.get("aggfunc", "count")
    if not isinstance(aggfunc, str):
        raise _Shape("aggfunc must be a name")
    counts: list[int] = []
    magnitudes: dict[str, Magnitude] = {}
    evidence = True
    for i, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict) or not isinstance(cell.get("key"), list):
            raise _Shape("a cell needs a key")
        count = cell.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise _Shape("a cell's count must be a non-negative integer")
        counts.append(count)
        if aggfunc == "count":
            continue
        if "value" in cell and cell["value"] is not None:
            _number(cell["value"])
        found = cell.get("magnitude")
        if found is None:
            evidence = False
            continue
        if not isinstance(found, dict):
            raise _Shape("a cell's magnitude must be an object")
        magnitudes[str(i)] = Magnitude(
            total=_number(found.get("total"), low=0),
            top1=_number(found.get("top1"), low=0),
            top2=_number(found.get("top2"), low=0),
            rows=count,
        )
    if not _threshold(counts, policy):
        return Verdict("fail", "threshold")
    if aggfunc != "count":
        if not evidence:
            return Verdict("review", "magnitude table without contributions", data)
        if dominated(magnitudes, policy.dominance) is not None:
            return Verdict("fail", "dominance")
    return Verdict("pass", None, data)


def _figure(data: Any, policy: CheckPolicy) -> Verdict:
    if not isinstance(data, dict) or "counts" not in data:
        raise _Shape("a figure needs its counts")
    if not _threshold(data["counts"], policy):
        return Verdict("fail", "threshold")
    return Verdict("pass", None, data)


def _regression(data: Any, policy: CheckPolicy) -> Verdict:
    if not isinstance(data, dict) or not isinstance(data.get("coef"), dict):
        raise _Shape("a regression needs its coefficients")
    n, df_resid = data.get("n"), data.get("df_resid")
    for value in (n, df_resid):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _Shape("n and df_resid must be non-negative integers")
    assert isinstance(n, int) and isinstance(df_resid, int)
    for name in ("coef", "se"):
        for value in (data.get(name) or {}).values():
            if value is not None:
                _number(value)
    if df_resid > n - len(data["coef"]):
        raise _Shape("df_resid exceeds n minus the coefficients")
    if n < policy.min_cell_count:
        return Verdict("fail", "threshold")
    if df_resid < policy.min_residual_df:
        return Verdict("fail", "residual-df")
    return Verdict("pass", None, data)
