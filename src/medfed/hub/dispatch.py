"""Wake-ups for long polls: nodes waiting for runs, researchers waiting for results.

A waiter subscribes to a key (``node:3``, ``task:7``) *before* it checks the database, so
a change committed between its check and its wait still wakes it. Services collect keys in
``session.info["wake"]``; :func:`commit` commits, then wakes every key (from whichever
thread commits, via ``call_soon_threadsafe``).

On PostgreSQL :func:`commit` also sends ``NOTIFY medfed_wake, '<origin>|<key> <key>…'``
inside the transaction, so PostgreSQL delivers it exactly when (and only if) the commit
succeeds; every hub process runs one :class:`~medfed.hub.wakeups.WakeListener` that wakes
its own waiters from those notifications (skipping its own ``origin``, already woken
locally). Waiters still re-read the database every ``recheck_seconds``: a safety net for
a notification lost while a listener reconnects, not the path a wake-up takes. SQLite
hubs run one worker: its wake-ups never leave the process.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.orm import Session

CHANNEL = "medfed_wake"
#: PostgreSQL caps a notification's payload at 8000 bytes; keys are sent in chunks below it
_PAYLOAD_BYTES = 7000
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


class Notifier:
    def __init__(self) -> None:
        #: this process's tag in the payloads it sends (its listener skips them)
        self.origin = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = (
            defaultdict(set)
        )

    def subscribe(self, key: str) -> Subscription:
        loop = asyncio.get_running_loop()
        entry = (loop, asyncio.Event())
        with self._lock:
            self._waiters[key].add(entry)
        return Subscription(self, key, entry)

    def _drop(self, key: str, entry: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(entry)
                if not waiters:
                    del self._waiters[key]

    def wake(self, keys: Iterable[str]) -> None:
        with self._lock:
            entries = [e for k in set(keys) for e in self._waiters.get(k, ())]
        self._set(entries)

    def wake_all(self) -> None:
        """Wake every waiter (after a listener outage: each re-reads the database)."""
        with self._lock:
            entries = [e for waiters in self._waiters.values() for e in waiters]
        self._set(entries)

    @staticmethod
    def _set(entries: Iterable[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
        for loop, event in entries:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)


class Subscription:
    def __init__(
        self,
        notifier: Notifier,
        key: str,
        entry: tuple[asyncio.AbstractEventLoop, asyncio.Event],
    ) -> None:
        self._notifier = notifier
        self._key = key
        self._entry = entry

    async def wait(self, timeout: float) -> bool:
        """True when woken, False when ``timeout`` passed."""
        try:
            await asyncio.wait_for(self._entry[1].wait(), timeout)
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self._notifier._drop(self._key, self._entry)


def want_wake(session: Session, *keys: str) -> None:
    session.info.setdefault("wake", set()).update(keys)


def payloads(origin: str, keys: Iterable[str]) -> list[str]:
    """``origin|key key …`` payloads, each under PostgreSQL's 8000-byte cap."""
    out: list[str] = []
    chunk: list[str] = []
    size = 0
    for key in sorted(keys):
        if chunk and size + len(key) + 1 > _PAYLOAD_BYTES:
            out.append(f"{origin}|{' '.join(chunk)}")
            chunk, size = [], 0
        chunk.append(key)
        size += len(key) + 1
    if chunk:
        out.append(f"{origin}|{' '.join(chunk)}")
    return out


def parse_payload(payload: str) -> tuple[str, list[str]]:
    """The origin and the keys of a notification's payload."""
    origin, _, keys = payload.partition("|")
    return origin, keys.split()


def commit(session: Session, notifier: Notifier | None) -> None:
    """Commit the unit of work, then wake whoever waits on what it changed.

    On PostgreSQL the keys also go out as ``NOTIFY`` in the same transaction, so the
    other hub processes wake their waiters when the commit lands."""
    keys: set[str] = session.info.pop("wake", set())
    if keys and session.get_bind().dialect.name == "postgresql":
        origin = notifier.origin if notifier is not None else "-"
        for payload in payloads(origin, keys):
            session.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload})
    session.commit()
    if notifier is not None and keys:
        notifier.wake(keys)
