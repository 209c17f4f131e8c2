"""The hub's audit log: one :func:`record` call per state change, in the same transaction.

``record`` appends an entry (``medfed.ledger.entries``) to ``ledger_entries``, the perfect
subtree hashes it closes to ``ledger_nodes``, and moves ``ledger_head`` — all in the
caller's transaction, so a change without its entry cannot commit and a rolled-back change
leaves no entry. ``record`` checks the entry and keeps it in the session; the head is read
and locked, the kept entries numbered, timed and hashed, and the rows written (one
``executemany`` per table) just before the commit, or before this module reads the log in
the same transaction (:func:`flush_pending`). Writers are serialized on the head row
(``BEGIN IMMEDIATE`` on SQLite, ``SELECT … FOR UPDATE`` on PostgreSQL), so on PostgreSQL
the lock is held from the append to the commit only, not through the rest of the
transaction: two hub processes' transactions do their work side by side and queue only
for the append. An entry's time is its append's (under the lock), so times never go back
along the log. The head keeps the right edge of the tree (one hash per level), so an
append needs no other reads; on SQLite (one writing process) it needs no read at all: the
append starts from the head the process last committed, and the head's update names the
size and leaf it moves from (no row matched: the head is read and the append done again).

:func:`make_checkpoint` (called by the hub's background loop) signs the current size and
root with the hub key; witnesses (nodes) cosign through :func:`add_cosignature`. Several hub
workers each run that loop: on PostgreSQL a checkpoint is made only under the transaction's
advisory lock (``pg_try_advisory_xact_lock``; a worker that does not get it skips this
turn), so exactly one worker signs at a time and the next one sees its checkpoint; on
SQLite the write lock taken at ``BEGIN IMMEDIATE`` serializes them.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine, Table, bindparam, event, func, insert, select, update
from sqlalchemy.orm import Session

from medfed.common.errors import BadRequest, Conflict, NotFound
from medfed.common.timeutil import utcnow
from medfed.hub.db.models import (
    Base,
    LedgerCheckpoint,
    LedgerCosignature,
    LedgerEntry,
    LedgerHead,
    LedgerNode,
    Node,
    User,
)
from medfed.hub.db.session import engine_of, execute_core, is_sqlite
from medfed.ledger.checkpoint import Checkpoint, verify_signature
from medfed.ledger.entries import canonical, make_entry
from medfed.ledger.merkle import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    new_perfect_nodes,
    subtree_root,
)

ORIGIN = "medfed-hub"
_HEAD = "medfed.ledger_head"
_PENDING = "medfed.ledger_pending"
_INSERT_ENTRY = insert(Base.metadata.tables["ledger_entries"])
_INSERT_NODE = insert(Base.metadata.tables["ledger_nodes"])
MAX_PAGE = 1000
#: ``pg_try_advisory_xact_lock`` key of the checkpointer (first 8 bytes of SHA-256 of
#: "medfed ledger checkpoint", as a signed 64-bit integer)
CHECKPOINT_LOCK = 0x51928B8E1CA5F565


def actor_of(principal: User | Node | None) -> str:
    if principal is None:
        return "hub"
    return f"user:{principal.id}" if isinstance(principal, User) else f"node:{principal.id}"


class _Frontier:
    """The right edge of the tree as a :class:`SubtreeSource` for appends."""

    def __init__(self, hashes: list[str | None]) -> None:
        self.hashes = hashes

    def perfect(self, level: int, index: int) -> bytes:
        value = self.hashes[level]
        assert value is not None, "ledger frontier is inconsistent"
        return bytes.fromhex(value)


@dataclass
class _Head:
    """The head row's values while a transaction appends: written once, with the entries."""

    size: int
    last_leaf: str
    frontier: list[str | None]


_HEADS = cast(Table, LedgerHead.__table__)
_READ_HEAD = select(_HEADS.c.size, _HEADS.c.last_leaf, _HEADS.c.frontier).where(_HEADS.c.id == 1)
_READ_HEAD_LOCKED = _READ_HEAD.with_for_update()
_WRITE_HEAD = (
    update(_HEADS)
    .where(_HEADS.c.id == 1)
    .values(
        size=bindparam("new_size"),
        last_leaf=bindparam("new_last_leaf"),
        frontier=bindparam("new_frontier"),
    )
)


#: the head as this process last committed it, per database: the guess an append starts
#: from (checked by the head's update, see :func:`flush_pending`)
_KNOWN: weakref.WeakKeyDictionary[Engine, _Head] = weakref.WeakKeyDictionary()
_known_lock = threading.Lock()
_WRITE_HEAD_IF = _WRITE_HEAD.where(
    _HEADS.c.size == bindparam("old_size"), _HEADS.c.last_leaf == bindparam("old_last_leaf")
)


def _head(session: Session) -> _Head:
    """The head, read (and locked) once per transaction and then kept in ``session.info``:
    plain values, not an ORM object, so no flush writes it again after every append."""
    head: _Head | None = session.info.get(_HEAD)
    if head is not None:
        return head
    # through the session: its pending changes are flushed before the head is locked, so
    # no row lock is waited for while the head is held
    row = execute_core(session, _READ_HEAD if is_sqlite(session) else _READ_HEAD_LOCKED)
    found = row.first()
    if found is None:
        raise RuntimeError("ledger head missing: run the migrations")
    head = _Head(found.size, found.last_leaf, list(found.frontier or []))
    session.info[_HEAD] = head
    return head


def _append(head: _Head, pending: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """Number, time and hash ``pending`` after ``head`` (which moves along): the entries'
    rows and the rows of the perfect subtrees they close."""
    time = utcnow().isoformat()
    entry_rows: list[dict[str, Any]] = []
    node_rows: list[dict[str, Any]] = []
    frontier = head.frontier
    for entry in pending:
        entry.update(index=head.size, prev=head.last_leaf, time=time)
        body = canonical(entry)
        leaf = leaf_hash(body)
        for level, idx, digest in new_perfect_nodes(leaf, head.size, _Frontier(frontier)):
            if level:  # level 0 is the entry's own leaf, stored with the entry
                node_rows.append({"level": level, "idx": idx, "hash": digest.hex()})
            while len(frontier) <= level:
                frontier.append(None)
            frontier[level] = digest.hex()
        # Core inserts: the ORM's per-object bookkeeping costs more than the hashing
        entry_rows.append({"idx": head.size, "body": body.decode(), "leaf": leaf.hex()})
        head.size += 1
        head.last_leaf = leaf.hex()
    return entry_rows, node_rows


def flush_pending(session: Session) -> None:
    """Append the transaction's kept entries: number, time and hash each entry after the
    head, move the head, and write the entries and the subtree hashes they close (one
    ``executemany`` per table).

    The transaction's first append starts from the head this process last committed (on
    SQLite, the one writer): the head's update names the size and last leaf it moves from,
    and takes the lock. Where another process (or a transaction not yet seen here) moved
    it since, the update finds no row; the head is then read under its lock and the
    entries numbered again. Either way the head is locked from the append to the commit."""
    pending: list[dict[str, Any]] | None = session.info.pop(_PENDING, None)
    if not pending:
        return
    connection = session.connection()
    head = session.info.get(_HEAD)
    engine = engine_of(session) if head is None and is_sqlite(session) else None
    if engine is not None:
        with _known_lock:
            known = _KNOWN.get(engine)
        if known is not None:
            guess = _Head(known.size, known.last_leaf, list(known.frontier))
            copies = [dict(entry) for entry in pending]  # numbered again if the guess is old
            entry_rows, node_rows = _append(guess, copies)
            moved = connection.execute(
                _WRITE_HEAD_IF,
                {
                    "old_size": known.size,
                    "old_last_leaf": known.last_leaf,
                    "new_size": guess.size,
                    "new_last_leaf": guess.last_leaf,
                    "new_frontier": list(guess.frontier),
                },
            )
            if moved.rowcount == 1:
                session.info[_HEAD] = guess
                _write_rows(connection, entry_rows, node_rows)
                return
    head = _head(session)
    entry_rows, node_rows = _append(head, pending)
    connection.execute(
        _WRITE_HEAD,
        {
            "new_size": head.size,
            "new_last_leaf": head.last_leaf,
            "new_frontier": list(head.frontier),
        },
    )
    _write_rows(connection, entry_rows, node_rows)


def _write_rows(connection: Connection, entry_rows: list[Any], node_rows: list[Any]) -> None:
    connection.execute(_INSERT_ENTRY, entry_rows)
    if node_rows:
        connection.execute(_INSERT_NODE, node_rows)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    flush_pending(session)


@event.listens_for(Session, "after_commit")
def _remember_head(session: Session) -> None:
    """The committed head, as the next transaction's guess (a later one only: two threads'
    commits may report out of order)."""
    head: _Head | None = session.info.pop(_HEAD, None)
    session.info.pop(_PENDING, None)
    engine = engine_of(session) if head is not None and is_sqlite(session) else None
    if head is None or engine is None:
        return
    with _known_lock:
        known = _KNOWN.get(engine)
        if known is None or head.size > known.size:
            _KNOWN[engine] = head


@event.listens_for(Session, "after_soft_rollback")
def _forget_head(session: Session, *_: object) -> None:
    session.info.pop(_HEAD, None)
    session.info.pop(_PENDING, None)


def _copied(value: Any) -> Any:
    """An id, or a copy of a (nested) list of ids."""
    return [_copied(item) for item in value] if isinstance(value, list) else value


def record(
    session: Session,
    *,
    action: str,
    actor: str,
    objects: dict[str, Any],
    hashes: dict[str, str] | None = None,
) -> None:
    """Append one entry in the caller's transaction: checked now (a bad entry raises here),
    numbered and written with the transaction's others by :func:`flush_pending`. The entry
    keeps copies of ``objects`` and ``hashes``: a caller's later change to its own dict or
    list does not reach the log."""
    entry = make_entry(
        index=-1,
        prev="",
        time="",
        action=action,
        actor=actor,
        objects={key: _copied(value) for key, value in objects.items()},
        hashes=dict(hashes or {}),
    )
    session.info.setdefault(_PENDING, []).append(entry)


class _Stored:
    def __init__(self, session: Session) -> None:
        self.session = session

    def perfect(self, level: int, index: int) -> bytes:
        query = (
            select(LedgerEntry.leaf).where(LedgerEntry.idx == index)
            if level == 0
            else select(LedgerNode.hash).where(LedgerNode.level == level, LedgerNode.idx == index)
        )
        value = self.session.scalar(query)
        if value is None:
            raise NotFound(f"ledger subtree {level}/{index} not found")
        return bytes.fromhex(value)


def size(session: Session) -> int:
    flush_pending(session)
    return session.scalar(select(LedgerHead.size).where(LedgerHead.id == 1)) or 0


def root_at(session: Session, tree_size: int) -> bytes:
    flush_pending(session)
    return subtree_root(_Stored(session), 0, tree_size)


def entries(session: Session, *, start: int, end: int) -> list[LedgerEntry]:
    if start < 0 or end < start:
        raise BadRequest(f"bad entry range [{start}, {end})")
    flush_pending(session)
    end = min(end, start + MAX_PAGE)
    return list(
        session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.idx >= start, LedgerEntry.idx < end)
            .order_by(LedgerEntry.idx)
        )
    )


def _check_size(session: Session, tree_size: int) -> None:
    current = size(session)
    if not 0 < tree_size <= current:
        raise BadRequest(f"tree size {tree_size} is outside 1..{current}")


def prove_inclusion(session: Session, *, index: int, tree_size: int) -> tuple[str, list[str]]:
    _check_size(session, tree_size)
    if not 0 <= index < tree_size:
        raise BadRequest(f"index {index} is outside a tree of size {tree_size}")
    leaf = session.scalar(select(LedgerEntry.leaf).where(LedgerEntry.idx == index))
    if leaf is None:
        raise NotFound(f"ledger entry {index} not found")
    return leaf, [h.hex() for h in inclusion_proof(_Stored(session), index, tree_size)]


def prove_consistency(session: Session, *, first: int, second: int) -> list[str]:
    _check_size(session, second)
    if not 0 < first <= second:
        raise BadRequest(f"no consistency proof from size {first} to {second}")
    return [h.hex() for h in consistency_proof(_Stored(session), first, second)]


def make_checkpoint(session: Session, *, key: Ed25519PrivateKey) -> LedgerCheckpoint | None:
    """Sign the current tree head if it grew since the last checkpoint.

    On PostgreSQL only the worker holding the checkpoint lock signs (None for the others).
    """
    if not is_sqlite(session) and not session.scalar(
        select(func.pg_try_advisory_xact_lock(CHECKPOINT_LOCK))
    ):
        return None
    current = size(session)
    last = latest_checkpoint(session)
    if current == 0 or (last is not None and last.size >= current):
        return None
    unsigned = Checkpoint(ORIGIN, current, root_at(session, current).hex(), utcnow().isoformat())
    signed = unsigned.signed(key)
    row = LedgerCheckpoint(
        size=signed.size, root=signed.root, time=signed.time, signature=signed.signature
    )
    session.add(row)
    session.flush()
    return row


def latest_checkpoint(session: Session) -> LedgerCheckpoint | None:
    return session.scalar(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()).limit(1))


def checkpoints(session: Session, *, since: int = 0, limit: int = 1000) -> list[LedgerCheckpoint]:
    return list(
        session.scalars(
            select(LedgerCheckpoint)
            .where(LedgerCheckpoint.size >= since)
            .order_by(LedgerCheckpoint.size)
            .limit(limit)
        )
    )


def as_checkpoint(session: Session, row: LedgerCheckpoint) -> Checkpoint:
    cosigned = session.execute(
        select(LedgerCosignature.node_id, LedgerCosignature.signature).where(
            LedgerCosignature.size == row.size
        )
    ).all()
    return Checkpoint(
        ORIGIN,
        row.size,
        row.root,
        row.time,
        row.signature,
        {f"node:{node_id}": signature for node_id, signature in cosigned},
    )


def register_node_key(session: Session, *, node: Node, public_key: str) -> None:
    if node.public_key == public_key:
        return
    if node.public_key is not None:
        raise Conflict("this node has a witness key already; an admin must reset it")
    node.public_key = public_key
    record(session, action="node.key_register", actor=actor_of(node), objects={"node": node.id})


def add_cosignature(session: Session, *, node: Node, tree_size: int, signature: str) -> None:
    row = session.get(LedgerCheckpoint, tree_size)
    if row is None:
        raise NotFound(f"checkpoint {tree_size} not found")
    if node.public_key is None:
        raise BadRequest("register the node's witness key first")
    if not verify_signature(node.public_key, as_checkpoint(session, row), signature):
        raise BadRequest(f"cosignature on checkpoint {tree_size} does not verify")
    if session.get(LedgerCosignature, (tree_size, node.id)) is None:
        session.add(LedgerCosignature(size=tree_size, node_id=node.id, signature=signature))
        session.flush()
