"""The hub side of ``cox``: agreeing the set-up, and the exact pooled partial likelihood.

Runs on the hub only; it receives what :mod:`medfed.algorithms.survival.cox_local`
sends (see there for every message and gate rule) and sends nothing itself except the
broadcast state: the agreed design (covariate names, categorical levels with the first as
reference, pooled means and standard deviations), the global event times per stratum, the
indices of times with tied events (Efron) and the current ``beta``.

Round 0 (:func:`set_up`): levels are the union of the nodes' levels (sorted, numeric
ones by value); means and variances pool by Chan et al.'s formulas; a dummy's mean is
its level's share. Like lifelines, the fit runs on centred and scaled covariates; the
coefficients and standard errors are rescaled at the end, which leaves the maximum of the
likelihood and the log-likelihood unchanged.

Each Newton round (:func:`assemble`): with pooled sums at each event time ``t_j`` of a
stratum (``S0, S1, S2`` over the risk set, ``T0, T1, T2`` over the ``d_j`` tied events)
the log partial likelihood is ``beta' Σ x_events - Σ_j Σ_{l<d_j} log(S0 - l/d_j T0)``
(Efron; Breslow takes ``l/d_j = 0``), the gradient and Hessian follow term by term with
``S1 - l/d_j T1`` and ``S2 - l/d_j T2``. These are the pooled likelihood's exact value,
gradient and Hessian, summed over strata. The per-time sums arrive as numpy arrays
(binary transport, :mod:`medfed.common.arrays`); a NaN marks a value the node's gate
suppressed or a non-finite sum, as ``None`` does in JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medfed.algorithms.stats.crosstab import level_order
from medfed.common.arrays import has_gaps
from medfed.common.errors import BadRequest

__all__ = ["assemble", "full_matrix", "set_up"]

Floats = NDArray[np.float64]


def set_up(
    covariates: Sequence[str], categorical: Sequence[str], ties: str, payloads: Sequence[Any]
) -> dict[str, Any]:
    """The agreed design, scaling, event times and tie indices from round 0's payloads."""
    names: list[str] = []
    center: list[float] = []
    scale: list[float] = []
    levels: dict[str, list[str]] = {}
    rows = sum(int(p["rows"]) for p in payloads)
    if rows < 2:
        raise BadRequest("cox: fewer than 2 rows over all nodes")
    for column in covariates:
        if column in categorical:
            counts: dict[str, int] = {}
            for p in payloads:
                for level, n in p["levels"][column].items():
                    if n is None:
                        raise BadRequest(f"cox: a node suppressed a level count of '{column}'")
                    counts[level] = counts.get(level, 0) + int(n)
            agreed = sorted(counts, key=level_order)
            if len(agreed) < 2:
                raise BadRequest(f"cox: categorical covariate '{column}' has one level only")
            levels[column] = agreed
            for level in agreed[1:]:
                share = counts[level] / rows
                names.append(f"{column}[T.{level}]")
                center.append(share)
                scale.append(math.sqrt(counts[level] * (1 - share) / (rows - 1)))
        else:
            parts = [p["moments"][column] for p in payloads]
            mean = math.fsum(m["sum"] for m in parts) / rows
            m2 = math.fsum(m["m2"] + m["n"] * (m["sum"] / m["n"] - mean) ** 2 for m in parts)
            names.append(column)
            center.append(mean)
            scale.append(math.sqrt(m2 / (rows - 1)))
    for name, s in zip(names, scale, strict=True):
        if not s > 0:
            raise BadRequest(f"cox: singular design: covariate '{name}' is constant")
    times: dict[str, list[float]] = {}
    tied: dict[str, list[int]] = {}
    counted: dict[str, dict[float, int]] = {}
    for p in payloads:
        for level, ts in p["times"].items():
            table = counted.setdefault(level, {})
            for t, d in zip(ts, p["events"][level], strict=True):
                table[float(t)] = table.get(float(t), 0) + int(d)
    for level in sorted(counted, key=level_order):
        grid = sorted(counted[level])
        times[level] = grid
        many = [i for i, t in enumerate(grid) if counted[level][t] > 1]
        tied[level] = many if ties == "efron" else []
    return {
        "columns": names,
        "levels": levels,
        "center": center,
        "scale": scale,
        "times": times,
        "ties": tied,
        "rows": rows,
        "events": sum(sum(c.values()) for c in counted.values()),
    }


def full_matrix(upper: Floats, p: int) -> Floats:
    """Symmetric ``(m, p, p)`` matrices from rows of upper triangles ``(m, p(p+1)/2)``."""
    out = np.zeros((upper.shape[0], p, p))
    i, j = np.triu_indices(p)
    out[:, i, j] = upper
    out[:, j, i] = upper
    return out


def _sum(
    payloads: Sequence[dict[str, Any]], key: str, level: str, shape: tuple[int, ...]
) -> Floats:
    total = np.zeros(shape)
    for p in payloads:
        part = p[key].get(level)
        if part is None or len(part) == 0:
            continue
        if has_gaps(part) if isinstance(part, np.ndarray) else _has_none(part):
            raise BadRequest(
                "cox: a node sent non-finite sums; the fit diverged (check for a covariate "
                "that separates events, or use fewer covariates)"
            )
        total += np.asarray(part, dtype=np.float64).reshape(shape)
    return total


def _has_none(part: Any) -> bool:
    """Whether a JSON series (a list, or a list of lists) holds a suppressed value."""
    values = np.asarray(part, dtype=object)
    return bool(np.any(values == None))  # noqa: E711 - elementwise test for suppressed values


#: Efron's tied-event terms are expanded this many at a time (memory: a few floats per
#: term), so a stratum with millions of events is assembled in bounded memory
TERMS_PER_CHUNK = 65_536


def assemble(
    payloads: Sequence[dict[str, Any]], state: dict[str, Any]
) -> tuple[float, Floats, Floats]:
    """Pooled log partial likelihood, gradient and Hessian at ``state["beta"]``.

    The ``d_j`` events at time ``t_j`` add terms with ``phi = S0 - f T0``,
    ``psi = S1 - f T1``, ``big = S2 - f T2`` for ``f = l/d_j``, ``l < d_j`` (Efron at
    its tied times; ``f = 0`` otherwise): ``log phi``, ``psi / phi`` and
    ``big / phi - psi psi' / phi²``. Expanding the products, a time's terms need only
    six scalar sums over its ``l`` — ``Σ log phi``, ``Σ 1/phi``, ``Σ f/phi``,
    ``Σ 1/phi²``, ``Σ f/phi²``, ``Σ f²/phi²`` — so the work per event is scalar and the
    vectors and matrices are combined once per time. Times with ``f = 0`` have them in
    closed form (``d/S0``, …); Efron's tied times are summed a chunk of events at a time.
    """
    beta = np.asarray(state["beta"], dtype=np.float64)
    p = len(beta)
    xsum = np.zeros(p)
    for payload in payloads:
        xsum += np.asarray(payload["xsum"], dtype=np.float64)
    ll = float(beta @ xsum)
    grad = xsum.copy()
    hess = np.zeros((p, p))
    q = p * (p + 1) // 2
    for level, grid in state["times"].items():
        m = len(grid)
        if m == 0:
            continue
        s0 = _sum(payloads, "s0", level, (m,))
        s1 = _sum(payloads, "s1", level, (m, p))
        s2 = _sum(payloads, "s2", level, (m, q))
        d = _sum(payloads, "events", level, (m,))
        ties = np.asarray(state["ties"].get(level, []), dtype=np.intp)
        t0, t1, t2 = np.zeros(m), np.zeros((m, p)), np.zeros((m, q))
        sums = np.zeros((6, m))  # per time: Σ log phi, 1/phi, f/phi, 1/phi², f/phi², f²/phi²
        plain = np.flatnonzero((d > 0) & ~np.isin(np.arange(m), ties))
        _check_positive(s0[plain])
        sums[0, plain] = d[plain] * np.log(s0[plain])
        sums[1, plain] = d[plain] / s0[plain]
        sums[3, plain] = d[plain] / s0[plain] ** 2
        if len(ties):
            k = len(ties)
            t0[ties] = _sum(payloads, "t0", level, (k,))
            t1[ties] = _sum(payloads, "t1", level, (k, p))
            t2[ties] = _sum(payloads, "t2", level, (k, q))
            _tied_sums(sums, ties, d[ties].astype(np.intp), s0, t0)
        ll -= float(sums[0].sum())
        grad -= sums[1] @ s1 - sums[2] @ t1
        second = (
            (s1 * sums[3][:, None]).T @ s1
            - (s1 * sums[4][:, None]).T @ t1
            - (t1 * sums[4][:, None]).T @ s1
            + (t1 * sums[5][:, None]).T @ t1
        )
        hess -= full_matrix((sums[1] @ s2 - sums[2] @ t2)[None, :], p)[0] - second
    return ll, grad, hess


def _tied_sums(
    sums: Floats, ties: NDArray[np.intp], count: NDArray[np.intp], s0: Floats, t0: Floats
) -> None:
    """Add the six scalar sums of Efron's terms at the tied times, chunk by chunk."""
    ends = np.cumsum(count)
    start = 0
    while start < len(ties):  # tied times whose events add up to about one chunk
        first = int(ends[start] - count[start])
        stop = max(int(np.searchsorted(ends, first + TERMS_PER_CHUNK)), start + 1)
        times = ties[start:stop]
        local = np.repeat(np.arange(stop - start), count[start:stop])
        starts = np.concatenate([[0], np.cumsum(count[start:stop])[:-1]])
        f = (np.arange(len(local)) - starts[local]) / count[start:stop][local]
        phi = s0[times][local] - f * t0[times][local]
        _check_positive(phi)
        inverse = 1 / phi
        for row, term in enumerate(
            (np.log(phi), inverse, f * inverse, inverse**2, f * inverse**2, (f * inverse) ** 2)
        ):
            sums[row, times] += np.bincount(local, weights=term, minlength=stop - start)
        start = stop


def _check_positive(phi: Floats) -> None:
    if np.any(phi <= 0):
        raise BadRequest("cox: an empty risk set at an event time; the data are inconsistent")
