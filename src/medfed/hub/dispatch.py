"""Wake-ups for long polls: nodes waiting for runs, researchers waiting for results.

A waiter subscribes to a key (``node:3``, ``task:7``) *before* it checks the database, so
a change committed between its check and its wait still wakes it. Services collect keys in
``session.info["wake"]``; :func:`commit` commits, then wakes every key (from whichever
thread commits, via ``call_soon_threadsafe``). With several hub workers a wake-up from
another process is not seen; waiters then re-read the database every
``recheck_seconds``, which bounds the delay.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy.orm import Session


class Notifier:
    def __init__(self) -> None:
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


def commit(session: Session, notifier: Notifier | None) -> None:
    """Commit the unit of work, then wake whoever waits on what it changed."""
    keys: set[str] = session.info.pop("wake", set())
    session.commit()
    if notifier is not None and keys:
        notifier.wake(keys)
