"""Data quality in the catalogue: the node's battery reaches the entry and the web page.

A real :class:`~medfed.node.agent.NodeAgent` opens two datasets — GBSG2 as a table with
``required`` columns and a declared ``range`` (node.toml), and GBSG2 mapped to an OMOP CDM
(``examples/omop/gbsg2.toml``) — with defects seeded at known rows and one patient opted
out, and registers them at the test's real hub app (its HTTP client is the hub's
TestClient). The catalogue entry (API) carries the gated summary, which equals the battery
run independently (pandas for the table; the battery over a copy of the CDM with the
opted-out person deleted); the dataset page shows it, with small counts as "<k".
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from lifelines.datasets import load_gbsg2

from cataloguetools import move
from hubtools import SQLITE_ONLY, World
from medfed.node.agent import NodeAgent
from medfed.node.config import NodeConfig
from medfed.node.hubclient import NodeHubClient
from medfed.node.omop_load import load_mapping, load_table
from medfed.node.quality import gated_summary, run_checks

pytestmark = SQLITE_ONLY

ROOT = Path(__file__).resolve().parents[2]
MAPPING = ROOT / "examples" / "omop" / "gbsg2.toml"
K = 5


def _table(tmp: Path) -> tuple[Path, pd.DataFrame]:
    frame = load_gbsg2()
    frame.insert(0, "pid", np.arange(1000, 1000 + len(frame)))
    frame["tsize"] = frame.tsize.astype(float)
    frame.loc[[3, 4, 5], "tsize"] = np.nan  # 3 missing: shown as "<5"
    path = tmp / "gbsg2.csv"
    frame.to_csv(path, index=False)
    return path, frame


def _cdm(tmp: Path) -> Path:
    path = tmp / "gbsg2.duckdb"
    load_table(mapping=load_mapping(MAPPING), table=load_gbsg2(), cdm=path)
    con = duckdb.connect(str(path))
    con.execute(  # 12 periods ending before they start (one of them the opted-out person)
        "UPDATE observation_period SET observation_period_end_date = "
        "observation_period_start_date - INTERVAL 1 DAY WHERE person_id <= 12"
    )
    con.close()
    return path


def _agent(tmp: Path, world: World, table: Path, cdm: Path) -> NodeAgent:
    config = NodeConfig.model_validate(
        {
            "hub_url": "http://testserver",
            "insecure": True,
            "secret": world.node_b.secret,
            "data_dir": str(tmp / "state"),
            "policy": {"min_cell_count": K},
            "datasets": [
                {
                    "name": "gbsg2",
                    "path": str(table),
                    "person_column": "pid",
                    "required": ["age", "tsize"],
                    "ranges": {"age": [21, 75], "tsize": [1, 100]},
                }
            ],
            "omop": [{"name": "gbsg2-cdm", "duckdb": str(cdm)}],
        }
    )
    agent = NodeAgent(config)
    # the real node client; its transport is the test hub's TestClient
    agent.hub = NodeHubClient(
        "http://testserver", world.node_b.secret, stop=agent.stop_event, http_client=world.api
    )
    return agent


def _entry(world: World, name: str) -> dict[str, Any]:
    listed = world.api.get("/api/datasets", headers=world.admin.headers).json()
    found = next(d for d in listed if d["name"] == name and d["node_id"] == world.node_b.id)
    dataset_id = int(found["id"])
    record = world.api.get(f"/api/catalogue/{dataset_id}", headers=world.admin.headers)
    assert record.status_code == 200, record.text
    data: dict[str, Any] = record.json()
    return data


def test_the_nodes_quality_battery_is_in_the_catalogue_and_on_the_page(
    world: World, tmp_path: Path
) -> None:
    table, frame = _table(tmp_path)
    cdm = _cdm(tmp_path)
    agent = _agent(tmp_path, world, table, cdm)
    agent.optout.add([1000 + 20, 1])  # a table patient (pid) and CDM person 1
    agent.open_datasets()
    agent.register()

    # the table: the declared checks, equal to pandas on the rows minus the opted-out one
    entry = _entry(world, "gbsg2")
    checks = {(c["name"], c["field"]): c for c in entry["summary"]["data_quality"]["checks"]}
    visible = frame[frame.pid != 1020]
    assert checks["isRequired", "gbsg2.tsize"]["failed"] == f"<{K}"  # 3, exact never sent
    assert checks["isRequired", "gbsg2.tsize"]["pct"] is None
    assert checks["isRequired", "gbsg2.age"]["failed"] == 0
    old = int((visible.age > 75).sum())
    high = checks["plausibleValueHigh", "gbsg2.age"]["failed"]
    assert old >= K and high == round(old / K) * K  # released rounded, never exact
    assert checks["plausibleValueHigh", "gbsg2.age"]["status"] == "fail"
    young = int((visible.age < 21).sum())
    assert checks["plausibleValueLow", "gbsg2.age"]["failed"] == (
        0 if young == 0 else f"<{K}" if young < K else round(young / K) * K
    )
    rows = checks["plausibleValueHigh", "gbsg2.tsize"]["rows"]
    assert rows == round(visible.tsize.notna().sum() / K) * K

    # the CDM: the battery with opted-out person 1 left out, as if deleted from a copy
    reference = tmp_path / "reference.duckdb"
    shutil.copy(cdm, reference)
    con = duckdb.connect(str(reference))
    for (name,) in con.execute(
        "SELECT table_name FROM information_schema.columns WHERE column_name = 'person_id' "
        "AND table_schema = 'main'"
    ).fetchall():
        con.execute(f"DELETE FROM {name} WHERE person_id = 1")
    tables = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    expected = gated_summary(
        run_checks(lambda sql: con.execute(sql).df(), tables=tables),
        min_cell_count=K,
        rounding=K,
    )
    con.close()
    omop = _entry(world, "gbsg2-cdm")
    assert omop["summary"]["data_quality"] == expected["data_quality"]
    assert omop["summary"]["omop"]["cdm_version"] == "5.4"  # the registration's own part
    periods = {(c["name"], c["field"]): c for c in expected["data_quality"]["checks"]}[
        "plausibleStartBeforeEnd", "observation_period.observation_period_end_date"
    ]
    assert periods["failed"] == 10 and periods["status"] == "fail"  # 12 seeded, 1 out: 11

    # the dataset page (published: anyone may read it) shows the battery
    dataset_id = int(entry["id"])
    for transition in ("release", "publish"):
        assert move(world, world.admin.headers, dataset_id, transition).status_code == 200
    page = world.api.get(f"/datasets/{dataset_id}")
    assert page.status_code == 200
    html = page.text
    assert 'id="data-quality"' in html and 'id="dq-checks"' in html
    summary = entry["summary"]["data_quality"]
    assert f"{summary['checks_run']} checks run" in html
    assert "<code>gbsg2.tsize</code>" in html and f"&lt;{K}" in html
    assert html.count('class="dq-fail"') == summary["checks_failed"]


def test_a_declared_check_on_a_missing_column_withholds_the_dataset(
    world: World, tmp_path: Path
) -> None:
    table, _ = _table(tmp_path)
    agent = _agent(tmp_path, world, table, _cdm(tmp_path))
    agent.config.datasets[0].required.append("weight")
    agent.open_datasets()
    agent.register()
    assert "'weight' is not a column" in agent.refused["gbsg2"]
    listed = world.api.get("/api/datasets", headers=world.admin.headers).json()
    assert "gbsg2" not in {d["name"] for d in listed if d["node_id"] == world.node_b.id}
