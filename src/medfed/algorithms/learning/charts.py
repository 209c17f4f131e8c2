"""The chart of a training: its metrics per round (loss, accuracy, …), as a PNG.

:func:`plot_history` draws one panel per metric name found in the rounds' records, the
global model's value (evaluated at the nodes at the start of each round) as a solid line
and the mean of the nodes' local values as a dashed one. ``TrainResult.plot`` calls it
for a finished training, the hub's task page for one still running (from the progress'
history). Matplotlib's Agg backend, through :mod:`medfed.algorithms.plotting`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medfed.algorithms.plotting import pyplot, save

__all__ = ["metric_names", "plot_history"]


def _metrics(record: Mapping[str, Any], kind: str) -> Mapping[str, float]:
    values = record.get(kind) or {}
    return values if isinstance(values, Mapping) else {}


def metric_names(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every metric some round reported, loss first, then accuracy, then the rest."""
    names: list[str] = []
    for record in history:
        for kind in ("global_metrics", "local_metrics"):
            names.extend(n for n in _metrics(record, kind) if n not in names)
    order = {"loss": 0, "accuracy": 1}
    return sorted(names, key=lambda n: (order.get(n, 2), names.index(n)))


def plot_history(history: Sequence[Mapping[str, Any]], path: str, title: str = "") -> None:
    """Save the per-round metrics of ``history`` (``RoundRecord`` dicts) as a PNG."""
    plt = pyplot()
    names = metric_names(history) or ["loss"]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names) + 1, 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for kind, style, label in (
            ("global_metrics", "-o", "global model"),
            ("local_metrics", "--s", "nodes' local (mean)"),
        ):
            points = [
                (int(r.get("round", i)) + 1, float(_metrics(r, kind)[name]))
                for i, r in enumerate(history)
                if name in _metrics(r, kind)
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, markersize=4, label=label)
        ax.set_xlabel("round")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    save(fig, path)
