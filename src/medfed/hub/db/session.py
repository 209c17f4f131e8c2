"""Engines and sessions for SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk before it is
acknowledged) and every transaction starts with ``BEGIN IMMEDIATE``, so two writers never
interleave: claiming a run and aggregating a round are serialized. Sessions from
:func:`make_read_sessionmaker` (read-only paths such as a researcher's long poll on a task)
start with a deferred ``BEGIN`` instead: in WAL mode they read a snapshot beside the
writer and never queue for its lock. On PostgreSQL the services lock rows (``FOR UPDATE``,
``SKIP LOCKED`` when claiming). Without psycopg installed, a PostgreSQL URL ends in
:class:`~medfed.common.extras.MissingExtra` (``medfed[postgres]``), not an import error.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult, Engine, Executable, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from medfed.common.extras import needed

READ_ONLY = "medfed_read_only"


def make_engine(url: str, *, busy_timeout: float = 30.0) -> Engine:
    """The engine for ``url``; SQLite writers wait ``busy_timeout`` seconds for the lock."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": busy_timeout}, pool_size=20
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            read_only = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    with needed("postgres"):  # SQLAlchemy imports the driver here
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_read_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions for paths that only read (on SQLite: a deferred ``BEGIN``, no write lock)."""
    return sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)


def is_sqlite(session: Session) -> bool:
    bind = session.get_bind()
    return bind.dialect.name == "sqlite"


def engine_of(session: Session) -> Engine | None:
    """The engine of the session's database, for what a process keeps per database; None
    for a session bound to a connection (an outer transaction may still roll back what
    the session commits)."""
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else None


def execute_core(
    session: Session, statement: Executable, params: Any = None
) -> CursorResult[*tuple[Any, ...]]:
    """Run a Core statement (of tables, not mapped classes) in the session's transaction as
    ``session.execute`` would, without the ORM's work around each statement (its execute
    state, the ``do_orm_execute`` listeners, the bind lookup): the session's pending
    changes are flushed first (its autoflush), then the statement runs on the session's
    connection. On the hot paths (claims, answers, the query budget) that work cost more
    than the statement. Not for statements on the credential tables: their changes are
    seen through the session (``medfed.hub.principals``)."""
    if session.autoflush:
        session.flush()
    result: CursorResult[*tuple[Any, ...]] = session.connection().execute(statement, params)
    return result
