"""Describing a dataset in the browser: Debian's Chromium (headless, Playwright), real processes.

A hub and hospital A's node run as processes; the node registers its GBSG2 share as a
draft. In the browser the hospital's steward opens the draft, saves a description with a
bad contact first (the form comes back with the reason and what was typed; nothing is
stored), then a good one; finds the dataset in the catalogue search by a word of its
description; releases and publishes it; and an anonymous visitor finds it by that word
too. Screenshots go to ``build/screenshots/`` (``describe-*.png``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from browsertools import SHOTS, shot, sign_in
from playwright.sync_api import Browser, expect

from medfed.hub.bootstrap import init_hub
from medfed.hub.config import HubSettings
from medfed.sdk.client import Client
from medfed.testing.demo import load_gbsg2, split_gbsg2
from medfed.testing.processes import HubProcess, NodeProcess

pytestmark = pytest.mark.e2e

WORD = "mastectomy"
DESCRIPTION = f"Recurrence-free survival after {WORD} in node-positive breast cancer (GBSG2)."


@dataclass
class Hospital:
    url: str
    admin: Client
    steward: str
    password: str
    dataset_id: int


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospital]:
    root = tmp_path_factory.mktemp("browser-describe")
    settings = HubSettings(data_dir=root / "hub", dev_mode=True)
    _, token = init_hub(
        settings, organization="Hub", username="admin", password=secrets.token_urlsafe(12)
    )
    hub = HubProcess(root / "hub")
    node: NodeProcess | None = None
    try:
        hub.start()
        admin = Client(hub.url, token)
        org = admin.organizations.create("Hospital A")
        password = secrets.token_urlsafe(12)
        admin.users.create("stella", password, organization_id=org.id, roles=["steward"])
        created = admin.nodes.create("hospital-a", organization_id=org.id)
        share = split_gbsg2(load_gbsg2())["hospital-a"]
        (root / "hospital-a").mkdir()
        csv = root / "hospital-a" / "gbsg2.csv"
        share.to_csv(csv, index=False)
        node = NodeProcess(
            "hospital-a", root / "hospital-a", hub.url, created.secret, {"gbsg2": csv}
        )
        node.start()
        for _ in range(300):
            drafts = admin.datasets.list()
            if drafts:
                break
            assert node.process is not None and node.process.poll() is None, "node exited"
            time.sleep(0.1)
        else:
            raise AssertionError("the node did not register its dataset")
        assert drafts[0].state == "draft"
        yield Hospital(hub.url, admin, "stella", password, drafts[0].id)
    finally:
        if node is not None:
            node.stop()
        hub.stop()


def test_describe_a_draft_in_the_browser_and_find_it_by_its_description(
    hospital: Hospital, browser: Browser
) -> None:
    dataset_id = hospital.dataset_id
    steward = sign_in(browser, hospital.url, hospital.steward, hospital.password)
    steward.goto(f"/datasets/{dataset_id}")
    expect(steward.locator("#state-label")).to_have_text("draft")
    steward.fill("#describe-title", "GBSG2 breast cancer trial, hospital A")
    steward.fill("#describe-description", DESCRIPTION)
    steward.fill("#describe-keywords", "breast cancer, survival, hormonal therapy")
    steward.fill("#describe-themes", "HEAL")
    steward.fill("#describe-duo", "HMB, IRB")
    steward.fill("#describe-license", "CC-BY-4.0")
    steward.select_option("#describe-access-rights", "RESTRICTED")
    steward.check("input[name=access_conditions][value=REMOTE_PROCESSING]")
    steward.fill("#describe-contact", "the data office")  # no address: refused
    shot(steward, "describe-form")
    steward.click("#describe-save")
    expect(steward.locator("#describe-errors")).to_contain_text("e-mail address")
    expect(steward.locator("#describe-description")).to_have_value(DESCRIPTION)  # kept
    shot(steward, "describe-errors")
    assert hospital.admin.catalogue.show(dataset_id).title is None  # nothing stored

    steward.fill("#describe-contact", "Data Office <data@hospital-a.example>")
    steward.click("#describe-save")
    expect(steward.locator("h1")).to_contain_text("GBSG2 breast cancer trial, hospital A")
    expect(steward.locator("#contact")).to_have_text("Data Office <data@hospital-a.example>")
    expect(steward.locator("#license")).to_have_text("CC-BY-4.0")
    shot(steward, "describe-saved")
    record = hospital.admin.catalogue.show(dataset_id)
    assert record.description == DESCRIPTION and record.duo_codes == ["HMB", "IRB"]

    # the steward (who sees drafts) finds it by a word of its description
    steward.goto("/catalogue")
    steward.fill("#q", WORD)
    steward.press("#q", "Enter")
    hits = steward.locator("#results article.dataset")
    expect(hits).to_have_count(1)
    expect(hits.first).to_contain_text("GBSG2 breast cancer trial, hospital A")

    # released and published, everyone finds it by that word
    steward.goto(f"/datasets/{dataset_id}")
    steward.locator("#lifecycle button[data-action=release]").click()
    expect(steward.locator("#state-label")).to_have_text("released")
    expect(steward.locator("#describe-form")).to_have_count(0)  # frozen now
    steward.locator("#lifecycle button[data-action=publish]").click()
    expect(steward.locator("#state-label")).to_have_text("published")
    anonymous = browser.new_context(base_url=hospital.url).new_page()
    anonymous.goto("/catalogue")
    anonymous.fill("#q", WORD)
    anonymous.press("#q", "Enter")
    expect(anonymous.locator("#results article.dataset")).to_have_count(1)
    shot(anonymous, "describe-search")
    anonymous.locator("#results article.dataset h2 a").first.click()
    expect(anonymous.locator("#state-label")).to_have_text("published")
    expect(anonymous.locator("main")).to_contain_text(WORD)

    for name in ("describe-form", "describe-errors", "describe-saved", "describe-search"):
        path = SHOTS / f"{name}.png"
        assert path.exists() and path.stat().st_size > 0, path
