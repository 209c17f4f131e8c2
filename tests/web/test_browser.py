"""The browser scenario: Debian's Chromium (headless, via Playwright) against real processes.

A hub and three hospital nodes run as processes (``Federation`` with the GBSG2 shares and
no access granted up front). In the browser: a steward of hospital A releases and
publishes its dataset; the researcher searches the catalogue, opens the dataset and
applies for access; a DAC member of hospital A approves; the researcher runs a count and
a mean from the project page and sees results equal to pandas on hospital A's share.
Screenshots of the main pages go to ``build/screenshots/``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from typing import Any

import pandas as pd
import pytest
from browsertools import SHOTS, shot, sign_in
from playwright.sync_api import Browser, Page, expect

from medfed.testing.demo import load_gbsg2, split_gbsg2
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e

HOSPITAL = "hospital-a"


@pytest.fixture(scope="module")
def shares() -> dict[str, pd.DataFrame]:
    return split_gbsg2(load_gbsg2())


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, shares: dict[str, pd.DataFrame]
) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("browser-federation")
    tables = {name: {"gbsg2": share} for name, share in shares.items()}
    # the walkthrough publishes one hospital's dataset: that hospital allows sole release
    with Federation(
        root,
        tables,
        grant_access=False,
        hub_env={"MEDFED_MIN_NODES": "1"},
        extra_policy="sole_release = true",
    ) as federation:
        yield federation


def run_task(
    page: Page, project_id: int, algorithm: str, columns: Sequence[str] = ()
) -> dict[str, Any]:
    page.goto(f"/projects/{project_id}")
    page.select_option("#algorithm", algorithm)
    # htmx swaps in the fields generated for the algorithm; columns are a multi-select
    expect(page.locator("#params")).to_have_attribute("data-algorithm", algorithm)
    if columns:
        page.select_option("#param-columns", list(columns))
    page.click("#run-task")
    expect(page.locator("#task-state")).to_have_text("completed", timeout=180_000)
    result: dict[str, Any] = json.loads(page.locator("#result-json").text_content() or "")
    return result


def test_find_apply_approve_and_run_in_the_browser(
    federation: Federation, browser: Browser, shares: dict[str, pd.DataFrame]
) -> None:
    url = federation.hub.url
    admin = federation.admin
    org = next(o for o in admin.organizations.list() if o.name == f"{HOSPITAL} hospital")
    password = secrets.token_urlsafe(12)
    admin.users.create("stella", password, organization_id=org.id, roles=["steward"])
    admin.users.create("dora", password, organization_id=org.id, roles=["dac"])

    # anonymous visitors see only published datasets: none yet
    anonymous = browser.new_context(base_url=url).new_page()
    anonymous.goto("/")
    expect(anonymous.locator("#results")).to_contain_text("No dataset matches")

    # the steward publishes hospital A's dataset (releasing it first if it is a draft)
    steward = sign_in(browser, url, "stella", password)
    steward.goto("/admin")
    shot(steward, "admin")
    if steward.locator("#org-datasets button[data-action=release]").count():
        steward.locator("#org-datasets button[data-action=release]").click()
        expect(steward.locator("#state-label")).to_have_text("released")
        steward.goto("/admin")
    steward.locator("#org-datasets button[data-action=publish]").click()
    expect(steward.locator("#state-label")).to_have_text("published")

    # the researcher finds it, opens it and applies
    researcher = sign_in(browser, url, "researcher", federation.researcher_password)
    researcher.goto("/catalogue")
    researcher.fill("#q", "gbsg2")
    researcher.press("#q", "Enter")
    hits = researcher.locator("#results article.dataset")
    expect(hits).to_have_count(1)
    shot(researcher, "catalogue")
    hits.first.locator("h2 a").click()
    expect(researcher.locator("#state-label")).to_have_text("published")
    shot(researcher, "dataset")
    dataset_id = int(researcher.url.rstrip("/").rsplit("/", 1)[1])
    researcher.click("#apply")
    researcher.fill("textarea[name=purpose]", "Prognostic factors in node-positive breast cancer")
    researcher.check("input[name=duo_codes][value=HMB]")
    researcher.fill("input[name=ethics_reference]", "EC-2026-017")
    researcher.set_input_files(
        "input[name=ethics_file]",
        {"name": "ethics.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 approval"},
    )
    researcher.fill("input[name=duration_days]", "180")
    shot(researcher, "application-form")
    researcher.click("#submit-application")
    expect(researcher.locator("#application-state")).to_have_text("submitted")
    application_url = researcher.url

    # a DAC member of hospital A approves
    dac = sign_in(browser, url, "dora", password)
    dac.goto("/dac")
    expect(dac.locator("#pending tbody tr")).to_have_count(1)
    shot(dac, "dac-queue")
    dac.locator("#pending a").first.click()
    dac.fill("#end-date", (date.today() + timedelta(days=90)).isoformat())
    dac.fill("textarea[name=comment]", "ethics approval checked")
    shot(dac, "decision")
    dac.click("#approve")
    expect(dac.locator("#application-state")).to_have_text("approved")
    researcher.goto(application_url)
    expect(researcher.locator("#application-state")).to_have_text("approved")

    # the researcher runs analyses from the project page and sees the results
    researcher.goto(f"/projects/{federation.project_id}")
    expect(researcher.locator(".entitlements")).to_contain_text("active")
    shot(researcher, "project")
    share = shares[HOSPITAL]
    count = run_task(researcher, federation.project_id, "count")
    assert count["n"] == len(share)
    mean = run_task(researcher, federation.project_id, "mean", ["age", "tsize"])
    assert mean["columns"]["age"]["mean"] == pytest.approx(share["age"].mean(), rel=1e-9)
    assert mean["columns"]["tsize"]["mean"] == pytest.approx(share["tsize"].mean(), rel=1e-9)
    expect(researcher.locator("#result-summary")).to_be_visible()
    shot(researcher, "task")
    tasks = federation.researcher.tasks.list(federation.project_id)
    assert [t.dataset_ids for t in tasks] == [[dataset_id], [dataset_id]]

    for name in (
        "admin",
        "catalogue",
        "dataset",
        "application-form",
        "dac-queue",
        "decision",
        "project",
        "task",
    ):
        path = SHOTS / f"{name}.png"
        assert path.exists() and path.stat().st_size > 0, path
