"""A run's gated output as the aggregate step receives it: JSON part plus its arrays.

How it runs: a node's binary outcome (``medfed.common.arrays``) is stored as a small JSON
part in ``runs.output`` with references, and its arrays once as an ``output`` blob named by
``runs.output_blob`` (:func:`medfed.hub.services.runs.post_outcome`). When a round ends,
:func:`payload_of` reads the blob (safetensors: the arrays are mapped, not parsed number
by number) and puts each array back in place of its reference. Plain JSON outputs are
returned as stored.
"""

from __future__ import annotations

from typing import Any, Protocol

from medfed.common.arrays import decode_arrays, join
from medfed.hub.config import HubSettings

__all__ = ["Stored", "payload_of"]


class Stored(Protocol):
    """A run's stored output: a :class:`~medfed.hub.db.models.Run`, or a row of its
    ``output`` and ``output_blob`` columns."""

    @property
    def output(self) -> dict[str, Any] | None: ...
    @property
    def output_blob(self) -> str | None: ...


def payload_of(run: Stored, settings: HubSettings) -> dict[str, Any] | None:
    """The run's output with its arrays in place (None when it has none)."""
    if run.output is None or run.output_blob is None:
        return run.output
    from medfed.hub.services.learning.blobs import store_for

    arrays = decode_arrays(store_for(settings).read(run.output_blob))
    joined: dict[str, Any] = join(run.output, arrays)
    return joined
