"""Server-drawn SVG figures of a validation study: ROC, calibration, subgroup forest plot.

Pure functions of the result dict (nothing read from the database): the study page and
the downloadable report embed the same markup. Every figure states its n in its title.
Only SVG presentation attributes are used (no ``style`` attribute, no script), so the
pages' content security policy holds; every text is escaped.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

__all__ = ["calibration_svg", "forest_svg", "roc_svg"]

W, H, PAD = 320, 320, 44


def _x(v: float) -> float:
    return PAD + v * (W - 2 * PAD)


def _y(v: float) -> float:
    return H - PAD - v * (H - 2 * PAD)


def _frame(title: str, xlabel: str, ylabel: str, figure: str) -> list[str]:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="figure" id="{figure}" '
        f'width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" '
        'fill="white" stroke="#888"/>',
        f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="11">{escape(title)}</text>',
        f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle" font-size="11">'
        f"{escape(xlabel)}</text>",
        f'<text x="12" y="{H / 2}" text-anchor="middle" font-size="11" '
        f'transform="rotate(-90 12 {H / 2})">{escape(ylabel)}</text>',
        f'<line x1="{_x(0)}" y1="{_y(0)}" x2="{_x(1)}" y2="{_y(1)}" stroke="#bbb" '
        'stroke-dasharray="4 3"/>',
    ]
    for tick in (0.0, 0.5, 1.0):
        parts.append(
            f'<text x="{_x(tick)}" y="{H - PAD + 14}" text-anchor="middle" '
            f'font-size="10">{tick:g}</text>'
        )
        parts.append(
            f'<text x="{PAD - 6}" y="{_y(tick) + 3}" text-anchor="end" '
            f'font-size="10">{tick:g}</text>'
        )
    return parts


def roc_svg(summary: dict[str, Any], label: str = "all sites") -> str:
    """The ROC curve at the edges every site shares, with the AUC and its bounds."""
    auc = summary.get("auc")
    n, events = summary["n"], summary["n_pos"]
    text = f"ROC, {label} (n={n}, events={events})"
    parts = _frame(text, "1 - specificity", "sensitivity", "roc")
    roc = summary.get("roc") or {}
    points = roc.get("curve") or []
    if points:
        path = " ".join(f"{_x(x):.1f},{_y(y):.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for x, y in roc.get("exact") or []:
        parts.append(
            f'<circle cx="{_x(x):.1f}" cy="{_y(y):.1f}" r="3" fill="#1f77b4">'
            f"<title>exact point: sensitivity {y:.3f}, specificity {1 - x:.3f}</title></circle>"
        )
    if auc is not None:
        parts.append(
            f'<text x="{_x(0.97)}" y="{_y(0.05)}" text-anchor="end" font-size="11">'
            f"AUC {auc['estimate']:.3f} [{auc['ci'][0]:.3f}, {auc['ci'][1]:.3f}]</text>"
        )
        parts.append(
            f'<text x="{_x(0.97)}" y="{_y(0.05) - 14}" text-anchor="end" font-size="10">'
            f"binning bound {auc['lower_bound']:.3f}-{auc['upper_bound']:.3f}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def calibration_svg(summary: dict[str, Any], recalibration: dict[str, Any] | None) -> str:
    """Observed against mean predicted risk per bin (area by n), and the recalibration."""
    bins = [b for b in summary.get("calibration") or [] if b["n"]]
    text = f"Calibration (n={summary['n']}, events={summary['n_pos']})"
    parts = _frame(text, "mean predicted risk", "observed risk", "calibration")
    largest = max((b["n"] for b in bins), default=1)
    for b in bins:
        r = 3 + 9 * math.sqrt(b["n"] / largest)
        parts.append(
            f'<circle cx="{_x(b["mean_predicted"]):.1f}" cy="{_y(b["observed"]):.1f}" '
            f'r="{r:.1f}" fill="#ff7f0e" fill-opacity="0.7"><title>'
            f"{b['lo']:g}-{b['hi']:g}: n={b['n']}, events={b['events']}</title></circle>"
        )
    if recalibration is not None:
        a, b = recalibration["intercept"], recalibration["slope"]
        pts = []
        for i in range(1, 100):
            p = i / 100
            q = 1 / (1 + math.exp(-(a + b * math.log(p / (1 - p)))))
            pts.append(f"{_x(p):.1f},{_y(q):.1f}")
        parts.append(
            f'<polyline points="{" ".join(pts)}" fill="none" stroke="#2ca02c" stroke-width="1.5">'
            f"<title>recalibration: intercept {a:.3f}, slope {b:.3f}</title></polyline>"
        )
    parts.append("</svg>")
    return "".join(parts)


def forest_svg(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """AUC with its DeLong-style interval for each (label, summary) row."""
    shown = [(label, s) for label, s in rows if s.get("auc")]
    height = 40 + 22 * max(len(shown), 1)
    left, right = 190, 460
    total = sum(s["n"] for _, s in shown[:1])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="figure" id="forest" width="{right + 30}"'
        f' height="{height}" viewBox="0 0 {right + 30} {height}" role="img">',
        f"<title>AUC by subgroup (n={total})</title>",
        f'<text x="{(left + right) / 2}" y="14" text-anchor="middle" font-size="11">'
        f"AUC by subgroup and site (n={total} in all)</text>",
    ]

    def px(v: float) -> float:
        return left + (v - 0.4) / 0.6 * (right - left)

    for tick in (0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{px(tick):.1f}" y1="24" x2="{px(tick):.1f}" y2="{height - 8}" '
            'stroke="#ddd"/>'
        )
        parts.append(
            f'<text x="{px(tick):.1f}" y="{height - 1}" text-anchor="middle" '
            f'font-size="9">{tick:g}</text>'
        )
    for i, (label, s) in enumerate(shown):
        y = 36 + 22 * i
        auc = s["auc"]
        lo, hi = (max(0.4, v) for v in auc["ci"])
        parts.append(
            f'<text x="{left - 8}" y="{y + 4}" text-anchor="end" font-size="11">'
            f"{escape(label)} (n={s['n']})</text>"
        )
        parts.append(f'<line x1="{px(lo):.1f}" y1="{y}" x2="{px(hi):.1f}" y2="{y}" stroke="#333"/>')
        parts.append(
            f'<rect x="{px(max(0.4, auc["estimate"])) - 4:.1f}" y="{y - 4}" width="8" height="8"'
            f' fill="#1f77b4"><title>{auc["estimate"]:.3f}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)
