"""Routes for nodes (authenticated by their secret): identity, datasets, runs, heartbeat.

``GET /api/node/runs/next`` is a long poll: it subscribes to ``node:{id}``, tries to
claim, and if nothing is pending waits until a task for this node is committed (woken at
once in this process, or through PostgreSQL ``NOTIFY`` from another hub process) or a
re-check interval passes (``recheck_seconds``, doubling while nobody wakes it, up to
8 s: a safety net), until ``wait`` seconds are over; then 204. A re-check nobody woke
reads first and claims only when a run is pending; that read is skipped while the
notifier's hint (:meth:`~medfed.hub.dispatch.Notifier.known`) tells, from a read or a
claim at most :data:`RECHECK_CAP_SECONDS` ago with no wake-up since, that nothing waits
(a claim also notes whether more runs wait for the node, so the poll after an answer
neither reads nor claims in vain). Claims and answers queue in
:class:`~medfed.hub.api.write_batches.WriteBatches` (answers first) and are written
several to a transaction, not in one worker thread each; a batch's answers are written
ahead of its jobs in two statements (:func:`_prepare`). A busy node posts its answer
with ``?next=true``: the answer and the claim of its next run are one job, and the
response carries that run (or null), so a run costs it one request instead of two.
While it waits, a poll is parked (:mod:`medfed.hub.handoff`): the transaction that makes
a run for its node (a submission, a batch closing a round) claims the run for it before
its commit and hands it over; a poll whose node went away meanwhile ends that lease at
once (:func:`~medfed.hub.services.runs.lapse_lease`), so the run goes back out.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_state

from medfed.common.arrays import check_references, decode_arrays, decode_body, references
from medfed.common.errors import BadRequest
from medfed.common.resources import (
    AirlockEvent,
    DatasetPublic,
    DatasetRegister,
    Heartbeat,
    HeartbeatAck,
    NodeIdentity,
    OutcomeAccepted,
    RunAssignment,
    RunOutcome,
)
from medfed.common.timeutil import aware, utcnow
from medfed.hub.api.deps import CurrentNode, DetachedNode, NotifierDep, SessionDep, SettingsDep
from medfed.hub.api.limits import json_problem
from medfed.hub.api.write_batches import WriteBatches
from medfed.hub.config import HubSettings
from medfed.hub.db.models import Node
from medfed.hub.dispatch import Notifier, commit
from medfed.hub.handoff import Handoffs
from medfed.hub.services import datasets, nodes, runs
from medfed.hub.services.catalogue.metadata import public_of
from medfed.hub.services.nodes import TOUCH_EVERY

router = APIRouter(prefix="/api/node", tags=["node"])

#: an idle node poll's re-check interval doubles from ``recheck_seconds`` up to this
RECHECK_CAP_SECONDS = 8.0


@router.get("/me")
def me(node: CurrentNode, session: SessionDep, notifier: NotifierDep) -> NodeIdentity:
    nodes.touch(session, node=node)
    commit(session, notifier)
    return NodeIdentity(id=node.id, name=node.name, organization_id=node.organization_id)


@router.post("/datasets")
def register_dataset(
    body: DatasetRegister, node: CurrentNode, session: SessionDep, notifier: NotifierDep
) -> DatasetPublic:
    dataset = datasets.register(session, node=node, data=body)
    commit(session, notifier)
    return public_of(dataset)


@router.post("/runs/{run_id}/airlock")
def airlock_event(
    run_id: int, body: AirlockEvent, node: CurrentNode, session: SessionDep, notifier: NotifierDep
) -> dict[str, str]:
    """The node's airlock held, released or refused a run's outputs (a ledger entry)."""
    runs.airlock_event(
        session, node=node, run_id=run_id, event=body.event, outputs_sha256=body.outputs_sha256
    )
    commit(session, notifier)
    return {"event": body.event}


@router.post("/heartbeat")
def heartbeat(
    body: Heartbeat,
    node: CurrentNode,
    session: SessionDep,
    settings: SettingsDep,
    notifier: NotifierDep,
) -> HeartbeatAck:
    nodes.touch(session, node=node)
    extended, lost = runs.extend_leases(session, node=node, run_ids=body.run_ids, settings=settings)
    commit(session, notifier)
    return HeartbeatAck(node_id=node.id, extended=extended, lost=lost)


def _attacher(node: Node) -> Callable[[Session], Node]:
    """The request's node in a batch's session without reading its row again (the bearer
    check just read it, or kept it); ``node`` is in no session (``DetachedNode``)."""
    known = node
    identity = instance_state(known).key
    assert identity is not None  # a detached copy has its identity

    def attach(session: Session) -> Node:
        # the batch's own instance when a job before this one was the same node's
        held: Node | None = session.identity_map.get(identity)
        return held if held is not None else session.merge(known, load=False)

    return attach


def claim_job(settings: HubSettings, node: Node) -> Callable[[Session], runs.Claim]:
    """The claim job: the assignment, and whether more runs wait for the node after it."""
    attach = _attacher(node)

    def job(session: Session) -> runs.Claim:
        node = attach(session)
        nodes.touch(session, node=node)
        return runs.claim_next(session, node=node, settings=settings)

    return job


@dataclass(frozen=True)
class HandedClaim:
    """A claim made for a parked poll, and the stamp of the poll's key taken before it."""

    claim: runs.Claim
    stamp: tuple[int, int]


def claim_for(
    settings: HubSettings, notifier: Notifier, session: Session, node: Node
) -> HandedClaim:
    """The claim a poll of ``node`` would make, made in ``session``: the hand-over's server
    for node keys (a transaction claiming for a parked poll, :mod:`medfed.hub.handoff`).
    The key's stamp is taken before the claim reads, so the poll can note what the claim
    found as of the transaction's own wake-up of the key."""
    stamp = notifier.stamp(f"node:{node.id}")
    return HandedClaim(claim_job(settings, node)(session), stamp)


@router.get(
    "/runs/next",
    response_model=RunAssignment,
    responses={204: {"description": "nothing to do within the wait"}},
)
async def next_run(
    request: Request,
    node: DetachedNode,
    wait: float = Query(default=20.0, ge=0, le=120),
) -> RunAssignment | Response:
    # the app's settings and notifier read here, not as dependencies: every poll pays
    # for each dependency FastAPI solves
    settings: HubSettings = request.app.state.settings
    notifier: Notifier = request.app.state.notifier
    handoffs: Handoffs = request.app.state.handoffs
    deadline = time.monotonic() + min(wait, settings.long_poll_seconds)
    # the first pass claims when the node's last_seen is due anyway (claiming touches it)
    woken = node.last_seen_at is None or utcnow() - aware(node.last_seen_at) >= TOUCH_EVERY
    recheck = settings.recheck_seconds
    key = f"node:{node.id}"
    while True:
        subscription = notifier.subscribe(key)
        try:
            stamp = notifier.stamp(key)  # before any read: a later wake-up voids a hint
            # otherwise a pass nobody woke asks the hint, else reads: an idle poll takes
            # no write lock
            work = woken or notifier.known(key, RECHECK_CAP_SECONDS)
            if work is None:
                work = await run_in_threadpool(_has_work, request, node.id)
                notifier.note(key, stamp, work=work)
            if work:
                # a node that went away while its poll waited claims nothing: the run
                # stays pending for a live node instead of waiting out a lease
                claimed = await _batches(request).run(
                    WriteBatches.CLAIM, claim_job(settings, node), wanted=_connected(request)
                )
                if claimed is None:  # not run: its request went away
                    return Response(status_code=status.HTTP_204_NO_CONTENT)
                assignment = claimed.assignment
                notifier.note(key, stamp, work=claimed.more)
                if assignment is None and await request.is_disconnected():
                    return Response(status_code=status.HTTP_204_NO_CONTENT)
                if assignment is not None:
                    return assignment
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Response(status_code=status.HTTP_204_NO_CONTENT)
            # parked while it waits: a submission may claim a run for it in its own
            # transaction (:mod:`medfed.hub.handoff`) and hand it over here
            parked = handoffs.park(key, node)
            try:
                woken = await subscription.wait(min(remaining, recheck))
            finally:  # cancelled while reserved: that claim waits out its lease
                reserved = not handoffs.leave(key, parked)
            if reserved:
                handed: HandedClaim | None = await parked.future  # None: rolled back
                if handed is not None:
                    # as of the handing commit's own wake-up of the key: an answer that
                    # follows asks no claim where the claim saw nothing more
                    notifier.note_after_own_wake(key, handed.stamp, work=handed.claim.more)
                    assignment = handed.claim.assignment
                    if assignment is not None:
                        if not await request.is_disconnected():
                            return assignment
                        # its node went away while it waited: the run goes back out
                        await _batches(request).run(WriteBatches.ANSWER, _lapse(assignment))
                        return Response(status_code=status.HTTP_204_NO_CONTENT)
            # a safety net, not the path: un-woken re-checks back off (1000 idle nodes)
            recheck = (
                settings.recheck_seconds
                if woken
                else min(recheck * 2, max(settings.recheck_seconds, RECHECK_CAP_SECONDS))
            )
        finally:
            subscription.close()


def _batches(request: Request) -> WriteBatches:
    """The app's :class:`WriteBatches` for this event loop."""
    state = request.app.state
    loop = asyncio.get_running_loop()
    held: tuple[asyncio.AbstractEventLoop, WriteBatches] | None = getattr(
        state, "node_write_batches", None
    )
    if held is None or held[0] is not loop:  # one per event loop; no await in between
        held = (
            loop,
            WriteBatches(
                state.sessionmaker, state.notifier, prepare=_prepare, handoffs=state.handoffs
            ),
        )
        state.node_write_batches = held
    return held[1]


def _lapse(assignment: RunAssignment) -> Callable[[Session], None]:
    def job(session: Session) -> None:
        runs.lapse_lease(session, run_id=assignment.run_id, lease_id=assignment.lease_id)

    return job


def _has_work(request: Request, node_id: int) -> bool:
    with request.app.state.read_sessionmaker() as session:
        return runs.has_work(session, node_id=node_id)


def _connected(request: Request) -> Callable[[], Awaitable[bool]]:
    async def connected() -> bool:
        return not await request.is_disconnected()

    return connected


@dataclass(frozen=True, eq=False)
class _Answer:
    """The answer job: :func:`runs.post_outcome` in the batch's session."""

    settings: HubSettings
    node: Node
    run_id: int
    outcome: RunOutcome
    digest: str
    arrays: bytes | None = None

    def __call__(self, session: Session) -> str:
        return runs.post_outcome(
            session,
            node=_attacher(self.node)(session),
            run_id=self.run_id,
            outcome=self.outcome,
            settings=self.settings,
            body_sha256=self.digest,
            arrays=self.arrays,
        )


@dataclass(frozen=True, eq=False)
class _AnswerAndClaim:
    """An answer and the node's next claim, one job (``?next=true``)."""

    answer: _Answer
    claim: Callable[[Session], runs.Claim]

    def __call__(self, session: Session) -> tuple[str, runs.Claim]:
        return self.answer(session), self.claim(session)


def _prepare(session: Session, jobs: list[Callable[[Session], object]]) -> None:
    """The write queue's ``prepare``: a batch's answers written ahead of their jobs, in two
    statements (:func:`runs.write_answers`; binary ones, whose arrays are stored first,
    are left to their jobs)."""
    answers = [
        job.answer if isinstance(job, _AnswerAndClaim) else job
        for job in jobs
        if isinstance(job, _Answer | _AnswerAndClaim)
    ]
    runs.write_answers(
        session, [(a.node.id, a.run_id, a.outcome) for a in answers if a.arrays is None]
    )


@router.post(
    "/runs/{run_id}/outcome",
    response_model=OutcomeAccepted,
    response_model_exclude_unset=True,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": RunOutcome.model_json_schema()}},
        }
    },
)
async def post_outcome(
    run_id: int,
    request: Request,
    node: DetachedNode,
    take_next: bool = Query(
        default=False,
        alias="next",
        description="also claim the node's next run in the answer's transaction and "
        "return it as `next` (null when none waits): a busy node's answer and its next "
        "claim in one request",
    ),
) -> OutcomeAccepted:
    """Accept the node's answer; the ledger records the SHA-256 of exactly these bytes.

    The body is the outcome as JSON, or (large aggregates) the JSON part and its arrays
    framed as :mod:`medfed.common.arrays` describes, recognised by its leading magic.
    With ``?next=true`` the answer and a claim (as ``GET /runs/next`` with ``wait=0``)
    are one job: a refused answer claims nothing.
    """
    raw = await request.body()  # after authentication; the edge caps its size
    document, binary = decode_body(raw)
    if (problem := json_problem(document, ids=False)) is not None:
        raise BadRequest(str(problem))
    try:
        outcome = RunOutcome.model_validate_json(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"{where}: {first['msg']}") from None
    if binary is not None:  # parsed here once: a malformed part is refused before storing
        check_references(outcome.output, decode_arrays(binary))
    elif references(outcome.output):
        raise BadRequest("arrays: the output refers to arrays but the body carries none")
    digest = hashlib.sha256(raw).hexdigest()
    settings: HubSettings = request.app.state.settings
    notifier: Notifier = request.app.state.notifier
    answer = _Answer(settings, node, run_id, outcome, digest, binary)
    key = f"node:{node.id}"
    if not take_next or notifier.known(key, RECHECK_CAP_SECONDS) is False:
        status_ = await _batches(request).run(WriteBatches.ANSWER, answer)
        assert status_ is not None  # answers have no ``wanted`` check
        return (
            OutcomeAccepted(status=status_, next=None)
            if take_next
            else OutcomeAccepted(status=status_)
        )
    stamp = notifier.stamp(key)  # before the claim's read, as a poll takes it
    both = await _batches(request).run(
        WriteBatches.ANSWER, _AnswerAndClaim(answer, claim_job(settings, node))
    )
    assert both is not None
    status_, claimed = both
    notifier.note(key, stamp, work=claimed.more)
    return OutcomeAccepted(status=status_, next=claimed.assignment)
