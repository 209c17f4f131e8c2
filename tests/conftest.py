"""Fixtures shared by every test: a real hub app on a real database, and a small world.

``database_url`` runs a test once per backend: SQLite (a file under ``tmp_path``) always,
PostgreSQL only when ``MEDFED_TEST_DATABASE_URL`` names a server (a fresh database per
test, dropped afterwards). ``hub_app`` is the app from ``create_app``; ``api`` is a
TestClient over it (lifespan, and so the lease sweeper, runs); ``world`` builds two
organizations, users, a project, two nodes and their datasets through the HTTP API.

A test changes the hub's settings with ``@pytest.mark.hub(lease_seconds=0.2, ...)``.
Nothing is mocked.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from hubtools import ADMIN_PASSWORD, ADMIN_USERNAME, TestClient, World, build_world
from medfed.hub.app import create_app
from medfed.hub.bootstrap import init_hub
from medfed.hub.config import HubSettings

PG_ENV = "MEDFED_TEST_DATABASE_URL"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hub(**settings): HubSettings overrides for hub_app")


def backends() -> list[Any]:
    """SQLite always; PostgreSQL only when the environment names a server."""
    params: list[Any] = [pytest.param("sqlite", id="sqlite")]
    if os.environ.get(PG_ENV):
        params.append(pytest.param("postgres", id="postgres", marks=pytest.mark.postgres))
    return params


# ------------------------------------------------------------------------- database


@pytest.fixture(params=backends())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
        return
    server = make_url(os.environ[PG_ENV])
    name = f"medfed_t_{secrets.token_hex(6)}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


# ------------------------------------------------------------------------------ hub


@pytest.fixture
def hub_settings(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> HubSettings:
    """Settings for one test's hub; every field that matters is given (env cannot leak in)."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "hub",
        "database_url": database_url,
        "dev_mode": True,
        "min_nodes": 1,
        "lease_seconds": 30.0,
        "max_attempts": 3,
        "long_poll_seconds": 5.0,
        "recheck_seconds": 0.05,
        "sweep_seconds": 3600.0,  # tests that want the sweeper ask for it
        "token_days": 30,
    }
    for marker in reversed(list(request.node.iter_markers("hub"))):
        values.update(marker.kwargs)
    return HubSettings(**values)


@pytest.fixture
def hub_app(hub_settings: HubSettings) -> Iterator[FastAPI]:
    app = create_app(hub_settings)
    try:
        yield app
    finally:
        app.state.engine.dispose()


@pytest.fixture
def admin_token(hub_app: FastAPI, hub_settings: HubSettings) -> str:
    """The hub administrator's token (``init_hub`` on the app's database, migrated already)."""
    _, token = init_hub(
        hub_settings, organization="Org A", username=ADMIN_USERNAME, password=ADMIN_PASSWORD
    )
    return token


@pytest.fixture
def api(hub_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(hub_app) as client:
        yield client


@pytest.fixture
def world(hub_app: FastAPI, api: TestClient, admin_token: str) -> World:
    return build_world(hub_app, api, admin_token)
