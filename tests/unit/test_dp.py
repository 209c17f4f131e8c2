"""dp mode: OpenDP's accounting, the node's ε budget, unbiased noise, a node in dp mode.

The reference for every ε is OpenDP itself: the same mechanisms built as OpenDP chains
over the rows (count, clamp-then-sum, binning and counting by category, each followed by
the Laplace measurement at the node's scale) and composed with ``make_composition``;
their ``map(1)`` (one row added or removed) must equal the ε the node's budget charged.
Unbiasedness is checked with many repeats in-process against bounds of six standard
errors of the known noise (a false alarm has probability about 2e-9 per check).
"""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import opendp.prelude as dp
import pandas as pd
import pytest

from medfed.algorithms.base import LocalContext, NodeOutput
from medfed.algorithms.dp import DPSettings, Noise, Public
from medfed.algorithms.registry import get_algorithm
from medfed.algorithms.stats._dp import DP_BINS, quantiles_from_counts, square_bounds
from medfed.common.access_resources import EntitlementStatement, SignedEntitlement
from medfed.common.errors import PolicyRefused
from medfed.common.resources import RunAssignment
from medfed.ledger.checkpoint import derive_key, public_b64
from medfed.node.agent import NodeAgent
from medfed.node.config import NodeConfig, Policy
from medfed.node.gate.budget import BudgetLedger
from medfed.node.gate.dp import Release, count_sensitivity, privatize, sum_sensitivity
from medfed.node.stores.tables import TableStore

dp.enable_features("contrib")

SIX_SE = 6.0
AGE = (0.0, 120.0)


def _shares(tmp_path: Path, n_nodes: int = 3, rows: int = 400) -> list[TableStore]:
    rng = np.random.default_rng(11)
    stores = []
    for i in range(n_nodes):
        frame = pd.DataFrame(
            {
                "age": rng.integers(20, 90, rows).astype(float),
                "size": np.round(rng.uniform(1, 50, rows), 1),
            }
        )
        frame.loc[::37, "size"] = np.nan
        path = tmp_path / f"share{i}.csv"
        frame.to_csv(path, index=False)
        stores.append(TableStore.open(path))
    return stores


def run_dp(
    name: str,
    raw: dict[str, Any],
    stores: list[TableStore],
    *,
    epsilon: float = 1.0,
    bounds: dict[str, tuple[float, float]] | None = None,
) -> tuple[dict[str, Any], list[list[Release]]]:
    """As nodes in dp mode and the hub: declarations, local step, noise, aggregate."""
    algorithm = get_algorithm(name)
    params = algorithm.parse_params(raw)
    outputs, releases = [], []
    for i, store in enumerate(stores):
        ctx = LocalContext(data=store, dp=DPSettings(bounds=bounds or {}))
        rules = algorithm.noise(params, ctx)
        assert rules is not None
        payload, done = privatize(algorithm.local(params, ctx), rules, epsilon)
        payload["dp"] = {"epsilon": epsilon, "spent": epsilon, "budget": 10 * epsilon}
        outputs.append(NodeOutput(node_id=i, dataset_id=i, status="ok", payload=payload))
        releases.append(done)
    step = algorithm.aggregate(params, 0, {}, outputs)
    assert hasattr(step, "result")
    return algorithm.Result.model_validate(step.result).model_dump(), releases


# --- sensitivities and the accountant against OpenDP ------------------------------------


def test_sensitivities_are_opendps_stability_maps() -> None:
    floats = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    assert count_sensitivity() == 1
    for bounds in [(0.0, 120.0), (-3.0, 120.0), (-50.0, 2.0), (5.0, 9.0)]:
        chain = dp.t.make_clamp(floats, dp.symmetric_distance(), bounds=bounds) >> dp.t.then_sum()
        assert sum_sensitivity(bounds) == chain.map(1)
        # OpenDP's figure: the largest magnitude (a range on one side of zero) or the
        # width (a range across zero), plus an allowance for floating-point summation
        low, high = bounds
        plain = high - low if low < 0 < high else max(abs(low), abs(high))
        assert plain <= sum_sensitivity(bounds) <= plain * (1 + 1e-7)
    assert square_bounds((-3.0, 120.0)) == (0.0, 14400.0)
    assert square_bounds((2.0, 5.0)) == (4.0, 25.0)
    histogram = dp.t.make_count_by_categories(
        dp.vector_domain(dp.atom_domain(T=int)),
        dp.symmetric_distance(),
        categories=list(range(10)),
        MO=dp.L1Distance[int],
    )
    assert histogram.map(1) == 1  # one row is in one cell: Noise(rows=1)


def _laplace(integer: bool, scale: float) -> Any:
    atom = dp.atom_domain(T="i32") if integer else dp.atom_domain(T=float, nan=False)
    metric = dp.absolute_distance(T="i32" if integer else float)
    return dp.m.make_laplace(atom, metric, scale=scale)


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 3.0])
def test_the_mean_accountant_matches_opendps_composition(tmp_path: Path, epsilon: float) -> None:
    stores = _shares(tmp_path, n_nodes=1)
    _, (releases,) = run_dp(
        "mean", {"columns": ["age"]}, stores, epsilon=epsilon, bounds={"age": AGE}
    )
    by_key = {r.keys: r for r in releases}
    assert set(by_key) == {("rows",), ("n",), ("sum",)}
    # the same mechanisms as OpenDP chains over the rows of age (no nulls): rows, n, sum
    rows = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    distance = dp.symmetric_distance()
    count = dp.t.make_count(rows, distance)
    clamped_sum = dp.t.make_clamp(rows, distance, bounds=AGE) >> dp.t.then_sum()
    composed = dp.c.make_composition(
        [
            count >> _laplace(True, by_key[("rows",)].scale),
            count >> _laplace(True, by_key[("n",)].scale),
            clamped_sum >> _laplace(False, by_key[("sum",)].scale),
        ]
    )
    reference = composed.map(1)
    charged = epsilon  # what the node's budget charges for the run
    assert reference <= charged * (1 + 1e-12)
    assert reference == pytest.approx(charged, rel=1e-6)
    assert math.fsum(r.epsilon for r in releases) == pytest.approx(reference, rel=1e-12)
    released = composed(list(stores[0].select(["age"])["age"].astype(float)))
    assert len(released) == 3  # and OpenDP runs the composed measurement on the rows


def test_the_histogram_accountant_matches_opendp(tmp_path: Path) -> None:
    stores = _shares(tmp_path, n_nodes=1)
    edges = [20.0, 40.0, 60.0, 80.0]
    _, (releases,) = run_dp("histogram", {"column": "age", "bins": edges}, stores, epsilon=0.7)
    (release,) = releases
    rows = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    binned = dp.t.make_find_bin(rows, dp.symmetric_distance(), edges=edges)  # below..above
    counts = binned >> dp.t.then_count_by_categories(
        categories=list(range(len(edges) + 1)), null_category=False, MO=dp.L1Distance[int]
    )
    laplace = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T="i32")), dp.l1_distance(T="i32"), scale=release.scale
    )
    reference = (counts >> laplace).map(1)
    assert reference == pytest.approx(0.7, rel=1e-6) and reference <= 0.7 * (1 + 1e-12)


def test_privatize_refuses_an_undeclared_key() -> None:
    with pytest.raises(ValueError, match="must each be declared once"):
        privatize({"n": 5, "sum": 10.0}, [Noise(("n",))], 1.0)
    with pytest.raises(ValueError, match="integer count"):
        privatize({"n": 5.5}, [Noise(("n",))], 1.0)
    payload, _ = privatize({"n": 5, "grid": [0.0, 1.0]}, [Noise(("n",)), Public("grid")], 1.0)
    assert payload["grid"] == [0.0, 1.0] and isinstance(payload["n"], int)


def test_quantiles_from_counts_is_opendps_for_nonnegative_counts() -> None:
    edges = [0.0, 10.0, 20.0, 30.0, 40.0]
    probs = [0.1, 0.25, 0.5, 0.75, 0.9]
    reference = dp.t.make_quantiles_from_counts(edges, alphas=probs, interpolation="linear")
    for counts in ([5, 5, 5, 5], [0, 10, 0, 10], [1, 0, 0, 3], [0, 0, 7, 0]):
        ours = quantiles_from_counts(edges, counts, probs)
        assert ours == pytest.approx(reference([float(c) for c in counts]))
    # negative counts count as 0: [2, 0, 4, 1], the median 3.5 rows in
    assert quantiles_from_counts(edges, [2, -3, 4, 1], [0.5]) == pytest.approx([23.75])
    assert quantiles_from_counts(edges, [0, -1, 0, 0], [0.5]) == [None]


# --- the budget --------------------------------------------------------------------------


def test_the_budget_refuses_the_run_that_would_exceed_it(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "dp" / "budget.sqlite3")
    for i in range(10):  # ten runs of 0.1 fill a budget of 1 exactly (float sums)
        ledger.charge(project_id=3, dataset="cohort", epsilon=0.1, budget=1.0, run_id=i)
    with pytest.raises(PolicyRefused, match=r"spent ε 1 of 1 on dataset 'cohort'") as refused:
        ledger.charge(project_id=3, dataset="cohort", epsilon=0.1, budget=1.0, run_id=10)
    assert "needs ε 0.1" in refused.value.message
    assert ledger.spent(3, "cohort") == pytest.approx(1.0)  # the refusal charged nothing
    # other projects and other datasets have their own budgets
    assert ledger.charge(project_id=4, dataset="cohort", epsilon=1.0, budget=1.0).left == 0
    assert ledger.charge(project_id=3, dataset="other", epsilon=0.4, budget=1.0).spent == 0.4


def test_the_budget_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "dp" / "budget.sqlite3"
    BudgetLedger(path).charge(project_id=1, dataset="d", epsilon=0.75, budget=1.0)
    reopened = BudgetLedger(path)  # a new process would open the same file
    assert reopened.spent(1, "d") == 0.75
    with pytest.raises(PolicyRefused):
        reopened.charge(project_id=1, dataset="d", epsilon=0.5, budget=1.0)


# --- unbiased noise ---------------------------------------------------------------------


def test_noisy_counts_are_unbiased() -> None:
    """Discrete Laplace on 20 000 counts: the mean error is within 6 standard errors."""
    truth = [int(v) for v in np.arange(20_000) % 97]
    errors: list[float] = []
    epsilon = 0.5
    for _ in range(5):
        payload, (release,) = privatize({"counts": truth}, [Noise(("counts",))], epsilon)
        errors += [n - t for n, t in zip(payload["counts"], truth, strict=True)]
        assert all(isinstance(n, int) for n in payload["counts"])
    scale = release.scale  # variance of the discrete Laplace is below 2 scale²
    bound = SIX_SE * math.sqrt(2 * scale**2 / len(errors))
    assert abs(float(np.mean(errors))) < bound
    assert np.std(errors) == pytest.approx(math.sqrt(2) * scale, rel=0.05)


def test_noisy_sums_are_unbiased() -> None:
    """Laplace on 2 000 clamped sums at once, 10 times: standardized errors average to 0."""
    names = [f"c{i}" for i in range(2000)]
    sums = {name: 37.5 * (i % 13) for i, name in enumerate(names)}
    bounds = dict.fromkeys(names, AGE)
    errors: list[float] = []
    for _ in range(10):
        payload, (release,) = privatize({"sum": sums}, [Noise(("sum",), bounds=bounds)], 2.0)
        errors += [(payload["sum"][n] - sums[n]) / release.scale for n in names]
    assert abs(float(np.mean(errors))) < SIX_SE * math.sqrt(2 / len(errors))


def test_federated_dp_count_mean_histogram_are_unbiased(tmp_path: Path) -> None:
    stores = _shares(tmp_path)
    pooled = pd.concat([s.select(["age", "size"]) for s in stores])
    repeats = 300
    counts, means, cells = [], [], []
    edges = [20.0, 40.0, 60.0, 80.0]
    for _ in range(repeats):
        count, _ = run_dp("count", {}, stores)
        counts.append(count["n"])
        mean, _ = run_dp("mean", {"columns": ["size"], "bounds": {"size": [0, 60]}}, stores)
        means.append(mean["columns"]["size"]["mean"])
        histogram, _ = run_dp("histogram", {"column": "age", "bins": edges}, stores)
        cells.append(histogram["counts"])
    # count: three nodes at scale 1 (ε 1, sensitivity 1): variance below 3 * 2
    assert abs(np.mean(counts) - len(pooled)) < SIX_SE * math.sqrt(6 / repeats)
    # histogram: three releases share ε 1 with nothing else: each cell as the count
    truth, _ = np.histogram(pooled["age"], bins=edges)
    assert np.all(np.abs(np.mean(cells, axis=0) - truth) < SIX_SE * math.sqrt(6 / repeats))
    # mean: a ratio of unbiased sums; its spread is measured, its bias O(noise² / n²)
    spread = float(np.std(means))
    assert abs(np.mean(means) - pooled["size"].mean()) < SIX_SE * spread / math.sqrt(repeats)
    assert count["privacy"]["mode"] == "dp" and count["privacy"]["epsilon"] == 1.0


def test_dp_variance_summary_and_quantiles_come_out_right(tmp_path: Path) -> None:
    stores = _shares(tmp_path)
    pooled = pd.concat([s.select(["age"]) for s in stores])["age"]
    result, _ = run_dp("summary", {"columns": ["age"]}, stores, epsilon=50.0, bounds={"age": AGE})
    age = result["columns"]["age"]
    assert age["mean"] == pytest.approx(pooled.mean(), abs=1.0)
    assert age["variance"] == pytest.approx(pooled.var(), rel=0.1)
    assert (age["min_bound"], age["max_bound"]) == AGE  # the public clamp bounds
    quantiles, _ = run_dp(
        "quantiles", {"column": "age", "probs": [0.5], "bounds": [0, 128]}, stores, epsilon=50.0
    )
    (median,) = quantiles["quantiles"]
    assert median["exact"] is False and quantiles["rounds"] == 1
    assert median["value"] == pytest.approx(pooled.median(), abs=2 * 128 / DP_BINS)
    assert quantiles["privacy"]["datasets"][0]["left"] == pytest.approx(450.0)


# --- a node in dp mode ------------------------------------------------------------------

HUB = derive_key("hub secret for the dp test")


def _signed(project_id: int = 3) -> SignedEntitlement:
    now = datetime.now(UTC)
    statement = EntitlementStatement(
        entitlement_id=1,
        project_id=project_id,
        dataset_id=11,
        dataset_name="cohort",
        node_id=7,
        manifest_root=None,
        not_before=(now - timedelta(days=1)).isoformat(),
        not_after=(now + timedelta(days=30)).isoformat(),
        revoked=False,
        issued_at=now.isoformat(),
    )
    signature = base64.b64encode(HUB.sign(statement.text())).decode()
    return SignedEntitlement(statement=statement, signature=signature)


def _agent(tmp_path: Path) -> NodeAgent:
    path = tmp_path / "cohort.csv"
    if not path.exists():
        ages = [float(20 + i % 60) for i in range(200)]
        pd.DataFrame({"age": ages, "size": ages}).to_csv(path, index=False)
    config = NodeConfig(
        hub_url="http://127.0.0.1:9",
        secret="mfn_test",
        data_dir=tmp_path / "node",
        hub_key=public_b64(HUB),
        policy=Policy.model_validate(
            {"mode": "dp", "dp": {"epsilon_per_run": 0.4, "budget": 1.0, "bounds": {"age": AGE}}}
        ),
        datasets=[{"name": "cohort", "path": path}],  # type: ignore[list-item]
    )
    node = NodeAgent(config)
    node.open_datasets()
    node.node_id = 7
    return node


def _run(algorithm: str, params: dict[str, Any], run_id: int = 1) -> RunAssignment:
    return RunAssignment(
        run_id=run_id,
        task_id=run_id,
        project_id=3,
        round=0,
        algorithm=algorithm,
        algorithm_version=get_algorithm(algorithm).version,
        params=params,
        state={},
        dataset_id=11,
        dataset_name="cohort",
        lease_id="x",
        lease_expires_at=datetime.now(UTC) + timedelta(seconds=30),
        attempt=1,
        entitlement=_signed(),
        task_nodes=3,
    )


def test_a_dp_node_answers_with_noise_and_refuses_past_its_budget(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    first = agent.compute(_run("mean", {"columns": ["age"]}))
    assert first.status == "done" and first.output is not None
    assert first.output["dp"] == {"epsilon": 0.4, "spent": 0.4, "budget": 1.0}
    assert set(first.output) == {"rows", "n", "sum", "dp"}
    second = agent.compute(_run("count", {}, run_id=2))
    assert second.output is not None and second.output["dp"]["spent"] == pytest.approx(0.8)
    # a node restart: the ledger under data_dir still holds 0.8 of 1.0
    restarted = _agent(tmp_path)
    third = restarted.compute(_run("count", {}, run_id=3))
    assert third.status == "refused" and third.output is None
    assert third.error is not None and "dp budget" in third.error and "0.8" in third.error
    assert restarted.budget.spent(3, "cohort") == pytest.approx(0.8)


def test_a_dp_node_refuses_what_has_no_noisy_variant_or_no_bounds(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    for run_id, (algorithm, params) in enumerate(
        [
            ("glm", {"outcome": "age", "covariates": ["size"]}),
            ("crosstab", {"row": "age", "col": "size"}),
        ]
    ):
        refused = agent.compute(_run(algorithm, params, run_id=run_id))
        assert refused.status == "refused"
        assert refused.error == (
            f"dp mode: this node answers only with calibrated noise, and '{algorithm}' has no "
            "noisy variant"
        )
    unbounded = agent.compute(_run("mean", {"columns": ["age", "size"]}, run_id=5))
    assert unbounded.status == "refused" and "column 'size' needs public bounds" in (
        unbounded.error or ""
    )
    bounded = agent.compute(_run("mean", {"columns": ["size"], "bounds": {"size": [0, 99]}}, 6))
    assert bounded.status == "done"  # the researcher's bound
    assert agent.budget.spent(3, "cohort") == pytest.approx(0.4)  # refusals spend nothing
