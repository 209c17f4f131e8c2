"""Optional parts of medfed and the one-line hint when one is missing.

``pip install medfed`` is the hub, the SDK and the CLI. The extras in ``pyproject.toml``
add what other people need: ``node`` (a hospital's table store, DICOM ingest, export),
``learn`` (PyTorch, Opacus), ``postgres`` (psycopg), ``demo`` (lifelines and the node
parts). Code that needs an extra imports it late, inside the function that uses it, and
either checks first with :func:`require` or wraps the import in :func:`needed`; both
raise :class:`MissingExtra`, a :class:`MedfedError` whose message is the single line
``this needs medfed[node]: pip install 'medfed[node]'`` that the CLI prints. Nothing here
imports an optional package; a check is ``importlib.util.find_spec`` on a top-level name.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

from medfed.common.errors import MedfedError

__all__ = [
    "EXTRAS",
    "MissingExtra",
    "extra_for",
    "hint",
    "missing_extra",
    "needed",
    "require",
]

# extra -> the top-level modules it brings (what `require(extra)` checks by default)
EXTRAS: dict[str, tuple[str, ...]] = {
    "node": ("duckdb", "pyarrow", "pydicom", "nibabel", "opendp"),
    "learn": ("torch", "opacus"),
    "postgres": ("psycopg",),
    # the demo runs nodes on this machine: their table store comes with it
    "demo": ("lifelines", "duckdb", "pyarrow"),
}

# a module that several extras bring is named by the first of these that has it
_OWNER_ORDER = ("node", "learn", "postgres", "demo")


def hint(extra: str) -> str:
    """``this needs medfed[node]: pip install 'medfed[node]'``."""
    return f"this needs medfed[{extra}]: pip install 'medfed[{extra}]'"


class MissingExtra(MedfedError):
    """An optional package is not installed; the message says which extra brings it."""

    status_code = 500

    def __init__(self, extra: str, module: str | None = None) -> None:
        super().__init__(hint(extra) + (f" (no module '{module}')" if module else ""))
        self.extra = extra
        self.module = module


def extra_for(module: str) -> str | None:
    """The extra that brings the top-level module of ``module`` (``None``: not an extra's)."""
    top = module.split(".", 1)[0]
    for extra in _OWNER_ORDER:
        if top in EXTRAS[extra]:
            return extra
    return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(extra: str, *modules: str) -> None:
    """Raise :class:`MissingExtra` unless ``modules`` (default: all of ``extra``'s) exist."""
    for module in modules or EXTRAS[extra]:
        if not _installed(module):
            raise MissingExtra(extra, module)


def missing_extra(exc: ModuleNotFoundError, prefer: str | None = None) -> MissingExtra | None:
    """The :class:`MissingExtra` for an import that failed, or ``None`` (not an extra's).

    ``prefer`` names the extra to suggest when the module belongs to several.
    """
    top = (exc.name or "").split(".", 1)[0]
    if prefer is not None and top in EXTRAS[prefer]:
        return MissingExtra(prefer, top)
    owner = extra_for(top)
    return MissingExtra(owner, top) if owner is not None else None


@contextmanager
def needed(extra: str | None = None) -> Iterator[None]:
    """Turn a ``ModuleNotFoundError`` for an extra's module into :class:`MissingExtra`.

    Any other missing module (one of medfed's own dependencies) is a broken install and
    goes on as it is.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        translated = missing_extra(exc, extra)
        if translated is None:
            raise
        raise translated from exc
