"""``glm`` through a real hub and three real node processes equals statsmodels on the pool.

One federation for the module: GBSG2 split by the demo's fixed rule (grade III; pre-
menopausal grade I/II; the rest), with two derived columns (an offset and a weight) written
into each hospital's CSV. A fit runs one round for the levels and then one per IRLS
iteration, every round through the hub, the nodes' gates and back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from lifelines.datasets import load_gbsg2

from medfed.algorithms.glm.results import GLMResult
from medfed.sdk.results import TaskFailed
from medfed.testing.demo import split_gbsg2
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e


def _frame() -> pd.DataFrame:
    frame: pd.DataFrame = load_gbsg2()
    return frame.assign(years=np.log(frame.time / 365.25), w=(frame.progrec % 7) + 1.0)


FRAME = _frame()


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root: Path = tmp_path_factory.mktemp("glm-federation")
    shares = {name: {"gbsg2": share} for name, share in split_gbsg2(FRAME).items()}
    with Federation(root, shares) as fed:
        yield fed


def _assert_equal(result: GLMResult, ref: Any) -> None:
    for name in ref.params.index:
        ours = result.coefficient(name.replace("C(", "").replace(")", ""))
        got = (ours.estimate, ours.std_error, ours.z, ours.p_value, ours.ci_low, ours.ci_high)
        ci = ref.conf_int().loc[name]
        expected = (
            ref.params[name],
            ref.bse[name],
            ref.tvalues[name],
            ref.pvalues[name],
            ci[0],
            ci[1],
        )
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0, err_msg=name)
    assert len(result.coefficients) == len(ref.params)
    np.testing.assert_allclose(
        [result.deviance, result.null_deviance, result.log_likelihood, result.aic],
        [ref.deviance, ref.null_deviance, ref.llf, ref.aic],
        rtol=1e-6,
    )
    assert (result.n, result.df_resid, result.datasets) == (ref.nobs, ref.df_resid, 3)


def test_binomial_glm_through_hub_and_nodes_equals_statsmodels(federation: Federation) -> None:
    client = federation.researcher
    task = client.tasks.run(
        "glm",
        datasets=["gbsg2"],
        progress=False,
        outcome="cens",
        covariates=["age", "tsize", "pnodes", "tgrade", "horTh"],
        family="binomial",
        weights="w",
    )
    assert isinstance(task.result, GLMResult)
    ref = smf.glm(
        "cens ~ age + tsize + pnodes + C(tgrade) + C(horTh)",
        FRAME,
        family=sm.families.Binomial(),
        var_weights=FRAME.w,
    ).fit()
    _assert_equal(task.result, ref)
    assert task.rounds == task.result.iterations + 2
    assert [n.status.value for n in task.nodes] == ["done"] * 3
    assert "tgrade[T.III]" in task.result.summary()


@pytest.fixture
def fresh_federation(tmp_path: Path) -> Iterator[Federation]:
    """A federation of its own: earlier tests' level cells would cross this subset."""
    shares = {name: {"gbsg2": share} for name, share in split_gbsg2(FRAME).items()}
    with Federation(tmp_path / "glm", shares) as fed:
        yield fed


def test_poisson_glm_with_offset_through_hub_and_nodes_equals_statsmodels(
    fresh_federation: Federation,
) -> None:
    client = fresh_federation.researcher
    task = client.tasks.run(
        "glm",
        datasets=["gbsg2"],
        progress=False,
        outcome="pnodes",
        covariates=["age", "tsize", "tgrade"],
        family="poisson",
        offset="years",
        where="age >= 35",
    )
    pooled = FRAME[FRAME.age >= 35]
    ref = smf.glm(
        "pnodes ~ age + tsize + C(tgrade)",
        pooled,
        family=sm.families.Poisson(),
        offset=pooled.years,
    ).fit()
    _assert_equal(task.result, ref)


def test_a_gate_refusal_reaches_the_researcher_uniformly(federation: Federation) -> None:
    # 5, 2 and 4 patients with more than 20 positive nodes: under every node's min_rows (10)
    client = federation.researcher
    with pytest.raises(TaskFailed, match=r"only 0 node\(s\) gave an unsuppressed") as info:
        client.tasks.run(
            "glm",
            datasets=["gbsg2"],
            progress=False,
            outcome="cens",
            covariates=["age"],
            family="binomial",
            where="pnodes > 20",
        )
    # every node withheld; the researcher learns neither the rule nor a count nor which
    task = info.value.task
    assert (task.contributing_nodes, task.withheld_nodes) == (0, 3)
    assert {r.status.value for r in task.runs} == {"done"}
    assert all(r.error is None and r.output_status is None for r in task.runs)
    assert "min_rows" not in (task.error or "") and "hospital" not in (task.error or "")
    # the node's steward sees the exact rule in the node's own log
    ids = {r.run_id for r in task.runs}
    entries = federation.nodes["hospital-a"].run_log(
        lambda log: any(e.get("run_id") in ids for e in log)
    )
    assert "gate: min_rows" in json.dumps([e for e in entries if e.get("run_id") in ids])
