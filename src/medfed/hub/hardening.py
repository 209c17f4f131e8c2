"""What the hub does to its storage when it starts (``create_app``, after the migration).

- the data folder becomes 0700 and a SQLite database file (with its ``-wal``/``-shm``
  files) 0600 — SQLite gives new WAL files the mode of the database file, and files the
  hub writes later (ethics documents, the dev key) are created 0600 by their writers;
- Zenodo tokens stored in plain text by an earlier version are sealed with the hub's key
  (``zenodo.seal_stored_tokens``), in one short transaction. Several workers starting
  together may each seal: a sealed token is never sealed twice.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from medfed.hub.config import HubSettings
from medfed.hub.keys import make_private
from medfed.hub.services.catalogue import zenodo

__all__ = ["secure_storage", "sqlite_files"]


def sqlite_files(database_url: str) -> list[Path]:
    """The files of a SQLite database URL (none for another database or ``:memory:``)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return []
    main = Path(url.database)
    return [main, Path(f"{main}-wal"), Path(f"{main}-shm")]


def secure_storage(settings: HubSettings, sessions: sessionmaker[Session]) -> None:
    if settings.data_dir.exists():
        make_private(settings.data_dir, folder=True)
    for path in sqlite_files(settings.effective_database_url):
        make_private(path)
    with sessions() as session:
        if zenodo.seal_stored_tokens(session, secret_key=settings.secret_key):
            session.commit()
