"""The two login flows through an OpenID provider: web (code + PKCE) and device (RFC 8628).

Web: :func:`start_web_login` stores a fresh ``state`` (row in ``oidc_login_states`` with
the nonce, the PKCE verifier, the redirect URI and where to go after) and returns the
provider's authorization URL; the browser also keeps ``state`` in a cookie, so a callback
started in another browser fails. :func:`finish_web_login` consumes the row (committed at
once: a state works once, also when the login is then refused), exchanges the code with
the verifier, verifies the ID token (nonce included) and signs the user in
(:func:`medfed.hub.services.oidc_login.sign_in`). States older than
:data:`STATE_SECONDS` are refused and purged.

Device: :func:`start_device_login` asks the provider for a device and user code with the
hub's device client (its secret stays on the hub); :func:`poll_device_login` asks the
provider's token endpoint once and signs the user in when an ID token comes back. The ID
token of the device grant carries no nonce; its other checks are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from medfed.common.errors import Unauthorized
from medfed.common.timeutil import aware, utcnow
from medfed.hub.db.models import ApiToken, User
from medfed.hub.db.models_identity import OidcLoginState
from medfed.hub.services.oidc_login import sign_in
from medfed.hub.services.oidc_provider import DeviceStart, ProviderClient, new_secret

__all__ = [
    "STATE_SECONDS",
    "SignedIn",
    "finish_web_login",
    "poll_device_login",
    "sign_in_with_id_token",
    "start_device_login",
    "start_web_login",
]

#: how long a started web login may wait for its callback
STATE_SECONDS = 600


@dataclass(frozen=True)
class SignedIn:
    user: User
    token: ApiToken
    plain: str
    next_url: str


def start_web_login(
    session: Session, *, client: ProviderClient, redirect_uri: str, next_url: str
) -> tuple[str, str]:
    """The provider's authorization URL and the new ``state`` (the caller commits)."""
    cutoff = utcnow() - timedelta(seconds=STATE_SECONDS)
    session.execute(delete(OidcLoginState).where(OidcLoginState.created_at < cutoff))
    state, nonce, verifier = new_secret(), new_secret(), new_secret(64)
    url = client.authorization_url(
        redirect_uri=redirect_uri, state=state, nonce=nonce, code_verifier=verifier
    )
    session.add(
        OidcLoginState(
            state=state,
            provider=client.config.name,
            nonce=nonce,
            code_verifier=verifier,
            redirect_uri=redirect_uri,
            next_url=next_url,
        )
    )
    return url, state


def finish_web_login(
    session: Session,
    *,
    client: ProviderClient,
    state: str,
    cookie_state: str | None,
    code: str,
    mfa_required_roles: list[str],
) -> SignedIn:
    """Check ``state``, exchange ``code``, verify the ID token, sign in (caller commits)."""
    row = session.scalar(select(OidcLoginState).where(OidcLoginState.state == state))
    if row is None or row.provider != client.config.name:
        raise Unauthorized("this sign-in is unknown, used already or expired; sign in again")
    session.delete(row)
    session.commit()  # the state is spent whatever happens next
    if cookie_state is None or cookie_state != state:
        raise Unauthorized("this sign-in was started in another browser; sign in again")
    if aware(row.created_at) + timedelta(seconds=STATE_SECONDS) <= utcnow():
        raise Unauthorized("this sign-in took too long; sign in again")
    raw = client.exchange_code(
        code=code, redirect_uri=row.redirect_uri, code_verifier=row.code_verifier
    )
    signed = sign_in_with_id_token(
        session,
        client=client,
        raw=raw,
        client_id=client.config.client_id,
        nonce=row.nonce,
        mfa_required_roles=mfa_required_roles,
        token_name=f"sso:{client.config.name}",
    )
    return SignedIn(user=signed.user, token=signed.token, plain=signed.plain, next_url=row.next_url)


def sign_in_with_id_token(
    session: Session,
    *,
    client: ProviderClient,
    raw: str,
    client_id: str,
    nonce: str | None,
    mfa_required_roles: list[str],
    token_name: str,
    days: int = 1,
) -> SignedIn:
    """Verify ``raw`` (the ID token from the provider's token endpoint), then sign in.

    Both flows end here; a token that fails a check raises before anything is written.
    """
    claims = client.verify_id_token(raw, client_id=client_id, nonce=nonce)
    user, token, plain = sign_in(
        session,
        provider=client.config,
        claims=claims,
        mfa_required_roles=mfa_required_roles,
        token_name=token_name,
        days=days,
    )
    return SignedIn(user=user, token=token, plain=plain, next_url="")


def start_device_login(*, client: ProviderClient) -> DeviceStart:
    return client.start_device()


def poll_device_login(
    session: Session,
    *,
    client: ProviderClient,
    device_code: str,
    mfa_required_roles: list[str],
    days: int = 1,
) -> SignedIn | None:
    """``None`` while the user has not approved; then the signed-in user and token."""
    raw = client.poll_device(device_code)
    if raw is None:
        return None
    return sign_in_with_id_token(
        session,
        client=client,
        raw=raw,
        client_id=client.config.device_client[0],
        nonce=None,
        mfa_required_roles=mfa_required_roles,
        token_name=f"sso-cli:{client.config.name}",
        days=days,
    )
