"""How long a single-sign-on user's API tokens work: bounded by their last SSO login.

A user who signs in through an OpenID provider gets their roles from the provider's claims
at each login (:mod:`medfed.hub.services.oidc_login`). So that a role taken away at the
institution cannot live on in a long-lived API token, :func:`check_reauth` runs on every
database check of a user token (``medfed.hub.services.auth.check_bearer``), and the
deadline it returns is checked on every request answered from the bearer cache
(:mod:`medfed.hub.principals`): if the user has an identity at a provider and their last
login there is older than ``oidc_reauth_hours`` (at most 24), every token of theirs is
refused until they log in again (web or ``medfed login --sso``), and that login re-reads
the claims. Users without an identity (local accounts) are not touched.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medfed.common.errors import Unauthorized
from medfed.common.timeutil import aware, utcnow
from medfed.hub.config import SETTINGS_INFO, HubSettings
from medfed.hub.db.models import User
from medfed.hub.db.models_identity import UserIdentity

__all__ = [
    "DEFAULT_REAUTH_HOURS",
    "check_reauth",
    "reauth_deadline",
    "reauth_hours",
    "reauth_refusal",
]

DEFAULT_REAUTH_HOURS = 24.0


def reauth_hours(session: Session) -> float:
    """The app's ``oidc_reauth_hours`` (from the session's settings; 24 without an app)."""
    settings = session.info.get(SETTINGS_INFO)
    if isinstance(settings, HubSettings):
        return settings.oidc_reauth_hours
    return DEFAULT_REAUTH_HOURS


def reauth_refusal(session: Session) -> str:
    """What a token of an SSO user past the re-login deadline is answered."""
    return (
        f"your single sign-on is older than {reauth_hours(session):g} hours: sign in again "
        "through your institution (web page, or 'medfed login --sso')"
    )


def reauth_deadline(session: Session, *, user: User) -> datetime | None:
    """When the tokens of ``user`` stop working until a new SSO login (None: local user)."""
    last = session.scalar(
        select(func.max(UserIdentity.last_login_at)).where(UserIdentity.user_id == user.id)
    )
    if last is None:
        return None
    return aware(last) + timedelta(hours=reauth_hours(session))


def check_reauth(session: Session, *, user: User) -> datetime | None:
    """Refuse the tokens of an SSO user whose last provider login is too old; otherwise
    the deadline (None for a local user)."""
    deadline = reauth_deadline(session, user=user)
    if deadline is not None and deadline <= utcnow():
        raise Unauthorized(reauth_refusal(session))
    return deadline
