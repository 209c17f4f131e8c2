"""In the browser: Kaplan-Meier and a GLM run from the generated form, with their plots.

A hub and three hospital nodes run as processes (``Federation`` with the GBSG2 shares,
access granted up front). In Debian's Chromium (headless, Playwright) the researcher
picks ``km`` and then ``glm`` on the project page; htmx swaps in the fields generated
from each algorithm's parameter schema, whose column pickers list the datasets' columns.
The task page must show the plot image, loaded (``naturalWidth > 0``) from a real PNG,
the result as tables, datasets by name and one row per node. Screenshots go to
``build/screenshots/`` beside those of ``test_browser.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
from browsertools import SHOTS, shot, sign_in
from playwright.sync_api import Browser, Page, expect

from medfed.testing.demo import load_gbsg2, split_gbsg2
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def shares() -> dict[str, pd.DataFrame]:
    return split_gbsg2(load_gbsg2())


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, shares: dict[str, pd.DataFrame]
) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("browser-results")
    tables = {name: {"gbsg2": share} for name, share in shares.items()}
    with Federation(root, tables) as federation:
        yield federation


def choose(page: Page, algorithm: str) -> None:
    """Pick the algorithm and wait until htmx has swapped in its generated fields."""
    page.select_option("#algorithm", algorithm)
    expect(page.locator("#params")).to_have_attribute("data-algorithm", algorithm)


def see_the_plot(page: Page) -> None:
    """The plot <img> loaded, and what it loaded is a PNG."""
    expect(page.locator("#task-state")).to_have_text("completed", timeout=180_000)
    image = page.locator("#result-plot")
    expect(image).to_be_visible()
    # polled from the test (the page's CSP forbids the eval that wait_for_function uses)
    for _ in range(400):
        if image.evaluate("img => img.complete && img.naturalWidth > 0"):
            break
        page.wait_for_timeout(50)
    assert image.evaluate("img => img.naturalWidth") > 300
    src = image.get_attribute("src")
    task_id = page.url.rstrip("/").rsplit("/", 1)[1]
    assert src and src.startswith(f"/tasks/{task_id}/plot.png")
    png = page.request.get(src)  # with the page's session cookie
    assert png.ok and png.headers["content-type"] == "image/png"
    assert png.body()[:8] == PNG


def test_km_and_glm_from_the_generated_form_show_their_plots(
    federation: Federation, browser: Browser
) -> None:
    page = sign_in(browser, federation.hub.url, "researcher", federation.researcher_password)
    page.goto(f"/projects/{federation.project_id}")
    expect(page.locator("input.dataset-pick:checked")).to_have_count(3)

    # Kaplan-Meier by hormone therapy
    choose(page, "km")
    options = page.locator("#param-duration option").all_text_contents()
    assert "time (integer)" in options and "horTh (string)" in options  # the dataset's schema
    page.select_option("#param-duration", "time")
    page.select_option("#param-event", "cens")
    page.select_option("#param-group", "horTh")
    shot(page, "run-form-km")
    page.click("#run-task")
    see_the_plot(page)
    expect(page.locator("#result-tables caption").first).to_have_text("figures")
    expect(page.locator("#result-tables")).to_contain_text("median")
    expect(page.locator("#task-datasets")).to_contain_text("gbsg2 at hospital-a")
    expect(page.locator("#task-nodes tr.node-row")).to_have_count(3)
    shot(page, "task-km")

    # a logistic GLM of the event on three covariates
    page.goto(f"/projects/{federation.project_id}")
    choose(page, "glm")
    page.select_option("#param-outcome", "cens")
    page.select_option("#param-covariates", ["age", "tsize", "pnodes"])
    page.select_option("#param-family", "binomial")
    page.fill("#param-where", "age >= 30")
    shot(page, "run-form-glm")
    page.click("#run-task")
    see_the_plot(page)
    coefficients = page.locator("#result-tables table", has_text="estimate")
    expect(coefficients).to_contain_text("Intercept")
    expect(coefficients).to_contain_text("pnodes")
    expect(page.locator("#task-meta")).to_contain_text("age >= 30")
    # one row per node, its first round only: the IRLS iterations go to the contributors
    # alone, so listing them per node would say which node withheld
    rows = page.locator("#task-nodes tr.node-row")
    expect(rows).to_have_count(3)
    expect(rows.filter(has_text="1 round, done")).to_have_count(3)
    expect(page.locator("#later-rounds")).to_contain_text("not listed per node")
    shot(page, "task-glm")

    for name in ("run-form-km", "task-km", "run-form-glm", "task-glm"):
        path = SHOTS / f"{name}.png"
        assert path.exists() and path.stat().st_size > 0, path
