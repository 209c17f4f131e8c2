"""A blob as an HTTP download, streamed from whichever store holds it.

How it runs: :func:`blob_response` looks the blob up first (a missing blob is a 404 before
any byte is sent), then answers ``application/octet-stream`` with its ``Content-Length``
and the chunks of :meth:`~medfed.hub.services.learning.blob_store.BlobStore.chunks`,
read one at a time in the thread pool (Starlette iterates a plain iterator there) — a
2 GiB model never sits in the hub's memory, whether it comes from a file or from
PostgreSQL. API routes and web pages both use it.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.responses import StreamingResponse

from medfed.hub.services.learning.blob_store import BlobStore

__all__ = ["blob_response"]


def blob_response(
    store: BlobStore, sha256: str, *, filename: str | None = None
) -> StreamingResponse:
    """Stream blob ``sha256`` (NotFound when it is not stored), as a file when named."""
    headers = {"Content-Length": str(store.size(sha256))}
    if filename is not None:
        quoted = quote(filename)
        headers["Content-Disposition"] = (
            f'attachment; filename="{filename}"'
            if quoted == filename
            else f"attachment; filename*=utf-8''{quoted}"
        )
    return StreamingResponse(
        store.chunks(sha256), media_type="application/octet-stream", headers=headers
    )
