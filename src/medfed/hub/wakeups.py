"""Cross-process wake-ups: one PostgreSQL ``LISTEN medfed_wake`` connection per hub process.

:func:`medfed.hub.dispatch.commit` sends ``NOTIFY medfed_wake, '<origin>|<key> …'`` in
the committing transaction. :class:`WakeListener` runs in a daemon thread with its own
psycopg connection (autocommit, TCP keep-alives), reads notifications as they arrive and
hands the keys of other processes to the local :class:`~medfed.hub.dispatch.Notifier`,
which sets the waiting long polls' events on their event loops. When the connection
drops (a database restart, a network cut) the thread reconnects with exponential backoff
(``min_backoff`` doubling up to ``max_backoff`` seconds); once listening again it wakes
every local waiter, because a notification sent while nobody listened is gone, and each
waiter then re-reads the database. The key ``principals`` (a committed change of users,
tokens or nodes, :mod:`medfed.hub.principals`) and any reconnect also empty this
process's bearer caches. SQLite hubs start no listener.
"""

from __future__ import annotations

import logging
import threading

import psycopg
from sqlalchemy import Engine

from medfed.hub import principals
from medfed.hub.dispatch import CHANNEL, Notifier, parse_payload

log = logging.getLogger(__name__)

__all__ = ["WakeListener", "conninfo_of"]


def conninfo_of(engine: Engine) -> str:
    """A libpq URI for the database the engine talks to (driver name dropped)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class WakeListener:
    """Listen on ``medfed_wake`` and wake the notifier's waiters (see module doc)."""

    def __init__(
        self,
        *,
        conninfo: str,
        notifier: Notifier,
        min_backoff: float = 0.2,
        max_backoff: float = 10.0,
        poll_seconds: float = 1.0,
    ) -> None:
        self._conninfo = conninfo
        self._notifier = notifier
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: set while the LISTEN connection is up (tests and health checks read it)
        self.listening = threading.Event()
        #: how many times a connection was (re)established
        self.connections = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="medfed-wake", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = self._min_backoff
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = self._min_backoff
            except psycopg.Error as exc:
                if self.listening.is_set():
                    backoff = self._min_backoff  # it was up: retry soon
                log.warning("wake-up listener: %s; reconnecting in %.1f s", exc, backoff)
            self.listening.clear()
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, self._max_backoff)

    def _listen(self) -> None:
        with psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            application_name="medfed-wake",
        ) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.connections += 1
            principals.clear_all()  # any change of credentials it missed
            self._notifier.wake_all()  # whatever was sent while nobody listened
            self.listening.set()
            origin = self._notifier.origin
            while not self._stop.is_set():
                for note in conn.notifies(timeout=self._poll_seconds):
                    sender, keys = parse_payload(note.payload)
                    if sender != origin and principals.KEY in keys:
                        principals.clear_all()
                    if sender != origin and keys:
                        self._notifier.wake(keys)
