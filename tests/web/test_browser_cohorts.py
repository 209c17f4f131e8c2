"""In the browser: import an ATLAS file, count the cohort at real nodes, run KM on it.

A hub and two hospital nodes run as processes (``Federation``); each node's OMOP CDM is
half of lifelines' GBSG2 (even and odd rows) loaded through the shipped mapping
(``examples/omop/gbsg2.toml``) and declared as ``[[omop]]`` in its node.toml, as in
``tests/e2e/test_cohorts_e2e.py``. In Debian's Chromium (headless, Playwright) the
researcher goes from the project page to its cohorts, uploads the ATLAS JSON file, reads
the definition, presses "count at the nodes" and waits for the attrition table, whose
counts must equal pandas on each node's rows, gated (under the minimum cell count:
withheld) and rounded like discovery counts. Then, on the same page, the generated form
with the cohort preselected runs Kaplan-Meier on the cohort's features (the outcome's
variables appear in the column pickers once the features change), and the task page
shows the finished result with its plot. Screenshots go to ``build/screenshots/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from browsertools import SHOTS, shot, sign_in
from playwright.sync_api import Browser, expect
from test_cohort_pages import DEFINITION, FEATURES, RULE

from medfed.algorithms.cohorts.counts import gate_count
from medfed.testing.demo import load_gbsg2
from medfed.testing.federation import Federation
from omoptools import halves, omop_federation

pytestmark = pytest.mark.e2e

K, ROUNDING = 5, 10  # Federation's min_cell_count; the nodes' default count_rounding
NODES = ["node-a", "node-b"]


@pytest.fixture(scope="module")
def shares() -> dict[str, pd.DataFrame]:
    return dict(zip(NODES, halves(load_gbsg2()), strict=True))


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, shares: dict[str, pd.DataFrame]
) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("browser-cohorts")
    with omop_federation(root, shares, min_cell_count=K) as fed:
        yield fed


def test_import_an_atlas_file_count_at_the_nodes_and_run_km_on_the_cohort(
    federation: Federation,
    browser: Browser,
    shares: dict[str, pd.DataFrame],
    tmp_path: Path,
) -> None:
    atlas = tmp_path / "positive-nodes.json"
    atlas.write_text(json.dumps({"name": "N+", "expression": DEFINITION}))
    page = sign_in(browser, federation.hub.url, "researcher", federation.researcher_password)
    page.goto(f"/projects/{federation.project_id}")
    page.click("#cohorts-link")
    page.click("#import-link")
    page.fill("#cohort-name", "positive nodes")
    page.set_input_files("#cohort-file", str(atlas))
    shot(page, "cohort-import")
    page.click("#import-cohort")
    expect(page.locator("h1")).to_contain_text("Cohort positive nodes")
    expect(page.locator("#inclusion-rules")).to_contain_text(RULE["name"])

    page.click("#count-at-nodes")
    expect(page.locator("#counts-state")).to_have_text("completed", timeout=180_000)
    rows = page.locator("#attrition tr.count-row")
    expect(rows).to_have_count(len(NODES))
    for name, share in shares.items():
        exact = [len(share), int((share.pnodes > 3).sum()), int((share.pnodes > 3).sum())]
        gated = [gate_count(n, min_cell_count=K, rounding=ROUNDING) for n in exact]
        expected = [f"cdm at {name}", *("withheld" if g is None else str(g) for g in gated)]
        assert rows.filter(has_text=f"cdm at {name}").locator("td").all_text_contents() == expected
    entries = [gate_count(len(s), min_cell_count=K, rounding=ROUNDING) for s in shares.values()]
    total = page.locator("#attrition tr.total-row td").all_text_contents()
    assert total[:2] == ["total", str(sum(n for n in entries if n is not None))]
    expect(page.locator("#attrition-figure")).to_be_visible()
    shot(page, "cohort-counts")

    # Kaplan-Meier of recurrence on the cohort, by hormone therapy
    features = {
        **FEATURES,
        "covariates": [
            {"name": "horTh", "domain": "drug", "concepts": [2000002000], "descendants": True}
        ],
    }
    page.fill("#features", json.dumps(features))
    page.locator("#features").dispatch_event("change")
    expect(page.locator("#param-duration option[value=recurrence_time]")).to_have_count(1)
    page.select_option("#param-duration", "recurrence_time")
    page.select_option("#param-event", "recurrence_event")
    page.select_option("#param-group", "horTh")
    shot(page, "cohort-run-form")
    page.click("#run-task")
    expect(page.locator("#task-state")).to_have_text("completed", timeout=180_000)
    expect(page.locator("#result-plot")).to_be_visible()
    expect(page.locator("#result-tables")).to_contain_text("median")
    expect(page.locator("#task-meta")).to_contain_text("cohort")
    expect(page.locator("#task-nodes tr.node-row")).to_have_count(len(NODES))
    shot(page, "cohort-task-km")

    for name in ("cohort-import", "cohort-counts", "cohort-run-form", "cohort-task-km"):
        path = SHOTS / f"{name}.png"
        assert path.exists() and path.stat().st_size > 0, path
