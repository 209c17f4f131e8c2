"""Law: for any split of the rows over 2-6 datasets, federated ``glm`` equals the pooled fit.

GBSG2's rows are dealt to the datasets by a random permutation and random share sizes
(each share large enough for the node's rules: at least 10 rows and three rows per
parameter). The references are statsmodels' GLM fits on the pooled rows, computed once.
The gate runs with k = 1 so that the law is tested on its own, not the disclosure rules.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
import statsmodels.formula.api as smf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lifelines.datasets import load_gbsg2

from medfed.node.stores.tables import TableStore
from medfed.testing.local import run_locally

FRAME = load_gbsg2().assign(years=lambda f: np.log(f.time / 365.25))

MODELS: dict[str, tuple[dict[str, Any], str, dict[str, Any]]] = {
    "binomial": (
        {"outcome": "cens", "covariates": ["age", "tsize", "pnodes", "tgrade", "horTh"]},
        "cens ~ age + tsize + pnodes + C(tgrade) + C(horTh)",
        {},
    ),
    "poisson": (
        {"outcome": "pnodes", "covariates": ["age", "tsize", "tgrade"], "offset": "years"},
        "pnodes ~ age + tsize + C(tgrade)",
        {"offset": FRAME.years},
    ),
    "gaussian": (
        {"outcome": "time", "covariates": ["age", "tsize", "menostat", "horTh"]},
        "time ~ age + tsize + C(menostat) + C(horTh)",
        {},
    ),
}
FAMILY = {"binomial": sm.families.Binomial, "poisson": sm.families.Poisson}


@cache
def pooled(family: str) -> Any:
    _, formula, kw = MODELS[family]
    fam = FAMILY.get(family, sm.families.Gaussian)()
    return smf.glm(formula, FRAME, family=fam, **kw).fit()


@st.composite
def splits(draw: st.DrawFn) -> list[pd.DataFrame]:
    shares = draw(st.integers(min_value=2, max_value=6))
    sizes = draw(st.lists(st.integers(1, 5), min_size=shares, max_size=shares))
    seed = draw(st.integers(0, 2**32 - 1))
    order = np.random.default_rng(seed).permutation(len(FRAME))
    cuts = np.cumsum([len(FRAME) * s // sum(sizes) for s in sizes])[:-1]
    return [FRAME.iloc[np.sort(part)].reset_index(drop=True) for part in np.split(order, cuts)]


def _estimates(result: dict[str, Any]) -> dict[str, tuple[float, float]]:
    return {
        c["name"].replace("C(", "").replace(")", ""): (c["estimate"], c["std_error"])
        for c in result["coefficients"]
    }


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(splits(), st.sampled_from(sorted(MODELS)))
def test_federated_glm_equals_the_pooled_fit(shares: list[pd.DataFrame], family: str) -> None:
    stores = [TableStore(share, name=f"s{i}") for i, share in enumerate(shares)]
    params, _, _ = MODELS[family]
    result = run_locally("glm", {**params, "family": family}, stores, min_cell_count=1)
    ref = pooled(family)
    got = _estimates(result)
    for name in ref.params.index:
        key = name.replace("C(", "").replace(")", "")
        np.testing.assert_allclose(got[key], (ref.params[name], ref.bse[name]), rtol=1e-6)
    for key, expected in (
        ("deviance", ref.deviance),
        ("null_deviance", ref.null_deviance),
        ("log_likelihood", ref.llf),
        ("aic", ref.aic),
    ):
        np.testing.assert_allclose(result[key], expected, rtol=1e-6)
    assert result["n"] == len(FRAME)
    assert result["datasets"] == len(shares)
