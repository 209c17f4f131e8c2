"""Bearer checks from memory: the row of a verified principal, kept by its token's digest.

How it runs: :func:`medfed.hub.api.deps.get_principal` asks the app's
:class:`PrincipalCache` first. A hit rebuilds the :class:`User` or :class:`Node` from the
column values kept (a fresh instance per request, attached to the request's session as if
just loaded: no query, no transaction, no worker thread); a miss runs
:func:`medfed.hub.services.auth.check_bearer` against the database in a worker thread and
keeps what it found. Refusals are never kept: a refused bearer is checked every time.

An entry ends

- **at once, in this process**, when a transaction that changed a user, an API token, a
  node (other than its ``last_seen_at``) or a single-sign-on identity commits: session
  events note such changes (objects in a flush, ``UPDATE``/``DELETE`` statements run
  through a session) and empty every cache after the commit;
- **at once in the other hub processes on the same PostgreSQL**: the same flush sends
  ``NOTIFY medfed_wake`` with the key :data:`KEY` in the transaction (delivered when it
  commits), and each other process's wake-up listener empties its caches on it, and after
  any outage of its connection (whatever it missed);
- when the token's expiry or the user's single-sign-on re-login deadline passes (checked
  on every hit, like the database check);
- after :attr:`~medfed.hub.config.HubSettings.principal_cache_seconds` in any case, for a
  change written by other means (SQL outside SQLAlchemy, or another process on a SQLite
  hub's file). ``0`` turns the cache off.

A user's password hash is not kept (a hit that needs it reads it). A miss that read the
database while a change committed does not keep what it read (a generation counter), so
a revocation never loses a race to a concurrent check. A node's ``last_seen_at`` touch
updates the kept value instead of ending the entry (idle nodes touch every 20 s; a
poll's touch is one statement, :func:`touch`).
"""

from __future__ import annotations

import copy
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Table, bindparam, event, text, update
from sqlalchemy.orm import (
    ORMExecuteState,
    Session,
    SessionTransaction,
    make_transient_to_detached,
)
from sqlalchemy.orm.attributes import instance_state, set_committed_value

from medfed.common.errors import Unauthorized
from medfed.common.timeutil import aware, utcnow
from medfed.hub.db.models import ApiToken, Node, User
from medfed.hub.db.models_identity import UserIdentity

#: the wake-up key that empties the caches of every hub process on the database
KEY = "principals"
#: ``session.info`` key of the app's cache (its sessionmaker sets it)
CACHE_INFO = "medfed.principals"
_CHANGED = "medfed_principals_changed"
_TOUCHED = "medfed_principals_touched"
_NOTIFY = text("SELECT pg_notify('medfed_wake', :payload)")

#: columns a kept principal leaves out (a rebuilt instance loads them on first access)
_NOT_KEPT = ("password_hash",)

_caches: weakref.WeakSet[PrincipalCache] = weakref.WeakSet()
_caches_lock = threading.Lock()


@dataclass(frozen=True)
class _Entry:
    kind: type[User] | type[Node]
    values: dict[str, Any]
    #: the token's expiry or the SSO re-login deadline, whichever is first (users only)
    until: datetime | None
    #: what a hit past ``until`` answers: the database check's own refusal
    refusal: str
    kept_until: float


class PrincipalCache:
    def __init__(self, seconds: float, *, origin: str = "-", max_entries: int = 100_000) -> None:
        self.seconds = seconds
        #: the app's wake-up origin: its own notifications are not cleared twice
        self.origin = origin
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._by_node: dict[int, set[str]] = {}
        self._generation = 0
        with _caches_lock:
            _caches.add(self)

    @property
    def generation(self) -> int:
        return self._generation

    def lookup(self, session: Session | None, digest: str) -> User | Node | None:
        """The principal of ``digest``, attached to ``session`` (None: detached); None when
        not kept.

        Raises :class:`Unauthorized` (the database check's words) for a kept user token
        whose expiry or re-login deadline has passed."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None and entry.kept_until <= time.monotonic():
                del self._entries[digest]
                entry = None
        if entry is None:
            return None
        if entry.until is not None and aware(entry.until) <= utcnow():
            with self._lock:
                self._entries.pop(digest, None)
            raise Unauthorized(entry.refusal)
        principal = _rebuilt(entry.kind, entry.values)
        if session is not None:
            session.add(principal)
        return principal

    def keep(
        self,
        digest: str,
        principal: User | Node,
        *,
        generation: int,
        until: datetime | None = None,
        refusal: str = "",
    ) -> None:
        """Keep ``principal`` (read while :attr:`generation` was ``generation``)."""
        if self.seconds <= 0:
            return
        values = _column_values(principal)
        for secret in _NOT_KEPT:  # read from the database if ever needed, not kept in memory
            values.pop(secret, None)
        entry = _Entry(type(principal), values, until, refusal, time.monotonic() + self.seconds)
        with self._lock:
            if generation != self._generation:
                return  # a change committed while it was read: what it read may be stale
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
                self._by_node.clear()
            self._entries[digest] = entry
            if entry.kind is Node:
                self._by_node.setdefault(int(values["id"]), set()).add(digest)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._by_node.clear()

    def touched(self, node_id: int, last_seen_at: datetime) -> None:
        with self._lock:
            for digest in self._by_node.get(node_id, ()):
                entry = self._entries.get(digest)
                if entry is not None:
                    values = {**entry.values, "last_seen_at": last_seen_at}
                    self._entries[digest] = _Entry(
                        Node, values, entry.until, entry.refusal, entry.kept_until
                    )


P = TypeVar("P", bound=User | Node)


def _column_values(principal: User | Node) -> dict[str, Any]:
    """The loaded column values of ``principal`` (lists and dicts copied)."""
    state = instance_state(principal)
    return {
        attr.key: copy.deepcopy(state.dict[attr.key])
        for attr in state.mapper.column_attrs
        if attr.key in state.dict
    }


def _rebuilt(kind: type[P], values: dict[str, Any]) -> P:
    """A detached, clean instance holding ``values`` as if just loaded (no events)."""
    principal: P = kind.__mapper__.class_manager.new_instance()
    instance_state(principal).dict.update(
        {k: copy.deepcopy(v) if isinstance(v, list | dict) else v for k, v in values.items()}
    )
    make_transient_to_detached(principal)  # clean, with its identity
    return principal


def detached_copy(principal: P) -> P:
    """A clean copy of a loaded principal, outside any session: another session takes it
    with ``session.merge(copy, load=False)`` instead of reading the row again."""
    return _rebuilt(type(principal), _column_values(principal))


def clear_all() -> None:
    """Empty every cache in this process (a change committed, or a listener outage)."""
    with _caches_lock:
        caches = list(_caches)
    for cache in caches:
        cache.clear()


def _node_changes(state: Any) -> set[str]:
    return {attr.key for attr in state.attrs if attr.history.has_changes()}


_WATCHED = (User, ApiToken, UserIdentity, Node)
_WATCHED_TABLES = frozenset(cls.__table__ for cls in _WATCHED)


def _mark(session: Session) -> None:
    """Note that this transaction changes credentials: caches empty when it commits."""
    if session.info.get(_CHANGED):
        return
    session.info[_CHANGED] = True
    if session.get_bind().dialect.name == "postgresql":
        cache = session.info.get(CACHE_INFO)
        origin = cache.origin if isinstance(cache, PrincipalCache) else "-"
        session.connection().execute(_NOTIFY, {"payload": f"{origin}|{KEY}"})


@event.listens_for(Session, "after_flush")
def _note_changes(session: Session, _context: object) -> None:
    changed = any(isinstance(obj, _WATCHED) for obj in (*session.new, *session.deleted))
    for obj in session.dirty:
        if isinstance(obj, User | ApiToken | UserIdentity):
            changed = changed or session.is_modified(obj)
        elif isinstance(obj, Node):
            fields = _node_changes(instance_state(obj))
            if fields - {"last_seen_at"}:
                changed = True
            elif fields and obj.last_seen_at is not None:
                session.info.setdefault(_TOUCHED, {})[obj.id] = obj.last_seen_at
    if changed:
        _mark(session)


#: a node's liveness mark as one statement (:func:`touch`): not a change of credentials
_NODES = cast(Table, Node.__table__)
_TOUCH = (
    update(_NODES).where(_NODES.c.id == bindparam("node")).values(last_seen_at=bindparam("seen"))
)


def touch(session: Session, node: Node, seen: datetime) -> None:
    """Write ``node``'s ``last_seen_at`` with one statement, no flush of the node: the
    instance takes the value as committed, and at commit the kept entries of the node
    take it too (as a flushed touch does)."""
    session.execute(_TOUCH, {"node": node.id, "seen": seen})
    set_committed_value(node, "last_seen_at", seen)
    session.info.setdefault(_TOUCHED, {})[node.id] = seen


@event.listens_for(Session, "do_orm_execute")
def _note_statements(state: ORMExecuteState) -> None:
    """An ``UPDATE`` or ``DELETE`` statement on a watched table (no flush sees those)."""
    if state.statement is _TOUCH:
        return
    if (state.is_update or state.is_delete) and getattr(
        state.statement, "table", None
    ) in _WATCHED_TABLES:
        _mark(state.session)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    touched: dict[int, datetime] = session.info.pop(_TOUCHED, {})
    if session.info.pop(_CHANGED, False):
        clear_all()
        return
    if touched:
        with _caches_lock:
            caches = list(_caches)
        for cache in caches:
            for node_id, seen in touched.items():
                cache.touched(node_id, seen)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous: SessionTransaction) -> None:
    # only the whole transaction's end forgets: a savepoint rolled back inside it leaves
    # the changes flushed before it to commit (keeping the mark is the safe side)
    if previous.parent is None:
        session.info.pop(_CHANGED, None)
        session.info.pop(_TOUCHED, None)
