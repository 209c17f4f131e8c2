"""Nodes: created by an organization admin, with a secret shown once and stored as a digest.

A node proves itself with that secret on every call; ``last_seen_at`` moves with each
heartbeat and long poll, which is how the hub tells online from offline nodes.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.common.errors import Conflict, NotFound
from medfed.common.security import NODE_SECRET_PREFIX, digest, new_token
from medfed.common.timeutil import aware, utcnow
from medfed.hub import principals
from medfed.hub.db.models import Node, User
from medfed.hub.services.accounts import get_organization, require_org_admin
from medfed.hub.services.ledger import actor_of, record

ONLINE_WINDOW = timedelta(seconds=60)


def create_node(
    session: Session, *, actor: User, name: str, organization_id: int
) -> tuple[Node, str]:
    get_organization(session, organization_id)
    require_org_admin(actor, organization_id, "creating a node")
    if session.scalar(select(Node).where(Node.name == name)) is not None:
        raise Conflict(f"node '{name}' exists already")
    secret = new_token(NODE_SECRET_PREFIX)
    node = Node(name=name, organization_id=organization_id, secret_hash=digest(secret))
    session.add(node)
    session.flush()
    record(
        session,
        action="node.create",
        actor=actor_of(actor),
        objects={"node": node.id, "organization": organization_id},
    )
    return node, secret


def list_nodes(session: Session) -> list[Node]:
    return list(session.scalars(select(Node).order_by(Node.id)))


def get_node(session: Session, node_id: int) -> Node:
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound(f"node {node_id} not found")
    return node


def is_online(node: Node) -> bool:
    return node.last_seen_at is not None and utcnow() - aware(node.last_seen_at) < ONLINE_WINDOW


#: a third of :data:`ONLINE_WINDOW`: a node whose polls renew every 25 s or less never
#: looks offline, and an idle poll's renewal writes (claims) at most this often
TOUCH_EVERY = timedelta(seconds=20)


def touch(session: Session, *, node: Node) -> None:
    """Note that the node is alive; written at most every few seconds (long polls loop)."""
    now = utcnow()
    if node.last_seen_at is None or now - aware(node.last_seen_at) >= TOUCH_EVERY:
        principals.touch(session, node, now)  # one statement; kept credentials stay kept
