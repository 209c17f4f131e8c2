"""Database faults for fault tests and the load benchmark, on real SQLite and PostgreSQL.

``sqlite_outage`` holds the write lock of a hub's SQLite file (every write waits its busy
timeout, then the hub answers 503); ``pg_outage`` forbids new connections to a PostgreSQL
database and terminates the open ones, and allows them again on exit; ``pg_database``
creates a fresh database on a server and drops it on exit.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

__all__ = ["pg_database", "pg_outage", "sqlite_outage"]


@contextlib.contextmanager
def sqlite_outage(database: Path) -> Iterator[None]:
    """Hold the write lock of the hub's SQLite file: every write waits, then gets 503."""
    con = sqlite3.connect(database, timeout=60, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


@contextlib.contextmanager
def pg_outage(url: str) -> Iterator[None]:
    """No new connections to the database of ``url``, and its open ones terminated."""
    server = sa.engine.make_url(url)
    name = server.database
    admin = sa.create_engine(
        server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        try:
            yield
        finally:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    admin.dispose()


@contextlib.contextmanager
def pg_database(server_url: str, prefix: str) -> Iterator[str]:
    """A fresh database ``PREFIX<random>`` on the server of ``server_url``; dropped after."""
    server = sa.engine.make_url(server_url)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"{prefix}{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
