"""A hub wired to the test OpenID provider, for the SSO API tests (in-process TestClient).

``SsoHub`` is a fresh hub on its own SQLite file whose ``oidc_providers`` names the
module's :class:`oidctools.TestProvider`; its organization is ``Hospital A`` and the MFA
policy is the production default (admin, steward, dac). :meth:`SsoHub.web_login` runs
the whole browser flow over HTTP: start at the hub, the provider's login page, back to
the hub's callback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from hubtools import ADMIN_PASSWORD, ADMIN_USERNAME, TestClient
from medfed.hub.app import create_app
from medfed.hub.bootstrap import init_hub
from medfed.hub.config import HubSettings
from medfed.hub.db.models import ApiToken, LedgerEntry, User
from medfed.hub.db.models_identity import ClaimRole, UserIdentity
from oidctools import ORG, PASSWORD, TestProvider, provider_login

BASE = "http://testserver"
CALLBACK = f"{BASE}/auth/sso/testidp/callback"
MFA_ROLES = ["admin", "steward", "dac"]


class SsoHub:
    def __init__(self, api: TestClient, idp: TestProvider, admin_token: str) -> None:
        self.api = api
        self.app = api.app
        self.idp = idp
        self.admin_token = admin_token

    def session(self) -> Any:
        return self.app.state.sessionmaker()  # type: ignore[attr-defined]

    def start(self, next_url: str = "/") -> str:
        response = self.api.get(f"/auth/sso/testidp/start?next={next_url}", follow_redirects=False)
        assert response.status_code == 303, response.text
        return str(response.headers["location"])

    def web_login(self, login: str, password: str = PASSWORD) -> httpx.Response:
        """The callback's answer (303 with a session cookie, or the login page with why)."""
        back = provider_login(self.start(), login, password, stop_at=CALLBACK)
        return self.api.get(back.removeprefix(BASE), follow_redirects=False)

    def counts(self) -> dict[str, int]:
        """What a refused login must leave as it was."""
        with self.session() as s:
            return {
                name: int(s.scalar(select(func.count()).select_from(table)) or 0)
                for name, table in {
                    "users": User,
                    "identities": UserIdentity,
                    "claim_roles": ClaimRole,
                    "tokens": ApiToken,
                    "ledger": LedgerEntry,
                }.items()
            }

    def user(self, username: str) -> User:
        with self.session() as s:
            user = s.scalar(select(User).where(User.username == username))
            assert user is not None, username
            s.expunge(user)
            return user


@contextmanager
def sso_hub(tmp_path: Path, idp: TestProvider, **overrides: Any) -> Iterator[SsoHub]:
    values: dict[str, Any] = {
        "oidc_providers": [idp.settings()],
        "mfa_required_roles": MFA_ROLES,
        **overrides,
    }
    settings = HubSettings(
        data_dir=tmp_path / "hub",
        database_url=f"sqlite:///{tmp_path / 'hub.db'}",
        dev_mode=True,
        secret_key="medfed-test-secret-key-of-32-bytes-or-more",
        sweep_seconds=3600.0,
        **values,
    )
    _, admin_token = init_hub(
        settings, organization=ORG, username=ADMIN_USERNAME, password=ADMIN_PASSWORD
    )
    app = create_app(settings)
    try:
        with TestClient(app) as api:
            yield SsoHub(api, idp, admin_token)
    finally:
        app.state.engine.dispose()
