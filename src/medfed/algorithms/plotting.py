"""Matplotlib for result plots, headless: every ``plot(path)`` draws through these calls.

:func:`pyplot` selects the non-interactive Agg backend before pyplot is imported (nodes
and CI have no screen); :func:`save` lays out, writes the PNG and frees the figure;
:func:`numbers_beside` writes each row's figures at the right of a forest plot.
"""

from __future__ import annotations

from typing import Any


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def numbers_beside(ax: Any, ys: list[int], labels: list[str]) -> None:
    """Each row's numbers (estimate and interval) as labels on the plot's right edge."""
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks(ys)
    right.set_yticklabels(labels, fontsize=9)
    right.tick_params(axis="y", length=0)


def save(fig: Any, path: str) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
