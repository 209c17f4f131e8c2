"""Patient opt-out: the register, and an opted-out person in no read of any kind.

Real data (lifelines' GBSG2 and lung, sklearn's diabetes) with a person column; the
register is a real SQLite file; algorithms run through the real local steps
(``run_locally``), the node's real ``NodeAgent._compute`` (gate and row-set memory, with
the hub key pinned so no hub is needed) and the real export package.
"""

from __future__ import annotations

import base64
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from lifelines import CoxPHFitter
from lifelines.datasets import load_gbsg2, load_lung

from medfed.algorithms.registry import get_algorithm
from medfed.common.access_resources import EntitlementStatement, SignedEntitlement
from medfed.common.filters import parse_filter
from medfed.common.resources import RunAssignment
from medfed.ledger.checkpoint import derive_key, public_b64
from medfed.node.agent import NodeAgent
from medfed.node.config import NodeConfig, Policy
from medfed.node.export import crypto
from medfed.node.export.package import build_package, open_package
from medfed.node.gate import RecordingData
from medfed.node.ingest.tables.strategy import load_strategy
from medfed.node.manifest import manifest_root
from medfed.node.stores.optout import ConsentEvent, OptOutRegister, sticky_count
from medfed.node.stores.tables import TableStore
from medfed.testing.local import run_locally

SECRET = "mfn_optout-test-secret"
HUB = derive_key("hub secret for the opt-out test")
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def gbsg2() -> pd.DataFrame:
    frame = load_gbsg2()
    frame.insert(0, "pid", np.arange(1000, 1000 + len(frame)))
    return frame


@pytest.fixture
def register(tmp_path: Path) -> OptOutRegister:
    return OptOutRegister(tmp_path / "optout.sqlite3", secret=SECRET)


# -- the register ---------------------------------------------------------------------


def test_register_add_remove_and_consent_order(register: OptOutRegister) -> None:
    assert register.excluded() == frozenset()
    register.add([1001, "1002", 1003.0])
    assert register.excluded() == {"1001", "1002", "1003"}
    assert stat.S_IMODE(register.path.stat().st_mode) == 0o600
    register.remove([1002])
    assert register.excluded() == {"1001", "1003"}
    # FHIR: a deny, then a later permit ends it; an earlier permit does not
    events = [
        ConsentEvent("P1", T0, "deny", ref="a"),
        ConsentEvent("P1", T0 + timedelta(days=3), "permit", ref="b"),
        ConsentEvent("P2", T0 + timedelta(days=3), "deny", ref="c"),
        ConsentEvent("P2", T0, "permit", ref="d"),
    ]
    assert register.import_events(events) == 4
    assert register.import_events(events) == 0  # the same Consents again: nothing new
    assert register.excluded() == {"1001", "1003", "P2"}
    state = register.status()
    assert (state.opted_out, state.events, state.from_fhir) == (3, 8, 4)
    assert state.last_reconciled is not None


def test_register_hash_is_keyed_and_follows_the_set(tmp_path: Path) -> None:
    one = OptOutRegister(tmp_path / "a.sqlite3", secret=SECRET)
    other = OptOutRegister(tmp_path / "b.sqlite3", secret="mfn_another-node")
    one.add(["7", "8"])
    other.add(["8", "7"])
    assert len(one.digest()) == 64 and one.digest() != other.digest()
    before = one.digest()
    one.add(["9"])
    assert one.digest() != before
    one.remove(["9"])
    assert one.digest() == before


def test_sticky_count_hides_a_small_change_at_a_rounding_boundary() -> None:
    assert sticky_count(105, None, 10) == 110 or sticky_count(105, None, 10) == 100
    first = sticky_count(105, None, 10)
    assert sticky_count(104, first, 10) == first  # one opt-out: the registered count stays
    assert sticky_count(103, first, 10) == first
    assert sticky_count(80, first, 10) == 80  # a real change of the data moves it
    assert sticky_count(3, None, 10) is None


# -- the store ------------------------------------------------------------------------


def test_store_hides_opted_out_rows_at_the_next_query(register: OptOutRegister) -> None:
    frame = gbsg2()
    store = TableStore(frame, name="gbsg2", person_column="pid", excluded_persons=register.excluded)
    root = manifest_root(store)
    old = frame[frame.age >= 60]
    where = parse_filter({"column": "age", "op": ">=", "value": 60})
    assert store.count(where) == len(old)
    out = [int(p) for p in old.pid.iloc[:3]]
    register.add(out)  # another process would do the same: the store re-reads the file
    assert store.count(where) == len(old) - 3
    assert store.count() == len(frame) - 3
    assert not set(store.select(["pid"])["pid"]) & set(out)
    hidden = set(np.flatnonzero(frame.pid.isin(out)))
    assert not hidden & set(store.row_ids().tolist())
    assert store.row_count == len(frame)  # row ids stay file positions
    assert manifest_root(store) == root  # the file's manifest does not move with the register
    register.remove(out[:1])
    assert store.count(where) == len(old) - 2
    assert out[0] in set(store.select(["pid"], where)["pid"])


def test_glm_cox_and_km_never_see_an_opted_out_person(register: OptOutRegister) -> None:
    frame = gbsg2()
    out = frame.pid[frame.index % 37 == 0].tolist()
    register.add(out)
    kept = frame[~frame.pid.isin(out)]
    store = TableStore(frame, name="g", person_column="pid", excluded_persons=register.excluded)
    params = {"outcome": "cens", "covariates": ["age", "tsize", "pnodes"], "family": "binomial"}
    glm = run_locally("glm", params, [store])
    design = sm.add_constant(kept[["age", "tsize", "pnodes"]].astype(float))
    ref = sm.GLM(kept.cens.astype(float), design, family=sm.families.Binomial()).fit()
    assert glm["n"] == len(kept)
    got = [c["estimate"] for c in glm["coefficients"]]
    np.testing.assert_allclose(got, ref.params.to_numpy(), rtol=1e-6)

    lung = load_lung().dropna().reset_index(drop=True)
    lung.insert(0, "pid", [f"L{i:03d}" for i in range(len(lung))])
    gone = lung.pid.iloc[::9].tolist()
    register.add(gone)
    rest = lung[~lung.pid.isin(gone)]
    lung_store = TableStore(
        lung, name="lung", person_column="pid", excluded_persons=register.excluded
    )
    cox_params = {"duration": "time", "event": "status", "covariates": ["age", "sex"]}
    cox = run_locally("cox", cox_params, [lung_store], min_cell_count=1)
    tight = {"precision": 1e-14, "r_precision": 1e-16}
    ref_cox = CoxPHFitter().fit(
        rest[["time", "status", "age", "sex"]], "time", "status", fit_options=tight
    )
    assert cox["rows"] == len(rest)
    np.testing.assert_allclose(cox["coef"], ref_cox.params_, rtol=1e-6)
    km = run_locally("km", {"duration": "time", "event": "status"}, [lung_store], min_cell_count=1)
    (curve,) = km["curves"]
    assert curve["rows"] == len(rest) and curve["at_risk"][0] == len(rest)


# -- the node: discovery, training input, differencing --------------------------------


def _sign(**overrides: Any) -> SignedEntitlement:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "entitlement_id": 1,
        "project_id": 3,
        "dataset_id": 11,
        "dataset_name": "gbsg2",
        "node_id": 7,
        "manifest_root": None,
        "not_before": (now - timedelta(days=1)).isoformat(),
        "not_after": (now + timedelta(days=30)).isoformat(),
        "revoked": False,
        "issued_at": now.isoformat(),
    }
    values.update(overrides)
    statement = EntitlementStatement(**values)
    signature = base64.b64encode(HUB.sign(statement.text())).decode()
    return SignedEntitlement(statement=statement, signature=signature)


def _run(algorithm: str, params: dict[str, Any], **overrides: Any) -> RunAssignment:
    values: dict[str, Any] = {
        "run_id": 1,
        "task_id": 1,
        "project_id": 3,
        "round": 0,
        "algorithm": algorithm,
        "algorithm_version": get_algorithm(algorithm).version,
        "params": params,
        "state": {},
        "dataset_id": 11,
        "dataset_name": "gbsg2",
        "lease_id": "x",
        "lease_expires_at": datetime.now(UTC) + timedelta(seconds=60),
        "attempt": 1,
        "entitlement": _sign(),
        "task_nodes": 3,
    }
    values.update(overrides)
    return RunAssignment(**values)


def make_agent(tmp_path: Path, before: list[int] | None = None) -> NodeAgent:
    path = tmp_path / "gbsg2.csv"
    gbsg2().to_csv(path, index=False)
    config = NodeConfig(
        hub_url="http://127.0.0.1:9",
        secret=SECRET,
        data_dir=tmp_path / "node",
        hub_key=public_b64(HUB),
        policy=Policy(count_rounding=1, min_cell_count=5),
        datasets=[{"name": "gbsg2", "path": path, "person_column": "pid"}],  # type: ignore[list-item]
    )
    node = NodeAgent(config)
    if before:
        node.optout.add(before)  # in the register before the node first opened its data
    node.open_datasets()
    node.node_id = 7
    return node


@pytest.fixture
def agent(tmp_path: Path) -> NodeAgent:
    return make_agent(tmp_path)


def _count(agent: NodeAgent, where: dict[str, Any] | None, **kw: Any) -> tuple[str, Any]:
    params = {"where": where} if where else {}
    outcome, _ = agent._compute(_run("count", params, **kw))
    assert outcome is not None
    return str(outcome.output_status), (outcome.output or {}).get("n")


def test_discovery_and_training_input_leave_opted_out_persons_out(tmp_path: Path) -> None:
    frame = gbsg2()
    agent = make_agent(tmp_path, before=frame.pid[frame.age < 40].tolist()[:2])
    status, n = _count(agent, None, discovery=True, task_nodes=1)
    assert status == "ok" and n == len(frame) - 2
    # the training loader reads through the same store (RecordingData.select)
    data = RecordingData(agent.stores["gbsg2"], key=b"k" * 32)
    batch = data.select(["pid", "age"])
    assert len(batch) == len(frame) - 2
    assert not set(batch.pid) & set(frame.pid[frame.age < 40].tolist()[:2])


def test_differencing_around_an_opt_out_change_is_refused(agent: NodeAgent) -> None:
    frame = gbsg2()
    where = {"column": "age", "op": ">=", "value": 60}
    status, before = _count(agent, where)
    assert status == "ok" and before == int((frame.age >= 60).sum())
    victim = int(frame.pid[frame.age >= 60].iloc[0])
    agent.optout.add([victim])
    # the same filter after the change would differ by one person: withheld
    assert _count(agent, where) == ("suppressed", None)
    # the whole dataset (released at the start) minus one person: withheld too
    assert _count(agent, None) == ("suppressed", None)
    # a filter the victim is not in still answers
    status, young = _count(agent, {"column": "age", "op": "<", "value": 60})
    assert status == "ok" and young == int((frame.age < 60).sum())
    # k persons of the released set opted out: their difference is no longer small
    more = frame.pid[frame.age >= 60].iloc[1:5].tolist()
    agent.optout.add(more)
    status, after = _count(agent, where)
    assert status == "ok" and after == before - 5
    # the withdrawn opt-out of one of them would single the person out again: withheld
    agent.optout.remove([victim])
    assert _count(agent, where) == ("suppressed", None)


def test_the_register_change_reaches_the_node_log_without_a_count(agent: NodeAgent) -> None:
    agent.optout.add(["1000", "1001", "1002"])
    agent.hub._call = _fail  # type: ignore[method-assign]  # no hub: the ledger call fails
    agent.reconcile_optout()
    lines = [e for e in agent.runlog.entries() if e.get("event") == "optout"]
    assert lines and lines[-1]["register_hmac"] == agent.optout.digest()
    assert lines[-1]["reconciled_at"] == agent.optout.last_reconciled()
    assert set(lines[-1]) == {"index", "prev", "time", "event", "register_hmac", "reconciled_at"}
    assert agent._optout_digest is None  # not recorded at the hub: tried again next run


def _fail(*_args: Any, **_kwargs: Any) -> Any:
    from medfed.common.errors import MedfedError

    raise MedfedError("no hub in this test")


# -- export ---------------------------------------------------------------------------

STRATEGY = """
[columns]
pid = "keep"
age = "keep"
sex = "keep"
bmi = "keep"
target = "keep"

[k_anonymity]
quasi_identifiers = ["sex"]
k = 2
"""


def test_export_leaves_opted_out_persons_out(tmp_path: Path, register: OptOutRegister) -> None:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(scaled=False, as_frame=True).frame[["age", "sex", "bmi", "target"]]
    frame.insert(0, "pid", [f"D{i:04d}" for i in range(len(frame))])
    source = tmp_path / "diabetes.csv"
    frame.to_csv(source, index=False)
    (tmp_path / "s.toml").write_text(STRATEGY)
    key, pub = crypto.write_keypair(tmp_path / "recipient")
    out = frame.pid.iloc[:25].tolist()
    register.add(out)
    report = build_package(
        source=source,
        out=tmp_path / "pkg.tar",
        strategy=load_strategy(tmp_path / "s.toml"),
        secret=SECRET,
        recipient=crypto.load_x25519_public(pub),
        terms="research only\n",
        person_column="pid",
        excluded_persons=register.excluded,
    )
    assert report.rows_selected == len(frame) - 25
    opened = open_package(tmp_path / "pkg.tar", tmp_path / "o", key=crypto.load_x25519_private(key))
    data = pd.read_parquet(Path(opened.out) / "data.parquet")
    assert len(data) == len(frame) - 25 and not set(data.pid) & set(out)
