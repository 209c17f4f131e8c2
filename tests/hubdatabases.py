"""The test databases: hub settings for a database, PostgreSQL databases made and dropped,
and the world templates every ``world`` is copied from (used by ``conftest`` and by the
tests that build a hub of their own).

How it runs: :class:`Templates` builds the world once per backend through the HTTP API
in a template database (a SQLite file, or a PostgreSQL database sealed against new
connections); ``conftest`` copies it for each test that asks for ``world``.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from hubtools import ADMIN_PASSWORD, ADMIN_USERNAME, TestClient, World, build_world
from medfed.hub.app import create_app
from medfed.hub.bootstrap import init_hub
from medfed.hub.config import HubSettings

PG_ENV = "MEDFED_TEST_DATABASE_URL"


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
