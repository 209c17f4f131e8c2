"""Authentication: passwords, API tokens (create, list, revoke, expiry) and node secrets.

``authenticate`` takes a bearer string and returns who it is: a :class:`User` for ``mfu_``
tokens, a :class:`Node` for ``mfn_`` node secrets. Unknown, revoked or expired credentials
raise :class:`Unauthorized`; the message never says which part was wrong beyond that.

Login by password runs :func:`check_password` (refused with ``local_passwords`` off, except
the break-glass hub administrator with TOTP), then :func:`second_factor` (a TOTP or
recovery code where the account has one; a refusal asking to enrol where the MFA policy
needs one), then :func:`login_token`. API tokens made before a user enrolled keep working
until they expire or are revoked: the second factor guards the password, not the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.common.errors import Forbidden, NotFound, Unauthorized
from medfed.common.identity_resources import ENROL_NEEDED, OTP_NEEDED, SSO_ONLY
from medfed.common.security import (
    NODE_SECRET_PREFIX,
    USER_TOKEN_PREFIX,
    digest,
    new_token,
    verify_password,
)
from medfed.common.timeutil import aware, utcnow
from medfed.hub.config import HubSettings
from medfed.hub.db.models import ApiToken, Node, User
from medfed.hub.services import mfa
from medfed.hub.services.ledger import actor_of, record
from medfed.hub.services.oidc_reauth import check_reauth, reauth_refusal


class SecondFactorNeeded(Unauthorized):
    """The password was right; a second factor is missing, or policy wants one enrolled.

    Not a failed login for the throttle (the password was right), not a success either.
    ``enrol`` says the account must enrol first; ``user_id`` lets the web sign-in go on
    to its second step.
    """

    def __init__(self, message: str, *, user_id: int, enrol: bool) -> None:
        super().__init__(message)
        self.user_id = user_id
        self.enrol = enrol


def check_password(
    session: Session, *, username: str, password: str, settings: HubSettings
) -> User:
    """The user whose password this is, or :class:`Unauthorized`.

    With ``settings.local_passwords`` off only a hub administrator with TOTP enrolled may
    go on (break-glass); everyone else is refused with :data:`SSO_ONLY`.
    """
    user = session.scalar(select(User).where(User.username == username))
    if not settings.local_passwords and not (
        user is not None and user.is_superuser and mfa.enrolled(session, user=user)
    ):
        raise Forbidden(
            f"{SSO_ONLY}: sign in with single sign-on (web: the provider's button; "
            "command line: medfed login --sso)"
        )
    if user is None or not user.active or not verify_password(user.password_hash, password):
        raise Unauthorized("wrong username or password")
    return user


def second_factor(
    session: Session,
    *,
    user: User,
    settings: HubSettings,
    otp: str | None,
    recovery_code: str | None,
) -> str | None:
    """Check the second factor after a right password: ``otp``, ``recovery`` or None.

    An account with TOTP needs a code; an account without one whose roles the policy
    names (``mfa_required_roles``) is refused until it enrols (:data:`ENROL_NEEDED`).
    """
    if mfa.enrolled(session, user=user):
        if not otp and not recovery_code:
            raise SecondFactorNeeded(
                f"{OTP_NEEDED}: send otp (6 digits from the authenticator app) or a recovery_code",
                user_id=user.id,
                enrol=False,
            )
        return mfa.check_second_factor(
            session, user=user, settings=settings, otp=otp, recovery_code=recovery_code
        )
    if mfa.mfa_required(user, settings):
        raise SecondFactorNeeded(
            f"{ENROL_NEEDED}: the hub's policy needs a second factor for the roles "
            f"{', '.join(sorted(settings.mfa_required_roles))}; enrol TOTP with your password "
            "and a first code (medfed mfa enrol, POST /api/auth/mfa/enrol, or the web sign-in)",
            user_id=user.id,
            enrol=True,
        )
    return None


def login_token(
    session: Session, *, user: User, days: int, method: str | None
) -> tuple[ApiToken, str]:
    """The login token after both checks passed (ledger: ``auth.login``)."""
    token, plain = create_token(session, user=user, name="login", days=days, audit=False)
    record(
        session,
        action="auth.login",
        actor=actor_of(user),
        objects={"user": user.id, "token": token.id, "mfa": method or "none"},
    )
    return token, plain


def login(
    session: Session,
    *,
    username: str,
    password: str,
    settings: HubSettings,
    days: int = 1,
    otp: str | None = None,
    recovery_code: str | None = None,
) -> tuple[ApiToken, str]:
    """Password (and second factor where needed) to a login token."""
    user = check_password(session, username=username, password=password, settings=settings)
    method = second_factor(
        session, user=user, settings=settings, otp=otp, recovery_code=recovery_code
    )
    return login_token(session, user=user, days=days, method=method)


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


@dataclass(frozen=True)
class Checked:
    """A bearer's principal, and when the check stops holding by itself (user tokens)."""

    principal: User | Node
    until: datetime | None = None
    #: the refusal once ``until`` has passed
    refusal: str = ""


def check_bearer(session: Session, *, bearer: str) -> Checked:
    """The principal of a node secret or user token, or :class:`Unauthorized`."""
    if bearer.startswith(NODE_SECRET_PREFIX):
        node = session.scalar(select(Node).where(Node.secret_hash == digest(bearer)))
        if node is None:
            raise Unauthorized("invalid node credentials")
        return Checked(node)
    if bearer.startswith(USER_TOKEN_PREFIX):
        token = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest(bearer)))
        if token is None:
            raise Unauthorized("invalid token")
        if token.revoked_at is not None:
            raise Unauthorized("token revoked")
        expires = aware(token.expires_at)
        if expires <= utcnow():
            raise Unauthorized("token expired")
        user = session.get(User, token.user_id)
        if user is None or not user.active:
            raise Unauthorized("user disabled")
        # SSO users: tokens bounded by their last login
        deadline = check_reauth(session, user=user)
        if deadline is not None and deadline < expires:
            return Checked(user, deadline, reauth_refusal(session))
        return Checked(user, expires, "token expired")
    raise Unauthorized("invalid token")


def authenticate(session: Session, *, bearer: str) -> User | Node:
    return check_bearer(session, bearer=bearer).principal
