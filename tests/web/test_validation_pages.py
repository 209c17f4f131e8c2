"""A validation study end to end with real processes, and its page in the browser.

A hub and three hospital nodes run as processes (``Federation``, GBSG2 split by the
demo's rule). The researcher uploads a scikit-learn logistic model of recurrence
(skl2onnx) through the SDK and starts a *shared* study; each site's steward consents
with ``medfed validation consent``, hospital-b without sharing its own results. The
nodes fetch the model and score it with onnxruntime inside their bubblewrap sandbox;
the hub pools. The pooled Brier score equals scikit-learn's
on the pooled rows. In Chromium the study page shows the ROC curve, the calibration
plot, the forest plot and the models x sites matrix (screenshot
``build/screenshots/validation-study.png``); the report downloads as HTML.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from browsertools import shot, sign_in
from playwright.sync_api import Browser, expect
from sklearn.metrics import brier_score_loss
from typer.testing import CliRunner

from medfed.cli.main import app as cli_app
from medfed.node.executors.onnx_consent import ConsentStore
from medfed.node.executors.sandbox import bwrap_usable
from medfed.testing.demo import load_gbsg2, split_gbsg2
from medfed.testing.federation import Federation
from validationtools import model_ref, pooled_scores, sklearn_onnx

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bwrap_usable() is not None, reason="the nodes need bubblewrap"),
]

FEATURES = ["age", "tsize", "pnodes", "progrec", "estrec"]


@pytest.fixture(scope="module")
def shares() -> dict[str, pd.DataFrame]:
    return split_gbsg2(load_gbsg2())


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, shares: dict[str, pd.DataFrame]
) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("validation")
    tables = {name: {"gbsg2": share} for name, share in shares.items()}
    with Federation(root, tables) as federation:
        yield federation


def test_shared_study_runs_in_the_sandbox_and_shows_its_plots(
    federation: Federation, shares: dict[str, pd.DataFrame], browser: Browser
) -> None:
    pooled = pd.concat(shares.values(), ignore_index=True)
    data = sklearn_onnx(pooled, FEATURES, "cens")
    hub = federation.researcher
    model = hub.validation.upload(
        data, name="recurrence", features=FEATURES, output="probabilities"
    )
    # each steward agrees to studies of this model file before the study exists
    for name, node in federation.nodes.items():
        argv = ["validation", "consent", "-c", str(node.config_path), "--model", model.sha256]
        said = CliRunner().invoke(
            cli_app, argv + (["--share-site"] if name != "hospital-b" else [])
        )
        assert said.exit_code == 0, said.output
        assert ConsentStore(node.folder / "state").get(None, model=model.sha256) is not None
    datasets = [d.id for d in hub.datasets.list()]
    study = hub.validation.create(
        "GBSG2 sites",
        model=model.id,
        datasets=datasets,
        outcome={"column": "cens", "positive": 1},
        mode="shared",
        thresholds=[0.5],
        subgroups=[{"name": "menopause", "column": "menostat"}],
    )
    done = hub.validation.wait(study.id, timeout=300)
    assert done.status == "completed", (done.error, done.runs)
    result = done.result
    assert result is not None
    s = pooled_scores(data, model_ref(data, FEATURES, "probabilities", 1), pooled)
    assert result["overall"]["brier"] == pytest.approx(
        brier_score_loss(pooled.cens.to_numpy(), s), abs=1e-9
    )
    shown = {site["shared"] for site in result["sites"]}
    assert shown == {True, False}
    assert np.isfinite(result["calibration_slope"]["estimate"])

    page = sign_in(browser, federation.hub.url, "researcher", federation.researcher_password)
    page.goto(f"/validation/{study.id}")
    expect(page.locator("#study-status")).to_have_text("completed")
    for figure in ("roc", "calibration", "forest"):
        expect(page.locator(f"svg#{figure}")).to_be_visible()
    expect(page.locator("svg#roc > title")).to_contain_text(f"n={len(pooled)}")
    expect(page.locator("#matrix")).to_contain_text("recurrence")
    expect(page.locator("#matrix")).to_contain_text("pooled only")  # hospital-b's choice
    shot(page, "validation-study")
    report = page.request.get(f"/validation/{study.id}/report.html")
    assert report.ok and "attachment" in report.headers["content-disposition"]
    assert report.text().count("<svg") == 3 and f"n={len(pooled)}" in report.text()
