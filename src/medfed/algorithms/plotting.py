"""Matplotlib for result plots, headless: every ``plot(path)`` draws through these two calls.

:func:`pyplot` selects the non-interactive Agg backend before pyplot is imported (nodes
and CI have no screen); :func:`save` lays out, writes the PNG and frees the figure.
"""

from __future__ import annotations

from typing import Any


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: str) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
