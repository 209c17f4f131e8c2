"""Nodes' claims and answers: queued, answers first, written in batches.

Every claim and every answer writes a ledger entry, so its transaction takes the ledger
head (SQLite: the one write lock, from its start; PostgreSQL: the head row's lock, for
the append just before its commit): appends are serialized either way. Without a queue,
a task over 1,000 nodes wakes 1,000 polls whose claims each take a worker thread and
wait for that lock (on SQLite napping in the busy handler), starving every other
request; one at a time, each claim and each answer pays its own ``BEGIN``, ledger head
read and commit (on SQLite ``synchronous=FULL``: an fsync).

How it runs: a request hands :meth:`WriteBatches.run` a job (a function of a session)
and a priority, and awaits the job's result. While no batch is being written, the first
job starts a writer task on the event loop; it takes up to :data:`MAX_BATCH` waiting jobs,
answers (:attr:`WriteBatches.ANSWER`) before claims (:attr:`WriteBatches.CLAIM`) and
first come first served within each (an answer ends work handed out under a lease; served
behind a round's claims it would miss its lease), drops those whose request went away
(a job's ``wanted`` check, asked just before its batch), and runs the rest in one worker
thread and ONE transaction: one commit, one fsync, one ledger head read; everybody the
batch concerns is woken after the commit (:func:`medfed.hub.dispatch.commit`). A job
that raises fails the batch's transaction: the batch is rolled back and its jobs run
again one by one, each in its own transaction, so an error (a stale lease's conflict) is
its own request's alone and nothing of a failed job is written (a job that raises what
is not an ``Exception``, ``SystemExit`` say, fails every waiting request instead of
leaving them waiting, and goes on up). Answers that end runs of one task ask whether its
round is over once, after the batch's last job
(:func:`medfed.hub.services.tasks.defer_rounds`), not once each. A batch of several jobs
first hands them all to the queue's ``prepare`` function, if it has one, in the batch's
transaction: the nodes' queue writes its answers there in two statements for the batch
(:func:`medfed.hub.services.runs.write_answers`), and each job then finds its row written
(a job that runs alone, after a failed batch, writes its own). Just before each commit the
batch serves the long polls its commit will wake (:mod:`medfed.hub.handoff`: the next
round's runs claimed for the nodes' waiting polls, an ended task read for its waits).
The writer repeats while jobs wait. Jobs see each other's changes in order (the session
flushes before each query), as they would one transaction after another.

Each hub process (each worker on PostgreSQL) has its own queue. Their batches run side
by side and queue for their ledger appends (and for the row of a task whose round both
check, at their ends), not for each other's whole transaction. A job rarely waits on a
row another batch holds (claims skip locked runs, an answer locks only its own run);
where two batches do wait on each other (a lease expiring while another worker takes
its answer), PostgreSQL aborts one after its deadlock timeout, and that batch's jobs run
again one by one like any failed batch.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from medfed.hub.dispatch import Notifier
from medfed.hub.handoff import Handoffs, commit_serving
from medfed.hub.services.tasks import defer_rounds, finish_deferred

#: the most jobs in one transaction (bounds how long one batch holds the write lock)
MAX_BATCH = 64

T = TypeVar("T")
Job = Callable[[Session], Any]
Wanted = Callable[[], Awaitable[bool]]


@dataclass(order=True)
class _Queued:
    priority: int
    order: int
    job: Job = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)
    wanted: Wanted | None = field(compare=False, default=None)


async def _wanted(queued: _Queued) -> bool:
    """Whether the job's request still wants it; a check that fails counts as yes (a claim
    nobody takes returns to pending when its lease runs out)."""
    if queued.wanted is None:
        return True
    try:
        return await queued.wanted()
    except Exception:  # cannot tell: run it
        return True


class WriteBatches:
    ANSWER = 0
    CLAIM = 1

    def __init__(
        self,
        sessions: sessionmaker[Session],
        notifier: Notifier | None,
        *,
        max_batch: int = MAX_BATCH,
        prepare: Callable[[Session, list[Job]], None] | None = None,
        handoffs: Handoffs | None = None,
    ) -> None:
        self._sessions = sessions
        self._notifier = notifier
        self._handoffs = handoffs
        self._max_batch = max_batch
        self._prepare = prepare
        self._waiting: list[_Queued] = []
        self._count = itertools.count()
        self._writer: asyncio.Task[None] | None = None
        #: (jobs, transactions committed), for the tests and benchmarks
        self.written = [0, 0]

    async def run(
        self, priority: int, job: Callable[[Session], T], *, wanted: Wanted | None = None
    ) -> T | None:
        """``job(session)``'s result once its transaction committed; its exception if it
        raised; None without running it when ``wanted()`` said the request went away."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, _Queued(priority, next(self._count), job, future, wanted))
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_all())
        result: T = await future
        return result

    async def _write_all(self) -> None:
        try:
            while self._waiting:
                batch: list[_Queued] = []
                while self._waiting and len(batch) < self._max_batch:
                    queued = heapq.heappop(self._waiting)
                    if queued.future.done():
                        continue  # its request was cancelled while it waited
                    if not await _wanted(queued):
                        queued.future.set_result(None)
                        continue
                    batch.append(queued)
                if not batch:
                    continue
                try:
                    outcomes = await run_in_threadpool(self._write, [q.job for q in batch])
                except asyncio.CancelledError:  # the app is stopping
                    for queued in (*batch, *self._waiting):
                        queued.future.cancel()
                    self._waiting.clear()
                    raise
                except Exception as exc:  # the thread failed: every waiter hears
                    outcomes = [(False, exc)] * len(batch)
                except BaseException as exc:  # SystemExit, KeyboardInterrupt in a job:
                    # nobody may wait for ever on a batch that ended; then it goes on up
                    failure = RuntimeError(f"the write batch ended: {type(exc).__name__}")
                    for queued in (*batch, *self._waiting):
                        if not queued.future.done():
                            queued.future.set_exception(failure)
                    self._waiting.clear()
                    raise
                for queued, (ok, value) in zip(batch, outcomes, strict=True):
                    if queued.future.done():
                        continue
                    if ok:
                        queued.future.set_result(value)
                    else:
                        queued.future.set_exception(value)
        finally:
            self._writer = None

    def _write(self, jobs: list[Job]) -> list[tuple[bool, Any]]:
        if len(jobs) > 1:
            with self._sessions() as session:
                try:
                    defer_rounds(session)
                    if self._prepare is not None:
                        self._prepare(session, jobs)
                    results = [job(session) for job in jobs]
                    finish_deferred(session)
                    self._commit(session)
                except Exception:  # rolled back; each job runs again alone
                    session.rollback()
                else:
                    self.written[0] += len(jobs)
                    self.written[1] += 1
                    return [(True, result) for result in results]
        outcomes: list[tuple[bool, Any]] = []
        for job in jobs:
            try:
                outcomes.append((True, self._alone(job)))
            except Exception as exc:  # handed to the job's request
                outcomes.append((False, exc))
        return outcomes

    def _alone(self, job: Callable[[Session], T]) -> T:
        with self._sessions() as session:
            defer_rounds(session)
            result = job(session)
            finish_deferred(session)
            self._commit(session)
        self.written[0] += 1
        self.written[1] += 1
        return result

    def _commit(self, session: Session) -> None:
        """Commit, first serving the waiters parked for what the commit wakes (the next
        round's runs claimed for the nodes' polls, an ended task read for its waits)."""
        commit_serving(self._handoffs, session, self._notifier)
