"""Single sign-on: login round trip and what token validation adds per API request.

Run: ``.venv/bin/python -m benchmarks.identity [--logins N] [--requests M]``
(needs Node.js; ``npm ci --prefix tests/oidc`` once).

A real OpenID provider (node-oidc-provider, ``tests/oidc/provider.mjs``, as in the
tests) on 127.0.0.1 and a hub app in this process (Starlette's TestClient, SQLite in a
temporary folder). Measured, p50 and p95 in milliseconds:

* ``web_login``: one whole browser-less web login — the hub's start (state row, PKCE),
  the provider's authorize, login form and consent over HTTP, the hub's callback (code
  exchange at the provider, ID token verification, claim mapping, token).
* ``device_login``: start at the hub, approval at the provider's device pages, one poll
  at the hub that completes (provider token endpoint, verification, sign-in).
* ``verify_id_token``: verifying one ID token with the JWKS cached (joserfc: signature
  and claims) — what a login adds beyond the network.
* ``authenticate_local`` / ``authenticate_sso``: ``auth.authenticate`` (a session, the
  token lookup, the user, the re-authentication check, commit) for a local user's token
  and for an SSO user's token.
* ``reauth_check``: the re-authentication check alone (one indexed query on
  ``user_identities``), which every user-token request now runs: the cost SSO adds.
* ``get_me_local`` / ``get_me_sso``: ``GET /api/me`` through the app, same two tokens.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' provider fixture (oidctools)

from medfed.hub.app import create_app  # noqa: E402
from medfed.hub.bootstrap import init_hub  # noqa: E402
from medfed.hub.config import HubSettings  # noqa: E402
from medfed.hub.db.models import User  # noqa: E402
from medfed.hub.services import auth  # noqa: E402
from medfed.hub.services.oidc_provider import ProviderRegistry  # noqa: E402
from medfed.hub.services.oidc_reauth import check_reauth  # noqa: E402
from oidctools import (  # noqa: E402
    PASSWORD,
    TestProvider,
    device_approve,
    provider_login,
)

with warnings.catch_warnings():  # Starlette nudges towards httpx2; httpx works the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

BASE = "http://testserver"
CALLBACK = f"{BASE}/auth/sso/testidp/callback"


def _stats(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "n": len(samples),
    }


def _time(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logins", type=int, default=30)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        idp = TestProvider(root, redirect_uris=[CALLBACK])
        try:
            settings = HubSettings(
                data_dir=root / "hub",
                dev_mode=True,
                oidc_providers=[idp.settings()],
                mfa_required_roles=["admin", "steward", "dac"],
            )
            _, local_token = init_hub(
                settings, organization="Hospital A", username="admin", password="admin-pw-1"
            )
            app = create_app(settings)
            with TestClient(app, base_url=BASE) as api:
                figures = _measure(api, idp, local_token, args.logins, args.requests)
            app.state.engine.dispose()
        finally:
            idp.close()
    figures["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    figures["python"] = platform.python_version()
    print(json.dumps(figures, indent=2))
    out = Path(__file__).parent / "results" / "identity.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")


def _measure(
    api: TestClient, idp: TestProvider, local_token: str, logins: int, requests: int
) -> dict[str, Any]:
    def web_login() -> str:
        start = api.get("/auth/sso/testidp/start", follow_redirects=False)
        back = provider_login(start.headers["location"], "carol", PASSWORD, stop_at=CALLBACK)
        done = api.get(back.removeprefix(BASE), follow_redirects=False)
        assert done.status_code == 303, done.text
        return str(api.cookies.get("medfed_session"))

    def device_login() -> None:
        start = api.post("/api/auth/sso/testidp/device").json()
        device_approve(start["verification_uri_complete"], "carol", PASSWORD)
        done = api.post(
            "/api/auth/sso/testidp/device/token", json={"device_code": start["device_code"]}
        ).json()
        assert done["status"] == "done", done

    sso_token = web_login()  # warm: discovery and JWKS fetched once
    web = _time(web_login, logins)
    device = _time(device_login, logins)

    registry: ProviderRegistry = api.app.state.oidc  # type: ignore[attr-defined]
    client = registry.get("testidp")
    now = int(time.time())
    raw = idp.sign(
        {
            "iss": idp.issuer,
            "sub": "carol",
            "aud": "medfed-web",
            "iat": now,
            "exp": now + 3600,
            "nonce": "n",
        }
    )
    verify = _time(lambda: client.verify_id_token(raw, client_id="medfed-web", nonce="n"), 500)

    maker = api.app.state.sessionmaker  # type: ignore[attr-defined]

    def authenticate(token: str) -> Callable[[], None]:
        def run() -> None:
            with maker() as session:
                auth.authenticate(session, bearer=token)
                session.commit()

        return run

    local = _time(authenticate(local_token), requests)
    sso = _time(authenticate(sso_token), requests)
    me_local = _time(
        lambda: api.get("/api/me", headers={"Authorization": f"Bearer {local_token}"}),
        requests // 4,
    )
    me_sso = _time(
        lambda: api.get("/api/me", headers={"Authorization": f"Bearer {sso_token}"}),
        requests // 4,
    )
    with maker() as session:
        user = auth.authenticate(session, bearer=sso_token)
        assert isinstance(user, User)
        reauth = _time(lambda: check_reauth(session, user=user), requests)
    return {
        "web_login": _stats(web),
        "device_login": _stats(device),
        "verify_id_token": _stats(verify),
        "authenticate_local": _stats(local),
        "authenticate_sso": _stats(sso),
        "reauth_check": _stats(reauth),
        "get_me_local": _stats(me_local),
        "get_me_sso": _stats(me_sso),
    }


if __name__ == "__main__":
    main()
