"""Talking to one OpenID provider: discovery, JWKS, code and device grants, ID token checks.

How it runs: a :class:`ProviderClient` per configured provider lives in the app's
:class:`ProviderRegistry` (``app.state.oidc``), shared by every request thread (a lock
guards its caches). The discovery document (``ISSUER/.well-known/openid-configuration``)
and the JWKS are fetched on first use and kept for ``cache_seconds``; an ID token signed
with a key id the cached JWKS lacks makes one early re-fetch (key rotation), at most every
``refetch_seconds``. Verifying a token with cached keys costs no network.

The OAuth parts (authorization URL with PKCE S256, the code exchange, the device
authorization request and its token polling) use Authlib's httpx client; ID tokens are
verified with joserfc: signature against the provider's JWKS (asymmetric algorithms only),
``iss``, ``aud`` (and ``azp`` when there are several audiences), ``exp``, ``iat``,
``sub`` and, for the web flow, ``nonce``. Every refusal is :class:`Unauthorized` with a
message that names the check, never a claim's value.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from medfed.common.errors import MedfedError, NotFound, Unauthorized
from medfed.hub.services.oidc_config import OidcProvider

__all__ = [
    "DEVICE_GRANT",
    "DeviceStart",
    "ProviderClient",
    "ProviderRegistry",
    "ProviderUnavailable",
    "new_secret",
]

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: asymmetric signature algorithms an ID token may use (never "none", never HMAC)
ID_TOKEN_ALGORITHMS = [
    *("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    *("ES256", "ES384", "ES512", "EdDSA"),
]
_CLAIM_MESSAGES = {
    "iss": "the ID token was issued by another provider (iss)",
    "aud": "the ID token is meant for another client (aud)",
    "azp": "the ID token was issued to another client (azp)",
    "nonce": "the ID token does not answer this login (nonce)",
    "iat": "the ID token's issue time is wrong (iat)",
    "exp": "the ID token has expired (exp)",
    "sub": "the ID token names no subject (sub)",
}


class ProviderUnavailable(MedfedError):
    """The provider did not answer, or answered what the hub cannot use (HTTP 502)."""

    status_code = 502


def new_secret(length: int = 48) -> str:
    """A random URL-safe string for state, nonce or PKCE verifier."""
    return str(generate_token(length))


@dataclass(frozen=True)
class DeviceStart:
    """What a device authorization request answered (RFC 8628, section 3.2)."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int


class ProviderClient:
    """One provider: its metadata and keys (cached) and the grants the hub uses."""

    def __init__(
        self,
        config: OidcProvider,
        *,
        cache_seconds: float = 3600.0,
        refetch_seconds: float = 30.0,
        timeout: float = 10.0,
    ) -> None:
        self.config = config
        self.cache_seconds = cache_seconds
        self.refetch_seconds = refetch_seconds
        self.timeout = timeout
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0

    # ------------------------------------------------------------------ metadata, keys
    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = httpx.get(url, timeout=self.timeout, follow_redirects=False)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderUnavailable(
                f"the sign-in provider '{self.config.name}' cannot be reached; try again later"
            ) from exc
        if not isinstance(data, dict):
            raise ProviderUnavailable(f"the provider '{self.config.name}' answered no JSON object")
        return data

    def metadata(self) -> dict[str, Any]:
        """The discovery document (cached); its ``issuer`` must be the configured one."""
        with self._lock:
            if self._metadata is not None and time.monotonic() - self._metadata_at < (
                self.cache_seconds
            ):
                return self._metadata
        url = f"{self.config.issuer}/.well-known/openid-configuration"
        data = self._get_json(url)
        if str(data.get("issuer", "")).rstrip("/") != self.config.issuer:
            raise ProviderUnavailable(
                f"the provider '{self.config.name}' names another issuer in its discovery "
                "document; check the hub's setting"
            )
        with self._lock:
            self._metadata, self._metadata_at = data, time.monotonic()
        return data

    def endpoint(self, name: str) -> str:
        value = self.metadata().get(name)
        if not isinstance(value, str):
            raise NotFound(f"the provider '{self.config.name}' offers no {name}")
        return value

    def keys(self, *, kid: str | None = None) -> KeySet:
        """The provider's JWKS (cached); re-fetched early once when ``kid`` is unknown."""
        now = time.monotonic()
        with self._lock:
            keys, fetched = self._keys, self._keys_at
        fresh = keys is not None and now - fetched < self.cache_seconds
        known = keys is not None and (kid is None or any(k.kid == kid for k in keys.keys))
        if keys is not None and fresh and (known or now - fetched < self.refetch_seconds):
            return keys
        try:
            keys = KeySet.import_key_set(self._get_json(self.endpoint("jwks_uri")))  # type: ignore[arg-type]
        except JoseError as exc:
            raise ProviderUnavailable(
                f"the provider '{self.config.name}' serves a JWKS the hub cannot read"
            ) from exc
        with self._lock:
            self._keys, self._keys_at = keys, time.monotonic()
        return keys

    # ------------------------------------------------------------------ ID tokens
    def verify_id_token(
        self, raw: str, *, client_id: str, nonce: str | None, now: int | None = None
    ) -> dict[str, Any]:
        """The claims of ``raw`` after every check; :class:`Unauthorized` names a failed one."""
        try:
            header = extract_compact(raw.encode()).protected
        except (JoseError, ValueError) as exc:
            raise Unauthorized("the ID token is not a signed JWT") from exc
        kid = header.get("kid")
        keys = self.keys(kid=kid if isinstance(kid, str) else None)
        try:
            token = jwt.decode(raw, keys, algorithms=ID_TOKEN_ALGORITHMS)
        except BadSignatureError as exc:
            raise Unauthorized("the ID token's signature does not verify") from exc
        except JoseError as exc:
            raise Unauthorized("the ID token's signature or key is not accepted") from exc
        options: dict[str, Any] = {
            "iss": {"essential": True, "value": self.config.issuer},
            "aud": {"essential": True, "value": client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
        }
        if nonce is not None:
            options["nonce"] = {"essential": True, "value": nonce}
        registry = jwt.JWTClaimsRegistry(now=now, leeway=self.config.leeway_seconds, **options)
        claims = dict(token.claims)
        try:
            registry.validate(claims)
        except (InvalidClaimError, MissingClaimError, ExpiredTokenError) as exc:
            raise Unauthorized(
                _CLAIM_MESSAGES.get(exc.claim, f"the ID token's claim {exc.claim} is wrong")
            ) from exc
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != client_id:
            raise Unauthorized(_CLAIM_MESSAGES["azp"])
        return claims

    # ------------------------------------------------------------------ grants
    def _oauth(self, client_id: str, secret: str, **kwargs: Any) -> OAuth2Session:
        return OAuth2Session(
            client_id=client_id,
            client_secret=secret or None,
            token_endpoint_auth_method="client_secret_basic" if secret else "none",
            default_timeout=self.timeout,
            **kwargs,
        )

    def authorization_url(
        self, *, redirect_uri: str, state: str, nonce: str, code_verifier: str
    ) -> str:
        """Where the browser goes to sign in: code flow, PKCE S256, state and nonce."""
        with self._oauth(
            self.config.client_id,
            self.config.client_secret,
            scope=" ".join(self.config.scopes),
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
        ) as client:
            url, _ = client.create_authorization_url(
                self.endpoint("authorization_endpoint"),
                state=state,
                nonce=nonce,
                code_verifier=code_verifier,
            )
        return str(url)

    def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str) -> str:
        """The raw ID token the provider gives for ``code`` (each code works once)."""
        with self._oauth(
            self.config.client_id, self.config.client_secret, redirect_uri=redirect_uri
        ) as client:
            try:
                token = client.fetch_token(
                    self.endpoint("token_endpoint"),
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                )
            except OAuthError as exc:
                raise Unauthorized(
                    f"the provider refused the sign-in code ({exc.error}); sign in again"
                ) from exc
            except requests.RequestException as exc:
                raise ProviderUnavailable("the sign-in provider cannot be reached") from exc
        return _id_token_of(token)

    def start_device(self) -> DeviceStart:
        """A device authorization request (RFC 8628) with the provider's device client."""
        client_id, secret = self.config.device_client
        data = {"scope": " ".join(self.config.scopes)}  # client auth adds the client
        with self._oauth(client_id, secret) as client:
            try:
                response = client.request(
                    "POST",
                    self.endpoint("device_authorization_endpoint"),
                    data=data,
                    withhold_token=True,
                    auth=client.client_auth(client.token_endpoint_auth_method),
                )
                body = response.json()
            except (requests.RequestException, ValueError) as exc:
                raise ProviderUnavailable("the sign-in provider cannot be reached") from exc
        if response.status_code != 200 or "device_code" not in body:
            raise Unauthorized(
                f"the provider refused to start a device login ({body.get('error', 'error')})"
            )
        return DeviceStart(
            device_code=str(body["device_code"]),
            user_code=str(body["user_code"]),
            verification_uri=str(body["verification_uri"]),
            verification_uri_complete=body.get("verification_uri_complete"),
            expires_in=int(body.get("expires_in", 600)),
            interval=int(body.get("interval", 5)),
        )

    def poll_device(self, device_code: str) -> str | None:
        """The raw ID token once the user approved; ``None`` while pending."""
        client_id, secret = self.config.device_client
        with self._oauth(client_id, secret) as client:
            try:
                token = client.fetch_token(
                    self.endpoint("token_endpoint"),
                    grant_type=DEVICE_GRANT,
                    device_code=device_code,
                    client_id=client_id,
                )
            except OAuthError as exc:
                if exc.error in ("authorization_pending", "slow_down"):
                    return None
                raise Unauthorized(
                    f"the device login did not complete ({exc.error}); start it again"
                ) from exc
            except requests.RequestException as exc:
                raise ProviderUnavailable("the sign-in provider cannot be reached") from exc
        return _id_token_of(token)


def _id_token_of(token: dict[str, Any]) -> str:
    raw = token.get("id_token")
    if not isinstance(raw, str):
        raise Unauthorized("the provider answered without an ID token (is 'openid' a scope?)")
    return raw


class ProviderRegistry:
    """The app's providers by name (``app.state.oidc``)."""

    def __init__(self, providers: list[OidcProvider]) -> None:
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ValueError("oidc_providers: each provider needs its own name")
        self._clients = {p.name: ProviderClient(p) for p in providers}

    def get(self, name: str) -> ProviderClient:
        client = self._clients.get(name)
        if client is None:
            raise NotFound(f"no sign-in provider named '{name}'")
        return client

    def configs(self) -> list[OidcProvider]:
        return [c.config for c in self._clients.values()]
