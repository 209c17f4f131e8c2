"""TOTP second factor (RFC 6238) through the real hub API, on SQLite and PostgreSQL.

Codes come from ``pyotp`` as an authenticator app would make them: the current step's
code, and the next step's (the hub accepts one step of clock drift each way), so no test
waits for a 30-second step to pass. Covered: enrolment (signed in, and by password where
the policy refuses a token until then), login with a code, a wrong code, a replayed code,
single-use recovery codes, MFA failures counted by the login throttle, disabling (needs a
code) and an admin's reset, the MFA policy for a DAC member, and ``local_passwords`` off
with the hub administrator's break-glass; the SDK's login with a code. The code checks
that race on the database (replay, single use) run on both backends, the rest on SQLite.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from hubtools import PASSWORD, SQLITE_ONLY, TestClient, World, bearer
from livehub import serve_app
from medfed.cli import common
from medfed.cli.main import app as cli_app
from medfed.common.errors import Unauthorized
from medfed.common.identity_resources import ENROL_NEEDED, OTP_NEEDED, SSO_ONLY
from medfed.sdk.client import Client

POLICY = ["admin", "steward", "dac"]


def _login(api: TestClient, username: str, password: str = PASSWORD, **extra: str) -> Any:
    return api.post("/api/auth/login", json={"username": username, "password": password, **extra})


def _user(world: World, username: str, roles: list[str]) -> int:
    body = {
        "username": username,
        "password": PASSWORD,
        "organization_id": world.org_a,
        "roles": roles,
    }
    response = world.api.post("/api/users", json=body, headers=world.admin.headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _next_code(totp: pyotp.TOTP, steps: int = 1) -> str:
    """The code of a later step (within the drift the hub allows)."""
    return totp.at(time.time() + steps * totp.interval)


def _enrol(api: TestClient, headers: dict[str, str]) -> tuple[pyotp.TOTP, list[str]]:
    started = api.post("/api/me/mfa/enrol", headers=headers)
    assert started.status_code == 201, started.text
    body = started.json()
    assert body["otpauth_uri"].startswith("otpauth://totp/medfed:")
    assert body["qr_svg"].startswith("<svg")
    totp = pyotp.TOTP(body["secret"])
    confirmed = api.post("/api/me/mfa/confirm", json={"otp": totp.now()}, headers=headers)
    assert confirmed.status_code == 200, confirmed.text
    return totp, confirmed.json()["recovery_codes"]


def test_enrol_login_wrong_code_and_replay(world: World) -> None:
    api, rita = world.api, world.researcher
    started = api.post("/api/me/mfa/enrol", headers=rita.headers).json()
    totp = pyotp.TOTP(started["secret"])
    wrong = f"{(int(totp.now()) + 1) % 1_000_000:06d}"
    refused = api.post("/api/me/mfa/confirm", json={"otp": wrong}, headers=rita.headers)
    assert refused.status_code == 401 and "wrong code" in refused.json()["detail"]
    assert api.get("/api/me/mfa", headers=rita.headers).json()["pending"] is True
    # password alone still works until the enrolment is confirmed
    assert _login(api, "rita").status_code == 201

    used = totp.now()
    confirmed = api.post("/api/me/mfa/confirm", json={"otp": used}, headers=rita.headers)
    assert confirmed.status_code == 200
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    status = api.get("/api/me/mfa", headers=rita.headers).json()
    assert status["enrolled"] is True and status["recovery_codes_left"] == 10
    # the secret is stored sealed, never in plain text
    with world.app.state.sessionmaker() as session:
        stored = session.execute(sa.text("SELECT secret_sealed FROM mfa_totp")).scalar()
    assert stored.startswith("enc:v1:") and started["secret"] not in stored

    no_code = _login(api, "rita")
    assert no_code.status_code == 401 and no_code.json()["detail"].startswith(OTP_NEEDED)
    wrong_login = _login(api, "rita", otp=wrong)
    assert wrong_login.status_code == 401 and "wrong one-time code" in wrong_login.json()["detail"]
    # the code that confirmed the enrolment was spent: replaying it is refused
    assert _login(api, "rita", otp=used).status_code == 401
    later = _next_code(totp)
    ok = _login(api, "rita", otp=later)
    assert ok.status_code == 201, ok.text
    assert api.get("/api/me", headers=bearer(ok.json()["token"])).status_code == 200
    replay = _login(api, "rita", otp=later)
    assert replay.status_code == 401 and "used already" in replay.json()["detail"]
    # a wrong password with a right code is still a wrong password
    assert _login(api, "rita", "not-the-password", otp=_next_code(totp)).json()["detail"] == (
        "wrong username or password"
    )


def test_recovery_codes_are_single_use(world: World) -> None:
    api, rita = world.api, world.researcher
    _totp, codes = _enrol(api, rita.headers)
    first = _login(api, "rita", recovery_code=codes[0])
    assert first.status_code == 201, first.text
    again = _login(api, "rita", recovery_code=codes[0])
    assert again.status_code == 401 and "recovery code" in again.json()["detail"]
    # typed in capitals, without the dashes: the same code
    second = _login(api, "rita", recovery_code=codes[1].replace("-", "").upper())
    assert second.status_code == 201, second.text
    assert api.get("/api/me/mfa", headers=rita.headers).json()["recovery_codes_left"] == 8


@SQLITE_ONLY
@pytest.mark.hub(login_max_failures=3)
def test_wrong_codes_count_as_failed_logins(world: World) -> None:
    api, rita = world.api, world.researcher
    totp, _codes = _enrol(api, rita.headers)
    wrong = f"{(int(totp.now()) + 500_000) % 1_000_000:06d}"
    for _ in range(3):
        assert _login(api, "rita", otp=wrong).status_code == 401
    locked = _login(api, "rita", otp=_next_code(totp))
    assert locked.status_code == 429 and "too many failed logins" in locked.json()["detail"]


@SQLITE_ONLY
def test_disable_needs_a_code_and_admin_reset(world: World) -> None:
    api, rita = world.api, world.researcher
    totp, _codes = _enrol(api, rita.headers)
    missing = api.post("/api/me/mfa/disable", json={}, headers=rita.headers)
    assert missing.status_code == 422 and "needs a current code" in missing.json()["detail"]
    assert api.post(
        "/api/me/mfa/disable", json={"otp": "000000"}, headers=rita.headers
    ).status_code in (401,)
    off = api.post("/api/me/mfa/disable", json={"otp": _next_code(totp)}, headers=rita.headers)
    assert off.status_code == 200 and off.json()["enrolled"] is False
    assert _login(api, "rita").status_code == 201

    _enrol(api, rita.headers)
    assert _login(api, "rita").status_code == 401
    # an admin of another organization may not reset it; the hub administrator may
    denied = api.delete(f"/api/users/{rita.id}/mfa", headers=world.org_admin.headers)
    assert denied.status_code == 403
    reset = api.delete(f"/api/users/{rita.id}/mfa", headers=world.admin.headers)
    assert reset.status_code == 200 and reset.json()["enrolled"] is False
    assert _login(api, "rita").status_code == 201


@SQLITE_ONLY
@pytest.mark.hub(mfa_required_roles=POLICY)
def test_policy_refuses_a_dac_member_without_totp_until_enrolled(world: World) -> None:
    api = world.api
    _user(world, "dacia", ["dac"])
    refused = _login(api, "dacia")
    assert refused.status_code == 401
    assert refused.json()["detail"].startswith(ENROL_NEEDED), refused.text
    # a researcher is not under the policy
    assert _login(api, "rita").status_code == 201
    # enrolment by password: no token is handed out before the first code
    wrong_password = api.post(
        "/api/auth/mfa/enrol", json={"username": "dacia", "password": "nope-nope-1"}
    )
    assert wrong_password.status_code == 401
    started = api.post("/api/auth/mfa/enrol", json={"username": "dacia", "password": PASSWORD})
    assert started.status_code == 201, started.text
    totp = pyotp.TOTP(started.json()["secret"])
    body = {"username": "dacia", "password": PASSWORD, "code": totp.now()}
    confirmed = api.post("/api/auth/mfa/confirm", json=body)
    assert confirmed.status_code == 201, confirmed.text
    assert len(confirmed.json()["recovery_codes"]) == 10
    me = api.get("/api/me", headers=bearer(confirmed.json()["token"])).json()
    assert me["username"] == "dacia"
    # a second enrolment by password cannot replace the confirmed factor
    again = api.post("/api/auth/mfa/enrol", json={"username": "dacia", "password": PASSWORD})
    assert again.status_code == 409
    assert _login(api, "dacia").json()["detail"].startswith(OTP_NEEDED)
    assert _login(api, "dacia", otp=_next_code(totp)).status_code == 201


@SQLITE_ONLY
@pytest.mark.hub(local_passwords=False)
def test_local_passwords_off_with_break_glass(world: World) -> None:
    api = world.api
    for username in ("rita", "admin"):
        refused = _login(api, username, PASSWORD if username == "rita" else "admin-password-1")
        assert refused.status_code == 403 and refused.json()["detail"].startswith(SSO_ONLY)
        assert "medfed login --sso" in refused.json()["detail"]
    enrol = api.post("/api/auth/mfa/enrol", json={"username": "rita", "password": PASSWORD})
    assert enrol.status_code == 403
    # API tokens made before keep working; the hub administrator with TOTP may sign in
    totp, _codes = _enrol(api, world.admin.headers)
    still = _login(api, "admin", "admin-password-1")
    assert still.status_code == 401 and still.json()["detail"].startswith(OTP_NEEDED)
    ok = _login(api, "admin", "admin-password-1", otp=_next_code(totp))
    assert ok.status_code == 201, ok.text
    # a researcher enrolled with TOTP is still refused: break-glass is for the hub admin
    _enrol(api, world.researcher.headers)
    assert _login(api, "rita").status_code == 403


@SQLITE_ONLY
def test_sdk_login_with_a_code(world: World) -> None:
    api, rita = world.api, world.researcher
    totp, codes = _enrol(api, rita.headers)
    with pytest.raises(Unauthorized, match=OTP_NEEDED):
        Client.login(str(api.base_url), "rita", PASSWORD, http_client=api)
    client = Client.login(
        str(api.base_url), "rita", PASSWORD, otp=_next_code(totp), http_client=api
    )
    assert client.mfa.status().enrolled is True
    client = Client.login(
        str(api.base_url), "rita", PASSWORD, recovery_code=codes[3], http_client=api
    )
    assert client.mfa.status().recovery_codes_left == 9
    assert client.mfa.disable(recovery_code=codes[4]).enrolled is False


@SQLITE_ONLY
def test_cli_login_asks_for_the_code(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "CREDENTIALS", tmp_path / "credentials.json")
    totp, _codes = _enrol(world.api, world.researcher.headers)
    argv = ["login", "--url", "URL", "--username", "rita", "--password", PASSWORD]
    with serve_app(world.app) as url:
        argv[2] = url
        asked = CliRunner().invoke(cli_app, argv, input=_next_code(totp) + "\n")
        assert asked.exit_code == 0, asked.output
        assert "One-time code" in asked.output and f"logged in to {url} as rita" in asked.output
        saved = json.loads((tmp_path / "credentials.json").read_text())
        me = httpx.get(f"{url}/api/me", headers=bearer(saved["token"]), timeout=60).json()
        assert me["username"] == "rita"
        given = CliRunner().invoke(cli_app, [*argv, "--otp", _next_code(totp, 0)])
        assert given.exit_code != 0  # that step is older than the last code used: refused
        status = CliRunner().invoke(
            cli_app, ["mfa", "status", "--url", url, "--token", saved["token"]]
        )
        assert "enrolled: True" in status.output, status.output
