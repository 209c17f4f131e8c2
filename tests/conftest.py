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

import dataclasses
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import URL, make_url

from hubtools import ADMIN_PASSWORD, ADMIN_USERNAME, TestClient, World, build_world
from medfed.hub.app import create_app
from medfed.hub.bootstrap import init_hub
from medfed.hub.config import HubSettings
from scheduling import slowest_files_first

PG_ENV = "MEDFED_TEST_DATABASE_URL"


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


def settings_for(database_url: str, data_dir: Path, **overrides: Any) -> HubSettings:
    """Test settings; every field that matters is given, so no MEDFED_* variable leaks in."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "dev_mode": True,
        # one key for the world template and its copies (their checkpoints verify)
        "secret_key": "medfed-test-secret-key-of-32-bytes-or-more",
        "min_nodes": 1,
        "lease_seconds": 30.0,
        "max_attempts": 3,
        "long_poll_seconds": 5.0,
        "recheck_seconds": 0.05,
        "sweep_seconds": 3600.0,  # tests that want the sweeper ask for it
        "token_days": 30,
    }
    values.update(overrides)
    return HubSettings(**values)


# ------------------------------------------------------------------------- databases


class Postgres:
    """Creates and drops databases on the server named by ``MEDFED_TEST_DATABASE_URL``."""

    def __init__(self, url: str) -> None:
        self.server: URL = make_url(url)
        self._admin = sa.create_engine(
            self.server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
        )

    def create(self, prefix: str, template: str | None = None) -> str:
        name = f"{prefix}{secrets.token_hex(6)}"
        clause = f' TEMPLATE "{template}"' if template else ""
        # a copy fails while any session is connected to its template; the template
        # takes no connections once sealed, but a backend that is still exiting (a closed
        # wake-up listener, autovacuum) counts for a moment: try again, a bounded number
        # of times (PostgreSQL itself waits 5 s before giving up)
        for attempt in range(6):
            try:
                with self._admin.connect() as conn:
                    conn.exec_driver_sql(f'CREATE DATABASE "{name}"{clause}')
                return name
            except sa.exc.OperationalError as exc:
                if "being accessed by other users" not in str(exc) or attempt == 5:
                    raise
                if template:
                    self.seal(template)
        raise AssertionError("unreachable")

    def seal(self, name: str) -> None:
        """Let no session connect to ``name`` (a template) and end those that are."""
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )

    def drop(self, name: str) -> None:
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def url(self, name: str) -> str:
        return self.server.set(database=name).render_as_string(hide_password=False)


@dataclasses.dataclass
class Template:
    """A database holding a freshly built world, and the world's ids and credentials."""

    location: str  # SQLite: the file; PostgreSQL: the database name
    seed: dict[str, Any]


class Templates:
    """World templates, built on first use per backend, dropped at the end of the session."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._made: dict[str, Template] = {}
        self._pg: Postgres | None = None

    @property
    def pg(self) -> Postgres:
        if self._pg is None:
            self._pg = Postgres(os.environ[PG_ENV])
        return self._pg

    def get(self, backend: str) -> Template:
        if backend not in self._made:
            self._made[backend] = self._build(backend)
        return self._made[backend]

    def _build(self, backend: str) -> Template:
        data_dir = self._root / backend
        data_dir.mkdir()
        if backend == "sqlite":
            location = str(data_dir / "hub.db")
            url = f"sqlite:///{location}"
        else:
            location = self.pg.create("medfed_t_tpl_")
            url = self.pg.url(location)
        settings = settings_for(url, data_dir)
        app = create_app(settings)
        try:
            _, token = init_hub(
                settings, organization="Org A", username=ADMIN_USERNAME, password=ADMIN_PASSWORD
            )
            with TestClient(app) as api:
                world = build_world(app, api, token)
        finally:
            app.state.engine.dispose()  # closes SQLite's WAL and every PostgreSQL session
        if backend != "sqlite":
            self.pg.seal(location)
        seed = {f.name: getattr(world, f.name) for f in dataclasses.fields(World)}
        del seed["app"], seed["api"]
        return Template(location, seed)

    def close(self) -> None:
        if "postgres" in self._made:
            self.pg.drop(self._made["postgres"].location)


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
