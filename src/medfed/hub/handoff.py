"""What a transaction hands, at its commit, to the long polls waiting in this process.

How it runs: a long poll that found nothing parks here (:meth:`Handoffs.park`) beside
its subscription while it waits, under the key it waits on: a node's poll for runs
under ``node:{id}`` (with its node), a researcher's wait for a task's end under
``round:{id}`` (with the task and the user). A transaction about to wake keys (a
submission making runs; a batch of answers closing a round, making the next one or
ending the task) calls :func:`hand_over` just before its commit. For each key it will
wake, it reserves the newest waiters up to the :class:`Server`'s ``most`` (a node's
newest poll, which one claim serves; up to :data:`MOST_ENDS` waits for an end) and
serves each in its own transaction: a node's poll gets the claim the poll would have
made (the lease, the ledger entry), for up to :data:`MOST_SERVED` polls (a task over
more nodes wakes the rest, which claim in batches as before); a wait gets the ended
task as its caller sees it (access checked in the same statement; None while the task
runs or where access is gone). After the commit :func:`settle` hands each waiter its
value (None after a rollback). A run so costs no transaction of its own for its claim,
and a finished task no read of its own for its answer: no second ``BEGIN``, ledger head
read and commit (on SQLite an fsync), no session, no thread hop between the transaction
and the waiter.

A waiter leaves when its wait ends (:meth:`Handoffs.leave`): woken, timed out or
cancelled. One reserved in the meantime does not leave; it awaits its value, which the
transaction always delivers (after its commit or its rollback); None means "read for
yourself", as before. A claim handed to a poll whose node has gone is found out by the
poll (its connection closed) and its lease ends at once; one handed to a poll cancelled
meanwhile (the hub stopping) waits out its lease like any lost claim.

Waiters are this process's alone (each hub worker parks its own): one waiting in another
process is woken by the commit's ``NOTIFY`` and reads for itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from medfed.hub.dispatch import Notifier, commit


class Parked:
    """One waiting poll: what it waits as (its node; its task and user), its loop, and
    the future its value is delivered to."""

    __slots__ = ("future", "loop", "reserved", "what")

    def __init__(self, what: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.what = what
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.reserved = False


#: the most waits for a task's end a transaction serves, of one task or of several (each
#: is a read in its transaction, which holds the write lock on SQLite); the others read
#: for themselves
MOST_ENDS = 16


#: the most waiters of one kind a transaction serves: a submission over 100 nodes claims
#: for 4 polls and wakes the rest, which claim in their processes' batches as before
#: (claiming for all of them in the submission's one thread held every node back until
#: it committed: on PostgreSQL with 2 workers, 500 runs/s with 64 here against 520 with 4)
MOST_SERVED = 4


class Server(NamedTuple):
    """How a kind of key is served: ``serve(session, what)`` for each reserved waiter (a
    value, or None: the waiter reads for itself), to at most ``most`` of a key's waiters,
    the newest first, and at most ``total`` waiters of this kind in one transaction."""

    serve: Callable[[Session, Any], Any]
    most: int
    total: int = MOST_SERVED


class Handoffs:
    def __init__(self, servers: Mapping[str, Server] | None = None) -> None:
        #: the server of each kind of key (``node``, ``round``: the part before ``:``)
        self.servers: dict[str, Server] = dict(servers or {})
        self._lock = threading.Lock()
        self._parked: dict[str, list[Parked]] = {}

    def park(self, key: str, what: Any) -> Parked:
        """Park a waiter for ``key`` on the running loop."""
        parked = Parked(what, asyncio.get_running_loop())
        with self._lock:
            self._parked.setdefault(key, []).append(parked)
        return parked

    def waiting(self, key: str) -> int:
        """How many waiters for ``key`` are parked (not reserved) now."""
        with self._lock:
            return len(self._parked.get(key, ()))

    def leave(self, key: str, parked: Parked) -> bool:
        """Unpark; False when a transaction reserved the waiter (await its ``future``)."""
        with self._lock:
            if parked.reserved:
                return False
            waiters = self._parked.get(key)
            if waiters is not None:
                waiters.remove(parked)
                if not waiters:
                    del self._parked[key]
            return True

    def reserve(self, key: str, *, most: int) -> list[Parked]:
        """The newest ``most`` waiters for ``key``, newest first, taken out; each must be
        handed :meth:`deliver` whatever happens (from any thread)."""
        with self._lock:
            waiters = self._parked.get(key)
            if not waiters:
                return []
            taken = waiters[-most:][::-1]
            del waiters[-most:]
            if not waiters:
                del self._parked[key]
            for parked in taken:
                parked.reserved = True
        return taken

    @staticmethod
    def deliver(parked: Parked, value: Any) -> None:
        """Hand ``value`` to a reserved waiter, from any thread."""
        if not parked.loop.is_closed():
            parked.loop.call_soon_threadsafe(_settle, parked.future, value)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


#: what a transaction handed over: each reserved waiter and the value served it
Handed = list[tuple[Parked, Any]]


def hand_over(handoffs: Handoffs, session: Session) -> Handed:
    """Reserve and serve, in the session's transaction, the waiters parked for the keys
    it will wake at its commit. Settle the result with :func:`settle` after the commit (or
    the rollback); where a server raises, every waiter reserved is settled with None here."""
    handed: Handed = []
    served: dict[str, int] = {}  # waiters reserved so far, by kind of key
    try:
        for key in session.info.get("wake", ()):
            kind = key.partition(":")[0]
            server = handoffs.servers.get(kind)
            if server is None:
                continue
            most = min(server.most, server.total - served.get(kind, 0))
            if most <= 0:
                continue
            first = len(handed)
            # every reserved waiter is listed first: settled, whatever the server does
            handed.extend((parked, None) for parked in handoffs.reserve(key, most=most))
            served[kind] = served.get(kind, 0) + len(handed) - first
            for i in range(first, len(handed)):
                parked = handed[i][0]
                handed[i] = (parked, server.serve(session, parked.what))
    except BaseException:
        settle(handed, committed=False)
        raise
    return handed


def settle(handed: Handed, *, committed: bool) -> None:
    """Hand each reserved waiter its value (``committed``), or None (rolled back)."""
    for parked, value in handed:
        Handoffs.deliver(parked, value if committed else None)


def commit_serving(handoffs: Handoffs | None, session: Session, notifier: Notifier | None) -> None:
    """:func:`~medfed.hub.dispatch.commit`, first serving the waiters parked for what the
    commit wakes (:func:`hand_over`), then handing them their values (:func:`settle`; None
    where the commit failed, which is raised)."""
    handed: Handed = []
    try:
        if handoffs is not None:
            handed = hand_over(handoffs, session)
        commit(session, notifier)
    except BaseException:
        settle(handed, committed=False)
        raise
    settle(handed, committed=True)
