"""How far the risk-set rule can have moved a Cox fit: a proven bound on each coefficient.

Runs on the hub in ``cox``'s last round, on what the nodes sent; it sends nothing. When
a node coarsened (:mod:`medfed.algorithms.survival.times`: each stratum unit's tail, at
most ``k - 1`` rows beyond its boundary ``tau``, moved back to ``tau``), the hub asks for
one more evaluation at the converged ``beta'``; with it each node sends ``tail_max``
(``k - 1``) and, per stratum and agreed event time, the *unweighted* risk-set sums
``Σ x`` and ``Σ x_c²`` (``u1``, ``u2``) — the same values the first Newton round (at
``beta = 0``) already released, over risk sets of 0 or at least ``k`` rows.

What the hub derives (all in the scaled covariates of the fit):

* **Boxes.** In a risk set of ``n`` rows with mean ``m`` and ``ss = Σ(x_c - m_c)²``
  every row has ``|x_c - m_c| <= sqrt(ss (n - 1) / n)``. A row that leaves a unit's risk
  set between grid times ``g`` and ``g + 1`` lies in the intersection of the boxes of all
  the unit's risk sets up to ``g``; the box of a risk set at ``g`` and later is the union
  of those. The tail rows of a unit lie in the box of its last non-empty risk set
  (index ``j_u``), as they are all still at risk there.
* **The truth.** The true risk set at ``t`` is the coarsened one plus a subset ``A(t)``
  of the tails of units with ``j_u`` before ``t``; at most ``moved_u = min(k - 1, events
  of the unit at j_u)`` of those events really happened later. The score is
  ``U = Σ_events x_i - Σ_terms μ``, with each term's ``μ`` a positively weighted mean
  (Efron weights ``1 - l/d`` on tied events) over its risk set; ``Σ x_i`` is the same in
  both data. Pair each coarsened term with the true term of the same time and index
  ``l``; a true term is the mixture ``(1 - alpha) nu + alpha a`` of a mean ``nu`` over the
  coarsened risk set and a mean ``a`` over ``A(t)``, with ``alpha <= A / (S0 + A)`` (``A``:
  the tails' weights, bounded by ``(k - 1) · max w`` over their box and by the unit's
  ``S0`` at ``j_u``). ``nu`` is the coarsened ``μ'`` itself unless Efron's weights can
  change there (``l >= 1`` after the first boundary, or where events may have left);
  then it is anywhere in the box of the risk set. Terms left unpaired (moved events) are
  bounded by the box of all rows at risk after the first boundary. This gives
  ``|∇ll(β') - ∇ll'(β')| <= ΔU`` per coordinate.
* **Curvature.** A mixture's covariance is at least ``(1 - alpha)`` times that of ``nu``;
  moving ``beta`` by ``δ`` changes each weight by ``exp(x'δ)``, so a weighted covariance
  over a set of box width ``W`` changes at most by ``exp(±‖δ‖ ‖W‖)``. So over the ball
  ``‖β - β'‖ <= r`` the true information is at least ``H(r)``, the sum over the terms
  whose weights certainly stay of ``(1 - alpha(r)) exp(-r ‖W‖)`` times their coarsened
  information. When ``‖g‖ / λ_min(H(r)) <= r`` (``g = |∇ll'(β')| + ΔU``) the true maximum
  lies in that ball (the log partial likelihood is concave), and in the ellipsoid
  ``δ'H(r)δ <= g'δ``, which bounds each coefficient.
* **Wald z and p.** ``se <= sqrt((H(r)⁻¹)_cc)``; ``se >= 1 / sqrt(I_cc)`` with ``I_cc``
  an upper bound of the true information (the mirror image of ``H``, plus Popoviciu's
  ``width² / 4`` for unpaired terms); ``|z|`` and the p value follow.

If a coarsened unit has no risk set at any event time (its tail rows are unknown), the
result says the bound is unavailable. If no ``r`` is self-consistent — on real data the
usual case, since second moments bound a hidden row's covariates only by ``sqrt(n) sd``
and the curvature factor ``exp(-r ‖W‖)`` collapses — the result gives a **first-order
estimate**, not a proof: the proven ``ΔU`` taken through the inverse coarsened
information, ``coef ± |I⁻¹| ΔU``, with the standard error's range at the fit
(``bound = "first_order_estimate"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medfed.algorithms.survival.cox_math import full_matrix

__all__ = ["CoxBound", "cox_bound"]

Floats = NDArray[np.float64]

SLACK = 1e-9  # relative slack on computed sums (floating-point cancellation)


@dataclass(frozen=True)
class CoxBound:
    """Ranges (scaled covariates) that certainly hold the uncoarsened fit's values."""

    delta_low: Floats
    delta_high: Floats
    se_low: Floats
    se_high: Floats
    radius: float
    #: "proven", or "first_order_estimate" (no self-consistent radius: not a proof)
    kind: str


@dataclass
class _Box:
    low: Floats
    high: Floats

    @classmethod
    def empty(cls, p: int) -> _Box:
        return cls(np.full(p, np.inf), np.full(p, -np.inf))

    def union(self, other: _Box) -> _Box:
        return _Box(np.minimum(self.low, other.low), np.maximum(self.high, other.high))

    @property
    def width(self) -> Floats:
        return np.asarray(np.maximum(self.high - self.low, 0.0), dtype=np.float64)

    @property
    def is_empty(self) -> bool:
        return bool(np.any(self.low > self.high))


def _gap(one: _Box, other: _Box) -> Floats:
    """Largest per-coordinate distance between a point of ``one`` and one of ``other``."""
    if one.is_empty or other.is_empty:
        return np.zeros_like(one.low)
    return np.asarray(
        np.maximum(one.high - other.low, other.high - one.low).clip(0.0), dtype=np.float64
    )


@dataclass
class _Unit:
    """One node's stratum: its boxes at each grid index and its tail description."""

    boxes: list[_Box]  # rows at risk at index g (union of the layers from g on)
    last: int  # j_u: last index with a risk set; -1 when none
    tail: _Box
    tail_weight: float
    moved: int
    coarsened: bool


def _unit(payload: dict[str, Any], level: str, m: int, p: int, beta: Floats) -> _Unit:
    n = np.asarray(payload["at_risk"][level], dtype=np.float64)
    u1 = np.asarray(payload["u1"][level], dtype=np.float64).reshape(m, p)
    u2 = np.asarray(payload["u2"][level], dtype=np.float64).reshape(m, p)
    s0 = np.asarray(payload["s0"][level], dtype=np.float64)
    events = np.asarray(payload["events"][level], dtype=np.float64)
    present = n > 0
    safe = np.where(present, n, 1.0)[:, None]
    mean = u1 / safe
    ss = np.maximum(u2 - u1 * mean, 0.0) + SLACK * (np.abs(u2) + 1.0)
    radius = np.sqrt(ss * (safe - 1.0) / safe) + SLACK * (1.0 + np.abs(mean))
    low = np.where(present[:, None], mean - radius, -np.inf)
    high = np.where(present[:, None], mean + radius, np.inf)
    # a row leaving after index g lies in every box up to g
    layer_low = np.maximum.accumulate(low, axis=0)
    layer_high = np.minimum.accumulate(high, axis=0)
    after = np.append(n[1:], 0.0)
    layer = present & (n > after)
    shown_low = np.where(layer[:, None], layer_low, np.inf)
    shown_high = np.where(layer[:, None], layer_high, -np.inf)
    from_low = np.minimum.accumulate(shown_low[::-1], axis=0)[::-1]
    from_high = np.maximum.accumulate(shown_high[::-1], axis=0)[::-1]
    boxes = [_Box(from_low[g], from_high[g]) for g in range(m)]
    last = int(np.flatnonzero(present)[-1]) if present.any() else -1
    coarsened = bool(payload.get("coarsened")) and int(payload.get("tail_max", 0)) > 0
    k1 = int(payload.get("tail_max", 0))
    if last < 0 or not coarsened:
        return _Unit(boxes, last, _Box.empty(p), 0.0, 0, coarsened)
    tail = _Box(layer_low[last], layer_high[last])
    top = float(np.sum(np.maximum(tail.low * beta, tail.high * beta)))
    weight = min(k1 * float(np.exp(top)), float(s0[last]))
    return _Unit(boxes, last, tail, weight, int(min(k1, events[last])), coarsened)


def _pooled(
    payloads: Sequence[dict[str, Any]], key: str, level: str, shape: tuple[int, ...]
) -> Floats:
    total = np.zeros(shape)
    for payload in payloads:
        part = payload[key].get(level)
        if part is not None and len(part):
            total += np.asarray(part, dtype=np.float64).reshape(shape)
    return total


@dataclass
class _Terms:
    """Per event term: its information, whether it certainly stays, alpha, box widths."""

    info: list[Floats]
    exact: list[bool]
    q: list[float]  # A / S0 at beta'
    width_risk: list[float]  # ‖W‖ of the coarsened risk set
    width_all: list[float]  # ‖W‖ of every row possibly at risk
    bound_extra: list[Floats]  # Popoviciu + mixture terms for the upper information
    other: list[Floats]  # width² / 4 for terms without an exact partner


def _stratum(
    payloads: Sequence[dict[str, Any]],
    level: str,
    grid: Sequence[float],
    ties: Sequence[int],
    beta: Floats,
    terms: _Terms,
) -> Floats | None:
    """Adds this stratum's terms; returns its ΔU, or None when the tail is unknown."""
    m, p = len(grid), len(beta)
    units = [_unit(pl, level, m, p, beta) for pl in payloads if level in pl["at_risk"]]
    if any(u.coarsened and u.last < 0 for u in units):
        return None
    risk = [_Box.empty(p) for _ in range(m)]
    before = [_Box.empty(p) for _ in range(m)]
    weight_before = np.zeros(m)
    arrivals = np.zeros(m)
    leaving = np.zeros(m)
    for u in units:
        for g in range(m):
            risk[g] = risk[g].union(u.boxes[g])
        if u.coarsened:
            for g in range(u.last + 1, m):
                before[g] = before[g].union(u.tail)
            weight_before[u.last + 1 :] += u.tail_weight
            arrivals[u.last + 1 :] += u.moved
            leaving[u.last] += u.moved
    moving = [u for u in units if u.moved > 0]
    first = min((u.last for u in moving), default=m)
    late = risk[first] if first < m else _Box.empty(p)
    for u in units:
        if u.coarsened:
            late = late.union(u.tail)
    q_len = p * (p + 1) // 2
    s0 = _pooled(payloads, "s0", level, (m,))
    s1 = _pooled(payloads, "s1", level, (m, p))
    s2 = full_matrix(_pooled(payloads, "s2", level, (m, q_len)), p)
    d = _pooled(payloads, "events", level, (m,)).astype(np.int64)
    t0, t1, t2 = np.zeros(m), np.zeros((m, p)), np.zeros((m, p, p))
    if len(ties):
        index = np.asarray(ties, dtype=np.intp)
        t0[index] = _pooled(payloads, "t0", level, (len(ties),))
        t1[index] = _pooled(payloads, "t1", level, (len(ties), p))
        t2[index] = full_matrix(_pooled(payloads, "t2", level, (len(ties), q_len)), p)
    tie_set = set(int(i) for i in ties)
    delta_u = np.zeros(p)
    for u in moving:  # unpaired terms: a coarsened mean at j_u, a true one after tau
        delta_u += u.moved * _gap(risk[u.last], late)
    for g in range(m):
        if d[g] == 0:
            continue
        tails = before[g]
        all_rows = risk[g].union(tails)
        gap = _gap(tails, risk[g]) if weight_before[g] > 0 else np.zeros(p)
        width_risk = float(np.linalg.norm(risk[g].width))
        width_all = float(np.linalg.norm(all_rows.width))
        changes = g > first or leaving[g] > 0
        d_max = d[g] + arrivals[g]
        widest = np.maximum(all_rows.width, late.width)
        for lth in range(int(d[g])):
            frac = lth / d[g] if g in tie_set else 0.0
            phi = s0[g] - frac * t0[g]
            mu = (s1[g] - frac * t1[g]) / phi
            info = (s2[g] - frac * t2[g]) / phi - np.outer(mu, mu)
            exact = lth == 0 or g not in tie_set or not changes
            base = phi if exact else max(s0[g] - t0[g], s0[g] / d_max)
            q = weight_before[g] / base
            delta_u += (0.0 if exact else risk[g].width) + q / (1 + q) * gap
            kept = exact and lth < d[g] - leaving[g]
            terms.info.append(info)
            terms.exact.append(kept)
            terms.q.append(q)
            terms.width_risk.append(width_risk)
            terms.width_all.append(width_all)
            terms.bound_extra.append(
                tails.width**2 / 4 + gap**2 if weight_before[g] > 0 else 0 * gap
            )
            terms.other.append(widest**2 / 4)
    return delta_u


def _lower(terms: _Terms, r: float) -> Floats:
    """``H(r)``: the true information is at least this over the ball of radius r."""
    p = terms.info[0].shape[0]
    total = np.zeros((p, p))
    for info, kept, q, wr, wa in zip(
        terms.info, terms.exact, terms.q, terms.width_risk, terms.width_all, strict=True
    ):
        if kept:
            qr = q * np.exp(r * wa)
            total += (1 / (1 + qr)) * np.exp(-r * wr) * info
    return total


def _upper_diagonal(terms: _Terms, r: float) -> Floats:
    """An upper bound of the true information's diagonal over the ball of radius r."""
    total = np.zeros(terms.info[0].shape[0])
    for info, kept, q, wr, wa, extra, other in zip(
        terms.info,
        terms.exact,
        terms.q,
        terms.width_risk,
        terms.width_all,
        terms.bound_extra,
        terms.other,
        strict=True,
    ):
        if kept:
            qr = q * np.exp(r * wa)
            total += np.diag(info) * np.exp(r * wr) + qr / (1 + qr) * extra
        else:
            total += other
    return total


def cox_bound(
    payloads: Sequence[dict[str, Any]], state: dict[str, Any], grad: Floats
) -> CoxBound | None:
    """The bound of the module docstring at ``state["beta"]`` (the converged fit)."""
    beta = np.asarray(state["beta"], dtype=np.float64)
    p = len(beta)
    terms = _Terms([], [], [], [], [], [], [])
    delta_u = np.zeros(p)
    for level, grid in state["times"].items():
        if not grid:
            continue
        part = _stratum(payloads, level, grid, state["ties"].get(level, []), beta, terms)
        if part is None:
            return None
        delta_u += part
    if not terms.info:
        return None
    g = np.abs(grad) + delta_u
    proven = _ball(terms, grad, delta_u, g)
    if proven is not None:
        return proven
    # first order: the true gradient at beta' through the inverse coarsened information
    information = sum(terms.info, np.zeros((p, p)))
    inverse = np.linalg.inv(information)
    centre = inverse @ grad
    shift = np.abs(inverse) @ delta_u
    upper = _upper_diagonal(terms, 0.0)
    return CoxBound(
        centre - shift,
        centre + shift,
        1 / np.sqrt(upper),
        np.sqrt(np.diag(np.linalg.inv(_lower(terms, 0.0)))),
        float(np.linalg.norm(shift)),
        "first_order_estimate",
    )


def _ball(terms: _Terms, grad: Floats, delta_u: Floats, g: Floats) -> CoxBound | None:
    """The proven bound when a self-consistent radius exists, else None."""
    size = float(np.linalg.norm(g))
    radius, need = 0.0, 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(50):
            lower = _lower(terms, radius)
            if not np.all(np.isfinite(lower)):
                return None
            smallest = float(np.linalg.eigvalsh(lower)[0])
            if smallest <= 0:
                return None
            need = size / smallest
            if need <= radius:
                break
            radius = need * 1.02
        else:
            return None
        inverse = np.linalg.inv(_lower(terms, radius))
        upper = _upper_diagonal(terms, radius)
    if not np.all(np.isfinite(upper)):
        return None
    spread = np.abs(inverse)
    centre = inverse @ grad / 2
    shift = spread @ delta_u / 2 + np.sqrt(np.diag(inverse) * (g @ spread @ g)) / 2
    return CoxBound(
        np.maximum(centre - shift, -need),
        np.minimum(centre + shift, need),
        1 / np.sqrt(upper),
        np.sqrt(np.diag(inverse)),
        need,
        "proven",
    )


def with_bound(result: dict[str, Any], bound: CoxBound | None, scale: Floats) -> dict[str, Any]:
    """The result with ranges for the uncoarsened coefficients, z and p values (per unit
    of each covariate), and which p values could lie on the other side of 0.05."""
    from scipy import stats  # scipy.stats costs ~1 s to import: loaded where it is used

    if bound is None:
        return result | {"coef_bounds": None, "bound": "unavailable"}
    coef = np.asarray(result["coef"], dtype=np.float64)
    low = coef + bound.delta_low / scale
    high = coef + bound.delta_high / scale
    se_low, se_high = bound.se_low / scale, bound.se_high / scale
    z_low = np.where(low < 0, low / se_low, low / se_high)
    z_high = np.where(high < 0, high / se_high, high / se_low)
    crosses = (z_low <= 0) & (z_high >= 0)
    z_small = np.where(crosses, 0.0, np.minimum(np.abs(z_low), np.abs(z_high)))
    z_big = np.maximum(np.abs(z_low), np.abs(z_high))
    p_low = stats.chi2.sf(z_big**2, 1)
    p_high = stats.chi2.sf(z_small**2, 1)
    return result | {
        "coef_bounds": np.column_stack([low, high]).tolist(),
        "z_bounds": np.column_stack([z_low, z_high]).tolist(),
        "p_value_bounds": np.column_stack([p_low, p_high]).tolist(),
        "p_value_may_cross_005": [bool(a < 0.05 <= b) for a, b in zip(p_low, p_high, strict=True)],
        "bound": bound.kind,
    }
