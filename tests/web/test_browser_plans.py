"""The node steward's plan pages in the browser: review a training request, approve it.

A hub and one hospital run as processes, with the node's steward pages (``medfed node
web``) beside the agent. The hospital approved version 1 of a plan earlier. The researcher
starts a training with version 2: the node refuses it before any of it runs and records
the request. The steward signs in with the node's token in Chromium, reads the request —
who asked, the envelope, the diff against version 1 — and approves it with a reason; the
same training then runs, and the request's page lists the runs that went ahead under the
approval. Screenshots go to ``build/screenshots/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from browsertools import node_web, shot
from playwright.sync_api import Browser, expect

from medfed.algorithms.learning.examples import TABULAR_LOGREG, breast_cancer_shares
from medfed.algorithms.learning.plan import plan_hash
from medfed.node.plans import PlanApprovals
from medfed.node.web.session import steward_token
from medfed.testing.federation import Federation
from medfed.testing.plans import approve_training

pytestmark = pytest.mark.e2e

HOSPITAL = "hospital-a"
COLUMNS = [*(f"f{i}" for i in range(30)), "label"]
VERSION_2 = TABULAR_LOGREG.replace(
    "return torch.sigmoid(model(x)).reshape(-1)",
    "return torch.sigmoid(model(x).clamp(-30, 30)).reshape(-1)",
)


@pytest.fixture(scope="module")
def share() -> pd.DataFrame:
    return breast_cancer_shares(1)[0][0]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, share: pd.DataFrame) -> Iterator[Federation]:
    with Federation(
        tmp_path_factory.mktemp("plans"),
        {HOSPITAL: {"cancer": share}},
        hub_env={"MEDFED_MIN_NODES": "1", "MEDFED_LEASE_SECONDS": "10"},
        heartbeat_seconds=0.5,
        extra_policy="sole_release = true",
    ) as federation:
        yield federation


@pytest.fixture(scope="module")
def steward_pages(fed: Federation) -> Iterator[str]:
    """``medfed node web`` for the hospital, as its steward starts it."""
    with node_web(fed.nodes[HOSPITAL].folder) as url:
        yield url


def test_the_steward_reviews_a_request_with_its_diff_and_envelope_and_approves_it(
    fed: Federation, steward_pages: str, browser: Browser, share: pd.DataFrame
) -> None:
    from medfed.sdk.learning import initial_weights

    state = fed.nodes[HOSPITAL].folder / "state"
    features = share[COLUMNS[:-1]]
    plan_args = {
        "features": 30,
        "mean": features.mean().tolist(),
        "scale": features.std(ddof=0).tolist(),
    }
    settings: dict[str, Any] = {"columns": COLUMNS, "plan_args": plan_args, "rounds": 1}
    learning = fed.researcher.learning
    weights = learning.upload_weights(initial_weights(VERSION_2, plan_args))
    approve_training(  # version 1, approved at this hospital earlier
        [state],
        TABULAR_LOGREG,
        dataset="cancer",
        params={**settings, "initial_weights": weights},
        name="logreg",
    )
    learning.submit_plan(VERSION_2, name="logreg")
    refused = learning.start(VERSION_2, datasets=["cancer"], weights=weights, **settings)
    refused = fed.researcher.tasks.wait(refused.id, timeout=120, progress=False)
    assert refused.status.value == "failed" and "not approved" in (refused.error or "")
    (digest,) = PlanApprovals(state).pending()

    page = browser.new_page()
    page.goto(f"{steward_pages}/plans")
    page.fill("input[name=token]", steward_token(state)[0])
    page.click("button[type=submit]")
    expect(page.locator("#pending")).to_contain_text(digest[:16])
    expect(page.locator("#pending")).to_contain_text(str(refused.id))  # the task that asked
    shot(page, "plans-pending")

    page.click(f"a[href='/plans/{digest}']")
    expect(page.locator("#status")).to_have_text("pending")
    envelope = page.locator("#envelope")
    expect(envelope).to_contain_text(f'"plan": "{plan_hash(VERSION_2)}"')
    expect(envelope).to_contain_text(f'"initial_weights": "{weights}"')
    expect(envelope).to_contain_text('"fraction": 0.2')  # the holdout rule
    diff = page.locator("#diff")
    expect(diff.locator(".del")).to_contain_text("return torch.sigmoid(model(x)).reshape(-1)")
    expect(diff.locator(".add")).to_contain_text("torch.sigmoid(model(x).clamp(-30, 30))")
    shot(page, "plans-request")

    page.fill("form[action$='/approve'] input[name=reason]", "IRB 2024-17, v2 reviewed")
    page.click("#approve")
    expect(page.locator("#status")).to_have_text("approved")
    expect(page.locator("body")).to_contain_text("IRB 2024-17, v2 reviewed")
    decision = PlanApprovals(state).decisions()[digest]
    assert (decision["decision"], decision["reason"]) == ("approved", "IRB 2024-17, v2 reviewed")

    ran = learning.start(VERSION_2, datasets=["cancer"], weights=weights, **settings)
    ran = fed.researcher.tasks.wait(ran.id, timeout=180, progress=False)
    assert ran.status.value == "completed", ran.error
    page.reload()
    runs = page.locator("#runs tr")
    expect(runs).to_have_count(3)  # the header, the training round and the evaluation
    expect(page.locator("#runs")).to_contain_text("train")
    expect(page.locator("#runs")).to_contain_text("evaluate")
    for row in runs.all()[1:]:
        expect(row.locator("td").first).to_have_text(str(ran.id))
    shot(page, "plans-history")
    page.goto(f"{steward_pages}/plans")
    expect(page.locator("#decisions")).to_contain_text("IRB 2024-17, v2 reviewed")
    page.close()
