"""The web sign-in's TOTP step in Debian's Chromium, against the hub served over HTTP.

A researcher with TOTP signs in: password, then the second-step page; a wrong code is
refused on the page, the next code of the authenticator (pyotp) signs in. A DAC member
under the MFA policy without a second factor is taken to the enrolment page (QR code and
secret), confirms with a first code, sees the recovery codes once, and is signed in.
Screenshots: ``build/screenshots/mfa-*.png``.
"""

from __future__ import annotations

import time

import pyotp
import pytest
from browsertools import shot
from playwright.sync_api import Browser, Page, expect

from hubtools import PASSWORD, SQLITE_ONLY, World
from livehub import serve_app

pytestmark = SQLITE_ONLY


def _password_step(browser: Browser, url: str, username: str) -> Page:
    page = browser.new_context(base_url=url).new_page()
    page.set_default_timeout(90_000)
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    return page


def test_totp_step_after_the_password(world: World, browser: Browser) -> None:
    api, rita = world.api, world.researcher
    secret = api.post("/api/me/mfa/enrol", headers=rita.headers).json()["secret"]
    totp = pyotp.TOTP(secret)
    assert api.post(
        "/api/me/mfa/confirm", json={"otp": totp.now()}, headers=rita.headers
    ).is_success
    with serve_app(world.app) as url:
        page = _password_step(browser, url, "rita")
        expect(page.locator("h1")).to_have_text("Second factor")
        assert "/login/otp" in page.url
        expect(page.locator("header .who")).not_to_contain_text("rita")
        shot(page, "mfa-otp-step")
        wrong = f"{(int(totp.now()) + 500_000) % 1_000_000:06d}"
        page.fill("input[name=otp]", wrong)
        page.click("button[type=submit]")
        expect(page.locator("p.flash.bad")).to_contain_text("wrong one-time code")
        shot(page, "mfa-otp-wrong")
        page.fill("input[name=otp]", totp.at(time.time() + totp.interval))
        page.click("button[type=submit]")
        expect(page.locator("header .who")).to_contain_text("rita")
        shot(page, "mfa-signed-in")


@pytest.mark.hub(mfa_required_roles=["admin", "steward", "dac"])
def test_policy_sends_a_dac_member_to_enrol(world: World, browser: Browser) -> None:
    body = {
        "username": "dacia",
        "password": PASSWORD,
        "organization_id": world.org_a,
        "roles": ["dac"],
    }
    assert world.api.post("/api/users", json=body, headers=world.admin.headers).status_code == 201
    with serve_app(world.app) as url:
        page = _password_step(browser, url, "dacia")
        expect(page.locator("h1")).to_have_text("Set up a second factor")
        expect(page.locator(".qr svg")).to_be_visible()
        shot(page, "mfa-enrol")
        secret = page.locator("code.secret").inner_text().strip()
        page.fill("input[name=otp]", pyotp.TOTP(secret).now())
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_have_text("Recovery codes")
        expect(page.locator("ul.recovery-codes li")).to_have_count(10)
        shot(page, "mfa-recovery-codes")
        page.click("a.button")
        expect(page.locator("header .who")).to_contain_text("dacia")
