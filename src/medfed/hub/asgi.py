"""ASGI entry point for ``uvicorn --factory medfed.hub.asgi:create`` (settings from env).

How it runs: each server process (each uvicorn worker) calls :func:`create` once. After
the app is built, :func:`gc.freeze` moves everything allocated at start (modules, the
algorithm registry, the app) out of the cyclic collector's view, and the first
generation's threshold rises from 700 to 50,000 allocations (a full collection every
5,000,000 instead of every 70,000): a request allocates hundreds of ORM and pydantic
objects, and with the defaults every few requests set off a collection walking a heap
that grows with the open connections (1,000 nodes' long polls). Measured on a task over
1,000 simulated nodes: 14.7 to 19.1 s instead of 20.6 to 34.0 s (`docs/benchmarks.md`).
Cyclic garbage lives a little longer; memory stays bounded by the thresholds. Apps made
by :func:`medfed.hub.app.create_app` directly (tests) keep Python's defaults.
"""

from __future__ import annotations

import gc

from fastapi import FastAPI

from medfed.hub.app import create_app
from medfed.hub.config import HubSettings

#: allocations before a first-generation collection (Python's default is 700)
GC_THRESHOLD = (50_000, 10, 10)


def create() -> FastAPI:
    app = create_app(HubSettings())
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    return app
