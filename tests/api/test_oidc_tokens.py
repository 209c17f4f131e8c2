"""Bad ID tokens and replays are refused, and a refused login changes nothing at the hub.

The provider (node-oidc-provider) signs with a key this test made, so the test can sign
tokens with the provider's real, published key that differ in one claim only (``aud``,
``iss``, ``nonce``, ``exp``, ``iat``, ``sub``), and tokens under keys the provider does
not publish. Each is given to ``sign_in_with_id_token`` — where both login flows end
after the provider's token endpoint — and must be refused with nothing written. Replays
go through HTTP: the same callback twice, and a used code under a fresh state.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from medfed.common.errors import Unauthorized
from medfed.hub.services.oidc_flow import sign_in_with_id_token
from medfed.hub.services.oidc_provider import ProviderClient, ProviderRegistry
from medfed.hub.web.session import SESSION_COOKIE
from oidc_hub import BASE, CALLBACK, MFA_ROLES, SsoHub, sso_hub
from oidctools import WEB_CLIENT, TestProvider, provider_login

NONCE = "nonce-of-this-login"


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestProvider]:
    provider = TestProvider(tmp_path_factory.mktemp("idp"), redirect_uris=[CALLBACK])
    try:
        yield provider
    finally:
        provider.close()


@pytest.fixture(scope="module")
def hub(idp: TestProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SsoHub]:
    with sso_hub(tmp_path_factory.mktemp("hub"), idp) as made:
        yield made


def good_claims(idp: TestProvider, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": idp.issuer,
        "sub": "carol",
        "aud": WEB_CLIENT,
        "iat": now,
        "exp": now + 300,
        "nonce": NONCE,
        "amr": ["pwd"],
        "groups": ["medfed-researchers"],
        "preferred_username": "carol",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def client_of(hub: SsoHub) -> ProviderClient:
    registry: ProviderRegistry = hub.app.state.oidc  # type: ignore[attr-defined]
    return registry.get("testidp")


def try_sign_in(hub: SsoHub, raw: str) -> None:
    with hub.session() as session:
        sign_in_with_id_token(
            session,
            client=client_of(hub),
            raw=raw,
            client_id=WEB_CLIENT,
            nonce=NONCE,
            mfa_required_roles=MFA_ROLES,
            token_name="sso:testidp",
        )
        session.commit()


def tampered(raw: str) -> str:
    """A real token with one claim changed in its payload (signature kept)."""
    header, payload, signature = raw.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["groups"] = ["medfed-stewards"]
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{body}.{signature}"


def test_a_well_formed_token_is_accepted(hub: SsoHub, idp: TestProvider) -> None:
    hub.api.get("/api/auth/sso/providers")  # the app's provider registry exists
    before = hub.counts()
    try_sign_in(hub, idp.sign(good_claims(idp, sub="dave", preferred_username="dave")))
    after = hub.counts()
    assert after["users"] == before["users"] + 1
    assert after["tokens"] == before["tokens"] + 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"aud": "another-client"}, "meant for another client (aud)"),
        ({"aud": ["another-client", WEB_CLIENT]}, "issued to another client (azp)"),
        ({"iss": "http://127.0.0.1:1"}, "issued by another provider (iss)"),
        ({"nonce": "a-nonce-of-another-login"}, "does not answer this login (nonce)"),
        ({"nonce": None}, "(nonce)"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired (exp)"),
        ({"iat": int(time.time()) + 3600, "exp": int(time.time()) + 7200}, "issue time"),
        ({"sub": None}, "(sub)"),
    ],
    ids=["aud", "azp", "iss", "nonce", "no-nonce", "expired", "iat-future", "no-sub"],
)
def test_a_wrong_claim_is_refused_and_nothing_changes(
    hub: SsoHub, idp: TestProvider, changes: dict[str, Any], message: str
) -> None:
    hub.api.get("/api/auth/sso/providers")
    raw = idp.sign(good_claims(idp, **changes))  # the provider's own, published key
    before = hub.counts()
    with pytest.raises(Unauthorized, match=message.replace("(", r"\(").replace(")", r"\)")):
        try_sign_in(hub, raw)
    assert hub.counts() == before


def test_foreign_keys_and_tampering_are_refused(hub: SsoHub, idp: TestProvider) -> None:
    hub.api.get("/api/auth/sso/providers")
    claims = good_claims(idp)
    impostor = RSAKey.generate_key(2048, parameters={"kid": "test-key-1"}, private=True)
    unknown = RSAKey.generate_key(2048, parameters={"kid": "not-published"}, private=True)
    secret = OctKey.import_key(idp.web_secret.encode())  # HMAC with the client secret
    cases = {
        "same kid, other key": idp.sign(claims, key=impostor),
        "unpublished kid": idp.sign(claims, key=unknown),
        "HS256 with the client secret": jwt.encode({"alg": "HS256"}, claims, secret),
        "alg none": ".".join(
            base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
            for part in ({"alg": "none"}, claims)
        )
        + ".",
        "payload changed": tampered(idp.sign(claims)),
        "not a JWT": "this is not a token",
    }
    before = hub.counts()
    for name, raw in cases.items():
        with pytest.raises(Unauthorized, match="ID token"):
            try_sign_in(hub, raw)
        assert hub.counts() == before, name


def test_a_replayed_callback_and_a_replayed_code_are_refused(hub: SsoHub) -> None:
    back = provider_login(hub.start(), "carol", "provider-password-1", stop_at=CALLBACK)
    first = hub.api.get(back.removeprefix(BASE), follow_redirects=False)
    assert first.status_code == 303
    hub.api.cookies.delete(SESSION_COOKIE)

    before = hub.counts()
    again = hub.api.get(back.removeprefix(BASE), follow_redirects=False)  # same state, code
    assert again.status_code == 401
    assert "used already" in again.text
    assert hub.counts() == before

    # the used code under a new, valid state: the provider refuses the code itself
    fresh = parse_qs(urlparse(hub.start()).query)["state"][0]
    code = parse_qs(urlparse(back).query)["code"][0]
    replay = hub.api.get(
        f"/auth/sso/testidp/callback?state={fresh}&code={code}", follow_redirects=False
    )
    assert replay.status_code == 401
    assert "refused the sign-in code" in replay.text
    assert hub.counts() == before
    assert SESSION_COOKIE not in hub.api.cookies


def test_a_state_from_another_browser_is_refused(hub: SsoHub, idp: TestProvider) -> None:
    back = provider_login(hub.start(), "carol", "provider-password-1", stop_at=CALLBACK)
    hub.api.cookies.delete("medfed_sso_state", path="/auth/sso")  # not the browser that began
    before = hub.counts()
    answer = hub.api.get(back.removeprefix(BASE), follow_redirects=False)
    assert answer.status_code == 401
    assert "another browser" in answer.text
    assert hub.counts() == before
