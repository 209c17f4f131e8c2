"""Result models of ``km``, ``logrank`` and ``cox``, with text summaries and plots.

These run wherever a result is read (hub, SDK, CLI); they send nothing. ``summary()``
returns a fixed-width text table in the style of statsmodels' summaries; ``plot(path)``
writes a PNG with matplotlib's Agg backend (Kaplan-Meier curves with confidence bands,
or a forest plot of Cox hazard ratios with the numbers beside each bar). ``None`` in a
time or median means "not reached".
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from medfed.algorithms.plotting import numbers_beside, pyplot, save

__all__ = ["CoxResult", "KMCurve", "KMResult", "LogrankResult"]


def _num(value: float | None, width: int = 10, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-".rjust(width)
    return f"{value:>{width}.{digits}g}"


def _p(value: float) -> str:
    return f"{value:>9.3g}" if value >= 1e-4 else f"{'<0.0001':>9}"


def _rule(width: int, char: str = "=") -> str:
    return char * width


class KMCurve(BaseModel):
    """One Kaplan-Meier curve at its distinct event times.

    ``ci_lower``/``ci_upper`` are lifelines' exponential Greenwood (log(-log)) bounds;
    ``median_ci_lower``/``median_ci_upper`` are the medians of those bound curves, as
    lifelines' ``median_survival_times(confidence_interval_)``. ``max_error`` bounds
    ``|survival - exact survival|`` on ``[times[i], times[i+1])`` when tails were
    coarsened (all zeros otherwise).

    With ``min_cell_count`` k > 1 (the interval rule), no event time is released: the
    pooled curve is given at the ends ``times`` of intervals on a grid of ``time_step``
    that each hold at least k events (``events``: events in the interval, ``at_risk``: at
    risk at its start). ``survival`` and the bands equal the exact pooled values at those
    times; ``max_error[i]`` bounds ``|S(t) - survival[i]|`` on ``[times[i], times[i+1])``
    (the drop over the next interval plus any tail bound), ``max_error_start`` before
    ``times[0]``. ``events_total`` is None when under k. The median is the first
    released time where the curve is at most 0.5; the exact one lies in ``median_bounds``.
    """

    group: str | None
    rows: int
    events_total: int | None
    times: list[float]
    at_risk: list[int]
    events: list[int]
    survival: list[float]
    ci_lower: list[float]
    ci_upper: list[float]
    median: float | None
    median_ci_lower: float | None
    median_ci_upper: float | None
    coarsened: bool
    max_error: list[float]
    #: the interval rule (k > 1): times are ends of intervals of a ``time_step`` grid
    time_step: float | None = None
    #: bound on ``|S(t) - 1|`` before ``times[0]`` (what the curve reads there)
    max_error_start: float = 0.0
    #: the exact median lies in ``(median_bounds[0], median_bounds[1]]``
    median_bounds: list[float] | None = None

    def at(self, t: float) -> float:
        """The survival estimate at time ``t`` (1 before the first event)."""
        value = 1.0
        for time, s in zip(self.times, self.survival, strict=True):
            if time > t:
                break
            value = s
        return value


def _count(value: int | None) -> str:
    return "<k" if value is None else str(value)


def _exact(curve: KMCurve) -> str:
    """Where a coarsened curve stops being exact, and its bound at the median."""
    inexact = [t for t, e in zip(curve.times, curve.max_error, strict=True) if e > 0]
    text = f"exact before t = {inexact[0]:g}" if inexact else "exact"
    if curve.median is not None:
        at = curve.times.index(curve.median)
        text += f", |error| <= {curve.max_error[at]:.3g} at the median"
    return text


class KMResult(BaseModel):
    """Kaplan-Meier curves, one per group level (one in all without a group)."""

    group: str | None
    alpha: float
    curves: list[KMCurve]
    rows: int
    suppressed_nodes: int

    def curve(self, level: str | None = None) -> KMCurve:
        """The curve of one group level (the only curve when there is no group)."""
        for curve in self.curves:
            if curve.group == level:
                return curve
        if level is None and len(self.curves) == 1:
            return self.curves[0]
        raise KeyError(f"no curve for group {level!r}")

    def summary(self) -> str:
        width = 78
        level = f"{round((1 - self.alpha) * 100)}%"
        lines = [
            "Kaplan-Meier estimate".center(width),
            _rule(width),
            f"rows: {self.rows}   group: {self.group or '-'}   "
            f"suppressed nodes: {self.suppressed_nodes}",
            _rule(width, "-"),
            f"{'group':<16}{'rows':>8}{'events':>8}{'median':>11}"
            f"{'median ' + level + ' CI':>22}{'coarsened':>13}",
            _rule(width, "-"),
        ]
        for c in self.curves:
            ci = f"[{_num(c.median_ci_lower, 8).strip()}, {_num(c.median_ci_upper, 8).strip()}]"
            lines.append(
                f"{(c.group or 'all')[:15]:<16}{c.rows:>8}{_count(c.events_total):>8}"
                f"{_num(c.median, 11)}{ci:>22}{('yes' if c.coarsened else 'no'):>13}"
            )
        lines.append(_rule(width))
        for c in self.curves:
            if c.time_step is not None:
                where = (
                    f"; exact median in ({c.median_bounds[0]:g}, {c.median_bounds[1]:g}]"
                    if c.median_bounds
                    else ""
                )
                lines.append(
                    f"{c.group or 'all'}: given at ends of intervals of >= k events on a "
                    f"{c.time_step:g} grid (no event time released){where}"
                )
            if c.coarsened:
                lines.append(
                    f"{c.group or 'all'}: tails coarsened by the risk-set rule; {_exact(c)}"
                )
        return "\n".join(lines)

    def plot(self, path: str) -> None:
        plt = pyplot()

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for c in self.curves:
            times = [0.0, *c.times]
            line = ax.step(times, [1.0, *c.survival], where="post", label=c.group or "all")
            ax.fill_between(
                times,
                [1.0, *c.ci_lower],
                [1.0, *c.ci_upper],
                step="post",
                alpha=0.2,
                color=line[0].get_color(),
            )
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("time")
        ax.set_ylabel("survival probability")
        ax.set_title(f"Kaplan-Meier, {round((1 - self.alpha) * 100)}% CI")
        if self.group:
            ax.legend(title=self.group)
        save(fig, path)


class LogrankResult(BaseModel):
    """Log-rank test between the group levels (lifelines' multivariate form)."""

    group: str
    groups: list[str]
    rows: list[int]
    observed: list[int]
    expected: list[float]
    test_statistic: float
    df: int
    p_value: float
    coarsened: bool
    suppressed_nodes: int
    #: coarsened tails, two groups: ranges that certainly hold the uncoarsened values
    statistic_bounds: list[float | None] | None = None
    p_value_bounds: list[float] | None = None
    #: the uncoarsened p value could lie on the other side of 0.05
    p_value_may_cross_005: bool = False

    def summary(self) -> str:
        width = 60
        lines = [
            "Log-rank test".center(width),
            _rule(width),
            f"group: {self.group}   chi2 = {self.test_statistic:.4f}   df = {self.df}   "
            f"p = {self.p_value:.4g}",
            _rule(width, "-"),
            f"{'level':<20}{'rows':>10}{'observed':>14}{'expected':>14}",
            _rule(width, "-"),
        ]
        for g, n, o, e in zip(self.groups, self.rows, self.observed, self.expected, strict=True):
            lines.append(f"{g[:19]:<20}{n:>10}{o:>14}{e:>14.3f}")
        lines.append(_rule(width))
        if self.coarsened:
            lines.append("tails coarsened by the risk-set rule (see docs)")
        if self.p_value_bounds is not None:
            low, high = self.statistic_bounds or [None, None]
            lines.append(
                f"uncoarsened chi2 in [{_num(low).strip()}, {_num(high).strip()}], "
                f"p in [{self.p_value_bounds[0]:.3g}, {self.p_value_bounds[1]:.3g}]"
            )
            if self.p_value_may_cross_005:
                lines.append("! the uncoarsened p value could lie on the other side of 0.05")
        return "\n".join(lines)


class CoxResult(BaseModel):
    """Cox proportional hazards fit; coefficients are log hazard ratios per unit."""

    covariates: list[str]
    coef: list[float]
    se: list[float]
    z: list[float]
    p: list[float]
    hazard_ratio: list[float]
    hr_lower: list[float]
    hr_upper: list[float]
    alpha: float
    log_likelihood: float
    log_likelihood_null: float
    lr_statistic: float
    lr_df: int
    lr_p_value: float
    rows: int
    events: int
    iterations: int
    ties: str
    strata: list[str] | None
    coarsened: bool
    suppressed_nodes: int
    #: coarsened tails: per coefficient, ranges that certainly hold the uncoarsened fit's
    #: coefficient, Wald z and p value (``cox_bounds``); None when nothing was coarsened
    coef_bounds: list[list[float]] | None = None
    z_bounds: list[list[float]] | None = None
    p_value_bounds: list[list[float]] | None = None
    #: per coefficient: the uncoarsened p value could lie on the other side of 0.05
    p_value_may_cross_005: list[bool] | None = None
    #: "proven" (the ranges above), "unavailable" (coarsened, no bound), None (exact)
    bound: str | None = None

    def params(self) -> dict[str, float]:
        """Coefficient by covariate name."""
        return dict(zip(self.covariates, self.coef, strict=True))

    def summary(self) -> str:
        width = 86
        level = f"{round((1 - self.alpha) * 100)}%"
        lines = [
            "Cox proportional hazards".center(width),
            _rule(width),
            f"rows: {self.rows}   events: {self.events}   ties: {self.ties}   "
            f"strata: {', '.join(self.strata) if self.strata else '-'}",
            f"log partial likelihood: {self.log_likelihood:.6f}   iterations: {self.iterations}",
            f"likelihood ratio test: {self.lr_statistic:.3f} on {self.lr_df} df, "
            f"p = {self.lr_p_value:.4g}",
            _rule(width, "-"),
            f"{'':<22}{'coef':>10}{'exp(coef)':>10}{'se':>10}{'z':>8}{'p':>9}"
            f"{'HR ' + level + ' CI':>17}",
            _rule(width, "-"),
        ]
        for i, name in enumerate(self.covariates):
            ci = f"{self.hr_lower[i]:.3g}-{self.hr_upper[i]:.3g}"
            lines.append(
                f"{name[:21]:<22}{_num(self.coef[i])}{_num(self.hazard_ratio[i])}"
                f"{_num(self.se[i])}{self.z[i]:>8.3f}{_p(self.p[i])}{ci:>17}"
            )
        lines.append(_rule(width))
        if self.coarsened:
            lines.append("tails coarsened by the risk-set rule (see docs)")
        if self.coef_bounds is not None and self.p_value_bounds is not None:
            what = "proven" if self.bound == "proven" else "first-order estimate, not a proof"
            lines.append(f"uncoarsened fit ({what}):")
            flags = self.p_value_may_cross_005 or [False] * len(self.covariates)
            for name, (lo, hi), (p_lo, p_hi), flag in zip(
                self.covariates, self.coef_bounds, self.p_value_bounds, flags, strict=True
            ):
                mark = "  ! p could lie on the other side of 0.05" if flag else ""
                lines.append(
                    f"  {name[:21]:<22}coef in [{lo:.4g}, {hi:.4g}], "
                    f"p in [{p_lo:.3g}, {p_hi:.3g}]{mark}"
                )
        elif self.bound == "unavailable":
            lines.append("no bound on the uncoarsened fit could be computed")
        return "\n".join(lines)

    def plot(self, path: str) -> None:
        plt = pyplot()

        n = len(self.covariates)
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * n))
        ys = list(range(n))[::-1]
        for y, hr, lo, hi in zip(ys, self.hazard_ratio, self.hr_lower, self.hr_upper, strict=True):
            ax.plot([lo, hi], [y, y], color="tab:blue")
            ax.plot([hr], [y], "s", color="tab:blue")
        ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        low, high = min([*self.hr_lower, 1.0]), max([*self.hr_upper, 1.0])
        ticks = [
            m * 10.0**e
            for e in range(-3, 4)
            for m in (1, 1.5, 2, 3, 5, 7)
            if low <= m * 10.0**e <= high
        ]
        ax.set_xticks(ticks or [1.0], [f"{t:g}" for t in ticks] or ["1"])
        ax.minorticks_off()
        ax.set_yticks(ys)
        ax.set_yticklabels(self.covariates)
        numbers_beside(
            ax,
            ys,
            [
                f"{hr:.3g} ({lo:.3g}-{hi:.3g})"
                for hr, lo, hi in zip(self.hazard_ratio, self.hr_lower, self.hr_upper, strict=True)
            ],
        )
        ax.set_xlabel(f"hazard ratio ({round((1 - self.alpha) * 100)}% CI)")
        ax.set_title("Cox proportional hazards")
        save(fig, path)
