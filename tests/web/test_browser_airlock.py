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
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from medfed.algorithms.scripts.script import ScriptParams, script_envelope
from medfed.common.resources import TaskStatus
from medfed.node.airlock import Airlock
from medfed.node.plans import PlanApprovals
from medfed.node.web.session import steward_token
from medfed.testing.demo import load_gbsg2, split_gbsg2
from medfed.testing.federation import Federation
from medfed.testing.processes import free_port

pytestmark = pytest.mark.e2e

SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
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
    folder = fed.nodes[HOSPITAL].folder
    port = free_port()
    log = open(folder / "web.log", "wb")  # noqa: SIM115 - closed after the process
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medfed.cli.main",
            "node",
            "web",
            "-c",
            str(folder / "node.toml"),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/login", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"medfed node web did not start; see {folder / 'web.log'}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


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
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "airlock-list.png"), full_page=True)
    page.click(f"a[href='/airlock/{item.id}']")
    held = page.locator(".output[data-name=note]")
    expect(held).to_contain_text("review")
    expect(held.locator("pre")).to_contain_text('"iterations": 7')
    page.screenshot(path=str(SHOTS / "airlock-item.png"), full_page=True)
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
    page.reload()
    expect(page.locator("#status")).to_contain_text("sent to the hub")
    page.screenshot(path=str(SHOTS / "airlock-released.png"), full_page=True)
    page.close()

    bodies = [json.loads(e.body) for e in fed.admin.ledger.entries()]
    events = [
        b["objects"]["event"]
        for b in bodies
        if b.get("action") == "run.airlock" and b["objects"]["run"] == done.runs[0].run_id
    ]
    assert events == ["held", "released"]
