"""A real OpenID provider for the SSO tests: node-oidc-provider under Node.js.

:class:`TestProvider` starts ``node tests/oidc/provider.mjs`` on a free port of
127.0.0.1 (``npm ci`` first, once, when ``tests/oidc/node_modules`` is missing) and waits
for its discovery document. Its signing key is made here (joserfc), so the tests hold the
private key of a key the provider really serves: tokens with a wrong ``aud``, ``iss``,
``nonce`` or ``exp`` can be signed with it and must still be refused. Accounts live in a
JSON file the provider re-reads at every lookup (:meth:`TestProvider.set_groups`).

:func:`provider_login` walks the provider's own pages over HTTP (login form, then the
automatic consent) and returns the redirect back to the hub: the web flow without a
browser, for the API tests. The browser test uses Chromium instead.
"""

from __future__ import annotations

import fcntl
import json
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

from medfed.testing.processes import free_port

OIDC_DIR = Path(__file__).parent / "oidc"
WEB_CLIENT = "medfed-web"
CLI_CLIENT = "medfed-cli"
PASSWORD = "provider-password-1"
STEWARDS = "medfed-stewards"
RESEARCHERS = "medfed-researchers"
ORG = "Hospital A"

ACCOUNTS: dict[str, dict[str, Any]] = {
    # a steward who signs in with a second factor
    "alice": {"password": PASSWORD, "groups": [STEWARDS, RESEARCHERS], "amr": ["pwd", "otp"]},
    # a steward without one: refused where policy needs MFA for stewards
    "bob": {"password": PASSWORD, "groups": [STEWARDS], "amr": ["pwd"]},
    # a researcher without MFA: fine
    "carol": {"password": PASSWORD, "groups": [RESEARCHERS], "amr": ["pwd"]},
}


def ensure_node_modules() -> None:
    """``npm ci`` in tests/oidc once, when its node_modules is missing.

    Parallel test workers take an exclusive lock first, so only one of them installs.
    """
    if (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: the SSO tests need Node.js and npm")
    with open(OIDC_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=OIDC_DIR, check=True)


class TestProvider:
    """One running provider; ``redirect_uris`` are the hub callbacks it accepts."""

    __test__ = False

    def __init__(self, workdir: Path, *, redirect_uris: list[str]) -> None:
        ensure_node_modules()
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.web_secret = secrets.token_urlsafe(24)
        self.cli_secret = secrets.token_urlsafe(24)
        self.key = RSAKey.generate_key(
            2048, parameters={"kid": "test-key-1", "use": "sig", "alg": "RS256"}, private=True
        )
        self.accounts_file = workdir / "accounts.json"
        self.accounts = json.loads(json.dumps(ACCOUNTS))
        self._write_accounts()
        config = {
            "port": self.port,
            "issuer": self.issuer,
            "cookie_key": secrets.token_urlsafe(24),
            "accounts_file": str(self.accounts_file),
            "jwks": {"keys": [self.key.as_dict(private=True)]},
            "clients": [
                {
                    "client_id": WEB_CLIENT,
                    "client_secret": self.web_secret,
                    "redirect_uris": redirect_uris,
                    "grant_types": ["authorization_code"],
                    "response_types": ["code"],
                    "token_endpoint_auth_method": "client_secret_basic",
                },
                {
                    "client_id": CLI_CLIENT,
                    "client_secret": self.cli_secret,
                    "redirect_uris": [],
                    "response_types": [],
                    "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"],
                    "token_endpoint_auth_method": "client_secret_basic",
                },
            ],
        }
        config_file = workdir / "provider.json"
        config_file.write_text(json.dumps(config))
        self.log = (workdir / "provider.log").open("w")
        self.process = subprocess.Popen(
            ["node", str(OIDC_DIR / "provider.mjs"), str(config_file)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait()

    def _wait(self, deadline_s: float = 120.0) -> None:
        end = time.monotonic() + deadline_s
        url = f"{self.issuer}/.well-known/openid-configuration"
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"the provider exited: {Path(self.log.name).read_text()}")
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the provider did not serve its discovery document in time")

    def _write_accounts(self) -> None:
        self.accounts_file.write_text(json.dumps(self.accounts))

    def set_groups(self, login: str, groups: list[str]) -> None:
        self.accounts[login]["groups"] = groups
        self._write_accounts()

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The hub's ``oidc_providers`` entry for this provider."""
        values: dict[str, Any] = {
            "name": "testidp",
            "title": "Test IdP",
            "issuer": self.issuer,
            "client_id": WEB_CLIENT,
            "client_secret": self.web_secret,
            "device_client_id": CLI_CLIENT,
            "device_client_secret": self.cli_secret,
            "scopes": ["openid", "profile", "email", "groups"],
            "organization": ORG,
            "role_mapping": [
                {"group": STEWARDS, "role": "steward"},
                {"group": RESEARCHERS, "role": "researcher"},
            ],
            "default_roles": [],
        }
        values.update(overrides)
        return values

    def sign(self, claims: dict[str, Any], *, key: RSAKey | None = None) -> str:
        """A JWT signed with the provider's own key (or ``key``)."""
        signer = key or self.key
        header = {"alg": "RS256", "kid": signer.kid or "test-key-1"}
        return jwt.encode(header, claims, signer)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def provider_login(auth_url: str, login: str, password: str, *, stop_at: str) -> str:
    """Follow the provider's pages from ``auth_url``; the URL it sends back (``stop_at``…)."""
    with httpx.Client(timeout=30) as browser:
        url = auth_url
        for _ in range(20):
            if url.startswith(stop_at):
                return url
            response = browser.get(url)
            if response.status_code == 200 and 'name="login"' in response.text:
                response = browser.post(url, data={"login": login, "password": password})
            if response.status_code not in (302, 303):
                raise AssertionError(f"provider answered {response.status_code}: {response.text}")
            url = urljoin(url, response.headers["location"])
    raise AssertionError("the provider never sent the browser back")


_FORM = re.compile(r'<form[^>]*action="([^"]*)"[^>]*>(.*?)</form>', re.S)
_INPUT = re.compile(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', re.S)
_BUTTON = re.compile(r'<button[^>]*name="([^"]+)"[^>]*value="([^"]*)"', re.S)


def device_approve(verification_url: str, login: str, password: str) -> str:
    """Enter a device login's user code at the provider and sign in; its last page's text.

    Walks the provider's own device pages over HTTP (the code form, the confirmation, our
    login form); the browser test does the same in Chromium.
    """
    with httpx.Client(timeout=30) as browser:
        response = browser.get(verification_url)
        for _ in range(20):
            if response.status_code in (302, 303):
                response = browser.get(urljoin(str(response.url), response.headers["location"]))
                continue
            if 'name="login"' in response.text:
                response = browser.post(
                    str(response.url), data={"login": login, "password": password}
                )
                continue
            form = _FORM.search(response.text)
            if response.status_code != 200 or form is None:
                return response.text
            action, body = form.groups()
            data = dict(_INPUT.findall(body))
            buttons = _BUTTON.findall(body)  # the confirmation: its first button (Continue)
            if buttons:
                data[buttons[0][0]] = buttons[0][1]
            response = browser.post(urljoin(str(response.url), action), data=data)
    raise AssertionError("the provider's device pages never ended")
