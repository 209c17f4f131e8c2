"""Routes of the audit log: keys, checkpoints, entries, proofs (users and nodes), cosigning.

Everything here holds ids and hashes only, so any authenticated user (an auditor, a
researcher) or node may read it. Nodes register a witness key once and cosign checkpoints
they have checked for consistency.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.common.errors import NotFound
from medfed.common.resources import (
    ConsistencyProof,
    Cosignature,
    InclusionProof,
    LedgerCheckpointPublic,
    LedgerEntryPublic,
    LedgerKeys,
    NodeFact,
    WitnessKey,
)
from medfed.hub.api.deps import CurrentNode, NotifierDep, Principal, SessionDep
from medfed.hub.db.models import Node
from medfed.hub.dispatch import commit
from medfed.hub.services import ledger
from medfed.ledger.checkpoint import public_b64

router = APIRouter(prefix="/api", tags=["ledger"])


def _public(session: Session, row: object) -> LedgerCheckpointPublic:
    checkpoint = ledger.as_checkpoint(session, row)  # type: ignore[arg-type]
    return LedgerCheckpointPublic(
        origin=checkpoint.origin,
        size=checkpoint.size,
        root=checkpoint.root,
        time=checkpoint.time,
        signature=checkpoint.signature,
        cosignatures=checkpoint.cosignatures,
    )


@router.get("/ledger/keys")
def keys(_: Principal, request: Request, session: SessionDep) -> LedgerKeys:
    rows = session.execute(select(Node.id, Node.public_key).where(Node.public_key.is_not(None)))
    return LedgerKeys(
        origin=ledger.ORIGIN,
        hub_key=public_b64(request.app.state.ledger_key),
        witnesses={f"node:{node_id}": key for node_id, key in rows if key},
    )


@router.get("/ledger/checkpoint")
def latest(_: Principal, session: SessionDep) -> LedgerCheckpointPublic:
    row = ledger.latest_checkpoint(session)
    if row is None:
        raise NotFound("no checkpoint yet")
    return _public(session, row)


@router.get("/ledger/checkpoints")
def all_checkpoints(
    _: Principal, session: SessionDep, since: int = Query(default=0, ge=0)
) -> list[LedgerCheckpointPublic]:
    return [_public(session, row) for row in ledger.checkpoints(session, since=since)]


@router.get("/ledger/entries")
def entries(
    _: Principal,
    session: SessionDep,
    start: int = Query(default=0, ge=0),
    end: int = Query(default=1000, ge=0),
) -> list[LedgerEntryPublic]:
    rows = ledger.entries(session, start=start, end=end)
    return [LedgerEntryPublic(index=row.idx, body=row.body) for row in rows]


@router.get("/ledger/proof/inclusion")
def inclusion(
    _: Principal, session: SessionDep, index: int = Query(ge=0), size: int = Query(ge=1)
) -> InclusionProof:
    leaf, proof = ledger.prove_inclusion(session, index=index, tree_size=size)
    return InclusionProof(index=index, size=size, leaf=leaf, proof=proof)


@router.get("/ledger/proof/consistency")
def consistency(
    _: Principal, session: SessionDep, first: int = Query(ge=1), second: int = Query(ge=1)
) -> ConsistencyProof:
    proof = ledger.prove_consistency(session, first=first, second=second)
    return ConsistencyProof(first=first, second=second, proof=proof)


@router.post("/node/ledger/key", tags=["node"])
def register_key(
    body: WitnessKey, node: CurrentNode, session: SessionDep, notifier: NotifierDep
) -> dict[str, str]:
    ledger.register_node_key(session, node=node, public_key=body.public_key)
    commit(session, notifier)
    return {"status": "registered"}


@router.post("/node/ledger/cosign", tags=["node"])
def cosign(
    body: Cosignature, node: CurrentNode, session: SessionDep, notifier: NotifierDep
) -> dict[str, str]:
    ledger.add_cosignature(session, node=node, tree_size=body.size, signature=body.signature)
    commit(session, notifier)
    return {"status": "cosigned"}


@router.post("/node/ledger/fact", tags=["node"])
def node_fact(
    body: NodeFact, node: CurrentNode, session: SessionDep, notifier: NotifierDep
) -> dict[str, str]:
    """A node's keyed hash of local state (its opt-out register) into the audit log."""
    ledger.record(
        session,
        action=f"node.{body.kind}",
        actor=ledger.actor_of(node),
        objects={"node": node.id},
        hashes={body.kind: body.hash},
    )
    commit(session, notifier)
    return {"status": "recorded"}
