"""Single sign-on in Debian's Chromium: the hub and node-oidc-provider as real processes.

The hub runs as a process (``HubProcess``) trusting the test provider (``MEDFED_OIDC_
PROVIDERS``); Chromium signs in through the hub's "Sign in with …" button and the
provider's own login page and ends signed in on the hub. Then ``medfed login --sso`` runs
as a real CLI process: it prints the provider's device URL and code, Chromium opens the
URL, confirms the code and signs in, and the CLI stores a hub API token that works.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from browsertools import shot
from playwright.sync_api import Browser, Page, expect

from medfed.hub.bootstrap import init_hub
from medfed.hub.config import HubSettings
from medfed.testing.processes import HubProcess, free_port
from oidctools import ORG, PASSWORD, TestProvider

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "medfed.cli.main"]


@dataclass
class Federation:
    hub: HubProcess
    idp: TestProvider


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("sso-browser")
    port = free_port()
    idp = TestProvider(root, redirect_uris=[f"http://127.0.0.1:{port}/auth/sso/testidp/callback"])
    settings = HubSettings(data_dir=root / "hub", dev_mode=True)
    init_hub(settings, organization=ORG, username="admin", password="admin-password-1")
    env = {
        "MEDFED_OIDC_PROVIDERS": json.dumps([idp.settings()]),
        "MEDFED_MFA_REQUIRED_ROLES": json.dumps(["admin", "steward", "dac"]),
    }
    hub = HubProcess(root / "hub", port=port, env=env)
    try:
        hub.start()
        yield Federation(hub, idp)
    finally:
        hub.stop()
        idp.close()


def provider_sign_in(page: Page, login: str) -> None:
    """The provider's own login page (tests/oidc/provider.mjs)."""
    page.fill("#login", login)
    page.fill("#password", PASSWORD)
    page.click("#signin")


def test_browser_signs_in_through_the_provider(browser: Browser, federation: Federation) -> None:
    page = browser.new_context(base_url=federation.hub.url).new_page()
    page.set_default_timeout(90_000)
    page.goto("/login")
    page.click("text=Sign in with Test IdP")
    expect(page.locator("h1")).to_have_text("Test provider sign-in")
    assert page.url.startswith(federation.idp.issuer)
    provider_sign_in(page, "alice")
    expect(page.locator("header .who")).to_contain_text("alice")
    assert page.url.startswith(federation.hub.url)
    shot(page, "sso_web_login")


def test_cli_device_login_completed_in_the_browser(
    browser: Browser, federation: Federation, tmp_path: Path
) -> None:
    env = {**os.environ, "MEDFED_CONFIG_DIR": str(tmp_path), "COLUMNS": "200"}
    cli = subprocess.Popen(
        [*CLI, "login", "--sso", "--provider", "testidp", "--url", federation.hub.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert cli.stdout is not None
        lines: list[str] = []
        url = ""
        for line in cli.stdout:  # the CLI prints the URL, then waits for the approval
            lines.append(line)
            if line.strip().startswith("(or open "):
                url = line.strip().removeprefix("(or open ").removesuffix(")")
                break
        assert url.startswith(federation.idp.issuer), "".join(lines)

        page = browser.new_context().new_page()
        page.set_default_timeout(90_000)
        page.goto(url)  # submits the code by itself, then asks to confirm it
        page.click("button[type=submit] >> text=Continue")
        provider_sign_in(page, "carol")
        expect(page.locator("h1")).to_have_text("Sign-in Success")
        shot(page, "sso_device_login")

        rest, _ = cli.communicate(timeout=120)
        assert cli.returncode == 0, "".join(lines) + rest
        assert "by single sign-on" in rest
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    saved = json.loads((tmp_path / "credentials.json").read_text())
    me = httpx.get(
        f"{federation.hub.url}/api/me",
        headers={"Authorization": f"Bearer {saved['token']}"},
        timeout=30,
    )
    assert me.status_code == 200
    assert me.json()["username"] == "carol" and me.json()["roles"] == ["researcher"]
