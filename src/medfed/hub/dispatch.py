"""Wake-ups for long polls: nodes waiting for runs, researchers waiting for results.

A waiter subscribes to a key (``node:3``, ``task:7``, ``round:7``) *before* it checks the
database, so a change committed between its check and its wait still wakes it. A node's
key is woken when a run for it is made; a task's when one of its runs ends (progress) and
when a round closes; ``round:{id}`` only when a round closes (the task's end with it), so
a wait that answers only at the end is not woken by every answer. Services collect keys in
``session.info["wake"]``; :func:`commit` commits, then wakes every key (from whichever
thread commits, via ``call_soon_threadsafe``).

On PostgreSQL :func:`commit` also sends ``NOTIFY medfed_wake, '<origin>|<key> <key>…'``
inside the transaction, so PostgreSQL delivers it exactly when (and only if) the commit
succeeds; every hub process runs one :class:`~medfed.hub.wakeups.WakeListener` that wakes
its own waiters from those notifications (skipping its own ``origin``, already woken
locally). Waiters still re-read the database every ``recheck_seconds``: a safety net for
a notification lost while a listener reconnects, not the path a wake-up takes. SQLite
hubs run one worker: its wake-ups never leave the process.

Hints spare most of those reads. A waiter takes :meth:`Notifier.stamp` of its key before it
reads; when the read found nothing it notes so (:meth:`Notifier.note`), and until a
wake-up for that key arrives (or any listener outage ends: :meth:`Notifier.wake_all`), or
``max_age`` passes, :meth:`Notifier.known` answers "nothing" without a read. Work only
appears through a commit that wakes its key, and the wake-up is counted after the commit,
so a stamp taken before the read is never newer than a change the read missed. A noted
"work waits" (a claim that saw more) holds until ``max_age`` too: a claim that then finds
nothing notes "nothing". A read inside the transaction whose own commit wakes the key (a
claim handed to a parked poll) notes as of that one wake-up
(:meth:`Notifier.note_after_own_wake`), and only where no other came between.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
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
        #: wake-ups counted per key that :meth:`stamp` was asked for (node keys: bounded
        #: by the nodes that poll); the epoch moves when every waiter is woken
        self._wakes: dict[str, int] = {}
        self._epoch = 0
        #: key → (stamp, monotonic time, whether work waits) of the last read noted
        self._hints: dict[str, tuple[tuple[int, int], float, bool]] = {}

    def stamp(self, key: str) -> tuple[int, int]:
        """A mark of the wake-ups ``key`` has had so far; take it before reading."""
        with self._lock:
            return (self._epoch, self._wakes.setdefault(key, 0))

    def note(self, key: str, stamp: tuple[int, int], *, work: bool) -> None:
        """A read that began after ``stamp`` found work for ``key``, or none."""
        with self._lock:
            self._hints[key] = (stamp, time.monotonic(), work)

    def note_after_own_wake(self, key: str, stamp: tuple[int, int], *, work: bool) -> None:
        """A read that began after ``stamp`` inside a transaction whose commit then woke
        ``key`` (once): noted as of that wake-up when no other came between (a commit the
        read may have missed); otherwise nothing is noted. A claim served to a parked poll
        in the transaction that made the run (:mod:`medfed.hub.handoff`) notes this way:
        its own wake-up does not void what it read."""
        with self._lock:
            current = (self._epoch, self._wakes.get(key, -1))
            if current == (stamp[0], stamp[1] + 1):
                self._hints[key] = (current, time.monotonic(), work)

    def known(self, key: str, max_age: float) -> bool | None:
        """Whether work waits for ``key`` as far as a noted read tells; None when no read
        within ``max_age`` tells (read the database)."""
        with self._lock:
            hint = self._hints.get(key)
            if hint is None:
                return None
            stamp, at, work = hint
            current = (self._epoch, self._wakes.get(key, -1))
            if time.monotonic() - at > max_age or (not work and stamp != current):
                del self._hints[key]
                return None
            return work

    def subscribe(self, key: str, loop: asyncio.AbstractEventLoop | None = None) -> Subscription:
        """A waiter for ``key`` on ``loop`` (default: the running loop). A worker thread
        passes the loop whose coroutine will wait (a submit that subscribes just before its
        commit, so a task that ends at once still wakes it)."""
        entry = (loop if loop is not None else asyncio.get_running_loop(), asyncio.Event())
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
            keys = set(keys)
            for key in keys & self._wakes.keys():
                self._wakes[key] += 1
            entries = [e for k in keys for e in self._waiters.get(k, ())]
        self._set(entries)

    def wake_all(self) -> None:
        """Wake every waiter (after a listener outage: each re-reads the database)."""
        with self._lock:
            self._epoch += 1
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
        """True when woken, False when ``timeout`` passed.

        The waiting task awaits the event itself (``asyncio.timeout``, not ``wait_for``'s
        inner task): a wake-up resumes it on the loop's next turn, ahead of the work the
        same commit resumed after it (the answer that ended a task, before the wait for
        that end)."""
        try:
            async with asyncio.timeout(timeout):
                await self._entry[1].wait()
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
