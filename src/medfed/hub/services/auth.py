"""Authentication: passwords, API tokens (create, list, revoke, expiry) and node secrets.

``authenticate`` takes a bearer string and returns who it is: a :class:`User` for ``mfu_``
tokens, a :class:`Node` for ``mfn_`` node secrets. Unknown, revoked or expired credentials
raise :class:`Unauthorized`; the message never says which part was wrong beyond that.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.common.errors import NotFound, Unauthorized
from medfed.common.security import (
    NODE_SECRET_PREFIX,
    USER_TOKEN_PREFIX,
    digest,
    new_token,
    verify_password,
)
from medfed.common.timeutil import aware, utcnow
from medfed.hub.db.models import ApiToken, Node, User
from medfed.hub.services.ledger import actor_of, record


def login(session: Session, *, username: str, password: str, days: int = 1) -> tuple[ApiToken, str]:
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not user.active or not verify_password(user.password_hash, password):
        raise Unauthorized("wrong username or password")
    token, plain = create_token(session, user=user, name="login", days=days, audit=False)
    record(
        session,
        action="auth.login",
        actor=actor_of(user),
        objects={"user": user.id, "token": token.id},
    )
    return token, plain


def create_token(
    session: Session, *, user: User, name: str, days: int, audit: bool = True
) -> tuple[ApiToken, str]:
    """A new API token for ``user``; the plain token is returned once and never stored."""
    plain = new_token(USER_TOKEN_PREFIX)
    now = utcnow()
    token = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=digest(plain),
        prefix=plain[:10],
        created_at=now,
        expires_at=now + timedelta(days=days),
    )
    session.add(token)
    session.flush()
    if audit:
        record(session, action="token.create", actor=actor_of(user), objects={"token": token.id})
    return token, plain


def list_tokens(session: Session, *, user: User) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)))


def revoke_token(session: Session, *, user: User, token_id: int) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None or (token.user_id != user.id and not user.is_superuser):
        raise NotFound(f"token {token_id} not found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        record(session, action="token.revoke", actor=actor_of(user), objects={"token": token.id})
    return token


def authenticate(session: Session, *, bearer: str) -> User | Node:
    if bearer.startswith(NODE_SECRET_PREFIX):
        node = session.scalar(select(Node).where(Node.secret_hash == digest(bearer)))
        if node is None:
            raise Unauthorized("invalid node credentials")
        return node
    if bearer.startswith(USER_TOKEN_PREFIX):
        token = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest(bearer)))
        if token is None:
            raise Unauthorized("invalid token")
        if token.revoked_at is not None:
            raise Unauthorized("token revoked")
        if aware(token.expires_at) <= utcnow():
            raise Unauthorized("token expired")
        user = session.get(User, token.user_id)
        if user is None or not user.active:
            raise Unauthorized("user disabled")
        return user
    raise Unauthorized("invalid token")
