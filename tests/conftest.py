"""Fixtures shared by every test: a real hub app on a real database, and a small world.

``database_url`` runs a test once per backend: SQLite (a file under ``tmp_path``) always,
PostgreSQL only when ``MEDFED_TEST_DATABASE_URL`` names a server (a fresh database per
test, dropped afterwards). ``hub_app`` is the app from ``create_app`` on it; ``api`` is a
TestClient over the app, used as a context manager so the lifespan (and its lease
sweeper) runs; ``admin_token`` is the hub administrator made by ``init_hub``.

``world`` (see :mod:`hubtools`) is built through the HTTP API once per backend and
session, in a template database; each test that asks for it gets its own copy (a file
copy on SQLite, ``CREATE DATABASE … TEMPLATE`` on PostgreSQL). Users cost an argon2 hash
and a login each, so this keeps the suite fast while every test still starts from the
same fresh state.

A test changes the hub's settings with ``@pytest.mark.hub(lease_seconds=0.2, ...)``.
Nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from hubdatabases import PG_ENV, Templates, settings_for
from hubtools import ADMIN_PASSWORD, ADMIN_USERNAME, TestClient, World
from medfed.hub.app import create_app
from medfed.hub.bootstrap import init_hub
from medfed.hub.config import HubSettings
from scheduling import slowest_files_first


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hub(**settings): HubSettings overrides for hub_app")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slowest files first, so that parallel workers finish together (:mod:`scheduling`)."""
    items[:] = slowest_files_first(items)


def backends() -> list[Any]:
    """SQLite always; PostgreSQL only when the environment names a server."""
    params: list[Any] = [pytest.param("sqlite", id="sqlite")]
    if os.environ.get(PG_ENV):
        params.append(pytest.param("postgres", id="postgres", marks=pytest.mark.postgres))
    return params


@pytest.fixture(scope="session")
def world_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    templates = Templates(tmp_path_factory.mktemp("templates"))
    try:
        yield templates
    finally:
        templates.close()


def _wants_world(request: pytest.FixtureRequest) -> bool:
    return "world" in request.fixturenames


def _backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.node.callspec.params["database_url"]
    return backend


@pytest.fixture(params=backends())
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, world_templates: Templates
) -> Iterator[str]:
    """An empty database, or a copy of the world template when the test asks for ``world``."""
    template = world_templates.get(request.param) if _wants_world(request) else None
    if request.param == "sqlite":
        path = tmp_path / "hub.db"
        if template is not None:
            shutil.copyfile(template.location, path)
            if Path(template.location + "-wal").exists():  # normally folded in on close
                shutil.copyfile(template.location + "-wal", str(path) + "-wal")
        yield f"sqlite:///{path}"
        return
    pg = world_templates.pg
    name = pg.create("medfed_t_", template.location if template else None)
    try:
        yield pg.url(name)
    finally:
        pg.drop(name)


# ------------------------------------------------------------------------------ hub


@pytest.fixture
def hub_settings(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> HubSettings:
    overrides: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("hub"))):
        overrides.update(marker.kwargs)
    return settings_for(database_url, tmp_path / "hub", **overrides)


@pytest.fixture
def hub_app(hub_settings: HubSettings) -> Iterator[FastAPI]:
    app = create_app(hub_settings)
    try:
        yield app
    finally:
        app.state.engine.dispose()


@pytest.fixture
def admin_token(
    request: pytest.FixtureRequest,
    hub_app: FastAPI,
    hub_settings: HubSettings,
    world_templates: Templates,
) -> str:
    """The hub administrator's token; ``init_hub`` runs on the app's (migrated) database."""
    if _wants_world(request):
        token: str = world_templates.get(_backend(request)).seed["admin"].token
        return token
    _, token = init_hub(
        hub_settings, organization="Org A", username=ADMIN_USERNAME, password=ADMIN_PASSWORD
    )
    return token


@pytest.fixture
def api(hub_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(hub_app) as client:
        yield client


@pytest.fixture
def world(
    request: pytest.FixtureRequest, hub_app: FastAPI, api: TestClient, world_templates: Templates
) -> World:
    """The world of :func:`hubtools.build_world`, in this test's own database."""
    seed = world_templates.get(_backend(request)).seed
    return World(app=hub_app, api=api, **seed)
