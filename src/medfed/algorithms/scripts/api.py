"""``medfed_script``: what a researcher's analysis script sees inside the node's sandbox.

How it runs: the script runner (:mod:`medfed.node.executors.script_process`) installs this
module as ``medfed_script``, points it at the run's scratch folder and executes the
script. The script reads the entitled columns with :func:`load_data` and declares each
result with :func:`output`; when the script ends the runner writes the outputs to
``outputs.json`` in the scratch folder, where the node agent reads, validates and checks
them (:mod:`medfed.node.outputcheck`). Nothing leaves by any other way: the sandbox has
no network and the scratch folder is its only writable place.

The helpers build the objects the output checks understand, with the evidence they need
(as ACRO's wrappers of pandas and statsmodels do)::

    import medfed_script as ms
    df = ms.load_data()
    ms.output("by_grade", "table", ms.crosstab(df, "tgrade", "horTh"))
    ms.output("age_by_grade", "table", ms.crosstab(df, "tgrade", values="age", aggfunc="mean"))
    ms.output("age_hist", "figure", ms.histogram(df["age"], bins=8))
    ms.output("fit", "regression", ms.ols(df, "time", ["age", "pnodes"]))
    ms.output("note", "value", {"anything": "else"})   # waits for the steward

* ``table``: cells (a key, a row count, and for ``sum``/``mean`` the value with each cell's
  total and two largest absolute contributions — the dominance rules' evidence);
* ``figure``: the data behind a plot (``counts`` plus bins or labels);
* ``regression``: coefficients, standard errors, ``n`` and residual degrees of freedom;
* ``value``: anything else (JSON) — the rules cannot classify it: the airlock.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["crosstab", "histogram", "load_data", "ols", "output"]

KINDS = ("table", "regression", "figure", "value")
_state: dict[str, Any] = {"scratch": None, "outputs": {}}


def _bind(scratch: Path) -> None:
    """Point the module at a run's scratch folder (the runner calls this)."""
    _state["scratch"] = scratch
    _state["outputs"] = {}


def load_data() -> pd.DataFrame:
    """The entitled dataset's requested columns (every row the node lets this run use)."""
    if _state["scratch"] is None:
        raise RuntimeError("medfed_script runs only inside a node's script runner")
    return pd.read_parquet(Path(_state["scratch"]) / "data.parquet")


def output(name: str, kind: str, obj: Any) -> None:
    """Declare one result; ``kind`` must be the one the task declared for ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError("an output needs a name")
    if kind not in KINDS:
        raise ValueError(f"output kind must be one of {', '.join(KINDS)}, not {kind!r}")
    json.dumps(obj, allow_nan=True, default=_plain)  # fail here, in the script, if odd
    _state["outputs"][name] = {"kind": kind, "data": json.loads(json.dumps(obj, default=_plain))}


def _write(path: Path) -> None:
    path.write_text(json.dumps(_state["outputs"], default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _key(value: Any) -> Any:
    item = value.item() if isinstance(value, np.generic) else value
    return item if isinstance(item, str | int | float | bool) else str(item)


def _magnitude(values: np.ndarray) -> dict[str, float]:
    absolute = np.abs(values.astype(np.float64))
    top = heapq.nlargest(2, absolute.tolist())
    return {
        "total": math.fsum(absolute.tolist()),
        "top1": top[0] if top else 0.0,
        "top2": top[1] if len(top) > 1 else 0.0,
    }


def crosstab(
    data: pd.DataFrame,
    index: str | Sequence[str],
    columns: str | Sequence[str] | None = None,
    *,
    values: str | None = None,
    aggfunc: str = "count",
) -> dict[str, Any]:
    """A frequency table (``aggfunc="count"``) or a magnitude table (``sum``, ``mean``).

    Cells are every combination of the levels seen in each dimension (unseen ones count
    0); rows with a missing dimension (or value) are left out.
    """
    dims = [index] if isinstance(index, str) else list(index)
    dims += [] if columns is None else [columns] if isinstance(columns, str) else list(columns)
    if aggfunc not in ("count", "sum", "mean"):
        raise ValueError(f"aggfunc must be count, sum or mean, not {aggfunc!r}")
    if (values is None) != (aggfunc == "count"):
        raise ValueError("give values exactly when aggfunc is sum or mean")
    frame = data[dims + ([values] if values else [])].dropna()
    parts = {k if isinstance(k, tuple) else (k,): g for k, g in frame.groupby(dims, sort=True)}
    levels = [sorted(frame[d].unique().tolist()) for d in dims]
    cells = []
    for combo in itertools.product(*levels):
        part = parts.get(tuple(combo))
        n = 0 if part is None else len(part)
        cell: dict[str, Any] = {"key": [_key(v) for v in combo], "count": n}
        if values is not None:
            vals = np.asarray([] if part is None else part[values], dtype=np.float64)
            total = float(vals.sum()) if n else None
            cell["value"] = total if aggfunc == "sum" or total is None else total / n
            cell["magnitude"] = _magnitude(vals)
        cells.append(cell)
    return {"dims": dims, "aggfunc": aggfunc, "values": values, "cells": cells}


def histogram(
    values: Any, bins: int = 10, range: tuple[float, float] | None = None
) -> dict[str, Any]:
    """A histogram's data: bin edges and counts (missing values left out)."""
    array = np.asarray(pd.Series(values).dropna(), dtype=np.float64)
    counts, edges = np.histogram(array, bins=bins, range=range)
    return {"bins": edges.tolist(), "counts": [int(c) for c in counts]}


def ols(data: pd.DataFrame, y: str, x: Sequence[str], *, intercept: bool = True) -> dict[str, Any]:
    """Ordinary least squares over complete cases: coefficients, se, n, residual df."""
    frame = data[[y, *x]].dropna()
    design = frame[list(x)].to_numpy(dtype=np.float64)
    names = list(x)
    if intercept:
        design = np.column_stack([np.ones(len(frame)), design])
        names = ["const", *names]
    target = frame[y].to_numpy(dtype=np.float64)
    n, p = design.shape
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    df_resid = n - p
    resid = target - design @ coef
    sigma2 = float(resid @ resid) / df_resid if df_resid > 0 else float("nan")
    cov = sigma2 * np.linalg.pinv(design.T @ design)
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    return {
        "coef": dict(zip(names, coef.tolist(), strict=True)),
        "se": dict(zip(names, se.tolist(), strict=True)),
        "n": int(n),
        "df_resid": int(df_resid),
    }
