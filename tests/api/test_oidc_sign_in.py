"""Single sign-on through a real OpenID provider (node-oidc-provider), over the hub's HTTP.

The provider runs once for the module (``node tests/oidc/provider.mjs``); each test gets
a fresh hub (in-process TestClient on its own SQLite file) that trusts it. The web flow
walks the provider's real pages over HTTP (the browser test does it in Chromium); the
device flow is approved at the provider's real device pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from hubtools import bearer
from medfed.common.security import digest
from medfed.common.sso_resources import DeviceLoginStarted
from medfed.common.timeutil import utcnow
from medfed.hub.db.models import ApiToken, Organization, User
from medfed.hub.db.models_identity import ClaimRole, UserIdentity
from medfed.hub.web.session import SESSION_COOKIE
from medfed.sdk.client import Client
from oidc_hub import CALLBACK, SsoHub, sso_hub
from oidctools import ACCOUNTS, ORG, RESEARCHERS, STEWARDS, TestProvider, device_approve


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestProvider]:
    provider = TestProvider(tmp_path_factory.mktemp("idp"), redirect_uris=[CALLBACK])
    try:
        yield provider
    finally:
        provider.close()


@pytest.fixture
def hub(idp: TestProvider, tmp_path: Path) -> Iterator[SsoHub]:
    for login, account in ACCOUNTS.items():
        idp.set_groups(login, list(account["groups"]))
    with sso_hub(tmp_path, idp) as made:
        yield made


def session_token(hub: SsoHub) -> str:
    token = hub.api.cookies.get(SESSION_COOKIE)
    assert token, "no session cookie"
    return str(token)


def test_login_page_offers_each_provider(hub: SsoHub) -> None:
    page = hub.api.get("/login?next=/projects")
    assert page.status_code == 200
    assert "Sign in with Test IdP" in page.text
    assert 'href="/auth/sso/testidp/start?next=/projects"' in page.text
    providers = hub.api.get("/api/auth/sso/providers").json()
    assert providers == [{"name": "testidp", "title": "Test IdP"}]


def test_web_login_creates_user_by_iss_sub_and_maps_roles(hub: SsoHub) -> None:
    answer = hub.web_login("alice")
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/"
    me = hub.api.get("/api/me", headers=bearer(session_token(hub))).json()
    assert me["username"] == "alice"
    assert sorted(me["roles"]) == ["researcher", "steward"]
    with hub.session() as s:
        org = s.scalar(select(Organization).where(Organization.name == ORG))
        assert org is not None and me["organization_id"] == org.id
        identity = s.scalar(select(UserIdentity).where(UserIdentity.user_id == me["id"]))
        assert identity is not None
        assert (identity.issuer, identity.subject) == (hub.idp.issuer, "alice")
        granted = set(s.scalars(select(ClaimRole.role).where(ClaimRole.user_id == me["id"])))
        assert granted == {"researcher", "steward"}
        user = s.get(User, me["id"])
        assert user is not None and user.email is None  # no claim kept but the identity

    # the second login finds the same user by (iss, sub)
    before = hub.counts()
    assert hub.web_login("alice").status_code == 303
    after = hub.counts()
    assert after["users"] == before["users"] and after["identities"] == before["identities"]
    assert after["tokens"] == before["tokens"] + 1


def test_user_is_never_matched_by_email(hub: SsoHub) -> None:
    local = hub.api.post(
        "/api/users",
        headers=bearer(hub.admin_token),
        json={
            "username": "alice",
            "password": "local-password-1",
            "email": "alice@example.org",  # the provider's e-mail of its alice
            "organization_id": hub.user("admin").organization_id,
            "roles": ["researcher"],
        },
    )
    assert local.status_code == 201, local.text
    assert hub.web_login("alice").status_code == 303
    me = hub.api.get("/api/me", headers=bearer(session_token(hub))).json()
    assert me["id"] != local.json()["id"]
    assert me["username"] == "alice@testidp"


def test_removed_group_removes_its_role_but_not_a_hand_granted_one(hub: SsoHub) -> None:
    assert hub.web_login("alice").status_code == 303
    first = session_token(hub)
    user_id = hub.user("alice").id
    with hub.session() as s:  # an admin grants "auditor" by hand (no API for it yet)
        user = s.get(User, user_id)
        assert user is not None
        user.roles = sorted({*user.roles, "auditor"})
        s.commit()

    hub.idp.set_groups("alice", [RESEARCHERS])  # the institution takes the steward group away
    assert hub.web_login("alice").status_code == 303
    me = hub.api.get("/api/me", headers=bearer(first)).json()  # the older token sees it too
    assert sorted(me["roles"]) == ["auditor", "researcher"]
    with hub.session() as s:
        granted = set(s.scalars(select(ClaimRole.role).where(ClaimRole.user_id == user_id)))
    assert granted == {"researcher"}

    hub.idp.set_groups("alice", [STEWARDS, RESEARCHERS])  # and gives it back
    assert hub.web_login("alice").status_code == 303
    me = hub.api.get("/api/me", headers=bearer(first)).json()
    assert sorted(me["roles"]) == ["auditor", "researcher", "steward"]


def test_tokens_of_sso_users_stop_after_the_reauth_window(hub: SsoHub) -> None:
    assert hub.web_login("carol").status_code == 303
    token = session_token(hub)
    made = hub.api.post("/api/tokens", headers=bearer(token), json={"name": "script", "days": 30})
    assert made.status_code == 201
    script = made.json()["token"]
    assert hub.api.get("/api/me", headers=bearer(script)).status_code == 200

    with hub.session() as s:  # 25 hours pass without a login at the provider
        identity = s.scalar(select(UserIdentity).where(UserIdentity.subject == "carol"))
        assert identity is not None
        identity.last_login_at = utcnow() - timedelta(hours=25)
        s.commit()
    for plain in (token, script):
        refused = hub.api.get("/api/me", headers=bearer(plain))
        assert refused.status_code == 401
        assert "sign in again" in refused.json()["detail"]
    assert hub.api.get("/api/me", headers=bearer(hub.admin_token)).status_code == 200  # local

    assert hub.web_login("carol").status_code == 303  # a fresh login re-reads the claims
    assert hub.api.get("/api/me", headers=bearer(script)).status_code == 200


def test_steward_without_mfa_is_refused_and_nothing_changes(hub: SsoHub) -> None:
    before = hub.counts()
    answer = hub.web_login("bob")
    assert answer.status_code == 403
    assert "steward need multi-factor authentication" in answer.text
    assert SESSION_COOKIE not in hub.api.cookies
    assert hub.counts() == before


def test_researcher_without_mfa_is_accepted(hub: SsoHub) -> None:
    assert hub.web_login("carol").status_code == 303
    assert hub.user("carol").roles == ["researcher"]


def test_mfa_policy_for_researchers_refuses_carol(idp: TestProvider, tmp_path: Path) -> None:
    with sso_hub(tmp_path, idp, mfa_required_roles=["researcher"]) as hub:
        answer = hub.web_login("carol")
        assert answer.status_code == 403
        assert "researcher need multi-factor authentication" in answer.text
        assert hub.web_login("alice").status_code == 303  # her amr has otp


def test_device_login_through_the_sdk(hub: SsoHub) -> None:
    shown: list[DeviceLoginStarted] = []

    def approve(start: DeviceLoginStarted) -> None:  # the user, in any browser
        shown.append(start)
        assert start.verification_uri_complete is not None
        assert "Success" in device_approve(
            start.verification_uri_complete, "alice", "provider-password-1"
        )

    client = Client.login_sso("http://testserver", "testidp", show=approve, http_client=hub.api)
    assert shown and shown[0].user_code
    me = client.users.me()
    assert me.username == "alice" and sorted(me.roles) == ["researcher", "steward"]
    assert client.token is not None
    with hub.session() as s:
        token = s.scalar(select(ApiToken).where(ApiToken.token_hash == digest(client.token)))
        assert token is not None and token.name == "sso-cli:testidp"
        assert token.expires_at - token.created_at == timedelta(days=1)


def test_device_login_refused_without_mfa(hub: SsoHub) -> None:
    start = hub.api.post("/api/auth/sso/testidp/device").json()
    pending = hub.api.post(
        "/api/auth/sso/testidp/device/token", json={"device_code": start["device_code"]}
    )
    assert pending.status_code == 200 and pending.json() == {"status": "pending", "token": None}
    device_approve(start["verification_uri_complete"], "bob", "provider-password-1")
    before = hub.counts()
    refused = hub.api.post(
        "/api/auth/sso/testidp/device/token", json={"device_code": start["device_code"]}
    )
    assert refused.status_code == 403
    assert "multi-factor" in refused.json()["detail"]
    assert hub.counts() == before


def test_unknown_provider_is_404(hub: SsoHub) -> None:
    assert hub.api.post("/api/auth/sso/nope/device").status_code == 404
    assert hub.api.get("/auth/sso/nope/start", follow_redirects=False).status_code == 404
