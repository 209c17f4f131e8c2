"""The bearer cache (``medfed.hub.principals``): hits cost no query, and no change waits.

Each test first uses a credential (so its principal is kept), then changes what the check
depends on through a route, an ORM object or an ``UPDATE`` statement, and the very next
request must see the change. The unit tests drive the cache directly: a check that read
the database while a change committed keeps nothing, a kept token past its expiry is
refused with the database check's words, a node's ``last_seen_at`` touch keeps the entry.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from hubtools import World, bearer, statements, wait_listening
from medfed.common.errors import Unauthorized
from medfed.common.security import digest
from medfed.common.timeutil import aware, utcnow
from medfed.hub.db.models import ApiToken, Node, User
from medfed.hub.principals import PrincipalCache
from medfed.hub.services import nodes


@pytest.fixture(autouse=True)
def settled(world: World) -> None:
    wait_listening(world)


def test_a_kept_bearer_is_answered_without_a_query(world: World) -> None:
    assert world.api.get("/api/me", headers=world.researcher.headers).status_code == 200
    with statements(world) as seen:
        again = world.api.get("/api/me", headers=world.researcher.headers)
    assert again.status_code == 200 and again.json()["username"] == "rita"
    assert seen == []
    node = world.node_a
    assert world.api.get("/api/node/me", headers=node.headers).status_code == 200
    with statements(world) as seen:
        assert world.api.get("/api/node/me", headers=node.headers).json()["id"] == node.id
    assert not any("FROM nodes" in s for s in seen)  # a touch may write; it reads no node


def test_a_revoked_token_is_refused_at_once(world: World) -> None:
    made = world.api.post("/api/tokens", json={}, headers=world.researcher.headers).json()
    assert world.api.get("/api/me", headers=bearer(made["token"])).status_code == 200
    revoked = world.api.delete(f"/api/tokens/{made['id']}", headers=world.researcher.headers)
    assert revoked.status_code == 200
    refused = world.api.get("/api/me", headers=bearer(made["token"]))
    assert refused.status_code == 401 and refused.json()["detail"] == "token revoked"


def test_changes_by_statement_or_object_are_seen_at_once(world: World) -> None:
    headers = world.outsider.headers
    assert world.api.get("/api/me", headers=headers).json()["roles"] == ["researcher"]
    with world.app.state.sessionmaker() as session:  # an object changed and flushed
        user = session.get(User, world.outsider.id)
        assert user is not None
        user.roles = ["auditor"]
        session.commit()
    assert world.api.get("/api/me", headers=headers).json()["roles"] == ["auditor"]
    with world.app.state.sessionmaker() as session:  # an UPDATE statement
        session.execute(sa.update(User).where(User.id == world.outsider.id).values(active=False))
        session.commit()
    refused = world.api.get("/api/me", headers=headers)
    assert refused.status_code == 401 and refused.json()["detail"] == "user disabled"


def test_a_rolled_back_change_keeps_the_cache(world: World) -> None:
    cache: PrincipalCache = world.app.state.principals
    assert world.api.get("/api/me", headers=world.researcher.headers).status_code == 200
    generation = cache.generation
    with world.app.state.sessionmaker() as session:
        session.execute(sa.update(User).where(User.id == world.researcher.id).values(active=False))
        session.rollback()
    assert cache.generation == generation
    assert world.api.get("/api/me", headers=world.researcher.headers).status_code == 200


def test_a_check_that_raced_a_change_keeps_nothing(world: World) -> None:
    cache: PrincipalCache = world.app.state.principals
    key = digest(world.researcher.token)
    with world.app.state.sessionmaker() as session:
        generation = cache.generation
        user = session.get(User, world.researcher.id)
        assert user is not None
        cache.clear()  # a change committed after the read began
        cache.keep(key, user, generation=generation)
        assert cache.lookup(session, key) is None
        cache.keep(key, user, generation=cache.generation)
    with world.app.state.sessionmaker() as session:
        kept = cache.lookup(session, key)
        assert isinstance(kept, User) and kept.id == world.researcher.id
        assert kept in session and not session.dirty  # attached as if loaded


def test_a_kept_token_past_its_expiry_is_refused(world: World) -> None:
    made = world.api.post("/api/tokens", json={}, headers=world.researcher.headers).json()
    assert world.api.get("/api/me", headers=bearer(made["token"])).status_code == 200
    cache: PrincipalCache = world.app.state.principals
    key = digest(made["token"])
    with world.app.state.sessionmaker() as session:
        user = session.get(User, world.researcher.id)
        assert user is not None
        past = utcnow() - timedelta(seconds=1)
        cache.keep(key, user, generation=cache.generation, until=past, refusal="token expired")
        with pytest.raises(Unauthorized, match="token expired"):
            cache.lookup(session, key)
        assert cache.lookup(session, key) is None  # dropped: the next check reads again
    with world.app.state.sessionmaker() as session:  # and the database says the same
        expire = sa.update(ApiToken).where(ApiToken.id == made["id"]).values(expires_at=past)
        session.execute(expire)
        session.commit()
    refused = world.api.get("/api/me", headers=bearer(made["token"]))
    assert refused.status_code == 401 and refused.json()["detail"] == "token expired"


def test_a_node_touch_keeps_the_entry_and_its_time(world: World) -> None:
    node = world.node_a
    cache: PrincipalCache = world.app.state.principals
    assert world.api.get("/api/node/me", headers=node.headers).status_code == 200
    generation = cache.generation
    seen = utcnow()
    with world.app.state.sessionmaker() as session:
        row = session.get(Node, node.id)
        assert row is not None
        row.last_seen_at = seen
        session.commit()
    assert cache.generation == generation
    with world.app.state.sessionmaker() as session:
        kept = cache.lookup(session, digest(node.secret))
        assert isinstance(kept, Node) and kept.last_seen_at == seen
    with world.app.state.sessionmaker() as session:  # a due poll's touch: one statement
        row = session.get(Node, node.id)
        assert row is not None
        row.last_seen_at = seen - 2 * nodes.TOUCH_EVERY  # due again
        session.commit()
        nodes.touch(session, node=row)
        later = row.last_seen_at
        assert later is not None and aware(later) >= aware(seen)
        assert not session.dirty  # written, not left for a flush
        session.commit()
    assert cache.generation == generation
    with world.app.state.sessionmaker() as session:
        kept = cache.lookup(session, digest(node.secret))
        assert isinstance(kept, Node) and kept.last_seen_at == later
        stored = session.scalar(sa.select(Node.last_seen_at).where(Node.id == node.id))
        assert stored is not None and aware(stored) == aware(later)
    with world.app.state.sessionmaker() as session:  # any other change of a node ends it
        session.execute(sa.update(Node).where(Node.id == node.id).values(name="renamed"))
        session.commit()
    assert cache.generation > generation
    with world.app.state.sessionmaker() as session:
        assert cache.lookup(session, digest(node.secret)) is None
    assert world.api.get("/api/node/me", headers=node.headers).json()["name"] == "renamed"


def test_entries_end_after_their_time_and_zero_keeps_nothing(world: World) -> None:
    key = digest(world.researcher.token)
    with world.app.state.sessionmaker() as session:
        user = session.get(User, world.researcher.id)
        assert user is not None
        off = PrincipalCache(0)
        off.keep(key, user, generation=off.generation)
        assert off.lookup(session, key) is None
        brief = PrincipalCache(1e-6)
        brief.keep(key, user, generation=brief.generation)
        assert brief.lookup(session, key) is None


def test_a_savepoint_rolled_back_after_a_change_still_ends_the_entries(world: World) -> None:
    assert world.api.get("/api/me", headers=world.outsider.headers).status_code == 200
    with world.app.state.sessionmaker() as session:
        session.execute(sa.update(User).where(User.id == world.outsider.id).values(active=False))
        inner = session.begin_nested()
        session.execute(sa.update(User).where(User.id == world.researcher.id).values(roles=[]))
        inner.rollback()  # the outer change stays and commits
        session.commit()
    refused = world.api.get("/api/me", headers=world.outsider.headers)
    assert refused.status_code == 401 and refused.json()["detail"] == "user disabled"
    kept = world.api.get("/api/me", headers=world.researcher.headers).json()
    assert kept["roles"] == ["researcher"]  # the rolled-back savepoint changed nothing


def test_a_kept_user_holds_no_password_hash_and_still_reads_it(world: World) -> None:
    cache: PrincipalCache = world.app.state.principals
    key = digest(world.researcher.token)
    assert world.api.get("/api/me", headers=world.researcher.headers).status_code == 200
    kept = cache._entries[key]
    assert "password_hash" not in kept.values and kept.values["id"] == world.researcher.id
    with world.app.state.sessionmaker() as session:
        user = cache.lookup(session, key)
        assert isinstance(user, User)
        stored = session.scalar(sa.select(User.password_hash).where(User.id == world.researcher.id))
        assert user.password_hash == stored  # loaded from the database on first access
