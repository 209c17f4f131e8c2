"""The airlock in the browser: a script's unclassifiable output waits for the steward.

A hub and one hospital run as processes, with the node's steward pages
(``medfed node web``) beside the agent. The hospital approved a script whose outputs are
a frequency table (checked automatically) and a ``value`` (which no rule can classify).
The run waits in the airlock — the task stays running, nothing of it reached the hub —
until the steward signs in with the node's token in Chromium, reads the held output and
releases it; then the task completes with both outputs, and the hub's ledger holds the
airlock's ``held`` and ``released`` entries. Screenshots go to ``build/screenshots/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from browsertools import node_web, shot
from playwright.sync_api import Browser, expect

from medfed.algorithms.scripts.script import ScriptParams, script_envelope
from medfed.common.resources import TaskStatus
from medfed.node.airlock import Airlock
from medfed.node.plans import PlanApprovals
from medfed.node.web.session import steward_token
from medfed.testing.demo import load_gbsg2, split_gbsg2
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e

HOSPITAL = "hospital-a"
SCRIPT = """
import medfed_script as ms
df = ms.load_data()
ms.output("grades", "table", ms.crosstab(df, "tgrade"))
ms.output("note", "value", {"converged": True, "iterations": 7})
"""


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    share = split_gbsg2(load_gbsg2())[HOSPITAL]
    with Federation(
        tmp_path_factory.mktemp("airlock"),
        {HOSPITAL: {"gbsg2": share}},
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


def test_an_unclassifiable_output_leaves_only_after_the_steward_releases_it(
    fed: Federation, steward_pages: str, browser: Browser
) -> None:
    state = fed.nodes[HOSPITAL].folder / "state"
    params = {
        "source": SCRIPT,
        "columns": ["tgrade"],
        "outputs": {"grades": "table", "note": "value"},
        "timeout_s": 120,
    }
    envelope = script_envelope(ScriptParams.model_validate(params), "gbsg2")
    PlanApprovals(state).approve(envelope, SCRIPT, name="airlock demo")
    task = fed.researcher.tasks.submit("script.run", datasets=["gbsg2"], **params)

    airlock = Airlock(state)
    deadline = time.monotonic() + 120
    while not airlock.items("held"):
        assert time.monotonic() < deadline, "the run never reached the airlock"
        time.sleep(0.2)
    (item,) = airlock.items("held")
    assert item.held_names == ["note"]
    # held: the node posted nothing, the task waits (its lease kept by the heartbeats)
    waiting = fed.researcher.tasks.get(task.id)
    assert waiting.status == TaskStatus.running
    assert [r.status for r in waiting.runs] == ["claimed"]

    page = browser.new_page()
    page.goto(f"{steward_pages}/airlock")
    page.fill("input[name=token]", steward_token(state)[0])
    page.click("button[type=submit]")
    expect(page.locator("#held")).to_contain_text("note")
    shot(page, "airlock-list")
    page.click(f"a[href='/airlock/{item.id}']")
    held = page.locator(".output[data-name=note]")
    expect(held).to_contain_text("review")
    expect(held.locator("pre")).to_contain_text('"iterations": 7')
    shot(page, "airlock-item")
    page.click("#release")
    expect(page.locator("#status")).to_contain_text("released")

    done = fed.researcher.tasks.wait(task.id, timeout=120)
    assert done.status == TaskStatus.completed
    (node,) = fed.researcher.tasks.result(done).result.nodes
    note = node.outputs["note"]
    assert (note.status, note.by, note.data) == (
        "released",
        "steward",
        {"converged": True, "iterations": 7},
    )
    assert node.outputs["grades"].status == "released"
    # the node marks the item sent once the hub has acknowledged the result, which may be
    # a moment after the task completed: the page shows it on a later load
    deadline = time.monotonic() + 120
    while True:
        page.reload()
        if "sent to the hub" in page.locator("#status").inner_text():
            break
        assert time.monotonic() < deadline, page.locator("#status").inner_text()
        time.sleep(0.5)
    shot(page, "airlock-released")
    page.close()

    bodies = [json.loads(e.body) for e in fed.admin.ledger.entries()]
    events = [
        b["objects"]["event"]
        for b in bodies
        if b.get("action") == "run.airlock" and b["objects"]["run"] == done.runs[0].run_id
    ]
    assert events == ["held", "released"]
