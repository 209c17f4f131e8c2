"""ASGI entry point for ``uvicorn --factory medfed.hub.asgi:create`` (settings from env)."""

from __future__ import annotations

from fastapi import FastAPI

from medfed.hub.app import create_app
from medfed.hub.config import HubSettings


def create() -> FastAPI:
    return create_app(HubSettings())
